//! The VMX capability MSRs, parsed (SDM Vol. 3C Appendix A).
//!
//! [`VmxCapabilities`] gathers everything a processor reports about its VMX
//! implementation. It is built from raw MSR values ([`RawVmxMsrs`]) or read
//! through a caller-supplied RDMSR ([`VmxCapabilities::from_reader`]), and it
//! answers the question every hypervisor asks before VM entry: "may this
//! control word be used, and which bits must I add?"
//! ([`VmxCapabilities::adjust`], [`AllowedSettings::check`]).
//!
//! Nested hypervisors also build a `VmxCapabilities` for the virtual
//! processor they expose to L1; the fields are public for that reason.

use crate::controls::{
    ControlKind, ControlWord, EntryControls, ExitControls, PinBasedControls, PrimaryProcControls,
    SecondaryExitControls, SecondaryProcControls, TertiaryProcControls, VmFunctionControls,
};
use crate::ept::EptMemoryType;
use crate::msr::VmxMsr;

/// Extracts bits `high:low` (inclusive) of `value`.
const fn bits(value: u64, high: u32, low: u32) -> u64 {
    (value >> low) & (u64::MAX >> (63 - (high - low)))
}

/// Whether bit `bit` of `value` is set.
const fn bit(value: u64, bit: u32) -> bool {
    value & (1 << bit) != 0
}

// Control bits that decide whether other capability MSRs exist
// (SDM A.3.2-A.3.3, A.4.1, A.10, A.11) and that the queries below report.
/// Pin-based bit 6: activate VMX-preemption timer (SDM 25.6.1, Table 25-5).
const PIN_PREEMPTION_TIMER: u32 = 6;
/// Pin-based bit 7: process posted interrupts (SDM 25.6.1, Table 25-5).
const PIN_POSTED_INTERRUPTS: u32 = 7;
/// Primary processor-based bit 17: activate tertiary controls (Table 25-6).
const PROC_ACTIVATE_TERTIARY: u32 = 17;
/// Primary processor-based bit 31: activate secondary controls (Table 25-6).
const PROC_ACTIVATE_SECONDARY: u32 = 31;
/// Secondary processor-based bit 1: enable EPT (Table 25-7).
const PROC2_ENABLE_EPT: u32 = 1;
/// Secondary processor-based bit 5: enable VPID (Table 25-7).
const PROC2_ENABLE_VPID: u32 = 5;
/// Secondary processor-based bit 7: unrestricted guest (Table 25-7).
const PROC2_UNRESTRICTED_GUEST: u32 = 7;
/// Secondary processor-based bit 13: enable VM functions (Table 25-7).
const PROC2_ENABLE_VMFUNC: u32 = 13;
/// Secondary processor-based bit 14: VMCS shadowing (Table 25-7).
const PROC2_VMCS_SHADOWING: u32 = 14;
/// Secondary processor-based bit 17: enable PML (Table 25-7).
const PROC2_ENABLE_PML: u32 = 17;
/// Secondary processor-based bit 18: EPT-violation #VE (Table 25-7).
const PROC2_EPT_VIOLATION_VE: u32 = 18;
/// Secondary processor-based bit 22: mode-based execute control for EPT
/// (Table 25-7).
const PROC2_MODE_BASED_EXECUTE: u32 = 22;
/// Primary VM-exit bit 31: activate secondary controls (Table 25-13).
const EXIT_ACTIVATE_SECONDARY: u32 = 31;
/// VM-function bit 0: EPTP switching (Table 25-10).
const VMFUNC_EPTP_SWITCHING: u32 = 0;

/// `IA32_VMX_BASIC` (MSR 0x480), SDM A.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VmxBasic(u64);

impl VmxBasic {
    /// Wraps a raw `IA32_VMX_BASIC` value.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw MSR value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Bits 30:0: VMCS revision identifier, to write into the first dword of
    /// VMXON and VMCS regions.
    pub const fn revision_id(self) -> u32 {
        bits(self.0, 30, 0) as u32
    }

    /// Bits 44:32: bytes to allocate for VMXON and VMCS regions (at most
    /// 4096).
    pub const fn vmcs_region_size(self) -> u32 {
        bits(self.0, 44, 32) as u32
    }

    /// Bit 48: VMXON/VMCS/MSEG/... physical addresses are limited to 32 bits.
    pub const fn physical_addresses_limited_to_32_bits(self) -> bool {
        bit(self.0, 48)
    }

    /// Bit 49: the dual-monitor treatment of SMIs and SMM is supported.
    pub const fn dual_monitor_smm(self) -> bool {
        bit(self.0, 49)
    }

    /// Bits 53:50: raw memory type the processor uses to access the VMCS and
    /// the structures it references (0 = UC, 6 = WB).
    pub const fn vmcs_memory_type_raw(self) -> u8 {
        bits(self.0, 53, 50) as u8
    }

    /// Bits 53:50 decoded; `None` for an encoding that is not a memory type.
    pub const fn vmcs_memory_type(self) -> Option<EptMemoryType> {
        let raw = self.vmcs_memory_type_raw();
        if raw > 7 {
            return None;
        }
        EptMemoryType::from_bits(raw)
    }

    /// Bit 54: INS/OUTS exits report VM-exit instruction information.
    pub const fn ins_outs_instruction_info(self) -> bool {
        bit(self.0, 54)
    }

    /// Bit 55: the `IA32_VMX_TRUE_*_CTLS` MSRs exist and some default-1
    /// controls may be 0.
    pub const fn true_controls(self) -> bool {
        bit(self.0, 55)
    }

    /// Bit 56: VM entry may deliver a hardware exception with or without an
    /// error code regardless of the vector (relaxes SDM 27.2.1.3).
    pub const fn entry_exception_error_code_relaxed(self) -> bool {
        bit(self.0, 56)
    }

    /// Bit 58: FRED nested-exception support; bit 13 of the VM-entry
    /// interruption-information field may then be 1 (SDM A.1).
    pub const fn nested_exception(self) -> bool {
        bit(self.0, 58)
    }
}

