//! Guest RAM: one memfd-backed region, so a snapshot can later write it out and a
//! restore can map a file copy-on-write without changing how the rest of the VMM
//! sees memory.

use std::fs::File;
use std::os::fd::FromRawFd;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use crate::layout::{MAX_RAM, MIN_RAM};

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error(
        "guest memory of {mib} MiB is too small: detvm needs at least {} MiB (raise --memory)",
        MIN_RAM >> 20
    )]
    TooSmall { mib: u64 },
    #[error("guest memory of {mib} MiB is too large: at most {} MiB is supported", MAX_RAM >> 20)]
    TooLarge { mib: u64 },
    #[error("could not create guest memory ({what})")]
    Host {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("could not map guest memory: {0}")]
    Map(String),
}

/// Guest RAM of `size` bytes at guest physical address 0.
pub struct GuestRam {
    memory: GuestMemoryMmap,
    size: u64,
}

impl GuestRam {
    pub fn new(size: u64) -> Result<Self, MemoryError> {
        if size < MIN_RAM {
            return Err(MemoryError::TooSmall { mib: size >> 20 });
        }
        if size > MAX_RAM {
            return Err(MemoryError::TooLarge { mib: size >> 20 });
        }
        let file = memfd("detvm-guest-ram")?;
        file.set_len(size).map_err(|source| MemoryError::Host {
            what: "ftruncate",
            source,
        })?;
        let region = GuestRegionMmap::from_range(
            GuestAddress(0),
            size as usize,
            Some(FileOffset::new(file, 0)),
        )
        .map_err(|e| MemoryError::Map(e.to_string()))?;
        let memory = GuestMemoryMmap::from_regions(vec![region])
            .map_err(|e| MemoryError::Map(e.to_string()))?;
        Ok(GuestRam { memory, size })
    }

    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The host mapping of all of guest RAM, for backends that map it themselves
    /// (Unicorn's `mem_map_ptr`, KVM memory slots). Valid as long as `self` lives.
    pub fn host_range(&self) -> (*mut u8, usize) {
        use vm_memory::GuestMemoryBackend;
        let ptr = self
            .memory
            .get_host_address(GuestAddress(0))
            .expect("address 0 is always inside guest RAM");
        (ptr, self.size as usize)
    }
}

fn memfd(name: &str) -> Result<File, MemoryError> {
    let cname = std::ffi::CString::new(name).expect("static name has no NUL");
    // SAFETY: memfd_create with a valid C string; the returned fd is checked below.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemoryError::Host {
            what: "memfd_create",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn rejects_sizes_outside_the_layout() {
        assert!(matches!(
            GuestRam::new(1 << 20),
            Err(MemoryError::TooSmall { .. })
        ));
        assert!(matches!(
            GuestRam::new(4 << 30),
            Err(MemoryError::TooLarge { .. })
        ));
    }

    #[test]
    fn memory_is_shared_with_the_host_mapping() {
        let ram = GuestRam::new(64 << 20).unwrap();
        ram.memory()
            .write_obj(0xdead_beef_u32, GuestAddress(0x1000))
            .unwrap();
        let (ptr, len) = ram.host_range();
        assert_eq!(len, 64 << 20);
        // SAFETY: 0x1000 + 4 is inside the mapping that `ram` keeps alive.
        let got = unsafe { std::ptr::read_unaligned(ptr.add(0x1000) as *const u32) };
        assert_eq!(got, 0xdead_beef);
    }
}
