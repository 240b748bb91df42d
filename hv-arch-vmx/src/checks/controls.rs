//! Checks on the VMX controls (SDM Vol. 3C 27.2.1): the VM-execution
//! (27.2.1.1), VM-exit (27.2.1.2) and VM-entry (27.2.1.3) control fields.
//!
//! A failure makes VMLAUNCH/VMRESUME fail with VMfailValid(7), "VM entry
//! with invalid control field(s)". [`check_controls`] runs the checks in the
//! order the SDM lists them and reports the first that fails.
//!
//! Controls that are not activated are treated as 0 by every later check:
//! the secondary processor-based controls when "activate secondary controls"
//! is 0, the tertiary ones when "activate tertiary controls" is 0, the
//! secondary VM-exit controls when the primary exit control "activate
//! secondary controls" is 0, and the VM-function controls when "enable VM
//! functions" is 0 (SDM 25.6.2, 25.7.1, 27.2.1.1).
//!
//! # Checks not performed here
//!
//! - "TPR threshold bits 3:0 must not exceed bits 7:4 of VTPR" (use TPR
//!   shadow = 1, virtualize APIC accesses = 0, virtual-interrupt delivery =
//!   0): VTPR is byte 80H of the virtual-APIC page, which is in memory, not
//!   in the VMCS. The caller must read it and compare.
//! - The VM-entry checks on processors in SMM (SDM 27.2.1.3: "entry to SMM"
//!   and "deactivate dual-monitor treatment" may both be 1 only in SMM):
//!   [`EntryContext`] describes a processor outside SMM, so both controls
//!   are required to be 0.
//! - "HLAT prefix size" and PASID-translation address checks, and the
//!   FRED-specific event-injection rules (injected-event data, nested
//!   exception bit beyond its reserved-bit treatment): not confirmed against
//!   the current SDM text, so not enforced rather than guessed.

use super::EntryContext;
use super::util::{EffectiveControls, read};
use crate::capabilities::{ControlCheckError, VmxCapabilities};
use crate::controls::{
    ControlKind, ControlWord, EntryControls, ExceptionVector, ExitControls, PinBasedControls,
    PrimaryProcControls, SecondaryExitControls, SecondaryProcControls, TertiaryProcControls,
    VmFunctionControls,
};
use crate::ept::{Eptp, EptpError};
use crate::interruption::{InterruptionInfo, InterruptionType};
use crate::registers::Cr0;
use crate::vmcs::{VmcsField, VmcsRead};