/// The allowed settings of one control word (SDM A.3-A.5, A.11).
///
/// A control bit set in `must_be_one` must be 1 (its "allowed 0-setting" is
/// not supported); a bit clear in `may_be_one` must be 0. 32-bit words come
/// from MSRs whose low half is the allowed 0-settings and high half the
/// allowed 1-settings; 64-bit words (tertiary, secondary exit, VM-function)
/// come from MSRs that hold only the allowed 1-settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AllowedSettings {
    /// Bits that must be 1.
    pub must_be_one: u64,
    /// Bits that may be 1; a bit clear here must be 0.
    pub may_be_one: u64,
}

/// Why a wanted control word could not be adjusted to the allowed settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ControlAdjustError {
    /// The caller asked for a control the processor does not allow to be 1.
    #[error("{} bit {bit} ({}) may not be 1 on this processor", kind.name(), bit_name.unwrap_or("unnamed"))]
    NotAllowedToBeOne {
        /// The control word.
        kind: ControlKind,
        /// The bit number within the word.
        bit: u32,
        /// The SDM name of the bit, when known.
        bit_name: Option<&'static str>,
    },
    /// The capability MSR says the bit must be 1 and also may not be 1, so
    /// no setting is valid (a corrupt or inconsistent capability value).
    #[error("{} bit {bit} ({}) is reported both must-be-1 and must-be-0", kind.name(), bit_name.unwrap_or("unnamed"))]
    ContradictoryCapability {
        /// The control word.
        kind: ControlKind,
        /// The bit number within the word.
        bit: u32,
        /// The SDM name of the bit, when known.
        bit_name: Option<&'static str>,
    },
}

impl ControlAdjustError {
    /// The control word the rejected bit belongs to.
    pub const fn kind(&self) -> ControlKind {
        match *self {
            Self::NotAllowedToBeOne { kind, .. } | Self::ContradictoryCapability { kind, .. } => {
                kind
            }
        }
    }

    /// The rejected bit number.
    pub const fn bit(&self) -> u32 {
        match *self {
            Self::NotAllowedToBeOne { bit, .. } | Self::ContradictoryCapability { bit, .. } => bit,
        }
    }

    /// The SDM name of the rejected bit, when known.
    pub const fn bit_name(&self) -> Option<&'static str> {
        match *self {
            Self::NotAllowedToBeOne { bit_name, .. }
            | Self::ContradictoryCapability { bit_name, .. } => bit_name,
        }
    }
}

/// Why a control word fails the VM-entry check against its capability MSR
/// (SDM 27.2.1.1, "reserved bits ... must be set properly").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ControlCheckError {
    /// A bit whose allowed 0-setting is not supported is 0.
    #[error("{} bit {bit} ({}) must be 1", kind.name(), bit_name.unwrap_or("unnamed"))]
    MustBeOne {
        /// The control word.
        kind: ControlKind,
        /// The bit number within the word.
        bit: u32,
        /// The SDM name of the bit, when known.
        bit_name: Option<&'static str>,
    },
    /// A bit whose allowed 1-setting is not supported is 1.
    #[error("{} bit {bit} ({}) must be 0", kind.name(), bit_name.unwrap_or("unnamed"))]
    MustBeZero {
        /// The control word.
        kind: ControlKind,
        /// The bit number within the word.
        bit: u32,
        /// The SDM name of the bit, when known.
        bit_name: Option<&'static str>,
    },
}

impl ControlCheckError {
    /// The control word the violating bit belongs to.
    pub const fn kind(&self) -> ControlKind {
        match *self {
            Self::MustBeOne { kind, .. } | Self::MustBeZero { kind, .. } => kind,
        }
    }

    /// The violating bit number.
    pub const fn bit(&self) -> u32 {
        match *self {
            Self::MustBeOne { bit, .. } | Self::MustBeZero { bit, .. } => bit,
        }
    }

    /// The SDM name of the violating bit, when known.
    pub const fn bit_name(&self) -> Option<&'static str> {
        match *self {
            Self::MustBeOne { bit_name, .. } | Self::MustBeZero { bit_name, .. } => bit_name,
        }
    }
}

/// A lookup from a bit number to its SDM name.
type BitNamer = fn(u32) -> Option<&'static str>;

/// The SDM name of bit `bit` of control word `kind`, when known.
fn control_bit_name(kind: ControlKind, bit: u32) -> Option<&'static str> {
    match kind {
        ControlKind::PinBased => PinBasedControls::bit_name(bit),
        ControlKind::PrimaryProcessorBased => PrimaryProcControls::bit_name(bit),
        ControlKind::SecondaryProcessorBased => SecondaryProcControls::bit_name(bit),
        ControlKind::TertiaryProcessorBased => TertiaryProcControls::bit_name(bit),
        ControlKind::PrimaryExit => ExitControls::bit_name(bit),
        ControlKind::SecondaryExit => SecondaryExitControls::bit_name(bit),
        ControlKind::Entry => EntryControls::bit_name(bit),
        ControlKind::VmFunction => VmFunctionControls::bit_name(bit),
    }
}

impl AllowedSettings {
    /// No control may be 1: the settings of a control word whose capability
    /// MSR does not exist (e.g. secondary controls on a processor without
    /// them; SDM 25.6.2: such controls are treated as 0).
    pub const NONE_ALLOWED: Self = Self {
        must_be_one: 0,
        may_be_one: 0,
    };

    /// Parses a 32-bit control MSR (A.3.1, A.3.2, A.3.3, A.4.1, A.5): bits
    /// 31:0 are the allowed 0-settings, bits 63:32 the allowed 1-settings.
    pub const fn from_split_msr(raw: u64) -> Self {
        Self {
            must_be_one: raw & 0xFFFF_FFFF,
            may_be_one: raw >> 32,
        }
    }

    /// Parses a 64-bit allowed-1 MSR (A.3.4 `PROCBASED_CTLS3`, A.4.2
    /// `EXIT_CTLS2`, A.11 VMFUNC): every bit may be 0, and a bit set in the MSR
    /// may be 1.
    pub const fn from_allowed1_msr(raw: u64) -> Self {
        Self {
            must_be_one: 0,
            may_be_one: raw,
        }
    }

