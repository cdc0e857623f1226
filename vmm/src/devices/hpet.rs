//! HPET at 0xFED00000 (1 KiB): a 64-bit main counter at 10 MHz (period 100,000,000 fs,
//! so one tick is exactly 100 virtual ns) and 3 timers, legacy-replacement capable.
//!
//! Registers are 64-bit and take 1-8 byte accesses within one register (Linux uses
//! 32-bit ones). The counter runs from virtual time while ENABLE_CNF is set and can be
//! written only while it is stopped. A timer fires when the counter reaches its
//! comparator (32-bit mode compares the low half, so it fires again after each wrap);
//! a comparator already passed when written does not fire until the counter wraps, as
//! on hardware. Periodic timers follow QEMU's "set value" semantics: a comparator write
//! sets the period, and also the comparator when the timer is one-shot or VAL_SET is
//! on; VAL_SET clears after one write. Missed periods coalesce into one interrupt.
//! Routes: with ENABLE_CNF and LEG_RT_CNF, timer 0 is IRQ0 (GSI 0) and timer 1 IRQ8;
//! otherwise Tn_INT_ROUTE_CNF picks an IOAPIC pin among [`ROUTE_CAP`] (20-23). No FSB.

use std::convert::Infallible;

use serde::{Deserialize, Serialize};

use crate::clock::VirtualTime;
use crate::devices::{read_le, write_le};
use crate::persist::Persist;

pub const HPET_BASE: u64 = 0xFED0_0000;
pub const HPET_SIZE: u64 = 0x400;
pub const HPET_PERIOD_FS: u64 = 100_000_000;
const NS_PER_TICK: u64 = 100;
const TIMERS: usize = 3;
/// IOAPIC pins the timers may be routed to, outside the ISA range.
pub const ROUTE_CAP: u32 = 0x00F0_0000;
const CAP_ID: u64 = (HPET_PERIOD_FS << 32)
    | (0x8086 << 16)
    | (1 << 15) // LEG_RT_CAP
    | (1 << 13) // COUNT_SIZE_CAP: 64-bit
    | ((TIMERS as u64 - 1) << 8)
    | 0x01; // revision
const CFG_ENABLE: u64 = 1;
const CFG_LEGACY: u64 = 2;
const TN_LEVEL: u64 = 1 << 1;
const TN_INT_ENB: u64 = 1 << 2;
const TN_PERIODIC: u64 = 1 << 3;
const TN_VAL_SET: u64 = 1 << 6;
const TN_32BIT: u64 = 1 << 8;
const TN_WRITABLE: u64 = 0x3F4E;
/// Read-only timer capabilities: periodic capable, 64-bit capable, route capability.
const TN_CAPS: u64 = (1 << 4) | (1 << 5) | ((ROUTE_CAP as u64) << 32);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerState {
    /// The writable configuration bits.
    pub config: u64,
    pub comparator: u64,
    pub period: u64,
    /// The main-counter value at which this timer next fires; None: never.
    pub next_fire: Option<u64>,
}

/// The HPET's registers; also the snapshot form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HpetState {
    pub config: u64,
    pub isr: u64,
    /// The counter while stopped, or its value at `enabled_at_tick` while running.
    pub counter: u64,
    /// The 10 MHz tick of virtual time at which the counter last started.
    pub enabled_at_tick: u64,
    pub timers: [TimerState; TIMERS],
}

#[derive(Debug, Clone)]
pub struct Hpet {
    s: HpetState,
}

impl Default for Hpet {
    fn default() -> Self {
        Self::new()
    }
}

fn tick(now: VirtualTime) -> u64 {
    now.0 / NS_PER_TICK
}

impl Persist for Hpet {
    type State = HpetState;
    type Resources<'a> = ();
    type Error = Infallible;

    fn state(&self) -> HpetState {
        self.s.clone()
    }

    fn restore((): (), state: &HpetState) -> Result<Self, Infallible> {
        Ok(Hpet { s: state.clone() })
    }
}

impl Hpet {
    pub fn new() -> Self {
        // Comparators reset to all ones, as on hardware and in QEMU.
        let t = TimerState {
            comparator: u64::MAX,
            ..TimerState::default()
        };
        let timers = [t.clone(), t.clone(), t];
        Hpet {
            s: HpetState {
                config: 0,
                isr: 0,
                counter: 0,
                enabled_at_tick: 0,
                timers,
            },
        }
    }

    fn enabled(&self) -> bool {
        self.s.config & CFG_ENABLE != 0
    }

    /// Timers 0 and 1 drive IRQ0 and IRQ8 instead of the PIT and the RTC.
    pub fn legacy_replacement(&self) -> bool {
        self.s.config & (CFG_ENABLE | CFG_LEGACY) == CFG_ENABLE | CFG_LEGACY
    }

