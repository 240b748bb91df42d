//! The EPT12 walker: translates an L2 guest-physical address through L1's
//! EPT12 exactly as the processor would (SDM Vol. 3C 29.3.2, 29.3.3, 29.3.5).
//!
//! A walk either yields a [`Translation`] (the L1 GPA, the rights intersected along
//! the walk, the leaf's size and memory type, and every entry it read), or
//! the [`WalkFault`] L1 must see: an EPT violation with its exit
//! qualification (SDM 28.2.1, Table 28-7), an EPT misconfiguration, or a
//! table pointer into memory L1 does not own.
//!
//! Every EPT12 byte is L1-controlled. The walk reads at most one entry per
//! level (at most 5), masks every index to 0..512 and never recurses, so a
//! table that points at itself, or one page used at every level, ends after
//! `levels` reads like any other table. Setting accessed/dirty flags is a
//! bounded number of compare-exchanges.
//!
//! # Order of checks (SDM 29.3.3)
//!
//! The walk reads the entries from the root down. A not-present entry stops
//! it with an EPT violation. A present entry that is misconfigured stops it
//! with an EPT misconfiguration. Rights are checked only once the leaf is
//! reached: "an EPT violation may occur during an access using a
//! guest-physical address whose translation does not cause an EPT
//! misconfiguration" (SDM 29.3.3.2), so a write denied by the PML4E but
//! misconfigured at the PTE is a misconfiguration.
//!
//! # Accessed and dirty flags (SDM 29.3.5)
//!
//! With EPTP bit 6 set, the processor sets the accessed flag (bit 8) of
//! every entry it uses and, on a write, the dirty flag (bit 9) of the leaf.
//! The SDM does not say whether flags are set for a walk that ends in an EPT
//! violation; KVM's `FNAME(walk_addr_generic)` (`arch/x86/kvm/mmu/paging_tmpl.h`)
//! returns the fault before it calls `update_accessed_dirty_bits`, i.e. it
//! sets the flags only after a successful walk. This walker does the same:
//! flags are written only when
//! the walk ends in a [`Translation`], never on a violation,
//! misconfiguration or table outside L1 memory.
//!
//! Flags are set with [`L1Memory::compare_exchange_u64`] on the value the
//! walk read. If an entry changed only in its A/D bits (another vCPU, or this
//! walk itself when one entry is used at several levels), the update is
//! retried on the new value. If it changed otherwise, the walk restarts. Both
//! are bounded; when the bound is hit the translation from the last walk is
//! returned without the flags, and [`Translation::dirty`] reports the leaf's
//! dirty flag as read, so the engine keeps the page write-protected and the
//! next write faults again (a safe outcome, like a lost race).

use crate::addr::{L1Gfn, L1Gpa, L2Gpa, PageSize};
use crate::env::L1Memory;
use hv_arch_vmx::ept::{
    EptEntry, EptLevel, EptMisconfiguration, EptPermissions, EptWalkContext, Eptp,
};
use hv_arch_vmx::exit::{EptGpaPermissions, EptViolationAccess, EptViolationQualification};

/// The most levels an EPT walk has (5-level EPT).
pub const MAX_LEVELS: usize = 5;

/// How often one entry's A/D update is retried after it changed only in its
/// A/D bits under the walker.
const FLAG_UPDATE_RETRIES: usize = 4;

/// How often a walk restarts because an entry changed under the A/D update.
const WALK_RESTARTS: usize = 4;

/// The kind of memory access being translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessKind {
    /// A data read (also reads of guest paging structures).
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Fetch,
}

/// One access to translate: its kind, and for fetches whether the linear
/// address was user-mode (which selects bit 10 over bit 2 with mode-based
/// execute control, SDM 29.3.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// Read, write or fetch.
    pub kind: AccessKind,
    /// The linear address was a user-mode address; matters only for
    /// fetches with mode-based execute control.
    pub user_mode: bool,
}

impl Access {
    /// A supervisor-mode data read.
    pub const READ: Self = Self {
        kind: AccessKind::Read,
        user_mode: false,
    };
    /// A supervisor-mode data write.
    pub const WRITE: Self = Self {
        kind: AccessKind::Write,
        user_mode: false,
    };
    /// A supervisor-mode instruction fetch.
    pub const FETCH: Self = Self {
        kind: AccessKind::Fetch,
        user_mode: false,
    };
    /// A user-mode instruction fetch.
    pub const USER_FETCH: Self = Self {
        kind: AccessKind::Fetch,
        user_mode: true,
    };

