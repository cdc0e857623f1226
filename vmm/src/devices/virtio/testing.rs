//! A mock guest driver for device tests: brings a device up through its MMIO
//! registers (as Linux's virtio_mmio does) over `virtio-queue`'s `MockSplitQueue`
//! ring layout, then posts descriptor chains and reads the used rings.

use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::VRING_DESC_F_NEXT;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::device::VirtioDevice;
use super::mmio::VirtioMmioDevice;

pub const WRITE: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16;
pub const MEM_SIZE: u64 = 4 << 20;
pub const QUEUE_SIZE: u16 = 16;
const BUFFERS: u64 = 0x10_0000;

pub fn memory() -> &'static GuestMemoryMmap {
    // Leaked so the mock queues can borrow it for the driver's whole life (tests only).
    Box::leak(Box::new(
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap(),
    ))
}

pub struct Driver<D> {
    pub mem: &'static GuestMemoryMmap,
    pub dev: VirtioMmioDevice<D>,
    pub queues: Vec<MockSplitQueue<'static, GuestMemoryMmap>>,
    next_desc: Vec<u16>,
    seen_used: Vec<u16>,
    next_buffer: u64,
}

impl<D: VirtioDevice> Driver<D> {
    /// A driver that negotiated every offered feature and set up every queue at size
    /// [`QUEUE_SIZE`].
    pub fn new(device: D) -> Self {
        let mut d = Self::raw(device);
        d.handshake();
        d
    }

    /// The device behind its transport, untouched by the driver.
    pub fn raw(device: D) -> Self {
        let mem = memory();
        let n = device.queue_max_sizes().len();
        let queues = (0..n)
            .map(|i| {
                MockSplitQueue::create(mem, GuestAddress(0x1_0000 * (i as u64 + 1)), QUEUE_SIZE)
            })
            .collect();
        Driver {
            mem,
            dev: VirtioMmioDevice::new(device),
            queues,
            next_desc: vec![0; n],
            seen_used: vec![0; n],
            next_buffer: BUFFERS,
        }
    }

    pub fn reg(&mut self, offset: u32) -> u32 {
        let mut b = [0u8; 4];
        self.dev.read(u64::from(offset), &mut b);
        u32::from_le_bytes(b)
    }

    pub fn set_reg(&mut self, offset: u32, value: u32) -> bool {
        self.dev
            .write(self.mem, u64::from(offset), &value.to_le_bytes())
    }

    pub fn add_status(&mut self, bits: u32) {
        let s = self.reg(VIRTIO_MMIO_STATUS);
        self.set_reg(VIRTIO_MMIO_STATUS, s | bits);
    }

    pub fn handshake(&mut self) {
        self.set_reg(VIRTIO_MMIO_STATUS, 0);
        self.add_status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        for sel in 0..2 {
            self.set_reg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
            let f = self.reg(VIRTIO_MMIO_DEVICE_FEATURES);
            self.set_reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
            self.set_reg(VIRTIO_MMIO_DRIVER_FEATURES, f);
        }
        self.add_status(VIRTIO_CONFIG_S_FEATURES_OK);
        assert_ne!(
            self.reg(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK,
            0
        );
        for i in 0..self.queues.len() {
            self.setup_queue(i);
        }
        self.add_status(VIRTIO_CONFIG_S_DRIVER_OK);
    }

    pub fn setup_queue(&mut self, i: usize) {
        let q = &self.queues[i];
        let addrs = [
            (VIRTIO_MMIO_QUEUE_DESC_LOW, q.desc_table_addr().0),
            (VIRTIO_MMIO_QUEUE_AVAIL_LOW, q.avail_addr().0),
            (VIRTIO_MMIO_QUEUE_USED_LOW, q.used_addr().0),
        ];
        self.set_reg(VIRTIO_MMIO_QUEUE_SEL, i as u32);
        self.set_reg(VIRTIO_MMIO_QUEUE_NUM, u32::from(QUEUE_SIZE));
        for (reg, addr) in addrs {
            self.set_reg(reg, addr as u32);
            self.set_reg(reg + 4, (addr >> 32) as u32);
        }
        self.set_reg(VIRTIO_MMIO_QUEUE_READY, 1);
    }

    /// A fresh buffer of `len` bytes in guest RAM, zeroed.
    pub fn buffer(&mut self, len: usize) -> u64 {
        let addr = self.next_buffer;
        self.next_buffer += (len as u64).next_multiple_of(64).max(64);
        self.write(addr, &vec![0; len]);
        addr
    }

    pub fn write(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }

    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    /// Writes descriptor `index` of queue `q` as is (for hostile tables).
    pub fn set_desc(&self, q: usize, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = RawDescriptor::from(Descriptor::new(addr, len, flags, next));
        self.queues[q].desc_table().store(index, d).unwrap();
    }

    /// Puts `head` on the available ring of queue `q`.
    pub fn post(&self, q: usize, head: u16) {
        let avail = self.queues[q].avail();
        let idx = avail.idx().load();
        avail
            .ring()
            .ref_at(usize::from(idx % QUEUE_SIZE))
            .unwrap()
            .store(head);
        avail.idx().store(idx.wrapping_add(1));
    }

    /// Posts one chain of (addr, len, flags) buffers; returns its head index.
    pub fn submit(&mut self, q: usize, bufs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc[q];
        let mut index = head;
        for (i, &(addr, len, flags)) in bufs.iter().enumerate() {
            let next = (index + 1) % QUEUE_SIZE;
            let more = if i + 1 < bufs.len() {
                VRING_DESC_F_NEXT as u16
            } else {
                0
            };
            self.set_desc(q, index, addr, len, flags | more, next);
            index = next;
        }
        self.next_desc[q] = index;
        self.post(q, head);
        head
    }

    /// QueueNotify; returns the interrupt line afterwards.
    pub fn notify(&mut self, q: u32) -> bool {
        self.set_reg(VIRTIO_MMIO_QUEUE_NOTIFY, q);
        self.dev.irq_level()
    }

    pub fn poll(&mut self) -> bool {
        self.dev.poll(self.mem);
        self.dev.irq_level()
    }

    /// The next used element of queue `q` not seen yet: (head, len).
    pub fn pop_used(&mut self, q: usize) -> Option<(u32, u32)> {
        let used = self.queues[q].used();
        if used.idx().load() == self.seen_used[q] {
            return None;
        }
        let elem = used
            .ring()
            .ref_at(usize::from(self.seen_used[q] % QUEUE_SIZE))
            .ok()?
            .load();
        self.seen_used[q] = self.seen_used[q].wrapping_add(1);
        Some((elem.id(), elem.len()))
    }

    /// Reads and acknowledges InterruptStatus, as the guest's handler does.
    pub fn ack(&mut self) -> u32 {
        let s = self.reg(VIRTIO_MMIO_INTERRUPT_STATUS);
        self.set_reg(VIRTIO_MMIO_INTERRUPT_ACK, s);
        s
    }

    pub fn broken(&self) -> bool {
        self.dev.broken().is_some() && self.dev.status() & VIRTIO_CONFIG_S_NEEDS_RESET != 0
    }

    pub fn device(&mut self) -> &mut D {
        self.dev.device_mut()
    }
}
