//! Runs of a compose system: a World booted from prepared inputs, its services started
//! in dependency order, its test commands run by the test composer, its properties
//! judged, and everything kept in the run store (docs/runs.md). Everything here is
//! built on [`Session`].

pub mod actions;
pub mod check;
mod fingerprint;
pub mod inputs;
mod journal;
pub mod prepare;
pub mod replay;
pub(crate) mod runner;
pub mod services;
mod session;
pub mod setup;
mod snapshots;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use vmm::backend::BackendKind;

use crate::observer::Observer;
use crate::properties::Status;
use crate::report::RunReport;
use crate::store::{RunStatus, RunStore};
use inputs::RunInputs;
use journal::Journal;
use prepare::{prepare, reproduce_command};

pub use prepare::parse_fault_plan;
pub use runner::{
    CommandTally, Effect, Ending, Outcome, Runner, RunnerState, SavedRunner, STEP_NS,
};
pub use session::{
    decision_point, NodeSummary, PropertySoFar, ServiceSummary, Session, SessionSnapshot,
    SessionState,
};
pub use setup::service_ip;
pub use snapshots::list as snapshot_files;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub compose: PathBuf,
    pub seed: Option<u64>,
    pub duration: Option<Duration>,
    pub epoch: Option<i64>,
    pub faults: Option<PathBuf>,
    pub no_faults: bool,
    /// `KEY=value` for `${KEY}` in the compose file, over `.env`.
    pub vars: Vec<(String, String)>,
    pub backend: BackendKind,
    /// The `.detvm` folder: run store and image store.
    pub home: PathBuf,
    /// Virtual times (ns) to snapshot the whole run at (`--snapshot-at`).
    pub snapshot_at: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The user's files or flags: nothing ran.
    #[error("{0}")]
    Input(String),
    /// Preparing images or the guest failed.
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Infrastructure(String),
}

/// A finished run: its report (also in `runs/<run>/report.json`) and its folder.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub report: RunReport,
    pub dir: PathBuf,
}

/// Runs a compose system once. `interrupt` (set by Ctrl-C) stops it between steps; the
/// run is then stored as interrupted.
pub fn run(
    opts: &RunOptions,
    observer: &mut dyn Observer,
    interrupt: &AtomicBool,
) -> Result<RunResult, RunError> {
    let prepared = prepare(opts, observer)?;
    for w in &prepared.compose.warnings {
        observer.warning(&w.to_string());
    }
    let (seed, duration, epoch) = (prepared.seed, prepared.duration, prepared.epoch);
    let reproduce = reproduce_command(opts, seed, duration, epoch);
    let infra = |e: crate::store::StoreError| RunError::Infrastructure(e.to_string());
    let store = RunStore::open(&opts.home).map_err(infra)?;
    let run_id = store
        .create_run(&opts.compose.display().to_string(), seed, &reproduce)
        .map_err(infra)?;
    observer.info(&format!(
        "run {run_id}, seed {seed}, {} of virtual time",
        humantime::format_duration(duration)
    ));
    observer.info(&format!("fault plan:\n{}", prepared.plan));
    let run_dir = store.run_dir(&run_id);
    let world_plan = prepared
        .fingerprint()
        .and_then(|f| {
            std::fs::create_dir_all(&run_dir)
                .map_err(|e| RunError::Infrastructure(format!("{}: {e}", run_dir.display())))?;
            RunInputs::new(opts, seed, prepared.duration_ns(), epoch, f).save(&run_dir)
        })
        .and_then(|()| prepared.world_plan(opts.backend, &run_dir.join("volumes")));
    let world_plan = match world_plan {
        Ok(p) => p,
        Err(e) => {
            let _ = store.set_status(&run_id, RunStatus::SetupFailed, Some(&e.to_string()));
            return Err(e);
        }
    };
    let mut session = match Session::boot(world_plan, seed, prepared.duration_ns()) {
        Ok(s) => s,
        Err(e) => {
            let _ = store.set_status(
                &run_id,
                RunStatus::InfrastructureError,
                Some(&e.to_string()),
            );
            return Err(e);
        }
    };
    session.set_journal(Journal::new(store, run_id.clone(), run_dir.clone()));
    let mut schedule = snapshots::Schedule::new(&run_dir, opts.snapshot_at.clone());
    let ending = loop {
        if interrupt.load(Ordering::SeqCst) {
            break Ok(Ending::Interrupted);
        }
        if let Err(e) = schedule.take_due(&mut session, observer) {
            break Err(e);
        }
        match session.step(observer) {
            Ok(None) => {}
            Ok(Some(ending)) => break Ok(ending),
            Err(e) => break Err(e),
        }
    };
    let journal = session.finish().map_err(RunError::Infrastructure)?;
    let mut store = journal.expect("the run has a journal").into_store();
    let properties = session.runner().state.book.properties();
    let (status, message) = match ending {
        Err(m) => (RunStatus::InfrastructureError, Some(m)),
        Ok(Ending::Interrupted) => (
            RunStatus::Interrupted,
            Some("interrupted (Ctrl-C)".to_string()),
        ),
        Ok(Ending::SetupFailed(m)) => (RunStatus::SetupFailed, Some(m)),
        Ok(Ending::DriverHung(m)) => (RunStatus::DriverHung, Some(m)),
        Ok(Ending::Finished | Ending::Reached) => {
            if properties.iter().any(|p| p.status == Status::Failed) {
                (RunStatus::PropertiesFailed, None)
            } else {
                (RunStatus::Passed, None)
            }
        }
    };
    let vtime_end = session.now();
    let trace = session.trace_hash();
    store
        .finish_run(
            &run_id,
            status,
            &properties,
            vtime_end,
            &trace,
            message.as_deref(),
        )
        .map_err(infra)?;
    let report = RunReport {
        run: run_id,
        compose: opts.compose.display().to_string(),
        seed,
        status,
        vtime_end_ns: vtime_end,
        trace_hash: trace,
        reproduce,
        properties,
        commands: session.runner().command_tallies(),
        warnings: prepared
            .compose
            .warnings
            .iter()
            .map(|w| w.to_string())
            .collect(),
        message,
    };
    write_report(&report, &run_dir)?;
    Ok(RunResult {
        report,
        dir: run_dir,
    })
}

fn write_report(report: &RunReport, run_dir: &Path) -> Result<(), RunError> {
    let path = run_dir.join("report.json");
    let json = serde_json::to_string_pretty(report).expect("report serializes");
    std::fs::write(&path, json)
        .map_err(|e| RunError::Infrastructure(format!("cannot write {}: {e}", path.display())))
}
