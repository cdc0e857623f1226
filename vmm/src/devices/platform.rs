//! The PC platform of one VM: every legacy and APIC device, wired together.
//!
//! Interrupt lines are numbered as ACPI GSIs with the usual ISA override: GSI 0 (the
//! timer: PIT, or HPET timer 0 in legacy replacement) drives PIC IRQ0 and IOAPIC pin 2;
//! GSI 1-15 drive PIC IRQn and IOAPIC pin n (GSI 2 is unused: IR2 is the cascade and
//! pin 2 the timer); GSI 16-23 drive IOAPIC pins only. Level sources (UART, RTC, HPET
//! level timers, [`Platform::set_irq`]) are OR-ed per line and only changes are driven
//! into the controllers; edge sources (PIT, HPET edge timers) pulse the line, which does
//! nothing while a level source holds it high. The PIC reaches vCPU 0 only, through
//! LINT0 in ExtINT mode or while its LAPIC is software-disabled (no BIOS sets up
//! virtual-wire mode). INTA asks the LAPIC first, then the PIC, as QEMU does.
//!
//! Every access first runs [`Platform::advance`] to `now`, so the guest always sees
//! every timer event due at or before the moment it looks. A write returns
//! [`PlatformEvent::InterruptsChanged`] when it changed whether any vCPU has a pending
//! interrupt, queued a CPU request (INIT, SIPI, NMI) or moved the next timer deadline,
//! so the vCPU loop can deliver and re-plan promptly.

use std::convert::Infallible;

use serde::{Deserialize, Serialize};

use crate::clock::VirtualTime;
use crate::devices::acpi_pm::{AcpiPm, AcpiPmState, PmAction};
use crate::devices::hpet::{Hpet, HpetState, HPET_BASE, HPET_SIZE};
use crate::devices::ioapic::{
    Delivery, Ioapic, IoapicState, IOAPIC_BASE, IOAPIC_PINS, IOAPIC_SIZE,
};
use crate::devices::lapic::{self, IpiKind, Lapic, LapicEvent, LapicState, LAPIC_BASE, LAPIC_SIZE};
use crate::devices::pic::{Pic, PicState};
use crate::devices::pit::{Pit, PitState};
use crate::devices::rtc::{Rtc, RtcState, RTC_IRQ};
use crate::devices::serial::{Serial, SerialState, COM1_BASE, COM1_IRQ};
use crate::persist::Persist;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformConfig {
    /// Number of vCPUs, 1-255 (APIC IDs 0..vcpus; 0xFF is the broadcast ID).
    pub vcpus: usize,
    /// Unix seconds the RTC shows at virtual time 0.
    pub rtc_epoch_unix_secs: i64,
}

/// What the vCPU loop must do after an access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformEvent {
    None,
    InterruptsChanged,
    PowerOff,
    Reset,
}

/// Requests for the vCPU loop about a vCPU's execution state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CpuRequest {
    /// INIT: the vCPU waits for a SIPI (its LAPIC is already reset).
    Init,
    /// SIPI: start in real mode at `vector << 12`.
    Startup(u8),
    Nmi,
}

/// Every device's state; the platform's snapshot form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformState {
    pub pic: PicState,
    pub pit: PitState,
    pub rtc: RtcState,
    pub serial: SerialState,
    pub lapics: Vec<LapicState>,
    pub ioapic: IoapicState,
    pub hpet: HpetState,
    pub acpi: AcpiPmState,
    /// GSIs asserted through [`Platform::set_irq`], one bit each.
    pub external_levels: u32,
    /// GSI levels as last driven into the PIC and IOAPIC.
    pub applied_levels: u32,
    pub cpu_requests: Vec<(usize, CpuRequest)>,
    pub unknown_port_accesses: u64,
}

#[derive(Debug, Clone)]
pub struct Platform {
    pic: Pic,
    pit: Pit,
    rtc: Rtc,
    serial: Serial,
    lapics: Vec<Lapic>,
    ioapic: Ioapic,
    hpet: Hpet,
    acpi: AcpiPm,
    external_levels: u32,
    applied_levels: u32,
    cpu_requests: Vec<(usize, CpuRequest)>,
    unknown_port_accesses: u64,
}

/// What a write may have changed, compared before and after it.
#[derive(PartialEq, Eq)]
struct Watch {
    pending: Vec<bool>,
    deadline: Option<VirtualTime>,
    requests: usize,
}

impl Persist for Platform {
    type State = PlatformState;
    type Resources<'a> = ();
    type Error = Infallible;

