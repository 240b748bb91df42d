//! VMCS02 preparation: turning L1's VMCS12 into the VMCS the real engine
//! runs L2 with, and reading L2's state back after an exit.
//!
//! VMCS02 is VMCS12 with every L1 physical address removed and L0's needs
//! added (SDM 25 lists the fields; KVM's `prepare_vmcs02` follows the same
//! plan):
//!
//! - Controls: VMCS12's (limited to what hv advertises) OR L0's, with EPT
//!   ([`Translation02::eptp02`]) and VPID ([`Translation02::vpid02`]) always
//!   on, then adjusted to the real engine (its must-be-1 bits added; a
//!   wanted bit it refuses is a [`PrepareError::Control`]).
//! - No L1 physical address reaches VMCS02: "unconditional I/O exiting"
//!   replaces I/O bitmaps, every MSR access exits (hv-core consults
//!   VMCS12's MSR bitmaps itself), MSR-load/store areas are empty, the
//!   VMCS link pointer is all ones, and APIC virtualization, posted
//!   interrupts, PML, #VE, VM functions and VMCS shadowing are off (hv
//!   does not advertise them to L1).
//! - Guest state: VMCS12's, with `IA32_EFER`, `IA32_PAT`, DR7 and
//!   `IA32_DEBUGCTL` always loaded: VMCS12's values when VMCS12 loads them,
//!   otherwise L1's ([`L1Inherited`]), as the processor would leave them.
//! - Host state: L0's ([`L0Requirements::host_state`]): L2 exits go to L0.
//!
//! The result is checked with [`check_vm_entry`] against the real
//! capabilities; hv-core never enters L2 with a VMCS02 that fails.

use hv_arch_vmx::capabilities::{ControlAdjustError, VmxCapabilities};
use hv_arch_vmx::checks::{EntryCheckFailure, check_vm_entry};
use hv_arch_vmx::controls::{
    ControlWord, EntryControls, ExceptionBitmap, ExceptionVector, ExitControls, PinBasedControls,
    PrimaryProcControls, SecondaryProcControls,
};
use hv_arch_vmx::ept::Eptp;
use hv_arch_vmx::registers::{Cr0, Efer};
use hv_arch_vmx::vmcs::{FieldKind, VmcsField, VmcsImage};

use crate::platform::L0Requirements;
use crate::reflect::L2Exited;
use crate::state::Gprs;
use crate::vmx::capabilities::{HV_PIN_BASED, HV_PRIMARY_PROC, HV_SECONDARY_PROC};

/// What VMCS02 takes from L1 beyond VMCS12: the values L2 inherits from L1
/// when VMCS12 does not load them (a VM entry leaves an MSR or DR7 alone
/// unless a "load" entry control says otherwise, SDM 27.3.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct L1Inherited {
    /// L1's `IA32_EFER` (L2's, with LMA/LME from "IA-32e mode guest", when
    /// VMCS12 does not load EFER).
    pub efer: u64,
    /// L1's `IA32_PAT` (L2's when VMCS12 does not load PAT).
    pub pat: u64,
    /// L1's `IA32_DEBUGCTL` (L2's when VMCS12 does not load debug controls).
    pub debugctl: u64,
    /// L1's DR7 (L2's when VMCS12 does not load debug controls).
    pub dr7: u64,
}

/// The translation context L0 chose for this entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Translation02 {
    /// EPTP02: the root of EPT02 when VMCS12 enables EPT, EPTP01 otherwise.
    pub eptp02: Eptp,
    /// VPID02: the VPID L2 runs with (never 0: VPID 0 is VMX root's, and
    /// VM entry refuses it, SDM 27.2.1.1).
    pub vpid02: u16,
}

