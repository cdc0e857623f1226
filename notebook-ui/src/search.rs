//! The log explorer's search: events of a timeline by node, label and text, with
//! temporal conditions against a second filter: A preceded by B, A not preceded by B,
//! A followed by B, A not followed by B, each optionally within a virtual-time window.

use explorer::moment::parse_vtime;
use rusqlite::{Connection, ToSql};
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::events::{self, EventRow};
use crate::timeline::Timeline;

/// The most results one search returns.
pub const MAX_LIMIT: usize = 2000;
/// The most A candidates a temporal search examines.
const MAX_CANDIDATES: usize = 20_000;

/// One filter: every given field must match. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    #[serde(default)]
    pub node: String,
    /// An event label: `console`, `frame`, `agent.output`, … (see [`events::LABELS`]).
    #[serde(default)]
    pub kind: String,
    /// Case-insensitive text anywhere in the event.
    #[serde(default)]
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    PrecededBy,
    NotPrecededBy,
    FollowedBy,
    NotFollowedBy,
}

/// A search request as the page's form and the API take it (query string).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Query {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub text: String,
    /// `preceded_by`, `not_preceded_by`, `followed_by`, `not_followed_by`, or empty.
    #[serde(default)]
    pub op: String,
    #[serde(default)]
    pub b_node: String,
    #[serde(default)]
    pub b_kind: String,
    #[serde(default)]
    pub b_text: String,
    /// The window for the relation (`2s`); empty: any time before/after.
    #[serde(default)]
    pub within: String,
    /// Only events at or after / before these times (`1.5s`).
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    pub timeline: String,
    pub events: Vec<EventRow>,
    /// More matched than were returned.
    pub truncated: bool,
    /// What was searched, in words.
    pub description: String,
}

impl Query {
    pub fn a(&self) -> Filter {
        Filter {
            node: self.node.clone(),
            kind: self.kind.clone(),
            text: self.text.clone(),
        }
    }
    pub fn b(&self) -> Filter {
        Filter {
            node: self.b_node.clone(),
            kind: self.b_kind.clone(),
            text: self.b_text.clone(),
        }
    }
    pub fn relation(&self) -> Result<Option<Relation>, AppError> {
        Ok(match self.op.as_str() {
            "" => None,
            "preceded_by" => Some(Relation::PrecededBy),
            "not_preceded_by" => Some(Relation::NotPrecededBy),
            "followed_by" => Some(Relation::FollowedBy),
            "not_followed_by" => Some(Relation::NotFollowedBy),
            other => {
                return Err(AppError::bad_request(format!(
                    "`{other}` is not a relation; use preceded_by, not_preceded_by, followed_by or not_followed_by"
                )))
            }
        })
    }
}

pub(crate) fn vtime(field: &str, text: &str) -> Result<Option<u64>, AppError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    parse_vtime(text)
        .map(Some)
        .map_err(|e| AppError::bad_request(format!("{field}: {e}")))
}

/// SQL conditions and their arguments for a filter (arguments numbered from `first`).
pub(crate) fn conditions(
    filter: &Filter,
    first: usize,
) -> Result<(String, Vec<Box<dyn ToSql>>), AppError> {
    let mut sql = String::new();
    let mut args: Vec<Box<dyn ToSql>> = Vec::new();
    let mut n = first;
    if !filter.node.is_empty() {
        sql.push_str(&format!(" AND node = ?{n}"));
        args.push(Box::new(filter.node.clone()));
        n += 1;
    }
    if !filter.kind.is_empty() {
        match filter.kind.split_once('.') {
            Some(("agent", t)) => {
                sql.push_str(&format!(
                    " AND kind = 'agent' AND json_extract(body, '$.message.type') = ?{n}"
                ));
                args.push(Box::new(t.to_string()));
            }
            _ => {
                sql.push_str(&format!(" AND kind = ?{n}"));
                args.push(Box::new(filter.kind.clone()));
            }
        }
        n += 1;
    }
    if !filter.text.is_empty() {
        let escaped = filter
            .text
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        sql.push_str(&format!(" AND body LIKE ?{n} ESCAPE '\\'"));
        args.push(Box::new(format!("%{escaped}%")));
    }
    Ok((sql, args))
}

pub(crate) fn describe(f: &Filter) -> String {
    let mut parts = Vec::new();
    if !f.kind.is_empty() {
        parts.push(f.kind.clone());
    }
    if !f.node.is_empty() {
        parts.push(format!("on {}", f.node));
    }
    if !f.text.is_empty() {
        parts.push(format!("containing {:?}", f.text));
    }
    if parts.is_empty() {
        "any event".to_string()
    } else {
        parts.join(" ")
    }
}

