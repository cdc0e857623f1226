use std::io::Write;

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_DEVICE_FEATURES, VIRTIO_MMIO_DEVICE_FEATURES_SEL};

use super::*;
use crate::devices::virtio::testing::{Driver, WRITE};
use crate::persist::round_trip;

/// A 64-sector image whose sector `i` is filled with byte `i`.
fn image() -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    for i in 0..64u8 {
        f.write_all(&[i; 512]).unwrap();
    }
    f.flush().unwrap();
    f
}

fn disk(file: &tempfile::NamedTempFile, read_only: bool) -> Driver<Block> {
    let config = BlockConfig {
        backing: DiskBacking::File(file.path().to_owned()),
        read_only,
        id: "detvm-rootfs".into(),
    };
    Driver::new(Block::open(&config).unwrap())
}

/// Sends one request; returns (status, used length, data buffer address).
fn request(
    d: &mut Driver<Block>,
    kind: u32,
    sector: u64,
    data: &[u8],
    data_len: u32,
) -> (u8, u32, u64) {
    let hdr = d.buffer(16);
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    d.write(hdr, &h);
    let buf = d.buffer(data_len.max(1) as usize);
    d.write(buf, data);
    let status = d.buffer(1);
    d.write(status, &[0xAA]);
    let dir = if kind == VIRTIO_BLK_T_OUT { 0 } else { WRITE };
    let mut chain = vec![(hdr, 16, 0)];
    if data_len > 0 {
        chain.push((buf, data_len, dir));
    }
    chain.push((status, 1, WRITE));
    d.submit(0, &chain);
    assert!(d.notify(0));
    d.ack();
    let (_, used) = d.pop_used(0).expect("request completed");
    (d.read(status, 1)[0], used, buf)
}

fn read(d: &mut Driver<Block>, sector: u64, len: u32) -> (u8, Vec<u8>) {
    let (status, used, buf) = request(d, VIRTIO_BLK_T_IN, sector, &[], len);
    if status == VIRTIO_BLK_S_OK as u8 {
        assert_eq!(used, len + 1);
    }
    (status, d.read(buf, len as usize))
}

fn write(d: &mut Driver<Block>, sector: u64, data: &[u8]) -> u8 {
    request(d, VIRTIO_BLK_T_OUT, sector, data, data.len() as u32).0
}

fn flush(d: &mut Driver<Block>) -> u8 {
    request(d, VIRTIO_BLK_T_FLUSH, 0, &[], 0).0
}

const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;

#[test]
fn reads_sectors_from_the_image() {
    let f = image();
    let mut d = disk(&f, true);
    assert_eq!(d.device().capacity(), 64);
    let (status, data) = read(&mut d, 3, 1024);
    assert_eq!(status, OK);
    assert_eq!(&data[..512], &[3; 512]);
    assert_eq!(&data[512..], &[4; 512]);
    // Last sector, then one past the end.
    assert_eq!(read(&mut d, 63, 512), (OK, vec![63; 512]));
    assert_eq!(read(&mut d, 64, 512).0, IOERR);
    assert_eq!(read(&mut d, 63, 1024).0, IOERR);
    assert_eq!(read(&mut d, u64::MAX, 512).0, IOERR);
}

