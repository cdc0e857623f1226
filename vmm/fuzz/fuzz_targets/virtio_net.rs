//! virtio-net request parsing, behind the transport and a hostile queue.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmm::devices::virtio::torture::{self, Kind};

fuzz_target!(|data: &[u8]| {
    torture::run(Kind::Net, data);
});
