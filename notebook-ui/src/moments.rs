//! Moments of stored runs, fast when near one seen before: a replay to a moment keeps,
//! in memory, a snapshot of the whole session every [`EVERY_NS`] of virtual time on its
//! way (and the snapshot files it loads), so stepping or rewinding nearby restores from
//! at most that far back instead of from the run's snapshot files. What a replay is
//! built from (the prepared inputs, the world plan and its scratch folder) is kept per
//! run too. Snapshots are copy-on-write images of guest RAM, so one costs its changed
//! pages; the cache is bounded by those bytes ([`MAX_BYTES`]) and evicts the least
//! recently used. Opening a run's page warms it: a background replay of the whole run
//! fills the cache ([`warm`]).
//!
//! Snapshots are taken only between runner steps, as `--snapshot-at` takes them, and
//! every moment's replayed events are still checked against the stored run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use explorer::moment::{format_vtime, Moment};
use explorer::observer::Observer;
use explorer::run::inputs::RunInputs;
use explorer::run::setup::WorldPlan;
use explorer::run::{decision_point, snapshot_files, Ending, Session, SessionSnapshot};
use explorer::store::{RunStore, StoredEvent};

/// Virtual time between the snapshots a replay keeps.
pub const EVERY_NS: u64 = 1_000_000_000;
/// The most bytes of snapshots kept (their own pages; see [`snapshot_bytes`]).
pub const MAX_BYTES: u64 = 3 << 30;
/// Runs whose prepared inputs are kept.
const MAX_RUNS: usize = 4;

/// What every replay of one run starts from.
pub struct RunBase {
    pub plan: WorldPlan,
    pub seed: u64,
    pub duration_ns: u64,
    pub end_ns: Option<u64>,
    /// The run's snapshot files: (virtual time, path).
    pub files: Vec<(u64, PathBuf)>,
    /// The volumes the plan names live here.
    _scratch: tempfile::TempDir,
}

struct Entry {
    snapshot: Arc<SessionSnapshot>,
    bytes: u64,
    used: u64,
}

#[derive(Default)]
struct Inner {
    bases: HashMap<String, (Arc<RunBase>, u64)>,
    snapshots: HashMap<(String, u64), Entry>,
    bytes: u64,
    clock: u64,
}

#[derive(Default)]
pub struct MomentCache {
    inner: Mutex<Inner>,
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

/// A session stopped at a moment, with what it took.
pub struct Restored {
    pub session: Session,
    pub moment: Moment,
    pub decision_point_ns: u64,
    /// `boot`, a snapshot file, or `memory` (a snapshot a replay kept).
    pub started_from: String,
    pub started_at_ns: u64,
    pub first_seq: u64,
    /// Events replayed before the decision point.
    pub events: Vec<StoredEvent>,
    /// Keeps the run's plan (its volumes) alive while the session lives.
    pub base: Arc<RunBase>,
}

struct Collect<'a> {
    events: Vec<StoredEvent>,
    outer: &'a mut dyn Observer,
}

impl Observer for Collect<'_> {
    fn events(&mut self, batch: &[StoredEvent]) -> Result<(), String> {
        self.events.extend_from_slice(batch);
        self.outer.events(batch)
    }
    fn progress(&mut self, vtime_ns: u64, phase: &str) {
        self.outer.progress(vtime_ns, phase)
    }
}

