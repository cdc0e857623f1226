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
pub mod files;
pub mod findings;
pub mod frontier;
pub mod item;
pub mod minimize;
pub mod novelty;
pub mod parallel;
pub mod replay;
pub mod report;
pub mod state;
pub mod store;
pub mod timing;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use vmm::world::snapshot::branch_seed;
use vmm::world::{FaultPlan, Span};

use crate::observer::Observer;
use crate::properties::{Property, Status};
use crate::run::prepare::{prepare, Prepared};
use crate::run::setup::WorldPlan;
use crate::run::{RunError, RunOptions, Session, SessionSnapshot};
use crate::store::StoredEvent;
use frontier::Frontier;
use item::{ItemResult, WorkItem};
use novelty::{Coverage, Observed, Weights};
use state::CampaignState;
use std::path::Path;
use vmm::seed::StreamState;

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
    /// Total size of the frontier's snapshot files (see [`files`]).
    pub snapshot_cap: u64,
    /// Go on with this campaign from its last committed round instead of starting one;
    /// `run` then only gives the store (`home`); the rest comes from the campaign.
    pub resume: Option<String>,
}

/// `stopped` of a campaign stopped by Ctrl-C (it can be resumed).
pub const INTERRUPTED: &str = "interrupted";

/// One timeline of the tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// When the campaign judged this branch early: the moment its horizon ended, where
    /// its drivers were ended and its `eventually_`/`finally_` commands ran (see
    /// [`item::WorkItem::judge`]). Its snapshot, the moment children fork from, is
    /// taken there, before the judging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged_at_ns: Option<u64>,
    pub score: f64,
    pub faults: String,
    /// Properties that failed in this timeline.
    pub failed: Vec<String>,
    pub error: Option<String>,
}

impl Timeline {
    /// Where its children fork and its snapshot file is: its end, or for a judged
    /// branch the end of its horizon, before the judging.
    pub fn fork_at(&self) -> u64 {
        self.judged_at_ns.unwrap_or(self.end_ns)
    }
}

/// A property across the whole campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertySummary {
    pub id: String,
    pub message: String,
    pub kind: String,
    /// A `sometimes` or `reachable` property: some timeline must reach it.
    pub must_hit: bool,
    /// Timelines where it held (or was reached), and where it failed.
    pub passing: u64,
    pub failing: u64,
    /// The earliest failing moment, `C/T@VTIME`.
    #[serde(default)]
    pub first_failure: Option<String>,
    /// Up to three failing moments, `C/T@VTIME`, earliest first.
    pub examples: Vec<String>,
    /// The last log lines of the failing service up to its first failure.
    #[serde(default)]
    pub logs: Vec<String>,
    pub status: Status,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CampaignReport {
    pub campaign: String,
    pub compose: String,
    pub seed: u64,
    pub branches: u64,
    pub timelines: Vec<Timeline>,
    pub properties: Vec<PropertySummary>,
    pub virtual_ns: u64,
    /// Wall time over all of the campaign's sessions (a resumed one adds its own).
    pub wall_ms: u64,
    /// Virtual time explored per wall second.
    #[serde(default)]
    pub virtual_to_wall: f64,
    pub coverage_keys: usize,
    /// The frontier's snapshot files on disk: how many, their bytes, and how many the
    /// cap removed.
    #[serde(default)]
    pub snapshot_files: u64,
    #[serde(default)]
    pub snapshot_bytes: u64,
    #[serde(default)]
    pub snapshots_pruned: u64,
    /// Against the previous finished campaign of the same system and inputs.
    #[serde(default)]
    pub findings: Vec<findings::Finding>,
    /// Why the campaign stopped: the branch budget, the wall budget, or interrupted.
    pub stopped: String,
}

impl CampaignReport {
    pub fn failed(&self) -> bool {
        self.properties.iter().any(|p| p.status == Status::Failed)
    }
}

