//! [`EmuMachine`] (one engine per VM) and [`EmuVcpu`] (the `Vcpu` implementation).

use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs};
use unicorn_engine::{uc_emu_start, uc_error, uc_reg_read, uc_reg_write, uc_x86_msr, RegisterX86};

use super::counting::{HookState, Mode, Stop};
use super::engine::Engine;
use super::hooks::{reg, set_reg};
use super::internals::{self as int, Cpu};
use crate::vcpu::{GuestIo, Vcpu, VcpuError, VcpuExit, VcpuState};

const IF: u64 = 1 << 9;

/// One VM's software CPU: the engine all its vCPUs share (see `engine.rs`).
#[derive(Clone)]
pub struct EmuMachine {
    engine: Arc<Mutex<Engine>>,
    vcpu_count: u32,
    /// Indices already handed out: two handles on one vCPU would share its state.
    taken: Arc<Mutex<Vec<bool>>>,
}

impl EmuMachine {
    /// Builds the engine over guest RAM the core owns and the MMIO windows it emulates.
    ///
    /// # Safety
    /// Each `(guest_phys, host_ptr, len)` in `ram` must stay valid and writable until the
    /// machine and every vCPU from it are dropped, and must not be accessed through Rust
    /// references while a vCPU runs (the guest writes it). Addresses and lengths must be
    /// 4 KiB aligned.
    pub unsafe fn new(
        ram: &[(u64, *mut u8, usize)],
        mmio: &[(u64, u64)],
        vcpu_count: u32,
    ) -> Result<Self, VcpuError> {
        super::selfcheck::verify()?;
        // SAFETY: forwarded contract.
        unsafe { Self::new_unchecked(ram, mmio, vcpu_count) }
    }

    /// [`Self::new`] without the start-up self-check (used by the self-check itself).
    ///
    /// # Safety
    /// As [`Self::new`].
    pub(super) unsafe fn new_unchecked(
        ram: &[(u64, *mut u8, usize)],
        mmio: &[(u64, u64)],
        vcpu_count: u32,
    ) -> Result<Self, VcpuError> {
        // SAFETY: forwarded contract.
        unsafe { Self::with_code_buffer(ram, mmio, vcpu_count, None) }
    }

    /// [`Self::new_unchecked`] with QEMU's translated-code buffer limited to `bytes` (tests:
    /// a small buffer fills and is flushed often; QEMU's minimum is 1 MiB, its default 1 GiB).
    ///
    /// # Safety
    /// As [`Self::new`].
    pub(super) unsafe fn with_code_buffer(
        ram: &[(u64, *mut u8, usize)],
        mmio: &[(u64, u64)],
        vcpu_count: u32,
        code_buffer_bytes: Option<u32>,
    ) -> Result<Self, VcpuError> {
        // SAFETY: forwarded contract.
        let engine = unsafe { Engine::new(ram, mmio, vcpu_count, code_buffer_bytes)? };
        Ok(EmuMachine {
            engine: Arc::new(Mutex::new(engine)),
            vcpu_count,
            taken: Arc::new(Mutex::new(vec![false; vcpu_count as usize])),
        })
    }

    /// The vCPU `index`; each index can be taken once.
    pub fn vcpu(&self, index: u32) -> Result<EmuVcpu, VcpuError> {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        match taken.get_mut(index as usize) {
            Some(t) if !*t => *t = true,
            Some(_) => return Err(backend_err(0, format!("vCPU {index} was already taken"))),
            None => {
                let n = self.vcpu_count;
                return Err(backend_err(
                    0,
                    format!("vCPU {index} does not exist (the VM has {n})"),
                ));
            }
        }
        Ok(EmuVcpu {
            engine: self.engine.clone(),
            index,
            retired: 0,
            pending: None,
        })
    }
}

/// A vCPU of an [`EmuMachine`]. The core runs one vCPU of a VM at a time (the engine is
/// locked for the duration of each call).
pub struct EmuVcpu {
    engine: Arc<Mutex<Engine>>,
    index: u32,
    retired: u64,
    /// An exit that happened outside `run` (a triple fault while injecting).
    pending: Option<VcpuExit>,
}

