//! virtio-net (ID 1): frames between the guest and a host-side sink and source,
//! moved only at guest exits. Queue 0 (receiveq) takes frames from
//! [`Net::push_rx_frame`] into buffers the driver posted, at its notify and at every
//! exit; queue 1 (transmitq) hands frames to [`Net::take_tx_frames`] at its notify.
//!
//! Only VIRTIO_NET_F_MAC is offered: no checksum or segmentation offload, no
//! mergeable buffers, so every frame is one chain behind the 12-byte modern header.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::device::{VirtioDevice, VirtioError};
use super::queue::{complete, next_request, unpop};
use crate::persist::Persist;

const RX: usize = 0;
const TX: usize = 1;
/// `struct virtio_net_hdr_v1` (with `num_buffers`), always present in virtio 1.x.
pub const HDR_LEN: usize = 12;
/// Largest frame carried either way (a 64 KiB jumbo frame plus its Ethernet header).
pub const MAX_FRAME: usize = 65_535 + 14;
/// Frames waiting for RX buffers beyond this are dropped (and counted).
pub const MAX_RX_QUEUE: usize = 1024;
/// A buffer smaller than header plus an Ethernet header can hold no frame at all.
const MIN_RX_BUFFER: usize = HDR_LEN + 14;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetStats {
    /// Host frames dropped: too large, RX backlog full, or no buffer large enough.
    pub rx_dropped: u64,
    /// Guest chains that were not a frame: shorter than the header or too large.
    pub tx_dropped: u64,
}

pub struct Net {
    mac: [u8; 6],
    tx: Vec<Vec<u8>>,
    rx: VecDeque<Vec<u8>>,
    stats: NetStats,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetState {
    pub mac: [u8; 6],
    pub tx: Vec<Vec<u8>>,
    pub rx: Vec<Vec<u8>>,
    pub stats: NetStats,
}

impl Net {
    pub fn new(mac: [u8; 6]) -> Self {
        Net {
            mac,
            tx: Vec::new(),
            rx: VecDeque::new(),
            stats: NetStats::default(),
        }
    }

    /// Frames the guest sent since the last call, header stripped, in order.
    pub fn take_tx_frames(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.tx)
    }

    /// Queues a frame for the guest; it is delivered at an exit once a buffer is posted.
    pub fn push_rx_frame(&mut self, frame: Vec<u8>) {
        if frame.len() > MAX_FRAME || self.rx.len() >= MAX_RX_QUEUE {
            self.stats.rx_dropped += 1;
        } else {
            self.rx.push_back(frame);
        }
    }

