//! Tiny 64-bit guests for the start-up self-check and the tests: page-aligned RAM with
//! identity-mapped page tables, a Linux-like GDT, an IDT, a TSS, and a recording `GuestIo`.
//!
//! Physical layout (identity mapped, 2 MiB pages, user accessible):
//! 0x1000 PML4, 0x2000 PDPT, 0x3000 PD for 0..1 GiB, 0x7000 PD for 3..4 GiB (the xAPIC
//! page), 0x4000 GDT, 0x5000 IDT, 0x6000 TSS, 0x8000.. code, stacks below 0x80000.
//! Only 0..2 MiB is mapped: every other address faults.

use std::alloc::{alloc_zeroed, dealloc, Layout};

use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs};

use super::{EmuMachine, EmuVcpu};
use crate::vcpu::{GuestIo, IoFlow, Vcpu, VcpuError};

pub const RAM_SIZE: usize = 2 << 20;
pub const CODE: u64 = 0x8000;
pub const KERNEL_STACK: u64 = 0x70000;
pub const IST1_STACK: u64 = 0x60000;
pub const USER_STACK: u64 = 0x50000;
pub const TSS: u64 = 0x6000;
pub const IDT: u64 = 0x5000;
pub const GDT: u64 = 0x4000;
pub const APIC_BASE: u64 = 0xfee0_0000;
pub const KERNEL_CS: u16 = 0x10;
pub const KERNEL_DS: u16 = 0x18;
pub const USER_DS: u16 = 0x2b;
pub const USER_CS: u16 = 0x33;
pub const TSS_SEL: u16 = 0x40;

/// Page-aligned guest RAM at guest physical 0.
pub struct GuestRam {
    ptr: *mut u8,
    len: usize,
}

impl GuestRam {
    pub fn new(len: usize) -> GuestRam {
        let layout = Layout::from_size_align(len, 4096).expect("valid layout");
        // SAFETY: non-zero size, valid layout.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        GuestRam { ptr, len }
    }

    pub fn region(&self) -> (u64, *mut u8, usize) {
        (0, self.ptr, self.len)
    }

    /// Copies `bytes` to guest physical `addr`. Only while no vCPU runs.
    pub fn write(&mut self, addr: u64, bytes: &[u8]) {
        let a = addr as usize;
        assert!(a + bytes.len() <= self.len);
        // SAFETY: in bounds (checked), and no vCPU runs during `&mut self`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(a), bytes.len()) };
    }

    pub fn write_u64(&mut self, addr: u64, v: u64) {
        self.write(addr, &v.to_le_bytes());
    }

    pub fn read_u64(&self, addr: u64) -> u64 {
        let a = addr as usize;
        assert!(a + 8 <= self.len);
        let mut b = [0u8; 8];
        // SAFETY: in bounds; the vCPU is not running while the test reads.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(a), b.as_mut_ptr(), 8) };
        u64::from_le_bytes(b)
    }

    /// An interrupt or trap gate for `vector` to `handler` in the kernel code segment.
    pub fn set_gate(&mut self, vector: u8, handler: u64, ist: u8, dpl: u8, trap: bool) {
        let kind: u64 = if trap { 0xf } else { 0xe };
        let low = (handler & 0xffff)
            | ((KERNEL_CS as u64) << 16)
            | ((ist as u64 & 7) << 32)
            | ((kind | ((dpl as u64 & 3) << 5) | 0x80) << 40)
            | (((handler >> 16) & 0xffff) << 48);
        let a = IDT + vector as u64 * 16;
        self.write_u64(a, low);
        self.write_u64(a + 8, handler >> 32);
    }

    /// A 2 MiB identity page at `addr` (in the first GiB or the APIC's 3..4 GiB).
    pub fn map_2m(&mut self, addr: u64) {
        let pd = if addr >= 3 << 30 { 0x7000 } else { 0x3000 };
        let index = (addr >> 21) & 511;
        self.write_u64(
            pd + index * 8,
            (addr & !0x1f_ffff) | 0x87 | if pd == 0x7000 { 0x10 } else { 0 },
        );
    }

