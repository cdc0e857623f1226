//! Start-up proof of every Unicorn internal in `internals.rs`: tiny guests whose outcome is
//! known exactly are run, and the outcome is compared with what the offsets read. A wrong
//! offset (another Unicorn build) shows up as a clear `VcpuError::Unavailable`, never as a
//! silent miscount. Runs once per process.

use std::sync::OnceLock;

use unicorn_engine::{uc_reg_read, uc_reg_write, uc_x86_mmr, RegisterX86};

use super::engine::unavailable;
use super::internals::{self as int, PINNED_VERSION};
use super::probe::{stub, ProbeGuest, Recorder, Seen, CODE, KERNEL_STACK};
use crate::vcpu::{Vcpu, VcpuError, VcpuExit};

/// Proves the internals once; every later call returns the first answer.
pub fn verify() -> Result<(), VcpuError> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(run_probes)
        .clone()
        .map_err(|e| unavailable(format!("Unicorn internals self-check failed ({e}); detvm's emu backend is pinned to {PINNED_VERSION}")))
}

fn check(cond: bool, what: &str) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

fn guest(code: &[u8]) -> Result<ProbeGuest, String> {
    ProbeGuest::new_unchecked(code).map_err(|e| format!("probe set-up: {e}"))
}

fn run(g: &mut ProbeGuest, io: &mut Recorder, budget: u64) -> Result<VcpuExit, String> {
    g.vcpu
        .run(io, budget)
        .map_err(|e| format!("probe run: {e}"))
}

fn run_probes() -> Result<(), String> {
    probe_layout()?;
    probe_counting()?;
    probe_page_fault()?;
    probe_budget_through_a_fault()?;
    probe_int3()?;
    probe_mmio()?;
    probe_features()?;
    probe_interrupt_shadow()?;
    probe_triple_fault()
}

/// env_ptr, eip, segments, descriptor tables, CRs, hflags, and MSR fields.
fn probe_layout() -> Result<(), String> {
    let mut g = guest(&[0xf4])?;
    for (msr, v) in [
        (0xc000_0081u32, 0x0023_0010_0000_0000u64),
        (0xc000_0082, 0xffff_8000_1234_5000),
        (0xc000_0083, 0x5678),
        (0xc000_0084, 0x4700),
    ] {
        g.vcpu.set_msr(msr, v).map_err(|e| e.to_string())?;
    }
    g.vcpu
        .with_cpu(|eng, cpu| -> Result<(), String> {
            let read = |r: RegisterX86| {
                let mut v = 0u64;
                // SAFETY: reading a 64-bit register into a u64.
                unsafe { uc_reg_read(eng.uc, r as i32, (&raw mut v).cast()) };
                v
            };
            let mmr = |r: RegisterX86| {
                let mut m = uc_x86_mmr {
                    selector: 0,
                    base: 0,
                    limit: 0,
                    flags: 0,
                };
                // SAFETY: descriptor registers read into a uc_x86_mmr.
                unsafe { uc_reg_read(eng.uc, r as i32, (&raw mut m).cast()) };
                m
            };
            check(cpu.env_matches_layout(), "env_ptr")?;
            check(cpu.eip() == CODE && read(RegisterX86::RIP) == CODE, "eip")?;
            check(cpu.env_u64(int::ENV_REGS + 4 * 8) == KERNEL_STACK, "regs")?;
            check(
                cpu.cr(3) == read(RegisterX86::CR3) && cpu.cr(3) == 0x1000,
                "cr",
            )?;
            check(cpu.env_u64(int::ENV_EFER) == 0xd01, "efer")?;
            check(
                cpu.seg_at(int::ENV_SEGS + int::R_CS * int::SEG_SIZE).0 as u64
                    == read(RegisterX86::CS),
                "segs",
            )?;
            check(
                cpu.seg_at(int::ENV_SEGS + int::R_SS * int::SEG_SIZE).0 as u64
                    == read(RegisterX86::SS),
                "segs (ss)",
            )?;
            let gdt = mmr(RegisterX86::GDTR);
            check(
                cpu.seg_at(int::ENV_GDT).1 == gdt.base && cpu.seg_at(int::ENV_GDT).2 == gdt.limit,
                "gdt",
            )?;
            let idt = mmr(RegisterX86::IDTR);
            check(
                cpu.seg_at(int::ENV_IDT).1 == idt.base && cpu.seg_at(int::ENV_IDT).2 == idt.limit,
                "idt",
            )?;
            let tr = mmr(RegisterX86::TR);
            check(
                cpu.seg_at(int::ENV_TR).1 == tr.base
                    && cpu.seg_at(int::ENV_TR).0 == tr.selector as u32,
                "tr",
            )?;
            let ldt = mmr(RegisterX86::LDTR);
            check(
                cpu.seg_at(int::ENV_LDT).0 == ldt.selector as u32
                    && cpu.seg_at(int::ENV_LDT).3 == ldt.flags,
                "ldt",
            )?;
            let h = cpu.hflags();
            check(
                h & int::HF_CPL_MASK == 0
                    && h & int::HF_LMA_MASK != 0
                    && h & int::HF_CS64_MASK != 0,
                "hflags",
            )?;
            check(cpu.env_u64(int::ENV_STAR) == 0x0023_0010_0000_0000, "star")?;
            check(
                cpu.env_u64(int::ENV_LSTAR) == 0xffff_8000_1234_5000,
                "lstar",
            )?;
            check(cpu.env_u64(int::ENV_CSTAR) == 0x5678, "cstar")?;
            check(cpu.env_u64(int::ENV_FMASK) == 0x4700, "fmask")?;
            let xmm5 = [0x0123_4567_89ab_cdefu64, 0xfedc_ba98_7654_3210];
            // SAFETY: an XMM register written from two u64s.
            unsafe { uc_reg_write(eng.uc, RegisterX86::XMM5 as i32, xmm5.as_ptr().cast()) };
            let at = int::ENV_XMM_REGS + 5 * int::ZMM_SIZE;
            check(
                cpu.env_u64(at) == xmm5[0] && cpu.env_u64(at + 8) == xmm5[1],
                "xmm_regs",
            )?;
            // The saved context ends right after `retaddr`.
            check(eng.cpu_context().len() == int::ENV_RETADDR + 8, "retaddr")
        })
        .map_err(|e| e.to_string())?
}

