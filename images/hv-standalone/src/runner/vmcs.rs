//! The VMCS of a workload guest: controls adjusted to the capability
//! MSRs, a 64-bit guest state, the host state of the running CPU.

use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::controls::{
    ControlWord, EntryControls, ExitControls, PinBasedControls, PrimaryProcControls,
    SecondaryProcControls,
};
use hv_arch_vmx::ept::Eptp;
use hv_arch_vmx::vmcs::VmcsField;

use crate::vmx::fields;

use super::RunnerError;
use super::memory::GUEST_PML4;

/// CR0 of the guest: PE, MP, ET, NE, WP, PG (SDM Vol. 3A 2.5).
const GUEST_CR0: u64 = (1 << 0) | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 31);
/// CR4 the guest sees: PAE, OSFXSR, OSXMMEXCPT. VMXE is added because VMX
/// operation requires it (CR4 fixed-0), and hidden by the guest/host mask.
const GUEST_CR4: u64 = (1 << 5) | (1 << 9) | (1 << 10);
/// `IA32_EFER`: LME and LMA (SDM 27.3.1.1: LMA = "IA-32e mode guest").
const GUEST_EFER: u64 = (1 << 8) | (1 << 10);
/// RFLAGS: only the reserved bit 1 (interrupts disabled).
const GUEST_RFLAGS: u64 = 1 << 1;
/// DR7 after reset.
const GUEST_DR7: u64 = 0x400;
/// Access rights (SDM 25.4.1, Table 25-2): 64-bit code, present, DPL 0,
/// execute/read accessed, G = 1.
const CODE_ACCESS: u64 = 0xA09B;
/// Data, present, DPL 0, read/write accessed, D/B = 1, G = 1.
const DATA_ACCESS: u64 = 0xC093;
/// A busy 64-bit TSS, present (SDM 27.3.1.2: TR must be usable, type 11).
const TSS_ACCESS: u64 = 0x8B;
/// Bit 16: the segment is unusable.
const UNUSABLE: u64 = 1 << 16;
/// Selectors (the guest has no GDT; they are never reloaded).
const CODE_SELECTOR: u64 = 0x08;
const DATA_SELECTOR: u64 = 0x10;
const TSS_SELECTOR: u64 = 0x18;
/// TSS limit (a 104-byte 64-bit TSS).
const TSS_LIMIT: u64 = 0x67;
/// The VMCS link pointer when there is no shadow VMCS (SDM 27.3.1.5).
const NO_VMCS_LINK: u64 = u64::MAX;
/// One slice in TSC ticks: about 2-3 workload rounds at one TSC tick per
/// instruction (Bochs) or a few hundred microseconds on hardware.
const SLICE_TSC_TICKS: u64 = 150_000;

/// What every guest VMCS shares: the controls and the CR values, computed
/// once from the capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VmcsSetup {
    /// Pin-based controls (activate VMX-preemption timer).
    pub(crate) pin: PinBasedControls,
    primary: PrimaryProcControls,
    secondary: SecondaryProcControls,
    exit: ExitControls,
    entry: EntryControls,
    cr0: u64,
    cr4: u64,
    cr0_mask: u64,
    cr4_mask: u64,
    /// The VMX-preemption timer value of one slice.
    pub(crate) slice_timer: u32,
    /// Whether exits save the timer (so a slice survives report exits).
    pub(crate) saves_timer: bool,
    /// The guest's memory size (its stack top).
    pub(crate) guest_memory_bytes: u64,
    /// The VMCS revision identifier (`IA32_VMX_BASIC` bits 30:0).
    pub(crate) revision: u32,
}

