//! Shadow EPT02 engine tests: fills (EPT12 ∩ EPT01, page-size splits,
//! memory type), the root cache (hits, sharing, eviction, frame reuse),
//! precise resync on INVEPT and L1 writes, EPT01 zaps, flush tracking,
//! A/D write protection, the four policies, hostile EPT12, and a property
//! test of random operation sequences checked against the oracle after
//! every step.
#![allow(clippy::unreadable_literal, reason = "addresses read best as written")]

use std::collections::{HashMap, HashSet};

use hv_arch_vmx::ept::{EptEntry, EptLevel, EptMemoryType, EptPermissions, EptWalkContext, Eptp};
use hv_mmu::addr::{HostPa, L1Gfn, L1Gpa, L2Gpa, PageSize};
use hv_mmu::env::{FrameAllocator, Table};
use hv_mmu::testing::{
    AllocatedFrames, Ept12Builder, FramePool, InvariantChecker, InvariantReport, L1Backing,
    TestEpt01, TestMemory,
};
use hv_mmu::walk::{Access, AccessKind};
use hv_mmu::{FaultOutcome, Mmu, MmuConfig, MmuError, MmuStats, Policy};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

const MIB: u64 = 1 << 20;
const HOST: HostPa = HostPa::new(0x10_0000_0000);
const R: EptPermissions = EptPermissions::READ;
const RW: EptPermissions = EptPermissions::READ.union(EptPermissions::WRITE);
const RX: EptPermissions = EptPermissions::READ.union(EptPermissions::EXECUTE);
const RWX: EptPermissions = EptPermissions::READ_WRITE_EXECUTE;

fn context() -> EptWalkContext {
    EptWalkContext {
        maxphyaddr: 46,
        execute_only: true,
        pages_2m: true,
        pages_1g: true,
        mode_based_execute: false,
    }
}

/// An L1 with its memory, EPT01 and one engine.
struct World {
    memory: TestMemory,
    ept01: TestEpt01,
    mmu: Mmu<FramePool>,
}

impl World {
    fn new(policy: Policy, l1_size: u64) -> Self {
        Self::with_config(MmuConfig::new(policy, context()), l1_size, 1 << 14)
    }

    fn with_config(config: MmuConfig, l1_size: u64, pool: usize) -> Self {
        Self {
            memory: TestMemory::new(l1_size),
            ept01: TestEpt01::identity(l1_size, HOST),
            mmu: Mmu::new(config, FramePool::new(pool)),
        }
    }

    fn builder(&mut self, area: u64) -> Ept12Builder {
        Ept12Builder::new(&mut self.memory, L1Gpa::new(area)).unwrap()
    }

    /// Handles an EPT02 violation directly.
    fn fault(&mut self, gpa: u64, access: Access) -> FaultOutcome {
        self.mmu
            .handle_ept_violation(&mut self.memory, &self.ept01, L2Gpa::new(gpa), access)
            .unwrap()
    }

    /// What hardware does on an L2 access: use EPT02 if it allows the access,
    /// otherwise take an EPT violation to the engine. `None` = no exit.
    fn touch(&mut self, gpa: u64, access: Access) -> Option<FaultOutcome> {
        if allows(walk02(&self.mmu, gpa), access) {
            return None;
        }
        let outcome = self.fault(gpa, access);
        if matches!(outcome, FaultOutcome::Filled { .. }) {
            assert!(
                allows(walk02(&self.mmu, gpa), access),
                "filled but EPT02 still denies {access:?} at {gpa:#x}"
            );
        }
        Some(outcome)
    }

    /// Full invariant check of every live root (EPT12 in sync).
    fn check(&self) -> InvariantReport {
        self.checker()
            .check_roots(self.mmu.frames(), self.mmu.live_roots())
            .unwrap_or_else(|violation| panic!("invariant: {violation}"))
    }

    fn checker(&self) -> InvariantChecker<'_, TestMemory, TestEpt01> {
        InvariantChecker::new(&self.memory, &self.ept01, context(), false)
    }

    fn stats(&self) -> MmuStats {
        self.mmu.stats()
    }
}

/// Walks the current EPT02 as hardware would: (host address, rights intersected
/// along the walk, leaf size).
fn walk02(mmu: &Mmu<FramePool>, gpa: u64) -> Option<(HostPa, EptPermissions, PageSize)> {
    let eptp02 = mmu.current_root()?;
    let mut table = HostPa::new(eptp02.root_address());
    let mut rights = EptPermissions::all();
    for number in (1..=eptp02.walk_levels()).rev() {
        let level = EptLevel::from_number(number)?;
        let entry = EptEntry::from_raw(mmu.frames().table(table)[level.index_of(gpa)]);
        if !entry.is_present(false) {
            return None;
        }
        rights &= entry.permissions();
        if entry.is_leaf(level) {
            let host = HostPa::new(entry.translate(level, gpa)?);
            return Some((host, rights, PageSize::at_level(number)?));
        }
        table = HostPa::new(entry.address());
    }
    None
}

fn allows(walk: Option<(HostPa, EptPermissions, PageSize)>, access: Access) -> bool {
    walk.is_some_and(|(_, rights, _)| access.allowed_by(rights, false))
}

fn filled(size: PageSize) -> FaultOutcome {
    FaultOutcome::Filled {
        size,
        flush_before_resume: false,
    }
}

// --- Fills -----------------------------------------------------------------

#[test]
fn fill_maps_the_host_frame_with_ept12_and_ept01_rights_intersected() {
    let mut world = World::new(Policy::Hv, 64 * MIB);
    let mut ept12 = world.builder(0x100_0000);
    ept12
        .map(
            &mut world.memory,
            L2Gpa::new(0x4000_3000),
            L1Gpa::new(0x20_5000),
            PageSize::Size4K,
            RW,
        )
        .unwrap();
    world.ept01.protect(L1Gfn::new(0x205), RX);
    let switch = world.mmu.switch_to(ept12.eptp(false)).unwrap();
    assert!(!switch.hit);
    assert!(
        !switch.flush_before_entry,
        "a new root on a fresh frame needs no flush"
    );

    assert_eq!(
        world.fault(0x4000_3123, Access::READ),
        filled(PageSize::Size4K)
    );
    let (host, rights, size) = walk02(&world.mmu, 0x4000_3123).unwrap();
    assert_eq!(host, HOST.wrapping_add(0x20_5123));
    assert_eq!(rights, R, "RW (EPT12) ∩ RX (EPT01)");
    assert_eq!(size, PageSize::Size4K);
    // A write is allowed by EPT12 but not by EPT01: L0's business.
    assert_eq!(
        world.fault(0x4000_3000, Access::WRITE),
        FaultOutcome::Emulate {
            l1_gpa: L1Gpa::new(0x20_5000)
        }
    );
    // A fetch is denied by EPT12: L1 sees the violation.
    assert!(matches!(
        world.fault(0x4000_3000, Access::FETCH),
        FaultOutcome::Reflect(_)
    ));
    let stats = world.stats();
    assert_eq!((stats.fills, stats.emulated, stats.reflected), (1, 1, 1));
    assert_eq!(stats.tables_live, 4, "PML4, PDPT, PD, PT");
    assert_eq!(stats.frames_in_use, world.mmu.frames().in_use());
    world.check();
}

#[test]
fn leaf_takes_ept01_memory_type_with_ignore_pat() {
    let mut world = World::new(Policy::Hv, 64 * MIB);
    let mut ept12 = world.builder(0x100_0000);
    ept12
        .map(
            &mut world.memory,
            L2Gpa::new(0),
            L1Gpa::new(0x30_0000),
            PageSize::Size4K,
            RWX,
        )
        .unwrap();
    world.ept01.map_page(
        L1Gfn::new(0x300),
        HostPa::new(0x77_0000_0000),
        RWX,
        EptMemoryType::Uncacheable,
    );
    world.mmu.switch_to(ept12.eptp(false)).unwrap();
    assert_eq!(world.fault(0, Access::WRITE), filled(PageSize::Size4K));
    let eptp02 = world.mmu.current_root().unwrap();
    // Walk to the PTE by hand and look at its memory type bits.
    let mut table = HostPa::new(eptp02.root_address());
    for level in [EptLevel::Pml4e, EptLevel::Pdpte, EptLevel::Pde] {
        table = HostPa::new(
            EptEntry::from_raw(world.mmu.frames().table(table)[level.index_of(0)]).address(),
        );
    }
    let pte = EptEntry::from_raw(world.mmu.frames().table(table)[0]);
    assert_eq!(pte.memory_type(), Some(EptMemoryType::Uncacheable));
    assert!(pte.ignore_pat());
    assert_eq!(pte.address(), 0x77_0000_0000);
    world.check();
}

#[test]
fn large_ept12_page_over_small_ept01_pages_is_split_through_direct_tables() {
    let mut world = World::new(Policy::Hv, 64 * MIB);
    let mut ept12 = world.builder(0x100_0000);
    // 2M EPT12 page; EPT01 maps 4K pages (identity without large pages).
    ept12
        .map(
            &mut world.memory,
            L2Gpa::new(0x20_0000),
            L1Gpa::new(0x40_0000),
            PageSize::Size2M,
            RX,
        )
        .unwrap();
    world.mmu.switch_to(ept12.eptp(false)).unwrap();
    assert_eq!(
        world.fault(0x20_1234, Access::FETCH),
        filled(PageSize::Size4K)
    );
    assert_eq!(
        world.fault(0x3F_F000, Access::READ),
        filled(PageSize::Size4K)
    );
    let (host, rights, size) = walk02(&world.mmu, 0x20_1234).unwrap();
    assert_eq!(
        (host, rights, size),
        (HOST.wrapping_add(0x40_1234), RX, PageSize::Size4K)
    );
    // PML4, PDPT, PD (mirroring) + one direct PT shared by both pages.
    assert_eq!(world.stats().tables_live, 4);
    world.check();

    // With 2M EPT01 pages the leaf is 2M.
    let mut world = World::new(Policy::Hv, 64 * MIB);
    world.ept01 = TestEpt01::identity(64 * MIB, HOST).with_large_pages(true);
    let mut ept12 = world.builder(0x100_0000);
    ept12
        .map(
            &mut world.memory,
            L2Gpa::new(0x20_0000),
            L1Gpa::new(0x40_0000),
            PageSize::Size2M,
            RWX,
        )
        .unwrap();
    world.mmu.switch_to(ept12.eptp(false)).unwrap();
    assert_eq!(
        world.fault(0x20_1234, Access::WRITE),
        filled(PageSize::Size2M)
    );
    assert_eq!(
        walk02(&world.mmu, 0x3F_FFFF).unwrap().0,
        HOST.wrapping_add(0x5F_FFFF)
    );
    assert_eq!(world.stats().tables_live, 3);
    world.check();
}

