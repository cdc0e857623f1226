//! A moment's page: the run replayed to RUN@VTIME from its nearest snapshot (a pending
//! page with progress until the replay is done), its services, VM states, properties
//! so far and each node's last log lines; stepping forward and back; and the actions
//! that branch from it (they become notebook cells).

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use explorer::moment::parse_vtime;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::{layout, moment_link, tabs, vtime, PageError};
use crate::error::AppError;
use crate::events::moment_of;
use crate::state::AppState;
use crate::timeline;

#[derive(Debug, Default, Deserialize)]
pub struct Step {
    /// `forward` or `back`.
    #[serde(default)]
    go: String,
    /// The interval, e.g. `500ms`.
    #[serde(default)]
    by: String,
}

pub async fn moment_page(
    State(state): State<AppState>,
    Path(text): Path<String>,
    Query(step): Query<Step>,
) -> Result<Response, PageError> {
    let moment = timeline::parse_moment(&text)?;
    if !step.go.is_empty() {
        let by = parse_vtime(&step.by).map_err(AppError::bad_request)?;
        let t = match step.go.as_str() {
            "forward" => moment.vtime_ns.saturating_add(by),
            _ => moment.vtime_ns.saturating_sub(by),
        };
        let next = moment_of(&moment.run, t);
        return Ok(Redirect::to(&format!("/moments/{next}?by={}", step.by)).into_response());
    }
    let id = moment.run.clone();
    let tl = state
        .read(move |conn, store| timeline::resolve(conn, store, &id))
        .await?;
    let key = format!("moment:{moment}");
    let view = state.jobs.cached(&key);
    let by = if step.by.is_empty() {
        "1s".to_string()
    } else {
        step.by.clone()
    };
    let title = moment_of(&moment.run, moment.vtime_ns);
    let body = html! {
        h1 { "Moment " (title) }
        (tabs(&tl.id, ""))
        form.step method="get" {
            button type="submit" name="go" value="back" { "◀ rewind" }
            " by " input type="text" name="by" value=(by) size="6";
            button type="submit" name="go" value="forward" { "step ▶" }
            " " a href={ "/runs/" (tl.id) "/timeline" } { "timeline" }
            " · " a href={ "/runs/" (tl.id) "/logs?to=" (vtime(moment.vtime_ns)) } { "logs up to here" }
        }
        @match &view {
            Some(v) => (state_view(v, tl.notebook(), tl.id.split_once('/').map(|(c, _)| c))),
            None => div #moment-pending data-moment=(title) {
                p.pending {
                    "Replaying to " (title)
                    (if tl.is_campaign() { " from the campaign's root by its path of forks… " } else { " from the nearest snapshot… " })
                    span #moment-progress {}
                }
            },
        }
    };
    Ok(layout(&title, body).into_response())
}

