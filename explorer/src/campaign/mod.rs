//! Campaigns: guided exploration over a tree of timelines (docs/explore.md).
//!
//! The root timeline boots the system once, runs setup (services healthy, `first_`
//! commands done) and is snapshotted there. Each round then picks frontier moments by
//! energy, forks each into a branch with a new branch id (the World re-seeded from
//! (seed, branch): network streams and vCPU quanta) and a new swarm fault plan drawn
//! from the branch seed for the next `horizon` of virtual time, and runs it. A branch
//! that produced something no timeline produced before (see [`novelty`]) is snapshotted
//! and joins the frontier; a branch that reaches the run's duration is played to its
//! end (`finally_`, `eventually_`) and judged. Branches of a round run in parallel on
//! `jobs` threads, each owning its Sessions; results merge in branch order, so the same
//! seed and branch budget give the same tree for any `jobs`.

pub mod ddmin;
pub mod frontier;
pub mod minimize;
pub mod novelty;
pub mod replay;
pub mod store;
pub mod timing;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use vmm::clock::VirtualTime;
use vmm::world::snapshot::branch_seed;
use vmm::world::{FaultPlan, Span};

use crate::observer::Observer;
use crate::properties::{Property, Status};
use crate::run::prepare::{prepare, Prepared};
use crate::run::setup::WorldPlan;
use crate::run::{Ending, RunError, RunOptions, Session, SessionSnapshot};
use crate::store::StoredEvent;
use frontier::Frontier;
use novelty::{Coverage, Observed, Weights};

/// Branches per round: fixed, so the tree does not depend on `jobs`.
pub const ROUND: usize = 4;
/// After the drivers' phase, a finishing timeline gets this much to end.
const FINISH_LIMIT_NS: u64 = 120_000_000_000;

#[derive(Debug, Clone)]
pub struct ExploreOptions {
    /// The system and its defaults; its fault plan is ignored (branches draw their own).
    pub run: RunOptions,
    /// Stop after this many branches.
    pub branches: Option<u32>,
    /// Stop after this much wall time (the branch count then depends on the host).
    pub budget: Option<Duration>,
    pub horizon: Duration,
    pub jobs: usize,
    pub weights: Weights,
}

/// One timeline of the tree.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Timeline {
    pub id: u64,
    /// `None` for the root.
    pub parent: Option<u64>,
    /// Where it starts (its parent's end), and its branch id.
    pub from_ns: u64,
    pub branch: Option<u64>,
    pub end_ns: u64,
    /// Played to the end of the run (and judged), not only for a horizon.
    pub finished: bool,
    pub score: f64,
    pub faults: String,
    /// Properties that failed in this timeline.
    pub failed: Vec<String>,
    pub error: Option<String>,
}

/// A property across the whole campaign.
#[derive(Debug, Clone, Serialize)]
pub struct PropertySummary {
    pub id: String,
    pub message: String,
    pub kind: String,
    /// A `sometimes` or `reachable` property: some timeline must reach it.
    pub must_hit: bool,
    /// Timelines where it held (or was reached), and where it failed.
    pub passing: u64,
    pub failing: u64,
    /// Up to three failing moments, `C/T@VTIME`, earliest first.
    pub examples: Vec<String>,
    pub status: Status,
}

#[derive(Debug, Clone, Serialize)]
pub struct CampaignReport {
    pub campaign: String,
    pub compose: String,
    pub seed: u64,
    pub branches: u64,
    pub timelines: Vec<Timeline>,
    pub properties: Vec<PropertySummary>,
    pub virtual_ns: u64,
    pub wall_ms: u64,
    pub coverage_keys: usize,
    /// Why the campaign stopped: the branch budget, the wall budget, or interrupted.
    pub stopped: String,
}

impl CampaignReport {
    pub fn failed(&self) -> bool {
        self.properties.iter().any(|p| p.status == Status::Failed)
    }
}

/// What one branch did.
struct BranchResult {
    timeline: Timeline,
    observed: Observed,
    properties: Vec<Property>,
    events: Vec<StoredEvent>,
    snapshot: Option<SessionSnapshot>,
}

/// The inputs every branch is built from.
struct Root {
    plan: WorldPlan,
    seed: u64,
    duration_ns: u64,
    horizon_ns: u64,
    names: Vec<String>,
}

/// Node states as the state() of a session shows them.
fn node_states(session: &Session) -> BTreeMap<String, String> {
    session
        .state()
        .nodes
        .into_iter()
        .map(|n| (n.name, n.state))
        .collect()
}

struct Collect<'a> {
    observed: &'a mut Observed,
    events: Vec<StoredEvent>,
}

