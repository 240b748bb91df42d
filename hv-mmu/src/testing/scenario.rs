//! The EPT12 fuzz scenario: an L1 memory image with hostile EPT12 tables and
//! a sequence of operations on the engine, run against a model of the
//! processor that caches what the engine builds. The `ept12` fuzz target and
//! the stable corpus replay test (`tests/ept12_corpus.rs`) both run
//! [`Scenario::run`], so CI exercises the target without nightly.
//!
//! # What is checked
//!
//! - After every step, every live EPT02 root's tables: memory safety always
//!   (leaves map only L1 memory, tables are allocated frames, nothing is
//!   misconfigured), and the oracle ([`crate::oracle::compose`]) for the
//!   roots that are *in sync* with EPT12 (see [`Scenario::run`]).
//! - On every L2 access, the translation the modelled processor actually
//!   uses, whether it comes from its TLB, from a walk that starts at a cached
//!   paging-structure entry, or from a fresh walk: the host frame must back
//!   L1 memory under the *current* EPT01, with no more rights than EPT01
//!   grants on that frame; on an in-sync root it must also be the oracle's
//!   translation with at most the oracle's rights, and with EPTP12 A/D flags
//!   enabled the EPT12 entries must be accessed (and the leaf dirty for a
//!   write), as L1 would see on real hardware (SDM 29.3.5).
//! - Progress: after the engine says it filled a fault, the access must
//!   eventually complete.
//!
//! # The processor model
//!
//! Like hardware (SDM 29.4), the model caches leaf translations (a TLB) and
//! non-leaf EPT02 entries (paging-structure caches), all tagged by the
//! EPTP02's root address (the EPTRTA, SDM 29.4.1). Caches are filled only on
//! successful accesses and are invalidated only when the engine says so
//! (`RootSwitch::flush_before_entry`, `FaultOutcome::Filled`'s
//! `flush_before_resume`) or by the EPT violation itself, which invalidates
//! the faulting address's mappings (SDM 29.4.3.1). So any translation the
//! engine removed without asking for a flush is still used, and caught.
//! A cached translation lacking the right an access needs raises an EPT
//! violation without a new walk (a spurious violation the engine must
//! absorb). Fresh walks are cross-checked against
//! [`super::hardware::translate_ept02`] when mode-based execute control is
//! off (that walker does not know bit 10 as a presence bit).
//!
//! # L1 layout
//!
//! L1 is 4 MiB: two 2-MByte regions, so that EPT01 can map it with 2-MByte
//! pages ([`Options::ept01_large_pages`]). Pages 0..16 hold EPT12 tables
//! (entries may point anywhere, including at themselves or outside L1), the
//! rest is data; pointers in entries reach the first 64 pages, the start of
//! the second region, 2-MByte-aligned pages (bases for large EPT12 leaves)
//! and pages just beyond L1. EPT01 maps L1 one-to-one at a host base far
//! from the frame pool; remaps move pages or whole regions onto other L1
//! frames (aliases) or onto fresh host memory. The frame budget is small so
//! eviction runs.
//!
//! # Input format
//!
//! New fields are only ever appended: [`Scenario::options`] is the last
//! field, so inputs written before it existed parse exactly as before and
//! run with default options (the original configuration). A few byte values
//! are read differently than they used to be (pointer pages 128..256, EPT01
//! pages 64..128 and actions beyond the original four, bit 7 of an access
//! kind), so such inputs run slightly different cases, still valid ones.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::fmt;

use arbitrary::Arbitrary;
use hashbrown::HashMap;
use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::ept::{
    EptEntry, EptLevel, EptMemoryType, EptMisconfiguration, EptPermissions, EptWalkContext, Eptp,
};

use super::hardware::translate_ept02;
use super::{
    AllocatedFrames, FramePool, InvariantChecker, InvariantViolation, L1Backing, TestEpt01,
    TestMemory,
};
use crate::addr::{HostPa, L1Gfn, L1Gpa, L2Gpa, PAGE_SIZE, PageSize};
use crate::env::{Ept01, FrameAllocator};
use crate::oracle;
use crate::shadow::{FaultOutcome, Mmu, MmuConfig, Policy};
use crate::walk::{self, Access, AccessKind, WalkConfig};

/// 4-KByte pages in a 2-MByte region.
const REGION_PAGES: u64 = 512;
/// The [`Op::Ept01`] action that restores a whole region.
const RESTORE_REGION: u8 = 7;
/// 2-MByte regions of L1 memory in a scenario.
const REGIONS: usize = 2;
/// Pages of L1 memory in a scenario: two 2-MByte regions.
pub const L1_PAGES: u64 = REGIONS as u64 * REGION_PAGES;
/// The first pages of L1 hold EPT12 tables.
pub const TABLE_PAGES: u64 = 16;
/// L1 pages `0..NEAR_PAGES` (the tables and the first data pages): what
/// byte-sized page numbers name directly.
const NEAR_PAGES: u64 = 64;
/// Shadow frames the engine may hold by default.
pub const FRAME_BUDGET: usize = 24;
/// Operations run at most (keeps a case well under 100 ms).
pub const MAX_OPS: usize = 2048;
/// Initial EPT12 entries written at most.
const MAX_ENTRIES: usize = 4096;
/// EPTP12s in use at most (bit `i` of [`Options::accessed_dirty_roots`]
/// belongs to root `i`).
const MAX_ROOTS: usize = 8;
/// Region changes reported page by page at most (each is 512 engine calls;
/// later ones are reported as one 2-MByte change, which is as valid).
const MAX_PAGE_BY_PAGE_REGIONS: usize = 2;
/// Tries of one L2 access: after this many fills it must have completed.
const MAX_ATTEMPTS: usize = 4;
/// Host address of L1 page 0 under EPT01.
const HOST_BASE: u64 = 0x1_0000_0000;
/// Bytes in a 2-MByte region.
const REGION_BYTES: u64 = PageSize::Size2M.bytes();
/// Host regions a whole-region EPT01 remap may target, from `HOST_BASE`:
/// the first two are L1's own identity range (aliases), the others fresh
/// host memory just beyond it.
const REMAP_REGIONS: u64 = 4;
/// Host address of the fresh frames single pages are remapped to (one per
/// L1 page), beyond every remap region.
const FRESH_PAGES_BASE: u64 = HOST_BASE + REMAP_REGIONS * REGION_BYTES;
/// A well-formed EPTP's low bits: write-back paging structures (bits 2:0 =
/// 6) and a 4-level walk (bits 5:3 = 3), SDM 25.6.11.
const WELL_FORMED_EPTP: u64 = 0x1e;
/// EPTP bit 6: accessed and dirty flags enabled (SDM 25.6.11).
const EPTP_ACCESSED_DIRTY: u64 = 1 << 6;

/// The L1 page an [`EntryValue::Pointer`] names, by `page`:
/// `0..64`: pages 0..64 (tables, then data); `64..128`: pages just beyond
/// L1 (not L1 memory, not mapped by EPT01); `128..192`: the first pages of
/// the second 2-MByte region; `192..256`: the 2-MByte-aligned pages at 0,
/// 2, 4 and 6 MiB (bases for large EPT12 leaves, the last two beyond L1).
fn pointer_page(page: u8) -> u64 {
    let page = u64::from(page);
    match page {
        0..64 => page,
        64..128 => L1_PAGES + (page - 64),
        128..192 => REGION_PAGES + (page - 128),
        _ => (page - 192) % 4 * REGION_PAGES,
    }
}

