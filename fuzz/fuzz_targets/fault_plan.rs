#![no_main]

mod harness {
    include!("../harness/fault_plan.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::run(data);
});
