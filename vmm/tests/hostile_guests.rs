//! Guests that misbehave on purpose: the VMM reports, never panics.
#![cfg(feature = "emu")]

use vmm::backend::BackendKind;
use vmm::boot::long_mode_entry_state;
use vmm::clock::VirtualTime;
use vmm::machine::{Outcome, Vm, VmConfig};

const LOAD: u64 = 0x10_0000;

fn run_flat(code: &[u8]) -> (Outcome, VirtualTime) {
    let mut config = VmConfig::new("unused".into());
    config.backend = BackendKind::Emu;
    config.memory = 64 << 20;
    let mut vm = Vm::boot_flat(&config, code, LOAD, long_mode_entry_state(LOAD, 0)).expect("boot");
    let outcome = vm
        .run(VirtualTime(1_000_000_000), &mut |_| {})
        .expect("run");
    (outcome, vm.now())
}

#[test]
fn a_triple_fault_is_reported_with_its_rip() {
    // ud2 with an empty IDT: #UD cannot be delivered, nor can #GP, nor #DF.
    let (outcome, time) = run_flat(&[0x0f, 0x0b]);
    assert_eq!(outcome, Outcome::TripleFault { vcpu: 0, rip: LOAD });
    assert!(time < VirtualTime(1_000_000));
}

#[test]
fn garbage_written_to_every_port_and_device_page_is_survived() {
    // Garbage to every dword of the LAPIC, IOAPIC, HPET and first virtio pages, then
    // xorshift garbage to every I/O port (which may reset or power off); then cli; hlt.
    let mut code = vec![0x48, 0xB8, 0x15, 0x7C, 0x4A, 0x7F, 0xB9, 0x79, 0x37, 0x9E]; // mov rax, seed
    for base in [0xFEE0_0000u32, 0xFEC0_0000, 0xFED0_0000, 0xD000_0000] {
        code.push(0xBB); // mov ebx, base
        code.extend_from_slice(&base.to_le_bytes());
        code.extend_from_slice(&[
            0xB9, 0x00, 0x04, 0x00, 0x00, // mov ecx, 1024
            // mmio_loop:
            0x89, 0x03, // mov [rbx], eax
            0x8B, 0x13, // mov edx, [rbx]
            0xC1, 0xC0, 0x07, // rol eax, 7
            0x48, 0x83, 0xC3, 0x04, // add rbx, 4
            0xFF, 0xC9, // dec ecx
            0x75, 0xF1, // jne mmio_loop
        ]);
    }
    code.extend_from_slice(&[
        0x31, 0xD2, // xor edx, edx          (port)
        // port_loop:
        0x49, 0x89, 0xC0, // mov r8, rax
        0x49, 0xC1, 0xE0, 0x0D, // shl r8, 13
        0x4C, 0x31, 0xC0, // xor rax, r8
        0x49, 0x89, 0xC0, // mov r8, rax
        0x49, 0xC1, 0xE8, 0x07, // shr r8, 7
        0x4C, 0x31, 0xC0, // xor rax, r8
        0xEE, // out dx, al
        0x66, 0xEF, // out dx, ax
        0xEC, // in al, dx
        0xFF, 0xC2, // inc edx
        0x81, 0xFA, 0x00, 0x00, 0x01, 0x00, // cmp edx, 0x10000
        0x75, 0xDE, // jne port_loop
    ]);
    code.extend_from_slice(&[0xFA, 0xF4]); // cli; hlt
    let (outcome, _) = run_flat(&code);
    // Garbage may reset or power the machine off through the platform's ports, or the
    // guest reaches its final halt; any of these is fine, a panic or an error is not.
    assert!(
        matches!(
            outcome,
            Outcome::Halted | Outcome::Reset | Outcome::PowerOff | Outcome::TripleFault { .. }
        ),
        "{outcome:?}"
    );
}
