//! Exception and interrupt delivery through the guest IDT.
//!
//! Unicorn stops at every exception and hands it to hooks instead of delivering it. We give
//! it back to QEMU's own `do_interrupt_all` (64-bit interrupt and trap gates, IST and RSP0
//! stack switches through the TSS, the SS:RSP/RFLAGS/CS:RIP frame, error codes, IF for
//! interrupt gates, CPL change, fault vs trap RIP), which also clears the previous-exception
//! record after a successful delivery, so two #PF in a row stay two #PF. A fault while
//! delivering re-enters QEMU's exception path, which promotes it to #DF, and a fault while
//! delivering #DF to a shutdown that the run loop reports as a triple fault.
//!
//! An external interrupt is injected at an instruction boundary, before the next
//! instruction is fetched. QEMU fetches (translates) before our block hook can deliver it,
//! so a fetch that faults there is dropped and the interrupt taken instead, as hardware
//! does; the fetch faults again when the handler returns.

use std::ffi::c_void;

use unicorn_engine::{uc_engine, uc_vmem_read, Prot};

use super::counting::{HookState, Mode, Stop};
use super::internals::{
    self, DESC_P_MASK, ENV_EXCEPTION_IS_INT, ENV_IDT, ENV_TR, HF_CPL_MASK, R_CS,
};

/// UC_HOOK_INTR: every exception and INT n.
pub(super) unsafe extern "C" fn on_interrupt(
    _uc: *mut uc_engine,
    intno: u32,
    user_data: *mut c_void,
) {
    // SAFETY: `user_data` is the engine's HookState (see hooks::state).
    let st = unsafe { &mut *user_data.cast::<HookState>() };
    deliver_exception(st, intno.min(255) as u8);
}

/// UC_HOOK_INSN_INVALID: #UD (including RDRAND/RDSEED, hidden from the model).
pub(super) unsafe extern "C" fn on_invalid(_uc: *mut uc_engine, user_data: *mut c_void) -> bool {
    // SAFETY: as above.
    let st = unsafe { &mut *user_data.cast::<HookState>() };
    deliver_exception(st, 6);
    true // handled: Unicorn goes on running
}

/// Consecutive exception deliveries without an instruction retiring after which the vCPU
/// is reported as triple faulted: a guest stuck in an exception loop (a handler whose
/// first instruction faults, on an IST stack that never runs out) would otherwise never
/// reach its budget and hang the VMM; hardware would hang. Real nesting is a few deep
/// (#PF, then #DF, then shutdown), and a loop on an ordinary stack runs off a stack of
/// 4.8 MB (48 bytes a frame) first.
const MAX_DELIVERIES_STUCK: u32 = 100_000;

/// Delivers `cs->exception_index` (set by QEMU when it raised the exception).
fn deliver_exception(st: &mut HookState, vector: u8) {
    // A count limit QEMU spent on a block that faulted while it was translated does not
    // carry over to the handler's block.
    st.forced_cflags = 0;
    if let Mode::Inject { vector: irq, cr2 } = st.mode {
        return inject_instead_of_fetch_fault(st, irq, cr2);
    }
    let cpu = st.cpu;
    let cs_base = cpu.seg_base(R_CS);
    let is_int = cpu.env_i32(ENV_EXCEPTION_IS_INT) != 0;
    // Unicorn has already moved RIP past INT n; a fault while delivering it must point at
    // the INT, which is the last instruction of its block.
    let int_pc = is_int
        .then(|| {
            st.cur()
                .and_then(|c| c.tb()?.insns().last().map(|&(pc, _)| pc))
        })
        .flatten();
    let pc = match int_pc {
        Some(pc) => {
            cpu.set_eip(pc.wrapping_sub(cs_base));
            pc
        }
        None => cpu.eip().wrapping_add(cs_base),
    };
    // A fault retires nothing; INT n retires once its delivery succeeded.
    st.cut_current_block_at(pc);
    if st.counter.committed == st.stuck_at {
        st.deliveries_stuck += 1;
        if st.deliveries_stuck >= MAX_DELIVERIES_STUCK {
            st.stop = Some(Stop::TripleFault);
            return st.request_stop(Stop::TripleFault);
        }
    } else {
        st.stuck_at = st.counter.committed;
        st.deliveries_stuck = 1;
    }
    if !tss_usable_for(st, vector) {
        st.stop = Some(Stop::TripleFault);
        st.request_stop(Stop::TripleFault);
        return;
    }
    let cs = cpu.cs;
    st.commit_stores();
    // LONGJMP: a fault during delivery longjmps from here; only Copy values are alive.
    // SAFETY: called inside the CPU loop (an exception hook), where QEMU itself would call it.
    unsafe { internals::x86_cpu_do_interrupt(cs) };
    if int_pc.is_some() {
        st.counter.committed += 1; // the pushed return address came from exception_next_eip
    }
}

