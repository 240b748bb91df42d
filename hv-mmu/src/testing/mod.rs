//! In-memory implementations of hv-mmu's surroundings, for tests, fuzzing
//! and benchmarks: L1 memory ([`TestMemory`]), EPT01 ([`TestEpt01`]), a
//! frame pool for shadow tables ([`FramePool`]), an EPT12 builder
//! ([`Ept12Builder`]) and the engine invariant checker
//! ([`check_invariants`]).
//!
//! This module is test infrastructure. Unlike the engine, some of it panics
//! on purpose: [`FramePool`] panics when the engine frees a frame twice,
//! frees a frame it never got, or touches a frame it does not own, because
//! each of those is a bug in hv-mmu that a test must not be able to miss.
//! Nothing here panics on EPT12 contents: those are L1's to choose.
//!
//! Address spaces are kept apart on purpose: [`TestEpt01::identity`] places
//! L1 memory at one host range and [`FramePool`] hands out frames from
//! another ([`DEFAULT_FRAME_BASE`]), so an EPT02 leaf that maps a shadow
//! table is caught as "not L1 memory".

use alloc::boxed::Box;
use alloc::vec::Vec;

use hashbrown::HashMap;
use hv_arch_vmx::ept::{EptEntry, EptMemoryType, EptPermissions, EptWalkContext, Eptp};

use crate::addr::{HostPa, L1Gfn, L1Gpa, L2Gpa, PAGE_SIZE, PageSize};
use crate::env::{Ept01, Ept01Mapping, FrameAllocator, L1Memory, NotL1Memory, Table};
use crate::shadow::Mmu;

#[cfg(feature = "fuzzing")]
pub mod corpus;
pub mod hardware;
#[cfg(feature = "fuzzing")]
pub mod scenario;

/// Entries in one EPT paging structure.
const ENTRIES: usize = 512;
/// Bytes in a 2-MByte page.
const SIZE_2M: u64 = 1 << 21;
/// 4-KByte pages in a 2-MByte page.
const PAGES_PER_2M: u64 = 512;

/// A zeroed table, on the heap.
fn zeroed_table() -> Box<Table> {
    Box::new([0; ENTRIES])
}

/// The index of the 8-byte word at `gpa` within its page (the low three
/// bits of `gpa` are ignored).
const fn word_index(gpa: u64) -> usize {
    ((gpa & (PAGE_SIZE - 1)) >> 3) as usize
}

// ---------------------------------------------------------------------------
// L1 memory
// ---------------------------------------------------------------------------

/// L1 guest memory of a fixed size, stored sparsely: a page exists only once
/// something was written to it, and reading an unwritten page gives zeros.
///
/// Addresses at or above [`TestMemory::len`] are not L1 memory and fail with
/// [`NotL1Memory`]. Word accesses use the 8-byte word containing the address
/// (the low three bits are ignored), as EPT entries are always aligned.
#[derive(Debug, Clone, Default)]
pub struct TestMemory {
    /// Size in bytes, a multiple of the page size.
    size: u64,
    /// The pages written so far.
    pages: HashMap<L1Gfn, Box<Table>>,
    /// Successful [`L1Memory::compare_exchange_u64`] replacements.
    compare_exchange_writes: u64,
}

impl TestMemory {
    /// L1 memory of `size` bytes (rounded up to whole 4-KByte pages), all
    /// zero.
    pub fn new(size: u64) -> Self {
        let size = match size.checked_next_multiple_of(PAGE_SIZE) {
            Some(rounded) => rounded,
            None => !(PAGE_SIZE - 1),
        };
        Self {
            size,
            pages: HashMap::new(),
            compare_exchange_writes: 0,
        }
    }

    /// The size of L1 memory in bytes.
    pub const fn len(&self) -> u64 {
        self.size
    }

    /// Whether L1 memory has no bytes at all.
    pub const fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Whether `gpa` is L1 memory.
    pub const fn contains(&self, gpa: L1Gpa) -> bool {
        gpa.raw() < self.size
    }

    /// Checks that `gpa` is L1 memory.
    const fn check(&self, gpa: L1Gpa) -> Result<(), NotL1Memory> {
        if self.contains(gpa) {
            Ok(())
        } else {
            Err(NotL1Memory { gpa })
        }
    }

    /// Reads the 8-byte word containing `gpa`.
    ///
    /// # Errors
    ///
    /// [`NotL1Memory`] when `gpa` is outside L1 memory.
    pub fn read_u64(&self, gpa: L1Gpa) -> Result<u64, NotL1Memory> {
        self.check(gpa)?;
        Ok(self
            .pages
            .get(&gpa.gfn())
            .map_or(0, |page| page[word_index(gpa.raw())]))
    }

    /// Writes the 8-byte word containing `gpa`, as L1 would (no
    /// notification to anyone: that is the point of EPT12 write tests).
    ///
    /// # Errors
    ///
    /// [`NotL1Memory`] when `gpa` is outside L1 memory.
    pub fn write_u64(&mut self, gpa: L1Gpa, value: u64) -> Result<(), NotL1Memory> {
        self.check(gpa)?;
        let page = self.pages.entry(gpa.gfn()).or_insert_with(zeroed_table);
        page[word_index(gpa.raw())] = value;
        Ok(())
    }

    /// Reads `buf.len()` bytes at `gpa` (any alignment), one word lookup
    /// per 8-byte word touched.
    ///
    /// # Errors
    ///
    /// [`NotL1Memory`] when any byte is outside L1 memory.
    pub fn read_bytes(&self, gpa: L1Gpa, buf: &mut [u8]) -> Result<(), NotL1Memory> {
        self.check_range(gpa, buf.len())?;
        let mut address = gpa.raw();
        let mut rest = buf;
        while !rest.is_empty() {
            let offset = (address & 7) as usize;
            let (chunk, tail) = rest.split_at_mut((8 - offset).min(rest.len()));
            let word = self.read_u64(L1Gpa::new(address))?.to_le_bytes();
            chunk.copy_from_slice(&word[offset..offset + chunk.len()]);
            address += chunk.len() as u64;
            rest = tail;
        }
        Ok(())
    }

    /// Writes `buf` at `gpa` (any alignment). Nothing is written when any
    /// byte is outside L1 memory.
    ///
    /// # Errors
    ///
    /// [`NotL1Memory`] when any byte is outside L1 memory.
    pub fn write_bytes(&mut self, gpa: L1Gpa, buf: &[u8]) -> Result<(), NotL1Memory> {
        self.check_range(gpa, buf.len())?;
        let mut address = gpa.raw();
        let mut rest = buf;
        while !rest.is_empty() {
            let offset = (address & 7) as usize;
            let (chunk, tail) = rest.split_at((8 - offset).min(rest.len()));
            let mut word = self.read_u64(L1Gpa::new(address))?.to_le_bytes();
            word[offset..offset + chunk.len()].copy_from_slice(chunk);
            self.write_u64(L1Gpa::new(address), u64::from_le_bytes(word))?;
            address += chunk.len() as u64;
            rest = tail;
        }
        Ok(())
    }

    /// Checks that every byte of `gpa..gpa + len` is L1 memory.
    fn check_range(&self, gpa: L1Gpa, len: usize) -> Result<(), NotL1Memory> {
        let Some(last) = (len as u64).checked_sub(1) else {
            return Ok(());
        };
        match gpa.raw().checked_add(last) {
            Some(last) if last < self.size => Ok(()),
            _ => Err(NotL1Memory { gpa }),
        }
    }

    /// Sets every byte of page `gfn` to zero.
    ///
    /// # Errors
    ///
    /// [`NotL1Memory`] when the page is outside L1 memory.
    pub fn zero_page(&mut self, gfn: L1Gfn) -> Result<(), NotL1Memory> {
        self.check(gfn.address())?;
        self.pages.remove(&gfn);
        Ok(())
    }

    /// How many times [`L1Memory::compare_exchange_u64`] replaced a word
    /// (the EPT accessed/dirty updates the walker made).
    pub const fn compare_exchange_writes(&self) -> u64 {
        self.compare_exchange_writes
    }

    /// Sets the [`TestMemory::compare_exchange_writes`] counter back to 0.
    pub fn reset_compare_exchange_writes(&mut self) {
        self.compare_exchange_writes = 0;
    }

    /// How many pages have been written (and are therefore stored).
    pub fn pages_stored(&self) -> usize {
        self.pages.len()
    }
}

impl L1Memory for TestMemory {
    fn read_u64(&self, gpa: L1Gpa) -> Result<u64, NotL1Memory> {
        TestMemory::read_u64(self, gpa)
    }

    fn compare_exchange_u64(
        &mut self,
        gpa: L1Gpa,
        old: u64,
        new: u64,
    ) -> Result<bool, NotL1Memory> {
        if TestMemory::read_u64(self, gpa)? != old {
            return Ok(false);
        }
        self.write_u64(gpa, new)?;
        self.compare_exchange_writes += 1;
        Ok(true)
    }
}

// ---------------------------------------------------------------------------
// EPT01
// ---------------------------------------------------------------------------

/// Which host frames back L1 memory: what [`check_invariants`] needs beyond
/// [`Ept01`] to tell a legitimate EPT02 leaf from one that leaks host memory.
pub trait L1Backing {
    /// Whether `host` lies in a host frame that EPT01 currently maps some L1
    /// page to.
    fn backs(&self, host: HostPa) -> bool;
}

/// Which frames a frame allocator has handed out and not taken back: lets
/// [`check_invariants`] reject EPT02 pointers to foreign or freed frames
/// without calling [`FrameAllocator::table`] on them.
pub trait AllocatedFrames {
    /// Whether `frame` (4-KByte aligned) is currently allocated.
    fn is_allocated(&self, frame: HostPa) -> bool;
}

/// How [`TestEpt01`] maps one 4-KByte L1 page that differs from the
/// identity default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PageMapping {
    /// The host frame (4-KByte aligned).
    frame: HostPa,
    /// L0's rights on it.
    permissions: EptPermissions,
    /// L0's memory type for it.
    memory_type: EptMemoryType,
}

/// EPT01 for tests: by default every L1 page of an L1 of `size` bytes is
/// mapped to `host_base + gpa`, with full rights (read, write, execute,
/// user-execute), write-back, as 4-KByte pages; individual pages can then be
/// remapped, protected or unmapped (made "emulated", like MMIO).
///
/// With [`TestEpt01::with_large_pages`], `translate` reports a 2-MByte page
/// wherever the whole aligned 2-MByte region is mapped uniformly
/// (contiguous 2-MByte-aligned host range, same rights and memory type).
///
/// After changing a mapping, a test must tell the engine
/// (`Mmu::ept01_changed`), as L0 would.
#[derive(Debug, Clone)]
pub struct TestEpt01 {
    /// Bytes of L1 memory mapped by default (a page multiple).
    l1_size: u64,
    /// Host address of L1 address 0 in the default mapping.
    host_base: HostPa,
    /// Report 2-MByte pages where possible.
    large_pages: bool,
    /// Pages that differ from the default (`None`: unmapped).
    overrides: HashMap<L1Gfn, Option<PageMapping>>,
    /// Number of overrides per 2-MByte region (region = gfn / 512).
    overrides_per_region: HashMap<u64, u32>,
    /// For host frames (frame numbers) mapped by overrides: how many L1
    /// pages map to each.
    override_backing: HashMap<u64, u32>,
}

impl TestEpt01 {
    /// The full rights the default mapping grants.
    pub const FULL_RIGHTS: EptPermissions =
        EptPermissions::READ_WRITE_EXECUTE.union(EptPermissions::USER_EXECUTE);

    /// Maps every page of an L1 of `size` bytes (rounded up to whole pages)
    /// to `host_base + gpa` with full rights, write-back, as 4-KByte pages.
    /// `host_base` is rounded down to a page boundary.
    pub fn identity(size: u64, host_base: HostPa) -> Self {
        Self {
            l1_size: TestMemory::new(size).len(),
            host_base: host_base.align_down(PageSize::Size4K),
            large_pages: false,
            overrides: HashMap::new(),
            overrides_per_region: HashMap::new(),
            override_backing: HashMap::new(),
        }
    }

    /// Returns this EPT01 reporting 2-MByte pages (or not) where a whole
    /// aligned 2-MByte region is mapped uniformly.
    #[must_use]
    pub fn with_large_pages(mut self, large_pages: bool) -> Self {
        self.large_pages = large_pages;
        self
    }

    /// The bytes of L1 memory the default mapping covers.
    pub const fn l1_size(&self) -> u64 {
        self.l1_size
    }

    /// The host address of L1 address 0 in the default mapping.
    pub const fn host_base(&self) -> HostPa {
        self.host_base
    }

    /// Maps L1 page `gfn` to host frame `frame` (rounded down to a
    /// 4-KByte boundary) with `permissions` and `memory_type`. `gfn` may lie
    /// beyond the default L1 size.
    pub fn map_page(
        &mut self,
        gfn: L1Gfn,
        frame: HostPa,
        permissions: EptPermissions,
        memory_type: EptMemoryType,
    ) {
        self.set_override(
            gfn,
            Some(PageMapping {
                frame: frame.align_down(PageSize::Size4K),
                permissions,
                memory_type,
            }),
        );
    }

