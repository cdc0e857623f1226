//! `detvm run` and `detvm check` end to end on the kv example (examples/kv): real
//! guests on `emu`, the agent, the World, the composer and the run store.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::cli::{detvm, example_home, property, read_json, text};

/// One `.detvm` home for this test binary, with the example images built once.
fn home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| example_home("run-compose-home", "examples/kv/build-images.sh"))
}

fn run_detvm(args: &[&str]) -> Output {
    common::cli::run_detvm(home(), args)
}

const KV: &str = "examples/kv/docker-compose.yaml";

#[test]
fn kv_passes_and_check_finds_it_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let junit = tmp.path().join("junit.xml");
    let out = run_detvm(&[
        "check",
        KV,
        "--seed",
        "1",
        "--runs",
        "2",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("deterministic: 2 runs"), "{t}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("failures=\"0\""), "{xml}");
    assert!(
        xml.contains("a read right after an acknowledged write returns it"),
        "{xml}"
    );
}

#[test]
fn kv_bug_fails_at_a_moment_the_printed_command_reproduces() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first.json");
    let out = run_detvm(&[
        "run",
        KV,
        "--seed",
        "2",
        "--var",
        "KV_BUG=drop-writes",
        "--json",
        first.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "properties failed: {t}");
    let report = read_json(&first);
    let read_back = property(
        &report,
        "a read right after an acknowledged write returns it",
    );
    assert_eq!(read_back["status"], "failed", "{read_back:#}");
    let at = read_back["first_failure"]["vtime_ns"].as_u64().unwrap();
    let run = report["run"].as_str().unwrap();
    assert!(
        t.contains(&format!("{run}@")),
        "the summary names the moment: {t}"
    );
    let passed = property(&report, "the kv server accepts connections during setup");
    assert_eq!(passed["status"], "passed");

    // The printed command, run again, fails the same way at the same virtual time.
    let reproduce = report["reproduce"].as_str().unwrap();
    let again = tmp.path().join("again.json");
    let mut args: Vec<&str> = reproduce.split_whitespace().skip(1).collect();
    args.extend(["--json", again.to_str().unwrap()]);
    let out = run_detvm(&args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let second = read_json(&again);
    let p = property(
        &second,
        "a read right after an acknowledged write returns it",
    );
    assert_eq!(p["first_failure"]["vtime_ns"].as_u64(), Some(at));
    assert_eq!(second["trace_hash"], report["trace_hash"]);
    assert_eq!(second["properties"], report["properties"]);
}

fn write_compose(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("docker-compose.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_input_is_refused_before_anything_boots() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "services:\n  a:\n    image: nowhere/nothing:1\n",
            "`nowhere/nothing:1` is not in the image store",
        ),
        (
            "services:\n  a:\n    image: detvm-examples/kv-server:1\n    depends_on: [b]\n",
            "unknown service `b`",
        ),
        ("services:\n  a:\n    image: [x\n", "docker-compose.yaml:"),
        (
            "services:\n  a:\n    image: detvm-examples/kv-server:1\n    build: .\n",
            "`build` is not supported",
        ),
    ];
    for (compose, expected) in cases {
        let path = write_compose(tmp.path(), compose);
        let out = run_detvm(&["run", path.to_str().unwrap()]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(4), "{compose}\n{t}");
        assert!(
            t.contains(expected),
            "{compose}\nexpected {expected:?} in:\n{t}"
        );
    }
}

#[test]
fn an_unhealthy_service_is_a_setup_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_compose(
        tmp.path(),
        "services:\n  kv:\n    image: detvm-examples/kv-server:1\n    healthcheck:\n      test: [\"CMD\", \"/bin/false\"]\n      interval: 1s\n      retries: 2\n  driver:\n    image: detvm-examples/kv-driver:1\n    depends_on:\n      kv: {condition: service_healthy}\nx-detvm:\n  fault_mode: none\n",
    );
    let json = tmp.path().join("r.json");
    let out = run_detvm(&[
        "run",
        path.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("`kv` never became healthy"), "{t}");
    let report = read_json(&json);
    assert_eq!(report["status"], "setup_failed");
    assert_eq!(property(&report, "setup completed")["status"], "failed");
}

/// A busybox image `detvm-test/NAME:1` whose only test command runs `script`.
fn driver_image(dir: &Path, name: &str, script: &str) {
    std::fs::write(dir.join(name), format!("#!/bin/sh\n{script}\n")).unwrap();
    let spec = dir.join(format!("{name}.toml"));
    std::fs::write(
        &spec,
        format!("name = \"detvm-test/{name}:1\"\n[[files]]\nsrc = \"{name}\"\ndest = \"/opt/antithesis/test/v1/main/parallel_driver_{name}\"\nmode = 0o755\n[config]\ncmd = [\"/bin/sh\", \"-c\", \"while true; do sleep 3600; done\"]\n"),
    )
    .unwrap();
    let out = run_detvm(&["image", "build", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_hanging_driver_is_named_with_its_own_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    driver_image(tmp.path(), "hang", "exec sleep 100000");
    let path = write_compose(
        tmp.path(),
        "services:\n  driver:\n    image: detvm-test/hang:1\nx-detvm:\n  duration: 2s\n  fault_mode: none\n",
    );
    let out = run_detvm(&["run", path.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(5), "{t}");
    assert!(
        t.contains("/opt/antithesis/test/v1/main/parallel_driver_hang on driver"),
        "{t}"
    );
}

#[test]
fn ctrl_c_keeps_the_run_as_interrupted() {
    let tmp = tempfile::tempdir().unwrap();
    // A driver that keeps the CPU busy: virtual time advances only as fast as the
    // guest computes, so the run is still going when the interrupt comes.
    driver_image(tmp.path(), "spin", "while :; do :; done");
    let path = write_compose(
        tmp.path(),
        "services:\n  driver:\n    image: detvm-test/spin:1\nx-detvm:\n  duration: 1h\n  fault_mode: none\n",
    );
    let child = Command::new(detvm())
        .args(["run", path.to_str().unwrap()])
        .env("DETVM_HOME", home())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the run is under way (its id is printed when it starts).
    std::thread::sleep(std::time::Duration::from_secs(8));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(130), "{t}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let run = stderr
        .split_whitespace()
        .skip_while(|w| *w != "run")
        .nth(1)
        .map(|w| w.trim_end_matches(','))
        .unwrap_or_else(|| panic!("no run id in {t}"))
        .to_string();
    let runs = run_detvm(&["runs"]);
    let listing = String::from_utf8_lossy(&runs.stdout);
    let line = listing
        .lines()
        .find(|l| l.starts_with(&run))
        .unwrap_or_else(|| panic!("{run} not in\n{listing}"));
    assert!(line.contains("interrupted"), "{line}");
}
