//! ACPI fixed hardware and the PC's reset/power controls, at I/O ports:
//! PM1a_EVT_BLK 0x600 (PM1_STS, PM1_EN), PM1a_CNT_BLK 0x604, PM_TMR_BLK 0x608, the
//! reset control register 0xCF9, and the two i8042 ports (0x60, 0x64) the kernel pokes
//! though the platform has no keyboard controller.
//!
//! Every register is handled a byte at a time, so any access size works (the platform
//! splits accesses). SCI_EN always reads 1: the platform is in ACPI mode from power-on
//! (the FADT has no SMI command port). A PM1_CNT write with SLP_EN and SLP_TYP 5 (the
//! DSDT's \_S5) powers off. The PM timer is 24 bits at 3.579545 MHz of virtual time;
//! its TMR_STS overflow status and the SCI are not generated (Linux uses neither).
//! Reset: 0xCF9 with bit 2 (RST_CPU) set, e.g. 0x06 or 0x0E, or 0xFE to port 0x64.

use std::convert::Infallible;

use serde::{Deserialize, Serialize};

use crate::clock::VirtualTime;
use crate::devices::ticks_at;
use crate::persist::Persist;

pub const PM1_EVT_BLK: u16 = 0x600;
pub const PM1_CNT_BLK: u16 = 0x604;
pub const PM_TMR_BLK: u16 = 0x608;
pub const RESET_PORT: u16 = 0xCF9;
/// The sleep type the DSDT's \_S5 object names.
pub const SLP_TYP_S5: u16 = 5;
pub const PM_TIMER_HZ: u64 = 3_579_545;
const SCI_EN: u16 = 1;
const SLP_EN: u16 = 1 << 13;

/// What a write asks of the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmAction {
    None,
    PowerOff,
    Reset,
}

/// The registers; also the snapshot form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcpiPmState {
    pub pm1_sts: u16,
    pub pm1_en: u16,
    pub pm1_cnt: u16,
    /// 0xCF9 bits 1 (hard reset) and 3 (full reset), read back as written.
    pub cf9: u8,
}

#[derive(Debug, Clone, Default)]
pub struct AcpiPm {
    s: AcpiPmState,
}

fn byte(v: u16, hi: bool) -> u8 {
    if hi {
        (v >> 8) as u8
    } else {
        v as u8
    }
}

fn set_byte(v: u16, hi: bool, b: u8) -> u16 {
    if hi {
        (v & 0x00FF) | (u16::from(b) << 8)
    } else {
        (v & 0xFF00) | u16::from(b)
    }
}

impl Persist for AcpiPm {
    type State = AcpiPmState;
    type Resources<'a> = ();
    type Error = Infallible;

    fn state(&self) -> AcpiPmState {
        self.s.clone()
    }

    fn restore((): (), state: &AcpiPmState) -> Result<Self, Infallible> {
        Ok(AcpiPm { s: state.clone() })
    }
}

