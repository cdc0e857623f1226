//! Campaign rounds over the work queue: the coordinator's [`QueueExecutor`] queues a
//! round's items and waits for their results; [`serve_items`] is a worker's loop
//! (`detvm worker`).
//!
//! Snapshot files travel one of two ways. With an object store (`--objects`), the
//! coordinator uploads the campaign's inputs and each item's parent snapshot (and the
//! files it is incremental against), workers download what they lack into their own
//! `.detvm` and upload the snapshot their branch ended with, and the coordinator
//! downloads that; the campaign's project (compose file and the files it names) and
//! its images travel the same way ([`super::project`]), so a worker needs nothing but
//! the queue and the store. Without one, the campaign's folder must be the same on every
//! host (a shared `.detvm`, e.g. over NFS), the compose file readable at the server's
//! path and the images in each worker's store (docs/scale-out.md).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use explorer::campaign::item::{snapshot_dir, snapshot_name, ItemResult, WorkItem, Worker};
use explorer::campaign::store::CampaignStore;
use explorer::campaign::{campaigns_dir, Executor};
use explorer::observer::Quiet;
use explorer::run::RunError;
use serde::{Deserialize, Serialize};

use super::objects::Objects;
use super::project;
use super::queue::{Item, Leased, Queue};

/// Reads after which an item is given up (committed as an error): a branch that kills
/// every worker that runs it would otherwise go round forever.
pub const MAX_READS: i32 = 5;

/// The campaign files a worker needs besides snapshots (written by the coordinator).
const INPUT_FILES: [&str; 2] = ["inputs.json", "campaign.json"];

fn infra(e: impl std::fmt::Display) -> RunError {
    RunError::Infrastructure(e.to_string())
}

/// An item as queued: the branch, and the snapshot files its parent's state is read
/// from (the parent's, then the one it is incremental against, … to the root's).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Queued {
    work: WorkItem,
    files: Vec<String>,
}

/// What a worker commits: the branch's result, or why the item was given up.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Outcome {
    Ran(Box<ItemResult>),
    GaveUp { error: String },
}

/// The object key of a campaign's file.
fn key(campaign: &str, file: &str) -> String {
    format!("{campaign}/{file}")
}

/// Runs each round's items on whichever workers take them from the queue.
pub struct QueueExecutor {
    queue: Queue,
    objects: Option<Objects>,
    home: PathBuf,
    /// Object keys known to be in the store already.
    uploaded: BTreeSet<String>,
    pub poll: Duration,
}

impl QueueExecutor {
    pub fn connect(url: &str, objects: Option<&str>, home: &Path) -> Result<Self, RunError> {
        Ok(QueueExecutor {
            queue: Queue::connect(url, "coordinator").map_err(infra)?,
            objects: objects.map(Objects::open).transpose().map_err(infra)?,
            home: home.to_path_buf(),
            uploaded: BTreeSet::new(),
            poll: Duration::from_millis(200),
        })
    }

    /// The snapshot chain of `parent`, from the campaign's committed state.
    fn chain(&self, campaign: &str, parent: u64) -> Result<Vec<String>, RunError> {
        let store = CampaignStore::open(&self.home).map_err(infra)?;
        let state = store
            .state(campaign)
            .map_err(infra)?
            .ok_or_else(|| infra(format!("campaign {campaign} has no committed state")))?;
        let mut files = Vec::new();
        let mut at = Some(parent);
        while let Some(t) = at {
            files.push(snapshot_name(t));
            at = state.files.kept.get(&t).and_then(|(_, p)| *p);
            if files.len() > state.files.kept.len() + 1 {
                return Err(infra("the snapshot files' parents make a loop"));
            }
        }
        Ok(files)
    }

    /// Puts the campaign's project, images, inputs and these snapshot files into the
    /// object store (each once).
    fn upload(&mut self, campaign: &str, snapshots: &BTreeSet<String>) -> Result<(), RunError> {
        let Some(objects) = &self.objects else {
            return Ok(());
        };
        project::upload(objects, &self.home, campaign, &mut self.uploaded)?;
        let dir = campaigns_dir(&self.home).join(campaign);
        let files = INPUT_FILES
            .iter()
            .map(|f| (f.to_string(), dir.join(f)))
            .chain(
                snapshots
                    .iter()
                    .map(|f| (format!("snapshots/{f}"), snapshot_dir(&dir).join(f))),
            );
        for (name, path) in files {
            let k = key(campaign, &name);
            if self.uploaded.contains(&k) {
                continue;
            }
            if !objects.exists(&k).map_err(infra)? {
                objects.put_file(&k, &path).map_err(infra)?;
            }
            self.uploaded.insert(k);
        }
        Ok(())
    }

