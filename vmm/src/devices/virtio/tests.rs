//! The collection: addresses, GSIs, the command line, routing, interrupt lines, snapshots.

use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::GuestAddress;

use super::blk::DiskBacking;
use super::testing::{memory, WRITE};
use super::*;
use crate::persist::{round_trip, Persist};

const BASE: u64 = 0xD000_0000;

fn configs() -> Vec<VirtioDeviceConfig> {
    vec![
        VirtioDeviceConfig::Console,
        VirtioDeviceConfig::Block(BlockConfig {
            backing: DiskBacking::Zeroed { bytes: 1 << 20 },
            read_only: false,
            id: "data".into(),
        }),
        VirtioDeviceConfig::Net {
            mac: [2, 0, 0, 0, 0, 1],
        },
    ]
}

fn reg(devs: &mut VirtioDevices, addr: u64) -> u32 {
    let mut b = [0u8; 4];
    devs.mmio_read(addr, &mut b).expect("a virtio address");
    u32::from_le_bytes(b)
}

fn set(devs: &mut VirtioDevices, mem: &GuestMemoryMmap, addr: u64, v: u32) -> bool {
    devs.mmio_write(mem, addr, &v.to_le_bytes())
        .expect("a virtio address")
}

#[test]
fn windows_gsis_and_command_line() {
    let devs = VirtioDevices::from_config(1, &configs()).unwrap();
    assert_eq!(devs.len(), 4);
    assert_eq!(devs.mmio_range(), (BASE, 0x4000));
    assert_eq!(
        devs.cmdline_fragment(),
        "virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 \
         virtio_mmio.device=4K@0xd0002000:7 virtio_mmio.device=4K@0xd0003000:10"
    );
    let kinds: Vec<_> = (0..4).map(|i| devs.device(i).unwrap().kind()).collect();
    assert_eq!(kinds, ["rng", "console", "block", "net"]);
}

#[test]
fn gsis_run_out_after_seventeen_devices() {
    let mut devs = VirtioDevices::new();
    let mut gsis = Vec::new();
    for _ in 0..GSIS.len() {
        gsis.push(devs.add(Console::new()).unwrap().1);
    }
    assert!(!gsis.contains(&8) && !gsis.contains(&9));
    assert_eq!(gsis.last(), Some(&23));
    assert!(matches!(
        devs.add(Console::new()),
        Err(VirtioSetupError::TooManyDevices { .. })
    ));
}

#[test]
fn routes_by_address() {
    let mem = memory();
    let mut devs = VirtioDevices::from_config(1, &configs()).unwrap();
    assert_eq!(reg(&mut devs, BASE), 0x7472_6976);
    assert_eq!(reg(&mut devs, BASE + VIRTIO_MMIO_DEVICE_ID as u64), 4);
    assert_eq!(
        reg(&mut devs, BASE + 0x3000 + VIRTIO_MMIO_DEVICE_ID as u64),
        1
    );
    let mut b = [0u8; 4];
    assert!(devs.mmio_read(BASE + 0x4000, &mut b).is_none());
    assert!(devs.mmio_read(BASE - 4, &mut b).is_none());
    assert!(devs.mmio_read(u64::MAX, &mut b).is_none());
    assert!(devs.mmio_write(mem, BASE + 0x4000, &b).is_none());
}

