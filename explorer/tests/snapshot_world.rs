//! The snapshot invariant for a World of three real Linux guests on `emu` (pings between
//! them under seed 12's swarm fault plan: partitions, a kill and restart, a clock step
//! and skew, loss, reordering): running 0→t2 equals snapshotting at t1, restoring and
//! running t1→t2 (same world trace value, same events), for several t1 with frames in
//! flight; forks with the same branch agree and different branches diverge.
#![cfg(feature = "emu")]

mod common;

use vmm::clock::VirtualTime;
use vmm::machine::VmConfig;
use vmm::world::snapshot::{file, WorldSnapshot};
use vmm::world::{
    FaultPlan, NetworkConfig, NodeConfig, Span, World, WorldConfig, WorldEvent, WorldOutcome,
};

const NAMES: [&str; 3] = ["a", "b", "c"];
const STEP_NS: u64 = 1_000_000;
const MAX_STEPS: u64 = 60_000;

fn pinger(me: usize, targets: &[usize], rounds: usize) -> String {
    let pings: String = targets
        .iter()
        .map(|n| {
            format!(
                "if ping -c 1 -W 1 10.0.0.{n} >/dev/null 2>&1; then echo P{n} ok; else echo P{n} fail; fi\n"
            )
        })
        .collect();
    format!(
        "#!/bin/sh
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
ifconfig lo 127.0.0.1 up
ifconfig eth0 10.0.0.{me} netmask 255.255.255.0 up
echo NODE-UP
i=0
while [ $i -lt {rounds} ]; do
{pings}sleep 0.25
i=$((i+1))
done
poweroff -f
"
    )
}

fn config(seed: u64) -> WorldConfig {
    let names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
    let bodies = [
        pinger(1, &[2, 3], 5),
        pinger(2, &[1, 3], 5),
        pinger(3, &[1, 2], 5),
    ];
    let nodes = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let mut vm = VmConfig::new(common::guest_kernel_dir().join("vmlinux"));
            vm.initrd = Some(common::busybox_initramfs(body));
            vm.cmdline = "quiet".to_string();
            NodeConfig {
                name: NAMES[i].to_string(),
                vm,
            }
        })
        .collect();
    WorldConfig {
        seed,
        nodes,
        network: NetworkConfig {
            loss: 0.02,
            ..NetworkConfig::default()
        },
        faults: FaultPlan::swarm(seed, &names, Span::from_secs(3)),
    }
}

/// Runs step `from` onwards until every node stopped; returns the step it stopped at.
fn run_from(w: &mut World, from: u64, events: &mut Vec<WorldEvent>) -> u64 {
    let mut k = from;
    loop {
        let outcome = w
            .run_until(VirtualTime((k + 1) * STEP_NS), &mut |e| events.push(e))
            .expect("run");
        if outcome == WorldOutcome::AllStopped || k >= MAX_STEPS {
            return k;
        }
        k += 1;
    }
}

fn first_difference(a: &[WorldEvent], b: &[WorldEvent]) -> Option<String> {
    if let Some(k) = (0..a.len().min(b.len())).find(|&k| a[k] != b[k]) {
        return Some(format!("event #{k}:\n  {}\n  {}", a[k], b[k]));
    }
    (a.len() != b.len()).then(|| format!("{} events vs {}", a.len(), b.len()))
}

