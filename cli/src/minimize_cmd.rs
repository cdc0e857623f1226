//! `detvm minimize C/T`: the smallest fault list that keeps a campaign's failing
//! timeline failing, how to reproduce it, and the bug-likelihood curve along its path
//! (docs/explore.md, "Minimizing a failure").

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use explorer::campaign::minimize::{self, MinimizeOptions, MinimizeReport, PathFault};
use explorer::moment::format_vtime;

use crate::exit;
use crate::progress::Terminal;
use crate::run_cmd::{home, interrupt_flag};

#[derive(Args, Debug)]
pub struct MinimizeArgs {
    /// The failing timeline, `CAMPAIGN/T<number>` (e.g. `c3f1a2b4c5d/T7`).
    pub timeline: String,
    /// Fresh branches run from each moment of the bug-likelihood curve.
    #[arg(long, default_value_t = 5)]
    pub trials: usize,
    /// Seeds the fresh branches (their ids, randomness and faults).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The curve's spacing between fork points (default: half the campaign's horizon).
    #[arg(long, value_parser = explorer::compose::parse_duration)]
    pub every: Option<Duration>,
    /// Stop the fault search after this many replays (with the smallest failing list
    /// found by then).
    #[arg(long)]
    pub max_replays: Option<usize>,
    /// Replays and branches run in parallel (default: the host's cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Also write the result as JSON here (it is kept in the campaign's folder too).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn minimize(args: MinimizeArgs) -> ExitCode {
    let flag = interrupt_flag();
    let opts = MinimizeOptions {
        home: home(),
        timeline: args.timeline.clone(),
        trials: args.trials.max(1),
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        seed: args.seed,
        every_ns: args.every.map(|d| d.as_nanos() as u64),
        max_replays: args.max_replays,
    };
    let mut terminal = Terminal::new("detvm minimize", None);
    let report = minimize::minimize(&opts, &mut terminal, &flag);
    terminal.done();
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit::of_error(&e));
        }
    };
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).expect("report serializes");
        if let Err(e) = std::fs::write(path, json) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(exit::INFRASTRUCTURE);
        }
    }
    print!("{}", summary(&report));
    if report.confirmed {
        ExitCode::from(exit::PASSED)
    } else {
        eprintln!(
            "error: the smallest fault list did not fail again when replayed from the root: \
             replays of this campaign are not deterministic"
        );
        ExitCode::from(exit::NOT_DETERMINISTIC)
    }
}

fn fault_lines(faults: &[PathFault]) -> String {
    faults
        .iter()
        .map(|f| {
            format!(
                "  {:>12}  T{:<4} {}\n",
                format_vtime(f.at_ns),
                f.timeline,
                f.fault
            )
        })
        .collect()
}

/// The fault lists, the reproduction and the curve, as printed.
pub fn summary(r: &MinimizeReport) -> String {
    let mut out = format!(
        "{}: `{}` fails at {}\n\nfaults on its path ({}):\n{}",
        r.timeline,
        r.message,
        format_vtime(r.failure_ns),
        r.faults.len(),
        fault_lines(&r.faults)
    );
    out.push_str(&format!(
        "\nsmallest fault list that keeps it failing ({} of {}, {} replays{}):\n{}",
        r.minimal.len(),
        r.faults.len(),
        r.replays,
        match (r.confirmed, r.search_complete) {
            (false, _) => ", NOT confirmed from the root",
            (true, true) => ", confirmed from the root; without any one of them it passes",
            (true, false) => ", confirmed from the root; the search stopped at --max-replays",
        },
        if r.minimal.is_empty() {
            "  (none: it fails on this path without any fault)\n".to_string()
        } else {
            fault_lines(&r.minimal)
        }
    ));
    let rep = &r.reproduction;
    if rep.reproduces {
        out.push_str(&format!(
            "\nreproduce it as a plain run (checked: run {} fails it too):\n  {}\n",
            rep.run.as_deref().unwrap_or("?"),
            rep.command
        ));
    } else {
        out.push_str(&format!(
            "\nas a plain run with these faults ({}) it does not fail (run {}): the branches' \
             re-seeding at their forks matters. Reproduce it as the timeline's moment:\n  \
             detvm replay {}\n",
            rep.faults_file.display(),
            rep.run.as_deref().unwrap_or("?"),
            rep.moment
        ));
    }
    out.push_str(&format!(
        "\nbug likelihood: fresh branches from each moment of the path that fail it ({} each, seed {}):\n",
        r.trials, r.seed
    ));
    for p in &r.curve {
        let bar: String = "#".repeat(p.failing) + &".".repeat(p.trials - p.failing);
        out.push_str(&format!(
            "  {:>12}  T{:<4} {:>3}/{:<3} {bar}\n",
            format_vtime(p.at_ns),
            p.timeline,
            p.failing,
            p.trials
        ));
    }
    match r.likely_from_ns {
        Some(at) => out.push_str(&format!(
            "the bug became likely at {} (most fresh branches fail from there on)\n",
            format_vtime(at)
        )),
        None => out.push_str(
            "the bug never became likely on this path: at its last moment, most fresh branches pass\n",
        ),
    }
    out
}
