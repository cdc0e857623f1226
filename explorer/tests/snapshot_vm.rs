//! The snapshot invariant for one real Linux guest on `emu`: running 0→t2 equals running
//! 0→t1, snapshotting, restoring into a new VM and running t1→t2 (same trace hash, same
//! console, same frames sent), for several t1: mid-boot, during writes to a virtio-blk
//! disk, and with a received frame queued in the NIC at every snapshot.
#![cfg(feature = "emu")]

mod common;

use vmm::clock::VirtualTime;
use vmm::devices::virtio::blk::DiskBacking;
use vmm::devices::virtio::{BlockConfig, VirtioDeviceConfig};
use vmm::machine::{Outcome, Vm, VmConfig};
use vmm::snapshot::VmSnapshot;

const STEP_NS: u64 = 1_000_000;
const MAX_STEPS: u64 = 10_000;
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const PEER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x01];

const BODY: &str = "#!/bin/sh
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up
echo HWRNG $(head -c 4096 /dev/hwrng | sha256sum | cut -c1-16)
echo DISK-START
i=0
while [ $i -lt 12 ]; do
  dd if=/dev/hwrng of=/dev/vda bs=4096 count=8 seek=$((i*8)) conv=fsync 2>/dev/null
  i=$((i+1))
done
echo DISK $(head -c 393216 /dev/vda | sha256sum | cut -c1-16)
echo DISK-END
poweroff -f
";

fn config() -> VmConfig {
    let mut config = VmConfig::new(common::guest_kernel_dir().join("vmlinux"));
    config.initrd = Some(common::busybox_initramfs(BODY));
    config.seed = 11;
    config.cmdline = "quiet".to_string();
    config.devices = vec![
        VirtioDeviceConfig::Block(BlockConfig {
            backing: DiskBacking::Zeroed { bytes: 1 << 20 },
            read_only: false,
            id: "scratch".into(),
        }),
        VirtioDeviceConfig::Net { mac: GUEST_MAC },
    ];
    config
}

/// An ARP request from the peer for the guest's address, numbered by `step`.
fn arp_request(step: u64) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[10, 0, 2, (step % 200) as u8 + 20]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 0, 2, 15]);
    f
}

/// What a run produced, step by step.
#[derive(Default, Debug, PartialEq, Eq)]
struct Output {
    console: Vec<u8>,
    /// (step, frame) for every frame the guest sent.
    frames: Vec<(u64, Vec<u8>)>,
}

/// One step: run to the end of `step`, take the guest's frames, queue the next request
/// (so a frame waits in the NIC at every step boundary). Returns false once stopped.
fn step(vm: &mut Vm, step: u64, out: &mut Output) -> bool {
    let limit = VirtualTime((step + 1) * STEP_NS);
    let outcome = vm
        .run(limit, &mut |b| out.console.extend_from_slice(b))
        .expect("run");
    let net = vm.virtio().net_mut().expect("net");
    for frame in net.take_tx_frames() {
        out.frames.push((step, frame));
    }
    net.push_rx_frame(arp_request(step));
    match outcome {
        Outcome::TimeLimit => true,
        Outcome::PowerOff => false,
        other => panic!("unexpected outcome {other:?}"),
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The disk's written sectors in a snapshot (pending or flushed).
fn disk_writes(snap: &VmSnapshot) -> usize {
    match &snap.state.virtio.devices[1].1 {
        vmm::devices::virtio::DeviceState::Block(b) => b.pending.len() + b.flushed.len(),
        other => panic!("device 1 is {other:?}"),
    }
}

#[test]
fn restored_vm_continues_bit_for_bit() {
    let config = config();
    // The reference: no snapshots at all.
    let mut reference = Vm::boot(&config).expect("boot");
    let mut ref_out = Output::default();
    let mut ref_steps = 0;
    while ref_steps < MAX_STEPS && step(&mut reference, ref_steps, &mut ref_out) {
        ref_steps += 1;
    }
    let console = String::from_utf8_lossy(&ref_out.console).into_owned();
    assert!(console.contains("DISK-END"), "{console}");
    assert!(
        !ref_out.frames.is_empty(),
        "the guest answered no ARP request"
    );

    // The same run, snapshotting at chosen steps: mid-boot (twice), each step of the
    // disk phase until writes are under way, and after it ended (if the guest still runs).
    let mut vm = Vm::boot(&config).expect("boot");
    let mut out = Output::default();
    let mut snaps: Vec<(u64, VmSnapshot, Output)> = Vec::new();
    let mut disk_started_at = None;
    let mut disk_ended_at = None;
    let mut n = 0;
    loop {
        let running = step(&mut vm, n, &mut out);
        if disk_started_at.is_none() && contains(&out.console, "DISK-START") {
            disk_started_at = Some(n);
        }
        if disk_ended_at.is_none() && contains(&out.console, "DISK-END") {
            disk_ended_at = Some(n);
        }
        // Every step once the disk phase began, until one caught writes in progress.
        let writing = snaps.last().is_some_and(|(_, s, _)| disk_writes(s) > 0);
        let wanted = n == 20
            || n == 50
            || (disk_started_at.is_some() && disk_ended_at.is_none() && !writing)
            || disk_ended_at == Some(n);
        if running && wanted {
            let snap = vm.snapshot().expect("snapshot");
            let so_far = Output {
                console: out.console.clone(),
                frames: out.frames.clone(),
            };
            snaps.push((n, snap, so_far));
        }
        n += 1;
        if !running || n >= MAX_STEPS {
            break;
        }
    }
    assert_eq!(n, ref_steps + 1, "the snapshotted run took another path");
    assert_eq!(
        out, ref_out,
        "snapshots changed the run they were taken from"
    );
    assert_eq!(vm.trace().value(), reference.trace().value());
    assert!(
        snaps.len() >= 4,
        "snapshots at steps {:?}",
        snaps.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    for (at, s, _) in &snaps {
        eprintln!(
            "snapshot after step {at}: {} disk sectors written, {} overlay pages",
            disk_writes(s),
            s.memory.pages.len()
        );
    }
    assert!(
        snaps
            .iter()
            .any(|(_, s, _)| disk_writes(s) > 0 && !s.memory.pages.is_empty()),
        "no snapshot during disk writes"
    );

    for (at, snap, so_far) in &snaps {
        let mut restored = Vm::restore(&config, snap).expect("restore");
        assert!(restored.now() >= VirtualTime((at + 1) * STEP_NS));
        let mut out = Output {
            console: so_far.console.clone(),
            frames: so_far.frames.clone(),
        };
        let mut k = at + 1;
        while k < MAX_STEPS && step(&mut restored, k, &mut out) {
            k += 1;
        }
        eprintln!(
            "t1 = {} ms ({} overlay pages, {} disk sectors): trace {:#018x}",
            (at + 1) * STEP_NS / 1_000_000,
            snap.memory.pages.len(),
            disk_writes(snap),
            restored.trace().value()
        );
        assert_eq!(k, ref_steps, "restored at step {at}: ended at another step");
        assert_eq!(
            String::from_utf8_lossy(&out.console),
            String::from_utf8_lossy(&ref_out.console),
            "restored at step {at}: console differs"
        );
        assert_eq!(
            out.frames, ref_out.frames,
            "restored at step {at}: frames differ"
        );
        assert_eq!(
            restored.trace().value(),
            reference.trace().value(),
            "restored at step {at}: trace hash differs"
        );
        assert_eq!(restored.instructions(), reference.instructions());
    }
}
