//! 8254 PIT at 0x40-0x43 and the port 0x61 bits it owns (channel 2 gate, OUT2).
//!
//! Counters tick at [`PIT_HZ`] derived from virtual time: PIT tick `t` is
//! `floor(ns * PIT_HZ / 1e9)`. Nothing is simulated per tick; counts and OUT levels are
//! computed from the tick at which counting started. Modes 0-5 follow the datasheet
//! (modes 1 and 5 start on a channel 2 gate edge); the BCD bit is stored and reported
//! but counting is always binary (Linux never uses BCD). Writing a count starts
//! counting at once (the datasheet's one-clock load delay is not modelled) and, in
//! modes 2/3, restarts the period at once. Channel 0's OUT rising edges are IRQ0:
//! [`Pit::advance`] reports one pulse per call however many edges passed since the
//! last (a PIC coalesces them anyway), and [`Pit::next_deadline`] says when the next is due.

use std::convert::Infallible;

use serde::{Deserialize, Serialize};

use crate::clock::VirtualTime;
use crate::devices::{ns_of_tick, ticks_at};
use crate::persist::Persist;

/// The 8254 input clock, Hz.
pub const PIT_HZ: u64 = 1_193_182;

/// One counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    pub mode: u8,
    /// 1: LSB only, 2: MSB only, 3: LSB then MSB.
    pub rw_mode: u8,
    pub bcd: bool,
    pub gate: bool,
    /// The loaded initial count, 1..=0x10000 (a written 0 means 0x10000).
    pub count: u32,
    /// A count was loaded since the last control word.
    pub armed: bool,
    /// The PIT tick at which counting last (re)started; None while not counting.
    pub start_tick: Option<u64>,
    /// Ticks counted before the gate paused counting (modes 0 and 4).
    pub paused_ticks: u64,
    /// LSB written in LSB-then-MSB access mode, waiting for the MSB.
    pub write_lsb: Option<u8>,
    /// In LSB-then-MSB access mode, the next unlatched read returns the MSB.
    pub read_msb_next: bool,
    pub latched_count: Option<u16>,
    pub latch_msb_next: bool,
    pub latched_status: Option<u8>,
    /// Control word written, count not loaded yet (status bit 6).
    pub null_count: bool,
    /// OUT rising edges already reported since counting started.
    pub edges_reported: u64,
}

/// The three counters and port 0x61; also the snapshot form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitState {
    pub channels: [ChannelState; 3],
    /// Port 0x61 bits 1-3 (speaker data, parity/IO check enables), stored only.
    pub port61_bits: u8,
    /// Port 0x61 bit 4: flips on each read, so delay loops waiting on it end.
    pub refresh_toggle: bool,
}

