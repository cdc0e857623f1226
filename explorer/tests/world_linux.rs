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
    let w = world(1, [RECEIVER, &b, c], NetworkConfig::default(), FaultPlan::default());
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

/// Wall and virtual time of the phase after every node printed `marker`.
struct Phase {
    wall: Duration,
    virt: u64,
}

/// Runs in 100 ms steps, measuring from the moment all nodes printed `marker`.
fn run_measuring(mut w: World, marker: &str) -> (Run, Phase) {
    let start = Instant::now();
    let mut events: Vec<WorldEvent> = Vec::new();
    let mut t = VirtualTime::ZERO;
    let mut from: Option<(Instant, VirtualTime)> = None;
    let outcome = loop {
        t = t.saturating_add(100_000_000);
        let outcome = w.run_until(t, &mut |e| events.push(e)).expect("run");
        let marked = |n: &str| {
            events.iter().any(|e| {
                e.node == n && matches!(&e.kind, EventKind::Console { line } if line.starts_with(marker))
            })
        };
        if from.is_none() && NAMES.iter().all(|n| marked(n)) {
            from = Some((Instant::now(), w.now()));
        }
        if outcome == WorldOutcome::AllStopped || t >= LIMIT {
            break outcome;
        }
    };
    let (wall0, virt0) = from.expect("every node printed the marker");
    let phase = Phase {
        wall: wall0.elapsed(),
        virt: w.now().saturating_sub(virt0),
    };
    let run = Run {
        events,
        outcome,
        end: w.now(),
        wall: start.elapsed(),
        trace: w.trace_value(),
    };
    (run, phase)
}

#[test]
fn idle_world_covers_a_minute_of_virtual_time_quickly() {
    let body = "echo SLEEP-START\nsleep 60\necho SLEPT";
    let w = world(1, [body; 3], NetworkConfig::default(), FaultPlan::default());
    let (r, idle) = run_measuring(w, "SLEEP-START");
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
