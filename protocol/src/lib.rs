//! The wire protocol between the VMM and the guest agent (virtio-console): framing, the
//! typed, versioned messages inside frames, the service spec and its resolution from an
//! image config, the agent's kernel command-line parameters, and the host's channel.

pub mod base64;
pub mod boot_params;
pub mod channel;
pub mod frame;
pub mod message;
pub mod spec;
