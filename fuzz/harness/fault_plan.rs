// Fuzz harness, shared by fuzz/fuzz_targets/fault_plan.rs and the replay test
// explorer/tests/fuzz_corpus.rs. The input is a `--faults` file: parsed as `detvm run`
// parses it (YAML through serde-saphyr), then validated against a system's services. A
// valid plan must print, and survive a JSON round trip unchanged (a snapshot stores it so).
// Accepted: the plan parsed and is valid for these services.

use explorer::run::parse_fault_plan;
use vmm::world::FaultPlan;

const SERVICES: [&str; 6] = ["bank", "client", "etcd1", "etcd2", "etcd3", "kv"];

pub fn run(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let mut accepted = false;
    let names: Vec<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    for parsed in [parse_fault_plan(text), FaultPlan::from_json(text).map_err(|e| e.to_string())] {
        let plan = match parsed {
            Ok(plan) => plan,
            Err(e) => {
                let _ = e.len();
                continue;
            }
        };
        if let Err(e) = plan.validate(&names) {
            let _ = e.to_string();
            continue;
        }
        let _ = plan.to_string();
        let json = serde_json::to_string(&plan).expect("a valid plan serializes");
        assert_eq!(FaultPlan::from_json(&json).as_ref(), Ok(&plan), "{json}");
        accepted = true;
    }
    accepted
}
