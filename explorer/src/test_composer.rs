//! Test templates: executables under `/opt/antithesis/test/v1/<template>/` in any
//! container, named by prefix, scheduled with the Antithesis test composer's meaning:
//!
//! - `first_*`: once each, in name order, before anything else; a failure is a setup failure.
//! - `parallel_driver_*`: repeatedly, up to `max_parallel` at a time, mixed with others.
//! - `serial_driver_*`: repeatedly, never while another driver runs.
//! - `singleton_driver_*`: one of them, once, as the only driver of the run.
//! - `anytime_*`: repeatedly at any time while drivers run, one instance per command.
//! - `finally_*`: once each, after the driver phase ended and every driver finished.
//! - `eventually_*`: once each, last, after faults stopped and the system was healed.
//!
//! `helper_*` and files without a known prefix are ignored. One template is used per
//! run, chosen from the seed. The composer is a pure state machine: the runner tells
//! it what finished and when the driver phase is over; it answers what to start.

use std::collections::BTreeMap;

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

pub const TEST_DIR: &str = "/opt/antithesis/test/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    First,
    ParallelDriver,
    SerialDriver,
    SingletonDriver,
    Anytime,
    Finally,
    Eventually,
}

impl Kind {
    /// The kind a file name's prefix gives, if any.
    pub fn of(file_name: &str) -> Option<Kind> {
        const PREFIXES: [(&str, Kind); 7] = [
            ("first_", Kind::First),
            ("parallel_driver_", Kind::ParallelDriver),
            ("serial_driver_", Kind::SerialDriver),
            ("singleton_driver_", Kind::SingletonDriver),
            ("anytime_", Kind::Anytime),
            ("finally_", Kind::Finally),
            ("eventually_", Kind::Eventually),
        ];
        PREFIXES
            .iter()
            .find(|(p, _)| file_name.starts_with(p) && file_name.len() > p.len())
            .map(|(_, k)| *k)
    }

    fn is_driver(self) -> bool {
        matches!(
            self,
            Kind::ParallelDriver | Kind::SerialDriver | Kind::SingletonDriver
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TestCommand {
    pub service: String,
    pub template: String,
    /// Absolute path inside the container.
    pub path: String,
    pub kind: Kind,
}

impl TestCommand {
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// Test commands from one container's listing of `TEST_DIR/*/*` (one path per line).
pub fn discover(service: &str, listing: &str) -> Vec<TestCommand> {
    let prefix = format!("{TEST_DIR}/");
    let mut out: Vec<TestCommand> = listing
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix(&prefix)?;
            let (template, file) = rest.split_once('/')?;
            if template.is_empty() || file.contains('/') {
                return None;
            }
            Some(TestCommand {
                service: service.to_string(),
                template: template.to_string(),
                path: line.trim().to_string(),
                kind: Kind::of(file)?,
            })
        })
        .collect();
    out.sort();
    out
}

/// What the runner should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Run this command; report its end with [`Composer::finished`] and this id.
    Start { id: u64, command: TestCommand },
    /// Stop injecting faults and heal the world (before `eventually_` commands).
    StopFaults,
    /// Nothing left to run.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    First,
    Drivers,
    Drain,
    Finally,
    Quiesce,
    Eventually,
    Done,
}

/// Serde: it is part of a run's snapshot (the RNG by its exact stream position).
#[derive(Clone, Serialize, Deserialize)]
pub struct Composer {
    template: Option<String>,
    commands: Vec<TestCommand>,
    running: BTreeMap<u64, TestCommand>,
    next_id: u64,
    phase: Phase,
    /// Index into the current once-each list (first, finally, eventually).
    cursor: usize,
    singleton_done: bool,
    max_parallel: usize,
    #[serde(with = "rng_position")]
    rng: ChaCha20Rng,
    /// A serial driver waiting for the parallel ones to finish.
    serial_waiting: Option<TestCommand>,
    offer_anytime: bool,
}

impl Composer {
    /// Draws the mix from `seed` from now on (a campaign's branch); the template, the
    /// commands running and the phase stay.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = ChaCha20Rng::from_seed(vmm::seed::derive_key(seed, "run/composer"));
    }