#[test]
fn one_gigabyte_ept12_page_over_two_megabyte_ept01_pages() {
    let mut world = World::new(Policy::Hv, 1 << 30);
    world.ept01 = TestEpt01::identity(1 << 30, HOST).with_large_pages(true);
    let mut ept12 = world.builder(0x100_0000);
    ept12
        .map(
            &mut world.memory,
            L2Gpa::new(1 << 30),
            L1Gpa::new(0),
            PageSize::Size1G,
            RWX,
        )
        .unwrap();
    // One 4K page of L1 with its own rights splits its 2M region.
    world.ept01.protect(L1Gfn::new(0x601), R);
    world.mmu.switch_to(ept12.eptp(false)).unwrap();
    assert_eq!(
        world.fault((1 << 30) + 0x20_0000, Access::WRITE),
        filled(PageSize::Size2M)
    );
    assert_eq!(
        world.fault((1 << 30) + 0x60_1000, Access::READ),
        filled(PageSize::Size4K)
    );
    assert_eq!(walk02(&world.mmu, (1 << 30) + 0x60_1000).unwrap().1, R);
    // PML4, PDPT, direct PD (for the 1G page), direct PT (for one 2M region).
    assert_eq!(world.stats().tables_live, 4);
    world.check();
}

#[test]
fn five_level_walks_get_five_level_roots() {
    let mut world = World::new(Policy::Hv, 64 * MIB);
    let mut ept12 =
        Ept12Builder::with_levels(&mut world.memory, L1Gpa::new(0x100_0000), 5).unwrap();
    let gpa = (3 << 48) | (5 << 39) | 0x1000;
    ept12
        .map(
            &mut world.memory,
            L2Gpa::new(gpa),
            L1Gpa::new(0x20_1000),
            PageSize::Size4K,
            RW,
        )
        .unwrap();
    let switch = world.mmu.switch_to(ept12.eptp(false)).unwrap();
    assert_eq!(switch.eptp02.walk_levels(), 5);
    assert_eq!(
        world.touch(gpa, Access::WRITE),
        Some(filled(PageSize::Size4K))
    );
    assert_eq!(
        walk02(&world.mmu, gpa).unwrap().0,
        HOST.wrapping_add(0x20_1000)
    );
    assert_eq!(world.stats().tables_live, 5);
    world.check();
}

#[test]
fn mode_based_execute_passes_user_execute_through() {
    let mut config = MmuConfig::new(Policy::Hv, context());
    config.mode_based_execute = true;
    let mut world = World::with_config(config, 64 * MIB, 64);
    let mut ept12 = world.builder(0x100_0000);
    let user_only = R.union(EptPermissions::USER_EXECUTE);
    ept12
        .map(
            &mut world.memory,
            L2Gpa::new(0),
            L1Gpa::new(0x20_0000),
            PageSize::Size4K,
            user_only,
        )
        .unwrap();
    world.mmu.switch_to(ept12.eptp(false)).unwrap();
    assert!(matches!(
        world.fault(0, Access::FETCH),
        FaultOutcome::Reflect(_)
    ));
    assert_eq!(world.fault(0, Access::USER_FETCH), filled(PageSize::Size4K));
    assert_eq!(walk02(&world.mmu, 0).unwrap().1, user_only);
    let report = InvariantChecker::new(&world.memory, &world.ept01, context(), true)
        .check_roots(world.mmu.frames(), world.mmu.live_roots())
        .unwrap();
    assert_eq!(report.leaves, 1);
}

// --- Root cache ------------------------------------------------------------

/// `count` independent EPT12s, each mapping `pages` 4K pages at L2 0.
fn many_roots(world: &mut World, count: u64, pages: u64) -> Vec<Eptp> {
    (0..count)
        .map(|index| {
            let mut ept12 = world.builder(0x200_0000 + index * 0x10_0000);
            ept12
                .map_range(
                    &mut world.memory,
                    L2Gpa::new(0),
                    L1Gpa::new(index * pages * 0x1000),
                    pages * 0x1000,
                    PageSize::Size4K,
                    RW,
                )
                .unwrap();
            ept12.eptp(false)
        })
        .collect()
}

#[test]
fn switching_among_64_cached_roots_does_no_fills_and_no_flushes_after_warm_up() {
    let mut world = World::new(Policy::Hv, 256 * MIB);
    let eptps = many_roots(&mut world, 64, 8);
    let round = |world: &mut World| {
        for &eptp in &eptps {
            let switch = world.mmu.switch_to(eptp).unwrap();
            assert!(!switch.flush_before_entry);
            for page in 0..8 {
                world.touch(page * 0x1000, Access::WRITE);
            }
        }
    };
    round(&mut world);
    let warm = world.stats();
    assert_eq!(warm.fills, 64 * 8);
    assert_eq!(warm.root_misses, 64);
    assert_eq!(warm.flushes, 0);
    for _ in 0..10 {
        round(&mut world);
    }
    let after = world.stats();
    assert_eq!(after.fills, warm.fills, "no fills after warm-up");
    assert_eq!(after.flushes, 0, "no flushes");
    assert_eq!(after.root_hits, 640);
    assert_eq!(after.root_misses, 64);
    assert_eq!(after.roots_live, 64);
    assert_eq!(after.evictions, 0);
    world.check();
}

#[test]
fn roots_reaching_the_same_ept12_table_share_its_shadow_table() {
    let mut world = World::new(Policy::Hv, 64 * MIB);
    let mut first = world.builder(0x100_0000);
    first
        .map_range(
            &mut world.memory,
            L2Gpa::new(0),
            L1Gpa::new(0x20_0000),
            0x4000,
            PageSize::Size4K,
            RW,
        )
        .unwrap();
    let second = world.builder(0x180_0000);
    // The second EPT12's PML4 entry 0 points to the first one's PDPT.
    let shared = Ept12Builder::entry(&world.memory, first.root(), 0).unwrap();
    Ept12Builder::set_entry(&mut world.memory, second.root(), 0, shared).unwrap();

    world.mmu.switch_to(first.eptp(false)).unwrap();
    world.touch(0, Access::READ);
    world.touch(0x1000, Access::READ);
    assert_eq!(world.stats().tables_live, 4);
    world.mmu.switch_to(second.eptp(false)).unwrap();
    // Only the new root table; one fill links it to the shared PDPT, and
    // the page already mapped under it needs no fill.
    world.touch(0, Access::READ);
    assert_eq!(world.stats().tables_live, 5, "PDPT, PD and PT are shared");
    assert_eq!(world.stats().fills, 3);
    assert_eq!(
        world.touch(0x1000, Access::READ),
        None,
        "mapped through the shared PT"
    );
    world.check();

    // Xen does not share.
    let mut world_xen = World::new(Policy::Xen, 64 * MIB);
    world_xen.memory = world.memory.clone();
    for eptp in [first.eptp(false), second.eptp(false)] {
        world_xen.mmu.switch_to(eptp).unwrap();
        world_xen.touch(0, Access::READ);
    }
    assert_eq!(world_xen.stats().tables_live, 8);
}

#[test]
fn kvm_keeps_four_roots_and_rebuilds_with_a_flush() {
    let mut world = World::new(Policy::Kvm, 256 * MIB);
    let eptps = many_roots(&mut world, 5, 2);
    for _ in 0..3 {
        for &eptp in &eptps {
            let switch = world.mmu.switch_to(eptp).unwrap();
            assert!(!switch.hit, "5 roots round-robin never hit a 4-root LRU");
            assert!(switch.flush_before_entry);
            world.touch(0, Access::READ);
            world.touch(0x1000, Access::READ);
        }
    }
    let stats = world.stats();
    assert_eq!(stats.root_misses, 15);
    assert_eq!(stats.fills, 30, "every switch refills");
    assert_eq!(stats.flushes, 15);
    assert_eq!(stats.roots_live, 4);
    assert_eq!(stats.tables_live, 16, "evicted roots keep no tables");
    // Within 4 roots, KVM hits without a flush.
    let switch = world.mmu.switch_to(eptps[4]).unwrap();
    assert!(switch.hit && !switch.flush_before_entry);
    world.check();
}

#[test]
fn flush_always_unloads_and_flushes_on_every_switch() {
    let mut world = World::new(Policy::FlushAlways, 64 * MIB);
    let eptps = many_roots(&mut world, 1, 2);
    for _ in 0..3 {
        let switch = world.mmu.switch_to(eptps[0]).unwrap();
        assert!(!switch.hit);
        assert!(switch.flush_before_entry);
        world.touch(0, Access::READ);
    }
    let stats = world.stats();
    assert_eq!((stats.fills, stats.flushes, stats.root_misses), (3, 3, 3));
    assert_eq!(stats.tables_live, 4);
    assert_eq!(world.mmu.frames().in_use(), 4);
}

#[test]
fn xen_reuses_ten_slots_and_flushes_on_invvpid() {
    let mut world = World::new(Policy::Xen, 256 * MIB);
    let eptps = many_roots(&mut world, 11, 1);
    for &eptp in &eptps[..10] {
        world.mmu.switch_to(eptp).unwrap();
        world.touch(0, Access::READ);
    }
    assert_eq!(world.stats().roots_live, 10);
    // The 11th EPTP takes the LRU slot: emptied and flushed.
    let switch = world.mmu.switch_to(eptps[10]).unwrap();
    assert!(!switch.hit && switch.flush_before_entry);
    assert_eq!(world.stats().evictions, 1);
    world.touch(0, Access::READ);
    // INVVPID flushes every nested table.
    world.mmu.invvpid();
    assert_eq!(
        world.stats().roots_live,
        1,
        "only the loaded root is kept, emptied"
    );
    assert_eq!(world.stats().tables_live, 1);
    let switch = world.mmu.switch_to(eptps[10]).unwrap();
    assert!(switch.flush_before_entry);
    let switch = world.mmu.switch_to(eptps[3]).unwrap();
    assert!(!switch.hit && switch.flush_before_entry);
    world.check();
}

// --- Resync and flush tracking ----------------------------------------------

/// Three EPT12s: A and B share everything below the PML4, C is separate.
/// Each maps 8 pages at L2 0. All filled, then A is current.
fn three_roots(world: &mut World) -> (Ept12Builder, Eptp, Eptp, Eptp) {
    let mut a = world.builder(0x100_0000);
    a.map_range(
        &mut world.memory,
        L2Gpa::new(0),
        L1Gpa::new(0x20_0000),
        0x8000,
        PageSize::Size4K,
        RW,
    )
    .unwrap();
    let b = world.builder(0x180_0000);
    let shared = Ept12Builder::entry(&world.memory, a.root(), 0).unwrap();
    Ept12Builder::set_entry(&mut world.memory, b.root(), 0, shared).unwrap();
    let mut c = world.builder(0x200_0000);
    c.map_range(
        &mut world.memory,
        L2Gpa::new(0),
        L1Gpa::new(0x30_0000),
        0x8000,
        PageSize::Size4K,
        RW,
    )
    .unwrap();
    let eptps = (a.eptp(false), b.eptp(false), c.eptp(false));
    for eptp in [eptps.2, eptps.1, eptps.0] {
        world.mmu.switch_to(eptp).unwrap();
        for page in 0..8 {
            world.touch(page * 0x1000, Access::READ);
        }
    }
    (a, eptps.0, eptps.1, eptps.2)
}