fn lock(engine: &Mutex<Engine>, index: u32) -> Result<MutexGuard<'_, Engine>, VcpuError> {
    let mut e = engine.lock().unwrap_or_else(|p| p.into_inner());
    e.switch_to(index)?;
    Ok(e)
}

fn backend_err(rip: u64, reason: impl Into<String>) -> VcpuError {
    VcpuError::Backend {
        backend: "emu",
        rip,
        reason: reason.into(),
    }
}

impl EmuVcpu {
    /// A single-vCPU convenience: a private [`EmuMachine`] and its vCPU `index` of `count`
    /// (for SMP, create one `EmuMachine` and take every vCPU from it).
    ///
    /// # Safety
    /// As [`EmuMachine::new`].
    pub unsafe fn new(
        ram: &[(u64, *mut u8, usize)],
        mmio: &[(u64, u64)],
        index: u32,
        count: u32,
    ) -> Result<Self, VcpuError> {
        // SAFETY: forwarded contract.
        unsafe { EmuMachine::new(ram, mmio, count)?.vcpu(index) }
    }

    /// Locks the engine with this vCPU's state loaded.
    fn engine(&self) -> Result<MutexGuard<'_, Engine>, VcpuError> {
        lock(&self.engine, self.index)
    }

    /// Runs `f` on this vCPU's loaded CPU state (self-check and tests).
    pub(super) fn with_cpu<R>(&self, f: impl FnOnce(&Engine, Cpu) -> R) -> Result<R, VcpuError> {
        let eng = self.engine()?;
        let cpu = eng.state().cpu;
        Ok(f(&eng, cpu))
    }
}

/// Runs `uc_emu_start` until an exit for the core; see `counting.rs` for the stop reasons.
fn run_loop(eng: &mut Engine) -> Result<VcpuExit, VcpuError> {
    let uc = eng.uc;
    let sp = eng.state_ptr();
    loop {
        let (cpu, rip) = {
            // SAFETY: no emulation runs; this borrow ends before uc_emu_start.
            let st = unsafe { &mut *sp };
            // -1: no limit (also drops a restart QEMU left for another vCPU).
            let next = if st.forced_cflags != 0 {
                st.forced_cflags
            } else {
                u32::MAX
            };
            st.cpu.set_cflags_next_tb(next);
            st.sync_fast_limit();
            (st.cpu, st.cpu.eip())
        };
        // SAFETY: the engine is open and locked; hooks reach the state through `sp`.
        let err = unsafe { uc_emu_start(uc, rip, 0, 0, 0) };
        // SAFETY: emulation has returned; this borrow ends with the iteration.
        let st = unsafe { &mut *sp };
        let rip_now = cpu.eip();
        if st.panic.is_some() {
            return Err(backend_err(rip_now, "the device model panicked"));
        }
        if let Some(Stop::Error(e)) = &st.stop {
            return Err(backend_err(rip_now, e.clone()));
        }
        if err != uc_error::OK {
            return Err(backend_err(
                rip_now,
                format!("Unicorn stopped with {err:?} (an access to unbacked guest memory?)"),
            ));
        }
        match st.stop.take() {
            Some(Stop::Budget) => return Ok(VcpuExit::BudgetExhausted),
            // The limited block may retire nothing (its first instruction faults) and the
            // handler's block stop here again: see counting.rs. The block hook checks that
            // the limit was honoured.
            Some(Stop::Partial(n)) => st.forced_cflags = n,
            Some(Stop::IoStopRewound) => {
                st.mode = Mode::Replay { started: false };
                st.replay_pos = 0;
                st.forced_cflags = 1;
            }
            Some(Stop::IoStopDone) => {
                st.mode = Mode::Normal;
                return Ok(VcpuExit::IoStop);
            }
            Some(Stop::TripleFault) => return Ok(VcpuExit::TripleFault { rip: rip_now }),
            Some(Stop::Injected) | Some(Stop::Error(_)) => {
                return Err(backend_err(rip_now, "unexpected stop"))
            }
            None => {
                if cpu.old_exception() == 8 {
                    cpu.set_old_exception(-1);
                    return Ok(VcpuExit::TripleFault { rip: rip_now });
                }
                if cpu.halted() != 0 {
                    let pc = rip_now.wrapping_add(cpu.seg_base(int::R_CS));
                    st.cut_current_block_at(pc);
                    return Ok(VcpuExit::Halted);
                }
                return Err(backend_err(rip_now, "Unicorn returned without a reason"));
            }
        }
    }
}

