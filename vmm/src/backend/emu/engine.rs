//! One Unicorn engine per VM: guest memory, hooks, the CPU model, and the saved CPU state of
//! every vCPU. All vCPUs of a VM run on this one engine, one at a time, so they share one
//! translation cache (the guest kernel patches its own code at run time and every vCPU must
//! see the patched code); switching vCPUs swaps the CPU state and flushes the TLB.

use std::ffi::c_void;
use std::ptr::null_mut;

use unicorn_engine::{
    uc_close, uc_context, uc_context_alloc, uc_context_free, uc_context_restore, uc_context_save,
    uc_ctl, uc_engine, uc_error, uc_hook, uc_hook_add, uc_mem_map_ptr, uc_mmio_map, uc_open, Arch,
    ControlType, HookType, Mode, Prot, TlbType, X86Insn,
};

use super::counting::HookState;
use super::hooks::{self, MmioRegion};
use super::internals::{self as int, Cpu};
use super::{interrupts, syscall};
use crate::cpu_model::cpuid;
use crate::vcpu::VcpuError;

const BACKEND: &str = "emu";

pub(super) fn unavailable(reason: impl Into<String>) -> VcpuError {
    VcpuError::Unavailable {
        backend: BACKEND,
        reason: reason.into(),
    }
}

pub(super) fn uc_check(what: &str, err: uc_error) -> Result<(), VcpuError> {
    if err == uc_error::OK {
        Ok(())
    } else {
        Err(unavailable(format!("{what} failed: {err:?}")))
    }
}

pub(super) struct Engine {
    pub uc: *mut uc_engine,
    /// From `Box::into_raw`: hooks hold this address for the engine's whole life, and it is
    /// only dereferenced in short borrows that never span a call into Unicorn that can run
    /// hooks (`uc_emu_start`), so Rust never assumes it unchanged across one.
    state: *mut HookState,
    /// Boxed for stable addresses: the MMIO callbacks hold them.
    #[allow(clippy::vec_box)]
    _regions: Vec<Box<MmioRegion>>,
    contexts: Vec<*mut uc_context>,
    /// The vCPU whose state is loaded in the engine.
    current: u32,
}

// SAFETY: the engine is only ever used through `Mutex<Engine>` (one thread at a time), and
// neither Unicorn nor the raw pointers here depend on the thread that created them (QEMU's
// only thread-local in this build is a random generator Unicorn's x86 target never uses).
unsafe impl Send for Engine {}

