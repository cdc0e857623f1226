//! virtio-blk request parsing (writable and read-only disks), behind the transport.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmm::devices::virtio::torture::{self, Kind};

fuzz_target!(|data: &[u8]| {
    let (kind, rest) = match data.split_first() {
        Some((b, rest)) if b % 2 == 1 => (Kind::ReadOnlyBlock, rest),
        _ => (Kind::Block, data.get(1..).unwrap_or(&[])),
    };
    torture::run(kind, rest);
});
