//! `detvm boot` with bad input: a clear message naming what to fix, a distinct exit
//! code, never a panic.

mod common;

use std::process::Command;

fn detvm_boot(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_detvm"))
        .arg("boot")
        .args(args)
        .output()
        .expect("run detvm");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "detvm panicked: {stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn missing_initramfs_is_named() {
    let kernel = common::guest_kernel_dir().join("vmlinux");
    let kernel = kernel.to_str().unwrap();
    let (code, err) = detvm_boot(&["--kernel", kernel, "--initrd", "/nonexistent/initrd"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("/nonexistent/initrd"), "{err}");
}

#[test]
fn missing_kernel_is_named() {
    let (code, err) = detvm_boot(&[
        "--kernel",
        "/nonexistent/vmlinux",
        "--initrd",
        "/etc/hostname",
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("cannot read the kernel /nonexistent/vmlinux"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_kernel_is_rejected() {
    let (code, err) = detvm_boot(&["--kernel", "/etc/hostname", "--initrd", "/etc/hostname"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("/etc/hostname is not a bootable x86-64 Linux kernel"),
        "{err}"
    );
}

#[test]
fn too_little_memory_says_what_to_raise() {
    let (code, err) = detvm_boot(&[
        "--memory",
        "8",
        "--kernel",
        "/etc/hostname",
        "--initrd",
        "/etc/hostname",
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("too small") && err.contains("--memory"),
        "{err}"
    );
}

#[test]
fn bad_epoch_and_vcpu_count_are_rejected() {
    let (code, err) = detvm_boot(&[
        "--epoch",
        "tomorrow",
        "--kernel",
        "/etc/hostname",
        "--initrd",
        "/etc/hostname",
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("--epoch"), "{err}");
    let (code, err) = detvm_boot(&[
        "--vcpus",
        "0",
        "--kernel",
        "/etc/hostname",
        "--initrd",
        "/etc/hostname",
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("vCPUs"), "{err}");
}
