//! The deterministic software CPU on the Unicorn engine (GPL-2.0, behind the `emu` feature).
//!
//! Public API:
//! - [`EmuMachine::new`] (unsafe: the core lends guest RAM as raw host memory that must
//!   outlive the machine) builds one engine per VM over that RAM and the MMIO windows the
//!   core emulates; [`EmuMachine::vcpu`] hands out vCPUs that share the engine (and so one
//!   translation cache), each with its own saved CPU state. [`EmuVcpu::new`] is the
//!   one-vCPU shortcut. Both run [`self_check`] first.
//! - [`EmuVcpu`] implements [`crate::vcpu::Vcpu`] and is `Send`: exact instruction counting
//!   and budgets, port I/O, MMIO, CPUID (the fixed model of [`crate::cpu_model`]), RDTSC
//!   from the core's virtual time, exception and interrupt delivery through the guest IDT,
//!   SYSCALL. Calls on vCPUs of one machine serialise on the engine.
//!
//! Module map: `engine` (the shared engine, memory, hooks, vCPU switching), `vcpu` (the
//! trait implementation and run loop), `counting` (exact counting and hook state), `hooks`
//! (I/O, CPUID, RDTSC), `interrupts` (IDT delivery), `syscall`, `internals` (every use of
//! Unicorn's private state, pinned to 2.1.5), `selfcheck` (proves those internals at
//! start-up), `probe` (tiny long-mode guests for the self-check and tests).
//!
//! Semantics worth knowing:
//! - `insns` given to `GuestIo` counts from the start of the current `run` call.
//! - REP string instructions count one per iteration (as QEMU's icount does).
//! - `IoFlow::Stop` ends the run right after the writing instruction: the instruction is
//!   rewound and replayed once with the values the device already returned, so the device
//!   sees each access exactly once.
//! - Unicorn splits 8-byte MMIO accesses into two 4-byte ones (low half first).
//! - RDMSR of IA32_TSC and IA32_APIC_BASE read 0 and their writes are ignored (QEMU's
//!   MSR emulation in Unicorn); unknown MSRs read 0 without #GP. The TSC is only visible
//!   through RDTSC, which goes to `GuestIo::rdtsc`.
//! - `request_interrupt_window` is a no-op: `interruptible` is exact at every exit.
//! - `save_state`/`restore_state` move the whole CPU context (FPU/SSE/XSAVE included) as
//!   the bytes `uc_context_save` copies, plus the retired count (docs/snapshots.md).

mod counting;
mod engine;
mod hooks;
mod internals;
mod interrupts;
pub mod probe;
mod selfcheck;
mod syscall;
mod vcpu;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_budgets;
#[cfg(test)]
mod tests_smp;

pub use selfcheck::verify as self_check;
pub use vcpu::{EmuMachine, EmuVcpu};
