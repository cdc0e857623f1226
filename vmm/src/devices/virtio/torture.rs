//! One entry point that drives a device through its transport from arbitrary bytes,
//! shared by the `cargo fuzz` targets (vmm/fuzz) and the long seeded property test.
//!
//! The bytes decide the device, the driver's handshake and a sequence of operations:
//! descriptors with in-range, straddling, gap, wrapping and wild addresses; available
//! ring entries and indices; notifies; raw register writes (resets included); polls;
//! host-side input; garbage written over rings and requests; snapshot round trips.
//! The property is that nothing panics, no access leaves guest RAM (vm-memory refuses
//! it) and the same bytes always give the same guest memory and device state.

use sha2::{Digest, Sha256};
use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::blk::{BlockConfig, DiskBacking};
use super::mmio::VirtioMmioDevice;
use super::{AnyDevice, Console, Rng, VirtioDevice, VirtioDeviceConfig};
use crate::persist::Persist;

/// Guest RAM for a run: two regions with a hole between them.
const LOW: (u64, usize) = (0, 0x1_0000);
const HIGH: (u64, usize) = (0x2_0000, 0x1_0000);
const MAX_OPS: usize = 256;
/// Rings live below this in low RAM; buffers mostly above.
const BUFFERS: u64 = 0x8000;

/// Which device to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rng,
    Console,
    Block,
    ReadOnlyBlock,
    Net,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Rng,
        Kind::Console,
        Kind::Block,
        Kind::ReadOnlyBlock,
        Kind::Net,
    ];

    /// The device's configuration; `None` for the virtio-rng, which has none.
    fn config(self) -> Option<VirtioDeviceConfig> {
        let disk = |read_only| {
            VirtioDeviceConfig::Block(BlockConfig {
                backing: DiskBacking::Zeroed { bytes: 64 * 512 },
                read_only,
                id: "fuzz".into(),
            })
        };
        match self {
            Kind::Rng => None,
            Kind::Console => Some(VirtioDeviceConfig::Console),
            Kind::Block => Some(disk(false)),
            Kind::ReadOnlyBlock => Some(disk(true)),
            Kind::Net => Some(VirtioDeviceConfig::Net {
                mac: [2, 0, 0, 0, 0, 1],
            }),
        }
    }

    fn build(self) -> AnyDevice {
        match self.config() {
            None => AnyDevice::Rng(Rng::from_seed(1)),
            // A zeroed disk opens no file, so this cannot fail.
            Some(config) => {
                AnyDevice::from_config(&config).unwrap_or(AnyDevice::Console(Console::new()))
            }
        }
    }
}

/// Reads values from the input; zeros once it runs out.
struct Bytes_<'a>(&'a [u8]);

impl Bytes_<'_> {
    fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    fn empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A guest address: mostly usable, sometimes on an edge, sometimes wild.
    fn addr(&mut self) -> u64 {
        let off = u64::from(self.u16());
        match self.u8() % 16 {
            // The upper half of low RAM holds no rings: buffers go there.
            0..=7 => BUFFERS + off % (LOW.1 as u64 - BUFFERS),
            8..=10 => HIGH.0 + off % HIGH.1 as u64,
            11 => (LOW.0 + LOW.1 as u64).wrapping_sub(off % 64), // straddles the hole
            12 => (HIGH.0 + HIGH.1 as u64).wrapping_sub(off % 64), // runs off the end
            13 => u64::MAX - off % 64,
            14 => off % 0x8000, // over the rings
            _ => self.u64(),
        }
    }

    fn len(&mut self) -> u32 {
        match self.u8() % 8 {
            0..=5 => u32::from(self.u8()) * 4,
            6 => u32::from(self.u16()),
            _ => self.u32(),
        }
    }

    /// Descriptor flags: NEXT and WRITE in any mix, INDIRECT now and then.
    fn flags(&mut self) -> u16 {
        let f = self.u8();
        u16::from(f & 3) | if f % 16 == 15 { 4 } else { 0 }
    }
}

struct Run {
    mem: GuestMemoryMmap,
    dev: VirtioMmioDevice<AnyDevice>,
    /// Where this run's driver put each queue's (desc, avail, used) and its size.
    rings: Vec<(u64, u64, u64, u16)>,
    /// Each queue's next free descriptor, for [`Run::driver_chain`].
    next: Vec<u16>,
}