#[test]
fn invept_after_one_leaf_change_zaps_only_that_entry_and_flags_the_roots_reaching_it() {
    let mut world = World::new(Policy::Hv, 64 * MIB);
    let (a, eptp_a, eptp_b, eptp_c) = three_roots(&mut world);
    let before = world.stats();
    // L1 remaps L2 page 3 to another L1 page, then INVEPTs A.
    a.unmap(&mut world.memory, L2Gpa::new(0x3000), PageSize::Size4K)
        .unwrap();
    let mut a = a;
    a.map(
        &mut world.memory,
        L2Gpa::new(0x3000),
        L1Gpa::new(0x28_0000),
        PageSize::Size4K,
        RW,
    )
    .unwrap();
    world.mmu.invept_single_context(&world.memory, eptp_a);
    let after = world.stats();
    assert_eq!(after.entries_zapped - before.entries_zapped, 1);
    assert_eq!(
        after.resyncs - before.resyncs,
        4,
        "A's PML4, PDPT, PD and PT compared"
    );
    assert_eq!(after.tables_live, before.tables_live);
    world.check();

    // The current root resumes with a flush; B shares the PT and is
    // flagged; C is not.
    assert!(walk02(&world.mmu, 0x3000).is_none());
    assert!(matches!(
        world.touch(0x3000, Access::READ),
        Some(FaultOutcome::Filled {
            flush_before_resume: true,
            ..
        })
    ));
    assert_eq!(
        walk02(&world.mmu, 0x3000).unwrap().0,
        HOST.wrapping_add(0x28_0000)
    );
    assert!(
        world.mmu.switch_to(eptp_a).unwrap().flush_before_entry,
        "the resume's switch_to reports (and clears) what the fill reported"
    );
    assert!(world.mmu.switch_to(eptp_b).unwrap().flush_before_entry);
    assert!(!world.mmu.switch_to(eptp_c).unwrap().flush_before_entry);
    assert!(
        !world.mmu.switch_to(eptp_a).unwrap().flush_before_entry,
        "flag cleared"
    );
    // Nothing else was lost.
    let fills = world.stats().fills;
    for eptp in [eptp_a, eptp_b, eptp_c] {
        world.mmu.switch_to(eptp).unwrap();
        for page in 0..8 {
            world.touch(page * 0x1000, Access::READ);
        }
    }
    assert_eq!(world.stats().fills, fills);
    world.check();
}

/// Strict check of the live roots whose EPTP12 is `eptp12`.
fn check_root(world: &World, eptp12: Eptp) {
    let roots = world.mmu.live_roots().filter(|&(root, _)| root == eptp12);
    let report = world
        .checker()
        .check_roots(world.mmu.frames(), roots)
        .unwrap_or_else(|violation| panic!("invariant: {violation}"));
    assert_eq!(report.roots, 1);
}

#[test]
fn a_new_root_linking_shared_tables_older_than_the_last_invept_resyncs_them() {
    let mut world = World::new(Policy::Hv, 64 * MIB);
    let mut a = world.builder(0x100_0000);
    a.map_range(
        &mut world.memory,
        L2Gpa::new(0),
        L1Gpa::new(0x20_0000),
        0x8000,
        PageSize::Size4K,
        RW,
    )
    .unwrap();
    // B has its own PML4 and PDPT; its PDPT entry 0 points to A's PD.
    let mut b = world.builder(0x180_0000);
    b.map(
        &mut world.memory,
        L2Gpa::new(0),
        L1Gpa::new(0x20_0000),
        PageSize::Size4K,
        R,
    )
    .unwrap();
    let shared = Ept12Builder::entry(&world.memory, a.table_pages()[1], 0).unwrap();
    Ept12Builder::set_entry(&mut world.memory, b.table_pages()[1], 0, shared).unwrap();
    let c = many_roots(&mut world, 1, 1)[0];
    world.mmu.switch_to(c).unwrap();
    world.mmu.switch_to(a.eptp(false)).unwrap();
    for page in 0..8 {
        world.touch(page * 0x1000, Access::READ);
    }
    // L1 remaps page 5 in the shared PT without INVEPT for A, then INVEPTs
    // an unrelated root, then launches B.
    a.map(
        &mut world.memory,
        L2Gpa::new(0x5000),
        L1Gpa::new(0x28_0000),
        PageSize::Size4K,
        RW,
    )
    .unwrap();
    world.mmu.invept_single_context(&world.memory, c);
    world.mmu.switch_to(b.eptp(false)).unwrap();
    world.touch(0, Access::READ);
    // B's new PDPT linked the shared PD, which was older than the INVEPT:
    // it was resynced, so B cannot see the old page 5.
    check_root(&world, b.eptp(false));
    assert_eq!(world.stats().entries_zapped, 1);
    assert!(
        world
            .mmu
            .switch_to(a.eptp(false))
            .unwrap()
            .flush_before_entry,
        "A lost page 5"
    );
}

#[test]
fn a_new_root_resyncs_tables_l1_rewrote_after_retiring_their_root() {
    // Found on Bochs (hv L1 under hv L0): L1 retires guest A with INVEPT,
    // frees A's EPT12 frames, and builds guest B's EPT12 in them with a new
    // root. No INVEPT is needed for B (the processor caches nothing for a
    // new EPTRTA, SDM 29.4.1), so B must not inherit A's shadow tables.
    for policy in Policy::ALL {
        let mut world = World::new(policy, 64 * MIB);
        let mut a = world.builder(0x100_0000);
        a.map_range(
            &mut world.memory,
            L2Gpa::new(0),
            L1Gpa::new(0x20_0000),
            0x8000,
            PageSize::Size4K,
            RW,
        )
        .unwrap();
        world.mmu.switch_to(a.eptp(false)).unwrap();
        for page in 0..8 {
            world.touch(page * 0x1000, Access::READ);
        }
        world
            .mmu
            .invept_single_context(&world.memory, a.eptp(false));
        // A's PT (reached through its PD) now maps other pages; B's own
        // PML4 and PDPT lead to A's PD.
        a.map_range(
            &mut world.memory,
            L2Gpa::new(0),
            L1Gpa::new(0x30_0000),
            0x8000,
            PageSize::Size4K,
            RW,
        )
        .unwrap();
        let mut b = world.builder(0x180_0000);
        b.map(
            &mut world.memory,
            L2Gpa::new(0),
            L1Gpa::new(0x30_0000),
            PageSize::Size4K,
            R,
        )
        .unwrap();
        let pd = Ept12Builder::entry(&world.memory, a.table_pages()[1], 0).unwrap();
        Ept12Builder::set_entry(&mut world.memory, b.table_pages()[1], 0, pd).unwrap();
        world.mmu.switch_to(b.eptp(false)).unwrap();
        for page in 0..8 {
            world.touch(page * 0x1000, Access::READ);
        }
        check_root(&world, b.eptp(false));
        let (host, _, _) = walk02(&world.mmu, 0x3000).unwrap();
        assert_eq!(
            host,
            HOST.wrapping_add(0x30_3000),
            "{policy:?}: B sees the current EPT12"
        );
    }
}

#[test]
fn kvm_invept_of_the_loaded_root_rebuilds_it_without_stale_shared_tables() {
    let mut world = World::new(Policy::Kvm, 64 * MIB);
    let (mut a, eptp_a, eptp_b, _) = three_roots(&mut world);
    a.map(
        &mut world.memory,
        L2Gpa::new(0x5000),
        L1Gpa::new(0x28_0000),
        PageSize::Size4K,
        RW,
    )
    .unwrap();
    // KVM frees A's root (here: empties the loaded one); the shared tables
    // live on through B and are older than the INVEPT.
    world.mmu.invept_single_context(&world.memory, eptp_a);
    assert!(world.mmu.switch_to(eptp_a).unwrap().flush_before_entry);
    world.touch(0, Access::READ);
    check_root(&world, eptp_a);
    assert!(
        world.mmu.switch_to(eptp_b).unwrap().flush_before_entry,
        "B lost page 5"
    );
}

#[test]
fn adding_rights_only_is_applied_in_place_without_a_flush() {
    let mut world = World::new(Policy::Hv, 64 * MIB);
    let mut ept12 = world.builder(0x100_0000);
    ept12
        .map(
            &mut world.memory,
            L2Gpa::new(0x5000),
            L1Gpa::new(0x20_5000),
            PageSize::Size4K,
            R,
        )
        .unwrap();
    let eptp = ept12.eptp(false);
    world.mmu.switch_to(eptp).unwrap();
    world.touch(0x5000, Access::READ);
    assert_eq!(walk02(&world.mmu, 0x5000).unwrap().1, R);
    ept12
        .map(
            &mut world.memory,
            L2Gpa::new(0x5000),
            L1Gpa::new(0x20_5000),
            PageSize::Size4K,
            RWX,
        )
        .unwrap();
    let before = world.stats();
    world.mmu.invept_single_context(&world.memory, eptp);
    let after = world.stats();
    assert_eq!(after.entries_zapped, before.entries_zapped);
    assert_eq!(
        walk02(&world.mmu, 0x5000).unwrap().1,
        RWX,
        "widened in place"
    );
    assert_eq!(world.touch(0x5000, Access::WRITE), None, "no fault needed");
    assert!(!world.mmu.switch_to(eptp).unwrap().flush_before_entry);
    assert_eq!(world.stats().flushes, 0);
    world.check();
}

#[test]
fn l1_write_notification_resyncs_the_tables_built_from_that_page() {
    let mut world = World::new(Policy::Hv, 64 * MIB);
    let (a, eptp_a, eptp_b, _) = three_roots(&mut world);
    let pt = a.table_pages()[3];
    // L1 clears two PTEs of the shared PT.
    for index in [1, 6] {
        Ept12Builder::set_entry(&mut world.memory, pt, index, 0).unwrap();
    }
    world.mmu.l1_wrote(&world.memory, pt);
    assert_eq!(world.stats().entries_zapped, 2);
    world.check();
    assert!(world.mmu.switch_to(eptp_b).unwrap().flush_before_entry);
    assert!(world.mmu.switch_to(eptp_a).unwrap().flush_before_entry);
    assert!(matches!(
        world.touch(0x1000, Access::READ),
        Some(FaultOutcome::Reflect(_))
    ));
}

#[test]
fn a_walk_that_diverges_from_the_shadow_path_is_repaired_on_the_fault() {
    let mut world = World::new(Policy::Hv, 64 * MIB);
    let mut ept12 = world.builder(0x100_0000);
    ept12
        .map(
            &mut world.memory,
            L2Gpa::new(0x1000),
            L1Gpa::new(0x20_1000),
            PageSize::Size4K,
            R,
        )
        .unwrap();
    world.mmu.switch_to(ept12.eptp(false)).unwrap();
    world.touch(0x1000, Access::READ);
    // Without INVEPT, L1 moves the page and allows writes; the write
    // faults (the shadow is read-only) and the walk sees the new entry.
    ept12
        .map(
            &mut world.memory,
            L2Gpa::new(0x1000),
            L1Gpa::new(0x20_7000),
            PageSize::Size4K,
            RW,
        )
        .unwrap();
    let outcome = world.touch(0x1000, Access::WRITE).unwrap();
    assert_eq!(
        outcome,
        FaultOutcome::Filled {
            size: PageSize::Size4K,
            flush_before_resume: true
        },
        "a translation was replaced"
    );
    assert_eq!(
        walk02(&world.mmu, 0x1000).unwrap().0,
        HOST.wrapping_add(0x20_7000)
    );
    world.check();
}

