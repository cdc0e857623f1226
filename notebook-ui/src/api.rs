//! The JSON API under `/api/`: every page action is one of these calls, so scripts and
//! tests use what the page uses (docs/notebook.md lists them).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::aggregate::{self, Lanes};
use crate::cells::{self, Action, Cell, NotebookFile};
use crate::engine;
use crate::error::{ApiResult, AppError};
use crate::jobs::{JobState, Jobs};
use crate::notebook;
use crate::search::{self, SearchResult};
use crate::state::AppState;
use crate::timeline::{self, Timeline};
use crate::triage::{self, RunRow};

/// The longest a request waits for work to finish (`?wait=` seconds).
const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Deserialize)]
pub struct Wait {
    #[serde(default)]
    pub wait: Option<f64>,
}

impl Wait {
    pub fn duration(&self) -> Duration {
        Duration::try_from_secs_f64(self.wait.unwrap_or(0.0).max(0.0))
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT)
    }
}

pub async fn runs(State(state): State<AppState>) -> ApiResult<Json<Vec<RunRow>>> {
    Ok(Json(
        state.read(|conn, store| triage::runs(conn, store)).await?,
    ))
}

/// A run's (or branch's) triage: the record, properties with examples, utilization,
/// snapshots, and its notebook's cells.
pub async fn triage(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let v = state
        .read(move |conn, store| {
            let tl = timeline::resolve(conn, store, &id)?;
            triage_value(conn, store, &tl)
        })
        .await?;
    Ok(Json(v))
}

pub fn triage_value(
    conn: &rusqlite::Connection,
    store: &explorer::store::RunStore,
    tl: &Timeline,
) -> Result<Value, AppError> {
    let end = tl.end_ns().unwrap_or(aggregate::last_time(conn, tl)?);
    let utilization = triage::utilization(conn, tl, end)?;
    let properties = if tl.is_run() {
        triage::properties(conn, store, tl)?
    } else {
        Vec::new()
    };
    let record = match &tl.source {
        timeline::Source::Run(r) => serde_json::to_value(r).expect("records serialize"),
        timeline::Source::Branch { cell, .. } => {
            serde_json::to_value(cell).expect("cells serialize")
        }
        timeline::Source::Campaign { timeline, .. } => {
            serde_json::to_value(timeline).expect("timelines serialize")
        }
    };
    let cells = cells::list(conn, tl.notebook())?;
    Ok(json!({
        "timeline": tl.id,
        "run": tl.run,
        "status": tl.status(),
        "parent": tl.parent().map(|m| m.to_string()),
        "record": record,
        "start_ns": tl.start_ns(),
        "end_ns": end,
        "snapshots": triage::snapshot_times(store, &tl.run),
        "properties": properties,
        "utilization": utilization,
        "campaign": tl.is_campaign().then_some(&tl.run),
        "cells": cells,
    }))
}

#[derive(Debug, Default, Deserialize)]
pub struct LanesQuery {
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub buckets: Option<usize>,
}

pub async fn lanes(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LanesQuery>,
) -> ApiResult<Json<Lanes>> {
    let lanes = state
        .read(move |conn, store| {
            let tl = timeline::resolve(conn, store, &id)?;
            aggregate::lanes(conn, &tl, q.from, q.to, q.buckets.unwrap_or(1000))
        })
        .await?;
    Ok(Json(lanes))
}

pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<search::Query>,
) -> ApiResult<Json<SearchResult>> {
    let found = state
        .read(move |conn, store| {
            let tl = timeline::resolve(conn, store, &id)?;
            search::search(conn, &tl, &q)
        })
        .await?;
    Ok(Json(found))
}

fn download(bytes: Vec<u8>, content_type: &str, name: &str) -> Response {
    // Names come from checked ids only; keep them to a safe alphabet anyway.
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '~'))
        .collect();
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{safe}\""),
            ),
        ],
        bytes,
    )
        .into_response()
}

pub async fn export_trace(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let name = format!("{id}.trace.json");
    let bytes = state
        .read(move |conn, store| {
            let tl = timeline::resolve(conn, store, &id)?;
            crate::export::chrome_trace(conn, &tl)
        })
        .await?;
    Ok(download(bytes, "application/json", &name))
}

pub async fn export_jsonl(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let name = format!("{id}.events.jsonl");
    let bytes = state
        .read(move |conn, store| {
            let tl = timeline::resolve(conn, store, &id)?;
            crate::export::jsonl(conn, &tl)
        })
        .await?;
    Ok(download(bytes, "application/x-ndjson", &name))
}

/// The state at a moment. `200` with `status: done` and the view; `202` with
/// `status: queued|running` and the virtual time reached while it replays; `422` with
/// the error when the replay failed.
pub async fn moment(
    State(state): State<AppState>,
    Path(text): Path<String>,
    Query(wait): Query<Wait>,
) -> ApiResult<Response> {
    let moment = timeline::parse_moment(&text)?;
    let key = format!("moment:{moment}");
    if let Some(v) = state.jobs.cached(&key) {
        return Ok(Json(json!({"status": "done", "result": &*v})).into_response());
    }
    // Check the timeline exists before starting anything.
    let tl_id = moment.run.clone();
    state
        .read(move |conn, store| timeline::resolve(conn, store, &tl_id).map(|_| ()))
        .await?;
    let db = state.db.clone();
    let target = explorer::run::decision_point(moment.vtime_ns);
    let m = moment.clone();
    let job = state.jobs.start(&key, true, move |vtime| {
        let mut progress = engine::Progress::new(vtime, false);
        let view = engine::moment_view(&db, &m, &mut progress)?;
        Ok(serde_json::to_value(view).expect("views serialize"))
    });
    Ok(job_reply(
        job.wait(wait.duration()).await,
        Jobs::progress(&job),
        target,
    ))
}

