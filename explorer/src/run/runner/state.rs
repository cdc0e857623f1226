//! The runner's own state at a step boundary, saved in a run's snapshots (the `APP `
//! section of the World's snapshot file) so a replay resumes the orchestration exactly:
//! every service's life, the execs in flight, the composer with its RNG position, the
//! property tallies and the event numbering. What comes from the compose file (the
//! services' definitions) is rebuilt from it, not saved.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Purpose, Runner};
use crate::properties::PropertyBook;
use crate::run::services::ServiceState;
use crate::test_composer::{Composer, TestCommand};

/// What the runner decided so far. The runner keeps it in one field, so a snapshot
/// is a clone of it and a field added here is saved without further code.
#[derive(Clone, Serialize, Deserialize)]
pub struct RunnerState {
    pub book: PropertyBook,
    pub(super) seq: u64,
    pub(super) execs: BTreeMap<u64, Purpose>,
    pub(super) next_exec: u64,
    pub(super) composer: Option<Composer>,
    pub(super) discovered: Vec<TestCommand>,
    pub(super) discovery_sent: bool,
    pub(super) drivers_ended: bool,
    pub(super) next_anytime: u64,
    pub(super) setup_complete_at: Option<u64>,
    pub(super) faults_stopped: bool,
    /// Commands the composer started while their VM was down, waiting for it.
    #[serde(default)]
    pub(super) deferred: Vec<(u64, TestCommand)>,
    /// How each test command ended so far, by `template/name on service`.
    #[serde(default)]
    pub(super) commands: BTreeMap<String, super::CommandTally>,
}

/// A runner as a snapshot keeps it: each service's state by name, and the runner's.
#[derive(Clone, Serialize, Deserialize)]
pub struct SavedRunner {
    services: Vec<(String, ServiceState)>,
    runner: RunnerState,
}

impl Runner {
    /// Number of the next event this runner will record.
    pub fn next_event(&self) -> u64 {
        self.state.seq
    }

    pub fn save(&self) -> SavedRunner {
        SavedRunner {
            services: self
                .services
                .iter()
                .map(|s| (s.name().to_string(), s.state.clone()))
                .collect(),
            runner: self.state.clone(),
        }
    }

    /// Continues from `saved`, saved by a runner of the same system.
    pub fn resume(&mut self, saved: SavedRunner) -> Result<(), String> {
        let ours: Vec<&str> = self.services.iter().map(|s| s.name()).collect();
        let theirs: Vec<&str> = saved.services.iter().map(|(n, _)| n.as_str()).collect();
        if ours != theirs {
            return Err(format!(
                "the snapshot's services {theirs:?} are not this system's {ours:?}"
            ));
        }
        for (s, (_, state)) in self.services.iter_mut().zip(saved.services) {
            s.state = state;
        }
        self.state = saved.runner;
        Ok(())
    }
}
