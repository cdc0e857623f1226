//! The freestanding test guest (tests/guests/tiny.S) on the `kvm` backend: port and
//! MMIO exits, PIT and LAPIC timer interrupts, HLT sleeps and serial output, with the
//! same trace hash on every run. Skipped, with the reason, where KVM is unusable.

mod common;

use vmm::backend::BackendKind;
use vmm::clock::VirtualTime;
use vmm::machine::{Outcome, Vm};

/// What the tiny guest prints on every backend.
const EXPECTED_CONSOLE: &str = "\
tiny guest: hello
pic mask reads back: yes
pit interrupts: 3
pit count just after a tick is high: yes
lapic timer interrupts: 3
hpet counter advanced: yes
tiny guest: done
";

const RUNS: usize = 20;

#[test]
fn tiny_guest_on_kvm_gives_the_same_trace_hash_on_20_runs() {
    if let Err(reason) = vmm::doctor::kvm_usable() {
        eprintln!("skipped: the kvm backend is unusable here: {reason}");
        return;
    }
    let image = common::build_guest("tiny");
    let first = common::run_flat(&image, BackendKind::Kvm);
    assert_eq!(first.outcome, Outcome::PowerOff, "{first:?}");
    assert_eq!(first.console, EXPECTED_CONSOLE);
    assert!(
        first.deterministic,
        "no forced preemption in a guest that exits"
    );
    assert!(first.stats.injections >= 6, "{:?}", first.stats);
    assert!(first.stats.halts >= 6, "{:?}", first.stats);
    assert!(first.stats.mmio_reads >= 2 && first.stats.mmio_writes >= 6);
    let mut exits = 0;
    let mut wall = first.wall;
    for i in 1..RUNS {
        let run = common::run_flat(&image, BackendKind::Kvm);
        assert_eq!(run.console, first.console, "run {i}");
        assert_eq!(
            (run.trace_hash, run.decisions, run.now),
            (first.trace_hash, first.decisions, first.now),
            "run {i} diverged"
        );
        exits += run.stats.slices;
        wall += run.wall;
    }
    eprintln!(
        "tiny guest on kvm: {RUNS} runs, trace hash {:016x} over {} decisions, virtual time {}, \
         {} exits per run, {:.0} exits/s",
        first.trace_hash,
        first.decisions,
        first.now,
        first.stats.slices,
        (exits + first.stats.slices) as f64 / wall.as_secs_f64()
    );
}

/// A snapshot taken part-way on `kvm` (registers, XSAVE, events, MSRs, frozen RAM),
/// its state through JSON, continues exactly: restored into a fresh VM, and in the VM it was taken from, the
/// guest ends with the console and trace hash of a run that stopped at the same moment
/// without a snapshot (where a run stops is itself a decision in the trace).
#[test]
fn tiny_guest_on_kvm_continues_bit_for_bit_from_a_snapshot() {
    if let Err(reason) = vmm::doctor::kvm_usable() {
        eprintln!("skipped: the kvm backend is unusable here: {reason}");
        return;
    }
    let image = common::build_guest("tiny");
    let straight = common::run_flat(&image, BackendKind::Kvm);
    let end = VirtualTime::from_millis(10_000);
    let run_to = |vm: &mut Vm, limit, console: &mut Vec<u8>| {
        vm.run(limit, &mut |b| console.extend_from_slice(b))
            .unwrap()
    };
    for part in [4, 2] {
        let t1 = VirtualTime(straight.now.as_nanos() / part);
        let (_, mut reference) = common::boot_flat(&image, BackendKind::Kvm);
        let mut expected = Vec::new();
        run_to(&mut reference, t1, &mut expected);
        assert_eq!(
            run_to(&mut reference, end, &mut expected),
            Outcome::PowerOff
        );
        assert_eq!(String::from_utf8_lossy(&expected), straight.console);

        let (config, mut vm) = common::boot_flat(&image, BackendKind::Kvm);
        let mut console = Vec::new();
        let outcome = run_to(&mut vm, t1, &mut console);
        assert_eq!(outcome, Outcome::TimeLimit, "the guest ended before {t1}");
        let snap = vm.snapshot().unwrap();
        // Through JSON, as a snapshot file stores it.
        let json = serde_json::to_vec(&snap.state).unwrap();
        let state = serde_json::from_slice(&json).unwrap();
        let ram = snap.memory.restore().unwrap();
        let mut restored = Vm::restore_with_ram(&config, ram, &state).unwrap();
        let mut again = console.clone();
        assert_eq!(run_to(&mut restored, end, &mut again), Outcome::PowerOff);
        assert_eq!(run_to(&mut vm, end, &mut console), Outcome::PowerOff);
        for (name, out, vm) in [("original", &console, &vm), ("restored", &again, &restored)] {
            assert_eq!(out, &expected, "{name}, snapshot at {t1}");
            assert_eq!(
                (vm.trace().value(), vm.now()),
                (reference.trace().value(), reference.now()),
                "{name}, snapshot at {t1}"
            );
        }
    }
}

/// The same guest on `emu` prints the same bytes (it passes once the emu backend lands).
#[cfg(feature = "emu")]
#[test]
fn tiny_guest_on_emu_prints_the_same_console() {
    let image = common::build_guest("tiny");
    let first = common::run_flat(&image, BackendKind::Emu);
    assert_eq!(first.outcome, Outcome::PowerOff, "{first:?}");
    assert_eq!(first.console, EXPECTED_CONSOLE);
    let again = common::run_flat(&image, BackendKind::Emu);
    assert_eq!(again.trace_hash, first.trace_hash);
}