#[derive(Debug, Clone)]
pub struct Pit {
    s: PitState,
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl ChannelState {
    fn new(gate: bool) -> Self {
        ChannelState {
            mode: 0,
            rw_mode: 3,
            bcd: false,
            gate,
            count: 0x10000,
            armed: false,
            start_tick: None,
            paused_ticks: 0,
            write_lsb: None,
            read_msb_next: false,
            latched_count: None,
            latch_msb_next: false,
            latched_status: None,
            null_count: true,
            edges_reported: 0,
        }
    }

    fn n(&self) -> u64 {
        u64::from(self.count.clamp(1, 0x10000))
    }

    /// Ticks counted since the count was loaded (or the trigger), if counting has begun.
    fn elapsed(&self, tick: u64) -> Option<u64> {
        if !self.armed {
            return None;
        }
        let running = self.start_tick.map(|s| tick.saturating_sub(s));
        match self.mode {
            0 | 4 => Some(self.paused_ticks.saturating_add(running.unwrap_or(0))),
            _ => running,
        }
    }

    fn out(&self, tick: u64) -> bool {
        let n = self.n();
        match (self.mode, self.elapsed(tick)) {
            (0, d) => d.is_some_and(|d| d >= n),
            (1, Some(d)) => d >= n,
            (2, Some(d)) => d % n != n - 1,
            (3, Some(d)) => d % n < n.div_ceil(2),
            (_, Some(d)) => d != n, // 4, 5: low for one tick at terminal count
            (_, None) => true,
        }
    }

    fn current_count(&self, tick: u64) -> u16 {
        let n = self.n();
        let v = match self.elapsed(tick) {
            None => n,
            Some(d) => match self.mode {
                2 => n - d % n,
                3 => n - (d.wrapping_mul(2)) % n,
                _ => n.wrapping_sub(d),
            },
        };
        v as u16 // 0x10000 reads as 0, as on the chip
    }

    /// OUT rising edges between the start of counting and `d` ticks later.
    fn edges(&self, d: u64) -> u64 {
        let n = self.n();
        match self.mode {
            0 | 1 => u64::from(d >= n),
            2 | 3 => d / n,
            _ => u64::from(d > n),
        }
    }

    /// The elapsed-tick value at which rising edge number `k` (1-based) happens.
    fn edge_at(&self, k: u64) -> Option<u64> {
        let n = self.n();
        match self.mode {
            0 | 1 => (k == 1).then_some(n),
            2 | 3 => k.checked_mul(n),
            _ => (k == 1).then_some(n + 1),
        }
    }

    fn status(&self, tick: u64) -> u8 {
        (u8::from(self.out(tick)) << 7)
            | (u8::from(self.null_count) << 6)
            | ((self.rw_mode & 3) << 4)
            | ((self.mode & 7) << 1)
            | u8::from(self.bcd)
    }

    fn latch_count(&mut self, tick: u64) {
        if self.latched_count.is_none() {
            self.latched_count = Some(self.current_count(tick));
            self.latch_msb_next = false;
        }
    }

    fn read(&mut self, tick: u64) -> u8 {
        if let Some(st) = self.latched_status.take() {
            return st;
        }
        let (value, msb) = if let Some(l) = self.latched_count {
            let msb = match self.rw_mode {
                2 => true,
                3 => self.latch_msb_next,
                _ => false,
            };
            if self.rw_mode == 3 && !msb {
                self.latch_msb_next = true;
            } else {
                self.latched_count = None;
                self.latch_msb_next = false;
            }
            (l, msb)
        } else {
            let msb = match self.rw_mode {
                2 => true,
                3 => {
                    self.read_msb_next = !self.read_msb_next;
                    !self.read_msb_next
                }
                _ => false,
            };
            (self.current_count(tick), msb)
        };
        if msb {
            (value >> 8) as u8
        } else {
            value as u8
        }
    }

    fn write_count(&mut self, tick: u64, val: u8) {
        let count = match self.rw_mode {
            1 => u32::from(val),
            2 => u32::from(val) << 8,
            _ => match self.write_lsb.take() {
                None => {
                    self.write_lsb = Some(val);
                    return;
                }
                Some(lsb) => u32::from(lsb) | (u32::from(val) << 8),
            },
        };
        self.count = if count == 0 { 0x10000 } else { count };
        self.armed = true;
        self.null_count = false;
        self.paused_ticks = 0;
        self.edges_reported = 0;
        // Modes 1 and 5 wait for a gate edge; the others count while the gate is high.
        self.start_tick = (self.gate && !matches!(self.mode, 1 | 5)).then_some(tick);
    }

    fn write_control(&mut self, val: u8) {
        let mode = (val >> 1) & 7;
        *self = ChannelState {
            mode: if mode > 5 { mode - 4 } else { mode },
            rw_mode: (val >> 4) & 3,
            bcd: val & 1 != 0,
            count: self.count,
            ..ChannelState::new(self.gate)
        };
    }

    fn set_gate(&mut self, tick: u64, gate: bool) {
        if gate == self.gate {
            return;
        }
        self.gate = gate;
        if !self.armed {
            return;
        }
        match (self.mode, gate) {
            (0 | 4, false) => {
                self.paused_ticks = self.elapsed(tick).unwrap_or(0);
                self.start_tick = None;
            }
            (0 | 4, true) => self.start_tick = Some(tick),
            (2 | 3, false) => self.start_tick = None,
            (_, true) => {
                // Modes 1, 2, 3, 5: a rising gate edge (re)starts a full count.
                self.start_tick = Some(tick);
                self.paused_ticks = 0;
                self.edges_reported = 0;
            }
            _ => {}
        }
    }
}

impl Persist for Pit {
    type State = PitState;
    type Resources<'a> = ();
    type Error = Infallible;

    fn state(&self) -> PitState {
        self.s.clone()
    }

    fn restore((): (), state: &PitState) -> Result<Self, Infallible> {
        Ok(Pit { s: state.clone() })
    }
}

impl Pit {
    pub fn new() -> Self {
        let ch = [
            ChannelState::new(true),
            ChannelState::new(true),
            ChannelState::new(false),
        ];
        Pit {
            s: PitState {
                channels: ch,
                port61_bits: 0,
                refresh_toggle: false,
            },
        }
    }

    /// Reads port 0x40-0x42 (counters); 0x43 and anything else read 0xFF.
    pub fn read(&mut self, now: VirtualTime, port: u16) -> u8 {
        let tick = ticks_at(now.0, PIT_HZ);
        match port {
            0x40..=0x42 => self.s.channels[usize::from(port - 0x40)].read(tick),
            _ => 0xFF,
        }
    }

