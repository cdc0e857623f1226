//! What a branch produced that no timeline produced before. Each thing a branch can do is
//! turned into a key in one of a few categories; a key never seen in the campaign is
//! novel, and a branch's score is the weighted count of its novel keys. The weights are
//! data ([`Weights`], documented in docs/explore.md), not constants in the loop.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::properties::Property;
use crate::store::StoredEvent;

/// What each kind of novelty is worth. Chosen once, by the reasoning in
/// docs/explore.md, not tuned on any example: failures and first property outcomes
/// matter most, new states of the whole system next, new log lines least (they are many).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Weights {
    /// A property seen failing, or a `sometimes`/`reachable` first seen true.
    pub property_outcome: f64,
    /// A new log-line template (numbers and hashes masked) of one service.
    pub log_template: f64,
    /// A new SDK assertion `details` bucket (its keys and masked values).
    pub sdk_details: f64,
    /// A new combination of node states and active fault kinds.
    pub state_combination: f64,
    /// A service exit (code or signal) not seen before.
    pub service_exit: f64,
    /// A test command ending a way it never ended before.
    pub command_outcome: f64,
    /// The share of branches judged after their horizon (their drivers ended there,
    /// `eventually_`/`finally_` commands run, end-of-run verdicts taken), on a
    /// continuation of the branch past its saved end. Not a score: it decides how
    /// often properties judged only at a run's end are checked (docs/explore.md).
    #[serde(default = "judge_every_branch")]
    pub judge_share: f64,
}

fn judge_every_branch() -> f64 {
    1.0
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            property_outcome: 10.0,
            log_template: 1.0,
            sdk_details: 2.0,
            state_combination: 3.0,
            service_exit: 5.0,
            command_outcome: 3.0,
            judge_share: judge_every_branch(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    PropertyOutcome,
    LogTemplate,
    SdkDetails,
    StateCombination,
    ServiceExit,
    CommandOutcome,
}

impl Weights {
    pub fn of(&self, c: Category) -> f64 {
        match c {
            Category::PropertyOutcome => self.property_outcome,
            Category::LogTemplate => self.log_template,
            Category::SdkDetails => self.sdk_details,
            Category::StateCombination => self.state_combination,
            Category::ServiceExit => self.service_exit,
            Category::CommandOutcome => self.command_outcome,
        }
    }
}

/// Everything one branch did, as keys. Serde: only the keys travel (the rest is the
/// bookkeeping of a branch still running).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Observed {
    pub keys: BTreeSet<(Category, String)>,
    /// Node states and active faults, to key their combinations as events arrive.
    #[serde(skip)]
    nodes: BTreeMap<String, String>,
    #[serde(skip)]
    faults: BTreeMap<String, u32>,
}

