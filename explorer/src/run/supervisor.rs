//! The run loop: steps the World in small slices of virtual time and, between slices,
//! acts like an orchestrator: starts services when their dependencies hold, runs
//! health checks and test commands through the agents, and turns agent messages into
//! properties. Everything it decides depends only on events, so a run is a function
//! of its inputs and seed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use detvm_protocol::message::{AgentMessage, ExecRequest, HostMessage, Stream};
use vmm::clock::VirtualTime;
use vmm::world::{EventKind, NodeChange, World, WorldEvent, WorldOutcome};

use super::services::{blocked, startable, Life, Tracked};
use crate::composer::{Action, Composer, Kind, TestCommand, TEST_DIR};
use crate::properties::{parse_sdk_line, PropertyBook, SdkLine};
use crate::store::StoredEvent;

mod state;
pub use state::{Orchestration, RunnerState};

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
enum Purpose {
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
    /// The stop time set with [`Supervisor::stop_at`] was reached (a replay).
    Reached,
}

pub struct Supervisor<'a> {
    pub world: World,
    pub services: Vec<Tracked>,
    /// What the runner decided so far (saved in snapshots).
    pub orch: Orchestration,
    pub events: Vec<StoredEvent>,
    seed: u64,
    duration_ns: u64,
    stopping: bool,
    interrupt: &'a AtomicBool,
    /// Lines for the run folder's log files, by file name, not yet written.
    logs: BTreeMap<String, String>,
    log_dir: Option<std::path::PathBuf>,
    /// Stop as soon as the world reaches this time, before the runner's turn there.
    stop_at: Option<u64>,
}

impl<'a> Supervisor<'a> {
    pub fn new(
        world: World,
        services: Vec<Tracked>,
        seed: u64,
        duration_ns: u64,
        interrupt: &'a AtomicBool,
    ) -> Self {
        let mut book = PropertyBook::new();
        book.declare_builtin(SETUP, "setup completed");
        book.declare_builtin(CRASH, "no service crashed unexpectedly");
        book.declare_builtin(DETERMINISTIC, "no forced non-deterministic preemption");
        Supervisor {
            world,
            services,
            orch: Orchestration {
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
            },
            events: Vec::new(),
            seed,
            duration_ns,
            stopping: false,
            interrupt,
            logs: BTreeMap::new(),
            log_dir: None,
            stop_at: None,
        }
    }

    /// Makes [`Supervisor::run`] end with [`Ending::Reached`] once the world is at
    /// `vtime` (a step boundary) and the runner has taken its turn there: the state a
    /// snapshot at that time holds.
    pub fn stop_at(&mut self, vtime_ns: u64) {
        self.stop_at = Some(vtime_ns);
    }

    pub fn now(&self) -> u64 {
        self.world.now().as_nanos()
    }

    /// Steps until the run ends; `progress` sees virtual time after each step and
    /// `between_steps` the supervisor at each step boundary (where snapshots are taken).
    pub fn run(
        &mut self,
        progress: &mut dyn FnMut(u64, &str),
        flush: &mut dyn FnMut(&mut Vec<StoredEvent>) -> Result<(), String>,
        between_steps: &mut dyn FnMut(&mut Self) -> Result<(), String>,
    ) -> Result<Ending, String> {
        loop {
            if self.interrupt.load(Ordering::SeqCst) {
                return Ok(Ending::Interrupted);
            }
            between_steps(self)?;
            let stop = self.stop_at.unwrap_or(u64::MAX);
            if self.now() >= stop {
                return Ok(Ending::Reached);
            }
            let until = VirtualTime((self.now() + STEP_NS).min(stop));
            let mut fresh = Vec::new();
            let outcome = self
                .world
                .run_until(until, &mut |e| fresh.push(e))
                .map_err(|e| format!("the world stopped at {}: {e}", self.world.now()))?;
            for e in fresh {
                self.handle(e);
            }
            if self.events.len() >= 512 {
                flush(&mut self.events)?;
                self.flush_logs()?;
            }
            if let Some(ending) = self.decide()? {
                return Ok(ending);
            }
            progress(self.now(), self.phase_name());
            if outcome == WorldOutcome::AllStopped {
                return Ok(Ending::SetupFailed(
                    "every VM stopped before the run ended".to_string(),
                ));
            }
        }
    }

