//! Every use of Unicorn's private state lives here, pinned to unicorn-engine 2.1.5.
//!
//! Unicorn's public API cannot deliver exceptions through the IDT, change privilege level,
//! read the #PF error code or count instructions cheaply. QEMU, underneath, can: we call a
//! few of its exported (non-static) functions and read a few fields of its CPU state and
//! translation blocks. The offsets below were computed from the C headers of 2.1.5
//! (`CPUX86State` in qemu/target/i386/cpu.h, `CPUState` in qemu/include/hw/core/cpu.h,
//! `TranslationBlock` in qemu/include/exec/exec-all.h, `struct uc_struct` in
//! include/uc_priv.h) with a small C program compiled with Unicorn's own flags, and every
//! one is proven at start-up by [`super::selfcheck`] before a vCPU is handed out.

use std::ffi::c_void;

/// The Unicorn release these offsets belong to (Cargo pins it with `=2.1.5`).
pub const PINNED_VERSION: &str = "unicorn-engine 2.1.5";

// struct uc_struct
const UC_CPU: usize = 440;

// CPUState (X86CPU begins with it)
const CS_CFLAGS_NEXT_TB: usize = 24;
const CS_ENV_PTR: usize = 296;
const CS_MEM_IO_PC: usize = 33144;
const CS_CLUSTER_INDEX: usize = 33172;
const CS_HALTED: usize = 33176;
/// X86CPU.neg.icount_decr: negative while an exit from the TB is requested.
const CPU_ICOUNT_DECR: usize = 35392;
/// X86CPU.env
pub const CPU_ENV: usize = 35408;

// CPUX86State
pub const ENV_REGS: usize = 0;
pub const ENV_EIP: usize = 128;
pub const ENV_EFLAGS: usize = 136;
pub const ENV_HFLAGS: usize = 176;
pub const ENV_SEGS: usize = 184;
pub const ENV_LDT: usize = 328;
pub const ENV_TR: usize = 352;
pub const ENV_GDT: usize = 376;
pub const ENV_IDT: usize = 400;
pub const ENV_CR: usize = 424;
pub const ENV_EFER: usize = 592;
pub const ENV_STAR: usize = 4824;
pub const ENV_LSTAR: usize = 4840;
pub const ENV_CSTAR: usize = 4848;
pub const ENV_FMASK: usize = 4856;
pub const ENV_ERROR_CODE: usize = 5384;
pub const ENV_EXCEPTION_IS_INT: usize = 5388;
pub const ENV_EXCEPTION_NEXT_EIP: usize = 5392;
pub const ENV_OLD_EXCEPTION: usize = 5496;
/// `ZMMReg xmm_regs[32]`: 64 bytes each, of which the guest sees the low 16 (QEMU 5's
/// TCG has no AVX); helpers copy whole registers through host stack temporaries, so the
/// rest holds host bytes.
pub const ENV_XMM_REGS: usize = 824;
pub const ZMM_SIZE: usize = 64;
pub const ZMM_COUNT: usize = 32;
pub const XMM_SIZE: usize = 16;
/// `uintptr_t retaddr`: the host return address of the last TLB fill, the saved
/// context's last field (`end_reset_fields` follows it).
pub const ENV_RETADDR: usize = 5560;
/// `uint64_t features[FEATURE_WORDS]`, outside the saved context (shared by all vCPUs).
pub const ENV_FEATURES: usize = 5632;
pub const SEG_SIZE: usize = 24;

// SegmentCache
pub const SEG_SELECTOR: usize = 0;
pub const SEG_BASE: usize = 8;
pub const SEG_LIMIT: usize = 16;
pub const SEG_FLAGS: usize = 20;

// FeatureWord indices
pub const FEAT_1_EDX: usize = 0;
pub const FEAT_1_ECX: usize = 1;
pub const FEAT_7_0_EBX: usize = 2;
pub const FEAT_7_0_ECX: usize = 3;
pub const FEAT_7_0_EDX: usize = 4;
pub const FEAT_8000_0001_EDX: usize = 6;
pub const FEAT_8000_0001_ECX: usize = 7;
pub const FEAT_XSAVE: usize = 19;
pub const FEAT_6_EAX: usize = 20;
pub const FEAT_XSAVE_COMP_LO: usize = 21;
pub const FEAT_XSAVE_COMP_HI: usize = 22;

