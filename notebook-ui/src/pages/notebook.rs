//! A run's notebook: its cells in order with their outputs, run again one by one or
//! all together, exported and imported as a file.

use axum::extract::{Path, State};
use maud::{html, Markup};
use serde_json::Value;

use super::{layout, moment_link, status_badge, tabs, vtime, PageResult};
use crate::cells::{self, Cell};
use crate::state::AppState;
use crate::timeline;

pub async fn notebook_page(State(state): State<AppState>, Path(run): Path<String>) -> PageResult {
    let r = run.clone();
    let (tl, cells) = state
        .read(move |conn, store| {
            let tl = timeline::resolve(conn, store, &r)?;
            let cells = cells::list(conn, tl.notebook())?;
            Ok((tl, cells))
        })
        .await?;
    let nb = tl.notebook();
    Ok(layout(
        &format!("notebook {nb}"),
        html! {
            h1 { "Notebook of " (nb) }
            (tabs(nb, "notebook"))
            div.notebook-bar data-run=(nb) {
                button #rerun-all type="button" { "re-run all" }
                " " a href={ "/api/runs/" (nb) "/notebook" } { "export notebook" }
                " " label { "import " input #import-file type="file" accept=".json,application/json"; }
                span #notebook-message {}
            }
            @if cells.is_empty() {
                p { "No cells yet. Open a moment (from the " a href={ "/runs/" (nb) } { "triage page" }
                    " or the " a href={ "/runs/" (nb) "/timeline" } { "timeline" } ") and act from it." }
            }
            @for c in &cells { (cell_view(c)) }
        },
    ))
}

pub fn cell_view(c: &Cell) -> Markup {
    html! {
        section.cell id={ "cell-" (c.id) } data-cell=(c.id) data-status=(c.status.as_str()) {
            header {
                span.cell-id { "[" (c.id) "]" }
                " " span.kind { (c.action.kind()) }
                " " (c.action.summary())
                " " (status_badge(c.status.as_str()))
                @match c.same_as_before {
                    Some(true) => { " " span.badge.ok title="its last run gave the same output as the one before" { "same as before" } },
                    Some(false) => { " " span.badge.bad title="its last run gave a different output" { "changed" } },
                    None => {},
                }
                span.cell-buttons {
                    button.run-cell type="button" { "run again" }
                    button.delete-cell type="button" { "delete" }
                }
            }
            div.cell-from { "from " (moment_link(c.action.moment()))
                @if let Some(t) = &c.timeline { " · branch timeline " a href={ "/runs/" (t) } { (t) } }
            }
            @if c.status.busy() {
                p.pending { "running… " span.cell-progress {} }
            }
            @if let Some(e) = &c.error { p.error { (e) } }
            @if let Some(o) = &c.output {
                @if c.runs == 0 { p.hint { "Imported output, not run here yet." } }
                (output_view(c, o))
            }
        }
    }
}

fn output_view(c: &Cell, o: &Value) -> Markup {
    if c.action.kind() == "moment" {
        return html! {
            div.output {
                "phase " (o["state"]["phase"].as_str().unwrap_or("")) ", trace " code { (o["state"]["trace_hash"].as_str().unwrap_or("")) }
                ul { @for s in o["state"]["services"].as_array().into_iter().flatten() {
                    li { (s["name"].as_str().unwrap_or("")) ": " (s["life"].as_str().unwrap_or("")) }
                } }
            }
        };
    }
    let failing: Vec<&Value> = o["state"]["properties"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["failures"].as_u64().unwrap_or(0) > 0)
        .collect();
    html! {
        div.output {
            @if let Some(x) = o.get("exec").filter(|x| !x.is_null()) {
                div.exec {
                    "exit code " strong.exit-code { (x["code"]) }
                    @if !x["signal"].is_null() { ", signal " (x["signal"]) }
                    @if let Some(e) = x["error"].as_str() { " " span.error { (e) } }
                    " · " (vtime(x["started_ns"].as_u64().unwrap_or(0))) " → " (vtime(x["ended_ns"].as_u64().unwrap_or(0)))
                    pre.exec-output { @for l in x["output"].as_array().into_iter().flatten() {
                        @if l["stream"] == "stderr" { span.stderr { (l["line"].as_str().unwrap_or("")) } } @else { (l["line"].as_str().unwrap_or("")) }
                        "\n"
                    } }
                }
            }
            @if let Some(f) = o.get("file").filter(|x| !x.is_null()) {
                div.file {
                    (f["node"].as_str().unwrap_or("")) ":" (f["path"].as_str().unwrap_or("")) ", "
                    (f["size"]) " bytes, sha256 " code { (f["sha256"].as_str().unwrap_or("")) } " "
                    a.download href={ "/api/cells/" (c.id) "/file" } { "download" }
                    @if let Some(p) = f["preview"].as_str() { pre { (p) } }
                }
            }
            p {
                "branch " (vtime(o["from_ns"].as_u64().unwrap_or(0))) " → " (vtime(o["end_ns"].as_u64().unwrap_or(0)))
                ", " (o["events"]) " events, trace " code { (o["trace_hash"].as_str().unwrap_or("")) }
                @if let Some(e) = o["ending"].as_str() { ", stopped: " (e) }
                @if let Some(t) = o["timeline"].as_str() {
                    " · " (moment_link(&format!("{t}@{}", vtime(o["end_ns"].as_u64().unwrap_or(0)))))
                }
            }
            @if !failing.is_empty() {
                p { "failing properties: "
                    @for p in &failing { span.badge.bad { (p["id"].as_str().unwrap_or("")) } " " }
                }
            }
        }
    }
}
