//! One VM: guest RAM, the platform devices, vCPUs on a backend, and the exit loop
//! that turns guest progress into virtual time and decides, only at exits, when
//! timers fire and interrupts are injected.

use std::path::PathBuf;

use vm_memory::GuestMemoryMmap;

use crate::backend::{self, BackendKind};
use crate::boot::{self, BootSpec, EntryState};
use crate::clock::{TimeModel, VirtualTime};
use crate::devices::platform::{CpuRequest, Platform, PlatformConfig, PlatformEvent};
use crate::devices::virtio::{VirtioDeviceConfig, VirtioDevices, VirtioSetupError};
use crate::memory::GuestRam;
use crate::seed;
use crate::trace::{Decision, DecisionKind, TraceHash};
use crate::vcpu::{GuestIo, IoFlow, Vcpu, VcpuError, VcpuExit};

/// Options every detvm guest kernel needs; the user's command line is appended.
/// - `clearcpuid=tsc`-free on purpose: on `emu` the TSC is virtual time.
/// - `mitigations=off`: speculative-execution workarounds only cost instructions here.
/// - `reboot=acpi`: resets go through the FADT reset register the platform serves.
pub const BASE_CMDLINE: &str =
    "console=ttyS0 reboot=acpi panic=-1 mitigations=off no_timer_check tsc=reliable";

/// Added on `emu` only: no address-space randomisation for user processes. QEMU keys
/// translated code by virtual address, so with ASLR every new process maps bash, libc and
/// ld.so somewhere new and translates the same code again (docs/backends.md).
pub const EMU_CMDLINE: &str = "norandmaps";

/// The options of [`BASE_CMDLINE`] and the backend's own.
pub fn base_cmdline(backend: BackendKind) -> String {
    match backend {
        BackendKind::Emu => format!("{BASE_CMDLINE} {EMU_CMDLINE}"),
        BackendKind::Kvm => BASE_CMDLINE.to_string(),
    }
}

/// Instructions between checks while an interrupt waits for the guest to enable
/// interrupts. Small enough that an IRET is followed closely by the next interrupt.
const INTERRUPT_WINDOW_POLL: u64 = 512;

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// Appended to [`BASE_CMDLINE`].
    pub cmdline: String,
    pub memory: u64,
    pub vcpus: u8,
    pub backend: BackendKind,
    pub seed: u64,
    /// Seed of the vCPU switch points alone (default: derived from `seed`), so one
    /// guest state can be explored under many schedules.
    pub schedule_seed: Option<u64>,
    /// Wall-clock time the RTC shows at power-on, in seconds since 1970.
    pub epoch_unix_secs: i64,
    pub time: TimeModel,
    /// Most instructions one vCPU runs before the scheduler decides again.
    pub max_quantum: u64,
    /// Decisions between trace-hash checkpoints.
    pub trace_every: u64,
    /// virtio devices after the always-present virtio-rng, in command-line order.
    pub devices: Vec<VirtioDeviceConfig>,
    /// Exactness torture (tests only): each vCPU run is executed as shorter runs whose
    /// budgets are drawn from this seed ([`backend::split`]). On an exact backend this
    /// changes nothing the guest or the trace can see.
    pub split_runs: Option<u64>,
}

