//! Checks on the guest-state area (SDM Vol. 3C 27.3.1).
//!
//! [`check_guest_state`] runs the checks of SDM 27.3.1.1 to 27.3.1.6 in the
//! order the SDM lists them and returns the first that fails as a
//! [`GuestCheck`] naming the rule. A processor reports such a failure as a
//! VM exit with basic exit reason 33 ("VM-entry failure due to invalid guest
//! state") and the exit qualification of [`GuestCheck::exit_qualification`]
//! (SDM 27.8).
//!
//! Within a subsection the SDM does not promise an order, so "first failed
//! check" follows the order of the SDM text: that is what hv reports to L1.
//!
//! # Choices where the SDM depends on CPUID
//!
//! The checks see only the VMCS, the capability MSRs and [`EntryContext`],
//! not CPUID. Where a reserved-bit set depends on CPUID, the bits checked
//! are those reserved on every processor:
//!
//! - `IA32_DEBUGCTL` (load debug controls): bits 5:2 and 63:16 must be 0.
//!   Bit 2 (bus-lock detection) is treated as reserved, as on a processor
//!   that does not enumerate it (Bochs, and KVM without host support); bits
//!   15:6 (TR, BTS, BTINT, `BTS_OFF_*`, `FREEZE_*`, `RTM_DEBUG`) are accepted.
//! - `IA32_PERF_GLOBAL_CTRL`: bits 63:49 must be 0 (bit 48 enables
//!   `PERF_METRICS`). Enable bits for counters CPUID leaf 0AH does not
//!   enumerate are not checked.
//! - `IA32_RTIT_CTL`: bits 18, 23, 30:28, 54:48 and 63:57 must be 0. Bits for
//!   Intel PT features CPUID leaf 14H does not enumerate are not checked.
//! - `IA32_EFER`: only SCE (0), LME (8), LMA (10) and NXE (11) may be 1.
//! - `IA32_BNDCFGS`: bits 11:2 must be 0 (all the MSR's reserved bits, not
//!   only 4:2) and bits 63:12 must be canonical.
//! - `IA32_S_CET`: canonical (as the SDM states) and bits 9:6 (reserved in
//!   the MSR) 0.
//! - `IA32_LBR_CTL`: only bits 3:0 and 22:16 may be 1.
//! - Pending debug exceptions: bits 10:4, 13, 15 and 63:17 must be 0; bit
//!   11 is BLD (bus-lock detected) in current SDMs, which older editions
//!   reserved.
//!
//! # Checks not performed here
//!
//! - VMCS link pointer: the revision identifier and shadow-VMCS bit in the
//!   4 bytes it references live in memory, not in the VMCS; the SMM rule
//!   about the executive-VMCS pointer needs SMM state. (The rule that it
//!   must not be the current-VMCS pointer is checked, against
//!   [`EntryContext::current_vmcs_pointer`].)
//! - PDPTEs when "enable EPT" is 0: VM entry loads them from guest memory at
//!   CR3 (SDM 27.3.1.6); the caller must load and check them.
//! - SMM: the processor is assumed not to be in SMM (hv never enters VMX
//!   non-root operation from SMM), so blocking by SMI must be 0.
//! - CPUID-dependent rules: enclave interruption needs SGX, a pending RTM
//!   debug exception needs RTM; only their VMCS-internal parts are checked.
//! - "load `IA32_FRED`" (FRED state) and "load `IA32_SPEC_CTRL`": not checked.

use super::EntryContext;
use super::host::PERF_GLOBAL_CTRL_RESERVED;
use super::util::{
    EffectiveControls, NO_LINK_POINTER, cet_without_write_protect, cr3_within_physical_width,
    display_as_name, read,
};
use crate::capabilities::VmxCapabilities;
use crate::controls::{EntryControls, ExceptionVector, PinBasedControls};
use crate::interruption::{
    ActivityState, Interruptibility, InterruptionInfo, InterruptionType, PendingDebugExceptions,
};
use crate::registers::{
    Cet, Cr0, Cr4, DebugCtl, Efer, InvalidPatEntry, Rflags, first_invalid_pat_entry,
};
use crate::vmcs::{VmcsField, VmcsRead};

/// `IA32_DEBUGCTL` bits treated as reserved: 5:3 and 63:16 (reserved in the
/// MSR) and bit 2 (BLD; see the module docs).
const DEBUGCTL_RESERVED: u64 = !DebugCtl::all().bits() | DebugCtl::BLD.bits();
/// `IA32_BNDCFGS` bits 11:2 (SDM Vol. 1 17.3.3).
const BNDCFGS_RESERVED: u64 = 0xffc;
/// `IA32_RTIT_CTL` bits 18, 23, 30:28, 54:48, 63:57 (SDM Vol. 3C Table 33-6).
const RTIT_CTL_RESERVED: u64 = (1 << 18) | (1 << 23) | (0x7 << 28) | (0x7f << 48) | (0x7f << 57);
/// `IA32_LBR_CTL` defined bits: 3:0 and 22:16 (SDM Vol. 3B 19.1.2.2).
const LBR_CTL_DEFINED: u64 = 0xf | (0x7f << 16);
/// PDPTE bits 2:1 and 8:5 (SDM Vol. 3A 4.4.1, Table 4-8).
const PDPTE_RESERVED_LOW: u64 = 0x6 | 0x1e0;
const PDPTE_PRESENT: u64 = 1;

/// A segment register of the guest-state area.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentRegister {
    /// ES.
    Es,
    /// CS.
    Cs,
    /// SS.
    Ss,
    /// DS.
    Ds,
    /// FS.
    Fs,
    /// GS.
    Gs,
    /// LDTR.
    Ldtr,
    /// TR.
    Tr,
}

impl SegmentRegister {
    /// The register's name as the SDM writes it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Es => "ES",
            Self::Cs => "CS",
            Self::Ss => "SS",
            Self::Ds => "DS",
            Self::Fs => "FS",
            Self::Gs => "GS",
            Self::Ldtr => "LDTR",
            Self::Tr => "TR",
        }
    }

    /// The selector, base, limit and access-rights fields of the register.
    pub const fn fields(self) -> [VmcsField; 4] {
        match self {
            Self::Es => [
                VmcsField::GuestEsSelector,
                VmcsField::GuestEsBase,
                VmcsField::GuestEsLimit,
                VmcsField::GuestEsAccessRights,
            ],
            Self::Cs => [
                VmcsField::GuestCsSelector,
                VmcsField::GuestCsBase,
                VmcsField::GuestCsLimit,
                VmcsField::GuestCsAccessRights,
            ],
            Self::Ss => [
                VmcsField::GuestSsSelector,
                VmcsField::GuestSsBase,
                VmcsField::GuestSsLimit,
                VmcsField::GuestSsAccessRights,
            ],
            Self::Ds => [
                VmcsField::GuestDsSelector,
                VmcsField::GuestDsBase,
                VmcsField::GuestDsLimit,
                VmcsField::GuestDsAccessRights,
            ],
            Self::Fs => [
                VmcsField::GuestFsSelector,
                VmcsField::GuestFsBase,
                VmcsField::GuestFsLimit,
                VmcsField::GuestFsAccessRights,
            ],
            Self::Gs => [
                VmcsField::GuestGsSelector,
                VmcsField::GuestGsBase,
                VmcsField::GuestGsLimit,
                VmcsField::GuestGsAccessRights,
            ],
            Self::Ldtr => [
                VmcsField::GuestLdtrSelector,
                VmcsField::GuestLdtrBase,
                VmcsField::GuestLdtrLimit,
                VmcsField::GuestLdtrAccessRights,
            ],
            Self::Tr => [
                VmcsField::GuestTrSelector,
                VmcsField::GuestTrBase,
                VmcsField::GuestTrLimit,
                VmcsField::GuestTrAccessRights,
            ],
        }
    }
}

/// CS, SS, DS, ES, FS, GS in the order SDM 27.3.1.2 names them.
const CODE_AND_DATA_SEGMENTS: [SegmentRegister; 6] = [
    SegmentRegister::Cs,
    SegmentRegister::Ss,
    SegmentRegister::Ds,
    SegmentRegister::Es,
    SegmentRegister::Fs,
    SegmentRegister::Gs,
];

/// DS, ES, FS, GS: the registers with the "usable data segment" rules.
const DATA_SEGMENTS: [SegmentRegister; 4] = [
    SegmentRegister::Ds,
    SegmentRegister::Es,
    SegmentRegister::Fs,
    SegmentRegister::Gs,
];

/// The format of a guest segment's access-rights field (SDM 25.4.1,
/// Table 25-2): the descriptor's attribute bits plus "unusable" (bit 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SegmentAccessRights(u32);

impl SegmentAccessRights {
    /// Bits 11:8 and 31:17 are reserved.
    const RESERVED: u32 = 0xf00 | 0xfffe_0000;
    /// Bit 16: the segment is unusable (SDM 25.4.1).
    pub const UNUSABLE: u32 = 1 << 16;

    /// Wraps a raw access-rights field.
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw field.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Bits 3:0: segment type.
    pub const fn segment_type(self) -> u8 {
        (self.0 & 0xf) as u8
    }

    /// Bit 4 (S): 1 for a code or data segment, 0 for a system segment.
    pub const fn is_code_or_data(self) -> bool {
        self.0 & (1 << 4) != 0
    }

    /// Bits 6:5: descriptor privilege level.
    pub const fn dpl(self) -> u8 {
        ((self.0 >> 5) & 3) as u8
    }

    /// Bit 7 (P): segment present.
    pub const fn is_present(self) -> bool {
        self.0 & (1 << 7) != 0
    }

    /// Bit 13 (L): 64-bit code segment.
    pub const fn is_long_mode(self) -> bool {
        self.0 & (1 << 13) != 0
    }

    /// Bit 14 (D/B): default operation size 32 bits.
    pub const fn is_default_big(self) -> bool {
        self.0 & (1 << 14) != 0
    }

