//! The scale-out work queue (pgmq) on a real PostgreSQL and snapshot objects on a real
//! S3 server (moto), both started here on loopback: workers sharing a campaign give the
//! same tree as one; a worker killed with SIGKILL mid-item loses nothing (its lease
//! lapses, the item is redone) and duplicates nothing; a live worker's lease is renewed
//! past its length, so a slow item is not redone; an item whose every read dies is
//! given up after `MAX_READS` reads and stops its campaign with an error naming it.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use detvm_service::scale::executor::{serve_items, QueueExecutor, WorkerSetup, MAX_READS};
use detvm_service::scale::load::{result_of, seed, work, Load};
use detvm_service::scale::objects::Objects;
use detvm_service::scale::queue::{Item, Queue};
use serde_json::json;

fn load(url: &str, campaign: &str, items: i64, workers: usize) -> Load {
    Load {
        queue: url.to_string(),
        campaign: campaign.into(),
        items,
        workers,
        work: Duration::from_millis(5),
        lease: Duration::from_secs(2),
        objects: None,
    }
}

/// timeline → (result, parent) of a campaign.
fn tree(url: &str, campaign: &str) -> BTreeMap<i64, (String, serde_json::Value)> {
    let q = Queue::connect(url, "reader").unwrap();
    q.results(campaign)
        .unwrap()
        .into_iter()
        .map(|d| {
            (
                d.timeline,
                (
                    d.body["result"].as_str().unwrap().to_string(),
                    d.body["parent"].clone(),
                ),
            )
        })
        .collect()
}

#[test]
fn workers_sharing_a_campaign_give_the_same_tree_as_one() {
    let pg = support::postgres();
    let one = load(&pg.url, "one", 40, 1);
    seed(&one).unwrap();
    assert_eq!(work(&one, "solo").unwrap().0, 40);
    let three = load(&pg.url, "three", 40, 3);
    seed(&three).unwrap();
    assert_eq!(work(&three, "team").unwrap().0, 40);
    let (a, b) = (tree(&pg.url, "one"), tree(&pg.url, "three"));
    assert_eq!(a.len(), 40);
    assert_eq!(a, b);
    assert!(a.iter().all(|(t, (r, _))| *r == result_of(*t)));
    let q = Queue::connect(&pg.url, "reader").unwrap();
    let workers: std::collections::BTreeSet<String> = q
        .results("three")
        .unwrap()
        .into_iter()
        .map(|d| d.worker)
        .collect();
    assert!(workers.len() > 1, "the work was shared: {workers:?}");
}

#[test]
fn a_result_and_its_new_items_commit_together_and_duplicates_change_nothing() {
    let pg = support::postgres();
    let a = Queue::connect(&pg.url, "a").unwrap();
    let b = Queue::connect(&pg.url, "b").unwrap();
    let root = Item {
        campaign: "c".into(),
        timeline: 0,
        body: json!({}),
    };
    a.enqueue(&[root.clone(), root.clone()]).unwrap();
    let lease = Duration::from_secs(1);
    let first = a.take(lease).unwrap().expect("the item");
    assert!(
        b.take(lease).unwrap().is_none(),
        "leased items are not handed out twice"
    );
    // No renewal: the lease lapses and the item is handed out again.
    std::thread::sleep(Duration::from_millis(1300));
    let again = b.take(lease).unwrap().expect("the lease expired");
    assert_eq!(again.leases, 2);
    assert!(
        !a.renew(&first, lease).unwrap(),
        "a lapsed lease is not renewed while another worker holds the item"
    );
    assert!(
        b.renew(&again, lease).unwrap(),
        "the holder's lease is renewed"
    );
    let child = Item {
        campaign: "c".into(),
        timeline: 1,
        body: json!({}),
    };
    assert!(b
        .complete(&again, &json!({"by": "b"}), std::slice::from_ref(&child))
        .unwrap());
    // The first holder finishes late: its duplicate result is dropped, the child stays one.
    assert!(!a
        .complete(&first, &json!({"by": "a"}), std::slice::from_ref(&child))
        .unwrap());
    a.enqueue(&[root]).unwrap(); // a late re-queue of a done item is ignored
    assert!(
        !a.renew(&first, lease).unwrap(),
        "a lapsed lease that another worker took over is not renewed"
    );
    let results = a.results("c").unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].body["by"], "b");
    assert_eq!(results[0].reads, 2);
    assert_eq!(a.pending("c").unwrap(), 1, "only the child is left");
    let only = b.take(lease).unwrap().expect("the child");
    assert_eq!((only.item.timeline, only.leases), (1, 1));
    assert!(
        b.take(lease).unwrap().is_none(),
        "the child was queued once"
    );
}

