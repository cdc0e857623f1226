//! Work items: one branch to run, as a value, and what running it produced, as a value.
//! The coordinator ([`super::explore`]) hands items to threads today and could hand them
//! to workers over a queue (both are serde); it merges results in branch order, so where
//! an item ran never changes the tree.
//!
//! An item names its parent moment by timeline id; the parent's state is the snapshot
//! file `snapshots/T<parent>.dsnap` in the campaign's folder (or an in-memory copy of
//! it). The branch's own end, when it did not finish, is written next to it as
//! `T<timeline>.dsnap`, incremental against the parent's file; the coordinator keeps it
//! if the branch joins the frontier and deletes it otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vmm::clock::VirtualTime;
use vmm::world::FaultPlan;

pub use super::files::{snapshot_dir, snapshot_name};
use super::novelty::Observed;
use super::{failures, node_states, Collect, Root, Timeline};
use crate::observer::Observer;
use crate::properties::Property;
use crate::run::{Ending, RunError, Session, SessionSnapshot};
use crate::store::StoredEvent;

/// One branch to run: fork timeline `parent`'s end as branch `branch`, run it for
/// `horizon_ns` of virtual time (or to the run's end), and call it timeline `timeline`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkItem {
    pub campaign: String,
    pub timeline: u64,
    pub parent: u64,
    pub branch: u64,
    pub horizon_ns: u64,
    /// After the horizon (and after its end is saved), end the drivers there and play
    /// the branch on to its judging (`eventually_`, `finally_` commands, verdicts), so
    /// properties judged at a run's end are checked at this moment too. Its children
    /// fork from the saved moment, before the judging.
    #[serde(default)]
    pub judge: bool,
}

/// The snapshot file a branch ended with, in the campaign's `snapshots/` folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// The file's name in the folder (`T<timeline>.dsnap`).
    pub file: String,
    /// Its size on disk.
    pub bytes: u64,
}

/// What running a [`WorkItem`] produced.
#[derive(Clone, Serialize, Deserialize)]
pub struct ItemResult {
    pub item: WorkItem,
    /// The timeline as recorded (its `score` is decided by the coordinator at merge).
    pub timeline: Timeline,
    /// Novelty keys the branch produced (scored against the campaign's coverage at merge).
    pub observed: Observed,
    pub properties: Vec<Property>,
    /// The timeline's own events, from the fork moment to its end.
    pub events: Vec<StoredEvent>,
    /// Its end as a file, when it did not finish (and did not fail to run).
    pub snapshot: Option<SnapshotRef>,
    /// The same snapshot in memory, for a coordinator in the same process.
    #[serde(skip)]
    pub in_memory: Option<SessionSnapshot>,
}

/// A parent moment: its snapshot in memory and the file it was loaded from or saved to.
pub struct Parent<'a> {
    pub snapshot: &'a SessionSnapshot,
    pub file: &'a Path,
}

impl Root {
    /// A session forked from `parent` as branch `branch`: the World re-seeded from
    /// (seed, branch), the test composer re-seeded from the branch seed, and the
    /// branch's swarm faults scheduled from the fork moment on.
    pub(crate) fn start_branch(
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
        session.reseed_composer(vmm::world::snapshot::branch_seed(self.seed, branch));
        for f in &faults.faults {
            let at = VirtualTime(from_ns + f.at.nanos_u64());
            session
                .world_mut()
                .schedule(at, f.fault.clone())
                .map_err(|e| e.to_string())?;
        }
        Ok(session)
    }

    /// Runs a branch for `horizon_ns` from `from_ns`, and past the run's duration on to
    /// its end.
    pub(super) fn advance(
        &self,
        session: &mut Session,
        from_ns: u64,
        horizon_ns: u64,
        observer: &mut dyn Observer,
    ) -> Result<Ending, String> {
        let ending = session.run_to(from_ns + horizon_ns, observer)?;
        if ending == Ending::Reached && session.now() >= self.duration_ns {
            return session.run_to(self.duration_ns + super::FINISH_LIMIT_NS, observer);
        }
        Ok(ending)
    }

    /// Judges a session now: its drivers end here and it plays on to the run's end
    /// (draining drivers, faults stopped, `eventually_` and `finally_` commands). The
    /// moment it ended.
    pub(super) fn judge_now(
        &self,
        session: &mut Session,
        observer: &mut dyn Observer,
    ) -> Result<u64, String> {
        session.end_drivers_now();
        let limit = session.now() + super::FINISH_LIMIT_NS;
        match session.run_to(limit, observer)? {
            Ending::Reached => Err(format!(
                "not finished {}s after its drivers ended",
                super::FINISH_LIMIT_NS / 1_000_000_000
            )),
            _ => Ok(session.now()),
        }
    }

