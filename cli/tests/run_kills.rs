//! Kills under `detvm run`: a node killed (and restarted) while test commands and health
//! checks run on it ends those commands "by a fault", frees their driver slots, starts
//! the service again, and the run still judges its properties; the same seed gives the
//! same run twice (`detvm check`).

mod common;

use std::path::Path;

use common::cli::{read_json, run_detvm as detvm, text};

/// Each test command runs for about 3 s of virtual time, three at a time on random
/// nodes: long enough that kills land while commands run on the killed nodes.
const LOOP: &str = "#!/bin/sh\ni=0\nwhile [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done\necho loop done on $(hostname)\n";
const PROBE: &str = "#!/bin/sh\ncat /proc/uptime\n";
const CHECK: &str = "#!/bin/sh\necho eventually on $(hostname)\n";

const COMPOSE: &str = r#"services:
  svc:
    image: detvm-test/killbox:1
    healthcheck:
      test: ["CMD", "true"]
      interval: 500ms
      retries: 3
  data:
    image: detvm-test/killbox:1
    volumes: ["store:/data"]
  driver:
    image: detvm-test/killbox:1
    depends_on:
      svc: {condition: service_healthy}
volumes:
  store:
x-detvm:
  duration: 11s
"#;

/// Each kind of node killed twice while commands run, each restarted a second later.
const PLAN: &str = r#"faults:
  - at: 2500ms
    fault: {type: kill, node: driver, restart_after: 1s}
  - at: 3500ms
    fault: {type: kill, node: svc, restart_after: 1s}
  - at: 4500ms
    fault: {type: kill, node: data, restart_after: 1s}
  - at: 6500ms
    fault: {type: kill, node: driver, restart_after: 1s}
  - at: 7500ms
    fault: {type: kill, node: svc, restart_after: 1s}
  - at: 8500ms
    fault: {type: kill, node: data, restart_after: 1s}
"#;

fn build_image(home: &Path, dir: &Path) {
    let mut spec = String::from("name = \"detvm-test/killbox:1\"\n");
    for (name, body) in [
        ("parallel_driver_loop", LOOP),
        ("anytime_probe", PROBE),
        ("eventually_check", CHECK),
    ] {
        std::fs::write(dir.join(name), body).unwrap();
        spec.push_str(&format!(
            "[[files]]\nsrc = \"{name}\"\ndest = \"/opt/antithesis/test/v1/main/{name}\"\nmode = 0o755\n"
        ));
    }
    spec.push_str("[config]\ncmd = [\"/bin/sh\", \"-c\", \"while true; do sleep 3600; done\"]\n");
    std::fs::write(dir.join("killbox.toml"), spec).unwrap();
    let out = detvm(
        home,
        &["image", "build", dir.join("killbox.toml").to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn killed_nodes_end_their_commands_by_a_fault_and_the_run_is_judged() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    build_image(&home, tmp.path());
    let compose = tmp.path().join("docker-compose.yaml");
    std::fs::write(&compose, COMPOSE).unwrap();
    let plan = tmp.path().join("kills.yaml");
    std::fs::write(&plan, PLAN).unwrap();
    let json = tmp.path().join("report.json");
    let out = detvm(
        &home,
        &[
            "check",
            compose.to_str().unwrap(),
            "--seed",
            "3",
            "--runs",
            "2",
            "--faults",
            plan.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
    );
    let all = text(&out);
    // Identical runs that finished: no hang (exit 5), no infrastructure error (3).
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("deterministic: 2 runs"), "{all}");
    let report = read_json(&json);
    assert_eq!(report["status"], "passed", "{report:#}");
    let commands = report["commands"].as_array().unwrap();
    let count = |field: &str, service: &str| -> u64 {
        commands
            .iter()
            .filter(|c| c["service"] == service)
            .map(|c| c[field].as_u64().unwrap())
            .sum()
    };
    for node in ["driver", "svc", "data"] {
        assert!(
            count("ended_by_fault", node) >= 1,
            "no command on {node} ended by its kill: {report:#}"
        );
        // The driver slots were freed: commands ran on the node after its restart.
        assert!(
            count("succeeded", node) >= 1,
            "too few commands succeeded on {node}: {report:#}"
        );
    }
    // The eventually_ commands ran after the faults, on every node.
    let eventually: Vec<_> = commands
        .iter()
        .filter(|c| c["command"] == "main/eventually_check")
        .collect();
    assert_eq!(eventually.len(), 3, "{report:#}");
    // The store keeps how each command ended.
    let run = report["run"].as_str().unwrap();
    let log = std::fs::read_to_string(home.join("runs").join(run).join("events.log")).unwrap();
    assert!(log.contains("\"outcome\":\"ended_by_fault\""), "{log}");
    assert!(log.contains("its VM was killed"), "{log}");
}