impl Vcpu for EmuVcpu {
    fn run(&mut self, io: &mut dyn GuestIo, budget: u64) -> Result<VcpuExit, VcpuError> {
        if let Some(exit) = self.pending.take() {
            return Ok(exit);
        }
        let mut guard = lock(&self.engine, self.index)?;
        let eng: &mut Engine = &mut guard;
        let io: NonNull<dyn GuestIo + '_> = NonNull::from(io);
        // SAFETY: only the lifetime is erased; `io` is cleared below, before this borrow of
        // the caller's GuestIo ends, and hooks run only inside `run_loop`.
        let io: NonNull<dyn GuestIo + 'static> = unsafe { std::mem::transmute(io) };
        let st = eng.state_mut();
        st.io = Some(io);
        st.counter.committed = 0;
        st.set_cur(None);
        st.budget = budget;
        st.stop = None;
        st.forced_cflags = 0;
        st.mode = Mode::Normal;
        st.log.clear();
        st.log_insn = u64::MAX;
        st.deliveries_stuck = 0;
        st.stuck_at = u64::MAX;
        st.limit_retried = false;
        let result = run_loop(eng);
        let st = eng.state_mut();
        st.io = None;
        st.set_cur(None);
        self.retired += st.counter.committed;
        if let Some(p) = st.panic.take() {
            drop(guard);
            std::panic::resume_unwind(p);
        }
        result
    }

    fn instructions_retired(&self) -> u64 {
        self.retired
    }

    fn interruptible(&self) -> bool {
        let Ok(eng) = self.engine() else { return false };
        let cpu = eng.state().cpu;
        cpu.env_u64(int::ENV_EFLAGS) & IF != 0 && cpu.hflags() & int::HF_INHIBIT_IRQ_MASK == 0
    }

    fn inject_interrupt(&mut self, vector: u8) -> Result<(), VcpuError> {
        if !self.interruptible() {
            return Err(backend_err(
                0,
                format!("vector {vector:#x} injected while interrupts are blocked"),
            ));
        }
        let mut guard = lock(&self.engine, self.index)?;
        let eng: &mut Engine = &mut guard;
        let uc = eng.uc;
        let sp = eng.state_ptr();
        let (cpu, rip) = {
            // SAFETY: no emulation runs; the borrow ends before uc_emu_start.
            let st = unsafe { &mut *sp };
            st.mode = Mode::Inject {
                vector,
                cr2: st.cpu.cr(2),
            };
            st.stop = None;
            st.set_cur(None);
            st.forced_cflags = 0;
            st.sync_fast_limit();
            (st.cpu, st.cpu.eip())
        };
        // SAFETY: as in run_loop; the block hook delivers and stops before any instruction.
        let err = unsafe { uc_emu_start(uc, rip, 0, 0, 0) };
        // SAFETY: emulation has returned.
        let st = unsafe { &mut *sp };
        st.mode = Mode::Normal;
        let rip_now = cpu.eip();
        let stop = st.stop.take();
        if err != uc_error::OK {
            return Err(backend_err(
                rip_now,
                format!("delivering vector {vector:#x}: {err:?}"),
            ));
        }
        if stop == Some(Stop::TripleFault) || cpu.old_exception() == 8 {
            cpu.set_old_exception(-1);
            self.pending = Some(VcpuExit::TripleFault { rip: rip_now });
            return Ok(());
        }
        match stop {
            Some(Stop::Injected) => Ok(()),
            other => Err(backend_err(
                rip_now,
                format!("delivering vector {vector:#x} ended with {other:?}"),
            )),
        }
    }

    fn request_interrupt_window(&mut self, _wanted: bool) {
        // `interruptible` is exact at every exit: nothing to arm.
    }