/// A failed check on the VMX controls (SDM 27.2.1), naming the SDM rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlCheck {
    // ---- SDM 27.2.1.1: VM-execution control fields ----------------------
    /// A control word sets a reserved bit to an unsupported value (checked
    /// against the VMX capability MSRs, SDM A.3-A.5, A.11).
    #[error("reserved bits in the control fields must be set properly: {0}")]
    ReservedControlBit(ControlCheckError),
    /// The CR3-target count exceeds `IA32_VMX_MISC[24:16]`.
    #[error("the CR3-target count ({count}) must not be greater than {max}")]
    Cr3TargetCountTooLarge {
        /// The CR3-target count field.
        count: u32,
        /// The number of CR3-target values the processor supports.
        max: u16,
    },
    /// "use I/O bitmaps" = 1 and I/O bitmap A is not 4-KiB aligned or lies
    /// beyond MAXPHYADDR.
    #[error(
        "I/O bitmap A address {address:#x} must be 4-KByte aligned and within the physical-address width"
    )]
    IoBitmapAAddressInvalid {
        /// The address.
        address: u64,
    },
    /// "use I/O bitmaps" = 1 and I/O bitmap B is not 4-KiB aligned or lies
    /// beyond MAXPHYADDR.
    #[error(
        "I/O bitmap B address {address:#x} must be 4-KByte aligned and within the physical-address width"
    )]
    IoBitmapBAddressInvalid {
        /// The address.
        address: u64,
    },
    /// "use MSR bitmaps" = 1 and the MSR-bitmap address is invalid.
    #[error(
        "MSR-bitmap address {address:#x} must be 4-KByte aligned and within the physical-address width"
    )]
    MsrBitmapAddressInvalid {
        /// The address.
        address: u64,
    },
    /// "use TPR shadow" = 1 and the virtual-APIC address is invalid.
    #[error(
        "virtual-APIC address {address:#x} must be 4-KByte aligned and within the physical-address width"
    )]
    VirtualApicAddressInvalid {
        /// The address.
        address: u64,
    },
    /// "use TPR shadow" = 1, "virtual-interrupt delivery" = 0 and TPR
    /// threshold bits 31:4 are not 0.
    #[error(
        "bits 31:4 of the TPR threshold ({threshold:#x}) must be 0 without virtual-interrupt delivery"
    )]
    TprThresholdReservedBits {
        /// The TPR-threshold field.
        threshold: u32,
    },
    /// "use TPR shadow" = 0 but a control that depends on it is 1
    /// ("virtualize x2APIC mode", "APIC-register virtualization",
    /// "virtual-interrupt delivery" or "IPI virtualization").
    #[error("\"{control}\" must be 0 when \"use TPR shadow\" is 0")]
    ApicVirtualizationWithoutTprShadow {
        /// The SDM name of the offending control.
        control: &'static str,
    },
    /// "NMI exiting" = 0 but "virtual NMIs" = 1.
    #[error("\"virtual NMIs\" must be 0 when \"NMI exiting\" is 0")]
    VirtualNmisWithoutNmiExiting,
    /// "virtual NMIs" = 0 but "NMI-window exiting" = 1.
    #[error("\"NMI-window exiting\" must be 0 when \"virtual NMIs\" is 0")]
    NmiWindowExitingWithoutVirtualNmis,
    /// "virtualize APIC accesses" = 1 and the APIC-access address is
    /// invalid.
    #[error(
        "APIC-access address {address:#x} must be 4-KByte aligned and within the physical-address width"
    )]
    ApicAccessAddressInvalid {
        /// The address.
        address: u64,
    },
    /// "virtualize x2APIC mode" = 1 and "virtualize APIC accesses" = 1.
    #[error("\"virtualize APIC accesses\" must be 0 when \"virtualize x2APIC mode\" is 1")]
    X2ApicModeWithApicAccessVirtualization,
    /// "virtual-interrupt delivery" = 1 but "external-interrupt exiting" = 0.
    #[error("\"external-interrupt exiting\" must be 1 when \"virtual-interrupt delivery\" is 1")]
    VirtualInterruptDeliveryWithoutExternalInterruptExiting,
    /// "process posted interrupts" = 1 but "virtual-interrupt delivery" = 0.
    #[error("\"virtual-interrupt delivery\" must be 1 when \"process posted interrupts\" is 1")]
    PostedInterruptsWithoutVirtualInterruptDelivery,
    /// "process posted interrupts" = 1 but the exit control "acknowledge
    /// interrupt on exit" = 0.
    #[error("\"acknowledge interrupt on exit\" must be 1 when \"process posted interrupts\" is 1")]
    PostedInterruptsWithoutAcknowledgeInterruptOnExit,
    /// "process posted interrupts" = 1 and bits 15:8 of the notification
    /// vector are not 0.
    #[error("bits 15:8 of the posted-interrupt notification vector ({vector:#x}) must be 0")]
    PostedInterruptNotificationVectorInvalid {
        /// The notification-vector field.
        vector: u16,
    },
    /// "process posted interrupts" = 1 and the descriptor address is not
    /// 64-byte aligned or lies beyond MAXPHYADDR.
    #[error(
        "posted-interrupt descriptor address {address:#x} must have bits 5:0 clear and be within the physical-address width"
    )]
    PostedInterruptDescriptorAddressInvalid {
        /// The address.
        address: u64,
    },
    /// "enable VPID" = 1 and the VPID is 0.
    #[error("the VPID must not be 0000H when \"enable VPID\" is 1")]
    VpidZero,
    /// "enable EPT" = 1 and the EPTP is invalid.
    #[error("the EPT pointer {eptp:#x} is invalid: {reason}")]
    EptpInvalid {
        /// The EPTP field.
        eptp: u64,
        /// Which EPTP rule failed.
        reason: EptpError,
    },
    /// "enable HLAT" = 1 but "enable EPT" = 0.
    #[error("\"enable EPT\" must be 1 when \"enable HLAT\" is 1")]
    HlatWithoutEpt,
    /// "enable HLAT" = 1 and HLATP sets bits 2:0 or 11:5, or bits beyond
    /// MAXPHYADDR.
    #[error(
        "HLATP {address:#x} must have bits 2:0 and 11:5 clear and be within the physical-address width"
    )]
    HlatPointerInvalid {
        /// The HLATP field.
        address: u64,
    },
    /// "enable PML" = 1 but "enable EPT" = 0.
    #[error("\"enable EPT\" must be 1 when \"enable PML\" is 1")]
    PmlWithoutEpt,
    /// "enable PML" = 1 and the PML address is invalid.
    #[error(
        "PML address {address:#x} must be 4-KByte aligned and within the physical-address width"
    )]
    PmlAddressInvalid {
        /// The address.
        address: u64,
    },
    /// "unrestricted guest" = 1 but "enable EPT" = 0.
    #[error("\"enable EPT\" must be 1 when \"unrestricted guest\" is 1")]
    UnrestrictedGuestWithoutEpt,
    /// "mode-based execute control for EPT" = 1 but "enable EPT" = 0.
    #[error("\"enable EPT\" must be 1 when \"mode-based execute control for EPT\" is 1")]
    ModeBasedExecuteControlWithoutEpt,
    /// "sub-page write permissions for EPT" = 1 but "enable EPT" = 0.
    #[error("\"enable EPT\" must be 1 when \"sub-page write permissions for EPT\" is 1")]
    SubPageWritePermissionsWithoutEpt,
    /// "sub-page write permissions for EPT" = 1 and the SPPTP is invalid.
    #[error("SPPTP {address:#x} must be 4-KByte aligned and within the physical-address width")]
    SubPagePermissionTablePointerInvalid {
        /// The SPPTP field.
        address: u64,
    },
    /// The VM-function control "EPTP switching" = 1 but "enable EPT" = 0.
    #[error("\"enable EPT\" must be 1 when the \"EPTP switching\" VM function is enabled")]
    EptpSwitchingWithoutEpt,
    /// "EPTP switching" = 1 and the EPTP-list address is invalid.
    #[error(
        "EPTP-list address {address:#x} must be 4-KByte aligned and within the physical-address width"
    )]
    EptpListAddressInvalid {
        /// The address.
        address: u64,
    },
    /// "VMCS shadowing" = 1 and the VMREAD-bitmap address is invalid.
    #[error(
        "VMREAD-bitmap address {address:#x} must be 4-KByte aligned and within the physical-address width"
    )]
    VmreadBitmapAddressInvalid {
        /// The address.
        address: u64,
    },
    /// "VMCS shadowing" = 1 and the VMWRITE-bitmap address is invalid.
    #[error(
        "VMWRITE-bitmap address {address:#x} must be 4-KByte aligned and within the physical-address width"
    )]
    VmwriteBitmapAddressInvalid {
        /// The address.
        address: u64,
    },
    /// "EPT-violation #VE" = 1 and the virtualization-exception information
    /// address is invalid.
    #[error(
        "virtualization-exception information address {address:#x} must be 4-KByte aligned and within the physical-address width"
    )]
    VeInformationAddressInvalid {
        /// The address.
        address: u64,
    },
    /// "Intel PT uses guest physical addresses" = 1 but "enable EPT" = 0.
    #[error("\"enable EPT\" must be 1 when \"Intel PT uses guest physical addresses\" is 1")]
    IntelPtGuestPhysicalWithoutEpt,
    /// "Intel PT uses guest physical addresses" = 1 but the exit control
    /// "clear `IA32_RTIT_CTL`" = 0.
    #[error(
        "\"clear IA32_RTIT_CTL\" must be 1 when \"Intel PT uses guest physical addresses\" is 1"
    )]
    IntelPtGuestPhysicalWithoutClearRtitCtl,
    /// "Intel PT uses guest physical addresses" = 1 but the entry control
    /// "load `IA32_RTIT_CTL`" = 0.
    #[error(
        "\"load IA32_RTIT_CTL\" must be 1 when \"Intel PT uses guest physical addresses\" is 1"
    )]
    IntelPtGuestPhysicalWithoutLoadRtitCtl,
    /// "EPT paging-write control" = 1 but "enable EPT" = 0.
    #[error("\"enable EPT\" must be 1 when \"EPT paging-write control\" is 1")]
    EptPagingWriteControlWithoutEpt,
    /// "guest-paging verification" = 1 but "enable EPT" = 0.
    #[error("\"enable EPT\" must be 1 when \"guest-paging verification\" is 1")]
    GuestPagingVerificationWithoutEpt,
    /// "IPI virtualization" = 1 and the PID-pointer table address sets bits
    /// 2:0 or bits beyond MAXPHYADDR.
    #[error(
        "PID-pointer table address {address:#x} must have bits 2:0 clear and be within the physical-address width"
    )]
    PidPointerTableAddressInvalid {
        /// The address.
        address: u64,
    },

    // ---- SDM 27.2.1.2: VM-exit control fields ---------------------------
    /// "activate VMX-preemption timer" = 0 but "save VMX-preemption timer
    /// value" = 1.
    #[error(
        "\"save VMX-preemption timer value\" must be 0 when \"activate VMX-preemption timer\" is 0"
    )]
    SavePreemptionTimerWithoutActivation,
    /// The VM-exit MSR-store area is not 16-byte aligned or does not lie
    /// entirely within MAXPHYADDR.
    #[error(
        "VM-exit MSR-store area at {address:#x} ({count} entries) must be 16-byte aligned and within the physical-address width"
    )]
    ExitMsrStoreAreaInvalid {
        /// The VM-exit MSR-store address.
        address: u64,
        /// The VM-exit MSR-store count.
        count: u32,
    },
    /// The VM-exit MSR-load area is not 16-byte aligned or does not lie
    /// entirely within MAXPHYADDR.
    #[error(
        "VM-exit MSR-load area at {address:#x} ({count} entries) must be 16-byte aligned and within the physical-address width"
    )]
    ExitMsrLoadAreaInvalid {
        /// The VM-exit MSR-load address.
        address: u64,
        /// The VM-exit MSR-load count.
        count: u32,
    },

    // ---- SDM 27.2.1.3: VM-entry control fields --------------------------
    /// The injected event's type is reserved: 1, or 7 (other event) on a
    /// processor without the monitor trap flag.
    #[error("the interruption type {interruption_type} of the injected event is reserved")]
    InjectionTypeReserved {
        /// Bits 10:8 of the VM-entry interruption-information field.
        interruption_type: u8,
    },
    /// An injected NMI does not use vector 2.
    #[error("an injected NMI must use vector 2, not {vector}")]
    InjectedNmiVectorNot2 {
        /// The vector.
        vector: u8,
    },
    /// An injected hardware exception has a vector above 31.
    #[error("an injected hardware exception must have a vector of at most 31, not {vector}")]
    InjectedHardwareExceptionVectorTooLarge {
        /// The vector.
        vector: u8,
    },
    /// An injected "other event" does not use vector 0 (pending MTF VM exit).
    #[error("an injected other event must use vector 0, not {vector}")]
    InjectedOtherEventVectorNotZero {
        /// The vector.
        vector: u8,
    },
    /// The deliver-error-code bit disagrees with the event: it must be 1 iff
    /// the guest is in protected mode (or unrestricted guest = 0) and the
    /// event is a hardware exception with vector 8, 10-14 or 17 (#DF, #TS,
    /// #NP, #SS, #GP, #PF, #AC; SDM 27.2.1.3).
    #[error(
        "the deliver-error-code bit must be {expected} for interruption type {interruption_type}, vector {vector}"
    )]
    InjectionDeliverErrorCodeMismatch {
        /// The value the bit must have.
        expected: bool,
        /// Bits 10:8 of the interruption information.
        interruption_type: u8,
        /// The vector.
        vector: u8,
    },
    /// Reserved bits 30:12 of the VM-entry interruption-information field
    /// are not 0.
    #[error(
        "reserved bits 30:12 of the VM-entry interruption-information field ({info:#x}) must be 0"
    )]
    InjectionReservedBits {
        /// The VM-entry interruption-information field.
        info: u32,
    },
    /// Bits 31:16 of the VM-entry exception error code are not 0 while an
    /// error code is delivered.
    #[error("bits 31:16 of the VM-entry exception error code ({error_code:#x}) must be 0")]
    InjectionErrorCodeReservedBits {
        /// The VM-entry exception error code.
        error_code: u32,
    },
    /// A software interrupt or (privileged) software exception is injected
    /// with an instruction length outside 1..=15 (0 is allowed only if
    /// `IA32_VMX_MISC[30]` = 1).
    #[error(
        "the VM-entry instruction length {length} must be 1 to 15 for software interrupts and exceptions"
    )]
    InjectionInstructionLengthInvalid {
        /// The VM-entry instruction length.
        length: u32,
    },
    /// The VM-entry MSR-load area is not 16-byte aligned or does not lie
    /// entirely within MAXPHYADDR.
    #[error(
        "VM-entry MSR-load area at {address:#x} ({count} entries) must be 16-byte aligned and within the physical-address width"
    )]
    EntryMsrLoadAreaInvalid {
        /// The VM-entry MSR-load address.
        address: u64,
        /// The VM-entry MSR-load count.
        count: u32,
    },
    /// "entry to SMM" = 1 on a VM entry from outside SMM.
    #[error("\"entry to SMM\" must be 0 when VM entry is not executed in SMM")]
    EntryToSmmOutsideSmm,
    /// "deactivate dual-monitor treatment" = 1 on a VM entry from outside
    /// SMM.
    #[error("\"deactivate dual-monitor treatment\" must be 0 when VM entry is not executed in SMM")]
    DeactivateDualMonitorTreatmentOutsideSmm,
}

