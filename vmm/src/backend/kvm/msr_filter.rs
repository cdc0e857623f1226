//! TSC-related MSRs never reach the host: a KVM MSR filter denies them, KVM turns each
//! denied access into a KVM_EXIT_X86_RDMSR/WRMSR exit, and the policy here answers it
//! from virtual time (DESIGN point 4). Every such exit is a decision point.

use kvm_bindings::{kvm_enable_cap, KVM_CAP_X86_USER_SPACE_MSR, KVM_MSR_EXIT_REASON_FILTER};
use kvm_ioctls::{MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VmFd};

use crate::vcpu::GuestIo;

pub const IA32_TSC: u32 = 0x10;
/// The MSRs routed to user space, with their names for reports.
pub const ROUTED_MSRS: &[(u32, &str)] = &[
    (IA32_TSC, "IA32_TSC"),
    (0x3b, "IA32_TSC_ADJUST"),
    (0xe7, "IA32_MPERF"),
    (0xe8, "IA32_APERF"),
    (0x6e0, "IA32_TSC_DEADLINE"),
    (0xc000_0103, "IA32_TSC_AUX"),
];

/// Makes every access to [`ROUTED_MSRS`] exit to user space.
pub fn install(vm: &VmFd) -> Result<(), String> {
    let mut cap = kvm_enable_cap {
        cap: KVM_CAP_X86_USER_SPACE_MSR,
        ..Default::default()
    };
    cap.args[0] = u64::from(KVM_MSR_EXIT_REASON_FILTER);
    vm.enable_cap(&cap)
        .map_err(|e| format!("enabling KVM_CAP_X86_USER_SPACE_MSR: {e}"))?;
    // One single-MSR range each; a 0 bit denies, and a denied access exits.
    let deny = [0u8];
    let ranges: Vec<MsrFilterRange> = ROUTED_MSRS
        .iter()
        .map(|&(base, _)| MsrFilterRange {
            flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
            base,
            msr_count: 1,
            bitmap: &deny,
        })
        .collect();
    vm.set_msr_filter(MsrFilterDefaultAction::ALLOW, &ranges)
        .map_err(|e| format!("KVM_X86_SET_MSR_FILTER: {e}"))
}

/// The value a RDMSR of a routed MSR reads, or `None` for #GP.
///
/// The TSC reads virtual time (a 1 GHz TSC). The others belong to features the CPU
/// model hides (TSC_ADJUST, APERF/MPERF, TSC-deadline, RDTSCP), so they fault as on a
/// CPU without them.
pub fn rdmsr(index: u32, io: &mut dyn GuestIo) -> Option<u64> {
    (index == IA32_TSC).then(|| io.rdtsc(0))
}

/// Whether a WRMSR of a routed MSR succeeds (`false`: #GP). TSC writes are dropped:
/// virtual time cannot be set by the guest.
pub fn wrmsr(index: u32, _value: u64) -> bool {
    index == IA32_TSC
}
