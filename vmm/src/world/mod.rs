//! The World: many VMs on one virtual timeline, a deterministic network between their
//! virtio-net devices, and faults (DESIGN points 7 and 8, "Faults"). See docs/world.md.
//!
//! One VM runs at a time. [`scheduler`] picks the VM that can act earliest in world
//! time and how far it may run; frames it sent are judged by the [`switch`] and queued
//! as deliveries (`routing`) in the one [`events::EventQueue`], with the faults of the
//! plan or added at run time ([`World::inject`], [`World::schedule`]; their effects are
//! in `fault_effects`) and host input. Each VM keeps its own local time, mapped to world
//! time by its [`clock_map::ClockMap`] (skew, restarts). Every decision folds into a
//! world trace hash; [`World::trace_value`] combines it with every VM's own.
//!
//! All state is plain data plus the VMs (no threads, no host time, no hash-map order),
//! so a [`snapshot`] saves the queue, the switch and the RNG states beside each VM's
//! snapshot.

pub mod clock_map;
pub mod config;
pub mod events;
mod fault_effects;
pub mod faults;
mod node;
mod quiesce;
mod routing;
pub mod scheduler;
pub mod snapshot;
pub mod span;
pub mod switch;

use detvm_protocol::message::{encode_host, HostMessage};
use rand_chacha::ChaCha20Rng;

pub use config::{NetworkConfig, NodeConfig, WorldConfig, WorldError};
pub use events::{DropReason, EventKind, FrameAction, NodeChange, WorldEvent};
pub use faults::{Fault, FaultPlan, PlanError, ScheduledFault};
pub use node::{node_mac, NodeState};
pub use span::Span;

use crate::clock::VirtualTime;
use crate::machine::{Outcome, Vm};
use crate::seed;
use crate::trace::{Decision, DecisionKind, TraceHash};
use events::{EventQueue, WORLD};
use node::Node;
use scheduler::NodeView;
use switch::Switch;

/// The longest one VM runs in one go even when nothing else could interrupt it, so
/// console lines are stamped within this much of when they were printed.
const MAX_CHUNK_NS: u64 = 1_000_000;
/// Decisions between world trace checkpoints.
const TRACE_EVERY: u64 = 1_000;

/// How [`World::run_until`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorldOutcome {
    /// The requested time was reached.
    TimeLimit,
    /// Every node is stopped or killed and nothing is queued that could change that.
    AllStopped,
}

/// Counters for benchmarks and summaries.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorldStats {
    /// `Vm::run` calls.
    pub chunks: u64,
    pub frames_sent: u64,
    pub frames_delivered: u64,
    pub frames_dropped: u64,
}

/// A queued happening, addressed to one node or (faults) to the whole world.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum Action {
    Apply(Fault),
    /// The end of fault `id` (a lasting partition, clog, window, pause, kill, skew).
    End {
        id: u64,
        fault: Fault,
    },
    SwizzleStep {
        node: usize,
        clog: bool,
    },
    Deliver {
        from: usize,
        to: usize,
        frame: Vec<u8>,
    },
    HostInput {
        node: usize,
        bytes: Vec<u8>,
    },
}

impl Action {
    fn target(&self) -> Option<usize> {
        match self {
            Action::Deliver { to, .. } => Some(*to),
            Action::HostInput { node, .. } => Some(*node),
            _ => None,
        }
    }
}

pub struct World {
    seed: u64,
    nodes: Vec<Node>,
    switch: Switch,
    queue: EventQueue<Action>,
    plan: FaultPlan,
    now: VirtualTime,
    trace: TraceHash,
    next_fault_id: u64,
    swizzle_rng: ChaCha20Rng,
    pending: Vec<WorldEvent>,
    stats: WorldStats,
}

impl World {
    /// Validates the configuration and the plan, boots every VM (at world time 0) and
    /// queues the plan's faults.
    pub fn new(config: WorldConfig) -> Result<World, WorldError> {
        let names: Vec<String> = config.nodes.iter().map(|n| n.name.clone()).collect();
        for (i, name) in names.iter().enumerate() {
            let bad = |msg: &str| PlanError::new(format!("nodes[{i}].name"), msg);
            if name.is_empty() || name == WORLD {
                return Err(bad(&format!("{name:?} is not a usable node name")).into());
            }
            if names[..i].contains(name) {
                return Err(bad(&format!("{name:?} names two nodes")).into());
            }
        }
        config.network.validate()?;
        config.faults.validate(&names)?;
        tracing::info!(seed = config.seed, "world plan:\n{}", config.faults);

        let mut world = World {
            seed: config.seed,
            nodes: Vec::new(),
            switch: Switch::new(config.seed, config.network),
            queue: EventQueue::default(),
            plan: config.faults.clone(),
            now: VirtualTime::ZERO,
            trace: TraceHash::new(TRACE_EVERY),
            next_fault_id: 0,
            swizzle_rng: seed::stream(config.seed, "world/faults/swizzle"),
            pending: Vec::new(),
            stats: WorldStats::default(),
        };
        for (i, n) in config.nodes.into_iter().enumerate() {
            world.nodes.push(Node::new(i, n.name, n.vm));
            world.boot(i, VirtualTime::ZERO, NodeChange::Booted)?;
        }
        for f in config.faults.faults {
            world
                .queue
                .push(VirtualTime(f.at.nanos_u64()), Action::Apply(f.fault));
        }
        Ok(world)
    }

