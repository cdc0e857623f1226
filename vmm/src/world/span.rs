//! Lengths of virtual time as users write them in plans and configs: `"250ms"`, `"2s"`,
//! `"1.5s"`, `"1m"`, `"100us"`, `"0"`. Signed, so a clock step can say `"-5s"`; fields
//! that must not be negative are checked by [`super::faults::FaultPlan::validate`] and
//! [`super::config::WorldConfig`] validation, which name the field.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::clock::VirtualTime;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(i64);

const UNITS: [(&str, i64); 7] = [
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("µs", 1_000),
    ("ns", 1),
];

impl Span {
    pub const ZERO: Span = Span(0);

    pub const fn from_nanos(ns: i64) -> Self {
        Span(ns)
    }

    pub const fn from_micros(us: i64) -> Self {
        Span(us * 1_000)
    }

    pub const fn from_millis(ms: i64) -> Self {
        Span(ms * 1_000_000)
    }

    pub const fn from_secs(s: i64) -> Self {
        Span(s * 1_000_000_000)
    }

    pub fn as_nanos(self) -> i64 {
        self.0
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// The span as an unsigned length (negative spans count as zero).
    pub fn nanos_u64(self) -> u64 {
        self.0.max(0) as u64
    }

    /// `t` plus this span, saturating at the ends of virtual time.
    pub fn after(self, t: VirtualTime) -> VirtualTime {
        if self.0 >= 0 {
            t.saturating_add(self.0 as u64)
        } else {
            VirtualTime(t.as_nanos().saturating_sub(self.0.unsigned_abs()))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a duration: {why} (write e.g. \"250ms\", \"2s\", \"1.5m\", \"-5s\")")]
pub struct SpanError {
    input: String,
    why: &'static str,
}

impl FromStr for Span {
    type Err = SpanError;

    fn from_str(input: &str) -> Result<Self, SpanError> {
        let fail = |why| SpanError {
            input: input.to_string(),
            why,
        };
        let s = input.trim();
        let (negative, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = (&s[..split], s[split..].trim());
        if number.is_empty() {
            return Err(fail("no number"));
        }
        let scale = if unit.is_empty() {
            if number.chars().all(|c| c == '0' || c == '.') {
                1 // "0" needs no unit
            } else {
                return Err(fail("no unit (h, m, s, ms, us, ns)"));
            }
        } else {
            UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, scale)| *scale)
                .ok_or_else(|| fail("unknown unit (h, m, s, ms, us, ns)"))?
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if frac.contains('.') || (whole.is_empty() && frac.is_empty()) {
            return Err(fail("malformed number"));
        }
        let out_of_range = || fail("out of range (about ±292 years)");
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| out_of_range())?
        };
        // Checked: 40 digits of hours overflow even an i128.
        let mut ns = whole
            .checked_mul(i128::from(scale))
            .ok_or_else(out_of_range)?;
        // The fraction, digit by digit, down to whole nanoseconds.
        let mut unit_part = i128::from(scale);
        for digit in frac.chars() {
            unit_part /= 10;
            ns = ns
                .checked_add(i128::from(digit.to_digit(10).unwrap_or(0)) * unit_part)
                .ok_or_else(out_of_range)?;
        }
        let ns = if negative { -ns } else { ns };
        i64::try_from(ns).map(Span).map_err(|_| out_of_range())
    }
}

impl fmt::Display for Span {
    /// The largest unit that writes the span exactly: `2s`, `250ms`, `-5s`, `1500us`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return write!(f, "0s");
        }
        let (unit, scale) = UNITS
            .iter()
            .filter(|(u, _)| *u != "µs")
            .find(|(_, scale)| self.0 % scale == 0)
            .copied()
            .unwrap_or(("ns", 1));
        write!(f, "{}{unit}", self.0 / scale)
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_users_write() {
        let ok = [
            ("250ms", 250_000_000),
            ("2s", 2_000_000_000),
            ("1.5s", 1_500_000_000),
            ("1m", 60_000_000_000),
            ("100us", 100_000),
            ("100µs", 100_000),
            ("7ns", 7),
            ("0", 0),
            ("-5s", -5_000_000_000),
            (" 0.25 h", 900_000_000_000),
            (".5ms", 500_000),
        ];
        for (text, ns) in ok {
            assert_eq!(text.parse::<Span>(), Ok(Span(ns)), "{text}");
        }
        for bad in ["", "5", "s", "5 parsecs", "1.2.3s", "-", "99999999999h"] {
            assert!(bad.parse::<Span>().is_err(), "{bad:?} should not parse");
        }
        // Beyond i64, and beyond i128 once scaled: an error, not an overflow (2^116 h
        // wraps to exactly 0 ns without the check).
        for huge in [
            "99999999999999999999999999999999999h",
            "83076749736557242056487941267521536h",
            "-170141183460469231731687303715884105727.9h",
            "9223372036854775808ns",
        ] {
            let err = huge.parse::<Span>().expect_err(huge).to_string();
            assert!(err.contains("out of range"), "{huge}: {err}");
        }
        assert_eq!("9223372036854775807ns".parse(), Ok(Span(i64::MAX)));
        assert_eq!("-9223372036854775808ns".parse(), Ok(Span(i64::MIN)));
    }

    #[test]
    fn displays_in_the_largest_exact_unit_and_round_trips() {
        for (ns, text) in [
            (0, "0s"),
            (2_000_000_000, "2s"),
            (250_000_000, "250ms"),
            (1_500_000_000, "1500ms"),
            (-5_000_000_000, "-5s"),
            (120_000_000_000, "2m"),
            (3, "3ns"),
        ] {
            assert_eq!(Span(ns).to_string(), text);
            assert_eq!(text.parse::<Span>(), Ok(Span(ns)));
        }
        let json = serde_json::to_string(&Span::from_millis(250)).unwrap();
        assert_eq!(json, "\"250ms\"");
        assert_eq!(
            serde_json::from_str::<Span>(&json).unwrap(),
            Span::from_millis(250)
        );
    }
}