    /// Whether bit `bit` may be 1.
    pub const fn allows_one(self, bit: u32) -> bool {
        bit < 64 && self.may_be_one & (1 << bit) != 0
    }

    /// Whether bit `bit` may be 0.
    pub const fn allows_zero(self, bit: u32) -> bool {
        bit >= 64 || self.must_be_one & (1 << bit) == 0
    }

    /// Adds the must-be-one bits to `wanted`; fails, naming the lowest bad
    /// bit, if `wanted` sets a bit that may not be 1. Never clears a wanted
    /// bit.
    ///
    /// # Errors
    ///
    /// [`ControlAdjustError::NotAllowedToBeOne`] for a wanted bit that may
    /// not be 1; [`ControlAdjustError::ContradictoryCapability`] if the
    /// capability requires a bit that it also forbids.
    pub fn adjust(self, kind: ControlKind, wanted: u64) -> Result<u64, ControlAdjustError> {
        self.adjust_named(kind, wanted, |bit| control_bit_name(kind, bit))
    }

    /// [`AllowedSettings::adjust`] with a caller-supplied bit namer.
    fn adjust_named(
        self,
        kind: ControlKind,
        wanted: u64,
        namer: impl Fn(u32) -> Option<&'static str>,
    ) -> Result<u64, ControlAdjustError> {
        let forbidden = wanted & !self.may_be_one;
        if forbidden != 0 {
            let bit = forbidden.trailing_zeros();
            return Err(ControlAdjustError::NotAllowedToBeOne {
                kind,
                bit,
                bit_name: namer(bit),
            });
        }
        let contradictory = self.must_be_one & !self.may_be_one;
        if contradictory != 0 {
            let bit = contradictory.trailing_zeros();
            return Err(ControlAdjustError::ContradictoryCapability {
                kind,
                bit,
                bit_name: namer(bit),
            });
        }
        Ok(wanted | self.must_be_one)
    }

    /// Checks `value` as VM entry would (SDM 27.2.1.1): reports the lowest
    /// bit that is 0 but must be 1, or is 1 but must be 0.
    ///
    /// # Errors
    ///
    /// [`ControlCheckError::MustBeOne`] or [`ControlCheckError::MustBeZero`]
    /// naming the lowest violating bit.
    pub fn check(self, kind: ControlKind, value: u64) -> Result<(), ControlCheckError> {
        self.check_named(kind, value, |bit| control_bit_name(kind, bit))
    }

    /// [`AllowedSettings::check`] with a caller-supplied bit namer.
    fn check_named(
        self,
        kind: ControlKind,
        value: u64,
        namer: impl Fn(u32) -> Option<&'static str>,
    ) -> Result<(), ControlCheckError> {
        let missing = self.must_be_one & !value;
        let forbidden = value & !self.may_be_one;
        let violations = missing | forbidden;
        if violations == 0 {
            return Ok(());
        }
        let bit = violations.trailing_zeros();
        let bit_name = namer(bit);
        if missing & (1 << bit) != 0 {
            Err(ControlCheckError::MustBeOne {
                kind,
                bit,
                bit_name,
            })
        } else {
            Err(ControlCheckError::MustBeZero {
                kind,
                bit,
                bit_name,
            })
        }
    }
}

/// `IA32_VMX_MISC` (MSR 0x485), SDM A.6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VmxMisc(u64);

impl VmxMisc {
    /// Wraps a raw `IA32_VMX_MISC` value.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw MSR value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Bits 4:0: the VMX-preemption timer counts down by 1 every time bit X
    /// of the TSC changes, where X is this value.
    pub const fn preemption_timer_tsc_shift(self) -> u8 {
        bits(self.0, 4, 0) as u8
    }

    /// Bit 5: VM exits store EFER.LMA into the "IA-32e mode guest" entry
    /// control.
    pub const fn stores_efer_lma_on_exit(self) -> bool {
        bit(self.0, 5)
    }

    /// Bit 6: the HLT activity state is supported.
    pub const fn activity_hlt(self) -> bool {
        bit(self.0, 6)
    }

    /// Bit 7: the shutdown activity state is supported.
    pub const fn activity_shutdown(self) -> bool {
        bit(self.0, 7)
    }

    /// Bit 8: the wait-for-SIPI activity state is supported.
    pub const fn activity_wait_for_sipi(self) -> bool {
        bit(self.0, 8)
    }

    /// Bit 14: Intel PT may be used in VMX operation.
    pub const fn intel_pt_in_vmx(self) -> bool {
        bit(self.0, 14)
    }

    /// Bit 15: RDMSR may read `IA32_SMBASE` in SMM.
    pub const fn rdmsr_smbase_in_smm(self) -> bool {
        bit(self.0, 15)
    }

    /// Bits 24:16: number of CR3-target values supported.
    pub const fn cr3_target_count(self) -> u16 {
        bits(self.0, 24, 16) as u16
    }

    /// Bits 27:25: the raw MSR-list size field N.
    pub const fn msr_list_size_field(self) -> u8 {
        bits(self.0, 27, 25) as u8
    }

    /// Recommended maximum number of entries in each VM-exit/VM-entry MSR
    /// list: 512 * (N + 1).
    pub const fn max_msr_list_entries(self) -> u32 {
        512 * (self.msr_list_size_field() as u32 + 1)
    }

    /// Bit 28: bit 2 of `IA32_SMM_MONITOR_CTL` can be set (VMXOFF unblocks
    /// SMIs).
    pub const fn smm_vmxoff_unblocks_smi(self) -> bool {
        bit(self.0, 28)
    }

    /// Bit 29: VMWRITE may write any supported field, including the
    /// VM-exit information fields.
    pub const fn vmwrite_any_field(self) -> bool {
        bit(self.0, 29)
    }

    /// Bit 30: VM entry may inject a software interrupt, software exception
    /// or privileged software exception with instruction length 0.
    pub const fn zero_length_injection(self) -> bool {
        bit(self.0, 30)
    }

