//! IOAPIC (82093AA-style, version 0x11) at 0xFEC00000: IOREGSEL at +0x00, IOWIN at
//! +0x10, 24 pins.
//!
//! Pins carry the logical "asserted" level; the polarity bit is stored but not applied,
//! as in QEMU (the wire's polarity is the platform's business). Edge pins deliver on a
//! rising edge; an edge that arrives while masked is kept and delivered on unmask, as in
//! QEMU. Level pins deliver while asserted and remote IRR is clear, set remote IRR, and
//! deliver again after the EOI for their vector if still asserted. Fixed and
//! lowest-priority modes deliver (lowest priority to the first vCPU of the destination);
//! ExtINT deliveries are flagged so the platform takes the vector from the PIC at once,
//! as QEMU does; NMI, SMI and INIT entries are dropped.
//! Destinations are resolved by the caller's `resolve(dest, logical)`, which knows the
//! LAPICs' IDs and logical destination registers.

use std::convert::Infallible;

use serde::{Deserialize, Serialize};

use crate::devices::read_le;
use crate::persist::Persist;

pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
pub const IOAPIC_SIZE: u64 = 0x1000;
pub const IOAPIC_PINS: usize = 24;
const VERSION: u32 = 0x0017_0011;
const RTE_WRITABLE_LO: u64 = 0x1_AFFF;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_MASKED: u64 = 1 << 16;

/// An interrupt message for a LAPIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub cpu: usize,
    pub vector: u8,
    pub level_triggered: bool,
    /// ExtINT: the vector comes from the PIC, acknowledged now (as QEMU does).
    pub ext_int: bool,
}

/// Maps (destination field, logical mode) to the vCPUs it names.
pub type Resolve<'a> = &'a dyn Fn(u8, bool) -> Vec<usize>;

/// The IOAPIC's registers and pin levels; also the snapshot form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoapicState {
    pub id: u32,
    pub ioregsel: u32,
    pub redir: [u64; IOAPIC_PINS],
    /// Asserted pins, one bit each.
    pub lines: u32,
    /// Edges latched on masked pins, delivered on unmask.
    pub pending_edges: u32,
}

#[derive(Debug, Clone)]
pub struct Ioapic {
    s: IoapicState,
}

impl Default for Ioapic {
    fn default() -> Self {
        Self::new()
    }
}

impl Persist for Ioapic {
    type State = IoapicState;
    type Resources<'a> = ();
    type Error = Infallible;

    fn state(&self) -> IoapicState {
        self.s.clone()
    }

    fn restore((): (), state: &IoapicState) -> Result<Self, Infallible> {
        Ok(Ioapic { s: state.clone() })
    }
}

impl Ioapic {
    pub fn new() -> Self {
        let s = IoapicState {
            id: 0,
            ioregsel: 0,
            redir: [RTE_MASKED; IOAPIC_PINS],
            lines: 0,
            pending_edges: 0,
        };
        Ioapic { s }
    }

    /// Drives `pin` to `level` (asserted or not); returns the messages it causes.
    pub fn set_irq(&mut self, pin: usize, level: bool, resolve: Resolve) -> Vec<Delivery> {
        if pin >= IOAPIC_PINS {
            return Vec::new();
        }
        let mask = 1u32 << pin;
        let was = self.s.lines & mask != 0;
        if level {
            self.s.lines |= mask;
        } else {
            self.s.lines &= !mask;
        }
        if self.s.redir[pin] & RTE_LEVEL == 0 && level && !was {
            self.s.pending_edges |= mask;
        }
        self.service(pin, resolve)
    }

    /// EOI broadcast for `vector`: clears remote IRR and re-delivers asserted lines.
    pub fn end_of_interrupt(&mut self, vector: u8, resolve: Resolve) -> Vec<Delivery> {
        let mut out = Vec::new();
        for pin in 0..IOAPIC_PINS {
            let e = self.s.redir[pin];
            if e & RTE_LEVEL != 0 && e & RTE_REMOTE_IRR != 0 && e as u8 == vector {
                self.s.redir[pin] &= !RTE_REMOTE_IRR;
                out.extend(self.service(pin, resolve));
            }
        }
        out
    }

