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
    /// What `.env`, `env_file` and `--var` values made of the services (see
    /// [`resolved_sha256`]); absent in runs stored before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_sha256: Option<String>,
}

/// A digest of the services as resolved: images, entrypoints, commands, environments
/// (after `env_file`), working folders and users. The compose file's bytes are hashed
/// apart; this catches a changed `.env`, `env_file` or `--var` value that the file's
/// bytes do not show. Built from named fields, so it does not depend on how Rust
/// prints a value.
pub fn resolved_sha256(compose: &crate::compose::Compose) -> String {
    let services: Vec<serde_json::Value> = compose
        .services
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name,
                "image": s.image,
                "entrypoint": s.entrypoint,
                "command": s.command,
                "environment": s.environment,
                "working_dir": s.working_dir,
                "user": s.user,
            })
        })
        .collect();
    let text = serde_json::Value::Array(services).to_string();
    detvm_images::digest::of_bytes(text.as_bytes())
}

pub fn sha256_of(path: &Path) -> Result<String, RunError> {
    let bytes = std::fs::read(path)
        .map_err(|e| RunError::Input(format!("{}: cannot read: {e}", path.display())))?;
    Ok(detvm_images::digest::of_bytes(&bytes))
}

/// Image files are content-addressed (named by their digest): their names say what
/// they hold wherever the image store is (another host's `.detvm` for a worker).
fn image_names(images: &[PathBuf]) -> Vec<Option<&std::ffi::OsStr>> {
    images.iter().map(|p| p.file_name()).collect()
}

/// The guest kernel and agent are cached under a folder named by the hash of their
/// sources (`…/kernel/<hash>/vmlinux`): that folder and the file name say which build
/// it is, wherever the cache is (`$DETVM_CACHE`, another user's home on a worker).
fn build_name(path: &Path) -> Vec<&std::ffi::OsStr> {
    let mut tail: Vec<_> = path.iter().rev().take(2).collect();
    tail.reverse();
    tail
}

impl Fingerprint {
    /// The first difference from `then` (the run's), as the error a replay stops with.
    pub fn same_as(&self, then: &Fingerprint) -> Result<(), String> {
        let what = if self.compose_sha256 != then.compose_sha256 {
            "the compose file"
        } else if self.plan != then.plan {
            "the fault plan"
        } else if build_name(&self.kernel) != build_name(&then.kernel) {
            "the guest kernel build"
        } else if build_name(&self.initrd) != build_name(&then.initrd) {
            "the guest agent build"
        } else if image_names(&self.images) != image_names(&then.images) {
            "a service's image"
        } else if matches!((&self.resolved_sha256, &then.resolved_sha256), (Some(a), Some(b)) if a != b)
        {
            "what the compose file resolves to (its .env, env_file or --var values)"
        } else {
            return Ok(());
        };
        Err(format!(
            "{what} changed since the run; a replay needs the run's exact inputs"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_images(images: &[&str]) -> Fingerprint {
        Fingerprint {
            compose_sha256: "sha256:c".into(),
            plan: "{}".into(),
            kernel: "/cache/kernel/k1/vmlinux".into(),
            initrd: "/cache/agent/a1/initramfs.cpio".into(),
            resolved_sha256: Some("sha256:r".into()),
            images: images.iter().map(PathBuf::from).collect(),
        }
    }

    #[test]
    fn images_are_compared_by_their_content_addressed_names() {
        let server = with_images(&["/srv/.detvm/images/rootfs/aa.sqfs"]);
        let worker = with_images(&["/home/w/.detvm/images/rootfs/aa.sqfs"]);
        assert_eq!(worker.same_as(&server), Ok(()));
        let other = with_images(&["/srv/.detvm/images/rootfs/bb.sqfs"]);
        let err = other.same_as(&server).unwrap_err();
        assert!(err.starts_with("a service's image changed"), "{err}");
    }

    #[test]
    fn a_changed_env_file_is_named_and_older_runs_still_compare() {
        let dir = tempfile::tempdir().unwrap();
        let compose = dir.path().join("compose.yaml");
        std::fs::write(
            &compose,
            "services:\n  w:\n    image: x\n    command: [\"${MODE}\"]\n    env_file: app.env\n",
        )
        .unwrap();
        let resolved = |env: &str, app: &str| {
            std::fs::write(dir.path().join(".env"), env).unwrap();
            std::fs::write(dir.path().join("app.env"), app).unwrap();
            let c = crate::compose::load(&compose).unwrap();
            Fingerprint {
                resolved_sha256: Some(resolved_sha256(&c)),
                ..with_images(&[])
            }
        };
        let then = resolved("MODE=fast\n", "A=1\n");
        assert_eq!(resolved("MODE=fast\n", "A=1\n").same_as(&then), Ok(()));
        for now in [
            resolved("MODE=fast\n", "A=2\n"),
            resolved("MODE=slow\n", "A=1\n"),
        ] {
            let err = now.same_as(&then).unwrap_err();
            assert!(err.contains(".env, env_file or --var"), "{err}");
        }
        // A run stored before the digest was recorded compares on the rest.
        let older = Fingerprint {
            resolved_sha256: None,
            ..then.clone()
        };
        assert_eq!(then.same_as(&older), Ok(()));
    }

    #[test]
    fn kernel_and_agent_are_compared_by_their_build_hash_not_the_cache_folder() {
        let server = with_images(&[]);
        let mut worker = server.clone();
        worker.kernel = "/home/w/.cache/detvm/kernel/k1/vmlinux".into();
        worker.initrd = "/var/cache/detvm/agent/a1/initramfs.cpio".into();
        assert_eq!(worker.same_as(&server), Ok(()));
        let mut other = worker.clone();
        other.kernel = "/home/w/.cache/detvm/kernel/k2/vmlinux".into();
        let err = other.same_as(&server).unwrap_err();
        assert!(err.starts_with("the guest kernel build changed"), "{err}");
        let mut other = worker;
        other.initrd = "/var/cache/detvm/agent/a2/initramfs.cpio".into();
        let err = other.same_as(&server).unwrap_err();
        assert!(err.starts_with("the guest agent build changed"), "{err}");
    }
}