/// Why no VMCS02 could be built for a VMCS12 (hv-core then does not enter
/// L2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    /// A control bit L1 or L0 needs is one the real engine does not allow
    /// (the error names the control word and bit).
    #[error("the real engine refuses a control VMCS02 needs: {0}")]
    Control(#[from] ControlAdjustError),
    /// VMCS02 fails the VM-entry checks against the real capabilities.
    #[error("VMCS02 fails the VM-entry checks: {0}")]
    EntryCheck(#[from] EntryCheckFailure),
}

/// The VMCS02 fields hv-core reads back after an L2 exit to build
/// [`L2Exited`] with [`l2_exited`]: every guest-state field a VM exit saves
/// for the features hv advertises (SDM 28.3), plus VMCS02's CR0/CR4
/// guest/host masks and read shadows (to tell which CR bits only L0 owns).
///
/// Fields of features hv never enables in VMCS02 (FRED, PML index, guest
/// interrupt status, `IA32_PERF_GLOBAL_CTRL`, CET) are left out: a real
/// processor without them fails a VMREAD of those fields.
pub const GUEST_STATE_FIELDS: &[VmcsField] = &[
    // SDM 28.3.1: control registers, debug registers, MSRs.
    VmcsField::GuestCr0,
    VmcsField::GuestCr3,
    VmcsField::GuestCr4,
    VmcsField::GuestDr7,
    VmcsField::GuestDebugCtl,
    VmcsField::GuestSysenterCs,
    VmcsField::GuestSysenterEsp,
    VmcsField::GuestSysenterEip,
    VmcsField::GuestPat,
    VmcsField::GuestEfer,
    // SDM 28.3.2: segment registers.
    VmcsField::GuestEsSelector,
    VmcsField::GuestEsBase,
    VmcsField::GuestEsLimit,
    VmcsField::GuestEsAccessRights,
    VmcsField::GuestCsSelector,
    VmcsField::GuestCsBase,
    VmcsField::GuestCsLimit,
    VmcsField::GuestCsAccessRights,
    VmcsField::GuestSsSelector,
    VmcsField::GuestSsBase,
    VmcsField::GuestSsLimit,
    VmcsField::GuestSsAccessRights,
    VmcsField::GuestDsSelector,
    VmcsField::GuestDsBase,
    VmcsField::GuestDsLimit,
    VmcsField::GuestDsAccessRights,
    VmcsField::GuestFsSelector,
    VmcsField::GuestFsBase,
    VmcsField::GuestFsLimit,
    VmcsField::GuestFsAccessRights,
    VmcsField::GuestGsSelector,
    VmcsField::GuestGsBase,
    VmcsField::GuestGsLimit,
    VmcsField::GuestGsAccessRights,
    VmcsField::GuestLdtrSelector,
    VmcsField::GuestLdtrBase,
    VmcsField::GuestLdtrLimit,
    VmcsField::GuestLdtrAccessRights,
    VmcsField::GuestTrSelector,
    VmcsField::GuestTrBase,
    VmcsField::GuestTrLimit,
    VmcsField::GuestTrAccessRights,
    // SDM 28.3.3: descriptor tables, RIP, RSP, RFLAGS, PDPTEs.
    VmcsField::GuestGdtrBase,
    VmcsField::GuestGdtrLimit,
    VmcsField::GuestIdtrBase,
    VmcsField::GuestIdtrLimit,
    VmcsField::GuestRsp,
    VmcsField::GuestRip,
    VmcsField::GuestRflags,
    VmcsField::GuestPdpte0,
    VmcsField::GuestPdpte1,
    VmcsField::GuestPdpte2,
    VmcsField::GuestPdpte3,
    // SDM 28.3.4: non-register state.
    VmcsField::GuestActivityState,
    VmcsField::GuestInterruptibilityState,
    VmcsField::GuestPendingDebugExceptions,
    VmcsField::VmxPreemptionTimerValue,
    // Not guest state: which CR bits L0 owns and what L2 reads for them.
    VmcsField::Cr0GuestHostMask,
    VmcsField::Cr0ReadShadow,
    VmcsField::Cr4GuestHostMask,
    VmcsField::Cr4ReadShadow,
];

/// The pin-based, primary and secondary controls VMCS12 contributes are
/// the ones hv advertises (`vmx::capabilities`): every other bit of a
/// VMCS12 that passed the entry checks is 0 or in a default1 class that
/// [`adjusted`] sets anyway. What hv-core must own instead (I/O and MSR
/// bitmaps, secondary activation, EPT, VPID) is removed or forced in
/// [`prepare_vmcs02`].
const L1_PIN_BASED: PinBasedControls = HV_PIN_BASED;
/// See [`L1_PIN_BASED`].
const L1_PRIMARY: PrimaryProcControls = HV_PRIMARY_PROC;
/// See [`L1_PIN_BASED`].
const L1_SECONDARY: SecondaryProcControls = HV_SECONDARY_PROC;

/// VM-entry controls VMCS12 contributes ("load debug controls", "load
/// `IA32_PAT`" and "load `IA32_EFER`" are always on in VMCS02, see
/// [`prepare_vmcs02`]).
const L1_ENTRY: EntryControls = EntryControls::IA32E_MODE_GUEST;

/// VMCS02's VMCS link pointer: all ones, no shadow VMCS (SDM 27.3.1.5).
const NO_LINK_POINTER: u64 = u64::MAX;

/// VMCS12's value of control word `C`.
fn control<C: ControlWord>(vmcs: &VmcsImage, field: VmcsField) -> C {
    C::from_raw(vmcs.get(field))
}

/// Whether the real engine allows `bit` of `C`'s word to be 1.
fn allowed<C: ControlWord>(real: &VmxCapabilities, bit: C) -> bool {
    let raw = bit.to_raw();
    real.allowed(C::KIND).may_be_one & raw == raw
}

/// `wanted` adjusted to the real engine: its must-be-1 bits added, an error
/// for a wanted bit it refuses.
fn adjusted<C: ControlWord>(real: &VmxCapabilities, wanted: C) -> Result<u64, PrepareError> {
    Ok(real.adjust(wanted)?.to_raw())
}

/// Builds VMCS02 for an entry into L2 described by `vmcs12` (which must
/// already have passed the VM-entry checks against the capabilities hv
/// advertises), with L0's `l0` requirements and the `translation` context,
/// and checks it against the `real` engine.
///
/// When VMCS12 does not enable EPT and L2 uses PAE paging outside IA-32e
/// mode, the caller must replace `GUEST_PDPTE0..3` with the PDPTEs at
/// L2's CR3 in L1 memory (SDM 27.3.2.4: without EPT they come from
/// memory); they are 0 here.
///
/// # Errors
///
/// [`PrepareError::Control`] when the real engine refuses a control L1 or
/// L0 needs; [`PrepareError::EntryCheck`] when VMCS02 fails the VM-entry
/// checks (then hv-core must not enter L2).
pub fn prepare_vmcs02(
    vmcs12: &VmcsImage,
    l1: &L1Inherited,
    translation: Translation02,
    l0: &L0Requirements,
    real: &VmxCapabilities,
) -> Result<VmcsImage, PrepareError> {
    let mut vmcs02 = VmcsImage::new();
    let controls = set_controls(&mut vmcs02, vmcs12, translation, l0, real)?;
    set_execution_fields(&mut vmcs02, vmcs12, l0);
    set_guest_state(&mut vmcs02, vmcs12, l1, controls);
    // Host state: L0's, since every L2 exit goes to L0 (SDM 25.5).
    for &field in VmcsField::ALL {
        if field.kind() == FieldKind::Host {
            vmcs02.set(field, l0.host_state.get(field));
        }
    }
    check_vm_entry(&vmcs02, real, &l0.entry_context)?;
    Ok(vmcs02)
}

/// What the control words of VMCS02 decided, for the fields that depend on
/// them.
#[derive(Clone, Copy, Debug)]
struct Merged {
    /// VMCS12's secondary controls, or none when VMCS12 does not activate
    /// them (SDM 25.6.2: then they are treated as 0).
    secondary12: SecondaryProcControls,
    /// VMCS12's VM-entry controls.
    entry12: EntryControls,
    /// Whether VMCS12 activates the VMX-preemption timer.
    l1_preemption_timer: bool,
    /// Whether VMCS02 loads `IA32_PAT` on entry.
    loads_pat: bool,
    /// Whether VMCS02 loads DR7 and `IA32_DEBUGCTL` on entry.
    loads_debug_controls: bool,
}

/// Sets the five control words and EPTP/VPID of VMCS02.
fn set_controls(
    vmcs02: &mut VmcsImage,
    vmcs12: &VmcsImage,
    translation: Translation02,
    l0: &L0Requirements,
    real: &VmxCapabilities,
) -> Result<Merged, PrepareError> {
    let pin12: PinBasedControls = control(vmcs12, VmcsField::PinBasedControls);
    let primary12: PrimaryProcControls = control(vmcs12, VmcsField::PrimaryProcBasedControls);
    let secondary12 = if primary12.contains(PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS) {
        control(vmcs12, VmcsField::SecondaryProcBasedControls)
    } else {
        SecondaryProcControls::empty()
    };
    let entry12: EntryControls = control(vmcs12, VmcsField::VmEntryControls);

    // Pin-based: L1's | L0's (SDM 25.6.1).
    let pin = (pin12 & L1_PIN_BASED) | l0.pin_based;
    vmcs02.set(VmcsField::PinBasedControls, adjusted(real, pin)?);

    // Primary: L1's exiting controls | L0's; I/O always exits
    // unconditionally instead of through L1's bitmaps, and without MSR
    // bitmaps every RDMSR/WRMSR exits (SDM 26.1.3); KVM prepare_vmcs02
    // does the same for I/O. Secondary controls are always active: EPT.
    let mut primary = (primary12 & L1_PRIMARY) | l0.primary;
    primary.remove(
        PrimaryProcControls::USE_IO_BITMAPS
            | PrimaryProcControls::USE_MSR_BITMAPS
            | PrimaryProcControls::USE_TPR_SHADOW
            | PrimaryProcControls::ACTIVATE_TERTIARY_CONTROLS,
    );
    primary |= PrimaryProcControls::UNCONDITIONAL_IO_EXITING
        | PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS;
    vmcs02.set(
        VmcsField::PrimaryProcBasedControls,
        adjusted(real, primary)?,
    );

    // Secondary: L1's (when VMCS12 activates them) | L0's, with EPT and
    // VPID always on (SDM 25.6.2); VMCS02 always activates the secondary
    // controls, so L0's always apply.
    let mut secondary = (secondary12 & L1_SECONDARY) | l0.secondary;
    secondary.remove(
        SecondaryProcControls::VIRTUALIZE_APIC_ACCESSES
            | SecondaryProcControls::VIRTUALIZE_X2APIC_MODE
            | SecondaryProcControls::APIC_REGISTER_VIRTUALIZATION
            | SecondaryProcControls::VIRTUAL_INTERRUPT_DELIVERY
            | SecondaryProcControls::ENABLE_VM_FUNCTIONS
            | SecondaryProcControls::VMCS_SHADOWING
            | SecondaryProcControls::ENABLE_PML
            | SecondaryProcControls::EPT_VIOLATION_VE,
    );
    secondary |= SecondaryProcControls::ENABLE_EPT | SecondaryProcControls::ENABLE_VPID;
    vmcs02.set(
        VmcsField::SecondaryProcBasedControls,
        adjusted(real, secondary)?,
    );
    vmcs02.set(VmcsField::EptPointer, translation.eptp02.raw());
    vmcs02.set(VmcsField::VirtualProcessorId, u64::from(translation.vpid02));

    // VM exit: L0's (host address-space size, acknowledge interrupt...),
    // plus saving what l2_exited reads back (SDM 28.3.1, 28.3.4): EFER,
    // PAT, DR7/DEBUGCTL, and the remaining preemption-timer value when L1
    // runs the timer.
    let l1_preemption_timer = pin12.contains(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER);
    let mut exit = l0.exit;
    for save in [
        ExitControls::SAVE_IA32_EFER,
        ExitControls::SAVE_IA32_PAT,
        ExitControls::SAVE_DEBUG_CONTROLS,
    ] {
        if allowed(real, save) {
            exit |= save;
        }
    }
    if l1_preemption_timer {
        // Needed for l2_exited to report the remaining value; refused
        // (an error) if the real engine cannot save it.
        exit |= ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE;
    }
    exit.remove(ExitControls::ACTIVATE_SECONDARY_CONTROLS);
    vmcs02.set(VmcsField::PrimaryVmExitControls, adjusted(real, exit)?);

    // VM entry: "IA-32e mode guest" from VMCS12 | L0's; EFER always
    // loaded (SDM 27.3.2.1), PAT and debug controls where the real engine
    // can (their value is VMCS12's or L1's, see set_guest_state).
    let mut entry = (entry12 & L1_ENTRY) | l0.entry | EntryControls::LOAD_IA32_EFER;
    let loads_pat = allowed(real, EntryControls::LOAD_IA32_PAT);
    if loads_pat {
        entry |= EntryControls::LOAD_IA32_PAT;
    }
    let loads_debug_controls = allowed(real, EntryControls::LOAD_DEBUG_CONTROLS);
    if loads_debug_controls {
        entry |= EntryControls::LOAD_DEBUG_CONTROLS;
    }
    entry.remove(EntryControls::ENTRY_TO_SMM | EntryControls::DEACTIVATE_DUAL_MONITOR_TREATMENT);
    vmcs02.set(VmcsField::VmEntryControls, adjusted(real, entry)?);

    Ok(Merged {
        secondary12,
        entry12,
        l1_preemption_timer,
        loads_pat,
        loads_debug_controls,
    })
}

/// The 64-bit and natural-width execution, exit and entry fields besides
/// the control words.
fn set_execution_fields(vmcs02: &mut VmcsImage, vmcs12: &VmcsImage, l0: &L0Requirements) {
    // Exception bitmap: L1's | L0's (SDM 25.6.3). If L0 intercepts #PF,
    // mask = match = 0 makes every #PF exit (PFEC & 0 == 0 selects bit 14
    // = 1); otherwise VMCS12's mask and match give exactly L1's choice.
    let bitmap12 = ExceptionBitmap::from_raw(vmcs12.get(VmcsField::ExceptionBitmap) as u32);
    let bitmap = ExceptionBitmap::from_raw(bitmap12.raw() | l0.exception_bitmap.raw());
    vmcs02.set(VmcsField::ExceptionBitmap, u64::from(bitmap.raw()));
    if !l0.exception_bitmap.intercepts(ExceptionVector::PageFault) {
        for field in [
            VmcsField::PageFaultErrorCodeMask,
            VmcsField::PageFaultErrorCodeMatch,
        ] {
            vmcs02.set(field, vmcs12.get(field));
        }
    }

    // CR0/CR4 (SDM 25.6.6): L1 owns the bits of its mask (L0 owns none
    // here). For L1's bits L2 reads VMCS12's shadow; for every other bit
    // the shadow is L2's own value, VMCS12's guest CR (KVM
    // nested_read_cr0).
    for (mask, shadow, guest) in [
        (
            VmcsField::Cr0GuestHostMask,
            VmcsField::Cr0ReadShadow,
            VmcsField::GuestCr0,
        ),
        (
            VmcsField::Cr4GuestHostMask,
            VmcsField::Cr4ReadShadow,
            VmcsField::GuestCr4,
        ),
    ] {
        let mask12 = vmcs12.get(mask);
        vmcs02.set(mask, mask12);
        vmcs02.set(
            shadow,
            (vmcs12.get(shadow) & mask12) | (vmcs12.get(guest) & !mask12),
        );
    }

    // CR3-target controls (SDM 25.6.7) and TSC offset (25.6.5) are L1's.
    for field in [
        VmcsField::Cr3TargetCount,
        VmcsField::Cr3TargetValue0,
        VmcsField::Cr3TargetValue1,
        VmcsField::Cr3TargetValue2,
        VmcsField::Cr3TargetValue3,
        VmcsField::TscOffset,
    ] {
        vmcs02.set(field, vmcs12.get(field));
    }

    // Event injection (SDM 25.8.3) is L1's.
    for field in [
        VmcsField::VmEntryInterruptionInfo,
        VmcsField::VmEntryExceptionErrorCode,
        VmcsField::VmEntryInstructionLength,
    ] {
        vmcs02.set(field, vmcs12.get(field));
    }
    // The MSR areas would be L1 addresses: their counts and addresses stay
    // 0 (SDM 25.7.2, 25.8.2).
}

/// The guest-state area: VMCS12's, with EFER, PAT and the debug controls
/// resolved, and no VMCS link.
fn set_guest_state(vmcs02: &mut VmcsImage, vmcs12: &VmcsImage, l1: &L1Inherited, merged: Merged) {
    // Only the guest-state fields of features VMCS02 uses: a VMWRITE of a
    // field the real processor lacks (FRED, CET, PKRS, LBR_CTL, ...)
    // fails (SDM 31.3 VMWRITE, "unsupported VMCS component"), and none of
    // those features is advertised to L1, so their VMCS12 values mean
    // nothing (KVM prepare_vmcs02_rare copies an explicit list too).
    for &field in GUEST_STATE_FIELDS {
        if field.kind() == FieldKind::Guest {
            vmcs02.set(field, vmcs12.get(field));
        }
    }
    vmcs02.set(VmcsField::VmcsLinkPointer, NO_LINK_POINTER);

    // EFER (SDM 27.3.2.1): VMCS12's if it loads EFER, otherwise L1's with
    // LMA from "IA-32e mode guest", and LME too when L2's CR0.PG = 1
    // (otherwise L1's LME stays; KVM nested_vmx_calc_efer).
    let efer = if merged.entry12.contains(EntryControls::LOAD_IA32_EFER) {
        vmcs12.get(VmcsField::GuestEfer)
    } else {
        let ia32e = merged.entry12.contains(EntryControls::IA32E_MODE_GUEST);
        let paging = vmcs12.get(VmcsField::GuestCr0) & Cr0::PG.bits() != 0;
        let mut efer = Efer::from_bits_retain(l1.efer);
        efer.set(Efer::LMA, ia32e);
        if paging {
            efer.set(Efer::LME, ia32e);
        }
        efer.bits()
    };
    vmcs02.set(VmcsField::GuestEfer, efer);

    // PAT and DR7/DEBUGCTL: VMCS12's when it loads them, else L1's, which
    // the processor would leave in place (SDM 27.3.2.1).
    if merged.loads_pat && !merged.entry12.contains(EntryControls::LOAD_IA32_PAT) {
        vmcs02.set(VmcsField::GuestPat, l1.pat);
    }
    if merged.loads_debug_controls && !merged.entry12.contains(EntryControls::LOAD_DEBUG_CONTROLS) {
        vmcs02.set(VmcsField::GuestDr7, l1.dr7);
        vmcs02.set(VmcsField::GuestDebugCtl, l1.debugctl);
    }

    // PDPTEs (SDM 27.3.2.4): from the fields only when VMCS12 uses EPT;
    // without it the processor reads them at CR3 (the caller's job).
    if !merged
        .secondary12
        .contains(SecondaryProcControls::ENABLE_EPT)
    {
        for field in [
            VmcsField::GuestPdpte0,
            VmcsField::GuestPdpte1,
            VmcsField::GuestPdpte2,
            VmcsField::GuestPdpte3,
        ] {
            vmcs02.set(field, 0);
        }
    }

    // The preemption timer counts down from L1's value when L1 runs it.
    if !merged.l1_preemption_timer {
        vmcs02.set(VmcsField::VmxPreemptionTimerValue, 0);
    }
}

/// [`L2Exited`] for `deliver_exit_to_l1`, from VMCS02's fields at the exit
/// (`vmcs02_guest` holds at least [`GUEST_STATE_FIELDS`]), VMCS12 and L2's
/// general-purpose registers.
///
/// CR0 and CR4 are what L1 must see (KVM `vmcs12_guest_cr0`): bits L1 owns
/// (VMCS12's mask) keep VMCS12's guest value, since L2 cannot change them
/// without an exit to L1; bits only L0 owns (VMCS02's mask, not VMCS12's)
/// are what L2 believes, VMCS02's read shadow; the rest are L2's real
/// bits. The preemption-timer value is what remains of L1's timer when L1
/// runs one, VMCS12's value otherwise.
pub fn l2_exited(vmcs02_guest: &VmcsImage, vmcs12: &VmcsImage, gprs: Gprs) -> L2Exited {
    let mut guest = VmcsImage::new();
    for &field in GUEST_STATE_FIELDS {
        if field.kind() == FieldKind::Guest {
            guest.set(field, vmcs02_guest.get(field));
        }
    }
    for (mask, shadow, cr) in [
        (
            VmcsField::Cr0GuestHostMask,
            VmcsField::Cr0ReadShadow,
            VmcsField::GuestCr0,
        ),
        (
            VmcsField::Cr4GuestHostMask,
            VmcsField::Cr4ReadShadow,
            VmcsField::GuestCr4,
        ),
    ] {
        let l1_owned = vmcs12.get(mask);
        let l0_only = vmcs02_guest.get(mask) & !l1_owned;
        let l2_owned = !(l1_owned | l0_only);
        guest.set(
            cr,
            (vmcs12.get(cr) & l1_owned)
                | (vmcs02_guest.get(shadow) & l0_only)
                | (vmcs02_guest.get(cr) & l2_owned),
        );
    }
    let pin12: PinBasedControls = control(vmcs12, VmcsField::PinBasedControls);
    if !pin12.contains(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER) {
        guest.set(
            VmcsField::VmxPreemptionTimerValue,
            vmcs12.get(VmcsField::VmxPreemptionTimerValue),
        );
    }
    L2Exited { guest, gprs }
}
