//! The parts campaigns spread over hosts are built from (docs/scale-out.md): the work
//! queue in PostgreSQL, and snapshots, projects and images in an object store.

pub mod executor;
pub mod load;
pub mod objects;
pub mod project;
#[cfg(test)]
mod project_tests;
pub mod queue;
