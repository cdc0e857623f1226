//! The parts campaigns spread over hosts are built from (docs/scale-out.md): the work
//! queue in PostgreSQL and snapshot objects in an object store.

pub mod executor;
pub mod load;
pub mod objects;
pub mod queue;
