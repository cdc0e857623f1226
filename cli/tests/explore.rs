//! `detvm explore`: a campaign over a tree of timelines finds kv's planted bug, gives the
//! same tree with one job or two, and its failing moment replays with the same events
//! (from a snapshot file, or from boot once the file is gone); a campaign killed after a
//! mid-round with SIGKILL and resumed ends with the same tree as one run in one go; `--snapshot-cap`
//! prunes files and replays still match. Each test uses its own `--duration`, so the
//! findings of one do not compare against another's campaigns.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use common::cli::{example_home, read_json, run_detvm, text};
use explorer::observer::Quiet;

fn home() -> &'static Path {
    static HOME: OnceLock<std::path::PathBuf> = OnceLock::new();
    HOME.get_or_init(|| example_home("explore-home", "examples/kv/build-images.sh"))
}

fn explore(jobs: &str, json: &Path) -> std::process::Output {
    explore_with(
        &["--duration", "4s", "--branches", "8", "--jobs", jobs],
        json,
    )
}

/// kv with its planted bug, seed 5, 2 s horizons, plus `extra`.
fn explore_with(extra: &[&str], json: &Path) -> std::process::Output {
    let mut args = vec![
        "explore",
        "examples/kv/docker-compose.yaml",
        "--var",
        "KV_BUG=drop-writes",
        "--seed",
        "5",
        "--horizon",
        "2s",
        "--json",
        json.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run_detvm(home(), &args)
}

/// The report's properties with its own campaign id replaced by `C`.
fn findings(r: &serde_json::Value) -> String {
    r["properties"]
        .to_string()
        .replace(r["campaign"].as_str().unwrap(), "C")
}

fn snapshot_file(campaign: &str, t: u64) -> std::path::PathBuf {
    home()
        .join("campaigns")
        .join(campaign)
        .join("snapshots")
        .join(format!("T{t}.dsnap"))
}

/// Removes a campaign's folder (its snapshot files are tens of MiB) once a test is done.
fn remove_files(campaign: &str) {
    let _ = std::fs::remove_dir_all(home().join("campaigns").join(campaign));
}

/// Replays `moment`, expects identical events, returns the output.
fn replay_matches(moment: &str) -> String {
    let replay = run_detvm(home(), &["replay", moment]);
    let all = text(&replay);
    assert_eq!(replay.status.code(), Some(0), "{all}");
    assert!(all.contains("identical to the run's"), "{all}");
    all
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
    // The same properties, at the same moments (named by each campaign's own id).
    assert_eq!(findings(&a), findings(&b));
    // The second campaign of the same inputs compares with the first: what fails in
    // both is ongoing.
    let campaign_a = a["campaign"].as_str().unwrap();
    let found = b["findings"].as_array().unwrap();
    assert!(!found.is_empty(), "{b:#}");
    for f in found {
        assert_eq!(f["kind"], "ongoing", "{f}");
        assert_eq!(f["previous"], campaign_a, "{f}");
    }
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
    assert!(
        failing["logs"].as_array().is_some_and(|l| !l.is_empty()),
        "the failing service's log lines: {failing:#}"
    );
    // The failing moment, rebuilt from its parent's snapshot file.
    replay_matches(example);
    // A timeline whose parent is a branch with a file: the replay starts there; with
    // that file gone (as the cap would remove it), from boot, and still matches.
    let deep = timelines
        .iter()
        .find(|t| {
            t["parent"].as_u64().is_some_and(|p| p > 0)
                && snapshot_file(campaign_a, t["parent"].as_u64().unwrap()).is_file()
        })
        .unwrap_or_else(|| panic!("no timeline forked from a kept branch: {a:#}"));
    let (id, parent) = (
        deep["id"].as_u64().unwrap(),
        deep["parent"].as_u64().unwrap(),
    );
    let (from, end) = (
        deep["from_ns"].as_u64().unwrap(),
        deep["end_ns"].as_u64().unwrap(),
    );
    let moment = format!("{campaign_a}/T{id}@{}ns", from + (end - from) / 2);
    let from_file = replay_matches(&moment);
    assert!(
        from_file.contains(&format!("T{parent}'s snapshot file")),
        "{from_file}"
    );
    std::fs::remove_file(snapshot_file(campaign_a, parent)).unwrap();
    let from_boot = replay_matches(&moment);
    assert!(
        from_boot.contains("booted again") || from_boot.contains("snapshot file"),
        "{from_boot}"
    );
    assert!(
        !from_boot.contains(&format!("T{parent}'s snapshot file")),
        "{from_boot}"
    );

    // Warming a timeline (what opening its page in the notebook starts) keeps snapshots
    // along it: a moment late in it then starts from one of them, with the same events.
    let cache = explorer::at_moment::MomentCache::default();
    let timeline = format!("{campaign_a}/T{id}");
    explorer::at_moment::warm(home(), &timeline, &cache, &mut Quiet).unwrap();
    assert!(cache.size().0 > 0, "nothing kept by the warm-up");
    let late = explorer::moment::Moment {
        run: timeline.clone(),
        vtime_ns: end - 10_000_000,
    };
    let start = explorer::at_moment::Start::default();
    let at = explorer::at_moment::session_at(home(), &late, start, &cache, &mut Quiet).unwrap();
    assert!(
        at.started_from
            .starts_with(&format!("a snapshot of T{id} kept in memory")),
        "{late}: {}",
        at.started_from
    );
    assert!(at.divergence.is_none(), "{late}: {:?}", at.divergence);

    let campaigns = run_detvm(home(), &["campaigns"]);
    assert!(String::from_utf8_lossy(&campaigns.stdout).contains(campaign_a));
    let show = run_detvm(home(), &["campaign", "show", campaign_a]);
    assert_eq!(show.status.code(), Some(1), "{}", text(&show));
    assert!(
        String::from_utf8_lossy(&show.stdout).contains(example),
        "{}",
        text(&show)
    );
    remove_files(campaign_a);
    remove_files(b["campaign"].as_str().unwrap());
}

#[test]
fn a_killed_campaign_resumes_to_the_same_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, resumed) = (
        tmp.path().join("whole.json"),
        tmp.path().join("resumed.json"),
    );
    let out = explore_with(
        &["--duration", "3s", "--branches", "6", "--jobs", "2"],
        &whole,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // Killed with SIGKILL while its second round runs, once the store shows its first
    // round of 4 committed.
    let args = [
        "explore",
        "examples/kv/docker-compose.yaml",
        "--var",
        "KV_BUG=drop-writes",
        "--seed",
        "5",
        "--horizon",
        "2s",
        "--branches",
        "6",
        "--duration",
        "3s",
        "--jobs",
        "2",
    ];
    let store = explorer::campaign::store::CampaignStore::open(home()).unwrap();
    let before: Vec<String> = store.list().unwrap().into_iter().map(|c| c.id).collect();
    let mut child = std::process::Command::new(common::cli::detvm())
        .args(args)
        .env("DETVM_HOME", home())
        .current_dir(common::repo_root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let campaign = loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the campaign ended before its first round was seen committed"
        );
        let committed = store.list().unwrap().into_iter().find_map(|c| {
            let state = store.state(&c.id).ok().flatten()?;
            (!before.contains(&c.id) && state.next_branch > 4).then_some(c.id)
        });
        if let Some(id) = committed {
            break id;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    child.kill().unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");
    // As the store left it: 4 branches, not finished.
    let show = run_detvm(home(), &["campaign", "show", &campaign]);
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(shown.contains("(4 branches"), "{}", text(&show));
    assert!(shown.contains("not finished"), "{}", text(&show));
    let json = resumed.to_str().unwrap();
    let out = run_detvm(home(), &["explore", "--resume", &campaign, "--json", json]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let (a, b) = (read_json(&whole), read_json(&resumed));
    assert_eq!(b["campaign"], campaign.as_str());
    assert_eq!(b["branches"], 6, "the campaign's own budget: {b:#}");
    assert_eq!(a["timelines"], b["timelines"], "the resumed tree differs");
    assert_eq!(findings(&a), findings(&b));
    assert_eq!(a["coverage_keys"], b["coverage_keys"]);

    // The same campaign with its rounds run by an executor of `Worker`s (as worker
    // processes would: parents read from the snapshot files, results as values).
    let report = explore_by_workers(3, 6);
    let c = serde_json::to_value(&report).unwrap();
    assert_eq!(a["timelines"], c["timelines"], "the workers' tree differs");
    assert_eq!(findings(&a), findings(&c));
    for id in [&a["campaign"], &b["campaign"], &c["campaign"]] {
        remove_files(id.as_str().unwrap());
    }
}

/// A campaign like [`explore_with`]'s whose rounds a [`Worker`] runs, item by item.
fn explore_by_workers(duration_s: u64, branches: u32) -> explorer::campaign::CampaignReport {
    use explorer::campaign::item::{ItemResult, WorkItem, Worker};
    use explorer::campaign::{explore_with, Executor, ExploreOptions};
    use explorer::observer::Quiet;
    use explorer::run::{RunError, RunOptions};
    use std::time::Duration;

    #[derive(Default)]
    struct Workers(Option<Worker>);
    impl Executor for Workers {
        fn run(&mut self, items: &[WorkItem]) -> Result<Vec<ItemResult>, RunError> {
            let mut out = Vec::new();
            for item in items {
                if self.0.is_none() {
                    self.0 = Some(Worker::open(home(), &item.campaign, &mut Quiet)?);
                }
                let result = self.0.as_mut().unwrap().run(item)?;
                // As over a queue: only what serializes travels.
                let wire = serde_json::to_vec(&result).unwrap();
                out.push(serde_json::from_slice(&wire).unwrap());
            }
            Ok(out)
        }
    }
    let opts = ExploreOptions {
        run: RunOptions {
            compose: common::repo_root().join("examples/kv/docker-compose.yaml"),
            seed: Some(5),
            duration: Some(Duration::from_secs(duration_s)),
            epoch: None,
            faults: None,
            no_faults: true,
            vars: vec![("KV_BUG".into(), "drop-writes".into())],
            backend: vmm::backend::BackendKind::Emu,
            home: home().to_path_buf(),
            snapshot_at: Vec::new(),
        },
        branches: Some(branches),
        budget: None,
        horizon: Duration::from_secs(2),
        jobs: 1,
        weights: Default::default(),
        snapshot_cap: explorer::campaign::files::DEFAULT_CAP,
        resume: None,
    };
    let interrupt = std::sync::atomic::AtomicBool::new(false);
    let mut workers = Workers::default();
    explore_with(&opts, &mut Quiet, &interrupt, Some(&mut workers)).expect("the campaign runs")
}

#[test]
fn the_snapshot_cap_prunes_files_and_replays_still_match() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("capped.json");
    let out = explore_with(
        &[
            "--duration",
            "5s",
            "--branches",
            "8",
            "--jobs",
            "2",
            "--snapshot-cap",
            "1M",
        ],
        &json,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r = read_json(&json);
    let campaign = r["campaign"].as_str().unwrap();
    assert!(r["snapshots_pruned"].as_u64().unwrap() > 0, "{r:#}");
    // What is on disk is what the report counts, under the cap, the root's file too.
    let dir = home().join("campaigns").join(campaign).join("snapshots");
    let on_disk: Vec<u64> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    assert_eq!(on_disk.len() as u64, r["snapshot_files"].as_u64().unwrap());
    assert_eq!(
        on_disk.iter().sum::<u64>(),
        r["snapshot_bytes"].as_u64().unwrap()
    );
    assert!(
        snapshot_file(campaign, 0).is_file(),
        "the root's file stays"
    );
    // Failing moments of timelines whose own files the cap removed still replay (from
    // their parents' files); a replay past a removed parent file is the first test's.
    let pruned: Vec<&str> = r["properties"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["examples"].as_array().unwrap())
        .filter_map(|e| e.as_str())
        .filter(|m| {
            let t: u64 = m.split(['T', '@']).nth(1).unwrap().parse().unwrap();
            !snapshot_file(campaign, t).is_file()
        })
        .collect();
    assert!(
        !pruned.is_empty(),
        "no failing timeline lost its file: {r:#}"
    );
    replay_matches(pruned[0]);
    remove_files(campaign);
}
