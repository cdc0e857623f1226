//! Platform devices. Each is a pure state machine: it is driven by register accesses
//! and by the virtual clock passed in, and it never touches a file descriptor, a
//! thread or the host clock. That makes it deterministic, testable without a guest,
//! and serializable for snapshots (each implements [`crate::persist::Persist`]).
//!
//! Time-driven devices compute what they show lazily from the `now` passed in. Their
//! caller ([`platform::Platform`]) calls `advance(now)` before every access, so every
//! event due at or before `now` has happened when the guest looks. `now` may go
//! backwards between calls (vCPUs of one VM keep their own virtual times); devices
//! then use saturating arithmetic and never panic.
//!
//! Guest input never panics the VMM: odd access sizes, unaligned offsets and garbage
//! values are ignored or read as zeros / all-ones, as each device documents.

pub mod acpi_pm;
pub mod hpet;
pub mod ioapic;
pub mod lapic;
pub mod pic;
pub mod pit;
pub mod platform;
pub mod rtc;
pub mod serial;
pub mod virtio;

const NS_PER_SEC: u128 = 1_000_000_000;

/// Whole ticks of a `hz` clock that have elapsed at `ns` nanoseconds (floor).
pub(crate) fn ticks_at(ns: u64, hz: u64) -> u64 {
    let t = ns as u128 * hz as u128 / NS_PER_SEC;
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// The first nanosecond at which `tick` whole ticks of a `hz` clock have elapsed (ceil),
/// i.e. the inverse of [`ticks_at`]: `ticks_at(ns_of_tick(t, hz), hz) >= t`.
pub(crate) fn ns_of_tick(tick: u64, hz: u64) -> u64 {
    let hz = hz.max(1) as u128;
    let ns = (tick as u128 * NS_PER_SEC).div_ceil(hz);
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// Reads the little-endian bytes of `value` starting at byte `offset` into `data`.
/// Bytes past the 8 bytes of `value` read as zero.
pub(crate) fn read_le(value: u64, offset: usize, data: &mut [u8]) {
    let bytes = value.to_le_bytes();
    for (i, d) in data.iter_mut().enumerate() {
        *d = offset
            .checked_add(i)
            .and_then(|o| bytes.get(o))
            .copied()
            .unwrap_or(0);
    }
}

/// Merges `data` into `old` at byte `offset` (little-endian); bytes past 8 are dropped.
pub(crate) fn write_le(old: u64, offset: usize, data: &[u8]) -> u64 {
    let mut bytes = old.to_le_bytes();
    for (i, d) in data.iter().enumerate() {
        if let Some(b) = offset.checked_add(i).and_then(|o| bytes.get_mut(o)) {
            *b = *d;
        }
    }
    u64::from_le_bytes(bytes)
}

/// One step of the 64-bit LCG (Knuth's MMIX constants) that drives the devices'
/// garbage-input tests: advances `x` and returns it.
#[cfg(test)]
pub(crate) fn next_garbage(x: &mut u64) -> u64 {
    *x = x
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_conversions_are_inverse() {
        for hz in [1_193_182, 3_579_545, 32_768, 10_000_000] {
            for t in [0, 1, 2, 1000, 65536, 1 << 40] {
                let ns = ns_of_tick(t, hz);
                assert!(ticks_at(ns, hz) >= t);
                assert!(ns == 0 || ticks_at(ns - 1, hz) < t);
            }
        }
        assert_eq!(ns_of_tick(u64::MAX, 1), u64::MAX);
    }

    #[test]
    fn byte_helpers_handle_any_offset() {
        let mut d = [0xAA; 4];
        read_le(0x1122_3344_5566_7788, 6, &mut d);
        assert_eq!(d, [0x22, 0x11, 0, 0]);
        read_le(1, usize::MAX, &mut d);
        assert_eq!(d, [0; 4]);
        assert_eq!(write_le(0, 7, &[1, 2, 3]), 0x0100_0000_0000_0000);
        assert_eq!(write_le(5, usize::MAX, &[1]), 5);
    }
}