impl Observer for Collect<'_> {
    fn events(&mut self, batch: &[StoredEvent]) -> Result<(), String> {
        for e in batch {
            self.observed.event(e);
        }
        self.events.extend_from_slice(batch);
        Ok(())
    }
}

/// The swarm plan of branch `branch` for `horizon_ns` from `from_ns`, in world times.
pub fn branch_faults(seed: u64, branch: u64, names: &[String], horizon_ns: u64) -> FaultPlan {
    FaultPlan::swarm(
        branch_seed(seed, branch),
        names,
        Span::from_nanos(horizon_ns as i64),
    )
}

impl Root {
    fn new(plan: WorldPlan, prepared: &Prepared, horizon_ns: u64) -> Root {
        Root {
            plan,
            seed: prepared.seed,
            duration_ns: prepared.duration_ns(),
            horizon_ns,
            names: prepared
                .compose
                .services
                .iter()
                .map(|s| s.name.clone())
                .collect(),
        }
    }

    /// A session forked from `parent` as branch `branch`, with the branch's swarm faults
    /// scheduled from the fork moment on.
    fn start_branch(
        &self,
        parent: &SessionSnapshot,
        branch: u64,
        faults: &FaultPlan,
    ) -> Result<Session, String> {
        let from_ns = parent.world.now().as_nanos();
        let mut session = Session::restore(
            &self.plan,
            parent,
            self.seed,
            self.duration_ns,
            Some(branch),
        )
        .map_err(|e| e.to_string())?;
        for f in &faults.faults {
            let at = VirtualTime(from_ns + f.at.nanos_u64());
            session
                .world_mut()
                .schedule(at, f.fault.clone())
                .map_err(|e| e.to_string())?;
        }
        Ok(session)
    }

    /// Runs a branch for the horizon from `from_ns`, and past the run's duration on to
    /// its end.
    fn advance(
        &self,
        session: &mut Session,
        from_ns: u64,
        observer: &mut dyn Observer,
    ) -> Result<Ending, String> {
        let ending = session.run_to(from_ns + self.horizon_ns, observer)?;
        if ending == Ending::Reached && session.now() >= self.duration_ns {
            return session.run_to(self.duration_ns + FINISH_LIMIT_NS, observer);
        }
        Ok(ending)
    }

    /// Forks `parent` as branch `branch` with its own faults and runs it.
    fn branch(&self, id: u64, parent: (u64, &SessionSnapshot), branch: u64) -> BranchResult {
        let from_ns = parent.1.world.now().as_nanos();
        let faults = branch_faults(self.seed, branch, &self.names, self.horizon_ns);
        let mut timeline = Timeline {
            id,
            parent: Some(parent.0),
            from_ns,
            branch: Some(branch),
            end_ns: from_ns,
            finished: false,
            score: 0.0,
            faults: faults.to_string(),
            failed: Vec::new(),
            error: None,
        };
        let mut observed = Observed::default();
        let mut events = Vec::new();
        let outcome = self
            .start_branch(parent.1, branch, &faults)
            .and_then(|mut session| {
                observed = Observed::new(node_states(&session));
                let mut collect = Collect {
                    observed: &mut observed,
                    events: Vec::new(),
                };
                let ending = self.advance(&mut session, from_ns, &mut collect);
                events = collect.events;
                Ok((session, ending?))
            });
        let (properties, snapshot) = match outcome {
            Ok((mut session, ending)) => {
                timeline.end_ns = session.now();
                timeline.finished = ending != Ending::Reached;
                if timeline.finished {
                    let _ = session.finish();
                }
                let properties = session.runner().state.book.properties();
                let snapshot = if timeline.finished {
                    None
                } else {
                    session.snapshot().ok()
                };
                (properties, snapshot)
            }
            Err(e) => {
                timeline.error = Some(e);
                (Vec::new(), None)
            }
        };
        timeline.failed = failures(&properties, timeline.finished);
        observed.properties(&properties);
        BranchResult {
            timeline,
            observed,
            properties,
            events,
            snapshot,
        }
    }

    /// Boots the system and runs its setup: the root timeline's session.
    fn boot(&self, observer: &mut dyn Observer) -> Result<Session, RunError> {
        let mut session = Session::boot(self.plan.clone(), self.seed, self.duration_ns)?;
        loop {
            match session.step(observer).map_err(RunError::Infrastructure)? {
                None if session.runner().setup_finished() => return Ok(session),
                None => {}
                Some(ending) => {
                    return Err(RunError::Setup(format!("setup did not finish: {ending:?}")))
                }
            }
        }
    }
}

