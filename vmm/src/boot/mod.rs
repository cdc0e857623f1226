//! Booting Linux directly at its 64-bit entry: load the kernel (uncompressed ELF
//! `vmlinux` or `bzImage`), the initramfs and the command line into guest memory,
//! fill the zero page (e820 map, ACPI RSDP, boot RNG seed) and describe the
//! long-mode CPU state the entry expects.

pub mod acpi;
mod cpu_state;
mod error;

use std::fs::File;
use std::path::Path;

use linux_loader::loader::{bootparam, BzImage, Elf, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

pub use cpu_state::{
    long_mode_entry_state, real_mode_ap_state, write_gdt_and_page_tables, EntryState,
};
pub use error::BootError;

use crate::layout::*;

/// Which kernel format was loaded and where execution starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// Uncompressed ELF: no decompression (hundreds of millions of instructions saved).
    Elf,
    BzImage,
}

#[derive(Debug, Clone)]
pub struct LoadedKernel {
    pub format: KernelFormat,
    pub entry: u64,
    setup_header: Option<bootparam::setup_header>,
}

pub struct BootSpec<'a> {
    pub kernel: &'a Path,
    pub initrd: Option<&'a Path>,
    pub cmdline: &'a str,
    pub vcpus: u8,
    /// Bytes for the boot RNG seed (setup_data SETUP_RNG_SEED), from the VM's seeded stream.
    pub rng_seed: [u8; 32],
}

/// Loads everything into `mem` and returns the state vCPU 0 starts in.
pub fn load(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    spec: &BootSpec,
) -> Result<EntryState, BootError> {
    let kernel = load_kernel(mem, spec.kernel)?;
    let initrd = match spec.initrd {
        Some(path) => Some(load_initrd(mem, ram_size, path)?),
        None => None,
    };
    let cmdline_len = write_cmdline(mem, spec.cmdline)?;
    let rsdp = acpi::write_tables(mem, spec.vcpus)?;
    write_rng_seed(mem, &spec.rng_seed)?;
    write_zero_page(mem, ram_size, &kernel, initrd, cmdline_len, rsdp)?;
    cpu_state::write_gdt_and_page_tables(mem)?;
    Ok(long_mode_entry_state(kernel.entry, ZERO_PAGE_ADDR))
}

pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, BootError> {
    let open = || {
        File::open(path).map_err(|source| BootError::KernelFile {
            path: path.into(),
            source,
        })
    };
    let elf = match Elf::load(mem, None, &mut open()?, Some(GuestAddress(HIGH_RAM_START))) {
        Ok(result) => {
            return Ok(LoadedKernel {
                format: KernelFormat::Elf,
                entry: result.kernel_load.raw_value(),
                setup_header: None,
            })
        }
        Err(e) => e.to_string(),
    };
    match BzImage::load(mem, None, &mut open()?, Some(GuestAddress(HIGH_RAM_START))) {
        // The 64-bit entry point of a bzImage is 0x200 past its load address.
        Ok(result) => Ok(LoadedKernel {
            format: KernelFormat::BzImage,
            entry: result.kernel_load.raw_value() + 0x200,
            setup_header: result.setup_header,
        }),
        Err(e) => Err(BootError::NotAKernel {
            path: path.into(),
            elf,
            bzimage: e.to_string(),
        }),
    }
}

/// Places the initramfs page-aligned at the top of RAM the kernel may use.
fn load_initrd(mem: &GuestMemoryMmap, ram_size: u64, path: &Path) -> Result<(u64, u64), BootError> {
    let bytes = std::fs::read(path).map_err(|source| BootError::InitrdFile {
        path: path.into(),
        source,
    })?;
    let size = bytes.len() as u64;
    let top = ram_size.min(INITRD_ADDR_MAX + 1);
    let addr = top
        .checked_sub(size)
        .map(|a| a & !0xFFF)
        .filter(|a| *a >= HIGH_RAM_START + (16 << 20));
    let Some(addr) = addr else {
        return Err(BootError::InitrdTooLarge {
            path: path.into(),
            mib: size >> 20,
        });
    };
    mem.write_slice(&bytes, GuestAddress(addr))
        .map_err(|e| BootError::Layout(format!("writing the initramfs: {e}")))?;
    Ok((addr, size))
}

fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<usize, BootError> {
    let mut line = linux_loader::cmdline::Cmdline::new(CMDLINE_MAX)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    line.insert_str(cmdline)
        .map_err(|e| BootError::Cmdline(format!("{e} in {cmdline:?}")))?;
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &line)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    Ok(cmdline.len())
}

const SETUP_RNG_SEED: u32 = 9;

fn write_rng_seed(mem: &GuestMemoryMmap, seed: &[u8; 32]) -> Result<(), BootError> {
    // struct setup_data { u64 next; u32 type; u32 len; u8 data[]; }
    let mut blob = Vec::with_capacity(16 + seed.len());
    blob.extend_from_slice(&0u64.to_le_bytes());
    blob.extend_from_slice(&SETUP_RNG_SEED.to_le_bytes());
    blob.extend_from_slice(&(seed.len() as u32).to_le_bytes());
    blob.extend_from_slice(seed);
    mem.write_slice(&blob, GuestAddress(SETUP_DATA_ADDR))
        .map_err(|e| BootError::Layout(format!("writing setup_data: {e}")))
}

fn write_zero_page(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    kernel: &LoadedKernel,
    initrd: Option<(u64, u64)>,
    cmdline_len: usize,
    rsdp: u64,
) -> Result<(), BootError> {
    let mut params = bootparam::boot_params::default();
    if let Some(header) = kernel.setup_header {
        params.hdr = header;
    } else {
        params.hdr.boot_flag = 0xAA55;
        params.hdr.header = 0x5372_6448; // "HdrS"
        params.hdr.kernel_alignment = 0x0100_0000;
    }
    params.hdr.type_of_loader = 0xFF; // "undefined" boot loader
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    params.hdr.setup_data = SETUP_DATA_ADDR;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    params.acpi_rsdp_addr = rsdp;

    let e820 = [
        (0, LOW_RAM_END, 1),
        (LOW_RAM_END, HIGH_RAM_START - LOW_RAM_END, 2),
        (HIGH_RAM_START, ram_size - HIGH_RAM_START, 1),
    ];
    for (i, (addr, size, kind)) in e820.iter().enumerate() {
        params.e820_table[i] = bootparam::boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *kind,
        };
    }
    params.e820_entries = e820.len() as u8;

    mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(|e| BootError::Layout(format!("writing the zero page: {e}")))
}
