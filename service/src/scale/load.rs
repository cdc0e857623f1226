//! A simulated campaign over the work queue, for the queue's load test and its
//! crash tests (`detvm-queue-load`, docs/scale-out.md): item `t` is a branch that
//! "runs" for a set time, optionally fetches a snapshot object, and brings items
//! `2t+1` and `2t+2` while they are below the campaign's size, so the items form the
//! same binary tree whichever worker runs which. Its result is a digest of its id
//! and its parent's, as a deterministic branch's would be.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use super::objects::Objects;
use super::queue::{Item, Queue, QueueError};

#[derive(Debug, Clone)]
pub struct Load {
    pub queue: String,
    pub campaign: String,
    /// Items in the whole tree.
    pub items: i64,
    pub workers: usize,
    /// How long each simulated branch runs.
    pub work: Duration,
    pub lease: Duration,
    /// An object every item fetches (a parent snapshot), if any.
    pub objects: Option<(String, String)>,
}

/// What a branch's result is: the same wherever and however often it runs.
pub fn result_of(timeline: i64) -> String {
    format!("{:x}", Sha256::digest(format!("branch {timeline}")))
}

/// Queues the tree's root item.
pub fn seed(load: &Load) -> Result<(), QueueError> {
    let q = Queue::connect(&load.queue, "seed")?;
    q.enqueue(&[Item {
        campaign: load.campaign.clone(),
        timeline: 0,
        body: json!({"parent": null}),
    }])
}

/// Runs `load.workers` workers until the campaign has no item left; returns the items
/// this run completed (first results only) and the wall time.
pub fn work(load: &Load, name: &str) -> Result<(u64, Duration), QueueError> {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..load.workers)
        .map(|w| {
            let load = load.clone();
            let done = Arc::clone(&done);
            let who = format!("{name}-{w}");
            std::thread::spawn(move || worker(&load, &who, &done))
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| QueueError::from_message("a worker thread panicked"))??;
    }
    Ok((done.load(Ordering::SeqCst), start.elapsed()))
}

fn worker(load: &Load, who: &str, done: &AtomicU64) -> Result<(), QueueError> {
    let q = Queue::connect(&load.queue, who)?;
    let objects = match &load.objects {
        Some((url, key)) => Some((
            Objects::open(url).map_err(|e| QueueError::from_message(&e.to_string()))?,
            key.clone(),
        )),
        None => None,
    };
    let scratch = tempfile::tempdir().map_err(|e| QueueError::from_message(&e.to_string()))?;
    loop {
        let Some(leased) = q.take(load.lease)? else {
            if q.pending(&load.campaign)? == 0 {
                return Ok(());
            }
            // Items are leased by others (or their leases have yet to expire).
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let _renewing = q.keep_alive(&leased, load.lease);
        if let Some((o, key)) = &objects {
            o.get_file(key, &scratch.path().join("parent.dsnap"))
                .map_err(|e| QueueError::from_message(&e.to_string()))?;
        }
        std::thread::sleep(load.work);
        let t = leased.item.timeline;
        let children: Vec<Item> = [2 * t + 1, 2 * t + 2]
            .into_iter()
            .filter(|c| *c < load.items)
            .map(|c| Item {
                campaign: load.campaign.clone(),
                timeline: c,
                body: json!({"parent": t}),
            })
            .collect();
        let result = json!({
            "result": result_of(t),
            "parent": leased.item.body["parent"],
            "leases": leased.leases,
        });
        if q.complete(&leased, &result, &children)? {
            done.fetch_add(1, Ordering::SeqCst);
        }
    }
}
