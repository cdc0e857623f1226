//! What a fault does to the World when it starts and when it ends, and the two ways to
//! add one while the world runs: [`World::inject`] (now) and [`World::schedule`] (at a
//! later world time). Planned, injected and scheduled faults all go through
//! `World::apply` at a world time, so each is the same `fault_applied` event and the same
//! trace decision whichever way it came.

use detvm_protocol::message::{encode_host, HostMessage};

use super::events::{EventKind, NodeChange, WORLD};
use super::faults::{self, Fault, PlanError};
use super::node::NodeState;
use super::span::Span;
use super::switch::Window;
use super::{Action, World, WorldError};
use crate::clock::VirtualTime;
use crate::trace::DecisionKind;

impl World {
    /// Applies `fault` now, at world time [`World::now`], as a planned fault due now is
    /// applied: its effect on the switch or the node, its end scheduled if it lasts, a
    /// `fault_applied` event (reported by the next [`World::run_until`]) and a decision
    /// in the world trace. A fault that does not fit this world (an unknown node, a
    /// negative duration) is refused before anything changes.
    pub fn inject(&mut self, fault: Fault) -> Result<(), WorldError> {
        self.check(&fault)?;
        self.apply(self.now, fault)
    }

    /// Queues `fault` for world time `at` (now or later): it is then applied exactly as
    /// if it had been in the plan for `at`. Faults due at the same time are applied in
    /// the order they were planned or scheduled.
    pub fn schedule(&mut self, at: VirtualTime, fault: Fault) -> Result<(), WorldError> {
        self.check(&fault)?;
        if at < self.now {
            let past = format!("{at} is before the world's time {}", self.now);
            return Err(WorldError::Fault(PlanError::new("at", past)));
        }
        self.queue.push(at, Action::Apply(fault));
        Ok(())
    }

    fn check(&self, fault: &Fault) -> Result<(), WorldError> {
        fault
            .validate(&self.node_names(), "fault")
            .map_err(WorldError::Fault)
    }

    fn indices(&self, names: &[String]) -> Vec<usize> {
        names.iter().filter_map(|n| self.index_of(n).ok()).collect()
    }

    /// The fault's node index, for a fault on one node.
    fn node_of(&self, fault: &Fault) -> Result<Option<usize>, WorldError> {
        fault.node().map(|n| self.index_of(n)).transpose()
    }

    fn fault_event(&mut self, t: VirtualTime, node: Option<usize>, kind: EventKind) {
        let name = node.map_or(WORLD.to_string(), |i| self.nodes[i].name.clone());
        self.record(
            DecisionKind::WorldFault,
            node.unwrap_or(usize::MAX >> 32),
            t,
            0,
            0,
        );
        self.emit(t, &name, kind);
    }

    /// Schedules the end of a lasting fault.
    fn end_after(&mut self, t: VirtualTime, after: Span, id: u64, fault: Fault) {
        self.queue.push(after.after(t), Action::End { id, fault });
    }

