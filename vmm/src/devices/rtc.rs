//! MC146818 RTC and CMOS RAM at 0x70 (index; bit 7, the NMI mask, is ignored) and
//! 0x71 (data), IRQ 8.
//!
//! The wall clock is `epoch_unix_secs` + virtual time + an offset that guest writes of
//! the time registers shift (with reg B SET, as Linux does; the clock restarts at the
//! written second when SET clears). Registers follow reg B's DM (binary/BCD) and 24/12h
//! bits. UIP reads 1 during the last 244 µs before each second, as in QEMU. Interrupt
//! flags in reg C are computed lazily from virtual time: PF at each periodic tick of the
//! 32.768 kHz divider (rate in reg A, phase from power-on), UF at each second, AF when
//! the new second matches the alarm (0xC0-0xFF is "don't care"). Reading reg C clears
//! them; the IRQ line is IRQF, so a guest that never reads reg C gets no further edges.
//! The divider bits of reg A are stored but do not stop the clock. Dates use the
//! proleptic Gregorian calendar (civil-from-days), no time zones.

use std::convert::Infallible;

use serde::{Deserialize, Serialize};

use crate::clock::VirtualTime;
use crate::devices::{ns_of_tick, ticks_at};
use crate::persist::Persist;

pub const RTC_IRQ: u32 = 8;
const RTC_HZ: u64 = 32_768;
const NS: i128 = 1_000_000_000;
const REG_A: usize = 0x0A;
const REG_B: usize = 0x0B;
const REG_C: usize = 0x0C;
const REG_D: usize = 0x0D;
const CENTURY: usize = 0x32;
const TIME_REGS: [usize; 8] = [0, 2, 4, 6, 7, 8, 9, CENTURY];
const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_DM_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;
/// UIP is set this long before each update (8 periods of 32.768 kHz).
const UIP_NS: i128 = 244_140;

/// The RTC's snapshot form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtcState {
    pub epoch_unix_secs: i64,
    /// Wall clock ns = (epoch + offset_secs) * 1e9 + phase_ns + virtual ns.
    pub offset_secs: i64,
    pub phase_ns: i64,
    pub index: u8,
    /// 128 bytes: time registers while SET is on (frozen), alarms, A, B and plain RAM.
    pub cmos: Vec<u8>,
    /// Reg C flags (PF, AF, UF) accumulated up to `synced_to`.
    pub flags: u8,
    pub synced_to: u64,
}

#[derive(Debug, Clone)]
pub struct Rtc {
    s: RtcState,
}

impl Persist for Rtc {
    type State = RtcState;
    type Resources<'a> = ();
    type Error = Infallible;

    fn state(&self) -> RtcState {
        self.s.clone()
    }

    fn restore((): (), state: &RtcState) -> Result<Self, Infallible> {
        let mut s = state.clone();
        s.cmos.resize(128, 0);
        s.phase_ns = s.phase_ns.rem_euclid(NS as i64);
        Ok(Rtc { s })
    }
}

impl Rtc {
    pub fn new(epoch_unix_secs: i64) -> Self {
        let mut cmos = vec![0u8; 128];
        cmos[REG_A] = 0x26; // 32.768 kHz divider, 1024 Hz periodic rate
        cmos[REG_B] = B_24H; // BCD, 24-hour
        Rtc {
            s: RtcState {
                epoch_unix_secs,
                offset_secs: 0,
                phase_ns: 0,
                index: 0,
                cmos,
                flags: 0,
                synced_to: 0,
            },
        }
    }

    /// Sets a plain CMOS byte, e.g. the memory-size bytes a BIOS would fill.
    pub fn set_cmos_byte(&mut self, index: u8, value: u8) {
        if let Some(b) = self.s.cmos.get_mut(usize::from(index & 0x7F)) {
            *b = value;
        }
    }

