//! Worlds of three real Linux guests (busybox /init scripts) on the `emu` backend: the
//! network between them, faults, determinism, and idle time running ahead of wall time.
#![cfg(feature = "emu")]

mod common;

use std::time::{Duration, Instant};

use vmm::clock::VirtualTime;
use vmm::devices::virtio::blk::DiskBacking;
use vmm::devices::virtio::{BlockConfig, VirtioDeviceConfig};
use vmm::machine::VmConfig;
use vmm::world::{
    DropReason, EventKind, FaultPlan, FrameAction, NetworkConfig, NodeChange, NodeConfig, Span,
    World, WorldConfig, WorldEvent, WorldOutcome,
};

/// Mounts the pseudo file systems, points stdio at the serial console and brings up
/// eth0 as 10.0.0.N (N = node index + 1, matching the World's MAC numbering).
fn prelude(n: usize) -> String {
    format!(
        "#!/bin/sh
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
ifconfig lo 127.0.0.1 up
ifconfig eth0 10.0.0.{n} netmask 255.255.255.0 up
echo NODE-UP
"
    )
}

const NAMES: [&str; 3] = ["a", "b", "c"];

fn node(index: usize, body: &str, devices: Vec<VirtioDeviceConfig>) -> NodeConfig {
    let script = format!("{}{body}\npoweroff -f\n", prelude(index + 1));
    let mut vm = VmConfig::new(common::guest_kernel_dir().join("vmlinux"));
    vm.initrd = Some(common::busybox_initramfs(&script));
    vm.cmdline = "quiet".to_string();
    vm.devices = devices;
    NodeConfig {
        name: NAMES[index].to_string(),
        vm,
    }
}

fn world(seed: u64, bodies: [&str; 3], network: NetworkConfig, faults: FaultPlan) -> World {
    let nodes = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| node(i, b, vec![]))
        .collect();
    World::new(WorldConfig {
        seed,
        nodes,
        network,
        faults,
    })
    .expect("world")
}

struct Run {
    events: Vec<WorldEvent>,
    outcome: WorldOutcome,
    end: VirtualTime,
    wall: Duration,
    trace: u64,
}

/// Runs until every node stopped (or `limit`), in 1 s steps of virtual time.
fn run(mut w: World, limit: VirtualTime) -> (Run, World) {
    let start = Instant::now();
    let mut events = Vec::new();
    let mut t = VirtualTime::ZERO;
    let outcome = loop {
        t = t.saturating_add(1_000_000_000).min(limit);
        let outcome = w.run_until(t, &mut |e| events.push(e)).expect("run");
        if outcome == WorldOutcome::AllStopped || t >= limit {
            break outcome;
        }
    };
    let run = Run {
        events,
        outcome,
        end: w.now(),
        wall: start.elapsed(),
        trace: w.trace_value(),
    };
    (run, w)
}

/// Console lines of `node`, with their world times.
fn lines<'a>(r: &'a Run, node: &str) -> Vec<(VirtualTime, &'a str)> {
    r.events
        .iter()
        .filter(|e| e.node == node)
        .filter_map(|e| match &e.kind {
            EventKind::Console { line } => Some((e.time, line.as_str())),
            _ => None,
        })
        .collect()
}

fn console(r: &Run, node: &str) -> String {
    lines(r, node)
        .iter()
        .map(|(_, l)| *l)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The rest of the last console line of `node` that starts with `key `.
fn value<'a>(r: &'a Run, node: &str, key: &str) -> Option<&'a str> {
    let prefix = format!("{key} ");
    lines(r, node)
        .into_iter()
        .rev()
        .find_map(|(_, l)| l.strip_prefix(prefix.as_str()))
}

/// When `node` printed a line starting with `key`.
fn when(r: &Run, node: &str, key: &str) -> Option<VirtualTime> {
    lines(r, node)
        .into_iter()
        .find(|(_, l)| l.starts_with(key))
        .map(|(t, _)| t)
}