    fn regs(&self) -> Result<kvm_regs, VcpuError> {
        let eng = self.engine()?;
        let st = eng.state();
        use RegisterX86::*;
        Ok(kvm_regs {
            rax: reg(st, RAX),
            rbx: reg(st, RBX),
            rcx: reg(st, RCX),
            rdx: reg(st, RDX),
            rsi: reg(st, RSI),
            rdi: reg(st, RDI),
            rsp: reg(st, RSP),
            rbp: reg(st, RBP),
            r8: reg(st, R8),
            r9: reg(st, R9),
            r10: reg(st, R10),
            r11: reg(st, R11),
            r12: reg(st, R12),
            r13: reg(st, R13),
            r14: reg(st, R14),
            r15: reg(st, R15),
            rip: st.cpu.eip(),
            rflags: reg(st, RFLAGS),
        })
    }

    fn set_regs(&mut self, r: &kvm_regs) -> Result<(), VcpuError> {
        let eng = self.engine()?;
        let st = eng.state();
        use RegisterX86::*;
        let pairs = [
            (RAX, r.rax),
            (RBX, r.rbx),
            (RCX, r.rcx),
            (RDX, r.rdx),
            (RSI, r.rsi),
            (RDI, r.rdi),
            (RSP, r.rsp),
            (RBP, r.rbp),
            (R8, r.r8),
            (R9, r.r9),
            (R10, r.r10),
            (R11, r.r11),
            (R12, r.r12),
            (R13, r.r13),
            (R14, r.r14),
            (R15, r.r15),
            (RFLAGS, r.rflags | 2),
        ];
        for (id, v) in pairs {
            set_reg(st, id, v);
        }
        st.cpu.set_eip(r.rip);
        Ok(())
    }

    fn sregs(&self) -> Result<kvm_sregs, VcpuError> {
        let eng = self.engine()?;
        let cpu = eng.state().cpu;
        let seg = |i: usize| to_kvm_segment(cpu.seg_at(int::ENV_SEGS + i * int::SEG_SIZE));
        let dt = |off: usize| {
            let (_, base, limit, _) = cpu.seg_at(off);
            kvm_dtable {
                base,
                limit: limit as u16,
                ..Default::default()
            }
        };
        let apic_base = 0xfee0_0800 | if self.index == 0 { 0x100 } else { 0 };
        Ok(kvm_sregs {
            es: seg(0),
            cs: seg(1),
            ss: seg(2),
            ds: seg(3),
            fs: seg(4),
            gs: seg(5),
            tr: to_kvm_segment(cpu.seg_at(int::ENV_TR)),
            ldt: to_kvm_segment(cpu.seg_at(int::ENV_LDT)),
            gdt: dt(int::ENV_GDT),
            idt: dt(int::ENV_IDT),
            cr0: cpu.cr(0),
            cr2: cpu.cr(2),
            cr3: cpu.cr(3),
            cr4: cpu.cr(4),
            cr8: 0,
            efer: cpu.env_u64(int::ENV_EFER),
            apic_base,
            interrupt_bitmap: [0; 4],
        })
    }

    fn set_sregs(&mut self, s: &kvm_sregs) -> Result<(), VcpuError> {
        let mut guard = self.engine()?;
        let eng: &mut Engine = &mut guard;
        let st = eng.state();
        let cpu = st.cpu;
        // EFER first (LME), then CR4 (PAE), CR3, CR0 (PG): the order a CPU enters long mode.
        write_msr(st, 0xc000_0080, s.efer);
        set_reg(st, RegisterX86::CR4, s.cr4);
        set_reg(st, RegisterX86::CR3, s.cr3);
        set_reg(st, RegisterX86::CR0, s.cr0);
        set_reg(st, RegisterX86::CR2, s.cr2);
        cpu.set_env_u64(int::ENV_EFER, s.efer);
        for (i, sg) in [s.es, s.cs, s.ss, s.ds, s.fs, s.gs].iter().enumerate() {
            cpu.set_seg_at(int::ENV_SEGS + i * int::SEG_SIZE, from_kvm_segment(sg));
        }
        cpu.set_seg_at(int::ENV_TR, from_kvm_segment(&s.tr));
        cpu.set_seg_at(int::ENV_LDT, from_kvm_segment(&s.ldt));
        cpu.set_seg_at(int::ENV_GDT, (0, s.gdt.base, s.gdt.limit as u32, 0));
        cpu.set_seg_at(int::ENV_IDT, (0, s.idt.base, s.idt.limit as u32, 0));
        // SAFETY: recomputes hflags from the state just written (QEMU's own function).
        unsafe { x86_update_hflags(cpu.env) };
        eng.flush_tlb()
    }

