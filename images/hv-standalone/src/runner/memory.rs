//! A guest's physical memory: host frames, one per 4 KiB guest page, and
//! the guest-physical layout the runner gives every workload.
//!
//! The frames need not be contiguous (the EPT maps each page on its own),
//! so they come from [`FrameAllocator::allocate`] and all go back at the
//! end. Memory is identity-mapped in the runner (virtual = physical in
//! both L0 and L1), so a frame's address is also a pointer to it.
//!
//! Guest-physical layout (guest-virtual = guest-physical):
//!
//! | address                 | what                                        |
//! |-------------------------|---------------------------------------------|
//! | 0x1000, 0x2000, 0x3000  | the guest's PML4, PDPT and PD (2 MiB pages)  |
//! | 0x1F_F000               | the probe page of the ept12-outside case     |
//! | 0x20_0000..0x28_0000    | the workload's ELF segments                  |
//! | 0x28_0000               | the data buffer (16 KiB)                     |
//! | .. end of memory        | the stack, growing down from the end         |

use alloc::vec::Vec;

use crate::memory::{FrameAllocator, PhysFrame};

use super::RunnerError;

/// A page.
pub(crate) const PAGE_SIZE: u64 = 4096;
/// The least guest memory: the image window, the buffer and a stack.
pub(crate) const MIN_GUEST_MEMORY: u64 = 3 << 20;
/// The most guest memory (one guest PD of 2 MiB pages, 32 entries used).
pub(crate) const MAX_GUEST_MEMORY: u64 = 64 << 20;
/// The guest's PML4 (its CR3).
pub(crate) const GUEST_PML4: u64 = 0x1000;
/// The guest's PDPT.
const GUEST_PDPT: u64 = 0x2000;
/// The guest's page directory (2 MiB pages).
const GUEST_PD: u64 = 0x3000;
/// The page the ept12-outside guest reads first; its EPT entry points
/// beyond MAXPHYADDR.
pub(crate) const PROBE_GPA: u64 = 0x1F_F000;
/// Where the workload's segments may lie: its link address ...
pub(crate) const IMAGE_START: u64 = l2_checksum::IMAGE_BASE;
/// ... up to here (512 KiB).
pub(crate) const IMAGE_END: u64 = 0x28_0000;
/// The data buffer.
pub(crate) const BUFFER_GPA: u64 = 0x28_0000;
/// The data buffer's length.
pub(crate) const BUFFER_LEN: u64 = l2_checksum::BUFFER_LEN as u64;
/// Guest page-table entry bits: present, writable, 2 MiB page (SDM Vol. 3A
/// 5.5, Tables 5-15 to 5-17).
const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_PAGE_SIZE: u64 = 1 << 7;

const _: () = assert!(BUFFER_GPA >= IMAGE_END);
const _: () = assert!(BUFFER_GPA + BUFFER_LEN + (64 << 10) <= MIN_GUEST_MEMORY);
const _: () = assert!(PROBE_GPA + PAGE_SIZE <= IMAGE_START && PROBE_GPA > GUEST_PD);

/// A guest-physical range that is not (entirely) guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OutsideGuestMemory {
    /// First guest-physical address of the access.
    pub(crate) gpa: u64,
    /// Its length.
    pub(crate) length: u64,
}

/// One guest's memory: `frames[i]` backs guest-physical page `i`.
#[derive(Debug)]
pub(crate) struct GuestMemory {
    frames: Vec<PhysFrame>,
}

impl GuestMemory {
    /// `bytes` (a multiple of 4 KiB) of zeroed guest memory.
    ///
    /// # Errors
    ///
    /// [`RunnerError::OutOfMemory`] if the frames or the heap run out;
    /// whatever was taken is given back.
    pub(crate) fn new(frames: &mut FrameAllocator, bytes: u64) -> Result<Self, RunnerError> {
        let pages = usize::try_from(bytes / PAGE_SIZE)
            .map_err(|_| RunnerError::OutOfMemory("guest memory"))?;
        let mut memory = Self { frames: Vec::new() };
        if memory.frames.try_reserve_exact(pages).is_err() {
            return Err(RunnerError::OutOfMemory("the guest frame list"));
        }
        for _ in 0..pages {
            let Some(frame) = frames.allocate() else {
                memory.free(frames);
                return Err(RunnerError::OutOfMemory("guest memory"));
            };
            memory.frames.push(frame);
        }
        Ok(memory)
    }

