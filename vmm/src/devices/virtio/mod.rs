//! virtio-mmio devices: the transport ([`mmio`]), the devices (rng, console, blk,
//! net) and the collection one VM owns ([`VirtioDevices`]).
//!
//! Devices are described to the guest on the kernel command line
//! (`virtio_mmio.device=4K@0xd0000000:5`), one 4 KiB window each from
//! [`layout::VIRTIO_MMIO_START`], one GSI each from 5 upward (8 and 9 are the RTC and
//! the ACPI SCI). Every completion happens synchronously at a guest exit: inside the
//! QueueNotify write, or in [`VirtioDevices::poll`] which the VM loop calls at each
//! exit to hand over host-side input (network frames, console bytes). No host thread
//! ever touches guest memory (DESIGN.md, point 10). See docs/virtio.md.

pub mod blk;
pub mod console;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;
#[cfg(test)]
pub(crate) mod testing;
#[doc(hidden)]
pub mod torture;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use crate::layout;
pub use blk::{Block, BlockConfig};
pub use console::Console;
pub use mmio::{MmioState, VirtioMmioDevice};
pub use net::Net;
pub use rng::Rng;

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

/// A device in a VM's configuration (virtio-rng is always present, first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VirtioDeviceConfig {
    /// The agent channel: one console port (`/dev/hvc0` in the guest).
    Console,
    Block(BlockConfig),
    Net {
        mac: [u8; 6],
    },
}

/// Any of our devices (so one transport type serves them all).
pub enum AnyDevice {
    Rng(Rng),
    Console(Console),
    Block(Block),
    Net(Net),
}

macro_rules! each {
    ($dev:expr, $d:ident => $body:expr) => {
        match $dev {
            AnyDevice::Rng($d) => $body,
            AnyDevice::Console($d) => $body,
            AnyDevice::Block($d) => $body,
            AnyDevice::Net($d) => $body,
        }
    };
}

impl AnyDevice {
    pub fn kind(&self) -> &'static str {
        match self {
            AnyDevice::Rng(_) => "rng",
            AnyDevice::Console(_) => "console",
            AnyDevice::Block(_) => "block",
            AnyDevice::Net(_) => "net",
        }
    }

    pub fn state(&self) -> DeviceState {
        match self {
            AnyDevice::Rng(d) => DeviceState::Rng(d.state()),
            AnyDevice::Console(d) => DeviceState::Console(d.state()),
            AnyDevice::Block(d) => DeviceState::Block(d.state()),
            AnyDevice::Net(d) => DeviceState::Net(d.state()),
        }
    }
}

impl VirtioDevice for AnyDevice {
    fn device_id(&self) -> u32 {
        each!(self, d => d.device_id())
    }
    fn queue_max_sizes(&self) -> &'static [u16] {
        each!(self, d => d.queue_max_sizes())
    }
    fn features(&self) -> u64 {
        each!(self, d => d.features())
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        each!(self, d => d.read_config(offset, data))
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        each!(self, d => d.write_config(offset, data))
    }
    fn process_queue(
        &mut self,
        mem: &GuestMemoryMmap,
        queues: &mut [Queue],
        index: usize,
    ) -> Result<bool, VirtioError> {
        each!(self, d => d.process_queue(mem, queues, index))
    }
    fn poll(&mut self, mem: &GuestMemoryMmap, queues: &mut [Queue]) -> Result<bool, VirtioError> {
        each!(self, d => d.poll(mem, queues))
    }
    fn reset(&mut self) {
        each!(self, d => d.reset())
    }
}

macro_rules! any_from {
    ($($variant:ident),*) => {$(
        impl From<$variant> for AnyDevice {
            fn from(d: $variant) -> Self {
                AnyDevice::$variant(d)
            }
        }
    )*};
}
any_from!(Rng, Console, Block, Net);

/// A device's own snapshot state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceState {
    Rng(rng::RngState),
    Console(console::ConsoleState),
    Block(blk::BlockState),
    Net(net::NetState),
}

impl DeviceState {
    fn kind(&self) -> &'static str {
        match self {
            DeviceState::Rng(_) => "rng",
            DeviceState::Console(_) => "console",
            DeviceState::Block(_) => "block",
            DeviceState::Net(_) => "net",
        }
    }
}

/// GSIs for virtio devices: 5 upward, skipping the RTC (8) and the ACPI SCI (9).
pub const GSIS: [u32; 17] = [
    5, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
];

struct Slot {
    base: u64,
    irq: u32,
    transport: VirtioMmioDevice<AnyDevice>,
    /// The level last reported through [`VirtioDevices::take_irq_changes`].
    driven: bool,
}