impl MomentCache {
    fn base(
        &self,
        home: &std::path::Path,
        run: &str,
        observer: &mut dyn Observer,
    ) -> Result<Arc<RunBase>, String> {
        {
            let mut inner = self.inner.lock().expect("moment cache");
            inner.clock += 1;
            let clock = inner.clock;
            if let Some((base, used)) = inner.bases.get_mut(run) {
                *used = clock;
                return Ok(base.clone());
            }
        }
        let store = RunStore::open(home).map_err(|e| e.to_string())?;
        let record = store.run(run).map_err(|e| format!("{run}: {e}"))?;
        let run_dir = store.run_dir(&record.id);
        let inputs = RunInputs::load(&run_dir).map_err(|e| e.to_string())?;
        let (opts, prepared) = inputs
            .prepare_again(home, run, observer)
            .map_err(|e| e.to_string())?;
        let scratch = tempfile::tempdir().map_err(|e| format!("a scratch folder: {e}"))?;
        let plan = prepared
            .world_plan(opts.backend, &scratch.path().join("volumes"))
            .map_err(|e| e.to_string())?;
        let base = Arc::new(RunBase {
            plan,
            seed: inputs.seed,
            duration_ns: inputs.duration_ns,
            end_ns: record.vtime_end_ns,
            files: snapshot_files(&run_dir),
            _scratch: scratch,
        });
        let mut inner = self.inner.lock().expect("moment cache");
        inner.clock += 1;
        let clock = inner.clock;
        inner.bases.insert(run.to_string(), (base.clone(), clock));
        while inner.bases.len() > MAX_RUNS {
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
                .filter(|(r, _)| *r == oldest)
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

    /// The latest kept snapshot of `run` at or before `point`.
    fn nearest(&self, run: &str, point: u64) -> Option<(u64, Arc<SessionSnapshot>)> {
        let mut inner = self.inner.lock().expect("moment cache");
        inner.clock += 1;
        let clock = inner.clock;
        let best = inner
            .snapshots
            .iter()
            .filter(|((r, t), _)| r == run && *t <= point)
            .map(|((_, t), _)| *t)
            .max()?;
        let e = inner
            .snapshots
            .get_mut(&(run.to_string(), best))
            .expect("found");
        e.used = clock;
        Some((best, e.snapshot.clone()))
    }

    fn has(&self, run: &str, t: u64) -> bool {
        let inner = self.inner.lock().expect("moment cache");
        inner.snapshots.contains_key(&(run.to_string(), t))
    }

    fn keep(&self, run: &str, t: u64, snapshot: Arc<SessionSnapshot>) {
        let bytes = snapshot_bytes(&snapshot);
        let mut inner = self.inner.lock().expect("moment cache");
        if !inner.bases.contains_key(run) {
            return; // its base was evicted: the snapshot could not be restored
        }
        inner.clock += 1;
        let used = inner.clock;
        let key = (run.to_string(), t);
        if let Some(old) = inner.snapshots.insert(
            key,
            Entry {
                snapshot,
                bytes,
                used,
            },
        ) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.bytes > MAX_BYTES && inner.snapshots.len() > 1 {
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
        let inner = self.inner.lock().expect("moment cache");
        (inner.snapshots.len(), inner.bytes)
    }

    /// Forgets everything (for cold measurements).
    pub fn clear(&self) {
        *self.inner.lock().expect("moment cache") = Inner::default();
    }

    /// A session of stored run `moment.run` at the moment's decision point: from the
    /// latest kept snapshot or snapshot file at or before it (or boot), keeping a
    /// snapshot every [`EVERY_NS`] on the way.
    pub fn restore(
        &self,
        home: &std::path::Path,
        moment: &Moment,
        observer: &mut dyn Observer,
    ) -> Result<Restored, String> {
        let point = decision_point(moment.vtime_ns);
        let base = self.base(home, &moment.run, observer)?;
        if let Some(end) = base.end_ns.filter(|&end| point > end) {
            return Err(format!(
                "{moment}: run {} ended at {}; pick a moment up to then",
                moment.run,
                format_vtime(end)
            ));
        }
        let kept = self.nearest(&moment.run, point);
        let file = base.files.iter().rfind(|(t, _)| *t <= point).cloned();
        let (mut session, started_from) = match (kept, file) {
            (Some((t, snap)), file) if file.as_ref().is_none_or(|(ft, _)| *ft <= t) => (
                Session::restore(&base.plan, &snap, base.seed, base.duration_ns, None)
                    .map_err(|e| format!("{moment}: {e}"))?,
                format!("a snapshot kept in memory at {}", format_vtime(t)),
            ),
            (_, Some((t, path))) => {
                let snap =
                    Session::load(&path, &base.plan).map_err(|e| format!("{moment}: {e}"))?;
                let session =
                    Session::restore(&base.plan, &snap, base.seed, base.duration_ns, None)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                self.keep(&moment.run, t, Arc::new(snap));
                (session, path.display().to_string())
            }
            (_, None) => (
                Session::boot(base.plan.clone(), base.seed, base.duration_ns)
                    .map_err(|e| e.to_string())?,
                "boot".to_string(),
            ),
        };
        let started_at_ns = session.now();
        let first_seq = session.runner().next_event();
        let mut collect = Collect {
            events: Vec::new(),
            outer: observer,
        };
        self.advance(&moment.run, &mut session, point, &mut collect)
            .map_err(|e| format!("{moment}: the replay failed: {e}"))?;
        if session.now() < point {
            return Err(format!(
                "{moment}: the replay ended at {}, before the moment",
                format_vtime(session.now())
            ));
        }
        let events = collect
            .events
            .into_iter()
            .filter(|e| e.vtime_ns < point)
            .collect();
        Ok(Restored {
            session,
            moment: moment.clone(),
            decision_point_ns: point,
            started_from,
            started_at_ns,
            first_seq,
            events,
            base,
        })
    }

    /// Runs `session` to `point`, keeping a snapshot at every multiple of
    /// [`EVERY_NS`] it passes that is not kept yet. Stops early when the run ends.
    fn advance(
        &self,
        run: &str,
        session: &mut Session,
        point: u64,
        observer: &mut dyn Observer,
    ) -> Result<(), String> {
        while session.now() < point {
            let next = ((session.now() / EVERY_NS + 1) * EVERY_NS).min(point);
            match session.run_to(next, observer)? {
                Ending::Reached => {}
                _ => return Ok(()),
            }
            let now = session.now();
            if now.is_multiple_of(EVERY_NS) && !self.has(run, now) {
                self.keep(run, now, Arc::new(session.snapshot()?));
            }
        }
        Ok(())
    }

    /// Replays the whole of stored run `run` once (from boot, or the snapshot kept
    /// at 0), keeping a snapshot every [`EVERY_NS`]: opening its page makes every
    /// later moment of it start at most that far back. Does nothing when the cache
    /// already holds the run's last one.
    pub fn warm(
        &self,
        home: &std::path::Path,
        run: &str,
        observer: &mut dyn Observer,
    ) -> Result<(), String> {
        let base = self.base(home, run, observer)?;
        let Some(end) = base.end_ns else {
            return Ok(()); // still running
        };
        let last = end.saturating_sub(1) / EVERY_NS * EVERY_NS;
        if last == 0 || self.has(run, last) {
            return Ok(());
        }
        // Start from the latest kept snapshot before the first gap.
        let mut from = None;
        let mut t = EVERY_NS;
        while t <= last && self.has(run, t) {
            from = Some(t);
            t += EVERY_NS;
        }
        let mut session = match from.and_then(|t| self.nearest(run, t)) {
            Some((_, snap)) => {
                Session::restore(&base.plan, &snap, base.seed, base.duration_ns, None)
                    .map_err(|e| e.to_string())?
            }
            None => Session::boot(base.plan.clone(), base.seed, base.duration_ns)
                .map_err(|e| e.to_string())?,
        };
        self.advance(run, &mut session, decision_point(end), observer)
    }
}