    /// `commands` from every container; `seed` picks the template and the mix.
    pub fn new(mut commands: Vec<TestCommand>, seed: u64, max_parallel: usize) -> Composer {
        let mut rng = ChaCha20Rng::from_seed(vmm::seed::derive_key(seed, "run/composer"));
        commands.sort();
        let mut templates: Vec<String> = commands.iter().map(|c| c.template.clone()).collect();
        templates.dedup();
        let template = (!templates.is_empty())
            .then(|| templates[(rng.next_u64() % templates.len() as u64) as usize].clone());
        commands.retain(|c| Some(&c.template) == template.as_ref());
        Composer {
            template,
            commands,
            running: BTreeMap::new(),
            next_id: 0,
            phase: Phase::First,
            cursor: 0,
            singleton_done: false,
            max_parallel: max_parallel.max(1),
            rng,
            serial_waiting: None,
            offer_anytime: true,
        }
    }

    pub fn template(&self) -> Option<&str> {
        self.template.as_deref()
    }

    pub fn commands(&self) -> &[TestCommand] {
        &self.commands
    }

    /// True once the `first_` commands are done and drivers may begin.
    pub fn setup_done(&self) -> bool {
        self.phase != Phase::First
    }

    /// Whether any driver is still running (the runner's "driver hangs" check).
    pub fn drivers_running(&self) -> bool {
        self.running.values().any(|c| c.kind.is_driver())
    }

    fn of_kind(&self, kind: Kind) -> Vec<TestCommand> {
        self.commands
            .iter()
            .filter(|c| c.kind == kind)
            .cloned()
            .collect()
    }

    fn start(&mut self, command: TestCommand) -> Next {
        let id = self.next_id;
        self.next_id += 1;
        self.running.insert(id, command.clone());
        Next::Start { id, command }
    }

    /// A command ended.
    pub fn finished(&mut self, id: u64) {
        self.running.remove(&id);
    }

    /// The driver phase is over (the duration passed): start no new drivers.
    pub fn end_drivers(&mut self) {
        if matches!(self.phase, Phase::First | Phase::Drivers) {
            self.phase = Phase::Drain;
            self.serial_waiting = None;
        }
    }

    /// Commands to start now. Call after every change (start of run, a command
    /// finished, the driver phase ended) and now and then while drivers run, which is
    /// when `anytime_` commands get their chance.
    pub fn poll(&mut self) -> Vec<Next> {
        self.poll_inner(true)
    }

    /// [`Composer::poll`] without giving `anytime_` commands a chance this time: the
    /// runner offers that chance once per virtual second, not at every turn.
    pub fn poll_without_anytime(&mut self) -> Vec<Next> {
        self.poll_inner(false)
    }

    fn poll_inner(&mut self, offer_anytime: bool) -> Vec<Next> {
        self.offer_anytime = offer_anytime;
        let mut actions = Vec::new();
        loop {
            let phase = self.phase;
            let before = actions.len();
            match phase {
                Phase::First => self.once_each(Kind::First, Phase::Drivers, &mut actions),
                Phase::Drivers => self.drivers(&mut actions),
                Phase::Drain => {
                    if self.running.is_empty() {
                        self.phase = Phase::Finally;
                        self.cursor = 0;
                    }
                }
                Phase::Finally => self.once_each(Kind::Finally, Phase::Quiesce, &mut actions),
                Phase::Quiesce => {
                    actions.push(Next::StopFaults);
                    self.phase = Phase::Eventually;
                    self.cursor = 0;
                }
                Phase::Eventually => self.once_each(Kind::Eventually, Phase::Done, &mut actions),
                Phase::Done => {
                    actions.push(Next::Done);
                    return actions;
                }
            }
            let started = !self.running.is_empty() && actions.len() > before;
            if started || (self.phase == phase && actions.len() == before) {
                return actions; // wait for what runs, or for the driver phase to end
            }
        }
    }

    /// Runs each command of `kind` one after another, then moves to `next`.
    fn once_each(&mut self, kind: Kind, next: Phase, actions: &mut Vec<Next>) {
        if !self.running.is_empty() {
            return;
        }
        let list = self.of_kind(kind);
        if let Some(command) = list.get(self.cursor).cloned() {
            self.cursor += 1;
            let action = self.start(command);
            actions.push(action);
        } else {
            self.phase = next;
            self.cursor = 0;
        }
    }