/// `run`: the notebook actions go to; `campaign`: the campaign of a campaign timeline.
fn state_view(v: &Value, run: &str, campaign: Option<&str>) -> Markup {
    let s = &v["state"];
    let nodes: Vec<String> = s["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["name"].as_str().map(String::from))
        .collect();
    let moment = v["moment"].as_str().unwrap_or("");
    html! {
        dl.facts {
            dt { "decision point" } dd { (vtime(v["decision_point_ns"].as_u64().unwrap_or(0))) " (runs stop at 10 ms steps)" }
            dt { "replayed from" } dd { (v["started_from"].as_str().unwrap_or("")) " at " (vtime(v["started_at_ns"].as_u64().unwrap_or(0))) }
            dt { "phase" } dd { (s["phase"].as_str().unwrap_or("")) }
            dt { "trace hash" } dd { code { (s["trace_hash"].as_str().unwrap_or("")) } }
            @if let Some(d) = v.get("divergence") {
                dt { "check" } dd {
                    @match d.as_str() {
                        Some(diff) => span.error { "the replay differs from the run: " (diff) },
                        None => span.ok { "replayed events identical to the run's" },
                    }
                }
            }
        }
        div.columns {
            section {
                h2 { "Services and VMs" }
                table {
                    thead { tr { th { "service" } th { "life" } th { "healthy" } th { "VM" } } }
                    tbody { @for svc in s["services"].as_array().into_iter().flatten() {
                        @let name = svc["name"].as_str().unwrap_or("");
                        tr {
                            td { (name) } td { (svc["life"].as_str().unwrap_or("")) } td { (svc["healthy"]) }
                            td { (s["nodes"].as_array().into_iter().flatten().find(|n| n["name"] == name).and_then(|n| n["state"].as_str()).unwrap_or("")) }
                        }
                    } }
                }
            }
            section {
                h2 { "Properties so far" }
                table {
                    thead { tr { th { "property" } th.num { "pass" } th.num { "fail" } } }
                    tbody { @for p in s["properties"].as_array().into_iter().flatten() {
                        tr class=(if p["failures"].as_u64().unwrap_or(0) > 0 { "failed" } else { "" }) {
                            td { (p["id"].as_str().unwrap_or("")) } td.num { (p["passes"]) } td.num { (p["failures"]) }
                        }
                    } }
                }
            }
        }
        h2 { "Last log lines" }
        div.node-logs { @for n in v["logs"].as_array().into_iter().flatten() {
            section.node-log {
                h3 { (n["node"].as_str().unwrap_or("")) }
                pre { @for l in n["lines"].as_array().into_iter().flatten() {
                    a href={ "/moments/" (l["moment"].as_str().unwrap_or("")) } { (vtime(l["vtime_ns"].as_u64().unwrap_or(0))) }
                    " " (l["text"].as_str().unwrap_or("")) "\n"
                } }
            }
        } }
        h2 { "Act from this moment" }
        p.hint { "Each action runs on a copy of the run (the stored run never changes) and becomes a cell of "
            a href={ "/runs/" (run) "/notebook" } { "the notebook of " (run) } "; the branch it makes is a timeline you can open, search and replay." }
        div.actions data-run=(run) data-moment=(moment) {
            form.action data-kind="moment" {
                h3 { "Keep this moment" }
                p.hint { "Saves the state shown here as a cell of the notebook." }
                button type="submit" { "save to notebook" }
            }
            form.action data-kind="exec" {
                h3 { "Run a command in a container" }
                label { "node " (node_select("node", &nodes)) }
                label { "command " input type="text" name="command" value="cat /etc/hosts" size="30"; }
                label { "wait at most " input type="text" name="limit" value="10s" size="5"; }
                button type="submit" { "exec" }
            }
            form.action data-kind="file" {
                h3 { "Extract a file" }
                label { "node " (node_select("node", &nodes)) }
                label { "path " input type="text" name="path" value="/etc/hostname" size="24"; }
                button type="submit" { "extract" }
            }
            form.action data-kind="branch" {
                h3 { "Branch with a new seed" }
                label { "branch id " input type="number" name="branch" value="1" min="0"; }
                label { "run for " input type="text" name="run_for" value="1s" size="5"; }
                button type="submit" { "branch" }
            }
            form.action data-kind="fault" {
                h3 { "Pause, kill or partition, then continue" }
                p.hint { "Injected now (World::inject) on a branch of this moment, which then runs for the interval." }
                label { "fault " select name="fault" { option value="pause" { "pause" } option value="kill" { "kill" } option value="partition" { "partition" } } }
                label { "node " (node_select("node", &nodes)) }
                label { "and (partition) " (node_select("other", &nodes)) }
                label { "pause for " input type="text" name="duration" value="1s" size="5"; }
                label { "run for " input type="text" name="run_for" value="2s" size="5"; }
                button type="submit" { "inject" }
            }
            p.error #action-error {}
        }
        p {
            "This moment: " (moment_link(moment))
            @if let Some(c) = campaign { " · its campaign: " a href={ "/campaigns/" (c) } { (c) } }
        }
    }
}

fn node_select(name: &str, nodes: &[String]) -> Markup {
    html! { select name=(name) { @for n in nodes { option value=(n) { (n) } } } }
}
