//! What a run's world is built from (the compose file's digest, the fault plan, the
//! kernel, the agent, the images), to refuse replays whose inputs changed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RunError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub compose_sha256: String,
    /// The fault plan as run, JSON.
    pub plan: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Each service's rootfs image file (content-addressed in the image store).
    pub images: Vec<PathBuf>,
}

pub fn sha256_of(path: &Path) -> Result<String, RunError> {
    let bytes = std::fs::read(path)
        .map_err(|e| RunError::Input(format!("{}: cannot read: {e}", path.display())))?;
    Ok(detvm_images::digest::of_bytes(&bytes))
}

impl Fingerprint {
    /// The first difference from `then` (the run's), as the error a replay stops with.
    pub fn same_as(&self, then: &Fingerprint) -> Result<(), String> {
        let what = if self.compose_sha256 != then.compose_sha256 {
            "the compose file"
        } else if self.plan != then.plan {
            "the fault plan"
        } else if self.kernel != then.kernel {
            "the guest kernel build"
        } else if self.initrd != then.initrd {
            "the guest agent build"
        } else if self.images != then.images {
            "a service's image"
        } else {
            return Ok(());
        };
        Err(format!(
            "{what} changed since the run; a replay needs the run's exact inputs"
        ))
    }
}
