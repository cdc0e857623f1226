//! The HTTP server: routes, the access guard, and `serve` for `detvm notebook`.
//!
//! Access: it listens on 127.0.0.1 by default. Any other address needs a token (it
//! refuses to start without one), and with a token every request must carry it: an
//! `Authorization: Bearer TOKEN` header, the `detvm_token` cookie, or `?token=TOKEN`
//! once (the page then sets the cookie). Without a token, requests must name a
//! loopback host (no DNS rebinding). Requests that change anything must be JSON (or
//! carry `X-Detvm: 1`), which a cross-site form cannot send.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use tower::util::MapRequestLayer;
use tower::Layer;

use crate::api;
use crate::campaign_api;
use crate::db::Db;
use crate::error::AppError;
use crate::jobs::Jobs;
use crate::notebook::MAX_IMPORT_BYTES;
use crate::pages;
use crate::state::AppState;

#[derive(Debug, Clone)]
pub struct Config {
    /// The `.detvm` folder.
    pub home: PathBuf,
    pub listen: SocketAddr,
    pub token: Option<String>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

impl Config {
    /// Refuses an address other than loopback without a token, and weak tokens.
    pub fn check(&self) -> Result<(), String> {
        if let Some(t) = &self.token {
            if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err("--token: use at least 16 printable characters, no spaces".into());
            }
        } else if !self.listen.ip().is_loopback() {
            return Err(format!(
                "refusing to listen on {} without --token: anyone who can reach it could act on your runs",
                self.listen
            ));
        }
        Ok(())
    }
}

/// The whole application, for `serve` and for tests.
pub fn router(home: &std::path::Path, token: Option<String>) -> Result<Router, AppError> {
    router_with(home, token, None)
}

/// The application with `extra` routes nested at a path (`detvm serve`'s upload API),
/// behind the same access guard.
pub fn router_with(
    home: &std::path::Path,
    token: Option<String>,
    extra: Option<(&str, Router)>,
) -> Result<Router, AppError> {
    let state = AppState {
        db: Db::open(home)?,
        jobs: Arc::new(Jobs::default()),
        token: token.map(Arc::from),
    };
    let api = Router::new()
        .route("/runs", get(api::runs))
        .route("/runs/{id}", get(api::triage))
        .route("/runs/{id}/lanes", get(api::lanes))
        .route("/runs/{id}/events", get(api::events))
        .route("/runs/{id}/export/trace.json", get(api::export_trace))
        .route("/runs/{id}/export/events.jsonl", get(api::export_jsonl))
        .route("/runs/{id}/cells", get(api::list_cells).post(api::add_cell))
        .route("/runs/{id}/cells/rerun", post(api::rerun_all))
        .route(
            "/runs/{id}/notebook",
            get(api::export_notebook).post(api::import_notebook),
        )
        .route("/moments/{moment}", get(api::moment))
        .route("/campaigns", get(campaign_api::list))
        .route("/campaigns/{id}", get(campaign_api::detail))
        .route("/campaigns/{id}/events", get(campaign_api::events))
        .route("/campaigns/{id}/live", get(campaign_api::live))
        .route("/cells/{id}", get(api::get_cell).delete(api::delete_cell))
        .route("/cells/{id}/run", post(api::run_cell))
        .route("/cells/{id}/file", get(api::cell_file))
        .fallback(|| async { AppError::not_found("no such API endpoint") });
    let mut app = Router::new();
    if let Some((path, routes)) = extra {
        app = app.nest_service(path, routes);
    }
    let app = app
        .route("/", get(pages::runs_page))
        .route("/runs/{id}", get(pages::run_page))
        .route("/runs/{id}/timeline", get(pages::timeline_page))
        .route("/runs/{id}/logs", get(pages::logs_page))
        .route("/runs/{id}/notebook", get(pages::notebook_page))
        .route("/moments/{moment}", get(pages::moment_page))
        .route("/campaigns", get(pages::campaigns_page))
        .route("/campaigns/{id}", get(pages::campaign_page))
        .route("/campaigns/{id}/logs", get(pages::campaign_logs_page))
        .route("/static/{file}", get(pages::asset))
        .nest("/api", api)
        .fallback(pages::not_found)
        .layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state);
    // Campaign timelines (`C/T7`) are one path segment to the routes.
    Ok(Router::new().fallback_service(MapRequestLayer::new(encode_campaign_timelines).layer(app)))
}

/// `/runs/C/T7/logs` → `/runs/C%2FT7/logs` (and the same under `/api/runs/`,
/// `/moments/`, `/api/moments/`), so every route that takes a timeline id takes a
/// campaign's timeline unchanged, its `C/T7` decoded by the path extractor.
fn encode_campaign_timelines(mut req: Request) -> Request {
    let path = req.uri().path();
    let rewritten = ["/api/runs/", "/api/moments/", "/runs/", "/moments/"]
        .iter()
        .find_map(|prefix| {
            let rest = path.strip_prefix(prefix)?;
            let (campaign, after) = rest.split_once('/')?;
            let timeline_like = after
                .strip_prefix('T')
                .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_digit()));
            (campaign.starts_with('c') && timeline_like)
                .then(|| format!("{prefix}{campaign}%2F{after}"))
        });
    if let Some(path) = rewritten {
        let query = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        if let Ok(uri) = format!("{path}{query}").parse() {
            *req.uri_mut() = uri;
        }
    }
    req
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == "detvm_token")
        .map(|(_, v)| v.to_string())
}

fn query_token(req: &Request) -> Option<String> {
    req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v.to_string())
    })
}

fn refuse(status: StatusCode, message: &str) -> Response {
    AppError {
        status,
        message: message.to_string(),
    }
    .into_response()
}

fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return true; // HTTP/1.0 without Host: the socket is loopback anyway
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    matches!(name, "localhost" | "[::1]")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut set_cookie = None;
    match &state.token {
        Some(token) => {
            let bearer = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(String::from);
            let from_query = query_token(&req);
            let given = bearer
                .or_else(|| cookie_token(req.headers()))
                .or(from_query.clone());
            if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "this notebook needs its token: open the address `detvm notebook` printed (with ?token=…), or send Authorization: Bearer TOKEN",
                );
            }
            if from_query.is_some() {
                set_cookie = Some(format!(
                    "detvm_token={token}; Path=/; HttpOnly; SameSite=Strict"
                ));
            }
        }
        None => {
            if !loopback_host(req.headers()) {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "this notebook answers only to localhost addresses",
                );
            }
        }
    }
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let marked = req.headers().contains_key("x-detvm");
        if !json && !marked {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send JSON (Content-Type: application/json) or the header X-Detvm: 1",
            );
        }
    }
    let mut response = next.run(req).await;
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, c);
    }
    response.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Serves until Ctrl-C. Prints the address to open.
pub async fn serve(config: Config) -> Result<(), String> {
    serve_with(config, None).await
}

/// [`serve`] with extra routes (see [`router_with`]).
pub async fn serve_with(config: Config, extra: Option<(&str, Router)>) -> Result<(), String> {
    config.check()?;
    let app = router_with(&config.home, config.token.clone(), extra).map_err(|e| e.message)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut url = format!("http://{addr}/");
    if let Some(t) = &config.token {
        url.push_str(&format!("?token={t}"));
    }
    eprintln!(
        "detvm notebook on {url} (run store {}); Ctrl-C stops it",
        config.home.display()
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}
