//! Snapshots and replay of a whole compose run (issue: snapshots and forks), end to end
//! with the `detvm` binary on the kv example: `detvm run --snapshot-at` saves the World
//! and the runner; `detvm replay RUN@VTIME` from a snapshot reaches the same trace hash
//! and the same events as the run itself and as a replay from boot; a corrupted or
//! truncated snapshot is refused before anything runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::cli::{example_home, read_json, text};
use serde_json::Value;

const KV: &str = "examples/kv/docker-compose.yaml";

fn home() -> PathBuf {
    example_home("replay-home", "examples/kv/build-images.sh")
}

fn detvm(home: &Path, args: &[&str]) -> Output {
    common::cli::run_detvm(home, args)
}

fn replay(home: &Path, moment: &str, extra: &[&str], json: &Path) -> (Output, Value) {
    let mut args = vec!["replay", moment, "--json", json.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = detvm(home, &args);
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "replay {moment} {extra:?}:\n{t}"
    );
    (out, read_json(json))
}

#[test]
fn kv_run_replays_from_its_snapshots_exactly() {
    let home = home();
    let tmp = tempfile::tempdir().unwrap();
    let report_path = tmp.path().join("run.json");
    let out = detvm(
        &home,
        &[
            "run",
            KV,
            "--seed",
            "3",
            "--duration",
            "4s",
            "--snapshot-at",
            "2s,3500ms",
            "--json",
            report_path.to_str().unwrap(),
        ],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let report = read_json(&report_path);
    let run = report["run"].as_str().unwrap().to_string();
    let end = report["vtime_end_ns"].as_u64().unwrap();
    let trace = report["trace_hash"].as_str().unwrap();

    // Two snapshot files; the second is a child of the first and much smaller.
    let dir = home.join("runs").join(&run).join("snapshots");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}\n{t}");
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(size(&files[1]) * 3 < size(&files[0]), "{files:?}");

    // The end of the run from the later snapshot: the run's trace, the run's events.
    let json = tmp.path().join("replay.json");
    let (_, at_end) = replay(&home, &format!("{run}@{end}ns"), &[], &json);
    assert_eq!(at_end["trace_hash"], trace, "{at_end:#}");
    assert!(
        at_end["started_from"]
            .as_str()
            .unwrap()
            .ends_with(files[1].file_name().unwrap().to_str().unwrap()),
        "{at_end:#}"
    );
    assert_eq!(at_end["divergence"], Value::Null, "{at_end:#}");
    assert!(
        at_end["events_replayed"].as_u64().unwrap() > 0,
        "{at_end:#}"
    );

    // A moment between the snapshots: from the first snapshot and from boot, the same
    // state; both agree with the stored run's events.
    let moment = format!("{run}@2.75s");
    let (_, from_snapshot) = replay(&home, &moment, &[], &json);
    let (_, from_boot) = replay(&home, &moment, &["--from-start"], &json);
    assert!(
        from_snapshot["started_from"]
            .as_str()
            .unwrap()
            .ends_with(files[0].file_name().unwrap().to_str().unwrap()),
        "{from_snapshot:#}"
    );
    assert_eq!(from_boot["started_from"], "boot");
    assert_eq!(from_snapshot["trace_hash"], from_boot["trace_hash"]);
    assert_eq!(from_snapshot["services"], from_boot["services"]);
    assert_eq!(from_snapshot["properties"], from_boot["properties"]);
    assert_ne!(from_snapshot["trace_hash"], trace);

    // A moment past the run's end is refused.
    let out = detvm(&home, &["replay", &format!("{run}@{}ns", end + 1)]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains("pick a moment up to then"),
        "{}",
        text(&out)
    );

    // A flipped byte, then a truncated file: refused with the file named, nothing run.
    let bytes = std::fs::read(&files[1]).unwrap();
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    std::fs::write(&files[1], &flipped).unwrap();
    let out = detvm(&home, &["replay", &format!("{run}@{end}ns")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(4), "{t}");
    assert!(t.contains("checksum") && t.contains("snapshot-"), "{t}");
    assert!(!t.contains("replayed from"), "{t}");
    std::fs::write(&files[1], &bytes[..bytes.len() - 100]).unwrap();
    let out = detvm(&home, &["replay", &format!("{run}@{end}ns")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(4), "{t}");
    assert!(t.contains("snapshot-"), "{t}");
}