#[test]
fn restored_world_continues_bit_for_bit_and_forks_follow_their_branch() {
    let seed = 12;
    let mut reference = World::new(config(seed)).expect("world");
    let mut ref_events = Vec::new();
    let ref_end = run_from(&mut reference, 0, &mut ref_events);
    let ref_trace = reference.trace_value();
    assert!(ref_end < MAX_STEPS, "the world did not stop");

    // The same world, snapshotted at several steps (the world goes on after each):
    // two fixed ones, the first moments with frames in flight at least 1.5 s apart, and
    // the first moment a node is killed.
    let mut last_in_flight = 0;
    let mut killed_seen = false;
    let mut w = World::new(config(seed)).expect("world");
    let mut events = Vec::new();
    let mut snaps: Vec<(u64, WorldSnapshot, usize)> = Vec::new();
    let mut k = 0;
    let end = loop {
        let outcome = w
            .run_until(VirtualTime((k + 1) * STEP_NS), &mut |e| events.push(e))
            .expect("run");
        if outcome == WorldOutcome::AllStopped || k >= MAX_STEPS {
            break k;
        }
        let killed = NAMES
            .iter()
            .any(|n| w.node_state(n) == Some(vmm::world::NodeState::Killed));
        let in_flight = w.frames_in_flight() > 0 && k > last_in_flight + 1500;
        let wanted = k == 150 || k == 1200 || in_flight || (killed && !killed_seen);
        killed_seen |= killed;
        if in_flight {
            last_in_flight = k;
        }
        if wanted {
            snaps.push((k, w.snapshot().expect("snapshot"), events.len()));
        }
        k += 1;
    };
    assert_eq!(end, ref_end);
    assert_eq!(
        first_difference(&events, &ref_events),
        None,
        "snapshots changed the run"
    );
    assert_eq!(w.trace_value(), ref_trace);
    let in_flight: Vec<usize> = snaps.iter().map(|(_, s, _)| s.frames_in_flight()).collect();
    assert!(
        in_flight.iter().filter(|&&n| n > 0).count() >= 2,
        "frames in flight at the snapshots: {in_flight:?}"
    );

    for (at, snap, seen) in &snaps {
        let mut restored = World::restore(snap).expect("restore");
        let mut tail = Vec::new();
        let stopped = run_from(&mut restored, at + 1, &mut tail);
        eprintln!(
            "t1 = {} ms, {} frames in flight, {} nodes down, {} events after: trace {:#018x}",
            (at + 1) * STEP_NS / 1_000_000,
            snap.frames_in_flight(),
            snap.state.nodes.iter().filter(|n| n.vm.is_none()).count(),
            tail.len(),
            restored.trace_value()
        );
        assert_eq!(stopped, ref_end, "restored at step {at}");
        assert_eq!(
            first_difference(&tail, &ref_events[*seen..]),
            None,
            "restored at step {at}"
        );
        assert_eq!(restored.trace_value(), ref_trace, "restored at step {at}");
    }

    // Forks from the middle snapshot: one branch twice, and another branch.
    let (at, snap, seen) = &snaps[snaps.len() / 2];
    let fork = |branch| {
        let mut w = World::fork(snap, Some(branch)).expect("fork");
        let mut tail = Vec::new();
        run_from(&mut w, at + 1, &mut tail);
        (w.trace_value(), tail)
    };
    let (t1a, e1a) = fork(1);
    let (t1b, e1b) = fork(1);
    let (t2, e2) = fork(2);
    assert_eq!(t1a, t1b, "the same branch twice");
    assert_eq!(first_difference(&e1a, &e1b), None);
    assert_ne!(t1a, t2, "two branches");
    assert_ne!(t1a, ref_trace, "a branch and the replay");
    assert!(first_difference(&e1a, &e2).is_some());
    assert!(first_difference(&e1a, &ref_events[*seen..]).is_some());
    eprintln!(
        "forks at step {at}: branch 1 {t1a:#018x}, branch 2 {t2:#018x}, replay {ref_trace:#018x}"
    );

    // On disk: a full file and a child of it; both restore to the same future; damaged
    // files are refused with the reason, before anything runs.
    let dir = tempfile::tempdir().unwrap();
    let i = snaps.len() / 2;
    let (at_full, full, _) = &snaps[i];
    let (at_child, child, seen_child) = &snaps[i + 1];
    let full_path = dir.path().join("full.dsnap");
    let child_path = dir.path().join("child.dsnap");
    let wf = file::save(full, &full_path, None).expect("save full");
    let wc = file::save(child, &child_path, Some((&full_path, full))).expect("save child");
    eprintln!(
        "files: full at step {at_full}: {} bytes, {} pages; child at step {at_child}: {} bytes, {} pages",
        wf.bytes, wf.pages, wc.bytes, wc.pages
    );
    assert!(wc.bytes < wf.bytes);
    let loaded = file::load(&child_path, &config(seed)).expect("load child");
    let mut w = World::restore(&loaded).expect("restore from file");
    let mut tail = Vec::new();
    run_from(&mut w, at_child + 1, &mut tail);
    assert_eq!(first_difference(&tail, &ref_events[*seen_child..]), None);
    assert_eq!(w.trace_value(), ref_trace, "restored from the child file");

    let bytes = std::fs::read(&child_path).unwrap();
    let damaged = dir.path().join("damaged.dsnap");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x40;
    std::fs::write(&damaged, &flipped).unwrap();
    let err = file::load(&damaged, &config(seed))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("damaged.dsnap") && err.contains("checksum mismatch"),
        "{err}"
    );
    std::fs::write(&damaged, &bytes[..bytes.len() - 1000]).unwrap();
    let err = file::load(&damaged, &config(seed))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    // A child whose parent changed.
    std::fs::write(&full_path, b"DETVMSNP").unwrap();
    let err = file::load(&child_path, &config(seed))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("full.dsnap") && err.contains("truncated"),
        "{err}"
    );
}

