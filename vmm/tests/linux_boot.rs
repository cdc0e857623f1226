//! Linux boots on every backend the doctor finds sound here: `emu` wherever it is built,
//! `kvm` only on hosts with real hardware virtualization. One test body, parameterized
//! by backend, so a bare-metal host runs the same checks as CI.

use std::path::{Path, PathBuf};
use std::process::Command;

use vmm::backend::BackendKind;
use vmm::clock::VirtualTime;
use vmm::machine::{Outcome, Vm, VmConfig};

/// Runs a repository script that prints a path on its last stdout line.
fn script_path(script: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(root.join(script))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.lines().last().expect("a path").trim())
}

fn boot(backend: BackendKind, kernel: &Path, initrd: &Path) -> (Outcome, String, u64) {
    let mut config = VmConfig::new(kernel.to_path_buf());
    config.initrd = Some(initrd.to_path_buf());
    config.backend = backend;
    let mut vm = Vm::boot(&config).unwrap_or_else(|e| panic!("{backend:?}: {e}"));
    let mut console = Vec::new();
    let outcome = vm
        .run(VirtualTime::from_millis(120_000), &mut |b| {
            console.extend_from_slice(b)
        })
        .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
    (
        outcome,
        String::from_utf8_lossy(&console).into_owned(),
        vm.trace().value(),
    )
}

#[test]
fn linux_boots_to_init_and_powers_off_on_every_sound_backend() {
    let backends = vmm::doctor::sound_backends();
    if let Some(reason) = vmm::doctor::kvm_unsound_reason() {
        eprintln!("kvm not covered here: {reason}");
    }
    if backends.is_empty() {
        eprintln!("skipped: no sound backend in this build on this host");
        return;
    }
    let kernel = script_path("images/kernel/build.sh").join("vmlinux");
    let initrd = script_path("images/guest-probe/build.sh");
    for backend in backends {
        let (outcome, console, hash) = boot(backend, &kernel, &initrd);
        assert!(
            console.contains("PROBE-END"),
            "{backend:?}: {outcome:?}\n{console}"
        );
        assert!(
            matches!(outcome, Outcome::PowerOff | Outcome::Halted),
            "{backend:?}: {outcome:?}"
        );
        let (_, again, hash_again) = boot(backend, &kernel, &initrd);
        assert_eq!(again, console, "{backend:?}: console differs between runs");
        assert_eq!(
            hash_again, hash,
            "{backend:?}: trace hash differs between runs"
        );
    }
}
