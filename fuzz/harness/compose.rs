// Fuzz harness, shared by fuzz/fuzz_targets/compose.rs and the replay test
// explorer/tests/fuzz_corpus.rs. The input is a project's `.env`, a NUL byte, then its
// compose file (no NUL: the compose file alone), parsed as `detvm run` does: `.env`
// lines, `${VAR}` interpolation, the YAML, every service field, and an `x-detvm.faults`
// plan checked against the service names. Every error and warning is formatted.
// Accepted: the compose file (and its plan, if any) is valid.

use std::path::Path;

use explorer::compose;
use vmm::world::FaultPlan;

pub fn run(data: &[u8]) -> Result<(), String> {
    let (env, text) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (&b""[..], data),
    };
    let (Ok(env), Ok(text)) = (std::str::from_utf8(env), std::str::from_utf8(text)) else {
        // Both are read with `read_to_string`, which refuses non-UTF-8.
        return Err("not UTF-8".into());
    };
    // A folder that does not exist: an `env_file:` the input names is a read error.
    let dir = Path::new("/nonexistent-detvm-fuzz");
    let vars = compose::parse_env(&dir.join(".env"), env).map_err(|e| e.to_string())?;
    let compose =
        compose::parse(&dir.join("docker-compose.yaml"), text, &vars).map_err(|e| e.to_string())?;
    for warning in &compose.warnings {
        let _ = warning.to_string();
    }
    let Some(value) = &compose.settings.faults else {
        return Ok(());
    };
    let names: Vec<String> = compose.services.iter().map(|s| s.name.clone()).collect();
    let plan = serde_json::from_value::<FaultPlan>(value.clone()).map_err(|e| e.to_string())?;
    plan.validate(&names).map_err(|e| e.to_string())
}
