//! Server-rendered pages (maud) with a little plain JavaScript (`assets/`): no
//! library, nothing loaded from the network.

mod campaigns;
mod moment;
mod notebook;
mod runs;
mod timeline;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use explorer::moment::format_vtime;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::error::AppError;

pub use campaigns::{campaign_logs_page, campaign_page, campaigns_page};
pub use moment::moment_page;
pub use notebook::notebook_page;
pub use runs::{run_page, runs_page};
pub use timeline::{logs_page, timeline_page};

/// A page that failed: the message in the page, with the status code.
pub struct PageError(pub AppError);

impl From<AppError> for PageError {
    fn from(e: AppError) -> Self {
        PageError(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = layout(
            "error",
            html! {
                h1 { "Something went wrong" }
                p.error { (self.0.message) }
                p { a href="/" { "back to the runs" } }
            },
        );
        (self.0.status, page).into_response()
    }
}

pub type PageResult = Result<Html<String>, PageError>;

pub fn layout(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · detvm notebook" }
                    link rel="stylesheet" href="/static/style.css";
                    script src="/static/notebook.js" defer {}
                }
                body {
                    header.top {
                        a.brand href="/" { "detvm notebook" }
                        nav { a href="/" { "runs" } " " a href="/campaigns" { "campaigns" } }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

pub fn vtime(ns: u64) -> String {
    format_vtime(ns)
}

/// A link to a moment's page.
pub fn moment_link(moment: &str) -> Markup {
    html! { a.moment href={ "/moments/" (moment) } { (moment) } }
}

pub fn status_badge(status: &str) -> Markup {
    let class = match status {
        "passed" | "done" | "finished" | "explored" => "ok",
        "running" | "queued" | "new" => "busy",
        _ => "bad",
    };
    html! { span class={ "badge " (class) } { (status) } }
}

/// Tabs of a timeline's pages: its campaign's (for a campaign timeline or a branch of
/// one) and its notebook.
pub fn tabs(id: &str, current: &str) -> Markup {
    let notebook = crate::timeline::notebook_of(id);
    let campaign = id.split_once('/').map(|(c, _)| c);
    let tab = |name: &str, href: String| {
        html! { a class=(if name == current { "tab current" } else { "tab" }) href=(href) { (name) } }
    };
    html! {
        nav.tabs {
            (tab("triage", format!("/runs/{id}")))
            (tab("timeline", format!("/runs/{id}/timeline")))
            (tab("logs", format!("/runs/{id}/logs")))
            @if let Some(c) = campaign {
                (tab("campaign", format!("/campaigns/{c}")))
            }
            (tab("notebook", format!("/runs/{notebook}/notebook")))
            a.tab href={ "/api/runs/" (id) "/export/trace.json" } { "export trace (Perfetto)" }
            a.tab href={ "/api/runs/" (id) "/export/events.jsonl" } { "export events (JSON lines)" }
        }
    }
}

pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&str, &str) = match file.as_str() {
        "style.css" => (include_str!("../assets/style.css"), "text/css"),
        "notebook.js" => (include_str!("../assets/notebook.js"), "text/javascript"),
        "timeline.js" => (include_str!("../assets/timeline.js"), "text/javascript"),
        "campaign.js" => (include_str!("../assets/campaign.js"), "text/javascript"),
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn not_found() -> PageError {
    PageError(AppError::not_found("no such page"))
}

/// JSON for a page's script, safe inside a `<script>` element.
pub fn script_json(value: &serde_json::Value) -> Markup {
    let text = value.to_string().replace("</", "<\\/");
    PreEscaped(text)
}
