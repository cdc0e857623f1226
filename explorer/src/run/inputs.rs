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
