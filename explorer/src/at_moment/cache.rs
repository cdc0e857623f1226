//! Snapshots kept in memory along replays, and what replays of a run or campaign are
//! built from (its prepared inputs, world plan and scratch folder), so that a moment
//! near one seen before restores from at most [`EVERY_NS`] back instead of from the
//! snapshot files. Snapshots are copy-on-write images of guest RAM, so one costs its
//! changed pages; the cache is bounded by those bytes and evicts the least recently
//! used. A cache that keeps nothing ([`MomentCache::none`]) serves one-off replays
//! (`detvm replay`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::campaign::Root;
use crate::run::setup::WorldPlan;
use crate::run::SessionSnapshot;

/// Virtual time between the snapshots a replay keeps.
pub const EVERY_NS: u64 = 1_000_000_000;
/// The most bytes of snapshots kept by default (their own pages; see [`snapshot_bytes`]).
pub const MAX_BYTES: u64 = 3 << 30;
/// Runs and campaigns whose prepared inputs are kept.
const MAX_BASES: usize = 4;

/// What every session of one stored run, or of one campaign's timelines, starts from.
pub enum Base {
    Run {
        plan: WorldPlan,
        seed: u64,
        duration_ns: u64,
        _scratch: tempfile::TempDir,
    },
    Campaign {
        root: Root,
        dir: PathBuf,
        _scratch: tempfile::TempDir,
    },
}

struct Entry {
    snapshot: Arc<SessionSnapshot>,
    bytes: u64,
    used: u64,
}

#[derive(Default)]
struct Inner {
    /// By run id or campaign id.
    bases: HashMap<String, (Arc<Base>, u64)>,
    /// By timeline (a run id or `C/T<n>`) and virtual time.
    snapshots: HashMap<(String, u64), Entry>,
    bytes: u64,
    clock: u64,
    /// Prepared inputs built (a cold start), for measurements.
    prepared: u64,
}

pub struct MomentCache {
    inner: Mutex<Inner>,
    max_bytes: u64,
}

impl Default for MomentCache {
    fn default() -> Self {
        MomentCache::new(MAX_BYTES)
    }
}

/// Bytes a snapshot holds of its own: its RAM pages that differ from their frozen
/// bases (the bases are shared by every snapshot of a session), an estimate.
pub fn snapshot_bytes(s: &SessionSnapshot) -> u64 {
    s.world
        .memory
        .iter()
        .flatten()
        .map(|m| m.pages.len() as u64 * 4096)
        .sum::<u64>()
        + 64 * 1024
}

/// The run or campaign a timeline id belongs to (`C/T7` → `C`).
fn owner(timeline: &str) -> &str {
    timeline.split('/').next().unwrap_or(timeline)
}

impl MomentCache {
    /// A cache of at most `max_bytes` of snapshots.
    pub fn new(max_bytes: u64) -> MomentCache {
        MomentCache {
            inner: Mutex::new(Inner::default()),
            max_bytes,
        }
    }

    /// Keeps no snapshots (and no base past its one use): replays run straight on.
    pub fn none() -> MomentCache {
        MomentCache::new(0)
    }

