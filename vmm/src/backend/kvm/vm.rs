//! One KVM VM: the VM fd, guest RAM as a memory slot, the MSR filter and the watchdog.
//! Deliberately no KVM_CREATE_IRQCHIP and no in-kernel PIT (DESIGN point 3): every
//! interrupt source is a user-space device on virtual time.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VmFd};

use super::msr_filter;
use super::watchdog::{Watchdog, WatchdogConfig};
use crate::memory::GuestRam;

/// Where VMX keeps the real-mode TSS pages (3 pages just below the BIOS), as QEMU does.
const TSS_ADDRESS: usize = 0xfffb_d000;

#[derive(Debug)]
pub struct KvmVm {
    pub fd: VmFd,
    pub watchdog: Watchdog,
    pub vcpu_count: u8,
}

impl KvmVm {
    /// Creates the VM over `ram`. The caller keeps `ram` alive for as long as the VM
    /// (and its vCPUs) exist; `Vm` does so by field order.
    pub fn create(
        kvm: &Kvm,
        ram: &GuestRam,
        vcpu_count: u8,
        watchdog: WatchdogConfig,
    ) -> Result<KvmVm, String> {
        let fd = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
        // Only VMX needs it (real-mode APs); other vendors may refuse, which is fine.
        if let Err(e) = fd.set_tss_address(TSS_ADDRESS) {
            tracing::debug!("KVM_SET_TSS_ADDR refused ({e}); ignored");
        }
        let (host, size) = ram.host_range();
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: size as u64,
            userspace_addr: host as u64,
        };
        // SAFETY: `host..host+size` is the live mapping of guest RAM, which outlives the
        // VM (see above); guest writes through KVM are what that memory is for.
        unsafe { fd.set_user_memory_region(region) }
            .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
        msr_filter::install(&fd)?;
        Ok(KvmVm {
            fd,
            watchdog: Watchdog::start(watchdog)?,
            vcpu_count,
        })
    }
}
