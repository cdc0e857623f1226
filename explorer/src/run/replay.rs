//! `detvm replay RUN@VTIME`: the run rebuilt from its inputs, started from its latest
//! snapshot at or before VTIME (or from boot), and run deterministically to the decision
//! point of VTIME: the runner's first step boundary at or after it, after the runner's
//! turn there (steps are 10 ms of virtual time; where a step ends is itself a scheduling
//! decision, so the world is only stopped where the run itself stopped it). It
//! prints the state there (services, nodes, properties so far, trace hash) and checks
//! the events it replayed against the ones the run stored: a replay that differs from
//! its run is reported, with the first differing event (exit 6).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::Serialize;
use vmm::world::World;

use super::inputs::RunInputs;
use super::services::Tracked;
use super::supervisor::{Supervisor, STEP_NS};
use super::{check, exit, prepare, snapshots, RunError};
use crate::moment::{format_vtime, Moment};
use crate::store::{RunStore, StoredEvent};

pub struct ReplayOptions {
    pub home: PathBuf,
    pub moment: Moment,
    /// Boot instead of starting from a snapshot.
    pub from_start: bool,
}

/// The state at the moment, as printed and written with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct ReplaySummary {
    pub moment: String,
    /// The step boundary the world was run to: the moment rounded up to a step.
    pub decision_point_ns: u64,
    /// `boot`, or the snapshot file it started from.
    pub started_from: String,
    pub started_at_ns: u64,
    pub trace_hash: String,
    pub phase: String,
    pub nodes: Vec<NodeSummary>,
    pub services: Vec<ServiceSummary>,
    pub properties: Vec<PropertySoFar>,
    pub events_replayed: usize,
    /// The first event that differs from the stored run, if any.
    pub divergence: Option<String>,
    pub wall_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeSummary {
    pub name: String,
    pub state: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceSummary {
    pub name: String,
    pub life: String,
    pub healthy: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PropertySoFar {
    pub id: String,
    pub passes: u64,
    pub failures: u64,
}

impl ReplaySummary {
    pub fn exit_code(&self) -> u8 {
        if self.divergence.is_some() {
            exit::NOT_DETERMINISTIC
        } else {
            exit::PASSED
        }
    }
}

/// The latest snapshot at or before `vtime_ns`, if any.
fn nearest_snapshot(run_dir: &Path, vtime_ns: u64) -> Option<(u64, PathBuf)> {
    snapshots::list(run_dir)
        .into_iter()
        .rfind(|(t, _)| *t <= vtime_ns)
}

pub fn replay(opts: &ReplayOptions) -> Result<ReplaySummary, RunError> {
    let wall = Instant::now();
    let moment = &opts.moment;
    let point = moment.vtime_ns.div_ceil(STEP_NS) * STEP_NS;
    let store = RunStore::open(&opts.home).map_err(|e| RunError::Infrastructure(e.to_string()))?;
    let record = store
        .run(&moment.run)
        .map_err(|e| RunError::Input(format!("{moment}: {e}")))?;
    if let Some(end) = record.vtime_end_ns.filter(|&end| point > end) {
        return Err(RunError::Input(format!(
            "{moment}: run {} ended at {}; pick a moment up to then",
            record.id,
            format_vtime(end)
        )));
    }
    let run_dir = store.run_dir(&record.id);
    let inputs = RunInputs::load(&run_dir)?;
    let run_opts = inputs.options(&opts.home);
    let prepared = prepare(&run_opts)?;
    prepared
        .fingerprint()?
        .same_as(&inputs.fingerprint)
        .map_err(|e| RunError::Input(format!("{moment}: {e}")))?;
    let scratch = tempfile::tempdir()
        .map_err(|e| RunError::Infrastructure(format!("a scratch folder: {e}")))?;
    let plan = prepared.world_plan(run_opts.backend, &scratch.path().join("volumes"))?;
    let tracked: Vec<Tracked> = plan
        .services
        .into_iter()
        .map(|p| Tracked::new(p.service, p.spec))
        .collect();

    let start = (!opts.from_start)
        .then(|| nearest_snapshot(&run_dir, point))
        .flatten();
    let never = AtomicBool::new(false);
    let (mut sup, started_from) = match &start {
        Some((_, path)) => {
            let (world, state) = snapshots::load(path, &plan.config)
                .map_err(|e| RunError::Input(format!("{moment}: {e}")))?;
            let world = World::restore(&world).map_err(|e| {
                RunError::Infrastructure(format!("{}: restore: {e}", path.display()))
            })?;
            let mut sup = Supervisor::new(world, tracked, inputs.seed, inputs.duration_ns, &never);
            sup.resume(state)
                .map_err(|e| RunError::Input(format!("{}: {e}", path.display())))?;
            (sup, path.display().to_string())
        }
        None => {
            let world = World::new(plan.config)
                .map_err(|e| RunError::Infrastructure(format!("the world did not boot: {e}")))?;
            let sup = Supervisor::new(world, tracked, inputs.seed, inputs.duration_ns, &never);
            (sup, "boot".to_string())
        }
    };
    let started_at_ns = sup.now();
    let first_seq = sup.next_event();
    eprintln!(
        "detvm replay: {moment} from {started_from} at {}",
        format_vtime(started_at_ns)
    );
    sup.stop_at(point);
    let mut replayed: Vec<StoredEvent> = Vec::new();
    let ending = sup.run(
        &mut |_, _| {},
        &mut |events| {
            replayed.append(events);
            Ok(())
        },
        &mut |_| Ok(()),
    );
    replayed.append(&mut sup.events);
    match ending {
        // The run may end at the very decision point (its last step).
        Ok(_) if sup.now() >= point => {}
        Ok(other) => {
            return Err(RunError::Infrastructure(format!(
                "{moment}: the replay ended before the moment: {other:?}"
            )))
        }
        Err(e) => {
            return Err(RunError::Infrastructure(format!(
                "{moment}: the replay failed: {e}"
            )))
        }
    }
    // Events exactly at the decision point belong to the next step; compare before it.
    let before = |e: &&StoredEvent| e.vtime_ns < point;
    let replayed: Vec<StoredEvent> = replayed.iter().filter(before).cloned().collect();
    let stored: Vec<StoredEvent> = store
        .events(&record.id, started_at_ns, point)
        .map_err(|e| RunError::Infrastructure(e.to_string()))?
        .into_iter()
        .filter(|e| e.seq >= first_seq)
        .collect();
    let divergence = check::first_difference(&stored, &replayed);

    let world = &sup.world;
    Ok(ReplaySummary {
        moment: moment.to_string(),
        decision_point_ns: point,
        started_from,
        started_at_ns,
        trace_hash: format!("{:016x}", world.trace_value()),
        phase: sup.phase_name().to_string(),
        nodes: world
            .node_names()
            .into_iter()
            .map(|name| NodeSummary {
                state: world
                    .node_state(&name)
                    .map(|s| format!("{s:?}").to_lowercase())
                    .unwrap_or_default(),
                name,
            })
            .collect(),
        services: sup
            .services
            .iter()
            .map(|s| ServiceSummary {
                name: s.name().to_string(),
                life: format!("{:?}", s.life),
                healthy: s.healthy,
            })
            .collect(),
        properties: sup
            .orch
            .book
            .properties()
            .into_iter()
            .map(|p| PropertySoFar {
                id: p.id,
                passes: p.passes,
                failures: p.failures,
            })
            .collect(),
        events_replayed: replayed.len(),
        divergence,
        wall_ms: wall.elapsed().as_millis() as u64,
    })
}

/// The summary as the terminal shows it.
pub fn render(s: &ReplaySummary) -> String {
    let mut out = format!(
        "moment {} (decision point {})\n  replayed from {} at {} in {:.1}s wall\n  trace hash {}\n  phase: {}\n",
        s.moment,
        format_vtime(s.decision_point_ns),
        s.started_from,
        format_vtime(s.started_at_ns),
        s.wall_ms as f64 / 1000.0,
        s.trace_hash,
        s.phase
    );
    out.push_str("  services:\n");
    for (svc, node) in s.services.iter().zip(&s.nodes) {
        out.push_str(&format!(
            "    {:<16} {:<24} vm {}{}\n",
            svc.name,
            svc.life,
            node.state,
            if svc.healthy { ", healthy" } else { "" }
        ));
    }
    out.push_str("  properties so far (passes / failures):\n");
    for p in &s.properties {
        out.push_str(&format!(
            "    {:>5} / {:<5} {}\n",
            p.passes, p.failures, p.id
        ));
    }
    match &s.divergence {
        None => out.push_str(&format!(
            "  {} events replayed, identical to the run's\n",
            s.events_replayed
        )),
        Some(d) => out.push_str(&format!("  REPLAY DIFFERS from the run: {d}\n")),
    }
    out
}