    fn state(&self) -> PlatformState {
        PlatformState {
            pic: self.pic.state(),
            pit: self.pit.state(),
            rtc: self.rtc.state(),
            serial: self.serial.state(),
            lapics: self.lapics.iter().map(Lapic::state).collect(),
            ioapic: self.ioapic.state(),
            hpet: self.hpet.state(),
            acpi: self.acpi.state(),
            external_levels: self.external_levels,
            applied_levels: self.applied_levels,
            cpu_requests: self.cpu_requests.clone(),
            unknown_port_accesses: self.unknown_port_accesses,
        }
    }

    fn restore((): (), state: &PlatformState) -> Result<Self, Infallible> {
        let restored = |s| {
            let Ok(lapic) = Lapic::restore((), s);
            lapic
        };
        let mut lapics: Vec<Lapic> = state.lapics.iter().map(restored).collect();
        if lapics.is_empty() {
            lapics.push(Lapic::new(0));
        }
        let Ok(pic) = Pic::restore((), &state.pic);
        let Ok(pit) = Pit::restore((), &state.pit);
        let Ok(rtc) = Rtc::restore((), &state.rtc);
        let Ok(serial) = Serial::restore((), &state.serial);
        let Ok(ioapic) = Ioapic::restore((), &state.ioapic);
        let Ok(hpet) = Hpet::restore((), &state.hpet);
        let Ok(acpi) = AcpiPm::restore((), &state.acpi);
        Ok(Platform {
            pic,
            pit,
            rtc,
            serial,
            lapics,
            ioapic,
            hpet,
            acpi,
            external_levels: state.external_levels,
            applied_levels: state.applied_levels,
            cpu_requests: state.cpu_requests.clone(),
            unknown_port_accesses: state.unknown_port_accesses,
        })
    }
}