#[test]
fn a_fault_that_finds_an_upper_entry_changed_widens_or_relinks_it() {
    let mut world = World::new(Policy::Hv, 64 * MIB);
    let mut ept12 = world.builder(0x100_0000);
    ept12
        .map_range(
            &mut world.memory,
            L2Gpa::new(0),
            L1Gpa::new(0x20_0000),
            0x4000,
            PageSize::Size4K,
            RW,
        )
        .unwrap();
    let pd = ept12.table_pages()[2];
    let pde = Ept12Builder::entry(&world.memory, pd, 0).unwrap();
    // The PDE allows only reads at first.
    Ept12Builder::set_entry(&mut world.memory, pd, 0, pde & !0b110).unwrap();
    world.mmu.switch_to(ept12.eptp(false)).unwrap();
    world.touch(0, Access::READ);
    assert_eq!(walk02(&world.mmu, 0).unwrap().1, R);
    // Without INVEPT, L1 gives the PDE write: the write faults, the walk
    // sees the wider PDE and the shadow PDE is widened in place.
    Ept12Builder::set_entry(&mut world.memory, pd, 0, pde).unwrap();
    assert_eq!(
        world.touch(0, Access::WRITE),
        Some(filled(PageSize::Size4K))
    );
    assert_eq!(walk02(&world.mmu, 0).unwrap().1, RW);
    assert_eq!(world.stats().entries_zapped, 0);
    world.check();

    // Without INVEPT, L1 points the PDE at another page table; a fault on a
    // page not yet mapped relinks the PDE, which removes translations.
    let mut other = world.builder(0x180_0000);
    other
        .map_range(
            &mut world.memory,
            L2Gpa::new(0),
            L1Gpa::new(0x30_0000),
            0x4000,
            PageSize::Size4K,
            RW,
        )
        .unwrap();
    let other_pde = Ept12Builder::entry(&world.memory, other.table_pages()[2], 0).unwrap();
    Ept12Builder::set_entry(&mut world.memory, pd, 0, other_pde).unwrap();
    let outcome = world.touch(0x2000, Access::READ).unwrap();
    assert_eq!(
        outcome,
        FaultOutcome::Filled {
            size: PageSize::Size4K,
            flush_before_resume: true
        }
    );
    assert_eq!(
        walk02(&world.mmu, 0x2000).unwrap().0,
        HOST.wrapping_add(0x30_2000)
    );
    assert!(
        walk02(&world.mmu, 0).is_none(),
        "the old page table is unlinked"
    );
    world.check();
}

#[test]
fn a_fault_that_replaces_a_leaf_with_other_rights_asks_for_a_flush() {
    let mut world = World::new(Policy::Hv, 64 * MIB);
    let mut ept12 = world.builder(0x100_0000);
    ept12
        .map(
            &mut world.memory,
            L2Gpa::new(0),
            L1Gpa::new(0x20_0000),
            PageSize::Size4K,
            RX,
        )
        .unwrap();
    world.mmu.switch_to(ept12.eptp(false)).unwrap();
    world.touch(0, Access::FETCH);
    // Without INVEPT, L1 trades execute for write; the write faults.
    ept12
        .map(
            &mut world.memory,
            L2Gpa::new(0),
            L1Gpa::new(0x20_0000),
            PageSize::Size4K,
            RW,
        )
        .unwrap();
    assert_eq!(
        world.touch(0, Access::WRITE),
        Some(FaultOutcome::Filled {
            size: PageSize::Size4K,
            flush_before_resume: true
        }),
        "hardware may still cache the executable translation"
    );
    assert_eq!(walk02(&world.mmu, 0).unwrap().1, RW);
    world.check();
    assert!(
        world
            .mmu
            .switch_to(ept12.eptp(false))
            .unwrap()
            .flush_before_entry,
        "the resume's switch_to reports it too"
    );
    // The snapshot follows the new entry: a later INVEPT finds nothing.
    world.mmu.invept_global(&world.memory);
    assert!(
        !world
            .mmu
            .switch_to(ept12.eptp(false))
            .unwrap()
            .flush_before_entry
    );
}

#[test]
fn ept01_change_zaps_the_leaves_mapping_that_page_including_large_ones() {
    let mut world = World::new(Policy::Hv, 64 * MIB);
    world.ept01 = TestEpt01::identity(64 * MIB, HOST).with_large_pages(true);
    let mut ept12 = world.builder(0x100_0000);
    ept12
        .map(
            &mut world.memory,
            L2Gpa::new(0x1000),
            L1Gpa::new(0x30_1000),
            PageSize::Size4K,
            RW,
        )
        .unwrap();
    ept12
        .map(
            &mut world.memory,
            L2Gpa::new(0x2000),
            L1Gpa::new(0x30_1000),
            PageSize::Size4K,
            R,
        )
        .unwrap();
    ept12
        .map(
            &mut world.memory,
            L2Gpa::new(0x40_0000),
            L1Gpa::new(0x60_0000),
            PageSize::Size2M,
            RW,
        )
        .unwrap();
    let eptp = ept12.eptp(false);
    world.mmu.switch_to(eptp).unwrap();
    for gpa in [0x1000, 0x2000, 0x40_0000] {
        world.touch(gpa, Access::READ);
    }
    assert_eq!(walk02(&world.mmu, 0x40_0000).unwrap().2, PageSize::Size2M);

    // Two leaves map L1 page 0x301.
    world.ept01.protect(L1Gfn::new(0x301), R);
    world.mmu.ept01_changed(L1Gfn::new(0x301), PageSize::Size4K);
    assert_eq!(world.stats().entries_zapped, 2);
    assert!(walk02(&world.mmu, 0x1000).is_none() && walk02(&world.mmu, 0x2000).is_none());
    assert!(walk02(&world.mmu, 0x40_0000).is_some());
    world.check();

    // A page inside the 2M leaf.
    world.ept01.protect(L1Gfn::new(0x6AB), R);
    world.mmu.ept01_changed(L1Gfn::new(0x6AB), PageSize::Size4K);
    assert_eq!(world.stats().entries_zapped, 3);
    assert!(walk02(&world.mmu, 0x4A_B000).is_none());
    assert!(world.mmu.switch_to(eptp).unwrap().flush_before_entry);
    // Refilled as 4K through a direct table now that EPT01 split the region.
    assert_eq!(
        world.touch(0x4A_B000, Access::READ),
        Some(filled(PageSize::Size4K))
    );
    assert_eq!(walk02(&world.mmu, 0x4A_B000).unwrap().1, R);
    assert!(matches!(
        world.touch(0x4A_B000, Access::WRITE),
        Some(FaultOutcome::Emulate { .. })
    ));
    world.check();
}

// --- Budget and frame reuse ----------------------------------------------

#[test]
fn budget_exhaustion_evicts_orphans_first_then_lru_roots() {
    let mut config = MmuConfig::new(Policy::Hv, context());
    config.frame_budget = 8;
    let mut world = World::with_config(config, 64 * MIB, 64);
    let eptps = many_roots(&mut world, 3, 1);
    // A: 4 tables; B: 4 tables.
    for &eptp in &eptps[..2] {
        world.mmu.switch_to(eptp).unwrap();
        world.touch(0, Access::READ);
    }
    assert_eq!(world.stats().tables_live, 8);
    // L1 cuts A's PML4 entry and INVEPTs: A's PDPT, PD, PT become orphans.
    let a_root = L1Gfn::new(eptps[0].root_address() >> 12);
    Ept12Builder::set_entry(&mut world.memory, a_root, 0, 0).unwrap();
    world.mmu.invept_single_context(&world.memory, eptps[0]);
    assert_eq!(
        world.stats().tables_live,
        8,
        "orphans are kept while there is room"
    );
    // C needs a root table: the orphans go first (one eviction, 3 tables).
    world.mmu.switch_to(eptps[2]).unwrap();
    let stats = world.stats();
    assert_eq!(
        (stats.evictions, stats.roots_live, stats.tables_live),
        (1, 3, 6)
    );
    // C's path needs 3 more: then the LRU root (A) goes.
    world.touch(0, Access::READ);
    let stats = world.stats();
    assert_eq!(
        (stats.evictions, stats.roots_live, stats.tables_live),
        (2, 2, 8)
    );
    let live: Vec<Eptp> = world.mmu.live_roots().map(|(eptp12, _)| eptp12).collect();
    assert!(!live.contains(&eptps[0]));
    assert_eq!(world.mmu.frames().in_use(), 8);
    world.check();
}

#[test]
fn a_budget_smaller_than_one_path_fails_cleanly_and_a_tiny_pool_never_panics() {
    let mut config = MmuConfig::new(Policy::Hv, context());
    config.frame_budget = 3;
    let mut world = World::with_config(config, 64 * MIB, 64);
    let eptps = many_roots(&mut world, 2, 1);
    world.mmu.switch_to(eptps[0]).unwrap();
    let result = world.mmu.handle_ept_violation(
        &mut world.memory,
        &world.ept01,
        L2Gpa::new(0),
        Access::READ,
    );
    assert_eq!(result, Err(MmuError::OutOfFrames));
    assert!(world.stats().frames_in_use <= 3);
    world.check();

    // The allocator runs dry before the budget: same reclaim path.
    let mut world = World::with_config(MmuConfig::new(Policy::Hv, context()), 64 * MIB, 5);
    let eptps = many_roots(&mut world, 2, 1);
    for &eptp in eptps.iter().cycle().take(6) {
        world.mmu.switch_to(eptp).unwrap();
        world.touch(0, Access::READ);
        world.check();
    }
    assert!(world.stats().evictions > 0);
}

#[test]
fn the_last_resort_empties_the_current_root_and_retries() {
    let mut config = MmuConfig::new(Policy::Hv, context());
    config.frame_budget = 4;
    let mut world = World::with_config(config, 64 * MIB, 64);
    let mut ept12 = world.builder(0x100_0000);
    // Two pages under different PDs: 6 tables in all, more than the budget.
    for gpa in [0, 1 << 30] {
        ept12
            .map(
                &mut world.memory,
                L2Gpa::new(gpa),
                L1Gpa::new(0x20_0000),
                PageSize::Size4K,
                R,
            )
            .unwrap();
    }
    world.mmu.switch_to(ept12.eptp(false)).unwrap();
    assert_eq!(world.touch(0, Access::READ), Some(filled(PageSize::Size4K)));
    let outcome = world.touch(1 << 30, Access::READ).unwrap();
    assert_eq!(
        outcome,
        FaultOutcome::Filled {
            size: PageSize::Size4K,
            flush_before_resume: true
        }
    );
    assert!(
        walk02(&world.mmu, 0).is_none(),
        "the other path was dropped"
    );
    assert_eq!(world.stats().frames_in_use, 4);
    world.check();
}

#[test]
fn a_root_on_a_frame_freed_by_another_root_is_flushed_before_first_use() {
    let mut config = MmuConfig::new(Policy::Hv, context());
    config.root_capacity = 1;
    let mut world = World::with_config(config, 64 * MIB, 64);
    let eptps = many_roots(&mut world, 3, 1);
    let first = world.mmu.switch_to(eptps[0]).unwrap();
    assert!(!first.flush_before_entry);
    // The second root evicts the first; the pool hands the freed root frame
    // straight back (last freed, first reused).
    let second = world.mmu.switch_to(eptps[1]).unwrap();
    assert_eq!(second.eptp02.root_address(), first.eptp02.root_address());
    assert!(
        second.flush_before_entry,
        "hardware may hold the old root's translations"
    );
    assert_eq!(world.stats().flushes, 1);
    world.touch(0, Access::READ);
    world.check();
}

// --- A/D --------------------------------------------------------------------