#[test]
fn interrupt_lines_report_changes_once() {
    let mem = memory();
    let mut devs = VirtioDevices::from_config(1, &[]).unwrap();
    let r = |off: u32| BASE + u64::from(off);
    set(&mut devs, mem, r(VIRTIO_MMIO_STATUS), 3);
    set(&mut devs, mem, r(VIRTIO_MMIO_DRIVER_FEATURES_SEL), 1);
    set(&mut devs, mem, r(VIRTIO_MMIO_DRIVER_FEATURES), 1);
    set(
        &mut devs,
        mem,
        r(VIRTIO_MMIO_STATUS),
        3 | VIRTIO_CONFIG_S_FEATURES_OK,
    );
    let vq = MockSplitQueue::create(mem, GuestAddress(0x1_0000), 16);
    set(&mut devs, mem, r(VIRTIO_MMIO_QUEUE_NUM), 16);
    set(
        &mut devs,
        mem,
        r(VIRTIO_MMIO_QUEUE_DESC_LOW),
        vq.desc_table_addr().0 as u32,
    );
    set(
        &mut devs,
        mem,
        r(VIRTIO_MMIO_QUEUE_AVAIL_LOW),
        vq.avail_addr().0 as u32,
    );
    set(
        &mut devs,
        mem,
        r(VIRTIO_MMIO_QUEUE_USED_LOW),
        vq.used_addr().0 as u32,
    );
    set(&mut devs, mem, r(VIRTIO_MMIO_QUEUE_READY), 1);
    set(
        &mut devs,
        mem,
        r(VIRTIO_MMIO_STATUS),
        7 | VIRTIO_CONFIG_S_FEATURES_OK,
    );
    assert!(devs.take_irq_changes().is_empty());
    let desc = virtio_queue::desc::split::Descriptor::new(0x10_0000, 16, WRITE, 0);
    vq.add_desc_chains(&[desc.into()], 0).unwrap();
    assert!(set(&mut devs, mem, r(VIRTIO_MMIO_QUEUE_NOTIFY), 0));
    assert_eq!(devs.take_irq_changes(), [(5, true)]);
    assert!(devs.take_irq_changes().is_empty());
    assert!(!devs.poll(mem));
    assert!(set(&mut devs, mem, r(VIRTIO_MMIO_INTERRUPT_ACK), 1));
    assert_eq!(devs.take_irq_changes(), [(5, false)]);
}

#[test]
fn host_side_accessors() {
    let mut devs = VirtioDevices::from_config(1, &configs()).unwrap();
    devs.console_mut().unwrap().push_input(b"hi");
    devs.net_mut().unwrap().push_rx_frame(vec![0; 60]);
    devs.crash_disks();
    assert!(VirtioDevices::from_config(1, &[])
        .unwrap()
        .console_mut()
        .is_none());
}

#[test]
fn state_round_trip_with_the_same_configuration() {
    let mut devs = VirtioDevices::from_config(7, &configs()).unwrap();
    devs.console_mut().unwrap().push_input(b"queued");
    devs.net_mut().unwrap().push_rx_frame(vec![1; 60]);
    let restored = round_trip(&devs, &configs()).unwrap();
    let state = devs.state();
    assert_eq!(restored.state(), state);
    assert_eq!(restored.cmdline_fragment(), devs.cmdline_fragment());
    // A different configuration does not fit the snapshot.
    let fewer = &configs()[..2];
    assert!(matches!(
        VirtioDevices::restore(fewer, &state),
        Err(RestoreError::DeviceCount { .. })
    ));
    let mut swapped = configs();
    swapped.swap(0, 2);
    assert!(matches!(
        VirtioDevices::restore(&swapped, &state),
        Err(RestoreError::DeviceKind { .. })
    ));
}

#[test]
fn power_cycle_keeps_disk_contents_and_resets_the_rest() {
    let mut devs = VirtioDevices::from_config(1, &configs()).unwrap();
    let Some(AnyDevice::Block(disk)) = devs.device(2) else {
        panic!("device 2 is the disk");
    };
    let mut state = disk.state();
    state.flushed.push((0, vec![1; 512]));
    state.pending.push((1, vec![2; 512]));
    let VirtioDeviceConfig::Block(cfg) = &configs()[1] else {
        unreachable!()
    };
    *devs.device_mut(2).unwrap() = Block::restore(cfg, &state).unwrap().into();
    devs.console_mut().unwrap().push_input(b"queued");
    devs.net_mut().unwrap().push_rx_frame(vec![0; 60]);

    devs.crash_disks();
    let fresh = devs.power_cycled(1, &configs()).unwrap();
    let Some(AnyDevice::Block(disk)) = fresh.device(2) else {
        panic!("device 2 is the disk");
    };
    let after = disk.state();
    assert_eq!(after.flushed, vec![(0, vec![1; 512])]);
    assert!(
        after.pending.is_empty(),
        "a power cut drops unflushed writes"
    );
    let mut fresh = fresh;
    assert_eq!(fresh.console_mut().unwrap().pending_input(), 0);
    assert_eq!(fresh.net_mut().unwrap().pending_rx(), 0);
    assert_eq!(fresh.cmdline_fragment(), devs.cmdline_fragment());
}
