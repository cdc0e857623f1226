//! Compose `volumes` and `tmpfs` under `detvm run`: ext4 disks and tmpfs mounted in the
//! container before the service starts, read-only where asked, never shared.

mod common;

use std::path::{Path, PathBuf};

use common::cli::{run_detvm as detvm, text};

const CHECK_MOUNTS: &str = r#"#!/bin/sh
set -e
grep -q ' /data ext4 rw' /proc/mounts
grep -q ' /scratch tmpfs ' /proc/mounts
grep -q ' /logs ext4 ro' /proc/mounts
echo hello > /data/file
sync
test "$(cat /data/file)" = hello
if touch /logs/x 2>/dev/null; then echo 'wrote to a read-only volume'; exit 1; fi
echo mounts ok
"#;

fn image(home: &Path, dir: &Path) {
    std::fs::write(dir.join("first_mounts"), CHECK_MOUNTS).unwrap();
    std::fs::write(
        dir.join("vol.toml"),
        "name = \"detvm-test/vol:1\"\n[[files]]\nsrc = \"first_mounts\"\ndest = \"/opt/antithesis/test/v1/main/first_mounts\"\nmode = 0o755\n[config]\ncmd = [\"/bin/sh\", \"-c\", \"while true; do sleep 3600; done\"]\n",
    )
    .unwrap();
    let out = detvm(
        home,
        &["image", "build", dir.join("vol.toml").to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
}

fn compose(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("docker-compose.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn volumes_and_tmpfs_are_mounted_before_the_service_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    image(&home, tmp.path());
    let path = compose(
        tmp.path(),
        "services:\n  box:\n    image: detvm-test/vol:1\n    volumes: [\"data:/data\", \"logs:/logs:ro\"]\n    tmpfs: /scratch\nvolumes:\n  data:\n  logs:\nx-detvm:\n  duration: 1s\n  fault_mode: none\n",
    );
    let json = tmp.path().join("r.json");
    let out = detvm(
        &home,
        &[
            "run",
            path.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let first = report["properties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["message"] == "test command main/first_mounts succeeds")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(first["status"], "passed", "{first:#}");
}

#[test]
fn a_shared_named_volume_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = compose(
        tmp.path(),
        "services:\n  a:\n    image: x:1\n    volumes: [\"data:/d\"]\n  b:\n    image: x:1\n    volumes: [\"data:/d\"]\nvolumes:\n  data:\n",
    );
    let out = detvm(&tmp.path().join("home"), &["run", path.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(4), "{t}");
    assert!(t.contains("volume `data` is also used by `a`"), "{t}");
}
