//! A moment: a run and a virtual time in it, written `RUN@VTIME` (`r5f2c@12.5s`).

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moment {
    pub run: String,
    pub vtime_ns: u64,
}

/// Virtual nanoseconds as seconds with every digit kept: `12.000345678s`.
pub fn format_vtime(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    if frac == 0 {
        format!("{secs}s")
    } else {
        let digits = format!("{frac:09}");
        format!("{secs}.{}s", digits.trim_end_matches('0'))
    }
}

/// `12.5s`, `12000345678ns`, `1500ms`, `2m`: virtual nanoseconds, exactly.
pub fn parse_vtime(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || format!("`{text}` is not a virtual time; write e.g. `12.5s`, `1500ms` or `42ns`");
    if let Some(n) = t.strip_suffix("ns") {
        return n.parse().map_err(|_| bad());
    }
    if let Some(s) = t
        .strip_suffix('s')
        .filter(|s| !s.ends_with('m') && !s.ends_with('u'))
    {
        if let Some((whole, frac)) = s.split_once('.') {
            if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let whole: u64 = whole.parse().map_err(|_| bad())?;
            let frac: u64 = format!("{frac:0<9}").parse().map_err(|_| bad())?;
            return whole
                .checked_mul(1_000_000_000)
                .and_then(|w| w.checked_add(frac))
                .ok_or_else(bad);
        }
    }
    let d = humantime::parse_duration(t).map_err(|_| bad())?;
    u64::try_from(d.as_nanos()).map_err(|_| bad())
}

impl fmt::Display for Moment {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}@{}", self.run, format_vtime(self.vtime_ns))
    }
}

impl FromStr for Moment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (run, vtime) = s
            .split_once('@')
            .ok_or_else(|| format!("`{s}` is not a moment; write RUN@VTIME, e.g. r5f2c@12.5s"))?;
        if run.is_empty() {
            return Err(format!("`{s}` has no run id before `@`"));
        }
        Ok(Moment {
            run: run.to_string(),
            vtime_ns: parse_vtime(vtime)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly() {
        for ns in [
            0,
            1,
            999_999_999,
            1_000_000_000,
            12_000_345_678,
            300_000_000_000,
        ] {
            let m = Moment {
                run: "r1".into(),
                vtime_ns: ns,
            };
            assert_eq!(m.to_string().parse::<Moment>().unwrap(), m, "{m}");
        }
        assert_eq!(format_vtime(12_500_000_000), "12.5s");
    }

    #[test]
    fn accepts_other_units_and_refuses_garbage() {
        assert_eq!(parse_vtime("1500ms").unwrap(), 1_500_000_000);
        assert_eq!(parse_vtime("42ns").unwrap(), 42);
        assert_eq!(parse_vtime("2m").unwrap(), 120_000_000_000);
        assert!(parse_vtime("1.0000000001s").is_err());
        assert!(parse_vtime("soon").is_err());
        assert!("r1".parse::<Moment>().is_err());
        assert!("@1s".parse::<Moment>().is_err());
    }
}