/// Well-formed EPT12 tables, as (table page, index, entry): from root
/// page 0 (4 levels) or 5 (5 levels, its PML5E leading to page 0), L2
/// addresses below 1 GiB go through the page directory in page 2, whose
/// entries cover 2 MiB each: 0: the page table in page 3 (L1 data pages
/// 16..64 with varied rights), 1: the page table in page 4 (the second
/// 2-MByte region), 2 and 3: 2-MByte leaves on the two regions, 4: page 3
/// again (a shared table), 5: a 2-MByte leaf beyond L1, 6: page 3 through a
/// read-only entry, 7: a read/execute 2-MByte leaf on the first region.
/// From root page 6, a 1-GByte leaf maps L1 from 0. Every entry grants
/// user-execute (bit 10) too, unless noted; leaves are write-back.
fn prebuilt_ept12() -> impl Iterator<Item = (u64, u64, u64)> {
    const ALL: u64 = 0b111 | 1 << 10;
    const LEAF: u64 = 6 << 3;
    const LARGE: u64 = 1 << 7;
    let table = |page: u64| (page * PAGE_SIZE) | ALL;
    let large = |address: u64, rights: u64| address | rights | LEAF | LARGE;
    let directory = [
        table(3),
        table(4),
        large(0, ALL),
        large(REGION_BYTES, ALL),
        table(3),
        large(L1_PAGES * PAGE_SIZE, ALL),
        (3 * PAGE_SIZE) | 0b001,
        large(0, 0b101),
    ];
    let upper = [
        (0, 0, table(1)),
        (1, 0, table(2)),
        (5, 0, table(0)),
        (6, 0, table(7)),
        (7, 0, large(0, ALL)),
    ];
    let first_region = (0..512).map(|index| {
        // Mostly full rights; some read-only, execute-only, without
        // user-execute, or write-only (a misconfiguration).
        let rights = match index % 32 {
            7 => 0b001,
            15 => 0b100 | 1 << 10,
            23 => 0b111,
            31 => 0b010,
            _ => ALL,
        };
        let page = TABLE_PAGES + index % (NEAR_PAGES - TABLE_PAGES);
        (3, index, (page * PAGE_SIZE) | rights | LEAF)
    });
    let second_region =
        (0..512).map(|index| (4, index, ((REGION_PAGES + index) * PAGE_SIZE) | ALL | LEAF));
    upper
        .into_iter()
        .chain((0..8).map(move |index| (2, index, directory[index as usize])))
        .chain(first_region)
        .chain(second_region)
}

/// The L1 page an [`Op::Ept01`] changes, by `page` modulo 128: `0..64`:
/// pages 0..64 of the first region; `64..128`: the first 64 pages of the
/// second region.
fn ept01_page(page: u8) -> L1Gfn {
    let page = u64::from(page) % (2 * NEAR_PAGES);
    if page < NEAR_PAGES {
        L1Gfn::new(page)
    } else {
        L1Gfn::new(REGION_PAGES + page - NEAR_PAGES)
    }
}

/// The host frame number EPT01 maps L1 page `gfn` to by default.
const fn identity_frame(gfn: u64) -> u64 {
    HOST_BASE / PAGE_SIZE + gfn
}

/// Every L1 page EPT01 may map to host frame number `frame`, given the
/// remaps `World::change_ept01` makes: the frame's own identity page, the
/// pages remapped onto another page's frame (from 1 to 4 pages before it)
/// or onto their fresh frame, and the pages of a region remapped onto the
/// host region holding the frame. Candidates only: callers check them with
/// [`Ept01::translate`].
fn pages_possibly_at(frame: u64) -> impl Iterator<Item = u64> {
    let offset = frame.checked_sub(identity_frame(0));
    let own = offset.filter(|&page| page < L1_PAGES);
    let single = own
        .into_iter()
        .flat_map(|page| (0..4).map(move |target| (page + 2 * L1_PAGES - 1 - target) % L1_PAGES));
    let fresh = frame
        .checked_sub(FRESH_PAGES_BASE / PAGE_SIZE)
        .filter(|&page| page < L1_PAGES);
    let regions = offset
        .filter(|&page| page < REMAP_REGIONS * REGION_PAGES)
        .into_iter()
        .flat_map(|page| {
            (0..L1_PAGES / REGION_PAGES)
                .map(move |region| region * REGION_PAGES + page % REGION_PAGES)
        });
    own.into_iter().chain(single).chain(fresh).chain(regions)
}

/// An EPT12 entry value: mostly well-formed pointers into the scenario's
/// L1 with fuzzed flag bits, sometimes any 64-bit value at all.
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum EntryValue {
    /// `page << 12 | flags`: a pointer to an L1 page (see the module
    /// documentation: some point outside L1, some at 2-MByte boundaries)
    /// with bits 11:0 fuzzed.
    Pointer {
        /// Target page.
        page: u8,
        /// Bits 11:0 of the entry (permissions, memory type, large, A/D,
        /// user-execute).
        flags: u16,
    },
    /// Any value.
    Raw(u64),
}

impl EntryValue {
    /// The 64-bit entry.
    fn value(self) -> u64 {
        match self {
            Self::Pointer { page, flags } => pointer_page(page) << 12 | u64::from(flags & 0xfff),
            Self::Raw(raw) => raw,
        }
    }
}

/// An EPTP12 L1 may use: a table page and the EPTP's low 12 bits (memory
/// type, walk length, A/D, reserved bits).
#[derive(Clone, Copy, Debug, Arbitrary)]
pub struct RootSpec {
    /// Root table page, taken modulo the table area.
    pub table: u8,
    /// Bits 11:0 of the EPTP; `None` gives a well-formed write-back 4-level
    /// EPTP (with A/D flags if [`Options::accessed_dirty_roots`] says so).
    pub low_bits: Option<u16>,
}

impl RootSpec {
    /// The EPTP12; `accessed_dirty` applies to the well-formed default only.
    fn eptp(self, accessed_dirty: bool) -> Eptp {
        let root = (u64::from(self.table) % TABLE_PAGES) * PAGE_SIZE;
        let low = match self.low_bits {
            Some(bits) => u64::from(bits & 0xfff),
            None if accessed_dirty => WELL_FORMED_EPTP | EPTP_ACCESSED_DIRTY,
            None => WELL_FORMED_EPTP,
        };
        Eptp::from_raw(root | low)
    }
}

/// One thing L1, L2 or L0 does.
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum Op {
    /// L1 enters L2 on root `root` and L2 touches `page`.
    Access {
        /// Index into the scenario's roots.
        root: u8,
        /// L2 page number (small, so walks meet the fuzzed tables).
        page: u16,
        /// Modulo 3: 0 read, 1 write, 2 fetch (a user-mode fetch if bit 7
        /// is set; that matters with mode-based execute control only).
        kind: u8,
    },
    /// L1 writes an EPT12 entry, then maybe tells L0.
    WriteEntry {
        /// Table page (modulo the table area).
        table: u8,
        /// Entry index (modulo 512).
        index: u16,
        /// The new value.
        value: EntryValue,
        /// 0: nothing, 1: INVEPT single-context on root 0, 2: INVEPT
        /// global, 3: the optional write notification.
        then: u8,
    },
    /// L1 executes INVEPT single-context for root `root`.
    InveptSingle {
        /// Index into the scenario's roots.
        root: u8,
    },
    /// L1 executes INVEPT all-context.
    InveptGlobal,
    /// L1 executes some INVVPID.
    Invvpid,
    /// L0 changes EPT01 around L1 page `page`, then tells the engine.
    Ept01 {
        /// L1 page (see the module documentation).
        page: u8,
        /// Bits 2:0, what: 0 unmap the page, 1 make it read-only, 2
        /// read/execute, 3 restore it, 4 remap it to another frame (bit 3:
        /// a fresh host frame, else the frame of another L1 page), 5 remap
        /// its whole 2-MByte region to host region bits 5:4 (uniformly, so
        /// it stays one 2-MByte EPT01 page), 6 protect the whole region
        /// (bit 3: read-only, else read/execute), 7 restore the whole
        /// region. Bit 6: remaps use the uncacheable memory type. Bit 7:
        /// report the change as 4-KByte pages only (otherwise as the page
        /// that was mapped before, or the whole region).
        action: u8,
    },
}

