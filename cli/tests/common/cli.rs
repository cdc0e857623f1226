//! Running the `detvm` binary on an example, as a user would, and reading its report.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub fn detvm() -> &'static str {
    env!("CARGO_BIN_EXE_detvm")
}

/// A `.detvm` home under the test target folder with an example's images built by its
/// `build-images.sh` (so the first run does not pay for it inside a test's timing).
pub fn example_home(name: &str, build_script: &str) -> PathBuf {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&home).unwrap();
    let out = Command::new(super::engine::repo_root().join(build_script))
        .env("DETVM_HOME", &home)
        .env("DETVM", detvm())
        .output()
        .expect("run the example's build-images.sh");
    assert!(
        out.status.success(),
        "{build_script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    home
}

/// `detvm ARGS` from the repository root with `home` as `DETVM_HOME`.
pub fn run_detvm(home: &Path, args: &[&str]) -> Output {
    Command::new(detvm())
        .args(args)
        .env("DETVM_HOME", home)
        .current_dir(super::engine::repo_root())
        .output()
        .expect("run detvm")
}

/// Exit code and both streams, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The property with this message in a JSON report.
pub fn property<'a>(report: &'a Value, message: &str) -> &'a Value {
    report["properties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["message"] == message)
        .unwrap_or_else(|| panic!("no property {message:?} in {report:#}"))
}

/// The arguments of the report's `reproduce` command (without the leading `detvm`).
pub fn reproduce_args(report: &Value) -> Vec<String> {
    report["reproduce"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(String::from)
        .collect()
}
