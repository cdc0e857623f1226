//! The campaigns list, a campaign's page (its tree of timelines, live while it runs,
//! its properties and findings) and the log explorer over all its timelines.

use axum::extract::{Path, Query, State};
use maud::{html, Markup};
use serde_json::{json, Value};

use super::timeline::search_form;
use super::{layout, moment_link, script_json, status_badge, vtime, PageResult};
use crate::campaign_search;
use crate::campaigns;
use crate::search::Query as SearchQuery;
use crate::state::AppState;

pub async fn campaigns_page(State(state): State<AppState>) -> PageResult {
    let list = state.read(|conn, _| campaigns::list(conn)).await?;
    Ok(layout(
        "campaigns",
        html! {
            h1 { "Campaigns" }
            @if list.is_empty() {
                p { "No campaigns yet. Start one with " code { "detvm explore COMPOSE --branches 40" } "." }
            } @else {
                table.campaigns {
                    thead { tr {
                        th { "campaign" } th { "status" } th { "seed" } th.num { "branches" }
                        th.num { "failing timelines" } th { "failed properties" } th { "stopped" } th { "compose" } th { "started" }
                    } }
                    tbody { @for c in &list { tr data-campaign=(c.id) {
                        td { a href={ "/campaigns/" (c.id) } { (c.id) } }
                        td { (status_badge(&c.status)) }
                        td { (c.seed) }
                        td.num { (c.branches) }
                        td.num { (c.failing_timelines) }
                        td { (c.failed_properties.join("; ")) }
                        td { (c.stopped.clone().unwrap_or_default()) }
                        td.compose { (c.compose) }
                        td { (c.started_at) }
                    } } }
                }
            }
        },
    ))
}

fn campaign_tabs(id: &str, current: &str) -> Markup {
    let tab = |name: &str, href: String| {
        html! { a class=(if name == current { "tab current" } else { "tab" }) href=(href) { (name) } }
    };
    html! {
        nav.tabs {
            (tab("tree and triage", format!("/campaigns/{id}")))
            (tab("logs", format!("/campaigns/{id}/logs")))
        }
    }
}

fn properties(v: &Value) -> Markup {
    html! {
        table.properties {
            thead { tr {
                th { "status" } th { "kind" } th { "property" } th.num { "timelines passing" }
                th.num { "timelines failing" } th { "first failure" } th { "examples" }
            } }
            tbody { @for p in v["properties"].as_array().into_iter().flatten() {
                @let failed = p["status"].as_str().is_some_and(|s| s.starts_with("fail"));
                tr class=(if failed { "failed" } else { "" }) {
                    td { (status_badge(p["status"].as_str().unwrap_or(""))) }
                    td { (p["kind"].as_str().unwrap_or("")) }
                    td {
                        (p["message"].as_str().unwrap_or(""))
                        @if let Some(logs) = p["logs"].as_array().filter(|l| !l.is_empty()) {
                            details.logs { summary { "last log lines before the first failure" }
                                pre { @for l in logs { (l.as_str().unwrap_or("")) "\n" } } }
                        }
                    }
                    td.num { (p["passing"].as_u64().map(|n| n.to_string()).unwrap_or_default()) }
                    td.num { (p["failing"]) }
                    td.first-failure { @if let Some(m) = p["first_failure"].as_str() { (moment_link(m)) } }
                    td { @for e in p["examples"].as_array().into_iter().flatten().filter(|e| **e != p["first_failure"]) {
                        (moment_link(e.as_str().unwrap_or(""))) " "
                    } }
                }
            } }
        }
    }
}