fn all_consoles(r: &Run) -> String {
    NAMES
        .iter()
        .map(|n| format!("--- {n}\n{}", console(r, n)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn frames(r: &Run, action: FrameAction, reason: Option<DropReason>) -> usize {
    r.events
        .iter()
        .filter(|e| {
            matches!(&e.kind, EventKind::Frame { action: a, reason: why, .. }
                if *a == action && *why == reason)
        })
        .count()
}

fn states(r: &Run, node: &str) -> Vec<NodeChange> {
    r.events
        .iter()
        .filter(|e| e.node == node)
        .filter_map(|e| match &e.kind {
            EventKind::State { state } => Some(state.clone()),
            _ => None,
        })
        .collect()
}

fn plan(json: &str) -> FaultPlan {
    FaultPlan::from_json(json).expect("plan")
}

const LIMIT: VirtualTime = VirtualTime(120_000_000_000);

/// `a` receives a file over TCP and prints its size and hash.
const RECEIVER: &str = "
nc -l -p 5000 > /tmp/recv
echo RECV $(wc -c < /tmp/recv) $(sha256sum < /tmp/recv | cut -c1-16)
";

/// Sends KIB KiB of urandom to `a` (retrying until `a` listens).
fn sender(kib: usize) -> String {
    format!(
        "
dd if=/dev/urandom of=/tmp/data bs=1024 count={kib} 2>/dev/null
echo SENT $(wc -c < /tmp/data) $(sha256sum < /tmp/data | cut -c1-16)
echo XFER-START
i=0; until nc 10.0.0.1 5000 < /tmp/data; do i=$((i+1)); [ $i -gt 50 ] && break; sleep 0.2; done
echo XFER-DONE
"
    )
}

// ------------------------------------------------------------------ ping and TCP

#[test]
fn ping_and_tcp_between_three_guests() {
    let b = format!(
        "
sleep 0.5
ping -c 3 -W 2 10.0.0.3 | grep transmitted | sed 's/^/PING-C /'
ping -c 3 -W 2 10.0.0.1 | grep transmitted | sed 's/^/PING-A /'
{}",
        sender(256)
    );
    let c = "sleep 4";
    let w = world(
        1,
        [RECEIVER, &b, c],
        NetworkConfig::default(),
        FaultPlan::default(),
    );
    let (r, _) = run(w, LIMIT);
    let text = all_consoles(&r);
    assert_eq!(r.outcome, WorldOutcome::AllStopped, "{text}");
    assert_eq!(
        value(&r, "b", "PING-C"),
        Some("3 packets transmitted, 3 packets received, 0% packet loss"),
        "{text}"
    );
    assert_eq!(
        value(&r, "b", "PING-A"),
        Some("3 packets transmitted, 3 packets received, 0% packet loss"),
        "{text}"
    );
    let sent = value(&r, "b", "SENT").expect("SENT line");
    assert!(sent.starts_with("262144 "), "{text}");
    assert_eq!(value(&r, "a", "RECV"), Some(sent), "{text}");
    for n in NAMES {
        assert_eq!(states(&r, n), [NodeChange::Booted, NodeChange::PoweredOff]);
    }
    let delivered = frames(&r, FrameAction::Delivered, None);
    assert!(delivered > 200, "{delivered} frames delivered");
    eprintln!(
        "3 guests, ping + 256 KiB TCP: {} virtual, {:?} wall, {delivered} frames delivered",
        r.end, r.wall
    );
}

// ------------------------------------------------------------------------ idle

/// Wall and virtual time of the phase after the nodes printed a marker.
struct Phase {
    wall: Duration,
    virt: u64,
}

/// Runs in `step`s of virtual time, measuring from the step in which all of `who`
/// printed `start` to the step in which they printed `end` (or to the end of the run).
fn run_measuring(
    mut w: World,
    step: u64,
    (start, end): (&str, Option<&str>),
    who: &[&str],
) -> (Run, Phase) {
    let wall_start = Instant::now();
    let mut events: Vec<WorldEvent> = Vec::new();
    let mut t = VirtualTime::ZERO;
    let mut from: Option<(Instant, VirtualTime)> = None;
    let mut to: Option<(Instant, VirtualTime)> = None;
    let outcome = loop {
        t = t.saturating_add(step);
        let outcome = w.run_until(t, &mut |e| events.push(e)).expect("run");
        let marked = |marker: &str| {
            who.iter().all(|n| {
                events.iter().any(|e| {
                    e.node == *n
                        && matches!(&e.kind, EventKind::Console { line } if line.starts_with(marker))
                })
            })
        };
        if from.is_none() && marked(start) {
            from = Some((Instant::now(), w.now()));
        }
        if to.is_none() && end.is_some_and(marked) {
            to = Some((Instant::now(), w.now()));
        }
        if outcome == WorldOutcome::AllStopped || t >= LIMIT {
            break outcome;
        }
    };
    let (wall0, virt0) = from.expect("every node printed the start marker");
    let (wall1, virt1) = to.unwrap_or((Instant::now(), w.now()));
    let phase = Phase {
        wall: wall1 - wall0,
        virt: virt1.saturating_sub(virt0),
    };
    let run = Run {
        events,
        outcome,
        end: w.now(),
        wall: wall_start.elapsed(),
        trace: w.trace_value(),
    };
    (run, phase)
}

#[test]
fn idle_world_covers_a_minute_of_virtual_time_quickly() {
    let body = "echo SLEEP-START\nsleep 60\necho SLEPT";
    let w = world(1, [body; 3], NetworkConfig::default(), FaultPlan::default());
    let (r, idle) = run_measuring(w, 100_000_000, ("SLEEP-START", None), &NAMES);
    let text = all_consoles(&r);
    assert_eq!(r.outcome, WorldOutcome::AllStopped, "{text}");
    for n in NAMES {
        let (Some(s), Some(e)) = (when(&r, n, "SLEEP-START"), when(&r, n, "SLEPT")) else {
            panic!("{n} did not sleep:\n{text}");
        };
        let slept = e.saturating_sub(s);
        assert!(
            (60_000_000_000..61_000_000_000).contains(&slept),
            "{n} slept {slept} ns"
        );
    }
    assert!(r.end >= VirtualTime(60_000_000_000));
    eprintln!(
        "idle 3-VM world: whole run {} virtual in {:?} wall; idle phase {:.3} s virtual in \
         {:.3} s wall = {:.0}x real time",
        r.end,
        r.wall,
        idle.virt as f64 / 1e9,
        idle.wall.as_secs_f64(),
        idle.virt as f64 / idle.wall.as_nanos() as f64
    );
}

// ---------------------------------------------------------------------- faults

/// Pings 10.0.0.N once per round (1 s timeout), ROUNDS times, printing `P<N> ok|fail`.
fn pinger(targets: &[usize], rounds: usize) -> String {
    let pings: String = targets
        .iter()
        .map(|n| {
            format!(
                "if ping -c 1 -W 1 10.0.0.{n} >/dev/null 2>&1; then echo P{n} ok; else echo P{n} fail; fi\n"
            )
        })
        .collect();
    format!("i=0\nwhile [ $i -lt {rounds} ]; do\n{pings}sleep 0.25\ni=$((i+1))\ndone\n")
}

/// (time, ok) of each `P<n>` result line of `node`.
fn ping_results(r: &Run, node: &str, n: usize) -> Vec<(VirtualTime, bool)> {
    let key = format!("P{n} ");
    lines(r, node)
        .into_iter()
        .filter_map(|(t, l)| l.strip_prefix(key.as_str()).map(|rest| (t, rest == "ok")))
        .collect()
}

/// Asserts pings succeed before `from`, fail at some point within [from, to + 1.5 s]
/// and never outside it, and succeed again after `to`.
fn assert_outage(results: &[(VirtualTime, bool)], from: u64, to: u64, what: &str) {
    let s = |ns: u64| VirtualTime(ns);
    assert!(
        results.iter().any(|(t, ok)| *ok && *t < s(from)),
        "{what}: no success before the fault: {results:?}"
    );
    assert!(
        results.iter().any(|(_, ok)| !ok),
        "{what}: no failure during the fault: {results:?}"
    );
    for (t, ok) in results {
        if !ok {
            assert!(
                *t >= s(from) && *t <= s(to + 1_500_000_000),
                "{what}: failure at {t} outside the fault: {results:?}"
            );
        }
    }
    assert!(
        results.iter().any(|(t, ok)| *ok && *t > s(to)),
        "{what}: no success after the fault ended: {results:?}"
    );
}

fn fault_times(r: &Run) -> Vec<(VirtualTime, bool, String)> {
    r.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::FaultApplied { fault } => Some((e.time, true, fault.to_string())),
            EventKind::FaultHealed { fault } => Some((e.time, false, fault.to_string())),
            _ => None,
        })
        .collect()
}

#[test]
fn partition_stops_traffic_and_heal_restores_it() {
    let faults = plan(
        r#"{"faults": [
            {"at": "1s", "fault": {"type": "partition", "groups": [["a"], ["b", "c"]]}},
            {"at": "3s", "fault": {"type": "heal"}}
        ]}"#,
    );
    let b = pinger(&[1, 3], 14);
    let w = world(
        1,
        ["sleep 6", &b, "sleep 6"],
        NetworkConfig::default(),
        faults,
    );
    let (r, _) = run(w, LIMIT);
    let text = all_consoles(&r);
    assert_eq!(r.outcome, WorldOutcome::AllStopped, "{text}");
    assert_outage(
        &ping_results(&r, "b", 1),
        1_000_000_000,
        3_000_000_000,
        "b -> a",
    );
    // b and c are on the same side: never cut.
    let to_c = ping_results(&r, "b", 3);
    assert!(
        to_c.len() >= 10 && to_c.iter().all(|(_, ok)| *ok),
        "{to_c:?}"
    );
    assert!(frames(&r, FrameAction::Dropped, Some(DropReason::Partitioned)) > 0);
    let faults = fault_times(&r);
    assert_eq!(faults.len(), 2, "{faults:?}");
    assert_eq!(faults[0].0, VirtualTime(1_000_000_000));
    assert_eq!(faults[1].0, VirtualTime(3_000_000_000));
}

