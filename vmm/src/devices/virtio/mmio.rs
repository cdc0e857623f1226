//! The virtio-mmio transport, version 2 (virtio 1.x "modern" only): the register file
//! at the start of each device's 4 KiB window, device config space from 0x100.
//!
//! Registers below 0x100 are 32-bit; other widths and unaligned offsets read as zero
//! and are ignored on write. Queue registers are only writable while the selected queue
//! is not ready. Status bits can only be added (the driver clears them by writing 0,
//! a reset). FEATURES_OK sticks only if the driver accepted a subset of what we offer
//! including VIRTIO_F_VERSION_1. A queue or request the device cannot make sense of
//! marks it broken: DEVICE_NEEDS_RESET plus a config-change interrupt, and no more
//! processing until the driver resets it.

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::*;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::device::{RestoreError, VirtioDevice, VirtioError};
use super::queue::QueueSnapshot;
use crate::persist::Persist;

pub const MAGIC: u32 = 0x7472_6976; // "virt"
pub const VERSION: u32 = 2;
/// "DTVM", little-endian.
pub const VENDOR_ID: u32 = 0x4d56_5444;
/// Size of one device's MMIO window.
pub const WINDOW_SIZE: u64 = 0x1000;

const CONFIG_OFFSET: u64 = VIRTIO_MMIO_CONFIG as u64;
const DRIVER_STATUS_BITS: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE
    | VIRTIO_CONFIG_S_DRIVER
    | VIRTIO_CONFIG_S_FEATURES_OK
    | VIRTIO_CONFIG_S_DRIVER_OK
    | VIRTIO_CONFIG_S_FAILED;

/// One virtio device behind its MMIO register file.
pub struct VirtioMmioDevice<D> {
    device: D,
    queues: Vec<Queue>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    interrupt_status: u32,
    status: u32,
    config_generation: u32,
    /// Why the device stopped, while DEVICE_NEEDS_RESET is set.
    broken: Option<String>,
}

/// The transport's snapshot form (the device's own state is saved beside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioState {
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub interrupt_status: u32,
    pub status: u32,
    pub config_generation: u32,
    pub queues: Vec<QueueSnapshot>,
    pub broken: Option<String>,
}

fn new_queues(max_sizes: &[u16]) -> Vec<Queue> {
    // Devices declare power-of-two sizes; a bad one yields a queue of 1 instead of a panic.
    max_sizes
        .iter()
        .map(|&m| Queue::new(m).or_else(|_| Queue::new(1)))
        .filter_map(Result::ok)
        .collect()
}

