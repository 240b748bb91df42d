//! EPT12 walker and oracle tests: translations, every violation and
//! misconfiguration case with the exact qualification bits (SDM 28.2.1,
//! Table 28-7; SDM 29.3.3), accessed/dirty flags (SDM 29.3.5), hostile
//! tables, and properties over random EPT12 contents.
#![allow(clippy::unreadable_literal, reason = "addresses read best as written")]

use std::cell::Cell;
use std::collections::HashMap;

use hv_arch_vmx::ept::{
    EptEntry, EptLevel, EptMemoryType, EptMisconfiguration, EptPermissions, EptWalkContext, Eptp,
};
use hv_arch_vmx::exit::EptViolationQualification;
use hv_mmu::addr::{HostPa, L1Gfn, L1Gpa, L2Gpa, PageSize};
use hv_mmu::env::{Ept01, Ept01Mapping, L1Memory, NotL1Memory};
use hv_mmu::oracle::{OracleMapping, compose};
use hv_mmu::walk::{
    Access, AccessKind, Translation, WalkConfig, WalkConfigError, WalkFault, inspect, walk,
};
use proptest::prelude::*;

/// L1 memory for tests: `size` bytes from address 0, sparse words.
struct Memory {
    size: u64,
    words: HashMap<u64, u64>,
    reads: Cell<usize>,
    writes: usize,
}

impl Memory {
    fn new(size: u64) -> Self {
        Self {
            size,
            words: HashMap::new(),
            reads: Cell::new(0),
            writes: 0,
        }
    }

    fn get(&self, gpa: u64) -> u64 {
        self.words.get(&gpa).copied().unwrap_or(0)
    }

    fn set(&mut self, gpa: u64, value: u64) {
        self.words.insert(gpa, value);
    }

    fn owns(&self, gpa: L1Gpa) -> Result<(), NotL1Memory> {
        if gpa.raw() < self.size {
            Ok(())
        } else {
            Err(NotL1Memory { gpa })
        }
    }
}

impl L1Memory for Memory {
    fn read_u64(&self, gpa: L1Gpa) -> Result<u64, NotL1Memory> {
        self.owns(gpa)?;
        self.reads.set(self.reads.get() + 1);
        Ok(self.get(gpa.raw()))
    }

    fn compare_exchange_u64(
        &mut self,
        gpa: L1Gpa,
        old: u64,
        new: u64,
    ) -> Result<bool, NotL1Memory> {
        self.owns(gpa)?;
        if self.get(gpa.raw()) != old {
            return Ok(false);
        }
        self.writes += 1;
        self.set(gpa.raw(), new);
        Ok(true)
    }
}

const MEMORY_SIZE: u64 = 64 << 20;
const ROOT: u64 = 0x1000;
const RWX: u64 = 0b111;
const WB: u64 = 6 << 3;

fn context() -> EptWalkContext {
    EptWalkContext {
        maxphyaddr: 46,
        execute_only: true,
        pages_2m: true,
        pages_1g: true,
        mode_based_execute: false,
    }
}

/// Hand-built EPT12 in a [`Memory`]: tables are allocated from 0x2000 up.
struct Ept12 {
    memory: Memory,
    next_table: u64,
    levels: u8,
    /// Rights given to new non-leaf entries.
    table_rights: u64,
}

impl Ept12 {
    fn new() -> Self {
        Self::with_levels(4)
    }

    fn with_levels(levels: u8) -> Self {
        Self {
            memory: Memory::new(MEMORY_SIZE),
            next_table: 0x2000,
            levels,
            table_rights: RWX,
        }
    }

    fn eptp(&self, accessed_dirty: bool) -> Eptp {
        Eptp::new(ROOT, EptMemoryType::WriteBack, self.levels, accessed_dirty).unwrap()
    }

    /// Address of the entry at `level` for `gpa`, creating tables above it.
    fn entry_address(&mut self, level: u8, gpa: u64) -> u64 {
        let mut table = ROOT;
        for current in (level + 1..=self.levels).rev() {
            let address = table + index(current, gpa) * 8;
            let entry = self.memory.get(address);
            if entry & RWX == 0 && entry & (1 << 10) == 0 {
                let new_table = self.next_table;
                self.next_table += 0x1000;
                self.memory.set(address, new_table | self.table_rights);
                table = new_table;
            } else {
                table = entry & EptEntry::ADDRESS_MASK;
            }
        }
        table + index(level, gpa) * 8
    }

    /// Writes `raw` as the entry at `level` for `gpa`.
    fn set(&mut self, level: u8, gpa: u64, raw: u64) {
        let address = self.entry_address(level, gpa);
        self.memory.set(address, raw);
    }

    /// The entry at `level` for `gpa`.
    fn get(&mut self, level: u8, gpa: u64) -> u64 {
        let address = self.entry_address(level, gpa);
        self.memory.get(address)
    }

    fn map_4k(&mut self, gpa: u64, page: u64, rights: u64) {
        self.set(1, gpa, page | rights | WB);
    }

    fn walk(
        &mut self,
        gpa: u64,
        access: Access,
        config: WalkConfig,
    ) -> Result<Translation, WalkFault> {
        let eptp = self.eptp(config.accessed_dirty);
        walk(&mut self.memory, eptp, L2Gpa::new(gpa), access, &config)
    }
}

fn index(level: u8, gpa: u64) -> u64 {
    (gpa >> (12 + 9 * u32::from(level - 1))) & 0x1FF
}

fn config_with(
    context: EptWalkContext,
    levels: u8,
    accessed_dirty: bool,
    mbec: bool,
) -> WalkConfig {
    let eptp = Eptp::new(ROOT, EptMemoryType::WriteBack, levels, accessed_dirty).unwrap();
    WalkConfig::new(eptp, context, mbec).unwrap()
}

fn config() -> WalkConfig {
    config_with(context(), 4, false, false)
}

fn mbec_config() -> WalkConfig {
    config_with(context(), 4, false, true)
}

