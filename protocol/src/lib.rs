//! Wire protocol between the VMM and the guest agent (virtio-console). Filled in by the agent issue.
