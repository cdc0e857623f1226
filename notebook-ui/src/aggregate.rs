//! The timeline view's data, aggregated on the server so a run of minutes and 100,000+
//! events draws from a few kilobytes: per node, message and log counts in N buckets
//! of the visible window, plus the sparse things drawn one by one: node state changes,
//! service starts and exits, property events (each property's first pass, and
//! failures) as marks, and faults as spans from applied to healed.

use std::collections::BTreeMap;

use explorer::properties::{parse_sdk_line, AssertType, SdkLine};
use rusqlite::{params, Connection};
use serde::Serialize;
use serde_json::Value;

use crate::error::AppError;
use crate::events::{fault_text, moment_of};
use crate::timeline::Timeline;

/// The most buckets one request may ask for (a wide screen's pixels).
pub const MAX_BUCKETS: usize = 4000;
/// The most marks returned for one window.
const MAX_MARKS: usize = 4000;

#[derive(Debug, Clone, Serialize)]
pub struct Lanes {
    pub timeline: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub from_ns: u64,
    pub to_ns: u64,
    pub bucket_ns: u64,
    pub nodes: Vec<String>,
    /// Per node (same order as `nodes`): frames sent or delivered, per bucket.
    pub messages: Vec<Vec<u32>>,
    /// Per node: log lines (console, service and exec output), per bucket.
    pub logs: Vec<Vec<u32>>,
    pub marks: Vec<Mark>,
    pub spans: Vec<SpanMark>,
    /// Marks in the window beyond [`MAX_MARKS`] were left out.
    pub marks_truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mark {
    pub vtime_ns: u64,
    pub node: String,
    /// `state`, `start`, `exit`, `pass`, `fail`.
    pub kind: String,
    pub label: String,
    pub moment: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanMark {
    pub node: String,
    pub from_ns: u64,
    pub to_ns: u64,
    /// `pause`, `kill`, `partition`, `clog`, …
    pub kind: String,
    pub label: String,
}

/// The nodes of a timeline, in first-seen order ("world" last, if it has events).
pub fn nodes(conn: &Connection, timeline: &Timeline) -> Result<Vec<String>, AppError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT node, MIN(seq) FROM {} WHERE run_id = ?1 GROUP BY node ORDER BY MIN(seq)",
        timeline.table()
    ))?;
    let mut names: Vec<String> = stmt
        .query_map(params![timeline.id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if let Some(i) = names.iter().position(|n| n == "world") {
        let w = names.remove(i);
        names.push(w);
    }
    Ok(names)
}

/// The last event's time (a timeline without an end yet).
pub fn last_time(conn: &Connection, timeline: &Timeline) -> Result<u64, AppError> {
    let t: Option<i64> = conn.query_row(
        &format!(
            "SELECT MAX(vtime_ns) FROM {} WHERE run_id = ?1",
            timeline.table()
        ),
        params![timeline.id],
        |r| r.get(0),
    )?;
    Ok(t.unwrap_or(0) as u64)
}

pub fn lanes(
    conn: &Connection,
    timeline: &Timeline,
    from: Option<u64>,
    to: Option<u64>,
    buckets: usize,
) -> Result<Lanes, AppError> {
    let start_ns = timeline.start_ns();
    let end_ns = timeline
        .end_ns()
        .unwrap_or(last_time(conn, timeline)?)
        .max(start_ns + 1);
    let from_ns = from.unwrap_or(start_ns).clamp(start_ns, end_ns - 1);
    let to_ns = to
        .unwrap_or(end_ns)
        .clamp(from_ns + 1, end_ns.max(from_ns + 1));
    let buckets = buckets.clamp(1, MAX_BUCKETS);
    let bucket_ns = (to_ns - from_ns).div_ceil(buckets as u64).max(1);
    let buckets = (to_ns - from_ns).div_ceil(bucket_ns) as usize;
    let nodes = nodes(conn, timeline)?;
    let index: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut messages = vec![vec![0u32; buckets]; nodes.len()];
    let mut logs = vec![vec![0u32; buckets]; nodes.len()];
    {
        // One pass over the window's rows, counted by (node, bucket, is-a-frame).
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT node, (vtime_ns - ?2) / ?4 AS b, kind = 'frame', COUNT(*) FROM {}
             WHERE run_id = ?1 AND vtime_ns >= ?2 AND vtime_ns < ?3
               AND (kind IN ('frame', 'console') OR (kind = 'agent' AND body LIKE '%output%'))
             GROUP BY node, b, kind = 'frame'",
            timeline.table()
        ))?;
        let rows = stmt.query_map(
            params![timeline.id, from_ns as i64, to_ns as i64, bucket_ns as i64],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
        )?;
        for row in rows {
            let (node, b, frame, count) = row?;
            if let (Some(&i), Ok(b)) = (index.get(node.as_str()), usize::try_from(b)) {
                if b < buckets {
                    let lane = if frame {
                        &mut messages[i]
                    } else {
                        &mut logs[i]
                    };
                    lane[b] = lane[b].saturating_add(count as u32);
                }
            }
        }
    }
    let (all_marks, all_spans) = sparse(conn, timeline, end_ns)?;
    let mut marks: Vec<Mark> = all_marks
        .into_iter()
        .filter(|m| m.vtime_ns >= from_ns && m.vtime_ns < to_ns)
        .collect();
    let marks_truncated = marks.len() > MAX_MARKS;
    marks.truncate(MAX_MARKS);
    let spans: Vec<SpanMark> = all_spans
        .into_iter()
        .filter(|s| s.to_ns >= from_ns && s.from_ns < to_ns)
        .collect();
    // The `world` lane only when something is drawn on it (faults spans move to the
    // nodes they name).
    let mut nodes = nodes;
    if let Some(w) = nodes.iter().position(|n| n == "world") {
        let used = marks.iter().any(|m| m.node == "world")
            || spans.iter().any(|s: &SpanMark| s.node == "world")
            || messages[w].iter().chain(&logs[w]).any(|&c| c > 0);
        if !used {
            nodes.remove(w);
            messages.remove(w);
            logs.remove(w);
        }
    }
    Ok(Lanes {
        timeline: timeline.id.clone(),
        start_ns,
        end_ns,
        from_ns,
        to_ns,
        bucket_ns,
        nodes,
        messages,
        logs,
        marks,
        spans,
        marks_truncated,
    })
}

