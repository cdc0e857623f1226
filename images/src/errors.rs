//! The crate's errors, one enum per operation (import, store, root filesystem). They live
//! apart from the code that raises them so that modules import only downward: an import
//! can fail with a store error, and the store reports import errors.

use crate::tree::LayerError;
use std::io;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path} is not an image: it has no index.json (OCI layout or archive) and no manifest.json (docker save archive)")]
    NotAnImage { path: PathBuf },
    #[error("{path}: cannot read the archive after entry {after:?}: {source} (is it truncated? export it again)")]
    Archive {
        path: PathBuf,
        after: String,
        source: io::Error,
    },
    #[error("{path}: archive entry {entry:?} escapes the archive with `..` or an absolute link; refusing it")]
    UnsafeName { path: PathBuf, entry: String },
    #[error("{path}: {entry} is missing; the image names it but the archive does not hold it (export it again)")]
    Missing { path: PathBuf, entry: String },
    #[error("{path}: {entry} is {size} bytes, too big for a JSON document")]
    TooBig {
        path: PathBuf,
        entry: String,
        size: u64,
    },
    #[error("{path}: {entry} is not valid JSON for a {what}: {source}")]
    Json {
        path: PathBuf,
        entry: String,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{path}: {entry} has digest {actual}, but the image expects {expected}; the blob is corrupt or was replaced")]
    DigestMismatch {
        path: PathBuf,
        entry: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: {entry} is {actual} bytes, but the image expects {expected}")]
    SizeMismatch {
        path: PathBuf,
        entry: String,
        expected: u64,
        actual: u64,
    },
    #[error("{path}: {source}")]
    Layer { path: PathBuf, source: LayerError },
    #[error(
        "{path}: the config lists {diff_ids} layer digests but the manifest has {layers} layers"
    )]
    LayerCount {
        path: PathBuf,
        layers: usize,
        diff_ids: usize,
    },
    #[error("{path}: {what}")]
    Unsupported { path: PathBuf, what: String },
    #[error("{path} holds no image")]
    NoImages { path: PathBuf },
    #[error("--tag names one image, but {path} holds {count}; load it without --tag")]
    TagMany { path: PathBuf, count: usize },
    #[error("invalid image name {name:?}: {why}")]
    BadName { name: String, why: &'static str },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot use the image store at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the image store is damaged at {path}: {what}; load the image again, or delete the store folder")]
    Corrupt { path: PathBuf, what: String },
    #[error("no image {reference:?} in the store {root}; load it with `detvm image load FILE` (list: `detvm image ls`)")]
    NotFound { reference: String, root: PathBuf },
    #[error("{reference:?} matches several images ({matches}); give more of the digest")]
    Ambiguous { reference: String, matches: String },
}

#[derive(Debug, Error)]
pub enum RootfsError {
    #[error("root filesystem of {image}: {path}: {source}")]
    Io {
        image: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("root filesystem of {image}: {source}")]
    Layer { image: String, source: LayerError },
    #[error("root filesystem of {image}: `mksquashfs` is missing; install squashfs-tools (scripts/setup.sh does)")]
    NoTool { image: String },
    #[error(
        "root filesystem of {image}: writing the tar stream into mksquashfs failed: {source} {stderr}"
    )]
    Stream {
        image: String,
        source: io::Error,
        stderr: String,
    },
    #[error("root filesystem of {image}: mksquashfs failed ({status}): {stderr}")]
    Tool {
        image: String,
        status: String,
        stderr: String,
    },
}
