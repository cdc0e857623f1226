//! The C callbacks Unicorn calls while guest code runs: block start (counting), port I/O,
//! MMIO, CPUID and RDTSC.
//!
//! Several of them leave the running translation block with QEMU's `cpu_loop_exit` (a
//! longjmp back into the CPU loop, as QEMU's own helpers do). Rust frames skipped that way
//! must be "plain old frames": no value with a destructor may be alive at that call. Each
//! such call is marked `// LONGJMP:` and keeps only `Copy` values alive.

use std::ffi::c_void;

use unicorn_engine::{uc_engine, uc_reg_read, uc_reg_write, RegisterX86};

use super::counting::{Access, AccessKind, HookState, Mode, Stop};
use super::internals;
use crate::vcpu::IoFlow;

/// # Safety
/// `user_data` is the engine's `HookState`, which outlives every callback; the engine is
/// driven by one thread, so no other reference to it is in use during a callback.
unsafe fn state<'a>(user_data: *mut c_void) -> &'a mut HookState {
    // SAFETY: see above.
    unsafe { &mut *user_data.cast::<HookState>() }
}

pub(super) fn reg(st: &HookState, r: RegisterX86) -> u64 {
    let mut v = 0u64;
    // SAFETY: reading a plain 64-bit register of the open engine into a u64.
    unsafe { uc_reg_read(st.uc, r as i32, (&raw mut v).cast()) };
    v
}

pub(super) fn set_reg(st: &HookState, r: RegisterX86, v: u64) {
    // SAFETY: writing a plain 64-bit register (never RIP: that restarts the block).
    unsafe { uc_reg_write(st.uc, r as i32, (&raw const v).cast()) };
}

fn pc_now(st: &HookState) -> u64 {
    st.cpu.eip().wrapping_add(st.cpu.seg_base(internals::R_CS))
}

/// UC_HOOK_BLOCK (the only one, so Unicorn calls it directly from generated code).
pub(super) unsafe extern "C" fn on_block(
    _uc: *mut uc_engine,
    address: u64,
    size: u32,
    user_data: *mut c_void,
) {
    // SAFETY: see `state`.
    let st = unsafe { state(user_data) };
    if let Some(vector) = st.on_block_start(address, size) {
        super::interrupts::inject_now(st, vector);
    }
}

/// Ends the run right at the I/O instruction at guest `pc`, which has already made its
/// device write: RIP is rewound to it and the run loop replays it with the recorded values.
fn stop_and_rewind(st: &mut HookState, pc: u64, host_pc: Option<usize>) {
    st.cut_current_block_at(pc);
    st.request_stop(Stop::IoStopRewound);
    let cs = st.cpu.cs;
    st.commit_stores();
    match host_pc {
        // LONGJMP: only Copy values are alive here.
        // SAFETY: called from inside the CPU loop (an I/O callback of generated code).
        Some(ret) => unsafe { internals::cpu_loop_exit_restore(cs, ret) },
        // SAFETY: as above; Unicorn already synced RIP to this instruction.
        None => unsafe { internals::cpu_loop_exit(cs) },
    }
}

/// UC_HOOK_INSN / IN. Unicorn has synced RIP to the IN instruction.
pub(super) unsafe extern "C" fn on_in(
    _uc: *mut uc_engine,
    port: u32,
    size: i32,
    user_data: *mut c_void,
) -> u32 {
    // SAFETY: see `state`.
    let st = unsafe { state(user_data) };
    let insns = st.insns_at_pc(pc_now(st));
    let size = size.clamp(1, 4) as usize;
    let a = Access {
        kind: AccessKind::PioIn,
        addr: port as u64,
        size: size as u32,
        value: 0,
    };
    if let Some(v) = st.log_access(insns, a) {
        return v as u32;
    }
    let mut buf = [0u8; 4];
    st.with_io(|io| io.pio_read(insns, port as u16, &mut buf[..size]));
    let v = u32::from_le_bytes(buf);
    // Record what the device returned (the entry `log_access` just pushed).
    if let Some(last) = st.log.last_mut().filter(|_| st.mode == Mode::Normal) {
        last.value = v as u64;
    }
    v
}

/// UC_HOOK_INSN / OUT. Unicorn has synced RIP to the OUT instruction.
pub(super) unsafe extern "C" fn on_out(
    _uc: *mut uc_engine,
    port: u32,
    size: i32,
    value: u32,
    user_data: *mut c_void,
) {
    // SAFETY: see `state`.
    let st = unsafe { state(user_data) };
    let pc = pc_now(st);
    let insns = st.insns_at_pc(pc);
    let size = size.clamp(1, 4) as usize;
    let a = Access {
        kind: AccessKind::PioOut,
        addr: port as u64,
        size: size as u32,
        value: value as u64,
    };
    if st.log_access(insns, a).is_some() {
        return;
    }
    let bytes = value.to_le_bytes();
    let flow = st.with_io(|io| io.pio_write(insns, port as u16, &bytes[..size]));
    // While replaying, the run ends after this instruction anyway.
    if flow == Some(IoFlow::Stop) && st.mode == Mode::Normal {
        stop_and_rewind(st, pc, None);
    }
}

