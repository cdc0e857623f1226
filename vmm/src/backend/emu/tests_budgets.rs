//! Budgets that end on, in and around exception and interrupt delivery: every budget from
//! 1 up through small guests that fault, trap and take interrupts must give the same run as
//! one long run (the unit-level half of the torture; the Linux half is explorer's
//! `torture_emu`). See docs/notes-emu-exception-budget.md.

use kvm_bindings::kvm_regs;

use super::probe::*;
use super::tests::{guest, ring3_guest};
use crate::vcpu::{Vcpu, VcpuExit};

/// What a run to the end showed: exits other than budget stops (with the instruction count
/// and RIP at each), every device access (numbered from the vCPU's start), final state.
#[derive(Debug, PartialEq)]
struct Trail {
    exits: Vec<(VcpuExit, u64, u64)>,
    seen: Vec<Seen>,
    regs: kvm_regs,
    cr2: u64,
    retired: u64,
}

fn renumber(s: &Seen, by: u64) -> Seen {
    let mut s = s.clone();
    match &mut s {
        Seen::PioRead { insns, .. }
        | Seen::PioWrite { insns, .. }
        | Seen::MmioRead { insns, .. }
        | Seen::MmioWrite { insns, .. }
        | Seen::Rdtsc { insns } => *insns += by,
    }
    s
}

/// Runs with `budget(run number)` per run until a HLT with interrupts off (or a triple
/// fault); a HLT with interrupts on just goes on (nothing to wait for). Returns the trail
/// and the RIP at every budget stop, by instruction count.
fn run_to_end(
    g: &mut ProbeGuest,
    io: &mut Recorder,
    mut budget: impl FnMut(usize) -> u64,
) -> (Trail, Vec<(u64, u64)>) {
    let (mut exits, mut seen, mut stops) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0.. {
        assert!(n < 100_000, "the guest does not end");
        let before = g.vcpu.instructions_retired();
        let b = budget(n);
        let exit = g.vcpu.run(io, b).expect("run");
        let after = g.vcpu.instructions_retired();
        seen.extend(io.seen.drain(..).map(|s| renumber(&s, before)));
        let rip = g.vcpu.regs().unwrap().rip;
        match exit {
            VcpuExit::BudgetExhausted => {
                assert_eq!(
                    after - before,
                    b,
                    "a budget of {b} retired {}",
                    after - before
                );
                stops.push((after, rip));
                continue;
            }
            _ => assert!(after - before <= b),
        }
        exits.push((exit, after, rip));
        let finished = match exit {
            VcpuExit::Halted => !g.vcpu.interruptible(),
            VcpuExit::TripleFault { .. } => true,
            _ => false,
        };
        if finished {
            break;
        }
    }
    let trail = Trail {
        exits,
        seen,
        regs: g.vcpu.regs().unwrap(),
        cr2: g.vcpu.sregs().unwrap().cr2,
        retired: g.vcpu.instructions_retired(),
    };
    (trail, stops)
}

/// Every budget from 1 to the guest's length: the same trail as one long run, and every
/// budget stop where single-stepping was after as many instructions.
fn assert_every_budget_agrees(make: impl Fn() -> (ProbeGuest, Recorder)) -> Trail {
    let long = {
        let (mut g, mut io) = make();
        run_to_end(&mut g, &mut io, |_| 1_000_000).0
    };
    let (single, rip_after) = {
        let (mut g, mut io) = make();
        run_to_end(&mut g, &mut io, |_| 1)
    };
    assert_eq!(single, long, "single steps");
    let rip_after: std::collections::HashMap<u64, u64> = rip_after.into_iter().collect();
    for budget in 2..=long.retired + 1 {
        let (mut g, mut io) = make();
        let (trail, stops) = run_to_end(&mut g, &mut io, |_| budget);
        assert_eq!(trail, long, "budget {budget}");
        for (count, rip) in stops {
            assert_eq!(
                rip_after.get(&count),
                Some(&rip),
                "budget {budget}: stop after {count}"
            );
        }
    }
    // Uneven budgets too: 1, 2, 3, 1, 2, 3, ...
    let (mut g, mut io) = make();
    assert_eq!(run_to_end(&mut g, &mut io, |n| 1 + n as u64 % 3).0, long);
    long
}