    /// Page tables, GDT, TSS and an IDT whose every vector points at `default_handler`.
    pub fn setup_long_mode(&mut self, default_handler: u64) {
        self.write_u64(0x1000, 0x2000 | 0x7);
        self.write_u64(0x2000, 0x3000 | 0x7);
        self.write_u64(0x2000 + 3 * 8, 0x7000 | 0x7);
        self.map_2m(0);
        self.map_2m(APIC_BASE);
        let gdt: [u64; 8] = [
            0,
            0,
            0x00af_9b00_0000_ffff, // 0x10 kernel code64
            0x00cf_9300_0000_ffff, // 0x18 kernel data
            0x00cf_fb00_0000_ffff, // 0x23 user code32
            0x00cf_f300_0000_ffff, // 0x2b user data
            0x00af_fb00_0000_ffff, // 0x33 user code64
            0,
        ];
        for (i, d) in gdt.iter().enumerate() {
            self.write_u64(GDT + i as u64 * 8, *d);
        }
        // 0x40: 64-bit TSS descriptor (two slots), limit 0x67, type 9 (available).
        let low = 0x67 | ((TSS & 0xff_ffff) << 16) | (0x89u64 << 40) | (((TSS >> 24) & 0xff) << 56);
        self.write_u64(GDT + 0x40, low);
        self.write_u64(GDT + 0x48, TSS >> 32);
        self.write_u64(TSS + 4, KERNEL_STACK); // RSP0
        self.write_u64(TSS + 0x24, IST1_STACK); // IST1
        self.write(TSS + 0x66, &104u16.to_le_bytes()); // no I/O bitmap
        for v in 0..=255u8 {
            self.set_gate(v, default_handler, 0, 0, false);
        }
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.len, 4096).expect("valid layout");
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, layout) };
    }
}

fn seg(selector: u16, code: bool, dpl: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 11 } else { 3 },
        present: 1,
        dpl,
        db: (!code) as u8,
        s: 1,
        l: code as u8,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Long mode, ring 0, at `rip` with the probe layout.
pub fn enter_long_mode(vcpu: &mut dyn Vcpu, rip: u64) -> Result<(), VcpuError> {
    let data = seg(KERNEL_DS, false, 0);
    let tr = kvm_segment {
        base: TSS,
        limit: 0x67,
        selector: TSS_SEL,
        type_: 11,
        present: 1,
        ..Default::default()
    };
    let ldt = kvm_segment {
        type_: 2,
        unusable: 1,
        ..Default::default()
    };
    let sregs = kvm_sregs {
        cs: seg(KERNEL_CS, true, 0),
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr,
        ldt,
        gdt: kvm_dtable {
            base: GDT,
            limit: 0x4f,
            ..Default::default()
        },
        idt: kvm_dtable {
            base: IDT,
            limit: 0xfff,
            ..Default::default()
        },
        cr0: 0x8005_0033,
        cr3: 0x1000,
        cr4: 0x620,
        efer: 0xd01,
        ..Default::default()
    };
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&kvm_regs {
        rip,
        rsp: KERNEL_STACK,
        rflags: 2,
        ..Default::default()
    })
}

/// One device access seen by [`Recorder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    PioRead {
        insns: u64,
        port: u16,
        len: usize,
    },
    PioWrite {
        insns: u64,
        port: u16,
        data: Vec<u8>,
    },
    MmioRead {
        insns: u64,
        addr: u64,
        len: usize,
    },
    MmioWrite {
        insns: u64,
        addr: u64,
        data: Vec<u8>,
    },
    Rdtsc {
        insns: u64,
    },
}

