//! Transport register semantics, and hostile queues and descriptor tables.

use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT};

use super::*;
use crate::devices::virtio::testing::{Driver, MEM_SIZE, QUEUE_SIZE, WRITE};
use crate::devices::virtio::{Console, Rng};
use crate::persist::{round_trip, Persist};

const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const FEATURES_OK: u32 = VIRTIO_CONFIG_S_FEATURES_OK;

fn rng() -> Driver<Rng> {
    Driver::new(Rng::from_seed(3))
}

/// ACKNOWLEDGE | DRIVER, then the given feature words.
fn negotiate(d: &mut Driver<Rng>, low: u32, high: u32) -> u32 {
    d.set_reg(VIRTIO_MMIO_STATUS, 0);
    d.add_status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    for (sel, v) in [(0, low), (1, high)] {
        d.set_reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
        d.set_reg(VIRTIO_MMIO_DRIVER_FEATURES, v);
    }
    d.add_status(FEATURES_OK);
    d.reg(VIRTIO_MMIO_STATUS)
}

#[test]
fn identity_registers() {
    let mut d = Driver::raw(Console::new());
    assert_eq!(d.reg(VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
    assert_eq!(d.reg(VIRTIO_MMIO_VERSION), 2);
    assert_eq!(d.reg(VIRTIO_MMIO_DEVICE_ID), 3);
    assert_eq!(d.reg(VIRTIO_MMIO_VENDOR_ID), VENDOR_ID);
    d.set_reg(VIRTIO_MMIO_QUEUE_SEL, 1);
    assert_eq!(d.reg(VIRTIO_MMIO_QUEUE_NUM_MAX), 64);
    d.set_reg(VIRTIO_MMIO_QUEUE_SEL, 2);
    assert_eq!(d.reg(VIRTIO_MMIO_QUEUE_NUM_MAX), 0, "no such queue");
    // Byte-wide and unaligned register reads are not registers.
    let mut b = [0xFFu8; 1];
    d.dev.read(0, &mut b);
    assert_eq!(b, [0]);
    let mut w = [0xFFu8; 4];
    d.dev.read(2, &mut w);
    assert_eq!(w, [0; 4]);
}

#[test]
fn version_1_is_offered_and_required() {
    let mut d = Driver::raw(Rng::from_seed(0));
    d.set_reg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    assert_eq!(d.reg(VIRTIO_MMIO_DEVICE_FEATURES), 1);
    d.set_reg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 7);
    assert_eq!(d.reg(VIRTIO_MMIO_DEVICE_FEATURES), 0);
    // A legacy driver (no VERSION_1) and one that takes what is not offered both fail.
    assert_eq!(negotiate(&mut d, 0, 0) & FEATURES_OK, 0);
    assert_eq!(negotiate(&mut d, 1 << 28, 1) & FEATURES_OK, 0);
    assert_ne!(negotiate(&mut d, 0, 1) & FEATURES_OK, 0);
    // Features are frozen once accepted.
    d.set_reg(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    d.set_reg(VIRTIO_MMIO_DRIVER_FEATURES, 0);
    assert_eq!(d.dev.state().driver_features, 1 << 32);
}

#[test]
fn status_rules() {
    let mut d = Driver::raw(Rng::from_seed(0));
    d.add_status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    // DRIVER_OK without FEATURES_OK is refused.
    d.add_status(VIRTIO_CONFIG_S_DRIVER_OK);
    assert_eq!(d.reg(VIRTIO_MMIO_STATUS), 3);
    // Bits cannot be taken away except by a reset; the device's own bit cannot be set.
    d.set_reg(VIRTIO_MMIO_STATUS, 1);
    assert_eq!(d.reg(VIRTIO_MMIO_STATUS), 3);
    d.add_status(VIRTIO_CONFIG_S_NEEDS_RESET);
    assert_eq!(d.reg(VIRTIO_MMIO_STATUS), 3);
    // The driver may give up.
    d.add_status(VIRTIO_CONFIG_S_FAILED);
    assert_eq!(d.reg(VIRTIO_MMIO_STATUS), 3 | VIRTIO_CONFIG_S_FAILED);
    d.set_reg(VIRTIO_MMIO_STATUS, 0);
    assert_eq!(d.reg(VIRTIO_MMIO_STATUS), 0);
}

#[test]
fn reset_clears_queues_and_interrupts() {
    let mut d = rng();
    let buf = d.buffer(8);
    d.submit(0, &[(buf, 8, WRITE)]);
    assert!(d.notify(0));
    assert_eq!(d.reg(VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
    assert_eq!(d.dev.state().queues[0].next_avail, 1);
    assert!(d.set_reg(VIRTIO_MMIO_STATUS, 0), "the line drops");
    let q = d.dev.state().queues[0];
    assert!(!q.ready);
    assert_eq!((q.next_avail, q.next_used, q.size), (0, 0, 64));
    assert_eq!(d.reg(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    assert_eq!(d.dev.state().driver_features, 0);
}

#[test]
fn interrupt_ack_lowers_the_line() {
    let mut d = rng();
    let buf = d.buffer(8);
    d.submit(0, &[(buf, 8, WRITE)]);
    assert!(d.notify(0));
    assert!(!d.set_reg(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_CONFIG));
    assert!(d.set_reg(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING));
    assert!(!d.dev.irq_level());
}

#[test]
fn queue_registers_are_frozen_while_ready() {
    let mut d = rng();
    d.set_reg(VIRTIO_MMIO_QUEUE_SEL, 0);
    d.set_reg(VIRTIO_MMIO_QUEUE_NUM, 4);
    d.set_reg(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x5000);
    let q = d.dev.state().queues[0];
    assert_eq!((q.size, q.desc_table), (QUEUE_SIZE, 0x1_0000));
    // Not ready: a size that is not a power of two, or too big, is ignored.
    d.set_reg(VIRTIO_MMIO_QUEUE_READY, 0);
    d.set_reg(VIRTIO_MMIO_STATUS, 0);
    for bad in [3, 128, 0, 0x1_0000] {
        d.set_reg(VIRTIO_MMIO_QUEUE_NUM, bad);
    }
    assert_eq!(d.dev.state().queues[0].size, 64);
    d.set_reg(VIRTIO_MMIO_QUEUE_NUM, 8);
    assert_eq!(d.dev.state().queues[0].size, 8);
    // Misaligned ring addresses are ignored.
    d.set_reg(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x5001);
    assert_ne!(d.dev.state().queues[0].desc_table, 0x5001);
}

#[test]
fn notify_before_driver_ok_or_on_a_missing_queue_does_nothing() {
    let mut d = Driver::raw(Rng::from_seed(0));
    d.setup_queue(0);
    let buf = d.buffer(8);
    d.submit(0, &[(buf, 8, WRITE)]);
    assert!(!d.notify(0));
    assert_eq!(d.pop_used(0), None);
    let mut d = rng();
    for q in [1, 99, u32::MAX] {
        assert!(!d.notify(q));
    }
    assert!(!d.broken());
}

#[test]
fn rings_outside_ram_break_the_device() {
    let mut d = Driver::raw(Rng::from_seed(0));
    d.set_reg(VIRTIO_MMIO_STATUS, 0);
    negotiate_all(&mut d);
    d.set_reg(VIRTIO_MMIO_QUEUE_SEL, 0);
    d.set_reg(VIRTIO_MMIO_QUEUE_NUM, 16);
    d.set_reg(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1_0000);
    d.set_reg(VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x2_0000);
    d.set_reg(VIRTIO_MMIO_QUEUE_USED_LOW, (MEM_SIZE - 8) as u32); // runs off the end
    d.set_reg(VIRTIO_MMIO_QUEUE_READY, 1);
    d.add_status(VIRTIO_CONFIG_S_DRIVER_OK);
    assert!(d.notify(0));
    assert!(d.broken());
    assert_eq!(d.reg(VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
    assert_ne!(d.reg(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
}

fn negotiate_all(d: &mut Driver<Rng>) {
    assert_ne!(negotiate(d, 0, 1) & FEATURES_OK, 0);
}

#[test]
fn descriptor_loop_terminates() {
    let mut d = rng();
    let buf = d.buffer(8);
    // 0 -> 1 -> 0 -> ...: the walk stops after queue-size descriptors.
    d.set_desc(0, 0, buf, 8, WRITE | NEXT, 1);
    d.set_desc(0, 1, buf, 8, WRITE | NEXT, 0);
    d.post(0, 0);
    assert!(d.notify(0));
    assert_eq!(d.pop_used(0), Some((0, 8 * u32::from(QUEUE_SIZE))));
    assert!(!d.broken());
}

#[test]
fn head_index_outside_the_table_breaks_the_device() {
    let mut d = rng();
    d.post(0, QUEUE_SIZE);
    d.notify(0);
    assert!(d.broken());
}

#[test]
fn avail_index_running_ahead_breaks_the_device() {
    let mut d = rng();
    d.queues[0].avail().idx().store(QUEUE_SIZE + 1);
    d.notify(0);
    assert!(d.broken());
}

#[test]
fn buffers_outside_ram_break_the_device_without_a_write() {
    for (addr, len) in [(MEM_SIZE - 4, 8), (u64::MAX - 3, 8), (MEM_SIZE + 0x1000, 1)] {
        let mut d = rng();
        let ok = d.buffer(8);
        d.submit(0, &[(ok, 8, WRITE), (addr, len, WRITE)]);
        d.notify(0);
        assert!(d.broken(), "{addr:#x}+{len}");
        assert_eq!(
            d.read(ok, 8),
            vec![0; 8],
            "nothing written before the check"
        );
        assert_eq!(d.pop_used(0), None);
    }
}

#[test]
fn indirect_tables_are_bounded() {
    // Not offered, but a hostile driver may use them anyway.
    let indirect = VRING_DESC_F_INDIRECT as u16;
    let mut d = rng();
    let (table, buf) = (d.buffer(32), d.buffer(8));
    // An indirect table whose entry is itself indirect: the walk stops there.
    d.set_desc(0, 0, table, 32, indirect, 0);
    d.write(table, &[0; 32]);
    let inner = virtio_queue::desc::split::Descriptor::new(buf, 8, WRITE | indirect, 0);
    use vm_memory::{Bytes, GuestAddress};
    d.mem.write_obj(inner, GuestAddress(table)).unwrap();
    d.post(0, 0);
    d.notify(0);
    assert_eq!(d.pop_used(0), Some((0, 0)));
    // A table length that is not whole descriptors, and one outside RAM.
    for (addr, len) in [(table, 17), (u64::MAX - 15, 16)] {
        d.set_desc(0, 0, addr, len, indirect, 0);
        d.post(0, 0);
        d.notify(0);
        assert_eq!(d.pop_used(0), Some((0, 0)));
    }
    assert!(!d.broken());
}

#[test]
fn state_round_trip_resumes_the_queues() {
    let mut d = rng();
    let buf = d.buffer(8);
    d.submit(0, &[(buf, 8, WRITE)]);
    d.notify(0);
    d.pop_used(0);
    let restored = round_trip(&d.dev, Rng::from_seed(3)).unwrap();
    let state = d.dev.state();
    assert_eq!(restored.state(), state);
    d.dev = restored;
    d.submit(0, &[(buf, 8, WRITE)]);
    assert!(d.notify(0));
    assert_eq!(d.pop_used(0), Some((1, 8)));
    // A snapshot with a queue the device does not have is refused.
    let mut bad = state.clone();
    bad.queues.push(bad.queues[0]);
    assert!(VirtioMmioDevice::restore(Rng::from_seed(3), &bad).is_err());
    let mut bad = state;
    bad.queues[0].size = 3;
    assert!(VirtioMmioDevice::restore(Rng::from_seed(3), &bad).is_err());
}
