//! `detvm explore` and `detvm campaigns`: campaigns over a tree of timelines
//! (docs/explore.md).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use explorer::campaign::novelty::Weights;
use explorer::campaign::store::CampaignStore;
use explorer::campaign::{self, CampaignReport, ExploreOptions};
use explorer::moment::format_vtime;
use explorer::properties::Status;

use crate::exit;
use crate::progress::Terminal;
use crate::run_cmd::{home, interrupt_flag, RunArgs};

#[derive(Args, Debug)]
pub struct ExploreArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Stop after this many branches (default 40 unless `--budget` is given).
    #[arg(long)]
    pub branches: Option<u32>,
    /// Stop after this much wall time, e.g. `10m`; the report says how many branches ran.
    #[arg(long, value_parser = explorer::compose::parse_duration)]
    pub budget: Option<Duration>,
    /// Virtual time each branch runs before it may be branched again.
    #[arg(long, default_value = "3s", value_parser = explorer::compose::parse_duration)]
    pub horizon: Duration,
    /// Branches run in parallel (default: the host's cores). The tree does not depend on it.
    #[arg(long)]
    pub jobs: Option<usize>,
}

pub fn explore(args: ExploreArgs) -> ExitCode {
    let flag = interrupt_flag();
    let branches = match (args.branches, args.budget) {
        (None, None) => Some(40),
        (b, _) => b,
    };
    let opts = ExploreOptions {
        run: crate::run_cmd::options(&args.run),
        branches,
        budget: args.budget,
        horizon: args.horizon,
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        weights: Weights::default(),
    };
    let mut terminal = Terminal::new("detvm explore", None);
    let report = campaign::explore(&opts, &mut terminal, &flag);
    terminal.done();
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit::of_error(&e));
        }
    };
    let json = serde_json::to_string_pretty(&report).expect("report serializes");
    if let Some(path) = &args.run.json {
        if let Err(e) = std::fs::write(path, &json) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(exit::INFRASTRUCTURE);
        }
    }
    print!("{}", summary(&report));
    if report.stopped == "interrupted" {
        ExitCode::from(exit::INTERRUPTED)
    } else if report.failed() {
        ExitCode::from(exit::PROPERTIES_FAILED)
    } else {
        ExitCode::from(exit::PASSED)
    }
}

/// The campaign's triage table and utilization.
pub fn summary(r: &CampaignReport) -> String {
    let mut out = format!(
        "{:<6}  {:<12}  {:<56}  {:>5}  {:>5}  EXAMPLES\n",
        "STATUS", "KIND", "PROPERTY", "PASS", "FAIL"
    );
    for p in &r.properties {
        let status = match p.status {
            Status::Passed => "pass",
            Status::Failed => "FAIL",
        };
        let name: String = p.message.chars().take(56).collect();
        out.push_str(&format!(
            "{status:<6}  {:<12}  {name:<56}  {:>5}  {:>5}  {}\n",
            p.kind,
            p.passing,
            p.failing,
            p.examples.join(" ")
        ));
    }
    let finished = r.timelines.iter().filter(|t| t.finished).count();
    let failed = r.timelines.iter().filter(|t| !t.failed.is_empty()).count();
    let wall = r.wall_ms as f64 / 1000.0;
    out.push_str(&format!(
        "\ncampaign {}: {} — {} timelines ({} branches, {} finished, {} failing); {} of virtual time in {:.1}s wall ({:.2}x); {} coverage keys; stopped: {}\n",
        r.campaign,
        if r.failed() { "failed" } else { "passed" },
        r.timelines.len(),
        r.branches,
        finished,
        failed,
        format_vtime(r.virtual_ns),
        wall,
        r.virtual_ns as f64 / 1e9 / wall.max(0.001),
        r.coverage_keys,
        r.stopped
    ));
    if let Some(example) = r
        .properties
        .iter()
        .filter(|p| p.status == Status::Failed)
        .find_map(|p| p.examples.first())
    {
        out.push_str(&format!(
            "first failing moment: {example}\n  replay it (state there, events checked): detvm replay {example}\n"
        ));
    }
    out
}

/// `detvm campaigns`: the campaigns in the store, newest first.
pub fn list() -> ExitCode {
    match CampaignStore::open(&home()).and_then(|s| s.list()) {
        Ok(all) => {
            println!(
                "{:<12}  {:<8}  {:>6}  {:>9}  COMPOSE",
                "CAMPAIGN", "STATUS", "SEED", "TIMELINES"
            );
            for c in all {
                let timelines = c
                    .report
                    .as_ref()
                    .and_then(|r| r["timelines"].as_array().map(|t| t.len()))
                    .unwrap_or(0);
                println!(
                    "{:<12}  {:<8}  {:>6}  {:>9}  {}",
                    c.id, c.status, c.seed, timelines, c.compose
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
