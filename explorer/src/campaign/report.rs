//! A campaign's report, built from what its rounds committed to the store, so a
//! finished, interrupted, killed or resumed campaign reports the same way
//! (`detvm explore` at its end, `detvm campaign show C` any time).

use std::collections::BTreeMap;

use super::findings::findings;
use super::state::CampaignState;
use super::store::CampaignStore;
use super::{CampaignReport, PropertySummary, Timeline};
use crate::moment::format_vtime;
use crate::properties::{Property, Status};
use crate::run::RunError;
use crate::store::StoredEvent;

/// How many log lines of the failing service a property's summary shows.
pub const LOG_LINES: usize = 10;

/// The report of campaign `id` as its store holds it now.
pub fn build(
    store: &CampaignStore,
    id: &str,
    compose: &str,
    seed: u64,
    state: &CampaignState,
    stopped: String,
) -> Result<CampaignReport, RunError> {
    let infra = |e: crate::store::StoreError| RunError::Infrastructure(e.to_string());
    let timelines = store.timelines(id).map_err(infra)?;
    let mut by_timeline: BTreeMap<u64, Vec<Property>> =
        store.properties(id).map_err(infra)?.into_iter().collect();
    let properties: Vec<Vec<Property>> = timelines
        .iter()
        .map(|t| by_timeline.remove(&t.id).unwrap_or_default())
        .collect();
    let mut summaries = summarize(id, &timelines, &properties);
    let first = first_failures(&timelines, &properties);
    for s in &mut summaries {
        if let Some((t, service, vtime)) = first.get(&s.id) {
            s.logs = logs(store, id, &timelines, *t, service, *vtime).map_err(infra)?;
        }
    }
    let previous = store.previous(id, &state.inputs_key).map_err(infra)?;
    let previous_props: Option<(String, Vec<PropertySummary>)> = previous.and_then(|c| {
        let props = c.report.as_ref()?.get("properties")?.clone();
        Some((c.id, serde_json::from_value(props).ok()?))
    });
    let found = findings(
        &summaries,
        previous_props
            .as_ref()
            .map(|(id, p)| (id.as_str(), p.as_slice())),
    );
    let wall_s = state.wall_ms as f64 / 1000.0;
    Ok(CampaignReport {
        campaign: id.to_string(),
        compose: compose.to_string(),
        seed,
        branches: state.next_branch - 1,
        properties: summaries,
        virtual_ns: state.virtual_ns,
        wall_ms: state.wall_ms,
        virtual_to_wall: state.virtual_ns as f64 / 1e9 / wall_s.max(0.001),
        coverage_keys: state.coverage.len(),
        snapshot_files: state.files.kept.len() as u64,
        snapshot_bytes: state.files.bytes(),
        snapshots_pruned: state.files.pruned,
        findings: found,
        timelines,
        stopped,
    })
}

/// Every property across the timelines: in how many it held or failed, its first
/// failing moment and up to three examples, earliest first.
pub fn summarize(
    campaign: &str,
    timelines: &[Timeline],
    properties: &[Vec<Property>],
) -> Vec<PropertySummary> {
    let mut by_id: BTreeMap<String, (PropertySummary, Vec<(u64, u64)>)> = BTreeMap::new();
    for (t, props) in timelines.iter().zip(properties) {
        for p in props {
            let (s, failing_at) = by_id.entry(p.id.clone()).or_insert_with(|| {
                (
                    PropertySummary {
                        id: p.id.clone(),
                        message: p.message.clone(),
                        kind: p.kind.clone(),
                        must_hit: p.must_hit,
                        passing: 0,
                        failing: 0,
                        first_failure: None,
                        examples: Vec::new(),
                        logs: Vec::new(),
                        status: Status::Passed,
                    },
                    Vec::new(),
                )
            });
            if t.failed.contains(&p.id) {
                s.failing += 1;
                s.status = Status::Failed;
                let at = failure_time(t, p);
                failing_at.push((at, owner(timelines, t, at)));
            } else if p.passes > 0 {
                s.passing += 1;
            }
        }
    }
    // A `sometimes` or `reachable` property no timeline reached, once some finished.
    let any_finished = timelines.iter().any(|t| t.finished);
    by_id
        .into_values()
        .map(|(mut s, mut failing_at)| {
            let unreached = s.must_hit && s.kind != "always" && s.kind != "detvm" && s.passing == 0;
            if any_finished && unreached && s.failing == 0 {
                s.status = Status::Failed;
            }
            failing_at.sort_unstable();
            failing_at.dedup();
            s.examples = failing_at
                .iter()
                .take(3)
                .map(|(at, t)| format!("{campaign}/T{t}@{}", format_vtime(*at)))
                .collect();
            s.first_failure = s.examples.first().cloned();
            s
        })
        .collect()
}

/// The timeline on `t`'s path whose own stretch holds `at`: a failure a branch
/// inherited from its parent happened in the parent (or further up).
fn owner(timelines: &[Timeline], t: &Timeline, at: u64) -> u64 {
    let mut cur = t;
    while at < cur.from_ns {
        match cur
            .parent
            .and_then(|p| timelines.iter().find(|x| x.id == p))
        {
            Some(parent) => cur = parent,
            None => break,
        }
    }
    cur.id
}

/// Where a failing property failed in a timeline: its first false report, else the
/// timeline's end (a verdict at the end of the run).
fn failure_time(t: &Timeline, p: &Property) -> u64 {
    p.first_failure.as_ref().map_or(t.end_ns, |f| f.vtime_ns)
}

