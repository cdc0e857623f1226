//! The deterministic software CPU on the Unicorn engine (GPL-2.0, behind the `emu` feature).
//!
//! Public API:
//! - [`EmuMachine::new`] (unsafe: the core lends guest RAM as raw host memory that must
//!   outlive the machine) builds one engine per VM over that RAM and the MMIO windows the
//!   core emulates; [`EmuMachine::vcpu`] hands out vCPUs that share the engine (and so one
//!   translation cache), each with its own saved CPU state.
//! - [`EmuVcpu`] implements [`crate::vcpu::Vcpu`]: exact instruction counting and budgets,
//!   port I/O, MMIO, CPUID (the fixed model of [`crate::cpu_model`]), RDTSC from the core's
//!   virtual time, exception and interrupt delivery through the guest IDT, SYSCALL.
//!
//! Module map: `engine` (the shared engine, memory, hooks, vCPU switching), `vcpu` (the
//! trait implementation and run loop), `counting` (exact counting and hook state), `hooks`
//! (I/O, CPUID, RDTSC), `interrupts` (IDT delivery), `syscall`, `internals` (every use of
//! Unicorn's private state, pinned to 2.1.5), `selfcheck` (proves those internals at
//! start-up), `probe` (tiny long-mode guests for the self-check and tests).

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
mod tests_smp;

pub use selfcheck::verify as self_check;
pub use vcpu::{EmuMachine, EmuVcpu};