    /// The time up to which the world has been simulated.
    pub fn now(&self) -> VirtualTime {
        self.now
    }

    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    pub fn stats(&self) -> &WorldStats {
        &self.stats
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    pub fn node_state(&self, node: &str) -> Option<NodeState> {
        self.nodes.iter().find(|n| n.name == node).map(|n| n.state)
    }

    /// The node's current VM (absent while it is killed), e.g. to inspect its disks.
    pub fn vm_mut(&mut self, node: &str) -> Option<&mut Vm> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == node)
            .and_then(|n| n.vm.as_mut())
    }

    /// The world's own trace (scheduling, deliveries, drops, faults), with checkpoints
    /// for [`crate::trace::first_divergence`].
    pub fn trace(&self) -> &TraceHash {
        &self.trace
    }

    /// Trace hashes of every boot of `node`, oldest first.
    pub fn node_traces(&self, node: &str) -> Vec<u64> {
        self.nodes
            .iter()
            .find(|n| n.name == node)
            .map(|n| n.trace_values().collect())
            .unwrap_or_default()
    }

    /// One value for the whole run: the world trace and every VM's, every boot.
    pub fn trace_value(&self) -> u64 {
        let mut h = TraceHash::new(0);
        let mut fold = |v: u64| {
            h.record(Decision {
                kind: DecisionKind::WorldState,
                vcpu: 0,
                rip: 0,
                time: VirtualTime::ZERO,
                instructions: 0,
                detail: v,
            })
        };
        fold(self.trace.value());
        for n in &self.nodes {
            n.trace_values().for_each(&mut fold);
        }
        h.value()
    }

    /// Sends a message to `node`'s agent over its virtio console; it arrives at the
    /// current world time, when the next [`World::run_until`] starts.
    pub fn send(&mut self, node: &str, message: &HostMessage) -> Result<(), WorldError> {
        let index = self.index_of(node)?;
        let bytes = encode_host(message).map_err(|e| WorldError::Send {
            node: node.to_string(),
            message: e.to_string(),
        })?;
        self.queue
            .push(self.now, Action::HostInput { node: index, bytes });
        Ok(())
    }

    fn index_of(&self, node: &str) -> Result<usize, WorldError> {
        self.nodes
            .iter()
            .position(|n| n.name == node)
            .ok_or_else(|| WorldError::UnknownNode(node.to_string()))
    }

    /// Runs the world until every event before `until` has happened and every running
    /// VM has reached `until`, reporting events in order. Call again with a later time
    /// to go on.
    pub fn run_until(
        &mut self,
        until: VirtualTime,
        on_event: &mut dyn FnMut(WorldEvent),
    ) -> Result<WorldOutcome, WorldError> {
        let lookahead = self.switch.config().min_latency.nanos_u64();
        loop {
            self.pending.drain(..).for_each(&mut *on_event);
            let views = self.views();
            let next_event = self.queue.peek_time().filter(|t| *t < until);
            let candidate = scheduler::pick(&views).filter(|(_, t)| *t < until);
            match (next_event, candidate) {
                (Some(te), c) if c.is_none_or(|(_, tc)| te <= tc) => {
                    let (t, action) = self.queue.pop().expect("peeked");
                    self.process(t, action)?;
                }
                (_, Some((i, tc))) => {
                    let mut limit = until
                        .min(scheduler::horizon(&views, i, lookahead))
                        .min(tc.saturating_add(MAX_CHUNK_NS));
                    if let Some(t) = views[i].next_event {
                        limit = limit.min(t);
                    }
                    if let Some(t) = self.next_global_event() {
                        limit = limit.min(t);
                    }
                    self.run_node(i, limit)?;
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
        self.pending.drain(..).for_each(&mut *on_event);
        let idle = self
            .nodes
            .iter()
            .all(|n| matches!(n.state, NodeState::Stopped | NodeState::Killed));
        Ok(if idle && self.queue.is_empty() {
            WorldOutcome::AllStopped
        } else {
            WorldOutcome::TimeLimit
        })
    }

    /// What the scheduler needs about every node, in world time.
    fn views(&mut self) -> Vec<NodeView> {
        let mut views: Vec<NodeView> = self
            .nodes
            .iter_mut()
            .map(|n| {
                let next_run = match (&mut n.vm, n.state) {
                    (Some(vm), NodeState::Running) => vm.next_wake().map(|w| n.clock.to_world(w)),
                    _ => None,
                };
                NodeView {
                    next_run,
                    next_event: None,
                }
            })
            .collect();
        let mut missing = views.len();
        for (t, action) in self.queue.iter() {
            if let Some(i) = action.target() {
                if views[i].next_event.is_none() {
                    views[i].next_event = Some(t);
                    missing -= 1;
                    if missing == 0 {
                        break;
                    }
                }
            }
        }
        views
    }

    /// The earliest queued event that concerns the whole world (a fault step).
    fn next_global_event(&self) -> Option<VirtualTime> {
        self.queue
            .iter()
            .find(|(_, a)| a.target().is_none())
            .map(|(t, _)| t)
    }

    fn record(&mut self, kind: DecisionKind, node: usize, time: VirtualTime, a: u64, b: u64) {
        self.trace.record(Decision {
            kind,
            vcpu: node as u32,
            rip: 0,
            time,
            instructions: a,
            detail: b,
        });
    }

    fn emit(&mut self, time: VirtualTime, node: &str, kind: EventKind) {
        self.pending.push(WorldEvent {
            time,
            node: node.to_string(),
            kind,
        });
    }

    fn state_change(&mut self, i: usize, time: VirtualTime, change: NodeChange) {
        self.record(DecisionKind::WorldState, i, time, 0, 0);
        let name = self.nodes[i].name.clone();
        self.emit(time, &name, EventKind::State { state: change });
    }

    fn vm_error(&self, i: usize, time: VirtualTime, source: crate::machine::VmError) -> WorldError {
        WorldError::Vm {
            node: self.nodes[i].name.clone(),
            time,
            source,
        }
    }

    fn boot(&mut self, i: usize, at: VirtualTime, change: NodeChange) -> Result<(), WorldError> {
        let seed = self.seed;
        self.nodes[i]
            .boot(seed, at)
            .map_err(|e| self.vm_error(i, at, e))?;
        self.state_change(i, at, change);
        Ok(())
    }

    /// Runs node `i` up to world time `limit`, then handles what it produced.
    fn run_node(&mut self, i: usize, limit: VirtualTime) -> Result<(), WorldError> {
        let node = &mut self.nodes[i];
        let Some(vm) = node.vm.as_mut() else {
            return Ok(());
        };
        let mut serial = Vec::new();
        let start = node.clock.to_world(vm.now());
        let outcome = vm.run(node.clock.to_local(limit), &mut |b| {
            serial.extend_from_slice(b)
        });
        let outcome = outcome.map_err(|e| self.vm_error(i, start, e))?;
        let node = &mut self.nodes[i];
        let vm = node.vm.as_mut().expect("ran above");
        let end = node.clock.to_world(vm.now());
        let frames = vm
            .virtio()
            .net_mut()
            .map(|n| n.take_tx_frames())
            .unwrap_or_default();
        let halted_for_good = vm.halted_for_good();
        node.collect_output(end, &serial, &mut self.pending);
        self.stats.chunks += 1;
        self.record(DecisionKind::WorldRun, i, end, start.as_nanos(), 0);
        for frame in frames {
            self.send_frame(end, i, frame);
        }
        let stop = |w: &mut World, change| {
            w.nodes[i].flush_line(end, &mut w.pending);
            w.nodes[i].state = NodeState::Stopped;
            w.state_change(i, end, change);
        };
        match outcome {
            Outcome::TimeLimit => {}
            // No timer left: an idle guest waits for a frame (not a stop).
            Outcome::Halted if !halted_for_good => {}
            Outcome::Halted => stop(self, NodeChange::Halted),
            Outcome::PowerOff => stop(self, NodeChange::PoweredOff),
            Outcome::TripleFault { vcpu, rip } => stop(self, NodeChange::TripleFault { vcpu, rip }),
            Outcome::Reset => {
                self.nodes[i].flush_line(end, &mut self.pending);
                self.take_down(i, end, false)?;
                self.boot(i, end, NodeChange::Rebooted)?;
            }
        }
        Ok(())
    }

    fn take_down(&mut self, i: usize, time: VirtualTime, crash: bool) -> Result<(), WorldError> {
        let seed = self.seed;
        self.nodes[i]
            .take_down(seed, crash)
            .map_err(|message| WorldError::Restart {
                node: self.nodes[i].name.clone(),
                time,
                message,
            })
    }

    fn process(&mut self, t: VirtualTime, action: Action) -> Result<(), WorldError> {
        match action {
            Action::Deliver { from, to, frame } => self.deliver(t, from, to, frame),
            Action::HostInput { node, bytes } => {
                let n = &mut self.nodes[node];
                if let Some(vm) = n.vm.as_mut() {
                    if n.state == NodeState::Running {
                        vm.skip_to(n.clock.to_local(t));
                    }
                    if let Some(console) = vm.virtio().console_mut() {
                        console.push_input(&bytes);
                    }
                }
                Ok(())
            }
            Action::Apply(fault) => self.apply(t, fault),
            Action::End { id, fault } => self.end(t, id, fault),
            Action::SwizzleStep { node, clog } => {
                let nodes = vec![self.nodes[node].name.clone()];
                if clog {
                    self.apply(
                        t,
                        Fault::Clog {
                            nodes,
                            duration: None,
                        },
                    )
                } else {
                    self.apply(t, Fault::Unclog { nodes })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
