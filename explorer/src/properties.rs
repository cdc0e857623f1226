//! Properties of a run: every assertion an Antithesis SDK declared or hit, plus
//! detvm's own, each with pass/fail, hit counts and the first failing moment.
//!
//! The SDKs write one JSON object per line to `$ANTITHESIS_SDK_LOCAL_OUTPUT`; the
//! guest agent forwards those lines unchanged. An SDK reports an assertion once when
//! a program starts (a catalog entry, `hit: false`), then only the first pass and the
//! first failure per process, so the counts here are reports, not evaluations.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `assert_type` in an `antithesis_assert` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssertType {
    Always,
    Sometimes,
    Reachability,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Location {
    #[serde(default)]
    pub class: String,
    #[serde(default)]
    pub function: String,
    #[serde(default)]
    pub file: String,
    #[serde(default)]
    pub begin_line: u64,
    #[serde(default)]
    pub begin_column: u64,
}

/// The body of an `antithesis_assert` line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assertion {
    pub assert_type: AssertType,
    #[serde(default)]
    pub display_type: String,
    pub condition: bool,
    pub message: String,
    #[serde(default)]
    pub location: Location,
    pub hit: bool,
    pub must_hit: bool,
    pub id: String,
    #[serde(default)]
    pub details: serde_json::Value,
}

/// One SDK output line, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum SdkLine {
    Assert(Assertion),
    /// `antithesis_setup`: the system is ready for the test to begin.
    SetupComplete {
        details: serde_json::Value,
    },
    /// `antithesis_sdk`: which SDK and version wrote the file.
    SdkInfo(serde_json::Value),
    /// `antithesis_guidance` and other Antithesis-internal lines: kept as events only.
    Guidance(serde_json::Value),
    /// `send_event(name, details)` from the program under test.
    Custom {
        name: String,
        details: serde_json::Value,
    },
}

/// Classifies one forwarded SDK line. A line that is not one JSON object with one key
/// is an error the caller records as an event; it never stops the run.
pub fn parse_sdk_line(line: &str) -> Result<SdkLine, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err(format!("not a JSON object: {line}"));
    };
    if map.len() != 1 {
        return Err(format!("expected one key, found {}: {line}", map.len()));
    }
    let (key, body) = map.into_iter().next().expect("one key");
    Ok(match key.as_str() {
        "antithesis_assert" => SdkLine::Assert(
            serde_json::from_value(body).map_err(|e| format!("bad antithesis_assert ({e})"))?,
        ),
        "antithesis_setup" => SdkLine::SetupComplete {
            details: body.get("details").cloned().unwrap_or_default(),
        },
        "antithesis_sdk" => SdkLine::SdkInfo(body),
        "antithesis_guidance" => SdkLine::Guidance(body),
        _ => SdkLine::Custom {
            name: key,
            details: body,
        },
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
}

/// Where and when something happened: a service at a virtual time (nanoseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sighting {
    pub service: String,
    pub vtime_ns: u64,
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Property {
    pub id: String,
    pub message: String,
    /// `always`, `sometimes`, `reachability`, or `detvm` for built-in properties.
    pub kind: String,
    pub display_type: String,
    pub must_hit: bool,
    pub location: Location,
    pub passes: u64,
    pub failures: u64,
    pub first_failure: Option<Sighting>,
    pub first_pass: Option<Sighting>,
    pub status: Status,
    /// Why it failed, in words, when it did.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tally {
    kind: String,
    message: String,
    display_type: String,
    must_hit: bool,
    location: Location,
    passes: u64,
    failures: u64,
    first_failure: Option<Sighting>,
    first_pass: Option<Sighting>,
    assert_type: Option<AssertType>,
    /// For built-ins: failure decided by detvm directly.
    forced_reason: Option<String>,
}

/// Collects assertion reports in event order and decides each property at the end.
/// Serde: it is part of a run's snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PropertyBook {
    tallies: BTreeMap<String, Tally>,
}

