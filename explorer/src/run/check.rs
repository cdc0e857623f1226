//! `detvm check`: the same run several times; every trace hash and event must agree.

use std::sync::atomic::AtomicBool;

use super::{exit, run, RunError, RunOptions};
use crate::moment::format_vtime;
use crate::store::{RunStore, StoredEvent};

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

/// Runs `runs` times; returns the exit code and prints the verdict.
pub fn check(opts: &RunOptions, runs: u32, interrupt: &AtomicBool) -> Result<u8, RunError> {
    let mut first: Option<(String, String, Vec<StoredEvent>, String)> = None;
    let mut incomplete = None;
    for n in 1..=runs.max(2) {
        eprintln!("detvm check: run {n} of {}", runs.max(2));
        let result = run(opts, interrupt)?;
        if result.exit == exit::INTERRUPTED {
            return Ok(exit::INTERRUPTED);
        }
        let store =
            RunStore::open(&opts.home).map_err(|e| RunError::Infrastructure(e.to_string()))?;
        let events = store
            .events(&result.report.run, 0, u64::MAX)
            .map_err(|e| RunError::Infrastructure(e.to_string()))?;
        let id = result.report.run.clone();
        let trace = result.report.trace_hash.clone();
        let verdicts = serde_json::to_string(&result.report.properties).expect("serializes");
        let why = result
            .report
            .message
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        println!(
            "run {id}: {}{why} — trace {trace}, {} events",
            result.report.status.as_str(),
            events.len()
        );
        incomplete = incomplete.or(run_did_not_complete(result.exit));
        match &first {
            None => first = Some((id, trace, events, verdicts)),
            Some((first_id, first_trace, first_events, first_verdicts)) => {
                let diff = first_difference(first_events, &events).or_else(|| {
                    (*first_verdicts != verdicts)
                        .then(|| "equal events but different property verdicts".to_string())
                });
                if diff.is_some() || *first_trace != trace {
                    println!(
                        "NOT DETERMINISTIC: runs {first_id} and {id} differ: {}",
                        diff.unwrap_or_else(|| format!(
                            "trace {first_trace} vs {trace} with equal events"
                        ))
                    );
                    return Ok(exit::NOT_DETERMINISTIC);
                }
            }
        }
    }
    println!(
        "deterministic: {} runs, one trace hash, one event stream, the same properties",
        runs.max(2)
    );
    // Identical runs that never got to test anything are not a pass.
    Ok(incomplete.unwrap_or(exit::PASSED))
}

/// The exit code of a run that stopped before its test finished (setup failed, an
/// infrastructure error, a hung driver); `None` for one that ran to its verdicts.
fn run_did_not_complete(code: u8) -> Option<u8> {
    [exit::SETUP_FAILED, exit::INFRASTRUCTURE, exit::DRIVER_HUNG]
        .contains(&code)
        .then_some(code)
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
    fn only_runs_that_stopped_early_change_the_exit_code() {
        assert_eq!(run_did_not_complete(exit::PASSED), None);
        assert_eq!(run_did_not_complete(exit::PROPERTIES_FAILED), None);
        assert_eq!(
            run_did_not_complete(exit::INFRASTRUCTURE),
            Some(exit::INFRASTRUCTURE)
        );
        assert_eq!(run_did_not_complete(exit::SETUP_FAILED), Some(2));
        assert_eq!(run_did_not_complete(exit::DRIVER_HUNG), Some(5));
    }
}
