//! The guest kernel's patches under a CPU that lacks RDRAND/RDSEED (QEMU TCG,
//! a test tool here): the probe executes RDTSC, RDTSCP, RDRAND and RDSEED
//! directly and must get emulated values instead of SIGSEGV/SIGILL.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn patched_kernel_emulates_rdtsc_and_rdrand_under_qemu() {
    if !common::have_command("qemu-system-x86_64") {
        eprintln!("SKIPPED: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
        return;
    }
    let kernel = common::guest_kernel_dir().join("bzImage");
    let initrd = common::probe_initramfs();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-cpu",
            "qemu64,-rdrand,-rdseed,-rdtscp",
            "-m",
            "256",
        ])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu");

    // QEMU's own DSDT needs PCI, which our kernel lacks, so the guest cannot power
    // QEMU off: read until the probe is done, then stop QEMU.
    let stdout = qemu.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.contains("PROBE-END");
            let _ = tx.send(line);
            if done {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut output = String::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        output.push_str(&line);
        output.push('\n');
        if line.contains("PROBE-END") {
            break;
        }
    }
    let _ = qemu.kill();
    let _ = qemu.wait();

    assert!(
        output.contains("PROBE-END"),
        "the probe did not finish:\n{output}"
    );
    let number = |key| -> u64 {
        common::probe_value(&output, key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key}= in:\n{output}"))
    };
    let (tsc, tscp) = (number("rdtsc"), number("rdtscp"));
    assert!(
        tsc > 0 && tscp >= tsc,
        "RDTSC/RDTSCP not monotonic: {tsc} {tscp}"
    );
    // Emulated from the kernel's monotonic clock in ns: within a minute of boot.
    assert!(
        tscp < 60_000_000_000,
        "RDTSCP is not the kernel clock: {tscp}"
    );
    let cf: Vec<_> = output.lines().filter(|l| l.starts_with("rd")).collect();
    assert!(
        output
            .lines()
            .any(|l| l.starts_with("rdrand=") && l.ends_with("cf=1")),
        "RDRAND not emulated: {cf:?}"
    );
    assert!(
        output
            .lines()
            .any(|l| l.starts_with("rdseed=") && l.ends_with("cf=1")),
        "RDSEED not emulated: {cf:?}"
    );
    assert!(common::probe_value(&output, "urandom").is_some_and(|v| v.len() == 32));
    assert!(common::probe_value(&output, "at_random").is_some_and(|v| v.len() == 32));
}
