//! `detvm explore`: a campaign over a tree of timelines finds kv's planted bug, gives the
//! same tree with one job or two, and its failing moment replays with the same events.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use common::cli::{example_home, read_json, run_detvm, text};

fn home() -> &'static Path {
    static HOME: OnceLock<std::path::PathBuf> = OnceLock::new();
    HOME.get_or_init(|| example_home("explore-home", "examples/kv/build-images.sh"))
}

fn explore(jobs: &str, json: &Path) -> std::process::Output {
    run_detvm(
        home(),
        &[
            "explore",
            "examples/kv/docker-compose.yaml",
            "--var",
            "KV_BUG=drop-writes",
            "--seed",
            "5",
            "--duration",
            "4s",
            "--horizon",
            "2s",
            "--branches",
            "8",
            "--jobs",
            jobs,
            "--json",
            json.to_str().unwrap(),
        ],
    )
}

#[test]
fn a_campaign_finds_the_bug_the_same_way_with_any_jobs_and_replays_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one.json"), tmp.path().join("two.json"));
    let out = explore("1", &one);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out2 = explore("2", &two);
    assert_eq!(out2.status.code(), Some(1), "{}", text(&out2));
    let (a, b) = (read_json(&one), read_json(&two));
    assert_eq!(a["timelines"], b["timelines"], "the tree depends on --jobs");
    // The same findings, at the same moments (named by each campaign's own id).
    let findings = |r: &serde_json::Value| {
        r["properties"]
            .to_string()
            .replace(r["campaign"].as_str().unwrap(), "C")
    };
    assert_eq!(findings(&a), findings(&b));
    let timelines = a["timelines"].as_array().unwrap();
    assert_eq!(timelines.len(), 9, "the root and 8 branches");
    assert!(timelines[1..].iter().all(|t| t["parent"].is_u64()));
    assert!(
        timelines.iter().any(|t| t["finished"] == true),
        "some timeline was played to the end: {a:#}"
    );
    let failing = a["properties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["status"] == "failed")
        .unwrap_or_else(|| panic!("no failing property: {a:#}"));
    let example = failing["examples"][0].as_str().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("detvm replay {example}")),
        "{stdout}"
    );
    // The failing moment, rebuilt from the root by its path of forks.
    let replay = run_detvm(home(), &["replay", example]);
    let all = text(&replay);
    assert_eq!(replay.status.code(), Some(0), "{all}");
    assert!(all.contains("identical to the run's"), "{all}");
    let campaigns = run_detvm(home(), &["campaigns"]);
    let campaign = a["campaign"].as_str().unwrap();
    assert!(String::from_utf8_lossy(&campaigns.stdout).contains(campaign));
}
