//! Extended page tables: entries, memory types and the EPT pointer
//! (SDM Vol. 3C 29.3.2, 29.3.3, Tables 29-1 to 29-6; EPTP in 25.6.11).
//!
//! [`EptEntry`] is the one paging-structure entry format shared by hv-mmu's
//! EPT12 walker and shadow EPT02 builder. [`EptEntry::misconfiguration`]
//! decides, for an entry L1 wrote, whether hardware would report an EPT
//! misconfiguration (SDM 29.3.3.1); [`Eptp::validate`] runs the VM-entry
//! checks on an EPTP (SDM 27.2.1.1).

use bitflags::bitflags;

use crate::capabilities::VmxCapabilities;

/// Bits 51:12: the physical-address field of entries and of the EPTP.
const ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// Bytes in a 4-KByte page.
const PAGE_4K: u64 = 1 << 12;

/// Bits `51:maxphyaddr` of an address field: the address bits beyond the
/// processor's physical-address width, which must be 0.
const fn address_bits_beyond(maxphyaddr: u8) -> u64 {
    if maxphyaddr >= 52 {
        0
    } else {
        ADDRESS_MASK & (u64::MAX << maxphyaddr)
    }
}

/// A memory type, as encoded in EPT leaf entries (bits 5:3), the EPTP
/// (bits 2:0) and `IA32_VMX_BASIC` (bits 53:50) (SDM 29.3.7, 11.11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EptMemoryType {
    /// UC, encoding 0.
    Uncacheable = 0,
    /// WC, encoding 1.
    WriteCombining = 1,
    /// WT, encoding 4.
    WriteThrough = 4,
    /// WP, encoding 5.
    WriteProtected = 5,
    /// WB, encoding 6.
    WriteBack = 6,
}

impl EptMemoryType {
    /// Decodes a memory-type encoding; 2, 3, 7 and anything above 7 are
    /// reserved and give `None`.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0 => Some(Self::Uncacheable),
            1 => Some(Self::WriteCombining),
            4 => Some(Self::WriteThrough),
            5 => Some(Self::WriteProtected),
            6 => Some(Self::WriteBack),
            _ => None,
        }
    }

    /// The encoding.
    pub const fn bits(self) -> u8 {
        self as u8
    }
}

/// The level of an EPT paging structure, named after the entries it holds
/// (SDM 29.3.2). Level numbers run from 1 (PTE) to 5 (PML5E).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EptLevel {
    /// Level 1: a PTE maps a 4-KByte page (Table 29-6).
    Pte = 1,
    /// Level 2: a PDE maps a 2-MByte page or references a page table
    /// (Tables 29-4, 29-5).
    Pde = 2,
    /// Level 3: a PDPTE maps a 1-GByte page or references a page directory
    /// (Tables 29-2, 29-3).
    Pdpte = 3,
    /// Level 4: a PML4E references a PDPT (Table 29-1).
    Pml4e = 4,
    /// Level 5: a PML5E references a PML4 table (5-level EPT only).
    Pml5e = 5,
}

impl EptLevel {
    /// The level with number `number` (1..=5).
    pub const fn from_number(number: u8) -> Option<Self> {
        match number {
            1 => Some(Self::Pte),
            2 => Some(Self::Pde),
            3 => Some(Self::Pdpte),
            4 => Some(Self::Pml4e),
            5 => Some(Self::Pml5e),
            _ => None,
        }
    }

    /// The level number, 1 (PTE) to 5 (PML5E).
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The SDM name of the entries at this level.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pte => "PTE",
            Self::Pde => "PDE",
            Self::Pdpte => "PDPTE",
            Self::Pml4e => "PML4E",
            Self::Pml5e => "PML5E",
        }
    }

    /// The lowest guest-physical address bit translated by an entry at this
    /// level: 12, 21, 30, 39, 48.
    pub const fn shift(self) -> u32 {
        12 + 9 * (self as u32 - 1)
    }

    /// The bytes of guest-physical space one entry at this level covers.
    pub const fn coverage(self) -> u64 {
        1 << self.shift()
    }

    /// The index (0..512) of the entry at this level that translates `gpa`.
    pub const fn index_of(self, gpa: u64) -> usize {
        ((gpa >> self.shift()) & 0x1FF) as usize
    }

    /// The next level down the walk, or `None` after the PTE.
    pub const fn next_lower(self) -> Option<Self> {
        Self::from_number(self as u8 - 1)
    }

    /// Whether an entry at this level can map a page (PTE, PDE, PDPTE).
    pub const fn can_map_page(self) -> bool {
        matches!(self, Self::Pte | Self::Pde | Self::Pdpte)
    }
}