    fn drivers(&mut self, actions: &mut Vec<Next>) {
        let singletons = self.of_kind(Kind::SingletonDriver);
        if !singletons.is_empty() {
            if !self.singleton_done {
                self.singleton_done = true;
                let pick =
                    singletons[(self.rng.next_u64() % singletons.len() as u64) as usize].clone();
                let action = self.start(pick);
                actions.push(action);
            } else if !self.drivers_running() {
                self.end_drivers();
            }
        } else {
            self.mixed_drivers(actions);
        }
        self.anytime(actions);
    }

    fn mixed_drivers(&mut self, actions: &mut Vec<Next>) {
        let count = |s: &Self, k: Kind| s.running.values().filter(|c| c.kind == k).count();
        if let Some(serial) = self.serial_waiting.clone() {
            if count(self, Kind::ParallelDriver) == 0 && count(self, Kind::SerialDriver) == 0 {
                self.serial_waiting = None;
                let action = self.start(serial);
                actions.push(action);
            }
            return;
        }
        if count(self, Kind::SerialDriver) > 0 {
            return;
        }
        let mut pool = self.of_kind(Kind::ParallelDriver);
        pool.extend(self.of_kind(Kind::SerialDriver));
        while !pool.is_empty() && count(self, Kind::ParallelDriver) < self.max_parallel {
            let pick = pool[(self.rng.next_u64() % pool.len() as u64) as usize].clone();
            if pick.kind == Kind::SerialDriver {
                if count(self, Kind::ParallelDriver) == 0 {
                    let action = self.start(pick);
                    actions.push(action);
                } else {
                    self.serial_waiting = Some(pick);
                }
                return;
            }
            let action = self.start(pick);
            actions.push(action);
        }
    }

    /// Each `anytime_` command that is not running starts with probability 1/4 per poll.
    fn anytime(&mut self, actions: &mut Vec<Next>) {
        if !self.offer_anytime {
            return;
        }
        for command in self.of_kind(Kind::Anytime) {
            if self.running.values().any(|c| *c == command) {
                continue;
            }
            if self.rng.next_u64().is_multiple_of(4) {
                let action = self.start(command);
                actions.push(action);
            }
        }
    }
}

/// A ChaCha stream as its [`vmm::seed::StreamState`], so a restored composer draws the
/// same numbers next.
mod rng_position {
    use rand_chacha::ChaCha20Rng;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use vmm::seed::StreamState;

    pub fn serialize<S: Serializer>(rng: &ChaCha20Rng, s: S) -> Result<S::Ok, S::Error> {
        StreamState::of(rng).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ChaCha20Rng, D::Error> {
        Ok(StreamState::deserialize(d)?.resume())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(names: &[&str]) -> String {
        names
            .iter()
            .map(|n| format!("{TEST_DIR}/main/{n}\n"))
            .collect()
    }

    fn names(actions: &[Next]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Next::Start { command, .. } => command.name().to_string(),
                Next::StopFaults => "<stop faults>".into(),
                Next::Done => "<done>".into(),
            })
            .collect()
    }