    /// Bits 63:32: MSEG revision identifier.
    pub const fn mseg_revision(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// Where a register value breaks the FIXED0/FIXED1 rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FixedBitViolation {
    /// The bit number.
    pub bit: u32,
    /// `true`: the bit must be 1 but is 0; `false`: it must be 0 but is 1.
    pub required: bool,
}

/// The fixed bits of CR0 or CR4 in VMX operation (SDM A.7, A.8).
///
/// A bit set in FIXED0 must be 1; a bit clear in FIXED1 must be 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FixedBits {
    /// `IA32_VMX_CRn_FIXED0`: bits that must be 1.
    pub fixed0: u64,
    /// `IA32_VMX_CRn_FIXED1`: bits that may be 1.
    pub fixed1: u64,
}

impl FixedBits {
    /// Pairs a FIXED0 and a FIXED1 value.
    pub const fn new(fixed0: u64, fixed1: u64) -> Self {
        Self { fixed0, fixed1 }
    }

    /// Bits that must be 1.
    pub const fn must_be_one(self) -> u64 {
        self.fixed0
    }

    /// Bits that must be 0.
    pub const fn must_be_zero(self) -> u64 {
        !self.fixed1
    }

    /// `value` with the must-be-1 bits set and the must-be-0 bits cleared.
    pub const fn apply(self, value: u64) -> u64 {
        (value | self.fixed0) & self.fixed1
    }

    /// The same rule with the bits of `mask` made free (e.g. CR0.PE and
    /// CR0.PG for an unrestricted guest, SDM 27.3.1.1).
    #[must_use]
    pub const fn freeing(self, mask: u64) -> Self {
        Self {
            fixed0: self.fixed0 & !mask,
            fixed1: self.fixed1 | mask,
        }
    }

    /// The lowest bit of `value` that breaks the rule, if any.
    pub const fn first_violation(self, value: u64) -> Option<FixedBitViolation> {
        let missing = self.fixed0 & !value;
        let forbidden = value & !self.fixed1;
        let violations = missing | forbidden;
        if violations == 0 {
            return None;
        }
        let bit = violations.trailing_zeros();
        Some(FixedBitViolation {
            bit,
            required: missing & (1 << bit) != 0,
        })
    }
}

/// `IA32_VMX_VMCS_ENUM` (MSR 0x48A), SDM A.9.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VmcsEnum(u64);

impl VmcsEnum {
    /// Wraps a raw `IA32_VMX_VMCS_ENUM` value.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw MSR value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Bits 9:1: the highest index value used in any VMCS field encoding.
    pub const fn highest_index(self) -> u16 {
        bits(self.0, 9, 1) as u16
    }
}

/// `IA32_VMX_EPT_VPID_CAP` (MSR 0x48C), SDM A.10.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EptVpidCap(u64);

impl EptVpidCap {
    /// Wraps a raw `IA32_VMX_EPT_VPID_CAP` value.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw MSR value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Bit 0: execute-only EPT translations (bits 2:0 = 100b) are allowed.
    pub const fn execute_only(self) -> bool {
        bit(self.0, 0)
    }

    /// Bit 6: a page-walk length of 4 is supported.
    pub const fn page_walk_length_4(self) -> bool {
        bit(self.0, 6)
    }

    /// Bit 7: a page-walk length of 5 is supported.
    pub const fn page_walk_length_5(self) -> bool {
        bit(self.0, 7)
    }

    /// Bit 8: the EPT paging structures may be uncacheable (EPTP type 0).
    pub const fn memory_type_uc(self) -> bool {
        bit(self.0, 8)
    }

    /// Bit 14: the EPT paging structures may be write-back (EPTP type 6).
    pub const fn memory_type_wb(self) -> bool {
        bit(self.0, 14)
    }

    /// Bit 16: a PDE may map a 2-MByte page.
    pub const fn pages_2m(self) -> bool {
        bit(self.0, 16)
    }

    /// Bit 17: a PDPTE may map a 1-GByte page.
    pub const fn pages_1g(self) -> bool {
        bit(self.0, 17)
    }

    /// Bit 20: INVEPT is supported.
    pub const fn invept(self) -> bool {
        bit(self.0, 20)
    }

    /// Bit 21: EPT accessed and dirty flags are supported.
    pub const fn accessed_dirty(self) -> bool {
        bit(self.0, 21)
    }

    /// Bit 22: EPT violations report advanced exit information.
    pub const fn advanced_violation_info(self) -> bool {
        bit(self.0, 22)
    }

    /// Bit 23: supervisor shadow-stack control (EPTP bit 7) is supported.
    pub const fn supervisor_shadow_stack(self) -> bool {
        bit(self.0, 23)
    }

    /// Bit 25: the single-context INVEPT type is supported.
    pub const fn invept_single_context(self) -> bool {
        bit(self.0, 25)
    }

    /// Bit 26: the all-context INVEPT type is supported.
    pub const fn invept_all_context(self) -> bool {
        bit(self.0, 26)
    }

    /// Bit 32: INVVPID is supported.
    pub const fn invvpid(self) -> bool {
        bit(self.0, 32)
    }

    /// Bit 40: the individual-address INVVPID type is supported.
    pub const fn invvpid_individual_address(self) -> bool {
        bit(self.0, 40)
    }

    /// Bit 41: the single-context INVVPID type is supported.
    pub const fn invvpid_single_context(self) -> bool {
        bit(self.0, 41)
    }

    /// Bit 42: the all-context INVVPID type is supported.
    pub const fn invvpid_all_context(self) -> bool {
        bit(self.0, 42)
    }

    /// Bit 43: the single-context-retaining-globals INVVPID type is
    /// supported.
    pub const fn invvpid_single_context_retaining_globals(self) -> bool {
        bit(self.0, 43)
    }

    /// Bits 53:48: maximum HLAT prefix size.
    pub const fn max_hlat_prefix_size(self) -> u8 {
        bits(self.0, 53, 48) as u8
    }
}

