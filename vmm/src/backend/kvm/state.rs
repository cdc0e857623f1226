//! A KVM vCPU's state for snapshots ([`KvmVcpuState`]): read and written on the vCPU's
//! own thread, only when its last exit is settled (its instruction completed).

use kvm_bindings::{kvm_msr_entry, kvm_xsave, Msrs};
use kvm_ioctls::VcpuFd;

use crate::cpu_model::STATE_MSRS as MSRS;
use crate::vcpu::KvmVcpuState;

pub fn save(fd: &VcpuFd) -> Result<KvmVcpuState, String> {
    let get = |what: &str, e: kvm_ioctls::Error| format!("KVM_GET_{what}: {e}");
    let entries: Vec<kvm_msr_entry> = MSRS
        .iter()
        .map(|&index| kvm_msr_entry {
            index,
            ..Default::default()
        })
        .collect();
    let mut msrs = Msrs::from_entries(&entries).map_err(|e| format!("{e:?}"))?;
    let read = fd.get_msrs(&mut msrs).map_err(|e| get("MSRS", e))?;
    if read != MSRS.len() {
        return Err(format!(
            "KVM_GET_MSRS: MSR {:#x} is not supported",
            MSRS[read.min(MSRS.len() - 1)]
        ));
    }
    Ok(KvmVcpuState {
        regs: fd.get_regs().map_err(|e| get("REGS", e))?,
        sregs: fd.get_sregs().map_err(|e| get("SREGS", e))?,
        xsave: fd.get_xsave().map_err(|e| get("XSAVE", e))?.region.to_vec(),
        xcrs: fd.get_xcrs().map_err(|e| get("XCRS", e))?,
        events: fd.get_vcpu_events().map_err(|e| get("VCPU_EVENTS", e))?,
        debugregs: fd.get_debug_regs().map_err(|e| get("DEBUGREGS", e))?,
        mp_state: fd.get_mp_state().map_err(|e| get("MP_STATE", e))?,
        msrs: msrs.as_slice().iter().map(|m| (m.index, m.data)).collect(),
    })
}

pub fn restore(fd: &VcpuFd, s: &KvmVcpuState) -> Result<(), String> {
    let set = |what: &str, e: kvm_ioctls::Error| format!("KVM_SET_{what}: {e}");
    let mut xsave = kvm_xsave::default();
    if s.xsave.len() != xsave.region.len() {
        return Err(format!(
            "the XSAVE area holds {} words, not {}",
            s.xsave.len(),
            xsave.region.len()
        ));
    }
    xsave.region.copy_from_slice(&s.xsave);
    // Order as the kernel wants it: sregs (modes) before regs, MSRs after sregs (EFER),
    // XCRs before XSAVE (the features it may hold), events last.
    fd.set_sregs(&s.sregs).map_err(|e| set("SREGS", e))?;
    fd.set_regs(&s.regs).map_err(|e| set("REGS", e))?;
    let entries: Vec<kvm_msr_entry> = s
        .msrs
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|e| format!("{e:?}"))?;
    let written = fd.set_msrs(&msrs).map_err(|e| set("MSRS", e))?;
    if written != entries.len() {
        return Err(format!(
            "KVM_SET_MSRS: MSR {:#x} was refused",
            entries[written.min(entries.len().saturating_sub(1))].index
        ));
    }
    fd.set_xcrs(&s.xcrs).map_err(|e| set("XCRS", e))?;
    // SAFETY: `xsave` is a whole kvm_xsave of the legacy 4 KiB size, which KVM_SET_XSAVE
    // reads; the CPU model enables no state component beyond it (x87 and SSE only).
    unsafe { fd.set_xsave(&xsave) }.map_err(|e| set("XSAVE", e))?;
    fd.set_debug_regs(&s.debugregs)
        .map_err(|e| set("DEBUGREGS", e))?;
    fd.set_mp_state(s.mp_state)
        .map_err(|e| set("MP_STATE", e))?;
    fd.set_vcpu_events(&s.events)
        .map_err(|e| set("VCPU_EVENTS", e))?;
    Ok(())
}