#[test]
fn paused_vm_peers_see_timeouts_until_it_resumes() {
    let faults = plan(
        r#"{"faults": [{"at": "1s", "fault": {"type": "pause", "node": "c", "duration": "2s"}}]}"#,
    );
    let b = pinger(&[3], 14);
    let w = world(
        2,
        ["sleep 6", &b, "sleep 6"],
        NetworkConfig::default(),
        faults,
    );
    let (r, _) = run(w, LIMIT);
    let text = all_consoles(&r);
    assert_eq!(r.outcome, WorldOutcome::AllStopped, "{text}");
    assert_outage(
        &ping_results(&r, "b", 3),
        1_000_000_000,
        3_000_000_000,
        "b -> c",
    );
    assert_eq!(
        states(&r, "c"),
        [
            NodeChange::Booted,
            NodeChange::Paused,
            NodeChange::Resumed,
            NodeChange::PoweredOff
        ]
    );
}

#[test]
fn killed_vm_restarts_serves_again_and_keeps_flushed_disk_writes() {
    let faults = plan(
        r#"{"faults": [{"at": "1.5s", "fault": {"type": "kill", "node": "a", "restart_after": "1s"}}]}"#,
    );
    let a = "
if [ \"$(head -c 8 /dev/vda)\" = detvm-ok ]; then echo DISK kept; else echo DISK empty; fi
printf detvm-ok | dd of=/dev/vda conv=fsync,notrunc 2>/dev/null && echo FLUSHED
sleep 5
";
    let disk = VirtioDeviceConfig::Block(BlockConfig {
        backing: DiskBacking::Zeroed { bytes: 1 << 20 },
        read_only: false,
        id: "data".into(),
    });
    let nodes = vec![
        node(0, a, vec![disk]),
        node(1, &pinger(&[1], 14), vec![]),
        node(2, "sleep 1", vec![]),
    ];
    let w = World::new(WorldConfig {
        seed: 3,
        nodes,
        network: NetworkConfig::default(),
        faults,
    })
    .expect("world");
    let (r, _) = run(w, LIMIT);
    let text = all_consoles(&r);
    assert_eq!(r.outcome, WorldOutcome::AllStopped, "{text}");
    assert_outage(
        &ping_results(&r, "b", 1),
        1_500_000_000,
        2_500_000_000,
        "b -> a",
    );
    assert_eq!(
        states(&r, "a"),
        [
            NodeChange::Booted,
            NodeChange::Killed,
            NodeChange::Restarted,
            NodeChange::PoweredOff
        ]
    );
    let disk_lines: Vec<_> = lines(&r, "a")
        .into_iter()
        .filter(|(_, l)| l.starts_with("DISK"))
        .map(|(_, l)| l)
        .collect();
    assert_eq!(disk_lines, ["DISK empty", "DISK kept"], "{text}");
    assert!(frames(&r, FrameAction::Dropped, Some(DropReason::NodeDown)) > 0);
}

#[test]
fn packet_loss_slows_a_transfer_but_tcp_completes() {
    let transfer = |loss: Option<f64>| {
        let faults = match loss {
            Some(p) => plan(&format!(
                r#"{{"faults": [{{"at": "0", "fault": {{"type": "loss", "probability": {p}, "duration": "100s"}}}}]}}"#
            )),
            None => FaultPlan::default(),
        };
        let w = world(
            4,
            [RECEIVER, &sender(256), "true"],
            NetworkConfig::default(),
            faults,
        );
        let (r, _) = run(w, LIMIT);
        let text = all_consoles(&r);
        assert_eq!(r.outcome, WorldOutcome::AllStopped, "{text}");
        let sent = value(&r, "b", "SENT").expect("SENT").to_string();
        assert_eq!(value(&r, "a", "RECV"), Some(sent.as_str()), "{text}");
        let took = when(&r, "b", "XFER-DONE")
            .unwrap()
            .saturating_sub(when(&r, "b", "XFER-START").unwrap());
        (
            took,
            frames(&r, FrameAction::Dropped, Some(DropReason::Lost)),
        )
    };
    let (clean, clean_lost) = transfer(None);
    let (lossy, lost) = transfer(Some(0.05));
    eprintln!("256 KiB: {clean} ns without loss, {lossy} ns with 5% loss ({lost} frames lost)");
    assert_eq!(clean_lost, 0);
    assert!(lost > 0);
    assert!(lossy > clean, "loss slows the transfer: {lossy} vs {clean}");
}

// ---------------------------------------------------------------- determinism

fn swarm_world(seed: u64) -> World {
    let names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
    let faults = FaultPlan::swarm(seed, &names, Span::from_secs(3));
    let a = pinger(&[2, 3], 5);
    let b = pinger(&[1, 3], 5);
    let c = pinger(&[1, 2], 5);
    world(
        seed,
        [&a, &b, &c],
        NetworkConfig {
            loss: 0.02,
            ..NetworkConfig::default()
        },
        faults,
    )
}

/// Seed 12's swarm plan has a clock step, a skew, partitions, a kill and restart, loss
/// and reordering; seed 11's only kills.
#[test]
fn same_seed_same_trace_and_events_other_seed_other_faults() {
    let first_world = swarm_world(12);
    eprintln!("seed 12: {}", first_world.plan());
    let plan = first_world.plan().clone();
    let (first, _) = run(first_world, LIMIT);
    assert!(
        !fault_times(&first).is_empty(),
        "the swarm plan applied faults"
    );
    for i in 1..10 {
        let (again, _) = run(swarm_world(12), LIMIT);
        assert_eq!(again.trace, first.trace, "run {i}: trace value differs");
        assert_eq!(
            again.events.len(),
            first.events.len(),
            "run {i}: event count"
        );
        if let Some(k) = (0..first.events.len()).find(|&k| again.events[k] != first.events[k]) {
            panic!(
                "run {i}: first differing event #{k}:\n  {}\n  {}",
                first.events[k], again.events[k]
            );
        }
    }
    let other_world = swarm_world(11);
    eprintln!("seed 11: {}", other_world.plan());
    assert_ne!(
        other_world.plan(),
        &plan,
        "another seed, another fault plan"
    );
    let (other, _) = run(other_world, LIMIT);
    assert_ne!(fault_times(&other), fault_times(&first));
    assert_ne!(other.trace, first.trace);
    eprintln!(
        "10 runs of seed 12: trace {:016x}, {} events, {:?} wall for the first",
        first.trace,
        first.events.len(),
        first.wall
    );
}

// ------------------------------------------------------------------ benchmark

/// Figures for docs/benchmarks.md (scripts/bench-world.sh): the idle ratio, and the
/// host cost per frame of a TCP transfer between two guests.
#[test]
#[ignore = "a measurement, not a check"]
fn world_benchmark() {
    let body = "echo SLEEP-START\nsleep 60\necho SLEPT";
    let w = world(1, [body; 3], NetworkConfig::default(), FaultPlan::default());
    let (r, idle) = run_measuring(w, 100_000_000, ("SLEEP-START", None), &NAMES);
    assert_eq!(r.outcome, WorldOutcome::AllStopped);
    println!(
        "idle 3-VM world (sleep 60 in each): {:.3} s virtual in {:.3} s wall = {:.0}x real time \
         ({} boot to power-off: {:?} wall)",
        idle.virt as f64 / 1e9,
        idle.wall.as_secs_f64(),
        idle.virt as f64 / idle.wall.as_nanos() as f64,
        r.end,
        r.wall
    );

    let kib = 4096;
    let w = world(
        1,
        [RECEIVER, &sender(kib), "sleep 1"],
        NetworkConfig::default(),
        FaultPlan::default(),
    );
    let (r, phase) = run_measuring(w, 1_000_000, ("XFER-START", Some("XFER-DONE")), &["b"]);
    assert_eq!(r.outcome, WorldOutcome::AllStopped);
    let sent = value(&r, "b", "SENT").expect("SENT").to_string();
    assert_eq!(
        value(&r, "a", "RECV"),
        Some(sent.as_str()),
        "{}",
        all_consoles(&r)
    );
    let (t0, t1) = (
        when(&r, "b", "XFER-START").unwrap(),
        when(&r, "b", "XFER-DONE").unwrap(),
    );
    let delivered = r
        .events
        .iter()
        .filter(|e| e.time >= t0 && e.time <= t1)
        .filter(|e| {
            matches!(
                &e.kind,
                EventKind::Frame {
                    action: FrameAction::Delivered,
                    ..
                }
            )
        })
        .count();
    let took = t1.saturating_sub(t0);
    println!(
        "TCP transfer of {kib} KiB b -> a (busybox nc): {delivered} frames delivered, \
         {:.3} s wall = {:.1} us wall per frame, {:.1} MiB/s wall; {:.3} s virtual = {:.1} MiB/s virtual",
        phase.wall.as_secs_f64(),
        phase.wall.as_secs_f64() * 1e6 / delivered as f64,
        kib as f64 / 1024.0 / phase.wall.as_secs_f64(),
        took as f64 / 1e9,
        kib as f64 / 1024.0 / (took as f64 / 1e9)
    );
}