fn ad_config() -> WalkConfig {
    config_with(context(), 4, true, false)
}

/// Asserts an EPT violation at `level` with raw qualification `raw`.
#[track_caller]
fn assert_violation(result: Result<Translation, WalkFault>, level: u8, raw: u64) {
    match result {
        Err(WalkFault::Violation {
            level: got_level,
            qualification,
        }) => {
            assert_eq!(got_level, level, "violation level");
            assert_eq!(
                qualification.raw(),
                raw,
                "qualification {:#x} != {raw:#x}",
                qualification.raw()
            );
        }
        other => panic!("expected a violation at level {level}, got {other:?}"),
    }
}

#[track_caller]
fn assert_misconfiguration(
    result: Result<Translation, WalkFault>,
    level: u8,
    reason: EptMisconfiguration,
) {
    match result {
        Err(WalkFault::Misconfiguration {
            level: got_level,
            reason: got,
            ..
        }) => {
            assert_eq!((got_level, got), (level, reason));
        }
        other => panic!("expected misconfiguration {reason:?} at level {level}, got {other:?}"),
    }
}

const GPA: u64 = 0x0000_0081_4060_3000; // indices 1, 5, 3, 3 at levels 4..1

// ----- configuration -----

#[test]
fn config_takes_levels_and_ad_from_eptp() {
    let eptp = Eptp::new(ROOT, EptMemoryType::WriteBack, 5, true).unwrap();
    let config = WalkConfig::new(eptp, context(), true).unwrap();
    assert_eq!(config.levels, 5);
    assert!(config.accessed_dirty);
    assert!(config.mode_based_execute);
    assert!(config.context.mode_based_execute);
    // Walk length 3 (bits 5:3 = 2) is neither 4 nor 5.
    let bad = Eptp::from_raw(ROOT | 6 | (2 << 3));
    assert_eq!(
        WalkConfig::new(bad, context(), false),
        Err(WalkConfigError::UnsupportedWalkLength(3))
    );
}

// ----- translations -----

#[test]
fn translates_4k_page() {
    let mut ept = Ept12::new();
    ept.map_4k(GPA, 0x0123_4000, 0b011 | (1 << 6));
    let translation = ept.walk(GPA + 0x678, Access::READ, config()).unwrap();
    assert_eq!(translation.l1_gpa, L1Gpa::new(0x0123_4678));
    assert_eq!(translation.page_size, PageSize::Size4K);
    assert_eq!(
        translation.permissions,
        EptPermissions::READ | EptPermissions::WRITE
    );
    assert_eq!(translation.memory_type, 6);
    assert!(translation.ignore_pat);
    assert!(translation.dirty, "A/D disabled reports dirty");
    let steps = translation.steps();
    assert_eq!(
        steps.iter().map(|s| s.level).collect::<Vec<_>>(),
        [4, 3, 2, 1]
    );
    assert_eq!(steps[0].table, L1Gfn::new(ROOT >> 12));
    assert_eq!(steps[0].entry_address, L1Gpa::new(ROOT + 8));
    assert_eq!(steps[3].entry, 0x0123_4000 | 0b011 | (1 << 6) | WB);
    assert_eq!(steps[3].entry_address.raw() & 0xFFF, 3 * 8);
    // Each step's table is the address in the entry above it.
    for pair in steps.windows(2) {
        assert_eq!(
            pair[1].table.address().raw(),
            pair[0].entry & EptEntry::ADDRESS_MASK
        );
    }
    assert_eq!(translation.leaf(), Some(steps[3]));
}

#[test]
fn translates_2m_page() {
    let mut ept = Ept12::new();
    ept.set(2, GPA, 0x4020_0000 | RWX | WB | EptEntry::PAGE_SIZE);
    let translation = ept.walk(GPA + 0x1234, Access::WRITE, config()).unwrap();
    // The 2M frame plus bits 20:0 of the GPA.
    assert_eq!(
        translation.l1_gpa,
        L1Gpa::new(0x4020_0000 | ((GPA + 0x1234) & 0x1F_FFFF))
    );
    assert_eq!(translation.page_size, PageSize::Size2M);
    assert_eq!(translation.steps().len(), 3);
    assert_eq!(translation.permissions, EptPermissions::READ_WRITE_EXECUTE);
}

#[test]
fn translates_1g_page() {
    let mut ept = Ept12::new();
    ept.set(
        3,
        GPA,
        0x0000_0003_C000_0000 | RWX | (4 << 3) | EptEntry::PAGE_SIZE,
    );
    let translation = ept.walk(GPA, Access::FETCH, config()).unwrap();
    assert_eq!(
        translation.l1_gpa,
        L1Gpa::new(0x0000_0003_C000_0000 | (GPA & 0x3FFF_FFFF))
    );
    assert_eq!(translation.page_size, PageSize::Size1G);
    assert_eq!(translation.memory_type, 4);
    assert_eq!(translation.steps().len(), 2);
}

#[test]
fn large_leaf_with_low_address_bits_is_misconfigured() {
    // A 2M leaf with bit 12 set has a reserved bit set: misconfiguration,
    // never a translation that mixes the bit in.
    let mut ept = Ept12::new();
    ept.set(2, GPA, 0x4020_1000 | RWX | WB | EptEntry::PAGE_SIZE);
    assert_misconfiguration(
        ept.walk(GPA, Access::READ, config()),
        2,
        EptMisconfiguration::ReservedBitsSet { mask: 0x1000 },
    );
}

#[test]
fn translates_with_five_levels() {
    let mut ept = Ept12::with_levels(5);
    let gpa = (7 << 48) | GPA;
    ept.map_4k(gpa, 0x5000, RWX);
    let config = config_with(context(), 5, false, false);
    let translation = ept.walk(gpa | 0x10, Access::READ, config).unwrap();
    assert_eq!(translation.l1_gpa, L1Gpa::new(0x5010));
    assert_eq!(translation.steps().len(), 5);
    assert_eq!(
        translation.steps()[0].entry_address,
        L1Gpa::new(ROOT + 7 * 8)
    );
    // The same GPA through a 4-level walk ignores bits 56:48 only in the
    // sense that it never reads a PML5E: the PML4 index is bits 47:39.
    assert_eq!(translation.steps()[1].level, 4);
}

