//! What hv-mmu needs from its surroundings, as small traits: L1 memory
//! (where EPT12 lives), EPT01 (L0's translation of L1 memory) and a frame
//! allocator for the shadow tables. Platforms implement them; [`crate::testing`]
//! has in-memory implementations for tests, fuzzing and benchmarks.

use crate::addr::{HostPa, L1Gpa, PageSize};
use hv_arch_vmx::ept::{EptMemoryType, EptPermissions};

/// An L1 guest-physical address that no L1 memory backs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{gpa} is not L1 memory")]
pub struct NotL1Memory {
    /// The address.
    pub gpa: L1Gpa,
}

/// L1's memory, as the EPT12 walker sees it.
///
/// Every method fails with [`NotL1Memory`] for an address L1 does not own;
/// an EPT12 table pointer is L1-controlled, so that is normal input, not a
/// bug.
pub trait L1Memory {
    /// Reads the 8-byte word at `gpa`, which is 8-byte aligned.
    ///
    /// # Errors
    ///
    /// [`NotL1Memory`] when `gpa` is outside L1's memory.
    fn read_u64(&self, gpa: L1Gpa) -> Result<u64, NotL1Memory>;

    /// Replaces the 8-byte word at `gpa` with `new` if it still holds `old`,
    /// atomically with respect to L1 (the locked update hardware uses for
    /// EPT accessed/dirty flags, SDM 29.3.5). Returns whether it replaced it.
    ///
    /// # Errors
    ///
    /// [`NotL1Memory`] when `gpa` is outside L1's memory.
    fn compare_exchange_u64(&mut self, gpa: L1Gpa, old: u64, new: u64)
    -> Result<bool, NotL1Memory>;
}

/// How EPT01 maps one L1 page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ept01Mapping {
    /// Host-physical address of the start of the page that contains the L1
    /// address (aligned to `size`).
    pub frame: HostPa,
    /// Size of that page.
    pub size: PageSize,
    /// What L0 lets L1 do with it.
    pub permissions: EptPermissions,
    /// Memory type L0 uses for it. EPT02 leaves take this type with
    /// ignore-PAT set, and L2 writes through EPT02 set no EPT01 dirty bits:
    /// an L0 that tracks dirty pages write-protects them here and calls
    /// [`Mmu::ept01_changed`](crate::Mmu::ept01_changed).
    pub memory_type: EptMemoryType,
}

/// L0's translation of L1 memory (EPT01).
pub trait Ept01 {
    /// How EPT01 maps the page containing `gpa`, or `None` when no host
    /// memory backs it (L0 emulates accesses there, e.g. MMIO).
    fn translate(&self, gpa: L1Gpa) -> Option<Ept01Mapping>;
}

/// A 4-KByte EPT paging structure: 512 entries.
pub type Table = [u64; 512];

/// Host frames for shadow EPT02 tables.
///
/// Frames hold real EPT-format tables: the hardware engine points EPTP02 at
/// them, so they must be host-physical frames the processor can walk.
pub trait FrameAllocator {
    /// A zeroed 4-KByte frame, or `None` when none is left.
    fn allocate(&mut self) -> Option<HostPa>;

    /// Returns a frame obtained from [`FrameAllocator::allocate`].
    fn free(&mut self, frame: HostPa);

    /// The table stored in `frame`. `frame` was allocated and not freed.
    fn table(&self, frame: HostPa) -> &Table;

    /// The table stored in `frame`, for writing. `frame` was allocated and
    /// not freed.
    fn table_mut(&mut self, frame: HostPa) -> &mut Table;
}