fn matching(
    conn: &Connection,
    timeline: &Timeline,
    filter: &Filter,
    range: (u64, u64),
    limit: usize,
) -> Result<Vec<EventRow>, AppError> {
    let (cond, args) = conditions(filter, 4)?;
    let (from, to) = (range.0 as i64, i64::try_from(range.1).unwrap_or(i64::MAX));
    let mut all: Vec<&dyn ToSql> = vec![&from, &to];
    all.extend(args.iter().map(|a| a.as_ref()));
    events::select(
        conn,
        timeline,
        &format!("AND vtime_ns >= ?2 AND vtime_ns < ?3{cond}"),
        &all,
        "seq",
        limit,
    )
}

/// Virtual times of the events matching `filter`, sorted.
fn times(conn: &Connection, timeline: &Timeline, filter: &Filter) -> Result<Vec<u64>, AppError> {
    let (cond, args) = conditions(filter, 2)?;
    let sql = format!(
        "SELECT vtime_ns FROM {} WHERE run_id = ?1{cond} ORDER BY vtime_ns",
        timeline.table()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut all: Vec<&dyn ToSql> = vec![&timeline.id];
    all.extend(args.iter().map(|a| a.as_ref()));
    let times = stmt
        .query_map(rusqlite::params_from_iter(all), |r| r.get::<_, i64>(0))?
        .map(|t| t.map(|t| t as u64))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(times)
}

/// Whether some B time lies in the relation's window around `t`. "Preceded" means
/// strictly earlier (B at the same virtual time is not before A); "followed", later.
pub(crate) fn related(b_times: &[u64], t: u64, relation: Relation, within: Option<u64>) -> bool {
    let before = match relation {
        Relation::PrecededBy | Relation::NotPrecededBy => {
            let i = b_times.partition_point(|&b| b < t);
            i > 0 && within.is_none_or(|w| t - b_times[i - 1] <= w)
        }
        Relation::FollowedBy | Relation::NotFollowedBy => {
            let i = b_times.partition_point(|&b| b <= t);
            i < b_times.len() && within.is_none_or(|w| b_times[i] - t <= w)
        }
    };
    match relation {
        Relation::PrecededBy | Relation::FollowedBy => before,
        Relation::NotPrecededBy | Relation::NotFollowedBy => !before,
    }
}

pub fn search(conn: &Connection, timeline: &Timeline, q: &Query) -> Result<SearchResult, AppError> {
    let limit = q.limit.unwrap_or(200).clamp(1, MAX_LIMIT);
    let range = (
        vtime("from", &q.from)?.unwrap_or(0),
        vtime("to", &q.to)?.unwrap_or(u64::MAX),
    );
    let within = vtime("within", &q.within)?;
    let a = q.a();
    let mut description = describe(&a);
    let (events, truncated) = match q.relation()? {
        None => {
            let mut rows = matching(conn, timeline, &a, range, limit + 1)?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            (rows, more)
        }
        Some(relation) => {
            let b = q.b();
            let b_times = times(conn, timeline, &b)?;
            let candidates = matching(conn, timeline, &a, range, MAX_CANDIDATES)?;
            let capped = candidates.len() == MAX_CANDIDATES;
            let mut rows: Vec<EventRow> = candidates
                .into_iter()
                .filter(|e| related(&b_times, e.vtime_ns, relation, within))
                .collect();
            let more = rows.len() > limit || capped;
            rows.truncate(limit);
            description.push_str(&format!(
                " {} {}{}",
                q.op.replace('_', " "),
                describe(&b),
                within
                    .map(|w| format!(" within {}", explorer::moment::format_vtime(w)))
                    .unwrap_or_default()
            ));
            (rows, more)
        }
    };
    Ok(SearchResult {
        timeline: timeline.id.clone(),
        events,
        truncated,
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_respect_order_and_window() {
        let b = [10, 50, 100];
        assert!(related(&b, 60, Relation::PrecededBy, None));
        assert!(related(&b, 60, Relation::PrecededBy, Some(10)));
        assert!(!related(&b, 60, Relation::PrecededBy, Some(9)));
        assert!(
            !related(&b, 10, Relation::PrecededBy, None),
            "same time is not before"
        );
        assert!(related(&b, 10, Relation::NotPrecededBy, None));
        assert!(related(&b, 60, Relation::FollowedBy, Some(40)));
        assert!(!related(&b, 60, Relation::FollowedBy, Some(39)));
        assert!(related(&b, 60, Relation::NotFollowedBy, Some(39)));
        assert!(related(&b, 100, Relation::NotFollowedBy, None));
        assert!(!related(&[], 5, Relation::FollowedBy, None));
    }
}