#[test]
fn permissions_are_the_and_along_the_walk() {
    let mut ept = Ept12::new();
    ept.map_4k(GPA, 0x9000, RWX);
    let pdpte = ept.get(3, GPA);
    ept.set(3, GPA, pdpte & !EptEntry::WRITE); // R-X
    let pde = ept.get(2, GPA);
    ept.set(2, GPA, pde & !EptEntry::EXECUTE); // RW-
    let translation = ept.walk(GPA, Access::READ, config()).unwrap();
    assert_eq!(translation.permissions, EptPermissions::READ);
}

// ----- violations (SDM 29.3.3.2, Table 28-7) -----

#[test]
fn not_present_at_each_level() {
    for level in 1..=4u8 {
        let mut ept = Ept12::new();
        ept.map_4k(GPA, 0x9000, RWX);
        // Not present: bits 2:0 clear; the other bits (even bit 7) ignored.
        let stale = ept.get(level, GPA) & !RWX;
        ept.set(level, GPA, stale | 0xFFF0_0000_0000_0F80 & !(1 << 10));
        // Read: bit 0; rights 5:3 all 0 (the AND includes the entry).
        assert_violation(ept.walk(GPA, Access::READ, config()), level, 0b001);
        assert_violation(ept.walk(GPA, Access::WRITE, config()), level, 0b010);
        assert_violation(ept.walk(GPA, Access::FETCH, config()), level, 0b100);
    }
}

#[test]
fn not_present_root_entry_of_empty_table() {
    let mut memory = Memory::new(MEMORY_SIZE);
    let eptp = Eptp::new(ROOT, EptMemoryType::WriteBack, 4, false).unwrap();
    assert_violation(
        walk(&mut memory, eptp, L2Gpa::new(0), Access::READ, &config()),
        4,
        0b001,
    );
    assert_eq!(memory.reads.get(), 1);
}

#[test]
fn read_denied() {
    let mut ept = Ept12::new();
    ept.map_4k(GPA, 0x9000, 0b100); // execute-only (supported in context())
    // bits 2:0 = read; bits 5:3 = --X.
    assert_violation(
        ept.walk(GPA, Access::READ, config()),
        1,
        0b001 | (0b100 << 3),
    );
    assert!(ept.walk(GPA, Access::FETCH, config()).is_ok());
}

#[test]
fn write_denied_by_upper_level() {
    let mut ept = Ept12::new();
    ept.map_4k(GPA, 0x9000, RWX);
    let pml4e = ept.get(4, GPA);
    ept.set(4, GPA, pml4e & !EptEntry::WRITE); // R-X
    // bits 2:0 = write; bits 5:3 = R-X (AND along the walk); the level is
    // the first entry lacking W.
    assert_violation(
        ept.walk(GPA, Access::WRITE, config()),
        4,
        0b010 | (0b101 << 3),
    );
    assert!(ept.walk(GPA, Access::READ, config()).is_ok());
}

#[test]
fn fetch_denied() {
    let mut ept = Ept12::new();
    ept.map_4k(GPA, 0x9000, 0b011);
    assert_violation(
        ept.walk(GPA, Access::FETCH, config()),
        1,
        0b100 | (0b011 << 3),
    );
    // Without MBEC, a user-mode fetch is checked against bit 2 as well and
    // bit 6 of the qualification stays 0.
    assert_violation(
        ept.walk(GPA, Access::USER_FETCH, config()),
        1,
        0b100 | (0b011 << 3),
    );
}

#[test]
fn bit_10_is_ignored_without_mbec() {
    let mut ept = Ept12::new();
    ept.table_rights = RWX | (1 << 10);
    ept.map_4k(GPA, 0x9000, 0b001 | (1 << 10));
    let translation = ept.walk(GPA, Access::READ, config()).unwrap();
    assert_eq!(translation.permissions, EptPermissions::READ);
    assert_violation(
        ept.walk(GPA, Access::USER_FETCH, config()),
        1,
        0b100 | (0b001 << 3),
    );
    // An entry with only bit 10 is not present without MBEC.
    ept.map_4k(GPA, 0x9000, 1 << 10);
    assert_violation(ept.walk(GPA, Access::READ, config()), 1, 0b001);
}

#[test]
fn mbec_user_and_supervisor_fetches() {
    let mut ept = Ept12::new();
    ept.table_rights = RWX | (1 << 10);
    // Leaf R + user-execute: supervisor fetch denied, user fetch allowed.
    ept.map_4k(GPA, 0x9000, 0b001 | (1 << 10));
    let config = mbec_config();
    // bits 2:0 = fetch; bit 3 = R; bit 5 = 0; bit 6 = user-executable.
    assert_violation(
        ept.walk(GPA, Access::FETCH, config),
        1,
        0b100 | (0b001 << 3) | (1 << 6),
    );
    let translation = ept.walk(GPA, Access::USER_FETCH, config).unwrap();
    assert_eq!(
        translation.permissions,
        EptPermissions::READ | EptPermissions::USER_EXECUTE
    );

    // Leaf R-X without bit 10: user fetch denied, supervisor allowed.
    ept.map_4k(GPA, 0x9000, 0b101);
    assert_violation(
        ept.walk(GPA, Access::USER_FETCH, config),
        1,
        0b100 | (0b101 << 3),
    );
    assert!(ept.walk(GPA, Access::FETCH, config).is_ok());

    // Bit 10 missing in a non-leaf entry denies user fetches too.
    ept.map_4k(GPA, 0x9000, RWX | (1 << 10));
    let pdpte = ept.get(3, GPA);
    ept.set(3, GPA, pdpte & !(1 << 10));
    assert_violation(
        ept.walk(GPA, Access::USER_FETCH, config),
        3,
        0b100 | (0b111 << 3),
    );
}

