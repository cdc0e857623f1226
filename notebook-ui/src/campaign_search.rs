//! The log explorer over a whole campaign: the events of every timeline (the campaign
//! store's `timeline_events`, each timeline's own events from its fork moment to its
//! end) by node, label and text, with the same temporal conditions as a run's search.
//! A relation is judged within one timeline: "A preceded by B" needs a B of A's own
//! timeline (its stored events; events before its fork moment are its ancestors').

use std::collections::HashMap;

use rusqlite::{params_from_iter, Connection, ToSql};
use serde::Serialize;
use serde_json::Value;

use crate::error::AppError;
use crate::events::{self, EventRow};
use crate::search::{self, Filter, Query, MAX_LIMIT};

/// The most A candidates a temporal search over a campaign examines.
const MAX_CANDIDATES: usize = 50_000;

#[derive(Debug, Clone, Serialize)]
pub struct CampaignSearchResult {
    pub campaign: String,
    /// Each event's `moment` is `C/T<n>@VTIME`; `timeline` is `C/T<n>`.
    pub events: Vec<CampaignEvent>,
    pub truncated: bool,
    pub description: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CampaignEvent {
    pub timeline: String,
    #[serde(flatten)]
    pub event: EventRow,
}

/// Events of `campaign` matching `filter` in the time range, by timeline then seq.
fn matching(
    conn: &Connection,
    campaign: &str,
    filter: &Filter,
    range: (u64, u64),
    limit: usize,
) -> Result<Vec<CampaignEvent>, AppError> {
    let (cond, args) = search::conditions(filter, 4)?;
    let sql = format!(
        "SELECT timeline, seq, vtime_ns, node, kind, body FROM timeline_events
         WHERE campaign = ?1 AND vtime_ns >= ?2 AND vtime_ns < ?3{cond}
         ORDER BY timeline, seq LIMIT {limit}"
    );
    let (from, to) = (range.0 as i64, i64::try_from(range.1).unwrap_or(i64::MAX));
    let mut all: Vec<&dyn ToSql> = vec![&campaign, &from, &to];
    all.extend(args.iter().map(|a| a.as_ref()));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(all), |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (t, seq, vtime, node, kind, body) = row?;
        let body: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        let timeline = format!("{campaign}/T{t}");
        out.push(CampaignEvent {
            event: EventRow {
                seq: seq as u64,
                vtime_ns: vtime as u64,
                node,
                label: events::label(&kind, &body),
                text: events::text(&kind, &body),
                moment: events::moment_of(&timeline, vtime as u64),
            },
            timeline,
        });
    }
    Ok(out)
}

/// Per timeline, the sorted virtual times of events matching `filter`.
fn times(
    conn: &Connection,
    campaign: &str,
    filter: &Filter,
) -> Result<HashMap<String, Vec<u64>>, AppError> {
    let (cond, args) = search::conditions(filter, 2)?;
    let sql = format!(
        "SELECT timeline, vtime_ns FROM timeline_events WHERE campaign = ?1{cond} ORDER BY timeline, vtime_ns"
    );
    let mut all: Vec<&dyn ToSql> = vec![&campaign];
    all.extend(args.iter().map(|a| a.as_ref()));
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut out: HashMap<String, Vec<u64>> = HashMap::new();
    let rows = stmt.query_map(params_from_iter(all), |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (t, v) = row?;
        out.entry(format!("{campaign}/T{t}"))
            .or_default()
            .push(v as u64);
    }
    Ok(out)
}

pub fn search(
    conn: &Connection,
    campaign: &str,
    q: &Query,
) -> Result<CampaignSearchResult, AppError> {
    let limit = q.limit.unwrap_or(200).clamp(1, MAX_LIMIT);
    let range = (
        search::vtime("from", &q.from)?.unwrap_or(0),
        search::vtime("to", &q.to)?.unwrap_or(u64::MAX),
    );
    let within = search::vtime("within", &q.within)?;
    let a = q.a();
    let mut description = format!("{} in every timeline", search::describe(&a));
    let (events, truncated) = match q.relation()? {
        None => {
            let mut rows = matching(conn, campaign, &a, range, limit + 1)?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            (rows, more)
        }
        Some(relation) => {
            let b = q.b();
            let b_times = times(conn, campaign, &b)?;
            let candidates = matching(conn, campaign, &a, range, MAX_CANDIDATES)?;
            let capped = candidates.len() == MAX_CANDIDATES;
            let none = Vec::new();
            let mut rows: Vec<CampaignEvent> = candidates
                .into_iter()
                .filter(|e| {
                    let bs = b_times.get(&e.timeline).unwrap_or(&none);
                    search::related(bs, e.event.vtime_ns, relation, within)
                })
                .collect();
            let more = rows.len() > limit || capped;
            rows.truncate(limit);
            description.push_str(&format!(
                ", {} {} in the same timeline{}",
                q.op.replace('_', " "),
                search::describe(&b),
                within
                    .map(|w| format!(" within {}", explorer::moment::format_vtime(w)))
                    .unwrap_or_default()
            ));
            (rows, more)
        }
    };
    Ok(CampaignSearchResult {
        campaign: campaign.to_string(),
        events,
        truncated,
        description,
    })
}