    /// The IRQ 8 line: reg C's IRQF.
    pub fn irq_level(&self) -> bool {
        self.s.flags & self.b() & (C_PF | C_AF | C_UF) != 0
    }

    /// Steps the wall clock by `delta_ns` (either way); virtual time is untouched.
    pub fn step(&mut self, delta_ns: i64) {
        let base = i128::from(self.s.offset_secs) * NS + i128::from(self.s.phase_ns);
        let x = base + i128::from(delta_ns);
        self.s.offset_secs = i64::try_from(x.div_euclid(NS)).unwrap_or(0);
        self.s.phase_ns = x.rem_euclid(NS) as i64;
    }

    /// Unix seconds the RTC shows at `now` (ignoring a SET freeze).
    pub fn wall_secs(&self, now: VirtualTime) -> i64 {
        let secs = self.wall_ns(now.0).div_euclid(NS);
        i64::try_from(secs).unwrap_or(if secs < 0 { i64::MIN } else { i64::MAX })
    }

    pub fn read(&mut self, now: VirtualTime, port: u16) -> u8 {
        self.advance(now);
        if port != 0x71 {
            return 0xFF; // the index port is write-only
        }
        let i = usize::from(self.s.index);
        match i {
            _ if TIME_REGS.contains(&i) && self.b() & B_SET == 0 => self.encoded_time(now)[i],
            REG_A => (self.s.cmos[REG_A] & 0x7F) | if self.uip(now) { 0x80 } else { 0 },
            REG_C => {
                let v = self.s.flags | if self.irq_level() { C_IRQF } else { 0 };
                self.s.flags = 0;
                v
            }
            REG_D => 0x80, // valid RAM and time
            _ => self.s.cmos.get(i).copied().unwrap_or(0xFF),
        }
    }

    pub fn write(&mut self, now: VirtualTime, port: u16, val: u8) {
        self.advance(now);
        if port == 0x70 {
            self.s.index = val & 0x7F;
            return;
        }
        if port != 0x71 {
            return;
        }
        let i = usize::from(self.s.index);
        match i {
            _ if TIME_REGS.contains(&i) => {
                if self.b() & B_SET == 0 {
                    // A write while running: edit the current time and restart from it.
                    self.freeze(now);
                    self.s.cmos[i] = val;
                    self.commit(now);
                } else {
                    self.s.cmos[i] = val;
                }
            }
            REG_A => self.s.cmos[REG_A] = val & 0x7F,
            REG_B => {
                let old = self.b();
                let mut new = val;
                if new & B_SET != 0 {
                    new &= !B_UIE; // setting SET clears UIE, per the datasheet
                }
                if old & B_SET == 0 && new & B_SET != 0 {
                    self.freeze(now);
                }
                self.s.cmos[REG_B] = new;
                if old & B_SET != 0 && new & B_SET == 0 {
                    self.commit(now);
                }
            }
            REG_C | REG_D => {}
            _ => {
                if let Some(b) = self.s.cmos.get_mut(i) {
                    *b = val;
                }
            }
        }
    }

    /// Accounts interrupt flags for everything up to `now`.
    pub fn advance(&mut self, now: VirtualTime) {
        let (from, to) = (self.s.synced_to, now.0);
        if to <= from {
            return;
        }
        if let Some(p) = self.periodic_ticks() {
            if ticks_at(to, RTC_HZ) / p > ticks_at(from, RTC_HZ) / p {
                self.s.flags |= C_PF;
            }
        }
        if self.b() & B_SET == 0 {
            let (a, b) = (self.wall_secs(VirtualTime(from)), self.wall_secs(now));
            if b > a {
                self.s.flags |= C_UF;
            }
            if self.next_alarm_after(a).is_some_and(|s| s <= b) {
                self.s.flags |= C_AF;
            }
        }
        self.s.synced_to = to;
    }