/// Every virtio device of one VM, at fixed addresses and GSIs.
#[derive(Default)]
pub struct VirtioDevices {
    slots: Vec<Slot>,
}

/// The snapshot form of [`VirtioDevices`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioDevicesState {
    pub devices: Vec<(MmioState, DeviceState)>,
    /// Interrupt levels as last driven into the platform.
    pub driven: Vec<bool>,
}

impl VirtioDevices {
    pub fn new() -> Self {
        Self::default()
    }

    /// virtio-rng (from `seed`) and then `configs`, in order.
    pub fn from_config(
        seed: u64,
        configs: &[VirtioDeviceConfig],
    ) -> Result<Self, VirtioSetupError> {
        let mut devices = VirtioDevices::new();
        for device in Self::build(seed, configs)? {
            devices.add(device)?;
        }
        Ok(devices)
    }

    fn build(
        seed: u64,
        configs: &[VirtioDeviceConfig],
    ) -> Result<Vec<AnyDevice>, VirtioSetupError> {
        let mut out = vec![AnyDevice::Rng(Rng::from_seed(seed))];
        for config in configs {
            out.push(match config {
                VirtioDeviceConfig::Console => Console::new().into(),
                VirtioDeviceConfig::Block(b) => Block::open(b)?.into(),
                VirtioDeviceConfig::Net { mac } => Net::new(*mac).into(),
            });
        }
        Ok(out)
    }

    /// Places `device` in the next window, on the next GSI. Returns (base, gsi).
    pub fn add(&mut self, device: impl Into<AnyDevice>) -> Result<(u64, u32), VirtioSetupError> {
        self.push(VirtioMmioDevice::new(device.into()))
    }

