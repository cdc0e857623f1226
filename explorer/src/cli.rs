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
    /// Print where detvm keeps its caches (guest kernel, images).
    Paths,
}

pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Paths => {
            println!("cache: {}", crate::paths::cache_dir().display());
            ExitCode::SUCCESS
        }
    }
}
