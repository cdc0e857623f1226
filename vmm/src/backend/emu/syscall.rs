//! SYSCALL, which Unicorn only reports to a hook (and then skips two bytes). We perform it:
//! RCX/R11, the STAR selectors, SFMASK, CPL 0 and RIP from LSTAR (CSTAR from compatibility
//! mode), then leave the block so QEMU continues at the new RIP in ring 0. SYSRET and IRETQ
//! back to ring 3 are executed by QEMU itself.

use std::ffi::c_void;

use unicorn_engine::{uc_engine, RegisterX86};

use super::counting::HookState;
use super::hooks::{reg, set_reg};
use super::internals::{
    self, Cpu, ENV_CSTAR, ENV_EFER, ENV_FMASK, ENV_LSTAR, ENV_SEGS, ENV_STAR, HF_ADDSEG_MASK,
    HF_CPL_MASK, HF_CS32_MASK, HF_CS64_MASK, HF_LMA_MASK, HF_SS32_MASK, R_CS, R_SS, SEG_SIZE,
};

const EFER_SCE: u64 = 1;
const RF: u64 = 1 << 16;
const EXCP_UD: i32 = 6;
// Descriptor flag bits (qemu/target/i386/cpu.h).
const G: u32 = 1 << 23;
const B: u32 = 1 << 22;
const L: u32 = 1 << 21;
const P: u32 = 1 << 15;
const S: u32 = 1 << 12;
const CODE: u32 = 1 << 11;
const RW: u32 = 1 << 9;
const A: u32 = 1 << 8;

/// UC_HOOK_INSN / SYSCALL. Unicorn has synced RIP to the SYSCALL instruction.
pub(super) unsafe extern "C" fn on_syscall(_uc: *mut uc_engine, user_data: *mut c_void) {
    // SAFETY: `user_data` is the engine's HookState (see hooks::state).
    let st = unsafe { &mut *user_data.cast::<HookState>() };
    let cpu = st.cpu;
    let cs_base = cpu.seg_base(R_CS);
    let pc = cpu.eip().wrapping_add(cs_base);
    let hflags = cpu.hflags();
    let (cs, env) = (cpu.cs, cpu.env);
    if cpu.env_u64(ENV_EFER) & EFER_SCE == 0 || hflags & HF_LMA_MASK == 0 {
        // LONGJMP: #UD at the SYSCALL, delivered by the exception hook.
        // SAFETY: inside the CPU loop (an instruction hook).
        unsafe { internals::raise_exception_err(env, EXCP_UD, 0) };
        return; // not reached
    }
    let next_pc = next_insn_pc(st, pc);
    let rflags = reg(st, RegisterX86::RFLAGS);
    set_reg(st, RegisterX86::RCX, next_pc.wrapping_sub(cs_base));
    set_reg(st, RegisterX86::R11, rflags & !RF);
    set_reg(
        st,
        RegisterX86::RFLAGS,
        rflags & !(cpu.env_u64(ENV_FMASK) | RF),
    );
    let sel = ((cpu.env_u64(ENV_STAR) >> 32) & 0xffff) as u32;
    load_ring0_segments(cpu, sel);
    let target = if hflags & HF_CS64_MASK != 0 {
        ENV_LSTAR
    } else {
        ENV_CSTAR
    };
    cpu.set_eip(cpu.env_u64(target));
    st.cut_current_block_at(next_pc); // SYSCALL retired
    st.commit_stores();
    // LONGJMP: only Copy values are alive.
    // SAFETY: inside the CPU loop; the next block is looked up with the new CS and CPL.
    unsafe { internals::cpu_loop_exit(cs) };
}

/// The instruction after the one at `pc`: SYSCALL ends its block, so normally the block end.
fn next_insn_pc(st: &HookState, pc: u64) -> u64 {
    let Some(tb) = st.cur().and_then(|c| c.tb()) else {
        return pc.wrapping_add(2);
    };
    let insns = tb.insns();
    match insns.iter().position(|&(p, _)| p == pc) {
        Some(i) if i + 1 < insns.len() => insns[i + 1].0,
        _ => tb.pc().wrapping_add(tb.size() as u64),
    }
}

/// Flat 64-bit ring-0 CS and SS from STAR[47:32], with the hidden flags QEMU's
/// `cpu_x86_load_seg_cache` would set.
fn load_ring0_segments(cpu: Cpu, sel: u32) {
    cpu.set_seg_at(
        ENV_SEGS + R_CS * SEG_SIZE,
        (sel & 0xfffc, 0, 0xffff_ffff, G | P | S | CODE | RW | A | L),
    );
    cpu.set_seg_at(
        ENV_SEGS + R_SS * SEG_SIZE,
        ((sel + 8) & 0xfffc, 0, 0xffff_ffff, G | B | P | S | RW | A),
    );
    let h = cpu.hflags();
    cpu.set_hflags(
        (h | HF_CS32_MASK | HF_SS32_MASK | HF_CS64_MASK) & !(HF_ADDSEG_MASK | HF_CPL_MASK),
    );
}