    /// Unmaps L1 page `gfn`: accesses to it become L0-emulated (MMIO).
    pub fn unmap(&mut self, gfn: L1Gfn) {
        self.set_override(gfn, None);
    }

    /// Changes the rights L0 grants on L1 page `gfn`, keeping its frame and
    /// memory type. Does nothing if the page is unmapped.
    pub fn protect(&mut self, gfn: L1Gfn, permissions: EptPermissions) {
        if let Some(page) = self.page(gfn) {
            self.set_override(
                gfn,
                Some(PageMapping {
                    permissions,
                    ..page
                }),
            );
        }
    }

    /// Sets how page `gfn` is mapped, in the form [`Ept01::translate`]
    /// returns: `mapping` describes the page containing `gfn` (its `frame`
    /// is the start of a page of `mapping.size`), `None` unmaps. Only `gfn`'s
    /// own 4-KByte page changes.
    pub fn set(&mut self, gfn: L1Gfn, mapping: Option<Ept01Mapping>) {
        match mapping {
            None => self.unmap(gfn),
            Some(mapping) => {
                let within = gfn.address().raw() & (mapping.size.bytes() - 1);
                let frame = mapping
                    .frame
                    .align_down(mapping.size)
                    .wrapping_add(within & !(PAGE_SIZE - 1));
                self.map_page(gfn, frame, mapping.permissions, mapping.memory_type);
            }
        }
    }

    /// Puts page `gfn` back to its default mapping (identity plus base with
    /// full rights inside the default L1 size, unmapped beyond).
    pub fn reset(&mut self, gfn: L1Gfn) {
        if let Some(old) = self.overrides.remove(&gfn) {
            self.forget_override(gfn, old);
        }
    }

    /// The default mapping of `gfn`.
    fn default_page(&self, gfn: L1Gfn) -> Option<PageMapping> {
        if gfn.address().raw() >= self.l1_size {
            return None;
        }
        Some(PageMapping {
            frame: self.host_base.wrapping_add(gfn.address().raw()),
            permissions: Self::FULL_RIGHTS,
            memory_type: EptMemoryType::WriteBack,
        })
    }

    /// The current mapping of the 4-KByte page `gfn`.
    fn page(&self, gfn: L1Gfn) -> Option<PageMapping> {
        match self.overrides.get(&gfn) {
            Some(page) => *page,
            None => self.default_page(gfn),
        }
    }

    /// Replaces the override of `gfn`, keeping the indexes in step.
    fn set_override(&mut self, gfn: L1Gfn, page: Option<PageMapping>) {
        if let Some(old) = self.overrides.insert(gfn, page) {
            self.forget_override(gfn, old);
        }
        *self
            .overrides_per_region
            .entry(gfn.raw() / PAGES_PER_2M)
            .or_insert(0) += 1;
        if let Some(page) = page {
            *self
                .override_backing
                .entry(page.frame.raw() / PAGE_SIZE)
                .or_insert(0) += 1;
        }
    }

    /// Removes `old`, the override `gfn` had, from the indexes.
    fn forget_override(&mut self, gfn: L1Gfn, old: Option<PageMapping>) {
        decrement(&mut self.overrides_per_region, gfn.raw() / PAGES_PER_2M);
        if let Some(old) = old {
            decrement(&mut self.override_backing, old.frame.raw() / PAGE_SIZE);
        }
    }

    /// Whether the 2-MByte region `region` (gfn / 512) is mapped uniformly,
    /// given the mapping `first` of its first page.
    fn region_is_uniform(&self, region: u64, first: PageMapping) -> bool {
        if first.frame.raw() & (SIZE_2M - 1) != 0 {
            return false;
        }
        let first_gfn = region * PAGES_PER_2M;
        let untouched = !self.overrides_per_region.contains_key(&region);
        if untouched {
            // Default mapping throughout: uniform if the region is entirely
            // inside the default L1 size.
            return first_gfn
                .saturating_add(PAGES_PER_2M)
                .saturating_mul(PAGE_SIZE)
                <= self.l1_size;
        }
        (1..PAGES_PER_2M).all(|i| {
            self.page(L1Gfn::new(first_gfn + i))
                == Some(PageMapping {
                    frame: first.frame.wrapping_add(i * PAGE_SIZE),
                    ..first
                })
        })
    }
}

/// Decrements `map[key]`, removing it at zero.
fn decrement(map: &mut HashMap<u64, u32>, key: u64) {
    if let Some(count) = map.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            map.remove(&key);
        }
    }
}

impl Ept01 for TestEpt01 {
    fn translate(&self, gpa: L1Gpa) -> Option<Ept01Mapping> {
        let gfn = gpa.gfn();
        let page = self.page(gfn)?;
        if self.large_pages {
            let region = gfn.raw() / PAGES_PER_2M;
            let first_gfn = L1Gfn::new(region * PAGES_PER_2M);
            if let Some(first) = self.page(first_gfn)
                && self.region_is_uniform(region, first)
            {
                return Some(Ept01Mapping {
                    frame: first.frame,
                    size: PageSize::Size2M,
                    permissions: first.permissions,
                    memory_type: first.memory_type,
                });
            }
        }
        Some(Ept01Mapping {
            frame: page.frame,
            size: PageSize::Size4K,
            permissions: page.permissions,
            memory_type: page.memory_type,
        })
    }
}

impl L1Backing for TestEpt01 {
    fn backs(&self, host: HostPa) -> bool {
        let frame = host.raw() / PAGE_SIZE;
        if self.override_backing.contains_key(&frame) {
            return true;
        }
        let Some(offset) = host.raw().checked_sub(self.host_base.raw()) else {
            return false;
        };
        // A default frame backs its L1 page unless that page was remapped.
        offset < self.l1_size && !self.overrides.contains_key(&L1Gpa::new(offset).gfn())
    }
}

// ---------------------------------------------------------------------------
// Frame pool
// ---------------------------------------------------------------------------

/// The default host address of a [`FramePool`]'s first frame: far above any
/// L1 memory a test maps with [`TestEpt01::identity`].
pub const DEFAULT_FRAME_BASE: HostPa = HostPa::new(0x80_0000_0000);

/// A [`FrameAllocator`] over at most `capacity` heap-allocated tables, with
/// host addresses `base + i * 4096`.
///
/// Frames are zeroed on allocation and reused last-freed-first (so a stale
/// pointer to a freed table soon sees a different table). Misuse by the
/// engine panics, on purpose (this is test infrastructure detecting hv-mmu
/// bugs): freeing a frame twice, freeing or accessing a frame the pool did
/// not hand out or already took back.
#[derive(Debug, Clone)]
pub struct FramePool {
    /// Host address of frame 0.
    base: HostPa,
    /// Maximum number of frames.
    capacity: usize,
    /// Storage of every frame ever created (created on first use).
    tables: Vec<Box<Table>>,
    /// Whether each created frame is allocated.
    live: Vec<bool>,
    /// Indexes of created frames that are free, last freed last.
    free: Vec<usize>,
    /// Frames allocated now.
    in_use: usize,
    /// The largest `in_use` seen.
    peak_in_use: usize,
    /// Successful allocations so far.
    allocations: u64,
}

impl FramePool {
    /// A pool of `capacity` frames starting at [`DEFAULT_FRAME_BASE`].
    pub fn new(capacity: usize) -> Self {
        Self::with_base(capacity, DEFAULT_FRAME_BASE)
    }

    /// A pool of `capacity` frames whose first frame is at host address
    /// `base` (rounded down to a 4-KByte boundary).
    pub fn with_base(capacity: usize, base: HostPa) -> Self {
        Self {
            base: base.align_down(PageSize::Size4K),
            capacity,
            tables: Vec::new(),
            live: Vec::new(),
            free: Vec::new(),
            in_use: 0,
            peak_in_use: 0,
            allocations: 0,
        }
    }

    /// The maximum number of frames.
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// Frames allocated now.
    pub const fn in_use(&self) -> usize {
        self.in_use
    }

    /// The most frames that were ever allocated at once.
    pub const fn peak_in_use(&self) -> usize {
        self.peak_in_use
    }

    /// Successful allocations so far.
    pub const fn allocations(&self) -> u64 {
        self.allocations
    }

    /// The host address of the first frame.
    pub const fn base(&self) -> HostPa {
        self.base
    }

    /// The frames allocated now.
    pub fn live_frames(&self) -> impl Iterator<Item = HostPa> + '_ {
        self.live
            .iter()
            .enumerate()
            .filter(|(_, live)| **live)
            .map(|(index, _)| self.frame_at(index))
    }

    /// The host address of frame `index`.
    fn frame_at(&self, index: usize) -> HostPa {
        self.base.wrapping_add(index as u64 * PAGE_SIZE)
    }

    /// The index of `frame` if it is a frame this pool created.
    fn index_of(&self, frame: HostPa) -> Option<usize> {
        let offset = frame.raw().checked_sub(self.base.raw())?;
        if offset % PAGE_SIZE != 0 {
            return None;
        }
        let index = usize::try_from(offset / PAGE_SIZE).ok()?;
        (index < self.tables.len()).then_some(index)
    }

    /// The index of `frame`, which must be allocated.
    ///
    /// # Panics
    ///
    /// If `frame` is not an allocated frame of this pool: an engine bug.
    fn live_index(&self, frame: HostPa, operation: &str) -> usize {
        match self.index_of(frame) {
            Some(index) if self.live[index] => index,
            Some(_) => panic!(
                "FramePool::{operation}: {frame} is not allocated (freed, or never handed out)"
            ),
            None => panic!("FramePool::{operation}: {frame} does not belong to this pool"),
        }
    }
}

impl FrameAllocator for FramePool {
    fn allocate(&mut self) -> Option<HostPa> {
        let index = if let Some(index) = self.free.pop() {
            self.tables[index].fill(0);
            index
        } else if self.tables.len() < self.capacity {
            self.tables.push(zeroed_table());
            self.live.push(false);
            self.tables.len() - 1
        } else {
            return None;
        };
        self.live[index] = true;
        self.in_use += 1;
        self.peak_in_use = self.peak_in_use.max(self.in_use);
        self.allocations += 1;
        Some(self.frame_at(index))
    }

    /// # Panics
    ///
    /// On a double free or a frame this pool never handed out (engine bugs).
    fn free(&mut self, frame: HostPa) {
        let index = self.live_index(frame, "free");
        self.live[index] = false;
        self.free.push(index);
        self.in_use -= 1;
    }

    /// # Panics
    ///
    /// If `frame` is not allocated (an engine bug).
    fn table(&self, frame: HostPa) -> &Table {
        &self.tables[self.live_index(frame, "table")]
    }

    /// # Panics
    ///
    /// If `frame` is not allocated (an engine bug).
    fn table_mut(&mut self, frame: HostPa) -> &mut Table {
        let index = self.live_index(frame, "table_mut");
        &mut self.tables[index]
    }
}

impl AllocatedFrames for FramePool {
    fn is_allocated(&self, frame: HostPa) -> bool {
        self.index_of(frame).is_some_and(|index| self.live[index])
    }
}

// ---------------------------------------------------------------------------
// EPT12 builder
// ---------------------------------------------------------------------------

/// Why [`Ept12Builder`] could not do what a test asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Ept12BuildError {
    /// A table or entry would lie outside L1 memory.
    #[error(transparent)]
    NotL1Memory(#[from] NotL1Memory),
    /// The walk length is not 4 or 5.
    #[error("EPT walks have 4 or 5 levels, not {0}")]
    InvalidLevels(u8),
    /// An L2 or L1 address is not aligned to the page size asked for.
    #[error("address {address:#x} is not aligned to {size:?}")]
    Misaligned {
        /// The address.
        address: u64,
        /// The page size.
        size: PageSize,
    },
    /// An L1 address does not fit in an EPT entry (bits above 51).
    #[error("address {0:#x} does not fit in an EPT entry")]
    AddressTooWide(u64),
    /// A large-page leaf already maps the region where a table is needed.
    #[error("a large page at level {level} already maps {l2}")]
    LargePageInTheWay {
        /// The L2 address being mapped.
        l2: L2Gpa,
        /// The level of the large-page leaf.
        level: u8,
    },
    /// A raw entry index is not below 512.
    #[error("entry index {0} is not below 512")]
    IndexOutOfRange(usize),
}

/// Builds EPT12 tables (L1's EPT for L2) in a [`TestMemory`], the way an L1
/// hypervisor would, taking table pages from a bump area of L1 memory.
///
/// Non-leaf entries grant every right (R, W, X, user-execute), so a
/// translation's rights are its leaf's. The builder holds no borrow of the
/// memory: every operation takes it, so tests can interleave EPT12 edits
/// with engine calls.
#[derive(Debug, Clone)]
pub struct Ept12Builder {
    /// The root table (PML4, or PML5 for a 5-level walk).
    root: L1Gfn,
    /// 4 or 5.
    levels: u8,
    /// The next table page to hand out.
    next_table: L1Gfn,
    /// Every table page handed out, root first.
    tables: Vec<L1Gfn>,
}

impl Ept12Builder {
    /// The rights of every non-leaf entry the builder writes.
    pub const TABLE_RIGHTS: EptPermissions =
        EptPermissions::READ_WRITE_EXECUTE.union(EptPermissions::USER_EXECUTE);

