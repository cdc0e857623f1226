//! `detvm explore` and `detvm campaigns`: campaigns over a tree of timelines
//! (docs/explore.md).

use std::path::{Path, PathBuf};
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
use crate::run_cmd::{home, interrupt_flag};
use explorer::run::RunOptions;
use vmm::backend::BackendKind;

#[derive(Args, Debug)]
pub struct ExploreArgs {
    /// The docker-compose file (docs/compose.md); not with `--resume`.
    #[arg(required_unless_present = "resume", conflicts_with = "resume")]
    pub compose: Option<PathBuf>,
    /// Go on with a stopped or killed campaign from its last committed round (its
    /// compose file, seed, duration, horizon and variables are the campaign's own).
    #[arg(long, value_name = "CAMPAIGN")]
    pub resume: Option<String>,
    /// The campaign seed: the root's world seed, the picks and every branch seed
    /// (default: `x-detvm.seed`, else 0).
    #[arg(long, conflicts_with = "resume")]
    pub seed: Option<u64>,
    /// Virtual time of a whole run: a branch past it is played to its end and judged
    /// (default: `x-detvm.duration`, else 1m).
    #[arg(long, conflicts_with = "resume", value_parser = explorer::compose::parse_duration)]
    pub duration: Option<Duration>,
    /// Wall clock at power-on: Unix seconds or RFC 3339 (default: `x-detvm.epoch`).
    #[arg(long, conflicts_with = "resume", value_parser = parse_epoch)]
    pub epoch: Option<i64>,
    /// `KEY=value` for `${KEY}` in the compose file (wins over `.env`); repeatable.
    #[arg(long = "var", conflicts_with = "resume", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// CPU backend: `emu` (default, any host) or `kvm`.
    #[arg(long, default_value = "emu", value_parser = parse_backend)]
    pub backend: BackendKind,
    /// Stop after this many branches in all (default 40 unless `--budget` is given; with
    /// `--resume`, the campaign's own budget).
    #[arg(long)]
    pub branches: Option<u32>,
    /// Stop after this much wall time, e.g. `10m`; the report says how many branches ran.
    #[arg(long, value_parser = explorer::compose::parse_duration)]
    pub budget: Option<Duration>,
    /// Virtual time each branch runs before it may be branched again (with `--resume`,
    /// the campaign's own).
    #[arg(long, default_value = "3s", conflicts_with = "resume", value_parser = explorer::compose::parse_duration)]
    pub horizon: Duration,
    /// Branches run in parallel (default: the host's cores). The tree does not depend on it.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Most bytes of frontier snapshot files kept under `.detvm/campaigns/C/`, e.g.
    /// `500M`, `2G`; the files of the lowest-energy moments are removed first.
    #[arg(long, default_value = "2G", value_parser = parse_bytes)]
    pub snapshot_cap: u64,
    /// Also write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write JUnit XML here (for CI): one test case per property.
    #[arg(long)]
    pub junit: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The campaign id, as `detvm campaigns` lists it.
    pub campaign: String,
    /// Also write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write JUnit XML here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum CampaignCommand {
    /// Print a stored campaign's report (also one still running, stopped or killed: as
    /// its last committed round left it). Exit codes as `detvm explore`.
    Show(ShowArgs),
}

