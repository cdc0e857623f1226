//! Helpers shared by the integration tests: tool checks, shell scripts, squashfs listings.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// True when every tool is on PATH; otherwise prints why the test is skipped.
pub fn have(test: &str, tools: &[&str]) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in tools {
        if !std::env::split_paths(&path).any(|d| d.join(tool).is_file()) {
            eprintln!("SKIP {test}: `{tool}` is not installed (scripts/setup.sh installs it)");
            return false;
        }
    }
    true
}

/// Runs a bash script in `dir`; panics with its output if it fails.
pub fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "script failed in {}:\n{script}\n{text}",
        dir.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `unsquashfs -lln` as `mode owner size path[ -> target]` lines (sizes of folders left out:
/// they are squashfs bookkeeping). Times are all the epoch, which the first line checks.
pub fn listing(sqfs: &Path) -> Vec<String> {
    let out = Command::new("unsquashfs")
        .arg("-lln")
        .arg(sqfs)
        .output()
        .expect("unsquashfs");
    assert!(out.status.success(), "unsquashfs -lln {}", sqfs.display());
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let t: Vec<&str> = line.split_whitespace().collect();
            let device = t[0].starts_with('c') || t[0].starts_with('b');
            let (size, date, rest) = if device {
                (format!("{}{}", t[2], t[3]), t[4], 6)
            } else {
                (t[2].to_string(), t[3], 5)
            };
            assert_eq!(date, "1970-01-01", "times must be the epoch: {line}");
            let size = if t[0].starts_with('d') {
                "-".to_string()
            } else {
                size
            };
            let path = t[rest..].join(" ");
            let path = path.strip_prefix("squashfs-root").unwrap_or(&path);
            format!(
                "{} {} {} {}",
                t[0],
                t[1],
                size,
                if path.is_empty() { "/" } else { path }
            )
        })
        .collect()
}

/// The umoci/skopeo fixture (tests/fixture.sh), made once per test binary.
pub fn fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixture.sh");
        sh(&dir, &format!("bash {}", script.display()));
        dir
    })
}

pub fn store() -> (tempfile::TempDir, detvm_images::Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = detvm_images::Store::open(dir.path().join("images")).expect("open store");
    (dir, store)
}
