//! The CI gate (`detvm ci`, docs/ci.md): a campaign's findings against a named
//! baseline, the verdict, and what CI shows (JUnit, JSON, Markdown).
//!
//! A baseline is a finished campaign recorded under a name (`--record main` on the base
//! branch): its id, its properties, whether it passed, and the fingerprint of its
//! inputs. New failures fail the gate; ongoing ones fail it unless known failures are
//! allowed; resolved ones are listed. When the inputs' fingerprint equals a passing
//! baseline's, the campaign would explore the very same system: the gate skips it.

use std::path::{Path, PathBuf};

use explorer::campaign::findings::{findings, Finding, FindingKind};
use explorer::campaign::{CampaignReport, PropertySummary};
use explorer::properties::Status;
use explorer::run::prepare::Prepared;
use explorer::run::RunError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A recorded campaign to compare against.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    pub name: String,
    pub campaign: String,
    pub fingerprint: String,
    pub passed: bool,
    pub properties: Vec<PropertySummary>,
}

/// What the campaign explores, as one digest: the compose file and its variables, the
/// fault plan, each service's image (content-addressed root filesystem), the guest
/// kernel's and agent's bytes, and the campaign's settings (seed, duration, horizon,
/// branch or wall budget).
pub fn fingerprint(prepared: &Prepared, settings: &serde_json::Value) -> Result<String, RunError> {
    let f = prepared.fingerprint()?;
    let file_digest = |p: &Path| explorer::run::inputs::sha256_of(p);
    let env = prepared
        .compose
        .path
        .parent()
        .map(|d| d.join(".env"))
        .filter(|p| p.is_file())
        .map(|p| file_digest(&p))
        .transpose()?;
    let images: Vec<String> = f
        .images
        .iter()
        .map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let whole = serde_json::json!({
        "compose": f.compose_sha256,
        "env": env,
        "services": format!("{:?}", prepared.compose.services),
        "plan": f.plan,
        "kernel": file_digest(&f.kernel)?,
        "agent": file_digest(&f.initrd)?,
        "images": images,
        "seed": prepared.seed,
        "duration_ns": prepared.duration_ns(),
        "settings": settings,
    });
    Ok(format!("sha256:{:x}", Sha256::digest(whole.to_string())))
}

/// `NAME` is `.detvm/baselines/NAME.json`; anything with a `/` or ending in `.json` is a
/// path (a baseline file CI kept as an artifact).
pub fn baseline_path(home: &Path, name: &str) -> PathBuf {
    if name.contains('/') || name.ends_with(".json") {
        PathBuf::from(name)
    } else {
        home.join("baselines").join(format!("{name}.json"))
    }
}

