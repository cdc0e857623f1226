//! Exactness torture of the `emu` backend on real Linux workloads (issue 16): every vCPU run
//! is executed as shorter runs whose budgets are drawn from a seed, 1-instruction runs
//! included (`VmConfig::split_runs`, vmm's `backend::split`), and must be the same run as
//! with whole runs: trace hash, console bytes, instruction count and virtual time.
//!
//! The guest runs fork/exec-heavy shell loops (busybox), a page-fault-heavy program (mmap,
//! first touch, fork and copy-on-write, brk), threads (a mutex, racy counters, munmap while
//! other CPUs run) and user-mode exceptions of every kind (images/guest-probe/torture.c),
//! on 1 and 2 vCPUs. The reference run is snapshotted before every 20 ms step; each
//! torture seed restores one of them and runs that step with split runs, so many seeds fit
//! in a CI test. One seed per vCPU count also runs the whole boot split. Many more seeds:
//! `scripts/torture-emu.sh` (docs/determinism.md).
#![cfg(feature = "emu")]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use vmm::clock::VirtualTime;
use vmm::machine::{Outcome, Vm, VmConfig};
use vmm::snapshot::VmSnapshot;

/// Virtual time between the reference run's snapshots.
const STEP_NS: u64 = 20_000_000;
/// Steps one torture seed runs split from its snapshot (longer windows cost seeds).
const WINDOW_STEPS: usize = 1;
const MAX_STEPS: usize = 2_000;

const INIT: &str = "#!/bin/sh
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
echo TORTURE-START
i=0
h=
while [ $i -lt 16 ]; do
  h=\"$h$(echo $i | md5sum | cut -c1-4)\"
  /bin/true
  i=$((i+1))
done
echo \"forks $h\"
torture pages 48
torture faults 8
torture threads 3 400
echo TORTURE-END
poweroff -f
";

fn torture_binary() -> PathBuf {
    let script = common::repo_root().join("images/guest-probe/build-torture.sh");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "build-torture.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.lines().last().expect("a path").trim())
}

fn config(vcpus: u8) -> VmConfig {
    let mut config = VmConfig::new(common::guest_kernel_dir().join("vmlinux"));
    config.initrd = Some(common::busybox_initramfs_with(INIT, &[torture_binary()]));
    config.seed = 5;
    config.vcpus = vcpus;
    config.cmdline = "quiet".to_string();
    config
}

/// Where a run stands after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Moment {
    outcome: Outcome,
    time: VirtualTime,
    trace: u64,
    instructions: u64,
    console_len: usize,
}

fn step(vm: &mut Vm, k: usize, console: &mut Vec<u8>) -> Moment {
    let limit = VirtualTime((k as u64 + 1) * STEP_NS);
    let outcome = vm
        .run(limit, &mut |b| console.extend_from_slice(b))
        .unwrap_or_else(|e| panic!("step {k}: {e}"));
    Moment {
        outcome,
        time: vm.now(),
        trace: vm.trace().value(),
        instructions: vm.instructions(),
        console_len: console.len(),
    }
}

/// The whole-runs reference: a snapshot before every step and where each step ended.
struct Reference {
    config: VmConfig,
    snapshots: Vec<VmSnapshot>,
    moments: Vec<Moment>,
    console: Vec<u8>,
}

impl Reference {
    fn record(vcpus: u8) -> Reference {
        let config = config(vcpus);
        let started = Instant::now();
        let mut vm = Vm::boot(&config).expect("boot");
        let (mut snapshots, mut moments, mut console) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..MAX_STEPS {
            snapshots.push(vm.snapshot().expect("snapshot"));
            let m = step(&mut vm, k, &mut console);
            moments.push(m);
            if m.outcome != Outcome::TimeLimit {
                break;
            }
        }
        let text = String::from_utf8_lossy(&console).into_owned();
        assert_eq!(moments.last().unwrap().outcome, Outcome::PowerOff, "{text}");
        for line in [
            "TORTURE-END",
            "pages rounds=",
            "faults rounds=",
            "threads n=",
        ] {
            assert!(text.contains(line), "no `{line}` in:\n{text}");
        }
        assert!(text.contains("locked=1200 racy="), "{text}");
        for line in text.lines().filter(|l| {
            ["forks ", "pages ", "faults ", "threads "]
                .iter()
                .any(|p| l.starts_with(p))
        }) {
            eprintln!("  {line}");
        }
        eprintln!(
            "reference, {vcpus} vCPU(s): {} steps, {} instructions, {:.1} s wall",
            moments.len(),
            moments.last().unwrap().instructions,
            started.elapsed().as_secs_f64()
        );
        Reference {
            config,
            snapshots,
            moments,
            console,
        }
    }

    /// Runs steps `first..first + steps` from the snapshot before `first` with split runs
    /// from `seed` and checks every step's end against the reference.
    fn check_window(&self, seed: u64, first: usize, steps: usize) {
        let mut config = self.config.clone();
        config.split_runs = Some(seed);
        let at = |k: usize| {
            if k == 0 {
                0
            } else {
                self.moments[k - 1].console_len
            }
        };
        let mut vm = Vm::restore(&config, &self.snapshots[first]).expect("restore");
        let mut console = self.console[..at(first)].to_vec();
        let last = (first + steps).min(self.moments.len());
        for k in first..last {
            let m = step(&mut vm, k, &mut console);
            let want = self.moments[k];
            if m != want {
                let text = String::from_utf8_lossy(&console[at(first)..]);
                panic!(
                    "split-runs seed {seed}, from step {first}: step {k} ended at {m:?}, \
                     whole runs at {want:?}; console since the snapshot:\n{text}"
                );
            }
            assert_eq!(
                console,
                self.console[..m.console_len],
                "split-runs seed {seed}: console differs at step {k}"
            );
        }
    }

    /// The whole run split from boot (boot is exception- and interrupt-heavy too).
    fn check_from_boot(&self, seed: u64) {
        self.check_window(seed, 0, self.moments.len());
    }
}

/// `seeds` torture seeds, each over a window that starts at a step drawn from it.
fn torture(reference: &Reference, seeds: std::ops::Range<u64>) {
    let started = Instant::now();
    let steps = reference.moments.len();
    for seed in seeds.clone() {
        let first = (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33) as usize % steps;
        reference.check_window(seed, first, WINDOW_STEPS);
    }
    eprintln!(
        "{} seeds over windows of {WINDOW_STEPS} steps: {:.1} s wall",
        seeds.end - seeds.start,
        started.elapsed().as_secs_f64()
    );
}

fn seeds_from_env(default: u64) -> std::ops::Range<u64> {
    let first = std::env::var("DETVM_TORTURE_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let count = std::env::var("DETVM_TORTURE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    first..first + count
}

#[test]
fn split_runs_change_nothing_on_one_vcpu() {
    let reference = Reference::record(1);
    reference.check_from_boot(1);
    torture(&reference, 2..26);
}

#[test]
fn split_runs_change_nothing_on_two_vcpus() {
    let reference = Reference::record(2);
    reference.check_from_boot(1);
    torture(&reference, 2..26);
}

/// Thousands of seeds (`scripts/torture-emu.sh`; DETVM_TORTURE_SEEDS, _FIRST_SEED).
#[test]
#[ignore]
fn split_runs_change_nothing_many_seeds() {
    let seeds = seeds_from_env(2_000);
    for vcpus in [1, 2] {
        let reference = Reference::record(vcpus);
        for seed in seeds.clone().step_by(500) {
            reference.check_from_boot(seed);
        }
        torture(&reference, seeds.clone());
    }
}
