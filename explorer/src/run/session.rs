//! [`Session`]: the one handle on a running system: a World and its runner together.
//! Runs, replays and checks drive Sessions, and so will campaigns, the notebook and
//! workers; nothing else builds Worlds. A session is created by booting prepared
//! inputs ([`Session::boot`]) or from a snapshot ([`Session::restore`], or
//! [`Session::fork`] for a branch with new randomness), advanced in runner steps
//! ([`Session::step`], [`Session::run_to`]), observed through an
//! [`Observer`](crate::observer::Observer), and saved whole ([`Session::snapshot`]).

use std::path::Path;

use serde::Serialize;
use vmm::clock::VirtualTime;
use vmm::world::snapshot::file::{self, Written};
use vmm::world::snapshot::WorldSnapshot;
use vmm::world::{World, WorldOutcome};

use super::journal::Journal;
use super::runner::{Effect, Ending, Runner, SavedRunner, STEP_NS};
use super::services::Tracked;
use super::setup::WorldPlan;
use super::RunError;
use crate::campaign::timing::{timer, Phase};
use crate::observer::Observer;
use crate::store::StoredEvent;
use detvm_protocol::message::HostMessage;

pub struct Session {
    world: World,
    runner: Runner,
    journal: Option<Journal>,
    /// The next id for a request made from outside the runner ([`Session::exec`]).
    next_request: u64,
}

/// A whole session at a step boundary: the World and the runner's state.
#[derive(Clone)]
pub struct SessionSnapshot {
    pub world: WorldSnapshot,
    pub runner: SavedRunner,
}

