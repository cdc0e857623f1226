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

/// An initramfs holding static busybox (applets in /bin) with `init_script` as /init,
/// built by `images/guest-probe/build-busybox-initramfs.sh` and cached by the script's hash.
pub fn busybox_initramfs(init_script: &str) -> PathBuf {
    busybox_initramfs_with(init_script, &[])
}

/// As [`busybox_initramfs`], with each of `programs` (static binaries) in /bin too.
pub fn busybox_initramfs_with(init_script: &str, programs: &[PathBuf]) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    init_script.hash(&mut h);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("busybox-init");
    std::fs::create_dir_all(&dir).unwrap();
    // One file per content, written atomically, so parallel tests never race on it.
    let path = dir.join(format!("init-{:016x}.sh", h.finish()));
    if !path.exists() {
        let tmp = dir.join(format!(
            "init-{:016x}.{}.tmp",
            h.finish(),
            std::process::id()
        ));
        std::fs::write(&tmp, init_script).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    let mut build = Command::new(repo_root().join("images/guest-probe/build-busybox-initramfs.sh"));
    for program in programs {
        build.arg("--add").arg(program);
    }
    let out = build
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run build-busybox-initramfs.sh: {e}"));
    assert!(
        out.status.success(),
        "build-busybox-initramfs.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.lines().last().expect("script printed a path").trim())
}

pub mod agent;