    pub fn keeps(&self) -> bool {
        self.max_bytes > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The base of `key` (a run or campaign id), built by `make` when not kept.
    pub(crate) fn base<E>(
        &self,
        key: &str,
        make: impl FnOnce() -> Result<Base, E>,
    ) -> Result<Arc<Base>, E> {
        {
            let mut inner = self.lock();
            inner.clock += 1;
            let clock = inner.clock;
            if let Some((base, used)) = inner.bases.get_mut(key) {
                *used = clock;
                return Ok(base.clone());
            }
        }
        let base = Arc::new(make()?);
        let mut inner = self.lock();
        inner.prepared += 1;
        if !self.keeps() {
            return Ok(base);
        }
        inner.clock += 1;
        let clock = inner.clock;
        // Another replay (a warm-up, a second tab) may have built this key's base while
        // this one did: keep the first, so every snapshot kept for the key refers to the
        // volumes of the base that stays (a replaced base's scratch folder goes with it).
        if let Some((kept, used)) = inner.bases.get_mut(key) {
            *used = clock;
            return Ok(kept.clone());
        }
        inner.bases.insert(key.to_string(), (base.clone(), clock));
        while inner.bases.len() > MAX_BASES {
            let oldest = inner
                .bases
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
                .expect("not empty");
            inner.bases.remove(&oldest);
            let gone: Vec<(String, u64)> = inner
                .snapshots
                .keys()
                .filter(|(t, _)| owner(t) == oldest)
                .cloned()
                .collect();
            for k in gone {
                if let Some(e) = inner.snapshots.remove(&k) {
                    inner.bytes -= e.bytes;
                }
            }
        }
        Ok(base)
    }

    /// The latest kept snapshot of `timeline` at or before `point`.
    pub fn nearest(&self, timeline: &str, point: u64) -> Option<(u64, Arc<SessionSnapshot>)> {
        let mut inner = self.lock();
        inner.clock += 1;
        let clock = inner.clock;
        let best = inner
            .snapshots
            .keys()
            .filter(|(t, at)| t == timeline && *at <= point)
            .map(|(_, at)| *at)
            .max()?;
        let e = inner
            .snapshots
            .get_mut(&(timeline.to_string(), best))
            .expect("found");
        e.used = clock;
        Some((best, e.snapshot.clone()))
    }

    pub fn has(&self, timeline: &str, t: u64) -> bool {
        self.lock()
            .snapshots
            .contains_key(&(timeline.to_string(), t))
    }

    /// Keeps a snapshot of `timeline` at `t` (nothing when its base is not kept: it
    /// could not be restored).
    pub fn keep(&self, timeline: &str, t: u64, snapshot: Arc<SessionSnapshot>) {
        if !self.keeps() {
            return;
        }
        let bytes = snapshot_bytes(&snapshot);
        let mut inner = self.lock();
        if !inner.bases.contains_key(owner(timeline)) {
            return;
        }
        inner.clock += 1;
        let used = inner.clock;
        let entry = Entry {
            snapshot,
            bytes,
            used,
        };
        if let Some(old) = inner.snapshots.insert((timeline.to_string(), t), entry) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.bytes > self.max_bytes && inner.snapshots.len() > 1 {
            let oldest = inner
                .snapshots
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
                .expect("not empty");
            if let Some(e) = inner.snapshots.remove(&oldest) {
                inner.bytes -= e.bytes;
            }
        }
    }

    /// Snapshots kept and their bytes, for measurements.
    pub fn size(&self) -> (usize, u64) {
        let inner = self.lock();
        (inner.snapshots.len(), inner.bytes)
    }

    /// How many times a run's or campaign's inputs were prepared (cold starts).
    pub fn prepared(&self) -> u64 {
        self.lock().prepared
    }

    /// Forgets everything (for cold measurements).
    pub fn clear(&self) {
        *self.lock() = Inner::default();
    }

    /// Forgets the snapshots only, keeping prepared inputs (for measurements).
    pub fn clear_snapshots(&self) {
        let mut inner = self.lock();
        inner.snapshots.clear();
        inner.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_base() -> Base {
        Base::Run {
            plan: WorldPlan {
                config: vmm::world::WorldConfig {
                    seed: 0,
                    nodes: Vec::new(),
                    network: Default::default(),
                    faults: Default::default(),
                },
                services: Vec::new(),
            },
            seed: 0,
            duration_ns: 0,
            _scratch: tempfile::tempdir().unwrap(),
        }
    }

    #[test]
    fn a_base_built_by_two_replays_at_once_is_kept_once() {
        let cache = MomentCache::default();
        // Both replays miss before either has built the base.
        let both_missed = std::sync::Barrier::new(2);
        let bases: Vec<Arc<Base>> = std::thread::scope(|s| {
            let replays: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        cache
                            .base("r1", || {
                                both_missed.wait();
                                Ok::<_, ()>(empty_base())
                            })
                            .unwrap()
                    })
                })
                .collect();
            replays.into_iter().map(|r| r.join().unwrap()).collect()
        });
        // One base, so snapshots either replay keeps refer to volumes that stay.
        assert!(Arc::ptr_eq(&bases[0], &bases[1]));
        assert!(Arc::ptr_eq(
            &bases[0],
            &cache.base("r1", || Err(())).unwrap()
        ));
    }
}
