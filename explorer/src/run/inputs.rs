//! What a run was made of, kept as `inputs.json` in its folder so `detvm replay` can
//! rebuild the same world later and refuse, naming what changed, when it cannot.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vmm::backend::BackendKind;

pub use super::fingerprint::{sha256_of, Fingerprint};
use super::{RunError, RunOptions};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInputs {
    /// Absolute paths, so a replay works from any folder.
    pub compose: PathBuf,
    pub faults: Option<PathBuf>,
    pub no_faults: bool,
    pub vars: Vec<(String, String)>,
    pub kvm: bool,
    pub seed: u64,
    pub duration_ns: u64,
    pub epoch: i64,
    /// What the world was built from; a replay must find the same.
    pub fingerprint: Fingerprint,
}

const FILE: &str = "inputs.json";

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

impl RunInputs {
    pub fn new(
        opts: &RunOptions,
        seed: u64,
        duration_ns: u64,
        epoch: i64,
        fingerprint: Fingerprint,
    ) -> Self {
        RunInputs {
            compose: absolute(&opts.compose),
            faults: opts.faults.as_deref().map(absolute),
            no_faults: opts.no_faults,
            vars: opts.vars.clone(),
            kvm: opts.backend == BackendKind::Kvm,
            seed,
            duration_ns,
            epoch,
            fingerprint,
        }
    }

    pub fn save(&self, run_dir: &Path) -> Result<(), RunError> {
        let path = run_dir.join(FILE);
        let json = serde_json::to_string_pretty(self).expect("inputs serialize");
        std::fs::write(&path, json)
            .map_err(|e| RunError::Infrastructure(format!("cannot write {}: {e}", path.display())))
    }

    pub fn load(run_dir: &Path) -> Result<RunInputs, RunError> {
        let path = run_dir.join(FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            RunError::Input(format!(
                "{}: {e} (runs made before detvm kept their inputs cannot be replayed)",
                path.display()
            ))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| RunError::Input(format!("{}: not a run's inputs: {e}", path.display())))
    }

    /// The options that rebuild this run (nothing written, no progress bar).
    pub fn options(&self, home: &Path) -> RunOptions {
        RunOptions {
            compose: self.compose.clone(),
            seed: Some(self.seed),
            duration: Some(std::time::Duration::from_nanos(self.duration_ns)),
            epoch: Some(self.epoch),
            faults: self.faults.clone(),
            no_faults: self.no_faults,
            vars: self.vars.clone(),
            backend: if self.kvm {
                BackendKind::Kvm
            } else {
                BackendKind::Emu
            },
            home: home.to_path_buf(),
            snapshot_at: Vec::new(),
        }
    }
}

impl RunInputs {
    /// These inputs with the compose file's folder at `dir` instead (a copy of the
    /// project on another host, e.g. a worker's): the compose file and the fault plan are
    /// looked up there, by their places relative to the compose file. Nothing else
    /// changes: [`RunInputs::prepare_again`] still compares the contents (compose file,
    /// fault plan, images, kernel, agent) with the fingerprint.
    pub fn moved_to(&self, dir: &Path) -> Result<RunInputs, RunError> {
        let old = self.compose.parent().unwrap_or(Path::new("/"));
        let name = self
            .compose
            .file_name()
            .ok_or_else(|| RunError::Input(format!("{}: not a file", self.compose.display())))?;
        let faults = match &self.faults {
            None => None,
            Some(f) => Some(dir.join(f.strip_prefix(old).map_err(|_| {
                RunError::Input(format!(
                    "{}: the fault plan is outside the compose file's folder {}, so it cannot move with it",
                    f.display(),
                    old.display()
                ))
            })?)),
        };
        Ok(RunInputs {
            compose: dir.join(name),
            faults,
            ..self.clone()
        })
    }

    /// Prepares the run again from these inputs and refuses, naming what changed, when
    /// the compose file, fault plan, kernel, agent or an image differ from then.
    /// `what` names the moment or run in the error.
    pub fn prepare_again(
        &self,
        home: &Path,
        what: &str,
        observer: &mut dyn crate::observer::Observer,
    ) -> Result<(RunOptions, super::prepare::Prepared), RunError> {
        let opts = self.options(home);
        let prepared = super::prepare::prepare(&opts, observer)?;
        prepared
            .fingerprint()?
            .same_as(&self.fingerprint)
            .map_err(|e| RunError::Input(format!("{what}: {e}")))?;
        Ok((opts, prepared))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(faults: Option<&str>) -> RunInputs {
        RunInputs {
            compose: "/srv/jobs/j1/files/docker-compose.yaml".into(),
            faults: faults.map(PathBuf::from),
            no_faults: false,
            vars: vec![("A".into(), "1".into())],
            kvm: false,
            seed: 5,
            duration_ns: 4_000_000_000,
            epoch: 1,
            fingerprint: Fingerprint {
                compose_sha256: "sha256:c".into(),
                plan: "{}".into(),
                kernel: "/k/vmlinux".into(),
                initrd: "/a/initramfs.cpio".into(),
                resolved_sha256: None,
                images: Vec::new(),
            },
        }
    }

    #[test]
    fn moving_keeps_the_files_places_relative_to_the_compose_file() {
        let then = inputs(Some("/srv/jobs/j1/files/plans/kill.yaml"));
        let moved = then.moved_to(Path::new("/w/c1/project/files")).unwrap();
        assert_eq!(
            moved.compose,
            Path::new("/w/c1/project/files/docker-compose.yaml")
        );
        assert_eq!(
            moved.faults.as_deref(),
            Some(Path::new("/w/c1/project/files/plans/kill.yaml"))
        );
        assert_eq!(moved.fingerprint, then.fingerprint);
        assert_eq!((moved.seed, &moved.vars), (then.seed, &then.vars));
    }

    #[test]
    fn a_fault_plan_outside_the_compose_folder_cannot_move() {
        let then = inputs(Some("/etc/plan.yaml"));
        let err = then.moved_to(Path::new("/w")).unwrap_err().to_string();
        assert!(err.contains("outside the compose file's folder"), "{err}");
    }
}
