//! The freestanding test guest (tests/guests/tiny.S) on the `kvm` backend: port and
//! MMIO exits, PIT and LAPIC timer interrupts, HLT sleeps and serial output, with the
//! same trace hash on every run. Skipped, with the reason, where KVM is unusable.

mod common;

use vmm::backend::BackendKind;
use vmm::machine::Outcome;

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