#[test]
fn mbec_bit_10_alone_is_present() {
    let mut ept = Ept12::new();
    ept.table_rights = RWX | (1 << 10);
    ept.map_4k(GPA, 0x9000, 1 << 10);
    let config = mbec_config();
    let translation = ept.walk(GPA, Access::USER_FETCH, config).unwrap();
    assert_eq!(translation.permissions, EptPermissions::USER_EXECUTE);
    // A read is an EPT violation reporting only bit 6 among the rights.
    assert_violation(ept.walk(GPA, Access::READ, config), 1, 0b001 | (1 << 6));
    // Not present under MBEC: bits 2:0 and 10 all clear.
    ept.map_4k(GPA, 0x9000, 0);
    assert_violation(ept.walk(GPA, Access::USER_FETCH, config), 1, 0b100);
}

// ----- misconfigurations (SDM 29.3.3.1) -----

#[test]
fn write_without_read() {
    let mut ept = Ept12::new();
    ept.map_4k(GPA, 0x9000, RWX);
    let pml4e = ept.get(4, GPA);
    ept.set(4, GPA, (pml4e & !RWX) | 0b010);
    assert_misconfiguration(
        ept.walk(GPA, Access::READ, config()),
        4,
        EptMisconfiguration::WriteWithoutRead,
    );
}

#[test]
fn execute_only_unsupported() {
    let mut ept = Ept12::new();
    ept.map_4k(GPA, 0x9000, 0b100);
    let mut context = context();
    context.execute_only = false;
    let config = config_with(context, 4, false, false);
    assert_misconfiguration(
        ept.walk(GPA, Access::FETCH, config),
        1,
        EptMisconfiguration::ExecuteOnlyNotSupported,
    );
}

#[test]
fn reserved_bits_at_each_level() {
    // PML4E bits 7:3 reserved.
    let mut ept = Ept12::new();
    ept.map_4k(GPA, 0x9000, RWX);
    let pml4e = ept.get(4, GPA);
    ept.set(4, GPA, pml4e | (1 << 3));
    assert_misconfiguration(
        ept.walk(GPA, Access::READ, config()),
        4,
        EptMisconfiguration::ReservedBitsSet { mask: 1 << 3 },
    );
    // Non-leaf PDPTE bits 6:3 reserved.
    let mut ept = Ept12::new();
    ept.map_4k(GPA, 0x9000, RWX);
    let pdpte = ept.get(3, GPA);
    ept.set(3, GPA, pdpte | (1 << 6));
    assert_misconfiguration(
        ept.walk(GPA, Access::READ, config()),
        3,
        EptMisconfiguration::ReservedBitsSet { mask: 1 << 6 },
    );
    // A PTE address bit beyond MAXPHYADDR (46).
    let mut ept = Ept12::new();
    ept.map_4k(GPA, 0x9000 | (1 << 50), RWX);
    assert_misconfiguration(
        ept.walk(GPA, Access::READ, config()),
        1,
        EptMisconfiguration::ReservedBitsSet { mask: 1 << 50 },
    );
    // A 1G leaf reserves bits 29:12.
    let mut ept = Ept12::new();
    ept.set(
        3,
        GPA,
        0x4000_0000 | (1 << 20) | RWX | WB | EptEntry::PAGE_SIZE,
    );
    assert_misconfiguration(
        ept.walk(GPA, Access::READ, config()),
        3,
        EptMisconfiguration::ReservedBitsSet { mask: 1 << 20 },
    );
}

#[test]
fn reserved_memory_types() {
    for memory_type in [2u8, 3, 7] {
        let mut ept = Ept12::new();
        ept.set(1, GPA, 0x9000 | RWX | (u64::from(memory_type) << 3));
        assert_misconfiguration(
            ept.walk(GPA, Access::READ, config()),
            1,
            EptMisconfiguration::InvalidMemoryType(memory_type),
        );
        // Also for a 2M leaf.
        let mut ept = Ept12::new();
        ept.set(
            2,
            GPA,
            0x20_0000 | RWX | EptEntry::PAGE_SIZE | (u64::from(memory_type) << 3),
        );
        assert_misconfiguration(
            ept.walk(GPA, Access::READ, config()),
            2,
            EptMisconfiguration::InvalidMemoryType(memory_type),
        );
    }
}

#[test]
fn large_pages_unsupported() {
    let mut context = context();
    context.pages_1g = false;
    context.pages_2m = false;
    let config = config_with(context, 4, false, false);
    let mut ept = Ept12::new();
    ept.set(3, GPA, 0x4000_0000 | RWX | WB | EptEntry::PAGE_SIZE);
    assert_misconfiguration(
        ept.walk(GPA, Access::READ, config),
        3,
        EptMisconfiguration::LargePageNotSupported {
            level: EptLevel::Pdpte,
        },
    );
    let mut ept = Ept12::new();
    ept.set(2, GPA, 0x20_0000 | RWX | WB | EptEntry::PAGE_SIZE);
    assert_misconfiguration(
        ept.walk(GPA, Access::READ, config),
        2,
        EptMisconfiguration::LargePageNotSupported {
            level: EptLevel::Pde,
        },
    );
}

#[test]
fn misconfiguration_takes_priority_over_denied_rights() {
    // SDM 29.3.3.2: violations only for translations without a
    // misconfiguration. The PML4E denies writes; the PTE is misconfigured.
    let mut ept = Ept12::new();
    ept.set(1, GPA, 0x9000 | RWX | (7 << 3));
    let pml4e = ept.get(4, GPA);
    ept.set(4, GPA, pml4e & !EptEntry::WRITE);
    assert_misconfiguration(
        ept.walk(GPA, Access::WRITE, config()),
        1,
        EptMisconfiguration::InvalidMemoryType(7),
    );
}

