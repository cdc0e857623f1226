//! CPU backends behind [`crate::vcpu::Vcpu`].

#[cfg(feature = "emu")]
pub mod emu;
pub mod kvm;

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
        BackendKind::Emu => {
            let _ = (ram, mmio, count);
            Err(VcpuError::Unavailable {
                backend: "emu",
                reason: "not built yet".into(),
            })
        }
        // Every access outside guest RAM exits on KVM, so `mmio` needs no set-up.
        BackendKind::Kvm => kvm::create_vcpus(ram, count),
    }
}
