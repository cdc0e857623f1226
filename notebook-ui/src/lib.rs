//! detvm's web notebook: runs, their triage, timelines, logs and moments in a browser,
//! and actions at a moment (branch, exec, file, fault) saved as notebook cells. An
//! axum server over the engine library (`explorer`); every page action is a JSON API
//! call under `/api/`. See docs/notebook.md.

pub mod aggregate;
pub mod api;
pub mod campaign_api;
pub mod campaign_search;
pub mod campaigns;
pub mod cells;
pub mod db;
pub mod engine;
pub mod error;
pub mod events;
pub mod export;
pub mod faults;
pub mod jobs;
pub mod notebook;
pub mod pages;
pub mod search;
pub mod server;
pub mod state;
pub mod timeline;
pub mod triage;

pub use server::{router, router_with, serve, serve_with, Config, DEFAULT_LISTEN};
