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
mod device;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;
#[cfg(test)]
pub(crate) mod testing;
#[doc(hidden)]
pub mod torture;

use serde::{Deserialize, Serialize};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use crate::layout;
use crate::persist::Persist;
pub use blk::{Block, BlockConfig};
pub use console::Console;
pub use device::{RestoreError, VirtioDevice, VirtioError, VirtioSetupError};
pub use mmio::{MmioState, VirtioMmioDevice};
pub use net::Net;
pub use rng::Rng;

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

impl VirtioDeviceConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            VirtioDeviceConfig::Console => "console",
            VirtioDeviceConfig::Block(_) => "block",
            VirtioDeviceConfig::Net { .. } => "net",
        }
    }
}

impl AnyDevice {
    /// A device as at power-on (a disk opens its image).
    pub fn from_config(config: &VirtioDeviceConfig) -> Result<Self, VirtioSetupError> {
        Ok(match config {
            VirtioDeviceConfig::Console => Console::new().into(),
            VirtioDeviceConfig::Block(b) => Block::open(b)?.into(),
            VirtioDeviceConfig::Net { mac } => Net::new(*mac).into(),
        })
    }

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
            out.push(AnyDevice::from_config(config)?);
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
        devices.add(Rng::from_seed(seed))?;
        for (index, config) in configs.iter().enumerate() {
            let old = self.slots.get(index + 1).map(|s| s.transport.device());
            let device = match (config, old) {
                (VirtioDeviceConfig::Block(c), Some(AnyDevice::Block(o))) => {
                    Block::restore(c, &o.state())?.into()
                }
                (config, _) => AnyDevice::from_config(config)?,
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
}

/// The devices' and transports' states; the disk images and the configuration come back
/// as resources. The virtio-rng's stream is in its state, so no seed is needed.
impl Persist for VirtioDevices {
    type State = VirtioDevicesState;
    type Resources<'a> = &'a [VirtioDeviceConfig];
    type Error = RestoreError;

    fn state(&self) -> VirtioDevicesState {
        VirtioDevicesState {
            devices: self
                .slots
                .iter()
                .map(|s| (s.transport.state(), s.transport.device().state()))
                .collect(),
            driven: self.slots.iter().map(|s| s.driven).collect(),
        }
    }

    /// The devices of `configs` (after the virtio-rng every VM has), with the state of
    /// `state`; disk images are reopened from `configs`.
    fn restore(
        configs: &[VirtioDeviceConfig],
        state: &VirtioDevicesState,
    ) -> Result<Self, RestoreError> {
        let configured = configs.len() + 1;
        if state.devices.len() != configured || state.driven.len() != configured {
            return Err(RestoreError::DeviceCount {
                saved: state.devices.len(),
                configured,
            });
        }
        let mut devices = VirtioDevices::new();
        for (index, ((mmio, saved), &driven)) in state.devices.iter().zip(&state.driven).enumerate()
        {
            let config = index.checked_sub(1).and_then(|i| configs.get(i));
            let device = restore_device(index, config, saved)?;
            devices.push(VirtioMmioDevice::restore(device, mmio)?)?;
            if let Some(slot) = devices.slots.last_mut() {
                slot.driven = driven;
            }
        }
        Ok(devices)
    }
}

/// Device `index` from its saved state; `config` is `None` for the virtio-rng.
fn restore_device(
    index: usize,
    config: Option<&VirtioDeviceConfig>,
    saved: &DeviceState,
) -> Result<AnyDevice, RestoreError> {
    Ok(match (config, saved) {
        (None, DeviceState::Rng(s)) => {
            let Ok(rng) = Rng::restore((), s);
            rng.into()
        }
        (Some(VirtioDeviceConfig::Console), DeviceState::Console(s)) => {
            let Ok(console) = Console::restore((), s);
            console.into()
        }
        (Some(VirtioDeviceConfig::Block(c)), DeviceState::Block(s)) => Block::restore(c, s)?.into(),
        (Some(VirtioDeviceConfig::Net { .. }), DeviceState::Net(s)) => {
            let Ok(net) = Net::restore((), s);
            net.into()
        }
        (config, s) => {
            return Err(RestoreError::DeviceKind {
                index,
                saved: s.kind(),
                configured: config.map_or("rng", VirtioDeviceConfig::kind),
            })
        }
    })
}

#[cfg(test)]
mod tests;
