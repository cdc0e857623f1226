//! xAPIC local APIC, one per vCPU, MMIO at 0xFEE00000 (4 KiB).
//!
//! Registers are the first 4 bytes of each 16-byte slot; reads of any size see them
//! byte by byte (the rest of a slot reads 0), writes other than aligned 32-bit ones are
//! ignored. Delivery is by priority: [`Lapic::pending_vector`] is the highest IRR vector
//! whose class beats PPR. An EOI of a level-triggered vector (TMR set) is reported so the
//! platform can tell the IOAPIC. IPIs leave as [`LapicEvent::Ipi`] and are resolved to
//! target vCPUs by [`route_ipi`]; delivery is instant, so ICR's delivery-status bit
//! always reads idle. The version (0x50014) advertises 6 LVT entries, no EOI-broadcast
//! suppression. As in QEMU, a software-disabled APIC still latches IRR but delivers
//! nothing. The timer runs on [`LAPIC_BUS_HZ`] divided by the divide configuration,
//! in one-shot or periodic mode (TSC-deadline is hidden by CPUID; its mode bit is
//! dropped). Missed periods are coalesced into one interrupt.

use serde::{Deserialize, Serialize};
use std::convert::Infallible;

use crate::clock::VirtualTime;
use crate::devices::read_le;
use crate::persist::Persist;

pub const LAPIC_BASE: u64 = 0xFEE0_0000;
pub const LAPIC_SIZE: u64 = 0x1000;
/// The timer's input clock: 1 GHz, so one timer tick is `divide` ns exactly. Linux
/// calibrates the APIC timer against the PIT/HPET, so any fixed value works; this
/// one keeps every expiry an exact integer of virtual nanoseconds.
pub const LAPIC_BUS_HZ: u64 = 1_000_000_000;
const NS_PER_BUS_TICK: u64 = 1_000_000_000 / LAPIC_BUS_HZ;
const _: () = assert!(NS_PER_BUS_TICK * LAPIC_BUS_HZ == 1_000_000_000);

const VERSION: u32 = 0x0005_0014;
const SVR_ENABLE: u32 = 0x100;
const LVT_MASKED: u32 = 0x1_0000;
const LVT_PERIODIC: u32 = 0x2_0000;
const LVT_TIMER: usize = 0;
const LVT_LINT0: usize = 3;
const LVT_ERROR: usize = 5;
/// Writable bits of the LVT entries: timer, thermal, perf, LINT0, LINT1, error.
const LVT_WRITABLE: [u32; 6] = [0x3_00FF, 0x1_07FF, 0x1_07FF, 0x1_A7FF, 0x1_A7FF, 0x1_00FF];
const ESR_SEND_ILLEGAL: u32 = 0x20;
const ESR_RECV_ILLEGAL: u32 = 0x40;

/// What an IPI asks of its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IpiKind {
    Fixed(u8),
    Init,
    /// SIPI with its vector: the AP starts at `vector << 12`.
    Startup(u8),
    Nmi,
}

/// A decoded ICR write, before destinations are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcrCommand {
    pub kind: IpiKind,
    /// Lowest-priority delivery: goes to the first matching vCPU.
    pub lowest_priority: bool,
    /// 0: none (use `dest`), 1: self, 2: all including self, 3: all excluding self.
    pub shorthand: u8,
    pub dest: u8,
    pub logical: bool,
}

/// Something a register write asks of the rest of the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LapicEvent {
    /// EOI of a level-triggered vector: broadcast to the IOAPIC.
    LevelEoi(u8),
    Ipi(IcrCommand),
}

/// The registers; also the snapshot form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LapicState {
    pub id: u32,
    pub tpr: u32,
    pub ldr: u32,
    pub dfr: u32,
    pub svr: u32,
    pub isr: [u32; 8],
    pub tmr: [u32; 8],
    pub irr: [u32; 8],
    /// ESR as last latched by a write, and errors since.
    pub esr: u32,
    pub esr_pending: u32,
    pub icr_lo: u32,
    pub icr_hi: u32,
    pub lvt: [u32; 6],
    pub timer_initial: u32,
    pub timer_dcr: u32,
    /// Virtual ns at which the count next reaches 0.
    pub timer_deadline: u64,
    /// An expiry at `timer_deadline` is still to come.
    pub timer_armed: bool,
}