#[test]
fn config_and_features_describe_the_disk() {
    let f = image();
    let mut d = disk(&f, true);
    let mut cap = [0u8; 8];
    d.dev.read(0x100, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 64);
    let low_features = |d: &mut Driver<Block>| {
        d.set_reg(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        d.reg(VIRTIO_MMIO_DEVICE_FEATURES)
    };
    let features = low_features(&mut d);
    assert_ne!(features & (1 << VIRTIO_BLK_F_RO), 0);
    assert_eq!(features & (1 << VIRTIO_BLK_F_FLUSH), 0);
    let w = low_features(&mut disk(&f, false));
    assert_eq!(w & (1 << VIRTIO_BLK_F_RO), 0);
    assert_ne!(w & (1 << VIRTIO_BLK_F_FLUSH), 0);
}

#[test]
fn read_only_disk_rejects_writes() {
    let f = image();
    let mut d = disk(&f, true);
    assert_eq!(write(&mut d, 0, &[9; 512]), IOERR);
    assert_eq!(read(&mut d, 0, 512).1, vec![0; 512]);
    assert_eq!(d.device().unflushed_sectors(), 0);
}

#[test]
fn writes_read_back_and_survive_a_crash_only_once_flushed() {
    let f = image();
    let mut d = disk(&f, false);
    assert_eq!(write(&mut d, 5, &[0xF1; 1024]), OK);
    assert_eq!(
        read(&mut d, 5, 1536).1,
        [vec![0xF1; 1024], vec![7; 512]].concat()
    );
    assert_eq!(flush(&mut d), OK);
    assert_eq!(write(&mut d, 6, &[0xE2; 512]), OK);
    assert_eq!(write(&mut d, 9, &[0xE3; 512]), OK);
    assert_eq!(d.device().unflushed_sectors(), 2);
    d.device().crash();
    // Flushed sector 5 stays, unflushed 6 falls back to the flushed copy, 9 to the image.
    let data = read(&mut d, 5, 5 * 512).1;
    assert_eq!(&data[..1024], &[0xF1; 1024][..]);
    assert_eq!(&data[2048..], &[9; 512][..]);
    // The host file is never written.
    assert_eq!(std::fs::read(f.path()).unwrap()[5 * 512], 5);
}

#[test]
fn zeroed_writable_disk() {
    let config = BlockConfig {
        backing: DiskBacking::Zeroed { bytes: 1 << 20 },
        read_only: false,
        id: String::new(),
    };
    let mut d = Driver::new(Block::open(&config).unwrap());
    assert_eq!(d.device().capacity(), 2048);
    assert_eq!(read(&mut d, 2047, 512), (OK, vec![0; 512]));
    assert_eq!(write(&mut d, 2047, &[1; 512]), OK);
    assert_eq!(read(&mut d, 2047, 512), (OK, vec![1; 512]));
}

#[test]
fn get_id_returns_the_serial() {
    let f = image();
    let mut d = disk(&f, true);
    let (status, used, buf) = request(&mut d, VIRTIO_BLK_T_GET_ID, 0, &[], 20);
    assert_eq!((status, used), (OK, 21));
    assert_eq!(&d.read(buf, 20)[..12], b"detvm-rootfs");
    assert_eq!(&d.read(buf, 20)[12..], &[0; 8]);
}

#[test]
fn bad_requests_get_an_error_status() {
    let f = image();
    let mut d = disk(&f, false);
    assert_eq!(
        request(&mut d, 0x7777, 0, &[], 512).0,
        VIRTIO_BLK_S_UNSUPP as u8
    );
    assert_eq!(
        request(&mut d, VIRTIO_BLK_T_DISCARD, 0, &[], 16).0,
        VIRTIO_BLK_S_UNSUPP as u8
    );
    // Not a whole number of sectors.
    assert_eq!(read(&mut d, 0, 100).0, IOERR);
    assert_eq!(write(&mut d, 0, &[1; 100]), IOERR);
    // Header in a device-writable buffer (wrong direction): no header to read.
    let (hdr, status) = (d.buffer(16), d.buffer(1));
    d.submit(0, &[(hdr, 16, WRITE), (status, 1, WRITE)]);
    d.notify(0);
    assert_eq!(d.read(status, 1)[0], IOERR);
    assert!(!d.broken());
}

#[test]
fn oversized_request_is_refused() {
    let f = image();
    let mut d = disk(&f, false);
    let hdr = d.buffer(16);
    d.write(hdr, &[0; 16]); // IN at sector 0
    let status = d.buffer(1);
    // Five 1 MiB descriptors over the same guest buffer: 5 MiB > MAX_REQUEST_BYTES.
    let mut chain = vec![(hdr, 16, 0)];
    chain.extend([(0x10_0000, 1 << 20, WRITE); 5]);
    chain.push((status, 1, WRITE));
    d.submit(0, &chain);
    d.notify(0);
    assert_eq!(d.read(status, 1)[0], IOERR);
    assert_eq!(d.pop_used(0), Some((0, 1)));
}

#[test]
fn chain_without_status_byte_breaks_the_device() {
    let f = image();
    let mut d = disk(&f, false);
    let hdr = d.buffer(16);
    d.submit(0, &[(hdr, 16, 0)]);
    assert!(d.notify(0), "config-change interrupt");
    assert!(d.broken());
    assert_eq!(d.ack(), 2);
    // Broken until reset: further requests are ignored...
    d.submit(0, &[(hdr, 16, 0)]);
    d.notify(0);
    assert_eq!(d.pop_used(0), None);
    // ...and a reset plus a new handshake brings it back.
    d.handshake();
    assert!(!d.broken());
}

#[test]
fn state_round_trip_keeps_both_overlays() {
    let f = image();
    let mut d = disk(&f, false);
    write(&mut d, 1, &[0xAA; 512]);
    flush(&mut d);
    write(&mut d, 2, &[0xBB; 512]);
    let config = |read_only| BlockConfig {
        backing: DiskBacking::File(f.path().to_owned()),
        read_only,
        id: "x".into(),
    };
    let mut restored = round_trip(d.device(), &config(false)).unwrap();
    assert_eq!(restored.state(), d.device().state());
    restored.crash();
    let mut buf = [0u8; 1024];
    restored.read_sectors(1, &mut buf).unwrap();
    assert_eq!(buf[..512], [0xAA; 512]);
    assert_eq!(buf[512..], [2; 512]);
    // A snapshot of a writable disk does not fit a read-only one.
    let state = d.device().state();
    assert!(Block::restore(&config(true), &state).is_err());
}