#[test]
fn not_present_entry_is_never_misconfigured() {
    // Bits 2:0 clear: everything else is ignored, including reserved bits.
    let mut ept = Ept12::new();
    ept.set(4, GPA, 0x0FF0_0000_0000_00F8);
    assert_violation(ept.walk(GPA, Access::READ, config()), 4, 0b001);
}

// ----- tables outside L1 memory -----

#[test]
fn root_outside_l1_memory() {
    let mut memory = Memory::new(MEMORY_SIZE);
    let eptp = Eptp::new(MEMORY_SIZE, EptMemoryType::WriteBack, 4, false).unwrap();
    assert_eq!(
        walk(&mut memory, eptp, L2Gpa::new(GPA), Access::READ, &config()),
        Err(WalkFault::TableOutsideL1Memory {
            level: 4,
            table: L1Gpa::new(MEMORY_SIZE)
        })
    );
}

#[test]
fn lower_table_outside_l1_memory() {
    let mut ept = Ept12::new();
    ept.map_4k(GPA, 0x9000, RWX);
    ept.set(2, GPA, 0x0000_1000_0000_0000 | RWX);
    let fault = ept.walk(GPA, Access::WRITE, config()).unwrap_err();
    assert_eq!(
        fault,
        WalkFault::TableOutsideL1Memory {
            level: 1,
            table: L1Gpa::new(0x0000_1000_0000_0000)
        }
    );
    assert_eq!(fault.level(), 1);
    // The engine reflects it as a violation with the access bits only.
    assert_eq!(
        fault
            .violation_qualification(Access::WRITE)
            .map(EptViolationQualification::raw),
        Some(0b010)
    );
}

// ----- accessed and dirty flags (SDM 29.3.5) -----

fn flags_of(ept: &mut Ept12, gpa: u64, levels: core::ops::RangeInclusive<u8>) -> Vec<(bool, bool)> {
    levels
        .rev()
        .map(|level| {
            let entry = EptEntry::from_raw(ept.get(level, gpa));
            (entry.accessed(), entry.dirty())
        })
        .collect()
}

#[test]
fn read_sets_accessed_on_every_entry_used() {
    let mut ept = Ept12::new();
    ept.map_4k(GPA, 0x9000, RWX);
    let before: Vec<u64> = (1..=4).rev().map(|level| ept.get(level, GPA)).collect();
    let translation = ept.walk(GPA, Access::READ, ad_config()).unwrap();
    assert_eq!(flags_of(&mut ept, GPA, 1..=4), [(true, false); 4]);
    assert!(!translation.dirty, "a read leaves the leaf clean");
    // Steps report the entries as read, before the update.
    assert_eq!(
        translation
            .steps()
            .iter()
            .map(|s| s.entry)
            .collect::<Vec<_>>(),
        before
    );
    // A second read writes nothing.
    let writes = ept.memory.writes;
    ept.walk(GPA, Access::READ, ad_config()).unwrap();
    assert_eq!(ept.memory.writes, writes);
}

#[test]
fn write_sets_dirty_in_the_leaf_only() {
    let mut ept = Ept12::new();
    ept.set(2, GPA, 0x20_0000 | RWX | WB | EptEntry::PAGE_SIZE);
    let translation = ept.walk(GPA, Access::WRITE, ad_config()).unwrap();
    assert!(translation.dirty);
    assert_eq!(
        flags_of(&mut ept, GPA, 2..=4),
        [(true, false), (true, false), (true, true)]
    );
    // Already dirty: reported dirty by a later read, no write needed.
    let writes = ept.memory.writes;
    assert!(ept.walk(GPA, Access::READ, ad_config()).unwrap().dirty);
    assert_eq!(ept.memory.writes, writes);
}

#[test]
fn no_flag_writes_when_disabled() {
    let mut ept = Ept12::new();
    ept.map_4k(GPA, 0x9000, RWX);
    let translation = ept.walk(GPA, Access::WRITE, config()).unwrap();
    assert!(translation.dirty, "A/D disabled: nothing to track");
    assert_eq!(ept.memory.writes, 0);
    assert_eq!(flags_of(&mut ept, GPA, 1..=4), [(false, false); 4]);
}

#[test]
fn no_flag_writes_on_faults() {
    // Violation (denied write), misconfiguration and not-present walks
    // leave EPT12 untouched.
    let mut ept = Ept12::new();
    ept.map_4k(GPA, 0x9000, 0b101);
    assert!(matches!(
        ept.walk(GPA, Access::WRITE, ad_config()),
        Err(WalkFault::Violation { .. })
    ));
    ept.map_4k(GPA, 0x9000, RWX | (3 << 3));
    assert!(matches!(
        ept.walk(GPA, Access::READ, ad_config()),
        Err(WalkFault::Misconfiguration { .. })
    ));
    ept.map_4k(GPA, 0x9000, 0);
    assert!(matches!(
        ept.walk(GPA, Access::READ, ad_config()),
        Err(WalkFault::Violation { .. })
    ));
    assert_eq!(ept.memory.writes, 0);
}

#[test]
fn inspect_never_writes() {
    let mut ept = Ept12::new();
    ept.map_4k(GPA, 0x9000, RWX);
    let eptp = ept.eptp(true);
    let translation = inspect(&ept.memory, eptp, L2Gpa::new(GPA), &ad_config()).unwrap();
    assert_eq!(translation.l1_gpa, L1Gpa::new(0x9000));
    assert!(!translation.dirty);
    assert_eq!(ept.memory.writes, 0);
}

/// Memory that changes an entry behind the walker's back on the first
/// compare-exchange (another vCPU, or L1 itself, racing the walk).
struct Racing {
    inner: Memory,
    /// On the first compare-exchange: write this word here instead.
    race: Option<(u64, u64)>,
    /// Fail every compare-exchange after flipping the accessed bit.
    always_flip: bool,
}

