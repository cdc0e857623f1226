//! Booting the real guest kernel with a busybox /init that uses each virtio device:
//! hwrng, a read-only squashfs disk, a writable disk with flush and crash semantics,
//! networking against a host-side peer, the virtio console, and determinism with all of
//! them active.
#![cfg(feature = "emu")]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use vmm::clock::VirtualTime;
use vmm::devices::virtio::blk::DiskBacking;
use vmm::devices::virtio::{AnyDevice, BlockConfig, VirtioDeviceConfig};
use vmm::machine::{Outcome, Vm, VmConfig};

/// Mounts the pseudo file systems and points the shell's stdio at the serial console
/// (the initramfs has no /dev/console node, so the kernel could not open one for /init).
const PRELUDE: &str = "#!/bin/sh
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo DETVM-INIT-START
";
const EPILOGUE: &str = "echo DETVM-INIT-END
poweroff -f
";

/// The longest any of these guests may run, in virtual time.
const MAX_VIRTUAL: VirtualTime = VirtualTime(120_000_000_000);

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const PEER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x01];
const GUEST_IP: [u8; 4] = [10, 0, 2, 15];
const PEER_IP: [u8; 4] = [10, 0, 2, 1];

struct Run {
    outcome: Outcome,
    console: String,
    vm: Vm,
    wall: Duration,
}

fn config(body: &str, seed: u64, devices: Vec<VirtioDeviceConfig>) -> VmConfig {
    let script = format!("{PRELUDE}{body}\n{EPILOGUE}");
    let mut config = VmConfig::new(common::guest_kernel_dir().join("vmlinux"));
    config.initrd = Some(common::busybox_initramfs(&script));
    config.seed = seed;
    config.cmdline = "quiet".to_string();
    config.devices = devices;
    config
}

/// Boots and runs to the end in one go.
fn run(body: &str, seed: u64, devices: Vec<VirtioDeviceConfig>) -> Run {
    run_sliced(body, seed, devices, MAX_VIRTUAL, |_| {})
}

/// Boots and runs in slices of `step` virtual time, calling `between` after each slice
/// that ended at its time limit (the host side of the devices acts there).
fn run_sliced(
    body: &str,
    seed: u64,
    devices: Vec<VirtioDeviceConfig>,
    step: VirtualTime,
    mut between: impl FnMut(&mut Vm),
) -> Run {
    let config = config(body, seed, devices);
    let start = Instant::now();
    let mut vm = Vm::boot(&config).expect("boot");
    let mut console = Vec::new();
    let mut limit = VirtualTime::ZERO;
    let outcome = loop {
        limit = limit.saturating_add(step.as_nanos()).min(MAX_VIRTUAL);
        let outcome = vm
            .run(limit, &mut |b| console.extend_from_slice(b))
            .expect("run");
        if outcome != Outcome::TimeLimit || limit >= MAX_VIRTUAL {
            break outcome;
        }
        between(&mut vm);
    };
    Run {
        outcome,
        console: String::from_utf8_lossy(&console).into_owned(),
        vm,
        wall: start.elapsed(),
    }
}

/// The rest of the console line that starts with `key ` (the last such line).
fn line_value<'a>(console: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("{key} ");
    console
        .lines()
        .rev()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(prefix.as_str()))
}