impl Engine {
    /// # Safety
    /// Every `(guest_phys, host_ptr, len)` in `ram` must stay valid, writable and unaliased by
    /// Rust references for the engine's lifetime; the guest writes it at any time.
    pub unsafe fn new(
        ram: &[(u64, *mut u8, usize)],
        mmio: &[(u64, u64)],
        vcpu_count: u32,
        code_buffer_bytes: Option<u32>,
    ) -> Result<Engine, VcpuError> {
        if vcpu_count == 0 {
            return Err(unavailable("a VM needs at least one vCPU"));
        }
        let mut uc: *mut uc_engine = null_mut();
        // SAFETY: plain constructor; `uc` receives the handle.
        uc_check("uc_open", unsafe {
            uc_open(Arch::X86, Mode::MODE_64, &mut uc)
        })?;
        let mut engine = Engine {
            uc,
            state: Box::into_raw(Box::new(HookState::new(
                uc,
                Cpu {
                    cs: null_mut(),
                    env: null_mut(),
                },
                vcpu_count,
            ))),
            _regions: Vec::new(),
            contexts: Vec::new(),
            current: 0,
        };
        // SAFETY: `state` is boxed and freed only after uc_close, so the counter outlives
        // the engine; no code has been translated yet.
        unsafe { int::uc_detvm_set_counter(uc.cast(), (&raw mut (*engine.state).counter).cast()) };
        let write = |c: ControlType| ControlType(c.0 | ControlType::IO_WRITE.0);
        if let Some(bytes) = code_buffer_bytes {
            // SAFETY: a uint32_t argument; before the engine initialises (the first control
            // below), which is when the buffer is allocated.
            uc_check("code buffer size", unsafe {
                uc_ctl(uc, write(ControlType::TCG_BUFFER_SIZE), bytes)
            })?;
        }
        // SAFETY: uc_ctl with the argument types these controls take (an int each).
        unsafe {
            uc_check(
                "TLB mode",
                uc_ctl(uc, write(ControlType::TLB_TYPE), TlbType::CPU as i32),
            )?;
            // `until` of uc_emu_start is translated through the guest MMU after each run and
            // clobbers CR2: use the exits list, left empty, instead.
            uc_check(
                "exits mode",
                uc_ctl(uc, write(ControlType::UC_USE_EXITS), 1i32),
            )?;
        }
        for &(gpa, ptr, len) in ram {
            if gpa % 4096 != 0 || len % 4096 != 0 || len == 0 {
                return Err(unavailable(format!(
                    "RAM at {gpa:#x} (+{len:#x}) is not page aligned"
                )));
            }
            // SAFETY: the caller guarantees the memory (see above).
            uc_check("mapping RAM", unsafe {
                uc_mem_map_ptr(uc, gpa, len as u64, Prot::ALL.0, ptr.cast())
            })?;
        }
        // SAFETY: the CPU exists once the machine is initialised (by the calls above).
        let cpu = unsafe { Cpu::from_uc(uc.cast()) }
            .ok_or_else(|| unavailable("Unicorn created no CPU"))?;
        engine.state_mut().cpu = cpu;
        let state_ptr = engine.state;
        for &(base, size) in mmio {
            if base % 4096 != 0 || size % 4096 != 0 || size == 0 {
                return Err(unavailable(format!(
                    "MMIO at {base:#x} (+{size:#x}) is not page aligned"
                )));
            }
            let mut region = Box::new(MmioRegion {
                state: state_ptr,
                base,
            });
            let rp: *mut MmioRegion = &mut *region;
            // SAFETY: the callbacks get `rp`, owned by the engine until uc_close.
            let err = unsafe {
                uc_mmio_map(
                    uc,
                    base,
                    size,
                    Some(hooks::on_mmio_read),
                    rp.cast(),
                    Some(hooks::on_mmio_write),
                    rp.cast(),
                )
            };
            uc_check("mapping MMIO", err)?;
            engine._regions.push(region);
        }
        engine.apply_cpu_model();
        engine.add_hooks(state_ptr.cast())?;
        for _ in 0..vcpu_count {
            let mut ctx: *mut uc_context = null_mut();
            // SAFETY: allocates and fills a context for this engine.
            unsafe {
                uc_check("context alloc", uc_context_alloc(uc, &mut ctx))?;
                engine.contexts.push(ctx);
                uc_check("context save", uc_context_save(uc, ctx))?;
            }
        }
        Ok(engine)
    }

    /// Makes Unicorn execute exactly the model's features: CPUID only describes them, the
    /// translator decides by these words (RDRAND/RDSEED/RDTSCP/MONITOR become #UD).
    fn apply_cpu_model(&self) {
        let cpu = self.state().cpu;
        let r1 = cpuid(1, 0, 0, 1);
        let r7 = cpuid(7, 0, 0, 1);
        let e1 = cpuid(0x8000_0001, 0, 0, 1);
        let xs = cpuid(0xd, 0, 0, 1);
        let words = [
            (int::FEAT_1_EDX, r1[3]),
            (int::FEAT_1_ECX, r1[2]),
            (int::FEAT_7_0_EBX, r7[1]),
            (int::FEAT_7_0_ECX, r7[2]),
            (int::FEAT_7_0_EDX, r7[3]),
            (int::FEAT_8000_0001_EDX, e1[3]),
            (int::FEAT_8000_0001_ECX, e1[2]),
            (int::FEAT_XSAVE, cpuid(0xd, 1, 0, 1)[0]),
            (int::FEAT_6_EAX, cpuid(6, 0, 0, 1)[0]),
            (int::FEAT_XSAVE_COMP_LO, xs[0]),
            (int::FEAT_XSAVE_COMP_HI, xs[3]),
        ];
        for (word, v) in words {
            cpu.set_feature(word, v as u64);
        }
    }

    fn add_hooks(&mut self, ud: *mut c_void) -> Result<(), VcpuError> {
        let uc = self.uc;
        let add =
            |kind: HookType, cb: *mut c_void, insn: Option<X86Insn>| -> Result<(), VcpuError> {
                let mut h: uc_hook = 0;
                // SAFETY: `cb` has the C signature Unicorn expects for `kind` (see hooks.rs);
                // begin > end means every address; INSN hooks take the instruction id.
                let err = unsafe {
                    match insn {
                        Some(i) => uc_hook_add(uc, &mut h, kind.0 as i32, cb, ud, 1, 0, i as i32),
                        None => uc_hook_add(uc, &mut h, kind.0 as i32, cb, ud, 1, 0),
                    }
                };
                uc_check("adding a hook", err)
            };
        add(HookType::BLOCK, hooks::on_block as *mut c_void, None)?;
        add(
            HookType::INTR,
            interrupts::on_interrupt as *mut c_void,
            None,
        )?;
        add(
            HookType::INSN_INVALID,
            interrupts::on_invalid as *mut c_void,
            None,
        )?;
        add(
            HookType::INSN,
            hooks::on_in as *mut c_void,
            Some(X86Insn::IN),
        )?;
        add(
            HookType::INSN,
            hooks::on_out as *mut c_void,
            Some(X86Insn::OUT),
        )?;
        add(
            HookType::INSN,
            hooks::on_cpuid as *mut c_void,
            Some(X86Insn::CPUID),
        )?;
        add(
            HookType::INSN,
            hooks::on_rdtsc as *mut c_void,
            Some(X86Insn::RDTSC),
        )?;
        add(
            HookType::INSN,
            syscall::on_syscall as *mut c_void,
            Some(X86Insn::SYSCALL),
        )?;
        Ok(())
    }