impl ControlCheck {
    /// The SDM section that states the failed rule: `"27.2.1.1"`
    /// (VM-execution controls), `"27.2.1.2"` (VM-exit controls) or
    /// `"27.2.1.3"` (VM-entry controls).
    pub const fn sdm_section(&self) -> &'static str {
        const EXECUTION: &str = "27.2.1.1";
        const EXIT: &str = "27.2.1.2";
        const ENTRY: &str = "27.2.1.3";
        match self {
            Self::ReservedControlBit(error) => match error.kind() {
                ControlKind::PinBased
                | ControlKind::PrimaryProcessorBased
                | ControlKind::SecondaryProcessorBased
                | ControlKind::TertiaryProcessorBased
                | ControlKind::VmFunction => EXECUTION,
                ControlKind::PrimaryExit | ControlKind::SecondaryExit => EXIT,
                ControlKind::Entry => ENTRY,
            },
            Self::SavePreemptionTimerWithoutActivation
            | Self::ExitMsrStoreAreaInvalid { .. }
            | Self::ExitMsrLoadAreaInvalid { .. } => EXIT,
            Self::InjectionTypeReserved { .. }
            | Self::InjectedNmiVectorNot2 { .. }
            | Self::InjectedHardwareExceptionVectorTooLarge { .. }
            | Self::InjectedOtherEventVectorNotZero { .. }
            | Self::InjectionDeliverErrorCodeMismatch { .. }
            | Self::InjectionReservedBits { .. }
            | Self::InjectionErrorCodeReservedBits { .. }
            | Self::InjectionInstructionLengthInvalid { .. }
            | Self::EntryMsrLoadAreaInvalid { .. }
            | Self::EntryToSmmOutsideSmm
            | Self::DeactivateDualMonitorTreatmentOutsideSmm => ENTRY,
            _ => EXECUTION,
        }
    }
}

