//! `detvm minimize C/T`: shrinks a failing timeline of a campaign (docs/explore.md,
//! "Minimizing a failure").
//!
//! 1. **The faults.** The faults applied on the timeline's path (each branch's swarm plan,
//!    scheduled from its fork moment) are reduced by delta debugging ([`ddmin`]) while
//!    the same property still fails when the path is replayed, from the root's setup
//!    snapshot, with only the kept faults. Determinism makes each test one replay. The
//!    smallest list is then written as a fault-plan file at absolute times and run as a
//!    plain `detvm run`, to say whether that reproduces it too (a plain run does not
//!    re-seed the World at the forks, so it may not).
//! 2. **The bug-likelihood curve.** From moments along the path (the root's setup
//!    moment, every fork point, every half horizon in between, and the moment just
//!    before the failure), K fresh branches (new branch ids from the minimize seed, new
//!    swarm faults) run to the failure time plus a horizon; the curve is the share that
//!    fails the same property, and the bug "became likely" at the earliest moment from
//!    which more than half fail at every later point.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use rand_chacha::rand_core::Rng;
use serde::{Deserialize, Serialize};
use vmm::world::{Fault, FaultPlan, ScheduledFault, Span};

use super::ddmin::ddmin;
use super::parallel::in_parallel;
use super::store::CampaignStore;
use super::{failures, replay, Root, Timeline, FINISH_LIMIT_NS};
use crate::moment::format_vtime;
use crate::observer::{Observer, Quiet};
use crate::properties::Property;
use crate::run::inputs::RunInputs;
use crate::run::{decision_point, Ending, RunError, Session, SessionSnapshot, STEP_NS};

#[derive(Debug, Clone)]
pub struct MinimizeOptions {
    /// The `.detvm` folder.
    pub home: PathBuf,
    /// `C/T`: campaign and timeline.
    pub timeline: String,
    /// Fresh branches per moment of the curve.
    pub trials: usize,
    pub jobs: usize,
    /// Seeds the fresh branches' ids (and so their randomness and faults).
    pub seed: u64,
    /// The curve's spacing between fork points (default: half the campaign's horizon).
    pub every_ns: Option<u64>,
    /// Stop the fault search after this many replays, with the smallest failing list
    /// found by then.
    pub max_replays: Option<usize>,
}

/// One fault applied on the path: the timeline whose plan drew it, and when it started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathFault {
    pub timeline: u64,
    pub at_ns: u64,
    pub fault: Fault,
}

/// How many of the fresh branches from one moment failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CurvePoint {
    pub at_ns: u64,
    /// The timeline on the path that holds this moment (a fork point: the parent).
    pub timeline: u64,
    pub failing: usize,
    pub trials: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reproduction {
    /// The kept faults at their absolute times, as a fault-plan file.
    pub faults_file: PathBuf,
    /// The plain run of that file, as `detvm run` prints its reproduce line.
    pub command: String,
    /// Whether that run, which was made, failed the same property.
    pub reproduces: bool,
    pub run: Option<String>,
    /// The timeline's failing moment, which always reproduces it (`detvm replay`).
    pub moment: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MinimizeReport {
    /// `C/T`.
    pub timeline: String,
    /// The property kept failing, and when it first failed in the timeline.
    pub property: String,
    pub message: String,
    pub failure_ns: u64,
    /// Every fault applied on the path, and the smallest list that still fails.
    pub faults: Vec<PathFault>,
    pub minimal: Vec<PathFault>,
    /// Replays the fault search ran (each a distinct subset), and whether it ran to its
    /// end (the list is 1-minimal: without any one of its faults it passes) or stopped
    /// at `--max-replays`.
    pub replays: usize,
    pub search_complete: bool,
    /// The minimal list replayed once more from the root, without the search's cached
    /// prefixes, failed the property again.
    pub confirmed: bool,
    pub reproduction: Reproduction,
    pub seed: u64,
    pub trials: usize,
    pub curve: Vec<CurvePoint>,
    /// The earliest moment from which more than half of the fresh branches fail, at it
    /// and at every later point of the curve.
    pub likely_from_ns: Option<u64>,
    pub wall_ms: u64,
}

/// A timeline's path from the root, replayable with any subset of its faults.
struct Lineage<'a> {
    root: &'a Root,
    /// The root after setup.
    start: SessionSnapshot,
    /// The path without the root, in order; the last one failed.
    timelines: Vec<Timeline>,
    /// Each timeline's faults, from its fork moment.
    plans: Vec<FaultPlan>,
    /// Every fault of the path as (timeline index, fault index), in path order.
    flat: Vec<(usize, usize)>,
    property: String,
    /// Timelines' end snapshots by the plans that led there: replays sharing a prefix
    /// of kept faults start from it.
    cache: Mutex<Vec<(Vec<FaultPlan>, SessionSnapshot)>>,
}

