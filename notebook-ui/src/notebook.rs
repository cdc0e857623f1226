//! Running cells and whole notebooks, and notebooks as files (export, import).

use std::sync::Arc;
use std::time::Duration;

use crate::cells::{self, Action, Cell, CellStatus, FileCell, NotebookFile, FORMAT};
use crate::engine;
use crate::error::AppError;
use crate::jobs::Job;
use crate::state::AppState;
use crate::timeline;

/// The largest notebook file an import takes.
pub const MAX_IMPORT_BYTES: usize = 4 * 1024 * 1024;

fn job_key(id: u64) -> String {
    format!("cell:{id}")
}

/// Checks that a cell's moment belongs to `run` (the run itself or one of its
/// notebook's branches).
pub fn check_action(run: &str, action: &Action) -> Result<(), AppError> {
    let moment = timeline::parse_moment(action.moment())?;
    let root = moment.run.split('~').next().unwrap_or("");
    if root != run {
        return Err(AppError::bad_request(format!(
            "{} is not a moment of run {run} or of its branches",
            action.moment()
        )));
    }
    Ok(())
}

/// Starts a cell's run in the background (it must be marked queued already).
fn spawn(state: &AppState, id: u64) -> Arc<Job> {
    let db = state.db.clone();
    state.jobs.start(&job_key(id), false, move |vtime| {
        let mut conn = db.conn().map_err(|e| e.message)?;
        cells::set_running(&conn, id).map_err(|e| e.message)?;
        let cell = cells::get(&conn, id).map_err(|e| e.message)?;
        let outcome = engine::run_cell(&db, &cell, vtime);
        cells::finish(&mut conn, id, outcome.clone()).map_err(|e| e.message)?;
        outcome.map(|(output, _)| output)
    })
}

/// Queues a cell and starts it; a cell already queued or running is left alone.
pub async fn run(state: &AppState, id: u64) -> Result<Cell, AppError> {
    let queued = state.read(move |conn, _| cells::queue(conn, id)).await?;
    if queued {
        spawn(state, id);
    }
    state.read(move |conn, _| cells::get(conn, id)).await
}

/// Re-runs every cell of a notebook in order, one after another (later cells may
/// start from earlier cells' branches). Returns at once with the cells queued.
pub async fn run_all(state: &AppState, run: String) -> Result<Vec<Cell>, AppError> {
    let r = run.clone();
    let ids = state
        .read(move |conn, _| {
            let mut ids = Vec::new();
            for c in cells::list(conn, &r)? {
                if cells::queue(conn, c.id)? {
                    ids.push(c.id);
                }
            }
            Ok(ids)
        })
        .await?;
    let s = state.clone();
    tokio::spawn(async move {
        for id in ids {
            spawn(&s, id).wait(Duration::from_secs(24 * 3600)).await;
        }
    });
    state.read(move |conn, _| cells::list(conn, &run)).await
}

/// Waits up to `wait` for a cell's run to end, then reads it.
pub async fn get(state: &AppState, id: u64, wait: Duration) -> Result<Cell, AppError> {
    if let Some(job) = state.jobs.get(&job_key(id)) {
        job.wait(wait).await;
    } else if !wait.is_zero() {
        // Queued behind a notebook re-run: poll until it starts or ends.
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let cell = state.read(move |conn, _| cells::get(conn, id)).await?;
            if !cell.status.busy() || tokio::time::Instant::now() >= deadline {
                return Ok(cell);
            }
            if let Some(job) = state.jobs.get(&job_key(id)) {
                job.wait(deadline - tokio::time::Instant::now()).await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    state.read(move |conn, _| cells::get(conn, id)).await
}

/// A cell's progress line while it runs: the virtual time it reached.
pub fn progress_ns(state: &AppState, id: u64) -> Option<u64> {
    state
        .jobs
        .get(&job_key(id))
        .map(|j| crate::jobs::Jobs::progress(&j))
}

pub fn export(cells: &[Cell], run: &str) -> NotebookFile {
    NotebookFile {
        format: FORMAT.to_string(),
        run: run.to_string(),
        cells: cells
            .iter()
            .map(|c| FileCell {
                id: Some(c.id),
                action: c.action.clone(),
                output: c.output.clone(),
            })
            .collect(),
    }
}

/// Rewrites a moment from the exporting notebook (`RUN~OLDCELL@T`) for this one.
fn remap(moment: &str, from_run: &str, to_run: &str, ids: &[(u64, u64)]) -> String {
    let Some((tl, t)) = moment.split_once('@') else {
        return moment.to_string();
    };
    let mut parts = tl.splitn(2, '~');
    let run = parts.next().unwrap_or("");
    let run = if run == from_run { to_run } else { run };
    match parts.next().and_then(|c| c.parse::<u64>().ok()) {
        Some(old) => {
            let new = ids.iter().find(|(o, _)| *o == old).map_or(old, |(_, n)| *n);
            format!("{run}~{new}@{t}")
        }
        None => format!("{run}@{t}"),
    }
}

fn with_moment(action: &Action, moment: String) -> Action {
    let mut a = action.clone();
    match &mut a {
        Action::Moment { moment: m }
        | Action::Branch { moment: m, .. }
        | Action::Exec { moment: m, .. }
        | Action::File { moment: m, .. }
        | Action::Fault { moment: m, .. } => *m = moment,
    }
    a
}

/// Appends a notebook file's cells to `run`'s notebook, not run (status `new`, the
/// file's outputs kept for reading); "re-run all" computes them here.
pub fn import(
    conn: &mut rusqlite::Connection,
    run: &str,
    file: &NotebookFile,
) -> Result<Vec<Cell>, AppError> {
    if file.format != FORMAT {
        return Err(AppError::bad_request(format!(
            "not a detvm notebook (format `{}`, expected `{FORMAT}`)",
            file.format
        )));
    }
    let mut ids: Vec<(u64, u64)> = Vec::new();
    let mut added = Vec::new();
    for fc in &file.cells {
        let action = with_moment(&fc.action, remap(fc.action.moment(), &file.run, run, &ids));
        check_action(run, &action)?;
        let cell = cells::append(conn, run, &action, CellStatus::New, fc.output.as_ref())?;
        if let Some(old) = fc.id {
            ids.push((old, cell.id));
        }
        added.push(cell);
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imported_moments_point_at_the_new_cells() {
        let ids = [(7, 31), (9, 32)];
        assert_eq!(remap("rA~7@1.5s", "rA", "rB", &ids), "rB~31@1.5s");
        assert_eq!(remap("rA@2s", "rA", "rB", &ids), "rB@2s");
        assert_eq!(remap("rA~8@2s", "rA", "rA", &ids), "rA~8@2s");
    }
}