impl VmConfig {
    pub fn new(kernel: PathBuf) -> Self {
        VmConfig {
            kernel,
            initrd: None,
            cmdline: String::new(),
            memory: 256 << 20,
            vcpus: 1,
            backend: BackendKind::Emu,
            seed: 0,
            schedule_seed: None,
            epoch_unix_secs: 2_147_483_640, // 2038-01-19T03:14:00Z
            time: TimeModel::default(),
            max_quantum: 200_000,
            trace_every: 10_000,
            devices: Vec::new(),
            split_runs: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
    #[error(transparent)]
    Boot(#[from] crate::boot::BootError),
    #[error(transparent)]
    Virtio(#[from] VirtioSetupError),
    #[error("{vcpus} vCPUs requested: detvm supports 1 to 8")]
    VcpuCount { vcpus: u8 },
    #[error("vCPU {vcpu} at virtual time {time}: {error}")]
    Vcpu {
        vcpu: usize,
        time: VirtualTime,
        error: VcpuError,
    },
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    PowerOff,
    Reset,
    /// Every vCPU halted with interrupts off (Linux's "System halted").
    Halted,
    /// A triple fault: the guest is broken.
    TripleFault {
        vcpu: usize,
        rip: u64,
    },
    /// The caller's virtual time limit was reached.
    TimeLimit,
}

/// What a vCPU is doing between runs (part of a snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CpuState {
    Running,
    /// HLT: wait for an interrupt.
    Halted,
    /// An AP before its startup IPI.
    WaitForSipi,
}

/// Counters for the run summary.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub pio_reads: u64,
    pub pio_writes: u64,
    pub mmio_reads: u64,
    pub mmio_writes: u64,
    pub halts: u64,
    pub injections: u64,
    pub slices: u64,
    /// Runs the `kvm` watchdog cut short (DESIGN point 9). Host timing chose those
    /// moments: a run with any is not deterministic.
    pub forced_preemptions: u64,
}

pub struct Vm {
    // Field order matters: vCPUs map guest RAM, so they are dropped before it.
    pub(crate) vcpus: Vec<Box<dyn Vcpu>>,
    pub(crate) cpu_state: Vec<CpuState>,
    pub(crate) platform: Platform,
    pub(crate) virtio: VirtioDevices,
    /// Guest RAM: its mapping backs `virtio` and the vCPUs; snapshots freeze and capture it.
    pub(crate) ram: GuestRam,
    pub(crate) now: VirtualTime,
    pub(crate) time: TimeModel,
    pub(crate) max_quantum: u64,
    pub(crate) quantum_rng: rand_chacha::ChaCha20Rng,
    pub(crate) trace: TraceHash,
    pub(crate) stats: Stats,
    pub(crate) next_cpu: usize,
    /// How it was built: restores rebuild the same devices and backend from it.
    pub(crate) config: VmConfig,
}

impl Vm {
    pub fn boot(config: &VmConfig) -> Result<Vm, VmError> {
        let virtio = VirtioDevices::from_config(config.seed, &config.devices)?;
        Self::boot_with_devices(config, virtio)
    }

    /// Boots Linux with devices built by the caller instead of from `config.devices`
    /// (the World's restart after a kill: fresh devices whose disks keep their
    /// contents, see [`VirtioDevices::power_cycled`]). `virtio` must match
    /// `config.devices`; the kernel command line describes `virtio` as given.
    pub fn boot_with_devices(config: &VmConfig, virtio: VirtioDevices) -> Result<Vm, VmError> {
        check_vcpu_count(config)?;
        let ram = GuestRam::new(config.memory)?;
        let cmdline = format!(
            "{} {} {}",
            base_cmdline(config.backend),
            virtio.cmdline_fragment(),
            config.cmdline
        );
        let spec = BootSpec {
            kernel: &config.kernel,
            initrd: config.initrd.as_deref(),
            cmdline: cmdline.trim(),
            vcpus: config.vcpus,
            rng_seed: seed::bytes(config.seed, "vm/boot-rng-seed"),
        };
        let entry = boot::load(ram.memory(), ram.size(), &spec)?;
        Self::start(config, ram, virtio, entry)
    }

    /// Boots a freestanding flat binary instead of Linux (test and probe guests):
    /// `image` is copied to `load_addr`, the boot GDT and identity page tables are
    /// written as for Linux, and vCPU 0 starts in `entry` (e.g.
    /// [`boot::long_mode_entry_state`]). `config.kernel`, `initrd` and `cmdline` are
    /// ignored; platform, time and trace are the same as for Linux.
    pub fn boot_flat(
        config: &VmConfig,
        image: &[u8],
        load_addr: u64,
        entry: EntryState,
    ) -> Result<Vm, VmError> {
        use vm_memory::{Bytes, GuestAddress};
        check_vcpu_count(config)?;
        let ram = GuestRam::new(config.memory)?;
        ram.memory()
            .write_slice(image, GuestAddress(load_addr))
            .map_err(|e| boot::BootError::Layout(format!("loading the flat image: {e}")))?;
        boot::write_gdt_and_page_tables(ram.memory())?;
        let virtio = VirtioDevices::from_config(config.seed, &config.devices)?;
        Self::start(config, ram, virtio, entry)
    }

    /// The common tail of every boot: vCPUs in their entry state, a fresh platform.
    fn start(
        config: &VmConfig,
        ram: GuestRam,
        virtio: VirtioDevices,
        entry: EntryState,
    ) -> Result<Vm, VmError> {
        let vcpu_error = |vcpu, error| VmError::Vcpu {
            vcpu,
            time: VirtualTime::ZERO,
            error,
        };
        let mut vcpus =
            backend::create_vcpus(config.backend, &ram, &mmio_ranges(&virtio), config.vcpus)
                .map_err(|e| vcpu_error(0, e))?;
        vcpus[0]
            .set_sregs(&entry.sregs)
            .map_err(|e| vcpu_error(0, e))?;
        vcpus[0]
            .set_regs(&entry.regs)
            .map_err(|e| vcpu_error(0, e))?;
        let mut cpu_state = vec![CpuState::WaitForSipi; config.vcpus as usize];
        cpu_state[0] = CpuState::Running;
        let platform = Platform::new(PlatformConfig {
            vcpus: config.vcpus as usize,
            rtc_epoch_unix_secs: config.epoch_unix_secs,
        });
        Ok(Vm {
            vcpus,
            cpu_state,
            platform,
            virtio,
            ram,
            now: VirtualTime::ZERO,
            time: config.time,
            max_quantum: config.max_quantum.max(1),
            quantum_rng: seed::stream(
                config.schedule_seed.unwrap_or(config.seed),
                "vm/vcpu-quanta",
            ),
            trace: TraceHash::new(config.trace_every),
            stats: Stats::default(),
            next_cpu: 0,
            config: config.clone(),
        })
    }

    pub fn now(&self) -> VirtualTime {
        self.now
    }

    /// When this VM can next execute an instruction, for a scheduler of many VMs (the
    /// World): `now` if a vCPU can run, the next timer deadline if every vCPU is halted,
    /// `None` if only host input (a frame, console bytes) can wake it, or nothing can
    /// ([`Vm::halted_for_good`]).
    ///
    /// First delivers pending host input, exactly as the next [`Vm::run`] would at this
    /// same instant, so a frame just pushed counts as a wake-up now.
    pub fn next_wake(&mut self) -> Option<VirtualTime> {
        self.platform.advance(self.now);
        self.poll_virtio();
        let runnable = (0..self.vcpus.len()).any(|cpu| match self.cpu_state[cpu] {
            CpuState::Running => true,
            CpuState::Halted => {
                self.platform.pending_interrupt(cpu) && self.vcpus[cpu].interruptible()
            }
            CpuState::WaitForSipi => false,
        });
        // A queued INIT or SIPI is handled at the top of the next run.
        if runnable || self.platform.has_cpu_requests() {
            return Some(self.now);
        }
        if self.halted_for_good() {
            return None; // timers may still tick, but none can wake it
        }
        self.platform.next_deadline(self.now)
    }

    /// True once every vCPU halted with interrupts off (Linux's final "System halted"):
    /// unlike an idle guest, nothing can wake it.
    pub fn halted_for_good(&self) -> bool {
        (0..self.vcpus.len())
            .all(|cpu| self.cpu_state[cpu] != CpuState::Running && !self.vcpus[cpu].interruptible())
    }

    /// Moves virtual time forward to `t` without running any vCPU, as if the host had
    /// stopped the VM meanwhile (a paused VM resuming, or an idle VM waiting for
    /// input): timers that fell due fire late, at the next [`Vm::run`]. Earlier `t`
    /// does nothing.
    pub fn skip_to(&mut self, t: VirtualTime) {
        if t > self.now {
            self.now = t;
            self.record(DecisionKind::Wake, 0, 0, t.as_nanos());
        }
    }

    /// Steps the wall clock the VM's RTC shows by `delta_ns` (a clock-step fault);
    /// monotonic time sources (LAPIC, HPET, PIT, TSC) keep following virtual time.
    pub fn step_wall_clock(&mut self, delta_ns: i64) {
        self.platform.step_wall_clock(delta_ns);
        self.record(DecisionKind::Stop, 0, 0, delta_ns as u64);
    }

    pub fn trace(&self) -> &TraceHash {
        &self.trace
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// False once host timing decided something the guest saw (a forced preemption).
    pub fn deterministic(&self) -> bool {
        self.stats.forced_preemptions == 0
    }

    pub fn instructions(&self) -> u64 {
        self.vcpus.iter().map(|v| v.instructions_retired()).sum()
    }

    /// Runs until the guest stops or virtual time reaches `limit`, passing console
    /// bytes to `console` as they appear.
    pub fn run(
        &mut self,
        limit: VirtualTime,
        console: &mut dyn FnMut(&[u8]),
    ) -> Result<Outcome, VmError> {
        loop {
            self.platform.advance(self.now);
            self.poll_virtio();
            self.handle_cpu_requests()?;
            let out = self.platform.take_console_output();
            if !out.is_empty() {
                console(&out);
            }
            if self.now >= limit {
                return Ok(Outcome::TimeLimit);
            }
            let Some(cpu) = self.pick_cpu() else {
                // Nobody can run: sleep until the next timer, or stop for good.
                match self.platform.next_deadline(self.now) {
                    Some(t) if t > self.now => {
                        self.now = t.min(limit);
                        self.record(DecisionKind::Wake, 0, 0, self.now.as_nanos());
                        continue;
                    }
                    Some(_) => continue,
                    None => return Ok(Outcome::Halted),
                }
            };
            if let Some(outcome) = self.run_slice(cpu, limit)? {
                let out = self.platform.take_console_output();
                if !out.is_empty() {
                    console(&out);
                }
                return Ok(outcome);
            }
        }
    }

    /// The next vCPU to run, round-robin among the runnable ones; a halted vCPU
    /// with a deliverable interrupt wakes up here.
    fn pick_cpu(&mut self) -> Option<usize> {
        let n = self.vcpus.len();
        for i in 0..n {
            let cpu = (self.next_cpu + i) % n;
            if self.cpu_state[cpu] == CpuState::Halted
                && self.platform.pending_interrupt(cpu)
                && self.vcpus[cpu].interruptible()
            {
                self.cpu_state[cpu] = CpuState::Running;
            }
            if self.cpu_state[cpu] == CpuState::Running {
                self.next_cpu = (cpu + 1) % n;
                return Some(cpu);
            }
        }
        None
    }

    fn run_slice(&mut self, cpu: usize, limit: VirtualTime) -> Result<Option<Outcome>, VmError> {
        let now = self.now;
        let fail = |error| VmError::Vcpu {
            vcpu: cpu,
            time: now,
            error,
        };
        let pending = self.platform.pending_interrupt(cpu);
        let interruptible = pending && self.vcpus[cpu].interruptible();
        if interruptible {
            if let Some(vector) = self.platform.acknowledge_interrupt(cpu) {
                self.vcpus[cpu].inject_interrupt(vector).map_err(fail)?;
                self.stats.injections += 1;
                self.record(DecisionKind::Inject, cpu, 0, u64::from(vector));
            }
        }
        // An interrupt the guest blocks (IF=0, STI/MOV SS shadow): `kvm` exits as soon
        // as it can be taken, instead of at some later unrelated exit. `emu` ignores it.
        self.vcpus[cpu].request_interrupt_window(pending && !interruptible);

        let mut budget = self.slice_budget(limit);
        if self.platform.pending_interrupt(cpu) && !self.vcpus[cpu].interruptible() {
            // `emu` has no window exit: come back soon instead, so an interrupt that
            // waits for an ISR's IRET or a CLI section lands promptly (and exactly).
            budget = budget.min(INTERRUPT_WINDOW_POLL);
        }
        let start = self.vcpus[cpu].instructions_retired();
        let mut bridge = IoBridge {
            platform: &mut self.platform,
            virtio: &mut self.virtio,
            mem: self.ram.memory(),
            trace: &mut self.trace,
            stats: &mut self.stats,
            cpu,
            start: self.now,
            ns_per_insn: self.time.ns_per_instruction,
            event: PlatformEvent::None,
        };
        let vcpu = &mut *self.vcpus[cpu];
        let exit = match self.config.split_runs {
            None => vcpu.run(&mut bridge, budget),
            Some(seed) => backend::split::run_split(vcpu, &mut bridge, budget, seed, cpu),
        }
        .map_err(fail)?;
        let event = bridge.event;
        let retired = self.vcpus[cpu].instructions_retired() - start;
        self.now = self
            .now
            .saturating_add(retired * self.time.ns_per_instruction + self.time.ns_per_exit);
        self.stats.slices += 1;

        match event {
            PlatformEvent::PowerOff => return Ok(Some(Outcome::PowerOff)),
            PlatformEvent::Reset => return Ok(Some(Outcome::Reset)),
            PlatformEvent::None | PlatformEvent::InterruptsChanged => {}
        }
        match exit {
            VcpuExit::Halted => {
                self.stats.halts += 1;
                let rip = self.vcpus[cpu].regs().map(|r| r.rip).unwrap_or(0);
                self.record(DecisionKind::Halt, cpu, rip, 0);
                self.cpu_state[cpu] = CpuState::Halted;
                // HLT with interrupts off never wakes (Linux's final halt).
                if !self.vcpus[cpu].interruptible() && self.all_others_stopped(cpu) {
                    return Ok(Some(Outcome::Halted));
                }
            }
            VcpuExit::TripleFault { rip } => {
                return Ok(Some(Outcome::TripleFault { vcpu: cpu, rip }))
            }
            VcpuExit::BudgetExhausted => self.record(DecisionKind::Budget, cpu, 0, retired),
            VcpuExit::IoStop | VcpuExit::InterruptWindow => {
                self.record(DecisionKind::Stop, cpu, 0, retired)
            }
            // The access itself is already in the trace; only time moved (ns_per_exit).
            VcpuExit::Io => {}
            VcpuExit::Kicked => {
                // The guest spun past the watchdog's long limit: force the next timer
                // (as HLT would) so it can make progress; the run is no longer
                // deterministic (see `Vm::deterministic`).
                self.stats.forced_preemptions += 1;
                if let Some(t) = self.platform.next_deadline(self.now) {
                    self.now = self.now.max(t.min(limit));
                }
                self.record(DecisionKind::Stop, cpu, 0, u64::MAX);
            }
        }
        Ok(None)
    }

    fn all_others_stopped(&self, cpu: usize) -> bool {
        self.cpu_state
            .iter()
            .enumerate()
            .all(|(i, s)| i == cpu || *s != CpuState::Running)
    }

    /// Instructions until the next timer (so it fires exactly on time), capped by a
    /// quantum drawn from the seed when several vCPUs share the timeline.
    fn slice_budget(&mut self, limit: VirtualTime) -> u64 {
        use rand_chacha::rand_core::Rng;
        let ns = self.time.ns_per_instruction.max(1);
        let mut budget = self.max_quantum;
        if self.vcpus.len() > 1 {
            budget = 1 + self.quantum_rng.next_u64() % self.max_quantum;
        }
        let deadline = self
            .platform
            .next_deadline(self.now)
            .map_or(limit, |t| t.min(limit));
        let until = deadline.saturating_sub(self.now) / ns;
        budget.min(until.max(1))
    }

    fn handle_cpu_requests(&mut self) -> Result<(), VmError> {
        for (cpu, request) in self.platform.take_cpu_requests() {
            if cpu >= self.vcpus.len() {
                continue;
            }
            match request {
                CpuRequest::Init => self.cpu_state[cpu] = CpuState::WaitForSipi,
                CpuRequest::Startup(vector) if self.cpu_state[cpu] == CpuState::WaitForSipi => {
                    let boot::EntryState { regs, sregs } = boot::real_mode_ap_state(vector);
                    let now = self.now;
                    let fail = |error| VmError::Vcpu {
                        vcpu: cpu,
                        time: now,
                        error,
                    };
                    self.vcpus[cpu].set_sregs(&sregs).map_err(fail)?;
                    self.vcpus[cpu].set_regs(&regs).map_err(fail)?;
                    self.cpu_state[cpu] = CpuState::Running;
                }
                // A SIPI to a running CPU is ignored, as on hardware; NMIs are not modelled yet.
                CpuRequest::Startup(_) | CpuRequest::Nmi => {}
            }
        }
        Ok(())
    }

    fn record(&mut self, kind: DecisionKind, cpu: usize, rip: u64, detail: u64) {
        let instructions = self.vcpus.get(cpu).map_or(0, |v| v.instructions_retired());
        self.trace.record(Decision {
            kind,
            vcpu: cpu as u32,
            rip,
            time: self.now,
            instructions,
            detail,
        });
    }
}

/// The MMIO ranges the core decodes: the platform's and the virtio windows.
pub(crate) fn mmio_ranges(virtio: &VirtioDevices) -> Vec<(u64, u64)> {
    let mut ranges = Platform::MMIO_RANGES.to_vec();
    ranges.push(virtio.mmio_range());
    ranges
}

fn check_vcpu_count(config: &VmConfig) -> Result<(), VmError> {
    if (1..=8).contains(&config.vcpus) {
        Ok(())
    } else {
        Err(VmError::VcpuCount {
            vcpus: config.vcpus,
        })
    }
}

/// virtio: host-side delivery at exits and interrupt lines into the platform.
impl Vm {
    /// The VM's virtio devices, for their host sides (console bytes, frames, disks).
    pub fn virtio(&mut self) -> &mut VirtioDevices {
        &mut self.virtio
    }

    /// Delivers queued host input (net RX, console bytes) at this exit.
    fn poll_virtio(&mut self) {
        self.virtio.poll(self.ram.memory());
        drive_virtio_irqs(&mut self.virtio, &mut self.platform);
    }
}

/// Drives changed virtio interrupt lines into the platform; true if any changed.
fn drive_virtio_irqs(virtio: &mut VirtioDevices, platform: &mut Platform) -> bool {
    let changes = virtio.take_irq_changes();
    for &(gsi, level) in &changes {
        platform.set_irq(gsi, level);
    }
    !changes.is_empty()
}

/// Connects a running vCPU to the platform for one slice, turning instruction
/// counts into virtual time and recording every access in the trace hash.
struct IoBridge<'a> {
    platform: &'a mut Platform,
    virtio: &'a mut VirtioDevices,
    mem: &'a GuestMemoryMmap,
    trace: &'a mut TraceHash,
    stats: &'a mut Stats,
    cpu: usize,
    start: VirtualTime,
    ns_per_insn: u64,
    event: PlatformEvent,
}

impl IoBridge<'_> {
    fn at(&self, insns: u64) -> VirtualTime {
        self.start.saturating_add(insns * self.ns_per_insn)
    }

    fn record(&mut self, kind: DecisionKind, insns: u64, detail: u64) {
        let time = self.at(insns);
        self.trace.record(Decision {
            kind,
            vcpu: self.cpu as u32,
            rip: 0,
            time,
            instructions: insns,
            detail,
        });
    }

    /// After a virtio access: a changed line ends the slice so the core can deliver.
    fn virtio_event(&mut self) -> PlatformEvent {
        if drive_virtio_irqs(self.virtio, self.platform) {
            PlatformEvent::InterruptsChanged
        } else {
            PlatformEvent::None
        }
    }

    fn flow(&mut self, event: PlatformEvent) -> IoFlow {
        match event {
            PlatformEvent::None => IoFlow::Continue,
            other => {
                if self.event == PlatformEvent::None || other != PlatformEvent::InterruptsChanged {
                    self.event = other;
                }
                IoFlow::Stop
            }
        }
    }
}

/// Folds an access's value into the trace detail: address in the high bits, data low.
fn detail(addr: u64, data: &[u8]) -> u64 {
    let mut value = [0u8; 8];
    let n = data.len().min(8);
    value[..n].copy_from_slice(&data[..n]);
    (addr << 32) ^ u64::from_le_bytes(value)
}

impl GuestIo for IoBridge<'_> {
    fn pio_read(&mut self, insns: u64, port: u16, data: &mut [u8]) {
        self.platform.pio_read(self.at(insns), self.cpu, port, data);
        self.stats.pio_reads += 1;
        self.record(DecisionKind::PioRead, insns, detail(u64::from(port), data));
    }