/// Properties that failed in one timeline: any false report of an `always`-style
/// property, and, once the timeline finished, every verdict that failed.
fn failures(properties: &[Property], finished: bool) -> Vec<String> {
    properties
        .iter()
        .filter(|p| {
            (p.first_failure.is_some() && (p.kind == "always" || p.kind == "detvm"))
                || (finished && p.status == Status::Failed)
        })
        .map(|p| p.id.clone())
        .collect()
}

/// Runs a campaign; `interrupt` stops it between rounds.
pub fn explore(
    opts: &ExploreOptions,
    observer: &mut dyn Observer,
    interrupt: &AtomicBool,
) -> Result<CampaignReport, RunError> {
    let wall = Instant::now();
    let mut run_opts = opts.run.clone();
    run_opts.no_faults = true;
    run_opts.faults = None;
    let prepared = prepare(&run_opts, observer)?;
    for w in &prepared.compose.warnings {
        observer.warning(&w.to_string());
    }
    let mut store = store::CampaignStore::open(&opts.run.home)
        .map_err(|e| RunError::Infrastructure(e.to_string()))?;
    let id = store
        .create(&opts.run.compose.display().to_string(), prepared.seed)
        .map_err(|e| RunError::Infrastructure(e.to_string()))?;
    let dir = store.dir(&id);
    replay::save_inputs(&dir, &run_opts, &prepared, opts.horizon.as_nanos() as u64)?;
    let plan = prepared.world_plan(opts.run.backend, &dir.join("volumes"))?;
    let root = Root::new(plan.clone(), &prepared, opts.horizon.as_nanos() as u64);
    observer.info(&format!(
        "campaign {id}, seed {}, horizon {}, {} per round on {} job(s)",
        root.seed,
        humantime::format_duration(opts.horizon),
        ROUND,
        opts.jobs
    ));

    // The root: boot and setup, once.
    let mut root_observed = Observed::default();
    let mut collect = Collect {
        observed: &mut root_observed,
        events: Vec::new(),
    };
    let session = root.boot(&mut collect).map_err(|e| match e {
        RunError::Setup(m) => RunError::Setup(format!("campaign {id}: {m}")),
        other => other,
    })?;
    let root_events = collect.events;
    let mut session = session;
    let root_snapshot = session.snapshot().map_err(RunError::Infrastructure)?;
    let root_properties = session.runner().state.book.properties();
    root_observed.properties(&root_properties);
    let mut coverage = Coverage::default();
    let (root_score, _) = coverage.merge(&root_observed, &opts.weights);
    let root_timeline = Timeline {
        id: 0,
        parent: None,
        from_ns: 0,
        branch: None,
        end_ns: session.now(),
        finished: false,
        score: root_score,
        faults: "no faults".into(),
        failed: failures(&root_properties, false),
        error: None,
    };
    observer.info(&format!(
        "root timeline T0: setup done at {}",
        crate::moment::format_vtime(root_timeline.end_ns)
    ));
    drop(session);
    store
        .add_timeline(&id, &root_timeline, &root_events)
        .map_err(|e| RunError::Infrastructure(e.to_string()))?;

    let mut timelines = vec![root_timeline];
    let mut properties: Vec<Vec<Property>> = vec![root_properties];
    let mut snapshots: BTreeMap<u64, SessionSnapshot> = BTreeMap::new();
    snapshots.insert(0, root_snapshot);
    let mut frontier = Frontier::default();
    frontier.push(0, timelines[0].end_ns, root_score);
    let mut rng: ChaCha20Rng = vmm::seed::stream(root.seed, "campaign/pick");
    let mut next_branch = 1u64;
    let stopped = loop {
        if interrupt.load(Ordering::SeqCst) {
            break "interrupted".to_string();
        }
        if opts.branches.is_some_and(|b| next_branch > u64::from(b)) {
            break format!("branch budget of {} reached", next_branch - 1);
        }
        if opts.budget.is_some_and(|b| wall.elapsed() >= b) {
            break format!("wall budget reached after {} branches", next_branch - 1);
        }
        if frontier.is_empty() {
            break "no moment left to branch from".to_string();
        }
        let room = opts.branches.map_or(ROUND as u64, |b| {
            (u64::from(b) + 1 - next_branch).min(ROUND as u64)
        });
        let picks: Vec<(u64, u64)> = (0..room)
            .filter_map(|i| frontier.pick(&mut rng).map(|t| (next_branch + i, t)))
            .collect();
        next_branch += picks.len() as u64;
        let results = run_round(&root, &picks, &snapshots, opts.jobs);
        for mut r in results {
            let (score, _) = coverage.merge(&r.observed, &opts.weights);
            r.timeline.score = score;
            let t = r.timeline.id;
            observer.info(&format!(
                "T{t} from T{} at {}: {} to {}, novelty {score}{}{}",
                r.timeline.parent.unwrap_or(0),
                crate::moment::format_vtime(r.timeline.from_ns),
                if r.timeline.finished {
                    "finished"
                } else {
                    "ran"
                },
                crate::moment::format_vtime(r.timeline.end_ns),
                if r.timeline.failed.is_empty() {
                    String::new()
                } else {
                    format!(", FAILED: {}", r.timeline.failed.join(", "))
                },
                r.timeline
                    .error
                    .as_deref()
                    .map(|e| format!(", error: {e}"))
                    .unwrap_or_default()
            ));
            observer.progress(r.timeline.end_ns, &format!("T{t}"));
            if let Some(snap) = r.snapshot.take() {
                if score > 0.0 {
                    frontier.push(t, r.timeline.end_ns, score);
                    snapshots.insert(t, snap);
                }
            }
            store
                .add_timeline(&id, &r.timeline, &r.events)
                .map_err(|e| RunError::Infrastructure(e.to_string()))?;
            timelines.push(r.timeline);
            properties.push(r.properties);
        }
    };
    observer.info(&timing::summary(wall.elapsed().as_secs_f64(), opts.jobs));
    let report = CampaignReport {
        campaign: id.clone(),
        compose: opts.run.compose.display().to_string(),
        seed: root.seed,
        branches: next_branch - 1,
        properties: summarize(&id, &timelines, &properties),
        virtual_ns: timelines.iter().map(|t| t.end_ns - t.from_ns).sum(),
        wall_ms: wall.elapsed().as_millis() as u64,
        coverage_keys: coverage.len(),
        timelines,
        stopped,
    };
    store
        .finish(&id, &report)
        .map_err(|e| RunError::Infrastructure(e.to_string()))?;
    Ok(report)
}