    /// Bit 15 (G): limit counted in 4-KByte units.
    pub const fn is_page_granular(self) -> bool {
        self.0 & (1 << 15) != 0
    }

    /// Bit 16: segment unusable (SDM 25.4.1).
    pub const fn is_unusable(self) -> bool {
        self.0 & Self::UNUSABLE != 0
    }

    /// The reserved bits (11:8 and 31:17) that are set.
    pub const fn reserved_bits(self) -> u32 {
        self.0 & Self::RESERVED
    }
}

/// GDTR or IDTR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DescriptorTable {
    /// The global descriptor table register.
    Gdtr,
    /// The interrupt descriptor table register.
    Idtr,
}

impl DescriptorTable {
    /// The register's name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Gdtr => "GDTR",
            Self::Idtr => "IDTR",
        }
    }
}

display_as_name!(SegmentRegister, DescriptorTable);

/// The guest-state check that failed (SDM 27.3.1), one variant per rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GuestCheck {
    // ---- 27.3.1.1: control registers, debug registers and MSRs ----
    /// CR0 sets a bit to a value not supported in VMX operation
    /// (`IA32_VMX_CR0_FIXED0/1`; PE and PG free with "unrestricted guest",
    /// CD and NW never checked).
    #[error("guest CR0 {cr0:#x}: bit {bit} must be {} in VMX operation", u8::from(*.must_be_one))]
    Cr0FixedBit {
        /// The CR0 field.
        cr0: u64,
        /// The offending bit.
        bit: u32,
        /// Whether the bit must be 1 (else it must be 0).
        must_be_one: bool,
    },
    /// CR0.PG is 1 but CR0.PE is 0 (CVE-2023-30456).
    #[error("guest CR0 {cr0:#x}: PG (bit 31) is 1, so PE (bit 0) must also be 1")]
    Cr0PagingWithoutProtection {
        /// The CR0 field.
        cr0: u64,
    },
    /// CR4 sets a bit to a value not supported in VMX operation
    /// (`IA32_VMX_CR4_FIXED0/1`).
    #[error("guest CR4 {cr4:#x}: bit {bit} must be {} in VMX operation", u8::from(*.must_be_one))]
    Cr4FixedBit {
        /// The CR4 field.
        cr4: u64,
        /// The offending bit.
        bit: u32,
        /// Whether the bit must be 1 (else it must be 0).
        must_be_one: bool,
    },
    /// CR4.CET is 1 but CR0.WP is 0.
    #[error("guest CR4.CET (bit 23) is 1, so CR0.WP (bit 16) must be 1 (CR0 {cr0:#x})")]
    CetWithoutWriteProtect {
        /// The CR0 field.
        cr0: u64,
    },
    /// "load debug controls" is 1 and `IA32_DEBUGCTL` sets a reserved bit.
    #[error("guest IA32_DEBUGCTL {debugctl:#x} sets reserved bits (5:2, 63:16)")]
    DebugCtlReservedBits {
        /// The `IA32_DEBUGCTL` field.
        debugctl: u64,
    },
    /// "IA-32e mode guest" is 1 but CR0.PG is 0.
    #[error("\"IA-32e mode guest\" is 1, so guest CR0.PG must be 1 (CR0 {cr0:#x})")]
    Ia32eModeWithoutPaging {
        /// The CR0 field.
        cr0: u64,
    },
    /// "IA-32e mode guest" is 1 but CR4.PAE is 0 (CVE-2023-30456).
    #[error("\"IA-32e mode guest\" is 1, so guest CR4.PAE must be 1 (CR4 {cr4:#x})")]
    Ia32eModeWithoutPae {
        /// The CR4 field.
        cr4: u64,
    },
    /// "IA-32e mode guest" is 0 but CR4.PCIDE is 1.
    #[error("\"IA-32e mode guest\" is 0, so guest CR4.PCIDE must be 0 (CR4 {cr4:#x})")]
    PcideOutsideIa32eMode {
        /// The CR4 field.
        cr4: u64,
    },
    /// CR3 sets bits 63:52 or bits of 51:32 beyond MAXPHYADDR.
    #[error("guest CR3 {cr3:#x} sets bits beyond the physical-address width")]
    Cr3BeyondPhysicalWidth {
        /// The CR3 field.
        cr3: u64,
    },
    /// "load debug controls" is 1 and DR7 bits 63:32 are not 0.
    #[error("guest DR7 {dr7:#x}: bits 63:32 must be 0")]
    Dr7HighBitsSet {
        /// The DR7 field.
        dr7: u64,
    },
    /// `IA32_SYSENTER_ESP` is not canonical.
    #[error("guest IA32_SYSENTER_ESP {address:#x} is not canonical")]
    SysenterEspNotCanonical {
        /// The field.
        address: u64,
    },
    /// `IA32_SYSENTER_EIP` is not canonical.
    #[error("guest IA32_SYSENTER_EIP {address:#x} is not canonical")]
    SysenterEipNotCanonical {
        /// The field.
        address: u64,
    },
    /// "load CET state" is 1 and `IA32_S_CET` is not canonical.
    #[error("guest IA32_S_CET {value:#x} is not canonical")]
    SCetNotCanonical {
        /// The field.
        value: u64,
    },
    /// "load CET state" is 1 and `IA32_INTERRUPT_SSP_TABLE_ADDR` is not
    /// canonical.
    #[error("guest IA32_INTERRUPT_SSP_TABLE_ADDR {address:#x} is not canonical")]
    InterruptSspTableNotCanonical {
        /// The field.
        address: u64,
    },
    /// "load `IA32_PERF_GLOBAL_CTRL`" is 1 and the field sets reserved bits.
    #[error("guest IA32_PERF_GLOBAL_CTRL {value:#x} sets reserved bits (63:49)")]
    PerfGlobalCtrlReservedBits {
        /// The field.
        value: u64,
    },
    /// "load `IA32_PAT`" is 1 and a PAT entry is not a memory type (0, 1, 4,
    /// 5, 6 or 7).
    #[error(
        "guest IA32_PAT {pat:#x}: entry {entry} is {memory_type:#x}, not one of 0, 1, 4, 5, 6, 7"
    )]
    PatInvalidMemoryType {
        /// The field.
        pat: u64,
        /// The entry (byte) index, 0-7.
        entry: u8,
        /// The entry's value.
        memory_type: u8,
    },
    /// "load `IA32_EFER`" is 1 and `IA32_EFER` sets reserved bits.
    #[error("guest IA32_EFER {efer:#x} sets reserved bits")]
    EferReservedBits {
        /// The field.
        efer: u64,
    },
    /// "load `IA32_EFER`" is 1 and EFER.LMA differs from "IA-32e mode guest".
    #[error(
        "guest IA32_EFER.LMA must equal \"IA-32e mode guest\" ({ia32e_mode_guest}); EFER {efer:#x}"
    )]
    EferLmaMismatch {
        /// The field.
        efer: u64,
        /// The "IA-32e mode guest" VM-entry control.
        ia32e_mode_guest: bool,
    },
    /// "load `IA32_EFER`" is 1, CR0.PG is 1 and EFER.LME differs from
    /// EFER.LMA.
    #[error("guest CR0.PG is 1, so IA32_EFER.LME must equal LMA; EFER {efer:#x}")]
    EferLmeMismatch {
        /// The field.
        efer: u64,
    },
    /// "load `IA32_BNDCFGS`" is 1 and bits 11:2 are not 0.
    #[error("guest IA32_BNDCFGS {value:#x} sets reserved bits (11:2)")]
    BndcfgsReservedBits {
        /// The field.
        value: u64,
    },
    /// "load `IA32_BNDCFGS`" is 1 and the base in bits 63:12 is not canonical.
    #[error("guest IA32_BNDCFGS {value:#x}: the base address (bits 63:12) is not canonical")]
    BndcfgsBaseNotCanonical {
        /// The field.
        value: u64,
    },
    /// "load `IA32_RTIT_CTL`" is 1 and the field sets reserved bits.
    #[error("guest IA32_RTIT_CTL {value:#x} sets reserved bits")]
    RtitCtlReservedBits {
        /// The field.
        value: u64,
    },
    /// "load CET state" is 1 and `IA32_S_CET` sets reserved bits (9:6).
    #[error("guest IA32_S_CET {value:#x} sets reserved bits (9:6)")]
    SCetReservedBits {
        /// The field.
        value: u64,
    },
    /// "load CET state" is 1 and `IA32_S_CET` sets both SUPPRESS (bit 10)
    /// and TRACKER (bit 11), as the host-state check also refuses (KVM
    /// applies the same rule to both).
    #[error("guest IA32_S_CET {value:#x} must not set both SUPPRESS and TRACKER")]
    SCetSuppressAndTracker {
        /// The field.
        value: u64,
    },
    /// "load guest `IA32_LBR_CTL`" is 1 and the field sets reserved bits.
    #[error("guest IA32_LBR_CTL {value:#x} sets reserved bits")]
    LbrCtlReservedBits {
        /// The field.
        value: u64,
    },
    /// "load PKRS" is 1 and `IA32_PKRS` bits 63:32 are not 0.
    #[error("guest IA32_PKRS {value:#x}: bits 63:32 must be 0")]
    PkrsReservedBits {
        /// The field.
        value: u64,
    },
    /// "load UINV" is 1 and guest UINV bits 15:8 are not 0.
    #[error("guest UINV {value:#x}: bits 15:8 must be 0")]
    UinvReservedBits {
        /// The field.
        value: u64,
    },

    // ---- 27.3.1.2: segment registers ----
    /// The TI flag of the TR selector is 1.
    #[error("guest TR selector {selector:#x}: TI (bit 2) must be 0")]
    TrSelectorTableIndicator {
        /// The selector.
        selector: u16,
    },
    /// LDTR is usable and the TI flag of its selector is 1.
    #[error("guest LDTR selector {selector:#x}: TI (bit 2) must be 0 when LDTR is usable")]
    LdtrSelectorTableIndicator {
        /// The selector.
        selector: u16,
    },
    /// Outside virtual-8086 mode and without "unrestricted guest", the SS
    /// selector's RPL differs from the CS selector's.
    #[error("guest SS selector RPL ({ss_rpl}) must equal CS selector RPL ({cs_rpl})")]
    SsRplNotCsRpl {
        /// RPL of SS.
        ss_rpl: u8,
        /// RPL of CS.
        cs_rpl: u8,
    },
    /// Virtual-8086 mode: the base is not the selector shifted left by 4.
    #[error(
        "guest {segment} base {base:#x} must be selector {selector:#x} << 4 in virtual-8086 mode"
    )]
    V8086BaseNotSelectorTimes16 {
        /// The register.
        segment: SegmentRegister,
        /// The selector.
        selector: u16,
        /// The base.
        base: u64,
    },
    /// A base that must be canonical (TR, FS, GS, usable LDTR) is not.
    #[error("guest {segment} base {base:#x} is not canonical")]
    BaseNotCanonical {
        /// The register.
        segment: SegmentRegister,
        /// The base.
        base: u64,
    },
    /// The base of CS, or of a usable SS, DS or ES, sets bits 63:32.
    #[error("guest {segment} base {base:#x}: bits 63:32 must be 0")]
    BaseHighBitsSet {
        /// The register.
        segment: SegmentRegister,
        /// The base.
        base: u64,
    },
    /// Virtual-8086 mode: the limit is not 0xffff.
    #[error("guest {segment} limit {limit:#x} must be 0xffff in virtual-8086 mode")]
    V8086LimitNotFfff {
        /// The register.
        segment: SegmentRegister,
        /// The limit.
        limit: u32,
    },
    /// Virtual-8086 mode: the access rights are not 0xf3.
    #[error("guest {segment} access rights {access_rights:#x} must be 0xf3 in virtual-8086 mode")]
    V8086AccessRightsNotF3 {
        /// The register.
        segment: SegmentRegister,
        /// The access-rights field.
        access_rights: u32,
    },
    /// CS type is not 9, 11, 13 or 15 (or 3 with "unrestricted guest").
    #[error(
        "guest CS type {segment_type} must be 9, 11, 13 or 15 (or 3 with \"unrestricted guest\")"
    )]
    CsTypeInvalid {
        /// The type.
        segment_type: u8,
    },
    /// SS is usable and its type is not 3 or 7.
    #[error("guest SS type {segment_type} must be 3 or 7 when SS is usable")]
    SsTypeInvalid {
        /// The type.
        segment_type: u8,
    },
    /// A usable DS, ES, FS or GS is not accessed (type bit 0).
    #[error("guest {segment} type {segment_type}: the accessed bit must be 1 when usable")]
    DataSegmentNotAccessed {
        /// The register.
        segment: SegmentRegister,
        /// The type.
        segment_type: u8,
    },
    /// A usable DS, ES, FS or GS is an unreadable code segment.
    #[error("guest {segment} type {segment_type}: a code segment must be readable")]
    CodeSegmentNotReadable {
        /// The register.
        segment: SegmentRegister,
        /// The type.
        segment_type: u8,
    },
    /// CS, or a usable SS, DS, ES, FS or GS, has S = 0.
    #[error("guest {segment}: S (descriptor type) must be 1")]
    SegmentNotCodeOrData {
        /// The register.
        segment: SegmentRegister,
    },
    /// CS type is 3 and its DPL is not 0.
    #[error("guest CS type 3: DPL ({dpl}) must be 0")]
    CsDataTypeDplNotZero {
        /// CS DPL.
        dpl: u8,
    },
    /// CS is non-conforming code (type 9 or 11) and its DPL differs from
    /// SS.DPL.
    #[error("guest CS is non-conforming: DPL ({cs_dpl}) must equal SS DPL ({ss_dpl})")]
    CsDplNotSsDpl {
        /// CS DPL.
        cs_dpl: u8,
        /// SS DPL.
        ss_dpl: u8,
    },
    /// CS is conforming code (type 13 or 15) and its DPL exceeds SS.DPL.
    #[error("guest CS is conforming: DPL ({cs_dpl}) must not exceed SS DPL ({ss_dpl})")]
    CsDplAboveSsDpl {
        /// CS DPL.
        cs_dpl: u8,
        /// SS DPL.
        ss_dpl: u8,
    },
    /// Without "unrestricted guest", SS.DPL differs from the SS selector's
    /// RPL.
    #[error("guest SS DPL ({dpl}) must equal SS selector RPL ({rpl})")]
    SsDplNotRpl {
        /// SS DPL.
        dpl: u8,
        /// SS RPL.
        rpl: u8,
    },
    /// CS type is 3 or CR0.PE is 0, and SS.DPL is not 0.
    #[error("guest SS DPL ({dpl}) must be 0 when CS type is 3 or CR0.PE is 0")]
    SsDplNotZero {
        /// SS DPL.
        dpl: u8,
    },
    /// Without "unrestricted guest", a usable DS, ES, FS or GS of type 0-11
    /// has DPL below its selector's RPL.
    #[error("guest {segment} DPL ({dpl}) must not be less than its RPL ({rpl})")]
    DataSegmentDplBelowRpl {
        /// The register.
        segment: SegmentRegister,
        /// DPL.
        dpl: u8,
        /// RPL.
        rpl: u8,
    },
    /// CS, a usable SS/DS/ES/FS/GS/LDTR, or TR is not present.
    #[error("guest {segment}: P (present) must be 1")]
    SegmentNotPresent {
        /// The register.
        segment: SegmentRegister,
    },
    /// Access-rights bits 11:8 or 31:17 are set.
    #[error("guest {segment} access rights {access_rights:#x} set reserved bits (11:8, 31:17)")]
    AccessRightsReservedBits {
        /// The register.
        segment: SegmentRegister,
        /// The access-rights field.
        access_rights: u32,
    },
    /// "IA-32e mode guest" is 1, CS.L is 1 and CS.D is 1.
    #[error("guest CS: D/B must be 0 when L is 1 in IA-32e mode")]
    CsLongModeWithDefaultBig,
    /// Limit bits 11:0 are not all 1 but G is 1.
    #[error("guest {segment} limit {limit:#x}: bits 11:0 are not all 1, so G must be 0")]
    LimitRequiresByteGranularity {
        /// The register.
        segment: SegmentRegister,
        /// The limit.
        limit: u32,
    },
    /// Limit bits 31:20 are not all 0 but G is 0.
    #[error("guest {segment} limit {limit:#x}: bits 31:20 are not all 0, so G must be 1")]
    LimitRequiresPageGranularity {
        /// The register.
        segment: SegmentRegister,
        /// The limit.
        limit: u32,
    },
    /// TR type is not 11 (IA-32e mode guest) or not 3/11 (otherwise).
    #[error(
        "guest TR type {segment_type} must be 11 (busy 64-bit TSS) in IA-32e mode, else 3 or 11"
    )]
    TrTypeInvalid {
        /// The type.
        segment_type: u8,
        /// The "IA-32e mode guest" VM-entry control.
        ia32e_mode_guest: bool,
    },
    /// TR or a usable LDTR has S = 1.
    #[error("guest {segment}: S (descriptor type) must be 0")]
    SystemSegmentNotSystem {
        /// The register.
        segment: SegmentRegister,
    },
    /// TR is marked unusable.
    #[error("guest TR must be usable (access-rights bit 16 must be 0)")]
    TrUnusable,
    /// LDTR is usable and its type is not 2.
    #[error("guest LDTR type {segment_type} must be 2 (LDT)")]
    LdtrTypeInvalid {
        /// The type.
        segment_type: u8,
    },

    // ---- 27.3.1.3: GDTR and IDTR ----
    /// The GDTR or IDTR base is not canonical.
    #[error("guest {table} base {base:#x} is not canonical")]
    DescriptorTableBaseNotCanonical {
        /// GDTR or IDTR.
        table: DescriptorTable,
        /// The base.
        base: u64,
    },
    /// GDTR or IDTR limit bits 31:16 are not 0.
    #[error("guest {table} limit {limit:#x}: bits 31:16 must be 0")]
    DescriptorTableLimitTooLarge {
        /// GDTR or IDTR.
        table: DescriptorTable,
        /// The limit.
        limit: u32,
    },

    // ---- 27.3.1.4: RIP, RFLAGS and SSP ----
    /// RIP bits 63:32 are not 0 while the guest is not in 64-bit mode
    /// ("IA-32e mode guest" = 0 or CS.L = 0).
    #[error("guest RIP {rip:#x}: bits 63:32 must be 0 outside 64-bit mode")]
    RipHighBitsSet {
        /// The RIP field.
        rip: u64,
    },
    /// In 64-bit mode, RIP bits 63:N (N = linear-address width) are not all
    /// identical.
    #[error("guest RIP {rip:#x}: bits 63:{linear_address_width} must be identical")]
    RipBeyondLinearWidth {
        /// The RIP field.
        rip: u64,
        /// N, the linear-address width.
        linear_address_width: u8,
    },
    /// RFLAGS sets a reserved bit (63:22, 15, 5, 3) or clears bit 1.
    #[error("guest RFLAGS {rflags:#x}: bits 63:22, 15, 5 and 3 must be 0 and bit 1 must be 1")]
    RflagsReservedBits {
        /// The RFLAGS field.
        rflags: u64,
    },
    /// RFLAGS.VM is 1 with "IA-32e mode guest" = 1.
    #[error("guest RFLAGS.VM must be 0 when \"IA-32e mode guest\" is 1")]
    V8086InIa32eMode,
    /// RFLAGS.VM is 1 with CR0.PE = 0.
    #[error("guest RFLAGS.VM must be 0 when CR0.PE is 0")]
    V8086WithoutProtection,
    /// An external interrupt is injected while RFLAGS.IF is 0.
    #[error("guest RFLAGS.IF must be 1 when injecting an external interrupt")]
    ExternalInterruptWithInterruptsDisabled,
    /// "load CET state" is 1 and SSP bits 1:0 are not 0.
    #[error("guest SSP {ssp:#x}: bits 1:0 must be 0")]
    SspMisaligned {
        /// The SSP field.
        ssp: u64,
    },
    /// "load CET state" is 1 and SSP bits 63:N (N = linear-address width)
    /// are not all identical.
    #[error("guest SSP {ssp:#x}: bits 63:{linear_address_width} must be identical")]
    SspBeyondLinearWidth {
        /// The SSP field.
        ssp: u64,
        /// N, the linear-address width.
        linear_address_width: u8,
    },

    // ---- 27.3.1.5: non-register state ----
    /// The activity state is not 0-3.
    #[error("guest activity state {state} is not 0-3")]
    ActivityStateInvalid {
        /// The activity-state field.
        state: u32,
    },
    /// The activity state is one `IA32_VMX_MISC` bits 8:6 do not report.
    #[error("guest activity state {state} is not supported (IA32_VMX_MISC bits 8:6)")]
    ActivityStateUnsupported {
        /// The activity-state field.
        state: u32,
    },
    /// HLT with SS.DPL not 0.
    #[error("guest activity state HLT needs SS DPL 0 (SS DPL is {ss_dpl})")]
    HaltWithNonZeroSsDpl {
        /// SS DPL.
        ss_dpl: u8,
    },
    /// Blocking by STI or MOV SS with an activity state other than active.
    #[error("guest activity state {state} must be active when blocking by STI or MOV SS")]
    BlockingWhileNotActive {
        /// The activity-state field.
        state: u32,
    },
    /// The injected event would be blocked in the activity state.
    #[error(
        "injecting event {interruption_info:#x} is not allowed in guest activity state {state}"
    )]
    EventBlockedInActivityState {
        /// The activity-state field.
        state: u32,
        /// The VM-entry interruption-information field.
        interruption_info: u32,
    },
    /// Wait-for-SIPI with "entry to SMM" = 1.
    #[error("guest activity state must not be wait-for-SIPI when \"entry to SMM\" is 1")]
    WaitForSipiWithEntryToSmm,
    /// Interruptibility-state bits 31:5 are set.
    #[error("guest interruptibility state {value:#x} sets reserved bits (31:5)")]
    InterruptibilityReservedBits {
        /// The field.
        value: u32,
    },
    /// Blocking by STI and by MOV SS together.
    #[error("guest interruptibility state cannot indicate blocking by both STI and MOV SS")]
    BlockingByStiAndMovSs,
    /// Blocking by STI with RFLAGS.IF = 0.
    #[error("guest blocking by STI must be 0 when RFLAGS.IF is 0")]
    StiBlockingWithInterruptsDisabled,
    /// An external interrupt is injected under blocking by STI or MOV SS.
    #[error("guest blocking by STI and MOV SS must be 0 when injecting an external interrupt")]
    ExternalInterruptWhileBlocked,
    /// An NMI is injected under blocking by MOV SS.
    #[error("guest blocking by MOV SS must be 0 when injecting an NMI")]
    NmiWhileBlockedByMovSs,
    /// Blocking by SMI outside SMM.
    #[error("guest blocking by SMI must be 0 outside SMM")]
    SmiBlockingOutsideSmm,
    /// "entry to SMM" = 1 without blocking by SMI.
    #[error("guest blocking by SMI must be 1 when \"entry to SMM\" is 1")]
    EntryToSmmWithoutSmiBlocking,
    /// An NMI is injected under blocking by STI; the SDM lets a processor
    /// require this to be 0, and hv does (exit qualification 3).
    #[error("guest blocking by STI must be 0 when injecting an NMI")]
    NmiWhileBlockedBySti,
    /// "virtual NMIs" = 1, an NMI is injected and blocking by NMI is 1.
    #[error("guest blocking by NMI must be 0 when injecting an NMI with \"virtual NMIs\" = 1")]
    NmiInjectedWhileVirtualNmiBlocked,
    /// Enclave interruption with blocking by MOV SS.
    #[error("guest enclave interruption (bit 4) requires blocking by MOV SS to be 0")]
    EnclaveInterruptionWithMovSsBlocking,
    /// Pending debug exceptions bits 10:4, 13, 15 or 63:17 are set (bit 11 is
    /// BLD, bus-lock detected, in current SDMs).
    #[error("guest pending debug exceptions {value:#x} set reserved bits (10:4, 13, 15, 63:17)")]
    PendingDebugReservedBits {
        /// The field.
        value: u64,
    },
    /// Under STI/MOV SS blocking or HLT, BS is 0 while RFLAGS.TF = 1 and
    /// DEBUGCTL.BTF = 0.
    #[error("guest pending debug BS must be 1 when RFLAGS.TF is 1 and IA32_DEBUGCTL.BTF is 0")]
    PendingDebugBsRequired,
    /// Under STI/MOV SS blocking or HLT, BS is 1 while RFLAGS.TF = 0 or
    /// DEBUGCTL.BTF = 1.
    #[error("guest pending debug BS must be 0 when RFLAGS.TF is 0 or IA32_DEBUGCTL.BTF is 1")]
    PendingDebugBsForbidden,
    /// RTM (bit 16) is set and the field is not exactly RTM | bit 12.
    #[error(
        "guest pending debug exceptions {value:#x}: with RTM (bit 16), bit 12 must be 1 and all others 0"
    )]
    PendingDebugRtmInvalid {
        /// The field.
        value: u64,
    },
    /// RTM (bit 16) is set with blocking by MOV SS.
    #[error("guest pending debug RTM (bit 16) requires blocking by MOV SS to be 0")]
    PendingDebugRtmWithMovSsBlocking,
    /// The VMCS link pointer is not all ones and bits 11:0 are not 0.
    #[error("VMCS link pointer {pointer:#x}: bits 11:0 must be 0")]
    LinkPointerNotAligned {
        /// The field.
        pointer: u64,
    },
    /// The VMCS link pointer is not all ones and sets bits beyond
    /// MAXPHYADDR.
    #[error("VMCS link pointer {pointer:#x} sets bits beyond the physical-address width")]
    LinkPointerBeyondPhysicalWidth {
        /// The field.
        pointer: u64,
    },
    /// The VMCS link pointer is the current-VMCS pointer (outside SMM).
    #[error("VMCS link pointer {pointer:#x} must not be the current-VMCS pointer")]
    LinkPointerIsCurrentVmcs {
        /// The field.
        pointer: u64,
    },

    // ---- 27.3.1.6: PDPTEs ----
    /// With PAE paging and EPT, a present PDPTE sets reserved bits (2:1,
    /// 8:5, MAXPHYADDR and above).
    #[error("guest PDPTE{index} {pdpte:#x} is present and sets reserved bits")]
    PdpteReservedBits {
        /// 0-3.
        index: u8,
        /// The PDPTE field.
        pdpte: u64,
    },
}

