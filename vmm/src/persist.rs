//! How a device is saved into a snapshot and restored from one (Firecracker's `Persist`):
//! its whole state as plain serde data, and a constructor that rebuilds the device from
//! that state plus what the state leaves out on purpose: host resources (an opened disk
//! image, an already restored device for a transport) and the configuration it was
//! built from. Every device, platform and virtio alike, implements it; each has a
//! save→restore round-trip test through [`round_trip`]'s JSON.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub trait Persist: Sized {
    /// Everything the device must keep, as plain data (no file, no guest memory).
    type State: Serialize + DeserializeOwned;
    /// What a restore is given besides the state: host resources and configuration.
    type Resources<'a>;
    /// Why a state cannot be restored; `std::convert::Infallible` where every state
    /// restores.
    type Error;

    /// The device as it is now.
    fn state(&self) -> Self::State;

    /// The device again, as it was when `state` was taken.
    fn restore(resources: Self::Resources<'_>, state: &Self::State) -> Result<Self, Self::Error>;
}

/// Saves `device`, passes its state through JSON as a snapshot file does, and restores
/// it with `resources`.
#[cfg(test)]
pub(crate) fn round_trip<T: Persist>(
    device: &T,
    resources: T::Resources<'_>,
) -> Result<T, T::Error> {
    let text = serde_json::to_string(&device.state()).expect("state serializes");
    let state: T::State = serde_json::from_str(&text).expect("state deserializes");
    T::restore(resources, &state)
}
