//! Tests of the emu backend with hand-assembled 64-bit guests (layout in `probe.rs`).

use super::probe::*;
use crate::vcpu::{Vcpu, VcpuExit};

pub(super) fn guest(code: &[u8]) -> ProbeGuest {
    ProbeGuest::new(code).expect("probe guest")
}

pub(super) fn run(g: &mut ProbeGuest, io: &mut Recorder, budget: u64) -> VcpuExit {
    g.vcpu.run(io, budget).expect("run")
}

#[test]
fn self_check_passes() {
    super::self_check().unwrap();
}

#[test]
fn port_io_reaches_guest_io_with_exact_counts() {
    let code = [
        0xb0, 0x41, //             mov al, 0x41
        0xe6, 0xe9, //             out 0xe9, al
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xec, //                   in al, dx
        0xee, //                   out dx, al
        0xb8, 0x78, 0x56, 0x34, 0x12, // mov eax, 0x12345678
        0xef, //                   out dx, eax
        0xf4, //                   hlt
    ];
    let mut g = guest(&code);
    let mut io = Recorder {
        read_value: 0x5a,
        ..Default::default()
    };
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    assert_eq!(
        io.seen,
        vec![
            Seen::PioWrite {
                insns: 1,
                port: 0xe9,
                data: vec![0x41]
            },
            Seen::PioRead {
                insns: 3,
                port: 0x3f8,
                len: 1
            },
            Seen::PioWrite {
                insns: 4,
                port: 0x3f8,
                data: vec![0x5a]
            },
            Seen::PioWrite {
                insns: 6,
                port: 0x3f8,
                data: vec![0x78, 0x56, 0x34, 0x12]
            },
        ]
    );
    assert_eq!(g.vcpu.instructions_retired(), 8);
    assert_eq!(g.vcpu.regs().unwrap().rip, CODE + code.len() as u64);
}

#[test]
fn mmio_reads_and_writes() {
    let code = [
        0xbb, 0x20, 0x00, 0xe0, 0xfe, // mov ebx, 0xfee00020
        0x8b, 0x03, //                   mov eax, [rbx]
        0x83, 0xc0, 0x01, //             add eax, 1
        0x89, 0x43, 0x10, //             mov [rbx+0x10], eax
        0x48, 0x8b, 0x0b, //             mov rcx, [rbx]
        0xf4, //                         hlt
    ];
    let mut g = guest(&code);
    let mut io = Recorder {
        read_value: 0x1122_3344_5566_7788,
        ..Default::default()
    };
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    assert_eq!(
        io.seen,
        vec![
            Seen::MmioRead {
                insns: 1,
                addr: 0xfee0_0020,
                len: 4
            },
            Seen::MmioWrite {
                insns: 3,
                addr: 0xfee0_0030,
                data: vec![0x89, 0x77, 0x66, 0x55]
            },
            // Unicorn splits 8-byte MMIO accesses into two 4-byte ones.
            Seen::MmioRead {
                insns: 4,
                addr: 0xfee0_0020,
                len: 4
            },
            Seen::MmioRead {
                insns: 4,
                addr: 0xfee0_0024,
                len: 4
            },
        ]
    );
    let r = g.vcpu.regs().unwrap();
    assert_eq!((r.rax, r.rcx), (0x5566_7789, 0x5566_7788_5566_7788));
    assert_eq!(g.vcpu.instructions_retired(), 6);
}

#[test]
fn io_stop_ends_right_after_the_write() {
    let code = [
        0xb0, 0x01, //                   mov al, 1
        0xe6, 0x80, //                   out 0x80, al      (stops)
        0xbb, 0x00, 0x00, 0xe0, 0xfe, // mov ebx, 0xfee00000
        0xb8, 0x05, 0x00, 0x00, 0x00, // mov eax, 5
        0x01, 0x43, 0x40, //             add [rbx+0x40], eax (read, then write: stops)
        0x9c, //                         pushfq
        0xf4, //                         hlt
    ];
    let mut g = guest(&code);
    let mut io = Recorder {
        read_value: 0xffff_fffb,
        stop_port: Some(0x80),
        stop_addr: Some(0xfee0_0040),
        ..Default::default()
    };
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::IoStop);
    assert_eq!(g.vcpu.instructions_retired(), 2);
    assert_eq!(g.vcpu.regs().unwrap().rip, CODE + 4);
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::IoStop);
    assert_eq!(g.vcpu.instructions_retired(), 5);
    assert_eq!(g.vcpu.regs().unwrap().rip, CODE + 17);
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    assert_eq!(g.vcpu.instructions_retired(), 7);
    // Each access reached the device exactly once, at its instruction (counted from the
    // start of its run).
    assert_eq!(
        io.seen,
        vec![
            Seen::PioWrite {
                insns: 1,
                port: 0x80,
                data: vec![1]
            },
            Seen::MmioRead {
                insns: 2,
                addr: 0xfee0_0040,
                len: 4
            },
            Seen::MmioWrite {
                insns: 2,
                addr: 0xfee0_0040,
                data: vec![0, 0, 0, 0]
            },
        ]
    );
    // The replayed ADD left its flags: 0xfffffffb + 5 = 0 with carry (ZF, CF).
    let rsp = g.vcpu.regs().unwrap().rsp;
    let flags = g.ram.read_u64(rsp);
    assert_eq!(
        flags & 0x41,
        0x41,
        "ZF and CF from the replayed add, flags {flags:#x}"
    );
}

