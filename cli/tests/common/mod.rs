//! Helpers for the CLI's tests: the engine's test helpers (guest kernel, images) and
//! running the `detvm` binary.
#![allow(dead_code, unused_imports)]

#[path = "../../../explorer/tests/common/mod.rs"]
mod engine;
pub use engine::*;

pub mod cli;
pub mod server;