#[derive(Debug, Clone)]
pub struct Lapic {
    s: LapicState,
}

fn highest(bits: &[u32; 8]) -> Option<u8> {
    (0..8)
        .rev()
        .find(|i| bits[*i] != 0)
        .map(|i| (i * 32 + 31 - bits[i].leading_zeros() as usize) as u8)
}

fn bit(bits: &[u32; 8], v: u8) -> bool {
    bits[usize::from(v >> 5)] & (1 << (v & 31)) != 0
}

fn set_bit(bits: &mut [u32; 8], v: u8, on: bool) {
    let w = &mut bits[usize::from(v >> 5)];
    if on {
        *w |= 1 << (v & 31);
    } else {
        *w &= !(1 << (v & 31));
    }
}

impl Persist for Lapic {
    type State = LapicState;
    type Resources<'a> = ();
    type Error = Infallible;

    fn state(&self) -> LapicState {
        self.s.clone()
    }

    fn restore((): (), state: &LapicState) -> Result<Self, Infallible> {
        Ok(Lapic { s: state.clone() })
    }
}

impl Lapic {
    /// The power-on state of the APIC with ID `apic_id`: software-disabled, LVTs masked.
    pub fn new(apic_id: u8) -> Self {
        Lapic {
            s: LapicState {
                id: u32::from(apic_id) << 24,
                dfr: 0xFFFF_FFFF,
                svr: 0xFF,
                lvt: [LVT_MASKED; 6],
                ..LapicState::default()
            },
        }
    }

    /// INIT: back to power-on state, keeping the APIC ID.
    pub fn init_reset(&mut self) {
        *self = Lapic::new(self.apic_id());
    }

    pub fn apic_id(&self) -> u8 {
        (self.s.id >> 24) as u8
    }

    pub fn software_enabled(&self) -> bool {
        self.s.svr & SVR_ENABLE != 0
    }

    /// Whether the PIC's INTR reaches this CPU: LINT0 unmasked in ExtINT mode, or the
    /// APIC software-disabled (there is no BIOS to set up virtual-wire mode, so a
    /// disabled APIC passes INTR through as at reset).
    pub fn accepts_pic_interrupts(&self) -> bool {
        let lint0 = self.s.lvt[LVT_LINT0];
        !self.software_enabled() || (lint0 & LVT_MASKED == 0 && (lint0 >> 8) & 7 == 7)
    }

    /// Whether `dest` in physical or logical (flat or cluster) mode names this APIC.
    pub fn matches(&self, dest: u8, logical: bool) -> bool {
        if dest == 0xFF {
            return true;
        }
        if !logical {
            return self.apic_id() == dest;
        }
        let ldr = (self.s.ldr >> 24) as u8;
        if self.s.dfr >> 28 == 0xF {
            ldr & dest != 0
        } else {
            ldr >> 4 == dest >> 4 && ldr & dest & 0x0F != 0
        }
    }

    /// Latches `vector` into IRR (an interrupt message arrived).
    pub fn accept_irq(&mut self, vector: u8, level_triggered: bool) {
        if vector < 16 {
            self.error(ESR_RECV_ILLEGAL);
            return;
        }
        set_bit(&mut self.s.irr, vector, true);
        set_bit(&mut self.s.tmr, vector, level_triggered);
    }

    fn ppr(&self) -> u32 {
        let isrv = u32::from(highest(&self.s.isr).unwrap_or(0));
        if self.s.tpr & 0xF0 >= isrv & 0xF0 {
            self.s.tpr & 0xFF
        } else {
            isrv & 0xF0
        }
    }

    /// The vector an INTA would take now, if any.
    pub fn pending_vector(&self) -> Option<u8> {
        if !self.software_enabled() {
            return None;
        }
        let v = highest(&self.s.irr)?;
        (u32::from(v) & 0xF0 > self.ppr() & 0xF0).then_some(v)
    }