impl VmcsSetup {
    /// The controls and CR values for `caps`.
    ///
    /// # Errors
    ///
    /// [`RunnerError::Unsupported`] for a missing feature,
    /// [`RunnerError::Control`] for a control that may not be 1,
    /// [`RunnerError::FixedBit`] if the guest CRs cannot honour the fixed
    /// bits.
    pub(crate) fn new(
        caps: &VmxCapabilities,
        guest_memory_bytes: u64,
    ) -> Result<Self, RunnerError> {
        let ept = caps.ept_vpid;
        let needs = [
            (caps.supports_secondary_controls(), "secondary controls"),
            (caps.supports_ept(), "EPT"),
            (caps.supports_vpid(), "VPID"),
            (caps.supports_preemption_timer(), "the VMX-preemption timer"),
            (ept.page_walk_length_4(), "4-level EPT"),
            (ept.memory_type_wb(), "write-back EPT paging structures"),
        ];
        if let Some((_, what)) = needs.iter().find(|(present, _)| !present) {
            return Err(RunnerError::Unsupported(what));
        }
        let pin = caps.adjust(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER)?;
        let primary = caps.adjust(
            PrimaryProcControls::UNCONDITIONAL_IO_EXITING
                | PrimaryProcControls::HLT_EXITING
                | PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS,
        )?;
        let secondary =
            caps.adjust(SecondaryProcControls::ENABLE_EPT | SecondaryProcControls::ENABLE_VPID)?;
        let mut exit = ExitControls::HOST_ADDRESS_SPACE_SIZE
            | ExitControls::SAVE_IA32_EFER
            | ExitControls::LOAD_IA32_EFER;
        let timer_save_control = ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE;
        let saves_timer = caps
            .primary_exit
            .allows_one(timer_save_control.bits().trailing_zeros());
        if saves_timer {
            exit |= timer_save_control;
        }
        let exit = caps.adjust(exit)?;
        let entry = caps.adjust(EntryControls::IA32E_MODE_GUEST | EntryControls::LOAD_IA32_EFER)?;

        // SDM 27.3.1.1: guest CR0/CR4 honour the fixed bits (no
        // unrestricted guest). Fixed-1 bits the guest did not ask for
        // (CR4.VMXE) are owned by the runner: masked, shadowed as 0.
        let cr0 = GUEST_CR0 | caps.cr0_fixed.must_be_one();
        let cr4 = GUEST_CR4 | caps.cr4_fixed.must_be_one();
        if let Some(violation) = caps.cr0_fixed.first_violation(cr0) {
            return Err(RunnerError::FixedBit("guest CR0", violation.bit));
        }
        if let Some(violation) = caps.cr4_fixed.first_violation(cr4) {
            return Err(RunnerError::FixedBit("guest CR4", violation.bit));
        }
        // SDM 26.5.1, A.6: the timer counts down by 1 every 2^shift TSC ticks.
        let shift = caps.misc.preemption_timer_tsc_shift();
        let slice_timer = u32::try_from(SLICE_TSC_TICKS >> shift)
            .unwrap_or(u32::MAX)
            .max(1);
        Ok(Self {
            pin,
            primary,
            secondary,
            exit,
            entry,
            cr0,
            cr4,
            cr0_mask: cr0 & !GUEST_CR0,
            cr4_mask: cr4 & !GUEST_CR4,
            slice_timer,
            saves_timer,
            guest_memory_bytes,
            revision: caps.basic.revision_id(),
        })
    }
}

/// What differs between guest VMCSs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GuestVmcs {
    /// VPID (not 0).
    pub(crate) vpid: u16,
    /// The guest's EPTP.
    pub(crate) eptp: Eptp,
    /// Entry point.
    pub(crate) rip: u64,
    /// Initial stack pointer.
    pub(crate) rsp: u64,
}

/// Writes every control, guest-state and host-state field the runner
/// relies on into the current VMCS (a VMCS region's contents after VMCLEAR
/// are not defined field by field, so nothing is left to chance).
///
/// # Errors
///
/// [`RunnerError::VmcsWrite`] for the first VMWRITE that failed.
///
/// # Safety
///
/// VMX root operation at CPL 0 with a current VMCS that belongs to the
/// caller's guest.
pub(crate) unsafe fn write_guest_vmcs(
    setup: &VmcsSetup,
    guest: &GuestVmcs,
) -> Result<(), RunnerError> {
    let fields = control_fields(setup, guest)
        .into_iter()
        .chain(register_fields(setup, guest))
        .chain(segment_fields());
    for (field, value) in fields {
        // SAFETY: the caller guarantees VMX root operation and a current
        // VMCS; these fields take effect only at the next VM entry.
        unsafe { put(field, value)? };
    }
    // SAFETY: as above; the host state is the running CPU's.
    unsafe { crate::vmx::host::write_host_state() }
        .map_err(|fail| RunnerError::Instruction("VMWRITE of the host state", fail))
}

/// The VM-execution, exit and entry control fields (SDM 25.6-25.8).
fn control_fields(setup: &VmcsSetup, guest: &GuestVmcs) -> [(VmcsField, u64); 22] {
    use VmcsField as F;
    [
        (F::PinBasedControls, setup.pin.to_raw()),
        (F::PrimaryProcBasedControls, setup.primary.to_raw()),
        (F::SecondaryProcBasedControls, setup.secondary.to_raw()),
        (F::PrimaryVmExitControls, setup.exit.to_raw()),
        (F::VmEntryControls, setup.entry.to_raw()),
        (F::ExceptionBitmap, 0),
        (F::PageFaultErrorCodeMask, 0),
        (F::PageFaultErrorCodeMatch, 0),
        (F::Cr3TargetCount, 0),
        (F::VmExitMsrStoreCount, 0),
        (F::VmExitMsrLoadCount, 0),
        (F::VmEntryMsrLoadCount, 0),
        (F::VmEntryInterruptionInfo, 0),
        (F::VmEntryExceptionErrorCode, 0),
        (F::VmEntryInstructionLength, 0),
        (F::TscOffset, 0),
        (F::Cr0GuestHostMask, setup.cr0_mask),
        (F::Cr0ReadShadow, GUEST_CR0),
        (F::Cr4GuestHostMask, setup.cr4_mask),
        (F::Cr4ReadShadow, GUEST_CR4),
        (F::VirtualProcessorId, u64::from(guest.vpid)),
        (F::EptPointer, guest.eptp.raw()),
    ]
}

