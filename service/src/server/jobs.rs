//! Campaign jobs of `detvm serve`: each accepted bundle becomes a job, kept as
//! `service/jobs/<job>/job.json` under the server's `.detvm`, and run one at a time by
//! a worker thread with `explorer::campaign::explore`. A job the server left unfinished
//! (stopped, or killed) is taken up again when it starts: its campaign resumes from its
//! last committed round, or starts over when it never committed one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use explorer::campaign::{self, novelty::Weights, ExploreOptions};
use explorer::observer::Observer;
use explorer::run::{RunError, RunOptions};
use serde::{Deserialize, Serialize};
use vmm::backend::BackendKind;

use crate::bundle::Manifest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Passed,
    Failed,
    Error,
    /// The server stopped while the job was queued or running.
    Interrupted,
}

impl JobStatus {
    pub fn done(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub status: JobStatus,
    /// The campaign's id, once it started.
    pub campaign: Option<String>,
    /// `detvm explore`'s exit code, once done.
    pub exit_code: Option<u8>,
    pub error: Option<String>,
    /// What the campaign reported while it ran, one line each.
    pub log: Vec<String>,
    /// The campaign's report, once done.
    pub report: Option<serde_json::Value>,
}

/// Where campaigns run their rounds when not on this host's threads: the work queue
/// (`--queue`) and, when snapshots do not share a folder, the object store (`--objects`).
#[derive(Debug, Clone)]
pub struct ScaleOut {
    pub queue: String,
    pub objects: Option<String>,
}

pub struct Jobs {
    home: PathBuf,
    scale: Option<ScaleOut>,
    backend: BackendKind,
    threads: usize,
    jobs: Mutex<BTreeMap<String, Job>>,
    queue: Mutex<Option<Sender<String>>>,
    next: AtomicU64,
    pub stop: AtomicBool,
}

pub fn jobs_dir(home: &Path) -> PathBuf {
    home.join("service/jobs")
}

impl Jobs {
    /// Reads the jobs of earlier runs of the server and starts the worker thread, which
    /// first takes up again the jobs those runs left unfinished (oldest first).
    pub fn start(
        home: &Path,
        backend: BackendKind,
        threads: usize,
        scale: Option<ScaleOut>,
    ) -> Arc<Jobs> {
        let mut known = BTreeMap::new();
        let mut unfinished = Vec::new();
        if let Ok(dir) = std::fs::read_dir(jobs_dir(home)) {
            for e in dir.flatten() {
                let Ok(text) = std::fs::read_to_string(e.path().join("job.json")) else {
                    continue;
                };
                let Ok(mut job) = serde_json::from_str::<Job>(&text) else {
                    continue;
                };
                if !job.status.done() || job.status == JobStatus::Interrupted {
                    job.status = JobStatus::Queued;
                    job.log.push("the server restarted: taken up again".into());
                    unfinished.push(job.id.clone());
                }
                known.insert(job.id.clone(), job);
            }
        }
        let jobs = Arc::new(Jobs {
            home: home.to_path_buf(),
            scale,
            backend,
            threads: threads.max(1),
            jobs: Mutex::new(known),
            queue: Mutex::new(None),
            next: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let (tx, rx) = channel::<String>();
        unfinished.sort();
        for id in unfinished {
            let _ = tx.send(id);
        }
        *jobs.queue.lock().expect("queue lock") = Some(tx);
        let worker = Arc::clone(&jobs);
        std::thread::Builder::new()
            .name("detvm-campaigns".into())
            .spawn(move || {
                for id in rx {
                    worker.run(&id);
                }
            })
            .expect("spawn the campaign worker");
        jobs
    }

    /// A new job id, `j` + time + a counter, and its (empty) folder.
    pub fn new_id(&self) -> Result<(String, PathBuf), String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let id = format!(
            "j{:x}{:02x}",
            now.as_millis(),
            self.next.fetch_add(1, Ordering::SeqCst) % 256
        );
        let dir = jobs_dir(&self.home).join(&id);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok((id, dir))
    }

    pub fn get(&self, id: &str) -> Option<Job> {
        self.jobs.lock().expect("jobs lock").get(id).cloned()
    }

    pub fn list(&self) -> Vec<Job> {
        let mut all: Vec<Job> = self
            .jobs
            .lock()
            .expect("jobs lock")
            .values()
            .cloned()
            .collect();
        for j in &mut all {
            j.log.clear();
            j.report = None;
        }
        all
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut Job)) {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        if let Some(job) = jobs.get_mut(id) {
            change(job);
            let path = jobs_dir(&self.home).join(id).join("job.json");
            let _ = std::fs::write(path, serde_json::to_vec(job).unwrap_or_default());
        }
    }

    /// Queues a checked, unpacked bundle's campaign.
    pub fn enqueue(&self, id: &str) -> Job {
        let job = Job {
            id: id.to_string(),
            status: JobStatus::Queued,
            campaign: None,
            exit_code: None,
            error: None,
            log: Vec::new(),
            report: None,
        };
        self.jobs
            .lock()
            .expect("jobs lock")
            .insert(id.to_string(), job.clone());
        self.update(id, |_| {});
        if let Some(tx) = self.queue.lock().expect("queue lock").as_ref() {
            let _ = tx.send(id.to_string());
        }
        job
    }

