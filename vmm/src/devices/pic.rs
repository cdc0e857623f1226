//! Dual 8259A PIC: master at 0x20/0x21, slave at 0xA0/0xA1 cascaded on IR2, edge/level
//! control (ELCR) at 0x4D0/0x4D1.
//!
//! The model follows QEMU's i8259: ICW1-4, OCW1-3, IRR/ISR/IMR, rotating priority,
//! auto-EOI, specific and non-specific EOI, special mask, special fully nested mode
//! and poll mode. A line is edge-triggered unless its ELCR bit is set; an edge line
//! latches IRR on a low-to-high transition. An INTA with nothing pending returns the
//! spurious IRQ7 (or IRQ15) vector without setting ISR, as the hardware does.
//! Power-on state is what a BIOS leaves: vectors 0x08/0x70, every line masked.

use std::convert::Infallible;

use serde::{Deserialize, Serialize};

use crate::persist::Persist;

/// One 8259A.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChipState {
    /// The input line levels as last seen (edge detection).
    pub last_irr: u8,
    pub irr: u8,
    pub imr: u8,
    pub isr: u8,
    /// The IR that currently has the highest priority (rotation).
    pub priority_add: u8,
    pub irq_base: u8,
    /// OCW3 RR/RIS: reads of the command port return ISR instead of IRR.
    pub read_isr: bool,
    pub poll: bool,
    pub special_mask: bool,
    /// 0: initialized; 1, 2, 3: expecting ICW2, ICW3, ICW4.
    pub init_state: u8,
    pub init4: bool,
    pub single_mode: bool,
    pub auto_eoi: bool,
    pub rotate_on_auto_eoi: bool,
    pub special_fully_nested: bool,
    pub elcr: u8,
    pub elcr_mask: u8,
}

/// Both chips; also the snapshot form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicState {
    pub master: ChipState,
    pub slave: ChipState,
}

#[derive(Debug, Clone)]
pub struct Pic {
    s: PicState,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

impl ChipState {
    fn new(irq_base: u8, elcr_mask: u8) -> Self {
        ChipState {
            imr: 0xFF,
            irq_base,
            elcr_mask,
            ..ChipState::default()
        }
    }

    /// QEMU's get_priority: the rank (0 = highest) of the best bit in `mask`, 8 if none.
    fn priority(&self, mask: u8) -> u8 {
        if mask == 0 {
            return 8;
        }
        let mut p = 0;
        while mask & (1 << ((p + self.priority_add) & 7)) == 0 {
            p += 1;
        }
        p
    }

    /// The IR this chip would signal now, if any (IRR beats in-service priority).
    fn pending_irq(&self, is_master: bool) -> Option<u8> {
        let p = self.priority(self.irr & !self.imr);
        if p == 8 {
            return None;
        }
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if self.special_fully_nested && is_master {
            in_service &= !(1 << 2);
        }
        (p < self.priority(in_service)).then_some((p + self.priority_add) & 7)
    }

    fn set_line(&mut self, irq: u8, level: bool) {
        let mask = 1u8 << (irq & 7);
        if self.elcr & mask != 0 {
            if level {
                self.irr |= mask;
                self.last_irr |= mask;
            } else {
                self.irr &= !mask;
                self.last_irr &= !mask;
            }
        } else if level {
            if self.last_irr & mask == 0 {
                self.irr |= mask;
            }
            self.last_irr |= mask;
        } else {
            self.last_irr &= !mask;
        }
    }

    fn intack(&mut self, irq: u8) {
        let mask = 1u8 << (irq & 7);
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_add = (irq + 1) & 7;
            }
        } else {
            self.isr |= mask;
        }
        // A level-triggered request stays in IRR while the line is high.
        if self.elcr & mask == 0 {
            self.irr &= !mask;
        }
    }

    fn write_command(&mut self, val: u8) {
        if val & 0x10 != 0 {
            // ICW1: reset, then expect ICW2 (ICW1 LTIM is ignored: ELCR decides).
            *self = ChipState {
                irr: self.irr & self.elcr,
                irq_base: self.irq_base,
                elcr: self.elcr,
                elcr_mask: self.elcr_mask,
                init_state: 1,
                init4: val & 0x01 != 0,
                single_mode: val & 0x02 != 0,
                ..ChipState::default()
            };
        } else if val & 0x08 != 0 {
            // OCW3
            if val & 0x04 != 0 {
                self.poll = true;
            }
            if val & 0x02 != 0 {
                self.read_isr = val & 0x01 != 0;
            }
            if val & 0x40 != 0 {
                self.special_mask = val & 0x20 != 0;
            }
        } else {
            // OCW2
            let irq = val & 7;
            match val >> 5 {
                0 | 4 => self.rotate_on_auto_eoi = val >> 7 != 0,
                cmd @ (1 | 5) => {
                    let p = self.priority(self.isr);
                    if p != 8 {
                        let irq = (p + self.priority_add) & 7;
                        self.isr &= !(1 << irq);
                        if cmd == 5 {
                            self.priority_add = (irq + 1) & 7;
                        }
                    }
                }
                3 => self.isr &= !(1 << irq),
                6 => self.priority_add = (irq + 1) & 7,
                7 => {
                    self.isr &= !(1 << irq);
                    self.priority_add = (irq + 1) & 7;
                }
                _ => {} // 2: no operation
            }
        }
    }

    fn write_data(&mut self, val: u8) {
        match self.init_state {
            1 => {
                self.irq_base = val & 0xF8;
                self.init_state = match (self.single_mode, self.init4) {
                    (false, _) => 2,
                    (true, true) => 3,
                    (true, false) => 0,
                };
            }
            2 => self.init_state = if self.init4 { 3 } else { 0 },
            3 => {
                self.special_fully_nested = val & 0x10 != 0;
                self.auto_eoi = val & 0x02 != 0;
                self.init_state = 0;
            }
            _ => self.imr = val,
        }
    }
}