/// A mock `GuestIo`: records every access; reads return `read_value`; writes to
/// `stop_port` / `stop_addr` return `IoFlow::Stop`.
#[derive(Default)]
pub struct Recorder {
    pub seen: Vec<Seen>,
    pub read_value: u64,
    pub stop_port: Option<u16>,
    pub stop_addr: Option<u64>,
}

impl GuestIo for Recorder {
    fn pio_read(&mut self, insns: u64, port: u16, data: &mut [u8]) {
        self.seen.push(Seen::PioRead {
            insns,
            port,
            len: data.len(),
        });
        let v = self.read_value.to_le_bytes();
        data.copy_from_slice(&v[..data.len()]);
    }
    fn pio_write(&mut self, insns: u64, port: u16, data: &[u8]) -> IoFlow {
        self.seen.push(Seen::PioWrite {
            insns,
            port,
            data: data.to_vec(),
        });
        if self.stop_port == Some(port) {
            IoFlow::Stop
        } else {
            IoFlow::Continue
        }
    }
    fn mmio_read(&mut self, insns: u64, addr: u64, data: &mut [u8]) {
        self.seen.push(Seen::MmioRead {
            insns,
            addr,
            len: data.len(),
        });
        let v = self.read_value.to_le_bytes();
        data.copy_from_slice(&v[..data.len()]);
    }
    fn mmio_write(&mut self, insns: u64, addr: u64, data: &[u8]) -> IoFlow {
        self.seen.push(Seen::MmioWrite {
            insns,
            addr,
            data: data.to_vec(),
        });
        if self.stop_addr == Some(addr) {
            IoFlow::Stop
        } else {
            IoFlow::Continue
        }
    }
    fn rdtsc(&mut self, insns: u64) -> u64 {
        self.seen.push(Seen::Rdtsc { insns });
        1_000_000 + insns
    }
}

/// A one-vCPU guest: RAM with the long-mode layout, `code` at [`CODE`], every vector's
/// handler a HLT at `0x9000 + 0x10 * vector` unless the test sets gates itself.
pub struct ProbeGuest {
    // Field order is drop order: the engine goes before the RAM it maps.
    pub vcpu: EmuVcpu,
    pub machine: EmuMachine,
    pub ram: GuestRam,
}

/// Address of the default handler stub (a HLT) for `vector`.
pub fn stub(vector: u8) -> u64 {
    0x10000 + 0x10 * vector as u64
}

impl ProbeGuest {
    /// Builds after the start-up self-check.
    pub fn new(code: &[u8]) -> Result<ProbeGuest, VcpuError> {
        super::self_check()?;
        Self::new_unchecked(code)
    }

    /// Builds without the self-check (the self-check itself uses this).
    pub fn new_unchecked(code: &[u8]) -> Result<ProbeGuest, VcpuError> {
        Self::with_code_buffer(code, None)
    }

    /// [`Self::new_unchecked`] with QEMU's translated-code buffer limited to `bytes`.
    pub fn with_code_buffer(
        code: &[u8],
        code_buffer_bytes: Option<u32>,
    ) -> Result<ProbeGuest, VcpuError> {
        let mut ram = GuestRam::new(RAM_SIZE);
        ram.setup_long_mode(0);
        for v in 0..=255u8 {
            ram.set_gate(v, stub(v), 0, 0, false);
            ram.write(stub(v), &[0xf4]); // hlt
        }
        ram.write(CODE, code);
        // SAFETY: `ram` is page aligned, lives in the returned struct next to the vCPU and
        // the machine (which drop first), and is only touched by tests
        // between runs.
        let machine = unsafe {
            EmuMachine::with_code_buffer(
                &[ram.region()],
                &[(APIC_BASE, 0x1000)],
                1,
                code_buffer_bytes,
            )?
        };
        let mut vcpu = machine.vcpu(0)?;
        enter_long_mode(&mut vcpu, CODE)?;
        Ok(ProbeGuest { vcpu, machine, ram })
    }
}