/// Scenario-wide settings. All zero (what inputs written before this
/// field existed decode to) is the original configuration.
#[derive(Clone, Copy, Debug, Default, Arbitrary)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent switches of the fuzz configuration"
)]
pub struct Options {
    /// Start from well-formed EPT12 tables under the fuzzed entries (roots
    /// in table pages 0 (4 levels), 5 (5 levels) and 6 (a 1-GByte leaf);
    /// 4-KByte, 2-MByte and shared tables below: `prebuilt_ept12` in the
    /// source), so that most accesses succeed and the processor caches have
    /// something to hold.
    pub prebuilt_tables: bool,
    /// EPT01 reports 2-MByte pages wherever a region is mapped uniformly
    /// ([`TestEpt01::with_large_pages`]).
    pub ept01_large_pages: bool,
    /// Bit `i`: root `i`, when it has no explicit low bits, enables EPT A/D
    /// flags.
    pub accessed_dirty_roots: u8,
    /// Mode-based execute control for L2: bit 10 is the user-execute right
    /// and a presence bit.
    pub mode_based_execute: bool,
    /// The processor lacks execute-only support (execute-only EPT12 entries
    /// become misconfigurations).
    pub no_execute_only: bool,
    /// The processor lacks 1-GByte pages.
    pub no_1g_pages: bool,
    /// 0: [`FRAME_BUDGET`]; otherwise a budget of `4 + n % 29` frames
    /// (tight budgets drive eviction and the out-of-frames paths).
    pub frame_budget: u8,
    /// 0: the policy's root capacity; otherwise `1 + n % 8`.
    pub root_capacity: u8,
    /// The frame pool holds only half the budget, so allocation fails before
    /// the budget is reached.
    pub short_pool: bool,
}

impl Options {
    /// The engine's frame budget.
    fn frame_budget(self) -> usize {
        if self.frame_budget == 0 {
            FRAME_BUDGET
        } else {
            4 + usize::from(self.frame_budget % 29)
        }
    }

    /// Frames in the pool behind the engine.
    fn pool_frames(self) -> usize {
        if self.short_pool {
            self.frame_budget() / 2 + 1
        } else {
            self.frame_budget() + 8
        }
    }
}

/// A whole fuzz case.
#[derive(Clone, Debug, Arbitrary)]
pub struct Scenario {
    /// The engine's policy (modulo the four policies).
    pub policy: u8,
    /// Initial EPT12 contents: (table page, index, value).
    pub entries: Vec<(u8, u16, EntryValue)>,
    /// The EPTP12s in use (at least one is always made up).
    pub roots: Vec<RootSpec>,
    /// What happens.
    pub ops: Vec<Op>,
    /// Configuration (last, so that older inputs still parse the same).
    pub options: Options,
}

/// Where the processor model got a translation it used or walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TranslationSource {
    /// A TLB entry: a leaf translation cached earlier.
    Tlb,
    /// A walk of EPT02 from the root.
    Walk,
    /// A walk that started below a cached paging-structure entry of this
    /// level.
    PagingStructureCache {
        /// Level of the cached entry (2: PDE .. 5: PML5E).
        level: u8,
    },
}

impl fmt::Display for TranslationSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tlb => f.write_str("TLB entry"),
            Self::Walk => f.write_str("walk"),
            Self::PagingStructureCache { level } => {
                write!(f, "walk from a cached level-{level} paging-structure entry")
            }
        }
    }
}

/// What the engine got wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioViolation {
    /// The shadow tables break an invariant.
    #[error(transparent)]
    Invariant(#[from] InvariantViolation),
    /// The engine loaded an EPTP02 the processor refuses.
    #[error("EPTP02 {eptp02:#x} has a walk length the processor refuses")]
    InvalidEptp02 {
        /// The EPTP02.
        eptp02: u64,
    },
    /// A walk reached a frame that is not an allocated shadow table: the
    /// processor would read freed (or foreign) memory as EPT02.
    #[error(
        "{via} for {gpa} under EPTP02 {eptp02:#x} reached {table} as a level-{level} table, \
         but it is not an allocated shadow table"
    )]
    StaleTable {
        /// The EPTP02.
        eptp02: u64,
        /// The L2 address.
        gpa: L2Gpa,
        /// Where the walk started.
        via: TranslationSource,
        /// The level of the table.
        level: u8,
        /// The frame.
        table: HostPa,
    },
    /// A walk met a present EPT02 entry the processor would reject.
    #[error("{via} for {gpa}: level-{level} EPT02 entry {entry:#x} is misconfigured: {reason}")]
    Misconfigured {
        /// The L2 address.
        gpa: L2Gpa,
        /// Where the walk started.
        via: TranslationSource,
        /// The level of the entry.
        level: u8,
        /// The entry.
        entry: u64,
        /// Why.
        reason: EptMisconfiguration,
    },
    /// This model's walk and `hardware::translate_ept02` disagree (a bug in
    /// one of the two test walkers).
    #[error(
        "walks of EPTP02 {eptp02:#x} for {gpa} disagree: this model {model:?}, \
         hardware::translate_ept02 {reference:?}"
    )]
    ModelsDisagree {
        /// The EPTP02.
        eptp02: u64,
        /// The L2 address.
        gpa: L2Gpa,
        /// This model's result.
        model: Option<(HostPa, EptPermissions)>,
        /// `translate_ept02`'s result.
        reference: Option<(HostPa, EptPermissions)>,
    },
    /// The processor used a translation to a frame that backs no L1 memory
    /// under the current EPT01.
    #[error(
        "{via} {gpa} -> {host} under EPTP02 {eptp02:#x} was used, \
         but that frame backs no L1 memory under the current EPT01"
    )]
    UsedNotL1Memory {
        /// The EPTP02.
        eptp02: u64,
        /// The L2 address.
        gpa: L2Gpa,
        /// Where the translation came from.
        via: TranslationSource,
        /// The host address.
        host: HostPa,
    },
    /// The processor used a translation with rights EPT01 does not grant on
    /// its frame (L0's protection must hold whatever L1 does).
    #[error(
        "{via} {gpa} -> {host} under EPTP02 {eptp02:#x} was used with {permissions:?}, \
         but EPT01 grants that frame only {ept01:?}"
    )]
    UsedBeyondEpt01 {
        /// The EPTP02.
        eptp02: u64,
        /// The L2 address.
        gpa: L2Gpa,
        /// Where the translation came from.
        via: TranslationSource,
        /// The host address.
        host: HostPa,
        /// The rights the processor had.
        permissions: EptPermissions,
        /// The rights EPT01 grants (any L1 page mapped to the frame).
        ept01: EptPermissions,
    },
    /// On a root in sync with EPT12, the processor used a translation that
    /// is not the oracle's, or with more rights.
    #[error(
        "{via} {gpa} -> {host} {permissions:?} was used on in-sync EPTP12 {eptp12:#x}, \
         but the oracle says {oracle:?}"
    )]
    UsedBeyondOracle {
        /// The EPTP12.
        eptp12: u64,
        /// The L2 address.
        gpa: L2Gpa,
        /// Where the translation came from.
        via: TranslationSource,
        /// The host address.
        host: HostPa,
        /// The rights the processor had.
        permissions: EptPermissions,
        /// The oracle's host address and rights.
        oracle: Option<(HostPa, EptPermissions)>,
    },
    /// With A/D flags on, an in-sync root's translation was used while an
    /// EPT12 entry on its walk is not accessed: L1 cannot see the access
    /// (SDM 29.3.5).
    #[error(
        "{via} for {gpa} was used on in-sync EPTP12 {eptp12:#x} with A/D flags, \
         but its level-{level} EPT12 entry is not accessed"
    )]
    UsedNotAccessed {
        /// The EPTP12.
        eptp12: u64,
        /// The L2 address.
        gpa: L2Gpa,
        /// Where the translation came from.
        via: TranslationSource,
        /// The level of the EPT12 entry.
        level: u8,
    },
    /// With A/D flags on, L2 wrote through an in-sync root's translation
    /// whose EPT12 leaf is not dirty: L1 cannot see the write (SDM 29.3.5).
    #[error(
        "{via} for {gpa} was written through on in-sync EPTP12 {eptp12:#x} with A/D flags, \
         but its EPT12 leaf is not dirty"
    )]
    WroteNotDirty {
        /// The EPTP12.
        eptp12: u64,
        /// The L2 address.
        gpa: L2Gpa,
        /// Where the translation came from.
        via: TranslationSource,
    },
    /// The engine kept reporting `Filled` but the access never completed:
    /// L2 would fault forever.
    #[error("{kind:?} of {gpa} on EPTP12 {eptp12:#x} still faults after {fills} fills")]
    NoProgress {
        /// The EPTP12.
        eptp12: u64,
        /// The L2 address.
        gpa: L2Gpa,
        /// The access.
        kind: AccessKind,
        /// Fills reported.
        fills: usize,
    },
}