/// Called from the block hook in `Mode::Inject`: delivers external interrupt `vector`
/// before the block at RIP runs, then leaves that block.
pub(super) fn inject_now(st: &mut HookState, vector: u8) {
    st.mode = Mode::Normal;
    st.request_stop(Stop::Injected);
    if !tss_usable_for(st, vector) {
        st.stop = Some(Stop::TripleFault);
        return;
    }
    let (cs, env) = (st.cpu.cs, st.cpu.env);
    st.commit_stores();
    // LONGJMP (both calls): only Copy values are alive.
    // SAFETY: inside the CPU loop (block hook); a fault while delivering is raised and
    // delivered by `on_interrupt`, then the stop requested above ends the run.
    unsafe {
        internals::do_interrupt_x86_hardirq(env, vector as i32, 1);
        internals::cpu_loop_exit(cs)
    }
}

/// In `Mode::Inject`, an exception before the block hook ran comes from fetching the
/// instruction at RIP: the interrupt is taken at this boundary first (see the module
/// documentation). The fault has not happened: CR2 keeps its value and no exception is
/// in delivery (else the fault on the handler's return would become a #DF); QEMU clears
/// the exception index once this hook returns.
fn inject_instead_of_fetch_fault(st: &mut HookState, vector: u8, cr2: u64) {
    st.cpu.set_cr2(cr2);
    st.cpu.set_old_exception(-1);
    st.mode = Mode::Normal;
    st.request_stop(Stop::Injected);
    if !tss_usable_for(st, vector) {
        st.stop = Some(Stop::TripleFault);
        return;
    }
    let env = st.cpu.env;
    st.commit_stores();
    // LONGJMP: a fault while delivering is raised from here; only Copy values are alive.
    // SAFETY: inside the CPU loop (an exception hook); such a fault is delivered by
    // `on_interrupt` in `Mode::Normal`, then the stop requested above ends the run.
    unsafe { internals::do_interrupt_x86_hardirq(env, vector as i32, 1) };
}

/// QEMU aborts the process when delivery needs a stack from a TSS that is not loaded; a
/// real CPU would fault its way to a shutdown. Report that instead.
fn tss_usable_for(st: &HookState, vector: u8) -> bool {
    let cpu = st.cpu;
    let (_, _, _, tr_flags) = cpu.seg_at(ENV_TR);
    if tr_flags & DESC_P_MASK != 0 {
        return true;
    }
    if cpu.hflags() & HF_CPL_MASK != 0 {
        return false; // a privilege change always reads RSP0
    }
    // Ring 0: only an IST gate needs the TSS.
    let (_, idt_base, _, _) = cpu.seg_at(ENV_IDT);
    let mut gate = [0u8; 16];
    let addr = idt_base.wrapping_add(vector as u64 * 16);
    // SAFETY: reads 16 bytes of guest memory through the guest MMU into `gate`.
    let err = unsafe {
        uc_vmem_read(
            st.uc,
            addr,
            Prot::READ,
            gate.as_mut_ptr().cast(),
            gate.len(),
        )
    };
    err != unicorn_engine::uc_error::OK || gate[4] & 7 == 0
}
