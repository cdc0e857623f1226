//! Checks of determinism (`detvm check`): the same run several times; every trace hash,
//! event and verdict must agree.

use std::sync::atomic::AtomicBool;

use super::{run, RunError, RunOptions};
use crate::moment::format_vtime;
use crate::observer::Observer;
use crate::report::RunReport;
use crate::store::{RunStatus, RunStore, StoredEvent};

/// What differs first between two runs' event streams.
pub fn first_difference(a: &[StoredEvent], b: &[StoredEvent]) -> Option<String> {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return Some(format!(
                "event #{} at {} on {}: {} {} vs {} {} (at {} on {})",
                x.seq,
                format_vtime(x.vtime_ns),
                x.node,
                x.kind,
                x.body,
                y.kind,
                y.body,
                format_vtime(y.vtime_ns),
                y.node
            ));
        }
    }
    (a.len() != b.len()).then(|| {
        format!(
            "one run has {} events, the other {}; they agree up to event #{}",
            a.len(),
            b.len(),
            a.len().min(b.len())
        )
    })
}

/// One run of a check, as the check saw it.
#[derive(Debug, Clone)]
pub struct CheckedRun {
    pub run: String,
    pub status: RunStatus,
    /// What stopped the run, if something did.
    pub message: Option<String>,
    pub trace_hash: String,
    pub events: usize,
    pub report: RunReport,
}

/// What `detvm check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every run gave one trace hash, one event stream and the same verdicts.
    Deterministic {
        /// Set when the identical runs stopped before their test finished (setup
        /// failed, infrastructure error, hung driver): that is not a pass.
        incomplete: Option<RunStatus>,
    },
    /// Two runs differ; names them and the first difference.
    Differs {
        first: String,
        other: String,
        difference: String,
    },
    Interrupted,
}

#[derive(Debug, Clone)]
pub struct CheckOutcome {
    pub runs: Vec<CheckedRun>,
    pub verdict: Verdict,
}

/// Runs `runs` times (at least 2) with the same options and compares them; stops at
/// the first difference.
pub fn check(
    opts: &RunOptions,
    runs: u32,
    observer: &mut dyn Observer,
    interrupt: &AtomicBool,
) -> Result<CheckOutcome, RunError> {
    let total = runs.max(2);
    let mut checked = Vec::new();
    let mut first: Option<(String, String, Vec<StoredEvent>, String)> = None;
    let mut incomplete = None;
    for n in 1..=total {
        observer.info(&format!("run {n} of {total}"));
        let result = run(opts, observer, interrupt)?;
        let report = &result.report;
        if report.status == RunStatus::Interrupted {
            return Ok(CheckOutcome {
                runs: checked,
                verdict: Verdict::Interrupted,
            });
        }
        let store =
            RunStore::open(&opts.home).map_err(|e| RunError::Infrastructure(e.to_string()))?;
        let events = store
            .events(&report.run, 0, u64::MAX)
            .map_err(|e| RunError::Infrastructure(e.to_string()))?;
        let id = report.run.clone();
        let trace = report.trace_hash.clone();
        let verdicts = serde_json::to_string(&report.properties).expect("serializes");
        checked.push(CheckedRun {
            run: id.clone(),
            status: report.status,
            message: report.message.clone(),
            trace_hash: trace.clone(),
            events: events.len(),
            report: report.clone(),
        });
        incomplete = incomplete.or(did_not_complete(report.status));
        match &first {
            None => first = Some((id, trace, events, verdicts)),
            Some((first_id, first_trace, first_events, first_verdicts)) => {
                let diff = first_difference(first_events, &events).or_else(|| {
                    (*first_verdicts != verdicts)
                        .then(|| "equal events but different property verdicts".to_string())
                });
                if diff.is_some() || *first_trace != trace {
                    return Ok(CheckOutcome {
                        runs: checked,
                        verdict: Verdict::Differs {
                            first: first_id.clone(),
                            other: id,
                            difference: diff.unwrap_or_else(|| {
                                format!("trace {first_trace} vs {trace} with equal events")
                            }),
                        },
                    });
                }
            }
        }
    }
    Ok(CheckOutcome {
        runs: checked,
        verdict: Verdict::Deterministic { incomplete },
    })
}

/// A status of a run that stopped before its test finished; `None` for one that ran
/// to its verdicts.
fn did_not_complete(status: RunStatus) -> Option<RunStatus> {
    matches!(
        status,
        RunStatus::SetupFailed | RunStatus::InfrastructureError | RunStatus::DriverHung
    )
    .then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(seq: u64, line: &str) -> StoredEvent {
        StoredEvent {
            seq,
            vtime_ns: seq * 1_000_000,
            node: "web".into(),
            kind: "console".into(),
            body: serde_json::json!({ "line": line }),
        }
    }

    #[test]
    fn names_the_first_differing_event() {
        let a = [e(0, "boot"), e(1, "x=1"), e(2, "end")];
        let b = [e(0, "boot"), e(1, "x=2"), e(2, "end")];
        let d = first_difference(&a, &b).unwrap();
        assert!(d.starts_with("event #1 at 0.001s on web"), "{d}");
        assert_eq!(first_difference(&a, &a), None);
        assert!(first_difference(&a, &a[..2]).unwrap().contains("3 events"));
    }

    #[test]
    fn only_runs_that_stopped_early_are_incomplete() {
        assert_eq!(did_not_complete(RunStatus::Passed), None);
        assert_eq!(did_not_complete(RunStatus::PropertiesFailed), None);
        assert_eq!(
            did_not_complete(RunStatus::InfrastructureError),
            Some(RunStatus::InfrastructureError)
        );
        assert_eq!(
            did_not_complete(RunStatus::SetupFailed),
            Some(RunStatus::SetupFailed)
        );
        assert_eq!(
            did_not_complete(RunStatus::DriverHung),
            Some(RunStatus::DriverHung)
        );
    }
}
