//! Backend tests on hand-assembled snippets in 64-bit mode. They need a usable
//! /dev/kvm and pass (with a note on stderr) where there is none.

use std::path::Path;
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::boot::{long_mode_entry_state, write_gdt_and_page_tables};
use crate::vcpu::{GuestIo, IoFlow, VcpuExit};

const CODE: u64 = 0x10_0000;

/// Records every access; reads return `0x5a` bytes, the TSC reads 12345.
#[derive(Default)]
struct Recorder {
    log: Vec<String>,
}

impl GuestIo for Recorder {
    fn pio_read(&mut self, _: u64, port: u16, data: &mut [u8]) {
        data.fill(0x5a);
        self.log.push(format!("in {port:#x}/{}", data.len()));
    }
    fn pio_write(&mut self, _: u64, port: u16, data: &[u8]) -> IoFlow {
        self.log.push(format!("out {port:#x} {data:x?}"));
        IoFlow::Continue
    }
    fn mmio_read(&mut self, _: u64, addr: u64, data: &mut [u8]) {
        data.fill(0x5a);
        self.log.push(format!("read {addr:#x}/{}", data.len()));
    }
    fn mmio_write(&mut self, _: u64, addr: u64, data: &[u8]) -> IoFlow {
        self.log.push(format!("write {addr:#x} {data:x?}"));
        IoFlow::Continue
    }
    fn rdtsc(&mut self, _: u64) -> u64 {
        12345
    }
}

/// A VM with `code` at [`CODE`] and vCPU 0 at its first byte, or `None` (and a note)
/// where KVM cannot be used.
fn guest(code: &[u8], options: &KvmOptions) -> Option<(GuestRam, KvmVcpu)> {
    if let Err(reason) = check_usable(&options.device) {
        eprintln!("skipped: kvm unusable here: {reason}");
        return None;
    }
    let ram = GuestRam::new(crate::layout::MIN_RAM).unwrap();
    ram.memory().write_slice(code, GuestAddress(CODE)).unwrap();
    write_gdt_and_page_tables(ram.memory()).unwrap();
    let mut vcpu = create_kvm_vcpus(&ram, 1, options).unwrap().remove(0);
    let entry = long_mode_entry_state(CODE, 0);
    vcpu.set_sregs(&entry.sregs).unwrap();
    vcpu.set_regs(&entry.regs).unwrap();
    Some((ram, vcpu))
}

/// Runs until HLT (at most `max` exits), returning the exits seen.
fn run_to_halt(vcpu: &mut KvmVcpu, io: &mut Recorder, max: usize) -> Vec<VcpuExit> {
    let mut exits = Vec::new();
    for _ in 0..max {
        let exit = vcpu.run(io, 0).unwrap();
        exits.push(exit);
        if exit == VcpuExit::Halted {
            break;
        }
    }
    exits
}

#[test]
fn port_io_round_trips_and_hlt_exits() {
    // mov $0x42,%al; out %al,$0x80; in $0x81,%al; out %al,$0x82;
    // mov $0x1234,%ax; out %ax,$0x84; hlt
    let code = [
        0xB0, 0x42, 0xE6, 0x80, 0xE4, 0x81, 0xE6, 0x82, 0x66, 0xB8, 0x34, 0x12, 0x66, 0xE7, 0x84,
        0xF4,
    ];
    let Some((_ram, mut vcpu)) = guest(&code, &KvmOptions::default()) else {
        return;
    };
    let mut io = Recorder::default();
    let exits = run_to_halt(&mut vcpu, &mut io, 20);
    assert_eq!(exits.last(), Some(&VcpuExit::Halted), "{exits:?}");
    assert_eq!(
        io.log,
        [
            "out 0x80 [42]",
            "in 0x81/1",
            "out 0x82 [5a]",
            "out 0x84 [34, 12]"
        ]
    );
    assert_eq!(vcpu.regs().unwrap().rip, CODE + code.len() as u64);
    assert_eq!(vcpu.instructions_retired(), 0);
}

#[test]
fn mmio_reads_and_writes_reach_the_core() {
    // movabs 0xFED000F0,%eax; movabs %eax,0xFEE000B0; hlt
    let mut code = vec![0xA1];
    code.extend_from_slice(&0xFED0_00F0u64.to_le_bytes());
    code.push(0xA3);
    code.extend_from_slice(&0xFEE0_00B0u64.to_le_bytes());
    code.push(0xF4);
    let Some((_ram, mut vcpu)) = guest(&code, &KvmOptions::default()) else {
        return;
    };
    let mut io = Recorder::default();
    run_to_halt(&mut vcpu, &mut io, 20);
    assert_eq!(
        io.log,
        ["read 0xfed000f0/4", "write 0xfee000b0 [5a, 5a, 5a, 5a]"]
    );
}