// TranslationBlock
const TB_PC: usize = 0;
const TB_CS_BASE: usize = 8;
const TB_FLAGS: usize = 16;
const TB_SIZE: usize = 20;
const TB_ICOUNT: usize = 22;
const TB_CFLAGS: usize = 24;
const TB_TC_PTR: usize = 32;
const TB_TC_SIZE: usize = 40;

pub const CF_COUNT_MASK: u32 = 0x7fff;
const CF_INVALID: u32 = 0x0004_0000;
const CF_CLUSTER_MASK: u32 = 0xff00_0000;
/// TARGET_INSN_START_WORDS on i386: (pc, cc_op) per instruction.
const INSN_START_WORDS: usize = 2;
/// GETPC_ADJ on x86 hosts.
const GETPC_ADJ: usize = 2;

// hflags / eflags / descriptor bits (qemu/target/i386/cpu.h)
pub const HF_CPL_MASK: u32 = 3;
pub const HF_INHIBIT_IRQ_MASK: u32 = 1 << 3;
pub const HF_CS32_MASK: u32 = 1 << 4;
pub const HF_SS32_MASK: u32 = 1 << 5;
pub const HF_ADDSEG_MASK: u32 = 1 << 6;
pub const HF_LMA_MASK: u32 = 1 << 14;
pub const HF_CS64_MASK: u32 = 1 << 15;
pub const DESC_P_MASK: u32 = 1 << 15;
const TB_EFLAGS_MASK: u64 = 0x3000 | 0x100 | 0x1_0000 | 0x2_0000 | 0x4_0000; // IOPL TF RF VM AC

pub const R_CS: usize = 1;
pub const R_SS: usize = 2;

/// The CPU-state size a context holds: `uc_context.context_size`, its first field (a
/// `size_t`), set by `uc_context_alloc` to `offsetof(CPUX86State, end_reset_fields)`.
///
/// # Safety
/// `ctx` must come from `uc_context_alloc`.
pub unsafe fn context_size(ctx: *const unicorn_engine::uc_context) -> usize {
    // SAFETY: the caller guarantees a live context; its first field is a size_t.
    unsafe { rd(ctx.cast(), 0) }
}

/// Opaque QEMU types: only ever handled by pointer.
pub type CpuState = c_void;
pub type Env = c_void;

extern "C" {
    /// Delivers `cs->exception_index` through the IDT (QEMU's own `do_interrupt_all`), then
    /// clears the previous-exception record. May longjmp into the CPU loop when delivery
    /// itself faults; only call it from inside `uc_emu_start`.
    #[link_name = "x86_cpu_do_interrupt_x86_64"]
    pub fn x86_cpu_do_interrupt(cs: *mut CpuState);
    /// Delivers an external interrupt (no error code). Same longjmp rule.
    #[link_name = "do_interrupt_x86_hardirq_x86_64"]
    pub fn do_interrupt_x86_hardirq(env: *mut Env, intno: i32, is_hw: i32);
    // The next three never return (they longjmp), but are declared as returning on purpose:
    // with `-> !` the optimiser may drop our bookkeeping stores made just before the call
    // through `&mut` references, since nothing "after" could observe them.
    /// Leaves the current translation block for the CPU loop (longjmp).
    #[link_name = "cpu_loop_exit_x86_64"]
    pub fn cpu_loop_exit(cs: *mut CpuState);
    /// Restores guest state to the instruction at host address `retaddr`, then leaves.
    #[link_name = "cpu_loop_exit_restore_x86_64"]
    pub fn cpu_loop_exit_restore(cs: *mut CpuState, retaddr: usize);
    /// Raises an exception at the current instruction (longjmp).
    #[link_name = "raise_exception_err_x86_64"]
    pub fn raise_exception_err(env: *mut Env, intno: i32, error_code: i32);
    /// Where the generated code stores the TB whose block hook runs (patched Unicorn:
    /// vendor/unicorn-engine-sys/PATCHES.md).
    pub fn uc_detvm_block_hook_tb_slot(uc: *mut c_void) -> *const *const u8;
    /// Makes new TBs count instructions in `counter` (patched Unicorn, as above).
    pub fn uc_detvm_set_counter(uc: *mut c_void, counter: *mut c_void);
    #[link_name = "tb_htable_lookup_x86_64"]
    fn tb_htable_lookup(
        cs: *mut CpuState,
        pc: u64,
        cs_base: u64,
        flags: u32,
        cf_mask: u32,
    ) -> *const u8;
}