bitflags! {
    /// Access rights of an EPT entry, at the bit positions they occupy in the
    /// entry (SDM 29.3.2).
    ///
    /// The rights of a translation are the intersection of the rights of
    /// every entry on the walk (SDM 29.3.3.2): combine with `&` or
    /// [`EptPermissions::along_walk`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EptPermissions: u64 {
        /// Bit 0: reads allowed.
        const READ = 1 << 0;
        /// Bit 1: writes allowed.
        const WRITE = 1 << 1;
        /// Bit 2: instruction fetches allowed (supervisor-mode linear
        /// addresses only when mode-based execute control is on).
        const EXECUTE = 1 << 2;
        /// Bit 10: user-mode instruction fetches allowed, with mode-based
        /// execute control on; ignored otherwise.
        const USER_EXECUTE = 1 << 10;
        /// Read, write and (supervisor) execute.
        const READ_WRITE_EXECUTE = Self::READ.bits() | Self::WRITE.bits() | Self::EXECUTE.bits();
    }
}

impl EptPermissions {
    /// The rights left after also passing through an entry granting `next`
    /// (SDM 29.3.3.2: every entry on the walk must allow the access).
    #[must_use]
    pub const fn along_walk(self, next: Self) -> Self {
        self.intersection(next)
    }

    /// Whether an instruction fetch is allowed: by bit 2 alone without
    /// mode-based execute control; by bit 10 (user-mode linear address) or
    /// bit 2 (supervisor-mode) with it (SDM 29.3.3.2).
    pub const fn allows_execute(self, user_mode: bool, mode_based_execute: bool) -> bool {
        if mode_based_execute && user_mode {
            self.contains(Self::USER_EXECUTE)
        } else {
            self.contains(Self::EXECUTE)
        }
    }

    /// The rights that count: without mode-based execute control, bit 10 is
    /// ignored and is dropped here.
    #[must_use]
    pub const fn effective(self, mode_based_execute: bool) -> Self {
        if mode_based_execute {
            self
        } else {
            self.difference(Self::USER_EXECUTE)
        }
    }
}

/// What a builder was given that cannot form an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum EptEntryError {
    /// The address is not aligned to the size of what it references.
    #[error("address {address:#x} is not aligned to {alignment:#x} bytes")]
    AddressNotAligned {
        /// The address given.
        address: u64,
        /// The required alignment in bytes.
        alignment: u64,
    },
    /// The address has bits above bit 51.
    #[error("address {address:#x} does not fit in 52 bits")]
    AddressTooWide {
        /// The address given.
        address: u64,
    },
    /// A leaf was requested at a level that cannot map a page.
    #[error("a {} cannot map a page", .0.name())]
    NotALeafLevel(EptLevel),
}

/// The walk parameters that decide whether an entry is misconfigured
/// (SDM 29.3.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent capability flags, named as in the SDM"
)]
pub struct EptWalkContext {
    /// MAXPHYADDR: physical-address width (`CPUID.80000008H:EAX[7:0]`).
    pub maxphyaddr: u8,
    /// Execute-only translations supported (`EPT_VPID_CAP` bit 0).
    pub execute_only: bool,
    /// 2-MByte pages supported (`EPT_VPID_CAP` bit 16).
    pub pages_2m: bool,
    /// 1-GByte pages supported (`EPT_VPID_CAP` bit 17).
    pub pages_1g: bool,
    /// The "mode-based execute control for EPT" VM-execution control is 1.
    pub mode_based_execute: bool,
}