    /// Writes port 0x40-0x42 (counts) or 0x43 (control word); others are ignored.
    pub fn write(&mut self, now: VirtualTime, port: u16, val: u8) {
        let tick = ticks_at(now.0, PIT_HZ);
        match port {
            0x40..=0x42 => self.s.channels[usize::from(port - 0x40)].write_count(tick, val),
            0x43 => {
                let sel = usize::from(val >> 6);
                if sel == 3 {
                    // Read-back: bits 3:1 select channels; bit 5 clear latches the
                    // count, bit 4 clear latches the status.
                    for (i, ch) in self.s.channels.iter_mut().enumerate() {
                        if val & (2 << i) == 0 {
                            continue;
                        }
                        if val & 0x20 == 0 {
                            ch.latch_count(tick);
                        }
                        if val & 0x10 == 0 && ch.latched_status.is_none() {
                            ch.latched_status = Some(ch.status(tick));
                        }
                    }
                } else if (val >> 4) & 3 == 0 {
                    self.s.channels[sel].latch_count(tick);
                } else {
                    self.s.channels[sel].write_control(val);
                }
            }
            _ => {}
        }
    }

    /// Port 0x61 as the PIT sees it: gate 2, bits 1-3, refresh toggle, OUT2.
    pub fn read_port61(&mut self, now: VirtualTime) -> u8 {
        let tick = ticks_at(now.0, PIT_HZ);
        let ch2 = &self.s.channels[2];
        self.s.refresh_toggle = !self.s.refresh_toggle;
        u8::from(ch2.gate)
            | self.s.port61_bits
            | (u8::from(self.s.refresh_toggle) << 4)
            | (u8::from(ch2.out(tick)) << 5)
    }

    pub fn write_port61(&mut self, now: VirtualTime, val: u8) {
        self.s.port61_bits = val & 0x0E;
        self.s.channels[2].set_gate(ticks_at(now.0, PIT_HZ), val & 1 != 0);
    }

    /// Catches up to `now`; true when channel 0's OUT rose since the last call (IRQ0).
    pub fn advance(&mut self, now: VirtualTime) -> bool {
        let ch = &mut self.s.channels[0];
        let Some(d) = ch.elapsed(ticks_at(now.0, PIT_HZ)) else {
            return false;
        };
        let edges = ch.edges(d);
        if edges > ch.edges_reported {
            ch.edges_reported = edges;
            return true;
        }
        false
    }

    /// When channel 0's next OUT rising edge (IRQ0) is due, if it is counting.
    pub fn next_deadline(&self) -> Option<VirtualTime> {
        let ch = &self.s.channels[0];
        let start = ch.start_tick.filter(|_| ch.armed)?;
        let rel = ch.edge_at(ch.edges_reported.checked_add(1)?)?;
        let tick = start.saturating_add(rel.saturating_sub(ch.paused_ticks));
        Some(VirtualTime(ns_of_tick(tick, PIT_HZ)))
    }