impl GuestCheck {
    /// The SDM section that states the rule, e.g. `"27.3.1.2"`.
    pub const fn sdm_section(&self) -> &'static str {
        match self {
            Self::Cr0FixedBit { .. }
            | Self::Cr0PagingWithoutProtection { .. }
            | Self::Cr4FixedBit { .. }
            | Self::CetWithoutWriteProtect { .. }
            | Self::DebugCtlReservedBits { .. }
            | Self::Ia32eModeWithoutPaging { .. }
            | Self::Ia32eModeWithoutPae { .. }
            | Self::PcideOutsideIa32eMode { .. }
            | Self::Cr3BeyondPhysicalWidth { .. }
            | Self::Dr7HighBitsSet { .. }
            | Self::SysenterEspNotCanonical { .. }
            | Self::SysenterEipNotCanonical { .. }
            | Self::SCetNotCanonical { .. }
            | Self::InterruptSspTableNotCanonical { .. }
            | Self::PerfGlobalCtrlReservedBits { .. }
            | Self::PatInvalidMemoryType { .. }
            | Self::EferReservedBits { .. }
            | Self::EferLmaMismatch { .. }
            | Self::EferLmeMismatch { .. }
            | Self::BndcfgsReservedBits { .. }
            | Self::BndcfgsBaseNotCanonical { .. }
            | Self::RtitCtlReservedBits { .. }
            | Self::SCetReservedBits { .. }
            | Self::SCetSuppressAndTracker { .. }
            | Self::LbrCtlReservedBits { .. }
            | Self::PkrsReservedBits { .. }
            | Self::UinvReservedBits { .. } => "27.3.1.1",
            Self::TrSelectorTableIndicator { .. }
            | Self::LdtrSelectorTableIndicator { .. }
            | Self::SsRplNotCsRpl { .. }
            | Self::V8086BaseNotSelectorTimes16 { .. }
            | Self::BaseNotCanonical { .. }
            | Self::BaseHighBitsSet { .. }
            | Self::V8086LimitNotFfff { .. }
            | Self::V8086AccessRightsNotF3 { .. }
            | Self::CsTypeInvalid { .. }
            | Self::SsTypeInvalid { .. }
            | Self::DataSegmentNotAccessed { .. }
            | Self::CodeSegmentNotReadable { .. }
            | Self::SegmentNotCodeOrData { .. }
            | Self::CsDataTypeDplNotZero { .. }
            | Self::CsDplNotSsDpl { .. }
            | Self::CsDplAboveSsDpl { .. }
            | Self::SsDplNotRpl { .. }
            | Self::SsDplNotZero { .. }
            | Self::DataSegmentDplBelowRpl { .. }
            | Self::SegmentNotPresent { .. }
            | Self::AccessRightsReservedBits { .. }
            | Self::CsLongModeWithDefaultBig
            | Self::LimitRequiresByteGranularity { .. }
            | Self::LimitRequiresPageGranularity { .. }
            | Self::TrTypeInvalid { .. }
            | Self::SystemSegmentNotSystem { .. }
            | Self::TrUnusable
            | Self::LdtrTypeInvalid { .. } => "27.3.1.2",
            Self::DescriptorTableBaseNotCanonical { .. }
            | Self::DescriptorTableLimitTooLarge { .. } => "27.3.1.3",
            Self::RipHighBitsSet { .. }
            | Self::RipBeyondLinearWidth { .. }
            | Self::RflagsReservedBits { .. }
            | Self::V8086InIa32eMode
            | Self::V8086WithoutProtection
            | Self::ExternalInterruptWithInterruptsDisabled
            | Self::SspMisaligned { .. }
            | Self::SspBeyondLinearWidth { .. } => "27.3.1.4",
            Self::ActivityStateInvalid { .. }
            | Self::ActivityStateUnsupported { .. }
            | Self::HaltWithNonZeroSsDpl { .. }
            | Self::BlockingWhileNotActive { .. }
            | Self::EventBlockedInActivityState { .. }
            | Self::WaitForSipiWithEntryToSmm
            | Self::InterruptibilityReservedBits { .. }
            | Self::BlockingByStiAndMovSs
            | Self::StiBlockingWithInterruptsDisabled
            | Self::ExternalInterruptWhileBlocked
            | Self::NmiWhileBlockedByMovSs
            | Self::SmiBlockingOutsideSmm
            | Self::EntryToSmmWithoutSmiBlocking
            | Self::NmiWhileBlockedBySti
            | Self::NmiInjectedWhileVirtualNmiBlocked
            | Self::EnclaveInterruptionWithMovSsBlocking
            | Self::PendingDebugReservedBits { .. }
            | Self::PendingDebugBsRequired
            | Self::PendingDebugBsForbidden
            | Self::PendingDebugRtmInvalid { .. }
            | Self::PendingDebugRtmWithMovSsBlocking
            | Self::LinkPointerNotAligned { .. }
            | Self::LinkPointerBeyondPhysicalWidth { .. }
            | Self::LinkPointerIsCurrentVmcs { .. } => "27.3.1.5",
            Self::PdpteReservedBits { .. } => "27.3.1.6",
        }
    }

    /// The exit qualification of the VM-entry-failure VM exit that reports
    /// this failure (SDM 27.8): 2 for a PDPTE problem, 3 for injecting an NMI
    /// under blocking by STI, 4 for an invalid VMCS link pointer, 0
    /// otherwise.
    pub const fn exit_qualification(&self) -> u64 {
        match self {
            Self::PdpteReservedBits { .. } => 2,
            Self::NmiWhileBlockedBySti => 3,
            Self::LinkPointerNotAligned { .. }
            | Self::LinkPointerBeyondPhysicalWidth { .. }
            | Self::LinkPointerIsCurrentVmcs { .. } => 4,
            _ => 0,
        }
    }
}