/// `512`, `500K`, `500M`, `2G` (powers of 1024).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit
        .trim_end_matches(['B', 'b', 'i'])
        .to_ascii_uppercase()
        .as_str()
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("`{s}`: write a size like 500M or 2G")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}`: write a size like 500M or 2G"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

fn parse_epoch(s: &str) -> Result<i64, String> {
    explorer::compose::parse_epoch(s)
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

pub fn explore(args: ExploreArgs) -> ExitCode {
    let flag = interrupt_flag();
    let home = home();
    let branches = match (args.branches, args.budget, &args.resume) {
        (Some(b), _, _) => Some(b),
        (None, None, None) => Some(40),
        (None, None, Some(id)) => match CampaignStore::open(&home).and_then(|s| s.state(id)) {
            Ok(Some(state)) => state.branch_budget,
            _ => Some(40),
        },
        (None, Some(_), _) => None,
    };
    let opts = ExploreOptions {
        run: RunOptions {
            compose: args.compose.clone().unwrap_or_default(),
            seed: args.seed,
            duration: args.duration,
            epoch: args.epoch,
            faults: None,
            no_faults: true,
            vars: args.vars.clone(),
            backend: args.backend,
            home,
            snapshot_at: Vec::new(),
        },
        branches,
        budget: args.budget,
        horizon: args.horizon,
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        weights: Weights::default(),
        snapshot_cap: args.snapshot_cap,
        resume: args.resume.clone(),
    };
    let mut terminal = Terminal::new("detvm explore", None);
    let report = campaign::explore(&opts, &mut terminal, &flag);
    terminal.done();
    match report {
        Ok(r) => finish(&r, args.json.as_deref(), args.junit.as_deref()),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit::of_error(&e))
        }
    }
}

/// Writes the report where asked, prints it, and turns it into the exit code.
fn finish(report: &CampaignReport, json: Option<&Path>, junit: Option<&Path>) -> ExitCode {
    let writes = [
        (
            json,
            serde_json::to_string_pretty(report).expect("report serializes"),
        ),
        (junit, self::junit(report)),
    ];
    for (path, text) in writes {
        if let Some(path) = path {
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return ExitCode::from(exit::INFRASTRUCTURE);
            }
        }
    }
    print!("{}", summary(report));
    if report.stopped == campaign::INTERRUPTED {
        ExitCode::from(exit::INTERRUPTED)
    } else if report.failed() {
        ExitCode::from(exit::PROPERTIES_FAILED)
    } else {
        ExitCode::from(exit::PASSED)
    }
}

/// `detvm campaign show C`.
pub fn campaign(cmd: CampaignCommand) -> ExitCode {
    let CampaignCommand::Show(args) = cmd;
    match campaign::report::stored(&home(), &args.campaign) {
        Ok(r) => finish(&r, args.json.as_deref(), args.junit.as_deref()),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit::of_error(&e))
        }
    }
}

/// JUnit XML: one test suite for the campaign, one test case per property.
pub fn junit(r: &CampaignReport) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new(format!("detvm explore {}", r.compose));
    suite.add_property(("campaign", r.campaign.as_str()));
    suite.add_property(("seed", r.seed.to_string().as_str()));
    suite.add_property(("branches", r.branches.to_string().as_str()));
    for p in &r.properties {
        let status = match p.status {
            Status::Passed => TestCaseStatus::success(),
            Status::Failed => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(match &p.first_failure {
                    Some(m) => format!("failed in {} timeline(s), first at {m}", p.failing),
                    None => "no timeline reached it".to_string(),
                });
                let finding = r
                    .findings
                    .iter()
                    .find(|f| f.property == p.id)
                    .map(|f| format!("finding: {:?}\n", f.kind).to_lowercase())
                    .unwrap_or_default();
                s.set_description(format!(
                    "{finding}examples: {}\n{}",
                    p.examples.join(" "),
                    p.logs.join("\n")
                ));
                s
            }
        };
        let mut case = TestCase::new(p.message.as_str(), status);
        case.set_classname(p.kind.as_str());
        case.set_assertions((p.passing + p.failing) as usize);
        suite.add_test_case(case);
    }
    let mut junit = Report::new("detvm");
    junit.add_test_suite(suite);
    junit
        .to_string()
        .expect("JUnit serialization of plain strings")
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
    for p in r.properties.iter().filter(|p| !p.logs.is_empty()) {
        let name: String = p.message.chars().take(56).collect();
        out.push_str(&format!(
            "\n{name}: first failed at {}; the failing service's last lines before it:\n",
            p.first_failure.as_deref().unwrap_or("?")
        ));
        for line in &p.logs {
            let line: String = line.chars().take(160).collect();
            out.push_str(&format!("  {line}\n"));
        }
    }
    let finished = r.timelines.iter().filter(|t| t.finished).count();
    let failed = r.timelines.iter().filter(|t| !t.failed.is_empty()).count();
    let judging: Vec<u64> = r
        .timelines
        .iter()
        .filter_map(|t| t.judged_at_ns.map(|j| t.end_ns - j))
        .collect();
    out.push_str(&format!(
        "\ncampaign {}: {} — {} timelines ({} branches, {} finished, {} judged early, {} failing); {} of virtual time ({} of it judging) in {:.1}s wall ({:.2}x); {} coverage keys; snapshots: {} files, {:.1} MiB on disk, {} pruned; stopped: {}\n",
        r.campaign,
        if r.failed() { "failed" } else { "passed" },
        r.timelines.len(),
        r.branches,
        finished,
        judging.len(),
        failed,
        format_vtime(r.virtual_ns),
        format_vtime(judging.iter().sum()),
        r.wall_ms as f64 / 1000.0,
        r.virtual_to_wall,
        r.coverage_keys,
        r.snapshot_files,
        r.snapshot_bytes as f64 / (1u64 << 20) as f64,
        r.snapshots_pruned,
        r.stopped
    ));
    match r.findings.first().and_then(|f| f.previous.as_deref()) {
        Some(prev) => out.push_str(&format!("findings against campaign {prev}:\n")),
        None if r.findings.is_empty() => {
            out.push_str("findings: none (no property failed, none resolved)\n")
        }
        None => out.push_str("findings (no earlier campaign of these inputs to compare with):\n"),
    }
    for f in &r.findings {
        let kind = format!("{:?}", f.kind).to_lowercase();
        out.push_str(&format!("  {kind:<8}  {}\n", f.message));
    }
    if let Some(example) = r
        .properties
        .iter()
        .filter(|p| p.status == Status::Failed)
        .find_map(|p| p.first_failure.as_ref())
    {
        out.push_str(&format!(
            "first failing moment: {example}\n  replay it (state there, events checked): detvm replay {example}\n"
        ));
    }
    if r.stopped == campaign::INTERRUPTED {
        out.push_str(&format!(
            "go on with it: detvm explore --resume {}\n",
            r.campaign
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
