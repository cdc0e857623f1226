//! The runner: between the World's slices of virtual time it acts like an
//! orchestrator: starts services when their dependencies hold, runs health checks and
//! test commands through the agents, and turns agent messages into properties.
//! Everything it decides depends only on the events it saw, so a run is a function of
//! its inputs and seed; the [`super::Session`] carries its [`Effect`]s to the World.

use std::collections::BTreeMap;

use detvm_protocol::message::{AgentMessage, ExecRequest, Stream};
use detvm_protocol::spec::ServiceSpec;
use vmm::world::{EventKind, NodeChange, WorldEvent};

use super::services::{blocked, startable, Life, Tracked};
use crate::properties::{parse_sdk_line, PropertyBook, SdkLine};
use crate::store::StoredEvent;
use crate::test_composer::{Composer, Kind, Next, TestCommand, TEST_DIR};

pub(crate) mod commands;
mod state;
pub use commands::{CommandTally, Outcome};
pub use state::{RunnerState, SavedRunner};

/// Virtual time between the runner's turns.
pub const STEP_NS: u64 = 10_000_000;
/// Setup (boot, start, health, `first_` commands) must finish within this.
pub const SETUP_LIMIT_NS: u64 = 180_000_000_000;
/// After the driver phase, running commands get this long before they count as hung.
pub const HANG_GRACE_NS: u64 = 60_000_000_000;
/// How often `anytime_` commands get a chance to start.
const ANYTIME_TICK_NS: u64 = 1_000_000_000;

pub const CRASH: &str = "detvm: no service crashed unexpectedly";
pub const SETUP: &str = "detvm: setup completed";
pub const DETERMINISTIC: &str = "detvm: no forced non-deterministic preemption";

/// Why an exec was sent.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) enum Purpose {
    Health {
        service: usize,
    },
    Discover {
        service: usize,
        listing: String,
    },
    Command {
        composer_id: u64,
        command: TestCommand,
    },
}

/// How the run ended, before properties are judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Finished,
    SetupFailed(String),
    DriverHung(String),
    Interrupted,
    /// The moment asked for ([`super::Session::run_to`]) was reached.
    Reached,
}

/// What the runner asks of the world after its turn; the [`super::Session`] applies
/// them in order, so the runner itself is a pure function of the events it saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Start a service: the run cannot go on if the message cannot be sent.
    Start {
        node: String,
        spec: Box<ServiceSpec>,
    },
    /// Run a command in a node (health check, test command, discovery); a node that
    /// cannot take it is noted, not fatal.
    Exec { node: String, request: ExecRequest },
    /// Stop injecting faults and heal the world (before `eventually_` commands).
    StopFaults,
}

/// The orchestrator of a run: starts services when their dependencies hold, runs
/// health checks and test commands, judges properties. It never touches the World:
/// it reads events ([`Runner::observe`]) and answers with [`Effect`]s ([`Runner::decide`]).
#[derive(Clone)]
pub struct Runner {
    pub services: Vec<Tracked>,
    /// What the runner decided so far (saved in snapshots with the services' states).
    pub state: RunnerState,
    seed: u64,
    duration_ns: u64,
    stopping: bool,
    /// Runner events not yet taken by the session (see [`Runner::take_notes`]).
    notes: Vec<StoredEvent>,
}

impl Runner {
    pub fn new(services: Vec<Tracked>, seed: u64, duration_ns: u64) -> Self {
        let mut book = PropertyBook::new();
        book.declare_builtin(SETUP, "setup completed");
        book.declare_builtin(CRASH, "no service crashed unexpectedly");
        book.declare_builtin(DETERMINISTIC, "no forced non-deterministic preemption");
        Runner {
            services,
            state: RunnerState {
                book,
                seq: 0,
                execs: BTreeMap::new(),
                next_exec: 1,
                composer: None,
                discovered: Vec::new(),
                discovery_sent: false,
                drivers_ended: false,
                next_anytime: 0,
                setup_complete_at: None,
                faults_stopped: false,
                deferred: Vec::new(),
                commands: Default::default(),
            },
            seed,
            duration_ns,
            stopping: false,
            notes: Vec::new(),
        }
    }

