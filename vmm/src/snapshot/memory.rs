//! Guest RAM in a snapshot: a frozen (sealed) memfd plus the pages that differ from it.
//! Cloning shares both; a restore maps the memfd copy-on-write and writes the pages in.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};

use crate::memory::{GuestRam, MemoryError, Pages, PAGE};

#[derive(Clone)]
pub struct MemoryImage {
    pub size: u64,
    /// Sealed: nothing can change it while a snapshot holds it.
    pub base: Arc<File>,
    /// (page number, 4 KiB) that differ from `base`, sorted by page.
    pub pages: Arc<Pages>,
}

impl MemoryImage {
    /// Freezes `ram` (see [`GuestRam::freeze`]).
    pub fn capture(ram: &mut GuestRam) -> Result<Self, MemoryError> {
        let size = ram.size();
        let (base, pages) = ram.freeze()?;
        Ok(MemoryImage {
            size,
            base,
            pages: Arc::new(pages),
        })
    }

    /// RAM with this image's contents whose writes stay private.
    pub fn restore(&self) -> Result<GuestRam, MemoryError> {
        let ram = GuestRam::copy_on_write(self.base.clone(), self.size)?;
        for (page, bytes) in self.pages.iter() {
            ram.memory()
                .write_slice(bytes, GuestAddress(page * PAGE))
                .map_err(|e| MemoryError::Map(format!("writing back page {page}: {e}")))?;
        }
        Ok(ram)
    }

    /// Page `page`'s bytes into `out` (4 KiB).
    pub fn read_page(&self, page: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        match self.pages.binary_search_by_key(&page, |(p, _)| *p) {
            Ok(i) => out.copy_from_slice(&self.pages[i].1),
            Err(_) => self
                .base
                .read_exact_at(out, page * PAGE)
                .map_err(|source| MemoryError::Host {
                    what: "reading a frozen guest page",
                    source,
                })?,
        }
        Ok(())
    }

    pub fn page_count(&self) -> u64 {
        self.size / PAGE
    }
}
