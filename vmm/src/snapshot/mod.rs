//! Snapshots of one VM ([`VmSnapshot`]): its guest RAM, frozen copy-on-write
//! ([`MemoryImage`]), and everything else as plain state. A whole World's snapshot and its
//! file format build on these in `world::snapshot`. See docs/snapshots.md.
//!
//! A snapshot is taken only between steps (after `Vm::run` or `World::run_until`
//! returned), never inside an instruction, so it is a decision point by construction.
//! Plain serde state lives apart from the host resources (guest RAM, disk images),
//! which come back as arguments at restore (Firecracker's split).

mod memory;
mod vm;

use serde::{Deserialize, Serialize};

pub use memory::MemoryImage;

use crate::clock::{TimeModel, VirtualTime};
use crate::devices::platform::PlatformState;
use crate::devices::virtio::VirtioDevicesState;
use crate::machine::{CpuState, Stats};
use crate::seed::StreamState;
use crate::trace::TraceHash;
use crate::vcpu::VcpuState;

/// One VM at a decision point: its RAM and everything else as plain state.
#[derive(Clone)]
pub struct VmSnapshot {
    pub memory: MemoryImage,
    pub state: VmState,
}

/// Everything of a VM except guest RAM, serde-able.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmState {
    pub memory_size: u64,
    pub vcpus: Vec<VcpuState>,
    pub cpu_state: Vec<CpuState>,
    pub platform: PlatformState,
    pub virtio: VirtioDevicesState,
    pub now: VirtualTime,
    pub time: TimeModel,
    pub max_quantum: u64,
    pub quantum_rng: StreamState,
    pub trace: TraceHash,
    pub stats: Stats,
    pub next_cpu: usize,
    /// The seed the VM's devices were built from (its boot seed, or a fork's).
    pub seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
    #[error("vCPU {vcpu}: {source}")]
    Vcpu {
        vcpu: usize,
        source: crate::vcpu::VcpuError,
    },
    #[error("restoring the virtio devices: {0}")]
    Virtio(#[from] crate::devices::virtio::RestoreError),
    #[error("the snapshot does not fit this configuration: {0}")]
    Mismatch(String),
    #[error("{path}: {what}")]
    File { path: String, what: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}
