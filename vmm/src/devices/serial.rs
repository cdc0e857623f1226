//! A 16550A UART (COM1: I/O 0x3F8-0x3FF, IRQ 4), enough for Linux's 8250 driver.
//!
//! Transmission is instant: a THR write appends to an output buffer the VMM drains with
//! [`Serial::take_output`], and LSR always reports the transmitter empty. Input pushed by
//! the VMM ([`Serial::push_input`]) waits in an unbounded receive queue (the host decides
//! how much to push). Linux's autoconfig sees a 16550A: IER keeps 4 bits, IIR shows FIFO
//! bits when FCR enables the FIFO, the scratch register holds a byte, and MCR loopback
//! reflects DTR/RTS/OUT1/OUT2 into MSR. The received-data interrupt is raised whenever
//! data is queued (no trigger levels or character timeouts: Linux handles both alike).
//! The IRQ line is not gated by MCR.OUT2, as in QEMU.

use std::collections::VecDeque;
use std::convert::Infallible;

use serde::{Deserialize, Serialize};

use crate::persist::Persist;

pub const COM1_BASE: u16 = 0x3F8;
pub const COM1_IRQ: u32 = 4;

const IER_RDI: u8 = 0x01; // received data available
const IER_THRI: u8 = 0x02; // transmitter holding register empty
const IER_RLSI: u8 = 0x04; // receiver line status
const IER_MSI: u8 = 0x08; // modem status
const LCR_DLAB: u8 = 0x80;
const MCR_LOOP: u8 = 0x10;
const IIR_NO_INT: u8 = 0x01;
const IIR_FIFO: u8 = 0xC0;
const IIR_MSI: u8 = 0x00;
const IIR_THRI: u8 = 0x02;
const IIR_RDI: u8 = 0x04;
const IIR_RLSI: u8 = 0x06;
const LSR_DR: u8 = 0x01;
const LSR_OE: u8 = 0x02;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;
/// CTS, DSR and DCD asserted: a connected terminal, outside loopback.
const MSR_CONNECTED: u8 = 0xB0;

/// Everything the UART holds; also its snapshot form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialState {
    pub ier: u8,
    pub lcr: u8,
    pub mcr: u8,
    pub scr: u8,
    pub dll: u8,
    pub dlm: u8,
    pub fifo_enabled: bool,
    pub fcr_trigger: u8,
    /// The THRE interrupt is pending (cleared by reading it from IIR or writing THR).
    pub thr_interrupt: bool,
    /// MSR delta bits (3:0), cleared when MSR is read.
    pub msr_delta: u8,
    pub overrun: bool,
    pub rx: VecDeque<u8>,
    pub output: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub struct Serial {
    s: SerialState,
}

impl Persist for Serial {
    type State = SerialState;
    type Resources<'a> = ();
    type Error = Infallible;

    fn state(&self) -> SerialState {
        self.s.clone()
    }

    fn restore((): (), state: &SerialState) -> Result<Self, Infallible> {
        let mut s = state.clone();
        s.ier &= 0x0F;
        s.mcr &= 0x1F;
        s.msr_delta &= 0x0F;
        Ok(Serial { s })
    }
}

impl Serial {
    pub fn new() -> Self {
        // Divisor 12 is 9600 baud: a harmless power-on value, Linux programs its own.
        Serial {
            s: SerialState {
                dll: 12,
                ..SerialState::default()
            },
        }
    }