    pub fn state(&self) -> &HookState {
        // SAFETY: see the field; `&self` means no emulation runs on this engine now.
        unsafe { &*self.state }
    }

    pub fn state_mut(&mut self) -> &mut HookState {
        // SAFETY: as above.
        unsafe { &mut *self.state }
    }

    /// For code that must not hold a borrow across `uc_emu_start`.
    pub fn state_ptr(&self) -> *mut HookState {
        self.state
    }

    /// Loads vCPU `index`'s state into the engine (saving the current one's).
    pub fn switch_to(&mut self, index: u32) -> Result<(), VcpuError> {
        let count = self.contexts.len() as u32;
        if index >= count {
            return Err(unavailable(format!("vCPU {index} of {count}")));
        }
        self.state_mut().vcpu_index = index;
        if index == self.current {
            return Ok(());
        }
        let uc = self.uc;
        // SAFETY: both contexts belong to this engine.
        unsafe {
            uc_check(
                "context save",
                uc_context_save(uc, self.contexts[self.current as usize]),
            )?;
            uc_check(
                "context restore",
                uc_context_restore(uc, self.contexts[index as usize]),
            )?;
        }
        self.current = index;
        self.flush_tlb()
    }

    /// The loaded vCPU's CPU context: the bytes `uc_context_save` copies (see
    /// [`crate::vcpu::VcpuState::Emu`]), with the bytes no guest can see zeroed (the
    /// upper parts of the vector registers, the last TLB fill's host return address):
    /// they hold host addresses, and the same state must give the same bytes in every
    /// process and on every host. Only between runs.
    pub fn cpu_context(&self) -> Vec<u8> {
        let len = self.context_size();
        // SAFETY: the context is the first `len` bytes of the live CPUX86State, and no
        // emulation runs while `&self` is held.
        let live = unsafe { std::slice::from_raw_parts(self.state().cpu.env as *const u8, len) };
        let mut bytes = live.to_vec();
        for r in 0..int::ZMM_COUNT {
            let at = int::ENV_XMM_REGS + r * int::ZMM_SIZE;
            bytes[at + int::XMM_SIZE..at + int::ZMM_SIZE].fill(0);
        }
        bytes[int::ENV_RETADDR..int::ENV_RETADDR + 8].fill(0);
        bytes
    }

    /// Loads `bytes` from [`Self::cpu_context`] of an engine of the same build into the
    /// loaded vCPU, as `uc_context_restore` would.
    pub fn set_cpu_context(&mut self, bytes: &[u8]) -> Result<(), VcpuError> {
        let len = self.context_size();
        if bytes.len() != len {
            return Err(unavailable(format!(
                "a saved CPU context of {} bytes does not fit this engine's {len} \
                 (a snapshot from another Unicorn build?)",
                bytes.len()
            )));
        }
        // SAFETY: as in `cpu_context`; the pointer fields inside (QEMU's breakpoint
        // pointers) are null in every context detvm saves: it sets no breakpoints.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.state().cpu.env.cast(), len);
        }
        self.flush_tlb()
    }

    fn context_size(&self) -> usize {
        // SAFETY: every context of this engine was allocated by uc_context_alloc.
        unsafe { int::context_size(self.contexts[0]) }
    }

    /// After CR3, paging or vCPU changes made outside guest code.
    pub fn flush_tlb(&mut self) -> Result<(), VcpuError> {
        let c = ControlType(ControlType::TLB_FLUSH.0 | ControlType::IO_WRITE.0);
        // SAFETY: a control without arguments.
        uc_check("TLB flush", unsafe { uc_ctl(self.uc, c) })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: the contexts, the engine and `state` (from Box::into_raw) are ours; the hook
        // data is freed only after uc_close, once nothing can call the hooks.
        unsafe {
            for &c in &self.contexts {
                uc_context_free(c);
            }
            uc_close(self.uc);
            drop(Box::from_raw(self.state));
        }
    }
}
