//! Shared helpers for integration tests that boot real guests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs a repository script that prints a path on its last line of stdout.
fn script_output_path(script: &str) -> PathBuf {
    let out = Command::new(repo_root().join(script))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.lines().last().expect("script printed a path").trim())
}

/// The cached guest kernel folder (bzImage, vmlinux), built on first use.
pub fn guest_kernel_dir() -> PathBuf {
    script_output_path("images/kernel/build.sh")
}

/// An initramfs whose /init is the guest probe program.
pub fn probe_initramfs() -> PathBuf {
    script_output_path("images/guest-probe/build.sh")
}

pub fn have_command(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The value of `key=` in a probe output line such as `rdrand=… cf=1`.
pub fn probe_value<'a>(output: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("{key}=");
    output
        .split_whitespace()
        .find_map(|word| word.strip_prefix(needle.as_str()))
}