    fn msr(&self, index: u32) -> Result<u64, VcpuError> {
        check_msr(index)?;
        let eng = self.engine()?;
        let mut m = uc_x86_msr {
            rid: index,
            value: 0,
        };
        // SAFETY: MSR reads take a uc_x86_msr; only MSRs QEMU emulates without side effects.
        let err = unsafe { uc_reg_read(eng.uc, RegisterX86::MSR as i32, (&raw mut m).cast()) };
        if err != uc_error::OK {
            return Err(backend_err(
                eng.state().cpu.eip(),
                format!("reading MSR {index:#x}: {err:?}"),
            ));
        }
        Ok(m.value)
    }

    fn set_msr(&mut self, index: u32, value: u64) -> Result<(), VcpuError> {
        check_msr(index)?;
        let eng = self.engine()?;
        write_msr(eng.state(), index, value);
        Ok(())
    }

    fn save_state(&self) -> Result<VcpuState, VcpuError> {
        let eng = self.engine()?;
        let pending_triple_fault = match self.pending {
            None => None,
            Some(VcpuExit::TripleFault { rip }) => Some(rip),
            Some(other) => return Err(backend_err(0, format!("unexpected pending {other:?}"))),
        };
        Ok(VcpuState::Emu {
            context: eng.cpu_context(),
            retired: self.retired,
            pending_triple_fault,
        })
    }

    fn restore_state(&mut self, state: &VcpuState) -> Result<(), VcpuError> {
        let VcpuState::Emu {
            context,
            retired,
            pending_triple_fault,
        } = state
        else {
            return Err(backend_err(0, "the snapshot's vCPU is not an emu vCPU"));
        };
        self.engine()?.set_cpu_context(context)?;
        self.retired = *retired;
        self.pending = pending_triple_fault.map(|rip| VcpuExit::TripleFault { rip });
        Ok(())
    }
}

extern "C" {
    #[link_name = "x86_update_hflags_x86_64"]
    fn x86_update_hflags(env: *mut std::ffi::c_void);
}

/// The core may read and write the model's state MSRs (QEMU emulates them without
/// touching host state).
fn check_msr(index: u32) -> Result<(), VcpuError> {
    if crate::cpu_model::STATE_MSRS.contains(&index) {
        Ok(())
    } else {
        Err(backend_err(
            0,
            format!("MSR {index:#x} is not supported by the emu backend"),
        ))
    }
}

fn write_msr(st: &HookState, index: u32, value: u64) {
    let m = uc_x86_msr { rid: index, value };
    // SAFETY: MSR writes take a uc_x86_msr (QEMU's wrmsr; only listed MSRs reach here).
    unsafe { uc_reg_write(st.uc, RegisterX86::MSR as i32, (&raw const m).cast()) };
}

// Descriptor flag layout (QEMU SegmentCache.flags) <-> kvm_segment, as QEMU's kvm.c does.
fn to_kvm_segment((selector, base, limit, flags): (u32, u64, u32, u32)) -> kvm_segment {
    let present = (flags >> 15) & 1;
    kvm_segment {
        base,
        limit,
        selector: selector as u16,
        type_: ((flags >> 8) & 15) as u8,
        present: present as u8,
        dpl: ((flags >> 13) & 3) as u8,
        db: ((flags >> 22) & 1) as u8,
        s: ((flags >> 12) & 1) as u8,
        l: ((flags >> 21) & 1) as u8,
        g: ((flags >> 23) & 1) as u8,
        avl: ((flags >> 20) & 1) as u8,
        unusable: (present == 0) as u8,
        padding: 0,
    }
}

fn from_kvm_segment(s: &kvm_segment) -> (u32, u64, u32, u32) {
    let p = (s.present != 0 && s.unusable == 0) as u32;
    let flags = ((s.type_ as u32) << 8)
        | (p << 15)
        | ((s.dpl as u32 & 3) << 13)
        | ((s.db as u32 & 1) << 22)
        | ((s.s as u32 & 1) << 12)
        | ((s.l as u32 & 1) << 21)
        | ((s.g as u32 & 1) << 23)
        | ((s.avl as u32 & 1) << 20);
    (s.selector as u32, s.base, s.limit, flags)
}
