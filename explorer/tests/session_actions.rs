//! `Session::exec` and `Session::read_file` on a booted compose system (one busybox
//! service): output by stream, exit codes, the agent's errors, the virtual-time limit,
//! unknown nodes, and determinism: the same request on two copies of one moment gives
//! the same answer at the same virtual times.

mod common;

use std::path::{Path, PathBuf};

use explorer::observer::Quiet;
use explorer::run::prepare::prepare;
use explorer::run::{RunOptions, Session};
use vmm::backend::BackendKind;

const COMPOSE: &str = "
services:
  box:
    image: detvm-test/agent-busybox:1
    entrypoint: [\"/bin/sh\", \"-c\", \"echo up; while true; do sleep 1; done\"]
x-detvm:
  fault_mode: none
";

/// A `.detvm` home whose image store holds the busybox test image.
fn home() -> PathBuf {
    common::agent::busybox_image();
    let store = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "agent-store-{}",
        std::env::current_exe()
            .unwrap()
            .file_stem()
            .unwrap()
            .to_string_lossy()
    ));
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("session-actions-home");
    std::fs::create_dir_all(&home).unwrap();
    let link = home.join("images");
    if !link.exists() {
        std::os::unix::fs::symlink(&store, &link).unwrap();
    }
    home
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[test]
fn exec_and_read_file_answer_from_a_running_session() {
    let home = home();
    let dir = tempfile::tempdir().unwrap();
    let compose = dir.path().join("compose.yaml");
    std::fs::write(&compose, COMPOSE).unwrap();
    let opts = RunOptions {
        compose,
        seed: Some(5),
        duration: Some(std::time::Duration::from_secs(30)),
        epoch: None,
        faults: None,
        no_faults: true,
        vars: Vec::new(),
        backend: BackendKind::Emu,
        home,
        snapshot_at: Vec::new(),
    };
    let prepared = prepare(&opts, &mut Quiet).unwrap();
    let plan = prepared
        .world_plan(BackendKind::Emu, &dir.path().join("volumes"))
        .unwrap();
    let mut session = Session::boot(plan.clone(), 5, prepared.duration_ns()).unwrap();
    session.run_to(1_000_000_000, &mut Quiet).unwrap();
    let moment = session.snapshot().unwrap();

    let script = argv(&["sh", "-c", "echo out; echo err >&2; exit 3"]);
    let r = session
        .exec("box", &script, 5_000_000_000, &mut Quiet)
        .unwrap();
    assert_eq!(r.code, Some(3), "{r:#?}");
    assert_eq!(r.signal, None);
    assert!(!r.timed_out && r.error.is_none());
    let lines: Vec<(&str, &str)> = r
        .output
        .iter()
        .map(|l| (l.stream.as_str(), l.line.as_str()))
        .collect();
    assert!(
        lines.contains(&("stdout", "out")) && lines.contains(&("stderr", "err")),
        "{lines:?}"
    );
    assert_eq!(r.started_ns, 1_000_000_000);
    assert!(r.ended_ns > r.started_ns && r.ended_ns < r.started_ns + 5_000_000_000);

    // The same request on a copy of the same moment: the same answer, at the same times.
    let mut copy = Session::restore(&plan, &moment, 5, prepared.duration_ns(), None).unwrap();
    let again = copy
        .exec("box", &script, 5_000_000_000, &mut Quiet)
        .unwrap();
    assert_eq!(again, r);

    let passwd = session
        .read_file("box", "/etc/passwd", 5_000_000_000, &mut Quiet)
        .unwrap();
    assert!(String::from_utf8(passwd).unwrap().contains("alice:x:1000"));
    let missing = session
        .read_file("box", "/no/such/file", 5_000_000_000, &mut Quiet)
        .unwrap_err();
    assert!(missing.contains("box:/no/such/file"), "{missing}");

    let not_found = session
        .exec(
            "box",
            &argv(&["/no/such/program"]),
            5_000_000_000,
            &mut Quiet,
        )
        .unwrap();
    assert!(
        not_found.error.is_some() || not_found.code == Some(127),
        "{not_found:#?}"
    );
    assert!(!not_found.timed_out);

    let before = session.now();
    let slow = session
        .exec("box", &argv(&["sleep", "30"]), 500_000_000, &mut Quiet)
        .unwrap();
    assert!(slow.timed_out, "{slow:#?}");
    assert!(slow.error.unwrap().contains("still running"));
    assert_eq!(
        session.now(),
        before + 500_000_000,
        "it waited exactly the limit"
    );

    let nowhere = session
        .exec("db", &argv(&["true"]), 1_000_000_000, &mut Quiet)
        .unwrap_err();
    assert!(nowhere.contains("no node `db`"), "{nowhere}");
    assert!(session.exec("box", &[], 1_000_000_000, &mut Quiet).is_err());
}
