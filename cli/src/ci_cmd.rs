//! `detvm ci`: the CI gate (docs/ci.md). Runs a campaign here or on a server, compares
//! its findings with a named baseline, writes JUnit, JSON and Markdown, and exits 0
//! only when no property failed anew (and, without `--allow-known`, none failed again).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use detvm_service::client::Client;
use detvm_service::gate::{self, Baseline, Outcome, Verdict};
use explorer::campaign::{self, novelty::Weights, CampaignReport, ExploreOptions};
use explorer::observer::Quiet;
use explorer::run::RunOptions;

use crate::exit;
use crate::progress::Terminal;
use crate::service_cmd::CampaignArgs;

#[derive(Args, Debug)]
pub struct CiArgs {
    #[command(flatten)]
    pub campaign: CampaignArgs,
    /// Compare with this baseline: a name (`.detvm/baselines/NAME.json`) or a file.
    #[arg(long)]
    pub baseline: Option<String>,
    /// Record this campaign as baseline NAME once it finished (on the base branch).
    #[arg(long)]
    pub record: Option<String>,
    /// Failures the baseline had too (ongoing) do not fail the gate; new ones still do.
    #[arg(long)]
    pub allow_known: bool,
    /// Run the campaign on this detvm server (`detvm serve`) instead of here.
    #[arg(long, env = "DETVM_SERVER")]
    pub server: Option<String>,
    #[arg(long, env = "DETVM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Branch threads for a campaign run here (default: the host's cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    #[arg(long)]
    pub junit: Option<PathBuf>,
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The Markdown summary; also appended to $GITHUB_STEP_SUMMARY when that is set.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

fn run_options(a: &CampaignArgs) -> RunOptions {
    RunOptions {
        compose: a.compose.clone(),
        seed: a.seed,
        duration: a.duration,
        epoch: None,
        faults: a.faults.clone(),
        no_faults: a.faults.is_none(),
        vars: a.vars.clone(),
        backend: vmm::backend::BackendKind::Emu,
        home: crate::run_cmd::home(),
        snapshot_at: Vec::new(),
    }
}

/// The campaign's budget as the gate fingerprints it: 40 branches unless told.
fn budget(a: &CampaignArgs) -> (Option<u32>, Option<Duration>) {
    match (a.branches, a.budget) {
        (None, None) => (Some(40), None),
        other => other,
    }
}

fn run_here(args: &CiArgs) -> Result<CampaignReport, (u8, String)> {
    let (branches, budget) = budget(&args.campaign);
    let mut run = run_options(&args.campaign);
    run.faults = None;
    run.no_faults = true;
    let opts = ExploreOptions {
        run,
        branches,
        budget,
        horizon: args.campaign.horizon.unwrap_or(Duration::from_secs(3)),
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        weights: Weights::default(),
        snapshot_cap: campaign::files::DEFAULT_CAP,
        resume: None,
    };
    let mut terminal = Terminal::new("detvm ci", None);
    let report = campaign::explore(&opts, &mut terminal, &crate::run_cmd::interrupt_flag());
    terminal.done();
    report.map_err(|e| (exit::of_error(&e), e.to_string()))
}

fn run_on_server(args: &CiArgs, server: &str) -> Result<CampaignReport, (u8, String)> {
    let client = Client::new(server, args.token.clone());
    let job = crate::service_cmd::push_bundle(&client, &args.campaign, &[])?;
    eprintln!("job {job} on {server}");
    let done = crate::service_cmd::wait_job(&client, &job)?;
    match (&done.report, done.exit_code) {
        (Some(report), _) => serde_json::from_value(report.clone())
            .map_err(|e| (exit::INFRASTRUCTURE, format!("the server's report: {e}"))),
        (None, code) => Err((
            code.unwrap_or(exit::INFRASTRUCTURE),
            done.error
                .unwrap_or_else(|| "the campaign gave no report".into()),
        )),
    }
}

fn write_outputs(args: &CiArgs, outcome: &Outcome) -> Result<(), String> {
    let md = gate::markdown(outcome);
    let json = serde_json::to_string_pretty(outcome).expect("outcomes serialize");
    for (path, text) in [
        (&args.junit, gate::junit(outcome)),
        (&args.json, json),
        (&args.markdown, md.clone()),
    ] {
        if let Some(p) = path {
            std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    if let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&summary)
            .map_err(|e| format!("$GITHUB_STEP_SUMMARY: {e}"))?;
        f.write_all(md.as_bytes())
            .map_err(|e| format!("$GITHUB_STEP_SUMMARY: {e}"))?;
    }
    print!("{md}");
    Ok(())
}

pub fn ci(args: CiArgs) -> ExitCode {
    let home = crate::run_cmd::home();
    let fail = |code: u8, message: &str| {
        eprintln!("detvm ci: {message}");
        ExitCode::from(code)
    };
    let prepared = match explorer::run::prepare::prepare(&run_options(&args.campaign), &mut Quiet) {
        Ok(p) => p,
        Err(e) => return fail(exit::of_error(&e), &e.to_string()),
    };
    let (branches, wall) = budget(&args.campaign);
    let settings = serde_json::json!({
        "branches": branches,
        "budget_ms": wall.map(|d| d.as_millis() as u64),
        "horizon_ms": args.campaign.horizon.map(|d| d.as_millis() as u64),
    });
    let fingerprint = match gate::fingerprint(&prepared, &settings) {
        Ok(f) => f,
        Err(e) => return fail(exit::of_error(&e), &e.to_string()),
    };
    let baseline = match args
        .baseline
        .as_deref()
        .map(|n| gate::load_baseline(&home, n))
    {
        None => None,
        Some(Ok(None)) => {
            eprintln!(
                "detvm ci: no baseline {} yet: every failure counts as new",
                args.baseline.as_deref().unwrap_or_default()
            );
            None
        }
        Some(Ok(Some(b))) => Some(b),
        Some(Err(e)) => return fail(exit::BAD_INPUT, &format!("baseline: {e}")),
    };
    let compose = args.campaign.compose.display().to_string();
    if let Some(b) = baseline
        .as_ref()
        .filter(|b| b.passed && b.fingerprint == fingerprint)
    {
        let outcome = gate::skipped(&compose, b, fingerprint);
        if let Err(e) = write_outputs(&args, &outcome) {
            return fail(exit::INFRASTRUCTURE, &e);
        }
        return ExitCode::from(exit::PASSED);
    }
    let report = match &args.server {
        Some(server) => run_on_server(&args, server),
        None => run_here(&args),
    };
    let report = match report {
        Ok(r) => r,
        Err((code, message)) => return fail(code, &message),
    };
    if report.stopped == campaign::INTERRUPTED {
        return fail(exit::INTERRUPTED, "interrupted");
    }
    let outcome = gate::judge(
        &report,
        baseline.as_ref(),
        args.allow_known,
        fingerprint.clone(),
    );
    if let Err(e) = write_outputs(&args, &outcome) {
        return fail(exit::INFRASTRUCTURE, &e);
    }
    if let Some(name) = &args.record {
        let recorded = Baseline {
            name: name.clone(),
            campaign: report.campaign.clone(),
            fingerprint,
            passed: !report.failed(),
            properties: report.properties.clone(),
        };
        match gate::record_baseline(&home, &recorded) {
            Ok(path) => eprintln!("recorded baseline {name}: {}", path.display()),
            Err(e) => return fail(exit::INFRASTRUCTURE, &e),
        }
    }
    ExitCode::from(match outcome.verdict {
        Verdict::Failed => exit::PROPERTIES_FAILED,
        Verdict::Passed | Verdict::Skipped => exit::PASSED,
    })
}
