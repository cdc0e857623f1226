//! Moments of stored runs: from the latest kept snapshot or snapshot file at or
//! before the moment (or boot).

use std::path::Path;
use std::sync::Arc;

use super::cache::Base;
use super::{advance, Collect, MomentCache, MomentSession, Start, EVERY_NS};
use crate::moment::{format_vtime, Moment};
use crate::observer::Observer;
use crate::run::inputs::RunInputs;
use crate::run::{check, decision_point, snapshot_files, Ending, RunError, Session};
use crate::store::{RunRecord, RunStore};

fn infra(e: impl std::fmt::Display) -> RunError {
    RunError::Infrastructure(e.to_string())
}

/// The run's base: its inputs prepared again (refused if they changed) and its world
/// plan, its volumes in a scratch folder.
fn base(
    home: &Path,
    record: &RunRecord,
    what: &str,
    cache: &MomentCache,
    observer: &mut dyn Observer,
) -> Result<Arc<Base>, RunError> {
    cache.base(&record.id, || {
        let store = RunStore::open(home).map_err(infra)?;
        let inputs = RunInputs::load(&store.run_dir(&record.id))?;
        let (opts, prepared) = inputs.prepare_again(home, what, observer)?;
        let scratch = tempfile::tempdir()
            .map_err(|e| RunError::Infrastructure(format!("a scratch folder: {e}")))?;
        let plan = prepared.world_plan(opts.backend, &scratch.path().join("volumes"))?;
        Ok(Base::Run {
            plan,
            seed: inputs.seed,
            duration_ns: inputs.duration_ns,
            _scratch: scratch,
        })
    })
}

fn parts(base: &Base) -> (&crate::run::setup::WorldPlan, u64, u64) {
    match base {
        Base::Run {
            plan,
            seed,
            duration_ns,
            ..
        } => (plan, *seed, *duration_ns),
        Base::Campaign { .. } => unreachable!("a run's base"),
    }
}

pub(super) fn session_at(
    home: &Path,
    moment: &Moment,
    start: Start,
    cache: &MomentCache,
    observer: &mut dyn Observer,
) -> Result<MomentSession, RunError> {
    let point = decision_point(moment.vtime_ns);
    let store = RunStore::open(home).map_err(infra)?;
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
    let base = base(home, &record, &moment.to_string(), cache, observer)?;
    let (plan, seed, duration_ns) = parts(&base);
    let run = record.id.as_str();
    let restore = |snap: &crate::run::SessionSnapshot, from: &str| {
        Session::restore(plan, snap, seed, duration_ns, None).map_err(|e| match e {
            RunError::Input(m) => RunError::Input(format!("{from}: {m}")),
            other => RunError::Infrastructure(format!("{from}: {other}")),
        })
    };
    let kept = (!start.from_start)
        .then(|| cache.nearest(run, point))
        .flatten();
    let file = (!start.from_start)
        .then(|| {
            snapshot_files(&store.run_dir(run))
                .into_iter()
                .rfind(|(t, _)| *t <= point)
        })
        .flatten();
    let (mut session, started_from) = match (kept, file) {
        (Some((t, snap)), file) if file.as_ref().is_none_or(|(ft, _)| *ft <= t) => {
            let from = format!("a snapshot kept in memory at {}", format_vtime(t));
            (restore(&snap, &from)?, from)
        }
        (_, Some((t, path))) => {
            let from = path.display().to_string();
            let snap = Session::load(&path, plan)
                .map_err(|e| RunError::Input(format!("{moment}: {e}")))?;
            let session = restore(&snap, &from)?;
            cache.keep(run, t, Arc::new(snap));
            (session, from)
        }
        (_, None) => (
            Session::boot(plan.clone(), seed, duration_ns)?,
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
    let ending = advance(cache, run, &mut session, point, &mut collect);
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
    let events: Vec<_> = collect
        .events
        .into_iter()
        .filter(|e| e.vtime_ns < point)
        .collect();
    let stored: Vec<_> = store
        .events(run, started_at_ns, point)
        .map_err(infra)?
        .into_iter()
        .filter(|e| e.seq >= first_seq)
        .collect();
    let divergence = check::first_difference(&stored, &events);
    Ok(MomentSession {
        session,
        moment: moment.clone(),
        decision_point_ns: point,
        started_from,
        started_at_ns,
        first_seq,
        events,
        divergence,
        base,
    })
}

/// Replays the whole of stored run `run` once (from boot, or the latest kept
/// snapshot before the first gap), keeping a snapshot every [`EVERY_NS`]: opening
/// its page makes every later moment of it start at most that far back. Does nothing
/// when the cache keeps nothing, the run is still going, or the cache already holds
/// the run's last one.
pub fn warm(
    home: &Path,
    run: &str,
    cache: &MomentCache,
    observer: &mut dyn Observer,
) -> Result<(), RunError> {
    if !cache.keeps() {
        return Ok(());
    }
    let store = RunStore::open(home).map_err(infra)?;
    let record = store.run(run).map_err(|e| RunError::Input(e.to_string()))?;
    let Some(end) = record.vtime_end_ns else {
        return Ok(());
    };
    let last = end.saturating_sub(1) / EVERY_NS * EVERY_NS;
    if last == 0 || cache.has(run, last) {
        return Ok(());
    }
    let base = base(home, &record, run, cache, observer)?;
    let (plan, seed, duration_ns) = parts(&base);
    let mut from = None;
    let mut t = EVERY_NS;
    while t <= last && cache.has(run, t) {
        from = Some(t);
        t += EVERY_NS;
    }
    let mut session = match from.and_then(|t| cache.nearest(run, t)) {
        Some((_, snap)) => Session::restore(plan, &snap, seed, duration_ns, None)?,
        None => Session::boot(plan.clone(), seed, duration_ns)?,
    };
    match advance(cache, run, &mut session, decision_point(end), observer) {
        Ok(Ending::Reached) | Ok(_) => Ok(()),
        Err(e) => Err(RunError::Infrastructure(format!("{run}: {e}"))),
    }
}
