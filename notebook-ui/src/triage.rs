//! The runs list and a run's triage: properties with pass/fail counts, the first
//! failure and example moments, and utilization (what the run spent its virtual time
//! and events on, per node).

use std::collections::BTreeMap;

use explorer::properties::{parse_sdk_line, AssertType, Property, SdkLine, Status};
use explorer::store::{RunRecord, RunStore};
use rusqlite::{params, Connection};
use serde::Serialize;
use serde_json::Value;

use crate::error::AppError;
use crate::events::moment_of;
use crate::timeline::Timeline;

#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    #[serde(flatten)]
    pub record: RunRecord,
    pub failed_properties: u64,
    pub properties: u64,
    pub snapshots: Vec<u64>,
}

pub fn runs(conn: &Connection, store: &RunStore) -> Result<Vec<RunRow>, AppError> {
    let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT run_id, SUM(status = 'failed'), COUNT(*) FROM properties GROUP BY run_id",
    )?;
    for row in stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })? {
        let (run, failed, all) = row?;
        counts.insert(run, (failed as u64, all as u64));
    }
    Ok(store
        .runs()?
        .into_iter()
        .map(|record| {
            let (failed, all) = counts.get(&record.id).copied().unwrap_or((0, 0));
            RunRow {
                snapshots: snapshot_times(store, &record.id),
                record,
                failed_properties: failed,
                properties: all,
            }
        })
        .collect())
}

pub fn snapshot_times(store: &RunStore, run: &str) -> Vec<u64> {
    explorer::run::snapshot_files(&store.run_dir(run))
        .into_iter()
        .map(|(t, _)| t)
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct Example {
    pub vtime_ns: u64,
    pub node: String,
    pub passed: bool,
    pub details: Value,
    pub moment: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PropertyRow {
    #[serde(flatten)]
    pub property: Property,
    /// `RUN@VTIME` of the first failure, if any.
    pub first_failure_moment: Option<String>,
    /// A few failing and passing reports, each a moment.
    pub examples: Vec<Example>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeUse {
    pub node: String,
    pub events: u64,
    pub messages: u64,
    pub log_lines: u64,
    pub state_changes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Utilization {
    pub start_ns: u64,
    pub end_ns: u64,
    pub events: u64,
    pub nodes: Vec<NodeUse>,
}

/// How many example reports of each outcome a property shows.
const EXAMPLES: usize = 3;

pub fn properties(
    conn: &Connection,
    store: &RunStore,
    timeline: &Timeline,
) -> Result<Vec<PropertyRow>, AppError> {
    let props = store.properties(&timeline.run)?;
    let mut examples: BTreeMap<String, Vec<Example>> = BTreeMap::new();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT vtime_ns, node, body FROM {} WHERE run_id = ?1 AND kind = 'agent'
           AND body LIKE '%antithesis_assert%' ORDER BY seq",
        timeline.table()
    ))?;
    let rows = stmt.query_map(params![timeline.id], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (t, node, body) = row?;
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let line = body
            .pointer("/message/line")
            .and_then(|l| l.as_str())
            .unwrap_or("");
        let Ok(SdkLine::Assert(a)) = parse_sdk_line(line) else {
            continue;
        };
        if !a.hit {
            continue;
        }
        let passed = match a.assert_type {
            AssertType::Always => a.condition,
            _ => true,
        };
        let list = examples.entry(a.id.clone()).or_default();
        if list.iter().filter(|e| e.passed == passed).count() < EXAMPLES {
            list.push(Example {
                vtime_ns: t,
                node,
                passed,
                details: a.details.clone(),
                moment: moment_of(&timeline.id, t),
            });
        }
    }
    let mut rows: Vec<PropertyRow> = props
        .into_iter()
        .map(|p| PropertyRow {
            first_failure_moment: p
                .first_failure
                .as_ref()
                .map(|s| moment_of(&timeline.id, s.vtime_ns)),
            examples: examples.remove(&p.id).unwrap_or_default(),
            property: p,
        })
        .collect();
    // Failures first, then by name.
    rows.sort_by_key(|r| {
        (
            r.property.status != Status::Failed,
            r.property.message.clone(),
        )
    });
    Ok(rows)
}

pub fn utilization(
    conn: &Connection,
    timeline: &Timeline,
    end_ns: u64,
) -> Result<Utilization, AppError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT node, COUNT(*), SUM(kind = 'frame'),
                SUM(kind = 'console' OR (kind = 'agent' AND body LIKE '%output%')),
                SUM(kind = 'state'), MIN(seq)
         FROM {} WHERE run_id = ?1 GROUP BY node ORDER BY MIN(seq)",
        timeline.table()
    ))?;
    let nodes: Vec<NodeUse> = stmt
        .query_map(params![timeline.id], |r| {
            Ok(NodeUse {
                node: r.get(0)?,
                events: r.get::<_, i64>(1)? as u64,
                messages: r.get::<_, i64>(2)? as u64,
                log_lines: r.get::<_, i64>(3)? as u64,
                state_changes: r.get::<_, i64>(4)? as u64,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Utilization {
        start_ns: timeline.start_ns(),
        end_ns,
        events: nodes.iter().map(|n| n.events).sum(),
        nodes,
    })
}
