//! How a run's report looks in a terminal (the properties table) and in CI (JUnit XML).

use explorer::moment::format_vtime;
use explorer::properties::Status;
use explorer::report::RunReport;

/// The properties table, failing moments and the reproduce command.
pub fn summary(report: &RunReport) -> String {
    let mut out = String::new();
    let width = report
        .properties
        .iter()
        .map(|p| p.message.chars().count())
        .max()
        .unwrap_or(8)
        .clamp(8, 60);
    out.push_str(&format!(
        "{:<6}  {:<12}  {:<width$}  {:>6}  {:>6}  FIRST FAILURE\n",
        "STATUS", "KIND", "PROPERTY", "PASS", "FAIL"
    ));
    for p in &report.properties {
        let status = match p.status {
            Status::Passed => "pass",
            Status::Failed => "FAIL",
        };
        // A passing property may have false reports (a `sometimes` that was false at
        // first): not failures, so not shown as one.
        let first = match (p.status, &p.first_failure, &p.reason) {
            (Status::Passed, _, _) => String::new(),
            (_, Some(f), _) => format!("{} on {}", report.moment(f.vtime_ns), f.service),
            (_, None, Some(reason)) => reason.clone(),
            (_, None, None) => String::new(),
        };
        let name: String = p.message.chars().take(60).collect();
        out.push_str(&format!(
            "{status:<6}  {:<12}  {name:<width$}  {:>6}  {:>6}  {first}\n",
            p.kind, p.passes, p.failures
        ));
    }
    let ran: u64 = report
        .commands
        .iter()
        .map(|c| c.succeeded + c.failed + c.ended_by_fault)
        .sum();
    if ran > 0 {
        let sum = |f: fn(&explorer::run::CommandTally) -> u64| -> u64 {
            report.commands.iter().map(f).sum()
        };
        out.push_str(&format!(
            "\ntest commands: {ran} ran: {} succeeded, {} failed, {} ended by a fault\n",
            sum(|c| c.succeeded),
            sum(|c| c.failed),
            sum(|c| c.ended_by_fault)
        ));
    }
    let failed = report.failed().count();
    out.push_str(&format!(
        "\nrun {}: {} — {} of {} properties failed; virtual time {}; trace {}\n",
        report.run,
        report.status.as_str(),
        failed,
        report.properties.len(),
        format_vtime(report.vtime_end_ns),
        report.trace_hash
    ));
    for p in report.failed() {
        if let Some(f) = &p.first_failure {
            out.push_str(&format!(
                "  {}: {} ({}) — details {}\n",
                report.moment(f.vtime_ns),
                p.message,
                p.reason.as_deref().unwrap_or("failed"),
                f.details
            ));
        }
    }
    if let Some(m) = &report.message {
        out.push_str(&format!("  {m}\n"));
    }
    out.push_str(&format!("reproduce: {}\n", report.reproduce));
    out
}

/// JUnit XML: one test suite for the run, one test case per property.
pub fn junit(report: &RunReport) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new(format!("detvm {}", report.compose));
    suite.add_property(("run", report.run.as_str()));
    suite.add_property(("seed", report.seed.to_string().as_str()));
    suite.add_property(("trace_hash", report.trace_hash.as_str()));
    suite.add_property(("reproduce", report.reproduce.as_str()));
    for p in &report.properties {
        let status = match p.status {
            Status::Passed => TestCaseStatus::success(),
            Status::Failed => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let at = p
                    .first_failure
                    .as_ref()
                    .map(|f| format!(" at {} on {}", report.moment(f.vtime_ns), f.service))
                    .unwrap_or_default();
                s.set_message(format!("{}{at}", p.reason.as_deref().unwrap_or("failed")));
                if let Some(f) = &p.first_failure {
                    s.set_description(f.details.to_string());
                }
                s
            }
        };
        let mut case = TestCase::new(p.message.as_str(), status);
        case.set_classname(format!("{}.{}", p.kind, p.location.file));
        case.set_assertions((p.passes + p.failures) as usize);
        suite.add_test_case(case);
    }
    if let Some(m) = &report.message {
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
        s.set_message(m.as_str());
        suite.add_test_case(TestCase::new(format!("run {}", report.status.as_str()), s));
    }
    let mut junit = Report::new("detvm");
    junit.add_test_suite(suite);
    junit
        .to_string()
        .expect("JUnit serialization of plain strings")
}

#[cfg(test)]
mod tests {
    use super::*;
    use explorer::properties::PropertyBook;
    use explorer::store::RunStatus;

    fn report() -> RunReport {
        let mut book = PropertyBook::new();
        book.declare_builtin("detvm: setup completed", "setup completed");
        book.fail_builtin(
            "detvm: no service crashed",
            "bank",
            12_500_000_000,
            "bank exited with code 101",
        );
        RunReport {
            run: "r00ab".into(),
            compose: "examples/bank/docker-compose.yaml".into(),
            seed: 3,
            status: RunStatus::PropertiesFailed,
            vtime_end_ns: 60_000_000_000,
            trace_hash: "0123456789abcdef".into(),
            reproduce: "detvm run examples/bank/docker-compose.yaml --seed 3 --duration 1m".into(),
            properties: book.properties(),
            commands: vec![],
            warnings: vec![],
            message: None,
        }
    }

    #[test]
    fn summary_names_the_failing_moment_and_the_reproduce_command() {
        let text = summary(&report());
        assert!(text.contains("FAIL"), "{text}");
        assert!(text.contains("r00ab@12.5s on bank"), "{text}");
        assert!(text.contains("1 of 2 properties failed"), "{text}");
        assert!(
            text.contains("reproduce: detvm run examples/bank"),
            "{text}"
        );
    }

    #[test]
    fn a_passing_property_shows_no_failure_moment() {
        let mut r = report();
        let mut sometimes = r.failed().next().unwrap().clone();
        sometimes.message = "sometimes a void succeeds".into();
        sometimes.kind = "sometimes".into();
        sometimes.status = Status::Passed;
        sometimes.reason = None;
        sometimes.first_failure.as_mut().unwrap().vtime_ns = 7_000_000_000;
        r.properties.push(sometimes);
        let text = summary(&r);
        let line = text
            .lines()
            .find(|l| l.contains("sometimes a void succeeds"))
            .unwrap();
        assert!(
            line.starts_with("pass") && !line.contains("r00ab@7s"),
            "{text}"
        );
    }

    #[test]
    fn junit_has_one_case_per_property_and_the_failure() {
        let xml = junit(&report());
        assert!(xml.contains("tests=\"2\""), "{xml}");
        assert!(xml.contains("failures=\"1\""), "{xml}");
        assert!(
            xml.contains("bank exited with code 101 at r00ab@12.5s on bank"),
            "{xml}"
        );
    }

    #[test]
    fn json_round_trips() {
        let r = report();
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<RunReport>(&text).unwrap(), r);
    }
}
