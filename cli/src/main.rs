//! The `detvm` command line: a thin layer over the engine (`explorer`) that parses
//! flags, shows progress, prints results and turns them into exit codes.

mod boot_cmd;
mod ci_cmd;
mod doctor_cmd;
mod exit;
mod explore_cmd;
mod image_cmd;
mod minimize_cmd;
mod notebook_cmd;
mod progress;
mod report;
mod run_cmd;
mod service_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "detvm",
    version,
    about = "Deterministic test platform for distributed systems"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot one VM with the guest kernel and an initramfs; print its console and a run summary.
    Boot(crate::boot_cmd::BootArgs),
    /// Print where detvm keeps its caches (guest kernel, images).
    Paths,
    /// Load, list, remove and build container images (docs/images.md).
    #[command(subcommand)]
    Image(crate::image_cmd::ImageCommand),
    /// Check which CPU backends work on this host (tiny probe guests) and which one detvm uses.
    Doctor(crate::doctor_cmd::DoctorArgs),
    /// Test a docker-compose system: boot it, run its test commands with faults, judge its
    /// properties (docs/runs.md). Exit 0 passed, 1 properties failed, 2 setup failed,
    /// 3 infrastructure error, 4 bad input, 5 a test command hung, 130 interrupted.
    Run(crate::run_cmd::RunArgs),
    /// Run a compose system several times with one seed and compare trace hashes and
    /// events; name the first divergence (exit 6 when runs differ; 2, 3 or 5 when identical
    /// runs stopped before their test finished).
    Check(crate::run_cmd::CheckArgs),
    /// Replay a run to a moment `RUN@VTIME` from its nearest snapshot (`run --snapshot-at`)
    /// and print the state there and the trace hash; exit 6 if it differs from the run.
    Replay(crate::run_cmd::ReplayArgs),
    /// List the runs in the run store (.detvm/runs.db).
    Runs,
    /// Explore a compose system: boot once, then branch a tree of timelines from
    /// snapshots with new randomness and faults, guided by novelty (docs/explore.md).
    /// `--resume C` goes on with a stopped or killed campaign. Exit 0 when no property
    /// failed in any timeline, 1 when one did, 2 setup failed, 3 infrastructure error,
    /// 4 bad input, 130 interrupted.
    Explore(crate::explore_cmd::ExploreArgs),
    /// List the campaigns in the run store.
    Campaigns,
    /// A stored campaign: `detvm campaign show C` prints its report.
    #[command(subcommand)]
    Campaign(crate::explore_cmd::CampaignCommand),
    /// Shrink a campaign's failing timeline `C/T`: the fewest faults that keep it failing
    /// (delta debugging over replays), a reproduction, and the bug-likelihood curve.
    Minimize(crate::minimize_cmd::MinimizeArgs),
    /// Serve the web notebook on 127.0.0.1:7878: runs, triage, timelines, logs, moments,
    /// and actions at a moment (branch, exec, file) as notebook cells (docs/notebook.md).
    Notebook(crate::notebook_cmd::NotebookArgs),
    /// Send a compose system, its files and images to a detvm server as one bundle and
    /// queue a campaign there; `--wait` follows it and exits with its code (docs/service.md).
    Push(crate::service_cmd::PushArgs),
    /// The notebook's server plus the upload API that `detvm push` and `detvm ci --server`
    /// use; runs the campaigns of accepted bundles, here or on `detvm worker`s with
    /// --queue/--objects, and takes up the ones it left unfinished when it starts again
    /// (docs/service.md).
    Serve(crate::service_cmd::ServeArgs),
    /// The CI gate: run a campaign (here or with --server), compare its findings with a
    /// baseline, write JUnit/JSON/Markdown; exit 0 unless a property failed anew (or
    /// again, without --allow-known); skip when the inputs equal a passing baseline's
    /// (docs/ci.md).
    Ci(crate::ci_cmd::CiArgs),
    /// Run campaign branches from the work queue of `detvm serve --queue`, renewing each
    /// item's lease while it runs; snapshots through --objects or a shared `.detvm`
    /// (docs/scale-out.md).
    Worker(crate::service_cmd::WorkerArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Boot(args) => match crate::boot_cmd::run(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("detvm boot: {e:#}");
                ExitCode::from(4)
            }
        },
        Command::Doctor(args) => crate::doctor_cmd::run(args),
        Command::Run(args) => crate::run_cmd::run(args),
        Command::Check(args) => crate::run_cmd::check(args),
        Command::Replay(args) => crate::run_cmd::replay(args),
        Command::Runs => crate::run_cmd::list(),
        Command::Explore(args) => crate::explore_cmd::explore(args),
        Command::Campaigns => crate::explore_cmd::list(),
        Command::Campaign(cmd) => crate::explore_cmd::campaign(cmd),
        Command::Minimize(args) => crate::minimize_cmd::minimize(args),
        Command::Notebook(args) => crate::notebook_cmd::run(args),
        Command::Push(args) => crate::service_cmd::push(args),
        Command::Serve(args) => crate::service_cmd::serve(args),
        Command::Ci(args) => crate::ci_cmd::ci(args),
        Command::Worker(args) => crate::service_cmd::worker(args),
        Command::Paths => {
            println!("cache: {}", explorer::paths::cache_dir().display());
            ExitCode::SUCCESS
        }
        Command::Image(cmd) => match crate::image_cmd::run(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", crate::image_cmd::error_text(&e));
                ExitCode::FAILURE
            }
        },
    }
}
