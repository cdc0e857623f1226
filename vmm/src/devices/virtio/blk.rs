//! virtio-blk (ID 2): a read-only disk image (a service rootfs) or a writable disk
//! whose writes stay in memory until the guest flushes.
//!
//! The base image is a host file read with `pread` at request time and never written
//! (detvm's images are content-addressed and immutable, so reads are deterministic).
//! A writable disk layers two sector maps over it: `pending` (written, not flushed)
//! and `flushed`. A FLUSH moves pending sectors to flushed; [`Block::crash`] drops the
//! pending ones, as a power cut drops a disk's volatile cache. Both maps live in host
//! memory and in snapshots; nothing is ever written back to the host file.
//!
//! Bad requests get a status byte (IOERR for out-of-range, misaligned, oversized or
//! read-only writes, UNSUPP for other types); a chain without a writable status byte
//! cannot be answered and marks the device broken.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::device::{RestoreError, VirtioDevice, VirtioError, VirtioSetupError};
use super::queue::{complete, next_request, Request};
use crate::persist::Persist;

pub const SECTOR: u64 = 512;
const QUEUE_SIZE: u16 = 128;
/// Advertised limits: at most SEG_MAX segments of SIZE_MAX bytes, so Linux never
/// builds a request larger than [`MAX_REQUEST_BYTES`].
const SEG_MAX: u32 = 64;
const SIZE_MAX: u32 = 64 * 1024;
pub const MAX_REQUEST_BYTES: usize = (SEG_MAX * SIZE_MAX) as usize;
/// Disk data moves through a host buffer of this size.
const CHUNK: usize = 64 * 1024;