#[test]
fn accessed_dirty_write_protects_until_dirty_then_upgrades_on_write() {
    let mut world = World::new(Policy::Hv, 64 * MIB);
    let mut ept12 = world.builder(0x100_0000);
    ept12
        .map(
            &mut world.memory,
            L2Gpa::new(0x7000),
            L1Gpa::new(0x20_7000),
            PageSize::Size4K,
            RW,
        )
        .unwrap();
    let eptp = ept12.eptp(true);
    world.mmu.switch_to(eptp).unwrap();
    let pte_address = ept12
        .entry_address(&world.memory, L2Gpa::new(0x7000), 1)
        .unwrap()
        .unwrap();

    assert_eq!(
        world.touch(0x7000, Access::READ),
        Some(filled(PageSize::Size4K))
    );
    let pte = EptEntry::from_raw(world.memory.read_u64(pte_address).unwrap());
    assert!(pte.accessed() && !pte.dirty());
    assert_eq!(
        walk02(&world.mmu, 0x7000).unwrap().1,
        R,
        "write-protected until dirty"
    );
    world.check();

    let zapped = world.stats().entries_zapped;
    assert_eq!(
        world.touch(0x7000, Access::WRITE),
        Some(filled(PageSize::Size4K))
    );
    assert!(EptEntry::from_raw(world.memory.read_u64(pte_address).unwrap()).dirty());
    assert_eq!(walk02(&world.mmu, 0x7000).unwrap().1, RW);
    assert_eq!(world.stats().entries_zapped, zapped, "upgraded in place");
    assert_eq!(world.stats().flushes, 0);
    world.check();

    // L1 clears the dirty flag and INVEPTs: writes must fault again.
    let cleared = world.memory.read_u64(pte_address).unwrap() & !EptEntry::DIRTY;
    world.memory.write_u64(pte_address, cleared).unwrap();
    world.mmu.invept_single_context(&world.memory, eptp);
    assert_eq!(world.stats().entries_zapped, zapped + 1);
    assert!(world.mmu.switch_to(eptp).unwrap().flush_before_entry);
    world.touch(0x7000, Access::READ);
    assert_eq!(walk02(&world.mmu, 0x7000).unwrap().1, R);
    world.check();

    // L1 clears the accessed flag and INVEPTs: the next access must fault
    // so that the walk sets it again.
    let cleared = world.memory.read_u64(pte_address).unwrap() & !EptEntry::ACCESSED;
    world.memory.write_u64(pte_address, cleared).unwrap();
    world.mmu.invept_single_context(&world.memory, eptp);
    assert_eq!(world.stats().entries_zapped, zapped + 2);
    assert!(world.mmu.switch_to(eptp).unwrap().flush_before_entry);
    assert!(world.touch(0x7000, Access::READ).is_some());
    assert!(EptEntry::from_raw(world.memory.read_u64(pte_address).unwrap()).accessed());
    world.check();
}

#[test]
fn roles_separate_eptps_that_differ_only_in_low_bits_and_invept_matches_bits_51_12() {
    let mut world = World::new(Policy::Hv, 64 * MIB);
    let mut ept12 = world.builder(0x100_0000);
    ept12
        .map(
            &mut world.memory,
            L2Gpa::new(0),
            L1Gpa::new(0x20_0000),
            PageSize::Size4K,
            RW,
        )
        .unwrap();
    let plain = ept12.eptp(false);
    let with_ad = ept12.eptp(true);
    let uncached = Eptp::from_raw(plain.raw() & !0b111);
    world.mmu.switch_to(plain).unwrap();
    world.touch(0, Access::WRITE);
    assert!(
        world.mmu.switch_to(uncached).unwrap().hit,
        "memory type is not part of the role"
    );
    let switch = world.mmu.switch_to(with_ad).unwrap();
    assert!(!switch.hit, "A/D is");
    world.touch(0, Access::WRITE);
    assert_eq!(world.stats().roots_live, 2);
    // INVEPT with yet other low bits still matches both roots.
    ept12
        .unmap(&mut world.memory, L2Gpa::new(0), PageSize::Size4K)
        .unwrap();
    world
        .mmu
        .invept_single_context(&world.memory, Eptp::from_raw(plain.raw() | 0x40));
    world.check();
    assert!(walk02(&world.mmu, 0).is_none());
    assert!(world.mmu.switch_to(plain).unwrap().flush_before_entry);
    assert!(walk02(&world.mmu, 0).is_none());
}

#[test]
fn invalid_eptp12_and_fault_without_root_are_errors() {
    let mut world = World::new(Policy::Hv, 64 * MIB);
    assert_eq!(
        world.mmu.handle_ept_violation(
            &mut world.memory,
            &world.ept01,
            L2Gpa::new(0),
            Access::READ
        ),
        Err(MmuError::NoCurrentRoot)
    );
    assert!(matches!(
        world
            .mmu
            .switch_to(Eptp::from_raw(0x10_0000 | 6 | (2 << 3))),
        Err(MmuError::InvalidEptp12(_))
    ));
}

// --- Hostile EPT12 -----------------------------------------------------------

#[test]
fn hostile_ept12_never_panics_and_keeps_the_invariants() {
    for policy in Policy::ALL {
        let mut world = World::new(policy, 16 * MIB);
        let root = L1Gfn::new(0x100);
        let eptp = Eptp::from_raw(root.address().raw() | 6 | (3 << 3));
        let self_pointer = root.address().raw() | 0b111;
        // Entry 0 points to its own table at every level; at level 1 the
        // same value is a UC leaf mapping the table page itself.
        Ept12Builder::set_entry(&mut world.memory, root, 0, self_pointer).unwrap();
        // Entry 1 points outside L1 memory; entry 2 has reserved bits; entry
        // 3 is write-only; entry 4 points to a page whose entries all point
        // back to the root.
        Ept12Builder::set_entry(&mut world.memory, root, 1, (1 << 40) | 0b111).unwrap();
        Ept12Builder::set_entry(&mut world.memory, root, 2, self_pointer | 0x80).unwrap();
        Ept12Builder::set_entry(&mut world.memory, root, 3, self_pointer & !1).unwrap();
        Ept12Builder::set_entry(&mut world.memory, root, 4, 0x10_1000 | 0b111).unwrap();
        for index in 0..512 {
            Ept12Builder::set_entry(&mut world.memory, L1Gfn::new(0x101), index, self_pointer)
                .unwrap();
        }
        world.mmu.switch_to(eptp).unwrap();
        let l2 = |pml4: u64, rest: u64| (pml4 << 39) | rest;
        for access in [Access::READ, Access::WRITE, Access::FETCH] {
            for gpa in [
                0,
                0x1000,
                l2(1, 0),
                l2(2, 0),
                l2(3, 0),
                l2(4, 0),
                l2(4, 0x4030_2000),
            ] {
                world.touch(gpa, access);
                world.check();
            }
        }
        // The self-referencing page is mapped at level 1 to itself.
        assert_eq!(
            walk02(&world.mmu, 0).unwrap().0,
            HOST.wrapping_add(0x10_0000)
        );
        // Writes to the table page and resyncs keep everything consistent.
        world.mmu.l1_wrote(&world.memory, root);
        Ept12Builder::set_entry(&mut world.memory, root, 0, 0x20_0000 | 0b111).unwrap();
        world.mmu.invept_global(&world.memory);
        world.check();
        world.mmu.ept01_changed(root, PageSize::Size4K);
        world.check();
        assert_eq!(
            world.stats().frames_in_use,
            world.mmu.frames().in_use(),
            "{policy}"
        );
    }
}

// --- Random operation sequences ------------------------------------------

/// L2 addresses the sequences touch: 16 4K pages, a 2M page, the 4K pages
/// R1 has on its own, and a few unmapped ones.
const GPAS: [u64; 24] = [
    0x0000,
    0x1000,
    0x2000,
    0x3000,
    0x4000,
    0x5000,
    0x6000,
    0x7000,
    0x8000,
    0x9000,
    0xA000,
    0xB000,
    0xC000,
    0xD000,
    0xE000,
    0xF000,
    0x4000_0000,
    0x4001_2000,
    0x401F_F000,
    0x80_0000_0000,
    0x80_0000_1000,
    0x10_0000,
    0x8000_0000,
    0xFF_FFFF_F000,
];

#[derive(Clone, Copy, Debug)]
enum Sync {
    None,
    L1Wrote,
    InveptSingle(usize),
    InveptGlobal,
}

#[derive(Clone, Copy, Debug)]
enum EntryValue {
    /// A 4K leaf to data page `page` with rights bits `rights`.
    Leaf { page: u64, rights: u64 },
    /// Not present.
    Zero,
    /// A pointer to table page `table` with full rights.
    Pointer { table: usize },
    /// The current value with bits 0-2 replaced.
    Rights(u64),
    /// The current value with A (bit 8) / D (bit 9) replaced.
    Flags(u64),
    /// Anything.
    Raw(u64),
}

/// Which EPT12 entry a write changes.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// One of the entries the mapped addresses' walks use (any level).
    Used(usize),
    /// Any entry of any EPT12 table page.
    Any { table: usize, index: usize },
    /// The leaf entry of one of the first four addresses or of a 2M page.
    Leaf(usize),
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Switch(usize),
    Access(usize, u8),
    Write {
        target: Target,
        value: EntryValue,
        sync: Sync,
    },
    Ept01 {
        page: u64,
        change: u8,
    },
    /// L1 puts every used entry back as it was first built.
    Restore(Sync),
    InveptSingle(usize),
    InveptGlobal,
    Invvpid,
}

fn entry_value() -> impl Strategy<Value = EntryValue> {
    prop_oneof![
        2 => (0..48u64, 0..8u64).prop_map(|(page, rights)| EntryValue::Leaf { page, rights }),
        1 => Just(EntryValue::Zero),
        1 => (0..16usize).prop_map(|table| EntryValue::Pointer { table }),
        4 => (0..8u64).prop_map(EntryValue::Rights),
        3 => (0..4u64).prop_map(EntryValue::Flags),
        1 => any::<u64>().prop_map(EntryValue::Raw),
    ]
}

fn sync() -> impl Strategy<Value = Sync> {
    prop_oneof![
        Just(Sync::None),
        Just(Sync::L1Wrote),
        (0..4usize).prop_map(Sync::InveptSingle),
        Just(Sync::InveptGlobal),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        4 => (0..64usize).prop_map(Target::Used),
        1 => (0..16usize, prop_oneof![0..16usize, 0..512usize])
            .prop_map(|(table, index)| Target::Any { table, index }),
    ]
}