    /// When the IRQ line will next rise, if an enabled event can raise it.
    pub fn next_deadline(&self) -> Option<VirtualTime> {
        if self.irq_level() {
            return None; // already asserted until reg C is read
        }
        let from = self.s.synced_to;
        let b = self.b();
        let mut best: Option<u64> = None;
        let mut consider = |t: u64| best = Some(best.map_or(t, |b| b.min(t)));
        if b & B_PIE != 0 {
            if let Some(p) = self.periodic_ticks() {
                let next = (ticks_at(from, RTC_HZ) / p)
                    .saturating_add(1)
                    .saturating_mul(p);
                consider(ns_of_tick(next, RTC_HZ));
            }
        }
        if b & B_SET == 0 {
            let secs = self.wall_secs(VirtualTime(from));
            if b & B_UIE != 0 {
                consider(self.virtual_ns_of_wall_sec(secs.saturating_add(1)));
            }
            if b & B_AIE != 0 {
                if let Some(s) = self.next_alarm_after(secs) {
                    consider(self.virtual_ns_of_wall_sec(s));
                }
            }
        }
        best.map(VirtualTime)
    }

    fn b(&self) -> u8 {
        self.s.cmos[REG_B]
    }

    fn base_ns(&self) -> i128 {
        (i128::from(self.s.epoch_unix_secs) + i128::from(self.s.offset_secs)) * NS
            + i128::from(self.s.phase_ns)
    }

    fn wall_ns(&self, now: u64) -> i128 {
        self.base_ns() + i128::from(now)
    }

    fn virtual_ns_of_wall_sec(&self, secs: i64) -> u64 {
        let t = i128::from(secs) * NS - self.base_ns();
        u64::try_from(t.max(0)).unwrap_or(u64::MAX)
    }

    fn uip(&self, now: VirtualTime) -> bool {
        self.s.cmos[REG_A] & 0x70 == 0x20
            && self.b() & B_SET == 0
            && self.wall_ns(now.0).rem_euclid(NS) >= NS - UIP_NS
    }

    /// The periodic interrupt period in 32.768 kHz ticks, None when rate 0.
    fn periodic_ticks(&self) -> Option<u64> {
        match self.s.cmos[REG_A] & 0x0F {
            0 => None,
            r @ (1 | 2) => Some(1 << (r + 6)),
            r => Some(1 << (r - 1)),
        }
    }

    fn enc(&self, v: u8) -> u8 {
        if self.b() & B_DM_BINARY != 0 {
            v
        } else {
            ((v / 10) << 4) | (v % 10)
        }
    }

    fn dec(&self, v: u8) -> Option<u8> {
        if self.b() & B_DM_BINARY != 0 {
            return Some(v);
        }
        let (hi, lo) = (v >> 4, v & 0x0F);
        (hi < 10 && lo < 10).then_some(hi * 10 + lo)
    }

    fn enc_hour(&self, h: u8) -> u8 {
        if self.b() & B_24H != 0 {
            return self.enc(h);
        }
        let h12 = match h % 12 {
            0 => 12,
            r => r,
        };
        self.enc(h12) | if h >= 12 { 0x80 } else { 0 }
    }

    fn dec_hour(&self, v: u8) -> Option<u8> {
        if self.b() & B_24H != 0 {
            return self.dec(v).filter(|h| *h < 24);
        }
        let h12 = self.dec(v & 0x7F).filter(|h| (1..=12).contains(h))?;
        Some(h12 % 12 + if v & 0x80 != 0 { 12 } else { 0 })
    }

    /// The 128-byte register image with the time registers filled for `now`.
    fn encoded_time(&self, now: VirtualTime) -> [u8; 128] {
        let mut r = [0u8; 128];
        let secs = self.wall_secs(now);
        let days = secs.div_euclid(86_400);
        let tod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let year = y.clamp(0, 9_999);
        r[0] = self.enc((tod % 60) as u8);
        r[2] = self.enc((tod / 60 % 60) as u8);
        r[4] = self.enc_hour((tod / 3600) as u8);
        r[6] = self.enc(((days + 4).rem_euclid(7) + 1) as u8); // Sunday = 1
        r[7] = self.enc(d as u8);
        r[8] = self.enc(m as u8);
        r[9] = self.enc((year % 100) as u8);
        r[CENTURY] = self.enc((year / 100) as u8);
        r
    }

