//! Timelines: a stored run (`r5f2c…`) or a branch a notebook cell made from one of its
//! moments (`r5f2c…~12`: cell 12's). Every page and API that shows events takes a
//! timeline id, so branches are viewed, searched, exported and replayed like runs.
//! A campaign's timeline (`c5f2c…/T7`) is one more source: its own events are in the
//! campaign store's `timeline_events`, from its fork moment to its end.

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
    /// Timeline `T<n>` of a campaign (`parent`: the moment it forked from, `None` for
    /// the root).
    Campaign {
        timeline: Box<explorer::campaign::Timeline>,
        parent: Option<Moment>,
    },
}

#[derive(Debug, Clone)]
pub struct Timeline {
    pub id: String,
    /// The stored run at the root of this timeline.
    pub run: String,
    pub source: Source,
}

/// Checks an id from a request before it goes anywhere: a run id (letters and digits)
/// or a campaign timeline `C/T<n>`, then optionally `~` and a cell number. Run ids name
/// folders, so nothing else passes.
pub fn check_id(id: &str) -> Result<(), AppError> {
    let (root, rest) = match id.split_once('~') {
        Some((root, cell)) => (root, Some(cell)),
        None => (id, None),
    };
    let cell_ok = rest
        .is_none_or(|c| !c.is_empty() && c.len() <= 18 && c.bytes().all(|b| b.is_ascii_digit()));
    if let Some((campaign, t)) = root.split_once('/') {
        check_campaign_timeline(campaign, t)?;
        if cell_ok {
            return Ok(());
        }
    }
    let word_ok =
        !root.is_empty() && root.len() <= 64 && root.bytes().all(|b| b.is_ascii_alphanumeric());
    if word_ok && cell_ok {
        Ok(())
    } else {
        Err(AppError::bad_request(format!(
            "`{id}` is not a run or branch id (a run id like r5f2c1a9b3e, C/T<n>, or either ~CELL)"
        )))
    }
}

/// The notebook a timeline's cells belong to: a run's or a campaign timeline's (a
/// branch's is the one it was made in).
pub fn notebook_of(id: &str) -> &str {
    id.split('~').next().unwrap_or(id)
}

/// A campaign id: `c` and letters and digits (it names a folder).
pub fn check_campaign(id: &str) -> Result<(), AppError> {
    if id.starts_with('c') && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(AppError::bad_request(format!(
            "`{id}` is not a campaign id (like c5f2c1a9b3e)"
        )))
    }
}

/// `C` and `T<n>` of a campaign timeline id `C/T<n>`: the timeline number.
pub fn check_campaign_timeline(campaign: &str, t: &str) -> Result<u64, AppError> {
    check_campaign(campaign)?;
    t.strip_prefix('T')
        .filter(|n| !n.is_empty() && n.len() <= 18 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            AppError::bad_request(format!(
                "`{campaign}/{t}` is not a campaign timeline (write CAMPAIGN/T<number>, e.g. c5f2c/T7)"
            ))
        })
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
        None if id.contains('/') => {
            let (campaign, t) = id.split_once('/').expect("a campaign timeline");
            resolve_campaign_timeline(conn, campaign, t)
        }
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

/// A campaign's timeline from the campaign store.
fn resolve_campaign_timeline(
    conn: &Connection,
    campaign: &str,
    t: &str,
) -> Result<Timeline, AppError> {
    let number = check_campaign_timeline(campaign, t)?;
    let body: Option<String> = conn
        .query_row(
            "SELECT body FROM timelines WHERE campaign = ?1 AND id = ?2",
            rusqlite::params![campaign, number as i64],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    let body = body.ok_or_else(|| {
        AppError::not_found(format!(
            "no timeline `{campaign}/{t}` (see the campaigns list)"
        ))
    })?;
    let timeline: explorer::campaign::Timeline = serde_json::from_str(&body)
        .map_err(|e| AppError::internal(format!("{campaign}/{t}: stored timeline: {e}")))?;
    let parent = timeline.parent.map(|p| Moment {
        run: format!("{campaign}/T{p}"),
        vtime_ns: timeline.from_ns,
    });
    Ok(Timeline {
        id: format!("{campaign}/T{number}"),
        run: campaign.to_string(),
        source: Source::Campaign {
            timeline: Box::new(timeline),
            parent,
        },
    })
}

/// A campaign timeline's events with the columns of the `events` table, `run_id`
/// being `C/T<n>`; filtered on the primary key by `?1` (the timeline id), so outer
/// queries (`WHERE run_id = ?1 …`) read one timeline through the index.
const CAMPAIGN_TIMELINE_EVENTS: &str =
    "(SELECT campaign || '/T' || timeline AS run_id, seq, vtime_ns, node, kind, body
  FROM timeline_events
  WHERE campaign = substr(?1, 1, instr(?1, '/') - 1)
    AND timeline = CAST(substr(?1, instr(?1, '/') + 2) AS INTEGER))";

impl Timeline {
    /// The table (or subquery) holding this timeline's events, with the columns
    /// `run_id, seq, vtime_ns, node, kind, body`.
    pub fn table(&self) -> &'static str {
        match self.source {
            Source::Run(_) => "events",
            Source::Branch { .. } => "notebook_events",
            Source::Campaign { .. } => CAMPAIGN_TIMELINE_EVENTS,
        }
    }

    pub fn is_campaign(&self) -> bool {
        matches!(self.source, Source::Campaign { .. })
    }

    /// Where the timeline starts (a branch: its parent moment's decision point).
    pub fn start_ns(&self) -> u64 {
        match &self.source {
            Source::Run(_) => 0,
            Source::Branch { parent, .. } => explorer::run::decision_point(parent.vtime_ns),
            Source::Campaign { timeline, .. } => timeline.from_ns,
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
            Source::Campaign { timeline, .. } => Some(timeline.end_ns),
        }
    }

    pub fn status(&self) -> String {
        match &self.source {
            Source::Run(r) => r.status.as_str().to_string(),
            Source::Branch { cell, .. } => cell.status.as_str().to_string(),
            Source::Campaign { timeline, .. } => campaign_timeline_status(timeline).to_string(),
        }
    }

    pub fn is_run(&self) -> bool {
        matches!(self.source, Source::Run(_))
    }

    /// The notebook this timeline's cells are in (see [`notebook_of`]).
    pub fn notebook(&self) -> &str {
        notebook_of(&self.id)
    }

    /// A run or a campaign timeline: a timeline a notebook belongs to.
    pub fn has_notebook(&self) -> bool {
        matches!(self.source, Source::Run(_) | Source::Campaign { .. })
    }

    pub fn failed_run(&self) -> bool {
        matches!(&self.source, Source::Run(r) if r.status == RunStatus::PropertiesFailed)
    }

    pub fn action(&self) -> Option<&Action> {
        match &self.source {
            Source::Run(_) | Source::Campaign { .. } => None,
            Source::Branch { cell, .. } => Some(&cell.action),
        }
    }

    pub fn parent(&self) -> Option<&Moment> {
        match &self.source {
            Source::Run(_) => None,
            Source::Branch { parent, .. } => Some(parent),
            Source::Campaign { parent, .. } => parent.as_ref(),
        }
    }
}

/// `error`, `failed` (a property failed in it), `finished` (played to the run's end) or
/// `explored` (run for its horizon).
pub fn campaign_timeline_status(t: &explorer::campaign::Timeline) -> &'static str {
    if t.error.is_some() {
        "error"
    } else if !t.failed.is_empty() {
        "failed"
    } else if t.finished {
        "finished"
    } else {
        "explored"
    }
}