fn probe(code: &[u8], handlers: &[(u8, u64, &[u8])]) -> ProbeGuest {
    let mut g = guest(code);
    for &(vector, at, handler) in handlers {
        g.ram.write(at, handler);
        g.ram.set_gate(vector, at, 0, 0, false);
    }
    g
}

const STORE: [u8; 7] = [0x89, 0x04, 0x25, 0, 0, 0x40, 0]; // mov [0x400000], eax (#PF)
/// #PF handler: pop rax; add qword [rsp], 7 (skip the store); inc rbx x3; iretq
const SKIP_STORE: [u8; 17] = [
    0x58, 0x48, 0x83, 0x04, 0x24, 0x07, 0x48, 0xff, 0xc3, 0x48, 0xff, 0xc3, 0x48, 0xff, 0xc3, 0x48,
    0xcf,
];

#[test]
fn page_faults_at_block_start_middle_and_end() {
    let mut code = STORE.to_vec(); // first in its block
    code.extend_from_slice(&[0xff, 0xc3, 0xff, 0xc3]); // inc ebx; inc ebx
    code.extend_from_slice(&STORE); // mid-block
    code.extend_from_slice(&[0xff, 0xc3]);
    code.extend_from_slice(&STORE); // last before HLT
    code.push(0xf4);
    let t = assert_every_budget_agrees(|| {
        let g = probe(&code, &[(14, 0x9000, &SKIP_STORE)]);
        (g, Recorder::default())
    });
    assert_eq!(t.regs.rbx, 3 + 3 * 3);
    assert_eq!(t.retired, 3 + 1 + 3 * 6, "3 incs, HLT, 3 handlers of 6");
}

#[test]
fn general_protection_faults() {
    let code = [
        0xb8, 0x30, 0x12, 0, 0, // mov eax, 0x1230
        0x8e, 0xd8, //             mov ds, eax (#GP: beyond the GDT)
        0x90, //                   nop
        0x8e, 0xd8, //             mov ds, eax (#GP)
        0xff, 0xc3, //             inc ebx
        0xf4,
    ];
    // pop rax; add qword [rsp], 2; inc rbx; iretq
    let skip = [
        0x58, 0x48, 0x83, 0x04, 0x24, 0x02, 0x48, 0xff, 0xc3, 0x48, 0xcf,
    ];
    let t =
        assert_every_budget_agrees(|| (probe(&code, &[(13, 0x9000, &skip)]), Recorder::default()));
    assert_eq!(t.regs.rbx, 3);
    assert_eq!(t.regs.rax, 0x1230, "the error code is the selector");
}

#[test]
fn int3_and_int_n_traps() {
    let code = [
        0xcc, //       int3
        0x90, //       nop
        0xcd, 0x30, // int 0x30
        0xff, 0xc3, // inc ebx
        0xcc, //       int3
        0xf4,
    ];
    let handler = [0x48, 0xff, 0xc1, 0x90, 0x48, 0xcf]; // inc rcx; nop; iretq
    let t = assert_every_budget_agrees(|| {
        let g = probe(&code, &[(3, 0x9000, &handler), (0x30, 0x9000, &handler)]);
        (g, Recorder::default())
    });
    assert_eq!((t.regs.rcx, t.regs.rbx), (3, 1));
    assert_eq!(t.retired, 6 + 3 * 3, "INT3 and INT n retire");
}

#[test]
fn ring3_int_without_permission_page_fault_and_permitted_int() {
    let user = [
        0xcd, 0x30, //                            int 0x30 (gate DPL 0: #GP)
        0xcd, 0x31, //                            int 0x31 (DPL 3)
        0x8b, 0x04, 0x25, 0, 0, 0x40, 0,    //       mov eax, [0x400000] (#PF)
        0x90, //                                  nop
        0xcd, 0x32, //                            int 0x32 (DPL 3: a HLT in ring 0)
    ];
    let t = assert_every_budget_agrees(|| {
        let mut g = ring3_guest(&user);
        g.ram
            .write(0x9000, &[0x58, 0x48, 0x83, 0x04, 0x24, 0x02, 0x48, 0xcf]); // skip 2
        g.ram.set_gate(13, 0x9000, 0, 0, false);
        g.ram.write(0x9100, &[0x48, 0xcf]);
        g.ram.set_gate(0x31, 0x9100, 0, 3, false);
        g.ram
            .write(0x9200, &[0x58, 0x48, 0x83, 0x04, 0x24, 0x07, 0x48, 0xcf]); // skip 7
        g.ram.set_gate(14, 0x9200, 0, 0, false);
        g.ram.set_gate(0x32, stub(0x32), 0, 3, false);
        (g, Recorder::default())
    });
    assert_eq!(t.regs.rip, stub(0x32) + 1);
    assert_eq!(t.cr2, 0x40_0000);
}

