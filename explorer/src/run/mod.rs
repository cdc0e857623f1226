//! `detvm run`: a compose system booted as a World, its services started in dependency
//! order, its test commands run by the composer, its properties judged, and everything
//! kept in the run store (docs/runs.md).

pub mod check;
mod inputs;
pub mod replay;
mod services;
mod setup;
mod snapshots;
mod supervisor;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use vmm::backend::BackendKind;
use vmm::world::{FaultPlan, Span};

use crate::compose::{self, Compose, FaultMode};
use crate::report::{self, RunReport};
use crate::store::{RunStatus, RunStore};
use detvm_protocol::spec::ImageRun;
use inputs::{Fingerprint, RunInputs};
use services::Tracked;
use supervisor::{Ending, Supervisor};

pub use setup::service_ip;

/// Exit codes of `detvm run` and `detvm check` (docs/runs.md).
pub mod exit {
    pub const PASSED: u8 = 0;
    pub const PROPERTIES_FAILED: u8 = 1;
    pub const SETUP_FAILED: u8 = 2;
    pub const INFRASTRUCTURE: u8 = 3;
    pub const BAD_INPUT: u8 = 4;
    pub const DRIVER_HUNG: u8 = 5;
    /// `detvm check`: runs with one seed differed.
    pub const NOT_DETERMINISTIC: u8 = 6;
    pub const INTERRUPTED: u8 = 130;
}

const DEFAULT_DURATION: Duration = Duration::from_secs(60);
const DEFAULT_EPOCH: i64 = 1_700_000_000; // 2023-11-14T22:13:20Z

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
    pub json: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    /// The `.detvm` folder: run store and image store.
    pub home: PathBuf,
    pub progress: bool,
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

impl RunError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Input(_) => exit::BAD_INPUT,
            RunError::Setup(_) => exit::SETUP_FAILED,
            RunError::Infrastructure(_) => exit::INFRASTRUCTURE,
        }
    }
}

/// A finished run: its report and the digest of its event stream.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub report: RunReport,
    pub exit: u8,
}

/// The repository holding the kernel and agent build scripts: `$DETVM_REPO`, else the
/// folder above `target/` of this executable, else the current folder.
pub fn repo_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("DETVM_REPO") {
        return PathBuf::from(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            if dir.join("images/kernel/build.sh").is_file() {
                return dir.to_path_buf();
            }
        }
    }
    PathBuf::from(".")
}

fn load_compose(opts: &RunOptions) -> Result<Compose, RunError> {
    let dir = opts.compose.parent().unwrap_or(Path::new("."));
    let mut vars = match dir.join(".env") {
        p if p.is_file() => {
            compose::load_env_file(&p).map_err(|e| RunError::Input(e.to_string()))?
        }
        _ => Vec::new(),
    };
    vars.extend(opts.vars.iter().cloned());
    let text = std::fs::read_to_string(&opts.compose).map_err(|e| {
        RunError::Input(format!(
            "{}: cannot read the compose file: {e}",
            opts.compose.display()
        ))
    })?;
    let compose =
        compose::parse(&opts.compose, &text, &vars).map_err(|e| RunError::Input(e.to_string()))?;
    for w in &compose.warnings {
        eprintln!("warning: {w}");
    }
    Ok(compose)
}

fn fault_plan(
    opts: &RunOptions,
    compose: &Compose,
    seed: u64,
    duration: Duration,
) -> Result<FaultPlan, RunError> {
    let names: Vec<String> = compose.services.iter().map(|s| s.name.clone()).collect();
    let plan = if opts.no_faults {
        FaultPlan::default()
    } else if let Some(path) = &opts.faults {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RunError::Input(format!("{}: {e}", path.display())))?;
        parse_fault_plan(&text).map_err(|e| RunError::Input(format!("{}: {e}", path.display())))?
    } else if let Some(value) = &compose.settings.faults {
        serde_json::from_value(value.clone()).map_err(|e| {
            RunError::Input(format!("{}: x-detvm.faults: {e}", compose.path.display()))
        })?
    } else if compose.settings.fault_mode == FaultMode::Swarm {
        FaultPlan::swarm(seed, &names, Span::from_nanos(duration.as_nanos() as i64))
    } else {
        FaultPlan::default()
    };
    plan.validate(&names)
        .map_err(|e| RunError::Input(format!("fault plan: {e}")))?;
    Ok(plan)
}

/// A fault plan file (`--faults`: YAML, or JSON, which is YAML too), parsed but not yet
/// checked against the system: call [`FaultPlan::validate`] with its service names.
/// The error is one line, without the file name.
pub fn parse_fault_plan(text: &str) -> Result<FaultPlan, String> {
    serde_saphyr::from_str::<FaultPlan>(text)
        .map_err(|e| e.to_string().lines().next().unwrap_or("").to_string())
}

