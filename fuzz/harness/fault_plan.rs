// Fuzz harness, shared by fuzz/fuzz_targets/fault_plan.rs and the replay test
// explorer/tests/fuzz_corpus.rs. The input is a `--faults` file: parsed as `detvm run`
// parses it (YAML through serde-saphyr) and as JSON (`FaultPlan::from_json`), then
// validated against a system's services. A valid plan must print, and survive a JSON round
// trip unchanged (a snapshot stores it so). Accepted: one of the two parses gave a valid plan.

use explorer::run::parse_fault_plan;
use vmm::world::FaultPlan;

const SERVICES: [&str; 6] = ["bank", "client", "etcd1", "etcd2", "etcd3", "kv"];

pub fn run(data: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    let names: Vec<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    let yaml = parse_fault_plan(text).and_then(|plan| checked(plan, &names));
    let json = FaultPlan::from_json(text)
        .map_err(|e| e.to_string())
        .and_then(|plan| checked(plan, &names));
    yaml.or(json)
}

fn checked(plan: FaultPlan, names: &[String]) -> Result<(), String> {
    plan.validate(names).map_err(|e| e.to_string())?;
    let _ = plan.to_string();
    let json = serde_json::to_string(&plan).expect("a valid plan serializes");
    assert_eq!(FaultPlan::from_json(&json).as_ref(), Ok(&plan), "{json}");
    Ok(())
}
