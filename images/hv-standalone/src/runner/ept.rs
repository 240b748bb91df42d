//! A guest's EPT: 4 levels, 4 KiB leaves mapping exactly its memory (each
//! guest page to its own host frame), write-back, read/write/execute; the
//! EPTP says WB paging structures, a 4-level walk, no accessed/dirty flags
//! (SDM 29.3.2, 29.3.7, Table 25-9).
//!
//! The tables are built once before the guest first runs and never
//! change, so no INVEPT is ever needed for them while the guest exists.

use alloc::vec::Vec;

use hv_arch_vmx::ept::{EptEntry, EptLevel, EptMemoryType, EptPermissions, Eptp};

use crate::memory::{FrameAllocator, PhysFrame};

use super::RunnerError;
use super::memory::{GuestMemory, PAGE_SIZE};

/// An EPT leaf for a page that lies beyond MAXPHYADDR (the ept12-outside
/// case): guest-physical page `gpa` maps to `host`, whose bits at and
/// above MAXPHYADDR are reserved in an EPT entry (SDM 29.3.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OutsideMapping {
    /// The guest-physical page.
    pub(crate) gpa: u64,
    /// The host-physical address the entry names.
    pub(crate) host: u64,
}

/// One guest's EPT paging structures.
#[derive(Debug)]
pub(crate) struct GuestEpt {
    root: PhysFrame,
    tables: Vec<PhysFrame>,
    eptp: Eptp,
}

impl GuestEpt {
    /// Builds the EPT for `memory`, with `outside` (if any) replacing the
    /// leaf of its page.
    ///
    /// # Errors
    ///
    /// [`RunnerError::OutOfMemory`] or an entry error; whatever was taken
    /// is given back.
    pub(crate) fn new(
        frames: &mut FrameAllocator,
        memory: &GuestMemory,
        outside: Option<OutsideMapping>,
    ) -> Result<Self, RunnerError> {
        let root = frames
            .allocate()
            .ok_or(RunnerError::OutOfMemory("an EPT PML4"))?;
        let eptp = match Eptp::new(root.address(), EptMemoryType::WriteBack, 4, false) {
            Ok(eptp) => eptp,
            Err(error) => {
                // SAFETY: just allocated, referenced by nothing.
                unsafe { frames.free(root) };
                return Err(RunnerError::Eptp(error));
            }
        };
        let mut ept = Self {
            root,
            tables: Vec::new(),
            eptp,
        };
        if let Err(error) = ept.map_memory(frames, memory, outside) {
            ept.free(frames);
            return Err(error);
        }
        Ok(ept)
    }

    fn map_memory(
        &mut self,
        frames: &mut FrameAllocator,
        memory: &GuestMemory,
        outside: Option<OutsideMapping>,
    ) -> Result<(), RunnerError> {
        let rwx = EptPermissions::READ_WRITE_EXECUTE;
        for (page, frame) in memory.frames().iter().enumerate() {
            let gpa = page as u64 * PAGE_SIZE;
            let host = match outside {
                Some(mapping) if mapping.gpa == gpa => mapping.host,
                _ => frame.address(),
            };
            let leaf = EptEntry::leaf(EptLevel::Pte, host, rwx, EptMemoryType::WriteBack)
                .map_err(RunnerError::EptEntry)?;
            self.map_4k(frames, gpa, leaf)?;
        }
        Ok(())
    }

    /// Writes `leaf` as the PTE of `gpa`, allocating the PDPT, PD and PT on
    /// the way as needed.
    fn map_4k(
        &mut self,
        frames: &mut FrameAllocator,
        gpa: u64,
        leaf: EptEntry,
    ) -> Result<(), RunnerError> {
        let mut table = self.root.address();
        for level in [EptLevel::Pml4e, EptLevel::Pdpte, EptLevel::Pde] {
            let slot = (table + 8 * level.index_of(gpa) as u64) as *mut u64;
            // SAFETY: `slot` is one of the 512 entries of a table frame
            // this EPT owns (identity-mapped); the guest has not run yet.
            let current = EptEntry::from_raw(unsafe { slot.read() });
            table = if current.is_readable() {
                current.address()
            } else {
                let frame = frames
                    .allocate()
                    .ok_or(RunnerError::OutOfMemory("an EPT table"))?;
                if self.tables.try_reserve(1).is_err() {
                    // SAFETY: just allocated, referenced by nothing.
                    unsafe { frames.free(frame) };
                    return Err(RunnerError::OutOfMemory("the EPT table list"));
                }
                self.tables.push(frame);
                // Non-leaf entries grant everything; the leaf decides
                // (SDM 29.3.3.2: rights are the AND along the walk).
                let entry = EptEntry::table(frame.address(), EptPermissions::READ_WRITE_EXECUTE)
                    .map_err(RunnerError::EptEntry)?;
                // SAFETY: as above.
                unsafe { slot.write(entry.raw()) };
                frame.address()
            };
        }
        let slot = (table + 8 * EptLevel::Pte.index_of(gpa) as u64) as *mut u64;
        // SAFETY: as above, an entry of a PT frame this EPT owns.
        unsafe { slot.write(leaf.raw()) };
        Ok(())
    }

    /// The EPTP to put in the VMCS.
    pub(crate) const fn eptp(&self) -> Eptp {
        self.eptp
    }

    /// Gives every table frame back.
    pub(crate) fn free(self, frames: &mut FrameAllocator) {
        for frame in self.tables {
            // SAFETY: allocated by this EPT, freed once; the caller ensures
            // no VMCS that references this EPT will be used for VM entry
            // again.
            unsafe { frames.free(frame) };
        }
        // SAFETY: as above.
        unsafe { frames.free(self.root) };
    }
}
