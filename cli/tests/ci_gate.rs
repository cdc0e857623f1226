//! `detvm ci`: the gate's exit codes against baselines, with real campaigns of kv (its
//! planted bug on or off): a new failure fails; a known one passes with
//! `--allow-known` (here through a real `detvm serve`); a resolved one passes and is
//! listed; unchanged inputs of a passing baseline skip the campaign.

mod common;

use std::path::Path;

use common::cli::{example_home, read_json, run_detvm, text};
use common::server::Server;

fn ci(home: &Path, bug: &str, extra: &[&str], json: &Path) -> std::process::Output {
    let var = format!("KV_BUG={bug}");
    let mut args = vec![
        "ci",
        "examples/kv/docker-compose.yaml",
        "--var",
        &var,
        "--seed",
        "5",
        "--duration",
        "4s",
        "--horizon",
        "2s",
        "--branches",
        "2",
        "--json",
        json.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run_detvm(home, &args)
}

fn kinds(outcome: &serde_json::Value) -> Vec<String> {
    outcome["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_gate_fails_new_failures_allows_known_ones_lists_resolved_ones_and_skips_unchanged_inputs() {
    let home = example_home("ci-gate-home", "examples/kv/build-images.sh");
    let _ = std::fs::remove_dir_all(home.join("baselines"));
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("outcome.json");

    // The base branch: no bug; recorded as `main`.
    let out = ci(&home, "none", &["--record", "main"], &json);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let recorded = read_json(&home.join("baselines/main.json"));
    assert_eq!(recorded["passed"], true, "{recorded:#}");

    // The same inputs again: skipped, no campaign.
    let out = ci(&home, "none", &["--baseline", "main"], &json);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let outcome = read_json(&json);
    assert_eq!(outcome["verdict"], "skipped", "{outcome:#}");
    assert_eq!(outcome["campaign"], serde_json::Value::Null);
    assert!(text(&out).contains("inputs unchanged since baseline main"));

    // A change that brings the bug: a new failure fails the gate, even with
    // --allow-known; recorded as `buggy` (a failed baseline: it never causes a skip).
    let out = ci(
        &home,
        "drop-writes",
        &["--baseline", "main", "--allow-known", "--record", "buggy"],
        &json,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let outcome = read_json(&json);
    assert_eq!(outcome["verdict"], "failed");
    assert!(kinds(&outcome).iter().all(|k| k == "new") && !kinds(&outcome).is_empty());
    assert!(text(&out).contains("| new |"), "{}", text(&out));

    // The bug, known in the baseline, allowed: passes. Run through a real server.
    let server_home = tempfile::tempdir().unwrap();
    let server = Server::start(server_home.path(), &["--jobs", "2"]);
    let out = ci(
        &home,
        "drop-writes",
        &[
            "--baseline",
            "buggy",
            "--allow-known",
            "--server",
            &server.url,
        ],
        &json,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let outcome = read_json(&json);
    assert_eq!(outcome["verdict"], "passed", "{outcome:#}");
    assert!(kinds(&outcome).iter().all(|k| k == "ongoing") && !kinds(&outcome).is_empty());
    drop(server);

    // The fix: the baseline's failures are resolved, listed, and the gate passes.
    let junit = tmp.path().join("junit.xml");
    let out = ci(
        &home,
        "none",
        &["--baseline", "buggy", "--junit", junit.to_str().unwrap()],
        &json,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let outcome = read_json(&json);
    assert_eq!(outcome["verdict"], "passed");
    assert!(kinds(&outcome).iter().all(|k| k == "resolved") && !kinds(&outcome).is_empty());
    assert!(text(&out).contains("| resolved |"), "{}", text(&out));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuite") && !xml.contains("<failure"),
        "{xml}"
    );
}