    /// The level of channel 2's OUT (for tests and the speaker).
    pub fn out2(&self, now: VirtualTime) -> bool {
        self.s.channels[2].out(ticks_at(now.0, PIT_HZ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::round_trip;

    fn at_tick(t: u64) -> VirtualTime {
        VirtualTime(ns_of_tick(t, PIT_HZ))
    }

    /// Linux's periodic PIT clockevent: channel 0, LSB/MSB, mode 2, LATCH = 1193 (HZ 1000).
    #[test]
    fn mode2_period_and_latch() {
        let mut p = Pit::new();
        let t0 = VirtualTime::from_millis(5);
        let start = ticks_at(t0.0, PIT_HZ);
        p.write(t0, 0x43, 0x34);
        p.write(t0, 0x40, (1193u16 & 0xFF) as u8);
        p.write(t0, 0x40, (1193u16 >> 8) as u8);
        assert!(!p.advance(t0));
        let first = p.next_deadline().unwrap();
        assert_eq!(first, at_tick(start + 1193));
        assert!(!p.advance(VirtualTime(first.0 - 1)));
        assert!(p.advance(first));
        assert!(!p.advance(first));
        assert_eq!(p.next_deadline().unwrap(), at_tick(start + 2 * 1193));
        // About 1 ms per period: 1193 / 1193182 s.
        assert!((first.0 - t0.0).abs_diff(999_847) < 1000);
        // Latch 100 ticks into a period, read LSB then MSB; the counter moves on.
        let t = at_tick(start + 1193 + 100);
        p.write(t, 0x43, 0x00);
        let later = at_tick(start + 1193 + 500);
        let lo = p.read(later, 0x40);
        let hi = p.read(later, 0x40);
        assert_eq!(u16::from_le_bytes([lo, hi]), 1193 - 100);
        let lo = p.read(later, 0x40);
        let hi = p.read(later, 0x40);
        assert_eq!(u16::from_le_bytes([lo, hi]), 1193 - 500);
    }

    #[test]
    fn mode4_oneshot_and_mode0() {
        let mut p = Pit::new();
        p.write(VirtualTime::ZERO, 0x43, 0x38); // mode 4, Linux's oneshot
        p.write(VirtualTime::ZERO, 0x40, 100);
        p.write(VirtualTime::ZERO, 0x40, 0);
        assert_eq!(p.next_deadline(), Some(at_tick(101)));
        assert!(p.advance(at_tick(101)));
        assert_eq!(p.next_deadline(), None);
        // Mode 0 (pit_shutdown writes 0x30 then 0, 0): fires once after 65536 ticks.
        let t = at_tick(200);
        p.write(t, 0x43, 0x30);
        assert_eq!(p.next_deadline(), None, "no count yet");
        p.write(t, 0x40, 0);
        p.write(t, 0x40, 0);
        assert_eq!(p.next_deadline(), Some(at_tick(200 + 65536)));
    }

    #[test]
    fn read_back_status_and_count() {
        let mut p = Pit::new();
        p.write(VirtualTime::ZERO, 0x43, 0x36); // ch0 lohi mode 3
        p.write(VirtualTime::ZERO, 0x43, 0xE2); // read-back ch0, status only
        assert_eq!(
            p.read(VirtualTime::ZERO, 0x40),
            0xC0 | 0x36,
            "OUT high, null count"
        );
        p.write(VirtualTime::ZERO, 0x40, 0x00);
        p.write(VirtualTime::ZERO, 0x40, 0x10); // 4096
        p.write(at_tick(10), 0x43, 0xC2);
        assert_eq!(p.read(at_tick(20), 0x40), 0x80 | 0x36);
        let lo = p.read(at_tick(20), 0x40);
        let hi = p.read(at_tick(20), 0x40);
        assert_eq!(
            u16::from_le_bytes([lo, hi]),
            4096 - 20,
            "mode 3 counts by two"
        );
        assert!(p.s.channels[0].out(2047) && !p.s.channels[0].out(2048));
    }

    #[test]
    fn channel2_gate_and_out_via_port61() {
        let mut p = Pit::new();
        let t = VirtualTime::ZERO;
        p.write(t, 0x43, 0xB0); // ch2, lohi, mode 0
        p.write(t, 0x42, 50);
        p.write(t, 0x42, 0);
        assert_eq!(
            p.read_port61(at_tick(100)) & 0x21,
            0,
            "gate low: not counting"
        );
        p.write_port61(at_tick(100), 0x01);
        assert_eq!(p.read_port61(at_tick(149)) & 0x20, 0);
        assert_eq!(p.read_port61(at_tick(150)) & 0x21, 0x21);
        let a = p.read_port61(at_tick(150)) & 0x10;
        let b = p.read_port61(at_tick(150)) & 0x10;
        assert_ne!(a, b, "refresh bit toggles per read");
        assert_eq!(p.next_deadline(), None, "channel 2 raises no IRQ");
    }

    #[test]
    fn garbage_never_panics() {
        let mut p = Pit::new();
        let mut x: u64 = 99;
        let mut now = 0u64;
        for _ in 0..50_000 {
            crate::devices::next_garbage(&mut x);
            // Time mostly moves forward but sometimes jumps back (another vCPU).
            now = if x & 15 == 0 {
                now / 2
            } else {
                now.wrapping_add((x >> 40) % 10_000)
            };
            let t = VirtualTime(now);
            let port = 0x40 + ((x >> 8) % 5) as u16;
            match (x >> 4) % 5 {
                0 | 1 => p.write(t, port, (x >> 16) as u8),
                2 => _ = p.read(t, port),
                3 => p.write_port61(t, (x >> 24) as u8),
                _ => {
                    p.advance(t);
                    p.next_deadline();
                    p.read_port61(t);
                }
            }
        }
        p.advance(VirtualTime(u64::MAX));
        p.next_deadline();
        assert_eq!(p.read(VirtualTime::ZERO, 0x43), 0xFF);
        assert_eq!(p.read(VirtualTime::ZERO, 0xFFFF), 0xFF);
    }

    #[test]
    fn state_round_trip() {
        let mut p = Pit::new();
        p.write(VirtualTime::ZERO, 0x43, 0x34);
        p.write(VirtualTime::ZERO, 0x40, 0x10);
        p.write(at_tick(3), 0x43, 0x00);
        let Ok(mut q) = round_trip(&p, ());
        assert_eq!(q.state(), p.state());
        assert_eq!(q.next_deadline(), p.next_deadline());
        assert_eq!(q.read(at_tick(9), 0x40), p.read(at_tick(9), 0x40));
    }
}
