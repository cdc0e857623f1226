//! Issue 16's scenario, as the redis example (examples/redis) end to end with the `detvm`
//! binary: Debian's redis-server (unmodified, built with debootstrap), a primary and a
//! replica, bash test commands looping over redis-cli, and swarm faults drawn from each
//! seed. Every seed must end with the system's properties judged (exit 0 or 1, never an
//! infrastructure error or a hung driver), Redis's guarantees must hold, and
//! `detvm check` must find identical runs.
//!
//! CI runs the seeds 1, 2 and 5 shortened to `CI_DURATION` (seed 1 twice, under
//! `detvm check`), three at a time. The full 20 s runs are the ignored test
//! (`scripts/redis-scenario.sh`).

mod common;

use std::path::{Path, PathBuf};

use common::cli::{property, read_json, run_detvm, text};
use serde_json::Value;

const REDIS: &str = "examples/redis/docker-compose.yaml";
/// Virtual time of the driver phase in CI: the swarm plan's faults fall between 10% and
/// 80% of it, so they hit the cluster while it starts, replicates and is tested.
const CI_DURATION: &str = "7s";

/// Safety properties of the workload: they hold whatever the faults (README.md).
const ALWAYS: [&str; 4] = [
    "the counter never decreases on the primary",
    "a write the replica acknowledged is readable on the replica",
    "the replica converges to the primary after the faults stop",
    "every write the replica acknowledged is on the replica after healing",
];

fn home() -> PathBuf {
    common::cli::example_home("redis-home", "examples/redis/build-images.sh")
}

/// One seed's run: `detvm check` (two runs) or `detvm run`, with its report.
struct Outcome {
    seed: u32,
    checked: bool,
    code: Option<i32>,
    report: Value,
    output: String,
}

fn run_seed(home: &Path, seed: u32, duration: &str, check: bool, dir: &Path) -> Outcome {
    let json = dir.join(format!("seed{seed}.json"));
    let seed_arg = seed.to_string();
    let mut args = vec![
        if check { "check" } else { "run" },
        REDIS,
        "--seed",
        &seed_arg,
        "--duration",
        duration,
        "--json",
        json.to_str().unwrap(),
    ];
    if check {
        args.extend(["--runs", "2"]);
    }
    let out = run_detvm(home, &args);
    let output = text(&out);
    assert!(json.exists(), "seed {seed}: no report\n{output}");
    Outcome {
        seed,
        checked: check,
        code: out.status.code(),
        report: read_json(&json),
        output,
    }
}

/// The seeds, seed 1 under `detvm check`, `parallel` at a time.
fn run_seeds(duration: &str, seeds: &[u32], parallel: usize) -> Vec<Outcome> {
    let home = home();
    let tmp = tempfile::tempdir().unwrap();
    let next = std::sync::Mutex::new(seeds.iter());
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let Some(&seed) = next.lock().unwrap().next() else {
                    break;
                };
                let o = run_seed(&home, seed, duration, seed == 1, tmp.path());
                done.lock().unwrap().push(o);
            });
        }
    });
    let mut done = done.into_inner().unwrap();
    done.sort_by_key(|o| o.seed);
    done
}

/// What every seed must show: an ending with properties judged, Redis's guarantees
/// holding wherever they were checked, the final check having run, and (under `detvm
/// check`) identical runs.
fn assert_judged(o: &Outcome) {
    let (seed, r, t) = (o.seed, &o.report, &o.output);
    // 0: every property passed; 1: some failed. Never 3 (infrastructure error), 5 (a
    // test command hung) or 6 (runs differed).
    assert!(matches!(o.code, Some(0 | 1)), "seed {seed}: {t}");
    assert!(
        r["status"] == "passed" || r["status"] == "properties_failed",
        "seed {seed}: {}\n{t}",
        r["status"]
    );
    if o.checked {
        assert!(t.contains("deterministic: 2 runs"), "seed {seed}: {t}");
    }
    assert_eq!(property(r, "setup completed")["status"], "passed", "{t}");
    // The final check runs on every seed; the drivers' properties exist where drivers ran
    // (a plan that cuts the client off during setup can use up a short run).
    for name in &ALWAYS[2..] {
        assert!(
            property(r, name)["passes"].as_u64() > Some(0),
            "seed {seed}: {t}"
        );
    }
    for p in r["properties"].as_array().unwrap() {
        if p["kind"] == "always" || p["kind"] == "reachability" {
            assert_eq!(p["status"], "passed", "seed {seed}: {p:#}\n{t}");
        }
    }
    for c in r["commands"].as_array().unwrap() {
        assert_eq!(c["failed"], 0, "seed {seed}: {c}\n{t}");
    }
}

/// How often a property passed over all seeds (0 where it was never declared).
fn passes(outcomes: &[Outcome], message: &str) -> u64 {
    outcomes
        .iter()
        .flat_map(|o| o.report["properties"].as_array().unwrap())
        .filter(|p| p["message"] == message)
        .map(|p| p["passes"].as_u64().unwrap())
        .sum()
}

#[test]
fn redis_scenario_seeds_end_with_properties_judged_and_replay_identically() {
    let outcomes = run_seeds(CI_DURATION, &[1, 2, 5], 3);
    for o in &outcomes {
        assert_judged(o);
    }
    // The workload ran and was checked: INCRs, and writes the replica acknowledged.
    for name in [ALWAYS[0], ALWAYS[1], "WAIT confirms a write on the replica"] {
        assert!(passes(&outcomes, name) > 0, "{name}: never checked");
    }
    // The swarm plans, printed before each run, hit the servers: kills among them.
    assert!(
        outcomes.iter().any(|o| o.output.contains(": kill redis")),
        "no kill of a server in any plan"
    );
}

/// The scenario at full length: 20 s of faults, seeds 1 to 8 (seed 1 twice, under
/// `detvm check`). About 25 minutes on 2 cores: `scripts/redis-scenario.sh`.
#[test]
#[ignore]
fn redis_scenario_full_length() {
    let outcomes = run_seeds("20s", &[1, 2, 3, 4, 5, 6, 7, 8], 2);
    for o in &outcomes {
        assert_judged(o);
        // 20 s leave time for the drivers whatever the plan.
        assert!(property(&o.report, ALWAYS[0])["passes"].as_u64() > Some(0));
    }
}