/// Bits 11:0 of an address that must be 4-KByte aligned.
const PAGE_OFFSET: u64 = 0xfff;
/// Longest x86 instruction, in bytes.
const MAX_INSTRUCTION_LENGTH: u32 = 15;

/// Reads the address in `field` and checks that it sets none of the bits in
/// `must_be_clear` (its alignment) and lies within MAXPHYADDR, the rule for
/// the addresses in the VM-execution controls (SDM 27.2.1.1). A failure is
/// reported as `invalid(address)`.
fn check_address<V: VmcsRead + ?Sized>(
    vmcs: &V,
    context: &EntryContext,
    field: VmcsField,
    must_be_clear: u64,
    invalid: fn(u64) -> ControlCheck,
) -> Result<(), ControlCheck> {
    let address = read(vmcs, field);
    if address & must_be_clear != 0 || !context.is_valid_physical(address) {
        return Err(invalid(address));
    }
    Ok(())
}

/// [`check_address`] for the most common rule: 4-KByte aligned and within
/// MAXPHYADDR.
fn check_page_address<V: VmcsRead + ?Sized>(
    vmcs: &V,
    context: &EntryContext,
    field: VmcsField,
    invalid: fn(u64) -> ControlCheck,
) -> Result<(), ControlCheck> {
    check_address(vmcs, context, field, PAGE_OFFSET, invalid)
}

