//! The timeline view (a canvas the script fills from `/api/runs/{id}/lanes`) and the
//! log explorer (a form whose results the server renders with the API's search).

use axum::extract::{Path, Query, State};
use maud::html;
use serde_json::json;

use super::{layout, moment_link, script_json, status_badge, tabs, vtime, PageResult};
use crate::events::LABELS;
use crate::search::{self, Query as SearchQuery};
use crate::state::AppState;
use crate::timeline;

pub async fn timeline_page(State(state): State<AppState>, Path(id): Path<String>) -> PageResult {
    let tl = state
        .read(move |conn, store| timeline::resolve(conn, store, &id))
        .await?;
    let config = json!({ "timeline": tl.id });
    Ok(layout(
        &format!("timeline {}", tl.id),
        html! {
            h1 { "Timeline " (tl.id) " " (status_badge(&tl.status())) }
            (tabs(&tl.id, "timeline"))
            p.hint {
                "Scroll to zoom, drag to pan, double-click to reset. Click a mark to open its moment; "
                "click an empty spot to open the moment at that time."
            }
            div.timeline-bar {
                span #timeline-window {}
                " " button #timeline-reset type="button" { "whole run" }
            }
            div.timeline-wrap { canvas #timeline height="360" {} }
            div #timeline-tip.tip {}
            div.legend {
                span.key.state { "node state" } span.key.start { "service start" } span.key.exit { "service exit" }
                span.key.pass { "property first pass" } span.key.fail { "property failure" }
                span.key.fault { "fault span" } span.key.msgs { "message density" } span.key.logs { "log density" }
            }
            script #timeline-config type="application/json" { (script_json(&config)) }
            script src="/static/timeline.js" defer {}
        },
    ))
}

pub async fn logs_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<SearchQuery>,
) -> PageResult {
    let query = q.clone();
    let (tl, nodes, found) = state
        .read(move |conn, store| {
            let tl = timeline::resolve(conn, store, &id)?;
            let nodes = crate::aggregate::nodes(conn, &tl)?;
            let found = search::search(conn, &tl, &query);
            Ok((tl, nodes, found))
        })
        .await?;
    Ok(layout(
        &format!("logs {}", tl.id),
        html! {
            h1 { "Logs of " (tl.id) " " (status_badge(&tl.status())) }
            (tabs(&tl.id, "logs"))
            (search_form(&q, &nodes))
            @match found {
                Err(e) => p.error { (e.message) },
                Ok(found) => {
                    p { (found.events.len()) @if found.truncated { "+" } " events: " (found.description) }
                    table.events {
                        thead { tr { th { "moment" } th { "node" } th { "kind" } th { "event" } } }
                        tbody { @for e in &found.events { tr {
                            td { (moment_link(&e.moment)) }
                            td { (e.node) }
                            td { (e.label) }
                            td.text { (e.text) }
                        } } }
                    }
                    @if found.truncated { p.hint { "More events matched; narrow the search or the time range." } }
                }
            }
            p.hint { "Times are virtual: " (vtime(1_500_000_000)) ", 1500ms, 42ns." }
        },
    ))
}

/// The log explorer's form (events A, and the temporal condition on events B).
pub(super) fn search_form(q: &SearchQuery, nodes: &[String]) -> maud::Markup {
    let select = |name: &str, value: &str, options: &[String]| {
        html! {
            select name=(name) {
                option value="" { "any" }
                @for o in options { option value=(o) selected[o == value] { (o) } }
            }
        }
    };
    let labels: Vec<String> = LABELS.iter().map(|s| s.to_string()).collect();
    let ops = [
        ("", "—"),
        ("preceded_by", "preceded by"),
        ("not_preceded_by", "not preceded by"),
        ("followed_by", "followed by"),
        ("not_followed_by", "not followed by"),
    ];
    html! {
        form.search method="get" {
            fieldset {
                legend { "Events A" }
                label { "node " (select("node", &q.node, nodes)) }
                label { "kind " (select("kind", &q.kind, &labels)) }
                label { "text " input type="search" name="text" value=(q.text) placeholder="contains…"; }
                label { "from " input type="text" name="from" value=(q.from) placeholder="0s" size="8"; }
                label { "to " input type="text" name="to" value=(q.to) placeholder="end" size="8"; }
            }
            fieldset {
                legend { "that are" }
                select name="op" { @for (v, t) in ops { option value=(v) selected[q.op == v] { (t) } } }
                label { "node " (select("b_node", &q.b_node, nodes)) }
                label { "kind " (select("b_kind", &q.b_kind, &labels)) }
                label { "text " input type="search" name="b_text" value=(q.b_text) placeholder="contains…"; }
                label { "within " input type="text" name="within" value=(q.within) placeholder="any time" size="8"; }
            }
            button type="submit" { "search" }
        }
    }
}
