//! `detvm minimize C/T` on a short campaign over examples/replog that finds its rare bug
//! (an acknowledged write lost): the fault search keeps a sub-list of the path's faults
//! that still fails the same property when the path is replayed from the root, the plain
//! run it offers is checked, and the bug-likelihood curve starts at the root's setup
//! moment and ends failing just before the failure.

mod common;

use std::path::Path;

use common::cli::{example_home, read_json, run_detvm, text};
use explorer::store::RunStore;

const REPLOG: &str = "examples/replog/docker-compose.yaml";

fn array(v: &serde_json::Value) -> &Vec<serde_json::Value> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}"))
}

/// The number of faults a timeline's recorded plan (`fault plan: N faults` …) holds.
fn fault_count(timeline: &serde_json::Value) -> usize {
    let plan = timeline["faults"].as_str().unwrap();
    plan.trim_start_matches("fault plan: ")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no fault count in {plan:?}"))
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn minimize_shrinks_a_failing_replog_timeline_and_draws_its_curve() {
    let home = example_home("minimize-home", "examples/replog/build-images.sh");
    let tmp = tempfile::tempdir().unwrap();
    let campaign_json = tmp.path().join("campaign.json");
    // Short runs (4 s) so timelines of the second round finish and are judged. Which
    // seed's campaign meets the bug depends on the guest's bytes (any change to the agent
    // or the example moves every timeline), so the test takes the first of a few seeds
    // whose 8-branch campaign fails; most do (3 of seeds 2-6 when this was written).
    let failed_campaign = (1..=8u64).find(|seed| {
        let seed = seed.to_string();
        let out = run_detvm(
            &home,
            &[
                "explore",
                REPLOG,
                "--seed",
                &seed,
                "--duration",
                "4s",
                "--horizon",
                "2s",
                "--branches",
                "8",
                "--jobs",
                "2",
                "--json",
                campaign_json.to_str().unwrap(),
            ],
        );
        match out.status.code() {
            Some(1) => true,
            Some(0) => false,
            _ => panic!(
                "campaign seed {seed} did not end with a verdict: {}",
                text(&out)
            ),
        }
    });
    assert!(
        failed_campaign.is_some(),
        "no 8-branch campaign of seeds 1-8 found the lost write"
    );
    let campaign = read_json(&campaign_json);
    let timelines = array(&campaign["timelines"]);
    let failing = timelines
        .iter()
        .find(|t| !array(&t["failed"]).is_empty())
        .unwrap_or_else(|| panic!("no failing timeline: {campaign:#}"));
    let name = format!(
        "{}/T{}",
        campaign["campaign"].as_str().unwrap(),
        failing["id"]
    );
    let by_id = |id: &serde_json::Value| timelines.iter().find(|t| t["id"] == *id).unwrap();
    let mut path_faults = 0;
    let mut t = failing;
    while t["parent"].is_u64() {
        path_faults += fault_count(t);
        t = by_id(&t["parent"]);
    }

    let report_json = tmp.path().join("minimize.json");
    let out = run_detvm(
        &home,
        &[
            "minimize",
            &name,
            "--trials",
            "2",
            "--every",
            "10s",
            "--max-replays",
            "4",
            "--jobs",
            "2",
            "--json",
            report_json.to_str().unwrap(),
        ],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let m = read_json(&report_json);
    assert_eq!(m["property"], failing["failed"][0], "{all}");

    // (a) The faults: every one the path applied, a sub-list of them kept, and that
    // sub-list fails again when replayed from the root.
    let (faults, minimal) = (array(&m["faults"]), array(&m["minimal"]));
    assert_eq!(faults.len(), path_faults, "{all}");
    assert!(minimal.len() <= faults.len(), "{all}");
    assert!(minimal.iter().all(|f| faults.contains(f)), "{all}");
    assert_eq!(m["confirmed"], true, "{all}");
    // The full path, then at most the 4 replays allowed (the empty list first).
    let replays = m["replays"].as_u64().unwrap();
    assert!((2..=5).contains(&replays), "{all}");
    assert!(stdout_of(&out).contains("smallest fault list that keeps it failing"));
    // The plain run it offers was made; it is in the run store with the verdict given.
    let rep = &m["reproduction"];
    let plan = std::fs::read_to_string(rep["faults_file"].as_str().unwrap()).unwrap();
    let plan = explorer::run::parse_fault_plan(&plan).unwrap();
    assert_eq!(plan.faults.len(), minimal.len());
    let run = rep["run"].as_str().unwrap();
    let store = RunStore::open(&home).unwrap();
    let stored = store.run(run).unwrap();
    let failed = stored.status == explorer::store::RunStatus::PropertiesFailed;
    assert_eq!(rep["reproduces"].as_bool(), Some(failed), "{all}");
    let stdout = stdout_of(&out);
    if failed {
        assert!(stdout.contains(rep["command"].as_str().unwrap()), "{all}");
    } else {
        assert!(stdout.contains(&format!("detvm replay {name}@")), "{all}");
    }

    // (b) The curve: from the root's setup moment to just before the failure, where
    // most fresh branches fail.
    let curve = array(&m["curve"]);
    let root_end = by_id(&0.into())["end_ns"].as_u64().unwrap();
    assert_eq!(curve[0]["at_ns"].as_u64(), Some(root_end), "{all}");
    let last = curve.last().unwrap();
    let failure = m["failure_ns"].as_u64().unwrap();
    let at = last["at_ns"].as_u64().unwrap();
    match failing["judged_at_ns"].as_u64() {
        // A judged timeline's curve ends where its judging began.
        Some(judged) => assert!(at == judged && at < failure, "{all}"),
        None => assert!(at < failure && failure - at <= 20_000_000, "{all}"),
    }
    assert_eq!(last["trials"], 2);
    assert!(last["failing"].as_u64() == Some(2), "{all}");
    assert!(m["likely_from_ns"].as_u64() <= Some(at), "{all}");
    assert!(stdout.contains("the bug became likely at"), "{all}");
    assert!(Path::new(&format!(
        "{}/campaigns/{}/minimize-T{}.json",
        home.display(),
        campaign["campaign"].as_str().unwrap(),
        failing["id"]
    ))
    .exists());
}