    /// A 4-level EPT12 whose tables are taken from `table_area` upwards (the
    /// root first).
    ///
    /// # Errors
    ///
    /// [`Ept12BuildError`] if `table_area` is misaligned or not L1 memory.
    pub fn new(memory: &mut TestMemory, table_area: L1Gpa) -> Result<Self, Ept12BuildError> {
        Self::with_levels(memory, table_area, 4)
    }

    /// An EPT12 with a walk of `levels` (4 or 5) levels whose tables are
    /// taken from `table_area` upwards.
    ///
    /// # Errors
    ///
    /// [`Ept12BuildError`] for a bad level count, a misaligned
    /// `table_area` or one outside L1 memory.
    pub fn with_levels(
        memory: &mut TestMemory,
        table_area: L1Gpa,
        levels: u8,
    ) -> Result<Self, Ept12BuildError> {
        if levels != 4 && levels != 5 {
            return Err(Ept12BuildError::InvalidLevels(levels));
        }
        if table_area.page_offset() != 0 {
            return Err(Ept12BuildError::Misaligned {
                address: table_area.raw(),
                size: PageSize::Size4K,
            });
        }
        let mut builder = Self {
            root: table_area.gfn(),
            levels,
            next_table: table_area.gfn(),
            tables: Vec::new(),
        };
        builder.root = builder.allocate_table(memory)?;
        Ok(builder)
    }

    /// The root table page.
    pub const fn root(&self) -> L1Gfn {
        self.root
    }

    /// The walk length, 4 or 5.
    pub const fn levels(&self) -> u8 {
        self.levels
    }

    /// Every L1 page used as a table so far, root first.
    pub fn table_pages(&self) -> &[L1Gfn] {
        &self.tables
    }

    /// The EPTP12 L1 would launch L2 with: this root, write-back paging
    /// structures, this walk length, A/D flags enabled or not.
    pub fn eptp(&self, accessed_dirty: bool) -> Eptp {
        // SDM 25.6.11: bits 2:0 memory type, 5:3 walk length - 1, bit 6 A/D.
        let ad = if accessed_dirty {
            Eptp::ACCESSED_DIRTY
        } else {
            0
        };
        Eptp::from_raw(
            self.root.address().raw()
                | u64::from(EptMemoryType::WriteBack.bits())
                | (u64::from(self.levels - 1) << 3)
                | ad,
        )
    }

    /// Takes a fresh, zeroed table page from the bump area. Public so that
    /// hostile-table tests can wire tables by hand with
    /// [`Ept12Builder::set_entry`].
    ///
    /// # Errors
    ///
    /// [`NotL1Memory`] when the bump area has run past L1 memory.
    pub fn allocate_table(&mut self, memory: &mut TestMemory) -> Result<L1Gfn, Ept12BuildError> {
        let table = self.next_table;
        if table.address().raw() >= 1 << 52 {
            return Err(Ept12BuildError::AddressTooWide(table.address().raw()));
        }
        memory.zero_page(table)?;
        self.next_table = L1Gfn::new(table.raw() + 1);
        self.tables.push(table);
        Ok(table)
    }

    /// Maps the `size` page at `l2` to the L1 page at `l1` with `perms`,
    /// write-back, creating tables as needed. Replaces whatever entry was
    /// there (a table it replaces is left allocated but unreferenced).
    ///
    /// # Errors
    ///
    /// [`Ept12BuildError`] for misaligned addresses, a larger page already
    /// mapping the region, or tables outside L1 memory.
    pub fn map(
        &mut self,
        memory: &mut TestMemory,
        l2: L2Gpa,
        l1: L1Gpa,
        size: PageSize,
        perms: EptPermissions,
    ) -> Result<(), Ept12BuildError> {
        let level = level_of(size);
        let leaf =
            EptEntry::leaf(level, l1.raw(), perms, EptMemoryType::WriteBack).map_err(|error| {
                match error {
                    hv_arch_vmx::ept::EptEntryError::AddressTooWide { address } => {
                        Ept12BuildError::AddressTooWide(address)
                    }
                    _ => Ept12BuildError::Misaligned {
                        address: l1.raw(),
                        size,
                    },
                }
            })?;
        self.set_leaf(memory, l2, size, leaf.raw())
    }

    /// Maps `len` bytes from `l2` to `l1` with pages of `size` (both
    /// addresses and `len` aligned to `size`).
    ///
    /// # Errors
    ///
    /// As [`Ept12Builder::map`], for the first page that fails.
    pub fn map_range(
        &mut self,
        memory: &mut TestMemory,
        l2: L2Gpa,
        l1: L1Gpa,
        len: u64,
        size: PageSize,
        perms: EptPermissions,
    ) -> Result<(), Ept12BuildError> {
        if !len.is_multiple_of(size.bytes()) {
            return Err(Ept12BuildError::Misaligned { address: len, size });
        }
        let mut offset = 0;
        while offset < len {
            self.map(
                memory,
                l2.wrapping_add(offset),
                l1.wrapping_add(offset),
                size,
                perms,
            )?;
            offset += size.bytes();
        }
        Ok(())
    }

    /// Writes the raw entry `leaf` at the level that maps `size` pages for
    /// `l2`, creating the tables above it. `leaf` may hold anything
    /// (reserved bits, bad memory types...): this is how tests make hostile
    /// leaves.
    ///
    /// # Errors
    ///
    /// [`Ept12BuildError`] for a misaligned `l2`, a larger page already
    /// mapping the region, or tables outside L1 memory.
    pub fn set_leaf(
        &mut self,
        memory: &mut TestMemory,
        l2: L2Gpa,
        size: PageSize,
        leaf: u64,
    ) -> Result<(), Ept12BuildError> {
        if l2.raw() & (size.bytes() - 1) != 0 {
            return Err(Ept12BuildError::Misaligned {
                address: l2.raw(),
                size,
            });
        }
        let mut table = self.root;
        for level in (size.level() + 1..=self.levels).rev() {
            let address = entry_address(table, level, l2);
            let entry = EptEntry::from_raw(memory.read_u64(address)?);
            table = if !is_present(entry) {
                let next = self.allocate_table(memory)?;
                let pointer = EptEntry::from_raw(next.address().raw() | Self::TABLE_RIGHTS.bits());
                memory.write_u64(address, pointer.raw())?;
                next
            } else if is_large_leaf(entry, level) {
                return Err(Ept12BuildError::LargePageInTheWay { l2, level });
            } else {
                L1Gpa::new(entry.address()).gfn()
            };
        }
        memory.write_u64(entry_address(table, size.level(), l2), leaf)?;
        Ok(())
    }

    /// Clears the entry that maps `size` pages for `l2`, if the tables
    /// leading to it exist. Returns whether there was a table to clear it
    /// in.
    ///
    /// # Errors
    ///
    /// [`NotL1Memory`] if a table pointer leads outside L1 memory.
    pub fn unmap(
        &self,
        memory: &mut TestMemory,
        l2: L2Gpa,
        size: PageSize,
    ) -> Result<bool, Ept12BuildError> {
        match self.entry_address(memory, l2, size.level())? {
            Some(address) => {
                memory.write_u64(address, 0)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The L1 address of the entry at `level` (1 = PTE) that translates
    /// `l2`, following present non-leaf entries from the root; `None` when
    /// the walk ends (not present, or a large leaf) above `level`. Tests use
    /// it to inspect A/D flags or to rewrite one entry.
    ///
    /// # Errors
    ///
    /// [`NotL1Memory`] if a table pointer leads outside L1 memory.
    pub fn entry_address(
        &self,
        memory: &TestMemory,
        l2: L2Gpa,
        level: u8,
    ) -> Result<Option<L1Gpa>, Ept12BuildError> {
        if level == 0 || level > self.levels {
            return Ok(None);
        }
        let mut table = self.root;
        for upper in (level + 1..=self.levels).rev() {
            let entry = EptEntry::from_raw(memory.read_u64(entry_address(table, upper, l2))?);
            if !is_present(entry) || is_large_leaf(entry, upper) {
                return Ok(None);
            }
            table = L1Gpa::new(entry.address()).gfn();
        }
        Ok(Some(entry_address(table, level, l2)))
    }

    /// Writes raw `value` as entry `index` of the table page `table`.
    ///
    /// # Errors
    ///
    /// [`Ept12BuildError`] if `index` is not below 512 or `table` is not L1
    /// memory.
    pub fn set_entry(
        memory: &mut TestMemory,
        table: L1Gfn,
        index: usize,
        value: u64,
    ) -> Result<(), Ept12BuildError> {
        memory.write_u64(raw_entry_address(table, index)?, value)?;
        Ok(())
    }

    /// Reads raw entry `index` of the table page `table`.
    ///
    /// # Errors
    ///
    /// [`Ept12BuildError`] if `index` is not below 512 or `table` is not L1
    /// memory.
    pub fn entry(memory: &TestMemory, table: L1Gfn, index: usize) -> Result<u64, Ept12BuildError> {
        Ok(memory.read_u64(raw_entry_address(table, index)?)?)
    }
}

/// The level whose leaves map `size` pages.
const fn level_of(size: PageSize) -> hv_arch_vmx::ept::EptLevel {
    match size {
        PageSize::Size4K => hv_arch_vmx::ept::EptLevel::Pte,
        PageSize::Size2M => hv_arch_vmx::ept::EptLevel::Pde,
        PageSize::Size1G => hv_arch_vmx::ept::EptLevel::Pdpte,
    }
}

/// Whether `entry` is present for the builder's purposes: any right,
/// user-execute included (SDM 29.3.2).
const fn is_present(entry: EptEntry) -> bool {
    entry.is_present(true)
}

/// Whether `entry`, at `level`, maps a large page (bit 7 in a PDE or PDPTE).
const fn is_large_leaf(entry: EptEntry, level: u8) -> bool {
    (level == 2 || level == 3) && entry.page_size_bit()
}

/// The address of the entry translating `l2` at `level` in `table`.
const fn entry_address(table: L1Gfn, level: u8, l2: L2Gpa) -> L1Gpa {
    let shift = 12 + 9 * (level as u32 - 1);
    let index = (l2.raw() >> shift) & 0x1FF;
    table.address().wrapping_add(index * 8)
}

/// The address of entry `index` of `table`.
fn raw_entry_address(table: L1Gfn, index: usize) -> Result<L1Gpa, Ept12BuildError> {
    if index >= ENTRIES {
        return Err(Ept12BuildError::IndexOutOfRange(index));
    }
    Ok(table.address().wrapping_add(index as u64 * 8))
}

// ---------------------------------------------------------------------------
// Invariant checker
// ---------------------------------------------------------------------------

/// Table visits one [`InvariantChecker::check_roots`] call may make before
/// it gives up with [`InvariantViolation::TooMuchWork`] (each visit reads
/// 512 entries). Shadow tables shared between many positions make the
/// number of visits the product of fan-outs; this keeps checking bounded.
pub const DEFAULT_TABLE_VISIT_LIMIT: usize = 1 << 16;

/// One live root: the EPTP12 L1 gave and the EPTP02 the engine built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RootPair {
    /// L1's EPT pointer.
    pub eptp12: Eptp,
    /// The shadow EPT pointer.
    pub eptp02: Eptp,
}

impl core::fmt::Display for RootPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "EPTP12 {:#x} / EPTP02 {:#x}",
            self.eptp12.raw(),
            self.eptp02.raw()
        )
    }
}

/// What a successful invariant check covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct InvariantReport {
    /// Roots checked.
    pub roots: usize,
    /// Table visits (a table shared by several positions counts once per
    /// position, as hardware would walk it).
    pub tables: usize,
    /// Present EPT02 leaves found.
    pub leaves: usize,
    /// 4-KByte pages checked against EPT01 (and the oracle): one per 4-KByte
    /// leaf, three (first, middle, last) per large leaf.
    pub pages_checked: usize,
}