impl Persist for Pic {
    type State = PicState;
    type Resources<'a> = ();
    type Error = Infallible;

    fn state(&self) -> PicState {
        self.s.clone()
    }

    fn restore((): (), state: &PicState) -> Result<Self, Infallible> {
        Ok(Pic { s: state.clone() })
    }
}

impl Pic {
    pub fn new() -> Self {
        Pic {
            s: PicState {
                master: ChipState::new(0x08, 0xF8),
                slave: ChipState::new(0x70, 0xDE),
            },
        }
    }

    /// Drives input line `line` (0-15) to `level`; other lines are ignored.
    pub fn set_irq(&mut self, line: u8, level: bool) {
        match line {
            0..=7 => self.s.master.set_line(line, level),
            8..=15 => self.s.slave.set_line(line - 8, level),
            _ => return,
        }
        self.update();
    }

    /// The master's INT output: an interrupt would be delivered by an INTA now.
    pub fn has_interrupt(&self) -> bool {
        self.s.master.pending_irq(true).is_some()
    }

    /// INTA: the vector to deliver; moves the request from IRR to ISR.
    pub fn acknowledge(&mut self) -> u8 {
        let s = &mut self.s;
        let vector = match s.master.pending_irq(true) {
            Some(2) => {
                let irq2 = match s.slave.pending_irq(false) {
                    Some(irq2) => {
                        s.slave.intack(irq2);
                        irq2
                    }
                    None => 7, // spurious IRQ15
                };
                s.master.intack(2);
                s.slave.irq_base.wrapping_add(irq2)
            }
            Some(irq) => {
                s.master.intack(irq);
                s.master.irq_base.wrapping_add(irq)
            }
            None => s.master.irq_base.wrapping_add(7), // spurious IRQ7
        };
        self.update();
        vector
    }

    /// Reads one of 0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1; other ports read 0xFF.
    pub fn read(&mut self, port: u16) -> u8 {
        let (chip, is_master) = match port {
            0x20 | 0x21 => (&mut self.s.master, true),
            0xA0 | 0xA1 => (&mut self.s.slave, false),
            0x4D0 => return self.s.master.elcr,
            0x4D1 => return self.s.slave.elcr,
            _ => return 0xFF,
        };
        if chip.poll {
            chip.poll = false;
            let v = match chip.pending_irq(is_master) {
                Some(irq) => {
                    chip.intack(irq);
                    irq | 0x80
                }
                None => 0,
            };
            self.update();
            return v;
        }
        match (port & 1, chip.read_isr) {
            (0, true) => chip.isr,
            (0, false) => chip.irr,
            _ => chip.imr,
        }
    }

    /// Writes one of 0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1; other ports are ignored.
    pub fn write(&mut self, port: u16, val: u8) {
        match port {
            0x20 => self.s.master.write_command(val),
            0x21 => self.s.master.write_data(val),
            0xA0 => self.s.slave.write_command(val),
            0xA1 => self.s.slave.write_data(val),
            0x4D0 => self.s.master.elcr = val & self.s.master.elcr_mask,
            0x4D1 => self.s.slave.elcr = val & self.s.slave.elcr_mask,
            _ => return,
        }
        self.update();
    }