    /// The access bits of the EPT-violation qualification (Table 28-7, bits
    /// 2:0).
    pub const fn violation_access(self) -> EptViolationAccess {
        match self.kind {
            AccessKind::Read => EptViolationAccess::DATA_READ,
            AccessKind::Write => EptViolationAccess::DATA_WRITE,
            AccessKind::Fetch => EptViolationAccess::INSTRUCTION_FETCH,
        }
    }

    /// Whether rights `permissions` (already intersected along a walk) allow this
    /// access (SDM 29.3.3.2).
    pub const fn allowed_by(self, permissions: EptPermissions, mode_based_execute: bool) -> bool {
        match self.kind {
            AccessKind::Read => permissions.contains(EptPermissions::READ),
            AccessKind::Write => permissions.contains(EptPermissions::WRITE),
            AccessKind::Fetch => permissions.allows_execute(self.user_mode, mode_based_execute),
        }
    }

    /// The right this access needs in every entry of the walk.
    const fn required(self, mode_based_execute: bool) -> EptPermissions {
        match self.kind {
            AccessKind::Read => EptPermissions::READ,
            AccessKind::Write => EptPermissions::WRITE,
            AccessKind::Fetch if mode_based_execute && self.user_mode => {
                EptPermissions::USER_EXECUTE
            }
            AccessKind::Fetch => EptPermissions::EXECUTE,
        }
    }
}

/// Why a [`WalkConfig`] cannot be built from an EPTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WalkConfigError {
    /// EPTP bits 5:3 give a walk length other than 4 or 5 (SDM 25.6.11).
    #[error("EPT page-walk length {0} is neither 4 nor 5")]
    UnsupportedWalkLength(u8),
}

/// The parameters of walks through one EPT12: what the EPTP12 and the
/// processor model say about them. Build it with [`WalkConfig::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WalkConfig {
    /// Levels in the walk, 4 or 5 (EPTP bits 5:3 plus 1). The walker clamps
    /// other values to 1..=5 rather than fail.
    pub levels: u8,
    /// EPTP bit 6: set accessed and dirty flags (SDM 29.3.5).
    pub accessed_dirty: bool,
    /// The "mode-based execute control for EPT" control of VMCS12: bit 10
    /// grants user-mode fetches and counts for presence.
    pub mode_based_execute: bool,
    /// What decides misconfigurations (MAXPHYADDR, page-size and
    /// execute-only support); its `mode_based_execute` equals the field
    /// above.
    pub context: EptWalkContext,
}

impl WalkConfig {
    /// The configuration for walks from `eptp`: walk length and A/D enable
    /// from the EPTP, misconfiguration rules from `context`, and mode-based
    /// execute control as given (it overrides `context.mode_based_execute`
    /// so that the two cannot disagree).
    ///
    /// # Errors
    ///
    /// [`WalkConfigError::UnsupportedWalkLength`] unless the EPTP asks for
    /// 4 or 5 levels.
    pub const fn new(
        eptp: Eptp,
        context: EptWalkContext,
        mode_based_execute: bool,
    ) -> Result<Self, WalkConfigError> {
        let levels = eptp.walk_levels();
        if levels != 4 && levels != 5 {
            return Err(WalkConfigError::UnsupportedWalkLength(levels));
        }
        let mut context = context;
        context.mode_based_execute = mode_based_execute;
        Ok(Self {
            levels,
            accessed_dirty: eptp.accessed_dirty_enabled(),
            mode_based_execute,
            context,
        })
    }

    /// The walk length actually used: `levels` clamped to 1..=5.
    const fn effective_levels(self) -> u8 {
        if self.levels == 0 {
            1
        } else if self.levels as usize > MAX_LEVELS {
            MAX_LEVELS as u8
        } else {
            self.levels
        }
    }

    /// The misconfiguration context, with this configuration's mode-based
    /// execute setting.
    const fn entry_context(self) -> EptWalkContext {
        let mut context = self.context;
        context.mode_based_execute = self.mode_based_execute;
        context
    }
}

