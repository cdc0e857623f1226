//! Replays of a run to a moment `RUN@VTIME`: the run rebuilt from its inputs, started
//! from its latest snapshot at or before VTIME (or from boot), and run deterministically
//! to the decision point of VTIME: the runner's first step boundary at or after it,
//! after the runner's turn there (steps are 10 ms of virtual time; where a step ends is
//! itself a scheduling decision, so the world is only stopped where the run itself
//! stopped it). The replayed events are checked against the ones the run stored: a
//! replay that differs from its run says so, with the first differing event.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::inputs::RunInputs;
use super::session::{decision_point, Session, SessionState};
use super::{check, snapshots, RunError};
use crate::moment::{format_vtime, Moment};
use crate::observer::Observer;
use crate::store::{RunStore, StoredEvent};

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

/// The latest snapshot at or before `vtime_ns`, if any.
fn nearest_snapshot(run_dir: &Path, vtime_ns: u64) -> Option<(u64, PathBuf)> {
    snapshots::list(run_dir)
        .into_iter()
        .rfind(|(t, _)| *t <= vtime_ns)
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
}

/// A session stopped at a moment's decision point, with what it took to get there.
/// The session is a private copy: acting on it (exec, faults, forks) never changes the
/// stored run. It owns the scratch folder its volumes live in.
pub struct MomentSession {
    pub session: Session,
    pub moment: Moment,
    pub decision_point_ns: u64,
    /// `boot`, or the snapshot file it started from.
    pub started_from: String,
    pub started_at_ns: u64,
    /// The first event number the replay produced (the snapshot's next one).
    pub first_seq: u64,
    /// Events the replay produced before the decision point.
    pub events: Vec<StoredEvent>,
    pub seed: u64,
    pub duration_ns: u64,
    _scratch: tempfile::TempDir,
}

/// Rebuilds a stored run from its inputs and runs it to the decision point of
/// `moment`, from its latest snapshot at or before it (or from boot with
/// `from_start`). The run's inputs must be unchanged (its fingerprint).
pub fn restore_moment(
    home: &Path,
    moment: &Moment,
    from_start: bool,
    observer: &mut dyn Observer,
) -> Result<MomentSession, RunError> {
    let point = decision_point(moment.vtime_ns);
    let store = RunStore::open(home).map_err(|e| RunError::Infrastructure(e.to_string()))?;
    let record = store
        .run(&moment.run)
        .map_err(|e| RunError::Input(format!("{moment}: {e}")))?;
    if let Some(end) = record.vtime_end_ns.filter(|&end| point > end) {
        return Err(RunError::Input(format!(
            "{moment}: run {} ended at {}; pick a moment up to then",
            record.id,
            format_vtime(end)
        )));
    }
    let run_dir = store.run_dir(&record.id);
    let inputs = RunInputs::load(&run_dir)?;
    let (run_opts, prepared) = inputs.prepare_again(home, &moment.to_string(), observer)?;
    let scratch = tempfile::tempdir()
        .map_err(|e| RunError::Infrastructure(format!("a scratch folder: {e}")))?;
    let plan = prepared.world_plan(run_opts.backend, &scratch.path().join("volumes"))?;

    let start = (!from_start)
        .then(|| nearest_snapshot(&run_dir, point))
        .flatten();
    let (mut session, started_from) = match &start {
        Some((_, path)) => {
            let snap = Session::load(path, &plan)
                .map_err(|e| RunError::Input(format!("{moment}: {e}")))?;
            let session = Session::restore(&plan, &snap, inputs.seed, inputs.duration_ns, None)
                .map_err(|e| match e {
                    RunError::Input(m) => RunError::Input(format!("{}: {m}", path.display())),
                    other => RunError::Infrastructure(format!("{}: {other}", path.display())),
                })?;
            (session, path.display().to_string())
        }
        None => (
            Session::boot(plan, inputs.seed, inputs.duration_ns)?,
            "boot".to_string(),
        ),
    };
    let started_at_ns = session.now();
    let first_seq = session.runner().next_event();
    observer.info(&format!(
        "{moment} from {started_from} at {}",
        format_vtime(started_at_ns)
    ));
    let mut collect = Collect {
        events: Vec::new(),
        outer: observer,
    };
    let ending = session.run_to(point, &mut collect);
    match ending {
        // The run may end at the very decision point (its last step).
        Ok(_) if session.now() >= point => {}
        Ok(other) => {
            return Err(RunError::Infrastructure(format!(
                "{moment}: the replay ended before the moment: {other:?}"
            )))
        }
        Err(e) => {
            return Err(RunError::Infrastructure(format!(
                "{moment}: the replay failed: {e}"
            )))
        }
    }
    // Events exactly at the decision point belong to the next step.
    let events = collect
        .events
        .into_iter()
        .filter(|e| e.vtime_ns < point)
        .collect();
    Ok(MomentSession {
        session,
        moment: moment.clone(),
        decision_point_ns: point,
        started_from,
        started_at_ns,
        first_seq,
        events,
        seed: inputs.seed,
        duration_ns: inputs.duration_ns,
        _scratch: scratch,
    })
}

pub fn replay(
    opts: &ReplayOptions,
    observer: &mut dyn Observer,
) -> Result<ReplaySummary, RunError> {
    let wall = Instant::now();
    let at = restore_moment(&opts.home, &opts.moment, opts.from_start, observer)?;
    let store = RunStore::open(&opts.home).map_err(|e| RunError::Infrastructure(e.to_string()))?;
    let stored: Vec<StoredEvent> = store
        .events(&at.moment.run, at.started_at_ns, at.decision_point_ns)
        .map_err(|e| RunError::Infrastructure(e.to_string()))?
        .into_iter()
        .filter(|e| e.seq >= at.first_seq)
        .collect();
    let divergence = check::first_difference(&stored, &at.events);
    Ok(ReplaySummary {
        moment: at.moment.to_string(),
        decision_point_ns: at.decision_point_ns,
        started_from: at.started_from,
        started_at_ns: at.started_at_ns,
        state: at.session.state(),
        events_replayed: at.events.len(),
        divergence,
        wall_ms: wall.elapsed().as_millis() as u64,
    })
}