/// Findings against earlier campaigns (New, Ongoing, Resolved), as the report has them.
fn findings(v: &Value) -> Markup {
    let list = v["findings"].as_array().cloned().unwrap_or_default();
    html! {
        h2 { "Findings" }
        @if list.is_empty() {
            p.hint { @if v["findings"].is_null() {
                "This campaign's report has no findings (New, Ongoing, Resolved against the previous campaign of the same compose file): made by a detvm without them, or still running."
            } @else { "No findings." } }
        } @else {
            table.findings {
                thead { tr { th { "finding" } th { "property" } th { "against" } th { "moment" } } }
                tbody { @for f in &list {
                    @let status = f["status"].as_str().or(f["kind"].as_str()).unwrap_or("");
                    tr class=(if status.eq_ignore_ascii_case("resolved") { "" } else { "failed" }) {
                        td { span class={ "badge finding " (status.to_ascii_lowercase()) } { (status) } }
                        td { (f["message"].as_str().or(f["property"].as_str()).or(f["id"].as_str()).unwrap_or("")) }
                        td { @match f["previous"].as_str() {
                            Some(p) => a href={ "/campaigns/" (p) } { (p) },
                            None => "no earlier campaign",
                        } }
                        td { @if let Some(m) = first_failure_of(v, f) { (moment_link(m)) } }
                    }
                } }
            }
        }
    }
}

/// A finding's property's first failing moment in this campaign (none if resolved).
fn first_failure_of<'a>(v: &'a Value, finding: &Value) -> Option<&'a str> {
    v["properties"]
        .as_array()?
        .iter()
        .find(|p| p["message"] == finding["message"])?["first_failure"]
        .as_str()
}

/// One timeline of the tree (the script draws new ones the same way).
fn timeline_item(t: &Value) -> Markup {
    let id = t["timeline"].as_str().unwrap_or("");
    let status = t["status"].as_str().unwrap_or("");
    html! {
        span.tl-head {
            a.tl-id href={ "/runs/" (id) } { "T" (t["id"]) }
            " " (status_badge(status))
            @if let Some(fork) = t["fork_moment"].as_str() {
                " branch " (t["branch"]) " from " (moment_link(fork))
            } @else { " root (boot and setup)" }
            " → " (vtime(t["end_ns"].as_u64().unwrap_or(0)))
            " · score " (format!("{:.1}", t["score"].as_f64().unwrap_or(0.0)))
            " · " a.tl-moment href={ "/moments/" (t["end_moment"].as_str().unwrap_or("")) } { "end moment" }
            @if let Some(m) = t["failure_moment"].as_str() {
                " · " a.tl-failure href={ "/moments/" (m) } { "failure at " (m.rsplit('@').next().unwrap_or("")) }
            }
            " · " a href={ "/runs/" (id) "/logs" } { "events" }
            @if let Some(f) = t["failed"].as_array().filter(|f| !f.is_empty()) {
                " · " span.error { "failed: " (f.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("; ")) }
            }
            @if let Some(e) = t["error"].as_str() { " · " span.error { (e) } }
        }
        @if let Some(faults) = t["faults"].as_str().filter(|f| !f.is_empty()) {
            div.tl-faults { "faults: " (faults) }
        }
    }
}

/// The tree as nested lists, children under their parent, by id.
fn tree(timelines: &[Value], parent: Option<u64>) -> Markup {
    let children: Vec<&Value> = timelines
        .iter()
        .filter(|t| t["parent"].as_u64() == parent)
        .collect();
    html! {
        @for t in children {
            @let id = t["id"].as_u64().unwrap_or(0);
            li id={ "t" (id) } data-id=(id) class={ "tl " (t["status"].as_str().unwrap_or("")) } {
                (timeline_item(t))
                ul.children { (tree(timelines, Some(id))) }
            }
        }
    }
}