    pub fn duration_ns(&self) -> u64 {
        self.duration_ns
    }

    /// See [`crate::run::Session::end_drivers_now`]: the run's duration becomes `now`
    /// (never later than it was), so the hang grace counts from here.
    pub fn end_drivers_at(&mut self, now: u64) {
        self.duration_ns = self.duration_ns.min(now);
    }

    /// See [`crate::run::Session::reseed_composer`]; nothing to do before the composer exists.
    pub fn reseed_composer(&mut self, seed: u64) {
        if let Some(c) = &mut self.state.composer {
            c.reseed(seed);
        }
    }

    /// Setup is over: services up, test commands discovered, `first_` commands done.
    pub fn setup_finished(&self) -> bool {
        self.state.composer.as_ref().is_some_and(|c| c.setup_done())
    }

    pub fn phase_name(&self) -> &'static str {
        match (&self.state.composer, self.state.drivers_ended) {
            (None, _) => "setup",
            (Some(c), false) if !c.setup_done() => "first_ commands",
            (Some(_), false) => "drivers",
            (Some(_), true) => "finishing",
        }
    }

    pub(super) fn index_of(&self, node: &str) -> Option<usize> {
        self.services.iter().position(|s| s.name() == node)
    }

    /// Takes in one world event: numbers it for the run store and updates what the
    /// runner knows (service lives, exec results, SDK assertions).
    pub fn observe(&mut self, e: WorldEvent) -> StoredEvent {
        let body = serde_json::to_value(&e.kind).unwrap_or_default();
        let kind = body
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or("event")
            .to_string();
        let stored = StoredEvent {
            seq: self.state.seq,
            vtime_ns: e.time.as_nanos(),
            node: e.node.clone(),
            kind,
            body,
        };
        self.state.seq += 1;
        self.handle(e);
        stored
    }

    fn handle(&mut self, e: WorldEvent) {
        let now = e.time.as_nanos();
        let Some(i) = self.index_of(&e.node) else {
            return;
        };
        match e.kind {
            EventKind::Agent { message } => self.agent(i, now, message),
            EventKind::State { state } => {
                let bad = match state {
                    NodeChange::TripleFault { vcpu, rip } => {
                        Some(format!("VM triple-faulted (vCPU {vcpu}, RIP {rip:#x})"))
                    }
                    NodeChange::Halted => Some("VM halted".to_string()),
                    NodeChange::PoweredOff if !self.stopping => Some("VM powered off".to_string()),
                    _ => None,
                };
                if let Some(reason) = bad {
                    let name = self.services[i].name().to_string();
                    self.state
                        .book
                        .fail_builtin(CRASH, &name, now, &format!("{name}: {reason}"));
                }
                self.node_changed(i, now, &state);
            }
            _ => {}
        }
    }

    fn agent(&mut self, i: usize, now: u64, message: AgentMessage) {
        let name = self.services[i].name().to_string();
        match message {
            AgentMessage::Hello { .. } => {
                // A restarted VM says hello again: start its service again.
                self.services[i].state.life = Life::Ready;
                self.services[i].state.healthy = false;
            }
            AgentMessage::Started { .. } => {
                let s = &mut self.services[i];
                s.state.life = Life::Running;
                s.state.started_at = Some(now);
                s.state.next_health_at = s
                    .healthcheck()
                    .map(|h| now + h.start_period.as_nanos() as u64);
            }
            AgentMessage::Exited { code, signal } => {
                self.services[i].state.life = Life::Exited { code, signal };
                if !self.stopping && (code != Some(0) || signal.is_some()) {
                    let how = match (code, signal) {
                        (_, Some(sig)) => format!("killed by signal {sig}"),
                        (Some(c), None) => format!("exited with code {c}"),
                        (None, None) => "ended".to_string(),
                    };
                    self.state
                        .book
                        .fail_builtin(CRASH, &name, now, &format!("{name} {how}"));
                }
            }
            AgentMessage::Error { message } if self.services[i].state.life == Life::Starting => {
                self.services[i].state.life = Life::Failed(message);
            }
            AgentMessage::Sdk { line, .. } => match parse_sdk_line(&line) {
                Ok(SdkLine::Assert(a)) => self.state.book.record(&a, &name, now),
                Ok(SdkLine::SetupComplete { .. }) => {}
                Ok(_) => {}
                Err(e) => tracing::debug!("{name}: SDK line not understood: {e}"),
            },
            AgentMessage::ExecOutput { id, stream, line } => {
                if let Some(Purpose::Discover { listing, .. }) = self.state.execs.get_mut(&id) {
                    if stream == Stream::Stdout {
                        listing.push_str(&line);
                        listing.push('\n');
                    }
                }
                if let Some(Purpose::Health { service }) = self.state.execs.get(&id) {
                    let s = *service;
                    self.services[s].state.last_health_output = line;
                }
            }
            AgentMessage::ExecExited { id, code, signal } => {
                self.exec_done(id, now, code == Some(0) && signal.is_none(), || {
                    format!("exit code {code:?}, signal {signal:?}")
                })
            }
            AgentMessage::ExecError { id, message } => {
                self.exec_done(id, now, false, || message.clone())
            }
            _ => {}
        }
    }

    fn exec_done(&mut self, id: u64, now: u64, ok: bool, how: impl Fn() -> String) {
        let Some(purpose) = self.state.execs.remove(&id) else {
            return; // a health check that timed out earlier
        };
        match purpose {
            Purpose::Health { service } => {
                let s = &mut self.services[service];
                s.state.health_exec = None;
                if let Some(h) = s.service.healthcheck.clone() {
                    self.health_result(service, now, ok, h.interval.as_nanos() as u64, &how());
                }
            }
            Purpose::Discover { service, listing } => {
                let name = self.services[service].name().to_string();
                self.state
                    .discovered
                    .extend(crate::test_composer::discover(&name, &listing));
            }
            Purpose::Command {
                composer_id,
                command,
            } => {
                if let Some(c) = &mut self.state.composer {
                    c.finished(composer_id);
                }
                let outcome = if ok {
                    Outcome::Succeeded
                } else {
                    Outcome::Failed(how())
                };
                self.command_ended(id, &command, now, outcome);
                let label = format!("{}/{}", command.template, command.name());
                let id = format!("detvm: test command {label} succeeds");
                self.state
                    .book
                    .declare_builtin(&id, &format!("test command {label} succeeds"));
                if !ok {
                    let reason = format!("{label} on {} failed: {}", command.service, how());
                    self.state
                        .book
                        .fail_builtin(&id, &command.service, now, &reason);
                    if command.kind == Kind::First {
                        self.state
                            .book
                            .fail_builtin(SETUP, &command.service, now, &reason);
                    }
                }
            }
        }
    }

    fn health_result(&mut self, i: usize, now: u64, ok: bool, interval: u64, how: &str) {
        let s = &mut self.services[i];
        if ok {
            s.state.healthy = true;
            s.state.next_health_at = None;
            return;
        }
        let h = s
            .service
            .healthcheck
            .clone()
            .expect("health exec has a check");
        let in_start_period = s
            .state
            .started_at
            .is_some_and(|t| now < t + h.start_period.as_nanos() as u64);
        if !in_start_period {
            s.state.health_failures += 1;
        }
        s.state.last_health_failure = format!("{how}; output: {:?}", s.state.last_health_output);
        s.state.last_health_output.clear();
        s.state.next_health_at = Some(now + interval);
    }

    pub(super) fn send_exec(
        &mut self,
        effects: &mut Vec<Effect>,
        service: usize,
        argv: Vec<String>,
        purpose: Purpose,
    ) -> u64 {
        let id = self.state.next_exec;
        self.state.next_exec += 1;
        let request = ExecRequest {
            id,
            argv,
            ..ExecRequest::default()
        };
        effects.push(Effect::Exec {
            node: self.services[service].name().to_string(),
            request,
        });
        self.state.execs.insert(id, purpose);
        id
    }

    /// The runner's turn at `now`: what the world must do (in order), and `Some`
    /// ending when the run is over (after those effects).
    pub fn decide(&mut self, now: u64) -> (Vec<Effect>, Option<Ending>) {
        let mut effects = Vec::new();
        for i in startable(&self.services) {
            effects.push(Effect::Start {
                node: self.services[i].name().to_string(),
                spec: Box::new(self.services[i].spec.clone()),
            });
            self.services[i].state.life = Life::Starting;
        }
        self.health_checks(&mut effects, now);
        self.start_deferred(&mut effects);
        let ending = if self.state.composer.is_none() {
            self.setup_step(&mut effects, now)
        } else {
            self.composer_step(&mut effects, now)
        };
        (effects, ending)
    }

    fn health_checks(&mut self, effects: &mut Vec<Effect>, now: u64) {
        for i in 0..self.services.len() {
            let s = &self.services[i];
            let Some(h) = s.healthcheck().cloned() else {
                continue;
            };
            if s.state.life != Life::Running || s.state.healthy {
                continue;
            }
            if let Some((id, timeout_at)) = s.state.health_exec {
                if now >= timeout_at {
                    self.state.execs.remove(&id);
                    self.services[i].state.health_exec = None;
                    self.health_result(i, now, false, h.interval.as_nanos() as u64, "timed out");
                }
                continue;
            }
            if s.state.next_health_at.is_some_and(|t| now >= t) {
                let id = self.send_exec(effects, i, h.test.clone(), Purpose::Health { service: i });
                self.services[i].state.health_exec = Some((id, now + h.timeout.as_nanos() as u64));
            }
        }
    }

    /// Until the composer exists: services up, then test commands discovered.
    fn setup_step(&mut self, effects: &mut Vec<Effect>, now: u64) -> Option<Ending> {
        if let Some(s) = self
            .services
            .iter()
            .find(|s| matches!(s.state.life, Life::Failed(_)))
        {
            let Life::Failed(why) = &s.state.life else {
                unreachable!()
            };
            return Some(self.setup_failed(
                now,
                s.name().to_string(),
                format!("`{}` could not start: {why}", s.name()),
            ));
        }
        if let Some(why) = blocked(&self.services) {
            return Some(self.setup_failed(now, "world".into(), why));
        }
        if let Some(s) = self.services.iter().find(|s| {
            s.healthcheck()
                .is_some_and(|h| s.state.health_failures > h.retries)
        }) {
            let why = format!(
                "`{}` never became healthy: {} failed checks (last: {})",
                s.name(),
                s.state.health_failures,
                s.state.last_health_failure
            );
            return Some(self.setup_failed(now, s.name().to_string(), why));
        }
        if now >= SETUP_LIMIT_NS {
            let waiting: Vec<String> = self
                .services
                .iter()
                .filter(|s| !s.up() && !matches!(s.state.life, Life::Exited { .. }))
                .map(|s| format!("{} ({:?})", s.name(), s.state.life))
                .collect();
            let why = format!(
                "setup did not finish within {}s of virtual time; waiting for: {}",
                SETUP_LIMIT_NS / 1_000_000_000,
                waiting.join(", ")
            );
            return Some(self.setup_failed(now, "world".into(), why));
        }
        let all_up = self
            .services
            .iter()
            .all(|s| s.up() || matches!(s.state.life, Life::Exited { code: Some(0), .. }));
        if all_up && !self.state.discovery_sent {
            self.state.discovery_sent = true;
            let script = format!(
                "for f in {TEST_DIR}/*/*; do [ -f \"$f\" ] && [ -x \"$f\" ] && echo \"$f\"; done; true"
            );
            for i in 0..self.services.len() {
                if self.services[i].state.life == Life::Running {
                    let argv = vec!["/bin/sh".into(), "-c".into(), script.clone()];
                    self.send_exec(
                        effects,
                        i,
                        argv,
                        Purpose::Discover {
                            service: i,
                            listing: String::new(),
                        },
                    );
                }
            }
        }
        let discovering = self
            .state
            .execs
            .values()
            .any(|p| matches!(p, Purpose::Discover { .. }));
        if self.state.discovery_sent && !discovering {
            let commands = std::mem::take(&mut self.state.discovered);
            self.state.composer = Some(Composer::new(commands, self.seed, 3));
            self.state.next_anytime = now + ANYTIME_TICK_NS;
        }
        None
    }

    fn setup_failed(&mut self, now: u64, node: String, why: String) -> Ending {
        self.state.book.fail_builtin(SETUP, &node, now, &why);
        Ending::SetupFailed(why)
    }

    fn composer_step(&mut self, effects: &mut Vec<Effect>, now: u64) -> Option<Ending> {
        if now >= self.duration_ns && !self.state.drivers_ended {
            self.state.drivers_ended = true;
            if let Some(c) = &mut self.state.composer {
                c.end_drivers();
            }
        }
        let composer = self.state.composer.as_mut().expect("composer exists");
        let setup_was_done = composer.setup_done();
        let actions = if now >= self.state.next_anytime {
            self.state.next_anytime = now + ANYTIME_TICK_NS;
            composer.poll()
        } else {
            composer.poll_without_anytime()
        };
        if !setup_was_done && composer.setup_done() && self.state.setup_complete_at.is_none() {
            self.state.setup_complete_at = Some(now);
        }
        let setup_failed = self
            .state
            .book
            .properties()
            .iter()
            .any(|p| p.id == SETUP && p.failures > 0);
        if setup_failed {
            let why = self
                .state
                .book
                .properties()
                .into_iter()
                .find(|p| p.id == SETUP)
                .and_then(|p| p.reason)
                .unwrap_or_default();
            return Some(Ending::SetupFailed(why));
        }
        for next in actions {
            match next {
                Next::Start { id, command } => {
                    let Some(service) = self.index_of(&command.service) else {
                        continue;
                    };
                    if self.services[service].state.life == Life::Down {
                        // Its VM is killed: the command waits for the restart.
                        self.state.deferred.push((id, command));
                        continue;
                    }
                    let argv = vec![command.path.clone()];
                    self.send_exec(
                        effects,
                        service,
                        argv,
                        Purpose::Command {
                            composer_id: id,
                            command,
                        },
                    );
                }
                Next::StopFaults => {
                    if !self.state.faults_stopped {
                        self.state.faults_stopped = true;
                        effects.push(Effect::StopFaults);
                    }
                }
                Next::Done => return Some(Ending::Finished),
            }
        }
        if self.state.drivers_ended && now >= self.duration_ns + HANG_GRACE_NS {
            let running: Vec<String> =
                self.state
                    .execs
                    .values()
                    .filter_map(|p| match p {
                        Purpose::Command { command, .. } => {
                            Some(format!("{} on {}", command.path, command.service))
                        }
                        _ => None,
                    })
                    .chain(
                        self.state.deferred.iter().map(|(_, c)| {
                            format!("{} waiting for {} to come back", c.path, c.service)
                        }),
                    )
                    .collect();
            return Some(Ending::DriverHung(format!(
                "test commands still running {}s after the driver phase ended: {}",
                HANG_GRACE_NS / 1_000_000_000,
                running.join(", ")
            )));
        }
        None
    }

    /// Marks the end of the run so the power-offs that follow are not crashes.
    pub fn stopping(&mut self) {
        self.stopping = true;
    }

    /// Fails the forced-preemption built-in for a node whose VM was preempted by host
    /// timing `forced` times (the session reads the counters from the World).
    pub fn forced_preemptions(&mut self, node: &str, forced: u64, now: u64) {
        if forced > 0 {
            self.state.book.fail_builtin(
                DETERMINISTIC,
                node,
                now,
                &format!("{node}: {forced} forced preemption(s): host timing decided guest-visible moments"),
            );
        }
    }
}