    /// The main counter at `now`.
    pub fn counter(&self, now: VirtualTime) -> u64 {
        if !self.enabled() {
            return self.s.counter;
        }
        self.s
            .counter
            .wrapping_add(tick(now).saturating_sub(self.s.enabled_at_tick))
    }

    /// The GSI timer `n` interrupts on, if routed.
    fn gsi(&self, n: usize) -> Option<u32> {
        if self.legacy_replacement() && n < 2 {
            return Some(if n == 0 { 0 } else { 8 });
        }
        let route = ((self.s.timers[n].config >> 9) & 0x1F) as u32;
        (ROUTE_CAP & (1 << route) != 0).then_some(route)
    }

    /// Levels of the level-triggered timers' lines, as (GSI, asserted).
    pub fn level_lines(&self) -> Vec<(u32, bool)> {
        (0..TIMERS)
            .filter(|n| self.s.timers[*n].config & TN_LEVEL != 0)
            .filter_map(|n| {
                let on = self.s.isr & (1 << n) != 0 && self.s.timers[n].config & TN_INT_ENB != 0;
                self.gsi(n).map(|g| (g, on && self.enabled()))
            })
            .collect()
    }

    /// Recomputes when timer `n` fires, from the counter value `c`.
    fn arm(&mut self, n: usize, c: u64) {
        let t = &mut self.s.timers[n];
        t.next_fire = if t.config & TN_32BIT != 0 {
            Some(c.wrapping_add(u64::from((t.comparator as u32).wrapping_sub(c as u32))))
        } else {
            (t.comparator >= c).then_some(t.comparator)
        };
    }

    /// Fires every timer due at or before `now`; returns the GSIs to pulse (edge timers).
    pub fn advance(&mut self, now: VirtualTime) -> Vec<u32> {
        let mut pulses = Vec::new();
        if !self.enabled() {
            return pulses;
        }
        let c = self.counter(now);
        for n in 0..TIMERS {
            let t = &mut self.s.timers[n];
            let Some(due) = t.next_fire.filter(|f| *f <= c) else {
                continue;
            };
            let wide = t.config & TN_32BIT == 0;
            let period = if wide {
                t.period
            } else {
                t.period & 0xFFFF_FFFF
            };
            if t.config & TN_PERIODIC != 0 && period > 0 {
                let step = ((c - due) / period + 1).wrapping_mul(period);
                t.comparator = t.comparator.wrapping_add(step);
                if !wide {
                    t.comparator &= 0xFFFF_FFFF;
                }
                t.next_fire = due.checked_add(step);
            } else {
                t.next_fire = if wide { None } else { due.checked_add(1 << 32) };
            }
            if t.config & TN_INT_ENB == 0 {
                continue;
            }
            if t.config & TN_LEVEL != 0 {
                self.s.isr |= 1 << n;
            } else if let Some(g) = self.gsi(n) {
                pulses.push(g);
            }
        }
        pulses
    }

    /// When the next enabled, routed timer fires.
    pub fn next_deadline(&self) -> Option<VirtualTime> {
        if !self.enabled() {
            return None;
        }
        (0..TIMERS)
            .filter(|n| self.s.timers[*n].config & TN_INT_ENB != 0 && self.gsi(*n).is_some())
            .filter_map(|n| self.s.timers[n].next_fire)
            .map(|f| {
                let t = self
                    .s
                    .enabled_at_tick
                    .saturating_add(f.saturating_sub(self.s.counter));
                VirtualTime(t.saturating_mul(NS_PER_TICK))
            })
            .min()
    }

    fn reg(&self, now: VirtualTime, r: u64) -> u64 {
        match r {
            0x000 => CAP_ID,
            0x010 => self.s.config,
            0x020 => self.s.isr,
            0x0F0 => self.counter(now),
            0x100..=0x15F => {
                let t = &self.s.timers[((r - 0x100) / 0x20) as usize];
                match r & 0x1F {
                    0x00 => t.config | TN_CAPS,
                    0x08 => t.comparator,
                    _ => 0, // FSB route: not supported
                }
            }
            _ => 0,
        }
    }

    /// An MMIO read at `offset`, 1-8 bytes; bytes past the register read 0.
    pub fn read(&self, now: VirtualTime, offset: u64, data: &mut [u8]) {
        if offset >= HPET_SIZE {
            data.fill(0);
            return;
        }
        read_le(self.reg(now, offset & !7), (offset & 7) as usize, data);
    }