/// Runs one round's branches on up to `jobs` threads; results in branch order.
fn run_round(
    root: &Root,
    picks: &[(u64, u64)],
    snapshots: &BTreeMap<u64, SessionSnapshot>,
    jobs: usize,
) -> Vec<BranchResult> {
    let jobs = jobs.max(1);
    let mut results: Vec<Option<BranchResult>> = (0..picks.len()).map(|_| None).collect();
    for chunk in picks.chunks(jobs).zip(results.chunks_mut(jobs)) {
        let (work, out) = chunk;
        std::thread::scope(|scope| {
            let handles: Vec<_> = work
                .iter()
                .map(|&(branch, parent)| {
                    let snap = &snapshots[&parent];
                    scope.spawn(move || root.branch(branch, (parent, snap), branch))
                })
                .collect();
            for (slot, h) in out.iter_mut().zip(handles) {
                *slot = Some(h.join().expect("a branch thread panicked"));
            }
        });
    }
    results.into_iter().flatten().collect()
}

/// Every property across the timelines: in how many it held or failed, and examples.
fn summarize(
    campaign: &str,
    timelines: &[Timeline],
    properties: &[Vec<Property>],
) -> Vec<PropertySummary> {
    let mut by_id: BTreeMap<String, PropertySummary> = BTreeMap::new();
    for (t, props) in timelines.iter().zip(properties) {
        for p in props {
            let s = by_id
                .entry(p.id.clone())
                .or_insert_with(|| PropertySummary {
                    id: p.id.clone(),
                    message: p.message.clone(),
                    kind: p.kind.clone(),
                    must_hit: p.must_hit,
                    passing: 0,
                    failing: 0,
                    examples: Vec::new(),
                    status: Status::Passed,
                });
            if t.failed.contains(&p.id) {
                s.failing += 1;
                s.status = Status::Failed;
                let at = p.first_failure.as_ref().map_or(t.end_ns, |f| f.vtime_ns);
                if s.examples.len() < 3 {
                    s.examples.push(format!(
                        "{campaign}/T{}@{}",
                        t.id,
                        crate::moment::format_vtime(at)
                    ));
                }
            } else if p.passes > 0 {
                s.passing += 1;
            }
        }
    }
    // A `sometimes` or `reachable` property no timeline reached, once some finished.
    let any_finished = timelines.iter().any(|t| t.finished);
    for s in by_id.values_mut() {
        let unreached = s.must_hit && s.kind != "always" && s.kind != "detvm" && s.passing == 0;
        if any_finished && unreached && s.failing == 0 {
            s.status = Status::Failed;
        }
    }
    by_id.into_values().collect()
}

/// Where campaigns keep their files.
pub fn campaigns_dir(home: &std::path::Path) -> PathBuf {
    home.join("campaigns")
}