    fn pio_write(&mut self, insns: u64, port: u16, data: &[u8]) -> IoFlow {
        let event = self
            .platform
            .pio_write(self.at(insns), self.cpu, port, data);
        self.stats.pio_writes += 1;
        self.record(DecisionKind::PioWrite, insns, detail(u64::from(port), data));
        self.flow(event)
    }

    fn mmio_read(&mut self, insns: u64, addr: u64, data: &mut [u8]) {
        if self.virtio.mmio_read(addr, data).is_none()
            && !self
                .platform
                .mmio_read(self.at(insns), self.cpu, addr, data)
        {
            data.fill(0xFF);
        }
        self.stats.mmio_reads += 1;
        self.record(DecisionKind::MmioRead, insns, detail(addr, data));
    }

    fn mmio_write(&mut self, insns: u64, addr: u64, data: &[u8]) -> IoFlow {
        let event = match self.virtio.mmio_write(self.mem, addr, data) {
            Some(_) => self.virtio_event(),
            None => {
                self.platform
                    .mmio_write(self.at(insns), self.cpu, addr, data)
                    .1
            }
        };
        self.stats.mmio_writes += 1;
        self.record(DecisionKind::MmioWrite, insns, detail(addr, data));
        self.flow(event)
    }

    fn rdtsc(&mut self, insns: u64) -> u64 {
        // A 1 GHz TSC: virtual nanoseconds.
        self.at(insns).as_nanos()
    }
}
