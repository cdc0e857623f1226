//! `detvm replay RUN@VTIME` (or `C/T@VTIME`): the session at the moment
//! ([`crate::at_moment::session_at`]) summed up, with the first replayed event that
//! differs from the stored run, if any.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::session::SessionState;
use super::RunError;
use crate::at_moment::{session_at, MomentCache, Start};
use crate::moment::Moment;
use crate::observer::Observer;

pub struct ReplayOptions {
    pub home: PathBuf,
    pub moment: Moment,
    /// Boot instead of starting from a snapshot.
    pub from_start: bool,
}

/// The state at the moment, as printed and written with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct ReplaySummary {
    pub moment: String,
    /// The step boundary the world was run to: the moment rounded up to a step.
    pub decision_point_ns: u64,
    /// `boot`, or the snapshot file it started from.
    pub started_from: String,
    pub started_at_ns: u64,
    #[serde(flatten)]
    pub state: SessionState,
    pub events_replayed: usize,
    /// The first event that differs from the stored run, if any.
    pub divergence: Option<String>,
    pub wall_ms: u64,
}

pub fn replay(
    opts: &ReplayOptions,
    observer: &mut dyn Observer,
) -> Result<ReplaySummary, RunError> {
    let wall = Instant::now();
    let start = Start {
        from_start: opts.from_start,
    };
    let at = session_at(
        &opts.home,
        &opts.moment,
        start,
        &MomentCache::none(),
        observer,
    )?;
    Ok(ReplaySummary {
        moment: at.moment.to_string(),
        decision_point_ns: at.decision_point_ns,
        started_from: at.started_from,
        started_at_ns: at.started_at_ns,
        state: at.session.state(),
        events_replayed: at.events.len(),
        divergence: at.divergence,
        wall_ms: wall.elapsed().as_millis() as u64,
    })
}
