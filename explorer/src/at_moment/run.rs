//! Moments of stored runs: from the latest kept snapshot or snapshot file at or
//! before the moment (or boot).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cache::Base;
use super::{advance, Collect, MomentCache, MomentSession, Start, EVERY_NS};
use crate::moment::{format_vtime, Moment};
use crate::observer::Observer;
use crate::run::inputs::RunInputs;
use crate::run::{check, decision_point, snapshot_files, RunError, Session};
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

/// Replays the whole of stored run `run` once, keeping a snapshot every
/// [`EVERY_NS`]: opening its page makes every later moment of it start at most that
/// far back. The run is cut at its snapshot files into intervals that replay on their
/// own; the interval holding the run's first property failure (the moment its page
/// links first) goes first, then the others in time order. An interval whose last
/// second is kept already is skipped, and one kept in part goes on from its latest
/// kept snapshot before the first gap. Does nothing when the run is still going.
pub(super) fn warm(
    home: &Path,
    run: &str,
    cache: &MomentCache,
    observer: &mut dyn Observer,
) -> Result<(), RunError> {
    let store = RunStore::open(home).map_err(infra)?;
    let record = store.run(run).map_err(|e| RunError::Input(e.to_string()))?;
    let Some(end) = record.vtime_end_ns else {
        return Ok(());
    };
    let end = decision_point(end);
    let files: Vec<_> = snapshot_files(&store.run_dir(run))
        .into_iter()
        .filter(|(t, _)| *t < end)
        .collect();
    let first_failure = store
        .properties(run)
        .map_err(infra)?
        .iter()
        .filter_map(|p| p.first_failure.as_ref().map(|f| f.vtime_ns))
        .min();
    let times: Vec<u64> = files.iter().map(|(t, _)| *t).collect();
    let intervals: Vec<(u64, u64, Option<PathBuf>)> = warm_order(&times, end, first_failure)
        .into_iter()
        .map(|(from, to)| {
            let file = files
                .iter()
                .find(|(t, _)| *t == from)
                .map(|(_, p)| p.clone());
            (from, to, file)
        })
        .collect();
    let base = base(home, &record, run, cache, observer)?;
    let (plan, seed, duration_ns) = parts(&base);
    for (from, to, file) in intervals {
        let last = to.saturating_sub(1) / EVERY_NS * EVERY_NS;
        if last <= from || cache.has(run, last) {
            continue;
        }
        let mut kept = None;
        let mut t = (from / EVERY_NS + 1) * EVERY_NS;
        while t <= last && cache.has(run, t) {
            kept = Some(t);
            t += EVERY_NS;
        }
        let mut session = match (kept.and_then(|t| cache.nearest(run, t)), &file) {
            (Some((_, snap)), _) => Session::restore(plan, &snap, seed, duration_ns, None)?,
            (None, Some(path)) => {
                let snap = Arc::new(Session::load(path, plan)?);
                cache.keep(run, from, snap.clone());
                Session::restore(plan, &snap, seed, duration_ns, None)?
            }
            (None, None) => Session::boot(plan.clone(), seed, duration_ns)?,
        };
        match advance(cache, run, &mut session, to, observer) {
            // Reached, or the run ended (in its last interval).
            Ok(_) => {}
            Err(e) => return Err(RunError::Infrastructure(format!("{run}: {e}"))),
        }
    }
    Ok(())
}

/// The intervals a warm-up replays, each from a snapshot file (or boot at 0) to the
/// next file or the run's `end`: the one holding `first` first, then the rest in time
/// order.
fn warm_order(files: &[u64], end: u64, first: Option<u64>) -> Vec<(u64, u64)> {
    let mut starts: Vec<u64> = std::iter::once(0).chain(files.iter().copied()).collect();
    starts.sort_unstable();
    starts.dedup();
    let mut intervals: Vec<(u64, u64)> = starts
        .iter()
        .enumerate()
        .map(|(i, &s)| (s, starts.get(i + 1).copied().unwrap_or(end)))
        .filter(|(s, e)| s < e)
        .collect();
    if let Some(i) = first.and_then(|f| intervals.iter().position(|&(s, e)| s <= f && f < e)) {
        let holding = intervals.remove(i);
        intervals.insert(0, holding);
    }
    intervals
}

#[cfg(test)]
mod tests {
    use super::warm_order;

    const S: u64 = 1_000_000_000;

    #[test]
    fn warming_starts_with_the_interval_of_the_first_failure() {
        let files = [10 * S, 20 * S, 30 * S];
        assert_eq!(
            warm_order(&files, 45 * S, Some(23 * S)),
            [
                (20 * S, 30 * S),
                (0, 10 * S),
                (10 * S, 20 * S),
                (30 * S, 45 * S)
            ]
        );
        assert_eq!(
            warm_order(&files, 45 * S, None),
            [
                (0, 10 * S),
                (10 * S, 20 * S),
                (20 * S, 30 * S),
                (30 * S, 45 * S)
            ]
        );
        // A file at 0 and one at the very end add no empty interval.
        assert_eq!(warm_order(&[0, 5 * S], 5 * S, Some(S)), [(0, 5 * S)]);
    }
}
