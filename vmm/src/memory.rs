//! Guest RAM: one memfd-backed region, so a snapshot can freeze it and a restore can
//! map it copy-on-write without changing how the rest of the VMM sees memory.
//!
//! A fresh VM maps its memfd shared. The first snapshot freezes that file (sealed
//! against writes) and maps the same host range `MAP_PRIVATE | MAP_FIXED` over it, so
//! the backends' pointers stay valid and every later write (by the guest or by the
//! VMM's own DMA) lands in a private copy of the page. The pages written since are then
//! exactly the anonymous pages of the mapping, which `/proc/self/pagemap` reports.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;

use vm_memory::mmap::MmapRegionBuilder;
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
    /// The memfd the mapping was made from.
    file: Arc<File>,
    /// Writes stay in the mapping (copy-on-write): `file` is a frozen image.
    private: bool,
}

/// Size of a guest page as tracked by snapshots.
pub const PAGE: u64 = 4096;

/// (page number, its 4 KiB), sorted by page.
pub type Pages = Vec<(u64, Box<[u8]>)>;

impl GuestRam {
    pub fn new(size: u64) -> Result<Self, MemoryError> {
        Self::map(Arc::new(sized_memfd(size)?), size, false)
    }

    /// RAM that starts as the contents of `file` (a frozen image of `size` bytes) and
    /// keeps its own writes private: the memory of a restored VM.
    pub fn copy_on_write(file: Arc<File>, size: u64) -> Result<Self, MemoryError> {
        Self::map(file, size, true)
    }

    /// RAM of `size` bytes filled by `fill` before any vCPU sees it (a restore from a
    /// snapshot file): a fresh shared memfd, like a booted VM's.
    pub fn filled(
        size: u64,
        fill: impl FnOnce(&GuestMemoryMmap) -> Result<(), MemoryError>,
    ) -> Result<Self, MemoryError> {
        let ram = Self::new(size)?;
        fill(&ram.memory)?;
        Ok(ram)
    }

    fn map(file: Arc<File>, size: u64, private: bool) -> Result<Self, MemoryError> {
        if size < MIN_RAM {
            return Err(MemoryError::TooSmall { mib: size >> 20 });
        }
        if size > MAX_RAM {
            return Err(MemoryError::TooLarge { mib: size >> 20 });
        }
        let sharing = if private {
            libc::MAP_PRIVATE
        } else {
            libc::MAP_SHARED
        };
        let region = MmapRegionBuilder::new(size as usize)
            .with_file_offset(FileOffset::from_arc(file.clone(), 0))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(sharing | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| MemoryError::Map(e.to_string()))?;
        let region = GuestRegionMmap::new(region, GuestAddress(0))
            .ok_or_else(|| MemoryError::Map("guest RAM region overflows".into()))?;
        let memory = GuestMemoryMmap::from_regions(vec![region])
            .map_err(|e| MemoryError::Map(e.to_string()))?;
        Ok(GuestRam {
            memory,
            size,
            file,
            private,
        })
    }