/// Figures for docs/benchmarks.md (scripts/bench-snapshot.sh): snapshot and fork time of
/// a 3-VM world with 256 MiB per VM, and file sizes of a full snapshot and of a child
/// written one virtual second later.
#[test]
#[ignore = "a measurement, not a check"]
fn snapshot_benchmark() {
    use std::time::Instant;
    let cfg = config(12);
    assert!(cfg.nodes.iter().all(|n| n.vm.memory == 256 << 20));
    let mut w = World::new(cfg.clone()).expect("world");
    let mut events = Vec::new();
    let run_to = |w: &mut World, ms: u64, events: &mut Vec<WorldEvent>| {
        for k in 0..ms {
            let t = VirtualTime((k + 1) * STEP_NS);
            if t > w.now() {
                w.run_until(t, &mut |e| events.push(e)).expect("run");
            }
        }
    };
    run_to(&mut w, 1000, &mut events);
    let t = Instant::now();
    let first = w.snapshot().expect("snapshot");
    let first_snapshot = t.elapsed();
    run_to(&mut w, 2000, &mut events);
    let t = Instant::now();
    let second = w.snapshot().expect("snapshot");
    let second_snapshot = t.elapsed();
    let overlay: usize = second.memory.iter().flatten().map(|m| m.pages.len()).sum();

    let mut forks = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let f = World::fork(&second, Some(1)).expect("fork");
        forks.push(t.elapsed());
        drop(f);
    }
    forks.sort();
    let fork = forks[forks.len() / 2];

    let dir = tempfile::tempdir().unwrap();
    let full_path = dir.path().join("full.dsnap");
    let child_path = dir.path().join("child.dsnap");
    let t = Instant::now();
    let full = file::save(&first, &full_path, None).expect("save");
    let save_full = t.elapsed();
    let t = Instant::now();
    let child = file::save(&second, &child_path, Some((&full_path, &first))).expect("save");
    let save_child = t.elapsed();
    let t = Instant::now();
    let loaded = file::load(&child_path, &cfg).expect("load");
    let w2 = World::restore(&loaded).expect("restore");
    let load_child = t.elapsed();
    drop(w2);
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "snapshot: 3 VMs x 256 MiB at 1.0 s virtual: first snapshot {:.2} ms, at 2.0 s {:.2} ms ({overlay} pages written since the first, copied)",
        ms(first_snapshot),
        ms(second_snapshot)
    );
    eprintln!(
        "snapshot: fork (restore, new branch) of the 3-VM world: {:.2} ms median of 5, {:.2} ms per VM",
        ms(fork),
        ms(fork) / 3.0
    );
    eprintln!(
        "snapshot: file, full at 1.0 s: {} bytes ({} pages), written in {:.0} ms; child at 2.0 s: {} bytes ({} pages), written in {:.0} ms; ratio {:.0}x; loading the child and restoring {:.0} ms",
        full.bytes,
        full.pages,
        ms(save_full),
        child.bytes,
        child.pages,
        ms(save_child),
        full.bytes as f64 / child.bytes as f64,
        ms(load_child)
    );
}