impl Platform {
    /// (base, size) of the MMIO ranges the platform decodes.
    pub const MMIO_RANGES: &'static [(u64, u64)] = &[
        (LAPIC_BASE, LAPIC_SIZE),
        (IOAPIC_BASE, IOAPIC_SIZE),
        (HPET_BASE, HPET_SIZE),
    ];

    pub fn new(cfg: PlatformConfig) -> Self {
        let vcpus = cfg.vcpus.clamp(1, 255);
        Platform {
            pic: Pic::new(),
            pit: Pit::new(),
            rtc: Rtc::new(cfg.rtc_epoch_unix_secs),
            serial: Serial::new(),
            lapics: (0..vcpus).map(|i| Lapic::new(i as u8)).collect(),
            ioapic: Ioapic::new(),
            hpet: Hpet::new(),
            acpi: AcpiPm::new(),
            external_levels: 0,
            applied_levels: 0,
            cpu_requests: Vec::new(),
            unknown_port_accesses: 0,
        }
    }

    /// Port accesses that hit no device (reads returned all-ones, writes were dropped).
    pub fn unknown_port_accesses(&self) -> u64 {
        self.unknown_port_accesses
    }

    pub fn take_console_output(&mut self) -> Vec<u8> {
        self.serial.take_output()
    }

    /// Queues bytes for the guest to read from COM1.
    pub fn push_console_input(&mut self, bytes: &[u8]) {
        self.serial.push_input(bytes);
        self.update_lines();
    }

    /// Sets a plain CMOS RAM byte (e.g. the memory-size bytes a BIOS would fill).
    pub fn set_cmos_byte(&mut self, index: u8, value: u8) {
        self.rtc.set_cmos_byte(index, value);
    }

    pub fn has_cpu_requests(&self) -> bool {
        !self.cpu_requests.is_empty()
    }

    /// Steps the RTC's wall clock by `delta_ns` (the World's clock-step fault).
    pub fn step_wall_clock(&mut self, delta_ns: i64) {
        self.rtc.step(delta_ns);
    }

    pub fn take_cpu_requests(&mut self) -> Vec<(usize, CpuRequest)> {
        std::mem::take(&mut self.cpu_requests)
    }

    pub fn pio_read(&mut self, now: VirtualTime, _cpu: usize, port: u16, data: &mut [u8]) {
        self.advance(now);
        let len = data.len();
        let mut unknown = false;
        for (i, b) in data.iter_mut().enumerate() {
            let p = port.wrapping_add(i as u16);
            *b = match p {
                0x20 | 0x21 | 0xA0 | 0xA1 | 0x4D0 | 0x4D1 => self.pic.read(p),
                0x40..=0x43 => self.pit.read(now, p),
                0x61 => self.pit.read_port61(now),
                0x70 | 0x71 => self.rtc.read(now, p),
                0x3F8..=0x3FF => self.serial.read(p - COM1_BASE),
                0x80 | 0xED => 0xFF, // POST codes and io_delay
                _ if AcpiPm::handles(p, len) => self.acpi.read(now, p),
                _ => {
                    unknown = true;
                    0xFF
                }
            };
        }
        self.unknown_port_accesses += u64::from(unknown);
        // Reads clear interrupt sources too (IIR, RTC reg C, PIC poll).
        self.update_lines();
    }

    pub fn pio_write(
        &mut self,
        now: VirtualTime,
        _cpu: usize,
        port: u16,
        data: &[u8],
    ) -> PlatformEvent {
        self.advance(now);
        let before = self.watch(now);
        let mut unknown = false;
        let mut action = PmAction::None;
        for (i, &b) in data.iter().enumerate() {
            let p = port.wrapping_add(i as u16);
            match p {
                0x20 | 0x21 | 0xA0 | 0xA1 | 0x4D0 | 0x4D1 => self.pic.write(p, b),
                0x40..=0x43 => self.pit.write(now, p, b),
                0x61 => self.pit.write_port61(now, b),
                0x70 | 0x71 => self.rtc.write(now, p, b),
                0x3F8..=0x3FF => self.serial.write(p - COM1_BASE, b),
                0x80 | 0xED => {}
                _ if AcpiPm::handles(p, data.len()) => match self.acpi.write(p, b) {
                    PmAction::None => {}
                    a => action = a,
                },
                _ => unknown = true,
            }
        }
        self.unknown_port_accesses += u64::from(unknown);
        self.update_lines();
        match action {
            PmAction::PowerOff => PlatformEvent::PowerOff,
            PmAction::Reset => PlatformEvent::Reset,
            PmAction::None => self.event_since(now, before),
        }
    }

    pub fn mmio_read(&mut self, now: VirtualTime, cpu: usize, addr: u64, data: &mut [u8]) -> bool {
        let Some((base, dev)) = Self::mmio_device(addr) else {
            return false;
        };
        self.advance(now);
        let off = addr - base;
        match dev {
            Mmio::Lapic => match self.lapics.get(cpu) {
                Some(l) => l.read(now, off, data),
                None => data.fill(0),
            },
            Mmio::Ioapic => self.ioapic.read(off, data),
            Mmio::Hpet => self.hpet.read(now, off, data),
        }
        true
    }

    pub fn mmio_write(
        &mut self,
        now: VirtualTime,
        cpu: usize,
        addr: u64,
        data: &[u8],
    ) -> (bool, PlatformEvent) {
        let Some((base, dev)) = Self::mmio_device(addr) else {
            return (false, PlatformEvent::None);
        };
        self.advance(now);
        let before = self.watch(now);
        let off = addr - base;
        match dev {
            Mmio::Lapic => {
                let event = self
                    .lapics
                    .get_mut(cpu)
                    .and_then(|l| l.write(now, off, data));
                match event {
                    Some(LapicEvent::LevelEoi(vector)) => {
                        let lapics = &self.lapics;
                        let d = self.ioapic.end_of_interrupt(vector, &|dst, lg| {
                            lapic::destinations(lapics, dst, lg)
                        });
                        self.deliver(d);
                    }
                    Some(LapicEvent::Ipi(cmd)) => {
                        for (target, kind) in lapic::route_ipi(&self.lapics, cpu, &cmd) {
                            self.ipi(target, kind);
                        }
                    }
                    None => {}
                }
            }
            Mmio::Ioapic => {
                let lapics = &self.lapics;
                let d = self
                    .ioapic
                    .write(off, data, &|dst, lg| lapic::destinations(lapics, dst, lg));
                self.deliver(d);
            }
            Mmio::Hpet => self.hpet.write(now, off, data),
        }
        self.update_lines();
        (true, self.event_since(now, before))
    }

    /// Fires every timer due at or before `now`.
    pub fn advance(&mut self, now: VirtualTime) {
        let pit_edge = self.pit.advance(now);
        self.rtc.advance(now);
        let hpet_pulses = self.hpet.advance(now);
        for l in &mut self.lapics {
            l.advance(now);
        }
        self.update_lines();
        if pit_edge && !self.hpet.legacy_replacement() {
            self.pulse(0);
        }
        for gsi in hpet_pulses {
            self.pulse(gsi);
        }
    }

    /// The earliest timer event still to come (`now` if one is already due).
    pub fn next_deadline(&self, now: VirtualTime) -> Option<VirtualTime> {
        let legacy = self.hpet.legacy_replacement();
        let isa_timers = [self.pit.next_deadline(), self.rtc.next_deadline()];
        let isa = isa_timers.into_iter().filter(|_| !legacy);
        let lapics = self.lapics.iter().map(Lapic::next_deadline);
        isa.chain(lapics)
            .chain([self.hpet.next_deadline()])
            .flatten()
            .min()
            .map(|t| t.max(now))
    }

    /// Drives GSI `gsi` (0-23, not 2) from another device, e.g. virtio.
    pub fn set_irq(&mut self, gsi: u32, level: bool) {
        if gsi as usize >= IOAPIC_PINS || gsi == 2 {
            return;
        }
        if level {
            self.external_levels |= 1 << gsi;
        } else {
            self.external_levels &= !(1 << gsi);
        }
        self.update_lines();
    }

    fn pic_reaches(&self, cpu: usize) -> bool {
        cpu == 0 && self.lapics[0].accepts_pic_interrupts()
    }

    /// Whether vCPU `cpu` has an interrupt to take now.
    pub fn pending_interrupt(&self, cpu: usize) -> bool {
        let Some(l) = self.lapics.get(cpu) else {
            return false;
        };
        l.pending_vector().is_some() || (self.pic_reaches(cpu) && self.pic.has_interrupt())
    }

    /// INTA for vCPU `cpu`: the vector to inject now, if any.
    pub fn acknowledge_interrupt(&mut self, cpu: usize) -> Option<u8> {
        if let Some(v) = self.lapics.get_mut(cpu)?.acknowledge() {
            return Some(v);
        }
        (self.pic_reaches(cpu) && self.pic.has_interrupt()).then(|| self.pic.acknowledge())
    }

    fn mmio_device(addr: u64) -> Option<(u64, Mmio)> {
        let devs = [Mmio::Lapic, Mmio::Ioapic, Mmio::Hpet];
        Self::MMIO_RANGES
            .iter()
            .zip(devs)
            .find(|((base, size), _)| addr >= *base && addr - base < *size)
            .map(|((base, _), dev)| (*base, dev))
    }

    fn ipi(&mut self, target: usize, kind: IpiKind) {
        match kind {
            IpiKind::Fixed(v) => self.lapics[target].accept_irq(v, false),
            IpiKind::Init => {
                self.lapics[target].init_reset();
                self.cpu_requests.push((target, CpuRequest::Init));
            }
            IpiKind::Startup(v) => self.cpu_requests.push((target, CpuRequest::Startup(v))),
            IpiKind::Nmi => self.cpu_requests.push((target, CpuRequest::Nmi)),
        }
    }

    fn deliver(&mut self, deliveries: Vec<Delivery>) {
        for d in deliveries {
            let vector = match d.ext_int {
                false => d.vector,
                true if self.pic.has_interrupt() => self.pic.acknowledge(),
                true => continue,
            };
            if let Some(l) = self.lapics.get_mut(d.cpu) {
                l.accept_irq(vector, d.level_triggered);
            }
        }
    }

    /// Drives one GSI into the PIC and the IOAPIC.
    fn drive(&mut self, gsi: u32, level: bool) {
        if gsi < 16 {
            self.pic.set_irq(gsi as u8, level);
        }
        let pin = if gsi == 0 { 2 } else { gsi as usize };
        let lapics = &self.lapics;
        let d = self
            .ioapic
            .set_irq(pin, level, &|dst, lg| lapic::destinations(lapics, dst, lg));
        self.deliver(d);
    }

    fn pulse(&mut self, gsi: u32) {
        if self.applied_levels & (1 << gsi) == 0 {
            self.drive(gsi, true);
            self.drive(gsi, false);
        }
    }

    /// Recomputes the level-driven lines and drives those that changed.
    fn update_lines(&mut self) {
        let mut want = self.external_levels;
        let mut raise = |gsi: u32, on: bool| {
            if on && (gsi as usize) < IOAPIC_PINS && gsi != 2 {
                want |= 1 << gsi;
            }
        };
        raise(COM1_IRQ, self.serial.irq_level());
        raise(
            RTC_IRQ,
            self.rtc.irq_level() && !self.hpet.legacy_replacement(),
        );
        for (gsi, on) in self.hpet.level_lines() {
            raise(gsi, on);
        }
        let changed = want ^ self.applied_levels;
        for gsi in (0..IOAPIC_PINS as u32).filter(|g| changed & (1 << g) != 0) {
            self.applied_levels ^= 1 << gsi;
            self.drive(gsi, want & (1 << gsi) != 0);
        }
    }

    fn watch(&self, now: VirtualTime) -> Watch {
        Watch {
            pending: (0..self.lapics.len())
                .map(|c| self.pending_interrupt(c))
                .collect(),
            deadline: self.next_deadline(now),
            requests: self.cpu_requests.len(),
        }
    }

    fn event_since(&self, now: VirtualTime, before: Watch) -> PlatformEvent {
        if self.watch(now) == before {
            PlatformEvent::None
        } else {
            PlatformEvent::InterruptsChanged
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Mmio {
    Lapic,
    Ioapic,
    Hpet,
}

#[cfg(test)]
mod tests;
