#![no_main]

mod harness {
    include!("../harness/snapshot_file.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::run(data);
});