/// Whether bits 63:`low` of `value` are all identical (all 0 or all 1).
/// `low` >= 63 always holds.
const fn high_bits_identical(value: u64, low: u32) -> bool {
    if low >= 63 {
        return true;
    }
    let shift = 63 - low;
    ((value << shift).cast_signed() >> shift).cast_unsigned() == value
}

/// Whether `value` fits a linear-address width of N bits in the sense of
/// SDM 27.3.1.4 (RIP and SSP): bits 63:N identical; no check for N >= 64.
/// A width of 0 is treated as 64, as [`EntryContext::is_canonical`] does, so
/// a misconfigured context relaxes both checks alike.
const fn fits_linear_width(value: u64, width: u8) -> bool {
    if width == 0 {
        return true;
    }
    high_bits_identical(value, width as u32)
}

/// One guest segment register as the VMCS holds it.
#[derive(Clone, Copy, Debug)]
struct Segment {
    register: SegmentRegister,
    selector: u16,
    base: u64,
    limit: u32,
    rights: SegmentAccessRights,
}

impl Segment {
    fn read<V: VmcsRead + ?Sized>(vmcs: &V, register: SegmentRegister) -> Self {
        let [selector, base, limit, rights] = register.fields();
        Self {
            register,
            // The fields are 16 and 32 bits wide: truncation is VMREAD's.
            selector: read(vmcs, selector) as u16,
            base: read(vmcs, base),
            limit: read(vmcs, limit) as u32,
            rights: SegmentAccessRights::from_raw(read(vmcs, rights) as u32),
        }
    }