/// What a session looks like at its current moment.
#[derive(Debug, Clone, Serialize)]
pub struct SessionState {
    pub now_ns: u64,
    pub trace_hash: String,
    pub phase: String,
    pub nodes: Vec<NodeSummary>,
    pub services: Vec<ServiceSummary>,
    pub properties: Vec<PropertySoFar>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeSummary {
    pub name: String,
    pub state: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceSummary {
    pub name: String,
    pub life: String,
    pub healthy: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PropertySoFar {
    pub id: String,
    pub passes: u64,
    pub failures: u64,
}

/// Exec and file request ids of callers other than the runner start here, far above
/// the runner's own (which count from 1), so their replies are never confused.
const OUTSIDE_REQUESTS: u64 = 1 << 48;

/// The first step boundary at or after `vtime_ns`: where a session can stop.
pub fn decision_point(vtime_ns: u64) -> u64 {
    vtime_ns.div_ceil(STEP_NS) * STEP_NS
}

fn tracked(plan: &WorldPlan) -> Vec<Tracked> {
    plan.services
        .iter()
        .map(|p| Tracked::new(p.service.clone(), p.spec.clone()))
        .collect()
}

impl Session {
    /// Boots every VM of `plan`; the runner starts with nothing decided.
    pub fn boot(plan: WorldPlan, seed: u64, duration_ns: u64) -> Result<Session, RunError> {
        let runner = Runner::new(tracked(&plan), seed, duration_ns);
        let world = World::new(plan.config)
            .map_err(|e| RunError::Infrastructure(format!("the world did not boot: {e}")))?;
        Ok(Session {
            world,
            runner,
            journal: None,
            next_request: OUTSIDE_REQUESTS,
        })
    }

    /// Continues exactly where `snapshot` was taken (`branch: None`), or as branch
    /// `branch` of it: the World re-seeded from (seed, branch) (see `World::fork`).
    /// `plan` gives the services' definitions (the compose file's, not saved).
    pub fn restore(
        plan: &WorldPlan,
        snapshot: &SessionSnapshot,
        seed: u64,
        duration_ns: u64,
        branch: Option<u64>,
    ) -> Result<Session, RunError> {
        let _time = timer(Phase::Fork);
        let mut runner = Runner::new(tracked(plan), seed, duration_ns);
        runner
            .resume(snapshot.runner.clone())
            .map_err(RunError::Input)?;
        let world = World::fork(&snapshot.world, branch)
            .map_err(|e| RunError::Infrastructure(format!("restore: {e}")))?;
        Ok(Session {
            world,
            runner,
            journal: None,
            next_request: OUTSIDE_REQUESTS,
        })
    }

    /// Reads a snapshot file written by [`Session::save`] (checksum first).
    pub fn load(path: &Path, plan: &WorldPlan) -> Result<SessionSnapshot, RunError> {
        let _time = timer(Phase::Snapshot);
        let bad = |e: String| RunError::Input(format!("{}: {e}", path.display()));
        let (world, app) =
            file::load_with_app(path, &plan.config).map_err(|e| bad(e.to_string()))?;
        let app = app.ok_or_else(|| bad("no runner state in this snapshot".into()))?;
        let runner = serde_json::from_slice(&app).map_err(|e| bad(format!("runner state: {e}")))?;
        Ok(SessionSnapshot { world, runner })
    }

    /// Keeps this session's events and logs in a run's journal from now on.
    pub fn set_journal(&mut self, journal: Journal) {
        self.journal = Some(journal);
    }

    pub fn now(&self) -> u64 {
        self.world.now().as_nanos()
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    /// The World itself, to inject faults or read VMs between steps.
    pub fn world_mut(&mut self) -> &mut World {
        &mut self.world
    }

    /// A fresh id for an exec or file request sent from outside the runner.
    pub fn next_request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    pub fn trace_hash(&self) -> String {
        format!("{:016x}", self.world.trace_value())
    }

    /// One runner step (10 ms of virtual time): the World runs, the runner sees its
    /// events and takes its turn. `Some` when the run is over.
    pub fn step(&mut self, observer: &mut dyn Observer) -> Result<Option<Ending>, String> {
        self.step_until(u64::MAX, observer)
    }

    /// Steps until the first step boundary at or after `vtime_ns` ([`decision_point`]),
    /// after the runner's turn there, or until the run ends. [`Ending::Reached`] when
    /// the moment was reached.
    pub fn run_to(&mut self, vtime_ns: u64, observer: &mut dyn Observer) -> Result<Ending, String> {
        let point = decision_point(vtime_ns);
        loop {
            if self.now() >= point {
                return Ok(Ending::Reached);
            }
            if let Some(ending) = self.step_until(point, observer)? {
                return Ok(ending);
            }
        }
    }

    fn step_until(
        &mut self,
        limit_ns: u64,
        observer: &mut dyn Observer,
    ) -> Result<Option<Ending>, String> {
        let until = VirtualTime((self.now() + STEP_NS).min(limit_ns));
        let mut fresh = Vec::new();
        let guest = timer(Phase::Guest);
        let outcome = self
            .world
            .run_until(until, &mut |e| fresh.push(e))
            .map_err(|e| format!("the world stopped at {}: {e}", self.world.now()))?;
        drop(guest);
        let mut batch = Vec::with_capacity(fresh.len());
        for event in fresh {
            let stored = self.runner.observe(event.clone());
            if let Some(journal) = &mut self.journal {
                journal.record(&event.to_string(), stored.clone());
            }
            batch.push(stored);
            self.take_notes(&mut batch);
        }
        observer.events(&batch)?;
        if let Some(journal) = &mut self.journal {
            journal.flush_if_full()?;
        }
        let (effects, ending) = self.runner.decide(self.now());
        let mut notes = Vec::new();
        self.take_notes(&mut notes);
        observer.events(&notes)?;
        self.apply(effects)?;
        if ending.is_some() {
            return Ok(ending);
        }
        observer.progress(self.now(), self.runner.phase_name());
        if outcome == WorldOutcome::AllStopped {
            return Ok(Some(Ending::SetupFailed(
                "every VM stopped before the run ended".to_string(),
            )));
        }
        Ok(None)
    }

    /// The runner's own events (command endings) into the batch and the journal.
    fn take_notes(&mut self, batch: &mut Vec<StoredEvent>) {
        for note in self.runner.take_notes() {
            if let Some(journal) = &mut self.journal {
                let line = format!(
                    "{} {} {}: {}",
                    VirtualTime(note.vtime_ns),
                    note.node,
                    note.kind,
                    note.body
                );
                journal.record(&line, note.clone());
            }
            batch.push(note);
        }
    }

    fn apply(&mut self, effects: Vec<Effect>) -> Result<(), String> {
        for effect in effects {
            match effect {
                Effect::Start { node, spec } => self
                    .world
                    .send(&node, &HostMessage::Start(*spec))
                    .map_err(|e| e.to_string())?,
                Effect::Exec { node, request } => {
                    if let Err(e) = self.world.send(&node, &HostMessage::Exec(request)) {
                        tracing::warn!("cannot send an exec to {node}: {e}");
                    }
                }
                Effect::StopFaults => self.world.stop_faults().map_err(|e| e.to_string())?,
            }
        }
        Ok(())
    }

    /// The whole session, captured between steps; it goes on unchanged.
    pub fn snapshot(&mut self) -> Result<SessionSnapshot, String> {
        let _time = timer(Phase::Snapshot);
        let world = self.world.snapshot().map_err(|e| e.to_string())?;
        Ok(SessionSnapshot {
            world,
            runner: self.runner.save(),
        })
    }

    /// Snapshots the session into `path`: in full, or as a child of `parent` (the
    /// file and snapshot taken before it from this session).
    pub fn save(
        &mut self,
        path: &Path,
        parent: Option<(&Path, &WorldSnapshot)>,
    ) -> Result<(SessionSnapshot, Written), String> {
        let snap = self.snapshot()?;
        let _time = timer(Phase::Snapshot);
        let app = serde_json::to_vec(&snap.runner).expect("runner state serializes");
        let written = file::save_with_app(&snap.world, path, parent, Some(&app))
            .map_err(|e| e.to_string())?;
        Ok((snap, written))
    }

    /// A new session that continues from this moment as branch `branch`: the same
    /// state, the World re-seeded from (seed, branch). This session goes on unchanged;
    /// the fork has no journal.
    pub fn fork(&mut self, branch: u64) -> Result<Session, String> {
        let _time = timer(Phase::Fork);
        let snap = self.world.snapshot().map_err(|e| e.to_string())?;
        let world = World::fork(&snap, Some(branch)).map_err(|e| e.to_string())?;
        Ok(Session {
            world,
            runner: self.runner.clone(),
            journal: None,
            next_request: self.next_request,
        })
    }

    /// Re-seeds the test composer (which test command runs next) from `seed`, as a
    /// campaign's branch does at its fork; the template chosen at setup stays.
    pub fn reseed_composer(&mut self, seed: u64) {
        self.runner.reseed_composer(seed);
    }

    /// Ends the drivers' phase now instead of at the run's duration: running drivers
    /// drain, faults stop, `eventually_` and `finally_` commands run and the run is
    /// judged, as at the duration. A campaign judges a branch this way on a fork.
    pub fn end_drivers_now(&mut self) {
        let now = self.now();
        self.runner.end_drivers_at(now);
    }

    /// Services, VM states, properties so far and the trace hash, now.
    pub fn state(&self) -> SessionState {
        let world = &self.world;
        SessionState {
            now_ns: self.now(),
            trace_hash: self.trace_hash(),
            phase: self.runner.phase_name().to_string(),
            nodes: world
                .node_names()
                .into_iter()
                .map(|name| NodeSummary {
                    state: world
                        .node_state(&name)
                        .map(|s| format!("{s:?}").to_lowercase())
                        .unwrap_or_default(),
                    name,
                })
                .collect(),
            services: self
                .runner
                .services
                .iter()
                .map(|s| ServiceSummary {
                    name: s.name().to_string(),
                    life: format!("{:?}", s.state.life),
                    healthy: s.state.healthy,
                })
                .collect(),
            properties: self
                .runner
                .state
                .book
                .properties()
                .into_iter()
                .map(|p| PropertySoFar {
                    id: p.id,
                    passes: p.passes,
                    failures: p.failures,
                })
                .collect(),
        }
    }

    /// Ends the run: power-offs from now on are not crashes, forced preemptions are
    /// judged, and the journal is written out. Returns the journal, if any.
    pub fn finish(&mut self) -> Result<Option<Journal>, String> {
        self.runner.stopping();
        let now = self.now();
        for name in self.world.node_names() {
            let forced = self
                .world
                .vm_mut(&name)
                .map_or(0, |vm| vm.stats().forced_preemptions);
            self.runner.forced_preemptions(&name, forced, now);
        }
        match self.journal.take() {
            Some(mut journal) => {
                journal.flush()?;
                Ok(Some(journal))
            }
            None => Ok(None),
        }
    }
}