/// Per-region data of an MMIO mapping: callbacks get offsets relative to `base`.
pub(super) struct MmioRegion {
    pub state: *mut HookState,
    pub base: u64,
}

/// # Safety
/// `user_data` is a live `MmioRegion` of this engine (owned by it, see `state`).
unsafe fn region<'a>(user_data: *mut c_void) -> (&'a mut HookState, u64) {
    // SAFETY: see above.
    let r = unsafe { &*user_data.cast::<MmioRegion>() };
    // SAFETY: as in `state`.
    (unsafe { &mut *r.state }, r.base)
}

pub(super) unsafe extern "C" fn on_mmio_read(
    _uc: *mut uc_engine,
    offset: u64,
    size: u32,
    user_data: *mut c_void,
) -> u64 {
    // SAFETY: registered with a `MmioRegion`.
    let (st, base) = unsafe { region(user_data) };
    let insns = st.insns_at_host_pc(st.cpu.mem_io_pc());
    let addr = base.wrapping_add(offset);
    let size = size.clamp(1, 8) as usize;
    let a = Access {
        kind: AccessKind::MmioRead,
        addr,
        size: size as u32,
        value: 0,
    };
    if let Some(v) = st.log_access(insns, a) {
        return v;
    }
    let mut buf = [0u8; 8];
    st.with_io(|io| io.mmio_read(insns, addr, &mut buf[..size]));
    let v = u64::from_le_bytes(buf);
    // Record what the device returned (the entry `log_access` just pushed).
    if let Some(last) = st.log.last_mut().filter(|_| st.mode == Mode::Normal) {
        last.value = v;
    }
    v
}

pub(super) unsafe extern "C" fn on_mmio_write(
    _uc: *mut uc_engine,
    offset: u64,
    size: u32,
    value: u64,
    user_data: *mut c_void,
) {
    // SAFETY: registered with a `MmioRegion`.
    let (st, base) = unsafe { region(user_data) };
    let host_pc = st.cpu.mem_io_pc();
    let insns = st.insns_at_host_pc(host_pc);
    let addr = base.wrapping_add(offset);
    let size = size.clamp(1, 8) as usize;
    let a = Access {
        kind: AccessKind::MmioWrite,
        addr,
        size: size as u32,
        value,
    };
    if st.log_access(insns, a).is_some() {
        return;
    }
    let bytes = value.to_le_bytes();
    let flow = st.with_io(|io| io.mmio_write(insns, addr, &bytes[..size]));
    if flow == Some(IoFlow::Stop) && st.mode == Mode::Normal {
        // The instruction's pc is needed to cut the block: take it from the search data.
        let pc = st.cur().and_then(|c| {
            let tb = c.tb()?;
            let i = tb.index_of_host_pc(host_pc)? as usize;
            tb.insns().get(i).map(|&(pc, _)| pc)
        });
        match pc {
            Some(pc) => stop_and_rewind(st, pc, Some(host_pc)),
            None => st.request_stop(Stop::Error(format!(
                "MMIO write to {addr:#x} from an unknown instruction"
            ))),
        }
    }
}

/// UC_HOOK_INSN / CPUID: the fixed model, with the live OSXSAVE bit.
pub(super) unsafe extern "C" fn on_cpuid(_uc: *mut uc_engine, user_data: *mut c_void) -> i32 {
    // SAFETY: see `state`.
    let st = unsafe { state(user_data) };
    let leaf = reg(st, RegisterX86::RAX) as u32;
    let sub = reg(st, RegisterX86::RCX) as u32;
    let mut r = crate::cpu_model::cpuid(leaf, sub, st.vcpu_index, st.vcpu_count);
    if leaf == 1 && st.cpu.cr(4) & (1 << 18) != 0 {
        r[2] |= crate::cpu_model::OSXSAVE_BIT;
    }
    for (reg_id, v) in [
        RegisterX86::RAX,
        RegisterX86::RBX,
        RegisterX86::RCX,
        RegisterX86::RDX,
    ]
    .into_iter()
    .zip(r)
    {
        set_reg(st, reg_id, v as u64);
    }
    1 // skip Unicorn's own CPUID
}

/// UC_HOOK_INSN / RDTSC: virtual time from the core. QEMU raises #GP for CPL 3 with
/// CR4.TSD before calling hooks, so this only sees permitted reads.
pub(super) unsafe extern "C" fn on_rdtsc(_uc: *mut uc_engine, user_data: *mut c_void) -> i32 {
    // SAFETY: see `state`.
    let st = unsafe { state(user_data) };
    let insns = st.insns_at_pc(pc_now(st));
    let tsc = st.with_io(|io| io.rdtsc(insns)).unwrap_or(0);
    set_reg(st, RegisterX86::RAX, tsc & 0xffff_ffff);
    set_reg(st, RegisterX86::RDX, tsc >> 32);
    1 // skip Unicorn's host-time TSC
}
