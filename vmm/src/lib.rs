//! detvm's VMM: one VM (guest memory, vCPUs on a CPU backend, devices) and the World
//! (many VMs on one virtual timeline, a deterministic network, faults).
//!
//! The determinism rule (DESIGN.md): the VMM changes anything a guest can observe only at
//! guest-initiated exits, in an order that depends only on the seed and on what the guests did.

pub mod backend;
pub mod boot;
pub mod clock;
pub mod cpu_model;
pub mod devices;
pub mod doctor;
pub mod layout;
pub mod machine;
pub mod memory;
pub mod persist;
pub mod seed;
pub mod snapshot;
pub mod trace;
pub mod vcpu;
pub mod world;
