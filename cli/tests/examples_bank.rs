//! The bank example (examples/bank) end to end with the `detvm` binary: it passes with
//! detvm's default epoch; its 2038 bug fails a property at a moment once the server's
//! clock crosses 2038-01-19T03:14:08Z (by the epoch or by a clock-step fault), and the
//! printed command reproduces that failure at the same virtual time.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::cli::{property, read_json, reproduce_args, run_detvm, text};

const BANK: &str = "examples/bank/docker-compose.yaml";
const STAYS_VOIDED: &str = "a voided transaction stays voided";

fn home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| common::cli::example_home("bank-home", "examples/bank/build-images.sh"))
}

/// `detvm ARGS --json FILE`: exit code, report, and the whole output for messages.
fn run(args: &[&str], json: &Path) -> (Option<i32>, serde_json::Value, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--json", json.to_str().unwrap()]);
    let out = run_detvm(home(), &all);
    let t = text(&out);
    assert!(json.exists(), "no report: {t}");
    (out.status.code(), read_json(json), t)
}

#[test]
fn bank_passes_before_2038() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, report, t) = run(&["run", BANK, "--seed", "1"], &tmp.path().join("r.json"));
    assert_eq!(code, Some(0), "{t}");
    for p in report["properties"].as_array().unwrap() {
        assert_eq!(p["status"], "passed", "{p:#}");
    }
    // The properties were exercised, not just declared.
    assert!(property(&report, STAYS_VOIDED)["passes"].as_u64() > Some(0));
    assert!(property(&report, "sometimes a void succeeds")["passes"].as_u64() > Some(0));
}

#[test]
fn bank_2038_bug_fails_at_a_moment_the_printed_command_reproduces() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "run",
        BANK,
        "--seed",
        "1",
        "--epoch",
        "2038-01-19T03:13:50Z",
    ];
    let (code, report, t) = run(&args, &tmp.path().join("first.json"));
    assert_eq!(code, Some(1), "{t}");
    let voided = property(&report, STAYS_VOIDED);
    assert_eq!(voided["status"], "failed", "{voided:#}");
    let at = voided["first_failure"]["vtime_ns"].as_u64().unwrap();
    // The boundary is 18 s after power-on; nothing can fail long before it.
    assert!(
        at > 17_000_000_000,
        "failed at {at} ns, before the clock wrapped"
    );
    let run_id = report["run"].as_str().unwrap();
    assert!(
        t.contains(&format!("{run_id}@")),
        "the summary names the moment: {t}"
    );
    assert!(t.contains("reproduce: detvm run"), "{t}");

    let again_args = reproduce_args(&report);
    assert!(
        again_args.contains(&"2147483630".to_string()),
        "{again_args:?}"
    );
    let again_args: Vec<&str> = again_args.iter().map(String::as_str).collect();
    let (code, again, t) = run(&again_args, &tmp.path().join("again.json"));
    assert_eq!(code, Some(1), "{t}");
    let p = property(&again, STAYS_VOIDED);
    assert_eq!(p["first_failure"]["vtime_ns"].as_u64(), Some(at));
    assert_eq!(again["trace_hash"], report["trace_hash"]);
    assert_eq!(again["properties"], report["properties"]);
}

#[test]
fn bank_clock_step_past_2038_fails_the_same_property() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "run",
        BANK,
        "--seed",
        "1",
        "--faults",
        "examples/bank/faults-2038.yaml",
    ];
    let (code, report, t) = run(&args, &tmp.path().join("r.json"));
    assert_eq!(code, Some(1), "{t}");
    let voided = property(&report, STAYS_VOIDED);
    assert_eq!(voided["status"], "failed", "{voided:#}");
    // The plan steps the server's clock at 12 s.
    let at = voided["first_failure"]["vtime_ns"].as_u64().unwrap();
    assert!(at >= 12_000_000_000, "failed at {at} ns, before the step");
    assert!(report["reproduce"]
        .as_str()
        .unwrap()
        .contains("--faults examples/bank/faults-2038.yaml"));
}