#[test]
fn tsc_msr_reads_virtual_time() {
    // mov $0x10,%ecx; rdmsr; out %eax,$0x80; hlt
    let code = [0xB9, 0x10, 0, 0, 0, 0x0F, 0x32, 0xE7, 0x80, 0xF4];
    let Some((_ram, mut vcpu)) = guest(&code, &KvmOptions::default()) else {
        return;
    };
    let mut io = Recorder::default();
    run_to_halt(&mut vcpu, &mut io, 20);
    // 12345 = 0x3039, as the Recorder's virtual TSC.
    assert_eq!(io.log, ["out 0x80 [39, 30, 0, 0]"]);
}

#[test]
fn a_spinning_guest_is_kicked_invisibly_then_preempted() {
    // 1: jmp 1b
    let options = KvmOptions {
        watchdog: WatchdogConfig {
            kick_after: Duration::from_millis(5),
            force_after: Duration::from_millis(300),
        },
        ..KvmOptions::default()
    };
    let Some((_ram, mut vcpu)) = guest(&[0xEB, 0xFE], &options) else {
        return;
    };
    let mut io = Recorder::default();
    let exit = vcpu.run(&mut io, 0).unwrap();
    assert_eq!(exit, VcpuExit::Kicked);
    assert!(vcpu.kicks() >= 2, "kicks: {}", vcpu.kicks());
    assert_eq!(vcpu.forced_preemptions(), 1);
    assert_eq!(vcpu.regs().unwrap().rip, CODE, "still in the loop");
    assert!(io.log.is_empty());
}

#[test]
fn kicks_during_a_long_loop_are_invisible() {
    // mov $300000,%ecx; 1: dec %ecx; jnz 1b; out %al,$0x80; hlt
    // Emulated kernel code (PVM) takes ~0.3 s here, so 1 ms kicks land mid-loop.
    let code = [
        0xB9, 0xE0, 0x93, 0x04, 0x00, 0xFF, 0xC9, 0x75, 0xFC, 0xE6, 0x80, 0xF4,
    ];
    let options = KvmOptions {
        watchdog: WatchdogConfig {
            kick_after: Duration::from_millis(1),
            ..WatchdogConfig::default()
        },
        ..KvmOptions::default()
    };
    let Some((_ram, mut vcpu)) = guest(&code, &options) else {
        return;
    };
    let mut io = Recorder::default();
    assert_eq!(vcpu.run(&mut io, 0).unwrap(), VcpuExit::Io);
    assert_eq!(vcpu.regs().unwrap().rcx, 0, "the loop ran to its end");
    assert_eq!(vcpu.run(&mut io, 0).unwrap(), VcpuExit::Halted);
    assert_eq!(io.log, ["out 0x80 [0]"]);
    assert_eq!(vcpu.forced_preemptions(), 0);
    eprintln!("{} invisible kicks", vcpu.kicks());
}

#[test]
fn interrupt_window_exit_when_requested() {
    // sti; nop; 1: jmp 1b: the window opens after STI's shadow (the NOP). PVM only
    // looks for it at the end of an emulated block, which here is the same spot.
    let Some((_ram, mut vcpu)) = guest(&[0xFB, 0x90, 0xEB, 0xFE], &KvmOptions::default()) else {
        return;
    };
    let mut io = Recorder::default();
    assert!(!vcpu.interruptible(), "IF is clear at entry");
    vcpu.request_interrupt_window(true);
    assert_eq!(vcpu.run(&mut io, 0).unwrap(), VcpuExit::InterruptWindow);
    assert!(vcpu.interruptible());
    assert_eq!(vcpu.regs().unwrap().rip, CODE + 2);
    vcpu.inject_interrupt(0x20).unwrap();
    assert!(!vcpu.interruptible(), "one injection at a time");
}

#[test]
fn no_device_is_unavailable_with_a_reason() {
    let ram = GuestRam::new(crate::layout::MIN_RAM).unwrap();
    let options = KvmOptions {
        device: Path::new("/nonexistent/kvm").into(),
        ..KvmOptions::default()
    };
    match create_kvm_vcpus(&ram, 1, &options) {
        Err(VcpuError::Unavailable { backend, reason }) => {
            assert_eq!(backend, "kvm");
            assert!(reason.contains("no KVM"), "{reason}");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a missing device must not work"),
    }
}