impl L1Memory for Racing {
    fn read_u64(&self, gpa: L1Gpa) -> Result<u64, NotL1Memory> {
        self.inner.read_u64(gpa)
    }

    fn compare_exchange_u64(
        &mut self,
        gpa: L1Gpa,
        old: u64,
        new: u64,
    ) -> Result<bool, NotL1Memory> {
        if let Some((address, value)) = self.race.take() {
            self.inner.set(address, value);
        }
        if self.always_flip {
            let current = self.inner.get(gpa.raw());
            self.inner.set(gpa.raw(), current ^ EptEntry::DIRTY);
            return Ok(false);
        }
        self.inner.compare_exchange_u64(gpa, old, new)
    }
}

#[test]
fn entry_changed_during_flag_update_restarts_the_walk() {
    let mut ept = Ept12::new();
    ept.map_4k(GPA, 0x9000, RWX);
    let leaf_address = ept.entry_address(1, GPA);
    let eptp = ept.eptp(true);
    let mut racing = Racing {
        inner: ept.memory,
        race: Some((leaf_address, 0xA000 | RWX | WB)),
        always_flip: false,
    };
    let translation = walk(
        &mut racing,
        eptp,
        L2Gpa::new(GPA),
        Access::WRITE,
        &ad_config(),
    )
    .unwrap();
    // The walk saw the new leaf and flagged it.
    assert_eq!(translation.l1_gpa, L1Gpa::new(0xA000));
    assert!(translation.dirty);
    assert_eq!(
        racing.inner.get(leaf_address),
        0xA000 | RWX | WB | EptEntry::ACCESSED | EptEntry::DIRTY
    );
}

#[test]
fn endless_flag_races_give_up_and_report_clean() {
    let mut ept = Ept12::new();
    ept.map_4k(GPA, 0x9000, RWX);
    let eptp = ept.eptp(true);
    let mut racing = Racing {
        inner: ept.memory,
        race: None,
        always_flip: true,
    };
    let translation = walk(
        &mut racing,
        eptp,
        L2Gpa::new(GPA),
        Access::WRITE,
        &ad_config(),
    )
    .unwrap();
    assert_eq!(translation.l1_gpa, L1Gpa::new(0x9000));
    // The dirty flag could not be set: the engine must keep write-protecting.
    assert!(!translation.dirty);
}

// ----- hostile tables -----

#[test]
fn self_referencing_table_terminates() {
    // PML4E[0] points at the PML4 itself: for GPA 0 every level reads the
    // same entry; at level 1 it is a PTE mapping the PML4 page (UC).
    let mut memory = Memory::new(MEMORY_SIZE);
    memory.set(ROOT, ROOT | RWX);
    let eptp = Eptp::new(ROOT, EptMemoryType::WriteBack, 4, true).unwrap();
    let translation = walk(
        &mut memory,
        eptp,
        L2Gpa::new(0x123),
        Access::WRITE,
        &ad_config(),
    )
    .unwrap();
    assert_eq!(translation.l1_gpa, L1Gpa::new(ROOT + 0x123));
    assert_eq!(translation.steps().len(), 4);
    assert!(
        translation
            .steps()
            .iter()
            .all(|s| s.entry_address == L1Gpa::new(ROOT))
    );
    assert!(translation.dirty);
    assert_eq!(
        memory.get(ROOT),
        ROOT | RWX | EptEntry::ACCESSED | EptEntry::DIRTY
    );
    // Five levels as well.
    let eptp5 = Eptp::new(ROOT, EptMemoryType::WriteBack, 5, false).unwrap();
    let config5 = config_with(context(), 5, false, false);
    let before = memory.reads.get();
    assert!(walk(&mut memory, eptp5, L2Gpa::new(0), Access::READ, &config5).is_ok());
    assert_eq!(memory.reads.get() - before, 5);
}

#[test]
fn one_page_at_every_level_through_different_indices() {
    // Every entry of the root page points back at the root page: any GPA
    // walks the same page four times.
    let mut memory = Memory::new(MEMORY_SIZE);
    for index in 0..512 {
        memory.set(ROOT + index * 8, ROOT | RWX);
    }
    let eptp = Eptp::new(ROOT, EptMemoryType::WriteBack, 4, false).unwrap();
    let translation = walk(&mut memory, eptp, L2Gpa::new(GPA), Access::READ, &config()).unwrap();
    assert_eq!(translation.l1_gpa, L1Gpa::new(ROOT | (GPA & 0xFFF)));
    assert_eq!(memory.reads.get(), 4);
}

// ----- oracle -----

/// EPT01 for tests: identity plus `offset`, 4K pages, rights per GFN
/// (default all, user-mode execute included: the oracle intersects EPT12's
/// rights with these), some GFNs unmapped.
struct TestEpt01 {
    offset: u64,
    rights: HashMap<u64, EptPermissions>,
    size: PageSize,
}

impl Ept01 for TestEpt01 {
    fn translate(&self, gpa: L1Gpa) -> Option<Ept01Mapping> {
        let rights = self
            .rights
            .get(&gpa.gfn().raw())
            .copied()
            .unwrap_or(EptPermissions::all());
        if rights.is_empty() {
            return None;
        }
        let frame = (gpa.raw() & !(self.size.bytes() - 1)) + self.offset;
        Some(Ept01Mapping {
            frame: HostPa::new(frame),
            size: self.size,
            permissions: rights,
            memory_type: EptMemoryType::WriteBack,
        })
    }
}