impl Run {
    fn set(&mut self, reg: u32, value: u32) {
        self.dev
            .write(&self.mem, u64::from(reg), &value.to_le_bytes());
    }

    fn get(&mut self, reg: u32) -> u32 {
        let mut b = [0u8; 4];
        self.dev.read(u64::from(reg), &mut b);
        u32::from_le_bytes(b)
    }

    /// A plausible driver bring-up, bent by the input.
    fn handshake(&mut self, input: &mut Bytes_) {
        self.set(VIRTIO_MMIO_STATUS, 0);
        self.set(VIRTIO_MMIO_STATUS, 3);
        let mut features = [0u32; 2];
        for (sel, f) in features.iter_mut().enumerate() {
            self.set(VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel as u32);
            *f = self.get(VIRTIO_MMIO_DEVICE_FEATURES);
            if input.u8() % 8 == 7 {
                *f = input.u32();
            }
            self.set(VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel as u32);
            self.set(VIRTIO_MMIO_DRIVER_FEATURES, *f);
        }
        self.set(VIRTIO_MMIO_STATUS, 3 | VIRTIO_CONFIG_S_FEATURES_OK);
        let queues = self.dev.device().queue_max_sizes().len();
        self.rings.clear();
        self.next = vec![0; queues];
        for q in 0..queues {
            let size = 1u16 << (input.u8() % 5);
            // Queue q's rings live in its own 16 KiB of low RAM unless the input says otherwise.
            let base = 0x100 + q as u64 * 0x4000;
            let mut rings = (base, base + 0x1000, base + 0x2000);
            if input.u8() % 8 == 7 {
                rings = (input.addr(), input.addr(), input.addr());
            }
            self.set(VIRTIO_MMIO_QUEUE_SEL, q as u32);
            self.set(VIRTIO_MMIO_QUEUE_NUM, u32::from(size));
            for (reg, a) in [
                (VIRTIO_MMIO_QUEUE_DESC_LOW, rings.0),
                (VIRTIO_MMIO_QUEUE_AVAIL_LOW, rings.1),
                (VIRTIO_MMIO_QUEUE_USED_LOW, rings.2),
            ] {
                self.set(reg, a as u32);
                self.set(reg + 4, (a >> 32) as u32);
            }
            self.set(VIRTIO_MMIO_QUEUE_READY, 1);
            self.rings.push((rings.0, rings.1, rings.2, size));
        }
        self.set(VIRTIO_MMIO_STATUS, 7 | VIRTIO_CONFIG_S_FEATURES_OK);
    }

    fn op(&mut self, kind: Kind, input: &mut Bytes_) {
        // A driver resets a device that needs it (or that it failed to set up), sometimes.
        let down = self.dev.status() & VIRTIO_CONFIG_S_DRIVER_OK == 0;
        if (down || self.dev.broken().is_some()) && input.u8().is_multiple_of(4) {
            self.handshake(input);
        }
        let q = usize::from(input.u8()) % self.rings.len().max(1);
        let (desc, avail, _, size) = self.rings.get(q).copied().unwrap_or((0, 0, 0, 1));
        match input.u8() % 32 {
            0..=3 => {
                // One descriptor, anything in it.
                let index = input.u16() % (size + size / 4 + 1);
                let (addr, len) = (input.addr(), input.len());
                let (flags, next) = (input.flags(), input.u16() % (size + 1));
                self.desc(desc, index, addr, len, flags, next);
            }
            4..=9 => self.driver_chain(kind, q, input),
            // Post any head, sometimes out of range.
            10..=12 => self.post(q, input.u16() % (size + 2)),
            13..=21 => self.set(VIRTIO_MMIO_QUEUE_NOTIFY, q as u32),
            22 => {
                let _ = self
                    .mem
                    .write_obj(input.u16(), GuestAddress(avail.wrapping_add(2)));
            }
            23 | 24 => {
                // Any register, any value (resets and queue reprogramming included).
                let reg = u32::from(input.u8()) * 4;
                let value = input.u32();
                self.set(reg, value);
                if reg == VIRTIO_MMIO_STATUS && value == 0 && input.u8().is_multiple_of(2) {
                    self.handshake(input);
                }
            }
            25 | 26 => {
                self.dev.poll(&self.mem);
            }
            27 | 28 => {
                // Garbage over requests and rings.
                let addr = input.addr();
                let n = usize::from(input.u8());
                let bytes = input.take(n).to_vec();
                let _ = self.mem.write_slice(&bytes, GuestAddress(addr));
            }
            29 | 30 => self.host_input(kind, input),
            _ => self.snapshot_round_trip(kind),
        }
        // Reads never change anything, whatever the offset or width.
        let mut b = [0u8; 3];
        self.dev.read(u64::from(input.u16()), &mut b);
    }

