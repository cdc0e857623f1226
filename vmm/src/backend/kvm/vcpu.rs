//! The core's handle on one KVM vCPU: a [`Vcpu`] whose every call is a job run on the
//! vCPU's own thread, while the calling (core) thread waits for the answer. That wait
//! is the baton: exactly one of the core and the vCPU threads runs at a time, and the
//! core stays single-threaded and deterministic.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use kvm_bindings::{kvm_msr_entry, kvm_regs, kvm_sregs, Msrs};

use super::ioctls;
use super::msr_filter;
use super::runner::{Completion, Counters, Exit, Runner};
use super::state;
use super::vm::KvmVm;
use crate::vcpu::{GuestIo, IoFlow, Vcpu, VcpuError, VcpuExit, VcpuState};

type Job = Box<dyn FnOnce(&mut Runner) + Send>;

pub struct KvmVcpu {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    /// The answer to the last exit, delivered with the next job.
    pending: Cell<Option<Completion>>,
    /// Cached `ready_for_interrupt_injection`; `None` when it must be asked for.
    ready: Cell<Option<bool>>,
    window: bool,
}

fn failed(reason: impl Into<String>) -> VcpuError {
    VcpuError::Backend {
        backend: "kvm",
        rip: 0,
        reason: reason.into(),
    }
}

impl KvmVcpu {
    /// Starts vCPU `index` of `vm` on its own thread.
    pub fn spawn(vm: Arc<KvmVm>, index: u8) -> Result<KvmVcpu, VcpuError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (started_tx, started) = mpsc::sync_channel(1);
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name(format!("kvm-vcpu{index}"))
            .spawn(move || {
                let mut runner = match Runner::new(vm, index, c) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                let _ = started_tx.send(Ok(()));
                for job in queue {
                    job(&mut runner);
                }
            })
            .map_err(|e| failed(format!("starting the vCPU thread: {e}")))?;
        match started.recv() {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                let _ = thread.join();
                return Err(VcpuError::Unavailable {
                    backend: "kvm",
                    reason,
                });
            }
            Err(_) => return Err(failed("the vCPU thread died while starting")),
        }
        Ok(KvmVcpu {
            jobs: Some(jobs),
            thread: Some(thread),
            counters,
            pending: Cell::new(None),
            ready: Cell::new(None),
            window: false,
        })
    }

    /// Runs `f` on the vCPU thread, after delivering any pending completion, and
    /// waits for its result.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Runner) -> R + Send + 'static,
    ) -> Result<R, VcpuError> {
        let pending = self.pending.take();
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |runner| {
            if let Some(c) = pending {
                runner.complete(c);
            }
            let _ = tx.send(f(runner));
        });
        let gone = || failed("the vCPU thread is gone");
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())
    }

    /// Like [`KvmVcpu::call`], with the last exit's instruction completed first.
    fn call_settled<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Runner) -> R + Send + 'static,
    ) -> Result<R, VcpuError> {
        self.call(move |runner| {
            runner.settle();
            f(runner)
        })
    }

    /// Invisible watchdog kicks so far.
    pub fn kicks(&self) -> u64 {
        self.counters.kicks.load(Ordering::Relaxed)
    }

    /// Runs the watchdog cut short (each one made the run non-deterministic).
    pub fn forced_preemptions(&self) -> u64 {
        self.counters.forced.load(Ordering::Relaxed)
    }

    /// KVM exits handed to the core.
    pub fn exits(&self) -> u64 {
        self.counters.exits.load(Ordering::Relaxed)
    }
}

