//! Campaign rounds over the work queue: the coordinator's [`QueueExecutor`] queues a
//! round's items and waits for their results; [`serve_items`] is a worker's loop
//! (`detvm worker`). This first version needs the campaign's folder at the same path
//! on every host (a shared `.detvm`, e.g. over NFS): workers read parent snapshots and
//! the campaign's inputs from it and write their branch snapshots into it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use explorer::campaign::item::{ItemResult, WorkItem, Worker};
use explorer::campaign::Executor;
use explorer::observer::Quiet;
use explorer::run::RunError;

use super::queue::{Item, Leased, Queue, QueueError};

fn infra(e: impl std::fmt::Display) -> RunError {
    RunError::Infrastructure(e.to_string())
}

/// Runs each round's items on whichever workers take them from the queue.
pub struct QueueExecutor {
    queue: Queue,
    pub poll: Duration,
}

impl QueueExecutor {
    pub fn connect(url: &str) -> Result<QueueExecutor, QueueError> {
        Ok(QueueExecutor {
            queue: Queue::connect(url, "coordinator")?,
            poll: Duration::from_millis(200),
        })
    }
}

impl Executor for QueueExecutor {
    fn run(&mut self, items: &[WorkItem]) -> Result<Vec<ItemResult>, RunError> {
        let Some(campaign) = items.first().map(|i| i.campaign.clone()) else {
            return Ok(Vec::new());
        };
        let queued: Vec<Item> = items
            .iter()
            .map(|i| Item {
                campaign: i.campaign.clone(),
                timeline: i.timeline as i64,
                body: serde_json::to_value(i).expect("work items serialize"),
            })
            .collect();
        self.queue.enqueue(&queued).map_err(infra)?;
        loop {
            let mut done: BTreeMap<i64, serde_json::Value> = self
                .queue
                .results(&campaign)
                .map_err(infra)?
                .into_iter()
                .map(|(t, body, _)| (t, body))
                .collect();
            if items
                .iter()
                .all(|i| done.contains_key(&(i.timeline as i64)))
            {
                return items
                    .iter()
                    .map(|i| {
                        let body = done.remove(&(i.timeline as i64)).unwrap_or_default();
                        serde_json::from_value(body).map_err(infra)
                    })
                    .collect();
            }
            std::thread::sleep(self.poll);
        }
    }
}

/// A worker's loop: takes items with `lease`, runs each with the campaign's [`Worker`]
/// (opened once per campaign from `home`), commits its result; until `stop`.
pub fn serve_items(
    queue_url: &str,
    home: &std::path::Path,
    name: &str,
    lease: Duration,
    stop: &AtomicBool,
    mut said: impl FnMut(&str),
) -> Result<u64, RunError> {
    let mut queue = Queue::connect(queue_url, name).map_err(infra)?;
    let mut workers: BTreeMap<String, Worker> = BTreeMap::new();
    let mut count = 0;
    let home: PathBuf = home.to_path_buf();
    while !stop.load(Ordering::SeqCst) {
        let Some(leased): Option<Leased> = queue.take(lease).map_err(infra)? else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let item: WorkItem = serde_json::from_value(leased.item.body.clone()).map_err(infra)?;
        if !workers.contains_key(&item.campaign) {
            let w = Worker::open(&home, &item.campaign, &mut Quiet)?;
            workers.insert(item.campaign.clone(), w);
        }
        let worker = workers.get_mut(&item.campaign).expect("opened above");
        let result = worker.run(&item)?;
        let body = serde_json::to_value(&result).map_err(infra)?;
        if queue.complete(&leased, &body, &[]).map_err(infra)? {
            count += 1;
        }
        said(&format!(
            "{}/T{}: from T{}, {}",
            item.campaign,
            item.timeline,
            item.parent,
            if result.timeline.failed.is_empty() {
                "done".to_string()
            } else {
                format!("FAILED {}", result.timeline.failed.join(", "))
            }
        ));
    }
    Ok(count)
}