/// Operations concentrated on a few pages: accesses, leaf rights and
/// flag changes with every kind of sync, switches. Makes cached
/// translations meet the changes that must flush them.
fn focused_op() -> impl Strategy<Value = Op> {
    let value = prop_oneof![
        3 => (0..8u64).prop_map(EntryValue::Rights),
        2 => (0..4u64).prop_map(EntryValue::Flags),
        1 => (0..4u64, 0..8u64).prop_map(|(page, rights)| EntryValue::Leaf { page, rights }),
        1 => Just(EntryValue::Zero),
    ];
    prop_oneof![
        10 => (prop_oneof![0..4usize, 16..18usize], 0..3u8).prop_map(|(gpa, kind)| Op::Access(gpa, kind)),
        4 => ((0..16usize).prop_map(Target::Leaf), value, sync())
            .prop_map(|(target, value, sync)| Op::Write { target, value, sync }),
        2 => (0..4usize).prop_map(Op::Switch),
        1 => (0..4u64, 0..4u8).prop_map(|(page, change)| Op::Ept01 { page, change }),
        1 => sync().prop_map(Op::Restore),
        1 => (0..4usize).prop_map(Op::InveptSingle),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..4usize).prop_map(Op::Switch),
        8 => (0..GPAS.len(), 0..3u8).prop_map(|(gpa, kind)| Op::Access(gpa, kind)),
        5 => (target(), entry_value(), sync())
            .prop_map(|(target, value, sync)| Op::Write { target, value, sync }),
        1 => (0..48u64, 0..4u8).prop_map(|(page, change)| Op::Ept01 { page, change }),
        1 => (0..4usize).prop_map(Op::InveptSingle),
        1 => Just(Op::InveptGlobal),
        1 => Just(Op::Invvpid),
        1 => sync().prop_map(Op::Restore),
    ]
}

/// The world of the random sequences: EPTPs R0 (no A/D), R1 (shares R0's
/// PDPT, has its own PML4 entry 1), R2 (independent, A/D) and R3 (R0's root
/// with A/D: same address, other role).
struct Scenario {
    world: World,
    eptps: [Eptp; 4],
    tables: Vec<L1Gfn>,
    /// The EPT12 entries the walks of `GPAS` use, at every level.
    used: Vec<L1Gpa>,
    /// The leaf entries of a few pages.
    leaves: Vec<L1Gpa>,
    /// The used entries' first values.
    originals: Vec<(L1Gpa, u64)>,
    /// L1 pages written without a sync the engine acted on.
    unsynced: HashSet<L1Gfn>,
    /// Root addresses given an INVEPT since the last unsynced write.
    synced_roots: HashSet<u64>,
    /// The EPTP12 L2 runs with (index into `eptps`).
    current: usize,
    /// L2 is running (no exit since the last entry).
    in_l2: bool,
    /// A software TLB: translations hardware cached, tagged by the EPTP02
    /// root address, flushed only when the engine asks. A translation
    /// removed or reduced without a reported flush shows up here.
    tlb: HashMap<(u64, u64), (HostPa, EptPermissions)>,
}

const DATA: u64 = 0x40_0000;

impl Scenario {
    fn new(policy: Policy) -> Self {
        let mut config = MmuConfig::new(policy, context());
        config.frame_budget = 14;
        let mut world = World::with_config(config, 32 * MIB, 64);
        world.ept01 = TestEpt01::identity(32 * MIB, HOST).with_large_pages(true);
        let mut r0 = world.builder(0x100_0000);
        let memory = &mut world.memory;
        r0.map_range(
            memory,
            L2Gpa::new(0),
            L1Gpa::new(DATA),
            0x10000,
            PageSize::Size4K,
            RWX,
        )
        .unwrap();
        r0.map(
            memory,
            L2Gpa::new(0x4000_0000),
            L1Gpa::new(0x60_0000),
            PageSize::Size2M,
            RW,
        )
        .unwrap();
        let mut r1 = Ept12Builder::new(memory, L1Gpa::new(0x110_0000)).unwrap();
        let shared = Ept12Builder::entry(memory, r0.root(), 0).unwrap();
        Ept12Builder::set_entry(memory, r1.root(), 0, shared).unwrap();
        r1.map_range(
            memory,
            L2Gpa::new(0x80_0000_0000),
            L1Gpa::new(DATA + 0x10000),
            0x2000,
            PageSize::Size4K,
            RW,
        )
        .unwrap();
        let mut r2 = Ept12Builder::new(memory, L1Gpa::new(0x120_0000)).unwrap();
        r2.map_range(
            memory,
            L2Gpa::new(0),
            L1Gpa::new(DATA + 0x20000),
            0x10000,
            PageSize::Size4K,
            RW,
        )
        .unwrap();
        r2.map(
            memory,
            L2Gpa::new(0x4000_0000),
            L1Gpa::new(0x80_0000),
            PageSize::Size2M,
            RWX,
        )
        .unwrap();
        let mut tables = Vec::new();
        let mut used = Vec::new();
        let mut leaves = Vec::new();
        for builder in [&r0, &r1, &r2] {
            for (gpa, level) in [
                (0, 1),
                (0x1000, 1),
                (0x2000, 1),
                (0x3000, 1),
                (0x4000_0000, 2),
            ] {
                if let Ok(Some(entry)) = builder.entry_address(memory, L2Gpa::new(gpa), level)
                    && !leaves.contains(&entry)
                {
                    leaves.push(entry);
                }
            }
            tables.extend_from_slice(builder.table_pages());
            for gpa in GPAS {
                for level in 1..=4 {
                    if let Ok(Some(entry)) = builder.entry_address(memory, L2Gpa::new(gpa), level)
                        && !used.contains(&entry)
                    {
                        used.push(entry);
                    }
                }
            }
        }
        let eptps = [r0.eptp(false), r1.eptp(false), r2.eptp(true), r0.eptp(true)];
        let originals = used
            .iter()
            .map(|&address| (address, world.memory.read_u64(address).unwrap()))
            .collect();
        Self {
            world,
            eptps,
            tables,
            originals,
            used,
            leaves,
            unsynced: HashSet::new(),
            synced_roots: HashSet::new(),
            current: 0,
            in_l2: false,
            tlb: HashMap::new(),
        }
    }

    fn data_gfn(page: u64) -> L1Gfn {
        L1Gfn::new((DATA >> 12) + page)
    }

    /// A nested VM entry: `switch_to` the current EPTP12 and apply the
    /// flush it asks for; then every cached translation of the root must
    /// still be allowed by its EPT02.
    fn enter(&mut self) -> Result<(), TestCaseError> {
        let switch = match self.world.mmu.switch_to(self.eptps[self.current]) {
            Ok(switch) => switch,
            Err(MmuError::OutOfFrames) => return Ok(()),
            Err(error) => panic!("unexpected {error}"),
        };
        let tag = switch.eptp02.root_address();
        if switch.flush_before_entry {
            self.tlb.retain(|&(cached_tag, _), _| cached_tag != tag);
        }
        self.in_l2 = true;
        self.check_tlb()
    }

    /// Every cached translation of the current root must be one EPT02 still
    /// has, with at least its rights: otherwise a flush was missed.
    fn check_tlb(&self) -> Result<(), TestCaseError> {
        let Some(eptp02) = self.world.mmu.current_root() else {
            return Ok(());
        };
        let tag = eptp02.root_address();
        for (&(cached_tag, page), &(host, rights)) in &self.tlb {
            if cached_tag != tag {
                continue;
            }
            let now = walk02(&self.world.mmu, page << 12);
            let ok = now.is_some_and(|(now_host, now_rights, _)| {
                now_host == host && now_rights.contains(rights)
            });
            prop_assert!(
                ok,
                "missed flush: TLB has {page:#x} -> {host} {rights:?}, EPT02 has {now:?}"
            );
        }
        Ok(())
    }

    /// An L2 access as hardware performs it: TLB, then EPT02, then an EPT
    /// violation to the engine (which invalidates the address, SDM 29.4.3.1).
    fn access(&mut self, gpa: u64, access: Access) -> Result<(), TestCaseError> {
        if !self.in_l2 {
            self.enter()?;
        }
        let Some(eptp02) = self.world.mmu.current_root() else {
            return Ok(());
        };
        let key = (eptp02.root_address(), gpa >> 12);
        if self
            .tlb
            .get(&key)
            .is_some_and(|&(_, rights)| access.allowed_by(rights, false))
        {
            return Ok(());
        }
        if let Some((host, rights, _)) = walk02(&self.world.mmu, gpa)
            && access.allowed_by(rights, false)
        {
            self.tlb
                .insert(key, (host.align_down(PageSize::Size4K), rights));
            return Ok(());
        }
        self.tlb.remove(&key);
        // An exit: L2 is resumed through `switch_to`, like every entry.
        self.in_l2 = false;
        let world = &mut self.world;
        match world.mmu.handle_ept_violation(
            &mut world.memory,
            &world.ept01,
            L2Gpa::new(gpa),
            access,
        ) {
            Ok(FaultOutcome::Filled {
                flush_before_resume,
                ..
            }) => {
                if flush_before_resume {
                    self.tlb.retain(|&(cached_tag, _), _| cached_tag != key.0);
                }
                let now = walk02(&self.world.mmu, gpa);
                prop_assert!(allows(now, access), "fill made no progress");
                self.check_tlb()
            }
            // Reflect and Emulate change no shadow entry: what hardware
            // cached since the entry is still backed by EPT02.
            Ok(_) => self.check_tlb(),
            Err(MmuError::OutOfFrames) => Ok(()),
            Err(error) => panic!("unexpected {error}"),
        }
    }

    fn run(&mut self, op: Op) -> Result<(), TestCaseError> {
        if let Op::Access(gpa, kind) = op {
            let kind = [AccessKind::Read, AccessKind::Write, AccessKind::Fetch][usize::from(kind)];
            return self.access(
                GPAS[gpa],
                Access {
                    kind,
                    user_mode: false,
                },
            );
        }
        // Everything else happens outside L2.
        self.in_l2 = false;
        let world = &mut self.world;
        match op {
            Op::Access(..) => {}
            Op::Switch(root) => {
                self.current = root;
                return self.enter();
            }
            Op::Write {
                target,
                value,
                sync,
            } => {
                let address = match target {
                    Target::Used(entry) => self.used[entry % self.used.len()],
                    Target::Leaf(entry) => self.leaves[entry % self.leaves.len()],
                    Target::Any { table, index } => self.tables[table % self.tables.len()]
                        .address()
                        .wrapping_add(index as u64 * 8),
                };
                let current = world.memory.read_u64(address).unwrap();
                let new = match value {
                    EntryValue::Leaf { page, rights } => {
                        Self::data_gfn(page).address().raw() | (6 << 3) | rights
                    }
                    EntryValue::Zero => 0,
                    EntryValue::Pointer { table } => {
                        self.tables[table % self.tables.len()].address().raw() | 0b111
                    }
                    EntryValue::Rights(rights) => (current & !0b111) | rights,
                    EntryValue::Flags(flags) => (current & !0x300) | (flags << 8),
                    EntryValue::Raw(raw) => raw,
                };
                world.memory.write_u64(address, new).unwrap();
                self.wrote(&[address], sync);
            }
            Op::Restore(sync) => {
                let originals = self.originals.clone();
                for &(address, value) in &originals {
                    self.world.memory.write_u64(address, value).unwrap();
                }
                let addresses: Vec<L1Gpa> = originals.iter().map(|&(address, _)| address).collect();
                self.wrote(&addresses, sync);
            }
            Op::Ept01 { page, change } => {
                let gfn = Self::data_gfn(page);
                match change {
                    0 => world.ept01.protect(gfn, R),
                    1 => world.ept01.unmap(gfn),
                    2 => world.ept01.protect(gfn, RX),
                    _ => world.ept01.reset(gfn),
                }
                world.mmu.ept01_changed(gfn, PageSize::Size4K);
            }
            Op::InveptSingle(root) => self.invept_single(root),
            Op::InveptGlobal => self.invept_global(),
            Op::Invvpid => world.mmu.invvpid(),
        }
        Ok(())
    }

