//! Events as the notebook shows them: a label finer than the stored kind (agent
//! messages by their type: `agent.output`, `agent.sdk`, …) and one line of text.

use explorer::moment::format_vtime;
use rusqlite::{params_from_iter, Connection, ToSql};
use serde::Serialize;
use serde_json::Value;

use crate::error::AppError;
use crate::timeline::Timeline;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    pub seq: u64,
    pub vtime_ns: u64,
    pub node: String,
    /// `state`, `frame`, `fault_applied`, `agent.output`, `agent.sdk`, …
    pub label: String,
    pub text: String,
    /// `TIMELINE@VTIME` of this event.
    pub moment: String,
}

/// The labels a search can filter on, for forms.
pub const LABELS: &[&str] = &[
    "console",
    "state",
    "frame",
    "fault_applied",
    "fault_healed",
    "agent.output",
    "agent.exec_output",
    "agent.exec_exited",
    "agent.sdk",
    "agent.started",
    "agent.exited",
    "agent.hello",
    "agent.error",
];

pub fn label(kind: &str, body: &Value) -> String {
    if kind == "agent" {
        let t = body
            .pointer("/message/type")
            .and_then(|t| t.as_str())
            .unwrap_or("message");
        format!("agent.{t}")
    } else {
        kind.to_string()
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(|x| x.as_str()).unwrap_or("")
}

/// One line of text for an event.
pub fn text(kind: &str, body: &Value) -> String {
    match kind {
        "console" => s(body, "/line").to_string(),
        "state" => s(body, "/state/change").to_string(),
        "frame" => {
            let mut t = format!(
                "{} {} -> {} {} bytes",
                s(body, "/action"),
                s(body, "/src"),
                s(body, "/dst"),
                body.get("len").and_then(|l| l.as_u64()).unwrap_or(0)
            );
            if let Some(r) = body.get("reason").and_then(|r| r.as_str()) {
                t.push_str(&format!(" ({r})"));
            }
            t
        }
        "fault_applied" | "fault_healed" => fault_text(body.get("fault").unwrap_or(&Value::Null)),
        "agent" => {
            let m = body.get("message").unwrap_or(&Value::Null);
            match s(m, "/type") {
                "output" => format!("[{}] {}", s(m, "/stream"), s(m, "/line")),
                "exec_output" => format!(
                    "exec {} [{}] {}",
                    m.get("id").unwrap_or(&Value::Null),
                    s(m, "/stream"),
                    s(m, "/line")
                ),
                "exec_exited" => format!(
                    "exec {} exited code {} signal {}",
                    m.get("id").unwrap_or(&Value::Null),
                    m.get("code").unwrap_or(&Value::Null),
                    m.get("signal").unwrap_or(&Value::Null)
                ),
                "exited" => format!(
                    "service exited code {} signal {}",
                    m.get("code").unwrap_or(&Value::Null),
                    m.get("signal").unwrap_or(&Value::Null)
                ),
                "started" => format!(
                    "service started (pid {})",
                    m.get("pid").unwrap_or(&Value::Null)
                ),
                "sdk" => s(m, "/line").to_string(),
                "error" | "exec_error" | "file_error" => s(m, "/message").to_string(),
                other => format!("{other} {m}"),
            }
        }
        _ => body.to_string(),
    }
}

/// `partition [a] | [b]`, `pause kv for 2s`: a fault in a few words.
pub fn fault_text(fault: &Value) -> String {
    let t = s(fault, "/type");
    let node = s(fault, "/node");
    let span = |key: &str| {
        fault
            .get(key)
            .filter(|v| !v.is_null())
            .map(|v| {
                format!(
                    " for {}",
                    v.as_str().map(String::from).unwrap_or(v.to_string())
                )
            })
            .unwrap_or_default()
    };
    match t {
        "partition" => {
            let groups = fault
                .get("groups")
                .and_then(|g| g.as_array())
                .map(|g| {
                    g.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(" | ")
                })
                .unwrap_or_default();
            format!("partition {groups}{}", span("duration"))
        }
        "clog" | "unclog" | "swizzle_clog" => format!(
            "{t} {}{}",
            fault
                .get("nodes")
                .map(|n| n.to_string())
                .unwrap_or_default(),
            span("duration")
        ),
        "pause" => format!("pause {node}{}", span("duration")),
        "kill" => format!("kill {node}"),
        "restart" => format!("restart {node}"),
        "clock_step" => format!(
            "clock step {node} by {}",
            fault.get("delta").unwrap_or(&Value::Null)
        ),
        "clock_skew" => format!(
            "clock skew {node} {} ppm{}",
            fault.get("ppm").unwrap_or(&Value::Null),
            span("duration")
        ),
        "" => fault.to_string(),
        other => format!("{other}{}", span("duration")),
    }
}

pub fn moment_of(timeline: &str, vtime_ns: u64) -> String {
    format!("{timeline}@{}", format_vtime(vtime_ns))
}

/// Rows of `timeline` matching `where_sql` (with `args` after the timeline id as ?1),
/// in event order, at most `limit`.
pub fn select(
    conn: &Connection,
    timeline: &Timeline,
    where_sql: &str,
    args: &[&dyn ToSql],
    order: &str,
    limit: usize,
) -> Result<Vec<EventRow>, AppError> {
    let sql = format!(
        "SELECT seq, vtime_ns, node, kind, body FROM {} WHERE run_id = ?1 {where_sql} ORDER BY {order} LIMIT {limit}",
        timeline.table()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut all: Vec<&dyn ToSql> = vec![&timeline.id];
    all.extend_from_slice(args);
    let rows = stmt.query_map(params_from_iter(all), |r| {
        let kind: String = r.get(3)?;
        let body: String = r.get(4)?;
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            kind,
            body,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, vtime, node, kind, body) = row?;
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        out.push(EventRow {
            seq: seq as u64,
            vtime_ns: vtime as u64,
            node,
            label: label(&kind, &body),
            text: text(&kind, &body),
            moment: moment_of(&timeline.id, vtime as u64),
        });
    }
    Ok(out)
}

/// The last `n` log lines (console, service and exec output) of each node before
/// `vtime_ns`, oldest first.
pub fn last_lines(
    conn: &Connection,
    timeline: &Timeline,
    nodes: &[String],
    vtime_ns: u64,
    n: usize,
) -> Result<Vec<(String, Vec<EventRow>)>, AppError> {
    let mut out = Vec::new();
    for node in nodes {
        let t = vtime_ns as i64;
        let mut rows = select(
            conn,
            timeline,
            "AND node = ?2 AND vtime_ns < ?3 AND (kind = 'console' OR (kind = 'agent' AND
             json_extract(body, '$.message.type') IN ('output', 'exec_output', 'error', 'exited', 'started')))",
            &[node, &t],
            "vtime_ns DESC, seq DESC",
            n,
        )?;
        rows.reverse();
        out.push((node.clone(), rows));
    }
    Ok(out)
}
