//! Guest RAM: a memfd mapped shared into the host, handed to KVM as one
//! memory slot at guest-physical address 0.

use std::fs::File;

use memmap2::{MmapMut, MmapOptions};
use nix::sys::memfd::{MFdFlags, memfd_create};

use super::error::KvmError;
use super::layout::PAGE_SIZE;

/// Guest memory (guest-physical address = offset in the mapping).
#[derive(Debug)]
pub struct GuestMemory {
    map: MmapMut,
    // Kept open for the mapping's lifetime (and for future views).
    _file: File,
}

impl GuestMemory {
    /// A zero-filled memfd of `size` bytes, mapped shared.
    ///
    /// # Errors
    ///
    /// [`KvmError::Resource`] when `memfd_create`, ftruncate or mmap fail.
    pub fn new(size: u64) -> Result<Self, KvmError> {
        let fd = memfd_create(c"hv-guest-ram", MFdFlags::MFD_CLOEXEC).map_err(|errno| {
            KvmError::Resource {
                operation: "memfd_create",
                source: errno.into(),
            }
        })?;
        let file = File::from(fd);
        file.set_len(size).map_err(|source| KvmError::Resource {
            operation: "ftruncate guest memory",
            source,
        })?;
        let length = usize::try_from(size).map_err(|_| KvmError::Resource {
            operation: "map guest memory",
            source: std::io::ErrorKind::InvalidInput.into(),
        })?;
        // SAFETY: the memfd is private to this sandbox (nobody else
        // truncates it while it is mapped); the guest changes its bytes only
        // while the vCPU runs, on the thread that owns this mapping.
        let map = unsafe { MmapOptions::new().len(length).map_mut(&file) }.map_err(|source| {
            KvmError::Resource {
                operation: "mmap guest memory",
                source,
            }
        })?;
        Ok(Self { map, _file: file })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.map.len() as u64
    }

    /// Host address of guest-physical 0 (for the KVM memory slot).
    pub fn host_address(&self) -> u64 {
        self.map.as_ptr() as u64
    }

    /// All of guest memory.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// All of guest memory, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    /// `length` bytes at guest address `address`, if inside memory.
    pub fn get(&self, address: u64, length: u64) -> Option<&[u8]> {
        let start = usize::try_from(address).ok()?;
        let end = start.checked_add(usize::try_from(length).ok()?)?;
        self.map.get(start..end)
    }

    /// Writable `length` bytes at guest address `address`, if inside memory.
    pub fn get_mut(&mut self, address: u64, length: u64) -> Option<&mut [u8]> {
        let start = usize::try_from(address).ok()?;
        let end = start.checked_add(usize::try_from(length).ok()?)?;
        self.map.get_mut(start..end)
    }

    /// The page with index `page` (address `page * 4096`), writable.
    pub fn page_mut(&mut self, page: usize) -> &mut [u8] {
        let start = page * PAGE_SIZE as usize;
        &mut self.map[start..start + PAGE_SIZE as usize]
    }

    /// The page with index `page`.
    pub fn page(&self, page: usize) -> &[u8] {
        let start = page * PAGE_SIZE as usize;
        &self.map[start..start + PAGE_SIZE as usize]
    }

    /// Number of pages.
    pub fn page_count(&self) -> usize {
        self.map.len() / PAGE_SIZE as usize
    }
}
