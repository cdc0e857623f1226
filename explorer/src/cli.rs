//! The `detvm` command line.

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
}

pub fn main() -> ExitCode {
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
        Command::Paths => {
            println!("cache: {}", crate::paths::cache_dir().display());
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