impl EptWalkContext {
    /// The context for a processor with capabilities `caps`.
    pub const fn from_capabilities(
        caps: &VmxCapabilities,
        maxphyaddr: u8,
        mode_based_execute: bool,
    ) -> Self {
        Self {
            maxphyaddr,
            execute_only: caps.ept_vpid.execute_only(),
            pages_2m: caps.ept_vpid.pages_2m(),
            pages_1g: caps.ept_vpid.pages_1g(),
            mode_based_execute,
        }
    }
}

/// Why an EPT entry is misconfigured (SDM 29.3.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum EptMisconfiguration {
    /// Bit 1 (write) set with bit 0 (read) clear.
    #[error("write permission without read permission")]
    WriteWithoutRead,
    /// Execute without read on a processor without execute-only support.
    #[error("execute-only translation, not supported by the processor")]
    ExecuteOnlyNotSupported,
    /// Bit 7 set in a PDE or PDPTE but the processor does not support pages
    /// of that size (bit 7 is then reserved).
    #[error("{} maps a large page, which the processor does not support", level.name())]
    LargePageNotSupported {
        /// The level of the entry.
        level: EptLevel,
    },
    /// Bits reserved at this level (including address bits beyond
    /// MAXPHYADDR) are set.
    #[error("reserved bits {mask:#x} are set")]
    ReservedBitsSet {
        /// The reserved bits that are set.
        mask: u64,
    },
    /// A leaf's memory type (bits 5:3) is 2, 3 or 7.
    #[error("reserved memory type {0}")]
    InvalidMemoryType(u8),
}

/// An EPT paging-structure entry at any level (SDM Tables 29-1 to 29-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EptEntry(u64);

impl EptEntry {
    /// Bit 0: read access.
    pub const READ: u64 = 1 << 0;
    /// Bit 1: write access.
    pub const WRITE: u64 = 1 << 1;
    /// Bit 2: execute access (supervisor-mode execute with mode-based
    /// execute control).
    pub const EXECUTE: u64 = 1 << 2;
    /// Bits 5:3: memory type (leaf entries only).
    pub const MEMORY_TYPE_MASK: u64 = 0b111 << 3;
    /// Bit 6: ignore PAT memory type (leaf entries only).
    pub const IGNORE_PAT: u64 = 1 << 6;
    /// Bit 7: maps a page (PDE, PDPTE); reserved in PML4E/PML5E, ignored in
    /// a PTE.
    pub const PAGE_SIZE: u64 = 1 << 7;
    /// Bit 8: accessed flag (when EPTP A/D enable is 1).
    pub const ACCESSED: u64 = 1 << 8;
    /// Bit 9: dirty flag (leaf entries, when EPTP A/D enable is 1).
    pub const DIRTY: u64 = 1 << 9;
    /// Bit 10: user-mode execute access (mode-based execute control).
    pub const USER_EXECUTE: u64 = 1 << 10;
    /// Bits 51:12: physical address of the next table or of the page.
    pub const ADDRESS_MASK: u64 = ADDRESS_MASK;
    /// Bit 57: verify guest paging (HLAT, leaf entries).
    pub const VERIFY_GUEST_PAGING: u64 = 1 << 57;
    /// Bit 58: paging-write access (HLAT, leaf entries).
    pub const PAGING_WRITE_ACCESS: u64 = 1 << 58;
    /// Bit 60: supervisor shadow stack (leaf entries, when EPTP bit 7 is 1).
    pub const SUPERVISOR_SHADOW_STACK: u64 = 1 << 60;
    /// Bit 61: sub-page write permissions (leaf entries, SPP on).
    pub const SUB_PAGE_WRITE: u64 = 1 << 61;
    /// Bit 63: suppress #VE (leaf entries, EPT-violation #VE on).
    pub const SUPPRESS_VE: u64 = 1 << 63;

    /// Wraps a raw entry.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw entry.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// An entry that references the next paging structure at `table`
    /// (4-KByte aligned) with rights `perms`.
    ///
    /// # Errors
    ///
    /// [`EptEntryError`] if `table` is misaligned or wider than 52 bits.
    pub const fn table(table: u64, perms: EptPermissions) -> Result<Self, EptEntryError> {
        match Self::check_address(table, PAGE_4K) {
            Ok(()) => Ok(Self(table | perms.bits())),
            Err(error) => Err(error),
        }
    }