#[test]
fn budget_is_exact_across_and_inside_blocks() {
    // mov ecx, 1000; l: dec ecx; jnz l; hlt   -> 2002 instructions
    let code = [0xb9, 0xe8, 0x03, 0, 0, 0xff, 0xc9, 0x75, 0xfc, 0xf4];
    let expected_rip = |k: u64| match k {
        0 => CODE,
        2001 => CODE + 9,
        k if k % 2 == 1 => CODE + 5,
        _ => CODE + 7,
    };
    for budget in [1u64, 2, 3, 7, 64, 1000] {
        let mut g = guest(&code);
        let mut io = Recorder::default();
        loop {
            let before = g.vcpu.instructions_retired();
            match run(&mut g, &mut io, budget) {
                VcpuExit::BudgetExhausted => {
                    let k = g.vcpu.instructions_retired();
                    assert_eq!(k - before, budget);
                    assert_eq!(
                        g.vcpu.regs().unwrap().rip,
                        expected_rip(k),
                        "after {k} (budget {budget})"
                    );
                }
                VcpuExit::Halted => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(g.vcpu.instructions_retired(), 2002, "budget {budget}");
    }
}

#[test]
fn injected_interrupt_runs_the_handler_and_resumes() {
    let code = [0xfb, 0x90, 0x90, 0x90, 0xf4]; // sti; nop; nop; nop; hlt
    let mut g = guest(&code);
    // handler: out 0x80, al; iretq
    g.ram.write(0x9000, &[0xe6, 0x80, 0x48, 0xcf]);
    g.ram.set_gate(0x20, 0x9000, 0, 0, false);
    let mut io = Recorder::default();
    assert_eq!(run(&mut g, &mut io, 1), VcpuExit::BudgetExhausted);
    assert!(!g.vcpu.interruptible(), "STI shadow");
    assert_eq!(run(&mut g, &mut io, 1), VcpuExit::BudgetExhausted);
    assert!(g.vcpu.interruptible());
    g.vcpu.inject_interrupt(0x20).unwrap();
    let r = g.vcpu.regs().unwrap();
    assert_eq!(r.rip, 0x9000);
    assert_eq!(r.rflags & 0x200, 0, "interrupt gate clears IF");
    assert_eq!(g.ram.read_u64(r.rsp), CODE + 2, "return RIP");
    assert_eq!(g.ram.read_u64(r.rsp + 8), KERNEL_CS as u64);
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    assert_eq!(
        io.seen,
        vec![Seen::PioWrite {
            insns: 0,
            port: 0x80,
            data: vec![0]
        }]
    );
    assert_eq!(g.vcpu.regs().unwrap().rip, CODE + 5);
    assert_eq!(g.vcpu.instructions_retired(), 2 + 2 + 3);
    // A halted vCPU wakes through an interrupt too.
    g.vcpu.inject_interrupt(0x20).unwrap();
    assert_eq!(g.ram.read_u64(g.vcpu.regs().unwrap().rsp), CODE + 5);
}

#[test]
fn page_fault_delivers_error_code_and_cr2_on_the_ist_stack() {
    // mov eax, 1; mov [0x400000], eax; hlt
    let mut g = guest(&[0xb8, 1, 0, 0, 0, 0x89, 0x04, 0x25, 0, 0, 0x40, 0, 0xf4]);
    // handler: pop rax (error code); mov rbx, cr2; hlt
    g.ram.write(0x9000, &[0x58, 0x0f, 0x20, 0xd3, 0xf4]);
    g.ram.set_gate(14, 0x9000, 1, 0, false);
    let mut io = Recorder::default();
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    let r = g.vcpu.regs().unwrap();
    assert_eq!(
        (r.rax, r.rbx),
        (2, 0x40_0000),
        "write to a non-present page"
    );
    assert_eq!(r.rsp, IST1_STACK - 40, "IST1 stack, error code popped");
    assert_eq!(
        g.ram.read_u64(r.rsp),
        CODE + 5,
        "RIP of the faulting instruction"
    );
    assert_eq!(g.vcpu.instructions_retired(), 1 + 3);
}

#[test]
fn consecutive_page_faults_do_not_become_double_faults() {
    let store = [0x89, 0x04, 0x25, 0, 0, 0x40, 0]; // mov [0x400000], eax (7 bytes)
    let mut code = Vec::new();
    code.extend_from_slice(&store);
    code.extend_from_slice(&store);
    code.push(0xf4);
    let mut g = guest(&code);
    // handler: pop rax; add qword [rsp], 7; inc rbx; iretq
    g.ram.write(
        0x9000,
        &[
            0x58, 0x48, 0x83, 0x04, 0x24, 0x07, 0x48, 0xff, 0xc3, 0x48, 0xcf,
        ],
    );
    g.ram.set_gate(14, 0x9000, 0, 0, false);
    let mut io = Recorder::default();
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    let r = g.vcpu.regs().unwrap();
    assert_eq!(r.rip, CODE + 15, "not the #DF stub");
    assert_eq!(r.rbx, 2);
    assert_eq!(g.vcpu.instructions_retired(), 2 * 4 + 1);
}

/// Kernel code at CODE that IRETQs to ring 3 at 0xa000 with IF set.
const TO_RING3: [u8; 21] = [
    0x6a, 0x2b, //                   push 0x2b (SS)
    0x68, 0x00, 0x00, 0x05, 0x00, // push 0x50000 (RSP)
    0x68, 0x02, 0x02, 0x00, 0x00, // push 0x202 (RFLAGS)
    0x6a, 0x33, //                   push 0x33 (CS)
    0x68, 0x00, 0xa0, 0x00, 0x00, // push 0xa000 (RIP)
    0x48, 0xcf, //                   iretq
];

pub(super) fn ring3_guest(user: &[u8]) -> ProbeGuest {
    let mut g = guest(&TO_RING3);
    g.ram.write(0xa000, user);
    g
}

#[test]
fn syscall_from_ring3_reaches_lstar_and_sysret_returns() {
    let user = [
        0xb8, 0x3c, 0x00, 0x00, 0x00, // mov eax, 60
        0x0f, 0x05, //                   syscall
        0x49, 0x89, 0xcc, //             mov r12, rcx
        0xf4, //                         hlt (ring 3: #GP)
    ];
    let mut g = ring3_guest(&user);
    // LSTAR: mov r13, rcx; mov r14, r11; mov edi, cs; mov r15, rsp; add eax, 1; sysretq
    g.ram.write(
        0x9000,
        &[
            0x49, 0x89, 0xcd, 0x4d, 0x89, 0xde, 0x8c, 0xcf, 0x49, 0x89, 0xe7, 0x83, 0xc0, 0x01,
            0x48, 0x0f, 0x07,
        ],
    );
    g.vcpu
        .set_msr(0xc000_0081, (0x23u64 << 48) | (0x10u64 << 32))
        .unwrap();
    g.vcpu.set_msr(0xc000_0082, 0x9000).unwrap();
    g.vcpu.set_msr(0xc000_0084, 0x200).unwrap();
    let mut io = Recorder::default();
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    let r = g.vcpu.regs().unwrap();
    assert_eq!(r.rip, stub(13) + 1, "ring-3 HLT raised #GP");
    assert_eq!(r.r13, 0xa007, "RCX = RIP after SYSCALL");
    assert_eq!(r.r14 & 0x200, 0x200, "R11 = user RFLAGS");
    assert_eq!(r.rdi & 0xffff, KERNEL_CS as u64, "CS from STAR");
    assert_eq!(r.r15, USER_STACK, "SYSCALL keeps RSP");
    assert_eq!(r.rax, 61);
    assert_eq!(r.r12, 0xa007);
    // The #GP frame sits on RSP0 with the ring-3 SS:RSP and CS:RIP.
    assert_eq!(r.rsp, KERNEL_STACK - 48);
    let frame: Vec<u64> = (0..6).map(|i| g.ram.read_u64(r.rsp + 8 * i)).collect();
    assert_eq!(frame[..3], [0, 0xa00a, USER_CS as u64]);
    assert_eq!(frame[4..], [USER_STACK, USER_DS as u64]);
    assert_eq!(frame[3] & 0x200, 0x200, "SYSRET restored IF");
    // 6 to ring 3, 2 user, 6 kernel (LSTAR), 1 user, HLT stub.
    assert_eq!(g.vcpu.instructions_retired(), 6 + 2 + 6 + 1 + 1);
}

#[test]
fn rdtsc_reads_virtual_time_in_ring0_and_faults_in_ring3_with_tsd() {
    // Ring 0: nop; rdtsc; hlt
    let mut g = guest(&[0x90, 0x0f, 0x31, 0xf4]);
    let mut io = Recorder::default();
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    assert_eq!(io.seen, vec![Seen::Rdtsc { insns: 1 }]);
    let r = g.vcpu.regs().unwrap();
    assert_eq!((r.rax, r.rdx), (1_000_001, 0));

    // Ring 3 with CR4.TSD: #GP(0) on the RSP0 stack, no TSC read.
    let mut g = ring3_guest(&[0x0f, 0x31, 0xf4]);
    let mut s = g.vcpu.sregs().unwrap();
    s.cr4 |= 1 << 2;
    g.vcpu.set_sregs(&s).unwrap();
    let mut io = Recorder::default();
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    let r = g.vcpu.regs().unwrap();
    assert_eq!(r.rip, stub(13) + 1);
    assert_eq!(r.rsp, KERNEL_STACK - 48);
    assert_eq!(
        [g.ram.read_u64(r.rsp), g.ram.read_u64(r.rsp + 8)],
        [0, 0xa000]
    );
    assert!(io.seen.is_empty());
}

#[test]
fn rdrand_rdseed_and_rdtscp_raise_invalid_opcode() {
    // rdrand eax; rdseed eax; rdtscp
    for code in [[0x0f, 0xc7, 0xf0], [0x0f, 0xc7, 0xf8], [0x0f, 0x01, 0xf9]] {
        let mut g = guest(&code);
        let mut io = Recorder::default();
        assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
        let r = g.vcpu.regs().unwrap();
        assert_eq!(r.rip, stub(6) + 1);
        assert_eq!(g.ram.read_u64(r.rsp), CODE, "#UD points at the instruction");
    }
}

#[test]
fn cpuid_answers_the_fixed_model() {
    // xor eax, eax; cpuid; hlt
    let mut g = guest(&[0x31, 0xc0, 0x0f, 0xa2, 0xf4]);
    let mut io = Recorder::default();
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    let r = g.vcpu.regs().unwrap();
    let want = crate::cpu_model::cpuid(0, 0, 0, 1);
    assert_eq!([r.rax, r.rbx, r.rcx, r.rdx], want.map(u64::from));
}

#[test]
fn fault_while_delivering_double_fault_is_a_triple_fault() {
    let mut g = guest(&[0x0f, 0x0b]); // ud2
    let mut s = g.vcpu.sregs().unwrap();
    s.idt.limit = 0;
    g.vcpu.set_sregs(&s).unwrap();
    let mut io = Recorder::default();
    assert!(matches!(
        run(&mut g, &mut io, 1000),
        VcpuExit::TripleFault { .. }
    ));
}

#[test]
fn self_modifying_code_inside_a_block_counts_exactly() {
    let code = [
        0x66, 0xc7, 0x05, 0, 0, 0, 0, 0x90,
        0x90, // mov word [rip+0], 0x9090 (patches the next insn)
        0xff, 0xc0, //                              inc eax   -> becomes nop; nop
        0xff, 0xc0, //                              inc eax
        0xf4, //                                    hlt
    ];
    let mut g = guest(&code);
    let mut io = Recorder::default();
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    assert_eq!(g.vcpu.regs().unwrap().rax, 1);
    assert_eq!(g.vcpu.instructions_retired(), 5);
}

#[test]
fn access_to_unbacked_memory_is_an_error_not_a_panic() {
    // mov eax, [0x200000]: mapped by the page tables, but no RAM behind it
    let mut g = guest(&[0x8b, 0x04, 0x25, 0x00, 0x00, 0x20, 0x00, 0xf4]);
    g.ram.map_2m(0x20_0000);
    let mut io = Recorder::default();
    match g.vcpu.run(&mut io, 1000) {
        Err(crate::vcpu::VcpuError::Backend { rip, .. }) => assert_eq!(rip, CODE),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn mov_ss_blocks_interrupts_for_one_instruction() {
    // mov eax, 0x18; mov ss, eax; nop; hlt
    let mut g = guest(&[0xb8, 0x18, 0, 0, 0, 0x8e, 0xd0, 0x90, 0xf4]);
    let mut r = g.vcpu.regs().unwrap();
    r.rflags |= 0x200;
    g.vcpu.set_regs(&r).unwrap();
    let mut io = Recorder::default();
    assert!(g.vcpu.interruptible());
    assert_eq!(run(&mut g, &mut io, 2), VcpuExit::BudgetExhausted);
    assert!(!g.vcpu.interruptible(), "MOV SS shadow");
    assert!(g.vcpu.inject_interrupt(0x20).is_err());
    assert_eq!(run(&mut g, &mut io, 1), VcpuExit::BudgetExhausted);
    assert!(g.vcpu.interruptible());
}

#[test]
fn triple_fault_while_injecting_is_reported_by_the_next_run() {
    let mut g = guest(&[0xfb, 0x90, 0xf4]); // sti; nop; hlt
    let mut io = Recorder::default();
    assert_eq!(run(&mut g, &mut io, 2), VcpuExit::BudgetExhausted);
    let mut s = g.vcpu.sregs().unwrap();
    s.idt.limit = 0;
    g.vcpu.set_sregs(&s).unwrap();
    g.vcpu.inject_interrupt(0x30).unwrap();
    assert!(matches!(
        run(&mut g, &mut io, 100),
        VcpuExit::TripleFault { .. }
    ));
}

fn io_trace(code: &[u8], budget: u64) -> (Vec<Seen>, Vec<u64>) {
    let mut g = guest(code);
    let mut io = Recorder {
        read_value: 7,
        ..Default::default()
    };
    let mut counts = Vec::new();
    while run(&mut g, &mut io, budget) == VcpuExit::BudgetExhausted {
        counts.push(g.vcpu.instructions_retired());
    }
    counts.push(g.vcpu.instructions_retired());
    (io.seen, counts)
}

#[test]
fn same_guest_twice_gives_the_same_counts_and_accesses() {
    // mov ecx, 50; l: in al, 0x40; out 0x41, al; rdtsc; dec ecx; jnz l; hlt
    let code = [
        0xb9, 50, 0, 0, 0, 0xe4, 0x40, 0xe6, 0x41, 0x0f, 0x31, 0xff, 0xc9, 0x75, 0xf6, 0xf4,
    ];
    let a = io_trace(&code, 13);
    assert_eq!(a.0.len(), 150);
    assert_eq!(a, io_trace(&code, 13));
    assert_eq!(a.1.last(), Some(&(1 + 50 * 5 + 1)));
}

#[test]
fn xsave_supports_exactly_x87_and_sse_state() {
    let code = [
        0x31, 0xc9, //                   xor ecx, ecx
        0x31, 0xd2, //                   xor edx, edx
        0xb8, 0x03, 0x00, 0x00, 0x00, // mov eax, 3
        0x0f, 0x01, 0xd1, //             xsetbv (x87|SSE: fine)
        0xb8, 0x07, 0x00, 0x00, 0x00, // mov eax, 7
        0x0f, 0x01, 0xd1, //             xsetbv (AVX: #GP)
        0xf4,
    ];
    let mut g = guest(&code);
    let mut s = g.vcpu.sregs().unwrap();
    s.cr4 |= 1 << 18; // OSXSAVE
    g.vcpu.set_sregs(&s).unwrap();
    let mut io = Recorder::default();
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    let r = g.vcpu.regs().unwrap();
    assert_eq!(r.rip, stub(13) + 1);
    assert_eq!(
        g.ram.read_u64(r.rsp + 8),
        CODE + 17,
        "#GP at the second XSETBV"
    );
}

#[test]
fn cpuid_reports_osxsave_from_cr4() {
    // mov eax, 1; cpuid; hlt
    let mut g = guest(&[0xb8, 1, 0, 0, 0, 0x0f, 0xa2, 0xf4]);
    let mut s = g.vcpu.sregs().unwrap();
    s.cr4 |= 1 << 18;
    g.vcpu.set_sregs(&s).unwrap();
    let mut io = Recorder::default();
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    assert_ne!(g.vcpu.regs().unwrap().rcx & (1 << 27), 0);
}

#[test]
fn a_fault_consumes_no_budget() {
    // mov eax, 1; mov ebx, 2; mov [0x400000], eax (#PF); hlt
    let mut g = guest(&[
        0xb8, 1, 0, 0, 0, 0xbb, 2, 0, 0, 0, 0x89, 0x04, 0x25, 0, 0, 0x40, 0, 0xf4,
    ]);
    let mut io = Recorder::default();
    assert_eq!(run(&mut g, &mut io, 2), VcpuExit::BudgetExhausted);
    assert_eq!(
        g.vcpu.regs().unwrap().rip,
        CODE + 10,
        "stopped before the faulting store"
    );
    // One instruction of budget: the store faults (retires nothing), the #PF is
    // delivered, and the handler's HLT is the one instruction.
    assert_eq!(run(&mut g, &mut io, 1), VcpuExit::Halted);
    assert_eq!(g.vcpu.regs().unwrap().rip, stub(14) + 1);
    assert_eq!(g.vcpu.instructions_retired(), 3);
}

/// A budget that ends in an exception handler, where the count-limited block that leads
/// there starts with the faulting instruction (issue 16: the retry at the handler's entry
/// retires nothing of the fault and must still end exactly at the budget).
#[test]
fn budget_ends_in_the_handler_of_a_fault_at_a_limited_block_start() {
    // mov eax, 1; mov [0x400000], eax (#PF); hlt
    let mut g = guest(&[0xb8, 1, 0, 0, 0, 0x89, 0x04, 0x25, 0, 0, 0x40, 0, 0xf4]);
    g.ram.write(0x9000, &[0x90, 0x90, 0x90, 0xf4]); // handler: nop; nop; nop; hlt
    g.ram.set_gate(14, 0x9000, 0, 0, false);
    let mut io = Recorder::default();
    assert_eq!(run(&mut g, &mut io, 1), VcpuExit::BudgetExhausted);
    assert_eq!(g.vcpu.regs().unwrap().rip, CODE + 5);
    // The store faults (nothing retires), the #PF is delivered, and the handler's first
    // NOP is the one instruction of this budget.
    assert_eq!(run(&mut g, &mut io, 1), VcpuExit::BudgetExhausted);
    assert_eq!(g.vcpu.instructions_retired(), 2);
    let r = g.vcpu.regs().unwrap();
    assert_eq!(r.rip, 0x9001);
    assert_eq!(g.ram.read_u64(r.rsp + 8), CODE + 5, "#PF frame RIP");
    assert_eq!(run(&mut g, &mut io, 2), VcpuExit::BudgetExhausted);
    assert_eq!(g.vcpu.regs().unwrap().rip, 0x9003);
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    assert_eq!(g.vcpu.instructions_retired(), 5);
}

/// An interrupt that wakes a HLT whose next instruction cannot be fetched is taken first,
/// as on hardware (interrupts are recognised at the instruction boundary, before the
/// fetch): the #PF has not happened yet, CR2 is untouched, and it happens when the
/// handler returns. (A run that reaches its budget or an I/O stop there has already
/// taken that #PF: QEMU fetches the next block before the block hook sees it.)
#[test]
fn interrupt_injected_before_a_faulting_fetch_comes_first() {
    let hlt_at = 0x20_0000 - 1; // the last byte of mapped memory
                                // sti; mov eax, hlt_at; jmp rax
    let mut g = guest(&[0xfb, 0xb8, 0xff, 0xff, 0x1f, 0, 0xff, 0xe0]);
    g.ram.write(hlt_at, &[0xf4]);
    g.ram.write(0x9000, &[0x48, 0xcf]); // interrupt handler: iretq
    g.ram.set_gate(0x20, 0x9000, 0, 0, false);
    let mut io = Recorder::default();
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    let before = g.vcpu.regs().unwrap();
    assert_eq!(before.rip, 0x20_0000);
    g.vcpu.inject_interrupt(0x20).unwrap();
    let r = g.vcpu.regs().unwrap();
    assert_eq!(r.rip, 0x9000, "the interrupt handler, not the #PF stub");
    assert_eq!(r.rsp, before.rsp - 40, "one frame: no #PF frame below it");
    assert_eq!(g.ram.read_u64(r.rsp), 0x20_0000, "return RIP");
    assert_eq!(g.vcpu.sregs().unwrap().cr2, 0, "no fault yet");
    // IRETQ back to the unmapped RIP: now the fetch faults.
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    assert_eq!(g.vcpu.regs().unwrap().rip, stub(14) + 1);
    assert_eq!(g.vcpu.sregs().unwrap().cr2, 0x20_0000);
    // 3 to get there, HLT, IRETQ, the #PF stub's HLT.
    assert_eq!(g.vcpu.instructions_retired(), 3 + 1 + 1 + 1);
}

/// A #PF handler on an IST stack whose first instruction faults again loops forever
/// without retiring anything (hardware would hang): the vCPU is reported as triple
/// faulted instead of the run never ending.
#[test]
fn an_exception_loop_that_retires_nothing_is_a_triple_fault() {
    let load = [0x8b, 0x04, 0x25, 0, 0, 0x40, 0]; // mov eax, [0x400000] (#PF)
    let mut g = guest(&load);
    g.ram.write(0x9000, &load);
    g.ram.set_gate(14, 0x9000, 1, 0, false);
    let mut io = Recorder::default();
    match run(&mut g, &mut io, 1000) {
        VcpuExit::TripleFault { rip } => assert_eq!(rip, 0x9000),
        other => panic!("expected a triple fault, got {other:?}"),
    }
    assert_eq!(g.vcpu.instructions_retired(), 0);
}

#[test]
fn fault_while_delivering_a_fault_becomes_a_double_fault() {
    // mov eax, 0x1230; mov ds, eax (#GP: beyond the GDT); hlt
    let mut g = guest(&[0xb8, 0x30, 0x12, 0, 0, 0x8e, 0xd8, 0xf4]);
    g.ram.write_u64(
        IDT + 13 * 16,
        g.ram.read_u64(IDT + 13 * 16) & !(0x80u64 << 40),
    ); // #GP gate not present
    let mut io = Recorder::default();
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    let r = g.vcpu.regs().unwrap();
    assert_eq!(r.rip, stub(8) + 1, "#GP, then #NP delivering it: #DF");
    assert_eq!(g.ram.read_u64(r.rsp), 0, "#DF error code");
    assert_eq!(
        g.ram.read_u64(r.rsp + 8),
        CODE + 5,
        "#DF points at the faulting MOV"
    );
}

#[test]
fn interrupt_in_ring3_switches_to_the_rsp0_stack() {
    let mut g = ring3_guest(&[0x90, 0x90, 0xeb, 0xfe]); // nop; nop; jmp $
    g.ram.write(0x9000, &[0xf4]); // handler: hlt
    g.ram.set_gate(0x20, 0x9000, 0, 0, false);
    let mut io = Recorder::default();
    assert_eq!(run(&mut g, &mut io, 6 + 1), VcpuExit::BudgetExhausted);
    assert!(g.vcpu.interruptible());
    g.vcpu.inject_interrupt(0x20).unwrap();
    let r = g.vcpu.regs().unwrap();
    assert_eq!((r.rip, r.rsp), (0x9000, KERNEL_STACK - 40));
    let frame: Vec<u64> = (0..5).map(|i| g.ram.read_u64(r.rsp + 8 * i)).collect();
    assert_eq!(frame[..2], [0xa001, USER_CS as u64]);
    assert_eq!(frame[3..], [USER_STACK, USER_DS as u64]);
    assert_eq!(g.vcpu.sregs().unwrap().cs.dpl, 0);
    assert_eq!(run(&mut g, &mut io, 10), VcpuExit::Halted);
}

/// A store through a second virtual mapping of a page (an alias) must invalidate code
/// translated from that page, also when the alias was written (so its TLB entry may have
/// been made writable without checks) before the page held any code.
#[test]
fn code_patched_through_an_alias_mapping_runs_patched() {
    const F: u64 = 0xa000; // mov eax, 1; ret
    const ALIAS: u64 = 0x20_0000; // virtual 2..4 MiB maps physical 0..2 MiB
    let store_byte = |addr: u64, v: u8| {
        let mut i = vec![0xc6, 0x04, 0x25]; // mov byte [disp32], imm8
        i.extend((addr as u32).to_le_bytes());
        i.push(v);
        i
    };
    let mut code = store_byte(ALIAS + F + 0x100, 0); // the page, before it holds code
    let call_f = |code: &[u8]| {
        let next = CODE + code.len() as u64 + 5;
        let mut i = vec![0xe8]; // call rel32
        i.extend(((F as i64 - next as i64) as i32).to_le_bytes());
        i
    };
    code.extend(call_f(&code));
    code.extend([0x89, 0xc3]); // mov ebx, eax
    code.extend(store_byte(ALIAS + F + 1, 2)); // mov eax, 1 -> mov eax, 2
    code.extend(call_f(&code));
    code.push(0xf4); // hlt
    let mut g = guest(&code);
    g.ram.write(F, &[0xb8, 1, 0, 0, 0, 0xc3]);
    g.ram.write_u64(0x3000 + 8, 0x87); // PD entry 1: a 2 MiB page at physical 0
    let mut io = Recorder::default();
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    let r = g.vcpu.regs().unwrap();
    assert_eq!(
        (r.rbx, r.rax),
        (1, 2),
        "the second call ran the patched code"
    );
    assert_eq!(g.vcpu.instructions_retired(), 10);
}

/// QEMU finds the target of an indirect jump in its jump cache by virtual address. After
/// the page tables map that address elsewhere, the code now mapped there must run: after
/// an INVLPG of the page (the patched Unicorn drops only that page's entries) and after a
/// CR3 write (it keeps the entries and proves them against the new mapping).
#[test]
fn an_indirect_call_runs_the_code_its_address_maps_to_now() {
    const V: u64 = 0x20_0000; // one 4 KiB page, through the page table at PT
    const PT: u32 = 0x2_0000;
    const F1: u64 = 0x2_1000; // mov eax, 1; ret
    const F2: u64 = 0x2_2000; // mov eax, 2; ret
    let map_v_to = |phys: u64| {
        let mut i = vec![0xc7, 0x04, 0x25]; // mov dword [PT], imm32: the entry's low half
        i.extend(PT.to_le_bytes());
        i.extend((phys as u32 | 0x7).to_le_bytes());
        i
    };
    let mut code = vec![0xb9]; // mov ecx, V
    code.extend((V as u32).to_le_bytes());
    code.extend([0xff, 0xd1, 0x89, 0xc3]); // call rcx; mov ebx, eax
    code.extend(map_v_to(F2));
    code.extend([0x0f, 0x01, 0x39]); // invlpg [rcx]
    code.extend([0xff, 0xd1, 0x89, 0xc6]); // call rcx; mov esi, eax
    code.extend(map_v_to(F1));
    code.extend([0x0f, 0x20, 0xd8, 0x0f, 0x22, 0xd8]); // mov rax, cr3; mov cr3, rax
    code.extend([0xff, 0xd1, 0x89, 0xc7]); // call rcx; mov edi, eax
    code.push(0xf4); // hlt
    let mut g = guest(&code);
    g.ram.write(F1, &[0xb8, 1, 0, 0, 0, 0xc3]);
    g.ram.write(F2, &[0xb8, 2, 0, 0, 0, 0xc3]);
    g.ram.write_u64(0x3000 + 8, PT as u64 | 0x7); // PD entry 1 -> the page table
    g.ram.write_u64(PT as u64, F1 | 0x7);
    let mut io = Recorder::default();
    assert_eq!(run(&mut g, &mut io, 1000), VcpuExit::Halted);
    let r = g.vcpu.regs().unwrap();
    assert_eq!(
        (r.rbx, r.rsi, r.rdi),
        (1, 2, 1),
        "each call ran the code its address mapped to at the time"
    );
}

#[test]
fn saved_cpu_state_holds_no_host_addresses() {
    // Vector operations done by QEMU helpers through whole-register host temporaries,
    // and a store through the softmmu TLB (a fill records the host return address of
    // the generated code in the CPU state), then a halt.
    let code = [
        0x66, 0x0f, 0x70, 0xc1, 0x1b, // pshufd xmm0, xmm1, 0x1b
        0x66, 0x0f, 0x70, 0xd0, 0x4e, // pshufd xmm2, xmm0, 0x4e
        0x66, 0x0f, 0xfe, 0xc2, //       paddd xmm0, xmm2
        0xbb, 0x00, 0x30, 0x00, 0x00, // mov ebx, 0x3000
        0x66, 0x0f, 0x7f, 0x03, //       movdqa [rbx], xmm0
        0xf4, //                         hlt
    ];
    // Both alive at once, so their generated code lies at different host addresses; the
    // second runs on a deeper host stack, so its temporaries start from other bytes.
    let mut guests = [guest(&code), guest(&code)];
    let run_deep = |g: &mut ProbeGuest, depth: usize| {
        let pad = std::hint::black_box([depth as u8; 4096]);
        assert_eq!(run(g, &mut Recorder::default(), 1000), VcpuExit::Halted);
        std::hint::black_box(pad);
    };
    let [a, b] = &mut guests;
    run_deep(a, 0);
    run_deep(b, 1);
    let saved: Vec<Vec<u8>> = guests
        .iter()
        .map(|g| match g.vcpu.save_state().unwrap() {
            crate::vcpu::VcpuState::Emu { context, .. } => context,
            other => panic!("not an emu state: {other:?}"),
        })
        .collect();
    // Equal bytes mean nothing host-specific was saved, so snapshot files of the same
    // state are the same in every process and on every host.
    let differ: Vec<usize> = (0..saved[0].len())
        .filter(|&i| saved[0][i] != saved[1][i])
        .collect();
    assert!(
        differ.is_empty(),
        "bytes {differ:?} of {} differ",
        saved[0].len()
    );
}
