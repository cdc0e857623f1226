//! World construction errors (no guest is booted: validation comes first).

use super::*;
use crate::machine::VmConfig;

fn config(names: &[&str], faults: FaultPlan, network: NetworkConfig) -> WorldConfig {
    WorldConfig {
        seed: 1,
        nodes: names
            .iter()
            .map(|n| NodeConfig {
                name: n.to_string(),
                vm: VmConfig::new("/nonexistent/vmlinux".into()),
            })
            .collect(),
        network,
        faults,
    }
}

fn error(c: WorldConfig) -> String {
    match World::new(c) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_worlds_are_rejected_before_any_boot_naming_the_field() {
    let plan = FaultPlan::from_json(
        r#"{"faults": [{"at": "1s", "fault": {"type": "pause", "node": "dbx", "duration": "1s"}}]}"#,
    )
    .unwrap();
    assert_eq!(
        error(config(&["a", "b"], plan, NetworkConfig::default())),
        "invalid world: faults[0].node: unknown service \"dbx\" (the world has: a, b)"
    );
    assert_eq!(
        error(config(
            &["a", "a"],
            FaultPlan::default(),
            NetworkConfig::default()
        )),
        "invalid world: nodes[1].name: \"a\" names two nodes"
    );
    let lossy = NetworkConfig {
        loss: 2.0,
        ..NetworkConfig::default()
    };
    assert_eq!(
        error(config(&["a"], FaultPlan::default(), lossy)),
        "invalid world: network.loss: 2 is not in 0..=1"
    );
    let instant = NetworkConfig {
        min_latency: Span::ZERO,
        ..NetworkConfig::default()
    };
    assert!(error(config(&["a"], FaultPlan::default(), instant))
        .starts_with("invalid world: network.min_latency: 0s is below 1us"));
    // A valid world whose kernel is missing fails at boot, naming the node.
    let e = error(config(
        &["a"],
        FaultPlan::default(),
        NetworkConfig::default(),
    ));
    assert!(e.starts_with("node a at 0.000000000s: "), "{e}");
}

#[test]
fn node_macs_follow_the_index() {
    assert_eq!(node_mac(0), [0x52, 0x54, 0, 0, 0, 1]);
    assert_eq!(node_mac(254), [0x52, 0x54, 0, 0, 0, 255]);
    assert_eq!(node_mac(255), [0x52, 0x54, 0, 0, 1, 0]);
}