/// The guest's registers and non-register state (SDM 25.4.1, 25.4.2).
fn register_fields(setup: &VmcsSetup, guest: &GuestVmcs) -> [(VmcsField, u64); 21] {
    use VmcsField as F;
    [
        (F::GuestCr0, setup.cr0),
        (F::GuestCr3, GUEST_PML4),
        (F::GuestCr4, setup.cr4),
        (F::GuestDr7, GUEST_DR7),
        (F::GuestDebugCtl, 0),
        (F::GuestRsp, guest.rsp),
        (F::GuestRip, guest.rip),
        (F::GuestRflags, GUEST_RFLAGS),
        (F::GuestEfer, GUEST_EFER),
        (F::GuestSysenterCs, 0),
        (F::GuestSysenterEsp, 0),
        (F::GuestSysenterEip, 0),
        (F::GuestGdtrBase, 0),
        (F::GuestGdtrLimit, 0),
        (F::GuestIdtrBase, 0),
        (F::GuestIdtrLimit, 0),
        (F::VmcsLinkPointer, NO_VMCS_LINK),
        (F::GuestInterruptibilityState, 0),
        (F::GuestActivityState, 0),
        (F::GuestPendingDebugExceptions, 0),
        (F::VmxPreemptionTimerValue, u64::from(setup.slice_timer)),
    ]
}

/// Selector, base, limit and access-rights fields of each segment register
/// with its selector, limit and access rights: flat 64-bit code and data,
/// a busy TSS, no LDT (SDM 27.3.1.2). Every base is 0.
#[rustfmt::skip]
const SEGMENTS: [([VmcsField; 4], u64, u64, u64); 8] = {
    use VmcsField as F;
    const FLAT: u64 = 0xFFFF_FFFF;
    [
        ([F::GuestCsSelector, F::GuestCsBase, F::GuestCsLimit, F::GuestCsAccessRights], CODE_SELECTOR, FLAT, CODE_ACCESS),
        ([F::GuestSsSelector, F::GuestSsBase, F::GuestSsLimit, F::GuestSsAccessRights], DATA_SELECTOR, FLAT, DATA_ACCESS),
        ([F::GuestDsSelector, F::GuestDsBase, F::GuestDsLimit, F::GuestDsAccessRights], DATA_SELECTOR, FLAT, DATA_ACCESS),
        ([F::GuestEsSelector, F::GuestEsBase, F::GuestEsLimit, F::GuestEsAccessRights], DATA_SELECTOR, FLAT, DATA_ACCESS),
        ([F::GuestFsSelector, F::GuestFsBase, F::GuestFsLimit, F::GuestFsAccessRights], DATA_SELECTOR, FLAT, DATA_ACCESS),
        ([F::GuestGsSelector, F::GuestGsBase, F::GuestGsLimit, F::GuestGsAccessRights], DATA_SELECTOR, FLAT, DATA_ACCESS),
        ([F::GuestTrSelector, F::GuestTrBase, F::GuestTrLimit, F::GuestTrAccessRights], TSS_SELECTOR, TSS_LIMIT, TSS_ACCESS),
        ([F::GuestLdtrSelector, F::GuestLdtrBase, F::GuestLdtrLimit, F::GuestLdtrAccessRights], 0, 0, UNUSABLE),
    ]
};

/// [`SEGMENTS`] as (field, value) pairs.
fn segment_fields() -> impl Iterator<Item = (VmcsField, u64)> {
    SEGMENTS.into_iter().flat_map(
        |([selector, base, limit, access], selector_value, limit_value, access_value)| {
            [
                (selector, selector_value),
                (base, 0),
                (limit, limit_value),
                (access, access_value),
            ]
        },
    )
}

/// VMWRITE of `value` to `field` of the current VMCS.
///
/// # Errors
///
/// [`RunnerError::VmcsWrite`] naming the field.
///
/// # Safety
///
/// VMX root operation at CPL 0 with a current VMCS owned by the caller.
pub(crate) unsafe fn put(field: VmcsField, value: u64) -> Result<(), RunnerError> {
    // SAFETY: forwarded from the caller.
    unsafe { fields::write(field, value) }.map_err(|fail| RunnerError::VmcsWrite(field, fail))
}
