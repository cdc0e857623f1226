//! Timelines: a stored run (`r5f2c…`) or a branch a notebook cell made from one of its
//! moments (`r5f2c…~12`: cell 12's). Every page and API that shows events takes a
//! timeline id, so branches are viewed, searched, exported and replayed like runs.
//! (A campaign's timelines can be added here as one more [`Source`].)

use explorer::moment::Moment;
use explorer::store::{RunRecord, RunStatus, RunStore};
use rusqlite::Connection;

use crate::cells::{self, Action, Cell};
use crate::error::AppError;

#[derive(Debug, Clone)]
pub enum Source {
    Run(RunRecord),
    /// A notebook cell's branch of a moment of another timeline.
    Branch {
        cell: Box<Cell>,
        parent: Moment,
    },
}

#[derive(Debug, Clone)]
pub struct Timeline {
    pub id: String,
    /// The stored run at the root of this timeline.
    pub run: String,
    pub source: Source,
}

/// Checks an id from a request before it goes anywhere: letters and digits, then
/// optionally `~` and a cell number. Run ids name folders, so nothing else passes.
pub fn check_id(id: &str) -> Result<(), AppError> {
    let (run, rest) = match id.split_once('~') {
        Some((run, cell)) => (run, Some(cell)),
        None => (id, None),
    };
    let word_ok =
        !run.is_empty() && run.len() <= 64 && run.bytes().all(|b| b.is_ascii_alphanumeric());
    let cell_ok = rest
        .is_none_or(|c| !c.is_empty() && c.len() <= 18 && c.bytes().all(|b| b.is_ascii_digit()));
    if word_ok && cell_ok {
        Ok(())
    } else {
        Err(AppError::bad_request(format!(
            "`{id}` is not a run or branch id (a run id like r5f2c1a9b3e, or RUN~CELL)"
        )))
    }
}

/// Parses `TIMELINE@VTIME` and checks the timeline id.
pub fn parse_moment(text: &str) -> Result<Moment, AppError> {
    let moment: Moment = text.parse().map_err(AppError::bad_request)?;
    check_id(&moment.run)?;
    Ok(moment)
}

pub fn resolve(conn: &Connection, store: &RunStore, id: &str) -> Result<Timeline, AppError> {
    check_id(id)?;
    match id.split_once('~') {
        None => {
            let record = store.run(id)?;
            Ok(Timeline {
                id: id.to_string(),
                run: record.id.clone(),
                source: Source::Run(record),
            })
        }
        Some((run, cell_id)) => {
            let cell_id: u64 = cell_id
                .parse()
                .map_err(|_| AppError::bad_request("bad cell id"))?;
            let cell = cells::get(conn, cell_id)
                .map_err(|_| AppError::not_found(format!("no branch `{id}`")))?;
            if cell.run != run || !cell.action.branches() {
                return Err(AppError::not_found(format!("no branch `{id}`")));
            }
            let parent = parse_moment(cell.action.moment())?;
            Ok(Timeline {
                id: id.to_string(),
                run: run.to_string(),
                source: Source::Branch {
                    cell: Box::new(cell),
                    parent,
                },
            })
        }
    }
}

impl Timeline {
    /// The table holding this timeline's events.
    pub fn table(&self) -> &'static str {
        match self.source {
            Source::Run(_) => "events",
            Source::Branch { .. } => "notebook_events",
        }
    }

    /// Where the timeline starts (a branch: its parent moment's decision point).
    pub fn start_ns(&self) -> u64 {
        match &self.source {
            Source::Run(_) => 0,
            Source::Branch { parent, .. } => explorer::run::decision_point(parent.vtime_ns),
        }
    }

    /// Where it ends, if it has (a run still going or a branch not run yet: `None`).
    pub fn end_ns(&self) -> Option<u64> {
        match &self.source {
            Source::Run(r) => r.vtime_end_ns,
            Source::Branch { cell, .. } => cell
                .output
                .as_ref()
                .and_then(|o| o.get("end_ns"))
                .and_then(|v| v.as_u64()),
        }
    }

    pub fn status(&self) -> String {
        match &self.source {
            Source::Run(r) => r.status.as_str().to_string(),
            Source::Branch { cell, .. } => cell.status.as_str().to_string(),
        }
    }

    pub fn is_run(&self) -> bool {
        matches!(self.source, Source::Run(_))
    }

    pub fn failed_run(&self) -> bool {
        matches!(&self.source, Source::Run(r) if r.status == RunStatus::PropertiesFailed)
    }

    pub fn action(&self) -> Option<&Action> {
        match &self.source {
            Source::Run(_) => None,
            Source::Branch { cell, .. } => Some(&cell.action),
        }
    }

    pub fn parent(&self) -> Option<&Moment> {
        match &self.source {
            Source::Run(_) => None,
            Source::Branch { parent, .. } => Some(parent),
        }
    }
}