#[test]
fn double_fault_from_a_fault_while_delivering() {
    // nop; nop; mov eax, 0x1230; mov ds, eax (#GP; its gate is not present: #NP, then #DF)
    let code = [0x90, 0x90, 0xb8, 0x30, 0x12, 0, 0, 0x8e, 0xd8, 0xf4];
    let t = assert_every_budget_agrees(|| {
        let mut g = guest(&code);
        let gate = g.ram.read_u64(IDT + 13 * 16);
        g.ram.write_u64(IDT + 13 * 16, gate & !(0x80u64 << 40));
        (g, Recorder::default())
    });
    assert_eq!(t.regs.rip, stub(8) + 1);
}

#[test]
fn double_fault_from_a_page_fault_while_delivering_a_page_fault() {
    // nop; nop; mov [0x400000], eax (#PF; its IST stack is unmapped: #PF again, then #DF)
    let mut code = vec![0x90, 0x90];
    code.extend_from_slice(&STORE);
    code.push(0xf4);
    let t = assert_every_budget_agrees(|| {
        let mut g = guest(&code);
        g.ram.set_gate(14, stub(14), 1, 0, false);
        g.ram.write_u64(TSS + 0x24, 0x40_1000); // IST1
        (g, Recorder::default())
    });
    assert_eq!(t.regs.rip, stub(8) + 1);
    assert_eq!(
        t.cr2, 0x40_0ff8,
        "the second #PF: the push of the first's frame"
    );
}

#[test]
fn fault_in_the_middle_of_rep_stos() {
    let code = [
        0xbf, 0xc0, 0xff, 0x1f, 0, // mov edi, 0x1fffc0 (64 bytes before unmapped memory)
        0xb9, 100, 0, 0, 0, //        mov ecx, 100
        0x31, 0xc0, //                xor eax, eax
        0xf3, 0xaa, //                rep stosb (#PF at the 65th byte)
        0xff, 0xc3, //                inc ebx
        0xf4,
    ];
    let handler = [0x58, 0x31, 0xc9, 0x48, 0xcf]; // pop rax; xor ecx, ecx; iretq
    let t = assert_every_budget_agrees(|| {
        (probe(&code, &[(14, 0x9000, &handler)]), Recorder::default())
    });
    assert_eq!(t.regs.rdi, 0x20_0000);
    assert_eq!(
        t.retired,
        3 + 64 + 3 + 1 + 2,
        "one per iteration, the last at ECX 0"
    );
}

#[test]
fn single_step_traps_after_every_instruction() {
    let code = [
        0x9c, //                                     pushfq
        0x48, 0x81, 0x0c, 0x24, 0x00, 0x01, 0, 0,    // or qword [rsp], 0x100 (TF)
        0x9d, //                                     popfq
        0x90, 0x90, //                               nop; nop
        0xff, 0xc3, //                               inc ebx
        0x9c, //                                     pushfq
        0x48, 0x81, 0x24, 0x24, 0xff, 0xfe, 0xff, 0xff, // and qword [rsp], ~0x100
        0x9d, //                                     popfq
        0xf4,
    ];
    let handler = [0x48, 0xff, 0xc1, 0x48, 0xcf]; // inc rcx; iretq
    let t = assert_every_budget_agrees(|| {
        (probe(&code, &[(1, 0x9000, &handler)]), Recorder::default())
    });
    // #DB after NOP, NOP, INC, PUSHFQ, AND and the POPFQ that clears TF (TF was set
    // before each); none after the POPFQ that sets it.
    assert_eq!(t.regs.rcx, 6);
}

