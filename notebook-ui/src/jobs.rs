//! Heavy work (replays, cells) off the async runtime: each job runs on a blocking
//! thread, at most [`PARALLEL`] at once (each holds whole VMs in memory), and reports
//! its state and the virtual time it reached, so pages can show progress while they
//! wait. Moment views are deterministic, so finished ones are kept in a small cache.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use crate::error::AppError;

/// Replays and branches running at once; more wait their turn ("queued").
pub const PARALLEL: usize = 2;
/// Moment views kept.
const CACHE: usize = 64;
/// A failed job is answered from memory this long, then tried again on request.
const KEEP_FAILED: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Queued,
    Running,
    Done { result: Arc<serde_json::Value> },
    Failed { error: String },
}

impl JobState {
    pub fn finished(&self) -> bool {
        matches!(self, JobState::Done { .. } | JobState::Failed { .. })
    }
}

pub struct Job {
    state: watch::Sender<JobState>,
    pub vtime_ns: Arc<AtomicU64>,
    ended: Mutex<Option<Instant>>,
}

impl Job {
    pub fn state(&self) -> JobState {
        self.state.borrow().clone()
    }

    /// Waits until the job finished or `wait` passed; returns its state then.
    pub async fn wait(&self, wait: Duration) -> JobState {
        let mut rx = self.state.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|s| s.finished())).await;
        self.state()
    }
}

#[derive(Default)]
struct Cache {
    order: VecDeque<String>,
    values: HashMap<String, Arc<serde_json::Value>>,
}

pub struct Jobs {
    running: Mutex<HashMap<String, Arc<Job>>>,
    permits: Arc<Semaphore>,
    cache: Mutex<Cache>,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs {
            running: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(PARALLEL)),
            cache: Mutex::new(Cache::default()),
        }
    }
}

impl Jobs {
    pub fn cached(&self, key: &str) -> Option<Arc<serde_json::Value>> {
        self.cache
            .lock()
            .expect("cache lock")
            .values
            .get(key)
            .cloned()
    }

    fn remember(&self, key: &str, value: Arc<serde_json::Value>) {
        let mut c = self.cache.lock().expect("cache lock");
        if c.values.insert(key.to_string(), value).is_none() {
            c.order.push_back(key.to_string());
        }
        while c.order.len() > CACHE {
            if let Some(old) = c.order.pop_front() {
                c.values.remove(&old);
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<Job>> {
        self.running.lock().expect("jobs lock").get(key).cloned()
    }

    /// The job for `key`: the one already running, else a new one running `work` on a
    /// blocking thread. `memo` (deterministic work such as a moment view): keep a
    /// result in the cache, and answer a failure from memory for a while.
    pub fn start<F>(self: &Arc<Self>, key: &str, memo: bool, work: F) -> Arc<Job>
    where
        F: FnOnce(Arc<AtomicU64>) -> Result<serde_json::Value, String> + Send + 'static,
    {
        let mut running = self.running.lock().expect("jobs lock");
        let stale = |job: &Job| {
            job.ended
                .lock()
                .expect("job lock")
                .is_some_and(|t| t.elapsed() > KEEP_FAILED)
        };
        running.retain(|_, job| !stale(job));
        if let Some(job) = running.get(key) {
            return job.clone();
        }
        let (tx, _) = watch::channel(JobState::Queued);
        let job = Arc::new(Job {
            state: tx,
            vtime_ns: Arc::new(AtomicU64::new(0)),
            ended: Mutex::new(None),
        });
        running.insert(key.to_string(), job.clone());
        drop(running);
        let jobs = self.clone();
        let key = key.to_string();
        let handle = job.clone();
        tokio::spawn(async move {
            let permit = jobs.permits.clone().acquire_owned().await;
            handle.state.send_replace(JobState::Running);
            let vtime = handle.vtime_ns.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                work(vtime)
            })
            .await
            .map_err(|e| AppError::from(e).message)
            .and_then(|r| r);
            match outcome {
                Ok(value) => {
                    let value = Arc::new(value);
                    if memo {
                        jobs.remember(&key, value.clone());
                    }
                    handle.state.send_replace(JobState::Done { result: value });
                    jobs.running.lock().expect("jobs lock").remove(&key);
                }
                Err(error) => {
                    handle.state.send_replace(JobState::Failed { error });
                    if memo {
                        *handle.ended.lock().expect("job lock") = Some(Instant::now());
                    } else {
                        jobs.running.lock().expect("jobs lock").remove(&key);
                    }
                }
            }
        });
        job
    }

    /// The virtual time a running job reached, for progress lines.
    pub fn progress(job: &Job) -> u64 {
        job.vtime_ns.load(Ordering::Relaxed)
    }
}