/// How a replay of the path ended.
struct Outcome {
    failed: bool,
    failure_ns: u64,
    properties: Vec<Property>,
}

impl Lineage<'_> {
    /// The plans with only the faults of `kept` (indices into `flat`).
    fn plans_with(&self, kept: &[usize]) -> Vec<FaultPlan> {
        let mut plans = vec![FaultPlan::default(); self.plans.len()];
        for &k in kept {
            let (t, f) = self.flat[k];
            plans[t].faults.push(self.plans[t].faults[f].clone());
        }
        plans
    }

    fn path_faults(&self, kept: &[usize]) -> Vec<PathFault> {
        kept.iter()
            .map(|&k| {
                let (t, f) = self.flat[k];
                let s = &self.plans[t].faults[f];
                PathFault {
                    timeline: self.timelines[t].id,
                    at_ns: self.timelines[t].from_ns + s.at.nanos_u64(),
                    fault: s.fault.clone(),
                }
            })
            .collect()
    }

    /// The longest cached prefix of `plans`: how many timelines it covers, and the
    /// snapshot at the end of the last of them.
    fn cached(&self, plans: &[FaultPlan]) -> (usize, SessionSnapshot) {
        let cache = self.cache.lock().expect("cache lock");
        cache
            .iter()
            .filter(|(key, _)| plans.starts_with(key))
            .max_by_key(|(key, _)| key.len())
            .map_or((0, self.start.clone()), |(key, snap)| {
                (key.len(), snap.clone())
            })
    }

    fn remember(&self, key: &[FaultPlan], snap: &SessionSnapshot) {
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.iter().any(|(k, _)| k == key) {
            return;
        }
        if cache.len() >= 4 * self.timelines.len() {
            cache.remove(0);
        }
        cache.push((key.to_vec(), snap.clone()));
    }

    /// Replays the path with these plans, to the end of the last timeline, from the
    /// longest cached prefix or (`cached` false) from the root.
    fn run(&self, plans: &[FaultPlan], cached: bool) -> Result<Outcome, String> {
        let (done, mut snap) = if cached {
            self.cached(plans)
        } else {
            (0, self.start.clone())
        };
        let last = self.timelines.len() - 1;
        for (i, t) in self.timelines.iter().enumerate().skip(done) {
            let mut session = self
                .root
                .start_branch(&snap, t.branch.unwrap_or(0), &plans[i])?;
            let from = session.now();
            let mut ending =
                self.root
                    .advance(&mut session, from, self.root.horizon_ns, &mut Quiet)?;
            if i == last {
                ending = self.judged_there(&mut session, ending)?;
            }
            if i == last || ending != Ending::Reached {
                return Ok(self.judge(&mut session, ending));
            }
            snap = session.snapshot()?;
            self.remember(&plans[..=i], &snap);
        }
        unreachable!("the loop judges the last timeline")
    }

    fn judge(&self, session: &mut Session, ending: Ending) -> Outcome {
        let finished = ending != Ending::Reached;
        if finished {
            let _ = session.finish();
        }
        let properties = session.runner().state.book.properties();
        let failed = failures(&properties, finished).contains(&self.property);
        let failure_ns = properties
            .iter()
            .find(|p| p.id == self.property)
            .and_then(|p| p.first_failure.as_ref())
            .map_or(session.now(), |f| f.vtime_ns);
        Outcome {
            failed,
            failure_ns,
            properties,
        }
    }

    /// Where the failing timeline's drivers were ended and it was judged, when the
    /// campaign judged it after its horizon.
    fn judged_at(&self) -> Option<u64> {
        self.timelines.last().and_then(|t| t.judged_at_ns)
    }

    /// A session of the failing timeline's path that reached its judged horizon is
    /// judged there, as the campaign judged the timeline; the ending after that.
    fn judged_there(&self, session: &mut Session, ending: Ending) -> Result<Ending, String> {
        if ending != Ending::Reached || self.judged_at().is_none() {
            return Ok(ending);
        }
        self.root.judge_now(session, &mut Quiet)?;
        Ok(Ending::Finished)
    }

    /// The curve's moments: (virtual time, index of the path timeline that runs there;
    /// `None` for a fork point, which is its parent's end).
    fn moments(&self, failure_ns: u64, every_ns: u64) -> Vec<(u64, usize, bool)> {
        let half = every_ns.div_ceil(STEP_NS).max(1) * STEP_NS;
        let last = self.timelines.len() - 1;
        // A judged timeline's curve ends where its judging began: branches are judged
        // there too, and the judging itself is the check, not the cause.
        let before_failure = decision_point(failure_ns)
            .saturating_sub(STEP_NS)
            .min(self.judged_at().unwrap_or(u64::MAX))
            .max(self.timelines[last].from_ns);
        let mut out = Vec::new();
        for (i, t) in self.timelines.iter().enumerate() {
            let end = if i == last { before_failure } else { t.end_ns };
            out.push((t.from_ns, i, true));
            let mut m = t.from_ns + half;
            while m < end {
                out.push((m, i, false));
                m += half;
            }
        }
        if out.last().map(|m| m.0) != Some(before_failure) {
            out.push((
                before_failure,
                last,
                before_failure == self.timelines[last].from_ns,
            ));
        }
        out
    }

    /// The path with every fault, stopped at each moment: one snapshot per moment. A
    /// moment inside a timeline keeps the faults that had started by then (and their
    /// ends), not the ones its plan had for later, so branches from it are fresh.
    fn snapshots_at(&self, moments: &[(u64, usize, bool)]) -> Result<Vec<SessionSnapshot>, String> {
        let mut out = Vec::with_capacity(moments.len());
        let mut fork = self.start.clone();
        let last = self.timelines.len() - 1;
        for (i, t) in self.timelines.iter().enumerate() {
            let branch = t.branch.unwrap_or(0);
            let mut current: Option<(FaultPlan, Session)> = None;
            for &(at, _, is_fork) in moments.iter().filter(|m| m.1 == i) {
                if is_fork {
                    out.push(fork.clone());
                    continue;
                }
                let started = FaultPlan {
                    faults: self.plans[i]
                        .faults
                        .iter()
                        .filter(|f| t.from_ns + f.at.nanos_u64() < at)
                        .cloned()
                        .collect(),
                };
                if current.as_ref().is_none_or(|(p, _)| *p != started) {
                    let session = self.root.start_branch(&fork, branch, &started)?;
                    current = Some((started, session));
                }
                let (_, session) = current.as_mut().expect("a session");
                if session.run_to(at, &mut Quiet)? != Ending::Reached {
                    return Err(format!("T{} ended before {}", t.id, format_vtime(at)));
                }
                out.push(session.snapshot()?);
            }
            if i < last {
                let mut session = self.root.start_branch(&fork, branch, &self.plans[i])?;
                let from = session.now();
                self.root
                    .advance(&mut session, from, self.root.horizon_ns, &mut Quiet)?;
                fork = session.snapshot()?;
            }
        }
        Ok(out)
    }
}

