//! Micro-benchmark of the counting scheme (ignored by default).

use super::probe::*;
use super::tests::{guest, run};
use crate::vcpu::{Vcpu, VcpuExit};

fn bench_loop(name: &str, body: &[u8], iterations: u32) {
    use std::time::Instant;
    use unicorn_engine::{Arch, Mode, Prot, Unicorn};
    let n = iterations.to_le_bytes();
    // mov ecx, N; l: <body>; dec ecx; jnz l; hlt
    let mut code = vec![0xb9, n[0], n[1], n[2], n[3]];
    code.extend_from_slice(body);
    let back = -(body.len() as i8 + 4);
    code.extend_from_slice(&[0xff, 0xc9, 0x75, back as u8, 0xf4]);
    let per_iter = body.len() as u64 / 3 + 2; // bodies are 3-byte instructions
    let insns = per_iter * iterations as u64 + 2;
    let mips = |secs: f64| insns as f64 / secs / 1e6;

    let mut g = guest(&code);
    let mut io = Recorder::default();
    let t = Instant::now();
    assert_eq!(run(&mut g, &mut io, u64::MAX), VcpuExit::Halted);
    let counted = t.elapsed().as_secs_f64();
    assert_eq!(g.vcpu.instructions_retired(), insns);

    let mut g = guest(&code);
    let t = Instant::now();
    let mut exits = 0;
    while run(&mut g, &mut io, 200_003) == VcpuExit::BudgetExhausted {
        exits += 1;
    }
    let sliced = t.elapsed().as_secs_f64();
    assert_eq!(g.vcpu.instructions_retired(), insns);

    let raw = |count: usize| {
        let mut uc = Unicorn::new(Arch::X86, Mode::MODE_64).unwrap();
        uc.mem_map(0, 1 << 20, Prot::ALL).unwrap();
        uc.mem_write(CODE, &code).unwrap();
        let t = Instant::now();
        let end = CODE + code.len() as u64 - 1;
        uc.emu_start(CODE, end, 0, count).unwrap();
        t.elapsed().as_secs_f64()
    };
    let raw_secs = raw(0);
    let per_insn = raw(insns as usize - 1);
    println!("{name}, {insns} instructions:");
    println!(
        "  raw Unicorn, no hooks:              {:7.1} MIPS",
        mips(raw_secs)
    );
    println!(
        "  emu backend, exact counting:        {:7.1} MIPS",
        mips(counted)
    );
    println!(
        "  emu backend, 200003-insn budgets:   {:7.1} MIPS ({exits} exits)",
        mips(sliced)
    );
    println!(
        "  Unicorn count= (per-insn hook):     {:7.1} MIPS",
        mips(per_insn)
    );
}

/// `cargo test -p vmm --release backend::emu::tests::bench -- --ignored --nocapture`
#[test]
#[ignore = "micro-benchmark"]
fn bench_tight_loop_mips() {
    bench_loop("dec/jnz loop (2-instruction blocks)", &[], 100_000_000);
    // 8 x `add rax, rbx` style ALU instructions per iteration.
    let body = [
        0x48, 0x01, 0xd8, 0x48, 0x31, 0xc3, 0x48, 0x01, 0xc2, 0x48, 0x29, 0xd6, 0x48, 0x01, 0xd8,
        0x48, 0x31, 0xc3, 0x48, 0x01, 0xc2, 0x48, 0x29, 0xd6,
    ];
    bench_loop("10-instruction loop body", &body, 20_000_000);
}