    fn ids(actions: &[Next]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Next::Start { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn discovery_keeps_known_prefixes_only() {
        let list = format!(
            "{}{TEST_DIR}/other/first_x\n/elsewhere/first_y\n{TEST_DIR}/main/sub/first_z\n",
            listing(&[
                "first_setup",
                "helper_lib.sh",
                "parallel_driver_add",
                "readme",
                "first_"
            ])
        );
        let found = discover("driver", &list);
        let got: Vec<_> = found
            .iter()
            .map(|c| (c.template.as_str(), c.name(), c.kind))
            .collect();
        assert_eq!(
            got,
            [
                ("main", "first_setup", Kind::First),
                ("main", "parallel_driver_add", Kind::ParallelDriver),
                ("other", "first_x", Kind::First)
            ]
        );
    }

    #[test]
    fn phases_run_in_the_antithesis_order() {
        let cmds = discover(
            "d",
            &listing(&[
                "eventually_check",
                "finally_verify",
                "first_a",
                "first_b",
                "serial_driver_s",
            ]),
        );
        let mut c = Composer::new(cmds, 1, 2);
        let a = c.poll();
        assert_eq!(names(&a), ["first_a"]);
        assert!(c.poll().is_empty(), "first_b waits for first_a");
        c.finished(ids(&a)[0]);
        let a = c.poll();
        assert_eq!(names(&a), ["first_b"]);
        c.finished(ids(&a)[0]);
        assert!(!c.setup_done());
        let a = c.poll();
        assert_eq!(names(&a), ["serial_driver_s"]);
        assert!(c.setup_done());
        c.finished(ids(&a)[0]);
        let a = c.poll();
        assert_eq!(
            names(&a),
            ["serial_driver_s"],
            "drivers repeat until the phase ends"
        );
        c.end_drivers();
        assert!(c.poll().is_empty(), "the running driver finishes first");
        c.finished(ids(&a)[0]);
        let a = c.poll();
        assert_eq!(names(&a), ["finally_verify"]);
        c.finished(ids(&a)[0]);
        let a = c.poll();
        assert_eq!(names(&a), ["<stop faults>", "eventually_check"]);
        c.finished(ids(&a)[0]);
        assert_eq!(names(&c.poll()), ["<done>"]);
    }

    #[test]
    fn serial_drivers_never_overlap_other_drivers() {
        let cmds = discover(
            "d",
            &listing(&["parallel_driver_p", "parallel_driver_q", "serial_driver_s"]),
        );
        let mut c = Composer::new(cmds, 7, 3);
        let mut running: Vec<(u64, Kind)> = Vec::new();
        for step in 0..500 {
            for a in c.poll() {
                if let Next::Start { id, command } = a {
                    running.push((id, command.kind));
                }
            }
            let serial = running.iter().filter(|r| r.1 == Kind::SerialDriver).count();
            let parallel = running
                .iter()
                .filter(|r| r.1 == Kind::ParallelDriver)
                .count();
            assert!(
                serial <= 1 && (serial == 0 || parallel == 0),
                "step {step}: {running:?}"
            );
            assert!(parallel <= 3);
            if !running.is_empty() {
                let (id, _) = running.remove(step % running.len());
                c.finished(id);
            }
        }
    }

    #[test]
    fn a_singleton_is_the_only_driver_and_runs_once() {
        let cmds = discover(
            "d",
            &listing(&["parallel_driver_p", "singleton_driver_one", "finally_f"]),
        );
        let mut c = Composer::new(cmds, 3, 3);
        let a = c.poll();
        assert_eq!(names(&a), ["singleton_driver_one"]);
        assert!(c.drivers_running());
        c.finished(ids(&a)[0]);
        assert_eq!(
            names(&c.poll()),
            ["finally_f"],
            "singleton done: the driver phase ends"
        );
    }

    #[test]
    fn anytime_runs_alongside_drivers_one_instance_each() {
        let cmds = discover("d", &listing(&["anytime_probe", "parallel_driver_p"]));
        let mut c = Composer::new(cmds, 11, 1);
        let mut probes = 0;
        for _ in 0..40 {
            let a = c.poll();
            probes += names(&a).iter().filter(|n| *n == "anytime_probe").count();
        }
        assert_eq!(probes, 1, "never a second instance while one runs");
    }

    #[test]
    fn the_seed_picks_the_template_and_the_mix() {
        let list = format!(
            "{}{TEST_DIR}/b/parallel_driver_b\n",
            listing(&["parallel_driver_x", "parallel_driver_y", "serial_driver_z"])
        );
        let pick = |seed| {
            let mut c = Composer::new(discover("d", &list), seed, 3);
            (c.template().map(String::from), names(&c.poll()))
        };
        assert_eq!(pick(5), pick(5));
        let templates: std::collections::BTreeSet<_> = (0..20).map(|s| pick(s).0).collect();
        assert_eq!(templates.len(), 2, "both templates get chosen across seeds");
        let mixes: std::collections::BTreeSet<_> = (0..20).map(|s| pick(s).1).collect();
        assert!(mixes.len() > 1);
    }

    #[test]
    fn no_commands_means_done_at_once() {
        let mut c = Composer::new(Vec::new(), 1, 3);
        assert_eq!(c.template(), None);
        assert!(
            c.poll().is_empty(),
            "no drivers: the phase lasts until the runner ends it"
        );
        c.end_drivers();
        assert_eq!(names(&c.poll()), ["<stop faults>", "<done>"]);
    }
}
