//! What a virtio device is to its transport ([`VirtioDevice`]) and the errors of the
//! devices: a guest mistake that stops one, a configuration that cannot be set up, a
//! snapshot that cannot be restored. Below the devices and the collection that uses them.

use std::path::PathBuf;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// What a device does; the transport does the rest.
pub trait VirtioDevice {
    /// The virtio device ID (1 net, 2 block, 3 console, 4 entropy).
    fn device_id(&self) -> u32;
    /// Maximum size of each queue (powers of two).
    fn queue_max_sizes(&self) -> &'static [u16];
    /// Device feature bits (VIRTIO_F_VERSION_1 is added by the transport).
    fn features(&self) -> u64;
    /// Reads device config space; bytes past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Config space writes; our devices' config is read-only.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver notified queue `index`. Returns whether buffers were used (interrupt).
    fn process_queue(
        &mut self,
        mem: &GuestMemoryMmap,
        queues: &mut [Queue],
        index: usize,
    ) -> Result<bool, VirtioError>;
    /// Host-side input to deliver at an exit. Returns whether buffers were used.
    fn poll(&mut self, _mem: &GuestMemoryMmap, _queues: &mut [Queue]) -> Result<bool, VirtioError> {
        Ok(false)
    }
    /// The driver reset the device.
    fn reset(&mut self) {}
}

/// A guest mistake that stops the device (DEVICE_NEEDS_RESET). Mistakes the device
/// can answer (a bad block request) get an error status instead.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    #[error("a queue's rings are outside guest RAM")]
    QueueOutsideRam,
    #[error("virtqueue: {0}")]
    Queue(virtio_queue::Error),
    #[error("descriptor chain: {0}")]
    Chain(virtio_queue::Error),
    #[error("head index {head} is outside a queue of {size}")]
    HeadIndex { head: u16, size: u16 },
    #[error("guest memory: {0}")]
    Memory(String),
    #[error("malformed request: {0}")]
    Malformed(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum VirtioSetupError {
    #[error("more than {max} virtio devices: no GSI left for {what}")]
    TooManyDevices { max: usize, what: &'static str },
    #[error("cannot open disk image {path}: {source} (check the path and its permissions)")]
    DiskImage {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the snapshot's queues do not match the device")]
    QueueLayout,
    #[error("the snapshot holds an invalid queue: {0}")]
    Queue(virtio_queue::Error),
    #[error("the snapshot has {saved} virtio devices, the configuration {configured}")]
    DeviceCount { saved: usize, configured: usize },
    #[error("snapshot device {index} is a {saved}, the configuration says {configured}")]
    DeviceKind {
        index: usize,
        saved: &'static str,
        configured: &'static str,
    },
    #[error("snapshot device state is invalid: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Setup(#[from] VirtioSetupError),
}
