//! Booting the real guest kernel with the probe as /init, on every backend this host
//! can run soundly: console, power-off, and determinism across runs and seeds.
#![cfg(feature = "emu")]

mod common;

use vmm::backend::BackendKind;
use vmm::clock::VirtualTime;
use vmm::machine::{Outcome, Vm, VmConfig};

struct Boot {
    outcome: Outcome,
    console: String,
    trace: u64,
    time: VirtualTime,
}

fn boot(backend: BackendKind, seed: u64, vcpus: u8, cmdline: &str) -> Boot {
    boot_with_schedule(backend, seed, None, vcpus, cmdline)
}

fn boot_with_schedule(
    backend: BackendKind,
    seed: u64,
    schedule_seed: Option<u64>,
    vcpus: u8,
    cmdline: &str,
) -> Boot {
    let mut config = VmConfig::new(common::guest_kernel_dir().join("vmlinux"));
    config.initrd = Some(common::probe_initramfs());
    config.backend = backend;
    config.seed = seed;
    config.schedule_seed = schedule_seed;
    config.vcpus = vcpus;
    config.cmdline = cmdline.to_string();
    let mut vm = Vm::boot(&config).expect("boot");
    let mut console = Vec::new();
    let outcome = vm
        .run(VirtualTime(120_000_000_000), &mut |b| {
            console.extend_from_slice(b)
        })
        .expect("run");
    Boot {
        outcome,
        console: String::from_utf8_lossy(&console).into_owned(),
        trace: vm.trace().value(),
        time: vm.now(),
    }
}

fn backends() -> Vec<BackendKind> {
    vec![BackendKind::Emu]
}

#[test]
fn probe_runs_as_init_and_powers_off() {
    for backend in backends() {
        let b = boot(backend, 1, 1, "");
        assert!(
            b.console.contains("Run /init as init process"),
            "{}",
            b.console
        );
        assert!(b.console.contains("PROBE-END"), "{}", b.console);
        assert_eq!(b.outcome, Outcome::PowerOff, "{backend:?}: {}", b.console);
        assert!(b.time > VirtualTime::ZERO);
    }
}

#[test]
fn same_seed_same_console_and_trace_hash() {
    for backend in backends() {
        let first = boot(backend, 7, 1, "");
        for _ in 0..2 {
            let again = boot(backend, 7, 1, "");
            assert_eq!(again.console, first.console);
            assert_eq!(again.trace, first.trace);
            assert_eq!(again.time, first.time);
        }
    }
}

#[test]
fn other_seed_other_randomness_same_clock() {
    let a = boot(BackendKind::Emu, 1, 1, "");
    let b = boot(BackendKind::Emu, 2, 1, "");
    let value = |boot: &Boot, key| common::probe_value(&boot.console, key).map(str::to_owned);
    assert!(value(&a, "urandom").is_some());
    assert_ne!(
        value(&a, "urandom"),
        value(&b, "urandom"),
        "urandom must follow the seed"
    );
    assert_ne!(
        value(&a, "at_random"),
        value(&b, "at_random"),
        "AT_RANDOM must follow the seed"
    );
    assert_ne!(
        value(&a, "rdrand"),
        value(&b, "rdrand"),
        "RDRAND must follow the seed"
    );
}

#[test]
fn guest_clock_starts_at_the_epoch() {
    let b = boot(BackendKind::Emu, 1, 1, "");
    let realtime = common::probe_value(&b.console, "realtime").expect("realtime=");
    let secs: i64 = realtime.split('.').next().unwrap().parse().unwrap();
    // The default epoch is 2038-01-19T03:14:00Z; the probe runs seconds after boot.
    assert!(
        (2_147_483_640..2_147_483_640 + 120).contains(&secs),
        "realtime={realtime}"
    );
}

#[test]
fn two_vcpus_are_deterministic_and_schedules_are_explorable() {
    let a = boot(BackendKind::Emu, 3, 2, "");
    assert!(
        a.console.contains("Brought up 1 node, 2 CPUs"),
        "{}",
        a.console
    );
    assert_eq!(a.outcome, Outcome::PowerOff);
    let again = boot(BackendKind::Emu, 3, 2, "");
    assert_eq!(again.console, a.console);
    assert_eq!(again.trace, a.trace);

    // Same world seed, other switch points: the unsynchronised threads race differently.
    let race = |b: &Boot| common::probe_value(&b.console, "race_hash").map(str::to_owned);
    let other = boot_with_schedule(BackendKind::Emu, 3, Some(99), 2, "");
    assert!(race(&a).is_some());
    assert_ne!(
        race(&a),
        race(&other),
        "a different schedule seed must change the race"
    );
}

#[test]
fn cpuinfo_hides_nondeterministic_features() {
    let b = boot(BackendKind::Emu, 1, 1, "");
    let flags = common::probe_value(&b.console, "cpuflags").expect("cpuflags=");
    let flags: Vec<&str> = flags.split(',').collect();
    assert!(
        flags.contains(&"fpu") && flags.contains(&"sse2"),
        "{flags:?}"
    );
    // `constant_tsc` is not a CPUID bit: Linux infers it from the family/model, and the
    // TSC the guest reads is virtual time anyway. `nonstop_tsc` is the invariant-TSC bit.
    for hidden in [
        "rdrand",
        "rdseed",
        "rdtscp",
        "rdpid",
        "nonstop_tsc",
        "tsc_deadline_timer",
        "x2apic",
        "hypervisor",
        "monitor",
        "waitpkg",
        "hle",
        "rtm",
        "aperfmperf",
        "arch_perfmon",
    ] {
        assert!(
            !flags.contains(&hidden),
            "/proc/cpuinfo shows {hidden}: {flags:?}"
        );
    }
}
