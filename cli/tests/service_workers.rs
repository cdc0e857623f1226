//! Campaigns of a real system over the work queue (pgmq on a real PostgreSQL, started
//! here on loopback) with `detvm worker` processes, against the tree `detvm explore`
//! grows on one host for the same seed and branch budget:
//!
//! 1. workers sharing the server's `.detvm`; one is killed with SIGKILL while it holds
//!    an item (its 10 s lease, renewed while a worker lives, lapses; another worker
//!    redoes the item);
//! 2. workers with only `--queue` and `--objects s3://…` (moto's S3 server): each has a
//!    fresh `.detvm` of its own (no images) and runs in a private mount namespace where
//!    the server's `.detvm` and the example's folder are hidden, so the compose file,
//!    images, inputs and snapshots can only come through the object store; the server is
//!    killed with SIGKILL mid-campaign and started again, and takes the campaign up from
//!    its last committed round.
//!
//! Both give the one-host tree and findings, with one result per branch.

mod common;

#[path = "../../service/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{detvm, example_home, read_json, run_detvm, text};
use common::server::Server;
use detvm_service::client::Client;
use serde_json::Value;

const CAMPAIGN: [&str; 10] = [
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
];

const OBJECTS: &str = "s3://detvm/campaigns";

/// Worker processes, killed when dropped (also when an assertion fails, so none is left
/// holding the test's PostgreSQL).
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.0 {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

fn worker(home: &Path, queue: &str, extra: &[&str], env: &[(&str, &str)]) -> Child {
    spawn_worker(Command::new(detvm()), home, queue, extra, env)
}

/// `detvm worker` on `queue` with these arguments, run by `command` (detvm itself, or a
/// wrapper that execs the arguments after its own).
fn spawn_worker(
    mut command: Command,
    home: &Path,
    queue: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Child {
    command
        .args(["worker", "--queue", queue, "--lease", "10s"])
        .args(extra)
        .envs(env.iter().copied())
        .env("DETVM_HOME", home)
        .current_dir(support::repo_root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Whether this process may hide folders from a child with a private mount namespace
/// (`unshare --mount`, then tmpfs over them): tried on a scratch folder.
fn can_hide_folders() -> bool {
    let probe = tempfile::tempdir().unwrap();
    std::fs::write(probe.path().join("seen"), "").unwrap();
    let dir = probe.path().to_str().unwrap();
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs detvm-hidden "$1" && ! test -e "$1/seen""#)
        .args(["sh", dir])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A worker that cannot see `hidden` (tmpfs mounted over each in its own mount
/// namespace; the worker is the same process, exec'd), or a plain one without `hide`.
fn hidden_worker(
    home: &Path,
    queue: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    hidden: &[&Path],
    hide: bool,
) -> Child {
    if !hide {
        return worker(home, queue, extra, env);
    }
    let script =
        r#"for d in $HIDE; do mount -t tmpfs detvm-hidden "$d" || exit 97; done; exec "$@""#;
    let folders: Vec<&str> = hidden.iter().map(|p| p.to_str().unwrap()).collect();
    let mut unshare = Command::new("unshare");
    unshare
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(detvm())
        .env("HIDE", folders.join(" "));
    spawn_worker(unshare, home, queue, extra, env)
}

/// `detvm push --wait` of the campaign; returns the process and its job id.
fn push(home: &Path, server: &Server) -> (Child, String) {
    let mut push = Command::new(detvm())
        .args([
            "push",
            "--server",
            &server.url,
            "examples/kv/docker-compose.yaml",
        ])
        .args(CAMPAIGN)
        .arg("--wait")
        .env("DETVM_HOME", home)
        .current_dir(support::repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(push.stdout.take().unwrap()).lines();
    let job = lines
        .find_map(|l| {
            l.unwrap()
                .strip_prefix("job ")
                .and_then(|r| r.split(':').next())
                .map(String::from)
        })
        .expect("push printed its job");
    std::thread::spawn(move || for _ in lines {});
    (push, job)
}

fn count(q: &mut postgres::Client, sql: &str, arg: &str) -> i64 {
    q.query_one(sql, &[&arg]).map(|r| r.get(0)).unwrap_or(0)
}

fn kill9(pid: u32) {
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
}

/// What the two campaigns must agree on: the tree, and each property's verdict and
/// counts (their failing moments name the campaign, which differs).
fn findings(report: &Value) -> Vec<Value> {
    report["properties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| serde_json::json!([p["id"], p["status"], p["passing"], p["failing"]]))
        .collect()
}

/// The job's campaign, once it has one.
fn campaign_of(server: &Server, job: &str) -> String {
    let client = Client::new(&server.url, None);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(c) = client.job(job).ok().and_then(|j| j.campaign) {
            return c;
        }
        assert!(Instant::now() < deadline, "job {job} never started");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One result per branch and nothing left queued, for `campaign`.
fn assert_one_result_per_branch(q: &mut postgres::Client, campaign: &str) {
    let rows: Vec<i64> = q
        .query(
            "SELECT timeline FROM detvm_results WHERE campaign = $1 ORDER BY timeline",
            &[&campaign],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, (1..=8).collect::<Vec<i64>>(), "none lost or doubled");
    let left = count(
        q,
        "SELECT count(*) FROM pgmq.q_detvm_items WHERE message->>'campaign' = $1",
        campaign,
    );
    assert_eq!(left, 0, "no item left in the queue");
}

#[test]
fn workers_give_the_one_host_tree_through_a_killed_worker_and_a_killed_server() {
    let home = example_home("workers-home", "examples/kv/build-images.sh");
    let tmp = tempfile::tempdir().unwrap();
    let here = tmp.path().join("here.json");
    let mut args = vec!["explore", "examples/kv/docker-compose.yaml"];
    args.extend_from_slice(&CAMPAIGN);
    args.extend_from_slice(&["--jobs", "2", "--json", here.to_str().unwrap()]);
    let out = run_detvm(&home, &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let one_host = read_json(&here);

    let pg = support::postgres();
    let mut q = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();

    // 1. A worker killed while it holds an item; the folder is shared.
    let server = Server::start(&home, &["--queue", &pg.url]);
    let mut workers = Workers(vec![
        worker(&home, &pg.url, &[], &[]),
        worker(&home, &pg.url, &[], &[]),
    ]);
    let (mut pushed, job) = push(&home, &server);
    let campaign = campaign_of(&server, &job);
    let victim = workers.0[0].id();
    let holder = format!("%-{victim}");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done = count(
            &mut q,
            "SELECT count(*) FROM detvm_results WHERE campaign = $1",
            &campaign,
        );
        // The victim holds an item: the last to read it, and its message not yet visible.
        let holds = q
            .query_one(
                "SELECT count(*) FROM detvm_item_keys k JOIN pgmq.q_detvm_items m
                 ON m.msg_id = k.msg_id WHERE k.worker LIKE $1 AND m.vt > now()",
                &[&holder],
            )
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
        if done >= 2 && holds > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the victim never held an item");
        std::thread::sleep(Duration::from_millis(100));
    }
    kill9(victim);
    workers.0[0].wait().unwrap();
    let status = pushed.wait().unwrap();
    assert_eq!(status.code(), Some(1), "the planted bug fails");
    drop(workers);
    let report = Client::new(&server.url, None)
        .job(&job)
        .unwrap()
        .report
        .expect("the job's report");
    assert_eq!(
        report["timelines"], one_host["timelines"],
        "the tree over workers is the one-host tree"
    );
    assert_eq!(findings(&report), findings(&one_host));
    assert_one_result_per_branch(&mut q, &campaign);
    let redone = count(
        &mut q,
        "SELECT count(*) FROM detvm_results WHERE campaign = $1 AND reads > 1",
        &campaign,
    );
    assert!(redone >= 1, "the victim's item was read again and done");
    drop(server);

    // 2. The server killed mid-campaign; workers with their own `.detvm` and S3.
    let s3 = support::s3();
    let aws = [
        ("AWS_ENDPOINT", s3.url.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    // Each worker: a fresh home of its own, the server's home and the example hidden.
    let hide = can_hide_folders();
    if !hide {
        eprintln!(
            "SKIPPED in part: `unshare --mount` is not permitted here, so the workers run \
             with fresh homes but without the server's folders hidden"
        );
    }
    let example = support::repo_root().join("examples/kv");
    let hidden = [home.as_path(), example.as_path()];
    let homes = [tmp.path().join("worker-a"), tmp.path().join("worker-b")];
    let scale = ["--queue", pg.url.as_str(), "--objects", OBJECTS];
    let server = Server::start_with(&home, &scale, &aws);
    let objects = ["--objects", OBJECTS];
    let workers = Workers(
        homes
            .iter()
            .map(|h| {
                std::fs::create_dir_all(h).unwrap();
                hidden_worker(h, &pg.url, &objects, &aws, &hidden, hide)
            })
            .collect(),
    );
    let (mut pushed, job) = push(&home, &server);
    let campaign = campaign_of(&server, &job);
    let deadline = Instant::now() + Duration::from_secs(300);
    while count(
        &mut q,
        "SELECT count(*) FROM detvm_results WHERE campaign = $1",
        &campaign,
    ) < 5
    {
        assert!(Instant::now() < deadline, "the workers did not get going");
        if let Ok(j) = Client::new(&server.url, None).job(&job) {
            assert!(j.exit_code.is_none(), "the job ended early: {:?}", j.error);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    kill9(server.pid());
    drop(server);
    let _ = pushed.wait();
    let server = Server::start_with(&home, &scale, &aws);
    let done = Client::new(&server.url, None)
        .wait(&job, |_| {})
        .expect("the restarted server finished the job");
    assert_eq!(done.exit_code, Some(1), "{:?}", done.error);
    assert_eq!(done.campaign.as_deref(), Some(campaign.as_str()));
    let report = done.report.expect("the job's report");
    assert_eq!(
        report["timelines"], one_host["timelines"],
        "the tree after the server's restart is the one-host tree"
    );
    assert_eq!(findings(&report), findings(&one_host));
    assert_one_result_per_branch(&mut q, &campaign);
    assert!(
        done.log.iter().any(|l| l.contains("resuming after")),
        "the campaign resumed from a committed round: {:#?}",
        done.log
    );
    // Every branch ran on the hidden workers, which took the campaign's project, images,
    // inputs and snapshots from S3 into their own homes.
    let ran: Vec<(String, i64)> = q
        .query(
            "SELECT worker, count(*) FROM detvm_results WHERE campaign = $1 GROUP BY worker",
            &[&campaign],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut by_hidden = 0;
    for (w, h) in workers.0.iter().zip(&homes) {
        let suffix = format!("-{}", w.id());
        let n: i64 = ran
            .iter()
            .filter(|(name, _)| name.ends_with(&suffix))
            .map(|(_, n)| n)
            .sum();
        by_hidden += n;
        if n == 0 {
            continue;
        }
        let fetched = h.join("campaigns").join(&campaign);
        assert!(fetched.join("inputs.json").is_file());
        assert!(fetched.join("snapshots/T0.dsnap").is_file());
        assert!(fetched.join("project/files/docker-compose.yaml").is_file());
        assert!(h.join("images/index.json").is_file(), "images loaded");
    }
    assert_eq!(by_hidden, 8, "every branch ran on a hidden worker: {ran:?}");
    // The finished campaign's objects are deleted; the shared image blobs stay.
    for (k, v) in aws {
        std::env::set_var(k, v);
    }
    let store = detvm_service::scale::objects::Objects::open(OBJECTS).unwrap();
    assert!(!store.exists(&format!("{campaign}/project.bundle")).unwrap());
    assert!(!store.exists(&format!("{campaign}/inputs.json")).unwrap());
    let image = detvm_images::Store::open(home.join("images"))
        .unwrap()
        .resolve("detvm-examples/kv-server:1")
        .unwrap();
    let blob = detvm_service::scale::project::blob_key(&image.digest).unwrap();
    assert!(store.exists(&blob).unwrap(), "{blob} kept");
}