    fn service(&mut self, pin: usize, resolve: Resolve) -> Vec<Delivery> {
        let e = self.s.redir[pin];
        let mask = 1u32 << pin;
        let level = e & RTE_LEVEL != 0;
        if e & RTE_MASKED != 0 {
            return Vec::new();
        }
        if level {
            if self.s.lines & mask == 0 || e & RTE_REMOTE_IRR != 0 {
                return Vec::new();
            }
        } else if self.s.pending_edges & mask == 0 {
            return Vec::new();
        }
        self.s.pending_edges &= !mask;
        let mode = (e >> 8) & 7;
        let ext_int = mode == 7;
        if mode > 1 && !ext_int {
            return Vec::new();
        }
        let mut cpus = resolve((e >> 56) as u8, e & (1 << 11) != 0);
        if mode == 1 {
            cpus.truncate(1);
        }
        if level && !ext_int && !cpus.is_empty() {
            self.s.redir[pin] |= RTE_REMOTE_IRR;
        }
        cpus.into_iter()
            .map(|cpu| Delivery {
                cpu,
                vector: e as u8,
                level_triggered: level && !ext_int,
                ext_int,
            })
            .collect()
    }

    fn window(&self) -> u32 {
        match self.s.ioregsel {
            0 => self.s.id,
            1 => VERSION,
            2 => self.s.id, // arbitration ID
            i @ 0x10..=0x3F => {
                let e = self.s.redir[((i - 0x10) / 2) as usize];
                if i & 1 == 0 {
                    e as u32
                } else {
                    (e >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    /// An MMIO read at `offset` into the IOAPIC page, any size.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let o = offset.saturating_add(i as u64);
            let v = match o {
                0x00..=0x03 => self.s.ioregsel,
                0x10..=0x13 => self.window(),
                _ => 0,
            };
            read_le(u64::from(v), (o & 3) as usize, std::slice::from_mut(b));
        }
    }

    /// An MMIO write: IOREGSEL takes any size at +0, IOWIN only aligned 32-bit writes.
    pub fn write(&mut self, offset: u64, data: &[u8], resolve: Resolve) -> Vec<Delivery> {
        match (offset, data.len()) {
            (0, 1..=4) => self.s.ioregsel = u32::from(data[0]),
            (0x10, 4) => {
                let mut b = [0u8; 4];
                b.copy_from_slice(data);
                return self.write_window(u32::from_le_bytes(b), resolve);
            }
            _ => {}
        }
        Vec::new()
    }

    fn write_window(&mut self, v: u32, resolve: Resolve) -> Vec<Delivery> {
        let i = self.s.ioregsel;
        match i {
            0 => self.s.id = v & 0x0F00_0000,
            0x10..=0x3F => {
                let pin = ((i - 0x10) / 2) as usize;
                let e = &mut self.s.redir[pin];
                if i & 1 == 1 {
                    *e = (*e & 0xFFFF_FFFF) | (u64::from(v & 0xFF00_0000) << 32);
                } else {
                    *e = (*e & !RTE_WRITABLE_LO) | (u64::from(v) & RTE_WRITABLE_LO);
                    if *e & RTE_LEVEL == 0 {
                        *e &= !RTE_REMOTE_IRR;
                    }
                    // An unmask may release a held level or a latched edge.
                    return self.service(pin, resolve);
                }
            }
            _ => {} // version, arbitration and unknown registers are read-only
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::round_trip;

    /// Physical destination n is vCPU n; logical destinations are flat bitmaps.
    fn resolve(dest: u8, logical: bool) -> Vec<usize> {
        match logical {
            false if dest == 0xFF => (0..4).collect(),
            false => vec![usize::from(dest)]
                .into_iter()
                .filter(|c| *c < 4)
                .collect(),
            true => (0..4).filter(|c| dest & (1 << c) != 0).collect(),
        }
    }

    fn reg_write(io: &mut Ioapic, idx: u32, v: u32) -> Vec<Delivery> {
        io.write(0, &[idx as u8], &resolve);
        io.write(0x10, &v.to_le_bytes(), &resolve)
    }

    fn reg_read(io: &mut Ioapic, idx: u32) -> u32 {
        io.write(0, &[idx as u8], &resolve);
        let mut d = [0u8; 4];
        io.read(0x10, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn identification() {
        let mut io = Ioapic::new();
        assert_eq!(reg_read(&mut io, 1), 0x170011);
        reg_write(&mut io, 0, 0xFFFF_FFFF);
        assert_eq!(reg_read(&mut io, 0), 0x0F00_0000);
        assert_eq!(reg_read(&mut io, 0x10 + 2 * 23), RTE_MASKED as u32);
        assert_eq!(reg_read(&mut io, 0x40), 0);
    }

    #[test]
    fn level_triggered_remote_irr() {
        let mut io = Ioapic::new();
        reg_write(&mut io, 0x10 + 2 * 10 + 1, 1 << 24);
        assert!(
            reg_write(&mut io, 0x10 + 2 * 10, 0x8040).is_empty(),
            "line low"
        );
        let d = io.set_irq(10, true, &resolve);
        assert_eq!(
            d,
            vec![Delivery {
                cpu: 1,
                vector: 0x40,
                level_triggered: true,
                ext_int: false,
            }]
        );
        assert_ne!(
            reg_read(&mut io, 0x10 + 2 * 10) & (1 << 14),
            0,
            "remote IRR"
        );
        assert!(io.set_irq(10, true, &resolve).is_empty());
        assert!(
            io.end_of_interrupt(0x41, &resolve).is_empty(),
            "other vector"
        );
        assert_eq!(
            io.end_of_interrupt(0x40, &resolve).len(),
            1,
            "still asserted"
        );
        io.set_irq(10, false, &resolve);
        assert!(io.end_of_interrupt(0x40, &resolve).is_empty());
        assert_eq!(reg_read(&mut io, 0x10 + 2 * 10) & (1 << 14), 0);
        // Masked while asserted, then unmasked: delivered on unmask.
        reg_write(&mut io, 0x10 + 2 * 10, 0x18040);
        io.set_irq(10, true, &resolve);
        assert_eq!(reg_write(&mut io, 0x10 + 2 * 10, 0x8040).len(), 1);
    }

    #[test]
    fn edge_logical_and_lowest_priority() {
        let mut io = Ioapic::new();
        reg_write(&mut io, 0x10 + 2 * 4 + 1, 0x06 << 24);
        reg_write(&mut io, 0x10 + 2 * 4, 0x0831); // logical, fixed
        assert_eq!(
            io.set_irq(4, true, &resolve)
                .iter()
                .map(|d| d.cpu)
                .collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(io.set_irq(4, true, &resolve).is_empty(), "no new edge");
        io.set_irq(4, false, &resolve);
        reg_write(&mut io, 0x10 + 2 * 4, 0x0931); // lowest priority
        assert_eq!(
            io.set_irq(4, true, &resolve)
                .iter()
                .map(|d| d.cpu)
                .collect::<Vec<_>>(),
            vec![1]
        );
        // An edge on a masked pin waits for the unmask.
        io.set_irq(4, false, &resolve);
        reg_write(&mut io, 0x10 + 2 * 4, 0x10931);
        assert!(io.set_irq(4, true, &resolve).is_empty());
        assert_eq!(reg_write(&mut io, 0x10 + 2 * 4, 0x0931).len(), 1);
        // ExtINT entries ask the platform to fetch the vector from the PIC.
        reg_write(&mut io, 0x10, 0x0700);
        let d = io.set_irq(0, true, &resolve);
        assert!(d.len() == 1 && d[0].ext_int && !d[0].level_triggered);
        reg_write(&mut io, 0x10, 0x0400); // NMI: dropped
        io.set_irq(0, false, &resolve);
        assert!(io.set_irq(0, true, &resolve).is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        let mut io = Ioapic::new();
        let mut x: u64 = 11;
        for _ in 0..50_000 {
            crate::devices::next_garbage(&mut x);
            let off = (x >> 8) % 0x30;
            let len = [0, 1, 2, 3, 4, 8][((x >> 30) % 6) as usize];
            let val = (x >> 32).to_le_bytes();
            match (x >> 4) % 5 {
                0 => _ = io.write(off, &val[..len], &resolve),
                1 => _ = reg_write(&mut io, (x >> 40) as u32 & 0xFF, (x >> 20) as u32),
                2 => io.read(off, &mut [0u8; 8][..len]),
                3 => _ = io.set_irq(((x >> 50) % 40) as usize, x & 0x100 != 0, &resolve),
                _ => _ = io.end_of_interrupt((x >> 24) as u8, &resolve),
            }
        }
        io.read(u64::MAX, &mut [0u8; 8]);
    }

    #[test]
    fn state_round_trip() {
        let mut io = Ioapic::new();
        reg_write(&mut io, 0x10 + 2 * 9, 0x8055);
        io.set_irq(9, true, &resolve);
        io.set_irq(3, true, &resolve);
        let Ok(mut q) = round_trip(&io, ());
        assert_eq!(q.state(), io.state());
        assert_eq!(
            q.end_of_interrupt(0x55, &resolve),
            io.end_of_interrupt(0x55, &resolve)
        );
    }
}
