//! CPU backends behind [`crate::vcpu::Vcpu`].

#[cfg(feature = "emu")]
pub mod emu;