    /// An entry at `level` that maps the page at `page` (aligned to the
    /// level's page size) with rights `perms` and memory type `memory_type`;
    /// sets bit 7 for a PDE or PDPTE.
    ///
    /// # Errors
    ///
    /// [`EptEntryError`] if `level` cannot map a page, or `page` is
    /// misaligned or wider than 52 bits.
    pub const fn leaf(
        level: EptLevel,
        page: u64,
        perms: EptPermissions,
        memory_type: EptMemoryType,
    ) -> Result<Self, EptEntryError> {
        if !level.can_map_page() {
            return Err(EptEntryError::NotALeafLevel(level));
        }
        if let Err(error) = Self::check_address(page, level.coverage()) {
            return Err(error);
        }
        let large = if matches!(level, EptLevel::Pte) {
            0
        } else {
            Self::PAGE_SIZE
        };
        Ok(Self(
            page | perms.bits() | ((memory_type as u64) << 3) | large,
        ))
    }

    /// Checks that `address` is aligned to `alignment` and fits bits 51:0.
    const fn check_address(address: u64, alignment: u64) -> Result<(), EptEntryError> {
        if address & !((1 << 52) - 1) != 0 {
            return Err(EptEntryError::AddressTooWide { address });
        }
        if address & (alignment - 1) != 0 {
            return Err(EptEntryError::AddressNotAligned { address, alignment });
        }
        Ok(())
    }

    /// Returns the entry with bit(s) `mask` set or cleared.
    #[must_use]
    const fn with(self, mask: u64, set: bool) -> Self {
        if set {
            Self(self.0 | mask)
        } else {
            Self(self.0 & !mask)
        }
    }

    /// Returns the entry with its access rights replaced by `perms`.
    #[must_use]
    pub const fn with_permissions(self, perms: EptPermissions) -> Self {
        Self((self.0 & !EptPermissions::all().bits()) | perms.bits())
    }

    /// Returns the entry with the ignore-PAT bit (6) set or cleared.
    #[must_use]
    pub const fn with_ignore_pat(self, set: bool) -> Self {
        self.with(Self::IGNORE_PAT, set)
    }

    /// Returns the entry with the accessed flag (8) set or cleared.
    #[must_use]
    pub const fn with_accessed(self, set: bool) -> Self {
        self.with(Self::ACCESSED, set)
    }

    /// Returns the entry with the dirty flag (9) set or cleared.
    #[must_use]
    pub const fn with_dirty(self, set: bool) -> Self {
        self.with(Self::DIRTY, set)
    }

    /// Returns the entry with suppress-#VE (63) set or cleared.
    #[must_use]
    pub const fn with_suppress_ve(self, set: bool) -> Self {
        self.with(Self::SUPPRESS_VE, set)
    }

    /// Bit 0: reads allowed.
    pub const fn is_readable(self) -> bool {
        self.0 & Self::READ != 0
    }

    /// Bit 1: writes allowed.
    pub const fn is_writable(self) -> bool {
        self.0 & Self::WRITE != 0
    }

    /// Bit 2: (supervisor-mode) instruction fetches allowed.
    pub const fn is_executable(self) -> bool {
        self.0 & Self::EXECUTE != 0
    }

    /// Bit 10: user-mode instruction fetches allowed (mode-based execute).
    pub const fn is_user_executable(self) -> bool {
        self.0 & Self::USER_EXECUTE != 0
    }

    /// Bits 0, 1, 2 and 10 as permissions.
    pub const fn permissions(self) -> EptPermissions {
        EptPermissions::from_bits_truncate(self.0)
    }

    /// Bits 5:3: the raw memory type of a leaf entry.
    pub const fn memory_type_bits(self) -> u8 {
        ((self.0 & Self::MEMORY_TYPE_MASK) >> 3) as u8
    }

