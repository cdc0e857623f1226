//! `Vm::snapshot` and `Vm::restore`: one VM at a decision point.

use super::{MemoryImage, SnapshotError, VmSnapshot, VmState};
use crate::backend;
use crate::devices::platform::Platform;
use crate::devices::virtio::VirtioDevices;
use crate::machine::{mmio_ranges, Vm, VmConfig};
use crate::memory::GuestRam;
use crate::persist::Persist;
use crate::seed::{self, StreamState};

impl Vm {
    /// Captures the VM between two [`Vm::run`] calls. Guest RAM is frozen, not copied
    /// (see [`GuestRam::freeze`]); the VM goes on unchanged.
    pub fn snapshot(&mut self) -> Result<VmSnapshot, SnapshotError> {
        // vCPU state first: a backend without snapshots fails before RAM is frozen.
        let state = self.state()?;
        let memory = MemoryImage::capture(&mut self.ram)?;
        Ok(VmSnapshot { memory, state })
    }

    /// Everything but guest RAM.
    pub fn state(&self) -> Result<VmState, SnapshotError> {
        let vcpus = self
            .vcpus
            .iter()
            .enumerate()
            .map(|(vcpu, v)| {
                v.save_state()
                    .map_err(|source| SnapshotError::Vcpu { vcpu, source })
            })
            .collect::<Result<_, _>>()?;
        Ok(VmState {
            memory_size: self.ram.size(),
            vcpus,
            cpu_state: self.cpu_state.clone(),
            platform: self.platform.state(),
            virtio: self.virtio.state(),
            now: self.now,
            time: self.time,
            max_quantum: self.max_quantum,
            quantum_rng: StreamState::of(&self.quantum_rng),
            trace: self.trace.clone(),
            stats: self.stats.clone(),
            next_cpu: self.next_cpu,
            seed: self.config.seed,
        })
    }

    /// A new VM that continues exactly where `snapshot` was taken. `config` must be the
    /// one the snapshotted VM was built from: it supplies the backend and the host
    /// resources (disk images); its `seed` is ignored for the snapshot's.
    pub fn restore(config: &VmConfig, snapshot: &VmSnapshot) -> Result<Vm, SnapshotError> {
        let ram = snapshot.memory.restore()?;
        Self::restore_with_ram(config, ram, &snapshot.state)
    }

    /// [`Vm::restore`] onto RAM that already holds the snapshot's contents.
    pub fn restore_with_ram(
        config: &VmConfig,
        ram: GuestRam,
        state: &VmState,
    ) -> Result<Vm, SnapshotError> {
        let mismatch = |what: String| SnapshotError::Mismatch(what);
        if state.memory_size != config.memory || ram.size() != config.memory {
            return Err(mismatch(format!(
                "the snapshot has {} MiB of guest memory, the configuration {} MiB",
                state.memory_size >> 20,
                config.memory >> 20
            )));
        }
        let n = state.vcpus.len();
        if n != usize::from(config.vcpus) || state.cpu_state.len() != n || n == 0 {
            return Err(mismatch(format!(
                "the snapshot has {n} vCPUs, the configuration {}",
                config.vcpus
            )));
        }
        let mut config = config.clone();
        config.seed = state.seed;
        let virtio = VirtioDevices::restore(&config.devices, &state.virtio)?;
        let vcpu_err = |vcpu, source| SnapshotError::Vcpu { vcpu, source };
        let mut vcpus =
            backend::create_vcpus(config.backend, &ram, &mmio_ranges(&virtio), config.vcpus)
                .map_err(|e| vcpu_err(0, e))?;
        for (i, (vcpu, saved)) in vcpus.iter_mut().zip(&state.vcpus).enumerate() {
            vcpu.restore_state(saved).map_err(|e| vcpu_err(i, e))?;
        }
        let Ok(platform) = Platform::restore((), &state.platform);
        Ok(Vm {
            vcpus,
            cpu_state: state.cpu_state.clone(),
            platform,
            virtio,
            ram,
            now: state.now,
            time: state.time,
            max_quantum: state.max_quantum.max(1),
            quantum_rng: state.quantum_rng.resume(),
            trace: state.trace.clone(),
            stats: state.stats.clone(),
            next_cpu: state.next_cpu % n,
            config,
        })
    }

    /// A fork's new randomness from here on: the vCPU quantum stream and virtio-rng
    /// restart from streams of `seed` (the guest's memory, including its kernel's
    /// entropy pool, stays as it was).
    pub fn reseed(&mut self, seed: u64) {
        self.quantum_rng = seed::stream(seed, "vm/vcpu-quanta");
        self.virtio.reseed_rng(seed);
        self.config.seed = seed;
    }

    /// The configuration this VM was built from (with its own seed).
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// Guest RAM, for snapshot files (read only between runs).
    pub fn ram(&self) -> &GuestRam {
        &self.ram
    }
}
