//! The wire protocol between the VMM and the guest agent (virtio-console): framing,
//! the typed, versioned messages inside frames, and the `detvm.run=` parameter.

pub mod frame;
pub mod message;
pub mod run_arg;
