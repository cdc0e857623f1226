//! Platform devices. Each is a pure state machine: it is driven by register accesses
//! and by the virtual clock passed in, and it never touches a file descriptor, a
//! thread or the host clock. That makes it deterministic, testable without a guest,
//! and serializable for snapshots.