/// Reads an MSR-load/store area (address and count fields) and checks it:
/// for a nonzero count of 16-byte entries, bits 3:0 of the address clear
/// and the first and last byte within MAXPHYADDR (SDM 27.2.1.2, 27.2.1.3).
/// An area whose end overflows 64 bits is invalid. A failure is reported as
/// `invalid(address, count)`.
fn check_msr_area<V: VmcsRead + ?Sized>(
    vmcs: &V,
    context: &EntryContext,
    [address_field, count_field]: [VmcsField; 2],
    invalid: fn(u64, u32) -> ControlCheck,
) -> Result<(), ControlCheck> {
    let address = read(vmcs, address_field);
    let count = read(vmcs, count_field) as u32;
    if count == 0 {
        return Ok(());
    }
    // count >= 1, so the byte length is at least 16 and the subtraction
    // cannot underflow; count * 16 < 2^36 cannot overflow.
    let last = address.checked_add(u64::from(count) * 16 - 1);
    let valid = address.trailing_zeros() >= 4
        && context.is_valid_physical(address)
        && matches!(last, Some(last) if context.is_valid_physical(last));
    if !valid {
        return Err(invalid(address, count));
    }
    Ok(())
}

/// Checks a control word against its allowed settings.
fn check_reserved<C: ControlWord>(caps: &VmxCapabilities, word: C) -> Result<(), ControlCheck> {
    caps.check(word).map_err(ControlCheck::ReservedControlBit)
}

/// Runs every check on the VMX controls (SDM 27.2.1.1-27.2.1.3), in SDM
/// order.
///
/// # Errors
///
/// The first failed check, as a [`ControlCheck`].
pub fn check_controls<V: VmcsRead + ?Sized>(
    vmcs: &V,
    caps: &VmxCapabilities,
    context: &EntryContext,
) -> Result<(), ControlCheck> {
    let controls = EffectiveControls::read(vmcs);
    check_execution_controls(vmcs, caps, context, &controls)?;
    check_exit_controls(vmcs, caps, context, &controls)?;
    check_entry_controls(vmcs, caps, context, &controls)
}

/// SDM 27.2.1.1: checks on the VM-execution control fields.
fn check_execution_controls<V: VmcsRead + ?Sized>(
    vmcs: &V,
    caps: &VmxCapabilities,
    context: &EntryContext,
    controls: &EffectiveControls,
) -> Result<(), ControlCheck> {
    let EffectiveControls {
        pin,
        primary,
        secondary,
        tertiary,
        exit,
        ..
    } = *controls;

    // Reserved bits (SDM A.3.1-A.3.4); secondary and tertiary only when
    // activated (otherwise they were read as 0, which is always allowed
    // because neither word has default-1 bits).
    check_reserved(caps, pin)?;
    check_reserved(caps, primary)?;
    if primary.contains(PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS) {
        check_reserved(caps, secondary)?;
    }
    if primary.contains(PrimaryProcControls::ACTIVATE_TERTIARY_CONTROLS) {
        check_reserved(caps, tertiary)?;
    }

    // CR3-target count (SDM A.6: IA32_VMX_MISC[24:16]).
    let count = read(vmcs, VmcsField::Cr3TargetCount) as u32;
    let max = caps.misc.cr3_target_count();
    if count > u32::from(max) {
        return Err(ControlCheck::Cr3TargetCountTooLarge { count, max });
    }

    if primary.contains(PrimaryProcControls::USE_IO_BITMAPS) {
        check_page_address(vmcs, context, VmcsField::IoBitmapA, |address| {
            ControlCheck::IoBitmapAAddressInvalid { address }
        })?;
        check_page_address(vmcs, context, VmcsField::IoBitmapB, |address| {
            ControlCheck::IoBitmapBAddressInvalid { address }
        })?;
    }

    if primary.contains(PrimaryProcControls::USE_MSR_BITMAPS) {
        check_page_address(vmcs, context, VmcsField::MsrBitmap, |address| {
            ControlCheck::MsrBitmapAddressInvalid { address }
        })?;
    }

    check_apic_virtualization(vmcs, context, controls)?;

    // NMI controls (SDM 25.6.1).
    if !pin.contains(PinBasedControls::NMI_EXITING) && pin.contains(PinBasedControls::VIRTUAL_NMIS)
    {
        return Err(ControlCheck::VirtualNmisWithoutNmiExiting);
    }
    if !pin.contains(PinBasedControls::VIRTUAL_NMIS)
        && primary.contains(PrimaryProcControls::NMI_WINDOW_EXITING)
    {
        return Err(ControlCheck::NmiWindowExitingWithoutVirtualNmis);
    }

    if secondary.contains(SecondaryProcControls::VIRTUALIZE_APIC_ACCESSES) {
        check_page_address(vmcs, context, VmcsField::ApicAccessAddress, |address| {
            ControlCheck::ApicAccessAddressInvalid { address }
        })?;
    }
    if secondary.contains(SecondaryProcControls::VIRTUALIZE_X2APIC_MODE)
        && secondary.contains(SecondaryProcControls::VIRTUALIZE_APIC_ACCESSES)
    {
        return Err(ControlCheck::X2ApicModeWithApicAccessVirtualization);
    }
    if secondary.contains(SecondaryProcControls::VIRTUAL_INTERRUPT_DELIVERY)
        && !pin.contains(PinBasedControls::EXTERNAL_INTERRUPT_EXITING)
    {
        return Err(ControlCheck::VirtualInterruptDeliveryWithoutExternalInterruptExiting);
    }

    if pin.contains(PinBasedControls::PROCESS_POSTED_INTERRUPTS) {
        if !secondary.contains(SecondaryProcControls::VIRTUAL_INTERRUPT_DELIVERY) {
            return Err(ControlCheck::PostedInterruptsWithoutVirtualInterruptDelivery);
        }
        if !exit.contains(ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT) {
            return Err(ControlCheck::PostedInterruptsWithoutAcknowledgeInterruptOnExit);
        }
        let vector = read(vmcs, VmcsField::PostedInterruptNotificationVector) as u16;
        if vector & 0xff00 != 0 {
            return Err(ControlCheck::PostedInterruptNotificationVectorInvalid { vector });
        }
        // 64-byte aligned: bits 5:0 clear.
        check_address(
            vmcs,
            context,
            VmcsField::PostedInterruptDescriptorAddress,
            0x3f,
            |address| ControlCheck::PostedInterruptDescriptorAddressInvalid { address },
        )?;
    }

    if secondary.contains(SecondaryProcControls::ENABLE_VPID)
        && read(vmcs, VmcsField::VirtualProcessorId) == 0
    {
        return Err(ControlCheck::VpidZero);
    }

    check_ept_dependent_controls(vmcs, caps, context, controls)
}