/// The command that reproduces this run exactly.
fn reproduce_command(opts: &RunOptions, seed: u64, duration: Duration, epoch: i64) -> String {
    let mut cmd = format!(
        "detvm run {} --seed {seed} --duration {} --epoch {epoch}",
        opts.compose.display(),
        humantime::format_duration(duration)
    );
    for (k, v) in &opts.vars {
        cmd.push_str(&format!(" --var {k}={v}"));
    }
    if let Some(f) = &opts.faults {
        cmd.push_str(&format!(" --faults {}", f.display()));
    }
    if opts.no_faults {
        cmd.push_str(" --no-faults");
    }
    if opts.backend != BackendKind::Emu {
        cmd.push_str(" --backend kvm");
    }
    cmd
}

/// Everything a run is built from, resolved: shared by [`run`] and [`replay`].
struct Prepared {
    compose: Compose,
    seed: u64,
    duration: Duration,
    epoch: i64,
    plan: FaultPlan,
    images: Vec<(PathBuf, ImageRun)>,
    kernel: PathBuf,
    initrd: PathBuf,
}

fn prepare(opts: &RunOptions) -> Result<Prepared, RunError> {
    let compose = load_compose(opts)?;
    setup::refuse_unsupported(&compose)?;
    let seed = opts.seed.or(compose.settings.seed).unwrap_or(0);
    let duration = opts
        .duration
        .or(compose.settings.duration)
        .unwrap_or(DEFAULT_DURATION);
    let epoch = opts
        .epoch
        .or(compose.settings.epoch)
        .unwrap_or(DEFAULT_EPOCH);
    let plan = fault_plan(opts, &compose, seed, duration)?;
    let image_store = detvm_images::Store::open(opts.home.join("images"))
        .map_err(|e| RunError::Setup(format!("image store: {e}")))?;
    let images = setup::resolve_images(&compose, &image_store, &opts.home)?;
    let (kernel, initrd) = setup::guest_files(&repo_root())?;
    Ok(Prepared {
        compose,
        seed,
        duration,
        epoch,
        plan,
        images,
        kernel,
        initrd,
    })
}

impl Prepared {
    fn fingerprint(&self) -> Result<Fingerprint, RunError> {
        Ok(Fingerprint {
            compose_sha256: inputs::sha256_of(&self.compose.path)?,
            plan: serde_json::to_string(&self.plan).expect("plans serialize"),
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            images: self.images.iter().map(|(p, _)| p.clone()).collect(),
        })
    }

    fn world_plan(
        &self,
        backend: BackendKind,
        volumes_dir: &Path,
    ) -> Result<setup::WorldPlan, RunError> {
        std::fs::create_dir_all(volumes_dir)
            .map_err(|e| RunError::Infrastructure(format!("{}: {e}", volumes_dir.display())))?;
        setup::world_config(
            &self.compose,
            self.images.clone(),
            &self.kernel,
            &self.initrd,
            backend,
            self.seed,
            self.epoch,
            self.plan.clone(),
            volumes_dir,
        )
    }
}

