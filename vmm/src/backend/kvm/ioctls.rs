//! KVM ioctls that kvm-ioctls does not wrap, declared with vmm-sys-util's macros.

use std::os::fd::AsRawFd;

use kvm_bindings::{kvm_interrupt, KVMIO};
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

// KVM_INTERRUPT: queue an external interrupt (vector) for injection at the next entry.
// Only valid without an in-kernel irqchip, and only when the last exit reported
// `ready_for_interrupt_injection`.
ioctl_iow_nr!(KVM_INTERRUPT, KVMIO, 0x86, kvm_interrupt);

/// Queues `vector` on a vCPU fd (`KVM_INTERRUPT`).
pub fn interrupt(vcpu: &impl AsRawFd, vector: u8) -> std::io::Result<()> {
    let irq = kvm_interrupt {
        irq: u32::from(vector),
    };
    // SAFETY: `vcpu` is a KVM vCPU fd (callers pass a `VcpuFd`), the request number
    // matches the argument type, and the kernel only reads `irq` during the call.
    let ret = unsafe { ioctl_with_ref(vcpu, KVM_INTERRUPT(), &irq) };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_number_matches_linux_uapi() {
        // _IOW(0xAE, 0x86, struct kvm_interrupt) from <linux/kvm.h>.
        assert_eq!(KVM_INTERRUPT(), 0x4004_AE86);
    }
}
