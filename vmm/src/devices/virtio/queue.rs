//! The device side of a split virtqueue, on top of rust-vmm's `virtio-queue`.
//!
//! Everything a guest puts in a queue is hostile input. `virtio-queue` bounds the walk
//! (a chain visits at most queue-size descriptors, so loops end; an indirect table may
//! not nest; a chain's total length is capped at 4 GiB; the available index may not run
//! more than queue-size ahead), and its `Reader`/`Writer` check every buffer against
//! guest RAM before any byte moves. Here we add what it leaves to the device: a head
//! index outside the table, rings outside guest RAM, and a typed error for each.

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueOwnedT, QueueState, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::device::VirtioError;

/// One request popped from a queue: the device-readable bytes, the device-writable
/// bytes, and the head index to return on the used ring.
pub struct Request<'a> {
    pub head: u16,
    pub reader: Reader<'a>,
    pub writer: Writer<'a>,
}

/// Pops the next available chain of `queue`, or `None` when the driver has posted
/// nothing new (or the queue is not ready).
pub fn next_request<'a>(
    queue: &mut Queue,
    mem: &'a GuestMemoryMmap,
) -> Result<Option<Request<'a>>, VirtioError> {
    if !queue.ready() {
        return Ok(None);
    }
    if !queue.is_valid(mem) {
        return Err(VirtioError::QueueOutsideRam);
    }
    let size = queue.size();
    let chain = {
        let mut iter = queue.iter(mem).map_err(VirtioError::Queue)?;
        match iter.next() {
            Some(chain) => chain,
            None => return Ok(None),
        }
    };
    let head = chain.head_index();
    if head >= size {
        return Err(VirtioError::HeadIndex { head, size });
    }
    let reader = chain.clone().reader(mem).map_err(VirtioError::Chain)?;
    let writer = chain.writer(mem).map_err(VirtioError::Chain)?;
    Ok(Some(Request {
        head,
        reader,
        writer,
    }))
}

/// Puts `head` on the used ring with `len` bytes written.
pub fn complete(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    head: u16,
    len: u32,
) -> Result<(), VirtioError> {
    queue.add_used(mem, head, len).map_err(VirtioError::Queue)
}

/// Gives back the chain popped last, unused (e.g. an RX buffer too small for a frame).
pub fn unpop(queue: &mut Queue) {
    queue.set_next_avail(queue.next_avail().wrapping_sub(1));
}

/// A queue's state for snapshots: `virtio-queue`'s `QueueState`, with serde.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    pub max_size: u16,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx_enabled: bool,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
}

impl From<QueueState> for QueueSnapshot {
    fn from(s: QueueState) -> Self {
        QueueSnapshot {
            max_size: s.max_size,
            next_avail: s.next_avail,
            next_used: s.next_used,
            event_idx_enabled: s.event_idx_enabled,
            size: s.size,
            ready: s.ready,
            desc_table: s.desc_table,
            avail_ring: s.avail_ring,
            used_ring: s.used_ring,
        }
    }
}

impl From<QueueSnapshot> for QueueState {
    fn from(s: QueueSnapshot) -> Self {
        QueueState {
            max_size: s.max_size,
            next_avail: s.next_avail,
            next_used: s.next_used,
            event_idx_enabled: s.event_idx_enabled,
            size: s.size,
            ready: s.ready,
            desc_table: s.desc_table,
            avail_ring: s.avail_ring,
            used_ring: s.used_ring,
        }
    }
}

impl QueueSnapshot {
    pub fn of(queue: &Queue) -> Self {
        queue.state().into()
    }

    /// Rebuilds the queue; a snapshot is untrusted input too, so every field is checked.
    pub fn restore(&self) -> Result<Queue, virtio_queue::Error> {
        Queue::try_from(QueueState::from(*self))
    }
}
