//! Bundles: a compose system and everything it needs, in one tar+zstd file that
//! `detvm push` sends and `detvm serve` checks before it keeps anything.
//!
//! Layout: `manifest.json` first, then `files/<path>` (the compose file, its `.env`,
//! `env_file`s and fault plans, relative to the compose file's folder),
//! `archives/<name>` (image archives given with `--image-archive`) and
//! `blobs/sha256/<hex>` (the image blobs the server said it lacks). The manifest names
//! every entry with its sha256 and size; anything unnamed, any link, any path that is
//! absolute or climbs out is refused, and so is a bundle over the limits.

pub mod pack;
pub mod unpack;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub const MANIFEST: &str = "manifest.json";
pub const FORMAT: u32 = 1;
pub const MEDIA_TYPE: &str = "application/vnd.detvm.bundle.v1+tar+zstd";

/// One file of the bundle: where, and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// An image from the sender's store: its manifest digest and every blob it needs
/// (manifest, config, layers), which the bundle carries or the server already has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageEntry {
    /// The name the store knows it by (`name:tag`); the compose file's reference resolves to it.
    pub name: String,
    pub manifest: String,
    pub blobs: Vec<Entry>,
}

/// How the server runs the campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignSettings {
    pub seed: Option<u64>,
    pub duration_ms: Option<u64>,
    pub branches: Option<u32>,
    pub budget_ms: Option<u64>,
    pub horizon_ms: Option<u64>,
    pub vars: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The compose file, one of `files`.
    pub compose: String,
    pub files: Vec<Entry>,
    pub archives: Vec<Entry>,
    pub images: Vec<ImageEntry>,
    /// Blob digests carried under `blobs/sha256/` (a subset of the images' blobs).
    pub carried_blobs: Vec<String>,
    pub campaign: CampaignSettings,
}

/// What a server accepts; a bundle over any of them is refused whole.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The uploaded (compressed) bundle.
    pub upload_bytes: u64,
    /// All entries unpacked.
    pub unpacked_bytes: u64,
    pub entries: usize,
    pub manifest_bytes: u64,
    pub path_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            upload_bytes: 4 << 30,
            unpacked_bytes: 16 << 30,
            entries: 100_000,
            manifest_bytes: 16 << 20,
            path_bytes: 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The sender's files or store (while packing).
    #[error("{0}")]
    Input(String),
    /// The bundle breaks a rule: refused whole, with the reason.
    #[error("bundle refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Io(String),
}

/// A relative path of normal components only: no `..`, no root, no `.`, no empty part,
/// no backslash or NUL. Bundles name files with it, so nothing lands outside.
pub fn safe_relative(path: &str, max: usize) -> bool {
    !path.is_empty()
        && path.len() <= max
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.contains('\0')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod path_tests {
    use super::safe_relative;

    #[test]
    fn only_plain_relative_paths_are_safe() {
        for ok in ["docker-compose.yaml", "plans/a.yaml", "x/.env"] {
            assert!(safe_relative(ok, 100), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "a\\..\\b",
            "a\0b",
        ] {
            assert!(!safe_relative(bad, 100), "{bad:?}");
        }
        assert!(!safe_relative(&"a".repeat(101), 100));
    }
}