/// TB lookup, icount, the exit-request flag and `cflags_next_tb`, via exact counts.
fn probe_counting() -> Result<(), String> {
    // mov ecx, 5; l: dec ecx; jnz l; hlt   -> 1 + 2*5 + 1 = 12 instructions
    let code = [0xb9, 5, 0, 0, 0, 0xff, 0xc9, 0x75, 0xfc, 0xf4];
    let mut g = guest(&code)?;
    let mut io = Recorder::default();
    check(
        run(&mut g, &mut io, 1000)? == VcpuExit::Halted,
        "loop ends in HLT",
    )?;
    check(
        g.vcpu.instructions_retired() == 12,
        "block counting (TB icount / jump cache / halted)",
    )?;
    let mut g = guest(&code)?;
    check(
        run(&mut g, &mut io, 2)? == VcpuExit::BudgetExhausted,
        "budget stop",
    )?;
    let rip = g.vcpu.regs().map_err(|e| e.to_string())?.rip;
    check(
        g.vcpu.instructions_retired() == 2 && rip == CODE + 7,
        "budget inside a block (cflags_next_tb, exit flag)",
    )?;
    check(
        run(&mut g, &mut io, 1000)? == VcpuExit::Halted && g.vcpu.instructions_retired() == 12,
        "resume after budget",
    )
}

/// #PF error code, CR2, the previous-exception record and the search-data index.
fn probe_page_fault() -> Result<(), String> {
    // mov eax, 1; mov [0x400000], eax (unmapped: #PF, write, not present); hlt
    let mut g = guest(&[0xb8, 1, 0, 0, 0, 0x89, 0x04, 0x25, 0, 0, 0x40, 0, 0xf4])?;
    let mut io = Recorder::default();
    check(
        run(&mut g, &mut io, 1000)? == VcpuExit::Halted,
        "#PF reaches its handler",
    )?;
    let regs = g.vcpu.regs().map_err(|e| e.to_string())?;
    check(regs.rip == stub(14) + 1, "#PF vector")?;
    check(
        g.vcpu.instructions_retired() == 2,
        "fault mid-block counts (search data)",
    )?;
    check(
        g.ram.read_u64(regs.rsp) == 2 && g.ram.read_u64(regs.rsp + 8) == CODE + 5,
        "#PF frame: error code and faulting RIP",
    )?;
    let sregs = g.vcpu.sregs().map_err(|e| e.to_string())?;
    check(sregs.cr2 == 0x40_0000, "cr2")?;
    g.vcpu
        .with_cpu(|_, cpu| {
            check(cpu.env_u32(int::ENV_ERROR_CODE) == 2, "error_code")?;
            check(
                cpu.old_exception() == -1,
                "old_exception reset after delivery",
            )?;
            check(
                cpu.env_i32(int::ENV_EXCEPTION_IS_INT) == 0,
                "exception_is_int (fault)",
            )
        })
        .map_err(|e| e.to_string())?
}

