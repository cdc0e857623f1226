//! `detvm boot` as a user runs it: console on stdout, summary on stderr, `--verify`.
#![cfg(feature = "emu")]

mod common;

use std::process::Command;

#[test]
fn boot_prints_console_and_summary_and_verifies_determinism() {
    let out = Command::new(env!("CARGO_BIN_EXE_detvm"))
        .args(["boot", "--seed", "5", "--verify", "--kernel"])
        .arg(common::guest_kernel_dir().join("vmlinux"))
        .arg("--initrd")
        .arg(common::probe_initramfs())
        .output()
        .expect("run detvm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("PROBE-END"), "{stdout}");
    assert!(stderr.contains("PowerOff at virtual time"), "{stderr}");
    assert!(
        stderr.contains("MIPS") && stderr.contains("trace hash"),
        "{stderr}"
    );
    assert!(
        stderr.contains("a second run gave the same trace hash"),
        "{stderr}"
    );
}