    fn desc(&self, table: u64, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        let at = table.wrapping_add(u64::from(index) * 16);
        let _ = self.mem.write_slice(&raw, GuestAddress(at));
    }

    /// A chain as a real driver builds it (the other operations bend it): readable
    /// buffers then writable ones, in RAM, a block header first for block devices.
    fn driver_chain(&mut self, kind: Kind, q: usize, input: &mut Bytes_) {
        let Some(&(table, _, _, size)) = self.rings.get(q) else {
            return;
        };
        let count = 1 + u16::from(input.u8() % 4).min(size - 1);
        let head = self.next.get(q).copied().unwrap_or(0) % size;
        let block = matches!(kind, Kind::Block | Kind::ReadOnlyBlock);
        let readable = if block {
            1
        } else {
            u16::from(input.u8()) % (count + 1)
        };
        for i in 0..count {
            let index = (head + i) % size;
            let addr = BUFFERS + u64::from(input.u16()) % 0x6000;
            let mut len = 1 + u32::from(input.u8()) * 4;
            if block && i == 0 {
                let mut hdr = [0u8; 16];
                hdr[0] = [0, 1, 4, 8, 11][usize::from(input.u8()) % 5];
                hdr[8] = input.u8() % 70; // sometimes past the 64-sector disk
                let _ = self.mem.write_slice(&hdr, GuestAddress(addr));
                len = 16;
            } else if block && i + 1 < count {
                len = 512 * u32::from(1 + input.u8() % 4);
            }
            let write = if i < readable { 0 } else { 2 };
            let next = if i + 1 < count { 1 } else { 0 };
            self.desc(table, index, addr, len, write | next, (index + 1) % size);
        }
        if let Some(n) = self.next.get_mut(q) {
            *n = (head + count) % size;
        }
        self.post(q, head);
    }

    fn post(&mut self, q: usize, head: u16) {
        let Some(&(_, avail, _, size)) = self.rings.get(q) else {
            return;
        };
        let idx_at = GuestAddress(avail.wrapping_add(2));
        let idx: u16 = self.mem.read_obj(idx_at).unwrap_or(0);
        let slot = avail.wrapping_add(4 + 2 * u64::from(idx % size.max(1)));
        let _ = self.mem.write_obj(head, GuestAddress(slot));
        let _ = self.mem.write_obj(idx.wrapping_add(1), idx_at);
    }

    fn host_input(&mut self, _kind: Kind, input: &mut Bytes_) {
        let n = usize::from(input.u16() % 2048);
        let bytes = input.take(n).to_vec();
        match self.dev.device_mut() {
            AnyDevice::Console(c) => c.push_input(&bytes),
            AnyDevice::Net(net) => net.push_rx_frame(bytes),
            AnyDevice::Block(b) => b.crash(),
            AnyDevice::Rng(_) => {}
        }
        let _ = self.dev.device_mut();
    }

    fn snapshot_round_trip(&mut self, kind: Kind) {
        let state = self.dev.state();
        let config = kind.config();
        let restored = super::restore_device(0, config.as_ref(), &self.dev.device().state())
            .and_then(|device| VirtioMmioDevice::restore(device, &state));
        match restored {
            Ok(dev) if dev.state() == state => self.dev = dev,
            // Our own snapshot must always restore, to the same state.
            _ => panic!("{kind:?}: snapshot did not restore to the same state"),
        }
    }

    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for (base, len) in [LOW, HIGH] {
            let mut buf = vec![0u8; len];
            let _ = self.mem.read_slice(&mut buf, GuestAddress(base));
            h.update(&buf);
        }
        h.update(format!(
            "{:?}{:?}",
            self.dev.state(),
            self.dev.device().state()
        ));
        h.finalize().into()
    }
}

