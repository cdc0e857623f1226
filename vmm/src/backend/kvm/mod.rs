//! The `kvm` backend: guest code runs natively under /dev/kvm; the VMM sees only exits.
//!
//! This is the only code that talks to KVM. The shape follows DESIGN points 3, 4 and 9:
//! - no in-kernel irqchip or PIT: the core's user-space devices raise interrupts, and
//!   [`vcpu::KvmVcpu`] injects them with KVM_INTERRUPT when KVM reports
//!   `ready_for_interrupt_injection`, else asks for an interrupt-window exit;
//! - the shared CPU model through KVM_SET_CPUID2; TSC-related MSRs exit to user space
//!   through an MSR filter and read virtual time;
//! - every KVM exit returns from [`crate::vcpu::Vcpu::run`] as a decision point, since
//!   instructions are not counted: the core charges `ns_per_exit` per exit and jumps to
//!   the next timer on HLT;
//! - each vCPU lives on its own host thread ([`runner`]) and the core hands it a baton
//!   per call ([`vcpu`]), so exactly one thread runs at a time;
//! - a watchdog ([`watchdog`]) kicks long runs invisibly and, past a long limit, reports
//!   a forced preemption ([`crate::vcpu::VcpuExit::Kicked`]).

mod cpuid;
pub mod host;
mod ioctls;
pub mod msr_filter;
mod runner;
mod state;
pub mod vcpu;
mod vm;
pub mod watchdog;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use cpuid::model_leaves;
pub use vcpu::KvmVcpu;
pub use watchdog::WatchdogConfig;

use crate::memory::GuestRam;
use crate::vcpu::{Vcpu, VcpuError};
use vm::KvmVm;

/// Host-side settings of the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmOptions {
    /// The KVM device, normally [`host::KVM_DEVICE`].
    pub device: PathBuf,
    pub watchdog: WatchdogConfig,
}

impl Default for KvmOptions {
    fn default() -> Self {
        KvmOptions {
            device: PathBuf::from(host::KVM_DEVICE),
            watchdog: WatchdogConfig::default(),
        }
    }
}

fn unavailable(reason: String) -> VcpuError {
    VcpuError::Unavailable {
        backend: "kvm",
        reason,
    }
}

/// Creates the VM and `count` vCPUs over `ram`, with default options.
pub fn create_vcpus(ram: &GuestRam, count: u8) -> Result<Vec<Box<dyn Vcpu>>, VcpuError> {
    Ok(create_kvm_vcpus(ram, count, &KvmOptions::default())?
        .into_iter()
        .map(|v| Box::new(v) as Box<dyn Vcpu>)
        .collect())
}

/// Creates the VM and `count` vCPUs over `ram`. Every KVM resource lives until the
/// last vCPU is dropped; `ram` must outlive them.
pub fn create_kvm_vcpus(
    ram: &GuestRam,
    count: u8,
    options: &KvmOptions,
) -> Result<Vec<KvmVcpu>, VcpuError> {
    let kvm = host::open(&options.device).map_err(unavailable)?;
    let vm = KvmVm::create(&kvm, ram, count, options.watchdog).map_err(unavailable)?;
    let vm = Arc::new(vm);
    (0..count)
        .map(|i| KvmVcpu::spawn(Arc::clone(&vm), i))
        .collect()
}

/// Whether KVM at `device` can create a VM and a vCPU here, or why not. Cheap (no
/// guest runs); `crate::doctor` runs the probe guests that tell whether it is sound.
pub fn check_usable(device: &Path) -> Result<(), String> {
    let ram = GuestRam::new(crate::layout::MIN_RAM).map_err(|e| e.to_string())?;
    let options = KvmOptions {
        device: device.to_path_buf(),
        ..KvmOptions::default()
    };
    create_kvm_vcpus(&ram, 1, &options)
        .map(drop)
        .map_err(|e| match e {
            VcpuError::Unavailable { reason, .. } => reason,
            other => other.to_string(),
        })
}

#[cfg(test)]
mod tests;
