//! The guest physical address map of every detvm VM (x86-64 PC-like).

/// The real-mode IVT and BIOS data area stay untouched (Linux reads the EBDA pointer there).
pub const GDT_ADDR: u64 = 0x500;
/// Boot-time identity page tables: PML4, PDPT and four page directories (4 GiB in 2 MiB pages).
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xA000;
pub const PD_ADDR: u64 = 0xB000;
/// The "zero page": Linux's `boot_params`, pointed to by RSI at the 64-bit entry.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// The kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
pub const CMDLINE_MAX: usize = 4096;
/// setup_data blobs (the boot RNG seed).
pub const SETUP_DATA_ADDR: u64 = 0x21000;
/// Low RAM ends where the EBDA / VGA / BIOS hole begins.
pub const LOW_RAM_END: u64 = 0x9_FC00;
/// ACPI tables live in the BIOS area, reserved in the e820 map.
pub const ACPI_ADDR: u64 = 0xE_0000;
pub const ACPI_MAX: u64 = 0x2_0000;
/// High RAM starts at 1 MiB.
pub const HIGH_RAM_START: u64 = 0x10_0000;
/// Guest RAM above 1 MiB may not reach the 32-bit MMIO hole.
pub const MMIO_HOLE_START: u64 = 0xC000_0000;
/// Where virtio-mmio devices go (the virtio issue), below the APIC/HPET pages.
pub const VIRTIO_MMIO_START: u64 = 0xD000_0000;
/// The kernel may not place itself or the initrd above this (setup_header.initrd_addr_max default).
pub const INITRD_ADDR_MAX: u64 = 0x7FFF_FFFF;

/// Smallest RAM size that boots our kernel with a small initramfs.
pub const MIN_RAM: u64 = 32 << 20;
/// Largest RAM size this layout supports (everything below the MMIO hole).
pub const MAX_RAM: u64 = MMIO_HOLE_START;