/// SDM 27.2.1.1, second half: the EPTP and the controls that need EPT or
/// reference further structures (HLAT, PML, sub-page permissions, VM
/// functions, VMCS shadowing, #VE, Intel PT, IPI virtualization).
fn check_ept_dependent_controls<V: VmcsRead + ?Sized>(
    vmcs: &V,
    caps: &VmxCapabilities,
    context: &EntryContext,
    controls: &EffectiveControls,
) -> Result<(), ControlCheck> {
    let EffectiveControls {
        secondary,
        tertiary,
        ..
    } = *controls;
    if controls.ept() {
        let eptp = read(vmcs, VmcsField::EptPointer);
        if let Err(reason) = Eptp::from_raw(eptp).validate(caps, context.physical_address_width) {
            return Err(ControlCheck::EptpInvalid { eptp, reason });
        }
    }

    // Tertiary control "enable HLAT" (SDM 25.6.2, Table 25-8).
    if tertiary.contains(TertiaryProcControls::ENABLE_HLAT) {
        if !controls.ept() {
            return Err(ControlCheck::HlatWithoutEpt);
        }
        // Only bit 3 (PWT) and bit 4 (PCD) may be set below bit 12.
        check_address(vmcs, context, VmcsField::HlatPointer, 0xfe7, |address| {
            ControlCheck::HlatPointerInvalid { address }
        })?;
    }

    if secondary.contains(SecondaryProcControls::ENABLE_PML) {
        if !controls.ept() {
            return Err(ControlCheck::PmlWithoutEpt);
        }
        check_page_address(vmcs, context, VmcsField::PmlAddress, |address| {
            ControlCheck::PmlAddressInvalid { address }
        })?;
    }

    if secondary.contains(SecondaryProcControls::UNRESTRICTED_GUEST) && !controls.ept() {
        return Err(ControlCheck::UnrestrictedGuestWithoutEpt);
    }
    if secondary.contains(SecondaryProcControls::MODE_BASED_EXECUTE_CONTROL_FOR_EPT)
        && !controls.ept()
    {
        return Err(ControlCheck::ModeBasedExecuteControlWithoutEpt);
    }

    if secondary.contains(SecondaryProcControls::SUB_PAGE_WRITE_PERMISSIONS_FOR_EPT) {
        if !controls.ept() {
            return Err(ControlCheck::SubPageWritePermissionsWithoutEpt);
        }
        check_page_address(
            vmcs,
            context,
            VmcsField::SubPagePermissionTablePointer,
            |address| ControlCheck::SubPagePermissionTablePointerInvalid { address },
        )?;
    }

    if secondary.contains(SecondaryProcControls::ENABLE_VM_FUNCTIONS) {
        let functions = VmFunctionControls::from_raw(read(vmcs, VmcsField::VmFunctionControls));
        check_reserved(caps, functions)?;
        if functions.contains(VmFunctionControls::EPTP_SWITCHING) {
            if !controls.ept() {
                return Err(ControlCheck::EptpSwitchingWithoutEpt);
            }
            check_page_address(vmcs, context, VmcsField::EptpListAddress, |address| {
                ControlCheck::EptpListAddressInvalid { address }
            })?;
        }
    }

    if secondary.contains(SecondaryProcControls::VMCS_SHADOWING) {
        check_page_address(vmcs, context, VmcsField::VmreadBitmapAddress, |address| {
            ControlCheck::VmreadBitmapAddressInvalid { address }
        })?;
        check_page_address(vmcs, context, VmcsField::VmwriteBitmapAddress, |address| {
            ControlCheck::VmwriteBitmapAddressInvalid { address }
        })?;
    }

    if secondary.contains(SecondaryProcControls::EPT_VIOLATION_VE) {
        check_page_address(
            vmcs,
            context,
            VmcsField::VirtualizationExceptionInfoAddress,
            |address| ControlCheck::VeInformationAddressInvalid { address },
        )?;
    }

    if secondary.contains(SecondaryProcControls::INTEL_PT_USES_GUEST_PHYSICAL_ADDRESSES) {
        check_intel_pt_guest_physical(controls)?;
    }

    // Remaining tertiary controls (SDM 25.6.2, Table 25-8).
    if tertiary.contains(TertiaryProcControls::EPT_PAGING_WRITE_CONTROL) && !controls.ept() {
        return Err(ControlCheck::EptPagingWriteControlWithoutEpt);
    }
    if tertiary.contains(TertiaryProcControls::GUEST_PAGING_VERIFICATION) && !controls.ept() {
        return Err(ControlCheck::GuestPagingVerificationWithoutEpt);
    }
    if tertiary.contains(TertiaryProcControls::IPI_VIRTUALIZATION) {
        // 8-byte aligned: bits 2:0 clear.
        check_address(
            vmcs,
            context,
            VmcsField::PidPointerTableAddress,
            0x7,
            |address| ControlCheck::PidPointerTableAddressInvalid { address },
        )?;
    }
    Ok(())
}

