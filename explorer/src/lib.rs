//! detvm's engine: compose systems resolved into Worlds, runs driven through
//! [`run::Session`], the run store, replays to a moment and determinism checks. It never
//! prints: callers pass an [`observer::Observer`] and get values back. The `detvm` CLI
//! (crate `cli/`) and the notebook are built on it (docs/architecture.md).

pub mod at_moment;
pub mod campaign;
pub mod compose;
pub mod moment;
pub mod observer;
pub mod paths;
pub mod properties;
pub mod report;
pub mod run;
pub mod store;
pub mod test_composer;