/// The first way the shadow EPT02 state was found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum InvariantViolation {
    /// A live root's EPTP12 has a walk length the walker refuses.
    #[error("{root}: EPTP12 walk length is not 4 or 5")]
    InvalidEptp12 {
        /// The root.
        root: RootPair,
    },
    /// A live root's EPTP02 has a walk length hardware refuses.
    #[error("{root}: EPTP02 walk length is not 4 or 5")]
    InvalidEptp02 {
        /// The root.
        root: RootPair,
    },
    /// The EPTP02 or a non-leaf EPT02 entry points to a frame the allocator
    /// has not handed out (freed, foreign, or garbage).
    #[error("{root}: level-{level} table for {l2} is {table}, not an allocated frame")]
    TableNotAllocated {
        /// The root.
        root: RootPair,
        /// The level of the table pointed to.
        level: u8,
        /// The first L2 address the table translates.
        l2: L2Gpa,
        /// The frame pointed to.
        table: HostPa,
    },
    /// One frame is used as a table at two levels (shadow tables are keyed
    /// by level, so this is a cycle or garbage).
    #[error("{table} is used as a level-{first} and a level-{second} table")]
    TableAtTwoLevels {
        /// The frame.
        table: HostPa,
        /// The level it was first seen at.
        first: u8,
        /// The other level.
        second: u8,
    },
    /// A present EPT02 entry that hardware would report as an EPT
    /// misconfiguration.
    #[error("{root}: level-{level} entry {entry:#x} for {l2} is misconfigured: {reason}")]
    Misconfigured {
        /// The root.
        root: RootPair,
        /// The level of the entry.
        level: u8,
        /// The first L2 address the entry translates.
        l2: L2Gpa,
        /// The entry.
        entry: u64,
        /// Why hardware would reject it.
        reason: hv_arch_vmx::ept::EptMisconfiguration,
    },
    /// An EPT02 leaf maps a host frame that backs no L1 memory.
    #[error("{root}: {l2} maps {host}, which backs no L1 memory")]
    NotL1Memory {
        /// The root.
        root: RootPair,
        /// The L2 address.
        l2: L2Gpa,
        /// Where EPT02 sends it.
        host: HostPa,
    },
    /// An EPT02 leaf maps an L2 address the oracle does not map.
    #[error("{root}: {l2} is mapped to {host} but the oracle maps it nowhere")]
    NoOracleMapping {
        /// The root.
        root: RootPair,
        /// The L2 address.
        l2: L2Gpa,
        /// Where EPT02 sends it.
        host: HostPa,
    },
    /// An EPT02 leaf maps an L2 address somewhere else than the oracle.
    #[error("{root}: {l2} is mapped to {host} but the oracle says {oracle}")]
    WrongHost {
        /// The root.
        root: RootPair,
        /// The L2 address.
        l2: L2Gpa,
        /// Where EPT02 sends it.
        host: HostPa,
        /// Where the oracle sends it.
        oracle: HostPa,
    },
    /// An EPT02 translation allows more than the oracle.
    #[error("{root}: {l2} allows {permissions:?} but the oracle only {oracle:?}")]
    TooPermissive {
        /// The root.
        root: RootPair,
        /// The L2 address.
        l2: L2Gpa,
        /// The rights of the EPT02 walk.
        permissions: EptPermissions,
        /// The oracle's rights.
        oracle: EptPermissions,
    },
    /// An EPT02 leaf's memory type is not EPT01's for the page.
    #[error("{root}: {l2} has memory type {memory_type} but EPT01 says {ept01:?}")]
    WrongMemoryType {
        /// The root.
        root: RootPair,
        /// The L2 address.
        l2: L2Gpa,
        /// The EPT02 leaf's memory type bits.
        memory_type: u8,
        /// EPT01's memory type.
        ept01: EptMemoryType,
    },
    /// EPT02 allows writes to a page whose EPT12 leaf is not yet dirty while
    /// EPTP12 enables A/D flags: L1 would miss the dirty flag (SDM 29.3.5).
    #[error("{root}: {l2} is writable but its EPT12 leaf is not dirty")]
    WritableBeforeDirty {
        /// The root.
        root: RootPair,
        /// The L2 address.
        l2: L2Gpa,
    },
    /// The check needed more table visits than its limit.
    #[error("more than {limit} EPT02 table visits")]
    TooMuchWork {
        /// The limit.
        limit: usize,
    },
}

/// Checks shadow EPT02 tables the way hardware reads them.
///
/// From each root's shadow EPT pointer it walks the tables through the
/// frame allocator (4 or 5 levels, the rights of every entry on the way
/// intersected, large leaves at levels 2 and 3), and for every present leaf checks (on one 4-KByte page of a 4-KByte leaf
/// and on the first, middle and last 4-KByte pages of a large leaf, to keep
/// checks fast):
///
/// - always: the host frame backs L1 memory ([`L1Backing`]), every table
///   pointer names an allocated frame, no frame serves two levels, no
///   present entry is misconfigured;
/// - unless [`InvariantChecker::memory_safety_only`]: the translation is
///   the oracle's ([`crate::oracle::compose`]) with at most its rights, the
///   memory type is EPT01's, and with A/D enabled a writable page's EPT12
///   leaf is dirty.
///
/// The oracle checks hold only while EPT12 is in sync with what the engine
/// last saw: after L1 rewrites EPT12 without INVEPT, hardware may still use
/// the old translation, and so may EPT02. Use the memory-safety checks
/// alone in that window.
///
/// Leaves whose rights along the walk are empty grant nothing and are only
/// counted. Work is bounded by a table-visit limit.
#[derive(Debug)]
pub struct InvariantChecker<'a, M: ?Sized, E: ?Sized> {
    /// L1 memory (EPT12).
    memory: &'a M,
    /// EPT01.
    ept01: &'a E,
    /// The misconfiguration rules (the engine's walk context).
    context: EptWalkContext,
    /// Mode-based execute control for L2.
    mode_based_execute: bool,
    /// Also compare with the oracle.
    oracle: bool,
    /// Table visits allowed per check.
    visit_limit: usize,
}

/// Mutable state of one check.
struct CheckState {
    /// What was covered so far.
    report: InvariantReport,
    /// The level each table frame was first seen at.
    levels: HashMap<HostPa, u8>,
    /// Tables still to visit: (frame, level, first L2 address, rights so
    /// far).
    pending: Vec<(HostPa, u8, L2Gpa, EptPermissions)>,
}

impl<'a, M, E> InvariantChecker<'a, M, E>
where
    M: L1Memory + ?Sized,
    E: Ept01 + L1Backing + ?Sized,
{
    /// A full checker for shadow tables built from `memory` and `ept01`
    /// with the engine's walk `context` and mode-based execute setting.
    pub fn new(
        memory: &'a M,
        ept01: &'a E,
        context: EptWalkContext,
        mode_based_execute: bool,
    ) -> Self {
        let mut context = context;
        context.mode_based_execute = mode_based_execute;
        Self {
            memory,
            ept01,
            context,
            mode_based_execute,
            oracle: true,
            visit_limit: DEFAULT_TABLE_VISIT_LIMIT,
        }
    }

    /// Returns this checker without the oracle checks: only what must hold
    /// even while EPT12 is out of sync (see the type's documentation).
    #[must_use]
    pub fn memory_safety_only(mut self) -> Self {
        self.oracle = false;
        self
    }

    /// Returns this checker with a different table-visit limit.
    #[must_use]
    pub fn with_table_visit_limit(mut self, limit: usize) -> Self {
        self.visit_limit = limit;
        self
    }

    /// Checks every root in `roots`, whose tables live in `frames`.
    ///
    /// # Errors
    ///
    /// The first [`InvariantViolation`] found.
    pub fn check_roots<F, I>(
        &self,
        frames: &F,
        roots: I,
    ) -> Result<InvariantReport, InvariantViolation>
    where
        F: FrameAllocator + AllocatedFrames + ?Sized,
        I: IntoIterator<Item = (Eptp, Eptp)>,
    {
        let mut state = CheckState {
            report: InvariantReport::default(),
            levels: HashMap::new(),
            pending: Vec::new(),
        };
        for (eptp12, eptp02) in roots {
            self.check_root(frames, RootPair { eptp12, eptp02 }, &mut state)?;
            state.report.roots += 1;
        }
        Ok(state.report)
    }

    /// Walks the tables of one root.
    fn check_root<F>(
        &self,
        frames: &F,
        root: RootPair,
        state: &mut CheckState,
    ) -> Result<(), InvariantViolation>
    where
        F: FrameAllocator + AllocatedFrames + ?Sized,
    {
        let config = if self.oracle {
            let config =
                crate::walk::WalkConfig::new(root.eptp12, self.context, self.mode_based_execute)
                    .map_err(|_| InvariantViolation::InvalidEptp12 { root })?;
            Some(config)
        } else {
            None
        };
        let levels = root.eptp02.walk_levels();
        if levels != 4 && levels != 5 {
            return Err(InvariantViolation::InvalidEptp02 { root });
        }
        state.pending.clear();
        state.pending.push((
            HostPa::new(root.eptp02.root_address()),
            levels,
            L2Gpa::new(0),
            EptPermissions::all(),
        ));
        // Each pending table is one level below its parent, so this ends;
        // the visit limit bounds the fan-out.
        while let Some((table, level, base, rights)) = state.pending.pop() {
            if !frames.is_allocated(table) {
                return Err(InvariantViolation::TableNotAllocated {
                    root,
                    level,
                    l2: base,
                    table,
                });
            }
            match state.levels.insert(table, level) {
                Some(first) if first != level => {
                    return Err(InvariantViolation::TableAtTwoLevels {
                        table,
                        first,
                        second: level,
                    });
                }
                _ => {}
            }
            state.report.tables += 1;
            if state.report.tables > self.visit_limit {
                return Err(InvariantViolation::TooMuchWork {
                    limit: self.visit_limit,
                });
            }
            let Some(ept_level) = hv_arch_vmx::ept::EptLevel::from_number(level) else {
                // Unreachable by construction (levels 1..=5); treat as garbage.
                return Err(InvariantViolation::InvalidEptp02 { root });
            };
            let entries = *frames.table(table);
            for (index, &raw) in entries.iter().enumerate() {
                let entry = EptEntry::from_raw(raw);
                if !entry.is_present(self.mode_based_execute) {
                    continue;
                }
                let l2 = base.wrapping_add((index as u64) << ept_level.shift());
                if let Some(reason) = entry.misconfiguration(ept_level, &self.context) {
                    return Err(InvariantViolation::Misconfigured {
                        root,
                        level,
                        l2,
                        entry: raw,
                        reason,
                    });
                }
                // SDM 29.3.3.2: rights are ANDed along the walk.
                let rights =
                    rights.along_walk(entry.permissions().effective(self.mode_based_execute));
                if entry.is_leaf(ept_level) {
                    self.check_leaf(root, config, ept_level, entry, l2, rights, state)?;
                } else if level > 1 {
                    state
                        .pending
                        .push((HostPa::new(entry.address()), level - 1, l2, rights));
                }
            }
        }
        Ok(())
    }

    /// Checks one present leaf mapping `l2` with `rights` along the walk.
    #[allow(clippy::too_many_arguments, reason = "private helper of one walk")]
    fn check_leaf(
        &self,
        root: RootPair,
        config: Option<crate::walk::WalkConfig>,
        level: hv_arch_vmx::ept::EptLevel,
        entry: EptEntry,
        l2: L2Gpa,
        rights: EptPermissions,
        state: &mut CheckState,
    ) -> Result<(), InvariantViolation> {
        state.report.leaves += 1;
        if rights.is_empty() {
            return Ok(());
        }
        let size = level.coverage();
        let frame = entry.address() & !(size - 1);
        let samples: &[u64] = if size == PAGE_SIZE {
            &[0]
        } else {
            &[0, size / 2, size - PAGE_SIZE]
        };
        for &offset in samples {
            state.report.pages_checked += 1;
            let l2 = l2.wrapping_add(offset);
            let host = HostPa::new(frame + offset);
            if !self.ept01.backs(host) {
                return Err(InvariantViolation::NotL1Memory { root, l2, host });
            }
            if let Some(config) = config {
                self.check_against_oracle(root, config, entry, l2, host, rights)?;
            }
        }
        Ok(())
    }

    /// Compares the EPT02 translation of `l2` (to `host`, with `rights`)
    /// with the oracle.
    fn check_against_oracle(
        &self,
        root: RootPair,
        config: crate::walk::WalkConfig,
        entry: EptEntry,
        l2: L2Gpa,
        host: HostPa,
        rights: EptPermissions,
    ) -> Result<(), InvariantViolation> {
        let Some(oracle) =
            crate::oracle::compose(self.memory, self.ept01, root.eptp12, l2, &config)
        else {
            return Err(InvariantViolation::NoOracleMapping { root, l2, host });
        };
        if oracle.host != host {
            return Err(InvariantViolation::WrongHost {
                root,
                l2,
                host,
                oracle: oracle.host,
            });
        }
        let allowed = oracle.permissions.effective(self.mode_based_execute);
        if !allowed.contains(rights) {
            return Err(InvariantViolation::TooPermissive {
                root,
                l2,
                permissions: rights,
                oracle: allowed,
            });
        }
        if let Some(ept01) = self.ept01.translate(oracle.l1_gpa)
            && ept01.memory_type.bits() != entry.memory_type_bits()
        {
            return Err(InvariantViolation::WrongMemoryType {
                root,
                l2,
                memory_type: entry.memory_type_bits(),
                ept01: ept01.memory_type,
            });
        }
        if config.accessed_dirty && rights.contains(EptPermissions::WRITE) {
            let dirty = crate::walk::inspect(self.memory, root.eptp12, l2, &config)
                .ok()
                .and_then(|translation| translation.leaf())
                .is_some_and(|leaf| EptEntry::from_raw(leaf.entry).dirty());
            if !dirty {
                return Err(InvariantViolation::WritableBeforeDirty { root, l2 });
            }
        }
        Ok(())
    }
}

