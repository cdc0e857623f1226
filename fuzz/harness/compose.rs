// Fuzz harness, shared by fuzz/fuzz_targets/compose.rs and the replay test
// explorer/tests/fuzz_corpus.rs. The input is a project's `.env`, a NUL byte, then its
// compose file (no NUL: the compose file alone), parsed as `detvm run` does: `.env`
// lines, `${VAR}` interpolation, the YAML, every service field, and an `x-detvm.faults`
// plan checked against the service names. Every error and warning is formatted.
// Accepted: the compose file (and its plan, if any) is valid.

use std::path::Path;

use explorer::compose;
use vmm::world::FaultPlan;

pub fn run(data: &[u8]) -> bool {
    let (env, text) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (&b""[..], data),
    };
    let (Ok(env), Ok(text)) = (std::str::from_utf8(env), std::str::from_utf8(text)) else {
        return false; // both are read with `read_to_string`, which refuses non-UTF-8
    };
    // A folder that does not exist: an `env_file:` the input names is a read error.
    let dir = Path::new("/nonexistent-detvm-fuzz");
    let vars = match compose::parse_env(&dir.join(".env"), env) {
        Ok(vars) => vars,
        Err(e) => {
            let _ = e.to_string();
            return false;
        }
    };
    let compose = match compose::parse(&dir.join("docker-compose.yaml"), text, &vars) {
        Ok(compose) => compose,
        Err(e) => {
            let _ = e.to_string();
            return false;
        }
    };
    for warning in &compose.warnings {
        let _ = warning.to_string();
    }
    let Some(value) = &compose.settings.faults else {
        return true;
    };
    let names: Vec<String> = compose.services.iter().map(|s| s.name.clone()).collect();
    match serde_json::from_value::<FaultPlan>(value.clone()) {
        Ok(plan) => plan.validate(&names).map_err(|e| e.to_string()).is_ok(),
        Err(e) => {
            let _ = e.to_string();
            false
        }
    }
}