/// One EPT12 entry a walk read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct WalkStep {
    /// Level of the entry (5 = PML5E .. 1 = PTE).
    pub level: u8,
    /// The EPT12 table the entry lies in.
    pub table: L1Gfn,
    /// The L1 address of the entry.
    pub entry_address: L1Gpa,
    /// The entry as read, before any A/D update by this walk.
    pub entry: u64,
}

/// The steps of one walk, root first: a fixed array, no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
struct Steps {
    steps: [WalkStep; MAX_LEVELS],
    len: usize,
}

impl Steps {
    /// Appends a step; ignores it if all slots are used (cannot happen: the
    /// walk has at most `MAX_LEVELS` levels).
    fn push(&mut self, step: WalkStep) {
        if let Some(slot) = self.steps.get_mut(self.len) {
            *slot = step;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[WalkStep] {
        self.steps.get(..self.len).unwrap_or(&[])
    }
}

/// A successful walk: where an L2 GPA lands in L1 memory and with what
/// rights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Translation {
    /// The translated address of the walked L2 GPA (page frame + offset).
    pub l1_gpa: L1Gpa,
    /// Size of the EPT12 leaf.
    pub page_size: PageSize,
    /// The AND of bits 0, 1, 2 (and 10 with mode-based execute control) of
    /// every entry on the walk (SDM 29.3.3.2).
    pub permissions: EptPermissions,
    /// The leaf's EPT memory type (bits 5:3; never 2, 3 or 7, those are
    /// misconfigurations).
    pub memory_type: u8,
    /// The leaf's ignore-PAT bit (bit 6).
    pub ignore_pat: bool,
    /// With A/D enabled: the leaf's dirty flag after this walk (a write sets
    /// it). Without: `true`, since no write-protection is needed to track
    /// dirtiness.
    pub dirty: bool,
    steps: Steps,
}

impl Translation {
    /// The entries the walk read, from the root level down to the leaf, as
    /// read (before this walk's A/D updates).
    pub fn steps(&self) -> &[WalkStep] {
        self.steps.as_slice()
    }

    /// The leaf entry as read (before this walk's A/D update).
    pub fn leaf(&self) -> Option<WalkStep> {
        self.steps().last().copied()
    }
}

/// Why a walk did not produce a translation: what L1 must see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WalkFault {
    /// An EPT violation (SDM 29.3.3.2): an entry was not present, or the
    /// rights intersected along the walk deny the access. `level` is the entry
    /// that stopped the walk, or the highest-level entry lacking the needed
    /// right. The qualification leaves bits 7 and 8 (guest-linear address)
    /// and above to the caller.
    Violation {
        /// Level of the offending entry.
        level: u8,
        /// Exit qualification bits 6:0 (Table 28-7).
        qualification: EptViolationQualification,
    },
    /// An EPT misconfiguration (SDM 29.3.3.1) in a present entry.
    Misconfiguration {
        /// Level of the misconfigured entry.
        level: u8,
        /// The entry as read.
        entry: u64,
        /// Why it is misconfigured.
        reason: EptMisconfiguration,
    },
    /// The EPTP12 or an EPT12 entry points at a table L1 does not own
    /// (e.g. MMIO or beyond L1's memory). Hardware would read whatever
    /// lies there; hv cannot, and the engine reflects it to L1 as an EPT
    /// violation, the way KVM does when it cannot read a guest EPT entry.
    TableOutsideL1Memory {
        /// Level of the entry that could not be read.
        level: u8,
        /// The L1 address of that entry's table.
        table: L1Gpa,
    },
}

impl WalkFault {
    /// The level of the entry the fault is about.
    pub const fn level(&self) -> u8 {
        match *self {
            Self::Violation { level, .. }
            | Self::Misconfiguration { level, .. }
            | Self::TableOutsideL1Memory { level, .. } => level,
        }
    }