    pub fn phase_name(&self) -> &'static str {
        match (&self.orch.composer, self.orch.drivers_ended) {
            (None, _) => "setup",
            (Some(c), false) if !c.setup_done() => "first_ commands",
            (Some(_), false) => "drivers",
            (Some(_), true) => "finishing",
        }
    }

    fn index_of(&self, node: &str) -> Option<usize> {
        self.services.iter().position(|s| s.name() == node)
    }

    /// Where [`Supervisor::flush_logs`] writes the run's log files.
    pub fn set_log_dir(&mut self, dir: std::path::PathBuf) {
        self.log_dir = Some(dir);
    }

    pub fn flush_logs(&mut self) -> Result<(), String> {
        match self.log_dir.clone() {
            Some(dir) => self
                .write_logs(&dir)
                .map_err(|e| format!("cannot write logs in {}: {e}", dir.display())),
            None => Ok(()),
        }
    }

    /// Appends the pending log lines to `dir/events.log` (every event) and
    /// `dir/<node>.log` (that node's events).
    pub fn write_logs(&mut self, dir: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        for (file, text) in std::mem::take(&mut self.logs) {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(file))?
                .write_all(text.as_bytes())?;
        }
        Ok(())
    }

    fn record(&mut self, e: &WorldEvent) {
        let line = format!("{e}\n");
        self.logs
            .entry("events.log".into())
            .or_default()
            .push_str(&line);
        self.logs
            .entry(format!("{}.log", e.node))
            .or_default()
            .push_str(&line);
        let body = serde_json::to_value(&e.kind).unwrap_or_default();
        let kind = body
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or("event")
            .to_string();
        self.events.push(StoredEvent {
            seq: self.orch.seq,
            vtime_ns: e.time.as_nanos(),
            node: e.node.clone(),
            kind,
            body,
        });
        self.orch.seq += 1;
    }

    fn handle(&mut self, e: WorldEvent) {
        self.record(&e);
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
                    self.orch
                        .book
                        .fail_builtin(CRASH, &name, now, &format!("{name}: {reason}"));
                }
            }
            _ => {}
        }
    }

    fn agent(&mut self, i: usize, now: u64, message: AgentMessage) {
        let name = self.services[i].name().to_string();
        match message {
            AgentMessage::Hello { .. } => {
                // A restarted VM says hello again: start its service again.
                self.services[i].life = Life::Ready;
                self.services[i].healthy = false;
            }
            AgentMessage::Started { .. } => {
                let s = &mut self.services[i];
                s.life = Life::Running;
                s.started_at = Some(now);
                s.next_health_at = s
                    .healthcheck()
                    .map(|h| now + h.start_period.as_nanos() as u64);
            }
            AgentMessage::Exited { code, signal } => {
                self.services[i].life = Life::Exited { code, signal };
                if !self.stopping && (code != Some(0) || signal.is_some()) {
                    let how = match (code, signal) {
                        (_, Some(sig)) => format!("killed by signal {sig}"),
                        (Some(c), None) => format!("exited with code {c}"),
                        (None, None) => "ended".to_string(),
                    };
                    self.orch
                        .book
                        .fail_builtin(CRASH, &name, now, &format!("{name} {how}"));
                }
            }
            AgentMessage::Error { message } if self.services[i].life == Life::Starting => {
                self.services[i].life = Life::Failed(message);
            }
            AgentMessage::Sdk { line, .. } => match parse_sdk_line(&line) {
                Ok(SdkLine::Assert(a)) => self.orch.book.record(&a, &name, now),
                Ok(SdkLine::SetupComplete { .. }) => {}
                Ok(_) => {}
                Err(e) => tracing::debug!("{name}: SDK line not understood: {e}"),
            },
            AgentMessage::ExecOutput { id, stream, line } => {
                if let Some(Purpose::Discover { listing, .. }) = self.orch.execs.get_mut(&id) {
                    if stream == Stream::Stdout {
                        listing.push_str(&line);
                        listing.push('\n');
                    }
                }
                if let Some(Purpose::Health { service }) = self.orch.execs.get(&id) {
                    let s = *service;
                    self.services[s].last_health_output = line;
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
        let Some(purpose) = self.orch.execs.remove(&id) else {
            return; // a health check that timed out earlier
        };
        match purpose {
            Purpose::Health { service } => {
                let s = &mut self.services[service];
                s.health_exec = None;
                if let Some(h) = s.service.healthcheck.clone() {
                    self.health_result(service, now, ok, h.interval.as_nanos() as u64, &how());
                }
            }
            Purpose::Discover { service, listing } => {
                let name = self.services[service].name().to_string();
                self.orch
                    .discovered
                    .extend(crate::composer::discover(&name, &listing));
            }
            Purpose::Command {
                composer_id,
                command,
            } => {
                if let Some(c) = &mut self.orch.composer {
                    c.finished(composer_id);
                }
                let label = format!("{}/{}", command.template, command.name());
                let id = format!("detvm: test command {label} succeeds");
                self.orch
                    .book
                    .declare_builtin(&id, &format!("test command {label} succeeds"));
                if !ok {
                    let reason = format!("{label} on {} failed: {}", command.service, how());
                    self.orch
                        .book
                        .fail_builtin(&id, &command.service, now, &reason);
                    if command.kind == Kind::First {
                        self.orch
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
            s.healthy = true;
            s.next_health_at = None;
            return;
        }
        let h = s
            .service
            .healthcheck
            .clone()
            .expect("health exec has a check");
        let in_start_period = s
            .started_at
            .is_some_and(|t| now < t + h.start_period.as_nanos() as u64);
        if !in_start_period {
            s.health_failures += 1;
        }
        s.last_health_failure = format!("{how}; output: {:?}", s.last_health_output);
        s.last_health_output.clear();
        s.next_health_at = Some(now + interval);
    }

    fn send_exec(&mut self, service: usize, argv: Vec<String>, purpose: Purpose) -> u64 {
        let id = self.orch.next_exec;
        self.orch.next_exec += 1;
        let request = ExecRequest {
            id,
            argv,
            ..ExecRequest::default()
        };
        let name = self.services[service].name().to_string();
        if let Err(e) = self.world.send(&name, &HostMessage::Exec(request)) {
            tracing::warn!("cannot send an exec to {name}: {e}");
        }
        self.orch.execs.insert(id, purpose);
        id
    }

    /// The orchestrator's turn. `Some` when the run is over.
    fn decide(&mut self) -> Result<Option<Ending>, String> {
        let now = self.now();
        for i in startable(&self.services) {
            let name = self.services[i].name().to_string();
            let spec = self.services[i].spec.clone();
            self.world
                .send(&name, &HostMessage::Start(spec))
                .map_err(|e| e.to_string())?;
            self.services[i].life = Life::Starting;
        }
        self.health_checks(now);
        if self.orch.composer.is_none() {
            return Ok(self.setup_step(now));
        }
        self.composer_step(now)
    }

    fn health_checks(&mut self, now: u64) {
        for i in 0..self.services.len() {
            let s = &self.services[i];
            let Some(h) = s.healthcheck().cloned() else {
                continue;
            };
            if s.life != Life::Running || s.healthy {
                continue;
            }
            if let Some((id, timeout_at)) = s.health_exec {
                if now >= timeout_at {
                    self.orch.execs.remove(&id);
                    self.services[i].health_exec = None;
                    self.health_result(i, now, false, h.interval.as_nanos() as u64, "timed out");
                }
                continue;
            }
            if s.next_health_at.is_some_and(|t| now >= t) {
                let id = self.send_exec(i, h.test.clone(), Purpose::Health { service: i });
                self.services[i].health_exec = Some((id, now + h.timeout.as_nanos() as u64));
            }
        }
    }

    /// Until the composer exists: services up, then test commands discovered.
    fn setup_step(&mut self, now: u64) -> Option<Ending> {
        if let Some(s) = self
            .services
            .iter()
            .find(|s| matches!(s.life, Life::Failed(_)))
        {
            let Life::Failed(why) = &s.life else {
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
                .is_some_and(|h| s.health_failures > h.retries)
        }) {
            let why = format!(
                "`{}` never became healthy: {} failed checks (last: {})",
                s.name(),
                s.health_failures,
                s.last_health_failure
            );
            return Some(self.setup_failed(now, s.name().to_string(), why));
        }
        if now >= SETUP_LIMIT_NS {
            let waiting: Vec<String> = self
                .services
                .iter()
                .filter(|s| !s.up() && !matches!(s.life, Life::Exited { .. }))
                .map(|s| format!("{} ({:?})", s.name(), s.life))
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
            .all(|s| s.up() || matches!(s.life, Life::Exited { code: Some(0), .. }));
        if all_up && !self.orch.discovery_sent {
            self.orch.discovery_sent = true;
            let script = format!(
                "for f in {TEST_DIR}/*/*; do [ -f \"$f\" ] && [ -x \"$f\" ] && echo \"$f\"; done; true"
            );
            for i in 0..self.services.len() {
                if self.services[i].life == Life::Running {
                    let argv = vec!["/bin/sh".into(), "-c".into(), script.clone()];
                    self.send_exec(
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
            .orch
            .execs
            .values()
            .any(|p| matches!(p, Purpose::Discover { .. }));
        if self.orch.discovery_sent && !discovering {
            let commands = std::mem::take(&mut self.orch.discovered);
            self.orch.composer = Some(Composer::new(commands, self.seed, 3));
            self.orch.next_anytime = now + ANYTIME_TICK_NS;
        }
        None
    }

    fn setup_failed(&mut self, now: u64, node: String, why: String) -> Ending {
        self.orch.book.fail_builtin(SETUP, &node, now, &why);
        Ending::SetupFailed(why)
    }

    fn composer_step(&mut self, now: u64) -> Result<Option<Ending>, String> {
        if now >= self.duration_ns && !self.orch.drivers_ended {
            self.orch.drivers_ended = true;
            if let Some(c) = &mut self.orch.composer {
                c.end_drivers();
            }
        }
        let composer = self.orch.composer.as_mut().expect("composer exists");
        let setup_was_done = composer.setup_done();
        let actions = if now >= self.orch.next_anytime {
            self.orch.next_anytime = now + ANYTIME_TICK_NS;
            composer.poll()
        } else {
            composer.poll_without_anytime()
        };
        if !setup_was_done && composer.setup_done() && self.orch.setup_complete_at.is_none() {
            self.orch.setup_complete_at = Some(now);
        }
        let setup_failed = self
            .orch
            .book
            .properties()
            .iter()
            .any(|p| p.id == SETUP && p.failures > 0);
        if setup_failed {
            let why = self
                .orch
                .book
                .properties()
                .into_iter()
                .find(|p| p.id == SETUP)
                .and_then(|p| p.reason)
                .unwrap_or_default();
            return Ok(Some(Ending::SetupFailed(why)));
        }
        for action in actions {
            match action {
                Action::Start { id, command } => {
                    let Some(service) = self.index_of(&command.service) else {
                        continue;
                    };
                    let argv = vec![command.path.clone()];
                    self.send_exec(
                        service,
                        argv,
                        Purpose::Command {
                            composer_id: id,
                            command,
                        },
                    );
                }
                Action::StopFaults => {
                    if !self.orch.faults_stopped {
                        self.orch.faults_stopped = true;
                        self.world.stop_faults().map_err(|e| e.to_string())?;
                    }
                }
                Action::Done => return Ok(Some(Ending::Finished)),
            }
        }
        if self.orch.drivers_ended && now >= self.duration_ns + HANG_GRACE_NS {
            let running: Vec<String> = self
                .orch
                .execs
                .values()
                .filter_map(|p| match p {
                    Purpose::Command { command, .. } => {
                        Some(format!("{} on {}", command.path, command.service))
                    }
                    _ => None,
                })
                .collect();
            return Ok(Some(Ending::DriverHung(format!(
                "test commands still running {}s after the driver phase ended: {}",
                HANG_GRACE_NS / 1_000_000_000,
                running.join(", ")
            ))));
        }
        Ok(None)
    }

    /// Marks the end of the run so the power-offs that follow are not crashes.
    pub fn stopping(&mut self) {
        self.stopping = true;
    }

    /// The forced-preemption built-in, from every VM's counters.
    pub fn check_determinism(&mut self) {
        let now = self.now();
        for name in self.world.node_names() {
            let forced = self
                .world
                .vm_mut(&name)
                .map_or(0, |vm| vm.stats().forced_preemptions);
            if forced > 0 {
                self.orch.book.fail_builtin(
                    DETERMINISTIC,
                    &name,
                    now,
                    &format!("{name}: {forced} forced preemption(s): host timing decided guest-visible moments"),
                );
            }
        }
    }
}