/// Where a disk's initial contents come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskBacking {
    /// A host file (its length, rounded down to whole sectors, is the capacity).
    File(PathBuf),
    /// Zeroes, `bytes` long (rounded down to whole sectors).
    Zeroed { bytes: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockConfig {
    pub backing: DiskBacking,
    pub read_only: bool,
    /// What VIRTIO_BLK_T_GET_ID returns (`/sys/block/vdX/serial`), at most 20 bytes.
    pub id: String,
}

pub struct Block {
    image: Option<File>,
    capacity: u64,
    read_only: bool,
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
    pending: BTreeMap<u64, Box<[u8]>>,
    flushed: BTreeMap<u64, Box<[u8]>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockState {
    pub capacity: u64,
    pub read_only: bool,
    /// (sector, 512 bytes) written but not flushed.
    pub pending: Vec<(u64, Vec<u8>)>,
    pub flushed: Vec<(u64, Vec<u8>)>,
}

/// A request's outcome: the status byte and the data bytes written to the guest.
struct Outcome {
    status: u32,
    written: usize,
}

impl Outcome {
    fn status(status: u32) -> Self {
        Outcome { status, written: 0 }
    }
}

impl Block {
    pub fn open(config: &BlockConfig) -> Result<Self, VirtioSetupError> {
        let (image, bytes) = match &config.backing {
            DiskBacking::File(path) => {
                let err = |source| VirtioSetupError::DiskImage {
                    path: path.clone(),
                    source,
                };
                let file = File::open(path).map_err(err)?;
                let len = file.metadata().map_err(err)?.len();
                (Some(file), len)
            }
            DiskBacking::Zeroed { bytes } => (None, *bytes),
        };
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        for (d, s) in id.iter_mut().zip(config.id.bytes()) {
            *d = s;
        }
        Ok(Block {
            image,
            capacity: bytes / SECTOR,
            read_only: config.read_only,
            id,
            pending: BTreeMap::new(),
            flushed: BTreeMap::new(),
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The VM died: writes not yet flushed are lost.
    pub fn crash(&mut self) {
        self.pending.clear();
    }

    /// Sectors written and not yet flushed.
    pub fn unflushed_sectors(&self) -> usize {
        self.pending.len()
    }

    /// Reads `buf.len() / 512` sectors from `sector` as the guest sees them.
    pub fn read_sectors(&self, sector: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let count = buf.len() as u64 / SECTOR;
        let offset = sector
            .checked_mul(SECTOR)
            .ok_or(std::io::ErrorKind::InvalidInput)?;
        match &self.image {
            Some(f) => f.read_exact_at(buf, offset)?,
            None => buf.fill(0),
        }
        for map in [&self.flushed, &self.pending] {
            for (s, data) in map.range(sector..sector.saturating_add(count)) {
                let at = ((s - sector) * SECTOR) as usize;
                if let Some(dst) = buf.get_mut(at..at + SECTOR as usize) {
                    dst.copy_from_slice(data);
                }
            }
        }
        Ok(())
    }

    fn config_bytes(&self) -> [u8; 24] {
        let mut c = [0u8; 24];
        c[0..8].copy_from_slice(&self.capacity.to_le_bytes());
        c[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[20..24].copy_from_slice(&(SECTOR as u32).to_le_bytes());
        c
    }

    /// Checks that `len` bytes at `sector` are a whole, in-range, bounded transfer.
    fn check_range(&self, sector: u64, len: usize) -> bool {
        let sectors = len as u64 / SECTOR;
        (len as u64).is_multiple_of(SECTOR)
            && len <= MAX_REQUEST_BYTES
            && sector
                .checked_add(sectors)
                .is_some_and(|end| end <= self.capacity)
    }

    fn handle(&mut self, req: &mut Request) -> Outcome {
        let mut header = [0u8; 16];
        if req.reader.read_exact(&mut header).is_err() {
            return Outcome::status(VIRTIO_BLK_S_IOERR);
        }
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut sector_bytes = [0u8; 8];
        sector_bytes.copy_from_slice(&header[8..16]);
        let sector = u64::from_le_bytes(sector_bytes);
        match kind {
            VIRTIO_BLK_T_IN => self.read_into(req, sector),
            VIRTIO_BLK_T_OUT => self.write_from(req, sector),
            VIRTIO_BLK_T_FLUSH => {
                let pending = std::mem::take(&mut self.pending);
                self.flushed.extend(pending);
                Outcome::status(VIRTIO_BLK_S_OK)
            }
            VIRTIO_BLK_T_GET_ID => {
                let n = req.writer.available_bytes().min(self.id.len());
                match req.writer.write_all(&self.id[..n]) {
                    Ok(()) => Outcome {
                        status: VIRTIO_BLK_S_OK,
                        written: n,
                    },
                    Err(_) => Outcome::status(VIRTIO_BLK_S_IOERR),
                }
            }
            _ => Outcome::status(VIRTIO_BLK_S_UNSUPP),
        }
    }

    fn read_into(&mut self, req: &mut Request, sector: u64) -> Outcome {
        let len = req.writer.available_bytes();
        if !self.check_range(sector, len) {
            return Outcome::status(VIRTIO_BLK_S_IOERR);
        }
        let mut buf = vec![0u8; len.min(CHUNK)];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            let at = sector + (done as u64) / SECTOR;
            let ok = self.read_sectors(at, &mut buf[..n]).is_ok()
                && req.writer.write_all(&buf[..n]).is_ok();
            if !ok {
                return Outcome {
                    status: VIRTIO_BLK_S_IOERR,
                    written: req.writer.bytes_written(),
                };
            }
            done += n;
        }
        Outcome {
            status: VIRTIO_BLK_S_OK,
            written: len,
        }
    }

    fn write_from(&mut self, req: &mut Request, sector: u64) -> Outcome {
        let len = req.reader.available_bytes();
        if self.read_only || !self.check_range(sector, len) {
            return Outcome::status(VIRTIO_BLK_S_IOERR);
        }
        // Read everything first, so a failing read leaves the disk untouched.
        let mut data = Vec::with_capacity(len);
        if req.reader.read_to_end(&mut data).is_err() || data.len() != len {
            return Outcome::status(VIRTIO_BLK_S_IOERR);
        }
        for (i, chunk) in data.chunks_exact(SECTOR as usize).enumerate() {
            self.pending.insert(sector + i as u64, chunk.into());
        }
        Outcome::status(VIRTIO_BLK_S_OK)
    }
}

/// The disk's own state is its writes on top of the image; the image file is the host
/// resource, opened again from the configuration.
impl Persist for Block {
    type State = BlockState;
    type Resources<'a> = &'a BlockConfig;
    type Error = RestoreError;

    fn state(&self) -> BlockState {
        let dump = |m: &BTreeMap<u64, Box<[u8]>>| m.iter().map(|(s, d)| (*s, d.to_vec())).collect();
        BlockState {
            capacity: self.capacity,
            read_only: self.read_only,
            pending: dump(&self.pending),
            flushed: dump(&self.flushed),
        }
    }

    /// Opens the disk image of `config` again (the one the snapshotted disk was opened
    /// from) and puts back the writes of `state` on top of it.
    fn restore(config: &BlockConfig, state: &BlockState) -> Result<Self, RestoreError> {
        let mut disk = Block::open(config)?;
        if state.capacity != disk.capacity || state.read_only != disk.read_only {
            return Err(RestoreError::Invalid(
                "disk size or mode differs from the snapshot",
            ));
        }
        let load = |v: &[(u64, Vec<u8>)]| -> Result<BTreeMap<u64, Box<[u8]>>, RestoreError> {
            v.iter()
                .map(|(s, d)| {
                    if *s < state.capacity && d.len() == SECTOR as usize {
                        Ok((*s, d.clone().into_boxed_slice()))
                    } else {
                        Err(RestoreError::Invalid(
                            "disk sector out of range or not 512 bytes",
                        ))
                    }
                })
                .collect()
        };
        disk.pending = load(&state.pending)?;
        disk.flushed = load(&state.flushed)?;
        Ok(disk)
    }
}

impl VirtioDevice for Block {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &'static [u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut f = (1 << VIRTIO_BLK_F_SIZE_MAX)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_BLK_SIZE);
        if self.read_only {
            f |= 1 << VIRTIO_BLK_F_RO;
        } else {
            f |= 1 << VIRTIO_BLK_F_FLUSH;
        }
        f
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config_bytes();
        for (i, d) in data.iter_mut().enumerate() {
            let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i));
            *d = at.and_then(|a| config.get(a)).copied().unwrap_or(0);
        }
    }

    fn process_queue(
        &mut self,
        mem: &GuestMemoryMmap,
        queues: &mut [Queue],
        index: usize,
    ) -> Result<bool, VirtioError> {
        let Some(queue) = queues.get_mut(index) else {
            return Ok(false);
        };
        let mut used = false;
        while let Some(mut req) = next_request(queue, mem)? {
            let avail = req.writer.available_bytes();
            if avail == 0 {
                return Err(VirtioError::Malformed(
                    "block request without a status byte",
                ));
            }
            let mut status = req
                .writer
                .split_at(avail - 1)
                .map_err(|_| VirtioError::Malformed("block request status split"))?;
            let outcome = self.handle(&mut req);
            status
                .write_all(&[outcome.status as u8])
                .map_err(|e| VirtioError::Memory(e.to_string()))?;
            let len = u32::try_from(outcome.written + 1).unwrap_or(u32::MAX);
            complete(queue, mem, req.head, len)?;
            used = true;
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests;