pub async fn campaign_page(State(state): State<AppState>, Path(id): Path<String>) -> PageResult {
    let (c, home) = (id.clone(), state.db.home().to_path_buf());
    let v = state
        .read(move |conn, _| campaigns::detail(conn, &home, &c))
        .await?;
    let timelines = v["timelines"].as_array().cloned().unwrap_or_default();
    let last = timelines.iter().filter_map(|t| t["id"].as_u64()).max();
    let status = v["status"].as_str().unwrap_or("");
    let config = json!({ "campaign": id, "after": last, "status": status });
    Ok(layout(
        &format!("campaign {id}"),
        html! {
            h1 { "Campaign " (id) " " span #campaign-status { (status_badge(status)) } }
            (campaign_tabs(&id, "tree and triage"))
            dl.facts {
                dt { "seed" } dd { (v["seed"]) }
                dt { "compose" } dd { (v["compose"].as_str().unwrap_or("")) }
                dt { "started" } dd { (v["started_at"].as_str().unwrap_or("")) }
                dt { "timelines" } dd #campaign-counts {
                    (timelines.len()) " (" (v["branches"]) " branches; " (v["failing_timelines"]) " failing, "
                    (v["finished_timelines"]) " played to the end) over " (vtime(v["virtual_ns"].as_u64().unwrap_or(0))) " of virtual time"
                }
                @if let Some(s) = v["stopped"].as_str() { dt { "stopped" } dd { (s) } }
                @if let Some(w) = v["wall_ms"].as_u64() { dt { "wall time" } dd { (format!("{:.1}s", w as f64 / 1000.0)) } }
                @if let Some(k) = v["coverage_keys"].as_u64() { dt { "coverage keys" } dd { (k) } }
                dt { "replay a moment" } dd { code { "detvm replay " (id) "/T<n>@VTIME" } }
            }
            h2 { "Properties across the campaign" }
            @if status == "running" {
                p.hint { "While the campaign runs: judged over the rounds committed so far; the final table comes with its report at the end." }
            }
            (properties(&v))
            (findings(&v))
            h2 { "Tree of timelines" }
            p.hint {
                "Each branch forks from its parent's end with new randomness (branch id) and new faults. "
                "Its link opens its triage; its moments (its end, and a failing property's example in it) are rebuilt from the root by the campaign's path of forks."
                @if status == "running" { " New timelines appear here as the campaign stores them." }
            }
            p #live-state.hint {}
            ul.tree #campaign-tree { (tree(&timelines, None)) }
            script #campaign-config type="application/json" { (script_json(&config)) }
            script src="/static/campaign.js" defer {}
        },
    ))
}

pub async fn campaign_logs_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<SearchQuery>,
) -> PageResult {
    let (c, query) = (id.clone(), q.clone());
    let (status, nodes, found) = state
        .read(move |conn, _| {
            let status = campaigns::status(conn, &c)?;
            // Every node boots in the root (T0), so its events name them all (reading
            // one timeline, not the whole campaign); `world` holds network faults.
            let mut stmt = conn.prepare_cached(
                "SELECT DISTINCT node FROM timeline_events WHERE campaign = ?1 AND timeline = 0 ORDER BY node",
            )?;
            let mut nodes = stmt
                .query_map([&c], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            if !nodes.iter().any(|n| n == "world") {
                nodes.push("world".to_string());
            }
            Ok((status, nodes, campaign_search::search(conn, &c, &query)))
        })
        .await?;
    Ok(layout(
        &format!("logs of campaign {id}"),
        html! {
            h1 { "Logs of campaign " (id) " " (status_badge(&status)) }
            (campaign_tabs(&id, "logs"))
            p.hint { "Every timeline's own events (from its fork moment to its end). A temporal condition is judged within each timeline." }
            (search_form(&q, &nodes))
            @match found {
                Err(e) => p.error { (e.message) },
                Ok(found) => {
                    p { (found.events.len()) @if found.truncated { "+" } " events: " (found.description) }
                    table.events {
                        thead { tr { th { "timeline" } th { "moment" } th { "node" } th { "kind" } th { "event" } } }
                        tbody { @for e in &found.events { tr {
                            td { a href={ "/runs/" (e.timeline) } { (e.timeline) } }
                            td { (moment_link(&e.event.moment)) }
                            td { (e.event.node) }
                            td { (e.event.label) }
                            td.text { (e.event.text) }
                        } } }
                    }
                    @if found.truncated { p.hint { "More events matched; narrow the search or the time range." } }
                }
            }
        },
    ))
}