/// For each failing property: the timeline, service and time of its earliest failure
/// with a known service.
fn first_failures(
    timelines: &[Timeline],
    properties: &[Vec<Property>],
) -> BTreeMap<String, (u64, String, u64)> {
    let mut first: BTreeMap<String, (u64, String, u64)> = BTreeMap::new();
    for (t, props) in timelines.iter().zip(properties) {
        for p in props.iter().filter(|p| t.failed.contains(&p.id)) {
            let Some(f) = &p.first_failure else { continue };
            let t = owner(timelines, t, f.vtime_ns);
            let better = first
                .get(&p.id)
                .is_none_or(|(bt, _, bv)| (f.vtime_ns, t) < (*bv, *bt));
            if better {
                first.insert(p.id.clone(), (t, f.service.clone(), f.vtime_ns));
            }
        }
    }
    first
}

/// The last [`LOG_LINES`] lines `service` wrote up to `vtime_ns` in timeline `t`,
/// reading back through its ancestors when the timeline itself has fewer.
fn logs(
    store: &CampaignStore,
    campaign: &str,
    timelines: &[Timeline],
    t: u64,
    service: &str,
    vtime_ns: u64,
) -> Result<Vec<String>, crate::store::StoreError> {
    let mut lines: Vec<String> = Vec::new();
    let mut at = Some(t);
    while let (Some(id), true) = (at, lines.len() < LOG_LINES) {
        let events = store.events(campaign, id)?;
        let mut own: Vec<String> = events
            .iter()
            .filter(|e| e.vtime_ns <= vtime_ns && e.node == service)
            .filter_map(line_of)
            .collect();
        own.append(&mut lines);
        lines = own;
        at = timelines.iter().find(|x| x.id == id).and_then(|x| x.parent);
    }
    let skip = lines.len().saturating_sub(LOG_LINES);
    Ok(lines.split_off(skip))
}

/// A log line in an event: the console, or a service's or command's output.
fn line_of(e: &StoredEvent) -> Option<String> {
    let line = match e.kind.as_str() {
        "console" => e.body["line"].as_str()?,
        "agent" => {
            let message = &e.body["message"];
            match message["type"].as_str()? {
                "output" | "exec_output" => message["line"].as_str()?,
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(format!("{} {}: {line}", format_vtime(e.vtime_ns), e.node))
}

/// `detvm campaign show C`: the stored report of a finished or interrupted campaign;
/// for one still running or killed, the report its last committed round gives.
pub fn stored(home: &std::path::Path, id: &str) -> Result<CampaignReport, RunError> {
    let infra = |e: crate::store::StoreError| RunError::Infrastructure(e.to_string());
    let store = CampaignStore::open(home).map_err(infra)?;
    let record = store.get(id).map_err(infra)?.ok_or_else(|| {
        RunError::Input(format!(
            "no campaign {id} in the store (see `detvm campaigns`)"
        ))
    })?;
    if record.status != "running" {
        if let Some(r) = record
            .report
            .clone()
            .and_then(|r| serde_json::from_value(r).ok())
        {
            return Ok(r);
        }
    }
    let state = store
        .state(id)
        .map_err(infra)?
        .ok_or_else(|| RunError::Input(format!("campaign {id} has no committed round yet")))?;
    build(
        &store,
        id,
        &record.compose,
        record.seed,
        &state,
        format!(
            "not finished ({}): as its last committed round left it; `detvm explore --resume {id}` goes on",
            record.status
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::properties::{Location, Sighting};

    fn timeline(id: u64, parent: Option<u64>, from_ns: u64, end_ns: u64) -> Timeline {
        Timeline {
            id,
            parent,
            from_ns,
            branch: parent.map(|_| id),
            end_ns,
            finished: false,
            judged_at_ns: None,
            score: 0.0,
            faults: String::new(),
            failed: vec!["p".into()],
            error: None,
        }
    }

    fn failing_at(vtime_ns: u64) -> Property {
        Property {
            id: "p".into(),
            message: "p holds".into(),
            kind: "always".into(),
            display_type: "Always".into(),
            must_hit: false,
            location: Location::default(),
            passes: 0,
            failures: 1,
            first_failure: Some(Sighting {
                service: "db".into(),
                vtime_ns,
                details: serde_json::Value::Null,
            }),
            first_pass: None,
            status: Status::Failed,
            reason: None,
        }
    }

    #[test]
    fn examples_name_the_timeline_a_failure_happened_in_earliest_first() {
        // T1 fails at 5; T2 and T3 inherit that failure from T1; T4 fails itself at 3.
        let timelines = vec![
            timeline(1, None, 0, 10),
            timeline(2, Some(1), 10, 20),
            timeline(3, Some(2), 20, 30),
            timeline(4, None, 0, 10),
        ];
        let props = vec![
            vec![failing_at(5)],
            vec![failing_at(5)],
            vec![failing_at(5)],
            vec![failing_at(3)],
        ];
        let s = summarize("c", &timelines, &props);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].failing, 4);
        assert_eq!(
            s[0].examples,
            vec!["c/T4@0.000000003s", "c/T1@0.000000005s"]
        );
        assert_eq!(s[0].first_failure.as_deref(), Some("c/T4@0.000000003s"));
        let first = first_failures(&timelines, &props);
        assert_eq!(first["p"], (4, "db".to_string(), 3));
    }
}