    /// L1 wrote the entries at `addresses`, then does `sync`.
    fn wrote(&mut self, addresses: &[L1Gpa], sync: Sync) {
        let pages: HashSet<L1Gfn> = addresses.iter().map(|address| address.gfn()).collect();
        self.unsynced.extend(pages.iter().copied());
        self.synced_roots.clear();
        match sync {
            Sync::None => {}
            Sync::L1Wrote => {
                for &page in &pages {
                    self.world.mmu.l1_wrote(&self.world.memory, page);
                    if self.world.mmu.config().policy != Policy::Xen {
                        self.unsynced.remove(&page);
                    }
                }
            }
            Sync::InveptSingle(root) => self.invept_single(root),
            Sync::InveptGlobal => self.invept_global(),
        }
    }

    fn invept_single(&mut self, root: usize) {
        let eptp = self.eptps[root];
        self.world
            .mmu
            .invept_single_context(&self.world.memory, eptp);
        self.synced_roots.insert(eptp.root_address());
    }

    fn invept_global(&mut self) {
        self.world.mmu.invept_global(&self.world.memory);
        self.unsynced.clear();
        self.synced_roots.clear();
    }

    /// Memory safety for every root; the oracle for the roots EPT12 is in
    /// sync for.
    fn check(&self) -> Result<(), TestCaseError> {
        let world = &self.world;
        let stats = world.stats();
        prop_assert_eq!(
            stats.frames_in_use,
            world.mmu.frames().in_use(),
            "frame leak"
        );
        prop_assert!(stats.frames_in_use <= world.mmu.config().frame_budget);
        let roots: Vec<(Eptp, Eptp)> = world.mmu.live_roots().collect();
        let safety = world.checker().memory_safety_only();
        if let Err(violation) = safety.check_roots(world.mmu.frames(), roots.iter().copied()) {
            return Err(TestCaseError::fail(format!("memory safety: {violation}")));
        }
        let in_sync = roots.iter().copied().filter(|(eptp12, _)| {
            self.unsynced.is_empty() || self.synced_roots.contains(&eptp12.root_address())
        });
        if let Err(violation) = world.checker().check_roots(world.mmu.frames(), in_sync) {
            return Err(TestCaseError::fail(format!("oracle: {violation}")));
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_sequences_keep_the_invariants(
        policy in prop_oneof![Just(Policy::Hv), Just(Policy::Kvm), Just(Policy::Xen), Just(Policy::FlushAlways)],
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut scenario = Scenario::new(policy);
        for op in ops {
            scenario.run(op)?;
            scenario.check()?;
        }
    }

    #[test]
    fn focused_sequences_never_miss_a_flush(
        policy in prop_oneof![Just(Policy::Hv), Just(Policy::Kvm), Just(Policy::Xen), Just(Policy::FlushAlways)],
        ops in prop::collection::vec(focused_op(), 1..60),
    ) {
        let mut scenario = Scenario::new(policy);
        for op in ops {
            scenario.run(op)?;
            scenario.check()?;
        }
    }
}

/// Runs one deterministic sequence of `ops` on every policy.
fn replay_on_every_policy(ops: &[Op]) {
    for policy in Policy::ALL {
        let mut scenario = Scenario::new(policy);
        for &op in ops {
            scenario
                .run(op)
                .and_then(|()| scenario.check())
                .unwrap_or_else(|error| panic!("{policy}: {op:?}: {error}"));
        }
    }
}

#[test]
fn long_sequences_on_every_policy() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..4 {
        let broad = prop::collection::vec(op(), 300)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        replay_on_every_policy(&broad);
        let focused = prop::collection::vec(focused_op(), 300)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        replay_on_every_policy(&focused);
    }
}

// --- Review regressions -----------------------------------------------------

/// Every shadow table hardware can reach from `eptp02` (as a walk would, one
/// visit per frame): (frame, level, contents).
fn reachable_tables<F: FrameAllocator>(frames: &F, eptp02: Eptp) -> Vec<(HostPa, u8, Table)> {
    let mut seen = Vec::new();
    let mut worklist = vec![(HostPa::new(eptp02.root_address()), eptp02.walk_levels())];
    while let Some((frame, number)) = worklist.pop() {
        if seen.iter().any(|&(known, _, _)| known == frame) {
            continue;
        }
        let table = *frames.table(frame);
        seen.push((frame, number, table));
        let Some(level) = EptLevel::from_number(number) else {
            continue;
        };
        for raw in table {
            let entry = EptEntry::from_raw(raw);
            if entry.is_present(false) && !entry.is_leaf(level) && number > 1 {
                worklist.push((HostPa::new(entry.address()), number - 1));
            }
        }
    }
    seen
}

/// What a walk that starts from a paging-structure cache entry pointing to
/// `frame` (cached as a level-`number` table) maps now: every leaf's frame;
/// `Err` with the first frame it reaches that is no longer allocated
/// (hardware would read whatever the host put there).
fn leaf_targets_from(frames: &FramePool, frame: HostPa, number: u8) -> Result<Vec<HostPa>, HostPa> {
    let mut targets = Vec::new();
    let mut worklist = vec![(frame, number)];
    while let Some((frame, number)) = worklist.pop() {
        if !frames.is_allocated(frame) {
            return Err(frame);
        }
        let level = EptLevel::from_number(number).unwrap();
        for raw in *frames.table(frame) {
            let entry = EptEntry::from_raw(raw);
            if !entry.is_present(false) {
                continue;
            }
            if entry.is_leaf(level) {
                targets.push(HostPa::new(entry.address()));
            } else if number > 1 {
                worklist.push((HostPa::new(entry.address()), number - 1));
            }
        }
    }
    Ok(targets)
}

/// The review's `emulate.rs` world: EPT12 PML4 0x1000 -> PDPT 0x2000 ->
/// PD 0x3000 -> PTs 0x4000 (L2 0) and 0x5000 (L2 2M), both filled; PD
/// 0x6000 -> PT 0x7000 maps L2 4M to L1 `0x10_2000` read+execute but is not
/// linked yet. Execute-only translations are not supported.
fn two_filled_page_tables(
    policy: Policy,
    budget: usize,
) -> (TestMemory, TestEpt01, Mmu<FramePool>, Eptp) {
    let context = EptWalkContext {
        execute_only: false,
        ..context()
    };
    let mut memory = TestMemory::new(4 * MIB);
    let ept01 = TestEpt01::identity(4 * MIB, HOST);
    let wb = 6 << 3;
    for (table, index, value) in [
        (0x1000, 0, 0x2000 | 7),
        (0x2000, 0, 0x3000 | 7),
        (0x3000, 0, 0x4000 | 7),
        (0x3000, 1, 0x5000 | 7),
        (0x4000, 0, 0x10_0000 | 1 | wb),
        (0x5000, 0, 0x10_1000 | 7 | wb),
        (0x6000, 2, 0x7000 | 7),
        (0x7000, 0, 0x10_2000 | 5 | wb),
    ] {
        memory
            .write_u64(L1Gpa::new(table + index * 8), value)
            .unwrap();
    }
    let eptp = Eptp::from_raw(0x1000 | 0x1e);
    let mut config = MmuConfig::new(policy, context);
    config.frame_budget = budget;
    let mut mmu = Mmu::new(config, FramePool::new(64));
    mmu.switch_to(eptp).unwrap();
    for gpa in [0, 0x20_0000] {
        let outcome = mmu
            .handle_ept_violation(&mut memory, &ept01, L2Gpa::new(gpa), Access::READ)
            .unwrap();
        assert!(matches!(outcome, FaultOutcome::Filled { .. }), "{policy}");
    }
    (memory, ept01, mmu, eptp)
}

/// Review finding 1 (`emulate.rs`): a fault whose walk finds a relinked
/// upper entry and then composes to no usable rights used to zap the old
/// path, free its tables and reuse their frames (a page table's frame
/// became a page directory) before returning `Emulate`. A stale
/// paging-structure cache entry pointing to the old page table then read
/// the new directory's entries as 4-KByte leaves mapping shadow tables
/// into L2. Now the fill is planned first: `Emulate` changes nothing.
#[test]
fn an_emulated_fault_changes_no_shadow_table_even_after_l1_relinked_the_path() {
    for (policy, budget) in [(Policy::Kvm, 4096), (Policy::Hv, 6)] {
        let (mut memory, mut ept01, mut mmu, eptp) = two_filled_page_tables(policy, budget);
        let eptp02 = mmu.switch_to(eptp).unwrap().eptp02;
        // What hardware may have cached: every table reachable now.
        let cached = reachable_tables(mmu.frames(), eptp02);
        assert_eq!(cached.len(), 5, "{policy}: PML4, PDPT, PD and two PTs");
        let before = mmu.stats();

        // L1 repoints PDPT entry 0 without INVEPT; L0 makes the new target
        // page execute-only. Read+execute ∩ execute-only is not a valid
        // leaf without execute-only support.
        memory.write_u64(L1Gpa::new(0x2000), 0x6000 | 7).unwrap();
        ept01.protect(L1Gfn::new(0x102), EptPermissions::EXECUTE);
        mmu.ept01_changed(L1Gfn::new(0x102), PageSize::Size4K);
        let outcome = mmu
            .handle_ept_violation(&mut memory, &ept01, L2Gpa::new(0x40_0000), Access::FETCH)
            .unwrap();
        assert_eq!(
            outcome,
            FaultOutcome::Emulate {
                l1_gpa: L1Gpa::new(0x10_2000)
            },
            "{policy}"
        );

        // Nothing changed: every frame hardware may have cached still holds
        // the same table at the same level.
        let after = mmu.stats();
        assert_eq!(
            (after.entries_zapped, after.tables_freed, after.tables_live),
            (
                before.entries_zapped,
                before.tables_freed,
                before.tables_live
            ),
            "{policy}: Emulate changed the shadow tables"
        );
        assert_eq!(
            reachable_tables(mmu.frames(), eptp02),
            cached,
            "{policy}: EPT02 changed"
        );
        // A walk that starts from any stale cached pointer reaches only L1
        // memory, never a shadow-table frame.
        let shadow: HashSet<HostPa> = mmu.frames().live_frames().collect();
        for &(frame, level, _) in &cached {
            let targets = leaf_targets_from(mmu.frames(), frame, level)
                .unwrap_or_else(|freed| panic!("{policy}: cached table {freed} was freed"));
            for target in targets {
                assert!(
                    !shadow.contains(&target) && ept01.backs(target),
                    "{policy}: a cached level-{level} pointer to {frame} maps {target}"
                );
            }
        }
        let switch = mmu.switch_to(eptp).unwrap();
        assert!(
            !switch.flush_before_entry,
            "{policy}: nothing to flush after Emulate"
        );

        // Once L0 allows reads again, the same fault relinks the path: the
        // replaced entries are reported, and the switch_to before resuming
        // asks for the flush (and clears it).
        ept01.reset(L1Gfn::new(0x102));
        mmu.ept01_changed(L1Gfn::new(0x102), PageSize::Size4K);
        let flushes = mmu.stats().flushes;
        let outcome = mmu
            .handle_ept_violation(&mut memory, &ept01, L2Gpa::new(0x40_0000), Access::FETCH)
            .unwrap();
        assert_eq!(
            outcome,
            FaultOutcome::Filled {
                size: PageSize::Size4K,
                flush_before_resume: true
            },
            "{policy}"
        );
        assert!(mmu.switch_to(eptp).unwrap().flush_before_entry, "{policy}");
        assert!(!mmu.switch_to(eptp).unwrap().flush_before_entry, "{policy}");
        assert_eq!(
            mmu.stats().flushes - flushes,
            1,
            "{policy}: one INVEPT requested"
        );
    }
}

/// A fill that runs out of frames after changing tables leaves its flush
/// for the next `switch_to`.
#[test]
fn a_fill_that_runs_out_of_frames_after_changing_tables_leaves_the_flush_pending() {
    let mut config = MmuConfig::new(Policy::Hv, context());
    config.frame_budget = 3;
    let mut world = World::with_config(config, 64 * MIB, 64);
    let eptp = many_roots(&mut world, 1, 1)[0];
    world.mmu.switch_to(eptp).unwrap();
    // PDPT and PD are linked, the PT does not fit: the last resort empties
    // the root (zapping the partial path) and fails again.
    let result = world.mmu.handle_ept_violation(
        &mut world.memory,
        &world.ept01,
        L2Gpa::new(0),
        Access::READ,
    );
    assert_eq!(result, Err(MmuError::OutOfFrames));
    assert!(world.stats().entries_zapped > 0);
    assert!(world.mmu.switch_to(eptp).unwrap().flush_before_entry);
    world.check();
}

/// Review finding 2 (`gran.rs`): L0 moves a whole 2-MByte EPT01 page and
/// reports it once. Every shadow leaf inside it must go, whichever 4-KByte
/// page of it the report names, not only the leaves of that one page.
#[test]
fn an_ept01_change_of_a_large_page_zaps_every_leaf_inside_it() {
    for policy in Policy::ALL {
        let mut world = World::new(policy, 8 * MIB);
        world.ept01 = TestEpt01::identity(8 * MIB, HOST).with_large_pages(true);
        let mut ept12 = world.builder(0x1000);
        // L2 [0, 4M) -> L1 [2M, 6M) with 4K EPT12 pages; EPT01 maps 2M pages.
        ept12
            .map_range(
                &mut world.memory,
                L2Gpa::new(0),
                L1Gpa::new(2 * MIB),
                4 * MIB,
                PageSize::Size4K,
                RWX,
            )
            .unwrap();
        let eptp = ept12.eptp(false);
        world.mmu.switch_to(eptp).unwrap();
        // 1024 leaves: more targets than the 512 sub-pages of a 2M page, so
        // the 2M report looks each sub-page up.
        for page in 0..1024 {
            world.touch(page * 0x1000, Access::WRITE);
        }
        assert_eq!(world.stats().fills, 1024, "{policy}");
        // L0 moves L1 [2M, 4M) to another 2M host page (THP migration) and
        // reports it once, naming a page in its middle.
        for index in 0..512 {
            world.ept01.map_page(
                L1Gfn::new(512 + index),
                HOST.wrapping_add(6 * MIB + index * 0x1000),
                RWX,
                EptMemoryType::WriteBack,
            );
        }
        world
            .mmu
            .ept01_changed(L1Gfn::new(512 + 300), PageSize::Size2M);
        world.check();
        if policy != Policy::Xen {
            assert_eq!(world.stats().entries_zapped, 512, "{policy}");
            assert!(
                walk02(&world.mmu, 0x20_0000).is_some(),
                "{policy}: L1 [4M, 6M) did not change"
            );
        }
        assert!(walk02(&world.mmu, 0).is_none(), "{policy}");
        assert!(walk02(&world.mmu, 0x5000).is_none(), "{policy}");
        assert!(
            world.mmu.switch_to(eptp).unwrap().flush_before_entry,
            "{policy}"
        );
        world.touch(0x5000, Access::READ);
        assert_eq!(
            walk02(&world.mmu, 0x5000).unwrap().0,
            HOST.wrapping_add(6 * MIB + 0x5000),
            "{policy}"
        );
        world.check();
    }
}

/// A 1-GByte EPT01 change zaps the 4K and 2M leaves inside it (here found
/// by one pass over the reverse map), and nothing outside it.
#[test]
fn an_ept01_change_of_a_one_gigabyte_page_zaps_small_and_large_leaves_inside_it() {
    let mut world = World::new(Policy::Hv, 2 << 30);
    world.ept01 = TestEpt01::identity(2 << 30, HOST).with_large_pages(true);
    let mut ept12 = world.builder(0x100_0000);
    for (l2, l1, size) in [
        (0, 0x20_0000, PageSize::Size2M),
        (0x40_0000, 0x3000, PageSize::Size4K),
        (0x8000_0000, 0x4000_1000, PageSize::Size4K),
    ] {
        ept12
            .map(&mut world.memory, L2Gpa::new(l2), L1Gpa::new(l1), size, RW)
            .unwrap();
    }
    let eptp = ept12.eptp(false);
    world.mmu.switch_to(eptp).unwrap();
    for gpa in [0, 0x40_0000, 0x8000_0000] {
        world.touch(gpa, Access::READ);
    }
    assert_eq!(walk02(&world.mmu, 0).unwrap().2, PageSize::Size2M);
    // L0 makes the first GiB of L1 read-only as one 1G EPT01 page (the
    // report names that size; TestEpt01 only tracks 4K pages, so protect
    // the ones in use).
    for gfn in std::iter::once(0x3).chain(0x200..0x400) {
        world.ept01.protect(L1Gfn::new(gfn), R);
    }
    world
        .mmu
        .ept01_changed(L1Gfn::new(0x1_2345), PageSize::Size1G);
    assert_eq!(world.stats().entries_zapped, 2);
    assert!(walk02(&world.mmu, 0).is_none() && walk02(&world.mmu, 0x40_0000).is_none());
    assert!(
        walk02(&world.mmu, 0x8000_0000).is_some(),
        "the second GiB did not change"
    );
    assert!(world.mmu.switch_to(eptp).unwrap().flush_before_entry);
    world.check();
    // A 4K report still reaches a large leaf containing the page.
    world.touch(0, Access::READ);
    assert_eq!(walk02(&world.mmu, 0).unwrap().1, R);
    world.ept01.reset(L1Gfn::new(0x2AB));
    world.mmu.ept01_changed(L1Gfn::new(0x2AB), PageSize::Size4K);
    assert!(walk02(&world.mmu, 0x2A_B000).is_none());
    world.check();
}

/// A frame allocator that never hands a freed frame back, or only after
/// `delay` later frees (oldest first): the worst cases for remembering
/// which frames were roots.
struct DelayedReuse {
    tables: HashMap<u64, Box<Table>>,
    next: u64,
    freed: std::collections::VecDeque<HostPa>,
    delay: Option<usize>,
}

impl DelayedReuse {
    fn new(delay: Option<usize>) -> Self {
        Self {
            tables: HashMap::new(),
            next: 0,
            freed: std::collections::VecDeque::new(),
            delay,
        }
    }
}

impl FrameAllocator for DelayedReuse {
    fn allocate(&mut self) -> Option<HostPa> {
        let reuse = self.delay.is_some_and(|delay| self.freed.len() > delay);
        let frame = if reuse {
            self.freed.pop_front()?
        } else {
            self.next += 1;
            HostPa::new(0x80_0000_0000 + self.next * 0x1000)
        };
        self.tables.insert(frame.raw(), Box::new([0; 512]));
        Some(frame)
    }

