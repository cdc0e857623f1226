//! How test commands end, and what a node going down does to the commands, health
//! checks and discoveries in flight on it. A command whose VM is killed, reset or
//! stopped ends at that moment "by a fault": not a failure of the system under test and
//! not a hang; its composer slot is freed so other drivers start. A command the
//! composer starts while its VM is down waits for the restart.

use serde::{Deserialize, Serialize};
use vmm::world::NodeChange;

use super::{Effect, Purpose, Runner};
use crate::run::services::Life;
use crate::store::StoredEvent;
use crate::test_composer::TestCommand;

/// How one test command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Exit code, signal or agent error.
    Failed(String),
    /// Its VM was killed, reset or stopped while it ran.
    EndedByFault(String),
}

/// How often one test command (template/name on a service) ended each way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandTally {
    pub command: String,
    pub service: String,
    pub succeeded: u64,
    pub failed: u64,
    pub ended_by_fault: u64,
}

impl Runner {
    /// A node's VM changed state: execs in flight there end when it goes down.
    pub(super) fn node_changed(&mut self, i: usize, now: u64, change: &NodeChange) {
        let why = match change {
            NodeChange::Killed => "its VM was killed",
            NodeChange::Rebooted => "its VM reset itself",
            NodeChange::PoweredOff | NodeChange::Halted | NodeChange::TripleFault { .. } => {
                "its VM stopped"
            }
            NodeChange::Restarted => {
                self.services[i].state.life = Life::Booting;
                return;
            }
            NodeChange::Booted | NodeChange::Paused | NodeChange::Resumed => return,
        };
        if *change == NodeChange::Killed {
            self.services[i].state.life = Life::Down;
        }
        let on_node: Vec<u64> = self
            .state
            .execs
            .iter()
            .filter(|(_, p)| self.purpose_service(p) == Some(i))
            .map(|(id, _)| *id)
            .collect();
        for id in on_node {
            let Some(purpose) = self.state.execs.remove(&id) else {
                continue;
            };
            match purpose {
                Purpose::Health { service } => {
                    // Not a failed check: the next one runs once the service is back.
                    self.services[service].state.health_exec = None;
                }
                Purpose::Discover { .. } => {
                    // Its test commands are not found; the others still run.
                    tracing::warn!(
                        "test command discovery on {} ended: {why}",
                        self.services[i].name()
                    );
                }
                Purpose::Command {
                    composer_id,
                    command,
                } => {
                    if let Some(c) = &mut self.state.composer {
                        c.finished(composer_id);
                    }
                    self.command_ended(id, &command, now, Outcome::EndedByFault(why.into()));
                }
            }
        }
    }

    fn purpose_service(&self, purpose: &Purpose) -> Option<usize> {
        match purpose {
            Purpose::Health { service } | Purpose::Discover { service, .. } => Some(*service),
            Purpose::Command { command, .. } => self.index_of(&command.service),
        }
    }

    /// Sends the commands that waited for their VM, once their service runs again.
    pub(super) fn start_deferred(&mut self, effects: &mut Vec<Effect>) {
        let waiting = std::mem::take(&mut self.state.deferred);
        for (composer_id, command) in waiting {
            match self.index_of(&command.service) {
                Some(service) if self.services[service].state.life == Life::Running => {
                    let argv = vec![command.path.clone()];
                    self.send_exec(
                        effects,
                        service,
                        argv,
                        Purpose::Command {
                            composer_id,
                            command,
                        },
                    );
                }
                _ => self.state.deferred.push((composer_id, command)),
            }
        }
    }

    /// Counts how a command ended and notes it in the run's events.
    pub(super) fn command_ended(
        &mut self,
        exec: u64,
        command: &TestCommand,
        now: u64,
        outcome: Outcome,
    ) {
        let label = format!("{}/{}", command.template, command.name());
        let key = format!("{label} on {}", command.service);
        let tally = self
            .state
            .commands
            .entry(key)
            .or_insert_with(|| CommandTally {
                command: label.clone(),
                service: command.service.clone(),
                ..CommandTally::default()
            });
        let (how, detail) = match outcome {
            Outcome::Succeeded => {
                tally.succeeded += 1;
                ("succeeded", None)
            }
            Outcome::Failed(why) => {
                tally.failed += 1;
                ("failed", Some(why))
            }
            Outcome::EndedByFault(why) => {
                tally.ended_by_fault += 1;
                ("ended_by_fault", Some(why))
            }
        };
        let mut body = serde_json::json!({
            "type": "command_ended",
            "command": label,
            "exec": exec,
            "outcome": how,
        });
        if let Some(d) = detail {
            body["detail"] = d.into();
        }
        self.notes.push(StoredEvent {
            seq: self.state.seq,
            vtime_ns: now,
            node: command.service.clone(),
            kind: "command_ended".into(),
            body,
        });
        self.state.seq += 1;
    }

    /// Events the runner itself adds to the run's stream (command endings), in order.
    pub fn take_notes(&mut self) -> Vec<StoredEvent> {
        std::mem::take(&mut self.notes)
    }

    /// Every command's tally, by command and service.
    pub fn command_tallies(&self) -> Vec<CommandTally> {
        self.state.commands.values().cloned().collect()
    }
}
