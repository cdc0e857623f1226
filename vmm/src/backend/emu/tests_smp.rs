//! Several vCPUs on one engine: shared translation cache, separate state, exact counts.

use super::probe::*;
use super::EmuMachine;
use crate::vcpu::{Vcpu, VcpuExit};

#[test]
fn two_vcpus_share_code_and_keep_their_own_state() {
    let mut ram = GuestRam::new(RAM_SIZE);
    ram.setup_long_mode(0);
    for v in 0..=255u8 {
        ram.set_gate(v, stub(v), 0, 0, false);
        ram.write(stub(v), &[0xf4]);
    }
    ram.write(0xb000, &[0xb8, 1, 0, 0, 0, 0xf4]); // mov eax, 1; hlt
    ram.write(CODE, &[0xc6, 0x04, 0x25, 0x01, 0xb0, 0, 0, 0x02, 0xf4]); // mov byte [0xb001], 2; hlt
                                                                        // SAFETY: `ram` outlives the machine and vCPUs (dropped at the end, after them).
    let machine = unsafe { EmuMachine::new(&[ram.region()], &[], 2) }.unwrap();
    let mut v0 = machine.vcpu(0).unwrap();
    let mut v1 = machine.vcpu(1).unwrap();
    assert!(machine.vcpu(1).is_err() && machine.vcpu(2).is_err());
    enter_long_mode(&mut v0, CODE).unwrap();
    enter_long_mode(&mut v1, 0xb000).unwrap();
    let mut io = Recorder::default();
    assert_eq!(v1.run(&mut io, 100).unwrap(), VcpuExit::Halted);
    assert_eq!(v1.regs().unwrap().rax, 1);
    assert_eq!(v0.run(&mut io, 100).unwrap(), VcpuExit::Halted);
    let mut r1 = v1.regs().unwrap();
    r1.rip = 0xb000;
    v1.set_regs(&r1).unwrap();
    assert_eq!(v1.run(&mut io, 100).unwrap(), VcpuExit::Halted);
    assert_eq!(
        v1.regs().unwrap().rax,
        2,
        "vCPU 1 runs the code vCPU 0 patched"
    );
    assert_eq!(v0.regs().unwrap().rip, CODE + 9);
    assert_eq!(
        (v0.instructions_retired(), v1.instructions_retired()),
        (2, 4)
    );
    drop((v0, v1, machine));
    drop(ram);
}

#[test]
fn two_vcpus_interleave_with_exact_budgets() {
    let mut ram = GuestRam::new(RAM_SIZE);
    ram.setup_long_mode(0);
    // mov ecx, N; l: dec ecx; jnz l; hlt  (N = 300 at CODE, 77 at 0xb000)
    ram.write(
        CODE,
        &[0xb9, 0x2c, 0x01, 0, 0, 0xff, 0xc9, 0x75, 0xfc, 0xf4],
    );
    ram.write(0xb000, &[0xb9, 77, 0, 0, 0, 0xff, 0xc9, 0x75, 0xfc, 0xf4]);
    // SAFETY: `ram` outlives the machine and vCPUs (dropped after them below).
    let machine = unsafe { EmuMachine::new(&[ram.region()], &[], 2) }.unwrap();
    let mut v = [machine.vcpu(0).unwrap(), machine.vcpu(1).unwrap()];
    enter_long_mode(&mut v[0], CODE).unwrap();
    enter_long_mode(&mut v[1], 0xb000).unwrap();
    let mut io = Recorder::default();
    let mut done = [false, false];
    while !done.iter().all(|d| *d) {
        for (i, vcpu) in v.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            let before = vcpu.instructions_retired();
            match vcpu.run(&mut io, 13).unwrap() {
                VcpuExit::BudgetExhausted => assert_eq!(vcpu.instructions_retired() - before, 13),
                VcpuExit::Halted => done[i] = true,
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(v[0].instructions_retired(), 2 * 300 + 2);
    assert_eq!(v[1].instructions_retired(), 2 * 77 + 2);
    assert_eq!(v[0].regs().unwrap().rip, CODE + 10);
    assert_eq!(v[1].regs().unwrap().rip, 0xb00a);
    drop((v, machine));
    drop(ram);
}

/// The translation cache is invisible: moving a vCPU's state into a fresh machine mid-run
/// (what a snapshot restore does) gives the same accesses and counts as running on.
#[test]
fn fresh_engine_continues_identically() {
    // mov ecx, 40; l: in al, 0x40; add ebx, eax; out 0x41, al; dec ecx; jnz l; hlt
    let code = [
        0xb9, 40, 0, 0, 0, 0xe4, 0x40, 0x01, 0xc3, 0xe6, 0x41, 0xff, 0xc9, 0x75, 0xf6, 0xf4,
    ];
    let trace = |restore_after: Option<usize>| {
        let mut g = ProbeGuest::new(&code).unwrap();
        let mut io = Recorder {
            read_value: 3,
            ..Default::default()
        };
        let mut exits = Vec::new();
        let mut slices = 0;
        let mut offset = 0;
        loop {
            if Some(slices) == restore_after {
                let (regs, sregs) = (g.vcpu.regs().unwrap(), g.vcpu.sregs().unwrap());
                offset = g.vcpu.instructions_retired();
                let mut fresh = ProbeGuest::new(&code).unwrap();
                // SAFETY: neither vCPU runs while RAM is copied.
                unsafe {
                    std::ptr::copy_nonoverlapping(g.ram.region().1, fresh.ram.region().1, RAM_SIZE)
                };
                fresh.vcpu.set_sregs(&sregs).unwrap();
                fresh.vcpu.set_regs(&regs).unwrap();
                g = fresh;
            }
            let exit = g.vcpu.run(&mut io, 7).unwrap();
            slices += 1;
            exits.push((
                exit,
                offset + g.vcpu.instructions_retired(),
                g.vcpu.regs().unwrap(),
            ));
            if exit == VcpuExit::Halted {
                break;
            }
        }
        (io.seen, exits)
    };
    let straight = trace(None);
    assert_eq!(straight.1.last().unwrap().1, 1 + 40 * 5 + 1);
    for at in [1, 5, 17] {
        assert_eq!(trace(Some(at)), straight, "restored after {at} slices");
    }
}

#[test]
fn vcpus_can_move_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<super::EmuVcpu>();
    assert_send_sync::<EmuMachine>();
}