    /// Freezes the current contents for a snapshot and returns them as (base image,
    /// pages that differ from it, sorted). The VM goes on with copy-on-write memory;
    /// call only while no vCPU runs.
    ///
    /// The first call seals the memfd and remaps this range privately over it (no copy);
    /// later calls keep that base and copy the pages written since it was frozen.
    pub fn freeze(&mut self) -> Result<(Arc<File>, Pages), MemoryError> {
        if !self.private {
            let (ptr, len) = self.host_range();
            // SAFETY: replaces our own mapping of `len` bytes at `ptr` with a private
            // mapping of the same file at the same address; the backends keep using the
            // same host addresses and see the same contents.
            let got = unsafe {
                libc::mmap(
                    ptr.cast(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
                    self.file.as_raw_fd(),
                    0,
                )
            };
            if got != ptr.cast() {
                return Err(host_err("mmap (copy-on-write remap)"));
            }
            self.private = true;
            seal(&self.file)?;
            return Ok((self.file.clone(), Vec::new()));
        }
        let (ptr, _) = self.host_range();
        let pages = self
            .written_pages()?
            .into_iter()
            .map(|page| {
                // SAFETY: `page` is inside the mapping and no vCPU runs (caller contract).
                let bytes = unsafe {
                    std::slice::from_raw_parts(ptr.add((page * PAGE) as usize), PAGE as usize)
                };
                (page, Box::from(bytes))
            })
            .collect();
        Ok((self.file.clone(), pages))
    }

    /// Pages written since the memory was frozen (empty for shared memory, which is never
    /// frozen): the anonymous (copied) or swapped pages of the private mapping.
    pub fn written_pages(&self) -> Result<Vec<u64>, MemoryError> {
        if !self.private {
            return Ok(Vec::new());
        }
        let (ptr, len) = self.host_range();
        written_pages(ptr as usize, len)
    }

    /// Page `page`'s bytes as the guest sees them now.
    pub fn page(&self, page: u64) -> &[u8] {
        let (ptr, _) = self.host_range();
        assert!(page < self.size / PAGE, "page {page} outside guest RAM");
        // SAFETY: inside the mapping `self` keeps alive; callers read only while no vCPU
        // runs (snapshots are taken between steps).
        unsafe { std::slice::from_raw_parts(ptr.add((page * PAGE) as usize), PAGE as usize) }
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

fn host_err(what: &'static str) -> MemoryError {
    MemoryError::Host {
        what,
        source: std::io::Error::last_os_error(),
    }
}

/// A memfd of `size` bytes (holes: zeroes until written), sealable once frozen.
pub fn sized_memfd(size: u64) -> Result<File, MemoryError> {
    let file = memfd("detvm-guest-ram")?;
    file.set_len(size).map_err(|source| MemoryError::Host {
        what: "ftruncate",
        source,
    })?;
    Ok(file)
}

/// A sealed image of `size` bytes holding `pages` (page number, 4 KiB) and zeroes
/// elsewhere: the base of RAM restored from a snapshot file.
pub fn frozen_image<'a>(
    size: u64,
    pages: impl Iterator<Item = (u64, &'a [u8])>,
) -> Result<File, MemoryError> {
    use std::os::unix::fs::FileExt;
    let file = sized_memfd(size)?;
    for (page, bytes) in pages {
        file.write_all_at(bytes, page * PAGE)
            .map_err(|source| MemoryError::Host {
                what: "filling guest memory from a snapshot",
                source,
            })?;
    }
    seal(&file)?;
    Ok(file)
}

/// Makes a frozen image immutable: no writes, no size change, no more seals.
fn seal(file: &File) -> Result<(), MemoryError> {
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(host_err("sealing the frozen guest memory"));
    }
    Ok(())
}

/// Pages of the private mapping at `addr` (`len` bytes) that hold a copy of their own:
/// `/proc/self/pagemap` marks them present and not file-backed, or swapped.
fn written_pages(addr: usize, len: usize) -> Result<Vec<u64>, MemoryError> {
    use std::os::unix::fs::FileExt;
    const PRESENT: u64 = 1 << 63;
    const SWAPPED: u64 = 1 << 62;
    const FILE_OR_SHARED: u64 = 1 << 61;
    let pagemap = File::open("/proc/self/pagemap").map_err(|source| MemoryError::Host {
        what: "opening /proc/self/pagemap",
        source,
    })?;
    let pages = len / PAGE as usize;
    let mut raw = vec![0u8; pages * 8];
    pagemap
        .read_exact_at(&mut raw, (addr / PAGE as usize * 8) as u64)
        .map_err(|source| MemoryError::Host {
            what: "reading /proc/self/pagemap",
            source,
        })?;
    Ok(raw
        .chunks_exact(8)
        .enumerate()
        .filter(|(_, e)| {
            let e = u64::from_le_bytes((*e).try_into().expect("8 bytes"));
            (e & PRESENT != 0 && e & FILE_OR_SHARED == 0) || e & SWAPPED != 0
        })
        .map(|(i, _)| i as u64)
        .collect())
}

fn memfd(name: &str) -> Result<File, MemoryError> {
    let cname = std::ffi::CString::new(name).expect("static name has no NUL");
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create with a valid C string; the returned fd is checked below.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
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

    #[test]
    fn freezing_keeps_contents_and_tracks_later_writes() {
        let mut ram = GuestRam::new(64 << 20).unwrap();
        ram.memory().write_obj(1u64, GuestAddress(0x3000)).unwrap();
        let (ptr_before, _) = ram.host_range();
        let (base, pages) = ram.freeze().unwrap();
        assert!(pages.is_empty());
        assert_eq!(ram.host_range().0, ptr_before, "same host address");
        assert_eq!(
            ram.memory().read_obj::<u64>(GuestAddress(0x3000)).unwrap(),
            1
        );
        assert!(ram.written_pages().unwrap().is_empty());
        // A read is not a write; a write copies the page.
        let _ = ram.memory().read_obj::<u64>(GuestAddress(0x5000)).unwrap();
        ram.memory().write_obj(2u64, GuestAddress(0x3000)).unwrap();
        ram.memory().write_obj(3u64, GuestAddress(0x9008)).unwrap();
        assert_eq!(ram.written_pages().unwrap(), vec![3, 9]);
        // The frozen image did not change.
        use std::os::unix::fs::FileExt;
        let mut word = [0u8; 8];
        base.read_exact_at(&mut word, 0x3000).unwrap();
        assert_eq!(u64::from_le_bytes(word), 1);
        // A second freeze keeps the base and copies the written pages.
        let (base2, pages) = ram.freeze().unwrap();
        assert!(Arc::ptr_eq(&base, &base2));
        assert_eq!(pages.iter().map(|p| p.0).collect::<Vec<_>>(), vec![3, 9]);
        assert_eq!(pages[0].1[..8], 2u64.to_le_bytes());
        // A copy-on-write view of the image sees the frozen contents only.
        let view = GuestRam::copy_on_write(base, 64 << 20).unwrap();
        assert_eq!(
            view.memory().read_obj::<u64>(GuestAddress(0x3000)).unwrap(),
            1
        );
        view.memory().write_obj(7u64, GuestAddress(0x3000)).unwrap();
        assert_eq!(
            ram.memory().read_obj::<u64>(GuestAddress(0x3000)).unwrap(),
            2
        );
    }
}