/// Raw pointers into one engine's CPU. Valid as long as the engine is open.
#[derive(Clone, Copy)]
pub struct Cpu {
    pub cs: *mut CpuState,
    pub env: *mut Env,
}

/// Reads a `T` at `base + off`.
///
/// # Safety
/// `base + off` must be a valid, aligned `T` inside a live QEMU object.
unsafe fn rd<T: Copy>(base: *const c_void, off: usize) -> T {
    // SAFETY: the caller guarantees the location (offsets are proven by the self-check).
    unsafe { base.cast::<u8>().add(off).cast::<T>().read() }
}

/// # Safety
/// As [`rd`], and nothing else may hold a reference to that field.
unsafe fn wr<T: Copy>(base: *mut c_void, off: usize, v: T) {
    // SAFETY: as above.
    unsafe { base.cast::<u8>().add(off).cast::<T>().write(v) }
}

impl Cpu {
    /// # Safety
    /// `uc` must be an open x86-64 engine whose CPU exists (after the first `uc_reg_write`).
    pub unsafe fn from_uc(uc: *mut c_void) -> Option<Cpu> {
        // SAFETY: `uc` is a live uc_struct; `cpu` is a pointer field.
        let cs: *mut CpuState = unsafe { rd(uc, UC_CPU) };
        if cs.is_null() {
            return None;
        }
        // SAFETY: `cs` is the live CPUState; env_ptr is a pointer field.
        let env: *mut Env = unsafe { rd(cs, CS_ENV_PTR) };
        Some(Cpu { cs, env })
    }

    pub fn env_matches_layout(&self) -> bool {
        self.env as usize == self.cs as usize + CPU_ENV
    }

    // All accessors below: SAFETY: `self` points into a live engine (see `from_uc`), the
    // offsets are the proven 2.1.5 layout, and QEMU is not running concurrently (one thread
    // drives the engine; hooks run on that thread).

