//! docker-compose files: the fields a tested system uses, read into a checked model.
//! Every problem names the file, the line and the field (docs/compose.md).

mod interpolate;
mod raw;
mod resolve;
#[cfg(test)]
mod tests;
mod units;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use resolve::{parse_env, parse_epoch, read_env_file as load_env_file};
pub use units::{parse_duration, parse_memory};

/// A compose file, checked: every service resolved, every reference valid.
#[derive(Debug, Clone)]
pub struct Compose {
    pub path: PathBuf,
    /// Sorted by name: the order VMs are created in, independent of the file's layout.
    pub services: Vec<Service>,
    pub settings: Settings,
    pub warnings: Vec<Warning>,
}

/// `x-detvm` at the top level, with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub seed: Option<u64>,
    pub duration: Option<Duration>,
    /// Wall-clock time at power-on, in Unix seconds.
    pub epoch: Option<i64>,
    pub memory: u64,
    pub vcpus: u8,
    pub faults: Option<serde_json::Value>,
    pub fault_mode: FaultMode,
    /// Runs once when an image is missing from the store, then images are looked up again.
    pub prepare: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// Faults drawn from the seed (swarm testing), unless `faults` gives a plan.
    Swarm,
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    /// The line of the service's key, for messages about it.
    pub line: u64,
    pub image: String,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    /// `environment` after `env_file`, later entries winning, as compose does.
    pub environment: Vec<(String, String)>,
    pub hostname: String,
    pub depends_on: Vec<Dependency>,
    pub healthcheck: Option<Healthcheck>,
    pub tmpfs: Vec<String>,
    pub volumes: Vec<Volume>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub stop_grace_period: Duration,
    pub memory: u64,
    pub vcpus: u8,
    pub volume_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub service: String,
    pub condition: Condition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Started,
    Healthy,
    CompletedSuccessfully,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Healthcheck {
    /// The argv to run inside the container (`CMD-SHELL` becomes `/bin/sh -c`).
    pub test: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

/// A writable disk mounted at `target`: a named or anonymous compose volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub target: String,
    pub read_only: bool,
}

/// Something detvm accepted but does not act on.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    pub file: PathBuf,
    pub line: u64,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}:{}: `{}`: {}",
            self.file.display(),
            self.line,
            self.field,
            self.message
        )
    }
}

/// A compose file detvm cannot run, with the place to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ComposeError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: u64,
    pub message: String,
}

impl fmt::Display for ComposeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

/// Reads and checks a compose file. `.env` next to it feeds `${VAR}` interpolation;
/// the host environment is never read, so a run does not depend on the shell it came from.
pub fn load(path: &Path) -> Result<Compose, ComposeError> {
    let text = std::fs::read_to_string(path).map_err(|e| ComposeError {
        file: path.to_path_buf(),
        line: 0,
        message: format!("cannot read the compose file: {e}"),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let dotenv = dir.join(".env");
    let variables = if dotenv.is_file() {
        resolve::read_env_file(&dotenv)?
    } else {
        Vec::new()
    };
    parse(path, &text, &variables)
}

/// [`load`] on text already read; `variables` are the `.env` values.
pub fn parse(
    path: &Path,
    text: &str,
    variables: &[(String, String)],
) -> Result<Compose, ComposeError> {
    let mut warnings = Vec::new();
    let text = interpolate::interpolate(path, text, variables, &mut warnings)?;
    let raw: raw::RawFile = serde_saphyr::from_str(&text).map_err(|e| {
        let text = e.to_string();
        let (line, message) = match marked_line(&text) {
            Some((line, message)) => (line, message.to_string()),
            None => (e.location().map_or(0, |l| l.line()), first_line(&text)),
        };
        ComposeError {
            file: path.to_path_buf(),
            line,
            message,
        }
    })?;
    resolve::resolve(path, raw, warnings)
}

/// The line our own key errors carry (see `raw::LINE_MARK`), and the message after it.
fn marked_line(text: &str) -> Option<(u64, &str)> {
    let (_, rest) = text.split_once(raw::LINE_MARK)?;
    let (line, message) = rest.split_once("@@")?;
    Some((
        line.parse().ok()?,
        message.lines().next().unwrap_or(message),
    ))
}

/// serde-saphyr appends a source snippet; the location is already in our prefix.
fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).to_string()
}
