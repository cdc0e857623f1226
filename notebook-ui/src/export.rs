//! Exports of a timeline's events: JSON lines (one stored event per line, as the run
//! store keeps them) and a Chrome JSON trace for Perfetto (ui.perfetto.dev) or
//! chrome://tracing: one track per node, every event an instant slice, faults as
//! spans, and a flow arrow from each frame sent to its delivery.
//!
//! Frames carry no id, so a delivery is paired with the earliest frame not yet
//! delivered to that receiver from the same sender with the same length (and the
//! receiver or broadcast as its destination): exact while the network keeps order,
//! a best guess under reordering faults.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;

use rusqlite::{params, Connection};
use serde_json::{json, Value};

use crate::aggregate;
use crate::error::AppError;
use crate::events::{label, text};
use crate::timeline::Timeline;

/// Exports refuse timelines with more events than this (the download size limit).
pub const MAX_EVENTS: u64 = 2_000_000;

struct Row {
    seq: u64,
    vtime_ns: u64,
    node: String,
    kind: String,
    body: String,
}

fn for_each_event(
    conn: &Connection,
    timeline: &Timeline,
    mut f: impl FnMut(Row) -> Result<(), AppError>,
) -> Result<(), AppError> {
    let count: i64 = conn.query_row(
        &format!(
            "SELECT COUNT(*) FROM {} WHERE run_id = ?1",
            timeline.table()
        ),
        params![timeline.id],
        |r| r.get(0),
    )?;
    if count as u64 > MAX_EVENTS {
        return Err(AppError::too_large(format!(
            "{} has {count} events; exports stop at {MAX_EVENTS}",
            timeline.id
        )));
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT seq, vtime_ns, node, kind, body FROM {} WHERE run_id = ?1 ORDER BY seq",
        timeline.table()
    ))?;
    let rows = stmt.query_map(params![timeline.id], |r| {
        Ok(Row {
            seq: r.get::<_, i64>(0)? as u64,
            vtime_ns: r.get::<_, i64>(1)? as u64,
            node: r.get(2)?,
            kind: r.get(3)?,
            body: r.get(4)?,
        })
    })?;
    for row in rows {
        f(row?)?;
    }
    Ok(())
}

/// One JSON object per line: `{"seq":…,"vtime_ns":…,"node":…,"kind":…,"body":{…}}`.
pub fn jsonl(conn: &Connection, timeline: &Timeline) -> Result<Vec<u8>, AppError> {
    let mut out = Vec::new();
    for_each_event(conn, timeline, |r| {
        let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::String(r.body));
        let line = json!({
            "seq": r.seq, "vtime_ns": r.vtime_ns, "node": r.node, "kind": r.kind, "body": body
        });
        writeln!(out, "{line}").map_err(|e| AppError::internal(e.to_string()))
    })?;
    Ok(out)
}

/// A frame sent and not yet delivered everywhere it goes.
struct SentFrame {
    flow: u64,
    dst: String,
    sent_ns: u64,
    delivered_to: Vec<String>,
}

fn micros(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// A Chrome JSON trace (`{"traceEvents": [...]}`), timestamps in virtual microseconds.
pub fn chrome_trace(conn: &Connection, timeline: &Timeline) -> Result<Vec<u8>, AppError> {
    let nodes = aggregate::nodes(conn, timeline)?;
    let tid = |node: &str| nodes.iter().position(|n| n == node).unwrap_or(nodes.len()) + 1;
    let mut events: Vec<Value> = vec![json!({
        "ph": "M", "pid": 1, "name": "process_name", "args": {"name": format!("detvm {}", timeline.id)}
    })];
    for (i, n) in nodes.iter().enumerate() {
        events.push(
            json!({"ph": "M", "pid": 1, "tid": i + 1, "name": "thread_name", "args": {"name": n}}),
        );
        events.push(json!({"ph": "M", "pid": 1, "tid": i + 1, "name": "thread_sort_index", "args": {"sort_index": i}}));
    }
    // Frames in flight by (sender, length), oldest first.
    let mut in_flight: BTreeMap<(String, u64), VecDeque<SentFrame>> = BTreeMap::new();
    let mut next_flow = 1u64;
    for_each_event(conn, timeline, |r| {
        let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        let ts = micros(r.vtime_ns);
        let t = tid(&r.node);
        let name = label(&r.kind, &body);
        let args = json!({"seq": r.seq, "text": text(&r.kind, &body)});
        // A short slice, so flows have something to bind to.
        events.push(json!({"ph": "X", "pid": 1, "tid": t, "ts": ts, "dur": 1, "name": name, "cat": r.kind, "args": args}));
        if r.kind == "frame" {
            let action = body.get("action").and_then(|a| a.as_str()).unwrap_or("");
            let src = body
                .get("src")
                .and_then(|a| a.as_str())
                .unwrap_or("")
                .to_string();
            let dst = body
                .get("dst")
                .and_then(|a| a.as_str())
                .unwrap_or("")
                .to_string();
            let len = body.get("len").and_then(|a| a.as_u64()).unwrap_or(0);
            match action {
                "sent" => {
                    let id = next_flow;
                    next_flow += 1;
                    in_flight
                        .entry((src, len))
                        .or_default()
                        .push_back(SentFrame {
                            flow: id,
                            dst,
                            sent_ns: r.vtime_ns,
                            delivered_to: Vec::new(),
                        });
                    events.push(json!({"ph": "s", "pid": 1, "tid": t, "ts": ts, "id": id, "name": "frame", "cat": "frame"}));
                }
                "delivered" => {
                    if let Some(queue) = in_flight.get_mut(&(src, len)) {
                        let receiver = r.node.clone();
                        let found = queue.iter_mut().find(|f| {
                            (f.dst == receiver || f.dst == "broadcast")
                                && !f.delivered_to.contains(&receiver)
                        });
                        if let Some(f) = found {
                            f.delivered_to.push(receiver);
                            events.push(json!({"ph": "f", "bp": "e", "pid": 1, "tid": t, "ts": ts, "id": f.flow, "name": "frame", "cat": "frame"}));
                        }
                        // Unicast frames are done once delivered; old broadcasts age out.
                        let now = r.vtime_ns;
                        queue.retain(|f| {
                            if f.dst == "broadcast" {
                                now.saturating_sub(f.sent_ns) < 1_000_000_000
                            } else {
                                f.delivered_to.is_empty()
                            }
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(())
    })?;
    let end = timeline
        .end_ns()
        .unwrap_or(aggregate::last_time(conn, timeline)?);
    let (_, spans) = aggregate::sparse(conn, timeline, end)?;
    for s in spans {
        events.push(json!({
            "ph": "X", "pid": 1, "tid": tid(&s.node), "ts": micros(s.from_ns),
            "dur": micros(s.to_ns.saturating_sub(s.from_ns)).max(1.0),
            "name": s.label, "cat": "fault"
        }));
    }
    let trace = json!({"traceEvents": events, "displayTimeUnit": "ms",
                       "metadata": {"timeline": timeline.id, "clock": "virtual"}});
    serde_json::to_vec(&trace).map_err(|e| AppError::internal(e.to_string()))
}