    /// Bits 5:3 decoded; `None` for the reserved encodings 2, 3 and 7.
    pub const fn memory_type(self) -> Option<EptMemoryType> {
        EptMemoryType::from_bits(self.memory_type_bits())
    }

    /// Bit 6: ignore the guest PAT memory type (leaf entries).
    pub const fn ignore_pat(self) -> bool {
        self.0 & Self::IGNORE_PAT != 0
    }

    /// Bit 7, raw: in a PDE or PDPTE, the entry maps a page.
    pub const fn page_size_bit(self) -> bool {
        self.0 & Self::PAGE_SIZE != 0
    }

    /// Bit 8: accessed flag.
    pub const fn accessed(self) -> bool {
        self.0 & Self::ACCESSED != 0
    }

    /// Bit 9: dirty flag (leaf entries).
    pub const fn dirty(self) -> bool {
        self.0 & Self::DIRTY != 0
    }

    /// Bit 57: verify guest paging (leaf entries).
    pub const fn verify_guest_paging(self) -> bool {
        self.0 & Self::VERIFY_GUEST_PAGING != 0
    }

    /// Bit 58: paging-write access (leaf entries).
    pub const fn paging_write_access(self) -> bool {
        self.0 & Self::PAGING_WRITE_ACCESS != 0
    }

    /// Bit 60: supervisor shadow-stack page (leaf entries).
    pub const fn supervisor_shadow_stack(self) -> bool {
        self.0 & Self::SUPERVISOR_SHADOW_STACK != 0
    }

    /// Bit 61: sub-page write permissions apply (leaf entries).
    pub const fn sub_page_write_permissions(self) -> bool {
        self.0 & Self::SUB_PAGE_WRITE != 0
    }

    /// Bit 63: suppress #VE (leaf entries).
    pub const fn suppress_ve(self) -> bool {
        self.0 & Self::SUPPRESS_VE != 0
    }

    /// Bits 51:12: the physical address field, unmasked by level.
    pub const fn address(self) -> u64 {
        self.0 & ADDRESS_MASK
    }

    /// Whether the entry is present (SDM 29.3.2): not present if bits 2:0
    /// are all 0 and, with mode-based execute control, bit 10 is also 0.
    pub const fn is_present(self, mode_based_execute: bool) -> bool {
        let mut rights = Self::READ | Self::WRITE | Self::EXECUTE;
        if mode_based_execute {
            rights |= Self::USER_EXECUTE;
        }
        self.0 & rights != 0
    }

    /// Whether the entry, at `level`, maps a page rather than referencing a
    /// table: always for a PTE, by bit 7 for a PDE or PDPTE, never above.
    pub const fn is_leaf(self, level: EptLevel) -> bool {
        match level {
            EptLevel::Pte => true,
            EptLevel::Pde | EptLevel::Pdpte => self.page_size_bit(),
            EptLevel::Pml4e | EptLevel::Pml5e => false,
        }
    }

    /// The size of the page this entry maps at `level`, or `None` if it
    /// references a table.
    pub const fn page_size(self, level: EptLevel) -> Option<u64> {
        if self.is_leaf(level) {
            Some(level.coverage())
        } else {
            None
        }
    }

    /// The physical address of the page this entry maps at `level`, aligned
    /// to the page size; `None` if it references a table.
    pub const fn page_frame(self, level: EptLevel) -> Option<u64> {
        match self.page_size(level) {
            Some(size) => Some(self.address() & !(size - 1)),
            None => None,
        }
    }

    /// The host-physical address `gpa` translates to through this leaf at
    /// `level`; `None` if the entry references a table.
    pub const fn translate(self, level: EptLevel, gpa: u64) -> Option<u64> {
        match self.page_size(level) {
            Some(size) => Some((self.address() & !(size - 1)) | (gpa & (size - 1))),
            None => None,
        }
    }