    /// The EPT-violation qualification to give L1 for this fault on
    /// `access`, or `None` for a misconfiguration (which has no
    /// qualification, SDM 28.2.1). A table outside L1 memory becomes a
    /// violation with no rights (bits 6:3 = 0): KVM's
    /// `FNAME(walk_addr_generic)` also reflects an unreadable guest EPT
    /// entry as an EPT violation, though it reports the rights of the
    /// entries above in bits 5:3; hv reports none, since the walk never
    /// reached a usable entry at that level.
    pub fn violation_qualification(&self, access: Access) -> Option<EptViolationQualification> {
        match *self {
            Self::Violation { qualification, .. } => Some(qualification),
            Self::Misconfiguration { .. } => None,
            Self::TableOutsideL1Memory { .. } => Some(EptViolationQualification::new(
                access.violation_access(),
                EptGpaPermissions::empty(),
            )),
        }
    }
}

/// Walks EPT12 from `eptp12` for `gpa` and `access`, as the processor
/// would, setting accessed/dirty flags in EPT12 when `config` enables them.
///
/// # Errors
///
/// The [`WalkFault`] L1 must see (or that the engine turns into one).
pub fn walk<M: L1Memory + ?Sized>(
    memory: &mut M,
    eptp12: Eptp,
    gpa: L2Gpa,
    access: Access,
    config: &WalkConfig,
) -> Result<Translation, WalkFault> {
    walk_core(&mut Updating(memory), eptp12, gpa, Some(access), *config)
}

/// Walks EPT12 without checking an access and without writing anything:
/// the full rights intersected along the walk. The reference walk of
/// [`crate::oracle`], and a way to inspect EPT12 with shared access.
///
/// # Errors
///
/// [`WalkFault::Violation`] only for a not-present entry (no access is
/// checked, so its qualification has no access bits), and the other faults
/// as [`walk`].
pub fn inspect<M: L1Memory + ?Sized>(
    memory: &M,
    eptp12: Eptp,
    gpa: L2Gpa,
    config: &WalkConfig,
) -> Result<Translation, WalkFault> {
    walk_core(&mut ReadOnly(memory), eptp12, gpa, None, *config)
}

/// The memory a walk goes through: reading, and (for hardware-like walks)
/// the locked update of A/D flags.
trait WalkMemory {
    /// Reads one 8-byte entry.
    fn read(&self, gpa: L1Gpa) -> Result<u64, crate::env::NotL1Memory>;
    /// Compare-exchanges one entry; `Ok(false)` if it no longer holds `old`
    /// or if this memory cannot be written.
    fn compare_exchange(
        &mut self,
        gpa: L1Gpa,
        old: u64,
        new: u64,
    ) -> Result<bool, crate::env::NotL1Memory>;
}

/// L1 memory with write access: walks set A/D flags.
struct Updating<'a, M: ?Sized>(&'a mut M);

impl<M: L1Memory + ?Sized> WalkMemory for Updating<'_, M> {
    fn read(&self, gpa: L1Gpa) -> Result<u64, crate::env::NotL1Memory> {
        self.0.read_u64(gpa)
    }

    fn compare_exchange(
        &mut self,
        gpa: L1Gpa,
        old: u64,
        new: u64,
    ) -> Result<bool, crate::env::NotL1Memory> {
        self.0.compare_exchange_u64(gpa, old, new)
    }
}

/// L1 memory with shared access: walks only read (`walk_core` is never
/// asked to set flags through it; if it were, the update would just fail).
struct ReadOnly<'a, M: ?Sized>(&'a M);

impl<M: L1Memory + ?Sized> WalkMemory for ReadOnly<'_, M> {
    fn read(&self, gpa: L1Gpa) -> Result<u64, crate::env::NotL1Memory> {
        self.0.read_u64(gpa)
    }

    fn compare_exchange(
        &mut self,
        _gpa: L1Gpa,
        _old: u64,
        _new: u64,
    ) -> Result<bool, crate::env::NotL1Memory> {
        Ok(false)
    }
}