/// A budget that ends one instruction into an exception handler, where the count-limited
/// block that leads there starts with the faulting instruction: the limited block retires
/// nothing, the #PF is delivered, and a second limited block at the handler's entry ends
/// the budget (issue 16; docs/notes-emu-exception-budget.md).
fn probe_budget_through_a_fault() -> Result<(), String> {
    const HANDLER: u64 = 0x9000;
    // mov eax, 1; mov [0x400000], eax (#PF); hlt. Handler: nop; nop; hlt.
    let mut g = guest(&[0xb8, 1, 0, 0, 0, 0x89, 0x04, 0x25, 0, 0, 0x40, 0, 0xf4])?;
    g.ram.write(HANDLER, &[0x90, 0x90, 0xf4]);
    g.ram.set_gate(14, HANDLER, 0, 0, false);
    let mut io = Recorder::default();
    let rip = |g: &ProbeGuest| g.vcpu.regs().map(|r| r.rip).map_err(|e| e.to_string());
    check(
        run(&mut g, &mut io, 1)? == VcpuExit::BudgetExhausted && rip(&g)? == CODE + 5,
        "budget of one before a faulting store",
    )?;
    check(
        run(&mut g, &mut io, 1)? == VcpuExit::BudgetExhausted
            && rip(&g)? == HANDLER + 1
            && g.vcpu.instructions_retired() == 2,
        "budget of one through a fault at a limited block's start into its handler",
    )?;
    check(
        run(&mut g, &mut io, 1000)? == VcpuExit::Halted && g.vcpu.instructions_retired() == 4,
        "resume in the handler after a budget through a fault",
    )
}

fn probe_int3() -> Result<(), String> {
    let mut g = guest(&[0xcc])?;
    let mut io = Recorder::default();
    check(
        run(&mut g, &mut io, 1000)? == VcpuExit::Halted,
        "INT3 reaches its handler",
    )?;
    let regs = g.vcpu.regs().map_err(|e| e.to_string())?;
    check(
        regs.rip == stub(3) + 1 && g.ram.read_u64(regs.rsp) == CODE + 1,
        "INT3 frame RIP after the INT3",
    )?;
    check(g.vcpu.instructions_retired() == 2, "INT3 retires")?;
    g.vcpu
        .with_cpu(|_, cpu| {
            check(
                cpu.env_i32(int::ENV_EXCEPTION_IS_INT) == 1,
                "exception_is_int (INT3)",
            )?;
            check(
                cpu.env_u64(int::ENV_EXCEPTION_NEXT_EIP) == CODE + 1,
                "exception_next_eip",
            )
        })
        .map_err(|e| e.to_string())?
}

/// `mem_io_pc` and the host-pc index: the MMIO store is instruction 2.
fn probe_mmio() -> Result<(), String> {
    // mov eax, 0x1234; mov ebx, 0xfee000b0; mov [rbx], eax; hlt
    let mut g = guest(&[
        0xb8, 0x34, 0x12, 0, 0, 0xbb, 0xb0, 0, 0xe0, 0xfe, 0x89, 0x03, 0xf4,
    ])?;
    let mut io = Recorder::default();
    check(
        run(&mut g, &mut io, 1000)? == VcpuExit::Halted,
        "MMIO probe halts",
    )?;
    let want = Seen::MmioWrite {
        insns: 2,
        addr: 0xfee0_00b0,
        data: vec![0x34, 0x12, 0, 0],
    };
    check(
        io.seen == vec![want],
        "MMIO write at instruction 2 (mem_io_pc)",
    )
}

/// Feature words: RDRAND must be #UD.
fn probe_features() -> Result<(), String> {
    let mut g = guest(&[0x0f, 0xc7, 0xf0])?;
    let mut io = Recorder::default();
    check(
        run(&mut g, &mut io, 1000)? == VcpuExit::Halted,
        "RDRAND probe halts",
    )?;
    let rip = g.vcpu.regs().map_err(|e| e.to_string())?.rip;
    check(rip == stub(6) + 1, "RDRAND raises #UD (feature words)")
}

/// STI shadow in hflags, IF in eflags.
fn probe_interrupt_shadow() -> Result<(), String> {
    let mut g = guest(&[0xfb, 0x90, 0xf4])?;
    let mut io = Recorder::default();
    check(!g.vcpu.interruptible(), "IF clear at start")?;
    check(run(&mut g, &mut io, 1)? == VcpuExit::BudgetExhausted, "STI")?;
    check(!g.vcpu.interruptible(), "STI shadow (hflags)")?;
    check(run(&mut g, &mut io, 1)? == VcpuExit::BudgetExhausted, "NOP")?;
    check(g.vcpu.interruptible(), "IF after the shadow (eflags)")
}

/// old_exception == 8 after a fault while delivering #DF.
fn probe_triple_fault() -> Result<(), String> {
    let mut g = guest(&[0x0f, 0x0b])?; // ud2
    let mut sregs = g.vcpu.sregs().map_err(|e| e.to_string())?;
    sregs.idt.limit = 0;
    g.vcpu.set_sregs(&sregs).map_err(|e| e.to_string())?;
    let mut io = Recorder::default();
    match run(&mut g, &mut io, 1000)? {
        VcpuExit::TripleFault { .. } => Ok(()),
        other => Err(format!("triple fault (old_exception): got {other:?}")),
    }
}