    /// Bytes the guest transmitted since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.s.output)
    }

    /// Queues bytes for the guest to receive.
    pub fn push_input(&mut self, bytes: &[u8]) {
        self.s.rx.extend(bytes);
    }

    /// The level of the UART's interrupt output.
    pub fn irq_level(&self) -> bool {
        self.interrupt_id().is_some()
    }

    /// Reads the register at `offset` (0-7 from the base port); others read 0xFF.
    pub fn read(&mut self, offset: u16) -> u8 {
        let s = &mut self.s;
        let dlab = s.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => s.dll,
            0 => s.rx.pop_front().unwrap_or(0),
            1 if dlab => s.dlm,
            1 => s.ier,
            2 => {
                let id = self.interrupt_id();
                if id == Some(IIR_THRI) {
                    self.s.thr_interrupt = false;
                }
                let fifo = if self.s.fifo_enabled { IIR_FIFO } else { 0 };
                id.unwrap_or(IIR_NO_INT) | fifo
            }
            3 => s.lcr,
            4 => s.mcr,
            5 => {
                let dr = if s.rx.is_empty() { 0 } else { LSR_DR };
                let oe = if s.overrun { LSR_OE } else { 0 };
                s.overrun = false;
                dr | oe | LSR_THRE | LSR_TEMT
            }
            6 => {
                let v = self.modem_lines() | self.s.msr_delta;
                self.s.msr_delta = 0;
                v
            }
            7 => s.scr,
            _ => 0xFF,
        }
    }

    /// Writes the register at `offset` (0-7 from the base port); others are ignored.
    pub fn write(&mut self, offset: u16, value: u8) {
        let dlab = self.s.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.s.dll = value,
            0 => {
                if self.s.mcr & MCR_LOOP != 0 {
                    self.receive_looped(value);
                } else {
                    self.s.output.push(value);
                }
                // Sent at once: THR is empty again, so THRE is (re)raised.
                self.s.thr_interrupt = true;
            }
            1 if dlab => self.s.dlm = value,
            1 => {
                let old = self.s.ier;
                self.s.ier = value & 0x0F;
                // Enabling THRI with THR empty raises THRE, as Linux's THRE test expects.
                if old & IER_THRI == 0 && self.s.ier & IER_THRI != 0 {
                    self.s.thr_interrupt = true;
                }
            }
            2 => self.write_fcr(value),
            3 => self.s.lcr = value,
            4 => {
                let before = self.modem_lines();
                self.s.mcr = value & 0x1F;
                let after = self.modem_lines();
                self.note_modem_change(before, after);
            }
            7 => self.s.scr = value,
            _ => {} // LSR, MSR (factory test) and out-of-range offsets
        }
    }

    fn write_fcr(&mut self, value: u8) {
        let enable = value & 0x01 != 0;
        if enable != self.s.fifo_enabled {
            self.s.rx.clear();
        }
        if enable {
            if value & 0x02 != 0 {
                self.s.rx.clear();
                self.s.overrun = false;
            }
            self.s.fcr_trigger = value >> 6;
        }
        self.s.fifo_enabled = enable;
    }

    fn receive_looped(&mut self, value: u8) {
        // A 16-byte FIFO (1 byte without it) overruns when the guest does not read.
        let cap = if self.s.fifo_enabled { 16 } else { 1 };
        if self.s.rx.len() >= cap {
            self.s.overrun = true;
        } else {
            self.s.rx.push_back(value);
        }
    }

    /// MSR bits 7:4: reflected from MCR in loopback, else a connected terminal.
    fn modem_lines(&self) -> u8 {
        let m = self.s.mcr;
        if m & MCR_LOOP == 0 {
            return MSR_CONNECTED;
        }
        // DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
        ((m & 0x01) << 5) | ((m & 0x02) << 3) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
    }

    fn note_modem_change(&mut self, before: u8, after: u8) {
        let changed = before ^ after;
        let mut delta = 0;
        if changed & 0x10 != 0 {
            delta |= 0x01; // DCTS
        }
        if changed & 0x20 != 0 {
            delta |= 0x02; // DDSR
        }
        if before & 0x40 != 0 && after & 0x40 == 0 {
            delta |= 0x04; // TERI: trailing edge of RI
        }
        if changed & 0x80 != 0 {
            delta |= 0x08; // DDCD
        }
        self.s.msr_delta |= delta;
    }

    /// The highest-priority enabled pending interrupt, as IIR encodes it.
    fn interrupt_id(&self) -> Option<u8> {
        let s = &self.s;
        if s.ier & IER_RLSI != 0 && s.overrun {
            Some(IIR_RLSI)
        } else if s.ier & IER_RDI != 0 && !s.rx.is_empty() {
            Some(IIR_RDI)
        } else if s.ier & IER_THRI != 0 && s.thr_interrupt {
            Some(IIR_THRI)
        } else if s.ier & IER_MSI != 0 && s.msr_delta != 0 {
            Some(IIR_MSI)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::round_trip;

    const IER: u16 = 1;
    const IIR: u16 = 2;
    const FCR: u16 = 2;
    const LCR: u16 = 3;
    const MCR: u16 = 4;
    const LSR: u16 = 5;
    const MSR: u16 = 6;
    const SCR: u16 = 7;

    /// The probe of Linux 6.1's `autoconfig()` in 8250_port.c, step by step.
    #[test]
    fn linux_autoconfig_detects_16550a() {
        let mut u = Serial::new();
        // IER test: bits 3:0 hold, bits 7:4 read 0.
        let saved_ier = u.read(IER);
        u.write(IER, 0);
        assert_eq!(u.read(IER) & 0x0F, 0);
        u.write(IER, 0x0F);
        assert_eq!(u.read(IER) & 0x0F, 0x0F);
        u.write(IER, 0xFF);
        assert_eq!(u.read(IER), 0x0F, "no XScale UUE bit");
        u.write(IER, saved_ier);
        // Scratch register.
        for v in [0x55, 0xAA, 0x00] {
            u.write(SCR, v);
            assert_eq!(u.read(SCR), v);
        }
        // Loopback test: MCR = LOOP | OUT2 | RTS must show DCD | CTS.
        let saved_mcr = u.read(MCR);
        u.write(MCR, MCR_LOOP | 0x0A);
        assert_eq!(u.read(MSR) & 0xF0, 0x90);
        u.write(MCR, saved_mcr);
        // EFR probe in LCR 0xBF, then FIFO detection through IIR bits 7:6.
        u.write(LCR, 0xBF);
        u.write(FCR, 0);
        u.write(LCR, 0);
        u.write(FCR, 0x01);
        assert_eq!(u.read(IIR) >> 6, 3, "16550A FIFO bits");
        // Divisor latch behind DLAB, independent of IER.
        u.write(LCR, LCR_DLAB | 0x03);
        u.write(0, 0x01);
        u.write(1, 0x00);
        assert_eq!((u.read(0), u.read(1)), (1, 0));
        u.write(LCR, 0x03);
        assert_eq!(u.read(IER), saved_ier & 0x0F);
        // Startup: LSR is not 0xFF, transmitter empty.
        assert_eq!(u.read(LSR), LSR_THRE | LSR_TEMT);
    }

    /// serial8250_startup's THRE test: enabling THRI raises THRE, reading IIR clears it,
    /// re-enabling raises it again.
    #[test]
    fn thre_interrupt_semantics() {
        let mut u = Serial::new();
        u.write(IER, IER_THRI);
        assert!(u.irq_level());
        assert_eq!(u.read(IIR), IIR_THRI);
        assert!(!u.irq_level());
        assert_eq!(u.read(IIR), IIR_NO_INT);
        u.write(IER, 0);
        u.write(IER, IER_THRI);
        assert_eq!(u.read(IIR) & 0x0F, IIR_THRI);
        // A THR write sends at once and THR is empty again: THRE is raised.
        u.write(0, b'x');
        assert!(u.irq_level());
        u.write(IER, 0);
        assert!(!u.irq_level());
        assert_eq!(u.take_output(), b"x");
        assert!(u.take_output().is_empty());
    }

    #[test]
    fn receive_with_data_ready_interrupt() {
        let mut u = Serial::new();
        u.push_input(b"hi");
        assert!(!u.irq_level(), "not enabled yet");
        u.write(IER, IER_RDI);
        assert!(u.irq_level());
        assert_eq!(u.read(IIR), IIR_RDI);
        assert_eq!(u.read(LSR) & LSR_DR, LSR_DR);
        assert_eq!(u.read(0), b'h');
        assert_eq!(u.read(0), b'i');
        assert_eq!(u.read(LSR) & LSR_DR, 0);
        assert!(!u.irq_level());
        // FIFO clear drops pending input.
        u.push_input(b"zz");
        u.write(FCR, 0x03);
        assert_eq!(u.read(LSR) & LSR_DR, 0);
    }

    #[test]
    fn loopback_echoes_and_overruns() {
        let mut u = Serial::new();
        u.write(MCR, MCR_LOOP);
        u.write(0, 1);
        u.write(0, 2); // no FIFO: one byte of room
        assert!(u.take_output().is_empty());
        assert_eq!(u.read(LSR) & (LSR_DR | LSR_OE), LSR_DR | LSR_OE);
        assert_eq!(u.read(0), 1);
        // Leaving loopback changes CTS/DSR/DCD: delta bits and an MSI interrupt.
        u.write(IER, IER_MSI);
        u.write(MCR, 0);
        assert_eq!(u.read(IIR), IIR_MSI);
        let msr = u.read(MSR);
        assert_eq!(msr & 0xF0, MSR_CONNECTED);
        assert_ne!(msr & 0x0F, 0);
        assert_eq!(u.read(MSR) & 0x0F, 0, "deltas clear on read");
    }

    #[test]
    fn garbage_never_panics() {
        let mut u = Serial::new();
        let mut x: u32 = 12345;
        for _ in 0..20_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let off = (x >> 8) as u16 % 12;
            if x & 1 == 0 {
                u.write(off, (x >> 16) as u8);
            } else {
                u.read(off);
            }
            if x & 63 == 0 {
                u.push_input(&[x as u8]);
            }
        }
        assert_eq!(u.read(8), 0xFF);
        assert_eq!(u.read(0xFFFF), 0xFF);
        u.write(0xFFFF, 1);
    }

    #[test]
    fn state_round_trip() {
        let mut u = Serial::new();
        u.write(IER, 0x0F);
        u.write(SCR, 0x42);
        u.write(FCR, 0xC1);
        u.write(0, b'a');
        u.push_input(b"rx");
        let Ok(mut v) = round_trip(&u, ());
        assert_eq!(v.state(), u.state());
        assert_eq!(v.read(IIR), u.read(IIR));
        assert_eq!(v.take_output(), b"a");
        assert_eq!(v.read(0), b'r');
    }
}