/// The earliest point from which every point fails in more than half its branches.
fn likely_from(curve: &[CurvePoint]) -> Option<u64> {
    let most = |p: &CurvePoint| p.failing * 2 > p.trials;
    let first_of_tail = curve.len() - curve.iter().rev().take_while(|p| most(p)).count();
    curve.get(first_of_tail).map(|p| p.at_ns)
}

pub fn minimize(
    opts: &MinimizeOptions,
    observer: &mut dyn Observer,
    interrupt: &AtomicBool,
) -> Result<MinimizeReport, RunError> {
    let wall = Instant::now();
    let name = opts.timeline.as_str();
    let (campaign, target) = replay::parse(name).map_err(RunError::Input)?;
    let infra = |e: crate::store::StoreError| RunError::Infrastructure(e.to_string());
    let store = CampaignStore::open(&opts.home).map_err(infra)?;
    let all = store.timelines(campaign).map_err(infra)?;
    let find = |id: u64| all.iter().find(|t| t.id == id);
    let last = find(target).ok_or_else(|| {
        RunError::Input(format!(
            "campaign {campaign} has no timeline T{target} (see `detvm campaigns`)"
        ))
    })?;
    let Some(property) = last.failed.first().cloned() else {
        return Err(RunError::Input(format!(
            "{name} did not fail; minimize a failing timeline (the campaign's report names them)"
        )));
    };
    if last.parent.is_none() {
        return Err(RunError::Input(format!(
            "{name} is the root timeline: it ran without faults, there is nothing to shrink"
        )));
    }
    let mut timelines = vec![last.clone()];
    while let Some(parent) = timelines.last().and_then(|t| t.parent).filter(|&p| p != 0) {
        let t = find(parent).ok_or_else(|| {
            RunError::Input(format!(
                "{name}: timeline T{parent} is missing from the store"
            ))
        })?;
        timelines.push(t.clone());
    }
    timelines.reverse();

    let dir = store.dir(campaign);
    let inputs = RunInputs::load(&dir)?;
    let (root, _scratch) = replay::open_root(&opts.home, &dir, name, observer)?;
    let fail = |e: String| RunError::Infrastructure(format!("{name}: {e}"));
    let stop = || -> Result<(), String> {
        if interrupt.load(Ordering::SeqCst) {
            Err("interrupted".into())
        } else {
            Ok(())
        }
    };

    observer.info(&format!("{name}: booting the root and running its setup"));
    let mut session = root.boot(&mut Quiet)?;
    let start = session.snapshot().map_err(fail)?;
    drop(session);
    let plans: Vec<FaultPlan> = timelines
        .iter()
        .map(|t| root.faults_of(t.branch.unwrap_or(0), root.horizon_ns))
        .collect();
    let flat: Vec<(usize, usize)> = plans
        .iter()
        .enumerate()
        .flat_map(|(t, p)| (0..p.faults.len()).map(move |f| (t, f)))
        .collect();
    let lineage = Lineage {
        root: &root,
        start,
        timelines,
        plans,
        flat,
        property,
        cache: Mutex::new(Vec::new()),
    };
    let n = lineage.flat.len();

    // (a) The faults.
    observer.info(&format!(
        "{name}: replaying its path ({} fork(s)) with all {n} fault(s)",
        lineage.timelines.len()
    ));
    let full = lineage.run(&lineage.plans, true).map_err(fail)?;
    if !full.failed {
        return Err(fail(format!(
            "`{}` did not fail again when the path was replayed; the replay does not match \
             the campaign (try `detvm replay {name}@…` to see where it differs)",
            lineage.property
        )));
    }
    let failure_ns = full.failure_ns;
    let message = full
        .properties
        .iter()
        .find(|p| p.id == lineage.property)
        .map_or_else(String::new, |p| p.message.clone());
    let mut tested = 0usize;
    let mut test = |sets: &[Vec<usize>]| -> Result<Vec<bool>, String> {
        let answers = in_parallel(
            sets,
            opts.jobs,
            |kept| {
                stop()?;
                lineage
                    .run(&lineage.plans_with(kept), true)
                    .map(|o| o.failed)
            },
            |i, r| {
                tested += 1;
                let verdict = match r {
                    Ok(true) => "fails".to_string(),
                    Ok(false) => "passes".to_string(),
                    Err(e) => format!("error: {e}"),
                };
                observer.info(&format!(
                    "fault search, replay {tested}: {} of {n} fault(s): {verdict}",
                    sets[i].len()
                ));
            },
        );
        answers.into_iter().collect()
    };
    let limit = opts.max_replays.unwrap_or(usize::MAX);
    let reduced = ddmin(n, opts.jobs.max(1), limit, &mut test).map_err(fail)?;
    let all_faults: Vec<usize> = (0..n).collect();
    let minimal = lineage.path_faults(&reduced.kept);
    observer.info(&format!(
        "{name}: {} of {n} fault(s) keep `{message}` failing ({} replays); confirming \
         with one more replay from the root",
        minimal.len(),
        reduced.tests
    ));
    let confirmed = lineage
        .run(&lineage.plans_with(&reduced.kept), false)
        .map_err(fail)?
        .failed;

    // The smallest list as a plain run.
    let faults_file = dir.join(format!("minimal-faults-T{target}.json"));
    let faults_file = std::path::absolute(&faults_file).unwrap_or(faults_file);
    let plain_plan = FaultPlan {
        faults: minimal
            .iter()
            .map(|f| ScheduledFault {
                at: Span::from_nanos(f.at_ns as i64),
                fault: f.fault.clone(),
            })
            .collect(),
    };
    std::fs::write(
        &faults_file,
        serde_json::to_string_pretty(&plain_plan).expect("plans serialize"),
    )
    .map_err(|e| fail(format!("cannot write {}: {e}", faults_file.display())))?;
    let mut plain_opts = inputs.options(&opts.home);
    plain_opts.no_faults = false;
    plain_opts.faults = Some(faults_file.clone());
    if let Some(judged) = lineage.judged_at() {
        // The timeline was judged where its horizon ended: so is the plain run.
        plain_opts.duration = Some(std::time::Duration::from_nanos(judged));
    }
    observer.info(&format!(
        "{name}: running the {} fault(s) as a plain run",
        minimal.len()
    ));
    let plain = crate::run::run(&plain_opts, &mut Quiet, interrupt)?;
    let reproduces = plain
        .report
        .properties
        .iter()
        .any(|p| p.id == lineage.property && p.status == crate::properties::Status::Failed);
    let reproduction = Reproduction {
        faults_file,
        command: plain.report.reproduce.clone(),
        reproduces,
        run: Some(plain.report.run.clone()),
        moment: format!("{name}@{}", format_vtime(failure_ns)),
    };

    // (b) The curve.
    let moments = lineage.moments(failure_ns, opts.every_ns.unwrap_or(root.horizon_ns / 2));
    observer.info(&format!(
        "{name}: bug-likelihood curve: {} moment(s), {} fresh branch(es) each",
        moments.len(),
        opts.trials
    ));
    let snapshots = lineage.snapshots_at(&moments).map_err(fail)?;
    let mut ids = vmm::seed::stream(opts.seed, "minimize/curve");
    let items: Vec<(usize, u64)> = (0..moments.len())
        .flat_map(|m| (0..opts.trials).map(move |_| m))
        .map(|m| (m, ids.next_u64() | 1 << 63))
        .collect();
    let end_ns = failure_ns + root.horizon_ns;
    let judged_at_end = full
        .properties
        .iter()
        .find(|p| p.id == lineage.property)
        .is_some_and(|p| p.kind != "always" && p.kind != "detvm");
    let mut finished_branches = 0usize;
    let results = in_parallel(
        &items,
        opts.jobs,
        |&(m, id)| -> Result<bool, String> {
            stop()?;
            let at = moments[m].0;
            let end_ns = lineage.judged_at().unwrap_or(end_ns);
            let span = end_ns.min(root.duration_ns).saturating_sub(at);
            let faults = if span > 0 {
                root.faults_of(id, span)
            } else {
                FaultPlan::default()
            };
            let mut session = root.start_branch(&snapshots[m], id, &faults)?;
            let mut ending = session.run_to(end_ns, &mut Quiet)?;
            ending = lineage.judged_there(&mut session, ending)?;
            if ending == Ending::Reached && judged_at_end && session.now() >= root.duration_ns {
                ending = session.run_to(root.duration_ns + FINISH_LIMIT_NS, &mut Quiet)?;
            }
            Ok(lineage.judge(&mut session, ending).failed)
        },
        |_, _| {
            finished_branches += 1;
            if finished_branches.is_multiple_of(opts.trials.max(1)) {
                observer.info(&format!(
                    "curve: {finished_branches} of {} fresh branches",
                    items.len()
                ));
            }
        },
    );
    let mut curve: Vec<CurvePoint> = moments
        .iter()
        .map(|&(at_ns, i, is_fork)| CurvePoint {
            at_ns,
            timeline: if is_fork {
                lineage.timelines[i].parent.unwrap_or(0)
            } else {
                lineage.timelines[i].id
            },
            failing: 0,
            trials: 0,
        })
        .collect();
    for (&(m, _), r) in items.iter().zip(results) {
        curve[m].trials += 1;
        curve[m].failing += usize::from(r.map_err(fail)?);
    }

    let report = MinimizeReport {
        timeline: name.to_string(),
        property: lineage.property.clone(),
        message,
        failure_ns,
        faults: lineage.path_faults(&all_faults),
        minimal,
        replays: reduced.tests + 1,
        search_complete: reduced.complete,
        confirmed,
        reproduction,
        seed: opts.seed,
        trials: opts.trials,
        likely_from_ns: likely_from(&curve),
        curve,
        wall_ms: wall.elapsed().as_millis() as u64,
    };
    let path = dir.join(format!("minimize-T{target}.json"));
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&report).expect("reports serialize"),
    )
    .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at_ns: u64, failing: usize) -> CurvePoint {
        CurvePoint {
            at_ns,
            timeline: 0,
            failing,
            trials: 4,
        }
    }

    #[test]
    fn the_bug_becomes_likely_where_the_failing_tail_starts() {
        let curve = [point(1, 3), point(2, 1), point(3, 3), point(4, 4)];
        assert_eq!(likely_from(&curve), Some(3));
        assert_eq!(
            likely_from(&[point(1, 2), point(2, 2)]),
            None,
            "half is not most"
        );
        assert_eq!(likely_from(&[point(1, 4), point(2, 3)]), Some(1));
        assert_eq!(likely_from(&[]), None);
    }
}