impl Drop for KvmVcpu {
    fn drop(&mut self) {
        // Closing the queue ends the thread, which closes the vCPU fd.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Vcpu for KvmVcpu {
    /// Returns at every KVM exit: each is a decision point where the core charges
    /// `ns_per_exit` of virtual time (`budget` is meaningless without counting).
    fn run(&mut self, io: &mut dyn GuestIo, _budget: u64) -> Result<VcpuExit, VcpuError> {
        let window = self.window;
        let reply = self.call(move |runner| runner.resume(window))?;
        let exact = !matches!(
            reply.exit,
            Exit::PioIn { .. }
                | Exit::PioOut { .. }
                | Exit::MmioRead { .. }
                | Exit::MmioWrite { .. }
                | Exit::RdMsr { .. }
                | Exit::WrMsr { .. }
        );
        self.ready.set(exact.then_some(reply.ready));
        let mut flow = IoFlow::Continue;
        let completion = match reply.exit {
            Exit::PioIn { port, size, count } => {
                let mut data = vec![0; size * count];
                for chunk in data.chunks_mut(size) {
                    io.pio_read(0, port, chunk);
                }
                Some(Completion::Read(data))
            }
            Exit::PioOut { port, size, data } => {
                for chunk in data.chunks(size) {
                    if io.pio_write(0, port, chunk) == IoFlow::Stop {
                        flow = IoFlow::Stop;
                    }
                }
                None
            }
            Exit::MmioRead { addr, len } => {
                let mut data = vec![0; len];
                io.mmio_read(0, addr, &mut data);
                Some(Completion::Read(data))
            }
            Exit::MmioWrite { addr, data } => {
                flow = io.mmio_write(0, addr, &data);
                None
            }
            Exit::RdMsr { index } => Some(Completion::RdMsr(msr_filter::rdmsr(index, io))),
            Exit::WrMsr { index, value } => {
                Some(Completion::WrMsr(msr_filter::wrmsr(index, value)))
            }
            Exit::Halted => return Ok(VcpuExit::Halted),
            Exit::InterruptWindow => return Ok(VcpuExit::InterruptWindow),
            Exit::Preempted => return Ok(VcpuExit::Kicked),
            Exit::Shutdown { rip } => return Ok(VcpuExit::TripleFault { rip }),
            Exit::Failed { rip, reason } => {
                return Err(VcpuError::Backend {
                    backend: "kvm",
                    rip,
                    reason,
                })
            }
        };
        self.pending.set(completion);
        Ok(match flow {
            IoFlow::Stop => VcpuExit::IoStop,
            IoFlow::Continue => VcpuExit::Io,
        })
    }

    fn instructions_retired(&self) -> u64 {
        0
    }

    fn interruptible(&self) -> bool {
        if let Some(ready) = self.ready.get() {
            return ready;
        }
        let ready = self
            .call_settled(|runner| runner.ready_for_interrupt())
            .unwrap_or(false);
        self.ready.set(Some(ready));
        ready
    }

    fn inject_interrupt(&mut self, vector: u8) -> Result<(), VcpuError> {
        let result = self.call_settled(move |runner| {
            if !runner.ready_for_interrupt() {
                return Err(format!(
                    "vector {vector:#x} injected while the vCPU cannot take it"
                ));
            }
            ioctls::interrupt(&runner.fd, vector).map_err(|e| format!("KVM_INTERRUPT: {e}"))
        })?;
        self.ready.set(Some(false));
        result.map_err(failed)
    }

    fn request_interrupt_window(&mut self, wanted: bool) {
        self.window = wanted;
    }

    fn regs(&self) -> Result<kvm_regs, VcpuError> {
        self.call_settled(|r| r.fd.get_regs())?
            .map_err(|e| failed(format!("KVM_GET_REGS: {e}")))
    }

    fn set_regs(&mut self, regs: &kvm_regs) -> Result<(), VcpuError> {
        let regs = *regs;
        self.ready.set(None);
        self.call_settled(move |r| r.fd.set_regs(&regs))?
            .map_err(|e| failed(format!("KVM_SET_REGS: {e}")))
    }

    fn sregs(&self) -> Result<kvm_sregs, VcpuError> {
        self.call_settled(|r| r.fd.get_sregs())?
            .map_err(|e| failed(format!("KVM_GET_SREGS: {e}")))
    }

    fn set_sregs(&mut self, sregs: &kvm_sregs) -> Result<(), VcpuError> {
        let sregs = *sregs;
        self.ready.set(None);
        self.call_settled(move |r| r.fd.set_sregs(&sregs))?
            .map_err(|e| failed(format!("KVM_SET_SREGS: {e}")))
    }

    fn msr(&self, index: u32) -> Result<u64, VcpuError> {
        self.call_settled(move |r| {
            let entry = kvm_msr_entry {
                index,
                ..Default::default()
            };
            let mut msrs = Msrs::from_entries(&[entry]).map_err(|e| format!("{e:?}"))?;
            match r.fd.get_msrs(&mut msrs) {
                Ok(1) => Ok(msrs.as_slice()[0].data),
                Ok(_) => Err(format!("KVM_GET_MSRS: MSR {index:#x} is not supported")),
                Err(e) => Err(format!("KVM_GET_MSRS {index:#x}: {e}")),
            }
        })?
        .map_err(failed)
    }

    fn set_msr(&mut self, index: u32, value: u64) -> Result<(), VcpuError> {
        self.call_settled(move |r| {
            let entry = kvm_msr_entry {
                index,
                data: value,
                ..Default::default()
            };
            let msrs = Msrs::from_entries(&[entry]).map_err(|e| format!("{e:?}"))?;
            match r.fd.set_msrs(&msrs) {
                Ok(1) => Ok(()),
                Ok(_) => Err(format!("KVM_SET_MSRS: MSR {index:#x} was refused")),
                Err(e) => Err(format!("KVM_SET_MSRS {index:#x}: {e}")),
            }
        })?
        .map_err(failed)
    }

    fn save_state(&self) -> Result<VcpuState, VcpuError> {
        self.call_settled(|r| {
            if r.mid_instruction() {
                return Err("the vCPU is between two exits of one instruction".to_string());
            }
            state::save(&r.fd)
        })?
        .map(|s| VcpuState::Kvm(Box::new(s)))
        .map_err(failed)
    }

    fn restore_state(&mut self, state: &VcpuState) -> Result<(), VcpuError> {
        let VcpuState::Kvm(s) = state else {
            return Err(failed("the snapshot's vCPU is not a kvm vCPU"));
        };
        let s = s.clone();
        self.ready.set(None);
        self.call_settled(move |r| state::restore(&r.fd, &s).and_then(|()| r.refresh()))?
            .map_err(failed)
    }
}
