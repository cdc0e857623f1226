//! `detvm run`, `detvm check`, `detvm replay` and `detvm runs`: the command-line side of
//! the engine's [`explorer::run`]: flags, progress, the printed results, exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use clap::Args;
use explorer::moment::format_vtime;
use explorer::report::RunReport;
use explorer::run::check::Verdict;
use explorer::run::replay::ReplaySummary;
use explorer::run::{self, RunError, RunOptions};
use explorer::store::RunStore;
use vmm::backend::BackendKind;

use crate::exit;
use crate::progress::Terminal;

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
    /// The moment, `RUN@VTIME` (e.g. `r3c9a51e2f0@12.5s`) as `detvm run` prints it, or a
    /// campaign's timeline `C/T@VTIME` (e.g. `c3f1a2b4c5d/T7@9.2s`) as `detvm explore` does.
    pub moment: explorer::moment::Moment,
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
    explorer::compose::parse_duration(s)
}

fn parse_vtime(s: &str) -> Result<u64, String> {
    explorer::moment::parse_vtime(s)
}

fn parse_epoch(s: &str) -> Result<i64, String> {
    explorer::compose::parse_epoch(s)
}

pub fn parse_var(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not KEY=value"))
}

pub fn parse_backend(s: &str) -> Result<BackendKind, String> {
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

pub fn options(a: &RunArgs) -> RunOptions {
    RunOptions {
        compose: a.compose.clone(),
        seed: a.seed,
        duration: a.duration,
        epoch: a.epoch,
        faults: a.faults.clone(),
        no_faults: a.no_faults,
        vars: a.vars.clone(),
        backend: a.backend,
        home: home(),
        snapshot_at: a.snapshot_at.clone(),
    }
}

/// Ctrl-C sets a flag the run loop checks between steps, so the run is stored as
/// interrupted; a second Ctrl-C exits at once.
pub fn interrupt_flag() -> Arc<AtomicBool> {
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

fn fail(e: &RunError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(exit::of_error(e))
}

fn write(path: &Path, text: &str) -> Result<(), ExitCode> {
    std::fs::write(path, text).map_err(|e| {
        eprintln!("error: cannot write {}: {e}", path.display());
        ExitCode::from(exit::INFRASTRUCTURE)
    })
}

pub fn run(args: RunArgs) -> ExitCode {
    let flag = interrupt_flag();
    let mut terminal = Terminal::new("detvm", args.duration);
    let result = run::run(&options(&args), &mut terminal, &flag);
    terminal.done();
    let result = match result {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let report = &result.report;
    if let Err(code) = write_reports(report, &result.dir, &args) {
        return code;
    }
    print!("{}", crate::report::summary(report));
    ExitCode::from(exit::of_status(report.status))
}

/// JUnit XML into the run's folder, and the report where `--json` / `--junit` ask.
fn write_reports(report: &RunReport, run_dir: &Path, args: &RunArgs) -> Result<(), ExitCode> {
    let json = serde_json::to_string_pretty(report).expect("report serializes");
    let junit = crate::report::junit(report);
    write(&run_dir.join("junit.xml"), &junit)?;
    if let Some(p) = &args.json {
        write(p, &json)?;
    }
    if let Some(p) = &args.junit {
        write(p, &junit)?;
    }
    Ok(())
}

pub fn check(args: CheckArgs) -> ExitCode {
    let flag = interrupt_flag();
    let mut terminal = Terminal::new("detvm check", args.run.duration);
    let outcome = run::check::check(&options(&args.run), args.runs, &mut terminal, &flag);
    terminal.done();
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    let home = home();
    for r in &outcome.runs {
        let dir = match RunStore::open(&home) {
            Ok(store) => store.run_dir(&r.run),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(exit::INFRASTRUCTURE);
            }
        };
        if let Err(code) = write_reports(&r.report, &dir, &args.run) {
            return code;
        }
        let why = r
            .message
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        println!(
            "run {}: {}{why} — trace {}, {} events",
            r.run,
            r.status.as_str(),
            r.trace_hash,
            r.events
        );
    }
    match outcome.verdict {
        Verdict::Interrupted => ExitCode::from(exit::INTERRUPTED),
        Verdict::Differs {
            first,
            other,
            difference,
        } => {
            println!("NOT DETERMINISTIC: runs {first} and {other} differ: {difference}");
            ExitCode::from(exit::NOT_DETERMINISTIC)
        }
        Verdict::Deterministic { incomplete } => {
            println!(
                "deterministic: {} runs, one trace hash, one event stream, the same properties",
                outcome.runs.len()
            );
            // Identical runs that never got to test anything are not a pass.
            ExitCode::from(incomplete.map_or(exit::PASSED, exit::of_status))
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
    let mut terminal = Terminal::new("detvm replay", None);
    let summary = run::replay::replay(&opts, &mut terminal);
    terminal.done();
    let summary = match summary {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    print!("{}", render_replay(&summary));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&summary).expect("summary serializes");
        if let Err(code) = write(path, &json) {
            return code;
        }
    }
    ExitCode::from(if summary.divergence.is_some() {
        exit::NOT_DETERMINISTIC
    } else {
        exit::PASSED
    })
}

/// The state at a moment as the terminal shows it.
pub fn render_replay(s: &ReplaySummary) -> String {
    let state = &s.state;
    let mut out = format!(
        "moment {} (decision point {})\n  replayed from {} at {} in {:.1}s wall\n  trace hash {}\n  phase: {}\n",
        s.moment,
        format_vtime(s.decision_point_ns),
        s.started_from,
        format_vtime(s.started_at_ns),
        s.wall_ms as f64 / 1000.0,
        state.trace_hash,
        state.phase
    );
    out.push_str("  services:\n");
    for (svc, node) in state.services.iter().zip(&state.nodes) {
        out.push_str(&format!(
            "    {:<16} {:<24} vm {}{}\n",
            svc.name,
            svc.life,
            node.state,
            if svc.healthy { ", healthy" } else { "" }
        ));
    }
    out.push_str("  properties so far (passes / failures):\n");
    for p in &state.properties {
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