/// Numbers, hex runs and other digit-bearing tokens become `#`, so "wrote key 17 at
/// 0x3fa2" and "wrote key 90 at 0x11bc" are one template.
pub fn template(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if token.chars().any(|c| c.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in line.chars() {
        if c.is_ascii_alphanumeric() {
            token.push(c);
        } else {
            flush(&mut token, &mut out);
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out.chars().take(160).collect()
}

impl Observed {
    /// Starts from the node states the branch's parent ended with.
    pub fn new(nodes: BTreeMap<String, String>) -> Observed {
        Observed {
            nodes,
            ..Observed::default()
        }
    }

    fn add(&mut self, c: Category, key: String) {
        self.keys.insert((c, key));
    }

    pub fn event(&mut self, e: &StoredEvent) {
        let _time = super::timing::timer(super::timing::Phase::Score);
        let body = &e.body;
        match e.kind.as_str() {
            "console" => {
                if let Some(line) = body["line"].as_str() {
                    self.add(
                        Category::LogTemplate,
                        format!("{}: {}", e.node, template(line)),
                    );
                }
            }
            "agent" => self.agent(&e.node, &body["message"]),
            "state" => {
                let change = body["state"]["change"].as_str().unwrap_or("?").to_string();
                self.nodes.insert(e.node.clone(), change);
                self.combination();
            }
            "fault_applied" | "fault_healed" => {
                let kind = body["fault"]["type"].as_str().unwrap_or("?").to_string();
                let count = self.faults.entry(kind.clone()).or_default();
                if e.kind == "fault_applied" {
                    *count += 1;
                } else {
                    *count = count.saturating_sub(1);
                }
                if *count == 0 {
                    self.faults.remove(&kind);
                }
                self.combination();
            }
            "command_ended" => {
                let command = body["command"].as_str().unwrap_or("?");
                let outcome = body["outcome"].as_str().unwrap_or("?");
                self.add(
                    Category::CommandOutcome,
                    format!("{command} on {}: {outcome}", e.node),
                );
            }
            _ => {}
        }
    }

    /// An agent message as the event stores it: internally tagged by `type`
    /// (`{"type":"output","line":…}`, see `detvm_protocol::message::AgentMessage`).
    fn agent(&mut self, node: &str, message: &serde_json::Value) {
        match message["type"].as_str().unwrap_or("") {
            "output" | "exec_output" => {
                if let Some(line) = message["line"].as_str() {
                    self.add(Category::LogTemplate, format!("{node}: {}", template(line)));
                }
            }
            "exited" => self.add(
                Category::ServiceExit,
                format!(
                    "{node}: code {} signal {}",
                    message["code"], message["signal"]
                ),
            ),
            "sdk" => {
                let line = message["line"].as_str().unwrap_or("");
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    let a = &v["antithesis_assert"];
                    if let Some(id) = a["id"].as_str() {
                        let details = template(&a["details"].to_string());
                        self.add(Category::SdkDetails, format!("{id}: {details}"));
                    }
                }
            }
            _ => {}
        }
    }

    fn combination(&mut self) {
        let nodes: Vec<String> = self.nodes.iter().map(|(n, s)| format!("{n}={s}")).collect();
        let faults: Vec<&str> = self.faults.keys().map(String::as_str).collect();
        self.add(
            Category::StateCombination,
            format!("{} | {}", nodes.join(","), faults.join(",")),
        );
    }

    /// Property outcomes of the timeline so far: failures and first passes.
    pub fn properties(&mut self, properties: &[Property]) {
        for p in properties {
            if p.first_failure.is_some() {
                self.add(Category::PropertyOutcome, format!("{} failed", p.id));
            }
            if p.passes > 0 && p.kind != "always" {
                self.add(Category::PropertyOutcome, format!("{} true", p.id));
            }
        }
    }
}

/// Everything the campaign has seen (serde: part of a campaign's saved state).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    seen: BTreeSet<(Category, String)>,
}

impl Coverage {
    /// Adds what a branch observed; returns its score (weighted new keys) and how many
    /// keys were new in each category.
    pub fn merge(
        &mut self,
        observed: &Observed,
        weights: &Weights,
    ) -> (f64, BTreeMap<Category, u32>) {
        let _time = super::timing::timer(super::timing::Phase::Score);
        let mut score = 0.0;
        let mut new = BTreeMap::new();
        for key in &observed.keys {
            if self.seen.insert(key.clone()) {
                score += weights.of(key.0);
                *new.entry(key.0).or_insert(0) += 1;
            }
        }
        (score, new)
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_mask_numbers_and_hashes() {
        assert_eq!(
            template("wrote key 17 at 0x3fa2 (r9f3a)"),
            template("wrote key 90 at 0x11bc (r0000)")
        );
        assert_eq!(template("leader elected"), "leader elected");
        assert_ne!(template("leader elected"), template("leader lost"));
    }

    fn agent_event(node: &str, message: serde_json::Value) -> StoredEvent {
        StoredEvent {
            seq: 0,
            vtime_ns: 0,
            node: node.into(),
            kind: "agent".into(),
            body: serde_json::json!({ "type": "agent", "message": message }),
        }
    }

    #[test]
    fn agent_messages_become_keys() {
        let mut o = Observed::default();
        o.event(&agent_event(
            "kv",
            serde_json::json!({"type": "output", "stream": "stdout", "line": "listening on 7000"}),
        ));
        o.event(&agent_event(
            "kv",
            serde_json::json!({"type": "exited", "code": 1, "signal": null}),
        ));
        let sdk = r#"{"antithesis_assert":{"id":"x","details":{"key":"k17"}}}"#;
        o.event(&agent_event(
            "driver",
            serde_json::json!({"type": "sdk", "exec": 3, "line": sdk}),
        ));
        let keys: Vec<(Category, &str)> = o.keys.iter().map(|(c, k)| (*c, k.as_str())).collect();
        assert_eq!(
            keys,
            vec![
                (Category::LogTemplate, "kv: listening on #"),
                (Category::SdkDetails, "x: {\"key\":\"#\"}"),
                (Category::ServiceExit, "kv: code 1 signal null"),
            ]
        );
    }

    #[test]
    fn only_new_keys_score() {
        let weights = Weights::default();
        let mut coverage = Coverage::default();
        let mut a = Observed::default();
        a.add(Category::LogTemplate, "x: hello #".into());
        a.add(Category::ServiceExit, "x: code 1".into());
        let (score, new) = coverage.merge(&a, &weights);
        assert_eq!(score, weights.log_template + weights.service_exit);
        assert_eq!(new[&Category::ServiceExit], 1);
        let (again, _) = coverage.merge(&a, &weights);
        assert_eq!(again, 0.0);
        assert_eq!(coverage.len(), 2);
    }
}
