//! CPU backends behind [`crate::vcpu::Vcpu`].

#[cfg(feature = "emu")]
pub mod emu;
pub mod kvm;
pub mod split;

use crate::memory::GuestRam;
use crate::vcpu::{Vcpu, VcpuError};

/// Which CPU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BackendKind {
    /// The deterministic software CPU (Unicorn).
    Emu,
    /// Hardware virtualization through /dev/kvm.
    Kvm,
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "emu" => Ok(BackendKind::Emu),
            "kvm" => Ok(BackendKind::Kvm),
            other => Err(format!(
                "unknown backend `{other}`: expected `emu` or `kvm`"
            )),
        }
    }
}

/// Creates `count` vCPUs of one VM over `ram`, with `mmio` ranges (base, size)
/// routed to the platform.
pub fn create_vcpus(
    kind: BackendKind,
    ram: &GuestRam,
    mmio: &[(u64, u64)],
    count: u8,
) -> Result<Vec<Box<dyn Vcpu>>, VcpuError> {
    match kind {
        #[cfg(feature = "emu")]
        BackendKind::Emu => {
            let (ptr, len) = ram.host_range();
            // Unicorn maps whole pages; the platform answers unclaimed bytes with all-ones.
            let mmio: Vec<_> = mmio
                .iter()
                .map(|&(base, size)| (base, size.next_multiple_of(0x1000)))
                .collect();
            // SAFETY: `ram` is one 4 KiB-aligned mapping that the VM keeps alive longer
            // than its vCPUs (field order in `machine::Vm`), and the core never holds a
            // Rust reference into it while a vCPU runs.
            let machine =
                unsafe { emu::EmuMachine::new(&[(0, ptr, len)], &mmio, u32::from(count))? };
            (0..u32::from(count))
                .map(|i| machine.vcpu(i).map(|v| Box::new(v) as Box<dyn Vcpu>))
                .collect()
        }
        #[cfg(not(feature = "emu"))]
        BackendKind::Emu => Err(VcpuError::Unavailable {
            backend: "emu",
            reason: "this detvm was built without the `emu` feature (the GPL-2.0 Unicorn engine)"
                .into(),
        }),
        // Every access outside guest RAM exits on KVM, so `mmio` needs no set-up.
        BackendKind::Kvm => kvm::create_vcpus(ram, count),
    }
}