    pub fn pending_rx(&self) -> usize {
        self.rx.len()
    }

    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    fn deliver(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> Result<bool, VirtioError> {
        let mut used = false;
        while let Some(frame) = self.rx.front() {
            let Some(mut req) = next_request(queue, mem)? else {
                break;
            };
            let room = req.writer.available_bytes();
            if room < MIN_RX_BUFFER {
                // Useless buffer (e.g. device-readable only): hand it back empty.
                complete(queue, mem, req.head, 0)?;
                used = true;
                continue;
            }
            if room < HDR_LEN + frame.len() {
                // The frame cannot fit; keep the buffer for the next frame.
                unpop(queue);
                self.rx.pop_front();
                self.stats.rx_dropped += 1;
                continue;
            }
            let mut hdr = [0u8; HDR_LEN];
            hdr[10] = 1; // num_buffers
            req.writer
                .write_all(&hdr)
                .and_then(|()| req.writer.write_all(frame))
                .map_err(|e| VirtioError::Memory(e.to_string()))?;
            let len = (HDR_LEN + frame.len()) as u32;
            self.rx.pop_front();
            complete(queue, mem, req.head, len)?;
            used = true;
        }
        Ok(used)
    }

    fn transmit(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> Result<bool, VirtioError> {
        let mut used = false;
        while let Some(req) = next_request(queue, mem)? {
            let mut bytes = Vec::new();
            req.reader
                .take((HDR_LEN + MAX_FRAME + 1) as u64)
                .read_to_end(&mut bytes)
                .map_err(|e| VirtioError::Memory(e.to_string()))?;
            match bytes.get(HDR_LEN..) {
                Some(frame) if frame.len() <= MAX_FRAME => self.tx.push(frame.to_vec()),
                _ => self.stats.tx_dropped += 1,
            }
            complete(queue, mem, req.head, 0)?;
            used = true;
        }
        Ok(used)
    }
}

impl Persist for Net {
    type State = NetState;
    type Resources<'a> = ();
    type Error = Infallible;

    fn state(&self) -> NetState {
        NetState {
            mac: self.mac,
            tx: self.tx.clone(),
            rx: self.rx.iter().cloned().collect(),
            stats: self.stats.clone(),
        }
    }

    fn restore((): (), state: &NetState) -> Result<Self, Infallible> {
        Ok(Net {
            mac: state.mac,
            tx: state.tx.clone(),
            rx: state.rx.iter().cloned().collect(),
            stats: state.stats.clone(),
        })
    }
}

impl VirtioDevice for Net {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &'static [u16] {
        &[256, 256]
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_NET_F_MAC
    }

    /// `mac[6]`, then nothing we offer.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, d) in data.iter_mut().enumerate() {
            let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i));
            *d = at.and_then(|a| self.mac.get(a)).copied().unwrap_or(0);
        }
    }

    fn process_queue(
        &mut self,
        mem: &GuestMemoryMmap,
        queues: &mut [Queue],
        index: usize,
    ) -> Result<bool, VirtioError> {
        match (index, queues) {
            (RX, [rx, ..]) => self.deliver(mem, rx),
            (TX, [_, tx, ..]) => self.transmit(mem, tx),
            _ => Ok(false),
        }
    }

    fn poll(&mut self, mem: &GuestMemoryMmap, queues: &mut [Queue]) -> Result<bool, VirtioError> {
        match queues.get_mut(RX) {
            Some(rx) => self.deliver(mem, rx),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::{Driver, WRITE};
    use crate::persist::round_trip;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    #[test]
    fn config_space_holds_the_mac() {
        let mut d = Driver::new(Net::new(MAC));
        let mut mac = [0u8; 8];
        d.dev.read(0x100, &mut mac);
        assert_eq!(mac, [0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0]);
    }

    #[test]
    fn tx_frame_reaches_the_sink_without_the_header() {
        let mut d = Driver::new(Net::new(MAC));
        let (hdr, body) = (d.buffer(HDR_LEN), d.buffer(60));
        d.write(body, &[0xAB; 60]);
        d.submit(1, &[(hdr, HDR_LEN as u32, 0), (body, 60, 0)]);
        assert!(d.notify(1));
        assert_eq!(d.pop_used(1), Some((0, 0)));
        assert_eq!(d.device().take_tx_frames(), vec![vec![0xAB; 60]]);
        // A chain shorter than the header is not a frame.
        d.submit(1, &[(hdr, 4, 0)]);
        d.notify(1);
        assert!(d.device().take_tx_frames().is_empty());
        assert_eq!(d.device().stats().tx_dropped, 1);
    }

    #[test]
    fn rx_frame_waits_for_a_buffer_and_lands_in_it() {
        let mut d = Driver::new(Net::new(MAC));
        d.device().push_rx_frame(vec![7; 100]);
        assert!(!d.poll());
        let buf = d.buffer(1526);
        d.submit(0, &[(buf, 1526, WRITE)]);
        assert!(d.poll(), "delivered at the next exit");
        assert_eq!(d.pop_used(0), Some((0, 112)));
        let got = d.read(buf, 112);
        assert_eq!(&got[..HDR_LEN], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(&got[HDR_LEN..], &[7; 100][..]);
        assert_eq!(d.device().pending_rx(), 0);
    }

    #[test]
    fn oversized_rx_frame_is_dropped_and_the_buffer_kept() {
        let mut d = Driver::new(Net::new(MAC));
        d.device().push_rx_frame(vec![1; 2000]);
        d.device().push_rx_frame(vec![2; 50]);
        d.device().push_rx_frame(vec![0; MAX_FRAME + 1]);
        let buf = d.buffer(1526);
        d.submit(0, &[(buf, 1526, WRITE)]);
        d.notify(0);
        assert_eq!(d.pop_used(0), Some((0, 62)));
        assert_eq!(d.read(buf, 62)[HDR_LEN..], [2; 50]);
        assert_eq!(d.device().stats().rx_dropped, 2);
    }

    #[test]
    fn readable_rx_buffer_is_returned_empty() {
        let mut d = Driver::new(Net::new(MAC));
        d.device().push_rx_frame(vec![3; 60]);
        let (ro, rw) = (d.buffer(1526), d.buffer(1526));
        d.submit(0, &[(ro, 1526, 0)]);
        d.submit(0, &[(rw, 1526, WRITE)]);
        d.notify(0);
        assert_eq!(d.pop_used(0), Some((0, 0)));
        assert_eq!(d.pop_used(0), Some((1, 72)));
    }

    #[test]
    fn rx_backlog_is_bounded() {
        let mut n = Net::new(MAC);
        for _ in 0..MAX_RX_QUEUE + 5 {
            n.push_rx_frame(vec![0; 60]);
        }
        assert_eq!(n.pending_rx(), MAX_RX_QUEUE);
        assert_eq!(n.stats().rx_dropped, 5);
    }

    #[test]
    fn state_round_trip() {
        let mut n = Net::new(MAC);
        n.push_rx_frame(vec![1, 2, 3]);
        n.tx.push(vec![4, 5]);
        let Ok(r) = round_trip(&n, ());
        assert_eq!(r.state(), n.state());
    }
}
