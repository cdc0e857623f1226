//! `detvm run`, `detvm check` and `detvm runs`: the command-line side of [`crate::run`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use clap::Args;
use vmm::backend::BackendKind;

use crate::run::{self, exit, RunOptions};
use crate::store::RunStore;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The docker-compose file (docs/compose.md).
    pub compose: PathBuf,
    /// The world seed: same seed, same run (default: `x-detvm.seed`, else 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Virtual time for the driver phase, e.g. `30s`, `5m` (default: `x-detvm.duration`, else 1m).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Wall clock at power-on: Unix seconds or RFC 3339 (default: `x-detvm.epoch`).
    #[arg(long, value_parser = parse_epoch)]
    pub epoch: Option<i64>,
    /// A fault plan file, YAML or JSON (docs/world.md); overrides `x-detvm`.
    #[arg(long, conflicts_with = "no_faults")]
    pub faults: Option<PathBuf>,
    /// Inject no faults.
    #[arg(long)]
    pub no_faults: bool,
    /// `KEY=value` for `${KEY}` in the compose file (wins over `.env`); repeatable.
    #[arg(long = "var", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// CPU backend: `emu` (default, any host) or `kvm` (a sound KVM host; see `detvm doctor`).
    #[arg(long, default_value = "emu", value_parser = parse_backend)]
    pub backend: BackendKind,
    /// Also write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write JUnit XML here (for CI).
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Snapshot the whole run (every VM, the network, the runner) at these virtual times,
    /// e.g. `5s,20s`, for `detvm replay` (docs/snapshots.md).
    #[arg(long, value_delimiter = ',', value_parser = parse_vtime)]
    pub snapshot_at: Vec<u64>,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The moment, `RUN@VTIME` (e.g. `r3c9a51e2f0@12.5s`), as `detvm run` prints it.
    pub moment: crate::moment::Moment,
    /// Boot the run again instead of starting from its nearest snapshot.
    #[arg(long)]
    pub from_start: bool,
    /// Also write the state at the moment as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// How many runs to compare (at least 2).
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::compose::parse_duration(s)
}

fn parse_vtime(s: &str) -> Result<u64, String> {
    crate::moment::parse_vtime(s)
}

fn parse_epoch(s: &str) -> Result<i64, String> {
    crate::compose::parse_epoch(s)
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not KEY=value"))
}

fn parse_backend(s: &str) -> Result<BackendKind, String> {
    match s {
        "emu" => Ok(BackendKind::Emu),
        "kvm" => Ok(BackendKind::Kvm),
        other => Err(format!("`{other}`: use `emu` or `kvm`")),
    }
}

/// `.detvm` under the current folder, or `$DETVM_HOME`.
pub fn home() -> PathBuf {
    std::env::var_os("DETVM_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".detvm"))
}

fn options(a: RunArgs) -> RunOptions {
    RunOptions {
        compose: a.compose,
        seed: a.seed,
        duration: a.duration,
        epoch: a.epoch,
        faults: a.faults,
        no_faults: a.no_faults,
        vars: a.vars,
        backend: a.backend,
        json: a.json,
        junit: a.junit,
        home: home(),
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        snapshot_at: a.snapshot_at,
    }
}

/// Ctrl-C sets a flag the run loop checks between steps, so the run is stored as
/// interrupted; a second Ctrl-C exits at once.
fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&flag);
        let _ = ctrlc::set_handler(move || {
            if f.swap(true, Ordering::SeqCst) {
                std::process::exit(i32::from(exit::INTERRUPTED));
            }
            eprintln!(
                "\ndetvm: interrupting; the run is kept as interrupted (Ctrl-C again to quit now)"
            );
        });
        flag
    })
    .clone()
}

pub fn run(args: RunArgs) -> ExitCode {
    let flag = interrupt_flag();
    run::report_and_exit(run::run(&options(args), &flag))
}

pub fn check(args: CheckArgs) -> ExitCode {
    let flag = interrupt_flag();
    match run::check::check(&options(args.run), args.runs, &flag) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `detvm replay RUN@VTIME`: the state at a moment, replayed and checked against the run.
pub fn replay(args: ReplayArgs) -> ExitCode {
    let opts = run::replay::ReplayOptions {
        home: home(),
        moment: args.moment,
        from_start: args.from_start,
    };
    let summary = match run::replay::replay(&opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    print!("{}", run::replay::render(&summary));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&summary).expect("summary serializes");
        if let Err(e) = std::fs::write(path, json) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(exit::INFRASTRUCTURE);
        }
    }
    ExitCode::from(summary.exit_code())
}

/// `detvm runs`: the run store, newest first.
pub fn list() -> ExitCode {
    match RunStore::open(&home()).and_then(|s| s.runs()) {
        Ok(runs) => {
            println!(
                "{:<12}  {:<20}  {:>6}  {:<16}  COMPOSE",
                "RUN", "STATUS", "SEED", "TRACE"
            );
            for r in runs {
                println!(
                    "{:<12}  {:<20}  {:>6}  {:<16}  {}",
                    r.id,
                    r.status.as_str(),
                    r.seed,
                    r.trace_hash.unwrap_or_default(),
                    r.compose
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit::INFRASTRUCTURE)
        }
    }
}