    /// An MMIO write at `offset`, 1-8 bytes within one register; others are ignored.
    pub fn write(&mut self, now: VirtualTime, offset: u64, data: &[u8]) {
        let (r, b) = (offset & !7, (offset & 7) as usize);
        if offset >= HPET_SIZE || data.is_empty() || b + data.len() > 8 {
            return;
        }
        let merge = |old: u64| write_le(old, b, data);
        match r {
            0x010 => {
                let c = self.counter(now);
                let new = merge(self.s.config) & (CFG_ENABLE | CFG_LEGACY);
                if new & CFG_ENABLE != 0 && !self.enabled() {
                    self.s.enabled_at_tick = tick(now);
                } else if new & CFG_ENABLE == 0 {
                    self.s.counter = c;
                }
                self.s.config = new;
            }
            0x020 => self.s.isr &= !(merge(0) & 0x7), // write 1 to clear
            0x0F0 if !self.enabled() => {
                self.s.counter = merge(self.s.counter);
                for n in 0..TIMERS {
                    self.arm(n, self.s.counter);
                }
            }
            0x100..=0x15F => {
                let n = ((r - 0x100) / 0x20) as usize;
                let c = self.counter(now);
                let t = &mut self.s.timers[n];
                match r & 0x1F {
                    0x00 => {
                        t.config = merge(t.config) & TN_WRITABLE;
                        if t.config & TN_32BIT != 0 {
                            t.comparator &= 0xFFFF_FFFF;
                            t.period &= 0xFFFF_FFFF;
                        }
                        if t.config & TN_LEVEL == 0 || t.config & TN_INT_ENB == 0 {
                            self.s.isr &= !(1 << n);
                        }
                    }
                    0x08 => {
                        let narrow = if t.config & TN_32BIT != 0 {
                            0xFFFF_FFFF
                        } else {
                            u64::MAX
                        };
                        if t.config & TN_PERIODIC == 0 || t.config & TN_VAL_SET != 0 {
                            t.comparator = merge(t.comparator) & narrow;
                        }
                        t.period = merge(t.period) & narrow;
                        t.config &= !TN_VAL_SET;
                    }
                    _ => return,
                }
                self.arm(n, c);
            }
            _ => {} // read-only, reserved, or the counter while running
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::round_trip;

    fn w(h: &mut Hpet, now: u64, off: u64, v: u32) {
        h.write(VirtualTime(now), off, &v.to_le_bytes());
    }

    fn r32(h: &Hpet, now: u64, off: u64) -> u32 {
        let mut d = [0u8; 4];
        h.read(VirtualTime(now), off, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn capabilities() {
        let h = Hpet::new();
        let mut d = [0u8; 8];
        h.read(VirtualTime::ZERO, 0, &mut d);
        let cap = u64::from_le_bytes(d);
        assert_eq!(cap >> 32, 100_000_000, "10 MHz");
        assert_eq!((cap >> 8) & 0x1F, 2, "3 timers");
        assert_ne!(cap & (1 << 15), 0, "legacy replacement capable");
        assert_ne!(cap & (1 << 13), 0, "64-bit counter");
        assert_eq!(r32(&h, 0, 0x104), ROUTE_CAP);
        assert_eq!(r32(&h, 0, 0x100) & 0x30, 0x30);
        assert_eq!(r32(&h, 0, 0x108), u32::MAX, "comparators reset to all ones");
    }

    #[test]
    fn counter_rate_and_stopped_writes() {
        let mut h = Hpet::new();
        w(&mut h, 0, 0xF0, 500);
        assert_eq!(r32(&h, 99_999, 0xF0), 500, "stopped");
        w(&mut h, 1_000, 0x10, 1);
        assert_eq!(r32(&h, 1_001_000, 0xF0), 10_500, "10 000 ticks per ms");
        w(&mut h, 1_001_000, 0xF0, 7); // ignored while running
        w(&mut h, 2_001_000, 0x10, 0);
        assert_eq!(r32(&h, 9_000_000, 0xF0), 20_500);
        assert_eq!(r32(&h, 9_000_000, 0xF4), 0);
    }

    /// Linux's legacy oneshot clockevent: timer 0 in 32-bit mode, comparator = counter + delta.
    #[test]
    fn oneshot_comparator_deadline() {
        let mut h = Hpet::new();
        w(&mut h, 0, 0x10, 3); // enable + legacy
        assert!(h.legacy_replacement());
        w(&mut h, 0, 0x100, (TN_INT_ENB | TN_32BIT) as u32);
        let now = 50_000; // counter 500
        w(&mut h, now, 0x108, 500 + 1_000);
        assert_eq!(h.next_deadline(), Some(VirtualTime(150_000)));
        assert!(h.advance(VirtualTime(149_999)).is_empty());
        assert_eq!(h.advance(VirtualTime(150_000)), vec![0]);
        assert!(h.advance(VirtualTime(160_000)).is_empty());
        // Next match only after the 32-bit counter wraps.
        assert_eq!(
            h.next_deadline(),
            Some(VirtualTime((1500 + (1u64 << 32)) * 100))
        );
        // A comparator already passed also waits for the wrap; an equal one fires now.
        w(&mut h, 160_000, 0x108, 1_599);
        assert!(h.advance(VirtualTime(160_000)).is_empty());
        w(&mut h, 160_000, 0x108, 1_600);
        assert_eq!(h.advance(VirtualTime(160_000)), vec![0]);
    }

    /// Linux's periodic setup: VAL_SET, comparator, then the period in a second write.
    #[test]
    fn periodic_with_val_set() {
        let mut h = Hpet::new();
        w(&mut h, 0, 0x10, 3);
        let cfg = TN_INT_ENB | TN_PERIODIC | TN_VAL_SET | TN_32BIT;
        w(&mut h, 0, 0x120, cfg as u32); // timer 1 -> IRQ8
        w(&mut h, 0, 0x128, 10_000);
        w(&mut h, 0, 0x128, 10_000);
        assert_eq!(r32(&h, 0, 0x120) as u64 & TN_VAL_SET, 0);
        for k in 1..=3u64 {
            assert_eq!(h.next_deadline(), Some(VirtualTime(k * 1_000_000)));
            assert_eq!(h.advance(VirtualTime(k * 1_000_000)), vec![8]);
        }
        assert_eq!(r32(&h, 0, 0x128), 40_000);
        assert_eq!(
            h.advance(VirtualTime(7_500_000)),
            vec![8],
            "missed periods coalesce"
        );
        assert_eq!(h.next_deadline(), Some(VirtualTime(8_000_000)));
    }

    #[test]
    fn level_timer_routed_to_ioapic() {
        let mut h = Hpet::new();
        w(&mut h, 0, 0x10, 1);
        w(&mut h, 0, 0x140, (TN_INT_ENB | TN_LEVEL | (21 << 9)) as u32);
        h.write(VirtualTime::ZERO, 0x148, &10u64.to_le_bytes());
        assert_eq!(h.level_lines(), vec![(21, false)]);
        assert!(h.advance(VirtualTime(1_000)).is_empty());
        assert_eq!(h.level_lines(), vec![(21, true)]);
        assert_eq!(r32(&h, 1_000, 0x20), 4);
        w(&mut h, 1_000, 0x20, 4);
        assert_eq!(h.level_lines(), vec![(21, false)]);
        // A route outside the capability is not connected.
        w(&mut h, 0, 0x140, (TN_INT_ENB | TN_LEVEL | (3 << 9)) as u32);
        assert!(h.level_lines().is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        let mut h = Hpet::new();
        let mut x: u64 = 5;
        let mut now = 0u64;
        for _ in 0..50_000 {
            crate::devices::next_garbage(&mut x);
            now = if x & 15 == 0 {
                now / 2
            } else {
                now.wrapping_add((x >> 44) % 100_000)
            };
            let t = VirtualTime(now);
            let off = (x >> 8) % 0x410;
            let len = [0, 1, 2, 3, 4, 8][((x >> 30) % 6) as usize];
            let val = (x >> 32).wrapping_mul(x).to_le_bytes();
            match (x >> 4) % 4 {
                0 => h.write(t, off, &val[..len]),
                1 => h.write(t, 0x100 + (off & 0x78), &val[..len]),
                2 => h.read(t, off, &mut [0u8; 8][..len]),
                _ => {
                    h.advance(t);
                    h.next_deadline();
                    h.level_lines();
                }
            }
        }
        h.advance(VirtualTime(u64::MAX));
        h.read(VirtualTime(u64::MAX), u64::MAX, &mut [0u8; 8]);
        h.write(VirtualTime(u64::MAX), u64::MAX, &[1; 8]);
    }

    #[test]
    fn state_round_trip() {
        let mut h = Hpet::new();
        w(&mut h, 0, 0x10, 3);
        w(
            &mut h,
            0,
            0x100,
            (TN_INT_ENB | TN_PERIODIC | TN_VAL_SET) as u32,
        );
        w(&mut h, 0, 0x108, 777);
        let Ok(mut q) = round_trip(&h, ());
        assert_eq!(q.state(), h.state());
        assert_eq!(q.next_deadline(), h.next_deadline());
        assert_eq!(
            q.advance(VirtualTime(80_000)),
            h.advance(VirtualTime(80_000))
        );
        assert_eq!(r32(&q, 90_000, 0xF0), r32(&h, 90_000, 0xF0));
    }
}
