//! The runner's own state at a step boundary, saved in a run's snapshots (the `APP `
//! section of the World's snapshot file) so a replay resumes the orchestration exactly:
//! every service's life, the execs in flight, the composer with its RNG position, the
//! property tallies and the event numbering. What comes from the compose file (the
//! services' definitions) is rebuilt from it, not saved.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Purpose, Supervisor};
use crate::composer::{Composer, TestCommand};
use crate::properties::PropertyBook;
use crate::run::services::Life;

/// What the runner decided so far. The supervisor keeps it in one field, so a snapshot
/// is a clone of it and a field added here is saved without further code.
#[derive(Clone, Serialize, Deserialize)]
pub struct Orchestration {
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
}

#[derive(Serialize, Deserialize)]
pub struct RunnerState {
    services: Vec<ServiceState>,
    orchestration: Orchestration,
}

/// The part of a tracked service that changes during a run.
#[derive(Serialize, Deserialize)]
struct ServiceState {
    name: String,
    life: Life,
    started_at: Option<u64>,
    healthy: bool,
    health_failures: u32,
    next_health_at: Option<u64>,
    health_exec: Option<(u64, u64)>,
    last_health_output: String,
    last_health_failure: String,
}

impl Supervisor<'_> {
    /// Number of the next event this runner will record.
    pub fn next_event(&self) -> u64 {
        self.orch.seq
    }

    pub fn runner_state(&self) -> RunnerState {
        RunnerState {
            services: self
                .services
                .iter()
                .map(|s| ServiceState {
                    name: s.name().to_string(),
                    life: s.life.clone(),
                    started_at: s.started_at,
                    healthy: s.healthy,
                    health_failures: s.health_failures,
                    next_health_at: s.next_health_at,
                    health_exec: s.health_exec,
                    last_health_output: s.last_health_output.clone(),
                    last_health_failure: s.last_health_failure.clone(),
                })
                .collect(),
            orchestration: self.orch.clone(),
        }
    }

    /// Continues from `state`, saved by a supervisor of the same system.
    pub fn resume(&mut self, state: RunnerState) -> Result<(), String> {
        let ours: Vec<&str> = self.services.iter().map(|s| s.name()).collect();
        let saved: Vec<&str> = state.services.iter().map(|s| s.name.as_str()).collect();
        if ours != saved {
            return Err(format!(
                "the snapshot's services {saved:?} are not this system's {ours:?}"
            ));
        }
        for (s, saved) in self.services.iter_mut().zip(state.services) {
            s.life = saved.life;
            s.started_at = saved.started_at;
            s.healthy = saved.healthy;
            s.health_failures = saved.health_failures;
            s.next_health_at = saved.next_health_at;
            s.health_exec = saved.health_exec;
            s.last_health_output = saved.last_health_output;
            s.last_health_failure = saved.last_health_failure;
        }
        self.orch = state.orchestration;
        Ok(())
    }
}