pub fn load_baseline(home: &Path, name: &str) -> Result<Option<Baseline>, String> {
    let path = baseline_path(home, name);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

pub fn record_baseline(home: &Path, baseline: &Baseline) -> Result<PathBuf, String> {
    let path = baseline_path(home, &baseline.name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(baseline).expect("baselines serialize");
    std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Passed,
    Failed,
    Skipped,
}

/// The gate's whole outcome, also its JSON file.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub verdict: Verdict,
    pub reason: String,
    pub compose: String,
    pub campaign: Option<String>,
    pub baseline: Option<String>,
    pub baseline_campaign: Option<String>,
    pub fingerprint: String,
    pub allow_known: bool,
    pub findings: Vec<Finding>,
    pub properties: Vec<PropertySummary>,
}

/// Findings of `report` against `baseline` (every failure is new without one), and the
/// verdict: failed on any new failure, or an ongoing one unless `allow_known`.
pub fn judge(
    report: &CampaignReport,
    baseline: Option<&Baseline>,
    allow_known: bool,
    fingerprint: String,
) -> Outcome {
    let found = findings(
        &report.properties,
        baseline.map(|b| (b.campaign.as_str(), &b.properties[..])),
    );
    let count = |k: FindingKind| found.iter().filter(|f| f.kind == k).count();
    let (new, ongoing, resolved) = (
        count(FindingKind::New),
        count(FindingKind::Ongoing),
        count(FindingKind::Resolved),
    );
    let failed = new > 0 || (ongoing > 0 && !allow_known);
    let reason = format!(
        "{new} new, {ongoing} ongoing{}, {resolved} resolved failure(s)",
        if allow_known && ongoing > 0 {
            " (allowed)"
        } else {
            ""
        }
    );
    Outcome {
        verdict: if failed {
            Verdict::Failed
        } else {
            Verdict::Passed
        },
        reason,
        compose: report.compose.clone(),
        campaign: Some(report.campaign.clone()),
        baseline: baseline.map(|b| b.name.clone()),
        baseline_campaign: baseline.map(|b| b.campaign.clone()),
        fingerprint,
        allow_known,
        findings: found,
        properties: report.properties.clone(),
    }
}

/// The skip: the inputs are those of a baseline that passed.
pub fn skipped(compose: &str, baseline: &Baseline, fingerprint: String) -> Outcome {
    Outcome {
        verdict: Verdict::Skipped,
        reason: format!(
            "inputs unchanged since baseline {} (campaign {}), which passed: nothing to explore",
            baseline.name, baseline.campaign
        ),
        compose: compose.to_string(),
        campaign: None,
        baseline: Some(baseline.name.clone()),
        baseline_campaign: Some(baseline.campaign.clone()),
        fingerprint,
        allow_known: false,
        findings: Vec::new(),
        properties: baseline.properties.clone(),
    }
}

fn kind_word(k: FindingKind) -> &'static str {
    match k {
        FindingKind::New => "new",
        FindingKind::Ongoing => "ongoing",
        FindingKind::Resolved => "resolved",
    }
}

/// The Markdown summary (for `$GITHUB_STEP_SUMMARY` or a merge request note).
pub fn markdown(o: &Outcome) -> String {
    let head = match o.verdict {
        Verdict::Passed => "✅ detvm: passed",
        Verdict::Failed => "❌ detvm: failed",
        Verdict::Skipped => "⏭️ detvm: skipped",
    };
    let mut out = format!("## {head}\n\n`{}`: {}.\n\n", o.compose, o.reason);
    if let Some(c) = &o.campaign {
        out.push_str(&format!("Campaign `{c}`"));
        match (&o.baseline, &o.baseline_campaign) {
            (Some(b), Some(bc)) => {
                out.push_str(&format!(", compared with baseline `{b}` (`{bc}`).\n\n"))
            }
            _ => out.push_str(", no baseline: every failure is new.\n\n"),
        }
    }
    if !o.findings.is_empty() {
        out.push_str("| finding | property | replay |\n|---|---|---|\n");
        for f in &o.findings {
            let example = o
                .properties
                .iter()
                .find(|p| p.id == f.property)
                .and_then(|p| p.examples.first())
                .map(|e| format!("`detvm replay {e}`"))
                .unwrap_or_default();
            out.push_str(&format!(
                "| {} | {} | {example} |\n",
                kind_word(f.kind),
                f.message.replace('|', "\\|")
            ));
        }
        out.push('\n');
    }
    let passing = o
        .properties
        .iter()
        .filter(|p| p.status == Status::Passed)
        .count();
    out.push_str(&format!(
        "{passing} of {} properties passed. Inputs fingerprint `{}`.\n",
        o.properties.len(),
        &o.fingerprint
    ));
    out
}