/// The raw values of the VMX capability MSRs, one field per MSR.
///
/// A field for an MSR the processor does not implement is ignored by
/// [`VmxCapabilities::from_raw`], so 0 is a fine placeholder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RawVmxMsrs {
    /// `IA32_VMX_BASIC` (0x480).
    pub basic: u64,
    /// `IA32_VMX_PINBASED_CTLS` (0x481).
    pub pinbased_ctls: u64,
    /// `IA32_VMX_PROCBASED_CTLS` (0x482).
    pub procbased_ctls: u64,
    /// `IA32_VMX_EXIT_CTLS` (0x483).
    pub exit_ctls: u64,
    /// `IA32_VMX_ENTRY_CTLS` (0x484).
    pub entry_ctls: u64,
    /// `IA32_VMX_MISC` (0x485).
    pub misc: u64,
    /// `IA32_VMX_CR0_FIXED0` (0x486).
    pub cr0_fixed0: u64,
    /// `IA32_VMX_CR0_FIXED1` (0x487).
    pub cr0_fixed1: u64,
    /// `IA32_VMX_CR4_FIXED0` (0x488).
    pub cr4_fixed0: u64,
    /// `IA32_VMX_CR4_FIXED1` (0x489).
    pub cr4_fixed1: u64,
    /// `IA32_VMX_VMCS_ENUM` (0x48A).
    pub vmcs_enum: u64,
    /// `IA32_VMX_PROCBASED_CTLS2` (0x48B).
    pub procbased_ctls2: u64,
    /// `IA32_VMX_EPT_VPID_CAP` (0x48C).
    pub ept_vpid_cap: u64,
    /// `IA32_VMX_TRUE_PINBASED_CTLS` (0x48D).
    pub true_pinbased_ctls: u64,
    /// `IA32_VMX_TRUE_PROCBASED_CTLS` (0x48E).
    pub true_procbased_ctls: u64,
    /// `IA32_VMX_TRUE_EXIT_CTLS` (0x48F).
    pub true_exit_ctls: u64,
    /// `IA32_VMX_TRUE_ENTRY_CTLS` (0x490).
    pub true_entry_ctls: u64,
    /// `IA32_VMX_VMFUNC` (0x491).
    pub vmfunc: u64,
    /// `IA32_VMX_PROCBASED_CTLS3` (0x492).
    pub procbased_ctls3: u64,
    /// `IA32_VMX_EXIT_CTLS2` (0x493).
    pub exit_ctls2: u64,
}

/// Reading the capability MSRs failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CapabilityReadError {
    /// The reader could not read an MSR that the SDM says exists on this
    /// processor (given BASIC and the control MSRs already read).
    #[error("could not read {} ({:#x}), which the processor reports as present", msr.name(), msr.index())]
    MsrUnreadable {
        /// The MSR that could not be read.
        msr: VmxMsr,
    },
}

impl RawVmxMsrs {
    /// The raw value held for `msr`.
    pub const fn get(&self, msr: VmxMsr) -> u64 {
        match msr {
            VmxMsr::Basic => self.basic,
            VmxMsr::PinBasedCtls => self.pinbased_ctls,
            VmxMsr::ProcBasedCtls => self.procbased_ctls,
            VmxMsr::ExitCtls => self.exit_ctls,
            VmxMsr::EntryCtls => self.entry_ctls,
            VmxMsr::Misc => self.misc,
            VmxMsr::Cr0Fixed0 => self.cr0_fixed0,
            VmxMsr::Cr0Fixed1 => self.cr0_fixed1,
            VmxMsr::Cr4Fixed0 => self.cr4_fixed0,
            VmxMsr::Cr4Fixed1 => self.cr4_fixed1,
            VmxMsr::VmcsEnum => self.vmcs_enum,
            VmxMsr::ProcBasedCtls2 => self.procbased_ctls2,
            VmxMsr::EptVpidCap => self.ept_vpid_cap,
            VmxMsr::TruePinBasedCtls => self.true_pinbased_ctls,
            VmxMsr::TrueProcBasedCtls => self.true_procbased_ctls,
            VmxMsr::TrueExitCtls => self.true_exit_ctls,
            VmxMsr::TrueEntryCtls => self.true_entry_ctls,
            VmxMsr::VmFunc => self.vmfunc,
            VmxMsr::ProcBasedCtls3 => self.procbased_ctls3,
            VmxMsr::ExitCtls2 => self.exit_ctls2,
        }
    }

    /// Sets the raw value held for `msr`.
    pub const fn set(&mut self, msr: VmxMsr, value: u64) {
        let slot = match msr {
            VmxMsr::Basic => &mut self.basic,
            VmxMsr::PinBasedCtls => &mut self.pinbased_ctls,
            VmxMsr::ProcBasedCtls => &mut self.procbased_ctls,
            VmxMsr::ExitCtls => &mut self.exit_ctls,
            VmxMsr::EntryCtls => &mut self.entry_ctls,
            VmxMsr::Misc => &mut self.misc,
            VmxMsr::Cr0Fixed0 => &mut self.cr0_fixed0,
            VmxMsr::Cr0Fixed1 => &mut self.cr0_fixed1,
            VmxMsr::Cr4Fixed0 => &mut self.cr4_fixed0,
            VmxMsr::Cr4Fixed1 => &mut self.cr4_fixed1,
            VmxMsr::VmcsEnum => &mut self.vmcs_enum,
            VmxMsr::ProcBasedCtls2 => &mut self.procbased_ctls2,
            VmxMsr::EptVpidCap => &mut self.ept_vpid_cap,
            VmxMsr::TruePinBasedCtls => &mut self.true_pinbased_ctls,
            VmxMsr::TrueProcBasedCtls => &mut self.true_procbased_ctls,
            VmxMsr::TrueExitCtls => &mut self.true_exit_ctls,
            VmxMsr::TrueEntryCtls => &mut self.true_entry_ctls,
            VmxMsr::VmFunc => &mut self.vmfunc,
            VmxMsr::ProcBasedCtls3 => &mut self.procbased_ctls3,
            VmxMsr::ExitCtls2 => &mut self.exit_ctls2,
        };
        *slot = value;
    }

