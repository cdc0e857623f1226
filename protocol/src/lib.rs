//! The wire protocol between the VMM and the guest agent (virtio-console).
//! Framing is here; the typed, versioned messages come with the guest agent.

pub mod frame;