    /// Copies the running time into the time registers (SET turned on).
    fn freeze(&mut self, now: VirtualTime) {
        let img = self.encoded_time(now);
        for i in TIME_REGS {
            self.s.cmos[i] = img[i];
        }
    }

    /// Restarts the clock from the time registers; an invalid date leaves it unchanged.
    fn commit(&mut self, now: VirtualTime) {
        let c = &self.s.cmos;
        let fields = (|| {
            let sec = self.dec(c[0]).filter(|v| *v < 60)?;
            let min = self.dec(c[2]).filter(|v| *v < 60)?;
            let hour = self.dec_hour(c[4])?;
            let month = self.dec(c[8]).filter(|v| (1..=12).contains(v))?;
            let year = i64::from(self.dec(c[CENTURY]).filter(|v| *v < 100)?) * 100
                + i64::from(self.dec(c[9]).filter(|v| *v < 100)?);
            let day = self
                .dec(c[7])
                .filter(|d| *d >= 1 && u32::from(*d) <= days_in_month(year, month.into()))?;
            let days = days_from_civil(year, month.into(), day.into());
            Some(days * 86_400 + i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec))
        })();
        let Some(secs) = fields else { return };
        let x = (i128::from(secs) - i128::from(self.s.epoch_unix_secs)) * NS - i128::from(now.0);
        self.s.offset_secs = i64::try_from(x.div_euclid(NS)).unwrap_or(0);
        self.s.phase_ns = x.rem_euclid(NS) as i64;
    }

    /// The first wall second after `after` whose time of day matches the alarm.
    fn next_alarm_after(&self, after: i64) -> Option<i64> {
        let c = &self.s.cmos;
        let dont_care = |v: u8| v & 0xC0 == 0xC0;
        let hours: Vec<bool> = (0..24)
            .map(|h| dont_care(c[5]) || self.enc_hour(h) == c[5])
            .collect();
        let mins: Vec<bool> = (0..60)
            .map(|m| dont_care(c[3]) || self.enc(m) == c[3])
            .collect();
        let secs: Vec<bool> = (0..60)
            .map(|s| dont_care(c[1]) || self.enc(s) == c[1])
            .collect();
        if ![&hours, &mins, &secs].iter().all(|set| set.contains(&true)) {
            return None;
        }
        let first = after.checked_add(1)?;
        let (day, tod) = (first.div_euclid(86_400), first.rem_euclid(86_400));
        let (h0, m0, s0) = (
            (tod / 3600) as usize,
            (tod / 60 % 60) as usize,
            (tod % 60) as usize,
        );
        for (d, from) in [(day, (h0, m0, s0)), (day + 1, (0, 0, 0))] {
            for h in (from.0..24).filter(|h| hours[*h]) {
                let m_from = if h == from.0 { from.1 } else { 0 };
                for m in (m_from..60).filter(|m| mins[*m]) {
                    let s_from = if h == from.0 && m == from.1 {
                        from.2
                    } else {
                        0
                    };
                    if let Some(s) = (s_from..60).find(|s| secs[*s]) {
                        return d
                            .checked_mul(86_400)?
                            .checked_add((h * 3600 + m * 60 + s) as i64);
                    }
                }
            }
        }
        None
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::round_trip;

    const EPOCH_2038: i64 = 2_147_483_640; // 2038-01-19T03:14:00Z, a Tuesday

    fn reg(r: &mut Rtc, now: VirtualTime, i: u8) -> u8 {
        r.write(now, 0x70, i | 0x80); // NMI-disable bit set, as Linux does: ignored
        r.read(now, 0x71)
    }

    fn set(r: &mut Rtc, now: VirtualTime, i: u8, v: u8) {
        r.write(now, 0x70, i);
        r.write(now, 0x71, v);
    }

    #[test]
    fn step_moves_the_wall_clock_either_way() {
        let mut r = Rtc::new(EPOCH_2038);
        let now = VirtualTime(1_500_000_000);
        r.step(-2_600_000_000);
        assert_eq!(r.wall_secs(now), EPOCH_2038 - 2);
        r.step(3_600_000_000_000);
        assert_eq!(r.wall_secs(now), EPOCH_2038 - 2 + 3600);
        r.step(-3_597_400_000_000);
        assert_eq!(r.wall_secs(now), EPOCH_2038 + 1);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        for d in [-800_000, -1, 0, 59, 24_855, 2_932_896] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn bcd_date_for_the_2038_epoch() {
        let mut r = Rtc::new(EPOCH_2038);
        let t = VirtualTime(8_500_000_000); // 8.5 s later: 03:14:08
        let regs: Vec<u8> = [0, 2, 4, 6, 7, 8, 9, 0x32]
            .iter()
            .map(|i| reg(&mut r, t, *i))
            .collect();
        assert_eq!(regs, [0x08, 0x14, 0x03, 0x03, 0x19, 0x01, 0x38, 0x20]);
        assert_eq!(reg(&mut r, t, 0x0D), 0x80);
        // Binary, 12-hour: 3 AM.
        set(&mut r, t, 0x0B, B_DM_BINARY);
        assert_eq!(reg(&mut r, t, 4), 3);
        assert_eq!(reg(&mut r, t, 9), 38);
        let pm = VirtualTime(t.0 + 12 * 3600 * 1_000_000_000);
        assert_eq!(reg(&mut r, pm, 4), 0x83);
    }

    #[test]
    fn uip_precedes_each_second() {
        let mut r = Rtc::new(EPOCH_2038);
        assert_eq!(reg(&mut r, VirtualTime(999_000_000), 0x0A), 0x26);
        assert_eq!(reg(&mut r, VirtualTime(999_800_000), 0x0A), 0xA6);
        assert_eq!(reg(&mut r, VirtualTime(1_000_000_000), 0x0A), 0x26);
    }

    #[test]
    fn set_time_shifts_the_clock() {
        let mut r = Rtc::new(EPOCH_2038);
        let t = VirtualTime(2_300_000_000);
        set(&mut r, t, 0x0B, B_24H | B_SET);
        for (i, v) in [
            (0, 0x30),
            (2, 0x45),
            (4, 0x23),
            (7, 0x31),
            (8, 0x12),
            (9, 0x99),
            (0x32, 0x20),
        ] {
            set(&mut r, t, i, v);
        }
        assert_eq!(
            reg(&mut r, VirtualTime(9_000_000_000), 0),
            0x30,
            "frozen while SET"
        );
        let t2 = VirtualTime(10_000_000_000);
        set(&mut r, t2, 0x0B, B_24H);
        assert_eq!(
            r.wall_secs(t2),
            days_from_civil(2099, 12, 31) * 86_400 + 23 * 3600 + 45 * 60 + 30
        );
        let t3 = VirtualTime(t2.0 + 30_000_000_000);
        let regs: Vec<u8> = [0, 2, 4, 7, 8, 9, 0x32]
            .iter()
            .map(|i| reg(&mut r, t3, *i))
            .collect();
        assert_eq!(regs, [0x00, 0x46, 0x23, 0x31, 0x12, 0x99, 0x20]);
        // Garbage date: the clock keeps running unchanged.
        let before = r.wall_secs(t3);
        set(&mut r, t3, 0x0B, B_24H | B_SET);
        set(&mut r, t3, 8, 0x13);
        set(&mut r, t3, 0x0B, B_24H);
        assert_eq!(r.wall_secs(t3), before);
    }

    #[test]
    fn periodic_update_and_alarm_interrupts() {
        let mut r = Rtc::new(EPOCH_2038);
        let t0 = VirtualTime(100);
        set(&mut r, t0, 0x0B, B_24H | B_PIE);
        // Rate 6: 1024 Hz, every 32 ticks of 32.768 kHz.
        assert_eq!(r.next_deadline(), Some(VirtualTime(ns_of_tick(32, RTC_HZ))));
        r.advance(VirtualTime(ns_of_tick(32, RTC_HZ) - 1));
        assert!(!r.irq_level());
        r.advance(VirtualTime(ns_of_tick(32, RTC_HZ)));
        assert!(r.irq_level());
        assert_eq!(r.next_deadline(), None);
        assert_eq!(reg(&mut r, VirtualTime(1_000_000), 0x0C), C_IRQF | C_PF);
        assert!(!r.irq_level());
        assert_eq!(reg(&mut r, VirtualTime(1_000_000), 0x0C), 0);
        // Update-ended: next second boundary is 1 s after power-on (epoch is whole).
        set(&mut r, VirtualTime(1_000_000), 0x0B, B_24H | B_UIE);
        assert_eq!(r.next_deadline(), Some(VirtualTime(1_000_000_000)));
        // Alarm at 03:14:05 (hour don't-care): 5 s after power-on.
        set(&mut r, VirtualTime(1_000_000), 0x0B, B_24H | B_AIE);
        set(&mut r, VirtualTime(1_000_000), 1, 0x05);
        set(&mut r, VirtualTime(1_000_000), 3, 0x14);
        set(&mut r, VirtualTime(1_000_000), 5, 0xFF);
        assert_eq!(r.next_deadline(), Some(VirtualTime(5_000_000_000)));
        r.advance(VirtualTime(5_000_000_000));
        assert!(r.irq_level());
        assert_eq!(
            reg(&mut r, VirtualTime(5_000_000_000), 0x0C),
            C_IRQF | C_AF | C_UF | C_PF
        );
        // Next match of xx:14:05 is an hour later.
        assert_eq!(r.next_deadline(), Some(VirtualTime(3_605_000_000_000)));
    }

    #[test]
    fn garbage_never_panics() {
        for epoch in [EPOCH_2038, 0, -1, i64::MIN, i64::MAX] {
            let mut r = Rtc::new(epoch);
            let mut x: u64 = epoch as u64 ^ 0x5555;
            let mut now = 0u64;
            for _ in 0..5_000 {
                crate::devices::next_garbage(&mut x);
                now = if x & 15 == 0 {
                    now / 3
                } else {
                    now.wrapping_add(x >> 36)
                };
                let t = VirtualTime(now);
                match (x >> 8) % 4 {
                    0 => r.write(t, 0x70 + ((x >> 12) % 3) as u16, (x >> 16) as u8),
                    1 => set(&mut r, t, (x >> 20) as u8 & 0x7F, (x >> 28) as u8),
                    2 => _ = r.read(t, 0x71),
                    _ => {
                        r.advance(t);
                        r.next_deadline();
                    }
                }
            }
            assert_eq!(r.read(VirtualTime::ZERO, 0x70), 0xFF);
        }
    }

    #[test]
    fn state_round_trip() {
        let mut r = Rtc::new(EPOCH_2038);
        set(&mut r, VirtualTime(5), 0x0B, B_24H | B_PIE);
        set(&mut r, VirtualTime(5), 0x40, 0x77);
        r.advance(VirtualTime(10_000_000));
        let Ok(mut q) = round_trip(&r, ());
        assert_eq!(q.state(), r.state());
        let t = VirtualTime(12_345_678_901);
        for i in [0, 0x0A, 0x0C, 0x40] {
            assert_eq!(reg(&mut q, t, i), reg(&mut r, t, i));
        }
    }
}
