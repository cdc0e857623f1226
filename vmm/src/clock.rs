//! Virtual time. Guests never see the host clock: every time source they read
//! (LAPIC timer, HPET, PIT, RTC, TSC on `emu`) reads a [`VirtualTime`].

use serde::{Deserialize, Serialize};

/// Nanoseconds since the VM was powered on.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct VirtualTime(pub u64);

impl VirtualTime {
    pub const ZERO: VirtualTime = VirtualTime(0);

    pub fn as_nanos(self) -> u64 {
        self.0
    }

    pub fn from_millis(ms: u64) -> Self {
        VirtualTime(ms * 1_000_000)
    }

    pub fn saturating_add(self, ns: u64) -> Self {
        VirtualTime(self.0.saturating_add(ns))
    }

    pub fn saturating_sub(self, other: VirtualTime) -> u64 {
        self.0.saturating_sub(other.0)
    }
}

impl std::fmt::Display for VirtualTime {
    /// `12.345678901s`: seconds with nanosecond precision, as moments are written.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{:09}s",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

/// How guest progress turns into virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeModel {
    /// Virtual nanoseconds per retired instruction (`emu`): 1 = a 1 GHz, IPC 1 CPU.
    pub ns_per_instruction: u64,
    /// Virtual nanoseconds charged per exit (`kvm`, where instructions are not counted).
    pub ns_per_exit: u64,
}

impl Default for TimeModel {
    fn default() -> Self {
        TimeModel {
            ns_per_instruction: 1,
            ns_per_exit: 1_000,
        }
    }
}