    /// INTA: moves the pending vector from IRR to ISR and returns it.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let v = self.pending_vector()?;
        set_bit(&mut self.s.irr, v, false);
        set_bit(&mut self.s.isr, v, true);
        Some(v)
    }

    fn eoi(&mut self) -> Option<LapicEvent> {
        let v = highest(&self.s.isr)?;
        set_bit(&mut self.s.isr, v, false);
        bit(&self.s.tmr, v).then_some(LapicEvent::LevelEoi(v))
    }

    fn error(&mut self, esr_bit: u32) {
        self.s.esr_pending |= esr_bit;
        let lvt = self.s.lvt[LVT_ERROR];
        if lvt & LVT_MASKED == 0 && lvt & 0xFF >= 16 {
            set_bit(&mut self.s.irr, lvt as u8, true);
            set_bit(&mut self.s.tmr, lvt as u8, false);
        }
    }

    /// Nanoseconds per timer tick: the bus clock divided per the divide configuration.
    fn timer_tick_ns(&self) -> u64 {
        let d = self.s.timer_dcr;
        let code = (d & 3) | ((d >> 1) & 4);
        let divide = if code == 7 { 1 } else { 2u64 << code };
        divide * NS_PER_BUS_TICK
    }

    fn timer_period_ns(&self) -> u64 {
        u64::from(self.s.timer_initial) * self.timer_tick_ns()
    }

    fn timer_periodic(&self) -> bool {
        self.s.lvt[LVT_TIMER] & LVT_PERIODIC != 0
    }

    /// The current-count register at `now`.
    fn timer_count(&self, now: u64) -> u32 {
        let tick = self.timer_tick_ns();
        let period = self.timer_period_ns();
        if self.s.timer_initial == 0 {
            return 0;
        }
        let left = if now < self.s.timer_deadline {
            self.s.timer_deadline - now
        } else if self.timer_periodic() && self.s.timer_armed {
            period - (now - self.s.timer_deadline) % period
        } else {
            return 0;
        };
        left.div_ceil(tick).min(u64::from(self.s.timer_initial)) as u32
    }

    /// Fires the timer if it expired at or before `now`; true when it raised its vector.
    pub fn advance(&mut self, now: VirtualTime) -> bool {
        if !self.s.timer_armed || now.0 < self.s.timer_deadline {
            return false;
        }
        let period = self.timer_period_ns();
        if self.timer_periodic() && period > 0 {
            let missed = (now.0 - self.s.timer_deadline) / period;
            let step = missed.saturating_add(1).saturating_mul(period);
            self.s.timer_deadline = self.s.timer_deadline.saturating_add(step);
        } else {
            self.s.timer_armed = false;
        }
        let lvt = self.s.lvt[LVT_TIMER];
        if lvt & LVT_MASKED != 0 {
            return false;
        }
        self.accept_irq(lvt as u8, false);
        true
    }

    /// When the timer next raises its vector, if armed and unmasked.
    pub fn next_deadline(&self) -> Option<VirtualTime> {
        let unmasked = self.s.lvt[LVT_TIMER] & LVT_MASKED == 0;
        (self.s.timer_armed && unmasked).then_some(VirtualTime(self.s.timer_deadline))
    }

    fn reg(&self, now: VirtualTime, offset: u64) -> u32 {
        let s = &self.s;
        let idx = |base: u64| ((offset - base) >> 4) as usize;
        match offset {
            0x020 => s.id,
            0x030 => VERSION,
            0x080 => s.tpr,
            0x0A0 => self.ppr(),
            0x0D0 => s.ldr,
            0x0E0 => s.dfr,
            0x0F0 => s.svr,
            0x100..=0x170 => s.isr[idx(0x100)],
            0x180..=0x1F0 => s.tmr[idx(0x180)],
            0x200..=0x270 => s.irr[idx(0x200)],
            0x280 => s.esr,
            0x300 => s.icr_lo,
            0x310 => s.icr_hi,
            0x320..=0x370 => s.lvt[idx(0x320)],
            0x380 => s.timer_initial,
            0x390 => self.timer_count(now.0),
            0x3E0 => s.timer_dcr,
            _ => 0,
        }
    }

    /// An MMIO read at `offset` into the APIC page, any size.
    pub fn read(&self, now: VirtualTime, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let o = offset.saturating_add(i as u64);
            *b = 0;
            if o < LAPIC_SIZE && o & 0xF < 4 {
                read_le(
                    u64::from(self.reg(now, o & !0xF)),
                    (o & 3) as usize,
                    std::slice::from_mut(b),
                );
            }
        }
    }

    /// An MMIO write at `offset`; only aligned 32-bit writes take effect.
    pub fn write(&mut self, now: VirtualTime, offset: u64, data: &[u8]) -> Option<LapicEvent> {
        let bytes: [u8; 4] = data.try_into().ok()?;
        if offset & 0xF != 0 || offset >= LAPIC_SIZE {
            return None;
        }
        self.write_reg(now, offset, u32::from_le_bytes(bytes))
    }

    fn write_reg(&mut self, now: VirtualTime, offset: u64, v: u32) -> Option<LapicEvent> {
        let s = &mut self.s;
        match offset {
            0x020 => s.id = v & 0xFF00_0000,
            0x080 => s.tpr = v & 0xFF,
            0x0B0 => return self.eoi(),
            0x0D0 => s.ldr = v & 0xFF00_0000,
            0x0E0 => s.dfr = v | 0x0FFF_FFFF,
            0x0F0 => {
                s.svr = v & 0x3FF;
                if v & SVR_ENABLE == 0 {
                    s.lvt.iter_mut().for_each(|l| *l |= LVT_MASKED);
                }
            }
            0x280 => s.esr = std::mem::take(&mut s.esr_pending),
            0x300 => {
                s.icr_lo = v & 0x000C_CFFF;
                return self.send_ipi();
            }
            0x310 => s.icr_hi = v & 0xFF00_0000,
            0x320..=0x370 => {
                let i = ((offset - 0x320) >> 4) as usize;
                let mut val = v & LVT_WRITABLE[i];
                if s.svr & SVR_ENABLE == 0 {
                    val |= LVT_MASKED;
                }
                s.lvt[i] = val;
            }
            0x380 => {
                s.timer_initial = v;
                s.timer_armed = v != 0;
                let period = self.timer_period_ns();
                self.s.timer_deadline = now.0.saturating_add(period);
            }
            0x3E0 => {
                // Keep the count where it is; it goes on at the new rate.
                let count = self.timer_count(now.0);
                self.s.timer_dcr = v & 0xB;
                if self.s.timer_armed {
                    let left = u64::from(count) * self.timer_tick_ns();
                    self.s.timer_deadline = now.0.saturating_add(left);
                }
            }
            _ => {} // read-only or reserved
        }
        None
    }

    fn send_ipi(&mut self) -> Option<LapicEvent> {
        let lo = self.s.icr_lo;
        let vector = lo as u8;
        let mode = (lo >> 8) & 7;
        let kind = match mode {
            0 | 1 if vector < 16 => {
                self.error(ESR_SEND_ILLEGAL);
                return None;
            }
            0 | 1 => IpiKind::Fixed(vector),
            4 => IpiKind::Nmi,
            // INIT level de-assert (level-triggered, level bit clear) only syncs arbitration IDs.
            5 if lo & 0xC000 == 0x8000 => return None,
            5 => IpiKind::Init,
            6 => IpiKind::Startup(vector),
            _ => return None, // SMI, reserved, ExtINT
        };
        Some(LapicEvent::Ipi(IcrCommand {
            kind,
            lowest_priority: mode == 1,
            shorthand: ((lo >> 18) & 3) as u8,
            dest: (self.s.icr_hi >> 24) as u8,
            logical: lo & 0x800 != 0,
        }))
    }
}

/// The vCPUs a message to `dest` reaches.
pub fn destinations(lapics: &[Lapic], dest: u8, logical: bool) -> Vec<usize> {
    (0..lapics.len())
        .filter(|i| lapics[*i].matches(dest, logical))
        .collect()
}

/// Resolves an ICR command sent by vCPU `source` into (target vCPU, what to do).
pub fn route_ipi(lapics: &[Lapic], source: usize, cmd: &IcrCommand) -> Vec<(usize, IpiKind)> {
    let mut targets: Vec<usize> = match cmd.shorthand {
        1 => vec![source],
        2 => (0..lapics.len()).collect(),
        3 => (0..lapics.len()).filter(|i| *i != source).collect(),
        _ => destinations(lapics, cmd.dest, cmd.logical),
    };
    if cmd.lowest_priority {
        targets.truncate(1);
    }
    targets
        .into_iter()
        .filter(|t| *t < lapics.len())
        .map(|t| (t, cmd.kind))
        .collect()
}

#[cfg(test)]
mod tests;
