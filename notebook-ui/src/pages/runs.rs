//! The runs list and a run's (or branch's) triage page.

use axum::extract::{Path, State};
use maud::html;
use serde_json::Value;

use super::{layout, moment_link, status_badge, tabs, vtime, PageResult};
use crate::api::triage_value;
use crate::state::AppState;
use crate::timeline;
use crate::triage;

pub async fn runs_page(State(state): State<AppState>) -> PageResult {
    let runs = state.read(|conn, store| triage::runs(conn, store)).await?;
    Ok(layout(
        "runs",
        html! {
            h1 { "Runs" }
            @if runs.is_empty() {
                p { "No runs yet. Make one with " code { "detvm run COMPOSE --snapshot-at 10s,20s" } "." }
            } @else {
                table.runs {
                    thead { tr {
                        th { "run" } th { "status" } th { "seed" } th { "virtual time" }
                        th { "failed properties" } th { "snapshots" } th { "trace" } th { "compose" } th { "started" }
                    } }
                    tbody {
                        @for r in &runs {
                            tr data-run=(r.record.id) {
                                td { a href={ "/runs/" (r.record.id) } { (r.record.id) } }
                                td { (status_badge(r.record.status.as_str())) }
                                td { (r.record.seed) }
                                td { (r.record.vtime_end_ns.map(vtime).unwrap_or_default()) }
                                td.num { (r.failed_properties) " / " (r.properties) }
                                td { (r.snapshots.iter().map(|t| vtime(*t)).collect::<Vec<_>>().join(", ")) }
                                td { code { (r.record.trace_hash.clone().unwrap_or_default()) } }
                                td.compose { (r.record.compose) }
                                td { (r.record.started_at) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

fn examples(p: &Value) -> maud::Markup {
    html! {
        @for e in p["examples"].as_array().into_iter().flatten() {
            div.example {
                span class=(if e["passed"] == true { "badge ok" } else { "badge bad" }) {
                    (if e["passed"] == true { "pass" } else { "fail" })
                }
                " " (moment_link(e["moment"].as_str().unwrap_or("")))
                " on " (e["node"].as_str().unwrap_or(""))
                @if !e["details"].is_null() { " " code.details { (e["details"].to_string()) } }
            }
        }
    }
}

pub async fn run_page(State(state): State<AppState>, Path(id): Path<String>) -> PageResult {
    let (tl, v) = state
        .read(move |conn, store| {
            let tl = timeline::resolve(conn, store, &id)?;
            let v = triage_value(conn, store, &tl)?;
            Ok((tl, v))
        })
        .await?;
    if tl.is_run() || tl.is_campaign() {
        warm(&state, &tl.id);
    }
    let rec = &v["record"];
    let kind = if tl.is_run() {
        "run"
    } else if tl.is_campaign() {
        "timeline"
    } else {
        "branch"
    };
    let title = format!("{kind} {}", tl.id);
    let cells = v["cells"].as_array().cloned().unwrap_or_default();
    let branches: Vec<&Value> = cells.iter().filter(|c| !c["timeline"].is_null()).collect();
    Ok(layout(
        &title,
        html! {
            h1 { (title) " " (status_badge(&tl.status())) }
            (tabs(&tl.id, "triage"))
            @if tl.is_run() {
                dl.facts {
                    dt { "seed" } dd { (rec["seed"]) }
                    dt { "compose" } dd { (rec["compose"].as_str().unwrap_or("")) }
                    dt { "virtual time" } dd { (vtime(v["end_ns"].as_u64().unwrap_or(0))) }
                    dt { "trace hash" } dd { code { (rec["trace_hash"].as_str().unwrap_or("")) } }
                    dt { "reproduce" } dd { code { (rec["command"].as_str().unwrap_or("")) } }
                    dt { "snapshots" } dd {
                        @for t in v["snapshots"].as_array().into_iter().flatten() {
                            (moment_link(&format!("{}@{}", tl.id, vtime(t.as_u64().unwrap_or(0))))) " "
                        }
                        @if v["snapshots"].as_array().is_none_or(|s| s.is_empty()) {
                            "none (moments replay from boot; make runs with --snapshot-at 10s,20s,…)"
                        }
                    }
                    @if let Some(m) = rec["message"].as_str() { dt { "message" } dd.error { (m) } }
                }
                h2 { "Properties" }
                table.properties {
                    thead { tr {
                        th { "status" } th { "kind" } th { "property" } th.num { "pass" } th.num { "fail" }
                        th { "first failure" } th { "examples" }
                    } }
                    tbody {
                        @for p in v["properties"].as_array().into_iter().flatten() {
                            tr class=(if p["status"] == "failed" { "failed" } else { "" }) {
                                td { (status_badge(if p["status"] == "failed" { "failed" } else { "passed" })) }
                                td { (p["kind"].as_str().unwrap_or("")) }
                                td {
                                    (p["message"].as_str().unwrap_or(""))
                                    @if let Some(r) = p["reason"].as_str() { div.reason { (r) } }
                                }
                                td.num { (p["passes"]) }
                                td.num { (p["failures"]) }
                                td.first-failure {
                                    @if let Some(m) = p["first_failure_moment"].as_str() {
                                        (moment_link(m)) " on " (p["first_failure"]["service"].as_str().unwrap_or(""))
                                    }
                                }
                                td { (examples(p)) }
                            }
                        }
                    }
                }
            } @else if tl.is_campaign() {
                dl.facts {
                    dt { "campaign" } dd { a href={ "/campaigns/" (tl.run) } { (tl.run) } }
                    dt { "from" } dd {
                        @match v["parent"].as_str() {
                            Some(p) => { (moment_link(p)) " as branch " (rec["branch"]) },
                            None => "the root: booted and set up, no faults",
                        }
                    }
                    dt { "ends" } dd { (vtime(v["end_ns"].as_u64().unwrap_or(0))) @if rec["finished"] == true { " (played to the run's end and judged)" } }
                    dt { "end moment" } dd { (moment_link(&format!("{}@{}", tl.id, vtime(v["end_ns"].as_u64().unwrap_or(0))))) }
                    dt { "novelty score" } dd { (rec["score"]) }
                    dt { "faults" } dd { code { (rec["faults"].as_str().unwrap_or("")) } }
                    dt { "failed properties" } dd { (rec["failed"].as_array().map(|f| f.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("; ")).unwrap_or_default()) }
                    @if let Some(e) = rec["error"].as_str() { dt { "error" } dd.error { (e) } }
                }
            } @else {
                @let cell = rec;
                dl.facts {
                    dt { "from" } dd { (moment_link(v["parent"].as_str().unwrap_or(""))) }
                    dt { "action" } dd { a href={ "/runs/" (tl.run) "/notebook#cell-" (cell["id"]) } { "cell " (cell["id"]) } ": " code { (cell["action"].to_string()) } }
                    dt { "ends" } dd { (vtime(v["end_ns"].as_u64().unwrap_or(0))) }
                    @if let Some(h) = cell["output"]["trace_hash"].as_str() { dt { "trace hash" } dd { code { (h) } } }
                    @if let Some(e) = cell["error"].as_str() { dt { "error" } dd.error { (e) } }
                }
                @if let Some(props) = cell["output"]["state"]["properties"].as_array() {
                    h2 { "Properties at the branch's end" }
                    table.properties {
                        thead { tr { th { "property" } th.num { "pass" } th.num { "fail" } } }
                        tbody { @for p in props { tr class=(if p["failures"].as_u64().unwrap_or(0) > 0 { "failed" } else { "" }) {
                            td { (p["id"].as_str().unwrap_or("")) } td.num { (p["passes"]) } td.num { (p["failures"]) }
                        } } }
                    }
                }
            }
            h2 { "Utilization" }
            @let u = &v["utilization"];
            p { (u["events"]) " events over " (vtime(u["end_ns"].as_u64().unwrap_or(0).saturating_sub(u["start_ns"].as_u64().unwrap_or(0)))) " of virtual time" }
            table.utilization {
                thead { tr { th { "node" } th.num { "events" } th.num { "network frames" } th.num { "log lines" } th.num { "state changes" } } }
                tbody { @for n in u["nodes"].as_array().into_iter().flatten() { tr {
                    td { (n["node"].as_str().unwrap_or("")) } td.num { (n["events"]) } td.num { (n["messages"]) }
                    td.num { (n["log_lines"]) } td.num { (n["state_changes"]) }
                } } }
            }
            @if tl.has_notebook() && !branches.is_empty() {
                h2 { "Branches from the notebook" }
                ul.branches { @for c in &branches { li {
                    a href={ "/runs/" (c["timeline"].as_str().unwrap_or("")) } { (c["timeline"].as_str().unwrap_or("")) }
                    " " (status_badge(c["status"].as_str().unwrap_or(""))) " " (c["action"]["kind"].as_str().unwrap_or(""))
                    " from " (c["action"]["moment"].as_str().unwrap_or(""))
                } } }
            }
        },
    ))
}

/// Fills the moment cache for `run` (a stored run, or a campaign timeline `C/T<n>`) in
/// the background: a replay of the whole of it that keeps a snapshot every second, so
/// its moments open fast; one at a time per run or timeline.
fn warm(state: &AppState, run: &str) {
    let db = state.db.clone();
    let run = run.to_string();
    state
        .jobs
        .start(&format!("warm:{run}"), false, move |vtime| {
            let mut progress = crate::engine::Progress::new(vtime, false);
            explorer::at_moment::warm(db.home(), &run, &db.moments, &mut progress)
                .map(|()| serde_json::Value::Null)
                .map_err(|e| e.to_string())
        });
}