/// Why a scenario failed: the engine broke an invariant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("step {step}: {violation}")]
pub struct ScenarioFailure {
    /// Index of the operation during or after which the check failed.
    pub step: usize,
    /// What was wrong.
    pub violation: ScenarioViolation,
}

/// What a scenario did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScenarioReport {
    /// Operations run.
    pub steps: usize,
    /// Steps after which every live root was checked against the oracle
    /// (the others checked the in-sync roots only, plus memory safety).
    pub full_checks: usize,
    /// EPT violations the engine had to handle.
    pub faults: usize,
    /// Translations the processor model used (each one validated).
    pub translations_used: usize,
    /// Of those, TLB hits.
    pub tlb_hits: usize,
    /// Of those, walks that started from a cached paging-structure entry.
    pub structure_cache_walks: usize,
    /// Of those, on in-sync roots (validated against the oracle too).
    pub in_sync_uses: usize,
    /// Flushes the engine asked for.
    pub flushes: usize,
}

impl Scenario {
    /// Runs the scenario, checking every step (see the module
    /// documentation).
    ///
    /// A root is *in sync* when the oracle is the reference for it: when no
    /// EPT12 write happened since L1 last invalidated the root's mappings.
    /// Precisely:
    ///
    /// - initially every root is in sync (the initial EPT12 is written
    ///   before the engine sees anything);
    /// - any EPT12 write makes every root out of sync. This is conservative:
    ///   a write to a table a root does not reach leaves its translations
    ///   alone, but reachability through hostile tables (shared, aliased,
    ///   self-referencing) changes with every write, and until an INVEPT
    ///   L1 is not entitled to anything better;
    /// - INVEPT single-context brings back in sync every root whose EPTP12
    ///   has the same bits 51:12 as the operand, whatever its other bits
    ///   (walk length, A/D, memory type): the instruction invalidates all
    ///   mappings associated with that EP4TA (SDM 29.4.3.1), so from then on
    ///   L1 may rely on every translation through those roots, including
    ///   through tables shared with roots still out of sync and tables the
    ///   engine links in later. Other roots keep their state;
    /// - INVEPT all-context brings every root back in sync;
    /// - the optional write notification and EPT01 changes do not change
    ///   it (the first is not an invalidation L1 asked for; the second is
    ///   L0's own business, which the engine must follow exactly anyway).
    ///
    /// # Errors
    ///
    /// The first violation found.
    pub fn run(&self) -> Result<ScenarioReport, ScenarioFailure> {
        let options = self.options;
        let policy = Policy::ALL[usize::from(self.policy) % Policy::ALL.len()];
        let mut roots: Vec<Eptp> = self
            .roots
            .iter()
            .take(MAX_ROOTS)
            .enumerate()
            .map(|(index, spec)| spec.eptp(options.accessed_dirty_roots & (1 << index) != 0))
            .collect();
        if roots.is_empty() {
            let default = RootSpec {
                table: 0,
                low_bits: None,
            };
            roots.push(default.eptp(options.accessed_dirty_roots & 1 != 0));
        }
        let mut world = World::new(policy, options);
        if options.prebuilt_tables {
            for (table, index, value) in prebuilt_ept12() {
                let address = L1Gpa::new(table * PAGE_SIZE + index * 8);
                // In range by construction: tables are the first pages of L1.
                let _ = world.memory.write_u64(address, value);
            }
        }
        for &(table, index, value) in self.entries.iter().take(MAX_ENTRIES) {
            world.write_entry(table, index, value);
        }
        world.in_sync = roots.iter().map(|eptp| eptp.root_address()).collect();

        for (step, op) in self.ops.iter().take(MAX_OPS).enumerate() {
            let fail = |violation| ScenarioFailure { step, violation };
            world.apply(*op, &roots).map_err(fail)?;
            world.report.steps += 1;
            world.check_tables().map_err(fail)?;
        }
        Ok(world.report)
    }
}

/// A leaf translation the processor caches, or a cached paging-structure
/// entry: tagged by the EPTP02 root address, for the naturally aligned
/// range of L2 addresses one entry at `level` covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    /// The EPTRTA (EPTP02 bits 51:12).
    root: u64,
    /// Level of the entry (1..=5).
    level: u8,
    /// First L2 address covered.
    base: u64,
}

impl CacheKey {
    /// The key of the level-`level` entry that translates `gpa`.
    const fn new(root: u64, level: EptLevel, gpa: u64) -> Self {
        Self {
            root,
            level: level.number(),
            base: gpa & !(level.coverage() - 1),
        }
    }
}

/// A cached leaf translation.
#[derive(Clone, Copy, Debug)]
struct CachedLeaf {
    /// Host address of the first byte of the page.
    page: u64,
    /// Rights along the walk (effective: bit 10 dropped without
    /// mode-based execute control).
    rights: EptPermissions,
}

/// A cached non-leaf entry: where the walk continues.
#[derive(Clone, Copy, Debug)]
struct CachedTable {
    /// The table it references.
    table: HostPa,
    /// The level of that table.
    level: EptLevel,
    /// Rights along the walk so far, this entry included.
    rights: EptPermissions,
}

/// A translation the processor used.
#[derive(Clone, Copy, Debug)]
struct Used {
    /// The host address of the accessed L2 page.
    host: HostPa,
    /// The rights the processor had for it.
    rights: EptPermissions,
    /// Where it came from.
    via: TranslationSource,
}

/// The result of one walk of EPT02.
#[derive(Clone, Copy, Debug)]
struct Walked {
    /// Level of the leaf (1, 2 or 3).
    level: EptLevel,
    /// Host address of the first byte of the page.
    page: u64,
    /// Effective rights along the walk.
    rights: EptPermissions,
    /// The non-leaf entries met, as (entry level, what it references).
    tables: [Option<(EptLevel, CachedTable)>; 5],
}