#[test]
fn self_modifying_code_and_io_stops() {
    let code = [
        0x66, 0xc7, 0x05, 0, 0, 0, 0, 0x90,
        0x90, // mov word [rip+0], 0x9090 (patches the next)
        0xff, 0xc0, //                             inc eax -> nop; nop
        0xe6, 0x80, //                             out 0x80, al (stops)
        0xff, 0xc0, //                             inc eax
        0xbb, 0x40, 0x00, 0xe0, 0xfe, //           mov ebx, 0xfee00040
        0x89, 0x03, //                             mov [rbx], eax (MMIO, stops)
        0x8b, 0x0b, //                             mov ecx, [rbx]
        0xf4,
    ];
    let t = assert_every_budget_agrees(|| {
        let io = Recorder {
            read_value: 9,
            stop_port: Some(0x80),
            stop_addr: Some(0xfee0_0040),
            ..Default::default()
        };
        (guest(&code), io)
    });
    assert_eq!((t.regs.rax, t.regs.rcx), (1, 9));
    assert_eq!(t.seen.len(), 3);
}

/// An interrupt injected at every instruction boundary where the guest can take one (not
/// in an STI or MOV SS shadow, not with IF clear), with the instructions before and after
/// run whole or one at a time: the same run either way.
#[test]
fn interrupt_injected_at_every_boundary() {
    let code = [
        0xfb, //                   sti (shadow)
        0x90, //                   nop
        0xb8, 0x18, 0, 0, 0, //    mov eax, 0x18
        0x8e, 0xd0, //             mov ss, eax (shadow)
        0x90, //                   nop
        0x89, 0x04, 0x25, 0, 0, 0x40, 0, // mov [0x400000], eax (#PF)
        0xff, 0xc3, //             inc ebx
        0xfb, 0xf4, //             sti; hlt (wakes here)
        0xff, 0xc3, //             inc ebx
        0xfa, 0xf4, //             cli; hlt
    ];
    let make = || {
        let mut g = probe(&code, &[(14, 0x9000, &SKIP_STORE[..])]);
        g.ram.write(0x9100, &[0x48, 0xff, 0xc1, 0x48, 0xcf]); // inc rcx; iretq
        g.ram.set_gate(0x20, 0x9100, 0, 0, false);
        g
    };
    let total = {
        let mut g = make();
        run_to_end(&mut g, &mut Recorder::default(), |_| 1000)
            .0
            .retired
    };
    let mut injected = Vec::new();
    for k in 0..=total {
        let run_with = |step: u64| {
            let mut g = make();
            let mut io = Recorder::default();
            // The first k instructions (or up to the final HLT).
            while g.vcpu.instructions_retired() < k {
                let left = k - g.vcpu.instructions_retired();
                match g.vcpu.run(&mut io, left.min(step)).unwrap() {
                    VcpuExit::Halted if !g.vcpu.interruptible() => break,
                    VcpuExit::BudgetExhausted | VcpuExit::Halted => {}
                    other => panic!("{other:?}"),
                }
            }
            let at = (g.vcpu.instructions_retired(), g.vcpu.regs().unwrap().rip);
            let can = g.vcpu.interruptible();
            if can {
                g.vcpu.inject_interrupt(0x20).unwrap();
            }
            (run_to_end(&mut g, &mut io, |_| step).0, at, can)
        };
        let whole = run_with(1000);
        assert_eq!(run_with(1), whole, "injection after {k}, single steps");
        assert_eq!(run_with(2), whole, "injection after {k}, budgets of 2");
        if whole.2 {
            injected.push(whole.1 .0);
            assert_eq!(whole.0.regs.rcx, 1, "the handler ran once");
        }
    }
    // Not before STI, in its shadow (1) or the MOV SS one (4), in the #PF handler (IF
    // clear: 6..=10) or after CLI (16, 17); the HLT after the second STI (14) can be woken.
    assert_eq!(injected, [2, 3, 5, 11, 12, 14, 15]);
}

/// Stops the run at the `stop_at`-th port write (counted from 1), once.
struct StopOnce {
    writes: usize,
    stop_at: usize,
}

