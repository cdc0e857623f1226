//! A campaign of a real system over the work queue: `detvm serve --queue` on a real
//! PostgreSQL (started here on loopback) and two `detvm worker` processes sharing the
//! server's `.detvm`. One worker is killed with SIGKILL mid-campaign; the campaign
//! completes, and its tree is the one `detvm explore` grows on one host.

mod common;

#[path = "../../service/tests/support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{detvm, example_home, read_json, run_detvm, text};
use common::server::Server;
use detvm_service::client::Client;

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

fn worker(home: &std::path::Path, queue: &str) -> Child {
    Command::new(detvm())
        .args(["worker", "--queue", queue, "--lease", "60s"])
        .env("DETVM_HOME", home)
        .current_dir(support::repo_root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn workers_give_the_one_host_tree_and_survive_a_killed_worker() {
    let home = example_home("workers-home", "examples/kv/build-images.sh");
    let tmp = tempfile::tempdir().unwrap();
    let here = tmp.path().join("here.json");
    let mut args = vec!["explore", "examples/kv/docker-compose.yaml"];
    args.extend_from_slice(&CAMPAIGN);
    args.extend_from_slice(&["--jobs", "2", "--json", here.to_str().unwrap()]);
    let out = run_detvm(&home, &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let one_host = read_json(&here)["timelines"].clone();

    let pg = support::postgres();
    let server = Server::start(&home, &["--queue", &pg.url]);
    let mut workers = vec![worker(&home, &pg.url), worker(&home, &pg.url)];
    let mut push = Command::new(detvm())
        .args([
            "push",
            "--server",
            &server.url,
            "examples/kv/docker-compose.yaml",
        ])
        .args(CAMPAIGN)
        .arg("--wait")
        .env("DETVM_HOME", &home)
        .current_dir(support::repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill one worker while it holds an item, once the campaign's first results are in.
    let mut q = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    let mut victim = workers.remove(0);
    let holder = format!("%-{}", victim.id());
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done: i64 = q
            .query_one("SELECT count(*) FROM detvm_results", &[])
            .map(|r| r.get(0))
            .unwrap_or(0);
        let holds: i64 = q
            .query_one(
                "SELECT count(*) FROM detvm_items WHERE worker LIKE $1 AND leased_until > now()",
                &[&holder],
            )
            .map(|r| r.get(0))
            .unwrap_or(0);
        if done >= 2 && holds > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the victim never held an item");
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill")
        .args(["-9", &victim.id().to_string()])
        .status()
        .unwrap();
    victim.wait().unwrap();
    let status = push.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(push.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert_eq!(status.code(), Some(1), "the planted bug fails: {stdout}");
    for mut w in workers {
        let _ = w.kill();
        let _ = w.wait();
    }

    let job = stdout
        .lines()
        .find_map(|l| l.strip_prefix("job ").and_then(|r| r.split(':').next()))
        .expect(&stdout)
        .to_string();
    let report = Client::new(&server.url, None)
        .job(&job)
        .unwrap()
        .report
        .expect("the job's report");
    assert_eq!(
        report["timelines"], one_host,
        "the tree over workers is the one-host tree"
    );
    let rows: Vec<(String, i64)> = q
        .query("SELECT campaign, timeline FROM detvm_results", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows.len(),
        8,
        "one result per branch, none lost or doubled: {rows:?}"
    );
    let left: i64 = q
        .query_one("SELECT count(*) FROM detvm_items", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}