    /// Makes a result's snapshot file present here (downloading it when there is an
    /// object store); false when it cannot be had.
    fn fetch_snapshot(&mut self, campaign: &str, file: &str) -> bool {
        let path = snapshot_dir(&campaigns_dir(&self.home).join(campaign)).join(file);
        if path.is_file() {
            return true;
        }
        let Some(objects) = &self.objects else {
            return false;
        };
        let k = key(campaign, &format!("snapshots/{file}"));
        let fetched = objects.get_file(&k, &path).is_ok();
        if fetched {
            self.uploaded.insert(k);
        }
        fetched
    }
}

impl Executor for QueueExecutor {
    fn run(&mut self, items: &[WorkItem]) -> Result<Vec<ItemResult>, RunError> {
        let Some(campaign) = items.first().map(|i| i.campaign.clone()) else {
            return Ok(Vec::new());
        };
        let mut queued = Vec::new();
        let mut snapshots = BTreeSet::new();
        for i in items {
            let files = self.chain(&campaign, i.parent)?;
            snapshots.extend(files.iter().cloned());
            let body = Queued {
                work: i.clone(),
                files,
            };
            queued.push(Item {
                campaign: i.campaign.clone(),
                timeline: i.timeline as i64,
                body: serde_json::to_value(&body).map_err(infra)?,
            });
        }
        self.upload(&campaign, &snapshots)?;
        // A campaign resumed after its coordinator stopped queues its round again:
        // items already queued or done are left as they are.
        self.queue.enqueue(&queued).map_err(infra)?;
        let timelines: Vec<i64> = queued.iter().map(|q| q.timeline).collect();
        loop {
            let results = self.wait_results(&campaign, &timelines)?;
            // A result whose snapshot file was lost (e.g. cleared as a stray when this
            // campaign resumed) is run again, which gives the same result.
            let mut redo = Vec::new();
            for (q, r) in queued.iter().zip(&results) {
                let lost = r
                    .snapshot
                    .as_ref()
                    .is_some_and(|s| !self.fetch_snapshot(&campaign, &s.file));
                if lost {
                    redo.push(q);
                }
            }
            if redo.is_empty() {
                return Ok(results);
            }
            for q in redo {
                self.queue.redo(q).map_err(infra)?;
            }
        }
    }
}

impl QueueExecutor {
    /// Waits until each of `timelines` of `campaign` has a result and returns them in
    /// that order. An item given up (read more than [`MAX_READS`] times) stops here with
    /// an error naming it (`C/T`) and why: the campaign cannot go on without it.
    pub fn wait_results(
        &self,
        campaign: &str,
        timelines: &[i64],
    ) -> Result<Vec<ItemResult>, RunError> {
        loop {
            let mut done: BTreeMap<i64, serde_json::Value> = self
                .queue
                .results(campaign)
                .map_err(infra)?
                .into_iter()
                .map(|d| (d.timeline, d.body))
                .collect();
            if !timelines.iter().all(|t| done.contains_key(t)) {
                std::thread::sleep(self.poll);
                continue;
            }
            let mut results = Vec::new();
            for t in timelines {
                let body = done.remove(t).unwrap_or_default();
                match serde_json::from_value::<Outcome>(body).map_err(infra)? {
                    Outcome::GaveUp { error } => {
                        return Err(infra(format!("{campaign}/T{t}: {error}")))
                    }
                    Outcome::Ran(r) => results.push(*r),
                }
            }
            return Ok(results);
        }
    }
}

/// How a worker runs: where its `.detvm` is, its name, its lease, the object store.
pub struct WorkerSetup<'a> {
    pub queue: &'a str,
    pub home: &'a Path,
    pub name: &'a str,
    pub lease: Duration,
    pub objects: Option<&'a str>,
}

