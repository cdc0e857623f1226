//! The campaigns' JSON API: the list, one campaign (tree, properties, findings), a
//! search over all its timelines, and `live`: server-sent events that push each new
//! timeline as the campaign store gets it, while the campaign runs.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::campaign_search::{self, CampaignSearchResult};
use crate::campaigns::{self, CampaignRow};
use crate::error::{ApiResult, AppError};
use crate::search;
use crate::state::AppState;
use crate::timeline::check_campaign;

/// How often the live stream looks at the store (one cheap `MAX(id)` query).
pub const LIVE_POLL: Duration = Duration::from_millis(500);

pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<CampaignRow>>> {
    Ok(Json(state.read(|conn, _| campaigns::list(conn)).await?))
}

pub async fn detail(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let home = state.db.home().to_path_buf();
    Ok(Json(
        state
            .read(move |conn, _| campaigns::detail(conn, &home, &id))
            .await?,
    ))
}

pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<search::Query>,
) -> ApiResult<Json<CampaignSearchResult>> {
    Ok(Json(
        state
            .read(move |conn, _| {
                campaigns::status(conn, &id)?;
                campaign_search::search(conn, &id, &q)
            })
            .await?,
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct Live {
    /// Only timelines with a higher id (the page sends the last one it shows).
    pub after: Option<u64>,
}

/// Where the live stream is: the last timeline sent, and whether it said `end`.
struct Cursor {
    state: AppState,
    campaign: String,
    after: Option<u64>,
    ended: bool,
    first: bool,
}

/// What one look at the store gives: new timelines, and the status if it ended.
fn look(
    conn: &rusqlite::Connection,
    campaign: &str,
    after: Option<u64>,
) -> Result<(Vec<Value>, String), AppError> {
    // The status first: a campaign that ended has stored all its timelines by then.
    let status = campaigns::status(conn, campaign)?;
    let max = campaigns::max_timeline(conn, campaign)?;
    let new = match max {
        Some(m) if after.is_none_or(|a| m > a) => {
            campaigns::timelines_after(conn, campaign, after)?
        }
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for t in &new {
        let mut v = campaigns::timeline_json(campaign, t);
        v["campaign_status"] = json!(status);
        out.push(v);
    }
    Ok((out, status))
}

/// `GET /api/campaigns/C/live?after=N`: an event `timeline` (the timeline as the tree
/// shows it, with `campaign_status` when it was read) for each timeline past `after`,
/// then, while the campaign runs, each new one as it is stored (the store is looked at
/// every 500 ms); an event `end` (`{"status": …}`) once the campaign has finished and
/// all its timelines were sent, and the stream closes.
pub async fn live(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Live>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    check_campaign(&id)?;
    let c = id.clone();
    state
        .read(move |conn, _| campaigns::status(conn, &c))
        .await?;
    let cursor = Cursor {
        state,
        campaign: id,
        after: q.after,
        ended: false,
        first: true,
    };
    let events = stream::unfold(cursor, |mut cur| async move {
        if cur.ended {
            return None;
        }
        loop {
            if !cur.first {
                tokio::time::sleep(LIVE_POLL).await;
            }
            cur.first = false;
            let (c, after) = (cur.campaign.clone(), cur.after);
            let looked = cur.state.read(move |conn, _| look(conn, &c, after)).await;
            let (new, status) = match looked {
                Ok(x) => x,
                Err(e) => {
                    cur.ended = true;
                    let ev = Event::default()
                        .event("error")
                        .data(json!({"error": e.message}).to_string());
                    return Some((vec![ev], cur));
                }
            };
            let mut out: Vec<Event> = Vec::new();
            for t in new {
                cur.after = t["id"].as_u64().or(cur.after);
                out.push(Event::default().event("timeline").data(t.to_string()));
            }
            if status != "running" {
                cur.ended = true;
                out.push(
                    Event::default()
                        .event("end")
                        .data(json!({"status": status}).to_string()),
                );
            }
            if !out.is_empty() {
                return Some((out, cur));
            }
        }
    });
    let flat = futures_util::StreamExt::flat_map(events, |batch| {
        stream::iter(batch.into_iter().map(Ok::<Event, Infallible>))
    });
    Ok(Sse::new(flat).keep_alive(KeepAlive::default()))
}
