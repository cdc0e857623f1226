//! The transport and the split queue, through whichever device the first byte picks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmm::devices::virtio::torture;

fuzz_target!(|data: &[u8]| {
    torture::run_any(data);
});
