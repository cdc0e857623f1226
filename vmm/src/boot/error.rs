//! Why a guest cannot boot; below the loaders (kernel, ACPI tables, CPU state) that
//! raise it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot read the kernel {path}")]
    KernelFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a bootable x86-64 Linux kernel (tried an ELF vmlinux: {elf}; a bzImage: {bzimage})"
    )]
    NotAKernel {
        path: PathBuf,
        elf: String,
        bzimage: String,
    },
    #[error("cannot read the initramfs {path}")]
    InitrdFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the initramfs {path} ({mib} MiB) does not fit in guest memory: raise --memory")]
    InitrdTooLarge { path: PathBuf, mib: u64 },
    #[error("the kernel command line is invalid: {0}")]
    Cmdline(String),
    #[error("guest memory layout: {0}")]
    Layout(String),
}