    fn push(
        &mut self,
        transport: VirtioMmioDevice<AnyDevice>,
    ) -> Result<(u64, u32), VirtioSetupError> {
        let Some(&irq) = GSIS.get(self.slots.len()) else {
            return Err(VirtioSetupError::TooManyDevices {
                max: GSIS.len(),
                what: transport.device().kind(),
            });
        };
        let base = layout::VIRTIO_MMIO_START + self.slots.len() as u64 * mmio::WINDOW_SIZE;
        self.slots.push(Slot {
            base,
            irq,
            transport,
            driven: false,
        });
        Ok((base, irq))
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// (base, size) of the MMIO range all devices decode, for the CPU backends.
    pub fn mmio_range(&self) -> (u64, u64) {
        let size = self.slots.len() as u64 * mmio::WINDOW_SIZE;
        (layout::VIRTIO_MMIO_START, size)
    }

    /// Kernel command-line options describing every device.
    pub fn cmdline_fragment(&self) -> String {
        let options: Vec<String> = self
            .slots
            .iter()
            .map(|s| format!("virtio_mmio.device=4K@{:#x}:{}", s.base, s.irq))
            .collect();
        options.join(" ")
    }

    fn slot_at(&mut self, addr: u64) -> Option<(&mut Slot, u64)> {
        let offset = addr.checked_sub(layout::VIRTIO_MMIO_START)?;
        let slot = self.slots.get_mut((offset / mmio::WINDOW_SIZE) as usize)?;
        Some((slot, offset % mmio::WINDOW_SIZE))
    }

    /// A guest read; `None` when `addr` is not a virtio window.
    pub fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> Option<()> {
        let (slot, offset) = self.slot_at(addr)?;
        slot.transport.read(offset, data);
        Some(())
    }

    /// A guest write; `None` when `addr` is not a virtio window, else whether some
    /// interrupt line changed (collect the changes with [`Self::take_irq_changes`]).
    pub fn mmio_write(&mut self, mem: &GuestMemoryMmap, addr: u64, data: &[u8]) -> Option<bool> {
        let (slot, offset) = self.slot_at(addr)?;
        Some(slot.transport.write(mem, offset, data))
    }

    /// Host-side delivery (net RX, console input) at an exit. Returns whether some
    /// interrupt line changed.
    pub fn poll(&mut self, mem: &GuestMemoryMmap) -> bool {
        let mut changed = false;
        for slot in &mut self.slots {
            changed |= slot.transport.poll(mem);
        }
        changed
    }

    /// (gsi, level) for every line whose level differs from what was last reported:
    /// feed each to `Platform::set_irq`.
    pub fn take_irq_changes(&mut self) -> Vec<(u32, bool)> {
        let mut out = Vec::new();
        for slot in &mut self.slots {
            let level = slot.transport.irq_level();
            if level != slot.driven {
                slot.driven = level;
                out.push((slot.irq, level));
            }
        }
        out
    }

    pub fn device(&self, index: usize) -> Option<&AnyDevice> {
        self.slots.get(index).map(|s| s.transport.device())
    }

    pub fn device_mut(&mut self, index: usize) -> Option<&mut AnyDevice> {
        self.slots.get_mut(index).map(|s| s.transport.device_mut())
    }

    pub fn transport(&self, index: usize) -> Option<&VirtioMmioDevice<AnyDevice>> {
        self.slots.get(index).map(|s| &s.transport)
    }

    /// The first console (the agent channel).
    pub fn console_mut(&mut self) -> Option<&mut Console> {
        self.slots
            .iter_mut()
            .find_map(|s| match s.transport.device_mut() {
                AnyDevice::Console(c) => Some(c),
                _ => None,
            })
    }

    /// The first network device.
    pub fn net_mut(&mut self) -> Option<&mut Net> {
        self.slots
            .iter_mut()
            .find_map(|s| match s.transport.device_mut() {
                AnyDevice::Net(n) => Some(n),
                _ => None,
            })
    }

    /// The devices of the same VM after a power cycle: fresh devices from `configs`
    /// (queues, console and net buffers empty, as at power-on) whose disks keep the
    /// contents of the matching old ones. Call [`Self::crash_disks`] first for a power
    /// cut, which drops the unflushed writes.
    pub fn power_cycled(
        &self,
        seed: u64,
        configs: &[VirtioDeviceConfig],
    ) -> Result<Self, RestoreError> {
        let mut devices = VirtioDevices::new();
        for (index, fresh) in Self::build(seed, configs)?.into_iter().enumerate() {
            let old = self.slots.get(index).map(|s| s.transport.device());
            let device = match (fresh, old) {
                (AnyDevice::Block(b), Some(AnyDevice::Block(o))) => b.restore(&o.state())?.into(),
                (fresh, _) => fresh,
            };
            devices.add(device)?;
        }
        Ok(devices)
    }

    /// A fork's new entropy: virtio-rng goes on with the stream of `seed`.
    pub fn reseed_rng(&mut self, seed: u64) {
        for slot in &mut self.slots {
            if let AnyDevice::Rng(r) = slot.transport.device_mut() {
                *r = Rng::from_seed(seed);
            }
        }
    }

    /// The VM crashed: every disk drops its unflushed writes.
    pub fn crash_disks(&mut self) {
        for slot in &mut self.slots {
            if let AnyDevice::Block(b) = slot.transport.device_mut() {
                b.crash();
            }
        }
    }

    pub fn state(&self) -> VirtioDevicesState {
        VirtioDevicesState {
            devices: self
                .slots
                .iter()
                .map(|s| (s.transport.state(), s.transport.device().state()))
                .collect(),
            driven: self.slots.iter().map(|s| s.driven).collect(),
        }
    }

    /// Rebuilds the devices of `configs` (host resources such as disk images are
    /// reopened from there) with the state of `state`.
    pub fn restore(
        seed: u64,
        configs: &[VirtioDeviceConfig],
        state: &VirtioDevicesState,
    ) -> Result<Self, RestoreError> {
        let fresh = Self::build(seed, configs)?;
        if fresh.len() != state.devices.len() || state.driven.len() != fresh.len() {
            return Err(RestoreError::DeviceCount {
                saved: state.devices.len(),
                configured: fresh.len(),
            });
        }
        let mut devices = VirtioDevices::new();
        for (index, (device, (mmio, saved))) in fresh.into_iter().zip(&state.devices).enumerate() {
            let device = match (device, saved) {
                (AnyDevice::Rng(_), DeviceState::Rng(s)) => Rng::restore(s).into(),
                (AnyDevice::Console(_), DeviceState::Console(s)) => Console::restore(s).into(),
                (AnyDevice::Block(b), DeviceState::Block(s)) => b.restore(s)?.into(),
                (AnyDevice::Net(_), DeviceState::Net(s)) => Net::restore(s).into(),
                (d, s) => {
                    return Err(RestoreError::DeviceKind {
                        index,
                        saved: s.kind(),
                        configured: d.kind(),
                    })
                }
            };
            devices.push(VirtioMmioDevice::restore(device, mmio)?)?;
            if let (Some(slot), Some(&driven)) = (devices.slots.last_mut(), state.driven.get(index))
            {
                slot.driven = driven;
            }
        }
        Ok(devices)
    }
}

#[cfg(test)]
mod tests;