/// The one walk implementation. `access` is `Some` for a hardware-like walk
/// (access check, A/D flags when enabled) and `None` for an inspection.
fn walk_core<W: WalkMemory>(
    memory: &mut W,
    eptp12: Eptp,
    gpa: L2Gpa,
    access: Option<Access>,
    config: WalkConfig,
) -> Result<Translation, WalkFault> {
    let mut translation = read_walk(memory, eptp12, gpa, access, config)?;
    let Some(access) = access else {
        return Ok(translation);
    };
    if !config.accessed_dirty {
        return Ok(translation);
    }
    let write = matches!(access.kind, AccessKind::Write);
    for _ in 0..WALK_RESTARTS {
        match set_flags(memory, &translation, write) {
            FlagUpdate::Done { dirty } => {
                translation.dirty = dirty;
                return Ok(translation);
            }
            FlagUpdate::EntryChanged => {
                // SDM 29.3.5: the flags belong to the entries used; L1
                // changed one, so walk again with what is there now.
                translation = read_walk(memory, eptp12, gpa, Some(access), config)?;
            }
            FlagUpdate::GaveUp => break,
        }
    }
    // Bounded: keep the last walk's result and report the dirty flag as
    // read (the engine then write-protects and the next write retries).
    Ok(translation)
}

/// What setting the A/D flags of a walk's entries gave.
enum FlagUpdate {
    /// All flags set; the leaf's dirty flag is now `dirty`.
    Done {
        /// The leaf's dirty flag after the update.
        dirty: bool,
    },
    /// An entry changed beyond its A/D bits: the walk must be redone.
    EntryChanged,
    /// An entry kept changing in its A/D bits, or the memory vanished.
    GaveUp,
}

/// Sets accessed on every entry `translation` used, and dirty on the leaf
/// for a write (SDM 29.3.5).
fn set_flags<W: WalkMemory>(memory: &mut W, translation: &Translation, write: bool) -> FlagUpdate {
    let flag_bits = EptEntry::ACCESSED | EptEntry::DIRTY;
    let steps = translation.steps();
    let last = steps.len().saturating_sub(1);
    let mut leaf_now = 0;
    for (index, step) in steps.iter().enumerate() {
        let is_leaf = index == last;
        let wanted = if is_leaf && write {
            EptEntry::ACCESSED | EptEntry::DIRTY
        } else {
            EptEntry::ACCESSED
        };
        let mut current = step.entry;
        let mut done = false;
        for _ in 0..FLAG_UPDATE_RETRIES {
            if current & !flag_bits != step.entry & !flag_bits {
                return FlagUpdate::EntryChanged;
            }
            if current & wanted == wanted {
                done = true;
                break;
            }
            match memory.compare_exchange(step.entry_address, current, current | wanted) {
                Ok(true) => {
                    current |= wanted;
                    done = true;
                    break;
                }
                Ok(false) => match memory.read(step.entry_address) {
                    Ok(value) => current = value,
                    Err(_) => return FlagUpdate::GaveUp,
                },
                Err(_) => return FlagUpdate::GaveUp,
            }
        }
        if !done {
            return FlagUpdate::GaveUp;
        }
        if is_leaf {
            leaf_now = current;
        }
    }
    FlagUpdate::Done {
        dirty: EptEntry::from_raw(leaf_now).dirty(),
    }
}

/// Walks without writing: root to leaf, presence and misconfiguration at
/// each level, then (for `Some(access)`) the access check on the intersected
/// rights.
fn read_walk<W: WalkMemory>(
    memory: &W,
    eptp12: Eptp,
    gpa: L2Gpa,
    access: Option<Access>,
    config: WalkConfig,
) -> Result<Translation, WalkFault> {
    let mbec = config.mode_based_execute;
    let context = config.entry_context();
    let levels = config.effective_levels();
    // SDM 29.3.2: the root table is at EPTP bits 51:12.
    let mut table = L1Gpa::new(eptp12.root_address());
    // Rights intersected so far: bits 0, 1, 2 and (with MBEC) 10.
    let mut rights = EptPermissions::all().effective(mbec);
    let mut steps = Steps::default();
    let mut level_number = levels;
    // At most `levels` (<= 5) iterations: one entry read per level.
    while let Some(level) = EptLevel::from_number(level_number) {
        // Index bits per level (SDM 29.3.2): 56:48, 47:39, 38:30, 29:21,
        // 20:12; `index_of` masks to 0..512.
        let index = level.index_of(gpa.raw()) as u64;
        let entry_address = table.wrapping_add(index * 8);
        let raw = memory
            .read(entry_address)
            .map_err(|_| WalkFault::TableOutsideL1Memory {
                level: level_number,
                table,
            })?;
        steps.push(WalkStep {
            level: level_number,
            table: table.gfn(),
            entry_address,
            entry: raw,
        });
        let entry = EptEntry::from_raw(raw);
        rights = rights.along_walk(entry.permissions().effective(mbec));
        if !entry.is_present(mbec) {
            // SDM 29.3.3.2: a not-present entry is an EPT violation; the
            // AND of Table 28-7 includes it, so the rights bits are 0.
            return Err(violation(level_number, access, rights, mbec));
        }
        // SDM 29.3.3.1: checked on present entries, before any rights.
        if let Some(reason) = entry.misconfiguration(level, &context) {
            return Err(WalkFault::Misconfiguration {
                level: level_number,
                entry: raw,
                reason,
            });
        }
        if let (Some(page_size), true) = (PageSize::at_level(level_number), entry.is_leaf(level)) {
            return finish(steps, entry, page_size, gpa, access, rights, config);
        }
        // SDM 29.3.2: the next table is at bits (MAXPHYADDR-1):12 (bits
        // beyond MAXPHYADDR were just found clear).
        table = L1Gpa::new(entry.address());
        level_number -= 1;
    }
    // Unreachable: level 1 always is a leaf. Report it as the PTE-level
    // violation hardware could never produce rather than panic.
    Err(violation(1, access, EptPermissions::empty(), mbec))
}