    /// Whether `msr` exists according to the values already held for the
    /// MSRs that enumerate it (SDM A.1, A.3.2-A.3.4, A.4.2, A.10, A.11).
    ///
    /// BASIC, the five original control MSRs, MISC, the CR0/CR4 fixed MSRs
    /// and `VMCS_ENUM` always exist on a VMX processor.
    pub const fn msr_exists(&self, msr: VmxMsr) -> bool {
        let primary_allowed1 = self.procbased_ctls >> 32;
        let secondary_allowed1 = if bit(primary_allowed1, PROC_ACTIVATE_SECONDARY) {
            self.procbased_ctls2 >> 32
        } else {
            0
        };
        match msr {
            VmxMsr::Basic
            | VmxMsr::PinBasedCtls
            | VmxMsr::ProcBasedCtls
            | VmxMsr::ExitCtls
            | VmxMsr::EntryCtls
            | VmxMsr::Misc
            | VmxMsr::Cr0Fixed0
            | VmxMsr::Cr0Fixed1
            | VmxMsr::Cr4Fixed0
            | VmxMsr::Cr4Fixed1
            | VmxMsr::VmcsEnum => true,
            // A.3.3: exists only if IA32_VMX_PROCBASED_CTLS[63] is 1.
            VmxMsr::ProcBasedCtls2 => bit(primary_allowed1, PROC_ACTIVATE_SECONDARY),
            // A.10: exists only if "enable EPT" or "enable VPID" may be 1.
            VmxMsr::EptVpidCap => {
                bit(secondary_allowed1, PROC2_ENABLE_EPT)
                    || bit(secondary_allowed1, PROC2_ENABLE_VPID)
            }
            // A.2: the TRUE_ MSRs exist only if IA32_VMX_BASIC[55] is 1.
            VmxMsr::TruePinBasedCtls
            | VmxMsr::TrueProcBasedCtls
            | VmxMsr::TrueExitCtls
            | VmxMsr::TrueEntryCtls => VmxBasic::from_raw(self.basic).true_controls(),
            // A.11: exists only if "enable VM functions" may be 1.
            VmxMsr::VmFunc => bit(secondary_allowed1, PROC2_ENABLE_VMFUNC),
            // A.3.4: exists only if IA32_VMX_PROCBASED_CTLS[49] is 1.
            VmxMsr::ProcBasedCtls3 => bit(primary_allowed1, PROC_ACTIVATE_TERTIARY),
            // A.4.2: exists only if IA32_VMX_EXIT_CTLS[63] is 1.
            VmxMsr::ExitCtls2 => bit(self.exit_ctls >> 32, EXIT_ACTIVATE_SECONDARY),
        }
    }

    /// Reads every capability MSR that exists through `read` (an RDMSR that
    /// returns `None` on #GP), in index order so that enumerating MSRs are
    /// read before the ones they enumerate. MSRs that do not exist are left 0
    /// and never passed to `read`.
    ///
    /// # Errors
    ///
    /// [`CapabilityReadError::MsrUnreadable`] if an MSR that exists could not
    /// be read.
    pub fn read_from(
        mut read: impl FnMut(VmxMsr) -> Option<u64>,
    ) -> Result<Self, CapabilityReadError> {
        let mut raw = Self::default();
        for msr in VmxMsr::ALL {
            if raw.msr_exists(msr) {
                let value = read(msr).ok_or(CapabilityReadError::MsrUnreadable { msr })?;
                raw.set(msr, value);
            }
        }
        Ok(raw)
    }
}

/// Everything the VMX capability MSRs report (SDM Appendix A), with the
/// TRUE_ MSRs already folded into the effective control settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VmxCapabilities {
    /// `IA32_VMX_BASIC`.
    pub basic: VmxBasic,
    /// Pin-based VM-execution controls (`TRUE_PINBASED` when available).
    pub pin_based: AllowedSettings,
    /// Primary processor-based controls (`TRUE_PROCBASED` when available).
    pub primary_proc: AllowedSettings,
    /// Secondary processor-based controls; none allowed if absent.
    pub secondary_proc: AllowedSettings,
    /// Tertiary processor-based controls; none allowed if absent.
    pub tertiary_proc: AllowedSettings,
    /// Primary VM-exit controls (`TRUE_EXIT` when available).
    pub primary_exit: AllowedSettings,
    /// Secondary VM-exit controls; none allowed if absent.
    pub secondary_exit: AllowedSettings,
    /// VM-entry controls (`TRUE_ENTRY` when available).
    pub entry: AllowedSettings,
    /// `IA32_VMX_MISC`.
    pub misc: VmxMisc,
    /// CR0 fixed bits.
    pub cr0_fixed: FixedBits,
    /// CR4 fixed bits.
    pub cr4_fixed: FixedBits,
    /// `IA32_VMX_VMCS_ENUM`.
    pub vmcs_enum: VmcsEnum,
    /// `IA32_VMX_EPT_VPID_CAP`; 0 if absent.
    pub ept_vpid: EptVpidCap,
    /// VM-function controls; none allowed if absent.
    pub vm_functions: AllowedSettings,
}