impl<D: VirtioDevice> VirtioMmioDevice<D> {
    pub fn new(device: D) -> Self {
        let queues = new_queues(device.queue_max_sizes());
        VirtioMmioDevice {
            device,
            queues,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            interrupt_status: 0,
            status: 0,
            config_generation: 0,
            broken: None,
        }
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// What we offer: the device's features plus VIRTIO_F_VERSION_1 (modern only).
    pub fn offered_features(&self) -> u64 {
        self.device.features() | (1 << VIRTIO_F_VERSION_1)
    }

    pub fn status(&self) -> u32 {
        self.status
    }

    /// Why the device needs a reset, if it does.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// The interrupt line: high while any InterruptStatus bit is set (level semantics;
    /// an edge-programmed IOAPIC pin sees the rising edge).
    pub fn irq_level(&self) -> bool {
        self.interrupt_status != 0
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_OFFSET {
            self.device.read_config(offset - CONFIG_OFFSET, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0);
            return;
        }
        let value = match offset as u32 {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            VIRTIO_MMIO_VERSION => VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_id(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size().into()),
            VIRTIO_MMIO_QUEUE_READY => self.selected_queue().is_some_and(|q| q.ready()).into(),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt_status,
            VIRTIO_MMIO_STATUS => self.status,
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            // No shared-memory regions: their length reads as -1.
            VIRTIO_MMIO_SHM_LEN_LOW | VIRTIO_MMIO_SHM_LEN_HIGH => u32::MAX,
            _ => 0,
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// A register write. Returns whether the interrupt line changed.
    pub fn write(&mut self, mem: &GuestMemoryMmap, offset: u64, data: &[u8]) -> bool {
        let before = self.irq_level();
        if offset >= CONFIG_OFFSET {
            self.device.write_config(offset - CONFIG_OFFSET, data);
        } else if let (Ok(bytes), 0) = (<[u8; 4]>::try_from(data), offset % 4) {
            self.write_register(mem, offset as u32, u32::from_le_bytes(bytes));
        }
        before != self.irq_level()
    }

    fn write_register(&mut self, mem: &GuestMemoryMmap, reg: u32, value: u32) {
        let queue_writable = self.selected_queue().is_some_and(|q| !q.ready())
            && self.status & VIRTIO_CONFIG_S_DRIVER_OK == 0;
        match reg {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES => self.write_driver_features(value),
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            VIRTIO_MMIO_QUEUE_NUM if queue_writable => {
                if let (Some(q), Ok(size)) = (self.selected_queue(), u16::try_from(value)) {
                    // virtio-queue keeps the old size if this one is invalid.
                    q.set_size(size);
                }
            }
            VIRTIO_MMIO_QUEUE_READY => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value & 1 == 1);
                }
            }
            VIRTIO_MMIO_QUEUE_DESC_LOW..=VIRTIO_MMIO_QUEUE_USED_HIGH if queue_writable => {
                self.write_queue_address(reg, value)
            }
            VIRTIO_MMIO_QUEUE_NOTIFY => self.notify(mem, value),
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt_status &= !value,
            VIRTIO_MMIO_STATUS => self.write_status(mem, value),
            _ => {}
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        let negotiating = self.status & VIRTIO_CONFIG_S_DRIVER != 0
            && self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0;
        if !negotiating {
            return;
        }
        let v = u64::from(value);
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xFFFF_FFFF) | v,
            1 => self.driver_features = (self.driver_features & 0xFFFF_FFFF) | (v << 32),
            _ => {}
        }
    }

    fn write_queue_address(&mut self, reg: u32, value: u32) {
        let Some(q) = self.selected_queue() else {
            return;
        };
        // virtio-queue ignores misaligned addresses.
        match reg {
            VIRTIO_MMIO_QUEUE_DESC_LOW => q.set_desc_table_address(Some(value), None),
            VIRTIO_MMIO_QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(value)),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => q.set_avail_ring_address(Some(value), None),
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => q.set_avail_ring_address(None, Some(value)),
            VIRTIO_MMIO_QUEUE_USED_LOW => q.set_used_ring_address(Some(value), None),
            VIRTIO_MMIO_QUEUE_USED_HIGH => q.set_used_ring_address(None, Some(value)),
            _ => {}
        }
    }

    fn write_status(&mut self, mem: &GuestMemoryMmap, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut new = value & DRIVER_STATUS_BITS;
        let old = self.status & DRIVER_STATUS_BITS;
        if new & old != old {
            return; // Clearing bits other than by a reset is not allowed.
        }
        let added = new & !old;
        if added & VIRTIO_CONFIG_S_FEATURES_OK != 0 && !self.features_acceptable() {
            new &= !VIRTIO_CONFIG_S_FEATURES_OK;
        }
        if new & VIRTIO_CONFIG_S_DRIVER_OK != 0 && new & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
            new &= !VIRTIO_CONFIG_S_DRIVER_OK;
        }
        self.status = new | (self.status & VIRTIO_CONFIG_S_NEEDS_RESET);
        if added & VIRTIO_CONFIG_S_DRIVER_OK != 0 && new & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            // Deliver anything the host queued before the driver was ready.
            self.poll(mem);
        }
    }

    fn features_acceptable(&self) -> bool {
        let offered = self.offered_features();
        self.driver_features & !offered == 0
            && self.driver_features & (1 << VIRTIO_F_VERSION_1) != 0
    }

    fn active(&self) -> bool {
        self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 && self.broken.is_none()
    }

    fn notify(&mut self, mem: &GuestMemoryMmap, index: u32) {
        let index = index as usize;
        if !self.active() || index >= self.queues.len() {
            return;
        }
        let result = self.device.process_queue(mem, &mut self.queues, index);
        self.settle(result);
    }

    /// Host-side delivery at an exit (network frames, console input). Returns whether
    /// the interrupt line changed.
    pub fn poll(&mut self, mem: &GuestMemoryMmap) -> bool {
        let before = self.irq_level();
        if self.active() {
            let result = self.device.poll(mem, &mut self.queues);
            self.settle(result);
        }
        before != self.irq_level()
    }

    fn settle(&mut self, result: Result<bool, VirtioError>) {
        match result {
            Ok(true) => self.interrupt_status |= VIRTIO_MMIO_INT_VRING,
            Ok(false) => {}
            Err(e) => self.mark_broken(e),
        }
    }

    fn mark_broken(&mut self, error: VirtioError) {
        tracing::debug!(device = self.device.device_id(), %error, "virtio device needs reset");
        self.broken = Some(error.to_string());
        self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
        if self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            self.interrupt_status |= VIRTIO_MMIO_INT_CONFIG;
        }
    }

    /// Device reset (status 0): queues, features and interrupts back to power-on.
    /// Host-side data (disk contents, queued input) is the device's to keep or drop.
    pub fn reset(&mut self) {
        self.device.reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.interrupt_status = 0;
        self.status = 0;
        self.broken = None;
    }
}

/// The transport's registers and queues; the device behind it is restored first and
/// handed in.
impl<D: VirtioDevice> Persist for VirtioMmioDevice<D> {
    type State = MmioState;
    type Resources<'a> = D;
    type Error = RestoreError;

    fn state(&self) -> MmioState {
        MmioState {
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            interrupt_status: self.interrupt_status,
            status: self.status,
            config_generation: self.config_generation,
            queues: self.queues.iter().map(QueueSnapshot::of).collect(),
            broken: self.broken.clone(),
        }
    }

    /// Rebuilds the transport around `device` (already restored) from `state`.
    fn restore(device: D, state: &MmioState) -> Result<Self, RestoreError> {
        let max_sizes = device.queue_max_sizes();
        if state.queues.len() != max_sizes.len()
            || state
                .queues
                .iter()
                .zip(max_sizes)
                .any(|(q, m)| q.max_size != *m)
        {
            return Err(RestoreError::QueueLayout);
        }
        let queues = state
            .queues
            .iter()
            .map(QueueSnapshot::restore)
            .collect::<Result<_, _>>()
            .map_err(RestoreError::Queue)?;
        Ok(VirtioMmioDevice {
            device,
            queues,
            device_features_sel: state.device_features_sel,
            driver_features_sel: state.driver_features_sel,
            driver_features: state.driver_features,
            queue_sel: state.queue_sel,
            interrupt_status: state.interrupt_status,
            status: state.status,
            config_generation: state.config_generation,
            broken: state.broken.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