impl PropertyBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one `antithesis_assert` line seen from `service` at `vtime_ns`.
    pub fn record(&mut self, a: &Assertion, service: &str, vtime_ns: u64) {
        let tally = self.tallies.entry(a.id.clone()).or_insert_with(|| Tally {
            kind: kind_name(a.assert_type).to_string(),
            message: a.message.clone(),
            display_type: a.display_type.clone(),
            must_hit: a.must_hit,
            location: a.location.clone(),
            passes: 0,
            failures: 0,
            first_failure: None,
            first_pass: None,
            assert_type: Some(a.assert_type),
            forced_reason: None,
        });
        if !a.hit {
            return; // a catalog declaration: known, not evaluated
        }
        let sighting = || Sighting {
            service: service.to_string(),
            vtime_ns,
            details: a.details.clone(),
        };
        if a.condition {
            tally.passes += 1;
            tally.first_pass.get_or_insert_with(sighting);
        } else {
            tally.failures += 1;
            tally.first_failure.get_or_insert_with(sighting);
        }
    }

    /// A detvm property that holds unless [`PropertyBook::fail_builtin`] says otherwise.
    pub fn declare_builtin(&mut self, id: &str, message: &str) {
        self.tallies.entry(id.to_string()).or_insert_with(|| Tally {
            kind: "detvm".into(),
            message: message.into(),
            display_type: "Always".into(),
            must_hit: false,
            location: Location::default(),
            passes: 0,
            failures: 0,
            first_failure: None,
            first_pass: None,
            assert_type: None,
            forced_reason: None,
        });
    }

    /// Marks a built-in property failed at a moment; the first failure is kept.
    pub fn fail_builtin(&mut self, id: &str, service: &str, vtime_ns: u64, reason: &str) {
        self.declare_builtin(id, id);
        let tally = self.tallies.get_mut(id).expect("declared");
        tally.failures += 1;
        tally.first_failure.get_or_insert_with(|| Sighting {
            service: service.to_string(),
            vtime_ns,
            details: serde_json::json!({ "reason": reason }),
        });
        tally
            .forced_reason
            .get_or_insert_with(|| reason.to_string());
    }

    /// Every property with its verdict, sorted by id.
    pub fn properties(&self) -> Vec<Property> {
        self.tallies
            .iter()
            .map(|(id, t)| {
                let reason = verdict(t);
                Property {
                    id: id.clone(),
                    message: t.message.clone(),
                    kind: t.kind.clone(),
                    display_type: t.display_type.clone(),
                    must_hit: t.must_hit,
                    location: t.location.clone(),
                    passes: t.passes,
                    failures: t.failures,
                    first_failure: t.first_failure.clone(),
                    first_pass: t.first_pass.clone(),
                    status: if reason.is_some() {
                        Status::Failed
                    } else {
                        Status::Passed
                    },
                    reason,
                }
            })
            .collect()
    }
}

fn kind_name(t: AssertType) -> &'static str {
    match t {
        AssertType::Always => "always",
        AssertType::Sometimes => "sometimes",
        AssertType::Reachability => "reachability",
    }
}