/// Marks and fault spans of the whole timeline (`end_ns` closes faults never healed).
pub fn sparse(
    conn: &Connection,
    timeline: &Timeline,
    end_ns: u64,
) -> Result<(Vec<Mark>, Vec<SpanMark>), AppError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT vtime_ns, node, kind, body FROM {} WHERE run_id = ?1
           AND (kind IN ('state', 'fault_applied', 'fault_healed')
                OR (kind = 'agent' AND (body LIKE '%\"type\":\"started\"%'
                                        OR body LIKE '%\"type\":\"exited\"%'
                                        OR body LIKE '%antithesis_assert%')))
         ORDER BY seq",
        timeline.table()
    ))?;
    let rows = stmt.query_map(params![timeline.id], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut marks = Vec::new();
    let mut open: Vec<(String, u64, Value)> = Vec::new();
    let mut spans = Vec::new();
    let mut passed: std::collections::BTreeSet<String> = Default::default();
    for row in rows {
        let (t, node, kind, body) = row?;
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let mark = |kind: &str, label: String| Mark {
            vtime_ns: t,
            node: node.clone(),
            kind: kind.to_string(),
            label,
            moment: moment_of(&timeline.id, t),
        };
        match kind.as_str() {
            "state" => {
                let change = body
                    .pointer("/state/change")
                    .and_then(|c| c.as_str())
                    .unwrap_or("?");
                marks.push(mark("state", change.to_string()));
            }
            "fault_applied" => {
                let fault = body.get("fault").cloned().unwrap_or(Value::Null);
                open.push((node.clone(), t, fault));
            }
            "fault_healed" => {
                let fault = body.get("fault").cloned().unwrap_or(Value::Null);
                if let Some(i) = open.iter().position(|(n, _, f)| *n == node && *f == fault) {
                    let (n, from, f) = open.remove(i);
                    spans.extend(span(n, from, t, &f));
                }
            }
            _ => match body.pointer("/message/type").and_then(|x| x.as_str()) {
                Some("started") => marks.push(mark("start", "service started".into())),
                Some("exited") => {
                    let code = body
                        .pointer("/message/code")
                        .cloned()
                        .unwrap_or(Value::Null);
                    let signal = body
                        .pointer("/message/signal")
                        .cloned()
                        .unwrap_or(Value::Null);
                    marks.push(mark("exit", format!("exited code {code} signal {signal}")));
                }
                Some("sdk") => {
                    let line = body
                        .pointer("/message/line")
                        .and_then(|l| l.as_str())
                        .unwrap_or("");
                    if let Ok(SdkLine::Assert(a)) = parse_sdk_line(line) {
                        if !a.hit {
                            continue;
                        }
                        let failed = match a.assert_type {
                            AssertType::Always => !a.condition,
                            AssertType::Sometimes | AssertType::Reachability => false,
                        };
                        let counts = match a.assert_type {
                            AssertType::Sometimes => a.condition,
                            _ => true,
                        };
                        if failed {
                            marks.push(mark("fail", a.message.clone()));
                        } else if counts && passed.insert(a.id.clone()) {
                            marks.push(mark("pass", format!("first pass: {}", a.message)));
                        }
                    }
                }
                _ => {}
            },
        }
    }
    for (n, from, f) in open {
        let instant = matches!(
            f.get("type").and_then(|t| t.as_str()),
            Some("clock_step" | "heal" | "unclog" | "restart")
        );
        spans.extend(span(n, from, if instant { from } else { end_ns }, &f));
    }
    spans.sort_by_key(|s| (s.from_ns, s.node.clone()));
    Ok((marks, spans))
}

/// A fault's span on each node it names (a partition's groups, a clog's nodes), or on
/// the node it was reported on (a pause's node, `world` for network-wide faults).
fn span(node: String, from_ns: u64, to_ns: u64, fault: &Value) -> Vec<SpanMark> {
    let named: Vec<String> = match (fault.get("groups"), fault.get("nodes")) {
        (Some(Value::Array(groups)), _) => groups
            .iter()
            .filter_map(|g| g.as_array())
            .flatten()
            .filter_map(|n| n.as_str().map(String::from))
            .collect(),
        (_, Some(Value::Array(nodes))) => nodes
            .iter()
            .filter_map(|n| n.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    };
    let kind = fault
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("fault")
        .to_string();
    let label = fault_text(fault);
    let nodes = if named.is_empty() { vec![node] } else { named };
    nodes
        .into_iter()
        .map(|node| SpanMark {
            node,
            from_ns,
            to_ns,
            kind: kind.clone(),
            label: label.clone(),
        })
        .collect()
}