fn assert_clean_end(r: &Run) {
    assert!(r.console.contains("DETVM-INIT-START"), "{}", r.console);
    assert!(r.console.contains("DETVM-INIT-END"), "{}", r.console);
    assert_eq!(r.outcome, Outcome::PowerOff, "{}", r.console);
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("virtio-linux")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A squashfs image holding `hello.txt` with `text`.
fn squashfs_image(name: &str, text: &str) -> PathBuf {
    assert!(
        common::have_command("mksquashfs"),
        "mksquashfs is missing (squashfs-tools; scripts/setup.sh installs it)"
    );
    let dir = scratch_dir(name);
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello.txt"), text).unwrap();
    let img = dir.join("image.squashfs");
    let out = std::process::Command::new("mksquashfs")
        .arg(&src)
        .arg(&img)
        .args([
            "-noappend",
            "-all-root",
            "-mkfs-time",
            "0",
            "-all-time",
            "0",
            "-no-progress",
            "-quiet",
        ])
        .output()
        .expect("run mksquashfs");
    assert!(
        out.status.success(),
        "mksquashfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

fn block(backing: DiskBacking, read_only: bool, id: &str) -> VirtioDeviceConfig {
    VirtioDeviceConfig::Block(BlockConfig {
        backing,
        read_only,
        id: id.to_string(),
    })
}

// ---------------------------------------------------------------------------- hwrng

const HWRNG_BODY: &str = "
echo RNG_CURRENT $(cat /sys/class/misc/hw_random/rng_current)
echo HWRNG $(head -c 1048576 /dev/hwrng | sha256sum | cut -d' ' -f1)
";

#[test]
fn hwrng_follows_the_seed() {
    let a = run(HWRNG_BODY, 1, vec![]);
    assert_clean_end(&a);
    assert_eq!(
        line_value(&a.console, "RNG_CURRENT"),
        Some("virtio_rng.0"),
        "{}",
        a.console
    );
    let hash = |r: &Run| line_value(&r.console, "HWRNG").map(str::to_owned);
    let ha = hash(&a).expect("HWRNG line");
    assert_eq!(ha.len(), 64, "{}", a.console);
    // sha256 of 1 MiB of zeroes and of nothing: the read must have returned real data.
    assert_ne!(
        ha,
        "30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58"
    );
    assert_ne!(
        ha,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let again = run(HWRNG_BODY, 1, vec![]);
    assert_eq!(hash(&again), Some(ha.clone()), "same seed, same bytes");
    let other = run(HWRNG_BODY, 2, vec![]);
    assert_clean_end(&other);
    assert_ne!(hash(&other), Some(ha), "another seed, other bytes");
    eprintln!("hwrng: 1 MiB read, {:?} wall per boot", a.wall);
}

// ------------------------------------------------------------------- blk read-only

#[test]
fn blk_read_only_squashfs_mounts_and_reads() {
    let text = "hello from a squashfs disk, 42\n";
    let img = squashfs_image("ro", text);
    let body = "
echo RO $(cat /sys/block/vda/ro)
echo SERIAL $(cat /sys/block/vda/serial)
mount -t squashfs -o ro /dev/vda /mnt && echo MOUNTED
echo FILE $(cat /mnt/hello.txt)
if echo x | dd of=/dev/vda conv=fsync 2>/dev/null; then echo WRITE allowed; else echo WRITE refused; fi
";
    let r = run(
        body,
        1,
        vec![block(DiskBacking::File(img), true, "detvm-rootfs")],
    );
    assert_clean_end(&r);
    assert_eq!(line_value(&r.console, "RO"), Some("1"), "{}", r.console);
    assert_eq!(
        line_value(&r.console, "SERIAL"),
        Some("detvm-rootfs"),
        "{}",
        r.console
    );
    assert!(r.console.contains("MOUNTED"), "{}", r.console);
    assert_eq!(
        line_value(&r.console, "FILE"),
        Some(text.trim_end()),
        "{}",
        r.console
    );
    assert_eq!(
        line_value(&r.console, "WRITE"),
        Some("refused"),
        "{}",
        r.console
    );
}

// ------------------------------------------------------------------- blk writable

/// 64 lines of 19 bytes: 1216 bytes, sectors 0..=2 (the third partly).
fn flushed_pattern() -> Vec<u8> {
    (0..64)
        .flat_map(|i| format!("detvm-flushed-{i:04}\n").into_bytes())
        .collect()
}

const BLK_RW_BODY: &str = "
i=0; while [ $i -lt 64 ]; do printf 'detvm-flushed-%04d\\n' $i; i=$((i+1)); done > /tmp/pat
echo PATTERN $(sha256sum < /tmp/pat | cut -d' ' -f1)
dd if=/tmp/pat of=/dev/vda conv=fsync,notrunc 2>/dev/null && echo FSYNC ok
printf 'detvm-unflushed\\n' > /tmp/u
dd if=/tmp/u of=/dev/vda bs=512 seek=1024 conv=sync,notrunc 2>/dev/null
blockdev --flushbufs /dev/vda && echo FLUSHBUFS ok
echo READBACK $(head -c $(wc -c < /tmp/pat) /dev/vda | sha256sum | cut -d' ' -f1)
echo FIRST $(head -n 1 /dev/vda)
echo UNFLUSHED $(dd if=/dev/vda bs=512 skip=1024 count=1 2>/dev/null | head -n 1)
";

#[test]
fn blk_writable_flushed_data_survives_a_crash() {
    let mut r = run(
        BLK_RW_BODY,
        1,
        vec![block(
            DiskBacking::Zeroed { bytes: 1 << 20 },
            false,
            "scratch",
        )],
    );
    assert_clean_end(&r);
    let pattern = flushed_pattern();
    let pattern_hash = sha256_hex(&pattern);
    assert_eq!(
        line_value(&r.console, "PATTERN"),
        Some(pattern_hash.as_str()),
        "{}",
        r.console
    );
    assert_eq!(line_value(&r.console, "FSYNC"), Some("ok"), "{}", r.console);
    assert_eq!(
        line_value(&r.console, "FLUSHBUFS"),
        Some("ok"),
        "{}",
        r.console
    );
    // Read back through the device after the page cache was dropped.
    assert_eq!(
        line_value(&r.console, "READBACK"),
        Some(pattern_hash.as_str()),
        "{}",
        r.console
    );
    assert_eq!(
        line_value(&r.console, "FIRST"),
        Some("detvm-flushed-0000"),
        "{}",
        r.console
    );
    assert_eq!(
        line_value(&r.console, "UNFLUSHED"),
        Some("detvm-unflushed"),
        "{}",
        r.console
    );

    let read = |vm: &mut Vm, sector: u64, len: usize| -> Vec<u8> {
        let Some(AnyDevice::Block(disk)) = vm.virtio().device(1) else {
            panic!("device 1 is not the disk");
        };
        let mut buf = vec![0u8; len];
        disk.read_sectors(sector, &mut buf).unwrap();
        buf
    };
    let unflushed = |vm: &mut Vm| match vm.virtio().device(1) {
        Some(AnyDevice::Block(disk)) => disk.unflushed_sectors(),
        _ => panic!("device 1 is not the disk"),
    };
    // Before the crash the host sees what the guest sees, including the written-back
    // sector that no FLUSH covered.
    assert!(unflushed(&mut r.vm) >= 1);
    assert_eq!(&read(&mut r.vm, 0, 1536)[..pattern.len()], &pattern[..]);
    assert!(read(&mut r.vm, 1024, 512).starts_with(b"detvm-unflushed\n"));

    r.vm.virtio().crash_disks();
    assert_eq!(unflushed(&mut r.vm), 0);
    let after = read(&mut r.vm, 0, 1536);
    assert_eq!(
        &after[..pattern.len()],
        &pattern[..],
        "flushed data survives"
    );
    assert!(after[pattern.len()..].iter().all(|&b| b == 0));
    assert!(
        read(&mut r.vm, 1024, 512).iter().all(|&b| b == 0),
        "the unflushed sector is lost in the crash"
    );
}

fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

// ----------------------------------------------------------------------------- net

/// A host-side peer at PEER_IP/PEER_MAC: answers ARP requests for its address and
/// ICMP echo requests to it. Counts what it saw.
#[derive(Default)]
struct Peer {
    tx_frames: u64,
    tx_bytes: u64,
    arp_replies: u64,
    echo_replies: u64,
}

impl Peer {
    fn serve(&mut self, vm: &mut Vm) {
        let net = vm.virtio().net_mut().expect("net device");
        for frame in net.take_tx_frames() {
            self.tx_frames += 1;
            self.tx_bytes += frame.len() as u64;
            if let Some(reply) = self.answer(&frame) {
                net.push_rx_frame(reply);
            }
        }
    }

    fn answer(&mut self, f: &[u8]) -> Option<Vec<u8>> {
        if f.len() < 14 {
            return None;
        }
        match u16::from_be_bytes([f[12], f[13]]) {
            0x0806 => {
                let a = f.get(14..42)?;
                // Ethernet/IPv4 request for the peer's address.
                if a[0..8] != [0, 1, 8, 0, 6, 4, 0, 1] || a[24..28] != PEER_IP {
                    return None;
                }
                let mut r = Vec::with_capacity(42);
                r.extend_from_slice(&f[6..12]);
                r.extend_from_slice(&PEER_MAC);
                r.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
                r.extend_from_slice(&PEER_MAC);
                r.extend_from_slice(&PEER_IP);
                r.extend_from_slice(&a[8..14]); // sender MAC
                r.extend_from_slice(&a[14..18]); // sender IP
                self.arp_replies += 1;
                Some(r)
            }
            0x0800 => {
                let ip = &f[14..];
                let ihl = usize::from(ip.first()? & 0xf) * 4;
                let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
                if ip.len() < total || total < ihl + 8 || ip[9] != 1 || ip[16..20] != PEER_IP {
                    return None;
                }
                if ip[ihl] != 8 {
                    return None; // not an echo request
                }
                let mut r = f[..14 + total].to_vec();
                r[0..6].copy_from_slice(&f[6..12]);
                r[6..12].copy_from_slice(&PEER_MAC);
                let rip = &mut r[14..];
                rip.copy_within(12..16, 16); // dst = guest
                rip[12..16].copy_from_slice(&PEER_IP);
                // The header checksum is unchanged: the same words, swapped.
                let icmp = &mut rip[ihl..total];
                icmp[0] = 0; // echo reply
                icmp[2] = 0;
                icmp[3] = 0;
                let sum = checksum(icmp);
                icmp[2..4].copy_from_slice(&sum.to_be_bytes());
                self.echo_replies += 1;
                Some(r)
            }
            _ => None,
        }
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn net_body() -> String {
    let ip = |a: [u8; 4]| format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]);
    format!(
        "
ip link set lo up
ip link set eth0 up
ip addr add {}/24 dev eth0
echo MAC $(cat /sys/class/net/eth0/address)
ping -c 3 -W 5 {} | grep -E 'transmitted|bytes from' | sed 's/^/PING /'
",
        ip(GUEST_IP),
        ip(PEER_IP)
    )
}

/// 10 ms of virtual time between host-side turns.
const NET_STEP: VirtualTime = VirtualTime(10_000_000);

#[test]
fn net_pings_a_host_side_peer() {
    assert_eq!(GUEST_IP[..3], PEER_IP[..3]);
    let mut peer = Peer::default();
    let mut r = run_sliced(
        &net_body(),
        1,
        vec![VirtioDeviceConfig::Net { mac: GUEST_MAC }],
        NET_STEP,
        |vm| peer.serve(vm),
    );
    assert_clean_end(&r);
    let stats = r.vm.virtio().net_mut().unwrap().stats().clone();
    assert_eq!((stats.rx_dropped, stats.tx_dropped), (0, 0), "{stats:?}");
    assert_eq!(
        line_value(&r.console, "MAC"),
        Some("52:54:00:12:34:56"),
        "{}",
        r.console
    );
    assert!(
        r.console
            .contains("PING 3 packets transmitted, 3 packets received, 0% packet loss"),
        "{}",
        r.console
    );
    assert!(peer.arp_replies >= 1);
    assert_eq!(peer.echo_replies, 3);
}

// ------------------------------------------------------------------------- console

/// The guest sends one protocol frame (magic "dv", version 1, length 16 LE, payload)
/// and reads the host's framed reply (8-byte header + 15-byte payload).
const CONSOLE_BODY: &str = r"
exec 3<>/dev/hvc0
stty -F /dev/hvc0 raw -echo
printf 'dv\001\000\020\000\000\000hello-from-guest' >&3
reply=$(dd bs=1 count=23 <&3 2>/dev/null | tail -c 15)
echo HVC got:$reply
";

/// The host side of the console exchange: decode the guest's frames, answer the first.
#[derive(Default)]
struct FramedPeer {
    decoder: detvm_protocol::frame::Decoder,
    received: Vec<Vec<u8>>,
    raw: Vec<u8>,
}

impl FramedPeer {
    fn serve(&mut self, console: &mut vmm::devices::virtio::console::Console) {
        let bytes = console.take_output();
        self.raw.extend_from_slice(&bytes);
        self.decoder.push(&bytes);
        while let Some(frame) = self.decoder.next_frame() {
            self.received
                .push(frame.expect("the guest sent a well-formed frame"));
            if self.received.len() == 1 {
                console.push_input(&detvm_protocol::frame::encode(b"reply-from-host").unwrap());
            }
        }
    }
}

#[test]
fn console_exchanges_framed_messages_with_the_host() {
    let mut peer = FramedPeer::default();
    let r = run_sliced(
        CONSOLE_BODY,
        1,
        vec![VirtioDeviceConfig::Console],
        NET_STEP,
        |vm| peer.serve(vm.virtio().console_mut().expect("console device")),
    );
    assert_clean_end(&r);
    assert_eq!(peer.received, vec![b"hello-from-guest".to_vec()]);
    assert_eq!(
        line_value(&r.console, "HVC"),
        Some("got:reply-from-host"),
        "{}",
        r.console
    );
}

// -------------------------------------------------------------------- determinism

/// Every device at once: hwrng, a read-only squashfs disk (vda), a writable disk (vdb),
/// the console and the network.
fn all_devices_body() -> String {
    format!(
        "
echo HWRNG $(head -c 65536 /dev/hwrng | sha256sum | cut -d' ' -f1)
mount -t squashfs -o ro /dev/vda /mnt && echo FILE $(cat /mnt/hello.txt)
dd if=/dev/hwrng of=/dev/vdb bs=4096 count=16 conv=fsync 2>/dev/null
blockdev --flushbufs /dev/vdb
echo VDB $(head -c 65536 /dev/vdb | sha256sum | cut -d' ' -f1)
{}
{}
",
        net_body(),
        CONSOLE_BODY
    )
}

struct AllDevices {
    console: String,
    trace: u64,
    host_console: Vec<u8>,
    tx_frames: u64,
    wall: Duration,
}

fn run_all_devices(img: &std::path::Path, seed: u64) -> AllDevices {
    let mut peer = Peer::default();
    let mut console_peer = FramedPeer::default();
    let r = run_sliced(
        &all_devices_body(),
        seed,
        vec![
            block(DiskBacking::File(img.to_path_buf()), true, "rootfs"),
            block(DiskBacking::Zeroed { bytes: 1 << 20 }, false, "scratch"),
            VirtioDeviceConfig::Console,
            VirtioDeviceConfig::Net { mac: GUEST_MAC },
        ],
        NET_STEP,
        |vm| {
            peer.serve(vm);
            console_peer.serve(vm.virtio().console_mut().expect("console device"));
        },
    );
    assert_clean_end(&r);
    assert!(r.console.contains("FILE all devices"), "{}", r.console);
    assert!(r.console.contains("3 packets received"), "{}", r.console);
    assert_eq!(
        line_value(&r.console, "HVC"),
        Some("got:reply-from-host"),
        "{}",
        r.console
    );
    AllDevices {
        console: r.console,
        trace: r.vm.trace().value(),
        host_console: console_peer.raw,
        tx_frames: peer.tx_frames,
        wall: r.wall,
    }
}

fn assert_all_devices_deterministic(runs: usize) {
    let img = squashfs_image("all", "all devices\n");
    let first = run_all_devices(&img, 5);
    for i in 1..runs {
        let again = run_all_devices(&img, 5);
        assert_eq!(again.console, first.console, "run {i}: console differs");
        assert_eq!(again.trace, first.trace, "run {i}: trace hash differs");
        assert_eq!(again.host_console, first.host_console);
        assert_eq!(again.tx_frames, first.tx_frames);
    }
    eprintln!(
        "all devices: {runs} runs, {:?} wall for the first",
        first.wall
    );
    let other = run_all_devices(&img, 6);
    assert_ne!(
        line_value(&other.console, "HWRNG"),
        line_value(&first.console, "HWRNG")
    );
    assert_ne!(
        line_value(&other.console, "VDB"),
        line_value(&first.console, "VDB")
    );
}

/// Ten runs with one seed (about 3 s each in release), then one with another seed.
#[test]
fn all_devices_same_seed_same_console_and_trace() {
    assert_all_devices_deterministic(10);
}

// ---------------------------------------------------------------------- throughput

/// Host wall time, virtual time and exits between two console markers.
struct Phase {
    wall: Duration,
    virt_ns: u64,
    exits: u64,
}

fn exits(vm: &Vm) -> u64 {
    let s = vm.stats();
    s.pio_reads + s.pio_writes + s.mmio_reads + s.mmio_writes
}

/// Runs `body` in slices of `step`, serving the network peer, and measures the phase
/// between the console lines `MARK-A` and `MARK-B`.
fn measure(body: &str, devices: Vec<VirtioDeviceConfig>, step: VirtualTime) -> (Phase, String) {
    let config = config(body, 1, devices);
    let mut vm = Vm::boot(&config).expect("boot");
    let mut console = Vec::new();
    let mut peer = Peer::default();
    let mut limit = VirtualTime::ZERO;
    let mut start: Option<(Instant, VirtualTime, u64)> = None;
    let mut phase = None;
    let outcome = loop {
        limit = limit.saturating_add(step.as_nanos()).min(MAX_VIRTUAL);
        let outcome = vm
            .run(limit, &mut |b| console.extend_from_slice(b))
            .expect("run");
        let text = String::from_utf8_lossy(&console);
        if start.is_none() && text.contains("MARK-A") {
            start = Some((Instant::now(), vm.now(), exits(&vm)));
        }
        if phase.is_none() && text.contains("MARK-B") {
            let (t, v, e) = start.expect("MARK-A before MARK-B");
            phase = Some(Phase {
                wall: t.elapsed(),
                virt_ns: vm.now().saturating_sub(v),
                exits: exits(&vm) - e,
            });
        }
        if outcome != Outcome::TimeLimit || limit >= MAX_VIRTUAL {
            break outcome;
        }
        if vm.virtio().net_mut().is_some() {
            peer.serve(&mut vm);
        }
    };
    let console = String::from_utf8_lossy(&console).into_owned();
    assert_eq!(outcome, Outcome::PowerOff, "{console}");
    (phase.expect("both markers"), console)
}

fn report(what: &str, bytes: u64, p: &Phase) {
    let mb = bytes as f64 / (1 << 20) as f64;
    eprintln!(
        "{what}: {mb:.0} MiB, host wall {:.3} s = {:.1} MiB/s, virtual {:.3} s = {:.1} MiB/s, \
         {} exits = {:.0} exits/MiB",
        p.wall.as_secs_f64(),
        mb / p.wall.as_secs_f64(),
        p.virt_ns as f64 / 1e9,
        mb / (p.virt_ns as f64 / 1e9),
        p.exits,
        p.exits as f64 / mb
    );
}

/// Throughput numbers for docs/benchmarks.md; run with `--ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn virtio_throughput() {
    // Reads of 64 MiB from a disk (1 MiB requests from dd; the kernel splits them).
    let blk_mib = 64;
    let body = format!(
        "echo MARK-A\ndd if=/dev/vda of=/dev/null bs=1M count={blk_mib} 2>/dev/null\necho MARK-B\n"
    );
    let (p, _) = measure(
        &body,
        vec![block(
            DiskBacking::Zeroed {
                bytes: blk_mib << 20,
            },
            true,
            "bench",
        )],
        VirtualTime(1_000_000),
    );
    report("virtio-blk read", blk_mib << 20, &p);

    // Ping-pong with 1400-byte payloads against the host peer, one turn per 100 µs.
    let count = 2000u64;
    let body = format!(
        "{}echo MARK-A\nping -A -q -s 1400 -c {count} 10.0.2.1 | grep transmitted\necho MARK-B\n",
        net_body()
    );
    let (p, console) = measure(
        &body,
        vec![VirtioDeviceConfig::Net { mac: GUEST_MAC }],
        VirtualTime(100_000),
    );
    assert!(
        console.contains(&format!("{count} packets received")),
        "{console}"
    );
    // Each ping is one 1442-byte frame out and one back.
    report(
        "virtio-net ping -A -s 1400 (both directions)",
        count * 2 * 1442,
        &p,
    );
}
