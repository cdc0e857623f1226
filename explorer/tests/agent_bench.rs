//! Time from VM start (`Vm::boot`) to the service's first output line, wall and virtual,
//! for the busybox test image and the Debian etcd example. Ignored by default; run with
//! `scripts/bench-agent.sh` (figures in docs/benchmarks.md).
#![cfg(feature = "emu")]

mod common;

use std::time::Duration;

use common::agent::*;
use detvm_protocol::boot_params::BootParams;
use detvm_protocol::message::AgentMessage;
use detvm_protocol::spec::Overrides;
use vmm::clock::VirtualTime;

const RUNS: usize = 5;

/// Boots `image` RUNS times; prints and returns (wall to Hello, wall and virtual to the
/// first output line) per run.
fn measure(name: &str, image: &TestImage, config: impl Fn() -> GuestConfig, overrides: &Overrides) {
    let mut walls = Vec::new();
    for run in 0..RUNS {
        let c = config();
        let mut g = Guest::boot(&c);
        g.hello();
        let hello = (g.booted_at.elapsed(), g.vm.now());
        g.start(image.spec(overrides));
        g.until("the first output line", |m| {
            matches!(m, AgentMessage::Output { .. })
        });
        let (wall, virt) = g.first_output.unwrap();
        println!(
            "BENCH {name} run {run}: Hello at {:.2}s wall / {} virtual; first output line at {:.2}s wall / {} virtual",
            hello.0.as_secs_f64(),
            hello.1,
            wall.as_secs_f64(),
            virt
        );
        walls.push(wall);
        g.power_off();
    }
    walls.sort();
    let median: Duration = walls[RUNS / 2];
    println!(
        "BENCH {name}: median {:.2}s wall, min {:.2}s, max {:.2}s to the first output line",
        median.as_secs_f64(),
        walls[0].as_secs_f64(),
        walls[RUNS - 1].as_secs_f64()
    );
}

#[test]
#[ignore = "benchmark: scripts/bench-agent.sh"]
fn bench_busybox_first_output() {
    let image = busybox_image();
    let config = || {
        let mut c = GuestConfig::new(image);
        c.step = VirtualTime(1_000_000); // 1 ms resolution for the virtual time
        c
    };
    measure("busybox", image, config, &shell("echo first"));
}

#[test]
#[ignore = "benchmark: scripts/bench-agent.sh"]
fn bench_etcd_first_output() {
    let image = match etcd_image() {
        Ok(i) => i,
        Err(e) => {
            println!("SKIP bench_etcd_first_output: {e}");
            return;
        }
    };
    let config = || {
        let mut c = GuestConfig::new(&image);
        c.memory = 512 << 20;
        c.boot = BootParams::parse("detvm.hostname=etcd detvm.ip=10.0.0.2/24").unwrap();
        c.step = VirtualTime(1_000_000);
        c
    };
    measure("etcd", &image, config, &Overrides::default());
}