    fn options(&self, dir: &Path, m: &Manifest) -> ExploreOptions {
        let c = &m.campaign;
        let branches = match (c.branches, c.budget_ms) {
            (None, None) => Some(40),
            (b, _) => b,
        };
        ExploreOptions {
            run: RunOptions {
                compose: dir.join("bundle/files").join(&m.compose),
                seed: c.seed,
                duration: c.duration_ms.map(Duration::from_millis),
                epoch: None,
                faults: None,
                no_faults: true,
                vars: c.vars.clone(),
                backend: self.backend,
                home: self.home.clone(),
                snapshot_at: Vec::new(),
            },
            branches,
            budget: c.budget_ms.map(Duration::from_millis),
            horizon: Duration::from_millis(c.horizon_ms.unwrap_or(3000)),
            jobs: self.threads,
            weights: Weights::default(),
            snapshot_cap: campaign::files::DEFAULT_CAP,
            resume: None,
        }
    }

    /// The campaign an unfinished job can resume: one it started that committed a round.
    fn resumable(&self, id: &str) -> Option<String> {
        let campaign = self.get(id)?.campaign?;
        let store = campaign::store::CampaignStore::open(&self.home).ok()?;
        store.state(&campaign).ok()?.map(|_| campaign)
    }

    fn run(&self, id: &str) {
        let dir = jobs_dir(&self.home).join(id);
        let manifest = std::fs::read(dir.join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok());
        let Some(manifest) = manifest else {
            self.update(id, |j| {
                j.status = JobStatus::Error;
                j.error = Some("the job's manifest is gone".into());
                j.exit_code = Some(3);
            });
            return;
        };
        let mut opts = self.options(&dir, &manifest);
        opts.resume = self.resumable(id);
        self.update(id, |j| {
            j.status = JobStatus::Running;
            if opts.resume.is_none() {
                // Starting over: the campaign id comes from the new campaign's first note.
                j.campaign = None;
            }
        });
        let mut log = JobLog { jobs: self, id };
        let result = match &self.scale {
            None => campaign::explore(&opts, &mut log, &self.stop),
            Some(scale) => crate::scale::executor::QueueExecutor::connect(
                &scale.queue,
                scale.objects.as_deref(),
                &self.home,
            )
            .and_then(|mut exec| {
                campaign::explore_with(&opts, &mut log, &self.stop, Some(&mut exec))
            }),
        };
        if let (Ok(report), Some(url)) = (
            &result,
            self.scale.as_ref().and_then(|s| s.objects.as_deref()),
        ) {
            if report.stopped != "interrupted" {
                self.delete_objects(id, url, &report.campaign);
            }
        }
        self.update(id, |j| match result {
            Ok(report) => {
                let failed = report.failed();
                j.campaign = Some(report.campaign.clone());
                j.status = if failed {
                    JobStatus::Failed
                } else {
                    JobStatus::Passed
                };
                j.exit_code = Some(u8::from(failed));
                if report.stopped == "interrupted" {
                    j.status = JobStatus::Interrupted;
                    j.exit_code = Some(130);
                }
                j.report = serde_json::to_value(&report).ok();
            }
            Err(e) => {
                j.status = JobStatus::Error;
                j.exit_code = Some(match e {
                    RunError::Input(_) => 4,
                    RunError::Setup(_) => 2,
                    RunError::Infrastructure(_) => 3,
                });
                j.error = Some(e.to_string());
            }
        });
    }
}

impl Jobs {
    /// A finished campaign's objects (its project, inputs and snapshots: `C/…`) are
    /// no longer needed by any worker; image blobs, shared by campaigns, stay.
    fn delete_objects(&self, id: &str, url: &str, campaign: &str) {
        let line = match crate::scale::objects::Objects::open(url)
            .and_then(|o| o.delete_under(campaign))
        {
            Ok(n) => format!("the campaign's {n} objects deleted from the object store"),
            Err(e) => format!("warning: the campaign's objects were not deleted: {e}"),
        };
        self.update(id, |j| j.log.push(line));
    }
}

/// The engine's notes into the job's log; the campaign's id from its first note.
struct JobLog<'a> {
    jobs: &'a Jobs,
    id: &'a str,
}

impl Observer for JobLog<'_> {
    fn info(&mut self, message: &str) {
        let campaign = message
            .strip_prefix("campaign ")
            .and_then(|rest| rest.split(',').next())
            .filter(|c| c.starts_with('c'))
            .map(String::from);
        self.jobs.update(self.id, |j| {
            if j.campaign.is_none() {
                j.campaign = campaign;
            }
            j.log.push(message.to_string());
        });
    }
    fn warning(&mut self, message: &str) {
        self.jobs
            .update(self.id, |j| j.log.push(format!("warning: {message}")));
    }
}