#[test]
fn oracle_composes_address_and_rights() {
    let mut ept = Ept12::new();
    ept.map_4k(GPA, 0x9000, 0b011);
    let ept01 = TestEpt01 {
        offset: 0x1_0000_0000,
        rights: HashMap::from([(9, EptPermissions::READ | EptPermissions::EXECUTE)]),
        size: PageSize::Size4K,
    };
    let eptp = ept.eptp(false);
    let mapping = compose(&ept.memory, &ept01, eptp, L2Gpa::new(GPA + 0x10), &config()).unwrap();
    assert_eq!(
        mapping,
        OracleMapping {
            host: HostPa::new(0x1_0000_9010),
            l1_gpa: L1Gpa::new(0x9010),
            permissions: EptPermissions::READ,
        }
    );
    // Offset inside a 2M EPT01 page.
    let ept01_2m = TestEpt01 {
        offset: 0x4000_0000,
        rights: HashMap::new(),
        size: PageSize::Size2M,
    };
    let mapping = compose(
        &ept.memory,
        &ept01_2m,
        eptp,
        L2Gpa::new(GPA + 0x10),
        &config(),
    )
    .unwrap();
    assert_eq!(mapping.host, HostPa::new(0x4000_9010));
    // Unmapped in EPT01, or faulting in EPT12: None.
    let unmapped = TestEpt01 {
        offset: 0,
        rights: HashMap::from([(9, EptPermissions::empty())]),
        size: PageSize::Size4K,
    };
    assert_eq!(
        compose(&ept.memory, &unmapped, eptp, L2Gpa::new(GPA), &config()),
        None
    );
    assert_eq!(
        compose(
            &ept.memory,
            &ept01,
            eptp,
            L2Gpa::new(GPA + 0x1000),
            &config()
        ),
        None
    );
    assert_eq!(ept.memory.writes, 0);
}

// ----- properties -----

/// Pages that hold random EPT12 words: GFNs 1..=4.
const TABLE_PAGES: u64 = 4;
/// Entry indices the random tables populate, and random GPAs use.
const SLOTS: [u64; 4] = [0, 1, 2, 511];

fn word_strategy() -> impl Strategy<Value = u64> {
    // Mostly plausible entries (so walks get deep), some stray bits, and
    // raw random words.
    let rights = prop::sample::select(vec![
        0b001u64, 0b011, 0b101, 0b111, 0b111, 0b111, 0b111, 0b111, 0, 0b010, 0b100,
    ]);
    let memory_type = prop::sample::select(vec![0u64, 0, 0, 0, 0, 0, 0, 6, 4, 2, 7]);
    let structured = (
        0..TABLE_PAGES + 2,
        rights,
        memory_type,
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.3),
        0u64..4,
        prop::option::weighted(0.1, 0u32..64),
    )
        .prop_map(
            |(page, rights, memory_type, large, user_execute, accessed_dirty, stray)| {
                // Page TABLE_PAGES + 1 is outside memory.
                let address = if page > TABLE_PAGES {
                    0x0000_2000_0000_0000
                } else {
                    (page + 1) << 12
                };
                address
                    | rights
                    | (memory_type << 3)
                    | (u64::from(large) << 7)
                    | (u64::from(user_execute) << 10)
                    | (accessed_dirty << 8)
                    | stray.map_or(0, |bit| 1u64 << bit)
            },
        );
    prop_oneof![6 => structured, 1 => any::<u64>(), 1 => Just(0u64)]
}

fn random_memory(words: &[u64]) -> Memory {
    let mut memory = Memory::new(0x10_0000);
    for (n, word) in words.iter().enumerate() {
        let page = (n as u64 / SLOTS.len() as u64) % TABLE_PAGES + 1;
        let slot = SLOTS[n % SLOTS.len()];
        memory.set((page << 12) + slot * 8, *word);
    }
    memory
}

fn gpa_from(slots: &[usize], offset: u64) -> u64 {
    slots
        .iter()
        .enumerate()
        .fold(offset & 0xFFF, |gpa, (level, slot)| {
            gpa | (SLOTS[slot % SLOTS.len()] << (12 + 9 * level as u32))
        })
}

/// A well-formed walk for one GPA, planted over the random words so that
/// random tests also reach leaves: per-level rights (bit 10 included), the
/// leaf level, and an optional bit to flip in the entry of one level.
#[derive(Clone, Debug)]
struct Chain {
    rights: Vec<u64>,
    leaf_level: u8,
    flip: Option<(u8, u32)>,
}

fn chain_strategy() -> impl Strategy<Value = Chain> {
    let rights = prop::sample::select(vec![
        0b111u64,
        0b111,
        0b111,
        0b111 | (1 << 10),
        0b101,
        0b011,
        0b001,
        0b100,
        1 << 10,
    ]);
    (
        prop::collection::vec(rights, 4..=4),
        prop::sample::select(vec![1u8, 1, 1, 2, 3]),
        prop::option::weighted(0.3, (1u8..=4, 0u32..64)),
    )
        .prop_map(|(rights, leaf_level, flip)| Chain {
            rights,
            leaf_level,
            flip,
        })
}

/// Writes `chain` for `gpa` into `memory`, the root at page `root_page + 1`
/// and each lower table on another of the table pages.
fn plant(memory: &mut Memory, chain: &Chain, root_page: u64, gpa: u64) {
    let mut table = (root_page + 1) << 12;
    for level in (chain.leaf_level..=4u8).rev() {
        let rights = chain.rights[usize::from(level - 1)];
        let mut word = if level == chain.leaf_level {
            let large = if level > 1 { EptEntry::PAGE_SIZE } else { 0 };
            0x4000_0000 | rights | WB | large
        } else {
            let next_page = (root_page + 5 - u64::from(level)) % TABLE_PAGES + 1;
            (next_page << 12) | rights
        };
        if let Some((flip_level, bit)) = chain.flip
            && flip_level == level
        {
            word ^= 1 << bit;
        }
        memory.set(table + index(level, gpa) * 8, word);
        table = word & EptEntry::ADDRESS_MASK;
    }
}

fn context_strategy() -> impl Strategy<Value = EptWalkContext> {
    (
        prop::sample::select(vec![36u8, 39, 46, 48, 52]),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(maxphyaddr, execute_only, pages_2m, pages_1g)| EptWalkContext {
                maxphyaddr,
                execute_only,
                pages_2m,
                pages_1g,
                mode_based_execute: false,
            },
        )
}