/// The Antithesis rules: `always`/`reachability` fail on any false report, and when
/// `must_hit` was never reached; `sometimes` passes only if some report was true.
fn verdict(t: &Tally) -> Option<String> {
    if let Some(reason) = &t.forced_reason {
        return Some(reason.clone());
    }
    let hits = t.passes + t.failures;
    match t.assert_type {
        None => None,
        Some(AssertType::Always | AssertType::Reachability) => {
            if t.failures > 0 {
                Some(match t.assert_type {
                    Some(AssertType::Reachability) => "reached, but must never be".to_string(),
                    _ => format!("false {} time(s)", t.failures),
                })
            } else if t.must_hit && hits == 0 {
                Some("never reached".to_string())
            } else {
                None
            }
        }
        Some(AssertType::Sometimes) => {
            if t.passes > 0 {
                None
            } else if hits == 0 {
                Some("never reached".to_string())
            } else {
                Some("reached, but never true".to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(
        assert_type: &str,
        display: &str,
        id: &str,
        cond: bool,
        hit: bool,
        must_hit: bool,
    ) -> String {
        serde_json::json!({"antithesis_assert": {
            "assert_type": assert_type, "display_type": display, "condition": cond,
            "message": id, "location": {"class": "c", "function": "f", "file": "src/main.rs",
            "begin_line": 7, "begin_column": 5}, "hit": hit, "must_hit": must_hit, "id": id,
            "details": {"x": 1}}})
        .to_string()
    }

    fn book(lines: &[String]) -> Vec<Property> {
        let mut b = PropertyBook::new();
        for (i, l) in lines.iter().enumerate() {
            match parse_sdk_line(l).unwrap() {
                SdkLine::Assert(a) => b.record(&a, "driver", i as u64 * 10),
                other => panic!("{other:?}"),
            }
        }
        b.properties()
    }

    #[test]
    fn always_fails_on_a_false_report_and_keeps_the_first_moment() {
        let p = book(&[
            line("always", "Always", "balance", true, false, true),
            line("always", "Always", "balance", true, true, true),
            line("always", "Always", "balance", false, true, true),
            line("always", "Always", "balance", false, true, true),
        ]);
        assert_eq!(p[0].status, Status::Failed);
        assert_eq!((p[0].passes, p[0].failures), (1, 2));
        assert_eq!(p[0].first_failure.as_ref().unwrap().vtime_ns, 20);
        assert_eq!(p[0].location.begin_line, 7);
    }

    #[test]
    fn declared_but_never_reached() {
        let p = book(&[
            line("always", "Always", "a", true, false, true),
            line("always", "AlwaysOrUnreachable", "b", true, false, false),
            line("sometimes", "Sometimes", "c", true, false, true),
            line("reachability", "Unreachable", "d", false, false, false),
            line("reachability", "Reachable", "e", true, false, true),
        ]);
        let status: Vec<_> = p.iter().map(|p| (p.id.as_str(), p.status)).collect();
        assert_eq!(
            status,
            [
                ("a", Status::Failed),
                ("b", Status::Passed),
                ("c", Status::Failed),
                ("d", Status::Passed),
                ("e", Status::Failed)
            ]
        );
        assert_eq!(p[0].reason.as_deref(), Some("never reached"));
    }

    #[test]
    fn sometimes_needs_one_true_report() {
        let p = book(&[
            line("sometimes", "Sometimes", "s", false, true, true),
            line("sometimes", "Sometimes", "t", false, true, true),
            line("sometimes", "Sometimes", "s", true, true, true),
        ]);
        assert_eq!(p[0].status, Status::Passed);
        assert_eq!(p[1].status, Status::Failed);
        assert_eq!(p[1].reason.as_deref(), Some("reached, but never true"));
    }

    #[test]
    fn unreachable_fails_when_reached() {
        let p = book(&[line("reachability", "Unreachable", "u", false, true, false)]);
        assert_eq!(p[0].status, Status::Failed);
    }

    #[test]
    fn builtins_pass_until_failed() {
        let mut b = PropertyBook::new();
        b.declare_builtin("detvm: no service crashed", "no service crashed");
        assert_eq!(b.properties()[0].status, Status::Passed);
        b.fail_builtin(
            "detvm: no service crashed",
            "web",
            5,
            "web exited with code 1",
        );
        b.fail_builtin("detvm: no service crashed", "db", 9, "db killed");
        let p = &b.properties()[0];
        assert_eq!(p.status, Status::Failed);
        assert_eq!(p.first_failure.as_ref().unwrap().service, "web");
        assert_eq!(p.reason.as_deref(), Some("web exited with code 1"));
    }

    #[test]
    fn other_lines_are_classified_and_garbage_is_an_error() {
        assert!(matches!(
            parse_sdk_line(r#"{"antithesis_setup": {"status": "complete", "details": {"a": 1}}}"#),
            Ok(SdkLine::SetupComplete { .. })
        ));
        assert!(matches!(
            parse_sdk_line(r#"{"antithesis_sdk": {"sdk_version": "0.2"}}"#),
            Ok(SdkLine::SdkInfo(_))
        ));
        assert!(matches!(
            parse_sdk_line(r#"{"transfer": {"amount": 3}}"#),
            Ok(SdkLine::Custom { name, .. }) if name == "transfer"
        ));
        assert!(parse_sdk_line("{not json").is_err());
        assert!(parse_sdk_line("[1]").is_err());
        assert!(parse_sdk_line(r#"{"a": 1, "b": 2}"#).is_err());
        assert!(parse_sdk_line(r#"{"antithesis_assert": {"id": 3}}"#).is_err());
    }
}
