//! Helpers for integration tests: building the freestanding guests in tests/guests/
//! and booting them through the same `Vm` exit loop as Linux.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

use vmm::backend::BackendKind;
use vmm::boot::long_mode_entry_state;
use vmm::clock::VirtualTime;
use vmm::machine::{Outcome, Stats, Vm, VmConfig};

/// Where every flat test guest is loaded and entered.
pub const LOAD_ADDR: u64 = 0x10_0000;

/// Assembles and links `tests/guests/<name>.S` into a flat binary (GNU binutils).
pub fn build_guest(name: &str) -> Vec<u8> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/guests/{name}.S"));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guests");
    std::fs::create_dir_all(&out).expect("creating the guest build folder");
    // Unique per build: test binaries, and tests within one binary, build concurrently.
    static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stem = out.join(format!("{name}-{}-{n}", std::process::id()));
    let (obj, elf, bin) = (
        stem.with_extension("o"),
        stem.with_extension("elf"),
        stem.with_extension("bin"),
    );
    let load = format!("-Ttext={LOAD_ADDR:#x}");
    run("as", &["--64", "-o", p(&obj), p(&src)]);
    // -N: text and data back to back, no page alignment gaps in the flat image.
    run("ld", &["-N", &load, "-e", "_start", "-o", p(&elf), p(&obj)]);
    run("objcopy", &["-O", "binary", p(&elf), p(&bin)]);
    let image = std::fs::read(&bin).expect("reading the flat guest");
    for f in [obj, elf, bin] {
        let _ = std::fs::remove_file(f);
    }
    image
}

fn p(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

fn run(tool: &str, args: &[&str]) {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `{tool}` ({e}): the test guests need GNU binutils (apt install binutils)"
        )
    });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What one run of a flat guest produced.
#[derive(Debug)]
pub struct GuestRun {
    pub outcome: Outcome,
    pub console: String,
    pub trace_hash: u64,
    pub decisions: u64,
    pub now: VirtualTime,
    pub stats: Stats,
    pub deterministic: bool,
    pub wall: std::time::Duration,
}

/// Boots `image` on `backend` and runs it to the end (or 10 s of virtual time).
/// The configuration a flat guest boots with, and the booted VM.
pub fn boot_flat(image: &[u8], backend: BackendKind) -> (VmConfig, Vm) {
    let mut config = VmConfig::new(PathBuf::new());
    config.backend = backend;
    config.memory = 64 << 20;
    let vm = Vm::boot_flat(
        &config,
        image,
        LOAD_ADDR,
        long_mode_entry_state(LOAD_ADDR, 0),
    )
    .unwrap_or_else(|e| panic!("booting the flat guest on {backend:?}: {e}"));
    (config, vm)
}

pub fn run_flat(image: &[u8], backend: BackendKind) -> GuestRun {
    let started = std::time::Instant::now();
    let (_, mut vm) = boot_flat(image, backend);
    let mut console = Vec::new();
    let outcome = vm
        .run(VirtualTime::from_millis(10_000), &mut |b| {
            console.extend_from_slice(b)
        })
        .unwrap_or_else(|e| {
            panic!(
                "running the flat guest on {backend:?}: {e}\nconsole so far:\n{}",
                String::from_utf8_lossy(&console)
            )
        });
    GuestRun {
        outcome,
        console: String::from_utf8_lossy(&console).into_owned(),
        trace_hash: vm.trace().value(),
        decisions: vm.trace().decisions(),
        now: vm.now(),
        stats: vm.stats().clone(),
        deterministic: vm.deterministic(),
        wall: started.elapsed(),
    }
}