/// JUnit XML: one case per property; a failure's message says new or ongoing; resolved
/// findings and the skip are cases too, so CI lists them.
pub fn junit(o: &Outcome) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new(format!("detvm ci {}", o.compose));
    if let Some(c) = &o.campaign {
        suite.add_property(("campaign", c.as_str()));
    }
    if let Some(b) = &o.baseline_campaign {
        suite.add_property(("baseline", b.as_str()));
    }
    let kind_of = |id: &str| o.findings.iter().find(|f| f.property == id).map(|f| f.kind);
    if o.verdict == Verdict::Skipped {
        let mut s = TestCaseStatus::skipped();
        s.set_message(o.reason.as_str());
        suite.add_test_case(TestCase::new("campaign", s));
    } else {
        for p in &o.properties {
            let status = match (p.status, kind_of(&p.id)) {
                (Status::Failed, kind) => {
                    let known = kind == Some(FindingKind::Ongoing);
                    let mut s = if known && o.allow_known {
                        TestCaseStatus::skipped()
                    } else {
                        TestCaseStatus::non_success(NonSuccessKind::Failure)
                    };
                    s.set_message(format!(
                        "{} failure; examples: {}",
                        if known { "ongoing" } else { "new" },
                        p.examples.join(" ")
                    ));
                    s
                }
                (Status::Passed, _) => TestCaseStatus::success(),
            };
            let mut case = TestCase::new(p.message.as_str(), status);
            case.set_classname(p.kind.as_str());
            suite.add_test_case(case);
        }
        for f in o
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::Resolved)
        {
            if !o.properties.iter().any(|p| p.id == f.property) {
                let mut case = TestCase::new(f.message.as_str(), TestCaseStatus::success());
                case.set_classname("resolved");
                suite.add_test_case(case);
            }
        }
    }
    let mut report = Report::new("detvm");
    report.add_test_suite(suite);
    report
        .to_string()
        .expect("JUnit serialization of plain strings")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(id: &str, status: Status) -> PropertySummary {
        PropertySummary {
            id: id.into(),
            message: format!("{id} holds"),
            kind: "always".into(),
            must_hit: false,
            passing: 0,
            failing: u64::from(status == Status::Failed),
            first_failure: None,
            examples: vec![format!("c1/T1@1s {id}")],
            logs: Vec::new(),
            status,
        }
    }

    fn report(props: Vec<PropertySummary>) -> CampaignReport {
        serde_json::from_value(serde_json::json!({
            "campaign": "c2", "compose": "x.yaml", "seed": 1, "branches": 1,
            "timelines": [], "properties": props, "virtual_ns": 0, "wall_ms": 0,
            "coverage_keys": 0, "stopped": "branch budget of 1 reached"
        }))
        .unwrap()
    }

    fn baseline(props: Vec<PropertySummary>) -> Baseline {
        let passed = props.iter().all(|p| p.status == Status::Passed);
        Baseline {
            name: "main".into(),
            campaign: "c1".into(),
            fingerprint: "f".into(),
            passed,
            properties: props,
        }
    }

    use Status::{Failed, Passed};

    #[test]
    fn a_new_failure_fails_even_with_known_ones_allowed() {
        let b = baseline(vec![prop("a", Passed)]);
        let o = judge(&report(vec![prop("a", Failed)]), Some(&b), true, "f".into());
        assert_eq!(o.verdict, Verdict::Failed);
        assert_eq!(o.findings[0].kind, FindingKind::New);
        assert!(junit(&o).contains("new failure"));
    }

    #[test]
    fn an_ongoing_failure_fails_unless_allowed() {
        let b = baseline(vec![prop("a", Failed)]);
        let r = report(vec![prop("a", Failed)]);
        assert_eq!(
            judge(&r, Some(&b), false, "f".into()).verdict,
            Verdict::Failed
        );
        let allowed = judge(&r, Some(&b), true, "f".into());
        assert_eq!(allowed.verdict, Verdict::Passed);
        assert!(
            allowed.reason.contains("1 ongoing (allowed)"),
            "{}",
            allowed.reason
        );
    }

    #[test]
    fn a_resolved_failure_passes_and_is_listed() {
        let b = baseline(vec![prop("a", Failed)]);
        let o = judge(
            &report(vec![prop("a", Passed)]),
            Some(&b),
            false,
            "f".into(),
        );
        assert_eq!(o.verdict, Verdict::Passed);
        assert_eq!(o.findings[0].kind, FindingKind::Resolved);
        assert!(
            markdown(&o).contains("| resolved | a holds |"),
            "{}",
            markdown(&o)
        );
    }

    #[test]
    fn without_a_baseline_every_failure_is_new() {
        let o = judge(&report(vec![prop("a", Failed)]), None, true, "f".into());
        assert_eq!(o.verdict, Verdict::Failed);
        assert!(markdown(&o).contains("no baseline"));
    }
}