/// The processor's caches of EPT02 translations (SDM 29.4.2).
#[derive(Debug, Default)]
struct ProcessorCaches {
    /// Leaf translations.
    tlb: HashMap<CacheKey, CachedLeaf>,
    /// Non-leaf entries (EPT PML5Es, PML4Es, PDPTEs, PDEs).
    structures: HashMap<CacheKey, CachedTable>,
}

impl ProcessorCaches {
    /// INVEPT single-context on an EPTP02 with root address `root`.
    fn flush(&mut self, root: u64) {
        self.tlb.retain(|key, _| key.root != root);
        self.structures.retain(|key, _| key.root != root);
    }

    /// What an EPT violation at `gpa` invalidates (SDM 29.4.3.1): every
    /// cached mapping of the current root that would translate it.
    fn invalidate_address(&mut self, root: u64, gpa: u64) {
        for level in [
            EptLevel::Pte,
            EptLevel::Pde,
            EptLevel::Pdpte,
            EptLevel::Pml4e,
            EptLevel::Pml5e,
        ] {
            let key = CacheKey::new(root, level, gpa);
            self.tlb.remove(&key);
            self.structures.remove(&key);
        }
    }

    /// L2 performs `access` at `gpa` on `eptp02`: `Some` translation used,
    /// or `None` for an EPT violation. Uses the TLB, else walks from the
    /// deepest cached paging-structure entry (the processor may), else from
    /// the root; caches what a successful access used.
    fn access(
        &mut self,
        frames: &FramePool,
        eptp02: Eptp,
        gpa: L2Gpa,
        access: Access,
        context: EptWalkContext,
    ) -> Result<Option<Used>, ScenarioViolation> {
        let root = eptp02.root_address();
        let mbec = context.mode_based_execute;
        for level in [EptLevel::Pte, EptLevel::Pde, EptLevel::Pdpte] {
            if let Some(leaf) = self.tlb.get(&CacheKey::new(root, level, gpa.raw())) {
                // A cached translation without the right: the processor may
                // report the violation without walking again.
                return Ok(access.allowed_by(leaf.rights, mbec).then(|| Used {
                    host: HostPa::new(leaf.page + (gpa.raw() & (level.coverage() - 1))),
                    rights: leaf.rights,
                    via: TranslationSource::Tlb,
                }));
            }
        }
        let start = [
            EptLevel::Pde,
            EptLevel::Pdpte,
            EptLevel::Pml4e,
            EptLevel::Pml5e,
        ]
        .into_iter()
        .find_map(|level| {
            let cached = self
                .structures
                .get(&CacheKey::new(root, level, gpa.raw()))?;
            Some((level, *cached))
        });
        let via = start.map_or(TranslationSource::Walk, |(level, _)| {
            TranslationSource::PagingStructureCache {
                level: level.number(),
            }
        });
        let walked = walk_ept02(frames, eptp02, gpa, start.map(|(_, t)| t), via, context)?;
        if start.is_none() && !mbec {
            cross_check(frames, eptp02, gpa, walked.as_ref())?;
        }
        let Some(walked) = walked.filter(|walked| access.allowed_by(walked.rights, mbec)) else {
            return Ok(None);
        };
        self.tlb.insert(
            CacheKey::new(root, walked.level, gpa.raw()),
            CachedLeaf {
                page: walked.page,
                rights: walked.rights,
            },
        );
        for (level, table) in walked.tables.into_iter().flatten() {
            self.structures
                .insert(CacheKey::new(root, level, gpa.raw()), table);
        }
        Ok(Some(Used {
            host: HostPa::new(walked.page + (gpa.raw() & (walked.level.coverage() - 1))),
            rights: walked.rights,
            via,
        }))
    }
}

/// Walks EPT02 for `gpa` as the processor does (SDM 29.3.2), from the root
/// of `eptp02` or from the table a cached entry references: `None` on a
/// not-present entry. Reading a frame that is not an allocated shadow table,
/// or meeting a misconfigured entry, is a violation.
fn walk_ept02(
    frames: &FramePool,
    eptp02: Eptp,
    gpa: L2Gpa,
    start: Option<CachedTable>,
    via: TranslationSource,
    context: EptWalkContext,
) -> Result<Option<Walked>, ScenarioViolation> {
    let mbec = context.mode_based_execute;
    let (mut level, mut table, mut rights) = if let Some(cached) = start {
        (cached.level, cached.table, cached.rights)
    } else {
        let level = EptLevel::from_number(eptp02.walk_levels()).ok_or(
            ScenarioViolation::InvalidEptp02 {
                eptp02: eptp02.raw(),
            },
        )?;
        let all = EptPermissions::READ_WRITE_EXECUTE | EptPermissions::USER_EXECUTE;
        (level, HostPa::new(eptp02.root_address()), all)
    };
    let mut tables = [None; 5];
    // At most five levels: each step goes one level down.
    for slot in &mut tables {
        if !frames.is_allocated(table) {
            return Err(ScenarioViolation::StaleTable {
                eptp02: eptp02.raw(),
                gpa,
                via,
                level: level.number(),
                table,
            });
        }
        let entry = EptEntry::from_raw(frames.table(table)[level.index_of(gpa.raw())]);
        if !entry.is_present(mbec) {
            return Ok(None);
        }
        if let Some(reason) = entry.misconfiguration(level, &context) {
            return Err(ScenarioViolation::Misconfigured {
                gpa,
                via,
                level: level.number(),
                entry: entry.raw(),
                reason,
            });
        }
        rights &= entry.permissions();
        if let Some(page) = entry.page_frame(level) {
            return Ok(Some(Walked {
                level,
                page,
                rights: rights.effective(mbec),
                tables,
            }));
        }
        let Some(next) = level.next_lower() else {
            return Ok(None);
        };
        table = HostPa::new(entry.address());
        *slot = Some((
            level,
            CachedTable {
                table,
                level: next,
                rights,
            },
        ));
        level = next;
    }
    Ok(None)
}

/// Compares a walk from the root with [`translate_ept02`] (valid without
/// mode-based execute control, which that walker does not model).
fn cross_check(
    frames: &FramePool,
    eptp02: Eptp,
    gpa: L2Gpa,
    walked: Option<&Walked>,
) -> Result<(), ScenarioViolation> {
    let model = walked.map(|walked| {
        let host = walked.page + (gpa.raw() & (walked.level.coverage() - 1));
        (HostPa::new(host), walked.rights)
    });
    // Safe to call: the walk above visited only allocated frames, and this
    // one follows the same path.
    let reference = translate_ept02(frames, eptp02, gpa)
        .map(|translation| (translation.host, translation.permissions.effective(false)));
    if model == reference {
        Ok(())
    } else {
        Err(ScenarioViolation::ModelsDisagree {
            eptp02: eptp02.raw(),
            gpa,
            model,
            reference,
        })
    }
}

/// The access an [`Op::Access`] `kind` performs.
const fn access_of(kind: u8) -> Access {
    match kind % 3 {
        0 => Access::READ,
        1 => Access::WRITE,
        _ if kind & 0x80 != 0 => Access::USER_FETCH,
        _ => Access::FETCH,
    }
}

