//! The CPU state Linux's 64-bit boot entry expects: long mode, paging on with an
//! identity map, flat segments, RSI pointing at the zero page, interrupts off.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::error::BootError;
use crate::layout::{GDT_ADDR, PDPT_ADDR, PD_ADDR, PML4_ADDR};

/// GDT: null, 64-bit code (selector 0x08), data (0x10). Access and flag bits as in
/// Linux's own early GDT.
const GDT: [u64; 3] = [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];
pub const CODE_SELECTOR: u16 = 0x08;
pub const DATA_SELECTOR: u16 = 0x10;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

#[derive(Debug, Clone, Copy)]
pub struct EntryState {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
}

pub fn write_gdt_and_page_tables(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    let fail =
        |e: vm_memory::GuestMemoryError| BootError::Layout(format!("writing boot tables: {e}"));
    for (i, entry) in GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_ADDR + 8 * i as u64))
            .map_err(fail)?;
    }
    // Identity map of the first 4 GiB with 2 MiB pages: PML4[0] -> PDPT, PDPT[0..4] -> PDs.
    mem.write_obj(PDPT_ADDR | 0x3, GuestAddress(PML4_ADDR))
        .map_err(fail)?;
    for gib in 0..4u64 {
        let pd = PD_ADDR + gib * 0x1000;
        mem.write_obj(pd | 0x3, GuestAddress(PDPT_ADDR + 8 * gib))
            .map_err(fail)?;
        for i in 0..512u64 {
            let phys = (gib << 30) | (i << 21);
            mem.write_obj(phys | 0x83, GuestAddress(pd + 8 * i))
                .map_err(fail)?;
        }
    }
    Ok(())
}

/// A present, accessed code (execute/read) or data (read/write) segment.
fn segment(selector: u16, base: u64, limit: u32, code: bool) -> kvm_segment {
    kvm_segment {
        base,
        limit,
        selector,
        type_: if code { 0xB } else { 0x3 },
        present: 1,
        s: 1,
        ..Default::default()
    }
}

/// 64-bit code, or flat 4 GiB data, at ring 0.
fn long_mode_segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        db: u8::from(!code),
        l: u8::from(code),
        g: 1,
        ..segment(selector, 0, 0xFFFF_FFFF, code)
    }
}

/// `sregs` with `code` in CS and `data` in every data segment register.
fn with_segments(code: kvm_segment, data: kvm_segment, sregs: kvm_sregs) -> kvm_sregs {
    kvm_sregs {
        cs: code,
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        ..sregs
    }
}

pub fn long_mode_entry_state(entry: u64, zero_page: u64) -> EntryState {
    let regs = kvm_regs {
        rip: entry,
        rsi: zero_page,
        rflags: 0x2,
        ..Default::default()
    };
    let sregs = with_segments(
        long_mode_segment(CODE_SELECTOR, true),
        long_mode_segment(DATA_SELECTOR, false),
        kvm_sregs {
            gdt: kvm_bindings::kvm_dtable {
                base: GDT_ADDR,
                limit: (GDT.len() * 8 - 1) as u16,
                ..Default::default()
            },
            // A busy 64-bit TSS descriptor shape, as VMX requires a usable TR.
            tr: kvm_segment {
                limit: 0x67,
                type_: 0xB,
                present: 1,
                ..Default::default()
            },
            ldt: kvm_segment {
                type_: 0x2,
                present: 1,
                unusable: 1,
                ..Default::default()
            },
            cr0: CR0_PE | CR0_ET | CR0_PG,
            cr3: PML4_ADDR,
            cr4: CR4_PAE,
            efer: EFER_LME | EFER_LMA,
            ..Default::default()
        },
    );
    EntryState { regs, sregs }
}

/// The state an AP starts in after a startup IPI: real mode at `vector` * 4 KiB
/// (CS = vector << 8, IP = 0), as after INIT.
pub fn real_mode_ap_state(vector: u8) -> EntryState {
    let selector = u16::from(vector) << 8;
    let table = kvm_bindings::kvm_dtable {
        limit: 0xFFFF,
        ..Default::default()
    };
    let sregs = with_segments(
        segment(selector, u64::from(selector) << 4, 0xFFFF, true),
        segment(0, 0, 0xFFFF, false),
        kvm_sregs {
            gdt: table,
            idt: table,
            tr: kvm_segment {
                limit: 0xFFFF,
                type_: 0xB,
                present: 1,
                ..Default::default()
            },
            ldt: kvm_segment {
                limit: 0xFFFF,
                type_: 0x2,
                present: 1,
                ..Default::default()
            },
            cr0: 0x6000_0010, // CD, NW, ET: the reset value
            ..Default::default()
        },
    );
    let regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    EntryState { regs, sregs }
}