impl VmxCapabilities {
    /// Interprets raw MSR values, ignoring the values of MSRs that do not
    /// exist per [`RawVmxMsrs::msr_exists`], and using the TRUE_ control
    /// MSRs for the allowed 0-settings when `IA32_VMX_BASIC[55]` is 1
    /// (SDM A.2).
    pub const fn from_raw(raw: &RawVmxMsrs) -> Self {
        let basic = VmxBasic::from_raw(raw.basic);
        let true_controls = basic.true_controls();
        Self {
            basic,
            pin_based: Self::effective(true_controls, raw.pinbased_ctls, raw.true_pinbased_ctls),
            primary_proc: Self::effective(
                true_controls,
                raw.procbased_ctls,
                raw.true_procbased_ctls,
            ),
            secondary_proc: if raw.msr_exists(VmxMsr::ProcBasedCtls2) {
                AllowedSettings::from_split_msr(raw.procbased_ctls2)
            } else {
                AllowedSettings::NONE_ALLOWED
            },
            tertiary_proc: Self::allowed1_if_present(raw, VmxMsr::ProcBasedCtls3),
            primary_exit: Self::effective(true_controls, raw.exit_ctls, raw.true_exit_ctls),
            secondary_exit: Self::allowed1_if_present(raw, VmxMsr::ExitCtls2),
            entry: Self::effective(true_controls, raw.entry_ctls, raw.true_entry_ctls),
            misc: VmxMisc::from_raw(raw.misc),
            cr0_fixed: FixedBits::new(raw.cr0_fixed0, raw.cr0_fixed1),
            cr4_fixed: FixedBits::new(raw.cr4_fixed0, raw.cr4_fixed1),
            vmcs_enum: VmcsEnum::from_raw(raw.vmcs_enum),
            ept_vpid: EptVpidCap::from_raw(if raw.msr_exists(VmxMsr::EptVpidCap) {
                raw.ept_vpid_cap
            } else {
                0
            }),
            vm_functions: Self::allowed1_if_present(raw, VmxMsr::VmFunc),
        }
    }

    /// The effective settings of a 32-bit control word: from the TRUE_ MSR
    /// when `IA32_VMX_BASIC[55]` is 1, else from the original MSR (SDM A.2).
    const fn effective(true_controls: bool, plain: u64, true_msr: u64) -> AllowedSettings {
        AllowedSettings::from_split_msr(if true_controls { true_msr } else { plain })
    }

    /// The settings of a 64-bit control word, or none allowed if its MSR
    /// does not exist.
    const fn allowed1_if_present(raw: &RawVmxMsrs, msr: VmxMsr) -> AllowedSettings {
        if raw.msr_exists(msr) {
            AllowedSettings::from_allowed1_msr(raw.get(msr))
        } else {
            AllowedSettings::NONE_ALLOWED
        }
    }

    /// Reads the capabilities through `read` (an RDMSR returning `None` on
    /// #GP), asking only for MSRs that exist (see [`RawVmxMsrs::read_from`]).
    ///
    /// # Errors
    ///
    /// [`CapabilityReadError::MsrUnreadable`] if an MSR that exists could not
    /// be read.
    pub fn from_reader(
        read: impl FnMut(VmxMsr) -> Option<u64>,
    ) -> Result<Self, CapabilityReadError> {
        RawVmxMsrs::read_from(read).map(|raw| Self::from_raw(&raw))
    }

    /// The raw MSR values read from Bochs 2.7 with `cpu: model=corei7_skylake_x`
    /// (`IA32_VMX_EXIT_CTLS2` does not exist there and is 0).
    pub const BOCHS_SKYLAKE_X_RAW: RawVmxMsrs = RawVmxMsrs {
        basic: 0x00d8_1000_0000_002b,
        pinbased_ctls: 0x0000_007f_0000_0016,
        procbased_ctls: 0xf7f9_fffe_0401_e172,
        exit_ctls: 0x007f_ffff_0003_6dff,
        entry_ctls: 0x0000_ffff_0000_11ff,
        misc: 0x0000_0000_6004_01e0,
        cr0_fixed0: 0x8000_0021,
        cr0_fixed1: 0xffff_ffff,
        cr4_fixed0: 0x2000,
        cr4_fixed1: 0x0037_27ff,
        vmcs_enum: 0x34,
        procbased_ctls2: 0x0217_7fff_0000_0000,
        ept_vpid_cap: 0x0000_0f01_0633_4141,
        true_pinbased_ctls: 0x0000_007f_0000_0016,
        true_procbased_ctls: 0xf7f9_fffe_0400_6172,
        true_exit_ctls: 0x007f_ffff_0003_6dfb,
        true_entry_ctls: 0x0000_ffff_0000_11fb,
        vmfunc: 0x1,
        procbased_ctls3: 0,
        exit_ctls2: 0,
    };

    /// The capabilities of Bochs 2.7's `corei7_skylake_x` CPU model: a
    /// realistic fixture for tests (raw values in [`Self::BOCHS_SKYLAKE_X_RAW`]).
    pub const fn bochs_skylake_x() -> Self {
        Self::from_raw(&Self::BOCHS_SKYLAKE_X_RAW)
    }

    /// The effective allowed settings of control word `kind`.
    pub const fn allowed(&self, kind: ControlKind) -> AllowedSettings {
        match kind {
            ControlKind::PinBased => self.pin_based,
            ControlKind::PrimaryProcessorBased => self.primary_proc,
            ControlKind::SecondaryProcessorBased => self.secondary_proc,
            ControlKind::TertiaryProcessorBased => self.tertiary_proc,
            ControlKind::PrimaryExit => self.primary_exit,
            ControlKind::SecondaryExit => self.secondary_exit,
            ControlKind::Entry => self.entry,
            ControlKind::VmFunction => self.vm_functions,
        }
    }

    /// Adds the must-be-one bits of `C`'s word to `wanted`; fails naming the
    /// first wanted bit that may not be 1. Never clears a wanted bit.
    ///
    /// # Errors
    ///
    /// See [`AllowedSettings::adjust`]; the error carries `C::bit_name`.
    pub fn adjust<C: ControlWord>(&self, wanted: C) -> Result<C, ControlAdjustError> {
        let namer: BitNamer = C::bit_name;
        self.allowed(C::KIND)
            .adjust_named(C::KIND, wanted.to_raw(), namer)
            .map(C::from_raw)
    }

    /// Checks a control word as VM entry does (SDM 27.2.1.1).
    ///
    /// # Errors
    ///
    /// See [`AllowedSettings::check`]; the error carries `C::bit_name`.
    pub fn check<C: ControlWord>(&self, value: C) -> Result<(), ControlCheckError> {
        let namer: BitNamer = C::bit_name;
        self.allowed(C::KIND)
            .check_named(C::KIND, value.to_raw(), namer)
    }