#[test]
fn a_live_workers_lease_is_renewed_past_its_length() {
    let pg = support::postgres();
    let a = Queue::connect(&pg.url, "slow").unwrap();
    let b = Queue::connect(&pg.url, "eager").unwrap();
    a.enqueue(&[Item {
        campaign: "slow".into(),
        timeline: 0,
        body: json!({}),
    }])
    .unwrap();
    // A 1 s lease, an item that runs 3.5 s: renewals keep it from the other worker.
    let lease = Duration::from_secs(1);
    let held = a.take(lease).unwrap().expect("the item");
    let renewing = a.keep_alive(&held, lease);
    let end = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < end {
        assert!(
            b.take(lease).unwrap().is_none(),
            "the item was handed out again while its worker lived"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(a.complete(&held, &json!({"by": "slow"}), &[]).unwrap());
    drop(renewing);
    let results = b.results("slow").unwrap();
    assert_eq!((results.len(), results[0].reads), (1, 1));
    assert_eq!(b.pending("slow").unwrap(), 0);
}

#[test]
fn a_worker_killed_mid_item_loses_and_duplicates_nothing() {
    let pg = support::postgres();
    let exe = env!("CARGO_BIN_EXE_detvm-queue-load");
    let items = "30";
    let run = |args: &[&str]| Command::new(exe).args(args).spawn().unwrap();
    assert!(run(&["seed", &pg.url, "k", items])
        .wait()
        .unwrap()
        .success());
    // A slow worker (1 s per item, 2 s leases), killed once it holds an item.
    let mut victim = run(&["work", &pg.url, "k", items, "2", "1000", "2000"]);
    let q = Queue::connect(&pg.url, "watch").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let results = q.results("k").unwrap().len();
        if results >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the victim did no work");
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-9", &victim.id().to_string()])
        .status()
        .unwrap();
    victim.wait().unwrap();
    let held = q.pending("k").unwrap();
    assert!(held > 0, "the campaign was not done when killed");
    // Survivors finish the campaign, redoing whatever the victim held.
    let out = Command::new(exe)
        .args(["work", &pg.url, "k", items, "3", "5", "2000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let t = tree(&pg.url, "k");
    assert_eq!(t.len(), 30, "every item exactly once");
    assert!(t.iter().all(|(k, (r, _))| *r == result_of(*k)));
    assert_eq!(q.pending("k").unwrap(), 0);
    let redone = q
        .results("k")
        .unwrap()
        .into_iter()
        .filter(|d| d.reads > 1)
        .count();
    assert!(redone >= 1, "the victim's leased items were taken again");
}

#[test]
fn snapshots_go_through_a_real_s3_server_and_a_shared_folder() {
    let s3 = support::s3();
    std::env::set_var("AWS_ENDPOINT", &s3.url);
    std::env::set_var("AWS_ALLOW_HTTP", "true");
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_REGION", "us-east-1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("T0.dsnap");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();
    let shared = format!("file://{}", dir.path().join("shared").display());
    for url in ["s3://detvm/campaigns".to_string(), shared] {
        let o = Objects::open(&url).unwrap();
        assert!(!o.exists("c1/T0.dsnap").unwrap(), "{url}");
        assert_eq!(
            o.put_file("c1/T0.dsnap", &file).unwrap(),
            bytes.len() as u64
        );
        assert!(o.exists("c1/T0.dsnap").unwrap(), "{url}");
        let back = dir.path().join("back.dsnap");
        o.get_file("c1/T0.dsnap", &back).unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), bytes, "{url}");
    }
}

#[test]
fn an_item_whose_every_read_dies_is_given_up_and_stops_its_campaign() {
    let pg = support::postgres();
    let lease = Duration::from_secs(1);
    let q = Queue::connect(&pg.url, "dying").unwrap();
    q.enqueue(&[Item {
        campaign: "c".into(),
        timeline: 3,
        body: json!({}),
    }])
    .unwrap();
    // MAX_READS workers take it and die with it: nobody completes, each lease lapses.
    for read in 1..=MAX_READS {
        let deadline = Instant::now() + Duration::from_secs(10);
        let held = loop {
            if let Some(h) = q.take(lease).unwrap() {
                break h;
            }
            assert!(
                Instant::now() < deadline,
                "read {read}: the lease never lapsed"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(held.leases, read);
    }
    assert!(q.results("c").unwrap().is_empty(), "not given up yet");
    // A real worker loop reads it once more and commits it as given up.
    let stop = AtomicBool::new(false);
    let home = tempfile::tempdir().unwrap();
    let setup = WorkerSetup {
        queue: &pg.url,
        home: home.path(),
        name: "last",
        lease,
        objects: None,
    };
    let coordinator = QueueExecutor::connect(&pg.url, None, home.path()).unwrap();
    let error = std::thread::scope(|s| {
        let worker = s.spawn(|| serve_items(&setup, &stop, |_| {}));
        let error = coordinator.wait_results("c", &[3]).map(|_| ()).unwrap_err();
        stop.store(true, Ordering::SeqCst);
        assert_eq!(worker.join().unwrap().unwrap(), 1, "one item completed");
        error
    });
    let text = error.to_string();
    assert!(
        text.contains("c/T3: given up after 5 reads"),
        "the campaign stops naming the item and why: {text}"
    );
    let results = q.results("c").unwrap();
    assert_eq!((results.len(), results[0].reads), (1, MAX_READS + 1));
    assert_eq!(results[0].worker, "last");
    assert_eq!(q.pending("c").unwrap(), 0, "nothing left to read again");
}

#[test]
fn a_late_renewal_of_a_lapsed_lease_leaves_the_new_holders_lease_as_it_was() {
    let pg = support::postgres();
    let a = Queue::connect(&pg.url, "late").unwrap();
    let b = Queue::connect(&pg.url, "next").unwrap();
    a.enqueue(&[Item {
        campaign: "late".into(),
        timeline: 0,
        body: json!({}),
    }])
    .unwrap();
    let lease = Duration::from_secs(1);
    let first = a.take(lease).unwrap().expect("the item");
    std::thread::sleep(Duration::from_millis(1300));
    let again = b.take(lease).unwrap().expect("the lease lapsed");
    // The first holder wakes up and tries to renew for long: refused, and rolled back.
    assert!(!a.renew(&first, Duration::from_secs(30)).unwrap());
    std::thread::sleep(Duration::from_millis(1300));
    let third = a
        .take(lease)
        .unwrap()
        .expect("the second holder's 1 s lease lapsed as it was, not extended to 30 s");
    assert_eq!((again.leases, third.leases), (2, 3));
}