/// The inputs every branch is built from.
pub struct Root {
    pub(crate) plan: WorldPlan,
    pub(crate) seed: u64,
    pub(crate) duration_ns: u64,
    pub(crate) horizon_ns: u64,
    pub(crate) names: Vec<String>,
    /// The compose file's `fault_mode`: `none` gives branches no faults (only new
    /// randomness), as it gives `detvm run` none.
    pub(crate) swarm: bool,
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

/// Whether branch `branch` is judged after its horizon: drawn from the branch seed, so
/// the same campaign judges the same branches on every host.
pub fn judge_branch(seed: u64, branch: u64, share: f64) -> bool {
    use rand_chacha::rand_core::Rng;
    let mut rng = vmm::seed::stream(branch_seed(seed, branch), "campaign/judge");
    let x = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    x < share
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
    /// Branch `branch`'s faults for `span_ns` from its fork: its swarm plan, or none
    /// when the compose file's `fault_mode` is `none`.
    pub(crate) fn faults_of(&self, branch: u64, span_ns: u64) -> FaultPlan {
        if self.swarm {
            branch_faults(self.seed, branch, &self.names, span_ns)
        } else {
            FaultPlan::default()
        }
    }
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
            swarm: prepared.compose.settings.fault_mode == crate::compose::FaultMode::Swarm,
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
/// property, and, once the timeline finished, every verdict that failed, except that a
/// `sometimes` or `reachable` property is not failed by one timeline that never reached
/// it: across a campaign it must hold in some timeline ([`report::summarize`]).
fn failures(properties: &[Property], finished: bool) -> Vec<String> {
    let unreached_here =
        |p: &Property| p.kind == "sometimes" || (p.kind == "reachability" && p.failures == 0);
    properties
        .iter()
        .filter(|p| {
            (p.first_failure.is_some() && (p.kind == "always" || p.kind == "detvm"))
                || (finished && p.status == Status::Failed && !unreached_here(p))
        })
        .map(|p| p.id.clone())
        .collect()
}

/// A campaign in progress: its id and folder, the state committed with each round, and
/// the frontier's snapshots in memory (read from their files when missing).
struct Coordinator {
    id: String,
    dir: PathBuf,
    state: CampaignState,
    cache: BTreeMap<u64, SessionSnapshot>,
    compose: String,
    seed: u64,
}

/// The stream campaign picks come from.
fn pick_stream(seed: u64) -> ChaCha20Rng {
    vmm::seed::stream(seed, "campaign/pick")
}

/// Runs a round's work items somewhere else (worker processes, hosts) and gives their
/// results back in the items' order. The items' parents are files in the campaign's
/// `snapshots/` folder; results name the files their branches wrote there
/// ([`item::Worker`] does both). Without one, rounds run on `jobs` threads here.
pub trait Executor {
    fn run(&mut self, items: &[WorkItem]) -> Result<Vec<ItemResult>, RunError>;
}

/// Runs a campaign (or resumes one, `opts.resume`); `interrupt` stops it between rounds.
pub fn explore(
    opts: &ExploreOptions,
    observer: &mut dyn Observer,
    interrupt: &AtomicBool,
) -> Result<CampaignReport, RunError> {
    explore_with(opts, observer, interrupt, None)
}

/// [`explore`], with the rounds' items run by `executor` when given. The tree is the
/// same either way: the coordinator picks, scores and commits in branch order.
pub fn explore_with(
    opts: &ExploreOptions,
    observer: &mut dyn Observer,
    interrupt: &AtomicBool,
    mut executor: Option<&mut dyn Executor>,
) -> Result<CampaignReport, RunError> {
    let wall = Instant::now();
    let infra = |e: crate::store::StoreError| RunError::Infrastructure(e.to_string());
    let mut store = store::CampaignStore::open(&opts.run.home).map_err(infra)?;
    let (mut c, root, _scratch) = match &opts.resume {
        None => {
            let (mut c, prepared, run_opts) = start(opts, observer, &mut store)?;
            match c.root_from_start(opts, (&prepared, &run_opts), observer, &mut store) {
                Ok(root) => (c, root, None),
                Err(e) => {
                    let _ = store.set_status(&c.id, "setup_failed");
                    return Err(e);
                }
            }
        }
        Some(id) => {
            let (c, root, scratch) = resume(id, opts, observer, &mut store)?;
            (c, root, Some(scratch))
        }
    };
    let mut rng = c.state.pick.resume();
    let stopped = loop {
        let done = c.state.next_branch - 1;
        if interrupt.load(Ordering::SeqCst) {
            break INTERRUPTED.to_string();
        }
        if opts.branches.is_some_and(|b| done >= u64::from(b)) {
            break format!("branch budget of {done} reached");
        }
        if opts.budget.is_some_and(|b| wall.elapsed() >= b) {
            break format!("wall budget reached after {done} branches");
        }
        if c.state.frontier.is_empty() {
            break "no moment left to branch from".to_string();
        }
        let room = opts
            .branches
            .map_or(ROUND as u64, |b| (u64::from(b) - done).min(ROUND as u64));
        let next = c.state.next_branch;
        let items: Vec<WorkItem> = (0..room)
            .filter_map(|i| c.state.frontier.pick(&mut rng).map(|p| (next + i, p)))
            .map(|(t, parent)| WorkItem {
                campaign: c.id.clone(),
                timeline: t,
                parent,
                branch: t,
                horizon_ns: root.horizon_ns,
                judge: judge_branch(root.seed, t, opts.weights.judge_share),
            })
            .collect();
        c.state.next_branch += items.len() as u64;
        c.state.pick = StreamState::of(&rng);
        let results = match executor.as_deref_mut() {
            Some(executor) => executor.run(&items)?,
            None => {
                for item in &items {
                    c.load_parent(&root, item.parent)?;
                }
                run_round(&root, &items, &c.cache, &c.dir, opts.jobs)
            }
        };
        if results.len() != items.len() || results.iter().zip(&items).any(|(r, i)| r.item != *i) {
            return Err(RunError::Infrastructure(
                "the executor gave back results that are not the round's items, in order".into(),
            ));
        }
        c.merge(results, opts, observer, &mut store)?;
    };
    observer.info(&timing::summary(wall.elapsed().as_secs_f64(), opts.jobs));
    c.state.wall_ms += wall.elapsed().as_millis() as u64;
    // The wall time of this session is committed with no new timelines.
    store.commit_round(&c.id, &[], &c.state).map_err(infra)?;
    let report = report::build(&store, &c.id, &c.compose, c.seed, &c.state, stopped)?;
    store.finish(&c.id, &report).map_err(infra)?;
    Ok(report)
}

/// A new campaign: its id, folder and inputs (the root is booted by
/// [`Coordinator::root_from_start`]).
fn start(
    opts: &ExploreOptions,
    observer: &mut dyn Observer,
    store: &mut store::CampaignStore,
) -> Result<(Coordinator, Prepared, RunOptions), RunError> {
    let infra = |e: crate::store::StoreError| RunError::Infrastructure(e.to_string());
    let mut run_opts = opts.run.clone();
    run_opts.no_faults = true;
    run_opts.faults = None;
    let prepared = prepare(&run_opts, observer)?;
    for w in &prepared.compose.warnings {
        observer.warning(&w.to_string());
    }
    let compose = opts.run.compose.display().to_string();
    let seed = prepared.seed;
    let id = store.create(&compose, seed).map_err(infra)?;
    let dir = store.dir(&id);
    let c = Coordinator {
        state: CampaignState {
            inputs_key: String::new(),
            frontier: Frontier::default(),
            coverage: Coverage::default(),
            pick: StreamState::of(&pick_stream(seed)),
            next_branch: 1,
            files: files::Files::default(),
            wall_ms: 0,
            virtual_ns: 0,
            branch_budget: opts.branches,
        },
        id,
        dir,
        cache: BTreeMap::new(),
        compose,
        seed,
    };
    Ok((c, prepared, run_opts))
}

/// A campaign to go on with: its state as its last round committed it, its inputs
/// prepared again (refused if they changed), stray snapshot files of a lost round gone.
fn resume(
    id: &str,
    opts: &ExploreOptions,
    observer: &mut dyn Observer,
    store: &mut store::CampaignStore,
) -> Result<(Coordinator, Root, tempfile::TempDir), RunError> {
    let infra = |e: crate::store::StoreError| RunError::Infrastructure(e.to_string());
    let record = store.get(id).map_err(infra)?.ok_or_else(|| {
        RunError::Input(format!(
            "no campaign {id} in the store (see `detvm campaigns`)"
        ))
    })?;
    let state = store.state(id).map_err(infra)?.ok_or_else(|| {
        RunError::Input(format!(
            "campaign {id} has no committed round to resume from (it did not finish its setup)"
        ))
    })?;
    let dir = store.dir(id);
    let (root, scratch) = replay::open_root(&opts.run.home, &dir, id, observer)?;
    files::delete_strays(&dir, &state.files);
    store.set_status(id, "running").map_err(infra)?;
    observer.info(&format!(
        "campaign {id}: resuming after {} branches, {} frontier moments, seed {}",
        state.next_branch - 1,
        state.frontier.moments.len(),
        root.seed
    ));
    let c = Coordinator {
        id: id.to_string(),
        dir,
        state,
        cache: BTreeMap::new(),
        compose: record.compose,
        seed: root.seed,
    };
    Ok((c, root, scratch))
}

impl Coordinator {
    /// Prepares a new campaign's inputs, boots the root and runs its setup, saves its
    /// snapshot in full and commits it as the first round.
    fn root_from_start(
        &mut self,
        opts: &ExploreOptions,
        (prepared, run_opts): (&Prepared, &RunOptions),
        observer: &mut dyn Observer,
        store: &mut store::CampaignStore,
    ) -> Result<Root, RunError> {
        let infra = |e: crate::store::StoreError| RunError::Infrastructure(e.to_string());
        let horizon_ns = opts.horizon.as_nanos() as u64;
        self.state.inputs_key = replay::save_inputs(&self.dir, run_opts, prepared, horizon_ns)?;
        let plan = prepared.world_plan(opts.run.backend, &self.dir.join("volumes"))?;
        let root = Root::new(plan, prepared, horizon_ns);
        observer.info(&format!(
            "campaign {}, seed {}, horizon {}, {} per round on {} job(s)",
            self.id,
            root.seed,
            humantime::format_duration(opts.horizon),
            ROUND,
            opts.jobs
        ));
        let mut observed = Observed::default();
        let mut collect = Collect {
            observed: &mut observed,
            events: Vec::new(),
        };
        let id = self.id.clone();
        let mut session = root.boot(&mut collect).map_err(|e| match e {
            RunError::Setup(m) => RunError::Setup(format!("campaign {id}: {m}")),
            other => other,
        })?;
        let events = collect.events;
        let dir = item::snapshot_dir(&self.dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| RunError::Infrastructure(format!("{}: {e}", dir.display())))?;
        let (snapshot, written) = session
            .save(&files::path_of(&self.dir, 0), None)
            .map_err(|e| RunError::Infrastructure(format!("the root's snapshot: {e}")))?;
        let properties = session.runner().state.book.properties();
        observed.properties(&properties);
        let (score, _) = self.state.coverage.merge(&observed, &opts.weights);
        let timeline = Timeline {
            id: 0,
            parent: None,
            from_ns: 0,
            branch: None,
            end_ns: session.now(),
            finished: false,
            judged_at_ns: None,
            score,
            faults: "no faults".into(),
            failed: failures(&properties, false),
            error: None,
        };
        observer.info(&format!(
            "root timeline T0: setup done at {}, snapshot {} KiB",
            crate::moment::format_vtime(timeline.end_ns),
            written.bytes / 1024
        ));
        self.state.frontier.push(0, timeline.end_ns, score);
        self.state.files.add(0, written.bytes, None);
        self.state.virtual_ns += timeline.end_ns;
        self.cache.insert(0, snapshot);
        let round = [store::RoundTimeline {
            timeline: &timeline,
            events: &events,
            properties: &properties,
        }];
        store
            .commit_round(&self.id, &round, &self.state)
            .map_err(infra)?;
        Ok(root)
    }

    /// Reads a parent's snapshot file into the cache when it is not there yet.
    fn load_parent(&mut self, root: &Root, parent: u64) -> Result<(), RunError> {
        if !self.cache.contains_key(&parent) {
            let snap = Session::load(&files::path_of(&self.dir, parent), &root.plan)?;
            self.cache.insert(parent, snap);
        }
        Ok(())
    }

    /// Keeps the in-memory copies of frontier moments within `cap` bytes of their own
    /// pages (the same cap as the files'), dropping the least energetic first; a dropped
    /// moment is read back from its file when a branch forks from it.
    fn bound_memory(&mut self, cap: u64) {
        let bytes = |s: &SessionSnapshot| -> u64 {
            let pages = s
                .world
                .memory
                .iter()
                .flatten()
                .map(|m| m.pages.len() as u64);
            pages.sum::<u64>() * 4096
        };
        let mut total: u64 = self.cache.values().map(bytes).sum();
        let energy = |t: u64| {
            let moments = &self.state.frontier.moments;
            moments
                .iter()
                .find(|m| m.timeline == t)
                .map_or(0.0, |m| m.energy)
        };
        let mut order: Vec<(f64, u64)> = self.cache.keys().map(|&t| (energy(t), t)).collect();
        order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (_, t) in order {
            if total <= cap {
                break;
            }
            if let Some(s) = self.cache.remove(&t) {
                total -= bytes(&s);
            }
        }
    }

    /// Merges a round's results in branch order: scores, the frontier, the snapshot
    /// files (kept, deleted, pruned to the cap), and commits the round.
    fn merge(
        &mut self,
        results: Vec<ItemResult>,
        opts: &ExploreOptions,
        observer: &mut dyn Observer,
        store: &mut store::CampaignStore,
    ) -> Result<(), RunError> {
        let mut delete = Vec::new();
        let mut results = results;
        for r in &mut results {
            let (score, _) = self.state.coverage.merge(&r.observed, &opts.weights);
            r.timeline.score = score;
            let t = &r.timeline;
            observer.info(&format!(
                "T{} from T{} at {}: {} to {}, novelty {score}{}{}",
                t.id,
                t.parent.unwrap_or(0),
                crate::moment::format_vtime(t.from_ns),
                match (t.finished, t.judged_at_ns) {
                    (_, Some(_)) => "ran and was judged",
                    (true, None) => "finished",
                    (false, None) => "ran",
                },
                crate::moment::format_vtime(t.end_ns),
                if t.failed.is_empty() {
                    String::new()
                } else {
                    format!(", FAILED: {}", t.failed.join(", "))
                },
                t.error
                    .as_deref()
                    .map(|e| format!(", error: {e}"))
                    .unwrap_or_default()
            ));
            observer.progress(t.end_ns, &format!("T{}", t.id));
            self.state.virtual_ns += t.end_ns - t.from_ns;
            match &r.snapshot {
                Some(file) if score > 0.0 => {
                    self.state.frontier.push(t.id, t.fork_at(), score);
                    self.state.files.add(t.id, file.bytes, t.parent);
                    // A remote executor's result has no in-memory copy: read the file
                    // when a branch forks from it.
                    if let Some(snap) = r.in_memory.take() {
                        self.cache.insert(t.id, snap);
                    }
                }
                Some(_) => delete.push(t.id),
                None => {}
            }
        }
        let pruned = self
            .state
            .files
            .prune(opts.snapshot_cap, &mut self.state.frontier);
        for t in &pruned {
            self.cache.remove(t);
        }
        delete.extend(pruned);
        self.bound_memory(opts.snapshot_cap);
        let round: Vec<store::RoundTimeline> = results
            .iter()
            .map(|r| store::RoundTimeline {
                timeline: &r.timeline,
                events: &r.events,
                properties: &r.properties,
            })
            .collect();
        store
            .commit_round(&self.id, &round, &self.state)
            .map_err(|e| RunError::Infrastructure(e.to_string()))?;
        // Only now: the committed state no longer names these files.
        files::delete(&self.dir, &delete);
        Ok(())
    }
}

/// Runs one round's items on up to `jobs` threads, forking each from its parent in
/// `cache` (every parent must be there); results in branch order.
fn run_round(
    root: &Root,
    items: &[WorkItem],
    cache: &BTreeMap<u64, SessionSnapshot>,
    campaign_dir: &Path,
    jobs: usize,
) -> Vec<ItemResult> {
    let dir = item::snapshot_dir(campaign_dir);
    parallel::in_parallel(
        items,
        jobs,
        |item| {
            let file = files::path_of(campaign_dir, item.parent);
            let parent = item::Parent {
                snapshot: &cache[&item.parent],
                file: &file,
            };
            root.run_item(item, &parent, &dir)
        },
        |_, _| {},
    )
}

/// Where campaigns keep their files.
pub fn campaigns_dir(home: &std::path::Path) -> PathBuf {
    home.join("campaigns")
}