    fn free(&mut self, frame: HostPa) {
        assert!(self.tables.remove(&frame.raw()).is_some(), "double free");
        if self.delay.is_some() {
            self.freed.push_back(frame);
        }
    }

    fn table(&self, frame: HostPa) -> &Table {
        &self.tables[&frame.raw()]
    }

    fn table_mut(&mut self, frame: HostPa) -> &mut Table {
        self.tables.get_mut(&frame.raw()).unwrap()
    }
}

/// Cycles 1000 EPTP12s through a 4-root hv cache on `frames`; checks that
/// the remembered root frames stay within the limit and that every root
/// built on a frame that was a root before is flushed before its first
/// entry. Returns how many misses asked for a flush.
fn cycle_thousand_roots<F: FrameAllocator>(frames: F) -> (Mmu<F>, u64) {
    let mut memory = TestMemory::new(2 << 30);
    let ept01 = TestEpt01::identity(2 << 30, HOST);
    let eptps: Vec<Eptp> = (0..1000u64)
        .map(|index| {
            let mut ept12 =
                Ept12Builder::new(&mut memory, L1Gpa::new(0x200_0000 + index * 0x4000)).unwrap();
            ept12
                .map(
                    &mut memory,
                    L2Gpa::new(0),
                    L1Gpa::new(0x4000_0000 + index * 0x1000),
                    PageSize::Size4K,
                    RW,
                )
                .unwrap();
            ept12.eptp(false)
        })
        .collect();
    let mut config = MmuConfig::new(Policy::Hv, context());
    config.root_capacity = 4;
    config.frame_budget = 64;
    let mut mmu = Mmu::new(config, frames);
    assert_eq!(mmu.remembered_root_frames_limit(), 64);
    let mut former_roots = HashSet::new();
    let mut flushed_misses = 0;
    for &eptp in eptps.iter().chain(&eptps[..500]) {
        let live_before: HashSet<HostPa> = mmu
            .live_roots()
            .map(|(_, eptp02)| HostPa::new(eptp02.root_address()))
            .collect();
        let switch = mmu.switch_to(eptp).unwrap();
        assert!(!switch.hit);
        let frame = HostPa::new(switch.eptp02.root_address());
        if former_roots.contains(&frame) {
            assert!(
                switch.flush_before_entry,
                "root frame {frame} was a root before and is entered without a flush"
            );
        }
        flushed_misses += u64::from(switch.flush_before_entry);
        former_roots.extend(live_before);
        former_roots.insert(frame);
        mmu.handle_ept_violation(&mut memory, &ept01, L2Gpa::new(0), Access::READ)
            .unwrap();
        assert!(mmu.stats().remembered_root_frames <= 64);
    }
    (mmu, flushed_misses)
}

/// Review finding 3: the set of freed root frames grew without bound with
/// an allocator that never reuses frames. Now it stays within the limit;
/// once it overflows every new root is flushed, so a forgotten frame
/// handed back much later is still flushed before use.
#[test]
fn remembered_root_frames_stay_bounded_and_reused_root_frames_are_always_flushed() {
    // Never reused: bounded, and after the overflow every miss flushes.
    let (mmu, flushed) = cycle_thousand_roots(DelayedReuse::new(None));
    assert_eq!(mmu.stats().remembered_root_frames, 0, "forgotten");
    assert!(
        flushed >= 1500 - 70,
        "every miss after the overflow flushes"
    );
    assert_eq!(mmu.frames().tables.len(), mmu.stats().frames_in_use);

    // Reused long after being forgotten (200 frees later, oldest first).
    let (mmu, _) = cycle_thousand_roots(DelayedReuse::new(Some(200)));
    assert!(mmu.stats().remembered_root_frames <= 64);

    // A last-freed-first pool within the budget never trips the limit:
    // misses on fresh frames need no flush.
    let (mmu, flushed) = cycle_thousand_roots(FramePool::new(64));
    assert!(mmu.stats().remembered_root_frames < 64);
    assert!(flushed < 1500, "only reused root frames are flushed");
}
