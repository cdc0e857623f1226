//! The interface every CPU backend implements (`emu`, `kvm`).
//!
//! A backend only executes instructions. Everything the guest can observe besides
//! its own registers (devices, time, interrupts) belongs to the shared core and is
//! reached through [`GuestIo`], called synchronously at the exact instruction that
//! made the access. Register state is exchanged in KVM's layouts (`kvm_regs`,
//! `kvm_sregs`), the common vocabulary of the rust-vmm ecosystem, on both backends.

use kvm_bindings::{kvm_debugregs, kvm_mp_state, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs};
use serde::{Deserialize, Serialize};

/// Everything a vCPU holds between two [`Vcpu::run`] calls, for snapshots. Restoring it
/// into a fresh vCPU of the same backend makes it continue bit for bit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum VcpuState {
    /// `emu`: Unicorn's CPU context, QEMU's `CPUX86State` up to `end_reset_fields`, the
    /// bytes `uc_context_save` copies: general, segment, control and debug registers,
    /// x87/MMX/SSE and XSAVE state, the MSRs the model has, lazy flags, hflags and the
    /// exception-in-flight fields. Plus what the backend keeps outside Unicorn.
    Emu {
        context: Vec<u8>,
        /// Instructions retired so far (the trace hash folds them in).
        retired: u64,
        /// A triple fault found while injecting, reported by the next `run`.
        pending_triple_fault: Option<u64>,
    },
    /// `kvm`: the register sets KVM keeps for a vCPU.
    Kvm(Box<KvmVcpuState>),
}

/// What KVM_GET_{REGS,SREGS,XSAVE,XCRS,VCPU_EVENTS,DEBUGREGS,MP_STATE,MSRS} return:
/// general and system registers, the FPU/SSE/AVX area, XCR0, pending exceptions,
/// NMIs and interrupt shadows, debug registers, the run state and the MSRs of detvm's
/// CPU model. Interrupt controllers and timers live in the VMM, not in KVM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KvmVcpuState {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    /// The 4 KiB legacy XSAVE area (x87, SSE); the CPU model has nothing larger.
    pub xsave: Vec<u32>,
    pub xcrs: kvm_xcrs,
    pub events: kvm_vcpu_events,
    pub debugregs: kvm_debugregs,
    pub mp_state: kvm_mp_state,
    pub msrs: Vec<(u32, u64)>,
}

/// Device accesses made by the running guest, handled by the shared core.
///
/// `insns` is the number of guest instructions this vCPU retired since the current
/// [`Vcpu::run`] call began, before the accessing instruction. Backends that cannot
/// count (`kvm`) pass 0. The core derives virtual time from it.
pub trait GuestIo {
    fn pio_read(&mut self, insns: u64, port: u16, data: &mut [u8]);
    fn pio_write(&mut self, insns: u64, port: u16, data: &[u8]) -> IoFlow;
    fn mmio_read(&mut self, insns: u64, addr: u64, data: &mut [u8]);
    fn mmio_write(&mut self, insns: u64, addr: u64, data: &[u8]) -> IoFlow;
    /// The TSC value a RDTSC/RDTSCP at this point reads (virtual time; `emu` only).
    fn rdtsc(&mut self, insns: u64) -> u64;
}

/// Whether `run` may go on after a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoFlow {
    Continue,
    /// End `run` right after the accessing instruction, e.g. because interrupt
    /// state changed (an EOI, an unmasked line) or the guest asked to power off.
    Stop,
}

/// Why [`Vcpu::run`] returned. Every return is a decision point: the core may
/// advance time or inject an interrupt before calling `run` again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuExit {
    /// The instruction budget is spent, exactly (`emu`).
    BudgetExhausted,
    /// A write returned [`IoFlow::Stop`].
    IoStop,
    /// One device access (or routed MSR access) completed (`kvm`). Without an
    /// instruction count every exit is a decision point: the core charges
    /// `ns_per_exit` for it, so a guest polling a device sees time move.
    Io,
    /// HLT retired; RIP points after it.
    Halted,
    /// An interrupt window opened that the core asked for (`kvm`).
    InterruptWindow,
    /// The guest ran past the host watchdog's long limit without an exit (`kvm`,
    /// DESIGN point 9). Shorter kicks are absorbed inside the backend and never
    /// returned, so they stay invisible; this one is a forced preemption chosen by host
    /// timing: the core may force a timer interrupt, and the run is no longer
    /// deterministic from here.
    Kicked,
    /// Triple fault or an unrecoverable exception: the CPU reset itself.
    TripleFault { rip: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("the {backend} backend failed at RIP {rip:#x}: {reason}")]
    Backend {
        backend: &'static str,
        rip: u64,
        reason: String,
    },
    #[error("the {backend} backend cannot be used on this host: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
}

/// One virtual CPU on some backend.
pub trait Vcpu {
    /// Runs guest code until an exit, calling `io` for every device access.
    /// `budget` caps the instructions retired in this call; backends that cannot
    /// count instructions ignore it and rely on their own preemption.
    fn run(&mut self, io: &mut dyn GuestIo, budget: u64) -> Result<VcpuExit, VcpuError>;

    /// Instructions this vCPU retired since it was created (0 where not counted).
    fn instructions_retired(&self) -> u64;

    /// IF is set and no STI / MOV SS shadow blocks delivery right now.
    fn interruptible(&self) -> bool;

    /// Delivers an external interrupt now. Only valid when [`Vcpu::interruptible`].
    fn inject_interrupt(&mut self, vector: u8) -> Result<(), VcpuError>;

    /// Asks the backend to return [`VcpuExit::InterruptWindow`] as soon as the
    /// guest can take an interrupt (a no-op where `interruptible` is always exact).
    fn request_interrupt_window(&mut self, wanted: bool);

    fn regs(&self) -> Result<kvm_regs, VcpuError>;
    fn set_regs(&mut self, regs: &kvm_regs) -> Result<(), VcpuError>;
    fn sregs(&self) -> Result<kvm_sregs, VcpuError>;
    fn set_sregs(&mut self, sregs: &kvm_sregs) -> Result<(), VcpuError>;
    fn msr(&self, index: u32) -> Result<u64, VcpuError>;
    fn set_msr(&mut self, index: u32, value: u64) -> Result<(), VcpuError>;

    /// The complete state, between runs (see [`VcpuState`]).
    fn save_state(&self) -> Result<VcpuState, VcpuError>;
    /// Loads a state from [`Vcpu::save_state`] of the same backend and build.
    fn restore_state(&mut self, state: &VcpuState) -> Result<(), VcpuError>;
}