/// Builds the translation of a walk that reached its leaf, after the access
/// check.
fn finish(
    steps: Steps,
    leaf: EptEntry,
    page_size: PageSize,
    gpa: L2Gpa,
    access: Option<Access>,
    rights: EptPermissions,
    config: WalkConfig,
) -> Result<Translation, WalkFault> {
    let mbec = config.mode_based_execute;
    if let Some(access) = access
        && !access.allowed_by(rights, mbec)
    {
        // Report the first (highest) entry lacking the right.
        let required = access.required(mbec);
        let level = steps
            .as_slice()
            .iter()
            .find(|step| {
                !EptEntry::from_raw(step.entry)
                    .permissions()
                    .contains(required)
            })
            .map_or(1, |step| step.level);
        return Err(violation(level, Some(access), rights, mbec));
    }
    let size = page_size.bytes();
    let frame = leaf.address() & !(size - 1);
    let l1_gpa = L1Gpa::new(frame | (gpa.raw() & (size - 1)));
    Ok(Translation {
        l1_gpa,
        page_size,
        permissions: rights,
        memory_type: leaf.memory_type_bits(),
        ignore_pat: leaf.ignore_pat(),
        dirty: !config.accessed_dirty || leaf.dirty(),
        steps,
    })
}

/// An EPT violation at `level` with qualification bits 6:0 (Table 28-7):
/// the access in bits 2:0, the intersected bits 0/1/2 in bits 5:3 and, with MBEC,
/// the intersected bit 10 in bit 6 (0 without).
fn violation(
    level: u8,
    access: Option<Access>,
    rights: EptPermissions,
    mode_based_execute: bool,
) -> WalkFault {
    let mut allowed = EptGpaPermissions::empty();
    allowed.set(
        EptGpaPermissions::READABLE,
        rights.contains(EptPermissions::READ),
    );
    allowed.set(
        EptGpaPermissions::WRITABLE,
        rights.contains(EptPermissions::WRITE),
    );
    allowed.set(
        EptGpaPermissions::EXECUTABLE,
        rights.contains(EptPermissions::EXECUTE),
    );
    allowed.set(
        EptGpaPermissions::USER_EXECUTABLE,
        mode_based_execute && rights.contains(EptPermissions::USER_EXECUTE),
    );
    let access_bits = access.map_or(EptViolationAccess::empty(), Access::violation_access);
    WalkFault::Violation {
        level,
        qualification: EptViolationQualification::new(access_bits, allowed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::NotL1Memory;
    use core::cell::Cell;
    use std::collections::BTreeMap;

    /// One table page at 0x1000 whose every entry points back at itself.
    struct Looping {
        reads: Cell<usize>,
        words: BTreeMap<u64, u64>,
    }

    impl L1Memory for Looping {
        fn read_u64(&self, gpa: L1Gpa) -> Result<u64, NotL1Memory> {
            self.reads.set(self.reads.get() + 1);
            if gpa.raw() >> 12 == 1 {
                Ok(self
                    .words
                    .get(&gpa.raw())
                    .copied()
                    .unwrap_or(0x1000 | 0b111))
            } else {
                Err(NotL1Memory { gpa })
            }
        }

        fn compare_exchange_u64(
            &mut self,
            gpa: L1Gpa,
            old: u64,
            new: u64,
        ) -> Result<bool, NotL1Memory> {
            if self.read_u64(gpa)? != old {
                return Ok(false);
            }
            self.words.insert(gpa.raw(), new);
            Ok(true)
        }
    }

    fn context() -> EptWalkContext {
        EptWalkContext {
            maxphyaddr: 46,
            execute_only: false,
            pages_2m: true,
            pages_1g: true,
            mode_based_execute: false,
        }
    }

    #[test]
    fn out_of_range_levels_are_clamped_not_trusted() {
        let eptp = Eptp::from_raw(0x1000 | 6 | (3 << 3));
        let mut config = WalkConfig::new(eptp, context(), false).unwrap();
        for (levels, reads) in [(0u8, 1usize), (1, 1), (3, 3), (9, 5), (u8::MAX, 5)] {
            config.levels = levels;
            let mut memory = Looping {
                reads: Cell::new(0),
                words: BTreeMap::new(),
            };
            let result = walk(&mut memory, eptp, L2Gpa::new(0x1234), Access::READ, &config);
            assert_eq!(
                result.map(|t| t.steps().len()),
                Ok(reads),
                "levels {levels}"
            );
            assert_eq!(memory.reads.get(), reads);
        }
    }

    #[test]
    fn config_context_follows_mbec_argument() {
        let eptp = Eptp::from_raw(0x1000 | 6 | (3 << 3) | (1 << 6));
        let mut context = context();
        context.mode_based_execute = true;
        let config = WalkConfig::new(eptp, context, false).unwrap();
        assert!(!config.context.mode_based_execute);
        assert!(config.accessed_dirty);
        assert_eq!(config.levels, 4);
    }

    #[test]
    fn steps_ignore_overflow() {
        let mut steps = Steps::default();
        for level in 0..8 {
            steps.push(WalkStep {
                level,
                ..WalkStep::default()
            });
        }
        assert_eq!(steps.as_slice().len(), MAX_LEVELS);
        assert_eq!(steps.as_slice()[4].level, 4);
    }

    #[test]
    fn violation_qualification_bits() {
        // SDM Table 28-7: access in 2:0, rights in 5:3, user-execute in 6.
        let rights = EptPermissions::READ | EptPermissions::EXECUTE | EptPermissions::USER_EXECUTE;
        let WalkFault::Violation {
            qualification,
            level,
        } = violation(2, Some(Access::WRITE), rights, true)
        else {
            panic!("not a violation");
        };
        assert_eq!(level, 2);
        assert_eq!(qualification.raw(), 0b010 | (0b101 << 3) | (1 << 6));
        // Without MBEC bit 6 stays 0 whatever bit 10 says.
        let WalkFault::Violation { qualification, .. } =
            violation(2, Some(Access::FETCH), rights, false)
        else {
            panic!("not a violation");
        };
        assert_eq!(qualification.raw(), 0b100 | (0b101 << 3));
        // An inspection has no access bits.
        let WalkFault::Violation { qualification, .. } =
            violation(4, None, EptPermissions::empty(), false)
        else {
            panic!("not a violation");
        };
        assert_eq!(qualification.raw(), 0);
    }

    #[test]
    fn access_rights_required() {
        let rx = EptPermissions::READ | EptPermissions::EXECUTE;
        assert!(Access::READ.allowed_by(rx, false));
        assert!(!Access::WRITE.allowed_by(rx, false));
        assert!(Access::FETCH.allowed_by(rx, true));
        assert!(Access::USER_FETCH.allowed_by(rx, false));
        assert!(!Access::USER_FETCH.allowed_by(rx, true));
        assert_eq!(
            Access::USER_FETCH.required(true),
            EptPermissions::USER_EXECUTE
        );
        assert_eq!(Access::USER_FETCH.required(false), EptPermissions::EXECUTE);
        assert_eq!(
            Access::FETCH.violation_access(),
            EptViolationAccess::INSTRUCTION_FETCH
        );
    }
}