    const fn rpl(&self) -> u8 {
        (self.selector & 3) as u8
    }

    const fn usable(&self) -> bool {
        !self.rights.is_unusable()
    }

    /// G versus limit (SDM 27.3.1.2, bit 15).
    const fn check_granularity(&self) -> Result<(), GuestCheck> {
        let page_granular = self.rights.is_page_granular();
        if self.limit & 0xfff != 0xfff && page_granular {
            return Err(GuestCheck::LimitRequiresByteGranularity {
                segment: self.register,
                limit: self.limit,
            });
        }
        if self.limit >> 20 != 0 && !page_granular {
            return Err(GuestCheck::LimitRequiresPageGranularity {
                segment: self.register,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// The checks TR and a usable LDTR share after their type (SDM
    /// 27.3.1.2): S (bit 4) is 0, P (bit 7) is 1, bits 11:8 are 0, then G
    /// (bit 15) against the limit.
    const fn check_system_rights(&self) -> Result<(), GuestCheck> {
        if self.rights.is_code_or_data() {
            return Err(GuestCheck::SystemSegmentNotSystem {
                segment: self.register,
            });
        }
        if !self.rights.is_present() {
            return Err(GuestCheck::SegmentNotPresent {
                segment: self.register,
            });
        }
        if self.rights.reserved_bits() & 0xf00 != 0 {
            return self.check_reserved();
        }
        self.check_granularity()
    }

    /// Access-rights bits 11:8 and 31:17 (reserved) are 0.
    const fn check_reserved(&self) -> Result<(), GuestCheck> {
        if self.rights.reserved_bits() != 0 {
            return Err(GuestCheck::AccessRightsReservedBits {
                segment: self.register,
                access_rights: self.rights.raw(),
            });
        }
        Ok(())
    }
}

/// The controls and registers that many checks depend on.
#[derive(Clone, Copy, Debug)]
struct Facts {
    /// The control words as VM entry sees them: the secondary controls are
    /// empty unless "activate secondary controls" is 1 (SDM 25.6.2).
    controls: EffectiveControls,
    cr0: Cr0,
    cr4: Cr4,
    rflags: Rflags,
    interruptibility: Interruptibility,
    activity_state: ActivityState,
    /// The VM-entry interruption-information field, if its valid bit is 1.
    injection: Option<InterruptionInfo>,
}

impl Facts {
    fn read<V: VmcsRead + ?Sized>(vmcs: &V) -> Self {
        let injection =
            InterruptionInfo::from_raw(read(vmcs, VmcsField::VmEntryInterruptionInfo) as u32);
        Self {
            controls: EffectiveControls::read(vmcs),
            cr0: Cr0::from_bits_retain(read(vmcs, VmcsField::GuestCr0)),
            cr4: Cr4::from_bits_retain(read(vmcs, VmcsField::GuestCr4)),
            rflags: Rflags::from_bits_retain(read(vmcs, VmcsField::GuestRflags)),
            interruptibility: Interruptibility::from_raw(read(
                vmcs,
                VmcsField::GuestInterruptibilityState,
            ) as u32),
            activity_state: ActivityState::from_raw(
                read(vmcs, VmcsField::GuestActivityState) as u32
            ),
            injection: if injection.is_valid() {
                Some(injection)
            } else {
                None
            },
        }
    }

    /// The VM-entry controls.
    const fn entry(&self) -> EntryControls {
        self.controls.entry
    }

    /// The "IA-32e mode guest" VM-entry control.
    const fn ia32e_mode_guest(&self) -> bool {
        self.controls.ia32e_mode_guest()
    }

    /// The "unrestricted guest" VM-execution control.
    const fn unrestricted_guest(&self) -> bool {
        self.controls.unrestricted_guest()
    }

    /// The "enable EPT" VM-execution control.
    const fn ept(&self) -> bool {
        self.controls.ept()
    }

    /// The "virtual NMIs" VM-execution control.
    const fn virtual_nmis(&self) -> bool {
        self.controls.pin.contains(PinBasedControls::VIRTUAL_NMIS)
    }

    /// Whether the guest will be in virtual-8086 mode (RFLAGS.VM = 1).
    const fn virtual_8086(&self) -> bool {
        self.rflags.contains(Rflags::VM)
    }

    /// Whether VM entry injects an event of type `kind`.
    fn injects(&self, kind: InterruptionType) -> bool {
        self.injection
            .is_some_and(|info| info.interruption_type() == kind)
    }

    /// Whether the interruptibility state indicates blocking by STI or by
    /// MOV SS.
    const fn blocking_by_sti_or_mov_ss(&self) -> bool {
        self.interruptibility.intersects(
            Interruptibility::BLOCKING_BY_STI.union(Interruptibility::BLOCKING_BY_MOV_SS),
        )
    }
}

/// Runs the guest-state checks of SDM 27.3.1 in the SDM's order.
///
/// # Errors
///
/// The first failed check, as a [`GuestCheck`].
pub fn check_guest_state<V: VmcsRead + ?Sized>(
    vmcs: &V,
    caps: &VmxCapabilities,
    context: &EntryContext,
) -> Result<(), GuestCheck> {
    let facts = Facts::read(vmcs);
    check_control_registers_and_msrs(vmcs, caps, context, &facts)?;
    check_segment_registers(vmcs, context, &facts)?;
    check_descriptor_tables(vmcs, context)?;
    check_rip_rflags_ssp(vmcs, context, &facts)?;
    check_non_register_state(vmcs, caps, context, &facts)?;
    check_pdptes(vmcs, context, &facts)
}

/// SDM 27.3.1.1, first part: control registers, debug registers and the
/// checks the SDM lists for processors that support Intel 64.
fn check_control_registers_and_msrs<V: VmcsRead + ?Sized>(
    vmcs: &V,
    caps: &VmxCapabilities,
    context: &EntryContext,
    facts: &Facts,
) -> Result<(), GuestCheck> {
    let Facts { cr0, cr4, .. } = *facts;
    let entry = facts.entry();
    let ia32e_mode_guest = facts.ia32e_mode_guest();

    // CR0 against the fixed bits; CD and NW are never checked, PE and PG not
    // with "unrestricted guest".
    let mut free = Cr0::CD | Cr0::NW;
    if facts.unrestricted_guest() {
        free |= Cr0::PE | Cr0::PG;
    }
    if let Some(violation) = caps
        .cr0_fixed
        .freeing(free.bits())
        .first_violation(cr0.bits())
    {
        return Err(GuestCheck::Cr0FixedBit {
            cr0: cr0.bits(),
            bit: violation.bit,
            must_be_one: violation.required,
        });
    }
    // CVE-2023-30456: PG without PE, even with "unrestricted guest".
    if cr0.contains(Cr0::PG) && !cr0.contains(Cr0::PE) {
        return Err(GuestCheck::Cr0PagingWithoutProtection { cr0: cr0.bits() });
    }
    if let Some(violation) = caps.cr4_fixed.first_violation(cr4.bits()) {
        return Err(GuestCheck::Cr4FixedBit {
            cr4: cr4.bits(),
            bit: violation.bit,
            must_be_one: violation.required,
        });
    }
    if cet_without_write_protect(cr0, cr4) {
        return Err(GuestCheck::CetWithoutWriteProtect { cr0: cr0.bits() });
    }
    let load_debug = entry.contains(EntryControls::LOAD_DEBUG_CONTROLS);
    if load_debug {
        let debugctl = read(vmcs, VmcsField::GuestDebugCtl);
        if debugctl & DEBUGCTL_RESERVED != 0 {
            return Err(GuestCheck::DebugCtlReservedBits { debugctl });
        }
    }
    // Processors that support Intel 64 architecture.
    if ia32e_mode_guest {
        // CVE-2023-30456: IA-32e mode needs paging and PAE.
        if !cr0.contains(Cr0::PG) {
            return Err(GuestCheck::Ia32eModeWithoutPaging { cr0: cr0.bits() });
        }
        if !cr4.contains(Cr4::PAE) {
            return Err(GuestCheck::Ia32eModeWithoutPae { cr4: cr4.bits() });
        }
    } else if cr4.contains(Cr4::PCIDE) {
        return Err(GuestCheck::PcideOutsideIa32eMode { cr4: cr4.bits() });
    }
    // CR3: bits 63:52 and bits of 51:32 beyond MAXPHYADDR must be 0; bits
    // 31:0 are never checked here.
    let cr3 = read(vmcs, VmcsField::GuestCr3);
    if !cr3_within_physical_width(cr3, caps, context) {
        return Err(GuestCheck::Cr3BeyondPhysicalWidth { cr3 });
    }
    if load_debug {
        let dr7 = read(vmcs, VmcsField::GuestDr7);
        if dr7 >> 32 != 0 {
            return Err(GuestCheck::Dr7HighBitsSet { dr7 });
        }
    }
    let esp = read(vmcs, VmcsField::GuestSysenterEsp);
    if !context.is_canonical(esp) {
        return Err(GuestCheck::SysenterEspNotCanonical { address: esp });
    }
    let eip = read(vmcs, VmcsField::GuestSysenterEip);
    if !context.is_canonical(eip) {
        return Err(GuestCheck::SysenterEipNotCanonical { address: eip });
    }
    let load_cet = entry.contains(EntryControls::LOAD_CET_STATE);
    if load_cet {
        let s_cet = read(vmcs, VmcsField::GuestSCet);
        if !context.is_canonical(s_cet) {
            return Err(GuestCheck::SCetNotCanonical { value: s_cet });
        }
        let table = read(vmcs, VmcsField::GuestInterruptSspTableAddress);
        if !context.is_canonical(table) {
            return Err(GuestCheck::InterruptSspTableNotCanonical { address: table });
        }
    }
    check_loaded_msrs(vmcs, context, facts)
}

/// SDM 27.3.1.1, second part: the MSRs that VM-entry controls load.
fn check_loaded_msrs<V: VmcsRead + ?Sized>(
    vmcs: &V,
    context: &EntryContext,
    facts: &Facts,
) -> Result<(), GuestCheck> {
    let entry = facts.entry();
    let ia32e_mode_guest = facts.ia32e_mode_guest();
    if entry.contains(EntryControls::LOAD_IA32_PERF_GLOBAL_CTRL) {
        let value = read(vmcs, VmcsField::GuestPerfGlobalCtrl);
        if value & PERF_GLOBAL_CTRL_RESERVED != 0 {
            return Err(GuestCheck::PerfGlobalCtrlReservedBits { value });
        }
    }
    if entry.contains(EntryControls::LOAD_IA32_PAT) {
        let pat = read(vmcs, VmcsField::GuestPat);
        if let Some(InvalidPatEntry { index, memory_type }) = first_invalid_pat_entry(pat) {
            return Err(GuestCheck::PatInvalidMemoryType {
                pat,
                entry: index,
                memory_type,
            });
        }
    }
    if entry.contains(EntryControls::LOAD_IA32_EFER) {
        let efer = read(vmcs, VmcsField::GuestEfer);
        let flags = Efer::from_bits_retain(efer);
        if !Efer::all().contains(flags) {
            return Err(GuestCheck::EferReservedBits { efer });
        }
        let lma = flags.contains(Efer::LMA);
        if lma != ia32e_mode_guest {
            return Err(GuestCheck::EferLmaMismatch {
                efer,
                ia32e_mode_guest,
            });
        }
        if facts.cr0.contains(Cr0::PG) && flags.contains(Efer::LME) != lma {
            return Err(GuestCheck::EferLmeMismatch { efer });
        }
    }
    if entry.contains(EntryControls::LOAD_IA32_BNDCFGS) {
        let value = read(vmcs, VmcsField::GuestBndcfgs);
        if value & BNDCFGS_RESERVED != 0 {
            return Err(GuestCheck::BndcfgsReservedBits { value });
        }
        if !context.is_canonical(value & !0xfff) {
            return Err(GuestCheck::BndcfgsBaseNotCanonical { value });
        }
    }
    if entry.contains(EntryControls::LOAD_IA32_RTIT_CTL) {
        let value = read(vmcs, VmcsField::GuestRtitCtl);
        if value & RTIT_CTL_RESERVED != 0 {
            return Err(GuestCheck::RtitCtlReservedBits { value });
        }
    }
    if entry.contains(EntryControls::LOAD_CET_STATE) {
        let value = read(vmcs, VmcsField::GuestSCet);
        let s_cet = Cet::from_bits_retain(value);
        if s_cet.intersects(Cet::RESERVED) {
            return Err(GuestCheck::SCetReservedBits { value });
        }
        if s_cet.contains(Cet::SUPPRESS | Cet::TRACKER) {
            return Err(GuestCheck::SCetSuppressAndTracker { value });
        }
    }
    if entry.contains(EntryControls::LOAD_IA32_LBR_CTL) {
        let value = read(vmcs, VmcsField::GuestLbrCtl);
        if value & !LBR_CTL_DEFINED != 0 {
            return Err(GuestCheck::LbrCtlReservedBits { value });
        }
    }
    if entry.contains(EntryControls::LOAD_PKRS) {
        let value = read(vmcs, VmcsField::GuestPkrs);
        if value >> 32 != 0 {
            return Err(GuestCheck::PkrsReservedBits { value });
        }
    }
    if entry.contains(EntryControls::LOAD_UINV) {
        let value = read(vmcs, VmcsField::GuestUinv);
        if value & 0xff00 != 0 {
            return Err(GuestCheck::UinvReservedBits { value });
        }
    }
    Ok(())
}

/// SDM 27.3.1.2: segment registers, in the SDM's order (selectors, bases,
/// limits, access rights sub-field by sub-field, then TR and LDTR).
fn check_segment_registers<V: VmcsRead + ?Sized>(
    vmcs: &V,
    context: &EntryContext,
    facts: &Facts,
) -> Result<(), GuestCheck> {
    let [cs, ss, ds, es, fs, gs] =
        CODE_AND_DATA_SEGMENTS.map(|register| Segment::read(vmcs, register));
    let code_and_data = [cs, ss, ds, es, fs, gs];
    let tr = Segment::read(vmcs, SegmentRegister::Tr);
    let ldtr = Segment::read(vmcs, SegmentRegister::Ldtr);

    // Selectors.
    if tr.selector & 4 != 0 {
        return Err(GuestCheck::TrSelectorTableIndicator {
            selector: tr.selector,
        });
    }
    if ldtr.usable() && ldtr.selector & 4 != 0 {
        return Err(GuestCheck::LdtrSelectorTableIndicator {
            selector: ldtr.selector,
        });
    }
    if !facts.virtual_8086() && !facts.unrestricted_guest() && ss.rpl() != cs.rpl() {
        return Err(GuestCheck::SsRplNotCsRpl {
            ss_rpl: ss.rpl(),
            cs_rpl: cs.rpl(),
        });
    }

    // Base addresses.
    if facts.virtual_8086() {
        for segment in code_and_data {
            if segment.base != u64::from(segment.selector) << 4 {
                return Err(GuestCheck::V8086BaseNotSelectorTimes16 {
                    segment: segment.register,
                    selector: segment.selector,
                    base: segment.base,
                });
            }
        }
    }
    for segment in [tr, fs, gs, ldtr] {
        let must_be_canonical = segment.register != SegmentRegister::Ldtr || segment.usable();
        if must_be_canonical && !context.is_canonical(segment.base) {
            return Err(GuestCheck::BaseNotCanonical {
                segment: segment.register,
                base: segment.base,
            });
        }
    }
    for segment in [cs, ss, ds, es] {
        let checked = segment.register == SegmentRegister::Cs || segment.usable();
        if checked && segment.base >> 32 != 0 {
            return Err(GuestCheck::BaseHighBitsSet {
                segment: segment.register,
                base: segment.base,
            });
        }
    }

    // Limits and access rights.
    if facts.virtual_8086() {
        for segment in code_and_data {
            if segment.limit != 0xffff {
                return Err(GuestCheck::V8086LimitNotFfff {
                    segment: segment.register,
                    limit: segment.limit,
                });
            }
        }
        for segment in code_and_data {
            if segment.rights.raw() != 0xf3 {
                return Err(GuestCheck::V8086AccessRightsNotF3 {
                    segment: segment.register,
                    access_rights: segment.rights.raw(),
                });
            }
        }
    } else {
        check_code_and_data_rights(&code_and_data, facts)?;
    }
    check_tr(&tr, facts)?;
    check_ldtr(&ldtr)
}

/// Access rights of CS, SS, DS, ES, FS, GS outside virtual-8086 mode
/// (SDM 27.3.1.2), sub-field by sub-field.
fn check_code_and_data_rights(segments: &[Segment; 6], facts: &Facts) -> Result<(), GuestCheck> {
    let [cs, ss, ..] = *segments;
    // "If the register is CS or if the register is usable".
    let checked = |segment: &Segment| segment.register == SegmentRegister::Cs || segment.usable();
    let cs_type = cs.rights.segment_type();

    // Bits 3:0 (type).
    let cs_type_ok =
        matches!(cs_type, 9 | 11 | 13 | 15) || (facts.unrestricted_guest() && cs_type == 3);
    if !cs_type_ok {
        return Err(GuestCheck::CsTypeInvalid {
            segment_type: cs_type,
        });
    }
    if ss.usable() && !matches!(ss.rights.segment_type(), 3 | 7) {
        return Err(GuestCheck::SsTypeInvalid {
            segment_type: ss.rights.segment_type(),
        });
    }
    for segment in data_segments(segments) {
        if !segment.usable() {
            continue;
        }
        let segment_type = segment.rights.segment_type();
        if segment_type & 1 == 0 {
            return Err(GuestCheck::DataSegmentNotAccessed {
                segment: segment.register,
                segment_type,
            });
        }
        if segment_type & 8 != 0 && segment_type & 2 == 0 {
            return Err(GuestCheck::CodeSegmentNotReadable {
                segment: segment.register,
                segment_type,
            });
        }
    }

    // Bit 4 (S).
    for segment in segments {
        if checked(segment) && !segment.rights.is_code_or_data() {
            return Err(GuestCheck::SegmentNotCodeOrData {
                segment: segment.register,
            });
        }
    }

    // Bits 6:5 (DPL).
    let (cs_dpl, ss_dpl) = (cs.rights.dpl(), ss.rights.dpl());
    match cs_type {
        3 if cs_dpl != 0 => return Err(GuestCheck::CsDataTypeDplNotZero { dpl: cs_dpl }),
        9 | 11 if cs_dpl != ss_dpl => return Err(GuestCheck::CsDplNotSsDpl { cs_dpl, ss_dpl }),
        13 | 15 if cs_dpl > ss_dpl => return Err(GuestCheck::CsDplAboveSsDpl { cs_dpl, ss_dpl }),
        _ => {}
    }
    if !facts.unrestricted_guest() && ss_dpl != ss.rpl() {
        return Err(GuestCheck::SsDplNotRpl {
            dpl: ss_dpl,
            rpl: ss.rpl(),
        });
    }
    if (cs_type == 3 || !facts.cr0.contains(Cr0::PE)) && ss_dpl != 0 {
        return Err(GuestCheck::SsDplNotZero { dpl: ss_dpl });
    }
    if !facts.unrestricted_guest() {
        for segment in data_segments(segments) {
            let dpl = segment.rights.dpl();
            if segment.usable() && segment.rights.segment_type() <= 11 && dpl < segment.rpl() {
                return Err(GuestCheck::DataSegmentDplBelowRpl {
                    segment: segment.register,
                    dpl,
                    rpl: segment.rpl(),
                });
            }
        }
    }

    // Bit 7 (P).
    for segment in segments {
        if checked(segment) && !segment.rights.is_present() {
            return Err(GuestCheck::SegmentNotPresent {
                segment: segment.register,
            });
        }
    }
    // Bits 11:8 (reserved): the same check covers bits 31:17, listed last.
    for segment in segments {
        if checked(segment) && segment.rights.reserved_bits() & 0xf00 != 0 {
            return Err(GuestCheck::AccessRightsReservedBits {
                segment: segment.register,
                access_rights: segment.rights.raw(),
            });
        }
    }
    // Bit 14 (D/B) of CS.
    if facts.ia32e_mode_guest() && cs.rights.is_long_mode() && cs.rights.is_default_big() {
        return Err(GuestCheck::CsLongModeWithDefaultBig);
    }
    // Bit 15 (G).
    for segment in segments {
        if checked(segment) {
            segment.check_granularity()?;
        }
    }
    // Bits 31:17 (reserved).
    for segment in segments {
        if checked(segment) {
            segment.check_reserved()?;
        }
    }
    Ok(())
}

/// DS, ES, FS, GS out of the CS, SS, DS, ES, FS, GS array.
fn data_segments(segments: &[Segment; 6]) -> impl Iterator<Item = &Segment> {
    segments
        .iter()
        .filter(|segment| DATA_SEGMENTS.contains(&segment.register))
}

/// TR access rights (SDM 27.3.1.2), in every mode.
fn check_tr(tr: &Segment, facts: &Facts) -> Result<(), GuestCheck> {
    let segment_type = tr.rights.segment_type();
    let type_ok = if facts.ia32e_mode_guest() {
        segment_type == 11
    } else {
        segment_type == 3 || segment_type == 11
    };
    if !type_ok {
        return Err(GuestCheck::TrTypeInvalid {
            segment_type,
            ia32e_mode_guest: facts.ia32e_mode_guest(),
        });
    }
    tr.check_system_rights()?;
    if tr.rights.is_unusable() {
        return Err(GuestCheck::TrUnusable);
    }
    tr.check_reserved()
}

/// LDTR access rights (SDM 27.3.1.2), only if LDTR is usable.
fn check_ldtr(ldtr: &Segment) -> Result<(), GuestCheck> {
    if !ldtr.usable() {
        return Ok(());
    }
    let segment_type = ldtr.rights.segment_type();
    if segment_type != 2 {
        return Err(GuestCheck::LdtrTypeInvalid { segment_type });
    }
    ldtr.check_system_rights()?;
    ldtr.check_reserved()
}

/// SDM 27.3.1.3: GDTR and IDTR.
fn check_descriptor_tables<V: VmcsRead + ?Sized>(
    vmcs: &V,
    context: &EntryContext,
) -> Result<(), GuestCheck> {
    let tables = [
        (
            DescriptorTable::Gdtr,
            VmcsField::GuestGdtrBase,
            VmcsField::GuestGdtrLimit,
        ),
        (
            DescriptorTable::Idtr,
            VmcsField::GuestIdtrBase,
            VmcsField::GuestIdtrLimit,
        ),
    ];
    for (table, base_field, _) in tables {
        let base = read(vmcs, base_field);
        if !context.is_canonical(base) {
            return Err(GuestCheck::DescriptorTableBaseNotCanonical { table, base });
        }
    }
    for (table, _, limit_field) in tables {
        let limit = read(vmcs, limit_field) as u32;
        if limit >> 16 != 0 {
            return Err(GuestCheck::DescriptorTableLimitTooLarge { table, limit });
        }
    }
    Ok(())
}

/// SDM 27.3.1.4: RIP, RFLAGS and SSP.
fn check_rip_rflags_ssp<V: VmcsRead + ?Sized>(
    vmcs: &V,
    context: &EntryContext,
    facts: &Facts,
) -> Result<(), GuestCheck> {
    let width = context.linear_address_width;
    let rip = read(vmcs, VmcsField::GuestRip);
    let cs_rights =
        SegmentAccessRights::from_raw(read(vmcs, VmcsField::GuestCsAccessRights) as u32);
    if facts.ia32e_mode_guest() && cs_rights.is_long_mode() {
        // Bits 63:N identical, N the linear-address width: RIP need not be
        // canonical (bit N-1 may differ from bit 63).
        if !fits_linear_width(rip, width) {
            return Err(GuestCheck::RipBeyondLinearWidth {
                rip,
                linear_address_width: width,
            });
        }
    } else if rip >> 32 != 0 {
        return Err(GuestCheck::RipHighBitsSet { rip });
    }

    let rflags = facts.rflags;
    if rflags.intersects(Rflags::RESERVED_ZERO) || !rflags.contains(Rflags::RESERVED_ONE) {
        return Err(GuestCheck::RflagsReservedBits {
            rflags: rflags.bits(),
        });
    }
    if facts.virtual_8086() {
        if facts.ia32e_mode_guest() {
            return Err(GuestCheck::V8086InIa32eMode);
        }
        if !facts.cr0.contains(Cr0::PE) {
            return Err(GuestCheck::V8086WithoutProtection);
        }
    }
    if facts.injects(InterruptionType::ExternalInterrupt) && !rflags.contains(Rflags::IF) {
        return Err(GuestCheck::ExternalInterruptWithInterruptsDisabled);
    }

    if facts.entry().contains(EntryControls::LOAD_CET_STATE) {
        let ssp = read(vmcs, VmcsField::GuestSsp);
        if ssp & 3 != 0 {
            return Err(GuestCheck::SspMisaligned { ssp });
        }
        if !fits_linear_width(ssp, width) {
            return Err(GuestCheck::SspBeyondLinearWidth {
                ssp,
                linear_address_width: width,
            });
        }
    }
    Ok(())
}

/// SDM 27.3.1.5: activity state, interruptibility state, pending debug
/// exceptions and the VMCS link pointer.
fn check_non_register_state<V: VmcsRead + ?Sized>(
    vmcs: &V,
    caps: &VmxCapabilities,
    context: &EntryContext,
    facts: &Facts,
) -> Result<(), GuestCheck> {
    check_activity_state(vmcs, caps, facts)?;
    check_interruptibility(facts)?;
    check_pending_debug_exceptions(vmcs, facts)?;
    check_link_pointer(vmcs, context)
}

/// Activity state (SDM 27.3.1.5).
fn check_activity_state<V: VmcsRead + ?Sized>(
    vmcs: &V,
    caps: &VmxCapabilities,
    facts: &Facts,
) -> Result<(), GuestCheck> {
    let activity = facts.activity_state;
    let state = activity.raw();
    // IA32_VMX_MISC bits 8:6 report HLT, shutdown and wait-for-SIPI.
    let supported = match activity {
        ActivityState::Active => true,
        ActivityState::Hlt => caps.misc.activity_hlt(),
        ActivityState::Shutdown => caps.misc.activity_shutdown(),
        ActivityState::WaitForSipi => caps.misc.activity_wait_for_sipi(),
        ActivityState::Reserved(_) => return Err(GuestCheck::ActivityStateInvalid { state }),
    };
    if !supported {
        return Err(GuestCheck::ActivityStateUnsupported { state });
    }
    if activity == ActivityState::Hlt {
        let ss_rights =
            SegmentAccessRights::from_raw(read(vmcs, VmcsField::GuestSsAccessRights) as u32);
        if ss_rights.dpl() != 0 {
            return Err(GuestCheck::HaltWithNonZeroSsDpl {
                ss_dpl: ss_rights.dpl(),
            });
        }
    }
    if facts.blocking_by_sti_or_mov_ss() && activity != ActivityState::Active {
        return Err(GuestCheck::BlockingWhileNotActive { state });
    }
    if let Some(info) = facts.injection
        && !injection_allowed(activity, info)
    {
        return Err(GuestCheck::EventBlockedInActivityState {
            state,
            interruption_info: info.raw(),
        });
    }
    if activity == ActivityState::WaitForSipi && facts.entry().contains(EntryControls::ENTRY_TO_SMM)
    {
        return Err(GuestCheck::WaitForSipiWithEntryToSmm);
    }
    Ok(())
}

/// Whether an event may be injected in an activity state (SDM 27.3.1.5):
/// any in the active state; in HLT external interrupts, NMIs, #DB, #MC and
/// pending MTF VM exits; in shutdown NMIs and #MC; in wait-for-SIPI none.
fn injection_allowed(activity: ActivityState, info: InterruptionInfo) -> bool {
    let vector = info.exception();
    match (activity, info.interruption_type()) {
        (ActivityState::Active | ActivityState::Reserved(_), _)
        | (ActivityState::Hlt, InterruptionType::ExternalInterrupt | InterruptionType::Nmi)
        | (ActivityState::Shutdown, InterruptionType::Nmi) => true,
        (ActivityState::Hlt, InterruptionType::HardwareException) => {
            matches!(
                vector,
                ExceptionVector::Debug | ExceptionVector::MachineCheck
            )
        }
        // "Other event" vector 0: pending MTF VM exit (SDM 25.8.3).
        (ActivityState::Hlt, InterruptionType::OtherEvent) => info.vector() == 0,
        (ActivityState::Shutdown, InterruptionType::HardwareException) => {
            vector == ExceptionVector::MachineCheck
        }
        _ => false,
    }
}

/// Interruptibility state (SDM 27.3.1.5).
fn check_interruptibility(facts: &Facts) -> Result<(), GuestCheck> {
    let state = facts.interruptibility;
    if state.raw() & Interruptibility::RESERVED_MASK != 0 {
        return Err(GuestCheck::InterruptibilityReservedBits { value: state.raw() });
    }
    let sti = state.contains(Interruptibility::BLOCKING_BY_STI);
    let mov_ss = state.contains(Interruptibility::BLOCKING_BY_MOV_SS);
    let smi = state.contains(Interruptibility::BLOCKING_BY_SMI);
    if sti && mov_ss {
        return Err(GuestCheck::BlockingByStiAndMovSs);
    }
    if sti && !facts.rflags.contains(Rflags::IF) {
        return Err(GuestCheck::StiBlockingWithInterruptsDisabled);
    }
    if facts.injects(InterruptionType::ExternalInterrupt) && (sti || mov_ss) {
        return Err(GuestCheck::ExternalInterruptWhileBlocked);
    }
    let injects_nmi = facts.injects(InterruptionType::Nmi);
    if injects_nmi && mov_ss {
        return Err(GuestCheck::NmiWhileBlockedByMovSs);
    }
    // The processor is assumed not to be in SMM (see the module docs).
    if smi {
        return Err(GuestCheck::SmiBlockingOutsideSmm);
    }
    if facts.entry().contains(EntryControls::ENTRY_TO_SMM) && !smi {
        return Err(GuestCheck::EntryToSmmWithoutSmiBlocking);
    }
    // "A processor may require bit 0 (blocking by STI) to be 0" when an NMI
    // is injected; hv's virtual processor does (exit qualification 3).
    if injects_nmi && sti {
        return Err(GuestCheck::NmiWhileBlockedBySti);
    }
    if facts.virtual_nmis() && injects_nmi && state.contains(Interruptibility::BLOCKING_BY_NMI) {
        return Err(GuestCheck::NmiInjectedWhileVirtualNmiBlocked);
    }
    if state.contains(Interruptibility::ENCLAVE_INTERRUPTION) && mov_ss {
        return Err(GuestCheck::EnclaveInterruptionWithMovSsBlocking);
    }
    Ok(())
}

/// Pending debug exceptions (SDM 27.3.1.5).
fn check_pending_debug_exceptions<V: VmcsRead + ?Sized>(
    vmcs: &V,
    facts: &Facts,
) -> Result<(), GuestCheck> {
    let pending =
        PendingDebugExceptions::from_raw(read(vmcs, VmcsField::GuestPendingDebugExceptions));
    let value = pending.raw();
    if pending.reserved_bits() != 0 {
        return Err(GuestCheck::PendingDebugReservedBits { value });
    }
    if facts.blocking_by_sti_or_mov_ss() || facts.activity_state == ActivityState::Hlt {
        let single_step = facts.rflags.contains(Rflags::TF);
        let branch_trap = DebugCtl::from_bits_retain(read(vmcs, VmcsField::GuestDebugCtl))
            .contains(DebugCtl::BTF);
        if single_step && !branch_trap && !pending.single_step() {
            return Err(GuestCheck::PendingDebugBsRequired);
        }
        if (!single_step || branch_trap) && pending.single_step() {
            return Err(GuestCheck::PendingDebugBsForbidden);
        }
    }
    if pending.rtm() {
        // Bits 11:0, 15:13 and 63:17 must be 0 and bit 12 must be 1.
        if value != PendingDebugExceptions::RTM | PendingDebugExceptions::ENABLED_BREAKPOINT {
            return Err(GuestCheck::PendingDebugRtmInvalid { value });
        }
        if facts
            .interruptibility
            .contains(Interruptibility::BLOCKING_BY_MOV_SS)
        {
            return Err(GuestCheck::PendingDebugRtmWithMovSsBlocking);
        }
    }
    Ok(())
}

/// VMCS link pointer (SDM 27.3.1.5): the checks that need no memory.
fn check_link_pointer<V: VmcsRead + ?Sized>(
    vmcs: &V,
    context: &EntryContext,
) -> Result<(), GuestCheck> {
    let pointer = read(vmcs, VmcsField::VmcsLinkPointer);
    if pointer == NO_LINK_POINTER {
        return Ok(());
    }
    if pointer & 0xfff != 0 {
        return Err(GuestCheck::LinkPointerNotAligned { pointer });
    }
    if !context.is_valid_physical(pointer) {
        return Err(GuestCheck::LinkPointerBeyondPhysicalWidth { pointer });
    }
    // hv models a processor outside SMM, where the link pointer must not be
    // the current-VMCS pointer.
    if pointer == context.current_vmcs_pointer {
        return Err(GuestCheck::LinkPointerIsCurrentVmcs { pointer });
    }
    Ok(())
}

/// SDM 27.3.1.6: with PAE paging (CR0.PG = 1, CR4.PAE = 1, "IA-32e mode
/// guest" = 0) and "enable EPT" = 1, the PDPTE fields of the VMCS.
fn check_pdptes<V: VmcsRead + ?Sized>(
    vmcs: &V,
    context: &EntryContext,
    facts: &Facts,
) -> Result<(), GuestCheck> {
    let pae_paging =
        facts.cr0.contains(Cr0::PG) && facts.cr4.contains(Cr4::PAE) && !facts.ia32e_mode_guest();
    if !pae_paging || !facts.ept() {
        return Ok(());
    }
    let fields = [
        VmcsField::GuestPdpte0,
        VmcsField::GuestPdpte1,
        VmcsField::GuestPdpte2,
        VmcsField::GuestPdpte3,
    ];
    for (index, field) in (0u8..).zip(fields) {
        let pdpte = read(vmcs, field);
        if pdpte & PDPTE_PRESENT == 0 {
            continue;
        }
        if pdpte & PDPTE_RESERVED_LOW != 0 || !context.is_valid_physical(pdpte) {
            return Err(GuestCheck::PdpteReservedBits { index, pdpte });
        }
    }
    Ok(())
}