impl crate::vcpu::GuestIo for StopOnce {
    fn pio_read(&mut self, _: u64, _: u16, data: &mut [u8]) {
        data.fill(0);
    }
    fn pio_write(&mut self, _: u64, _: u16, _: &[u8]) -> crate::vcpu::IoFlow {
        self.writes += 1;
        if self.writes == self.stop_at {
            crate::vcpu::IoFlow::Stop
        } else {
            crate::vcpu::IoFlow::Continue
        }
    }
    fn mmio_read(&mut self, _: u64, _: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn mmio_write(&mut self, _: u64, _: u64, _: &[u8]) -> crate::vcpu::IoFlow {
        crate::vcpu::IoFlow::Continue
    }
    fn rdtsc(&mut self, _: u64) -> u64 {
        0
    }
}

/// An I/O stop inside a REP OUTSB puts a one-instruction replay block in the jump cache,
/// which the block hook cannot tell from QEMU's self-modifying-code restart by its size;
/// the same REP entered again from the block before it must still count exactly (QEMU runs
/// a REP once more to find ECX 0, and that lookup refreshes the jump cache).
#[test]
fn io_stop_inside_rep_outs_then_the_same_rep_again() {
    let code = [
        0xbb, 3, 0, 0, 0, //       mov ebx, 3
        0xba, 0x80, 0, 0, 0, //    mov edx, 0x80
        0xbe, 0, 0x90, 0, 0, //    mov esi, 0x9000
        0xb9, 2, 0, 0, 0, //       l: mov ecx, 2
        0xf3, 0x6e, //             rep outsb
        0xff, 0xcb, //             dec ebx
        0x75, 0xf5, //             jnz l
        0xf4,
    ];
    let count = |stop_at: usize| {
        let mut g = guest(&code);
        let mut io = StopOnce { writes: 0, stop_at };
        loop {
            match g.vcpu.run(&mut io, 1000).unwrap() {
                VcpuExit::Halted => break,
                VcpuExit::IoStop => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(io.writes, 6);
        (g.vcpu.instructions_retired(), g.vcpu.regs().unwrap().rip)
    };
    // 3 moves, then 3 times: MOV ECX, the REP (QEMU runs it once per iteration and once
    // more to find ECX 0), DEC, JNZ; then HLT.
    let want = (3 + 3 * (1 + 3 + 2) + 1, CODE + code.len() as u64);
    assert_eq!(count(0), want, "no stop");
    for stop_at in 1..=6 {
        assert_eq!(count(stop_at), want, "a stop at write {stop_at}");
    }
}

/// QEMU's smallest translated-code buffer: it fills every few thousand blocks.
const SMALL_CODE_BUFFER: u32 = 1 << 20;

/// A guest that runs `blocks` distinct 3-instruction blocks (add rax, rcx; inc rdx;
/// jmp to the next) `passes` times, so QEMU's code buffer keeps filling up.
fn many_blocks(blocks: usize, passes: u32, code_buffer: Option<u32>) -> (ProbeGuest, Recorder) {
    const CHAIN: u64 = 0x10_0000;
    let call = (CHAIN as i64 - (CODE as i64 + 10)) as i32;
    let mut code = vec![0xb9]; // mov ecx, passes
    code.extend_from_slice(&passes.to_le_bytes());
    code.push(0xe8); // l: call CHAIN
    code.extend_from_slice(&call.to_le_bytes());
    code.extend_from_slice(&[0xff, 0xc9, 0x75, 0xf5, 0xf4]); // dec ecx; jnz l; hlt
    let mut g = ProbeGuest::with_code_buffer(&code, code_buffer).expect("probe guest");
    let block = [0x48, 0x01, 0xc8, 0x48, 0xff, 0xc2, 0xeb, 0x00];
    let mut chain = block.repeat(blocks);
    chain.push(0xc3); // ret
    g.ram.write(CHAIN, &chain);
    (g, Recorder::default())
}

/// When QEMU's code buffer is full while it translates the count-limited block that ends a
/// budget, it flushes every translated block and restarts its CPU loop, which forgets the
/// limit (`cflags_next_tb` was already consumed): the next block is an ordinary one. That
/// used to end the run with "a count-limited block did not shorten" (redis under
/// `detvm run`, at a moment that depended on the host's code layout). The run must ask for
/// the limited block again and count exactly.
#[test]
fn a_code_buffer_flush_while_translating_a_limited_block_keeps_the_budget() {
    let (blocks, passes) = (6_000, 2);
    let long = {
        let (mut g, mut io) = many_blocks(blocks, passes, None);
        run_to_end(&mut g, &mut io, |_| 1_000_000).0
    };
    assert_eq!(long.regs.rdx, passes as u64 * blocks as u64);
    // Budgets of 1 make every block a limited one; uneven budgets mix both kinds.
    for budget in [|_: usize| 1, |n: usize| 1 + (n as u64 * 7919) % 5] {
        let (mut g, mut io) = many_blocks(blocks, passes, Some(SMALL_CODE_BUFFER));
        assert_eq!(run_to_end(&mut g, &mut io, budget).0, long);
    }
}
