//! `detvm serve`: the notebook's server plus the upload API under `/api/service`
//! (docs/service.md). Routes:
//!
//! - `POST /api/service/missing` `{"digests": [...]}` → `{"missing": [...]}`: the image
//!   blobs this server lacks, so a push carries only those;
//! - `POST /api/service/bundles` (a bundle as the body) → `202 {"job", "status", …}`, or
//!   `400 {"error": "bundle refused: …"}` with nothing kept;
//! - `GET /api/service/jobs` and `GET /api/service/jobs/{job}`: status, campaign id,
//!   log, exit code and report.

pub mod jobs;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use detvm_images::Store;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::bundle::{unpack, BundleError, Limits, Manifest};
use jobs::{Job, Jobs};

#[derive(Clone)]
pub struct Service {
    pub home: PathBuf,
    pub limits: Limits,
    pub jobs: Arc<Jobs>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}

/// The API's routes, to nest at `/api/service` in the notebook's router.
pub fn routes(service: Service) -> Router {
    Router::new()
        .route("/missing", post(missing))
        .route("/bundles", post(upload))
        .route("/jobs", get(list))
        .route("/jobs/{id}", get(job))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such service endpoint") })
        .with_state(service)
}

#[derive(Deserialize)]
struct Digests {
    digests: Vec<String>,
}

async fn missing(State(s): State<Service>, Json(body): Json<Digests>) -> Response {
    if body.digests.len() > s.limits.entries {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "too many digests");
    }
    let blobs = s.home.join("images/blobs/sha256");
    let mut missing = Vec::new();
    for d in body.digests {
        let Some(hex) = detvm_images::digest::parse(&d) else {
            return error(
                StatusCode::BAD_REQUEST,
                format!("`{d}` is not a sha256 digest"),
            );
        };
        if !blobs.join(hex).is_file() {
            missing.push(d);
        }
    }
    Json(serde_json::json!({ "missing": missing })).into_response()
}

async fn list(State(s): State<Service>) -> Response {
    Json(serde_json::json!({ "jobs": s.jobs.list() })).into_response()
}

async fn job(State(s): State<Service>, UrlPath(id): UrlPath<String>) -> Response {
    match s.jobs.get(&id) {
        Some(job) => Json(job).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no job {id}")),
    }
}

/// Receives the body into a file under the job's folder, within the upload limit.
async fn receive(body: Body, path: &Path, limit: u64) -> Result<(), Response> {
    use futures_util::StreamExt;
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
        total += chunk.len() as u64;
        if total > limit {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("bundle refused: over this server's upload limit of {limit} bytes"),
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    }
    file.flush()
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Everything a bundle must pass before its campaign is queued: unpacked and checked,
/// images loaded, the compose file parsed, every service's image on this server.
fn accept(s: &Service, dir: &Path, upload: &Path) -> Result<Manifest, BundleError> {
    let unpacked = dir.join("bundle");
    std::fs::create_dir_all(&unpacked)
        .map_err(|e| BundleError::Io(format!("{}: {e}", unpacked.display())))?;
    let manifest = unpack::unpack(upload, &unpacked, &s.limits)?;
    let store = Store::open(s.home.join("images"))
        .map_err(|e| BundleError::Io(format!("image store: {e}")))?;
    unpack::load_images(&manifest, &unpacked, &store)?;
    let opts = explorer::run::RunOptions {
        compose: unpacked.join("files").join(&manifest.compose),
        seed: None,
        duration: None,
        epoch: None,
        faults: None,
        no_faults: true,
        vars: manifest.campaign.vars.clone(),
        backend: vmm::backend::BackendKind::Emu,
        home: s.home.clone(),
        snapshot_at: Vec::new(),
    };
    let compose = explorer::run::prepare::load_compose(&opts).map_err(|e| {
        BundleError::Refused(e.to_string().replace(&*unpacked.to_string_lossy(), ""))
    })?;
    // Never run a bundle's `x-detvm.prepare` script on this host: every image must be here.
    for service in &compose.services {
        store.resolve(&service.image).map_err(|_| {
            BundleError::Refused(format!(
                "services.{}.image: `{}` is neither in the bundle nor on this server",
                service.name, service.image
            ))
        })?;
    }
    let path = dir.join("manifest.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
    )
    .map_err(|e| BundleError::Io(format!("{}: {e}", path.display())))?;
    Ok(manifest)
}

async fn upload(State(s): State<Service>, headers: HeaderMap, body: Body) -> Response {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.limits.upload_bytes) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "bundle refused: over this server's upload limit of {} bytes",
                s.limits.upload_bytes
            ),
        );
    }
    let (id, dir) = match s.jobs.new_id() {
        Ok(x) => x,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let upload = dir.join("bundle.tar.zst");
    if let Err(r) = receive(body, &upload, s.limits.upload_bytes).await {
        let _ = std::fs::remove_dir_all(&dir);
        return r;
    }
    let service = s.clone();
    let dir2 = dir.clone();
    let checked = tokio::task::spawn_blocking(move || accept(&service, &dir2, &upload)).await;
    let _ = std::fs::remove_file(dir.join("bundle.tar.zst"));
    match checked {
        Ok(Ok(_)) => {
            let job: Job = s.jobs.enqueue(&id);
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({
                    "job": job.id,
                    "status": job.status,
                    "job_url": format!("/api/service/jobs/{id}"),
                })),
            )
                .into_response()
        }
        Ok(Err(e)) => {
            let _ = std::fs::remove_dir_all(&dir);
            let status = match e {
                BundleError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            error(status, e.to_string())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}