    /// Propagates the slave's INT output to the master's IR2.
    fn update(&mut self) {
        let slave_out = self.s.slave.pending_irq(false).is_some();
        self.s.master.set_line(2, slave_out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::round_trip;

    /// Linux's init_8259A(0): vectors 0x30/0x38, cascade on IR2, normal EOI.
    fn linux_init() -> Pic {
        let mut p = Pic::new();
        p.write(0x21, 0xFF);
        p.write(0xA1, 0xFF);
        p.write(0x20, 0x11);
        p.write(0x21, 0x30);
        p.write(0x21, 0x04);
        p.write(0x21, 0x01);
        p.write(0xA0, 0x11);
        p.write(0xA1, 0x38);
        p.write(0xA1, 0x02);
        p.write(0xA1, 0x01);
        p.write(0x21, 0x00);
        p.write(0xA1, 0x00);
        p
    }

    fn eoi(p: &mut Pic, vector: u8) {
        if vector >= 0x38 {
            p.write(0xA0, 0x20);
        }
        p.write(0x20, 0x20);
    }

    #[test]
    fn probe_reads_back_imr() {
        let mut p = Pic::new();
        p.write(0x21, 0xFF);
        assert_eq!(p.read(0x21), 0xFF);
        p.write(0x21, 0xA5);
        assert_eq!(p.read(0x21), 0xA5);
    }

    #[test]
    fn priority_and_nesting() {
        let mut p = linux_init();
        p.set_irq(4, true);
        p.set_irq(1, true);
        p.set_irq(9, true);
        assert!(p.has_interrupt());
        assert_eq!(p.acknowledge(), 0x31, "IRQ1 first");
        // IRQ1 in service: IRQ2 (slave) and IRQ4 are lower, held off.
        assert!(!p.has_interrupt());
        p.set_irq(0, true);
        assert_eq!(p.acknowledge(), 0x30, "IRQ0 nests over IRQ1");
        eoi(&mut p, 0x30);
        assert!(!p.has_interrupt(), "IRQ1 still in service");
        eoi(&mut p, 0x31);
        assert_eq!(p.acknowledge(), 0x39, "slave IRQ9 via IR2 beats IRQ4");
        p.write(0x20, 0x0B); // OCW3: read ISR
        assert_eq!(p.read(0x20), 0x04);
        eoi(&mut p, 0x39);
        assert_eq!(p.read(0x20), 0x00);
        assert_eq!(p.acknowledge(), 0x34);
        eoi(&mut p, 0x34);
        assert!(!p.has_interrupt());
    }

    #[test]
    fn edge_needs_a_new_rising_edge_level_does_not() {
        let mut p = linux_init();
        p.set_irq(3, true);
        assert_eq!(p.acknowledge(), 0x33);
        eoi(&mut p, 0x33);
        p.set_irq(3, true); // still high: no new edge
        assert!(!p.has_interrupt());
        p.write(0x4D0, 0xFF); // ELCR: IRQ 0-2 cannot be level
        assert_eq!(p.read(0x4D0), 0xF8);
        p.set_irq(3, true);
        assert_eq!(p.acknowledge(), 0x33);
        eoi(&mut p, 0x33);
        assert!(p.has_interrupt(), "level line still asserted");
        p.set_irq(3, false);
        assert!(!p.has_interrupt());
    }

    #[test]
    fn specific_eoi_auto_eoi_poll_and_spurious() {
        let mut p = linux_init();
        assert_eq!(p.acknowledge(), 0x37, "spurious IRQ7");
        p.write(0x20, 0x0B);
        assert_eq!(p.read(0x20), 0, "spurious sets no ISR bit");
        p.set_irq(5, true);
        p.set_irq(6, true);
        assert_eq!(p.acknowledge(), 0x35);
        p.write(0x20, 0x60 | 5); // specific EOI for IRQ5
        assert_eq!(p.acknowledge(), 0x36);
        p.write(0x20, 0x66); // specific EOI IRQ6
                             // Poll mode: OCW3 with P set, then a read acknowledges.
        p.set_irq(5, false);
        p.set_irq(5, true);
        p.write(0x20, 0x0C);
        assert_eq!(p.read(0x20), 0x85);
        p.write(0x20, 0x0C);
        assert_eq!(p.read(0x20), 0x00);
        p.write(0x20, 0x65);
        // Auto-EOI: ICW4 with AEOI leaves ISR clear.
        p.write(0x20, 0x11);
        p.write(0x21, 0x30);
        p.write(0x21, 0x04);
        p.write(0x21, 0x03);
        p.set_irq(6, false);
        p.set_irq(6, true);
        assert_eq!(p.acknowledge(), 0x36);
        p.write(0x20, 0x0B);
        assert_eq!(p.read(0x20), 0);
    }

    #[test]
    fn rotation_changes_priority() {
        let mut p = linux_init();
        p.write(0x20, 0xC0 | 4); // set priority: IRQ5 highest
        p.set_irq(1, true);
        p.set_irq(6, true);
        assert_eq!(p.acknowledge(), 0x36);
    }

    #[test]
    fn garbage_never_panics() {
        let mut p = Pic::new();
        let mut x: u32 = 7;
        let ports = [0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1, 0x22, 0xFFFF];
        for _ in 0..20_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let port = ports[(x >> 8) as usize % ports.len()];
            match x % 4 {
                0 => p.write(port, (x >> 16) as u8),
                1 => _ = p.read(port),
                2 => p.set_irq((x >> 20) as u8, x & 0x100 != 0),
                _ => _ = p.acknowledge(),
            }
        }
        assert_eq!(p.read(0x22), 0xFF);
    }

    #[test]
    fn state_round_trip() {
        let mut p = linux_init();
        p.set_irq(10, true);
        p.set_irq(1, true);
        let Ok(mut q) = round_trip(&p, ());
        assert_eq!(q.state(), p.state());
        assert_eq!(q.acknowledge(), p.acknowledge());
        assert_eq!(q.state(), p.state());
    }
}
