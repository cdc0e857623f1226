//! A whole World at a decision point (between two `run_until` calls): every node's VM,
//! the switch with its held frames, the event queue (frames in flight, planned faults,
//! host input), clock maps, every RNG position, fault ids, agent decoders and the events
//! not yet reported. `World::restore` continues it exactly; `World::fork` with a branch
//! continues it with new randomness. [`file`] writes and reads it on disk. See
//! docs/snapshots.md.

pub mod file;

use detvm_protocol::frame::Decoder;
use serde::{Deserialize, Serialize};

use super::clock_map::ClockMap;
use super::events::EventQueue;
use super::node::Node;
use super::switch::{Switch, SwitchState};
use super::{Action, FaultPlan, NodeState, World, WorldConfig, WorldEvent, WorldStats};
use crate::clock::VirtualTime;
use crate::devices::virtio::{VirtioDevices, VirtioDevicesState};
use crate::machine::{Vm, VmConfig};
use crate::persist::Persist;
use crate::seed::{self, StreamState};
use crate::snapshot::{MemoryImage, SnapshotError, VmSnapshot, VmState};
use crate::trace::TraceHash;

/// A World in memory: plain state plus each running node's frozen RAM and the node
/// configurations (host resources: kernel, disk images), so it restores on its own.
#[derive(Clone)]
pub struct WorldSnapshot {
    pub state: WorldState,
    /// Per node, its VM's RAM (None while the node has no VM, e.g. killed).
    pub memory: Vec<Option<MemoryImage>>,
    pub configs: Vec<VmConfig>,
}

/// Everything of a World except guest RAM and host resources, serde-able.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorldState {
    pub seed: u64,
    pub now: VirtualTime,
    pub nodes: Vec<NodeSnapshot>,
    pub switch: SwitchState,
    pub(crate) queue: Vec<(VirtualTime, u64, Action)>,
    pub next_seq: u64,
    pub plan: FaultPlan,
    pub trace: TraceHash,
    pub next_fault_id: u64,
    pub swizzle_rng: StreamState,
    /// Events produced but not yet handed to a `run_until` caller.
    pub pending: Vec<WorldEvent>,
    pub stats: WorldStats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSnapshot {
    pub name: String,
    pub vm: Option<VmState>,
    pub state: NodeState,
    pub clock: ClockMap,
    pub boots: u32,
    /// Devices kept across a kill for the next boot.
    pub carried: Option<VirtioDevicesState>,
    /// The seed the carried devices were built with (a restore does not need it: their
    /// states hold their streams).
    pub carried_seed: u64,
    pub past_traces: Vec<u64>,
    #[serde(default)]
    pub wall_steps_ns: i64,
    pub serial_line: Vec<u8>,
    /// Agent-channel bytes not yet decoded into a message.
    pub agent_buffer: Vec<u8>,
}

/// The world seed of branch `branch` forked from a world seeded `seed`.
pub fn branch_seed(seed: u64, branch: u64) -> u64 {
    use rand_chacha::rand_core::Rng;
    seed::stream(seed, &format!("world/fork/{branch}")).next_u64()
}

impl World {
    /// Captures the world between two [`World::run_until`] calls. The world goes on
    /// unchanged (its guest RAM becomes copy-on-write, see `GuestRam::freeze`).
    pub fn snapshot(&mut self) -> Result<WorldSnapshot, SnapshotError> {
        let mut nodes = Vec::with_capacity(self.nodes.len());
        let mut memory = Vec::with_capacity(self.nodes.len());
        for n in &mut self.nodes {
            let vm = match n.vm.as_mut() {
                Some(vm) => {
                    let VmSnapshot { memory: m, state } = vm.snapshot()?;
                    memory.push(Some(m));
                    Some(state)
                }
                None => {
                    memory.push(None);
                    None
                }
            };
            nodes.push(NodeSnapshot {
                name: n.name.clone(),
                vm,
                state: n.state,
                clock: n.clock,
                boots: n.boots,
                carried: n.carried.as_ref().map(VirtioDevices::state),
                carried_seed: Node::boot_seed(self.seed, &n.name, n.boots),
                past_traces: n.past_traces.clone(),
                wall_steps_ns: n.wall_steps_ns,
                serial_line: n.serial_line.clone(),
                agent_buffer: n.agent.buffered().to_vec(),
            });
        }
        let (queue, next_seq) = self.queue.entries();
        Ok(WorldSnapshot {
            state: WorldState {
                seed: self.seed,
                now: self.now,
                nodes,
                switch: self.switch.state(),
                queue,
                next_seq,
                plan: self.plan.clone(),
                trace: self.trace.clone(),
                next_fault_id: self.next_fault_id,
                swizzle_rng: StreamState::of(&self.swizzle_rng),
                pending: self.pending.clone(),
                stats: self.stats.clone(),
            },
            memory,
            configs: self.nodes.iter().map(|n| n.config.clone()).collect(),
        })
    }