    /// The bits reserved in this entry at `level` (SDM Tables 29-1..29-6),
    /// given its leaf-ness and MAXPHYADDR.
    pub const fn reserved_mask(self, level: EptLevel, maxphyaddr: u8) -> u64 {
        let address = address_bits_beyond(maxphyaddr);
        let by_level = match level {
            // Table 29-1 (and its PML5E analogue): bits 7:3 reserved.
            EptLevel::Pml5e | EptLevel::Pml4e => 0xF8,
            // Table 29-2: a 1-GByte leaf reserves bits 29:12.
            EptLevel::Pdpte if self.page_size_bit() => 0x3FFF_F000,
            // Table 29-4: a 2-MByte leaf reserves bits 20:12.
            EptLevel::Pde if self.page_size_bit() => 0x001F_F000,
            // Tables 29-3, 29-5: non-leaf PDPTE/PDE reserve bits 6:3.
            EptLevel::Pdpte | EptLevel::Pde => 0x78,
            // Table 29-6: a PTE reserves only address bits.
            EptLevel::Pte => 0,
        };
        by_level | address
    }

    /// Whether this entry, met at `level` of a walk in `context`, causes an
    /// EPT misconfiguration, and why (SDM 29.3.3.1). Entries that are not
    /// present never do (they cause EPT violations).
    pub const fn misconfiguration(
        self,
        level: EptLevel,
        context: &EptWalkContext,
    ) -> Option<EptMisconfiguration> {
        if !self.is_present(context.mode_based_execute) {
            return None;
        }
        if self.is_writable() && !self.is_readable() {
            return Some(EptMisconfiguration::WriteWithoutRead);
        }
        // Present, not readable and not writable: an execute-only entry
        // (bit 2, or bit 10 with mode-based execute control).
        if !self.is_readable() && !context.execute_only {
            return Some(EptMisconfiguration::ExecuteOnlyNotSupported);
        }
        let large_supported = match level {
            EptLevel::Pdpte => context.pages_1g,
            EptLevel::Pde => context.pages_2m,
            EptLevel::Pte | EptLevel::Pml4e | EptLevel::Pml5e => true,
        };
        if self.page_size_bit() && !large_supported {
            return Some(EptMisconfiguration::LargePageNotSupported { level });
        }
        let reserved = self.0 & self.reserved_mask(level, context.maxphyaddr);
        if reserved != 0 {
            return Some(EptMisconfiguration::ReservedBitsSet { mask: reserved });
        }
        if self.is_leaf(level) && self.memory_type().is_none() {
            return Some(EptMisconfiguration::InvalidMemoryType(
                self.memory_type_bits(),
            ));
        }
        None
    }
}

/// Why an EPTP fails the VM-entry checks (SDM 27.2.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum EptpError {
    /// Bits 2:0 are not UC or WB, or name a type `EPT_VPID_CAP` does not
    /// report (bit 8 for UC, bit 14 for WB).
    #[error("EPT paging-structure memory type {0} is not supported")]
    UnsupportedMemoryType(u8),
    /// Bits 5:3 give a page-walk length `EPT_VPID_CAP` does not report (bit 6
    /// for 4, bit 7 for 5).
    #[error("EPT page-walk length {0} is not supported")]
    UnsupportedWalkLength(u8),
    /// Bit 6 (A/D enable) is set but `EPT_VPID_CAP` bit 21 is clear.
    #[error("EPT accessed/dirty flags are not supported")]
    AccessedDirtyNotSupported,
    /// Bit 7 (supervisor shadow-stack enforcement) is set but `EPT_VPID_CAP`
    /// bit 23 is clear.
    #[error("EPT supervisor shadow-stack control is not supported")]
    SupervisorShadowStackNotSupported,
    /// Bits 11:8 are not all 0.
    #[error("reserved EPTP bits {mask:#x} are set")]
    ReservedBitsSet {
        /// The reserved bits that are set.
        mask: u64,
    },
    /// Address bits 63:MAXPHYADDR are not all 0.
    #[error("EPTP bits {mask:#x} lie beyond the physical-address width")]
    AddressBeyondMaxPhyAddr {
        /// The offending bits.
        mask: u64,
    },
}