    /// Runs one work item from its parent; the branch's end is saved into `dir` (the
    /// campaign's snapshot folder) unless it finished.
    pub fn run_item(&self, item: &WorkItem, parent: &Parent, dir: &Path) -> ItemResult {
        let from_ns = parent.snapshot.world.now().as_nanos();
        let faults = self.faults_of(item.branch, item.horizon_ns);
        let mut timeline = Timeline {
            id: item.timeline,
            parent: Some(item.parent),
            from_ns,
            branch: Some(item.branch),
            end_ns: from_ns,
            finished: false,
            judged_at_ns: None,
            score: 0.0,
            faults: faults.to_string(),
            failed: Vec::new(),
            error: None,
        };
        let mut observed = Observed::default();
        let mut events = Vec::new();
        let outcome = self
            .start_branch(parent.snapshot, item.branch, &faults)
            .and_then(|mut session| {
                observed = Observed::new(node_states(&session));
                let mut collect = Collect {
                    observed: &mut observed,
                    events: Vec::new(),
                };
                let ending = self.advance(&mut session, from_ns, item.horizon_ns, &mut collect);
                events = collect.events;
                Ok((session, ending?))
            });
        let mut snapshot = None;
        let mut in_memory = None;
        let properties = match outcome {
            Ok((mut session, ending)) => {
                timeline.end_ns = session.now();
                timeline.finished = ending != Ending::Reached;
                if !timeline.finished {
                    let path = dir.join(snapshot_name(item.timeline));
                    match session.save(&path, Some((parent.file, &parent.snapshot.world))) {
                        Ok((snap, written)) => {
                            snapshot = Some(SnapshotRef {
                                file: snapshot_name(item.timeline),
                                bytes: written.bytes,
                            });
                            in_memory = Some(snap);
                        }
                        Err(e) => timeline.error = Some(format!("snapshot: {e}")),
                    }
                }
                if !timeline.finished && item.judge && timeline.error.is_none() {
                    let mut collect = Collect {
                        observed: &mut observed,
                        events: Vec::new(),
                    };
                    match self.judge_now(&mut session, &mut collect) {
                        Ok(end_ns) => {
                            timeline.judged_at_ns = Some(timeline.end_ns);
                            timeline.end_ns = end_ns;
                            timeline.finished = true;
                        }
                        Err(e) => timeline.error = Some(format!("judging: {e}")),
                    }
                    events.extend(collect.events);
                }
                if timeline.finished {
                    let _ = session.finish();
                }
                session.runner().state.book.properties()
            }
            Err(e) => {
                timeline.error = Some(e);
                Vec::new()
            }
        };
        timeline.failed = failures(&properties, timeline.finished);
        observed.properties(&properties);
        ItemResult {
            item: item.clone(),
            timeline,
            observed,
            properties,
            events,
            snapshot,
            in_memory,
        }
    }
}

/// Runs work items of one campaign outside its coordinator (a worker process): the
/// campaign's inputs are prepared again from its folder (refused if they changed), and
/// parents are read from the campaign's snapshot files, kept in memory once read.
pub struct Worker {
    root: Root,
    dir: PathBuf,
    cache: BTreeMap<u64, SessionSnapshot>,
    /// The scratch folder the worker's volumes live in.
    _scratch: tempfile::TempDir,
}

impl Worker {
    /// A worker for campaign `campaign` of the run store at `home`.
    pub fn open(
        home: &Path,
        campaign: &str,
        observer: &mut dyn Observer,
    ) -> Result<Worker, RunError> {
        Self::open_with_project(home, campaign, None, observer)
    }

    /// [`Worker::open`] with the campaign's compose file (and fault plan) read from the
    /// folder `project` instead of where the coordinator had them: a copy of the project
    /// on this host. Its contents must still match the campaign's fingerprint.
    pub fn open_with_project(
        home: &Path,
        campaign: &str,
        project: Option<&Path>,
        observer: &mut dyn Observer,
    ) -> Result<Worker, RunError> {
        let dir = super::campaigns_dir(home).join(campaign);
        let (root, scratch) =
            super::replay::open_root_moved(home, &dir, campaign, project, observer)?;
        Ok(Worker {
            root,
            dir,
            cache: BTreeMap::new(),
            _scratch: scratch,
        })
    }

    /// Runs `item`; its parent's file must exist in the campaign's snapshot folder.
    pub fn run(&mut self, item: &WorkItem) -> Result<ItemResult, RunError> {
        let dir = snapshot_dir(&self.dir);
        let file = dir.join(snapshot_name(item.parent));
        if !self.cache.contains_key(&item.parent) {
            let snap = Session::load(&file, &self.root.plan)?;
            self.cache.insert(item.parent, snap);
        }
        let parent = Parent {
            snapshot: &self.cache[&item.parent],
            file: &file,
        };
        Ok(self.root.run_item(item, &parent, &dir))
    }

    /// Forgets the in-memory copy of a parent (its file stays).
    pub fn forget(&mut self, timeline: u64) {
        self.cache.remove(&timeline);
    }
}