/// A worker's loop: takes items with a lease kept alive while it runs them, runs each
/// with the campaign's [`Worker`] (opened once per campaign), commits its result; until
/// `stop`. Returns how many items it completed first.
pub fn serve_items(
    setup: &WorkerSetup,
    stop: &AtomicBool,
    mut said: impl FnMut(&str),
) -> Result<u64, RunError> {
    let queue = Queue::connect(setup.queue, setup.name).map_err(infra)?;
    let objects = setup
        .objects
        .map(Objects::open)
        .transpose()
        .map_err(infra)?;
    let mut workers: BTreeMap<String, Worker> = BTreeMap::new();
    let mut count = 0;
    while !stop.load(Ordering::SeqCst) {
        let Some(leased): Option<Leased> = queue.take(setup.lease).map_err(infra)? else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let _renewing = queue.keep_alive(&leased, setup.lease);
        let outcome = if leased.leases > MAX_READS {
            Outcome::GaveUp {
                error: format!(
                    "given up after {} reads (each worker that took it died or failed)",
                    leased.leases - 1
                ),
            }
        } else {
            match run_one(&leased, setup, objects.as_ref(), &mut workers) {
                Ok(r) => Outcome::Ran(Box::new(r)),
                Err(e) => {
                    // Left to its lease: another try here or elsewhere, up to MAX_READS.
                    said(&format!(
                        "{}/T{}: {e} (read {} of {MAX_READS})",
                        leased.item.campaign, leased.item.timeline, leased.leases
                    ));
                    continue;
                }
            }
        };
        said(&format!(
            "{}/T{}: {}",
            leased.item.campaign,
            leased.item.timeline,
            match &outcome {
                Outcome::Ran(r) if r.timeline.failed.is_empty() => "done".to_string(),
                Outcome::Ran(r) => format!("FAILED {}", r.timeline.failed.join(", ")),
                Outcome::GaveUp { error } => error.clone(),
            }
        ));
        let body = serde_json::to_value(&outcome).map_err(infra)?;
        if queue.complete(&leased, &body, &[]).map_err(infra)? {
            count += 1;
        }
    }
    Ok(count)
}

/// Runs one leased item: its campaign's inputs, project, images and parent snapshots
/// fetched first when there is an object store, its branch's snapshot uploaded after.
fn run_one(
    leased: &Leased,
    setup: &WorkerSetup,
    objects: Option<&Objects>,
    workers: &mut BTreeMap<String, Worker>,
) -> Result<ItemResult, RunError> {
    let queued: Queued = serde_json::from_value(leased.item.body.clone()).map_err(infra)?;
    let item = &queued.work;
    let dir = campaigns_dir(setup.home).join(&item.campaign);
    if let Some(o) = objects {
        let snapshots = snapshot_dir(&dir);
        std::fs::create_dir_all(&snapshots).map_err(infra)?;
        for f in INPUT_FILES {
            if !dir.join(f).is_file() {
                o.get_file(&key(&item.campaign, f), &dir.join(f))
                    .map_err(infra)?;
            }
        }
        for f in &queued.files {
            if !snapshots.join(f).is_file() {
                o.get_file(
                    &key(&item.campaign, &format!("snapshots/{f}")),
                    &snapshots.join(f),
                )
                .map_err(infra)?;
            }
        }
    }
    if !workers.contains_key(&item.campaign) {
        // With an object store the compose file is this home's copy of the project, and
        // the images are loaded here first, so `x-detvm.prepare` has nothing to build.
        let project = objects
            .map(|o| project::fetch(o, setup.home, &item.campaign))
            .transpose()?;
        let w =
            Worker::open_with_project(setup.home, &item.campaign, project.as_deref(), &mut Quiet)?;
        workers.insert(item.campaign.clone(), w);
    }
    let worker = workers.get_mut(&item.campaign).expect("opened above");
    let result = worker.run(item)?;
    if let (Some(o), Some(s)) = (objects, &result.snapshot) {
        let path = snapshot_dir(&dir).join(&s.file);
        o.put_file(
            &key(&item.campaign, &format!("snapshots/{}", s.file)),
            &path,
        )
        .map_err(infra)?;
    }
    Ok(result)
}
