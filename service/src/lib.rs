//! detvm as a service: bundles of a compose system and its images (`detvm push`), the
//! server's upload API and campaign jobs (`detvm serve`), and the CI gate (`detvm ci`).
//! docs/service.md and docs/ci.md describe them for users.

pub mod bundle;
pub mod client;
pub mod gate;
pub mod report;
pub mod scale;
pub mod server;