/// Why [`Eptp::new`] could not build an EPTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum EptpBuildError {
    /// The root table address is not 4-KByte aligned.
    #[error("EPT root {0:#x} is not 4-KByte aligned")]
    RootNotPageAligned(u64),
    /// The root table address has bits above bit 51.
    #[error("EPT root {0:#x} does not fit in 52 bits")]
    RootTooWide(u64),
    /// The walk length is not 4 or 5.
    #[error("EPT walks have 4 or 5 levels, not {0}")]
    InvalidWalkLevels(u8),
    /// The paging-structure memory type is not UC or WB, the only two an
    /// EPTP may name (SDM 27.2.1.1).
    #[error("EPT paging structures must be UC or WB, not {0:?}")]
    InvalidMemoryType(EptMemoryType),
}

/// The extended-page-table pointer, a 64-bit VM-execution control field
/// (SDM 25.6.11, Table 25-9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Eptp(u64);

impl Eptp {
    /// Bits 2:0: memory type of the EPT paging structures.
    pub const MEMORY_TYPE_MASK: u64 = 0b111;
    /// Bits 5:3: page-walk length minus 1.
    pub const WALK_LENGTH_MASK: u64 = 0b111 << 3;
    /// Bit 6: enable accessed and dirty flags.
    pub const ACCESSED_DIRTY: u64 = 1 << 6;
    /// Bit 7: enforce access rights for supervisor shadow-stack pages.
    pub const SUPERVISOR_SHADOW_STACK: u64 = 1 << 7;
    /// Bits 11:8: reserved, must be 0.
    pub const RESERVED_MASK: u64 = 0xF00;
    /// Bits 51:12: physical address of the PML4 (or PML5) table.
    pub const ADDRESS_MASK: u64 = ADDRESS_MASK;

    /// Wraps a raw EPTP.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw EPTP.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// An EPTP for the root table at `root` (4-KByte aligned) with a walk of
    /// `levels` (4 or 5) and A/D flags enabled or not.
    ///
    /// # Errors
    ///
    /// [`EptpBuildError`] for a misaligned or too wide root, a walk length
    /// other than 4 or 5, or a memory type other than UC or WB.
    pub const fn new(
        root: u64,
        memory_type: EptMemoryType,
        levels: u8,
        accessed_dirty: bool,
    ) -> Result<Self, EptpBuildError> {
        if root & !ADDRESS_MASK & !(PAGE_4K - 1) != 0 {
            return Err(EptpBuildError::RootTooWide(root));
        }
        if root & (PAGE_4K - 1) != 0 {
            return Err(EptpBuildError::RootNotPageAligned(root));
        }
        if levels != 4 && levels != 5 {
            return Err(EptpBuildError::InvalidWalkLevels(levels));
        }
        if !matches!(
            memory_type,
            EptMemoryType::Uncacheable | EptMemoryType::WriteBack
        ) {
            return Err(EptpBuildError::InvalidMemoryType(memory_type));
        }
        let ad = if accessed_dirty {
            Self::ACCESSED_DIRTY
        } else {
            0
        };
        Ok(Self(
            root | memory_type as u64 | (((levels - 1) as u64) << 3) | ad,
        ))
    }

    /// Bits 2:0, raw.
    pub const fn memory_type_bits(self) -> u8 {
        (self.0 & Self::MEMORY_TYPE_MASK) as u8
    }

    /// Bits 2:0 decoded; `None` for a reserved encoding.
    pub const fn memory_type(self) -> Option<EptMemoryType> {
        EptMemoryType::from_bits(self.memory_type_bits())
    }

    /// The page-walk length: bits 5:3 plus 1.
    pub const fn walk_levels(self) -> u8 {
        ((self.0 & Self::WALK_LENGTH_MASK) >> 3) as u8 + 1
    }

    /// The level of the root table's entries (PML4E for a 4-level walk,
    /// PML5E for 5), or `None` for another walk length.
    pub const fn root_level(self) -> Option<EptLevel> {
        match self.walk_levels() {
            4 => Some(EptLevel::Pml4e),
            5 => Some(EptLevel::Pml5e),
            _ => None,
        }
    }

    /// Bit 6: accessed and dirty flags enabled.
    pub const fn accessed_dirty_enabled(self) -> bool {
        self.0 & Self::ACCESSED_DIRTY != 0
    }

