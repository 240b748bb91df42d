//! The EPT12 fuzz scenario: an L1 memory image with hostile EPT12 tables and
//! a sequence of operations on the engine, with the invariants checked after
//! every step. The `ept12` fuzz target and the stable corpus replay test
//! (`tests/ept12_corpus.rs`) both run [`Scenario::run`], so CI exercises
//! the target without nightly.
//!
//! Layout of the scenario's L1 (256 KiB): pages 0..16 hold EPT12 tables
//! (entries may point anywhere, including at themselves or outside L1),
//! pages 16..64 are data. EPT01 maps L1 one-to-one at a host base far from
//! the frame pool. The frame budget is small so eviction runs.

use alloc::vec::Vec;

use arbitrary::Arbitrary;
use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::ept::{EptPermissions, EptWalkContext, Eptp};

use super::hardware::translate_ept02;
use super::{
    FramePool, InvariantReport, InvariantViolation, TestEpt01, TestMemory, check_invariants,
    check_memory_safety,
};
use crate::addr::{HostPa, L1Gfn, L1Gpa, L2Gpa, PAGE_SIZE};
use crate::shadow::{Mmu, MmuConfig, Policy};
use crate::walk::Access;

/// Pages of L1 memory in a scenario.
pub const L1_PAGES: u64 = 64;
/// The first pages of L1 hold EPT12 tables.
pub const TABLE_PAGES: u64 = 16;
/// Shadow frames the engine may hold.
pub const FRAME_BUDGET: usize = 24;
/// Host address of L1 page 0 under EPT01.
const HOST_BASE: u64 = 0x1_0000_0000;

/// An EPT12 entry value: mostly well-formed pointers into the scenario's
/// L1 with fuzzed flag bits, sometimes any 64-bit value at all.
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum EntryValue {
    /// `page << 12 | flags`: a pointer to an L1 page (taken modulo twice
    /// the L1 size, so some point outside L1) with bits 11:0 fuzzed.
    Pointer {
        /// Target page.
        page: u8,
        /// Bits 11:0 of the entry (permissions, memory type, large, A/D).
        flags: u16,
    },
    /// Any value.
    Raw(u64),
}