/// SDM 27.2.1.1: "Intel PT uses guest physical addresses" = 1 needs EPT,
/// "clear `IA32_RTIT_CTL`" on exit and "load `IA32_RTIT_CTL`" on entry.
fn check_intel_pt_guest_physical(controls: &EffectiveControls) -> Result<(), ControlCheck> {
    if !controls.ept() {
        return Err(ControlCheck::IntelPtGuestPhysicalWithoutEpt);
    }
    if !controls.exit.contains(ExitControls::CLEAR_IA32_RTIT_CTL) {
        return Err(ControlCheck::IntelPtGuestPhysicalWithoutClearRtitCtl);
    }
    if !controls.entry.contains(EntryControls::LOAD_IA32_RTIT_CTL) {
        return Err(ControlCheck::IntelPtGuestPhysicalWithoutLoadRtitCtl);
    }
    Ok(())
}

/// SDM 27.2.1.1, the "use TPR shadow" group: the virtual-APIC page, the TPR
/// threshold, and the controls that need a TPR shadow.
fn check_apic_virtualization<V: VmcsRead + ?Sized>(
    vmcs: &V,
    context: &EntryContext,
    controls: &EffectiveControls,
) -> Result<(), ControlCheck> {
    let EffectiveControls {
        primary,
        secondary,
        tertiary,
        ..
    } = *controls;
    if primary.contains(PrimaryProcControls::USE_TPR_SHADOW) {
        check_page_address(vmcs, context, VmcsField::VirtualApicAddress, |address| {
            ControlCheck::VirtualApicAddressInvalid { address }
        })?;
        let threshold = read(vmcs, VmcsField::TprThreshold) as u32;
        if !secondary.contains(SecondaryProcControls::VIRTUAL_INTERRUPT_DELIVERY)
            && threshold & !0xf != 0
        {
            return Err(ControlCheck::TprThresholdReservedBits { threshold });
        }
        // The comparison of TPR threshold bits 3:0 with VTPR needs the
        // virtual-APIC page in memory: not performed (see module docs).
        return Ok(());
    }
    let dependent = [
        (
            secondary.contains(SecondaryProcControls::VIRTUALIZE_X2APIC_MODE),
            "virtualize x2APIC mode",
        ),
        (
            secondary.contains(SecondaryProcControls::APIC_REGISTER_VIRTUALIZATION),
            "APIC-register virtualization",
        ),
        (
            secondary.contains(SecondaryProcControls::VIRTUAL_INTERRUPT_DELIVERY),
            "virtual-interrupt delivery",
        ),
        (
            tertiary.contains(TertiaryProcControls::IPI_VIRTUALIZATION),
            "IPI virtualization",
        ),
    ];
    for (set, control) in dependent {
        if set {
            return Err(ControlCheck::ApicVirtualizationWithoutTprShadow { control });
        }
    }
    Ok(())
}

/// SDM 27.2.1.2: checks on the VM-exit control fields.
fn check_exit_controls<V: VmcsRead + ?Sized>(
    vmcs: &V,
    caps: &VmxCapabilities,
    context: &EntryContext,
    controls: &EffectiveControls,
) -> Result<(), ControlCheck> {
    let exit = controls.exit;
    check_reserved(caps, exit)?;
    if exit.contains(ExitControls::ACTIVATE_SECONDARY_CONTROLS) {
        let secondary =
            SecondaryExitControls::from_raw(read(vmcs, VmcsField::SecondaryVmExitControls));
        check_reserved(caps, secondary)?;
    }
    if !controls
        .pin
        .contains(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER)
        && exit.contains(ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE)
    {
        return Err(ControlCheck::SavePreemptionTimerWithoutActivation);
    }
    check_msr_area(
        vmcs,
        context,
        [
            VmcsField::VmExitMsrStoreAddress,
            VmcsField::VmExitMsrStoreCount,
        ],
        |address, count| ControlCheck::ExitMsrStoreAreaInvalid { address, count },
    )?;
    check_msr_area(
        vmcs,
        context,
        [
            VmcsField::VmExitMsrLoadAddress,
            VmcsField::VmExitMsrLoadCount,
        ],
        |address, count| ControlCheck::ExitMsrLoadAreaInvalid { address, count },
    )
}

