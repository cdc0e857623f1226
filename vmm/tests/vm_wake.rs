//! The small `Vm` API the World schedules with: `next_wake`, `halted_for_good`, `skip_to`.
#![cfg(feature = "emu")]

use vmm::backend::BackendKind;
use vmm::boot::long_mode_entry_state;
use vmm::clock::VirtualTime;
use vmm::machine::{Outcome, Vm, VmConfig};

const LOAD: u64 = 0x10_0000;

fn flat(code: &[u8]) -> Vm {
    let mut config = VmConfig::new("unused".into());
    config.backend = BackendKind::Emu;
    config.memory = 64 << 20;
    Vm::boot_flat(&config, code, LOAD, long_mode_entry_state(LOAD, 0)).expect("boot")
}

#[test]
fn an_idle_guest_without_timers_waits_for_input_and_can_be_moved_in_time() {
    let mut vm = flat(&[0xFB, 0xF4, 0xEB, 0xFC]); // sti; hlt; jmp -4
    assert_eq!(
        vm.next_wake(),
        Some(VirtualTime::ZERO),
        "runnable at power-on"
    );
    let outcome = vm.run(VirtualTime(1_000_000_000), &mut |_| {}).unwrap();
    assert_eq!(outcome, Outcome::Halted, "no timer can wake it");
    assert!(
        !vm.halted_for_good(),
        "interrupts are on: a frame could wake it"
    );
    assert_eq!(vm.next_wake(), None);
    let before = vm.trace().value();
    vm.skip_to(VirtualTime(5_000_000));
    assert_eq!(vm.now(), VirtualTime(5_000_000));
    assert_ne!(
        vm.trace().value(),
        before,
        "the jump is a decision in the trace"
    );
    vm.skip_to(VirtualTime(1_000));
    assert_eq!(vm.now(), VirtualTime(5_000_000), "never backwards");
}

#[test]
fn a_guest_halted_with_interrupts_off_is_halted_for_good() {
    let mut vm = flat(&[0xFA, 0xF4]); // cli; hlt
    let outcome = vm.run(VirtualTime(1_000_000_000), &mut |_| {}).unwrap();
    assert_eq!(outcome, Outcome::Halted);
    assert!(vm.halted_for_good());
    assert_eq!(vm.next_wake(), None);
}

#[test]
fn a_spinning_guest_can_always_run_now() {
    let mut vm = flat(&[0xEB, 0xFE]); // jmp $
    let outcome = vm.run(VirtualTime(100_000), &mut |_| {}).unwrap();
    assert_eq!(outcome, Outcome::TimeLimit);
    assert_eq!(vm.next_wake(), Some(vm.now()));
}