    pub fn env_u64(&self, off: usize) -> u64 {
        // SAFETY: see above.
        unsafe { rd(self.env, off) }
    }
    pub fn set_env_u64(&self, off: usize, v: u64) {
        // SAFETY: see above.
        unsafe { wr(self.env, off, v) }
    }
    pub fn env_u32(&self, off: usize) -> u32 {
        // SAFETY: see above.
        unsafe { rd(self.env, off) }
    }
    pub fn set_env_u32(&self, off: usize, v: u32) {
        // SAFETY: see above.
        unsafe { wr(self.env, off, v) }
    }
    pub fn env_i32(&self, off: usize) -> i32 {
        // SAFETY: see above.
        unsafe { rd(self.env, off) }
    }
    pub fn set_env_i32(&self, off: usize, v: i32) {
        // SAFETY: see above.
        unsafe { wr(self.env, off, v) }
    }
    pub fn eip(&self) -> u64 {
        self.env_u64(ENV_EIP)
    }
    pub fn set_eip(&self, v: u64) {
        self.set_env_u64(ENV_EIP, v)
    }
    pub fn hflags(&self) -> u32 {
        self.env_u32(ENV_HFLAGS)
    }
    pub fn set_hflags(&self, v: u32) {
        self.set_env_u32(ENV_HFLAGS, v)
    }
    pub fn cr(&self, n: usize) -> u64 {
        self.env_u64(ENV_CR + 8 * n)
    }
    /// Writes CR2 only (no side effects, unlike CR0/3/4).
    pub fn set_cr2(&self, v: u64) {
        self.set_env_u64(ENV_CR + 16, v)
    }
    pub fn seg_base(&self, seg: usize) -> u64 {
        self.env_u64(ENV_SEGS + seg * SEG_SIZE + SEG_BASE)
    }
    /// (selector, base, limit, flags) of a segment cache at `off` (segs[i], ldt, tr, gdt, idt).
    pub fn seg_at(&self, off: usize) -> (u32, u64, u32, u32) {
        (
            self.env_u32(off + SEG_SELECTOR),
            self.env_u64(off + SEG_BASE),
            self.env_u32(off + SEG_LIMIT),
            self.env_u32(off + SEG_FLAGS),
        )
    }
    pub fn set_seg_at(&self, off: usize, (sel, base, limit, flags): (u32, u64, u32, u32)) {
        self.set_env_u32(off + SEG_SELECTOR, sel);
        self.set_env_u64(off + SEG_BASE, base);
        self.set_env_u32(off + SEG_LIMIT, limit);
        self.set_env_u32(off + SEG_FLAGS, flags);
    }
    pub fn set_feature(&self, word: usize, v: u64) {
        self.set_env_u64(ENV_FEATURES + 8 * word, v)
    }
    pub fn old_exception(&self) -> i32 {
        self.env_i32(ENV_OLD_EXCEPTION)
    }
    pub fn set_old_exception(&self, v: i32) {
        self.set_env_i32(ENV_OLD_EXCEPTION, v)
    }
    pub fn halted(&self) -> u32 {
        // SAFETY: see above.
        unsafe { rd(self.cs, CS_HALTED) }
    }
    /// Compile flags for the next translation block only (instruction limit in the low bits).
    pub fn set_cflags_next_tb(&self, v: u32) {
        // SAFETY: see above.
        unsafe { wr(self.cs, CS_CFLAGS_NEXT_TB, v) }
    }
    pub fn mem_io_pc(&self) -> usize {
        // SAFETY: see above.
        unsafe { rd(self.cs, CS_MEM_IO_PC) }
    }
    /// True while the CPU loop will leave at the next exit check (e.g. after `uc_emu_stop`).
    pub fn exit_requested(&self) -> bool {
        // SAFETY: see above.
        unsafe { rd::<i32>(self.cs, CPU_ICOUNT_DECR) < 0 }
    }

    /// The translation block about to run at `pc` with byte size `size`, found in QEMU's
    /// hash table (by the physical page `pc` maps to now). Not in the jump cache: the
    /// patched Unicorn keeps its entries across TLB flushes and proves an older entry only
    /// when QEMU itself looks it up, so an entry here may belong to another address space.
    /// Called from the block hook, before the block's first instruction, as a fallback.
    pub fn current_tb(&self, pc: u64, size: u32, forced_cflags: u32) -> Option<Tb> {
        let cs_base = self.seg_base(R_CS);
        let flags = self.hflags() | (self.env_u64(ENV_EFLAGS) & TB_EFLAGS_MASK) as u32;
        let matches = |tb: *const u8| -> bool {
            if tb.is_null() {
                return false;
            }
            let t = Tb(tb);
            t.pc() == pc
                && t.cs_base() == cs_base
                && t.flags() == flags
                && t.size() == size
                && t.cflags() & CF_INVALID == 0
        };
        // Lookups carry the CPU's cluster in the top bits, as `tb_lookup__cpu_state` does.
        // SAFETY: see above.
        let cluster = (unsafe { rd::<i32>(self.cs, CS_CLUSTER_INDEX) } as u32) << 24;
        for cf in [cluster, (forced_cflags & !CF_CLUSTER_MASK) | cluster] {
            // SAFETY: plain lookup in QEMU's TB hash table; it reads the TLB for the code
            // page, which the block about to run has just filled.
            let tb = unsafe { tb_htable_lookup(self.cs, pc, cs_base, flags, cf) };
            if matches(tb) {
                return Some(Tb(tb));
            }
        }
        None
    }
}

/// The TB the patched Unicorn published for the running block hook, if it is the block
/// at `pc` of `size` bytes (it always is; anything else falls back to [`Cpu::current_tb`]).
///
/// # Safety
/// `slot` comes from `uc_detvm_block_hook_tb_slot` of the open engine, and this is
/// called from its block hook.
pub unsafe fn hooked_tb(slot: *const *const u8, pc: u64, size: u32) -> Option<Tb> {
    // SAFETY: the slot is a pointer field of the live engine; the generated code has just
    // stored the running TB in it.
    let tb: *const u8 = unsafe { slot.read() };
    Some(Tb(tb)).filter(|t| !tb.is_null() && t.pc() == pc && t.size() == size)
}

