//! Preparation: the user's compose file, flags and fault plan resolved into everything
//! a World is built from ([`Prepared`]), before anything boots. Bad input stops here
//! with an error that names the file, line and field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use detvm_protocol::spec::ImageRun;
use vmm::backend::BackendKind;
use vmm::world::{FaultPlan, Span};

use super::fingerprint::{sha256_of, Fingerprint};
use super::{setup, RunError, RunOptions};
use crate::compose::{self, Compose, FaultMode};
use crate::observer::Observer;

const DEFAULT_DURATION: Duration = Duration::from_secs(60);
const DEFAULT_EPOCH: i64 = 1_700_000_000; // 2023-11-14T22:13:20Z

/// Everything a run is built from, resolved: shared by runs, replays and campaigns.
#[derive(Clone)]
pub struct Prepared {
    pub compose: Compose,
    pub seed: u64,
    pub duration: Duration,
    pub epoch: i64,
    pub plan: FaultPlan,
    pub images: Vec<(PathBuf, ImageRun)>,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
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

/// The compose file with `.env` and `--var` values; its warnings travel with it.
pub fn load_compose(opts: &RunOptions) -> Result<Compose, RunError> {
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
    compose::parse(&opts.compose, &text, &vars).map_err(|e| RunError::Input(e.to_string()))
}

/// The fault plan: none, a file, the compose file's own, or a swarm drawn from the seed.
pub fn fault_plan(
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

/// Resolves the options: compose file, seed, duration, epoch, fault plan, images (built
/// with `x-detvm.prepare` when missing), guest kernel and agent.
pub fn prepare(opts: &RunOptions, observer: &mut dyn Observer) -> Result<Prepared, RunError> {
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
    let images = setup::resolve_images(&compose, &image_store, &opts.home, observer)?;
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
    pub fn duration_ns(&self) -> u64 {
        self.duration.as_nanos() as u64
    }

    /// What the world is built from, to refuse replays of changed inputs.
    pub fn fingerprint(&self) -> Result<Fingerprint, RunError> {
        Ok(Fingerprint {
            compose_sha256: sha256_of(&self.compose.path)?,
            plan: serde_json::to_string(&self.plan).expect("plans serialize"),
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            images: self.images.iter().map(|(p, _)| p.clone()).collect(),
            resolved_sha256: Some(super::fingerprint::resolved_sha256(&self.compose)),
        })
    }

    /// The World's configuration and the runner's services; volumes are created fresh
    /// in `volumes_dir`.
    pub fn world_plan(
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

/// The command that reproduces this run exactly.
pub fn reproduce_command(opts: &RunOptions, seed: u64, duration: Duration, epoch: i64) -> String {
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