/// SDM 27.2.1.3: checks on the VM-entry control fields.
fn check_entry_controls<V: VmcsRead + ?Sized>(
    vmcs: &V,
    caps: &VmxCapabilities,
    context: &EntryContext,
    controls: &EffectiveControls,
) -> Result<(), ControlCheck> {
    let entry = controls.entry;
    check_reserved(caps, entry)?;
    check_event_injection(vmcs, caps, controls)?;
    check_msr_area(
        vmcs,
        context,
        [
            VmcsField::VmEntryMsrLoadAddress,
            VmcsField::VmEntryMsrLoadCount,
        ],
        |address, count| ControlCheck::EntryMsrLoadAreaInvalid { address, count },
    )?;

    // VM entry is executed outside SMM (EntryContext has no SMM state).
    if entry.contains(EntryControls::ENTRY_TO_SMM) {
        return Err(ControlCheck::EntryToSmmOutsideSmm);
    }
    if entry.contains(EntryControls::DEACTIVATE_DUAL_MONITOR_TREATMENT) {
        return Err(ControlCheck::DeactivateDualMonitorTreatmentOutsideSmm);
    }
    Ok(())
}

/// SDM 27.2.1.3: the event-injection fields, checked when the valid bit of
/// the VM-entry interruption-information field is 1.
fn check_event_injection<V: VmcsRead + ?Sized>(
    vmcs: &V,
    caps: &VmxCapabilities,
    controls: &EffectiveControls,
) -> Result<(), ControlCheck> {
    let info = InterruptionInfo::from_raw(read(vmcs, VmcsField::VmEntryInterruptionInfo) as u32);
    if !info.is_valid() {
        return Ok(());
    }
    let vector = info.vector();
    let kind = info.interruption_type();
    let interruption_type = kind.encoding();

    // Type 1 is reserved; type 7 needs the monitor trap flag.
    let mtf_supported = caps.primary_proc.allows_one(
        PrimaryProcControls::MONITOR_TRAP_FLAG
            .bits()
            .trailing_zeros(),
    );
    if kind == InterruptionType::Reserved
        || (kind == InterruptionType::OtherEvent && !mtf_supported)
    {
        return Err(ControlCheck::InjectionTypeReserved { interruption_type });
    }

    // The vector must fit the type.
    match kind {
        InterruptionType::Nmi if info.exception() != ExceptionVector::Nmi => {
            return Err(ControlCheck::InjectedNmiVectorNot2 { vector });
        }
        InterruptionType::HardwareException if vector > 31 => {
            return Err(ControlCheck::InjectedHardwareExceptionVectorTooLarge { vector });
        }
        // Vector 0: pending MTF VM exit.
        InterruptionType::OtherEvent if vector != 0 => {
            return Err(ControlCheck::InjectedOtherEventVectorNotZero { vector });
        }
        _ => {}
    }

    // Deliver-error-code iff CR0.PE = 1 and a hardware exception with vector
    // 8, 10-14 or 17 (SDM 27.2.1.3). The SDM's list stops there: #CP (21)
    // is in the "must be 0" range unless IA32_VMX_BASIC[56] relaxes it,
    // whatever Table 6-1 says about #CP pushing an error code. With
    // IA32_VMX_BASIC[56] = 1, a hardware exception injected in protected
    // mode may carry an error code or not, whatever its vector (SDM A.1).
    // "Protected mode" is "unrestricted guest = 0 or CR0.PE = 1", as KVM
    // (nested_check_vm_entry_controls) and Bochs do: without unrestricted
    // guest CR0.PE = 0 fails the guest-state checks anyway.
    let protected_mode = !controls.unrestricted_guest()
        || Cr0::from_bits_retain(read(vmcs, VmcsField::GuestCr0)).contains(Cr0::PE);
    let hardware_exception = kind == InterruptionType::HardwareException;
    let relaxed =
        caps.basic.entry_exception_error_code_relaxed() && protected_mode && hardware_exception;
    if !relaxed {
        let expected = protected_mode && hardware_exception && matches!(vector, 8 | 10..=14 | 17);
        if info.has_error_code() != expected {
            return Err(ControlCheck::InjectionDeliverErrorCodeMismatch {
                expected,
                interruption_type,
                vector,
            });
        }
    }

    // Bits 30:12 are reserved, except bit 13 (nested exception) on
    // processors with FRED (IA32_VMX_BASIC[58]).
    let mut reserved = InterruptionInfo::ENTRY_RESERVED_MASK;
    if !caps.basic.nested_exception() {
        reserved |= InterruptionInfo::NESTED_EXCEPTION;
    }
    if info.raw() & reserved != 0 {
        return Err(ControlCheck::InjectionReservedBits { info: info.raw() });
    }

    if info.has_error_code() {
        let error_code = read(vmcs, VmcsField::VmEntryExceptionErrorCode) as u32;
        if error_code & 0xffff_0000 != 0 {
            return Err(ControlCheck::InjectionErrorCodeReservedBits { error_code });
        }
    }

    if kind.uses_instruction_length() {
        let length = read(vmcs, VmcsField::VmEntryInstructionLength) as u32;
        let zero_allowed = caps.misc.zero_length_injection();
        if length > MAX_INSTRUCTION_LENGTH || (length == 0 && !zero_allowed) {
            return Err(ControlCheck::InjectionInstructionLengthInvalid { length });
        }
    }
    Ok(())
}