/// A translation block (pointer into the JIT region; valid until the next TB flush).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Tb(*const u8);

impl Tb {
    pub fn from_addr(addr: u64) -> Tb {
        Tb(addr as usize as *const u8)
    }
    pub fn addr(&self) -> u64 {
        self.0 as usize as u64
    }
    // SAFETY (all field reads): `self.0` came from the jump cache or hash table in this
    // engine and TBs are only freed by a TB flush, which the callers rule out (see
    // `super::counting`).
    pub fn pc(&self) -> u64 {
        // SAFETY: see above.
        unsafe { rd(self.0.cast(), TB_PC) }
    }
    fn cs_base(&self) -> u64 {
        // SAFETY: see above.
        unsafe { rd(self.0.cast(), TB_CS_BASE) }
    }
    fn flags(&self) -> u32 {
        // SAFETY: see above.
        unsafe { rd(self.0.cast(), TB_FLAGS) }
    }
    pub fn size(&self) -> u32 {
        // SAFETY: see above.
        unsafe { rd::<u16>(self.0.cast(), TB_SIZE) as u32 }
    }
    pub fn icount(&self) -> u32 {
        // SAFETY: see above.
        unsafe { rd::<u16>(self.0.cast(), TB_ICOUNT) as u32 }
    }
    pub fn cflags(&self) -> u32 {
        // SAFETY: see above.
        unsafe { rd(self.0.cast(), TB_CFLAGS) }
    }

    /// Guest pc and host code end offset of every instruction, decoded from the search
    /// data QEMU stores after the host code (`encode_search` in translate-all.c).
    pub fn insns(&self) -> Vec<(u64, usize)> {
        let n = self.icount() as usize;
        let mut out = Vec::with_capacity(n);
        // SAFETY: tc.ptr/tc.size describe this TB's host code; the search data follows it
        // and holds `icount` rows of sleb128 numbers (see above for liveness).
        unsafe {
            let code: *const u8 = rd(self.0.cast(), TB_TC_PTR);
            let code_size: usize = rd(self.0.cast(), TB_TC_SIZE);
            let mut p = code.add(code_size);
            let mut data = [self.pc(), 0];
            let mut host = 0usize;
            for _ in 0..n {
                for d in data.iter_mut().take(INSN_START_WORDS) {
                    *d = d.wrapping_add(sleb128(&mut p) as u64);
                }
                host = host.wrapping_add(sleb128(&mut p) as usize);
                out.push((data[0], host));
            }
        }
        out
    }

    /// Index of the instruction starting at guest `pc`, if it is one of this block's.
    pub fn index_of_pc(&self, pc: u64) -> Option<u32> {
        self.insns()
            .iter()
            .position(|&(p, _)| p == pc)
            .map(|i| i as u32)
    }

    /// Index of the instruction whose host code contains return address `host_pc`.
    pub fn index_of_host_pc(&self, host_pc: usize) -> Option<u32> {
        // SAFETY: as in `insns`.
        let code: usize = unsafe { rd::<usize>(self.0.cast(), TB_TC_PTR) };
        let off = host_pc.checked_sub(code)?.checked_sub(GETPC_ADJ)?;
        self.insns()
            .iter()
            .position(|&(_, end)| end > off)
            .map(|i| i as u32)
    }
}

/// # Safety
/// `*p` must point at a well-formed sleb128 number.
unsafe fn sleb128(p: &mut *const u8) -> i64 {
    let mut val: i64 = 0;
    let mut shift = 0u32;
    loop {
        // SAFETY: the caller guarantees the encoding is complete.
        let byte = unsafe { p.read() };
        // SAFETY: as above.
        *p = unsafe { p.add(1) };
        if shift < 64 {
            val |= ((byte & 0x7f) as i64) << shift;
        }
        shift += 7;
        if byte & 0x80 == 0 {
            if shift < 64 && byte & 0x40 != 0 {
                val |= -1i64 << shift;
            }
            return val;
        }
    }
}