/// A running scenario.
struct World {
    /// The engine.
    mmu: Mmu<FramePool>,
    /// L1 memory (EPT12).
    memory: TestMemory,
    /// EPT01.
    ept01: TestEpt01,
    /// The processor.
    caches: ProcessorCaches,
    /// EPTP12 root addresses (bits 51:12) whose roots are in sync with
    /// EPT12 (see [`Scenario::run`]).
    in_sync: BTreeSet<u64>,
    /// The walk context of the engine and of the processor (the rights
    /// EPT02 may use are the host's, which L1 sees too).
    context: EptWalkContext,
    /// Region changes reported page by page so far.
    page_by_page_regions: usize,
    /// Per 2-MByte region: the last whole-region change (its [`Op::Ept01`]
    /// action bits that matter) if no single page changed since. Repeating
    /// it changes nothing, so it is skipped (only reported).
    last_region_change: [Option<u8>; REGIONS],
    /// What happened.
    report: ScenarioReport,
}

impl World {
    /// An empty L1 and an engine configured by `policy` and `options`.
    fn new(policy: Policy, options: Options) -> Self {
        let caps = VmxCapabilities::bochs_skylake_x();
        let mut context = EptWalkContext::from_capabilities(&caps, 46, options.mode_based_execute);
        if options.no_execute_only {
            context.execute_only = false;
        }
        if options.no_1g_pages {
            context.pages_1g = false;
        }
        let mut config = MmuConfig::new(policy, context);
        config.frame_budget = options.frame_budget();
        if options.root_capacity != 0 {
            config.root_capacity = 1 + usize::from(options.root_capacity % 8);
        }
        let l1_size = L1_PAGES * PAGE_SIZE;
        Self {
            mmu: Mmu::new(config, FramePool::new(options.pool_frames())),
            memory: TestMemory::new(l1_size),
            ept01: TestEpt01::identity(l1_size, HostPa::new(HOST_BASE))
                .with_large_pages(options.ept01_large_pages),
            caches: ProcessorCaches::default(),
            in_sync: BTreeSet::new(),
            context,
            page_by_page_regions: 0,
            last_region_change: [Some(RESTORE_REGION); REGIONS],
            report: ScenarioReport::default(),
        }
    }

    /// Runs one operation.
    fn apply(&mut self, op: Op, roots: &[Eptp]) -> Result<(), ScenarioViolation> {
        let root = |index: u8| roots[usize::from(index) % roots.len()];
        match op {
            Op::Access {
                root: index,
                page,
                kind,
            } => {
                let gpa = L2Gpa::new(u64::from(page) * PAGE_SIZE);
                return self.access(root(index), gpa, access_of(kind));
            }
            Op::WriteEntry {
                table,
                index,
                value,
                then,
            } => {
                self.write_entry(table, index, value);
                self.in_sync.clear();
                match then % 4 {
                    1 => self.invept_single(roots[0]),
                    2 => self.invept_global(roots),
                    3 => {
                        let gfn = L1Gfn::new(u64::from(table) % TABLE_PAGES);
                        self.mmu.l1_wrote(&self.memory, gfn);
                    }
                    _ => {}
                }
            }
            Op::InveptSingle { root: index } => self.invept_single(root(index)),
            Op::InveptGlobal => self.invept_global(roots),
            Op::Invvpid => self.mmu.invvpid(),
            Op::Ept01 { page, action } => self.change_ept01(ept01_page(page), action),
        }
        Ok(())
    }

    /// L1 writes entry `index` of EPT12 table page `table`.
    fn write_entry(&mut self, table: u8, index: u16, value: EntryValue) {
        let table = u64::from(table) % TABLE_PAGES;
        let address = L1Gpa::new(table * PAGE_SIZE + u64::from(index % 512) * 8);
        // In range by construction: tables are the first pages of L1.
        let _ = self.memory.write_u64(address, value.value());
    }

    /// L1 executes INVEPT single-context for `eptp12`.
    fn invept_single(&mut self, eptp12: Eptp) {
        self.mmu.invept_single_context(&self.memory, eptp12);
        // SDM 29.4.3.1: every mapping associated with the EP4TA (bits 51:12)
        // is invalidated, whatever the EPTP's other bits.
        self.in_sync.insert(eptp12.root_address());
    }

    /// L1 executes INVEPT all-context.
    fn invept_global(&mut self, roots: &[Eptp]) {
        self.mmu.invept_global(&self.memory);
        self.in_sync
            .extend(roots.iter().map(|eptp12| eptp12.root_address()));
    }

    /// L1 enters L2 on `eptp12` and L2 performs `access` at `gpa`, through
    /// the processor model; every translation used is validated.
    fn access(
        &mut self,
        eptp12: Eptp,
        gpa: L2Gpa,
        access: Access,
    ) -> Result<(), ScenarioViolation> {
        // The engine contract: switch_to before every nested VM entry.
        let Ok(switch) = self.mmu.switch_to(eptp12) else {
            // L1's VM entry fails; L2 does not run.
            return Ok(());
        };
        let root = switch.eptp02.root_address();
        if switch.flush_before_entry {
            self.caches.flush(root);
            self.report.flushes += 1;
        }
        let mut fills = 0;
        for _ in 0..MAX_ATTEMPTS {
            let used =
                self.caches
                    .access(self.mmu.frames(), switch.eptp02, gpa, access, self.context)?;
            if let Some(used) = used {
                return self.check_use(eptp12, switch.eptp02, gpa, access, used);
            }
            // The EPT violation invalidates gpa's cached mappings; the
            // engine handles it and L2 resumes without a new nested entry.
            self.caches.invalidate_address(root, gpa.raw());
            self.report.faults += 1;
            match self
                .mmu
                .handle_ept_violation(&mut self.memory, &self.ept01, gpa, access)
            {
                Ok(FaultOutcome::Filled {
                    flush_before_resume,
                    ..
                }) => {
                    if flush_before_resume {
                        self.caches.flush(root);
                        self.report.flushes += 1;
                    }
                    fills += 1;
                }
                // Reflected to L1, left to L0, or a typed error: all fine
                // here, and L2 does not retry the access by itself.
                Ok(FaultOutcome::Reflect(_) | FaultOutcome::Emulate { .. }) | Err(_) => {
                    return Ok(());
                }
            }
        }
        Err(ScenarioViolation::NoProgress {
            eptp12: eptp12.raw(),
            gpa,
            kind: access.kind,
            fills,
        })
    }

    /// Validates a translation the processor used for `access` at `gpa`.
    fn check_use(
        &mut self,
        eptp12: Eptp,
        eptp02: Eptp,
        gpa: L2Gpa,
        access: Access,
        used: Used,
    ) -> Result<(), ScenarioViolation> {
        let Used { host, rights, via } = used;
        let mbec = self.context.mode_based_execute;
        self.report.translations_used += 1;
        match via {
            TranslationSource::Tlb => self.report.tlb_hits += 1,
            TranslationSource::PagingStructureCache { .. } => {
                self.report.structure_cache_walks += 1;
            }
            TranslationSource::Walk => {}
        }
        // Whatever EPT12 says: L0's EPT01 as it is now. Any EPT01 change was
        // reported, so the engine had to ask for the flush before this entry.
        if !self.ept01.backs(host) {
            return Err(ScenarioViolation::UsedNotL1Memory {
                eptp02: eptp02.raw(),
                gpa,
                via,
                host,
            });
        }
        let ept01 = self.ept01_rights(host).effective(mbec);
        if !ept01.contains(rights) {
            return Err(ScenarioViolation::UsedBeyondEpt01 {
                eptp02: eptp02.raw(),
                gpa,
                via,
                host,
                permissions: rights,
                ept01,
            });
        }
        if !self.in_sync.contains(&eptp12.root_address()) {
            // Stale EPT12 translations are architecturally allowed.
            return Ok(());
        }
        self.report.in_sync_uses += 1;
        // switch_to accepted the EPTP12, so its walk length is valid.
        let Ok(config) = WalkConfig::new(eptp12, self.context, mbec) else {
            return Ok(());
        };
        let oracle = oracle::compose(&self.memory, &self.ept01, eptp12, gpa, &config)
            .map(|mapping| (mapping.host, mapping.permissions.effective(mbec)));
        if !oracle.is_some_and(|(oracle_host, oracle_rights)| {
            oracle_host == host && oracle_rights.contains(rights)
        }) {
            return Err(ScenarioViolation::UsedBeyondOracle {
                eptp12: eptp12.raw(),
                gpa,
                via,
                host,
                permissions: rights,
                oracle,
            });
        }
        if config.accessed_dirty
            && let Ok(translation) = walk::inspect(&self.memory, eptp12, gpa, &config)
        {
            // SDM 29.3.5: every EPT12 entry the (virtual) processor uses is
            // accessed, and the leaf of a write is dirty.
            if let Some(step) = translation
                .steps()
                .iter()
                .find(|step| !EptEntry::from_raw(step.entry).accessed())
            {
                return Err(ScenarioViolation::UsedNotAccessed {
                    eptp12: eptp12.raw(),
                    gpa,
                    via,
                    level: step.level,
                });
            }
            if access.kind == AccessKind::Write && !translation.dirty {
                return Err(ScenarioViolation::WroteNotDirty {
                    eptp12: eptp12.raw(),
                    gpa,
                    via,
                });
            }
        }
        Ok(())
    }

