//! The vCPU thread's side: it owns the `VcpuFd` (KVM punishes a vCPU fd used from
//! several threads) and runs KVM_RUN until one exit, which it describes as an owned
//! [`Exit`] for the core thread. Device work happens on the core thread; the data it
//! produces comes back as a [`Completion`] written into `kvm_run` before the next entry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use kvm_bindings::{
    kvm_run, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_MMIO, KVM_EXIT_X86_RDMSR, KVM_EXIT_X86_WRMSR,
};
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::cpuid;
use super::vm::KvmVm;
use super::watchdog::Slot;

/// Host-side counters, readable from the core thread.
#[derive(Debug, Default)]
pub struct Counters {
    /// KVM exits handed to the core.
    pub exits: AtomicU64,
    /// Invisible watchdog kicks.
    pub kicks: AtomicU64,
    /// Runs cut short after the watchdog's long limit (non-deterministic).
    pub forced: AtomicU64,
}

/// One KVM exit, owned, as the core thread needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// IN or INS: `count` accesses of `size` bytes.
    PioIn {
        port: u16,
        size: usize,
        count: usize,
    },
    /// OUT or OUTS: `data` holds `data.len() / size` accesses.
    PioOut {
        port: u16,
        size: usize,
        data: Vec<u8>,
    },
    MmioRead {
        addr: u64,
        len: usize,
    },
    MmioWrite {
        addr: u64,
        data: Vec<u8>,
    },
    RdMsr {
        index: u32,
    },
    WrMsr {
        index: u32,
        value: u64,
    },
    Halted,
    InterruptWindow,
    Shutdown {
        rip: u64,
    },
    /// Only kicks for the watchdog's long limit.
    Preempted,
    Failed {
        rip: u64,
        reason: String,
    },
}

impl Exit {
    /// Exits whose instruction finishes only at the next KVM_RUN.
    fn unsettled(&self) -> bool {
        matches!(
            self,
            Exit::PioIn { .. }
                | Exit::PioOut { .. }
                | Exit::MmioRead { .. }
                | Exit::MmioWrite { .. }
                | Exit::RdMsr { .. }
                | Exit::WrMsr { .. }
        )
    }
}

/// The core's answer to an exit that reads something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Data for an IN/INS or an MMIO read.
    Read(Vec<u8>),
    /// The RDMSR value, `None` for #GP.
    RdMsr(Option<u64>),
    /// Whether the WRMSR succeeds (`false`: #GP).
    WrMsr(bool),
}

/// What the core learns from one run.
#[derive(Debug)]
pub struct Reply {
    pub exit: Exit,
    /// KVM's `ready_for_interrupt_injection`, exact only when the exit is settled.
    pub ready: bool,
}

enum Step {
    Kick,
    Io,
    Internal,
    Shutdown,
    Done(Exit),
    Fail(String),
}

pub struct Runner {
    // `fd` first: it is closed before the VM fd that `vm` keeps alive.
    pub fd: VcpuFd,
    vm: Arc<KvmVm>,
    slot: Arc<Slot>,
    counters: Arc<Counters>,
    /// The last exit's instruction has not completed yet.
    unsettled: bool,
    /// An exit met while settling (an access KVM splits into several exits), to be
    /// returned by the next run before entering the guest again.
    stashed: Option<Exit>,
}

impl Runner {
    pub fn new(vm: Arc<KvmVm>, index: u8, counters: Arc<Counters>) -> Result<Runner, String> {
        let fd = vm
            .fd
            .create_vcpu(u64::from(index))
            .map_err(|e| format!("KVM_CREATE_VCPU {index}: {e}"))?;
        let table = cpuid::kvm_cpuid(u32::from(index), u32::from(vm.vcpu_count))?;
        fd.set_cpuid2(&table)
            .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
        let slot = vm.watchdog.register();
        Ok(Runner {
            fd,
            vm,
            slot,
            counters,
            unsettled: false,
            stashed: None,
        })
    }