/// Runs a compose system once. `interrupt` is set by Ctrl-C.
pub fn run(opts: &RunOptions, interrupt: &AtomicBool) -> Result<RunResult, RunError> {
    let prepared = prepare(opts)?;
    let Prepared {
        seed,
        duration,
        epoch,
        ..
    } = prepared;
    let compose = &prepared.compose;
    let plan_text = prepared.plan.to_string();
    let reproduce = reproduce_command(opts, seed, duration, epoch);
    let mut store =
        RunStore::open(&opts.home).map_err(|e| RunError::Infrastructure(e.to_string()))?;
    let run_id = store
        .create_run(&opts.compose.display().to_string(), seed, &reproduce)
        .map_err(|e| RunError::Infrastructure(e.to_string()))?;
    eprintln!(
        "detvm: run {run_id}, seed {seed}, {} of virtual time",
        humantime::format_duration(duration)
    );
    eprintln!("detvm: fault plan:\n{plan_text}");
    let run_dir = store.run_dir(&run_id);
    let world_plan = prepared
        .fingerprint()
        .and_then(|f| {
            std::fs::create_dir_all(&run_dir)
                .map_err(|e| RunError::Infrastructure(format!("{}: {e}", run_dir.display())))?;
            RunInputs::new(opts, seed, duration.as_nanos() as u64, epoch, f).save(&run_dir)
        })
        .and_then(|()| prepared.world_plan(opts.backend, &run_dir.join("volumes")));
    let world_plan = match world_plan {
        Ok(p) => p,
        Err(e) => {
            let _ = store.set_status(&run_id, RunStatus::SetupFailed, Some(&e.to_string()));
            return Err(e);
        }
    };
    let world = match vmm::world::World::new(world_plan.config) {
        Ok(w) => w,
        Err(e) => {
            let message = format!("the world did not boot: {e}");
            let _ = store.set_status(&run_id, RunStatus::InfrastructureError, Some(&message));
            return Err(RunError::Infrastructure(message));
        }
    };
    let tracked = world_plan
        .services
        .into_iter()
        .map(|p| Tracked::new(p.service, p.spec))
        .collect();
    let mut sup = Supervisor::new(world, tracked, seed, duration.as_nanos() as u64, interrupt);
    sup.set_log_dir(run_dir.clone());
    let bar = progress_bar(opts.progress, duration);
    let mut schedule = snapshots::Schedule::new(&run_dir, opts.snapshot_at.clone());
    let ending = sup.run(
        &mut |vt, phase| {
            bar.set_position(vt / 1_000_000);
            bar.set_message(phase.to_string());
        },
        &mut |events| {
            let batch = std::mem::take(events);
            store
                .append_events(&run_id, &batch)
                .map_err(|e| e.to_string())
        },
        &mut |sup| bar.suspend(|| schedule.take_due(sup)),
    );
    bar.finish_and_clear();
    sup.stopping();
    sup.check_determinism();
    let vtime_end = sup.now();
    let trace = format!("{:016x}", sup.world.trace_value());
    sup.flush_logs().map_err(RunError::Infrastructure)?;
    let remaining = std::mem::take(&mut sup.events);
    store
        .append_events(&run_id, &remaining)
        .map_err(|e| RunError::Infrastructure(e.to_string()))?;
    let properties = sup.orch.book.properties();
    let (status, message, exit_code) = match ending {
        Err(m) => (
            RunStatus::InfrastructureError,
            Some(m),
            exit::INFRASTRUCTURE,
        ),
        Ok(Ending::Interrupted) => (
            RunStatus::Interrupted,
            Some("interrupted (Ctrl-C)".to_string()),
            exit::INTERRUPTED,
        ),
        Ok(Ending::SetupFailed(m)) => (RunStatus::SetupFailed, Some(m), exit::SETUP_FAILED),
        Ok(Ending::DriverHung(m)) => (RunStatus::DriverHung, Some(m), exit::DRIVER_HUNG),
        Ok(Ending::Finished | Ending::Reached) => {
            if properties
                .iter()
                .any(|p| p.status == crate::properties::Status::Failed)
            {
                (RunStatus::PropertiesFailed, None, exit::PROPERTIES_FAILED)
            } else {
                (RunStatus::Passed, None, exit::PASSED)
            }
        }
    };
    store
        .finish_run(
            &run_id,
            status,
            &properties,
            vtime_end,
            &trace,
            message.as_deref(),
        )
        .map_err(|e| RunError::Infrastructure(e.to_string()))?;
    let report = RunReport {
        run: run_id,
        compose: opts.compose.display().to_string(),
        seed,
        status,
        vtime_end_ns: vtime_end,
        trace_hash: trace,
        reproduce,
        properties,
        warnings: compose.warnings.iter().map(|w| w.to_string()).collect(),
        message,
    };
    write_reports(&report, &run_dir, opts)?;
    Ok(RunResult {
        report,
        exit: exit_code,
    })
}

fn write_reports(report: &RunReport, run_dir: &Path, opts: &RunOptions) -> Result<(), RunError> {
    let json = serde_json::to_string_pretty(report).expect("report serializes");
    let junit = report::junit(report);
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text)
            .map_err(|e| RunError::Infrastructure(format!("cannot write {}: {e}", path.display())))
    };
    write(&run_dir.join("report.json"), &json)?;
    write(&run_dir.join("junit.xml"), &junit)?;
    if let Some(p) = &opts.json {
        write(p, &json)?;
    }
    if let Some(p) = &opts.junit {
        write(p, &junit)?;
    }
    Ok(())
}

fn progress_bar(enabled: bool, duration: Duration) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(duration.as_millis() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} virtual {pos}/{len} ms [{bar:30}] {msg} ({elapsed} wall)",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// `detvm run`'s exit code from a result or an error, printing what the user needs.
pub fn report_and_exit(result: Result<RunResult, RunError>) -> ExitCode {
    match result {
        Ok(r) => {
            print!("{}", report::summary(&r.report));
            ExitCode::from(r.exit)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
