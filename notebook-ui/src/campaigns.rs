//! Campaigns as the notebook shows them: the list, one campaign's tree of timelines
//! with its properties and findings, and what is new since a timeline id (for the live
//! page). Read with the notebook's own queries on the campaign store's tables
//! (`campaigns`, `timelines`), so listing never parses every timeline of every campaign.

use explorer::campaign::Timeline;
use explorer::moment::format_vtime;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::AppError;
use crate::timeline::{campaign_timeline_status, check_campaign};

/// One campaign in the list.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignRow {
    pub id: String,
    pub compose: String,
    pub seed: u64,
    pub started_at: String,
    /// `running`, `passed` or `failed`.
    pub status: String,
    pub timelines: u64,
    /// Timelines other than the root.
    pub branches: u64,
    /// Timelines in which some property failed.
    pub failing_timelines: u64,
    /// Properties the finished campaign judged failed (empty while it runs).
    pub failed_properties: Vec<String>,
    /// Why it stopped (the report's), once finished.
    pub stopped: Option<String>,
}

fn failed_properties(report: &Value) -> Vec<String> {
    report["properties"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["status"] == "failed")
        .filter_map(|p| p["message"].as_str().or(p["id"].as_str()).map(String::from))
        .collect()
}

/// Every campaign, newest first.
pub fn list(conn: &Connection) -> Result<Vec<CampaignRow>, AppError> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.id, c.compose, c.seed, c.started_at, c.status, c.report,
                (SELECT COUNT(*) FROM timelines t WHERE t.campaign = c.id),
                (SELECT COUNT(*) FROM timelines t WHERE t.campaign = c.id
                   AND json_array_length(t.body, '$.failed') > 0)
         FROM campaigns c ORDER BY c.started_at DESC, c.rowid DESC",
    )?;
    let rows = stmt.query_map([], |r| {
        let report: Option<String> = r.get(5)?;
        let timelines = r.get::<_, i64>(6)? as u64;
        Ok((
            CampaignRow {
                id: r.get(0)?,
                compose: r.get(1)?,
                seed: r.get::<_, i64>(2)? as u64,
                started_at: r.get(3)?,
                status: r.get(4)?,
                timelines,
                branches: timelines.saturating_sub(1),
                failing_timelines: r.get::<_, i64>(7)? as u64,
                failed_properties: Vec::new(),
                stopped: None,
            },
            report,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (mut c, report) = row?;
        if let Some(report) = report.and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
            c.failed_properties = failed_properties(&report);
            c.stopped = report["stopped"].as_str().map(String::from);
        }
        out.push(c);
    }
    Ok(out)
}

/// A campaign's record: `(compose, seed, started_at, status, report)`.
type Record = (String, u64, String, String, Option<Value>);

fn record(conn: &Connection, id: &str) -> Result<Record, AppError> {
    check_campaign(id)?;
    conn.query_row(
        "SELECT compose, seed, started_at, status, report FROM campaigns WHERE id = ?1",
        params![id],
        |r| {
            let report: Option<String> = r.get(4)?;
            Ok((
                r.get(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get(2)?,
                r.get(3)?,
                report.and_then(|t| serde_json::from_str(&t).ok()),
            ))
        },
    )
    .optional()?
    .ok_or_else(|| AppError::not_found(format!("no campaign `{id}` (see the campaigns list)")))
}

/// The campaign's status now (`running`, `passed`, `failed`).
pub fn status(conn: &Connection, id: &str) -> Result<String, AppError> {
    Ok(record(conn, id)?.3)
}

/// A timeline as the tree shows it: the stored timeline and links.
pub fn timeline_json(campaign: &str, t: &Timeline) -> Value {
    let id = format!("{campaign}/T{}", t.id);
    let mut v = serde_json::to_value(t).expect("timelines serialize");
    v["timeline"] = json!(id);
    v["status"] = json!(campaign_timeline_status(t));
    v["fork_moment"] = json!(t
        .parent
        .map(|p| format!("{campaign}/T{p}@{}", format_vtime(t.from_ns))));
    v["end_moment"] = json!(format!("{id}@{}", format_vtime(t.end_ns)));
    v
}

/// Timelines with an id above `after` (all with `None`), by id.
pub fn timelines_after(
    conn: &Connection,
    campaign: &str,
    after: Option<u64>,
) -> Result<Vec<Timeline>, AppError> {
    let mut stmt = conn
        .prepare_cached("SELECT body FROM timelines WHERE campaign = ?1 AND id > ?2 ORDER BY id")?;
    let after = after.map(|a| a as i64).unwrap_or(-1);
    let bodies = stmt
        .query_map(params![campaign, after], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    bodies
        .iter()
        .map(|b| {
            serde_json::from_str(b)
                .map_err(|e| AppError::internal(format!("{campaign}: a stored timeline: {e}")))
        })
        .collect()
}

/// The highest timeline id so far: the live page's cheap poll.
pub fn max_timeline(conn: &Connection, campaign: &str) -> Result<Option<u64>, AppError> {
    let max: Option<i64> = conn.query_row(
        "SELECT MAX(id) FROM timelines WHERE campaign = ?1",
        params![campaign],
        |r| r.get(0),
    )?;
    Ok(max.map(|m| m as u64))
}

/// A property across the campaign: the finished report's, or counted from the
/// timelines so far while it runs.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignProperty {
    pub message: String,
    pub kind: String,
    pub status: String,
    pub passing: Option<u64>,
    pub failing: u64,
    /// The earliest failing moment (`C/T@VTIME`), when known.
    pub first_failure: Option<String>,
    pub examples: Vec<String>,
    /// The failing service's last log lines up to the first failure (the report's).
    pub logs: Vec<String>,
}

/// Whether moment `C/Tn@VTIME` lies inside timeline n (its fork moment to its end).
fn inside(moment: &str, timelines: &[Timeline]) -> bool {
    let Ok(m) = moment.parse::<explorer::moment::Moment>() else {
        return false;
    };
    let point = explorer::run::decision_point(m.vtime_ns);
    m.run
        .rsplit_once("/T")
        .and_then(|(_, n)| n.parse::<u64>().ok())
        .and_then(|n| timelines.iter().find(|t| t.id == n))
        .is_some_and(|t| point >= t.from_ns && point <= t.end_ns)
}

/// The report's properties, or what failed so far. Example moments outside their
/// timeline (a failure a branch inherited from its ancestor, named with the branch) are
/// left out: their replay would be refused.
fn properties(report: Option<&Value>, timelines: &[Timeline]) -> Vec<CampaignProperty> {
    if let Some(report) = report {
        return report["properties"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let examples: Vec<String> = p["examples"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.as_str().map(String::from))
                    .filter(|m| inside(m, timelines))
                    .collect();
                CampaignProperty {
                    message: p["message"].as_str().unwrap_or("").to_string(),
                    kind: p["kind"].as_str().unwrap_or("").to_string(),
                    status: p["status"].as_str().unwrap_or("").to_string(),
                    passing: p["passing"].as_u64(),
                    failing: p["failing"].as_u64().unwrap_or(0),
                    first_failure: p["first_failure"]
                        .as_str()
                        .filter(|m| inside(m, timelines))
                        .map(String::from)
                        .or_else(|| examples.first().cloned()),
                    examples,
                    logs: p["logs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|l| l.as_str().map(String::from))
                        .collect(),
                }
            })
            .collect();
    }
    // Running, before its first committed round has a report: what failed so far.
    let mut out: Vec<CampaignProperty> = Vec::new();
    for t in timelines {
        for f in &t.failed {
            match out.iter_mut().find(|p| &p.message == f) {
                Some(p) => p.failing += 1,
                None => out.push(CampaignProperty {
                    message: f.clone(),
                    kind: String::new(),
                    status: "failing so far".to_string(),
                    passing: None,
                    failing: 1,
                    first_failure: None,
                    examples: Vec::new(),
                    logs: Vec::new(),
                }),
            }
        }
    }
    out
}

/// The earliest of the report's failing example moments in timeline `t`, if any. Only
/// moments inside the timeline count (a report may name a branch with the moment of a
/// failure it inherited from an ancestor, before the branch's fork).
fn first_failure(examples: &[&str], campaign: &str, t: &Timeline) -> Option<String> {
    let prefix = format!("{campaign}/T{}@", t.id);
    examples
        .iter()
        .filter(|m| m.starts_with(&prefix))
        .filter_map(|m| {
            let moment: explorer::moment::Moment = m.parse().ok()?;
            let point = explorer::run::decision_point(moment.vtime_ns);
            (point >= t.from_ns && point <= t.end_ns).then(|| (moment.vtime_ns, m.to_string()))
        })
        .min()
        .map(|(_, m)| m)
}

/// Everything the campaign page shows, as `/api/campaigns/C` answers it. A finished
/// campaign's report is the stored one; a running campaign's is built by the engine
/// from the rounds committed so far (`report::stored`: properties judged so far,
/// findings against the previous campaign), absent before the first round.
pub fn detail(conn: &Connection, home: &std::path::Path, id: &str) -> Result<Value, AppError> {
    let (compose, seed, started_at, status, stored) = record(conn, id)?;
    let report = match stored {
        Some(r) if status != "running" => Some(r),
        _ => explorer::campaign::report::stored(home, id)
            .ok()
            .map(|r| serde_json::to_value(r).expect("reports serialize")),
    };
    let timelines = timelines_after(conn, id, None)?;
    let props = properties(report.as_ref(), &timelines);
    let examples: Vec<&str> = props
        .iter()
        .flat_map(|p| {
            p.first_failure
                .iter()
                .chain(&p.examples)
                .map(String::as_str)
        })
        .collect();
    let failing = timelines.iter().filter(|t| !t.failed.is_empty()).count();
    let virtual_ns: u64 = timelines.iter().map(|t| t.end_ns - t.from_ns).sum();
    Ok(json!({
        "id": id,
        "compose": compose,
        "seed": seed,
        "started_at": started_at,
        "status": status,
        "timelines": timelines.iter().map(|t| {
            let mut v = timeline_json(id, t);
            v["failure_moment"] = json!(first_failure(&examples, id, t));
            v
        }).collect::<Vec<_>>(),
        "branches": timelines.len().saturating_sub(1),
        "failing_timelines": failing,
        "finished_timelines": timelines.iter().filter(|t| t.finished).count(),
        "virtual_ns": virtual_ns,
        "properties": props,
        // Findings against earlier campaigns, when the campaign's report has them.
        "findings": report.as_ref().map(|r| r["findings"].clone()).unwrap_or(Value::Null),
        "stopped": report.as_ref().map(|r| r["stopped"].clone()).unwrap_or(Value::Null),
        "wall_ms": report.as_ref().map(|r| r["wall_ms"].clone()).unwrap_or(Value::Null),
        "coverage_keys": report.as_ref().map(|r| r["coverage_keys"].clone()).unwrap_or(Value::Null),
    }))
}