    /// Writes the core's answer to the last exit into `kvm_run`.
    pub fn complete(&mut self, completion: Completion) {
        let run_size = self.vm.fd.run_size();
        let run: &mut kvm_run = self.fd.get_kvm_run();
        match (run.exit_reason, completion) {
            (KVM_EXIT_IO, Completion::Read(data)) => {
                // SAFETY: exit_reason KVM_EXIT_IO says `io` is the live union member.
                let io = unsafe { run.__bindgen_anon_1.io };
                let len = (io.size as usize * io.count as usize).min(data.len());
                let offset = io.data_offset as usize;
                if u32::from(io.direction) != KVM_EXIT_IO_IN || offset + len > run_size {
                    return;
                }
                let base = run as *mut kvm_run as *mut u8;
                // SAFETY: `offset + len` lies inside the kvm_run mapping of `run_size`
                // bytes (checked above), which only this thread touches.
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(offset), len) };
            }
            (KVM_EXIT_MMIO, Completion::Read(data)) => {
                // SAFETY: exit_reason KVM_EXIT_MMIO says `mmio` is the live union member.
                let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
                let len = (mmio.len as usize).min(data.len()).min(mmio.data.len());
                mmio.data[..len].copy_from_slice(&data[..len]);
            }
            (KVM_EXIT_X86_RDMSR, Completion::RdMsr(value)) => {
                // SAFETY: exit_reason KVM_EXIT_X86_RDMSR says `msr` is the live member.
                let msr = unsafe { &mut run.__bindgen_anon_1.msr };
                msr.data = value.unwrap_or(0);
                msr.error = u8::from(value.is_none());
            }
            (KVM_EXIT_X86_WRMSR, Completion::WrMsr(ok)) => {
                // SAFETY: exit_reason KVM_EXIT_X86_WRMSR says `msr` is the live member.
                let msr = unsafe { &mut run.__bindgen_anon_1.msr };
                msr.error = u8::from(!ok);
            }
            _ => {}
        }
    }

    /// Runs the guest until an exit the core must see; kicks are absorbed here.
    pub fn resume(&mut self, interrupt_window: bool) -> Reply {
        if let Some(exit) = self.stashed.take() {
            self.unsettled = exit.unsettled();
            return self.reply(exit);
        }
        self.fd.get_kvm_run().request_interrupt_window = u8::from(interrupt_window);
        let started = Instant::now();
        loop {
            match self.step() {
                None => {
                    // A kick: invisible. Re-enter unless the guest has spun too long.
                    self.unsettled = false;
                    self.counters.kicks.fetch_add(1, Ordering::Relaxed);
                    if started.elapsed() >= self.vm.watchdog.config.force_after {
                        self.counters.forced.fetch_add(1, Ordering::Relaxed);
                        return self.reply(Exit::Preempted);
                    }
                }
                Some(exit) => {
                    self.unsettled = exit.unsettled();
                    self.counters.exits.fetch_add(1, Ordering::Relaxed);
                    return self.reply(exit);
                }
            }
        }
    }

    /// Completes the last exit's instruction without running further guest code
    /// (KVM_RUN with `immediate_exit`), so registers and interrupt state are exact.
    pub fn settle(&mut self) {
        if !self.unsettled || self.stashed.is_some() {
            return;
        }
        self.fd.set_kvm_immediate_exit(1);
        let step = self.step();
        self.fd.set_kvm_immediate_exit(0);
        self.unsettled = false;
        if let Some(exit) = step {
            self.stashed = Some(exit);
        }
    }

    /// Refreshes `kvm_run`'s interrupt readiness after registers were set from outside
    /// (a restored vCPU has never run): a KVM_RUN with `immediate_exit` enters no guest
    /// code but updates it. Fails if that run met an exit after all.
    pub fn refresh(&mut self) -> Result<(), String> {
        self.fd.set_kvm_immediate_exit(1);
        let step = self.step();
        self.fd.set_kvm_immediate_exit(0);
        match step {
            None => Ok(()),
            Some(exit) => Err(format!("a run that enters no guest code exited: {exit:?}")),
        }
    }

    /// An exit met while settling waits to be returned: the vCPU is between two exits
    /// of one instruction, not at a point a snapshot can hold.
    pub fn mid_instruction(&self) -> bool {
        self.stashed.is_some()
    }

    /// Whether KVM_INTERRUPT may be used now. Call [`Runner::settle`] first.
    pub fn ready_for_interrupt(&mut self) -> bool {
        !self.unsettled
            && self.stashed.is_none()
            && self.fd.get_kvm_run().ready_for_interrupt_injection != 0
    }

    fn reply(&mut self, exit: Exit) -> Reply {
        let ready = self.fd.get_kvm_run().ready_for_interrupt_injection != 0;
        Reply { exit, ready }
    }

    /// One KVM_RUN; `None` for a kick (EINTR).
    fn step(&mut self) -> Option<Exit> {
        self.slot.enter();
        let result = self.fd.run();
        self.slot.leave();
        let step = match result {
            Ok(VcpuExit::IoIn(..) | VcpuExit::IoOut(..)) => Step::Io,
            Ok(VcpuExit::MmioRead(addr, data)) => Step::Done(Exit::MmioRead {
                addr,
                len: data.len(),
            }),
            Ok(VcpuExit::MmioWrite(addr, data)) => Step::Done(Exit::MmioWrite {
                addr,
                data: data.to_vec(),
            }),
            Ok(VcpuExit::X86Rdmsr(msr)) => Step::Done(Exit::RdMsr { index: msr.index }),
            Ok(VcpuExit::X86Wrmsr(msr)) => Step::Done(Exit::WrMsr {
                index: msr.index,
                value: msr.data,
            }),
            Ok(VcpuExit::Hlt) => Step::Done(Exit::Halted),
            Ok(VcpuExit::IrqWindowOpen) => Step::Done(Exit::InterruptWindow),
            Ok(VcpuExit::Shutdown) => Step::Shutdown,
            Ok(VcpuExit::Intr) => Step::Kick,
            Ok(VcpuExit::InternalError) => Step::Internal,
            Ok(VcpuExit::FailEntry(reason, cpu)) => Step::Fail(format!(
                "KVM could not enter the guest (hardware reason {reason:#x}, host CPU {cpu})"
            )),
            Ok(other) => Step::Fail(format!("unexpected KVM exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Step::Kick,
            Err(e) => Step::Fail(format!("KVM_RUN failed: {e}")),
        };
        match step {
            Step::Kick => None,
            Step::Done(exit) => Some(exit),
            Step::Io => Some(self.io_exit()),
            Step::Shutdown => Some(Exit::Shutdown { rip: self.rip() }),
            Step::Internal => {
                // SAFETY: KVM_EXIT_INTERNAL_ERROR says `internal` is the live member.
                let internal = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal };
                let n = (internal.ndata as usize).min(internal.data.len());
                Some(Exit::Failed {
                    rip: self.rip(),
                    reason: format!(
                        "KVM internal error, suberror {} (data {:x?}): the host cannot \
                         emulate an instruction the guest ran",
                        internal.suberror,
                        &internal.data[..n]
                    ),
                })
            }
            Step::Fail(reason) => Some(Exit::Failed {
                rip: self.rip(),
                reason,
            }),
        }
    }

    fn io_exit(&mut self) -> Exit {
        let run_size = self.vm.fd.run_size();
        let run = self.fd.get_kvm_run();
        // SAFETY: called right after a KVM_EXIT_IO, so `io` is the live union member.
        let io = unsafe { run.__bindgen_anon_1.io };
        let size = usize::from(io.size).max(1);
        let count = io.count as usize;
        if u32::from(io.direction) == KVM_EXIT_IO_IN {
            return Exit::PioIn {
                port: io.port,
                size,
                count,
            };
        }
        let offset = io.data_offset as usize;
        let len = if offset + size * count <= run_size {
            size * count
        } else {
            0
        };
        let base = run as *mut kvm_run as *const u8;
        // SAFETY: `offset + len` is inside the kvm_run mapping (checked above).
        let data = unsafe { std::slice::from_raw_parts(base.add(offset), len) }.to_vec();
        Exit::PioOut {
            port: io.port,
            size,
            data,
        }
    }

    fn rip(&self) -> u64 {
        self.fd.get_regs().map(|r| r.rip).unwrap_or(0)
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.vm.watchdog.unregister(&self.slot);
    }
}