    /// Starts `fault` at world time `t`.
    pub(super) fn apply(&mut self, t: VirtualTime, fault: Fault) -> Result<(), WorldError> {
        let id = self.next_fault_id;
        self.next_fault_id += 1;
        let node = self.node_of(&fault)?;
        self.fault_event(
            t,
            node,
            EventKind::FaultApplied {
                fault: fault.clone(),
            },
        );
        match (&fault, node) {
            (
                Fault::Partition {
                    groups,
                    one_way,
                    duration,
                },
                _,
            ) => {
                let groups: Vec<Vec<usize>> = groups.iter().map(|g| self.indices(g)).collect();
                self.switch
                    .partition(id, &groups, self.nodes.len(), *one_way);
                if let Some(d) = duration {
                    self.end_after(t, *d, id, fault.clone());
                }
            }
            (Fault::Heal {}, _) => self.switch.heal(None),
            (Fault::Clog { nodes, duration }, _) => {
                for i in self.indices(nodes) {
                    self.switch.clog(i);
                }
                if let Some(d) = duration {
                    self.end_after(t, *d, id, fault.clone());
                }
            }
            (Fault::Unclog { nodes }, _) => self.unclog(t, nodes),
            (Fault::SwizzleClog { nodes, step }, _) => {
                let indices = self.indices(nodes);
                for (offset, node, clog) in
                    faults::swizzle_steps(&mut self.swizzle_rng, &indices, *step)
                {
                    self.queue
                        .push(offset.after(t), Action::SwizzleStep { node, clog });
                }
            }
            (
                Fault::Loss {
                    probability,
                    duration,
                }
                | Fault::Duplicate {
                    probability,
                    duration,
                }
                | Fault::Reorder {
                    probability,
                    duration,
                },
                _,
            ) => {
                self.switch
                    .set_window(window_of(&fault), id, Some(*probability));
                self.end_after(t, *duration, id, fault.clone());
            }
            (Fault::Pause { duration, .. }, Some(i)) => {
                if self.nodes[i].state == NodeState::Running {
                    self.nodes[i].state = NodeState::Paused;
                    self.state_change(i, t, NodeChange::Paused);
                    self.end_after(t, *duration, id, fault.clone());
                }
            }
            (Fault::Kill { restart_after, .. }, Some(i)) => {
                if self.nodes[i].vm.is_some() && self.nodes[i].state != NodeState::Killed {
                    self.nodes[i].flush_line(t, &mut self.pending);
                    self.take_down(i, t, true)?;
                    self.nodes[i].state = NodeState::Killed;
                    self.state_change(i, t, NodeChange::Killed);
                    if let Some(d) = restart_after {
                        self.end_after(t, *d, id, fault.clone());
                    }
                }
            }
            (Fault::Restart { .. }, Some(i)) => self.restart(t, i)?,
            (Fault::ClockStep { delta, .. }, Some(i)) => {
                self.nodes[i].wall_steps_ns += delta.as_nanos();
                if let Some(vm) = self.nodes[i].vm.as_mut() {
                    vm.step_wall_clock(delta.as_nanos());
                    let step = HostMessage::StepClock {
                        delta_ns: delta.as_nanos(),
                    };
                    if let (Some(console), Ok(bytes)) =
                        (vm.virtio().console_mut(), encode_host(&step))
                    {
                        console.push_input(&bytes);
                    }
                }
            }
            (Fault::ClockSkew { ppm, duration, .. }, Some(i)) => {
                self.nodes[i].clock.rebase(t, *ppm);
                if let Some(d) = duration {
                    self.end_after(t, *d, id, fault.clone());
                }
            }
            // Every fault on one node has its node (`Fault::node`).
            (_, None) => {}
        }
        Ok(())
    }

    /// Ends lasting fault `id` at world time `t`.
    pub(super) fn end(&mut self, t: VirtualTime, id: u64, fault: Fault) -> Result<(), WorldError> {
        let node = self.node_of(&fault)?;
        self.fault_event(
            t,
            node,
            EventKind::FaultHealed {
                fault: fault.clone(),
            },
        );
        match (&fault, node) {
            (Fault::Partition { .. }, _) => self.switch.heal(Some(id)),
            (Fault::Clog { nodes, .. }, _) => self.unclog(t, nodes),
            (Fault::Loss { .. } | Fault::Duplicate { .. } | Fault::Reorder { .. }, _) => {
                self.switch.set_window(window_of(&fault), id, None)
            }
            (Fault::Pause { .. }, Some(i)) => {
                let n = &mut self.nodes[i];
                if n.state == NodeState::Paused {
                    n.state = NodeState::Running;
                    // Its clocks kept running while it was stopped: timers fire late.
                    if let Some(vm) = n.vm.as_mut() {
                        vm.skip_to(n.clock.to_local(t));
                    }
                    self.state_change(i, t, NodeChange::Resumed);
                }
            }
            (Fault::Kill { .. }, Some(i)) => self.restart(t, i)?,
            (Fault::ClockSkew { .. }, Some(i)) => self.nodes[i].clock.rebase(t, 0),
            // The other faults do not last: nothing schedules their end.
            _ => {}
        }
        Ok(())
    }

    fn unclog(&mut self, t: VirtualTime, nodes: &[String]) {
        for i in self.indices(nodes) {
            for held in self.switch.unclog(i) {
                // Judged again now: it may meet a partition or loss on its way.
                self.route_again(t, held);
            }
        }
    }

    fn restart(&mut self, t: VirtualTime, i: usize) -> Result<(), WorldError> {
        match self.nodes[i].state {
            NodeState::Killed => {}
            NodeState::Stopped => self.take_down(i, t, false)?,
            NodeState::Running | NodeState::Paused => return Ok(()),
        }
        self.boot(i, t, NodeChange::Restarted)
    }
}

fn window_of(fault: &Fault) -> Window {
    match fault {
        Fault::Duplicate { .. } => Window::Duplicate,
        Fault::Reorder { .. } => Window::Reorder,
        _ => Window::Loss,
    }
}

#[cfg(test)]
mod tests;