fn job_reply(state: JobState, vtime_ns: u64, target_ns: u64) -> Response {
    match state {
        JobState::Done { result } => {
            Json(json!({"status": "done", "result": &*result})).into_response()
        }
        JobState::Failed { error } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"status": "failed", "error": error})),
        )
            .into_response(),
        other => (
            StatusCode::ACCEPTED,
            Json(json!({
                "status": if other == JobState::Queued { "queued" } else { "running" },
                "vtime_ns": vtime_ns,
                "target_ns": target_ns
            })),
        )
            .into_response(),
    }
}

pub async fn list_cells(
    State(state): State<AppState>,
    Path(run): Path<String>,
) -> ApiResult<Json<Vec<Cell>>> {
    Ok(Json(
        state
            .read(move |conn, store| {
                run_of(conn, store, &run)?;
                cells::list(conn, &run)
            })
            .await?,
    ))
}

/// The run itself (not a branch): notebooks belong to runs.
fn run_of(
    conn: &rusqlite::Connection,
    store: &explorer::store::RunStore,
    run: &str,
) -> Result<(), AppError> {
    let tl = timeline::resolve(conn, store, run)?;
    if !tl.has_notebook() {
        return Err(AppError::bad_request(format!(
            "{run} is a branch; notebooks belong to runs and campaign timelines ({})",
            tl.notebook()
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCell {
    pub action: Action,
    /// Run it now (default) or only save it.
    #[serde(default = "yes")]
    pub run: bool,
}

fn yes() -> bool {
    true
}

pub async fn add_cell(
    State(state): State<AppState>,
    Path(run): Path<String>,
    Json(new): Json<NewCell>,
) -> ApiResult<(StatusCode, Json<Cell>)> {
    notebook::check_action(&run, &new.action)?;
    let action = new.action.clone();
    let cell = state
        .read(move |conn, store| {
            run_of(conn, store, &run)?;
            // A branch moment must name a branch of this notebook.
            let m = timeline::parse_moment(action.moment())?;
            timeline::resolve(conn, store, &m.run)?;
            cells::append(conn, &run, &action, cells::CellStatus::New, None)
        })
        .await?;
    let cell = if new.run {
        notebook::run(&state, cell.id).await?
    } else {
        cell
    };
    Ok((StatusCode::CREATED, Json(cell)))
}

pub async fn get_cell(
    State(state): State<AppState>,
    Path(id): Path<u64>,
    Query(wait): Query<Wait>,
) -> ApiResult<Json<Value>> {
    let cell = notebook::get(&state, id, wait.duration()).await?;
    let progress = notebook::progress_ns(&state, id).filter(|_| cell.status.busy());
    let mut v = serde_json::to_value(&cell).expect("cells serialize");
    v["vtime_ns"] = json!(progress);
    Ok(Json(v))
}

pub async fn run_cell(State(state): State<AppState>, Path(id): Path<u64>) -> ApiResult<Json<Cell>> {
    Ok(Json(notebook::run(&state, id).await?))
}

pub async fn delete_cell(
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> ApiResult<StatusCode> {
    state.read(move |conn, _| cells::delete(conn, id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn cell_file(State(state): State<AppState>, Path(id): Path<u64>) -> ApiResult<Response> {
    let (cell, bytes) = state
        .read(move |conn, _| Ok((cells::get(conn, id)?, cells::file(conn, id)?)))
        .await?;
    let Some(bytes) = bytes else {
        return Err(AppError::not_found(format!("cell {id} has no file")));
    };
    let name = match &cell.action {
        Action::File { path, .. } => path.rsplit('/').next().unwrap_or("file").to_string(),
        _ => "file".to_string(),
    };
    Ok(download(bytes, "application/octet-stream", &name))
}

pub async fn rerun_all(
    State(state): State<AppState>,
    Path(run): Path<String>,
) -> ApiResult<Json<Vec<Cell>>> {
    let r = run.clone();
    state
        .read(move |conn, store| run_of(conn, store, &r))
        .await?;
    Ok(Json(notebook::run_all(&state, run).await?))
}

pub async fn export_notebook(
    State(state): State<AppState>,
    Path(run): Path<String>,
) -> ApiResult<Response> {
    let r = run.clone();
    let cells = state
        .read(move |conn, store| {
            run_of(conn, store, &r)?;
            cells::list(conn, &r)
        })
        .await?;
    let file = notebook::export(&cells, &run);
    let bytes = serde_json::to_vec_pretty(&file).expect("notebooks serialize");
    Ok(download(
        bytes,
        "application/json",
        &format!("{}.notebook.json", run.replace('/', "-")),
    ))
}

pub async fn import_notebook(
    State(state): State<AppState>,
    Path(run): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Vec<Cell>>)> {
    if body.len() > notebook::MAX_IMPORT_BYTES {
        return Err(AppError::too_large(format!(
            "a notebook file may have at most {} bytes",
            notebook::MAX_IMPORT_BYTES
        )));
    }
    let file: NotebookFile = serde_json::from_slice(&body)
        .map_err(|e| AppError::bad_request(format!("not a notebook file: {e}")))?;
    let cells = state
        .read(move |conn, store| {
            run_of(conn, store, &run)?;
            notebook::import(conn, &run, &file)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(cells)))
}