impl AcpiPm {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `port` belongs here (0xCF9 only for single-byte accesses: 0xCF8 is the
    /// 32-bit PCI configuration address port, which this platform does not have).
    pub fn handles(port: u16, len: usize) -> bool {
        matches!(port, 0x600..=0x605 | 0x608..=0x60B | 0x60 | 0x64)
            || (port == RESET_PORT && len == 1)
    }

    /// The PM timer's 24-bit count at `now`.
    pub fn pm_timer(now: VirtualTime) -> u32 {
        (ticks_at(now.0, PM_TIMER_HZ) & 0xFF_FFFF) as u32
    }

    pub fn read(&mut self, now: VirtualTime, port: u16) -> u8 {
        let hi = port & 1 == 1;
        match port {
            0x600 | 0x601 => byte(self.s.pm1_sts, hi),
            0x602 | 0x603 => byte(self.s.pm1_en, hi),
            0x604 | 0x605 => byte((self.s.pm1_cnt & !SLP_EN) | SCI_EN, hi),
            0x608..=0x60B => (Self::pm_timer(now) >> (8 * (port - 0x608))) as u8,
            RESET_PORT => self.s.cf9,
            0x60 | 0x64 => 0, // no i8042: status "buffers empty", no data
            _ => 0xFF,
        }
    }

    pub fn write(&mut self, port: u16, val: u8) -> PmAction {
        let hi = port & 1 == 1;
        match port {
            0x600 | 0x601 => self.s.pm1_sts &= !set_byte(0, hi, val), // write 1 to clear
            0x602 | 0x603 => self.s.pm1_en = set_byte(self.s.pm1_en, hi, val),
            0x604 | 0x605 => {
                let v = set_byte(self.s.pm1_cnt, hi, val);
                self.s.pm1_cnt = v & !SLP_EN;
                if v & SLP_EN != 0 && (v >> 10) & 7 == SLP_TYP_S5 {
                    return PmAction::PowerOff;
                }
            }
            RESET_PORT => {
                self.s.cf9 = val & 0x0A;
                if val & 0x04 != 0 {
                    return PmAction::Reset;
                }
            }
            0x64 if val == 0xFE => return PmAction::Reset, // i8042 "pulse reset line"
            _ => {}
        }
        PmAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::round_trip;

    #[test]
    fn pm_timer_rate_and_wrap() {
        let mut pm = AcpiPm::new();
        let read32 = |pm: &mut AcpiPm, ns: u64| {
            let t = VirtualTime(ns);
            u32::from_le_bytes([0, 1, 2, 3].map(|i| pm.read(t, PM_TMR_BLK + i)))
        };
        assert_eq!(read32(&mut pm, 0), 0);
        assert_eq!(read32(&mut pm, 1_000_000_000), 3_579_545);
        assert_eq!(read32(&mut pm, 1_000_000), 3_579);
        // 2^24 ticks is about 4.687 s: the count wraps.
        assert_eq!(
            read32(&mut pm, 5_000_000_000),
            (17_897_725 & 0xFF_FFFF) as u32
        );
    }

    #[test]
    fn power_off_and_sci_en() {
        let mut pm = AcpiPm::new();
        assert_eq!(pm.read(VirtualTime::ZERO, 0x604) & 1, 1);
        // SLP_TYP 5 without SLP_EN: nothing. Then the high byte with SLP_EN.
        assert_eq!(pm.write(0x605, (5 << 2) as u8), PmAction::None);
        assert_eq!(
            pm.write(0x605, ((5 << 2) | (1 << 5)) as u8),
            PmAction::PowerOff
        );
        assert_eq!(
            pm.read(VirtualTime::ZERO, 0x605) & 0x20,
            0,
            "SLP_EN reads 0"
        );
        // Another sleep type is not a power-off.
        assert_eq!(pm.write(0x605, ((3 << 2) | (1 << 5)) as u8), PmAction::None);
    }

    #[test]
    fn status_enable_and_resets() {
        let mut pm = AcpiPm::new();
        pm.s.pm1_sts = 0x8101;
        pm.write(0x601, 0x81);
        assert_eq!(pm.read(VirtualTime::ZERO, 0x600), 0x01);
        assert_eq!(pm.read(VirtualTime::ZERO, 0x601), 0x00);
        pm.write(0x603, 0x01);
        assert_eq!(pm.read(VirtualTime::ZERO, 0x603), 0x01);
        // Linux's CF9 sequence: read, write |2, then |6.
        let cf9 = pm.read(VirtualTime::ZERO, RESET_PORT);
        assert_eq!(pm.write(RESET_PORT, cf9 | 2), PmAction::None);
        assert_eq!(pm.write(RESET_PORT, cf9 | 6), PmAction::Reset);
        assert_eq!(pm.write(RESET_PORT, 0x0E), PmAction::Reset);
        assert_eq!(pm.read(VirtualTime::ZERO, 0x64), 0);
        assert_eq!(pm.read(VirtualTime::ZERO, 0x60), 0);
        assert_eq!(pm.write(0x64, 0xFE), PmAction::Reset);
        assert_eq!(pm.write(0x64, 0xD1), PmAction::None);
        assert!(AcpiPm::handles(RESET_PORT, 1) && !AcpiPm::handles(RESET_PORT, 4));
    }

    #[test]
    fn garbage_never_panics() {
        let mut pm = AcpiPm::new();
        for port in 0..=0xFFFFu16 {
            let v = (port as u8).wrapping_mul(37);
            if port != RESET_PORT && port != 0x64 && port != 0x605 {
                assert_eq!(pm.write(port, v), PmAction::None);
            }
            pm.read(VirtualTime(u64::from(port) << 40), port);
        }
        pm.read(VirtualTime(u64::MAX), PM_TMR_BLK);
    }

    #[test]
    fn state_round_trip() {
        let mut pm = AcpiPm::new();
        pm.write(0x602, 0x21);
        pm.write(0x604, 0x06);
        pm.write(RESET_PORT, 0x0A);
        let Ok(mut q) = round_trip(&pm, ());
        assert_eq!(q.state(), pm.state());
        for p in [0x602, 0x604, RESET_PORT] {
            assert_eq!(q.read(VirtualTime::ZERO, p), pm.read(VirtualTime::ZERO, p));
        }
    }
}
