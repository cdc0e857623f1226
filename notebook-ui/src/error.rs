//! One error type for every handler: a status and a message for people. It never
//! carries a backtrace: a failed replay or branch shows what went wrong, not a 500 page
//! with the server's internals.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    pub status: StatusCode,
    pub message: String,
}

impl AppError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        AppError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        AppError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
    /// Work that could not be done (a replay that failed, a branch that broke): the
    /// request was fine, the engine said no.
    pub fn failed(message: impl Into<String>) -> Self {
        AppError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        AppError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        AppError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<rusqlite::Error> for AppError {
    fn from(e: rusqlite::Error) -> Self {
        AppError::internal(format!("run store: {e}"))
    }
}

impl From<explorer::store::StoreError> for AppError {
    fn from(e: explorer::store::StoreError) -> Self {
        match e {
            explorer::store::StoreError::NoSuchRun(_) => AppError::not_found(e.to_string()),
            other => AppError::internal(other.to_string()),
        }
    }
}

/// A blocking task that panicked or was cancelled: say so in one line.
impl From<tokio::task::JoinError> for AppError {
    fn from(e: tokio::task::JoinError) -> Self {
        let what = if e.is_panic() {
            let payload = e.into_panic();
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string())
        } else {
            "cancelled".to_string()
        };
        AppError::internal(format!("the work stopped unexpectedly: {what}"))
    }
}

/// API errors are JSON: `{"error": "..."}`.
impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = axum::Json(serde_json::json!({ "error": self.message }));
        (self.status, body).into_response()
    }
}

pub type ApiResult<T> = Result<T, AppError>;