    /// The size in bytes.
    pub(crate) fn bytes(&self) -> u64 {
        self.frames.len() as u64 * PAGE_SIZE
    }

    /// The host frames, in guest-physical order.
    pub(crate) fn frames(&self) -> &[PhysFrame] {
        &self.frames
    }

    /// Calls `each(host_address, offset_in_range, chunk_length)` for every
    /// page-bounded piece of `[gpa, gpa + length)`.
    fn for_each_piece(
        &self,
        gpa: u64,
        length: u64,
        mut each: impl FnMut(u64, usize, usize),
    ) -> Result<(), OutsideGuestMemory> {
        let outside = OutsideGuestMemory { gpa, length };
        let end = gpa.checked_add(length).ok_or(outside)?;
        if end > self.bytes() {
            return Err(outside);
        }
        let mut address = gpa;
        while address < end {
            let page = usize::try_from(address / PAGE_SIZE).map_err(|_| outside)?;
            let frame = self.frames.get(page).ok_or(outside)?;
            let in_page = address % PAGE_SIZE;
            let chunk = (PAGE_SIZE - in_page).min(end - address);
            each(
                frame.address() + in_page,
                (address - gpa) as usize,
                chunk as usize,
            );
            address += chunk;
        }
        Ok(())
    }

    /// Copies `bytes` to guest-physical `gpa`.
    ///
    /// # Errors
    ///
    /// [`OutsideGuestMemory`] (nothing written) if the range is not inside.
    pub(crate) fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), OutsideGuestMemory> {
        self.for_each_piece(gpa, bytes.len() as u64, |host, offset, length| {
            // SAFETY: `host..host + length` lies in one frame this guest
            // owns (identity-mapped); the guest is not running (one CPU),
            // and no Rust reference into guest memory exists.
            unsafe {
                core::ptr::copy_nonoverlapping(bytes[offset..].as_ptr(), host as *mut u8, length);
            }
        })
    }

    /// Zeroes `length` bytes at guest-physical `gpa`.
    ///
    /// # Errors
    ///
    /// [`OutsideGuestMemory`] (nothing written) if the range is not inside.
    pub(crate) fn zero(&mut self, gpa: u64, length: u64) -> Result<(), OutsideGuestMemory> {
        self.for_each_piece(gpa, length, |host, _, length| {
            // SAFETY: as in `write`.
            unsafe { core::ptr::write_bytes(host as *mut u8, 0, length) };
        })
    }

    /// Writes the guest's own page tables: PML4 → PDPT → PD of 2 MiB
    /// pages identity-mapping every 2 MiB the memory touches, present and
    /// writable, supervisor (SDM Vol. 3A 5.5).
    ///
    /// # Errors
    ///
    /// [`OutsideGuestMemory`] if the memory is too small for the tables.
    pub(crate) fn write_page_tables(&mut self) -> Result<(), OutsideGuestMemory> {
        let table = PTE_PRESENT | PTE_WRITABLE;
        self.write(GUEST_PML4, &(GUEST_PDPT | table).to_le_bytes())?;
        self.write(GUEST_PDPT, &(GUEST_PD | table).to_le_bytes())?;
        let large_pages = self.bytes().div_ceil(2 << 20);
        for index in 0..large_pages {
            let entry = (index << 21) | table | PTE_PAGE_SIZE;
            self.write(GUEST_PD + index * 8, &entry.to_le_bytes())?;
        }
        Ok(())
    }

    /// Gives every frame back.
    pub(crate) fn free(self, frames: &mut FrameAllocator) {
        for frame in self.frames {
            // SAFETY: the frame came from `allocate`, is freed once (the
            // list is consumed), and its guest no longer runs: its VMCS
            // was cleared (or never launched) by the caller.
            unsafe { frames.free(frame) };
        }
    }
}

/// Writes the VMCS revision identifier (bits 30:0; bit 31 clear) into the
/// first 4 bytes of a VMXON or VMCS region (SDM 25.2, 25.11.5).
pub(crate) fn write_revision(frame: PhysFrame, revision: u32) {
    // SAFETY: the frame is ours, identity-mapped and not yet given to the
    // processor.
    unsafe { (frame.address() as *mut u32).write(revision & 0x7fff_ffff) };
}