    /// A world that continues exactly where `snap` was taken (replay: same streams).
    pub fn restore(snap: &WorldSnapshot) -> Result<World, SnapshotError> {
        Self::fork(snap, None)
    }

    /// A world from `snap`. `branch: None` replays (same streams, same future);
    /// `Some(b)` continues from the same state with the world seed
    /// [`branch_seed`]`(seed, b)`: the network streams (latency, loss, duplicate,
    /// reorder), the swizzle-clog stream, every running VM's vCPU-quantum and
    /// virtio-rng streams, carried devices and every later boot are seeded from it.
    /// Guest memory (the kernels' own entropy pools) and queued events stay as they were.
    pub fn fork(snap: &WorldSnapshot, branch: Option<u64>) -> Result<World, SnapshotError> {
        let s = &snap.state;
        if snap.memory.len() != s.nodes.len() || snap.configs.len() != s.nodes.len() {
            return Err(SnapshotError::Mismatch(format!(
                "{} nodes, {} memory images, {} configurations",
                s.nodes.len(),
                snap.memory.len(),
                snap.configs.len()
            )));
        }
        let mut nodes = Vec::with_capacity(s.nodes.len());
        for ((n, memory), config) in s.nodes.iter().zip(&snap.memory).zip(&snap.configs) {
            let vm = match (&n.vm, memory) {
                (Some(state), Some(memory)) => Some(Vm::restore(
                    config,
                    &VmSnapshot {
                        memory: memory.clone(),
                        state: state.clone(),
                    },
                )?),
                (None, None) => None,
                _ => {
                    return Err(SnapshotError::Mismatch(format!(
                        "node {}: VM state and memory image disagree",
                        n.name
                    )))
                }
            };
            nodes.push(Self::restore_node(n, config, vm)?);
        }
        let mut world = World {
            seed: s.seed,
            nodes,
            switch: Switch::from_state(&s.switch),
            queue: EventQueue::from_entries(&s.queue, s.next_seq),
            plan: s.plan.clone(),
            now: s.now,
            trace: s.trace.clone(),
            next_fault_id: s.next_fault_id,
            swizzle_rng: s.swizzle_rng.resume(),
            pending: s.pending.clone(),
            stats: s.stats.clone(),
        };
        if let Some(b) = branch {
            world.reseed(branch_seed(s.seed, b));
        }
        Ok(world)
    }

    /// Node `n` around its restored VM; carried devices reopen their disks from `config`.
    fn restore_node(
        n: &NodeSnapshot,
        config: &VmConfig,
        vm: Option<Vm>,
    ) -> Result<Node, SnapshotError> {
        let carried = match &n.carried {
            Some(state) => Some(VirtioDevices::restore(&config.devices, state)?),
            None => None,
        };
        let mut agent = Decoder::new();
        agent.push(&n.agent_buffer);
        Ok(Node {
            name: n.name.clone(),
            config: config.clone(),
            vm,
            state: n.state,
            clock: n.clock,
            boots: n.boots,
            carried,
            past_traces: n.past_traces.clone(),
            wall_steps_ns: n.wall_steps_ns,
            serial_line: n.serial_line.clone(),
            agent,
        })
    }

    /// Every stream named in [`World::fork`] restarts from `seed`.
    fn reseed(&mut self, seed: u64) {
        self.seed = seed;
        self.switch.reseed(seed);
        self.swizzle_rng = seed::stream(seed, "world/faults/swizzle");
        for n in &mut self.nodes {
            let vm_seed = Node::boot_seed(seed, &n.name, n.boots);
            if let Some(vm) = n.vm.as_mut() {
                vm.reseed(vm_seed);
            }
            if let Some(devices) = n.carried.as_mut() {
                devices.reseed_rng(vm_seed);
            }
        }
    }

    /// Frames on their way now: queued deliveries plus frames a clog holds.
    pub fn frames_in_flight(&self) -> usize {
        let queued = self
            .queue
            .iter()
            .filter(|(_, a)| matches!(a, Action::Deliver { .. }))
            .count();
        queued + self.switch.held_frames()
    }

    /// The world seed (a fork's is derived from its parent's and the branch).
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

impl WorldSnapshot {
    /// The node configurations a world built from `config` has (each node's MAC set as
    /// `World::new` sets it), for restoring state loaded from a file.
    pub fn node_configs(config: &WorldConfig) -> Vec<VmConfig> {
        config
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| Node::new(i, n.name.clone(), n.vm.clone()).config)
            .collect()
    }

    pub fn now(&self) -> VirtualTime {
        self.state.now
    }

    /// Frames on their way: queued deliveries plus frames a clog holds.
    pub fn frames_in_flight(&self) -> usize {
        let queued = self
            .state
            .queue
            .iter()
            .filter(|(_, _, a)| matches!(a, Action::Deliver { .. }))
            .count();
        queued + self.state.switch.held.len()
    }
}
