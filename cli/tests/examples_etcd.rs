//! The etcd example (examples/etcd) end to end with the `detvm` binary: a three-node
//! cluster of Debian's etcd under the example's fault plan runs the set and register
//! workloads to the end, every property passes, the same seed gives the same run twice
//! (`detvm check`: trace hash and event stream), and etcd's own log lines are events in
//! the run store. CI runs a shortened run (`--duration 14s`: the leader's isolation and a
//! pause); examples/etcd/README.md has the full one.

mod common;

use common::cli::{property, read_json, run_detvm, text};
use explorer::store::RunStore;

const ETCD: &str = "examples/etcd/docker-compose.yaml";

#[test]
fn etcd_under_faults_keeps_every_acknowledged_add_and_replays_identically() {
    let home = common::cli::example_home("etcd-home", "examples/etcd/build-images.sh");
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("r.json");
    let args = [
        "check",
        ETCD,
        "--seed",
        "1",
        "--runs",
        "2",
        "--duration",
        "14s",
        "--json",
        json.to_str().unwrap(),
    ];
    let out = run_detvm(&home, &args);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("deterministic: 2 runs"), "{t}");

    // The report of the second run: every safety property and built-in passed, the
    // workloads ran. Sometimes-properties other than the retry below are left out: in
    // a 14 s run whether a register read happens to land on the isolated or paused
    // member is up to the timeline (the 30 s default run reaches them; docs).
    let report = read_json(&json);
    for p in report["properties"].as_array().unwrap() {
        if p["kind"] != "sometimes" {
            assert_eq!(p["status"], "passed", "{p:#}\n{t}");
        }
    }
    let set = property(&report, "every acknowledged add is in the final read");
    assert!(set["passes"].as_u64() > Some(0), "{set:#}");
    let retried = property(&report, "an add succeeds on another member after a failure");
    assert!(retried["passes"].as_u64() > Some(0), "{retried:#}");
    property(
        &report,
        "a register read is never older than what this client saw before",
    );

    // etcd's own log lines, and the faults, are in the run store.
    let store = RunStore::open(&home).unwrap();
    let events = store
        .events(report["run"].as_str().unwrap(), 0, u64::MAX)
        .unwrap();
    for member in ["etcd1", "etcd2", "etcd3"] {
        assert!(
            events.iter().any(|e| e.node == member
                && e.kind == "agent"
                && e.body["message"]["type"] == "output"
                && e.body["message"]["line"]
                    .as_str()
                    .is_some_and(|l| l.contains("ready to serve client requests"))),
            "no `ready to serve` line from {member}"
        );
    }
    assert!(
        events
            .iter()
            .any(|e| e.kind == "fault_applied" && e.body.to_string().contains("partition")),
        "no partition among the events"
    );
}