impl EntryValue {
    fn value(self) -> u64 {
        match self {
            Self::Pointer { page, flags } => {
                (u64::from(page) % (2 * L1_PAGES)) << 12 | u64::from(flags & 0xfff)
            }
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
    /// Bits 11:0 of the EPTP; `None` gives a well-formed WB 4-level EPTP.
    pub low_bits: Option<u16>,
}

impl RootSpec {
    fn eptp(self) -> Eptp {
        let root = (u64::from(self.table) % TABLE_PAGES) * PAGE_SIZE;
        Eptp::from_raw(root | self.low_bits.map_or(0x1e, |bits| u64::from(bits & 0xfff)))
    }
}

/// One thing L1, L2 or L0 does.
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum Op {
    /// L2 running on root `root` touches `page`.
    Access {
        /// Index into the scenario's roots.
        root: u8,
        /// L2 page number (small, so walks meet the fuzzed tables).
        page: u16,
        /// 0 read, 1 write, 2 fetch.
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
    /// L0 changes EPT01 for L1 page `page`.
    Ept01 {
        /// L1 page (modulo the L1 size).
        page: u8,
        /// 0 unmap, 1 read-only, 2 read/execute, 3 restore.
        action: u8,
    },
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
}

/// Why a scenario failed: the engine broke an invariant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("step {step}: {violation}")]
pub struct ScenarioFailure {
    /// Index of the operation after which the check failed (`None`: after
    /// the initial setup).
    pub step: usize,
    /// What was wrong.
    pub violation: InvariantViolation,
}

/// What a scenario did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScenarioReport {
    /// Operations run.
    pub steps: usize,
    /// Oracle (full) checks run; the others were memory-safety checks only.
    pub full_checks: usize,
    /// Accesses the engine had to handle.
    pub faults: usize,
}

impl Scenario {
    /// Runs the scenario, checking after every step that every EPT02 leaf
    /// maps only L1 memory (always) and is no more permissive than the
    /// oracle (whenever EPT12 has no write L1 has not yet invalidated:
    /// until an INVEPT, stale translations are architecturally allowed).
    ///
    /// # Errors
    ///
    /// The first invariant the engine broke.
    pub fn run(&self) -> Result<ScenarioReport, ScenarioFailure> {
        let policy = Policy::ALL[usize::from(self.policy) % Policy::ALL.len()];
        let caps = VmxCapabilities::bochs_skylake_x();
        let context = EptWalkContext::from_capabilities(&caps, 46, false);
        let mut config = MmuConfig::new(policy, context);
        config.frame_budget = FRAME_BUDGET;
        let mut mmu = Mmu::new(config, FramePool::new(FRAME_BUDGET + 8));
        let mut memory = TestMemory::new(L1_PAGES * PAGE_SIZE);
        let mut ept01 = TestEpt01::identity(L1_PAGES * PAGE_SIZE, HostPa::new(HOST_BASE));
        for &(table, index, value) in self.entries.iter().take(4096) {
            write_entry(&mut memory, table, index, value);
        }
        let mut roots: Vec<Eptp> = self.roots.iter().take(8).map(|spec| spec.eptp()).collect();
        if roots.is_empty() {
            roots.push(
                RootSpec {
                    table: 0,
                    low_bits: None,
                }
                .eptp(),
            );
        }

        let mut report = ScenarioReport::default();
        // EPT12 writes L1 has not invalidated yet (cleared by INVEPT global).
        let mut stale = false;
        for (step, op) in self.ops.iter().take(2048).enumerate() {
            match *op {
                Op::Access { root, page, kind } => {
                    let eptp12 = roots[usize::from(root) % roots.len()];
                    let Ok(switch) = mmu.switch_to(eptp12) else {
                        continue;
                    };
                    let gpa = L2Gpa::new(u64::from(page) * PAGE_SIZE);
                    let access = match kind % 3 {
                        0 => Access::READ,
                        1 => Access::WRITE,
                        _ => Access::FETCH,
                    };
                    let allowed = translate_ept02(mmu.frames(), switch.eptp02, gpa)
                        .is_some_and(|translation| translation.allows(access));
                    if !allowed {
                        report.faults += 1;
                        // Every outcome is acceptable here; a typed error too.
                        let _ = mmu.handle_ept_violation(&mut memory, &ept01, gpa, access);
                    }
                }
                Op::WriteEntry {
                    table,
                    index,
                    value,
                    then,
                } => {
                    write_entry(&mut memory, table, index, value);
                    match then % 4 {
                        1 => mmu.invept_single_context(&memory, roots[0]),
                        2 => mmu.invept_global(&memory),
                        3 => mmu.l1_wrote(&memory, L1Gfn::new(u64::from(table) % TABLE_PAGES)),
                        _ => {}
                    }
                    // Only INVEPT all-context brings every root back in sync.
                    stale = then % 4 != 2;
                }
                Op::InveptSingle { root } => {
                    mmu.invept_single_context(&memory, roots[usize::from(root) % roots.len()]);
                }
                Op::InveptGlobal => {
                    mmu.invept_global(&memory);
                    stale = false;
                }
                Op::Invvpid => mmu.invvpid(),
                Op::Ept01 { page, action } => {
                    let gfn = L1Gfn::new(u64::from(page) % L1_PAGES);
                    match action % 4 {
                        0 => ept01.unmap(gfn),
                        1 => ept01.protect(gfn, EptPermissions::READ),
                        2 => ept01.protect(gfn, EptPermissions::READ | EptPermissions::EXECUTE),
                        _ => ept01.reset(gfn),
                    }
                    mmu.ept01_changed(gfn);
                }
            }
            report.steps += 1;
            let checked: Result<InvariantReport, InvariantViolation> = if stale {
                check_memory_safety(&mmu, &memory, &ept01)
            } else {
                report.full_checks += 1;
                check_invariants(&mmu, &memory, &ept01)
            };
            checked.map_err(|violation| ScenarioFailure { step, violation })?;
        }
        Ok(report)
    }
}

fn write_entry(memory: &mut TestMemory, table: u8, index: u16, value: EntryValue) {
    let table = u64::from(table) % TABLE_PAGES;
    let address = L1Gpa::new(table * PAGE_SIZE + u64::from(index % 512) * 8);
    // In range by construction: tables are the first pages of L1.
    let _ = memory.write_u64(address, value.value());
}