    /// Whether the secondary processor-based controls may be activated.
    pub const fn supports_secondary_controls(&self) -> bool {
        self.primary_proc.allows_one(PROC_ACTIVATE_SECONDARY)
    }

    /// Whether the tertiary processor-based controls may be activated.
    pub const fn supports_tertiary_controls(&self) -> bool {
        self.primary_proc.allows_one(PROC_ACTIVATE_TERTIARY)
    }

    /// Whether the secondary VM-exit controls may be activated.
    pub const fn supports_secondary_exit_controls(&self) -> bool {
        self.primary_exit.allows_one(EXIT_ACTIVATE_SECONDARY)
    }

    /// Whether "enable EPT" may be 1.
    pub const fn supports_ept(&self) -> bool {
        self.secondary_proc.allows_one(PROC2_ENABLE_EPT)
    }

    /// Whether "enable VPID" may be 1.
    pub const fn supports_vpid(&self) -> bool {
        self.secondary_proc.allows_one(PROC2_ENABLE_VPID)
    }

    /// Whether "unrestricted guest" may be 1 (it also needs EPT in use).
    pub const fn supports_unrestricted_guest(&self) -> bool {
        self.secondary_proc.allows_one(PROC2_UNRESTRICTED_GUEST)
    }

    /// Whether VMCS shadowing may be used.
    pub const fn supports_vmcs_shadowing(&self) -> bool {
        self.secondary_proc.allows_one(PROC2_VMCS_SHADOWING)
    }

    /// Whether page-modification logging may be used.
    pub const fn supports_pml(&self) -> bool {
        self.secondary_proc.allows_one(PROC2_ENABLE_PML)
    }

    /// Whether EPT violations may be converted to #VE.
    pub const fn supports_ept_violation_ve(&self) -> bool {
        self.secondary_proc.allows_one(PROC2_EPT_VIOLATION_VE)
    }

    /// Whether "mode-based execute control for EPT" may be 1.
    pub const fn supports_mode_based_execute(&self) -> bool {
        self.secondary_proc.allows_one(PROC2_MODE_BASED_EXECUTE)
    }

    /// Whether VM functions may be enabled.
    pub const fn supports_vm_functions(&self) -> bool {
        self.secondary_proc.allows_one(PROC2_ENABLE_VMFUNC)
    }

    /// Whether VM function 0 (EPTP switching) may be enabled.
    pub const fn supports_eptp_switching(&self) -> bool {
        self.supports_vm_functions() && self.vm_functions.allows_one(VMFUNC_EPTP_SWITCHING)
    }

    /// Whether the VMX-preemption timer may be activated.
    pub const fn supports_preemption_timer(&self) -> bool {
        self.pin_based.allows_one(PIN_PREEMPTION_TIMER)
    }

    /// Whether posted interrupts may be processed.
    pub const fn supports_posted_interrupts(&self) -> bool {
        self.pin_based.allows_one(PIN_POSTED_INTERRUPTS)
    }

    /// Whether `IA32_VMX_BASIC[55]` reports the TRUE_ control MSRs.
    pub const fn has_true_controls(&self) -> bool {
        self.basic.true_controls()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_extraction() {
        assert_eq!(bits(0xABCD, 7, 4), 0xC);
        assert_eq!(bits(u64::MAX, 63, 0), u64::MAX);
        assert_eq!(bits(u64::MAX, 63, 63), 1);
    }

    #[test]
    fn absent_msrs_are_ignored() {
        // No secondary controls: PROCBASED_CTLS2 and EPT_VPID_CAP values are
        // meaningless and must not leak into the capabilities.
        let raw = RawVmxMsrs {
            procbased_ctls: 0x7fff_ffff_0000_0000,
            procbased_ctls2: u64::MAX,
            ept_vpid_cap: u64::MAX,
            vmfunc: u64::MAX,
            true_pinbased_ctls: u64::MAX,
            ..RawVmxMsrs::default()
        };
        let caps = VmxCapabilities::from_raw(&raw);
        assert_eq!(caps.secondary_proc, AllowedSettings::NONE_ALLOWED);
        assert_eq!(caps.ept_vpid.raw(), 0);
        assert_eq!(caps.vm_functions, AllowedSettings::NONE_ALLOWED);
        assert_eq!(caps.pin_based, AllowedSettings::default());
        assert!(!caps.supports_ept());
    }

    #[test]
    fn reader_asks_only_for_existing_msrs() {
        let raw = VmxCapabilities::BOCHS_SKYLAKE_X_RAW;
        let mut asked = std::vec::Vec::new();
        let caps = VmxCapabilities::from_reader(|msr| {
            asked.push(msr);
            Some(raw.get(msr))
        })
        .expect("all present MSRs readable");
        assert_eq!(caps, VmxCapabilities::bochs_skylake_x());
        assert!(!asked.contains(&VmxMsr::ProcBasedCtls3));
        assert!(!asked.contains(&VmxMsr::ExitCtls2));
        assert!(asked.contains(&VmxMsr::VmFunc));
        assert!(asked.contains(&VmxMsr::TrueEntryCtls));
        assert_eq!(asked.len(), 18);
    }

    #[test]
    fn reader_failure_names_the_msr() {
        let raw = VmxCapabilities::BOCHS_SKYLAKE_X_RAW;
        let result =
            VmxCapabilities::from_reader(|msr| (msr != VmxMsr::EptVpidCap).then(|| raw.get(msr)));
        assert_eq!(
            result,
            Err(CapabilityReadError::MsrUnreadable {
                msr: VmxMsr::EptVpidCap
            })
        );
    }

    #[test]
    fn contradictory_capability_is_reported() {
        let allowed = AllowedSettings {
            must_be_one: 0b100,
            may_be_one: 0b011,
        };
        let err = allowed.adjust(ControlKind::Entry, 0b001).unwrap_err();
        assert_eq!(
            err,
            ControlAdjustError::ContradictoryCapability {
                kind: ControlKind::Entry,
                bit: 2,
                bit_name: control_bit_name(ControlKind::Entry, 2),
            }
        );
    }
}