    /// The rights EPT01 grants on the host frame of `host`: the union over
    /// every L1 page mapped to it.
    fn ept01_rights(&self, host: HostPa) -> EptPermissions {
        let frame = host.raw() / PAGE_SIZE;
        let mut rights = EptPermissions::empty();
        for gfn in pages_possibly_at(frame) {
            let gpa = L1Gfn::new(gfn).address();
            if let Some(mapping) = self.ept01.translate(gpa) {
                let within = gpa.raw() & (mapping.size.bytes() - 1);
                if (mapping.frame.raw() + within) / PAGE_SIZE == frame {
                    rights |= mapping.permissions;
                }
            }
        }
        rights
    }

    /// L0 changes EPT01 as `action` says (see [`Op::Ept01`]) and reports
    /// the change to the engine.
    fn change_ept01(&mut self, gfn: L1Gfn, action: u8) {
        let variant = action & 0b1000 != 0;
        let target = u64::from((action >> 4) & 0b11);
        let memory_type = if action & 0x40 == 0 {
            EptMemoryType::WriteBack
        } else {
            EptMemoryType::Uncacheable
        };
        let only_4k = action & 0x80 != 0;
        let first = gfn.raw() - gfn.raw() % REGION_PAGES;
        let region = first..first + REGION_PAGES;
        // In range: ept01_page names pages of L1 only.
        let region_index = (first / REGION_PAGES) as usize % REGIONS;
        let what = action & 0b111;
        if what >= 5 {
            // What makes two region changes the same: bits 2:0 and the
            // target and memory type (remap) or the rights (protect).
            let key = action
                & match what {
                    5 => 0b0111_0111,
                    6 => 0b0000_1111,
                    _ => 0b0000_0111,
                };
            let same = self.last_region_change[region_index].replace(key) == Some(key);
            if same {
                self.report_region_change(region, only_4k);
                return;
            }
        } else {
            self.last_region_change[region_index] = None;
        }
        match what {
            0..=4 => {
                // The EPT01 page that held gfn: when it was a 2-MByte page,
                // all of it changes (it splinters into 4-KByte pages).
                let before = self
                    .ept01
                    .translate(gfn.address())
                    .map_or(PageSize::Size4K, |mapping| mapping.size);
                match what {
                    0 => {
                        self.ept01.unmap(gfn);
                    }
                    1 => self.ept01.protect(gfn, EptPermissions::READ),
                    2 => self
                        .ept01
                        .protect(gfn, EptPermissions::READ | EptPermissions::EXECUTE),
                    3 => {
                        self.ept01.reset(gfn);
                    }
                    _ => {
                        let frame = if variant {
                            FRESH_PAGES_BASE / PAGE_SIZE + gfn.raw()
                        } else {
                            identity_frame((gfn.raw() + 1 + target) % L1_PAGES)
                        };
                        self.ept01.map_page(
                            gfn,
                            HostPa::new(frame * PAGE_SIZE),
                            TestEpt01::FULL_RIGHTS,
                            memory_type,
                        );
                    }
                }
                // Only gfn's translation changed, so reporting its 4-KByte
                // page is exact; reporting the old page is what L0 sees.
                let size = if only_4k { PageSize::Size4K } else { before };
                self.report_ept01_change(gfn, size);
            }
            5 => {
                let base = HOST_BASE / PAGE_SIZE + target * REGION_PAGES;
                for (index, page) in (0..).zip(region.clone()) {
                    let frame = base + index;
                    self.ept01.map_page(
                        L1Gfn::new(page),
                        HostPa::new(frame * PAGE_SIZE),
                        TestEpt01::FULL_RIGHTS,
                        memory_type,
                    );
                }
                self.report_region_change(region, only_4k);
            }
            6 => {
                let rights = if variant {
                    EptPermissions::READ
                } else {
                    EptPermissions::READ | EptPermissions::EXECUTE
                };
                for page in region.clone() {
                    self.ept01.protect(L1Gfn::new(page), rights);
                }
                self.report_region_change(region, only_4k);
            }
            _ => {
                for page in region.clone() {
                    self.ept01.reset(L1Gfn::new(page));
                }
                self.report_region_change(region, only_4k);
            }
        }
    }

    /// Reports a change of every page of a 2-MByte region: as one 2-MByte
    /// page, or page by page (a few times per scenario, to bound its cost).
    fn report_region_change(&mut self, region: core::ops::Range<u64>, page_by_page: bool) {
        if page_by_page && self.page_by_page_regions < MAX_PAGE_BY_PAGE_REGIONS {
            self.page_by_page_regions += 1;
            for page in region {
                self.report_ept01_change(L1Gfn::new(page), PageSize::Size4K);
            }
        } else {
            self.report_ept01_change(L1Gfn::new(region.start), PageSize::Size2M);
        }
    }

    /// Tells the engine that EPT01's translation of the `size`-aligned page
    /// containing `gfn` changed.
    fn report_ept01_change(&mut self, gfn: L1Gfn, size: PageSize) {
        self.mmu.ept01_changed(gfn, size);
    }

