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

type Row = (i64, i64, i64, String, String, String);

fn read_row(r: &rusqlite::Row) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

/// A stored row (`timeline, seq, vtime_ns, node, kind, body`) as a result.
fn event(campaign: &str, (t, seq, vtime, node, kind, body): Row) -> CampaignEvent {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    let timeline = format!("{campaign}/T{t}");
    CampaignEvent {
        event: EventRow {
            seq: seq as u64,
            vtime_ns: vtime as u64,
            node,
            label: events::label(&kind, &body),
            text: events::text(&kind, &body),
            moment: events::moment_of(&timeline, vtime as u64),
        },
        timeline,
    }
}

/// `filter`'s SQL conditions, with the time range as `?2` and `?3`, and the arguments
/// after the campaign's.
fn in_range(filter: &Filter, range: (u64, u64)) -> Result<(String, Vec<Box<dyn ToSql>>), AppError> {
    let (cond, mut args) = search::conditions(filter, 4)?;
    let (from, to) = (range.0 as i64, i64::try_from(range.1).unwrap_or(i64::MAX));
    args.insert(0, Box::new(to));
    args.insert(0, Box::new(from));
    Ok((format!("vtime_ns >= ?2 AND vtime_ns < ?3{cond}"), args))
}

/// Events of `campaign` matching `filter` in the time range, by timeline then seq.
fn matching(
    conn: &Connection,
    campaign: &str,
    filter: &Filter,
    range: (u64, u64),
    limit: usize,
) -> Result<Vec<CampaignEvent>, AppError> {
    let (cond, args) = in_range(filter, range)?;
    let sql = format!(
        "SELECT timeline, seq, vtime_ns, node, kind, body FROM timeline_events
         WHERE campaign = ?1 AND {cond} ORDER BY timeline, seq LIMIT {limit}"
    );
    let mut all: Vec<&dyn ToSql> = vec![&campaign];
    all.extend(args.iter().map(|a| a.as_ref()));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(all), read_row)?;
    rows.map(|r| Ok(event(campaign, r?)))
        .collect::<Result<_, rusqlite::Error>>()
        .map_err(AppError::from)
}

/// The first `limit` events matching `filter` in the range (by timeline then seq) as
/// (timeline, seq, vtime): a temporal search judges these and reads whole rows only
/// for the ones it returns.
fn candidates(
    conn: &Connection,
    campaign: &str,
    filter: &Filter,
    range: (u64, u64),
    limit: usize,
) -> Result<Vec<(i64, i64, u64)>, AppError> {
    let (cond, args) = in_range(filter, range)?;
    let sql = format!(
        "SELECT timeline, seq, vtime_ns FROM timeline_events
         WHERE campaign = ?1 AND {cond} ORDER BY timeline, seq LIMIT {limit}"
    );
    let mut all: Vec<&dyn ToSql> = vec![&campaign];
    all.extend(args.iter().map(|a| a.as_ref()));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(all), |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
    })?;
    rows.collect::<Result<_, _>>().map_err(AppError::from)
}

/// One stored event by its key.
fn one(
    conn: &Connection,
    campaign: &str,
    timeline: i64,
    seq: i64,
) -> Result<CampaignEvent, AppError> {
    let mut stmt = conn.prepare_cached(
        "SELECT timeline, seq, vtime_ns, node, kind, body FROM timeline_events
         WHERE campaign = ?1 AND timeline = ?2 AND seq = ?3",
    )?;
    let row = stmt.query_row(rusqlite::params![campaign, timeline, seq], read_row)?;
    Ok(event(campaign, row))
}

/// Per timeline, the sorted virtual times of events matching `filter`.
fn times(
    conn: &Connection,
    campaign: &str,
    filter: &Filter,
) -> Result<HashMap<i64, Vec<u64>>, AppError> {
    let (cond, args) = search::conditions(filter, 2)?;
    let sql = format!("SELECT timeline, vtime_ns FROM timeline_events WHERE campaign = ?1{cond}");
    let mut all: Vec<&dyn ToSql> = vec![&campaign];
    all.extend(args.iter().map(|a| a.as_ref()));
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut out: HashMap<i64, Vec<u64>> = HashMap::new();
    let rows = stmt.query_map(params_from_iter(all), |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (t, v) = row?;
        out.entry(t).or_default().push(v as u64);
    }
    for v in out.values_mut() {
        v.sort_unstable();
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
            let keys = candidates(conn, campaign, &a, range, MAX_CANDIDATES)?;
            let capped = keys.len() == MAX_CANDIDATES;
            let none = Vec::new();
            let mut chosen = Vec::new();
            for (t, seq, vtime) in keys {
                let bs = b_times.get(&t).unwrap_or(&none);
                if search::related(bs, vtime, relation, within) {
                    chosen.push((t, seq));
                    if chosen.len() > limit {
                        break;
                    }
                }
            }
            let more = chosen.len() > limit || capped;
            chosen.truncate(limit);
            let rows = chosen
                .into_iter()
                .map(|(t, seq)| one(conn, campaign, t, seq))
                .collect::<Result<Vec<_>, _>>()?;
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
