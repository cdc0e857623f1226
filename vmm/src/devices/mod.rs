//! Platform devices. Each is a pure state machine: it is driven by register accesses
//! and by the virtual clock passed in, and it never touches a file descriptor, a
//! thread or the host clock. That makes it deterministic, testable without a guest,
//! and serializable for snapshots.
//!
//! Time-driven devices compute what they show lazily from the `now` passed in. Their
//! caller (the platform) calls `advance(now)` before every access, so every
//! event due at or before `now` has happened when the guest looks. `now` may go
//! backwards between calls (vCPUs of one VM keep their own virtual times); devices
//! then use saturating arithmetic and never panic.
//!
//! Guest input never panics the VMM: odd access sizes, unaligned offsets and garbage
//! values are ignored or read as zeros / all-ones, as each device documents.

pub mod serial;

/// Serializes and deserializes a device state, as a snapshot would.
#[cfg(test)]
pub(crate) fn json_round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(state: &T) -> T {
    let text = serde_json::to_string(state).expect("state serializes");
    serde_json::from_str(&text).expect("state deserializes")
}
