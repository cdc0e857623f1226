//! A session at a moment: the one way to reach `RUN@VTIME` or `C/T@VTIME`, used by
//! `detvm replay` and by the notebook. The system is rebuilt from the stored inputs,
//! started from the latest state known at or before the moment (a snapshot kept in
//! memory by an earlier replay, a snapshot file, or boot), run deterministically to
//! the moment's decision point (the runner's first step boundary at or after it,
//! after the runner's turn there: steps are 10 ms of virtual time and where a step
//! ends is itself a scheduling decision, so the world is only stopped where the run
//! itself stopped it), and the replayed events are checked against the stored ones.
//!
//! A stored run starts from its own snapshot files; a campaign timeline from the end
//! of the nearest ancestor on its path of forks that has a file (campaigns keep files
//! of their frontier), then each timeline on the rest of the path is forked from its
//! parent's end with its branch id and faults. With a [`MomentCache`] that keeps,
//! the replay keeps a snapshot every [`EVERY_NS`] on its way (and the files it
//! loads), so later moments nearby start from memory.

mod cache;
mod campaign;
mod run;

use std::path::Path;
use std::sync::Arc;

pub use cache::{snapshot_bytes, Base, MomentCache, EVERY_NS, MAX_BYTES};

use crate::moment::Moment;
use crate::observer::Observer;
use crate::run::{Ending, RunError, Session};
use crate::store::StoredEvent;

/// How to start.
#[derive(Debug, Clone, Copy, Default)]
pub struct Start {
    /// Boot instead of starting from a snapshot (stored runs only).
    pub from_start: bool,
}

/// A session stopped at a moment's decision point, with what it took to get there.
/// The session is a private copy: acting on it (exec, faults, forks) never changes
/// the stored run. It keeps the run's base (the scratch folder its volumes live in)
/// alive.
pub struct MomentSession {
    pub session: Session,
    pub moment: Moment,
    pub decision_point_ns: u64,
    /// `boot`, a snapshot file, or a snapshot kept in memory (for a campaign timeline,
    /// then its path of forks).
    pub started_from: String,
    pub started_at_ns: u64,
    /// The first event number the replay of the moment's timeline produced.
    pub first_seq: u64,
    /// Events of the moment's timeline the replay produced before the decision point.
    pub events: Vec<StoredEvent>,
    /// The first replayed event that differs from the stored ones, if any.
    pub divergence: Option<String>,
    pub base: Arc<Base>,
}

/// Rebuilds the session at `moment` (a stored run's, or a campaign timeline's
/// `C/T<n>`), checked against the stored events.
pub fn session_at(
    home: &Path,
    moment: &Moment,
    start: Start,
    cache: &MomentCache,
    observer: &mut dyn Observer,
) -> Result<MomentSession, RunError> {
    if moment.run.contains('/') {
        campaign::session_at(home, moment, cache, observer)
    } else {
        run::session_at(home, moment, start, cache, observer)
    }
}

/// Fills `cache` along a stored run or a campaign timeline `C/T<n>` (a replay of the
/// whole of it keeping a snapshot every [`EVERY_NS`]), so its moments open fast. Does
/// nothing when the cache keeps nothing.
pub fn warm(
    home: &Path,
    timeline: &str,
    cache: &MomentCache,
    observer: &mut dyn Observer,
) -> Result<(), RunError> {
    if !cache.keeps() {
        return Ok(());
    }
    if timeline.contains('/') {
        campaign::warm(home, timeline, cache, observer)
    } else {
        run::warm(home, timeline, cache, observer)
    }
}

/// Collects the events a replay produces.
struct Collect<'a> {
    events: Vec<StoredEvent>,
    outer: &'a mut dyn Observer,
}

impl Observer for Collect<'_> {
    fn events(&mut self, batch: &[StoredEvent]) -> Result<(), String> {
        self.events.extend_from_slice(batch);
        self.outer.events(batch)
    }
    fn progress(&mut self, vtime_ns: u64, phase: &str) {
        self.outer.progress(vtime_ns, phase)
    }
    fn info(&mut self, message: &str) {
        self.outer.info(message)
    }
}

/// Runs `session` of `timeline` to `point`, keeping a snapshot at every multiple of
/// [`EVERY_NS`] it passes that is not kept yet (when the cache keeps). Stops early
/// when the run ends.
fn advance(
    cache: &MomentCache,
    timeline: &str,
    session: &mut Session,
    point: u64,
    observer: &mut dyn Observer,
) -> Result<Ending, String> {
    if !cache.keeps() {
        return session.run_to(point, observer);
    }
    while session.now() < point {
        let next = ((session.now() / EVERY_NS + 1) * EVERY_NS).min(point);
        match session.run_to(next, observer)? {
            Ending::Reached => {}
            other => return Ok(other),
        }
        let now = session.now();
        if now.is_multiple_of(EVERY_NS) && !cache.has(timeline, now) {
            cache.keep(timeline, now, Arc::new(session.snapshot()?));
        }
    }
    Ok(Ending::Reached)
}