/// What one run ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Guest memory and device state afterwards.
    pub digest: [u8; 32],
    /// Chains the device put on used rings, over the whole run.
    pub completed: u64,
    /// Times the device went into DEVICE_NEEDS_RESET.
    pub breaks: u64,
}

/// Drives a `kind` device with `data`. Panics only if the device broke one of our
/// own invariants.
pub fn run(kind: Kind, data: &[u8]) -> Report {
    let Ok(mem) = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(LOW.0), LOW.1),
        (GuestAddress(HIGH.0), HIGH.1),
    ]) else {
        return Report {
            digest: [0; 32],
            completed: 0,
            breaks: 0,
        };
    };
    let mut input = Bytes_(data);
    // The first bytes of input are the initial contents of the buffer area.
    let n = usize::from(input.u8()) * 4;
    let seed = input.take(n).to_vec();
    let _ = mem.write_slice(&seed, GuestAddress(BUFFERS));
    let mut run = Run {
        mem,
        dev: VirtioMmioDevice::new(kind.build()),
        rings: Vec::new(),
        next: Vec::new(),
    };
    run.handshake(&mut input);
    let (mut completed, mut breaks) = (0, 0);
    let used = |run: &Run| -> u64 {
        run.dev
            .state()
            .queues
            .iter()
            .map(|q| u64::from(q.next_used))
            .sum()
    };
    for _ in 0..MAX_OPS {
        if input.empty() {
            break;
        }
        let (used_before, broken_before) = (used(&run), run.dev.broken().is_some());
        run.op(kind, &mut input);
        completed += used(&run).saturating_sub(used_before);
        breaks += u64::from(!broken_before && run.dev.broken().is_some());
    }
    Report {
        digest: run.digest(),
        completed,
        breaks,
    }
}

/// As [`run`], with the device chosen by the first byte.
pub fn run_any(data: &[u8]) -> Report {
    let (first, rest) = data.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
    run(Kind::ALL[usize::from(first) % Kind::ALL.len()], rest)
}

#[cfg(test)]
mod tests {
    use rand_chacha::rand_core::{Rng as _, SeedableRng};

    use super::*;

    fn random_inputs(seed: u64, count: usize, f: impl Fn(&[u8])) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for _ in 0..count {
            let len = (rng.next_u32() % 4096) as usize;
            let mut data = vec![0u8; len];
            rng.fill_bytes(&mut data);
            f(&data);
        }
    }

    #[test]
    fn short_random_runs_are_deterministic_and_reach_both_outcomes() {
        for kind in Kind::ALL {
            let (completed, broken) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
            random_inputs(1, 200, |data| {
                let report = run(kind, data);
                assert_eq!(report, run(kind, data));
                completed.set(completed.get() + u64::from(report.completed > 0));
                broken.set(broken.get() + u64::from(report.breaks > 0));
            });
            eprintln!(
                "{kind:?}: of 200 runs {} completed requests, {} broke the device",
                completed.get(),
                broken.get()
            );
            assert!(
                completed.get() > 50 && broken.get() > 20,
                "{kind:?}: the generator is too tame or too wild"
            );
        }
        assert_eq!(run_any(&[]), run_any(&[]));
    }

    /// The long hostile-input run recorded in docs/virtio.md:
    /// `DETVM_TORTURE_SECS=600 cargo test -p vmm --no-default-features --release -- --ignored torture`
    #[test]
    #[ignore]
    fn torture_for_a_while() {
        let secs = std::env::var("DETVM_TORTURE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60u64);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        let mut seed = 0u64;
        let mut runs = 0u64;
        while std::time::Instant::now() < end {
            random_inputs(seed, 100, |data| {
                let first = run_any(data);
                assert_eq!(first, run_any(data), "seed {seed}: not deterministic");
            });
            seed += 1;
            runs += 100;
        }
        eprintln!(
            "torture: {runs} inputs ({seed} seeds) over {secs} s, no panic, all deterministic"
        );
    }
}