fn access_strategy() -> impl Strategy<Value = Access> {
    (
        prop_oneof![
            Just(AccessKind::Read),
            Just(AccessKind::Write),
            Just(AccessKind::Fetch)
        ],
        any::<bool>(),
    )
        .prop_map(|(kind, user_mode)| Access { kind, user_mode })
}

proptest! {
    #[test]
    fn random_tables_never_panic_and_read_at_most_levels(
        words in prop::collection::vec(word_strategy(), 16..=16),
        root_page in 0u64..=TABLE_PAGES + 1,
        eptp_low in 0u64..0x1000,
        slots in prop::collection::vec(0usize..4, 5..=5),
        offset in 0u64..0x1000,
        access in access_strategy(),
        context in context_strategy(),
        mbec in any::<bool>(),
        chain in prop::option::of(chain_strategy()),
    ) {
        let mut memory = random_memory(&words);
        let eptp = Eptp::from_raw(((root_page + 1) << 12) | eptp_low);
        let Ok(config) = WalkConfig::new(eptp, context, mbec) else {
            return Ok(());
        };
        let gpa = L2Gpa::new(gpa_from(&slots, offset));
        if let Some(chain) = &chain
            && root_page < TABLE_PAGES
        {
            plant(&mut memory, chain, root_page, gpa.raw());
        }
        let levels = usize::from(config.levels);

        // Read-only walk: at most one read per level.
        let result = inspect(&memory, eptp, gpa, &config);
        prop_assert!(memory.reads.get() <= levels);
        if let Ok(translation) = &result {
            prop_assert!(translation.steps().len() <= levels);
            prop_assert_eq!(translation.steps().first().map(|s| s.level), Some(config.levels));
            prop_assert_eq!(translation.l1_gpa.raw() & 0xFFF, offset & 0xFFF);
        }

        // Hardware-like walk: the same read count without A/D, a bounded
        // one with (A/D re-reads only after a failed compare-exchange).
        memory.reads.set(0);
        let walked = walk(&mut memory, eptp, gpa, access, &config);
        if config.accessed_dirty {
            prop_assert!(memory.reads.get() <= 2 * levels);
        } else {
            prop_assert!(memory.reads.get() <= levels);
            prop_assert_eq!(memory.writes, 0);
        }
        if let Err(fault) = walked {
            prop_assert!((1..=config.levels).contains(&fault.level()));
        }
    }

    #[test]
    fn walk_and_oracle_agree(
        words in prop::collection::vec(word_strategy(), 16..=16),
        root_page in 0u64..TABLE_PAGES,
        slots in prop::collection::vec(0usize..4, 5..=5),
        offset in 0u64..0x1000,
        access in access_strategy(),
        context in context_strategy(),
        mbec in any::<bool>(),
        accessed_dirty in any::<bool>(),
        chain in prop::option::of(chain_strategy()),
    ) {
        let mut memory = random_memory(&words);
        let eptp = Eptp::new((root_page + 1) << 12, EptMemoryType::WriteBack, 4, accessed_dirty).unwrap();
        let config = WalkConfig::new(eptp, context, mbec).unwrap();
        let gpa = L2Gpa::new(gpa_from(&slots, offset));
        if let Some(chain) = &chain {
            plant(&mut memory, chain, root_page, gpa.raw());
        }
        let ept01 = TestEpt01 { offset: 0x8000_0000, rights: HashMap::new(), size: PageSize::Size4K };

        let inspected = inspect(&memory, eptp, gpa, &config);
        let oracle = compose(&memory, &ept01, eptp, gpa, &config);
        let walked = walk(&mut memory, eptp, gpa, access, &config);
        match (&inspected, &walked) {
            (Ok(full), Ok(translation)) => {
                // Same walk: same address and rights; the access is allowed.
                prop_assert_eq!(full.l1_gpa, translation.l1_gpa);
                prop_assert_eq!(full.permissions, translation.permissions);
                prop_assert!(access.allowed_by(translation.permissions, mbec));
                let oracle = oracle.expect("EPT01 maps everything");
                prop_assert_eq!(oracle.l1_gpa, translation.l1_gpa);
                prop_assert_eq!(oracle.permissions, translation.permissions);
                prop_assert_eq!(oracle.host.raw(), translation.l1_gpa.raw() + 0x8000_0000);
            }
            (Ok(full), Err(WalkFault::Violation { qualification, .. })) => {
                // Denied by the rights: the qualification reports them.
                prop_assert!(!access.allowed_by(full.permissions, mbec));
                prop_assert_eq!(qualification.access(), access.violation_access());
                prop_assert_eq!(qualification.gpa_readable(), full.permissions.contains(EptPermissions::READ));
                prop_assert_eq!(qualification.gpa_writable(), full.permissions.contains(EptPermissions::WRITE));
                prop_assert_eq!(qualification.gpa_executable(), full.permissions.contains(EptPermissions::EXECUTE));
                prop_assert_eq!(
                    qualification.gpa_user_executable(),
                    mbec && full.permissions.contains(EptPermissions::USER_EXECUTE)
                );
                prop_assert!(oracle.is_some());
            }
            (Ok(_), Err(other)) => prop_assert!(false, "walk faulted with {:?} where inspect did not", other),
            (Err(fault), walked) => {
                // Same fault (not-present violations differ only in the
                // access bits, which inspect does not know).
                prop_assert!(oracle.is_none());
                match (fault, walked) {
                    (WalkFault::Violation { level, qualification }, Err(WalkFault::Violation { level: l2, qualification: q2 })) => {
                        prop_assert_eq!(level, l2);
                        prop_assert_eq!(qualification.permissions(), q2.permissions());
                    }
                    (fault, walked) => prop_assert_eq!(Err(*fault), *walked),
                }
            }
        }
    }
}