    /// Bit 7: supervisor shadow-stack access rights enforced.
    pub const fn supervisor_shadow_stack(self) -> bool {
        self.0 & Self::SUPERVISOR_SHADOW_STACK != 0
    }

    /// Bits 51:12: the root table address. Single-context INVEPT and TLB
    /// tagging key on these bits alone (SDM 29.4.1), so EPTPs that differ
    /// only in bits 11:0 share cached translations.
    pub const fn root_address(self) -> u64 {
        self.0 & ADDRESS_MASK
    }

    /// Runs the EPTP checks of VM entry (SDM 27.2.1.1) against `caps` and
    /// the physical-address width `maxphyaddr`.
    ///
    /// # Errors
    ///
    /// The first failing rule, as an [`EptpError`].
    pub const fn validate(self, caps: &VmxCapabilities, maxphyaddr: u8) -> Result<(), EptpError> {
        let cap = caps.ept_vpid;
        let memory_type = self.memory_type_bits();
        let memory_type_ok = match EptMemoryType::from_bits(memory_type) {
            Some(EptMemoryType::Uncacheable) => cap.memory_type_uc(),
            Some(EptMemoryType::WriteBack) => cap.memory_type_wb(),
            _ => false,
        };
        if !memory_type_ok {
            return Err(EptpError::UnsupportedMemoryType(memory_type));
        }
        let levels = self.walk_levels();
        let walk_ok = match levels {
            4 => cap.page_walk_length_4(),
            5 => cap.page_walk_length_5(),
            _ => false,
        };
        if !walk_ok {
            return Err(EptpError::UnsupportedWalkLength(levels));
        }
        if self.accessed_dirty_enabled() && !cap.accessed_dirty() {
            return Err(EptpError::AccessedDirtyNotSupported);
        }
        if self.supervisor_shadow_stack() && !cap.supervisor_shadow_stack() {
            return Err(EptpError::SupervisorShadowStackNotSupported);
        }
        let reserved = self.0 & Self::RESERVED_MASK;
        if reserved != 0 {
            return Err(EptpError::ReservedBitsSet { mask: reserved });
        }
        // Bits 63:MAXPHYADDR of the EPTP must be 0 (bits 63:52 always).
        let beyond = self.0 & (address_bits_beyond(maxphyaddr) | !((1 << 52) - 1));
        if beyond != 0 {
            return Err(EptpError::AddressBeyondMaxPhyAddr { mask: beyond });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_bits_beyond_width() {
        assert_eq!(address_bits_beyond(52), 0);
        assert_eq!(address_bits_beyond(200), 0);
        assert_eq!(address_bits_beyond(48), 0x000F_0000_0000_0000);
        assert_eq!(address_bits_beyond(0), ADDRESS_MASK);
    }

    #[test]
    fn level_geometry() {
        assert_eq!(EptLevel::Pte.shift(), 12);
        assert_eq!(EptLevel::Pde.coverage(), 2 << 20);
        assert_eq!(EptLevel::Pdpte.coverage(), 1 << 30);
        assert_eq!(EptLevel::Pml4e.shift(), 39);
        assert_eq!(EptLevel::Pml5e.shift(), 48);
        assert_eq!(EptLevel::Pml4e.index_of(0x0000_8000_0000_0000 - 1), 0xFF);
        assert_eq!(EptLevel::Pte.next_lower(), None);
        assert_eq!(EptLevel::Pml5e.next_lower(), Some(EptLevel::Pml4e));
    }

    #[test]
    fn translate_through_large_leaf() {
        let entry = EptEntry::leaf(
            EptLevel::Pde,
            0x4020_0000,
            EptPermissions::READ_WRITE_EXECUTE,
            EptMemoryType::WriteBack,
        )
        .expect("aligned 2M page");
        assert_eq!(
            entry.translate(EptLevel::Pde, 0x1234_5678),
            Some(0x4034_5678)
        );
        assert_eq!(entry.translate(EptLevel::Pml4e, 0x1234_5678), None);
    }
}