/// Checks every live root of `mmu` against `memory` and `ept01` with all
/// of [`InvariantChecker`]'s checks (memory safety and the oracle), using
/// the engine's own walk context. Valid whenever EPT12 has not been changed
/// since the engine last synchronised with it (no L1 writes to EPT12 tables
/// pending an INVEPT); EPT01 changes must have been reported with
/// `Mmu::ept01_changed`.
///
/// # Errors
///
/// The first [`InvariantViolation`] found.
pub fn check_invariants<F, M, E>(
    mmu: &Mmu<F>,
    memory: &M,
    ept01: &E,
) -> Result<InvariantReport, InvariantViolation>
where
    F: FrameAllocator + AllocatedFrames,
    M: L1Memory + ?Sized,
    E: Ept01 + L1Backing + ?Sized,
{
    let config = mmu.config();
    InvariantChecker::new(
        memory,
        ept01,
        config.walk_context,
        config.mode_based_execute,
    )
    .check_roots(mmu.frames(), mmu.live_roots())
}

/// Checks every live root of `mmu` with the memory-safety checks only
/// (every leaf maps L1 memory, every table pointer is an allocated frame,
/// no frame at two levels, nothing misconfigured): what must hold at every
/// step, even while L1 has rewritten EPT12 without INVEPT.
///
/// # Errors
///
/// The first [`InvariantViolation`] found.
pub fn check_memory_safety<F, M, E>(
    mmu: &Mmu<F>,
    memory: &M,
    ept01: &E,
) -> Result<InvariantReport, InvariantViolation>
where
    F: FrameAllocator + AllocatedFrames,
    M: L1Memory + ?Sized,
    E: Ept01 + L1Backing + ?Sized,
{
    let config = mmu.config();
    InvariantChecker::new(
        memory,
        ept01,
        config.walk_context,
        config.mode_based_execute,
    )
    .memory_safety_only()
    .check_roots(mmu.frames(), mmu.live_roots())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle;
    use crate::walk::{self, WalkConfig};
    use hv_arch_vmx::ept::EptWalkContext;

    const MIB: u64 = 1 << 20;
    const RWX: EptPermissions = EptPermissions::READ_WRITE_EXECUTE;

    #[test]
    fn byte_access_crosses_words_and_pages_and_refuses_outside_memory() {
        let mut memory = TestMemory::new(2 * PAGE_SIZE);
        let data: Vec<u8> = (1..=20).collect();
        let at = L1Gpa::new(PAGE_SIZE - 7);
        memory.write_bytes(at, &data).unwrap();
        let mut back = [0u8; 20];
        memory.read_bytes(at, &mut back).unwrap();
        assert_eq!(back.as_slice(), data.as_slice());
        // Little-endian words: byte 7 of the last word of page 0 is data[6].
        assert_eq!(
            memory.read_u64(L1Gpa::new(PAGE_SIZE - 8)).unwrap() >> 56,
            u64::from(data[6])
        );
        let last = L1Gpa::new(2 * PAGE_SIZE - 4);
        let before = memory.clone();
        assert_eq!(
            memory.write_bytes(last, &[0xff; 8]),
            Err(NotL1Memory { gpa: last })
        );
        assert_eq!(
            memory.read_u64(last).unwrap(),
            before.read_u64(last).unwrap()
        );
        assert!(
            memory
                .read_bytes(L1Gpa::new(u64::MAX), &mut [0; 2])
                .is_err()
        );
        assert!(memory.read_bytes(last, &mut []).is_ok());
    }

    fn context() -> EptWalkContext {
        EptWalkContext {
            maxphyaddr: 46,
            execute_only: true,
            pages_2m: true,
            pages_1g: true,
            mode_based_execute: false,
        }
    }

    // --- TestMemory -------------------------------------------------------

    #[test]
    fn memory_reads_zero_until_written_and_is_sparse() {
        let mut memory = TestMemory::new(16 * MIB);
        assert_eq!(memory.read_u64(L1Gpa::new(0x1000)), Ok(0));
        assert_eq!(memory.pages_stored(), 0);
        memory.write_u64(L1Gpa::new(0x1008), 0xDEAD_BEEF).unwrap();
        assert_eq!(memory.read_u64(L1Gpa::new(0x1008)), Ok(0xDEAD_BEEF));
        assert_eq!(memory.read_u64(L1Gpa::new(0x1000)), Ok(0));
        // The low three bits select nothing: same word.
        assert_eq!(memory.read_u64(L1Gpa::new(0x100F)), Ok(0xDEAD_BEEF));
        assert_eq!(memory.pages_stored(), 1);
    }

    #[test]
    fn memory_rejects_addresses_beyond_its_size() {
        let mut memory = TestMemory::new(2 * MIB);
        assert_eq!(memory.len(), 2 * MIB);
        assert!(memory.contains(L1Gpa::new(2 * MIB - 8)));
        assert!(!memory.contains(L1Gpa::new(2 * MIB)));
        let outside = L1Gpa::new(2 * MIB);
        assert_eq!(memory.read_u64(outside), Err(NotL1Memory { gpa: outside }));
        assert_eq!(
            memory.write_u64(outside, 1),
            Err(NotL1Memory { gpa: outside })
        );
        assert_eq!(
            L1Memory::compare_exchange_u64(&mut memory, L1Gpa::new(u64::MAX), 0, 1),
            Err(NotL1Memory {
                gpa: L1Gpa::new(u64::MAX)
            })
        );
        assert_eq!(
            memory.zero_page(outside.gfn()),
            Err(NotL1Memory { gpa: outside })
        );
    }

    #[test]
    fn memory_size_is_rounded_up_to_pages() {
        assert_eq!(TestMemory::new(1).len(), PAGE_SIZE);
        assert_eq!(TestMemory::new(0).len(), 0);
        assert!(TestMemory::new(0).is_empty());
        assert_eq!(TestMemory::new(u64::MAX).len(), !(PAGE_SIZE - 1));
    }

    #[test]
    fn compare_exchange_replaces_only_the_expected_value_and_counts() {
        let mut memory = TestMemory::new(MIB);
        let gpa = L1Gpa::new(0x2000);
        memory.write_u64(gpa, 5).unwrap();
        assert_eq!(memory.compare_exchange_u64(gpa, 4, 9), Ok(false));
        assert_eq!(memory.read_u64(gpa), Ok(5));
        assert_eq!(memory.compare_exchange_writes(), 0);
        assert_eq!(memory.compare_exchange_u64(gpa, 5, 9), Ok(true));
        assert_eq!(memory.read_u64(gpa), Ok(9));
        assert_eq!(memory.compare_exchange_writes(), 1);
        memory.reset_compare_exchange_writes();
        assert_eq!(memory.compare_exchange_writes(), 0);
    }

    #[test]
    fn zero_page_clears_a_page() {
        let mut memory = TestMemory::new(MIB);
        memory.write_u64(L1Gpa::new(0x3FF8), 7).unwrap();
        memory.zero_page(L1Gfn::new(3)).unwrap();
        assert_eq!(memory.read_u64(L1Gpa::new(0x3FF8)), Ok(0));
    }

    // --- TestEpt01 --------------------------------------------------------

    const HOST: HostPa = HostPa::new(0x10_0000_0000);

    #[test]
    fn identity_maps_every_page_at_base_plus_gpa() {
        let ept01 = TestEpt01::identity(4 * MIB, HOST);
        let mapping = ept01.translate(L1Gpa::new(0x12_3456)).unwrap();
        assert_eq!(mapping.frame, HostPa::new(0x10_0012_3000));
        assert_eq!(mapping.size, PageSize::Size4K);
        assert_eq!(mapping.permissions, TestEpt01::FULL_RIGHTS);
        assert_eq!(mapping.memory_type, EptMemoryType::WriteBack);
        assert_eq!(ept01.translate(L1Gpa::new(4 * MIB)), None);
        assert!(ept01.backs(HostPa::new(0x10_0012_3456)));
        assert!(!ept01.backs(HostPa::new(0x10_0000_0000 + 4 * MIB)));
        assert!(!ept01.backs(HostPa::new(0x0FFF_FFFF_F000)));
        assert!(!ept01.backs(DEFAULT_FRAME_BASE));
    }

    #[test]
    fn unmap_protect_remap_and_reset() {
        let mut ept01 = TestEpt01::identity(4 * MIB, HOST);
        let gfn = L1Gfn::new(5);
        let default_frame = HOST.wrapping_add(5 * PAGE_SIZE);

        ept01.unmap(gfn);
        assert_eq!(ept01.translate(gfn.address()), None);
        assert!(!ept01.backs(default_frame));
        // Protecting an unmapped page does nothing.
        ept01.protect(gfn, EptPermissions::READ);
        assert_eq!(ept01.translate(gfn.address()), None);

        ept01.reset(gfn);
        ept01.protect(gfn, EptPermissions::READ);
        let mapping = ept01.translate(gfn.address()).unwrap();
        assert_eq!(mapping.frame, default_frame);
        assert_eq!(mapping.permissions, EptPermissions::READ);
        assert!(ept01.backs(default_frame));

        let elsewhere = HostPa::new(0x20_0000_0000);
        ept01.map_page(gfn, elsewhere, RWX, EptMemoryType::Uncacheable);
        let mapping = ept01.translate(gfn.address()).unwrap();
        assert_eq!(mapping.frame, elsewhere);
        assert_eq!(mapping.memory_type, EptMemoryType::Uncacheable);
        assert!(ept01.backs(elsewhere.wrapping_add(0xFFF)));
        assert!(!ept01.backs(default_frame));

        ept01.reset(gfn);
        assert!(!ept01.backs(elsewhere));
        assert!(ept01.backs(default_frame));
        assert_eq!(ept01.translate(gfn.address()).unwrap().frame, default_frame);
    }

    #[test]
    fn set_takes_translate_output() {
        let mut ept01 = TestEpt01::identity(8 * MIB, HOST).with_large_pages(true);
        let gfn = L1Gfn::new(0x201);
        let source = ept01.translate(gfn.address()).unwrap();
        assert_eq!(source.size, PageSize::Size2M);
        // Setting a page to what it already is keeps the region uniform.
        ept01.set(gfn, Some(source));
        assert_eq!(ept01.translate(gfn.address()), Some(source));
        // A 2-MByte mapping elsewhere: gfn 0x201 is its second 4-KByte page.
        let elsewhere = HostPa::new(0x40_0000_0000);
        ept01.set(
            gfn,
            Some(Ept01Mapping {
                frame: elsewhere,
                size: PageSize::Size2M,
                ..source
            }),
        );
        let mapping = ept01.translate(gfn.address()).unwrap();
        assert_eq!(mapping.size, PageSize::Size4K);
        assert_eq!(mapping.frame, elsewhere.wrapping_add(PAGE_SIZE));
        ept01.set(gfn, None);
        assert_eq!(ept01.translate(gfn.address()), None);
    }

    #[test]
    fn large_pages_where_the_region_is_uniform() {
        let mut ept01 = TestEpt01::identity(5 * MIB, HOST).with_large_pages(true);
        let mapping = ept01.translate(L1Gpa::new(0x2F_F123)).unwrap();
        assert_eq!(mapping.size, PageSize::Size2M);
        assert_eq!(mapping.frame, HOST.wrapping_add(0x20_0000));
        // The last region is only half inside L1 memory.
        assert_eq!(
            ept01.translate(L1Gpa::new(0x40_0000)).unwrap().size,
            PageSize::Size4K
        );

        // One protected page splits its region, for every page of it.
        ept01.protect(L1Gfn::new(0x3FF), EptPermissions::READ);
        for gfn in [0x200, 0x3FE, 0x3FF] {
            let mapping = ept01.translate(L1Gfn::new(gfn).address()).unwrap();
            assert_eq!(mapping.size, PageSize::Size4K, "gfn {gfn:#x}");
        }
        assert_eq!(
            ept01.translate(L1Gpa::new(0)).unwrap().size,
            PageSize::Size2M
        );
        // Protecting every page alike makes it uniform again.
        for gfn in 0x200..0x400 {
            ept01.protect(L1Gfn::new(gfn), EptPermissions::READ);
        }
        let mapping = ept01.translate(L1Gpa::new(0x30_0000)).unwrap();
        assert_eq!(mapping.size, PageSize::Size2M);
        assert_eq!(mapping.permissions, EptPermissions::READ);
        ept01.reset(L1Gfn::new(0x3FF));
        assert_eq!(
            ept01.translate(L1Gpa::new(0x30_0000)).unwrap().size,
            PageSize::Size4K
        );

        // A host base that is not 2-MByte aligned allows no large page.
        let shifted =
            TestEpt01::identity(4 * MIB, HOST.wrapping_add(PAGE_SIZE)).with_large_pages(true);
        assert_eq!(
            shifted.translate(L1Gpa::new(0)).unwrap().size,
            PageSize::Size4K
        );
        // Nor does the default.
        let small = TestEpt01::identity(4 * MIB, HOST);
        assert_eq!(
            small.translate(L1Gpa::new(0)).unwrap().size,
            PageSize::Size4K
        );
    }

    // --- FramePool --------------------------------------------------------

    #[test]
    fn pool_hands_out_zeroed_frames_up_to_capacity() {
        let mut pool = FramePool::new(2);
        assert_eq!(pool.capacity(), 2);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!(a, DEFAULT_FRAME_BASE);
        assert_eq!(b, DEFAULT_FRAME_BASE.wrapping_add(PAGE_SIZE));
        assert_eq!(pool.allocate(), None);
        assert_eq!(pool.in_use(), 2);
        pool.table_mut(a)[7] = 0x1234;
        assert_eq!(pool.table(a)[7], 0x1234);
        pool.free(a);
        assert!(!pool.is_allocated(a));
        assert!(pool.is_allocated(b));
        assert_eq!(pool.in_use(), 1);
        let again = pool.allocate().unwrap();
        assert_eq!(again, a, "the last freed frame is reused first");
        assert!(pool.table(again).iter().all(|&entry| entry == 0));
        assert_eq!(pool.peak_in_use(), 2);
        assert_eq!(pool.allocations(), 3);
        assert_eq!(pool.live_frames().count(), 2);
    }

    #[test]
    fn pool_with_base_uses_it() {
        let mut pool = FramePool::with_base(1, HostPa::new(0x5000_0FFF));
        assert_eq!(pool.base(), HostPa::new(0x5000_0000));
        assert_eq!(pool.allocate(), Some(HostPa::new(0x5000_0000)));
        assert!(!pool.is_allocated(HostPa::new(0x5000_0008)));
        assert!(!pool.is_allocated(HostPa::new(0x4FFF_F000)));
    }

    #[test]
    #[should_panic(expected = "is not allocated")]
    fn pool_panics_on_double_free() {
        let mut pool = FramePool::new(1);
        let frame = pool.allocate().unwrap();
        pool.free(frame);
        pool.free(frame);
    }

    #[test]
    #[should_panic(expected = "does not belong to this pool")]
    fn pool_panics_on_foreign_frame() {
        let mut pool = FramePool::new(1);
        pool.free(HostPa::new(0x1000));
    }

    #[test]
    #[should_panic(expected = "FramePool::table: ")]
    fn pool_panics_on_reading_a_freed_frame() {
        let mut pool = FramePool::new(1);
        let frame = pool.allocate().unwrap();
        pool.free(frame);
        let _ = pool.table(frame);
    }

    // --- Ept12Builder -----------------------------------------------------

    #[test]
    fn builder_writes_the_expected_raw_entries() {
        let mut memory = TestMemory::new(64 * MIB);
        let mut ept12 = Ept12Builder::new(&mut memory, L1Gpa::new(0x10_0000)).unwrap();
        let l2 = L2Gpa::new(0x8040_3000); // PML4 0, PDPT 2, PD 2, PT 3
        ept12
            .map(
                &mut memory,
                l2,
                L1Gpa::new(0x20_5000),
                PageSize::Size4K,
                EptPermissions::READ,
            )
            .unwrap();
        let tables = ept12.table_pages().to_vec();
        assert_eq!(
            tables,
            [0x100, 0x101, 0x102, 0x103].map(L1Gfn::new),
            "root, PDPT, PD, PT from the bump area"
        );
        let table_rights = 0b111 | 1 << 10;
        assert_eq!(
            Ept12Builder::entry(&memory, tables[0], 0),
            Ok(0x10_1000 | table_rights)
        );
        assert_eq!(
            Ept12Builder::entry(&memory, tables[1], 2),
            Ok(0x10_2000 | table_rights)
        );
        assert_eq!(
            Ept12Builder::entry(&memory, tables[2], 2),
            Ok(0x10_3000 | table_rights)
        );
        // PTE: address, R, memory type WB (6) in bits 5:3.
        assert_eq!(
            Ept12Builder::entry(&memory, tables[3], 3),
            Ok(0x20_5000 | 1 | 6 << 3)
        );
        assert_eq!(
            ept12.entry_address(&memory, l2, 1),
            Ok(Some(L1Gpa::new(0x10_3000 + 3 * 8)))
        );

        // SDM 25.6.11: WB (6), walk length 4 (3 in bits 5:3), A/D bit 6.
        assert_eq!(ept12.eptp(false).raw(), 0x10_0000 | 6 | 3 << 3);
        assert_eq!(ept12.eptp(true).raw(), 0x10_0000 | 6 | 3 << 3 | 1 << 6);
    }

    #[test]
    fn builder_maps_large_pages_with_bit_7() {
        let mut memory = TestMemory::new(64 * MIB);
        let mut ept12 = Ept12Builder::new(&mut memory, L1Gpa::new(0)).unwrap();
        ept12
            .map(
                &mut memory,
                L2Gpa::new(1 << 30),
                L1Gpa::new(0),
                PageSize::Size1G,
                RWX,
            )
            .unwrap();
        ept12
            .map(
                &mut memory,
                L2Gpa::new(0x20_0000),
                L1Gpa::new(0x40_0000),
                PageSize::Size2M,
                RWX,
            )
            .unwrap();
        let pdpt = ept12.table_pages()[1];
        assert_eq!(
            Ept12Builder::entry(&memory, pdpt, 1),
            Ok(0b111 | 6 << 3 | 1 << 7)
        );
        let pd = ept12.table_pages()[2];
        assert_eq!(
            Ept12Builder::entry(&memory, pd, 1),
            Ok(0x40_0000 | 0b111 | 6 << 3 | 1 << 7)
        );
        // A 4-KByte page inside the 1-GByte page cannot get tables.
        assert_eq!(
            ept12.map(
                &mut memory,
                L2Gpa::new(1 << 30),
                L1Gpa::new(0),
                PageSize::Size4K,
                RWX
            ),
            Err(Ept12BuildError::LargePageInTheWay {
                l2: L2Gpa::new(1 << 30),
                level: 3
            })
        );
        assert_eq!(
            ept12.entry_address(&memory, L2Gpa::new(1 << 30), 1),
            Ok(None)
        );
    }

    #[test]
    fn builder_rejects_misalignment_and_bad_input() {
        let mut memory = TestMemory::new(4 * MIB);
        assert_eq!(
            Ept12Builder::new(&mut memory, L1Gpa::new(0x10)).unwrap_err(),
            Ept12BuildError::Misaligned {
                address: 0x10,
                size: PageSize::Size4K
            }
        );
        assert_eq!(
            Ept12Builder::with_levels(&mut memory, L1Gpa::new(0), 3).unwrap_err(),
            Ept12BuildError::InvalidLevels(3)
        );
        assert!(matches!(
            Ept12Builder::new(&mut memory, L1Gpa::new(4 * MIB)),
            Err(Ept12BuildError::NotL1Memory(_))
        ));
        let mut ept12 = Ept12Builder::new(&mut memory, L1Gpa::new(0)).unwrap();
        assert!(matches!(
            ept12.map(
                &mut memory,
                L2Gpa::new(0x1000),
                L1Gpa::new(0),
                PageSize::Size2M,
                RWX
            ),
            Err(Ept12BuildError::Misaligned { .. })
        ));
        assert!(matches!(
            ept12.map(
                &mut memory,
                L2Gpa::new(0),
                L1Gpa::new(0x1000),
                PageSize::Size2M,
                RWX
            ),
            Err(Ept12BuildError::Misaligned { .. })
        ));
        assert_eq!(
            ept12.map(
                &mut memory,
                L2Gpa::new(0),
                L1Gpa::new(1 << 52),
                PageSize::Size4K,
                RWX
            ),
            Err(Ept12BuildError::AddressTooWide(1 << 52))
        );
        assert_eq!(
            Ept12Builder::set_entry(&mut memory, L1Gfn::new(0), 512, 0),
            Err(Ept12BuildError::IndexOutOfRange(512))
        );
    }

    #[test]
    fn builder_shares_tables_between_neighbouring_pages() {
        let mut memory = TestMemory::new(4 * MIB);
        let mut ept12 = Ept12Builder::new(&mut memory, L1Gpa::new(0x10_0000)).unwrap();
        ept12
            .map_range(
                &mut memory,
                L2Gpa::new(0),
                L1Gpa::new(0),
                16 * PAGE_SIZE,
                PageSize::Size4K,
                RWX,
            )
            .unwrap();
        assert_eq!(ept12.table_pages().len(), 4, "one PT serves all 16 pages");
        let pt = ept12.table_pages()[3];
        assert_eq!(
            Ept12Builder::entry(&memory, pt, 15),
            Ok(0xF000 | 0b111 | 6 << 3)
        );
        assert_eq!(Ept12Builder::entry(&memory, pt, 16), Ok(0));
        assert!(matches!(
            ept12.map_range(
                &mut memory,
                L2Gpa::new(0),
                L1Gpa::new(0),
                PAGE_SIZE + 1,
                PageSize::Size4K,
                RWX
            ),
            Err(Ept12BuildError::Misaligned { .. })
        ));

        assert_eq!(
            ept12.unmap(&mut memory, L2Gpa::new(0xF000), PageSize::Size4K),
            Ok(true)
        );
        assert_eq!(Ept12Builder::entry(&memory, pt, 15), Ok(0));
        assert_eq!(
            ept12.unmap(&mut memory, L2Gpa::new(1 << 39), PageSize::Size4K),
            Ok(false),
            "no PDPT there"
        );
    }

    #[test]
    fn builder_fails_cleanly_when_tables_run_past_memory() {
        let mut memory = TestMemory::new(4 * MIB);
        let area = L1Gpa::new(4 * MIB - 3 * PAGE_SIZE);
        let mut ept12 = Ept12Builder::new(&mut memory, area).unwrap();
        // Root, PDPT and PD fit; the PT would be at 4 MiB.
        assert_eq!(
            ept12.map(
                &mut memory,
                L2Gpa::new(0),
                L1Gpa::new(0),
                PageSize::Size4K,
                RWX
            ),
            Err(Ept12BuildError::NotL1Memory(NotL1Memory {
                gpa: L1Gpa::new(4 * MIB)
            }))
        );
        // A 2-MByte page needs no PT.
        ept12
            .map(
                &mut memory,
                L2Gpa::new(0),
                L1Gpa::new(0),
                PageSize::Size2M,
                RWX,
            )
            .unwrap();
    }

    #[test]
    fn builder_tables_walk_as_the_walker_and_oracle_expect() {
        let mut memory = TestMemory::new(64 * MIB);
        let ept01 = TestEpt01::identity(64 * MIB, HOST);
        let mut ept12 = Ept12Builder::new(&mut memory, L1Gpa::new(0x100_0000)).unwrap();
        let perms = EptPermissions::READ | EptPermissions::EXECUTE;
        ept12
            .map(
                &mut memory,
                L2Gpa::new(0x7000),
                L1Gpa::new(0x3000),
                PageSize::Size4K,
                perms,
            )
            .unwrap();
        ept12
            .map(
                &mut memory,
                L2Gpa::new(0x40_0000),
                L1Gpa::new(0x20_0000),
                PageSize::Size2M,
                RWX,
            )
            .unwrap();
        let eptp = ept12.eptp(false);
        let config = WalkConfig::new(eptp, context(), false).unwrap();

        let translation = walk::inspect(&memory, eptp, L2Gpa::new(0x7123), &config).unwrap();
        assert_eq!(translation.l1_gpa, L1Gpa::new(0x3123));
        assert_eq!(translation.page_size, PageSize::Size4K);
        assert_eq!(translation.permissions, perms);
        assert_eq!(translation.memory_type, 6);
        let table_gfns: Vec<L1Gfn> = translation.steps().iter().map(|step| step.table).collect();
        assert_eq!(table_gfns, ept12.table_pages());

        let mapping =
            oracle::compose(&memory, &ept01, eptp, L2Gpa::new(0x45_6789), &config).unwrap();
        assert_eq!(mapping.l1_gpa, L1Gpa::new(0x25_6789));
        assert_eq!(mapping.host, HOST.wrapping_add(0x25_6789));
        assert_eq!(mapping.permissions, RWX);
        assert_eq!(
            oracle::compose(&memory, &ept01, eptp, L2Gpa::new(0x8000), &config),
            None
        );
    }

    #[test]
    fn builder_raw_entries_make_hostile_tables() {
        let mut memory = TestMemory::new(4 * MIB);
        let ept12 = Ept12Builder::new(&mut memory, L1Gpa::new(0)).unwrap();
        let root = ept12.root();
        // The root points at itself in every slot: a walk must still end.
        for index in 0..512 {
            Ept12Builder::set_entry(&mut memory, root, index, root.address().raw() | 0b111)
                .unwrap();
        }
        assert_eq!(Ept12Builder::entry(&memory, root, 511), Ok(0b111));
        let eptp = ept12.eptp(true);
        let config = WalkConfig::new(eptp, context(), false).unwrap();
        // At the PTE level the entry maps page 0 (the root itself) with WB
        // type bits 0: UC, a valid type, so the walk succeeds or faults but
        // terminates.
        let _ = walk::inspect(&memory, eptp, L2Gpa::new(0x1234_5678), &config);
        assert_eq!(
            ept12.entry_address(&memory, L2Gpa::new(0), 1),
            Ok(Some(L1Gpa::new(0)))
        );
    }

    #[test]
    fn builder_five_level_eptp() {
        let mut memory = TestMemory::new(4 * MIB);
        let mut ept12 = Ept12Builder::with_levels(&mut memory, L1Gpa::new(0x1000), 5).unwrap();
        assert_eq!(ept12.levels(), 5);
        assert_eq!(ept12.eptp(false).raw(), 0x1000 | 6 | 4 << 3);
        ept12
            .map(
                &mut memory,
                L2Gpa::new(1 << 48),
                L1Gpa::new(0x5000),
                PageSize::Size4K,
                RWX,
            )
            .unwrap();
        assert_eq!(ept12.table_pages().len(), 5);
        let eptp = ept12.eptp(false);
        let config = WalkConfig::new(eptp, context(), false).unwrap();
        let translation = walk::inspect(&memory, eptp, L2Gpa::new((1 << 48) | 8), &config).unwrap();
        assert_eq!(translation.l1_gpa, L1Gpa::new(0x5008));
    }

    // --- InvariantChecker -------------------------------------------------

    const L1_SIZE: u64 = 64 * MIB;
    const WB: u64 = 6 << 3;

    /// L1 with an EPT12 mapping L2 `0x7000` to L1 `0x3000` (RW, 4K) and L2
    /// `0x40_0000` to L1 `0x20_0000` (RWX, 2M), identity EPT01 at `HOST`.
    struct World {
        memory: TestMemory,
        ept01: TestEpt01,
        ept12: Ept12Builder,
        pool: FramePool,
        root02: HostPa,
    }

    impl World {
        fn new() -> Self {
            let mut memory = TestMemory::new(L1_SIZE);
            let ept01 = TestEpt01::identity(L1_SIZE, HOST);
            let mut ept12 = Ept12Builder::new(&mut memory, L1Gpa::new(0x100_0000)).unwrap();
            let rw = EptPermissions::READ | EptPermissions::WRITE;
            ept12
                .map(
                    &mut memory,
                    L2Gpa::new(0x7000),
                    L1Gpa::new(0x3000),
                    PageSize::Size4K,
                    rw,
                )
                .unwrap();
            ept12
                .map(
                    &mut memory,
                    L2Gpa::new(0x40_0000),
                    L1Gpa::new(0x20_0000),
                    PageSize::Size2M,
                    RWX,
                )
                .unwrap();
            let mut pool = FramePool::new(64);
            let root02 = pool.allocate().unwrap();
            Self {
                memory,
                ept01,
                ept12,
                pool,
                root02,
            }
        }

        /// Writes `leaf` into EPT02 at `level` for `l2`, creating tables.
        fn shadow(&mut self, l2: u64, level: u8, leaf: u64) {
            let mut table = self.root02;
            for upper in (level + 1..=4).rev() {
                let index = ((l2 >> (12 + 9 * (u32::from(upper) - 1))) & 0x1FF) as usize;
                let entry = self.pool.table(table)[index];
                table = if EptEntry::from_raw(entry).is_present(false) {
                    HostPa::new(entry & EptEntry::ADDRESS_MASK)
                } else {
                    let next = self.pool.allocate().unwrap();
                    self.pool.table_mut(table)[index] = next.raw() | 0b111;
                    next
                };
            }
            let index = ((l2 >> (12 + 9 * (u32::from(level) - 1))) & 0x1FF) as usize;
            self.pool.table_mut(table)[index] = leaf;
        }

        /// The shadow leaves an engine would build for the two mappings.
        fn shadow_correctly(&mut self) {
            self.shadow(0x7000, 1, (HOST.raw() + 0x3000) | 0b011 | WB);
            self.shadow(0x40_0000, 2, (HOST.raw() + 0x20_0000) | 0b111 | WB | 1 << 7);
        }

        fn eptp02(&self) -> Eptp {
            Eptp::from_raw(self.root02.raw() | 6 | 3 << 3)
        }

        fn check_with(&self, eptp12: Eptp) -> Result<InvariantReport, InvariantViolation> {
            InvariantChecker::new(&self.memory, &self.ept01, context(), false)
                .check_roots(&self.pool, [(eptp12, self.eptp02())])
        }

        fn check(&self) -> Result<InvariantReport, InvariantViolation> {
            self.check_with(self.ept12.eptp(false))
        }

        fn check_safety(&self) -> Result<InvariantReport, InvariantViolation> {
            InvariantChecker::new(&self.memory, &self.ept01, context(), false)
                .memory_safety_only()
                .check_roots(&self.pool, [(self.ept12.eptp(false), self.eptp02())])
        }
    }

    #[test]
    fn checker_accepts_a_correct_shadow_and_counts_it() {
        let mut world = World::new();
        assert_eq!(
            world.check(),
            Ok(InvariantReport {
                roots: 1,
                tables: 1,
                leaves: 0,
                pages_checked: 0
            })
        );
        world.shadow_correctly();
        assert_eq!(
            world.check(),
            Ok(InvariantReport {
                roots: 1,
                tables: 4,
                leaves: 2,
                pages_checked: 4
            })
        );
        // Fewer rights than the oracle is fine.
        world.shadow(0x7000, 1, (HOST.raw() + 0x3000) | 0b001 | WB);
        assert!(world.check().is_ok());
    }

    #[test]
    fn checker_rejects_a_leaf_outside_l1_memory() {
        let mut world = World::new();
        let table = world.pool.allocate().unwrap();
        // L2 maps one of the shadow tables themselves.
        world.shadow(0x7000, 1, table.raw() | 0b011 | WB);
        let expected = Err(InvariantViolation::NotL1Memory {
            root: RootPair {
                eptp12: world.ept12.eptp(false),
                eptp02: world.eptp02(),
            },
            l2: L2Gpa::new(0x7000),
            host: table,
        });
        assert_eq!(world.check(), expected);
        assert_eq!(world.check_safety(), expected);
        // An unmapped (emulated) L1 page backs nothing either.
        world.shadow(0x7000, 1, (HOST.raw() + 0x3000) | 0b011 | WB);
        world.ept01.unmap(L1Gfn::new(3));
        assert!(matches!(
            world.check_safety(),
            Err(InvariantViolation::NotL1Memory { .. })
        ));
    }

    #[test]
    fn checker_rejects_more_rights_than_the_oracle() {
        let mut world = World::new();
        world.shadow(0x7000, 1, (HOST.raw() + 0x3000) | 0b111 | WB);
        assert!(matches!(
            world.check(),
            Err(InvariantViolation::TooPermissive { permissions, oracle, .. })
                if permissions == RWX && oracle == EptPermissions::READ | EptPermissions::WRITE
        ));
        // Memory safety alone does not look at rights.
        assert!(world.check_safety().is_ok());
        // EPT01 restrictions count too.
        world.shadow(0x7000, 1, (HOST.raw() + 0x3000) | 0b011 | WB);
        world.ept01.protect(L1Gfn::new(3), EptPermissions::READ);
        assert!(matches!(
            world.check(),
            Err(InvariantViolation::TooPermissive { .. })
        ));
    }

    #[test]
    fn checker_rejects_mappings_the_oracle_lacks_or_places_elsewhere() {
        let mut world = World::new();
        world.shadow(0x8000, 1, (HOST.raw() + 0x3000) | 0b001 | WB);
        assert!(matches!(
            world.check(),
            Err(InvariantViolation::NoOracleMapping { l2, .. }) if l2 == L2Gpa::new(0x8000)
        ));
        let mut world = World::new();
        world.shadow(0x7000, 1, (HOST.raw() + 0x4000) | 0b001 | WB);
        assert!(matches!(
            world.check(),
            Err(InvariantViolation::WrongHost { oracle, .. }) if oracle == HOST.wrapping_add(0x3000)
        ));
    }

    #[test]
    fn checker_samples_inside_large_leaves() {
        let mut world = World::new();
        // A 2-MByte EPT02 leaf over L2 0..2M, where EPT12 maps only 0x7000:
        // the first sample (L2 0) already has no oracle mapping.
        world.shadow(0, 2, HOST.raw() | 0b001 | WB | 1 << 7);
        assert!(matches!(
            world.check(),
            Err(InvariantViolation::NoOracleMapping { l2, .. }) if l2 == L2Gpa::new(0)
        ));
        // The last page of a large leaf is checked: EPT01 unmaps it.
        let mut world = World::new();
        world.shadow_correctly();
        world.ept01.unmap(L1Gfn::new(0x3FF));
        assert!(matches!(
            world.check_safety(),
            Err(InvariantViolation::NotL1Memory { l2, .. }) if l2 == L2Gpa::new(0x5F_F000)
        ));
    }

    #[test]
    fn checker_rejects_another_memory_type_than_ept01s() {
        let mut world = World::new();
        world.shadow(0x7000, 1, (HOST.raw() + 0x3000) | 0b001);
        assert!(matches!(
            world.check(),
            Err(InvariantViolation::WrongMemoryType {
                memory_type: 0,
                ept01: EptMemoryType::WriteBack,
                ..
            })
        ));
    }

    #[test]
    fn checker_requires_dirty_before_writable_with_accessed_dirty() {
        let mut world = World::new();
        world.shadow_correctly();
        let eptp12 = world.ept12.eptp(true);
        // Without A/D flags, writable is fine.
        assert!(world.check().is_ok());
        // Write-protect the (not dirty) 2-MByte page, as an engine would.
        world.shadow(0x40_0000, 2, (HOST.raw() + 0x20_0000) | 0b101 | WB | 1 << 7);
        assert!(matches!(
            world.check_with(eptp12),
            Err(InvariantViolation::WritableBeforeDirty { l2, .. }) if l2 == L2Gpa::new(0x7000)
        ));
        let pte = world
            .ept12
            .entry_address(&world.memory, L2Gpa::new(0x7000), 1)
            .unwrap()
            .unwrap();
        let value = world.memory.read_u64(pte).unwrap();
        world
            .memory
            .write_u64(pte, value | EptEntry::DIRTY)
            .unwrap();
        assert!(world.check_with(eptp12).is_ok());
    }

    #[test]
    fn checker_rejects_pointers_to_unallocated_frames() {
        let mut world = World::new();
        world.shadow_correctly();
        let pdpt = HostPa::new(world.pool.table(world.root02)[0] & EptEntry::ADDRESS_MASK);
        world.pool.free(pdpt);
        let expected = Err(InvariantViolation::TableNotAllocated {
            root: RootPair {
                eptp12: world.ept12.eptp(false),
                eptp02: world.eptp02(),
            },
            level: 3,
            l2: L2Gpa::new(0),
            table: pdpt,
        });
        assert_eq!(world.check_safety(), expected);
        // Garbage pointer, and a root that is not a pool frame.
        let mut world = World::new();
        world.pool.table_mut(world.root02)[1] = 0x1234_5000 | 0b111;
        assert!(matches!(
            world.check_safety(),
            Err(InvariantViolation::TableNotAllocated { level: 3, l2, .. }) if l2 == L2Gpa::new(1 << 39)
        ));
        let world = World::new();
        let result = InvariantChecker::new(&world.memory, &world.ept01, context(), false)
            .check_roots(
                &world.pool,
                [(world.ept12.eptp(false), Eptp::from_raw(0x1000 | 6 | 3 << 3))],
            );
        assert!(matches!(
            result,
            Err(InvariantViolation::TableNotAllocated { level: 4, .. })
        ));
    }

    #[test]
    fn checker_rejects_a_table_used_at_two_levels() {
        let mut world = World::new();
        // The root points at itself: a cycle a hardware walk would follow.
        world.pool.table_mut(world.root02)[0] = world.root02.raw() | 0b111;
        assert_eq!(
            world.check_safety(),
            Err(InvariantViolation::TableAtTwoLevels {
                table: world.root02,
                first: 4,
                second: 3
            })
        );
    }

    #[test]
    fn checker_rejects_misconfigured_entries() {
        let mut world = World::new();
        // Write without read (SDM 29.3.3.1).
        world.shadow(0x7000, 1, (HOST.raw() + 0x3000) | 0b010 | WB);
        assert!(matches!(
            world.check_safety(),
            Err(InvariantViolation::Misconfigured {
                level: 1,
                reason: hv_arch_vmx::ept::EptMisconfiguration::WriteWithoutRead,
                ..
            })
        ));
        // Bit 7 in a PML4E is reserved.
        let mut world = World::new();
        world.pool.table_mut(world.root02)[3] = DEFAULT_FRAME_BASE.raw() | 0b111 | 1 << 7;
        assert!(matches!(
            world.check_safety(),
            Err(InvariantViolation::Misconfigured { level: 4, .. })
        ));
    }

    #[test]
    fn checker_bounds_its_work_and_rejects_bad_roots() {
        let mut world = World::new();
        world.shadow_correctly();
        let result = InvariantChecker::new(&world.memory, &world.ept01, context(), false)
            .with_table_visit_limit(2)
            .check_roots(&world.pool, [(world.ept12.eptp(false), world.eptp02())]);
        assert_eq!(result, Err(InvariantViolation::TooMuchWork { limit: 2 }));

        let three_levels = Eptp::from_raw(world.root02.raw() | 6 | 2 << 3);
        let result = InvariantChecker::new(&world.memory, &world.ept01, context(), false)
            .check_roots(&world.pool, [(world.ept12.eptp(false), three_levels)]);
        assert!(matches!(
            result,
            Err(InvariantViolation::InvalidEptp02 { .. })
        ));
        let bad12 = Eptp::from_raw(world.ept12.eptp(false).raw() & !(7 << 3));
        assert!(matches!(
            world.check_with(bad12),
            Err(InvariantViolation::InvalidEptp12 { .. })
        ));
    }

    #[test]
    fn checker_counts_but_skips_leaves_that_grant_nothing() {
        let mut world = World::new();
        // Only bit 10 (user-execute) without mode-based execute control:
        // not present at all.
        world.shadow(0x9000, 1, 0x1234_5000 | 1 << 10 | WB);
        assert_eq!(world.check().map(|report| report.leaves), Ok(0));
        // A non-leaf granting read only, over an execute-only leaf: the
        // walk grants nothing, so the (bogus) frame is not looked at.
        let mut world = World::new();
        world.shadow(0x9000, 1, 0x1234_5000 | 0b100 | WB);
        let pdpt = world.pool.table(world.root02)[0];
        world.pool.table_mut(world.root02)[0] = (pdpt & !0b111) | 0b001;
        let report = world.check().unwrap();
        assert_eq!((report.leaves, report.pages_checked), (1, 0));
    }

    // --- Properties -------------------------------------------------------

    use proptest::prelude::*;

    /// One change to a [`TestEpt01`] over a small L1.
    #[derive(Debug, Clone)]
    enum Ept01Change {
        Unmap(u64),
        Protect(u64, u64),
        Map(u64, u64),
        Reset(u64),
    }

    fn ept01_change() -> impl Strategy<Value = Ept01Change> {
        // 4 MiB of L1 (gfns 0..0x400) plus a few pages beyond; host frames
        // around the identity range.
        let gfn = 0..0x410_u64;
        prop_oneof![
            gfn.clone().prop_map(Ept01Change::Unmap),
            (gfn.clone(), 0..8_u64).prop_map(|(g, p)| Ept01Change::Protect(g, p)),
            (gfn.clone(), 0..0x800_u64).prop_map(|(g, f)| Ept01Change::Map(g, f)),
            gfn.prop_map(Ept01Change::Reset),
        ]
    }

    proptest! {
        /// `backs` and the 2-MByte reports agree with a brute-force look at
        /// every page's mapping, whatever the sequence of changes.
        #[test]
        fn ept01_indexes_match_brute_force(
            changes in proptest::collection::vec(ept01_change(), 0..40),
            probes in proptest::collection::vec(0..0x900_u64, 1..20),
        ) {
            let mut ept01 = TestEpt01::identity(4 * MIB, HOST).with_large_pages(true);
            for change in changes {
                match change {
                    Ept01Change::Unmap(g) => ept01.unmap(L1Gfn::new(g)),
                    Ept01Change::Protect(g, p) => {
                        ept01.protect(L1Gfn::new(g), EptPermissions::from_bits_truncate(p));
                    }
                    Ept01Change::Map(g, f) => ept01.map_page(
                        L1Gfn::new(g),
                        HOST.wrapping_add(f * PAGE_SIZE),
                        RWX,
                        EptMemoryType::WriteBack,
                    ),
                    Ept01Change::Reset(g) => ept01.reset(L1Gfn::new(g)),
                }
            }
            let pages: Vec<(u64, Option<PageMapping>)> =
                (0..0x410).map(|g| (g, ept01.page(L1Gfn::new(g)))).collect();
            for probe in probes {
                let host = HOST.wrapping_add(probe * PAGE_SIZE + 8);
                let expected = pages
                    .iter()
                    .any(|(_, page)| page.is_some_and(|page| page.frame == host.align_down(PageSize::Size4K)));
                prop_assert_eq!(ept01.backs(host), expected, "host {:?}", host);
            }
            for region in 0..2_u64 {
                let first = pages[(region * 512) as usize].1;
                let uniform = first.is_some_and(|first| {
                    first.frame.raw() % SIZE_2M == 0
                        && (0..512).all(|i| {
                            pages[(region * 512 + i) as usize].1
                                == Some(PageMapping { frame: first.frame.wrapping_add(i * PAGE_SIZE), ..first })
                        })
                });
                let reported = ept01
                    .translate(L1Gfn::new(region * 512 + 7).address())
                    .map(|mapping| mapping.size);
                if uniform {
                    prop_assert_eq!(reported, Some(PageSize::Size2M));
                } else {
                    prop_assert_ne!(reported, Some(PageSize::Size2M));
                }
            }
        }

        /// Lookups of any address, in any L1 size, never panic.
        #[test]
        fn lookups_never_panic(gpa in any::<u64>(), size in any::<u64>(), base in any::<u64>()) {
            let memory = TestMemory::new(size);
            let _ = memory.read_u64(L1Gpa::new(gpa));
            let ept01 = TestEpt01::identity(size, HostPa::new(base)).with_large_pages(true);
            let _ = ept01.translate(L1Gpa::new(gpa));
            let _ = ept01.backs(HostPa::new(gpa));
            let pool = FramePool::with_base(4, HostPa::new(base));
            prop_assert!(!pool.is_allocated(HostPa::new(gpa)));
        }

        /// Whatever 4-KByte pages the builder maps, the walker reads back
        /// the last mapping of each L2 page.
        #[test]
        fn builder_mappings_walk_back(
            maps in proptest::collection::vec((0..0x4_0000_u64, 0..0x400_u64, 1..8_u64), 1..30),
        ) {
            let mut memory = TestMemory::new(8 * MIB);
            let mut ept12 = Ept12Builder::new(&mut memory, L1Gpa::new(4 * MIB)).unwrap();
            let mut expected = HashMap::new();
            for (l2_page, l1_page, perms) in maps {
                // Spread L2 pages over several PML4/PDPT slots.
                let l2 = L2Gpa::new(l2_page.wrapping_mul(0x1_0000_1000) & 0xFFFF_FFFF_F000);
                // Readable, so never write-only or execute-only.
                let perms = EptPermissions::from_bits_truncate(perms | 1);
                ept12
                    .map(&mut memory, l2, L1Gpa::new(l1_page * PAGE_SIZE), PageSize::Size4K, perms)
                    .unwrap();
                expected.insert(l2, (l1_page * PAGE_SIZE, perms));
            }
            let eptp = ept12.eptp(false);
            let config = WalkConfig::new(eptp, context(), false).unwrap();
            for (l2, (l1, perms)) in expected {
                let translation = walk::inspect(&memory, eptp, l2.wrapping_add(0x18), &config).unwrap();
                prop_assert_eq!(translation.l1_gpa, L1Gpa::new(l1 + 0x18));
                prop_assert_eq!(translation.permissions, perms);
            }
        }
    }

    // --- With the engine --------------------------------------------------

    use crate::shadow::{FaultOutcome, MmuConfig, Policy};
    use crate::walk::Access;

    /// An engine over a fresh pool for `policy`.
    fn engine(policy: Policy) -> Mmu<FramePool> {
        Mmu::new(MmuConfig::new(policy, context()), FramePool::new(512))
    }

    #[test]
    fn engine_fills_satisfy_the_invariants_for_every_policy() {
        for policy in Policy::ALL {
            let mut world = World::new();
            let mut mmu = engine(policy);
            mmu.switch_to(world.ept12.eptp(false)).unwrap();
            for (gpa, access) in [
                (0x7010, Access::READ),
                (0x7020, Access::WRITE),
                (0x45_6000, Access::FETCH),
                (0x8000, Access::READ),
            ] {
                let outcome = mmu
                    .handle_ept_violation(&mut world.memory, &world.ept01, L2Gpa::new(gpa), access)
                    .unwrap();
                if gpa == 0x8000 {
                    assert!(matches!(outcome, FaultOutcome::Reflect(_)), "{policy:?}");
                } else {
                    assert!(matches!(outcome, FaultOutcome::Filled { .. }), "{policy:?}");
                }
            }
            let report = check_invariants(&mmu, &world.memory, &world.ept01).unwrap();
            assert_eq!(report.roots, 1, "{policy:?}");
            assert!(report.leaves >= 2, "{policy:?}: {report:?}");
            assert!(check_memory_safety(&mmu, &world.memory, &world.ept01).is_ok());
        }
    }

    #[test]
    fn engine_state_after_stale_ept12_then_invept() {
        let mut world = World::new();
        let mut mmu = engine(Policy::Hv);
        let eptp = world.ept12.eptp(false);
        mmu.switch_to(eptp).unwrap();
        mmu.handle_ept_violation(
            &mut world.memory,
            &world.ept01,
            L2Gpa::new(0x7000),
            Access::WRITE,
        )
        .unwrap();
        assert!(check_invariants(&mmu, &world.memory, &world.ept01).is_ok());
        // L1 takes write access away without INVEPT: hardware may still
        // write, so only memory safety is required...
        world
            .ept12
            .map(
                &mut world.memory,
                L2Gpa::new(0x7000),
                L1Gpa::new(0x3000),
                PageSize::Size4K,
                EptPermissions::READ,
            )
            .unwrap();
        assert!(check_memory_safety(&mmu, &world.memory, &world.ept01).is_ok());
        // ...and the full check sees the stale rights.
        assert!(matches!(
            check_invariants(&mmu, &world.memory, &world.ept01),
            Err(InvariantViolation::TooPermissive { .. })
        ));
        // After INVEPT the shadow must agree with the oracle again.
        mmu.invept_single_context(&world.memory, eptp);
        assert_eq!(
            check_invariants(&mmu, &world.memory, &world.ept01).err(),
            None
        );
    }

    #[test]
    fn engine_state_after_an_ept01_change() {
        let mut world = World::new();
        let mut mmu = engine(Policy::Hv);
        mmu.switch_to(world.ept12.eptp(false)).unwrap();
        mmu.handle_ept_violation(
            &mut world.memory,
            &world.ept01,
            L2Gpa::new(0x7000),
            Access::READ,
        )
        .unwrap();
        world.ept01.unmap(L1Gfn::new(3));
        mmu.ept01_changed(L1Gfn::new(3), PageSize::Size4K);
        assert_eq!(
            check_invariants(&mmu, &world.memory, &world.ept01).err(),
            None
        );
    }

    #[test]
    fn engine_with_accessed_dirty_keeps_clean_pages_read_only() {
        let mut world = World::new();
        let mut mmu = engine(Policy::Hv);
        let eptp = world.ept12.eptp(true);
        mmu.switch_to(eptp).unwrap();
        world.memory.reset_compare_exchange_writes();
        mmu.handle_ept_violation(
            &mut world.memory,
            &world.ept01,
            L2Gpa::new(0x7000),
            Access::READ,
        )
        .unwrap();
        assert!(
            world.memory.compare_exchange_writes() > 0,
            "the walk set accessed flags"
        );
        assert_eq!(
            check_invariants(&mmu, &world.memory, &world.ept01).err(),
            None
        );
        mmu.handle_ept_violation(
            &mut world.memory,
            &world.ept01,
            L2Gpa::new(0x7000),
            Access::WRITE,
        )
        .unwrap();
        assert_eq!(
            check_invariants(&mmu, &world.memory, &world.ept01).err(),
            None
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random EPT12 contents, random accesses, every policy: the
        /// invariants hold after every fill.
        #[test]
        fn engine_keeps_invariants_on_random_ept12(
            maps in proptest::collection::vec((0..64_u64, 0..64_u64, 0..8_u64, any::<bool>()), 1..12),
            accesses in proptest::collection::vec((any::<prop::sample::Index>(), 0..0x200_u64, 0..3_u8), 1..24),
            accessed_dirty in any::<bool>(),
            large_ept01 in any::<bool>(),
        ) {
            for policy in Policy::ALL {
                let mut memory = TestMemory::new(L1_SIZE);
                let ept01 = TestEpt01::identity(L1_SIZE, HOST).with_large_pages(large_ept01);
                let mut ept12 = Ept12Builder::new(&mut memory, L1Gpa::new(0x300_0000)).unwrap();
                for &(l2_region, l1_region, perms, large) in &maps {
                    // Perms 0..8 include write-only and execute-only entries.
                    let perms = EptPermissions::from_bits_truncate(perms);
                    let l2 = L2Gpa::new(l2_region * SIZE_2M);
                    let l1 = L1Gpa::new(l1_region * SIZE_2M / 2);
                    let result = if large {
                        ept12.map(&mut memory, l2, l1.align_down(PageSize::Size2M), PageSize::Size2M, perms)
                    } else {
                        ept12.map(&mut memory, l2.wrapping_add(0x5000), l1, PageSize::Size4K, perms)
                    };
                    // A 4K page under an existing 2M leaf is refused; fine.
                    let _ = result;
                }
                let mut mmu = engine(policy);
                mmu.switch_to(ept12.eptp(accessed_dirty)).unwrap();
                for &(target, page, kind) in &accesses {
                    // Mostly inside a mapping, so that fills happen.
                    let (region, _, _, large) = maps[target.index(maps.len())];
                    let offset = if large { page * PAGE_SIZE } else { 0x5000 + (page & 1) * PAGE_SIZE };
                    let gpa = L2Gpa::new(region * SIZE_2M + offset);
                    let access = match kind {
                        0 => Access::READ,
                        1 => Access::WRITE,
                        _ => Access::FETCH,
                    };
                    mmu.handle_ept_violation(&mut memory, &ept01, gpa, access).unwrap();
                    let checked = check_invariants(&mmu, &memory, &ept01);
                    prop_assert!(checked.is_ok(), "{:?}: {:?}", policy, checked);
                }
            }
        }
    }
}