    /// Checks every live root's tables: memory safety for all, the oracle
    /// for those in sync.
    fn check_tables(&mut self) -> Result<(), ScenarioViolation> {
        let live: Vec<(Eptp, Eptp)> = self.mmu.live_roots().collect();
        let in_sync: Vec<(Eptp, Eptp)> = live
            .iter()
            .copied()
            .filter(|(eptp12, _)| self.in_sync.contains(&eptp12.root_address()))
            .collect();
        let mbec = self.context.mode_based_execute;
        let checker = || InvariantChecker::new(&self.memory, &self.ept01, self.context, mbec);
        if in_sync.len() == live.len() {
            // One pass does both (the common case).
            self.report.full_checks += 1;
            checker().check_roots(self.mmu.frames(), live)?;
        } else {
            // Memory safety over all roots together (a frame at two levels
            // may span both sets), the oracle over the in-sync ones.
            checker()
                .memory_safety_only()
                .check_roots(self.mmu.frames(), live)?;
            checker().check_roots(self.mmu.frames(), in_sync)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// Present, readable, writable and executable (bits 2:0).
    const RWX: u64 = 0b111;
    /// Write-back memory type in a leaf (bits 5:3 = 6).
    const LEAF_WB: u64 = 6 << 3;

    /// A 4-level EPT02 in a fresh pool mapping L2 page `page` (< 512) to
    /// host `host` with rights `rights`: (pool, EPTP02, the page table).
    fn one_page_ept02(page: u64, host: u64, rights: u64) -> (FramePool, Eptp, HostPa) {
        let mut frames = FramePool::new(4);
        let tables: Vec<HostPa> = (0..4).filter_map(|_| frames.allocate()).collect();
        for pair in tables.windows(2) {
            frames.table_mut(pair[0])[0] = pair[1].raw() | RWX;
        }
        frames.table_mut(tables[3])[usize::try_from(page).unwrap()] = host | rights | LEAF_WB;
        let eptp02 = Eptp::from_raw(tables[0].raw() | WELL_FORMED_EPTP);
        (frames, eptp02, tables[3])
    }

    fn context() -> EptWalkContext {
        EptWalkContext::from_capabilities(&VmxCapabilities::bochs_skylake_x(), 46, false)
    }

    #[test]
    fn pointer_pages_reach_every_area() {
        assert_eq!(pointer_page(0), 0);
        assert_eq!(pointer_page(63), 63);
        assert_eq!(pointer_page(64), L1_PAGES);
        assert_eq!(pointer_page(128), REGION_PAGES);
        assert_eq!(pointer_page(191), REGION_PAGES + 63);
        assert_eq!(pointer_page(192), 0);
        assert_eq!(pointer_page(193), REGION_PAGES);
        assert_eq!(pointer_page(194), 2 * REGION_PAGES);
        assert_eq!(ept01_page(5), L1Gfn::new(5));
        assert_eq!(ept01_page(64), L1Gfn::new(REGION_PAGES));
        assert_eq!(ept01_page(128 + 5), L1Gfn::new(5));
    }

    #[test]
    fn the_tlb_keeps_a_removed_translation_until_flushed() {
        let host = HOST_BASE + 0x5000;
        let (mut frames, eptp02, page_table) = one_page_ept02(3, host, RWX);
        let gpa = L2Gpa::new(3 * PAGE_SIZE + 0x10);
        let mut caches = ProcessorCaches::default();
        let used = caches
            .access(&frames, eptp02, gpa, Access::WRITE, context())
            .unwrap()
            .unwrap();
        assert_eq!(used.via, TranslationSource::Walk);
        assert_eq!(used.host, HostPa::new(host + 0x10));
        // The engine removes the leaf without a flush: the processor still
        // uses it.
        frames.table_mut(page_table)[3] = 0;
        let stale = caches
            .access(&frames, eptp02, gpa, Access::READ, context())
            .unwrap()
            .unwrap();
        assert_eq!(stale.via, TranslationSource::Tlb);
        caches.flush(eptp02.root_address());
        assert!(
            caches
                .access(&frames, eptp02, gpa, Access::READ, context())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_cached_translation_without_the_right_faults() {
        let (frames, eptp02, _) = one_page_ept02(0, HOST_BASE, 0b001);
        let gpa = L2Gpa::new(0);
        let mut caches = ProcessorCaches::default();
        assert!(
            caches
                .access(&frames, eptp02, gpa, Access::READ, context())
                .unwrap()
                .is_some()
        );
        assert!(
            caches
                .access(&frames, eptp02, gpa, Access::WRITE, context())
                .unwrap()
                .is_none()
        );
        caches.invalidate_address(eptp02.root_address(), gpa.raw());
        assert!(caches.tlb.is_empty() && caches.structures.is_empty());
    }

    #[test]
    fn walks_start_from_cached_paging_structure_entries() {
        let (mut frames, eptp02, page_table) = one_page_ept02(0, HOST_BASE, RWX);
        frames.table_mut(page_table)[1] = (HOST_BASE + PAGE_SIZE) | RWX | LEAF_WB;
        let mut caches = ProcessorCaches::default();
        caches
            .access(&frames, eptp02, L2Gpa::new(0), Access::READ, context())
            .unwrap()
            .unwrap();
        let next = caches
            .access(
                &frames,
                eptp02,
                L2Gpa::new(PAGE_SIZE),
                Access::READ,
                context(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            next.via,
            TranslationSource::PagingStructureCache { level: 2 }
        );
        // A cached entry whose table was freed is caught, not read.
        frames.free(page_table);
        let error = caches
            .access(
                &frames,
                eptp02,
                L2Gpa::new(2 * PAGE_SIZE),
                Access::READ,
                context(),
            )
            .unwrap_err();
        assert!(matches!(
            error,
            ScenarioViolation::StaleTable { level: 1, .. }
        ));
    }

    /// Tables 0..4 map L2 page 0 to L1 page 16, with EPTP A/D enabled if
    /// `accessed_dirty`.
    fn mapped_scenario(ops: Vec<Op>, accessed_dirty: bool) -> Scenario {
        let pointer = |page: u8| EntryValue::Pointer { page, flags: 0b111 };
        Scenario {
            policy: 0,
            entries: vec![
                (0, 0, pointer(1)),
                (1, 0, pointer(2)),
                (2, 0, pointer(3)),
                (
                    3,
                    0,
                    EntryValue::Pointer {
                        page: 16,
                        flags: 0b111 | (6 << 3),
                    },
                ),
            ],
            roots: vec![RootSpec {
                table: 0,
                low_bits: None,
            }],
            ops,
            options: Options {
                accessed_dirty_roots: u8::from(accessed_dirty),
                ..Options::default()
            },
        }
    }

    #[test]
    fn repeated_accesses_hit_the_tlb_and_are_checked_against_the_oracle() {
        let read = Op::Access {
            root: 0,
            page: 0,
            kind: 0,
        };
        let report = mapped_scenario(vec![read, read, Op::InveptGlobal, read], true)
            .run()
            .unwrap();
        assert_eq!(report.faults, 1);
        assert_eq!(report.translations_used, 3);
        assert_eq!(report.tlb_hits, 2);
        assert_eq!(report.in_sync_uses, 3);
    }

    #[test]
    fn prebuilt_tables_map_every_kind_of_page() {
        // One 4-KByte page of each page table, the 2-MByte leaves on both
        // regions, the shared page table; each read twice.
        let pages = [0, 512, 1024, 1536, 2048 + 3, 3584];
        let ops = pages
            .iter()
            .flat_map(|&page| {
                let read = Op::Access {
                    root: 0,
                    page,
                    kind: 0,
                };
                [read, read]
            })
            .collect();
        let scenario = Scenario {
            policy: 0,
            entries: Vec::new(),
            roots: vec![RootSpec {
                table: 0,
                low_bits: None,
            }],
            ops,
            options: Options {
                prebuilt_tables: true,
                ept01_large_pages: true,
                ..Options::default()
            },
        };
        let report = scenario.run().unwrap();
        assert_eq!(report.translations_used, 2 * pages.len(), "{report:?}");
        assert_eq!(report.in_sync_uses, 2 * pages.len());
        assert!(report.tlb_hits >= pages.len());
    }

    #[test]
    fn ept01_changes_of_every_kind_run_clean() {
        let access = |kind| Op::Access {
            root: 0,
            page: 0,
            kind,
        };
        let mut ops = Vec::new();
        for action in 0..=u8::MAX {
            ops.extend([
                access(action % 3),
                Op::Ept01 { page: 16, action },
                access(1),
            ]);
        }
        for large_pages in [false, true] {
            let mut scenario = mapped_scenario(ops.clone(), true);
            scenario.options.ept01_large_pages = large_pages;
            let report = scenario.run().unwrap();
            assert!(report.translations_used > 256, "{report:?}");
        }
    }
}
