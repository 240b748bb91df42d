//! VMCS02 preparation: every VMCS02 built from a valid VMCS12 passes the
//! real engine's VM-entry checks, and each merge rule of `hv_core::vmcs02`
//! holds.

use hv_arch_vmx::capabilities::{ControlAdjustError, VmxCapabilities};
use hv_arch_vmx::checks::{EntryCheckFailure, EntryContext, baseline, check_vm_entry};
use hv_arch_vmx::controls::{
    ControlKind, EntryControls, ExceptionBitmap, ExceptionVector, ExitControls, PinBasedControls,
    PrimaryProcControls, SecondaryProcControls,
};
use hv_arch_vmx::ept::Eptp;
use hv_arch_vmx::registers::{Cr0, Cr4, Efer, PAT_RESET};
use hv_arch_vmx::vmcs::{FieldKind, VmcsField, VmcsImage};
use hv_core::platform::L0Requirements;
use hv_core::state::Gprs;
use hv_core::vmcs02::{
    GUEST_STATE_FIELDS, L1Inherited, PrepareError, Translation02, l2_exited, prepare_vmcs02,
};
use hv_core::vmx::VirtualCapabilities;
use proptest::prelude::*;

/// MAXPHYADDR of the test processor.
const MAXPHYADDR: u8 = 39;
/// Where L1 keeps VMCS12 (the current-VMCS pointer of L1's VMLAUNCH).
const VMCS12_ADDRESS: u64 = 0x0009_0000;
/// Where L0 keeps VMCS02.
const VMCS02_ADDRESS: u64 = 0x0100_0000;
/// EPT02's root.
const EPT02_PML4: u64 = 0x0200_0000;
/// The VPID02 L0 chose.
const VPID02: u16 = 7;
/// L1's EFER: SCE, LME, LMA, NXE.
const L1_EFER: u64 = 0xd01;
/// L1's PAT: not the reset value, so inheritance is visible.
const L1_PAT: u64 = 0x0007_0406_0007_0106;
/// L1's DEBUGCTL: LBR (bit 0).
const L1_DEBUGCTL: u64 = 1;
/// L1's DR7: L0 enabled (bit 0) plus the reserved 1 (bit 10).
const L1_DR7: u64 = 0x401;

fn real() -> VmxCapabilities {
    VmxCapabilities::bochs_skylake_x()
}

fn virtual_caps() -> VmxCapabilities {
    *VirtualCapabilities::derive(&real()).capabilities()
}

/// L1's processor context for its VMLAUNCH of VMCS12.
fn context12() -> EntryContext {
    EntryContext::new(MAXPHYADDR, VMCS12_ADDRESS)
}

/// A VMCS12 for a 64-bit L2, built for the capabilities hv advertises.
fn long_mode_vmcs12() -> VmcsImage {
    let vmcs12 = baseline::long_mode_guest(&virtual_caps());
    check_vm_entry(&vmcs12, &virtual_caps(), &context12()).expect("baseline VMCS12 is valid");
    vmcs12
}

/// What a realistic L0 on hardware needs: host interrupts and NMIs exit,
/// #MC exits, a 64-bit host that loads its EFER and PAT on exit.
fn l0() -> L0Requirements {
    L0Requirements {
        pin_based: PinBasedControls::EXTERNAL_INTERRUPT_EXITING | PinBasedControls::NMI_EXITING,
        primary: PrimaryProcControls::empty(),
        secondary: SecondaryProcControls::empty(),
        exit: ExitControls::HOST_ADDRESS_SPACE_SIZE
            | ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT
            | ExitControls::LOAD_IA32_EFER
            | ExitControls::LOAD_IA32_PAT,
        entry: EntryControls::empty(),
        exception_bitmap: ExceptionBitmap::EMPTY.with(ExceptionVector::MachineCheck),
        host_state: l0_host_state(),
        entry_context: EntryContext::new(MAXPHYADDR, VMCS02_ADDRESS),
    }
}

/// L0's host state: the baseline's host area with L0's own RIP/RSP.
fn l0_host_state() -> VmcsImage {
    let mut host = VmcsImage::new();
    let template = baseline::long_mode_guest(&real());
    for &field in VmcsField::ALL {
        if field.kind() == FieldKind::Host {
            host.set(field, template.get(field));
        }
    }
    host.set(VmcsField::HostRip, 0xffff_ffff_c000_1000);
    host.set(VmcsField::HostRsp, 0xffff_ffff_c000_8000);
    host
}

fn inherited() -> L1Inherited {
    L1Inherited {
        efer: L1_EFER,
        pat: L1_PAT,
        debugctl: L1_DEBUGCTL,
        dr7: L1_DR7,
    }
}

fn translation() -> Translation02 {
    Translation02 {
        eptp02: Eptp::from_raw(EPT02_PML4 | 6 | (3 << 3)),
        vpid02: VPID02,
    }
}

fn prepare(vmcs12: &VmcsImage) -> Result<VmcsImage, PrepareError> {
    prepare_vmcs02(vmcs12, &inherited(), translation(), &l0(), &real())
}

fn prepare_ok(vmcs12: &VmcsImage) -> VmcsImage {
    prepare(vmcs12).expect("VMCS02 is accepted")
}

fn primary(vmcs: &VmcsImage) -> PrimaryProcControls {
    PrimaryProcControls::from_bits_retain(vmcs.get(VmcsField::PrimaryProcBasedControls) as u32)
}

fn secondary(vmcs: &VmcsImage) -> SecondaryProcControls {
    SecondaryProcControls::from_bits_retain(vmcs.get(VmcsField::SecondaryProcBasedControls) as u32)
}

fn pin(vmcs: &VmcsImage) -> PinBasedControls {
    PinBasedControls::from_bits_retain(vmcs.get(VmcsField::PinBasedControls) as u32)
}

fn exit_controls(vmcs: &VmcsImage) -> ExitControls {
    ExitControls::from_bits_retain(vmcs.get(VmcsField::PrimaryVmExitControls) as u32)
}

fn entry_controls(vmcs: &VmcsImage) -> EntryControls {
    EntryControls::from_bits_retain(vmcs.get(VmcsField::VmEntryControls) as u32)
}

/// `vmcs12` with its entry controls changed by `f`.
fn with_entry(mut vmcs12: VmcsImage, f: impl FnOnce(&mut EntryControls)) -> VmcsImage {
    let mut entry = entry_controls(&vmcs12);
    f(&mut entry);
    vmcs12.set(VmcsField::VmEntryControls, u64::from(entry.bits()));
    vmcs12
}

#[test]
fn vmcs02_from_the_baseline_passes_the_real_checks() {
    let vmcs02 = prepare_ok(&long_mode_vmcs12());
    assert_eq!(
        check_vm_entry(&vmcs02, &real(), &l0().entry_context),
        Ok(())
    );
}

#[test]
fn every_baseline_mode_gives_a_valid_vmcs02() {
    let virt = virtual_caps();
    for vmcs12 in [
        baseline::long_mode_guest(&virt),
        baseline::protected_mode_guest(&virt),
        baseline::unrestricted_real_mode_guest(&virt),
    ] {
        assert_eq!(check_vm_entry(&vmcs12, &virt, &context12()), Ok(()));
        assert!(prepare(&vmcs12).is_ok());
    }
}

#[test]
fn io_and_msr_bitmaps_never_reach_vmcs02() {
    let vmcs12 = long_mode_vmcs12();
    assert!(primary(&vmcs12).contains(PrimaryProcControls::USE_IO_BITMAPS));
    assert!(primary(&vmcs12).contains(PrimaryProcControls::USE_MSR_BITMAPS));
    let vmcs02 = prepare_ok(&vmcs12);
    let controls = primary(&vmcs02);
    assert!(!controls.contains(PrimaryProcControls::USE_IO_BITMAPS));
    assert!(controls.contains(PrimaryProcControls::UNCONDITIONAL_IO_EXITING));
    assert!(!controls.contains(PrimaryProcControls::USE_MSR_BITMAPS));
    for field in [
        VmcsField::IoBitmapA,
        VmcsField::IoBitmapB,
        VmcsField::MsrBitmap,
    ] {
        assert_eq!(vmcs02.get(field), 0, "{}", field.name());
    }
}

#[test]
fn msr_areas_are_empty_and_there_is_no_vmcs_link() {
    let mut vmcs12 = long_mode_vmcs12();
    for (count, address) in [
        (
            VmcsField::VmExitMsrStoreCount,
            VmcsField::VmExitMsrStoreAddress,
        ),
        (
            VmcsField::VmExitMsrLoadCount,
            VmcsField::VmExitMsrLoadAddress,
        ),
        (
            VmcsField::VmEntryMsrLoadCount,
            VmcsField::VmEntryMsrLoadAddress,
        ),
    ] {
        vmcs12.set(count, 2);
        vmcs12.set(address, 0x0003_3000);
    }
    assert_eq!(
        check_vm_entry(&vmcs12, &virtual_caps(), &context12()),
        Ok(())
    );
    let vmcs02 = prepare_ok(&vmcs12);
    for field in [
        VmcsField::VmExitMsrStoreCount,
        VmcsField::VmExitMsrStoreAddress,
        VmcsField::VmExitMsrLoadCount,
        VmcsField::VmExitMsrLoadAddress,
        VmcsField::VmEntryMsrLoadCount,
        VmcsField::VmEntryMsrLoadAddress,
    ] {
        assert_eq!(vmcs02.get(field), 0, "{}", field.name());
    }
    assert_eq!(vmcs02.get(VmcsField::VmcsLinkPointer), u64::MAX);
}

#[test]
fn l1_address_features_are_cleared() {
    // Not advertised to L1, so a checked VMCS12 never has them; prepare
    // must still never copy their L1 addresses.
    let mut vmcs12 = long_mode_vmcs12();
    let wanted_primary = primary(&vmcs12) | PrimaryProcControls::USE_TPR_SHADOW;
    vmcs12.set(
        VmcsField::PrimaryProcBasedControls,
        u64::from(wanted_primary.bits()),
    );
    let wanted_secondary = secondary(&vmcs12)
        | SecondaryProcControls::VIRTUALIZE_APIC_ACCESSES
        | SecondaryProcControls::VMCS_SHADOWING
        | SecondaryProcControls::ENABLE_PML;
    vmcs12.set(
        VmcsField::SecondaryProcBasedControls,
        u64::from(wanted_secondary.bits()),
    );
    vmcs12.set(VmcsField::VirtualApicAddress, 0x0003_4000);
    vmcs12.set(VmcsField::ApicAccessAddress, 0x0003_5000);
    vmcs12.set(VmcsField::PmlAddress, 0x0003_6000);
    let vmcs02 = prepare_ok(&vmcs12);
    assert!(!primary(&vmcs02).contains(PrimaryProcControls::USE_TPR_SHADOW));
    assert!(!secondary(&vmcs02).intersects(
        SecondaryProcControls::VIRTUALIZE_APIC_ACCESSES
            | SecondaryProcControls::VMCS_SHADOWING
            | SecondaryProcControls::ENABLE_PML
    ));
    for field in [
        VmcsField::VirtualApicAddress,
        VmcsField::ApicAccessAddress,
        VmcsField::PmlAddress,
    ] {
        assert_eq!(vmcs02.get(field), 0, "{}", field.name());
    }
}

#[test]
fn ept_and_vpid_are_forced_to_l0s_values() {
    let vmcs12 = long_mode_vmcs12();
    assert_eq!(
        vmcs12.get(VmcsField::EptPointer),
        baseline::eptp(&virtual_caps())
    );
    let vmcs02 = prepare_ok(&vmcs12);
    assert!(
        secondary(&vmcs02)
            .contains(SecondaryProcControls::ENABLE_EPT | SecondaryProcControls::ENABLE_VPID)
    );
    assert_eq!(
        vmcs02.get(VmcsField::EptPointer),
        translation().eptp02.raw()
    );
    assert_eq!(vmcs02.get(VmcsField::VirtualProcessorId), u64::from(VPID02));
}

#[test]
fn ept_and_vpid_are_on_even_when_vmcs12_has_no_secondary_controls() {
    let mut vmcs12 = long_mode_vmcs12();
    let without = primary(&vmcs12) - PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS;
    vmcs12.set(
        VmcsField::PrimaryProcBasedControls,
        u64::from(without.bits()),
    );
    // Secondary controls are ignored when not activated (SDM 25.6.2): RDTSCP
    // must not leak into VMCS02.
    assert!(secondary(&vmcs12).contains(SecondaryProcControls::ENABLE_RDTSCP));
    assert_eq!(
        check_vm_entry(&vmcs12, &virtual_caps(), &context12()),
        Ok(())
    );
    let vmcs02 = prepare_ok(&vmcs12);
    let controls = secondary(&vmcs02);
    assert!(
        controls.contains(SecondaryProcControls::ENABLE_EPT | SecondaryProcControls::ENABLE_VPID)
    );
    assert!(!controls.contains(SecondaryProcControls::ENABLE_RDTSCP));
}

#[test]
fn vpid02_zero_is_refused_by_the_entry_checks() {
    let zero = Translation02 {
        vpid02: 0,
        ..translation()
    };
    let result = prepare_vmcs02(&long_mode_vmcs12(), &inherited(), zero, &l0(), &real());
    assert!(matches!(
        result,
        Err(PrepareError::EntryCheck(EntryCheckFailure::Control(_)))
    ));
}

#[test]
fn controls_are_l1s_or_l0s_plus_the_real_must_be_one_bits() {
    let vmcs12 = long_mode_vmcs12();
    let vmcs02 = prepare_ok(&vmcs12);
    let real = real();
    // L1 asked for HLT exiting and virtual NMIs; L0 for external
    // interrupts and NMIs.
    assert!(primary(&vmcs02).contains(PrimaryProcControls::HLT_EXITING));
    assert!(pin(&vmcs02).contains(
        PinBasedControls::EXTERNAL_INTERRUPT_EXITING
            | PinBasedControls::NMI_EXITING
            | PinBasedControls::VIRTUAL_NMIS
    ));
    for (kind, field) in [
        (ControlKind::PinBased, VmcsField::PinBasedControls),
        (
            ControlKind::PrimaryProcessorBased,
            VmcsField::PrimaryProcBasedControls,
        ),
        (ControlKind::PrimaryExit, VmcsField::PrimaryVmExitControls),
        (ControlKind::Entry, VmcsField::VmEntryControls),
    ] {
        let must = real.allowed(kind).must_be_one;
        assert_eq!(vmcs02.get(field) & must, must, "{}", field.name());
    }
}

#[test]
fn exit_controls_are_l0s_plus_saving_l2_state() {
    let vmcs02 = prepare_ok(&long_mode_vmcs12());
    let exit = exit_controls(&vmcs02);
    assert!(exit.contains(
        ExitControls::HOST_ADDRESS_SPACE_SIZE
            | ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT
            | ExitControls::LOAD_IA32_EFER
            | ExitControls::LOAD_IA32_PAT
            | ExitControls::SAVE_IA32_EFER
            | ExitControls::SAVE_IA32_PAT
            | ExitControls::SAVE_DEBUG_CONTROLS
    ));
    // L1 did not run the preemption timer: nothing to save.
    assert!(!exit.contains(ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE));
}

#[test]
fn a_control_the_real_engine_refuses_is_an_error_naming_it() {
    let mut l0 = l0();
    // Bochs' Skylake-X has no posted interrupts (pin-based bit 7).
    l0.pin_based |= PinBasedControls::PROCESS_POSTED_INTERRUPTS;
    let result = prepare_vmcs02(
        &long_mode_vmcs12(),
        &inherited(),
        translation(),
        &l0,
        &real(),
    );
    let Err(PrepareError::Control(error)) = result else {
        panic!("expected a control error, got {result:?}");
    };
    assert!(matches!(
        error,
        ControlAdjustError::NotAllowedToBeOne { .. }
    ));
    assert_eq!(error.kind(), ControlKind::PinBased);
    assert_eq!(error.bit(), 7);
}

#[test]
fn exception_bitmap_is_the_union_and_l0s_pf_intercept_catches_every_pf() {
    let mut vmcs12 = long_mode_vmcs12();
    let l1_bitmap = ExceptionBitmap::EMPTY
        .with(ExceptionVector::InvalidOpcode)
        .with(ExceptionVector::PageFault);
    vmcs12.set(VmcsField::ExceptionBitmap, u64::from(l1_bitmap.raw()));
    vmcs12.set(VmcsField::PageFaultErrorCodeMask, 0x1);
    vmcs12.set(VmcsField::PageFaultErrorCodeMatch, 0x1);

    // L0 does not intercept #PF: L1's mask/match decide.
    let vmcs02 = prepare_ok(&vmcs12);
    let bitmap = ExceptionBitmap::from_raw(vmcs02.get(VmcsField::ExceptionBitmap) as u32);
    assert!(bitmap.intercepts(ExceptionVector::InvalidOpcode));
    assert!(bitmap.intercepts(ExceptionVector::PageFault));
    assert!(bitmap.intercepts(ExceptionVector::MachineCheck));
    assert_eq!(vmcs02.get(VmcsField::PageFaultErrorCodeMask), 1);
    assert_eq!(vmcs02.get(VmcsField::PageFaultErrorCodeMatch), 1);

    // L0 intercepts #PF: mask = match = 0.
    let mut l0 = l0();
    l0.exception_bitmap = l0.exception_bitmap.with(ExceptionVector::PageFault);
    let vmcs02 = prepare_vmcs02(&vmcs12, &inherited(), translation(), &l0, &real()).unwrap();
    assert_eq!(vmcs02.get(VmcsField::PageFaultErrorCodeMask), 0);
    assert_eq!(vmcs02.get(VmcsField::PageFaultErrorCodeMatch), 0);
}

#[test]
fn cr_masks_are_l1s_and_read_shadows_show_l2_its_own_bits() {
    let mut vmcs12 = long_mode_vmcs12();
    let guest_cr0 = vmcs12.get(VmcsField::GuestCr0);
    let guest_cr4 = vmcs12.get(VmcsField::GuestCr4);
    // L1 owns CR0.TS and CR4.VMXE; L2 believes TS = 1 and VMXE = 0.
    let ts = Cr0::TS.bits();
    let vmxe = Cr4::VMXE.bits();
    assert_eq!(guest_cr4 & vmxe, vmxe);
    vmcs12.set(VmcsField::Cr0GuestHostMask, ts);
    vmcs12.set(VmcsField::Cr0ReadShadow, ts | 0x8000_0000);
    vmcs12.set(VmcsField::Cr4GuestHostMask, vmxe);
    vmcs12.set(VmcsField::Cr4ReadShadow, 0x20);
    let vmcs02 = prepare_ok(&vmcs12);
    assert_eq!(vmcs02.get(VmcsField::Cr0GuestHostMask), ts);
    assert_eq!(vmcs02.get(VmcsField::Cr4GuestHostMask), vmxe);
    // Masked bits from VMCS12's shadow, others L2's real CR value.
    assert_eq!(vmcs02.get(VmcsField::Cr0ReadShadow), (guest_cr0 & !ts) | ts);
    assert_eq!(vmcs02.get(VmcsField::Cr4ReadShadow), guest_cr4 & !vmxe);
    assert_eq!(vmcs02.get(VmcsField::GuestCr0), guest_cr0);
    assert_eq!(vmcs02.get(VmcsField::GuestCr4), guest_cr4);
}

#[test]
fn cr3_targets_tsc_offset_and_event_injection_are_l1s() {
    let mut vmcs12 = long_mode_vmcs12();
    vmcs12.set(VmcsField::Cr3TargetCount, 2);
    vmcs12.set(VmcsField::Cr3TargetValue0, 0x1000);
    vmcs12.set(VmcsField::Cr3TargetValue1, 0x2000);
    vmcs12.set(VmcsField::TscOffset, 0xffff_fff0_0000_0000);
    // #UD, hardware exception (type 3), valid.
    vmcs12.set(VmcsField::VmEntryInterruptionInfo, 0x8000_0306);
    assert_eq!(
        check_vm_entry(&vmcs12, &virtual_caps(), &context12()),
        Ok(())
    );
    let vmcs02 = prepare_ok(&vmcs12);
    for field in [
        VmcsField::Cr3TargetCount,
        VmcsField::Cr3TargetValue0,
        VmcsField::Cr3TargetValue1,
        VmcsField::TscOffset,
        VmcsField::VmEntryInterruptionInfo,
    ] {
        assert_eq!(vmcs02.get(field), vmcs12.get(field), "{}", field.name());
    }
}

#[test]
fn guest_state_is_vmcs12s() {
    // Loading debug controls too, so DR7/DEBUGCTL are VMCS12's as well.
    let vmcs12 = with_entry(long_mode_vmcs12(), |e| {
        e.insert(EntryControls::LOAD_DEBUG_CONTROLS);
    });
    let vmcs02 = prepare_ok(&vmcs12);
    for &field in GUEST_STATE_FIELDS {
        if field.kind() == FieldKind::Guest {
            assert_eq!(vmcs02.get(field), vmcs12.get(field), "{}", field.name());
        }
    }
}

#[test]
fn guest_fields_of_features_vmcs02_does_not_use_are_not_copied() {
    // A VMWRITE of FRED, CET, PKRS, ... fails on a processor without
    // them (SDM 31.3): VMCS12's values must not reach VMCS02.
    let mut vmcs12 = long_mode_vmcs12();
    let dropped: Vec<VmcsField> = VmcsField::ALL
        .iter()
        .copied()
        .filter(|field| {
            field.kind() == FieldKind::Guest
                && *field != VmcsField::VmcsLinkPointer
                && !GUEST_STATE_FIELDS.contains(field)
        })
        .collect();
    for &field in &dropped {
        vmcs12.set(field, 1);
    }
    let vmcs02 = prepare_ok(&vmcs12);
    assert!(dropped.contains(&VmcsField::GuestFredConfig));
    assert!(dropped.contains(&VmcsField::GuestPkrs));
    for field in dropped {
        assert_eq!(vmcs02.get(field), 0, "{}", field.name());
    }
}

#[test]
fn host_state_is_l0s() {
    let vmcs02 = prepare_ok(&long_mode_vmcs12());
    let host = l0_host_state();
    for &field in VmcsField::ALL {
        if field.kind() == FieldKind::Host {
            assert_eq!(vmcs02.get(field), host.get(field), "{}", field.name());
        }
    }
    assert_eq!(vmcs02.get(VmcsField::HostRip), 0xffff_ffff_c000_1000);
}

#[test]
fn efer_is_vmcs12s_when_it_loads_efer() {
    let mut vmcs12 = long_mode_vmcs12();
    vmcs12.set(
        VmcsField::GuestEfer,
        (Efer::LME | Efer::LMA | Efer::NXE).bits(),
    );
    let vmcs02 = prepare_ok(&vmcs12);
    assert!(entry_controls(&vmcs02).contains(EntryControls::LOAD_IA32_EFER));
    assert_eq!(
        vmcs02.get(VmcsField::GuestEfer),
        (Efer::LME | Efer::LMA | Efer::NXE).bits()
    );
}

#[test]
fn efer_is_l1s_with_lma_lme_from_ia32e_mode_guest_otherwise() {
    // 64-bit L2 without "load IA32_EFER": L1's EFER, LMA/LME set.
    let vmcs12 = with_entry(long_mode_vmcs12(), |e| {
        e.remove(EntryControls::LOAD_IA32_EFER);
    });
    assert_eq!(
        check_vm_entry(&vmcs12, &virtual_caps(), &context12()),
        Ok(())
    );
    let vmcs02 = prepare_ok(&vmcs12);
    assert!(entry_controls(&vmcs02).contains(EntryControls::LOAD_IA32_EFER));
    assert_eq!(vmcs02.get(VmcsField::GuestEfer), L1_EFER);

    // 32-bit L2 without "load IA32_EFER": LMA and LME cleared.
    let virt = virtual_caps();
    let vmcs12 = with_entry(baseline::protected_mode_guest(&virt), |e| {
        e.remove(EntryControls::LOAD_IA32_EFER);
    });
    assert_eq!(check_vm_entry(&vmcs12, &virt, &context12()), Ok(()));
    let vmcs02 = prepare_ok(&vmcs12);
    assert_eq!(
        vmcs02.get(VmcsField::GuestEfer),
        if vmcs12.get(VmcsField::GuestCr0) & Cr0::PG.bits() == 0 {
            L1_EFER & !Efer::LMA.bits()
        } else {
            L1_EFER & !(Efer::LMA | Efer::LME).bits()
        }
    );
}

#[test]
fn efer_lme_is_l1s_when_l2_paging_is_off() {
    // SDM 27.3.2.1: LME follows "IA-32e mode guest" only when CR0.PG = 1;
    // with paging off L2 keeps L1's LME (L1's EFER has LME and LMA).
    let virt = virtual_caps();
    let vmcs12 = with_entry(baseline::unrestricted_real_mode_guest(&virt), |e| {
        e.remove(EntryControls::LOAD_IA32_EFER);
    });
    assert_eq!(vmcs12.get(VmcsField::GuestCr0) & Cr0::PG.bits(), 0);
    assert_eq!(check_vm_entry(&vmcs12, &virt, &context12()), Ok(()));
    let vmcs02 = prepare_ok(&vmcs12);
    assert_eq!(
        vmcs02.get(VmcsField::GuestEfer),
        L1_EFER & !Efer::LMA.bits()
    );
}

#[test]
fn pat_is_vmcs12s_or_l1s() {
    let vmcs12 = long_mode_vmcs12();
    assert_eq!(prepare_ok(&vmcs12).get(VmcsField::GuestPat), PAT_RESET);
    let vmcs12 = with_entry(vmcs12, |e| e.remove(EntryControls::LOAD_IA32_PAT));
    let vmcs02 = prepare_ok(&vmcs12);
    assert!(entry_controls(&vmcs02).contains(EntryControls::LOAD_IA32_PAT));
    assert_eq!(vmcs02.get(VmcsField::GuestPat), L1_PAT);
}

#[test]
fn debug_controls_are_vmcs12s_or_l1s() {
    let vmcs12 = with_entry(long_mode_vmcs12(), |e| {
        e.insert(EntryControls::LOAD_DEBUG_CONTROLS);
    });
    let mut vmcs12 = vmcs12;
    vmcs12.set(VmcsField::GuestDr7, 0x402);
    vmcs12.set(VmcsField::GuestDebugCtl, 2);
    let vmcs02 = prepare_ok(&vmcs12);
    assert_eq!(vmcs02.get(VmcsField::GuestDr7), 0x402);
    assert_eq!(vmcs02.get(VmcsField::GuestDebugCtl), 2);

    let vmcs12 = with_entry(vmcs12, |e| e.remove(EntryControls::LOAD_DEBUG_CONTROLS));
    let vmcs02 = prepare_ok(&vmcs12);
    assert!(entry_controls(&vmcs02).contains(EntryControls::LOAD_DEBUG_CONTROLS));
    assert_eq!(vmcs02.get(VmcsField::GuestDr7), L1_DR7);
    assert_eq!(vmcs02.get(VmcsField::GuestDebugCtl), L1_DEBUGCTL);
}

#[test]
fn preemption_timer_passes_through_and_is_saved() {
    let mut vmcs12 = long_mode_vmcs12();
    let with_timer = pin(&vmcs12) | PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER;
    vmcs12.set(VmcsField::PinBasedControls, u64::from(with_timer.bits()));
    vmcs12.set(VmcsField::VmxPreemptionTimerValue, 5000);
    assert_eq!(
        check_vm_entry(&vmcs12, &virtual_caps(), &context12()),
        Ok(())
    );
    let vmcs02 = prepare_ok(&vmcs12);
    assert!(pin(&vmcs02).contains(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER));
    assert!(exit_controls(&vmcs02).contains(ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE));
    assert_eq!(vmcs02.get(VmcsField::VmxPreemptionTimerValue), 5000);

    // At the exit, 1234 remained: that is what L1 sees.
    let mut at_exit = vmcs02.clone();
    at_exit.set(VmcsField::VmxPreemptionTimerValue, 1234);
    let exited = l2_exited(&at_exit, &vmcs12, Gprs::default());
    assert_eq!(exited.guest.get(VmcsField::VmxPreemptionTimerValue), 1234);

    // Without L1's timer VMCS12's value is kept.
    let vmcs12 = long_mode_vmcs12().with(VmcsField::VmxPreemptionTimerValue, 77);
    let vmcs02 = prepare_ok(&vmcs12);
    assert_eq!(vmcs02.get(VmcsField::VmxPreemptionTimerValue), 0);
    let exited = l2_exited(&vmcs02, &vmcs12, Gprs::default());
    assert_eq!(exited.guest.get(VmcsField::VmxPreemptionTimerValue), 77);
}

#[test]
fn pdptes_are_vmcs12s_only_when_vmcs12_uses_ept() {
    let virt = virtual_caps();
    let mut vmcs12 = baseline::protected_mode_guest(&virt);
    let cr4 = vmcs12.get(VmcsField::GuestCr4) | Cr4::PAE.bits();
    vmcs12.set(VmcsField::GuestCr4, cr4);
    vmcs12.set(VmcsField::GuestPdpte0, 0x0005_0001);
    assert_eq!(check_vm_entry(&vmcs12, &virt, &context12()), Ok(()));
    assert_eq!(prepare_ok(&vmcs12).get(VmcsField::GuestPdpte0), 0x0005_0001);

    let without_ept = secondary(&vmcs12) - SecondaryProcControls::ENABLE_EPT;
    vmcs12.set(
        VmcsField::SecondaryProcBasedControls,
        u64::from(without_ept.bits()),
    );
    assert_eq!(check_vm_entry(&vmcs12, &virt, &context12()), Ok(()));
    assert_eq!(prepare_ok(&vmcs12).get(VmcsField::GuestPdpte0), 0);
}

#[test]
fn l2_exited_cr_bits_come_from_their_owner() {
    let mut vmcs12 = long_mode_vmcs12();
    let ts = Cr0::TS.bits();
    let mp = Cr0::MP.bits();
    let em = Cr0::EM.bits();
    // L1 owns TS; VMCS12 says TS = 0 in L2's CR0.
    vmcs12.set(VmcsField::Cr0GuestHostMask, ts);
    vmcs12.set(VmcsField::GuestCr0, vmcs12.get(VmcsField::GuestCr0) & !ts);
    let mut at_exit = prepare_ok(&vmcs12);
    // Pretend L0 also owns EM (its mask in VMCS02) and L2 believes EM = 1.
    at_exit.set(VmcsField::Cr0GuestHostMask, ts | em);
    at_exit.set(VmcsField::Cr0ReadShadow, em);
    // L2's real CR0 at the exit: TS = 1 (L0's doing), EM = 0, MP cleared
    // by L2 itself (an L2-owned bit).
    let real_cr0 = (vmcs12.get(VmcsField::GuestCr0) | ts) & !em & !mp;
    at_exit.set(VmcsField::GuestCr0, real_cr0);
    let exited = l2_exited(&at_exit, &vmcs12, Gprs::default());
    let cr0 = exited.guest.get(VmcsField::GuestCr0);
    assert_eq!(cr0 & ts, 0, "TS is L1's: VMCS12's value");
    assert_eq!(cr0 & em, em, "EM is only L0's: the read shadow");
    assert_eq!(cr0 & mp, 0, "MP is L2's: the real value");
    assert_eq!(cr0 & Cr0::PG.bits(), Cr0::PG.bits());
}

#[test]
fn l2_exited_carries_guest_state_and_gprs() {
    let vmcs12 = long_mode_vmcs12();
    let mut at_exit = prepare_ok(&vmcs12);
    at_exit.set(VmcsField::GuestRip, 0x1234);
    at_exit.set(
        VmcsField::GuestEfer,
        (Efer::LME | Efer::LMA | Efer::SCE).bits(),
    );
    let mut gprs = Gprs::default();
    gprs.set(3, 0xbeef);
    let exited = l2_exited(&at_exit, &vmcs12, gprs);
    assert_eq!(exited.gprs.get(3), 0xbeef);
    assert_eq!(exited.guest.get(VmcsField::GuestRip), 0x1234);
    assert_eq!(
        exited.guest.get(VmcsField::GuestEfer),
        (Efer::LME | Efer::LMA | Efer::SCE).bits()
    );
    // Only guest-state fields are carried.
    assert_eq!(exited.guest.get(VmcsField::HostRip), 0);
    assert_eq!(exited.guest.get(VmcsField::Cr0GuestHostMask), 0);
}

#[test]
fn guest_state_fields_are_guest_fields_or_cr_masks_and_distinct() {
    for (i, field) in GUEST_STATE_FIELDS.iter().enumerate() {
        assert!(
            field.kind() == FieldKind::Guest
                || matches!(
                    field,
                    VmcsField::Cr0GuestHostMask
                        | VmcsField::Cr0ReadShadow
                        | VmcsField::Cr4GuestHostMask
                        | VmcsField::Cr4ReadShadow
                ),
            "{}",
            field.name()
        );
        assert!(
            !GUEST_STATE_FIELDS[i + 1..].contains(field),
            "{}",
            field.name()
        );
    }
    for field in [
        VmcsField::GuestCr0,
        VmcsField::GuestRip,
        VmcsField::GuestEfer,
        VmcsField::GuestPat,
        VmcsField::GuestDr7,
        VmcsField::GuestTrAccessRights,
        VmcsField::GuestInterruptibilityState,
        VmcsField::VmxPreemptionTimerValue,
    ] {
        assert!(GUEST_STATE_FIELDS.contains(&field), "{}", field.name());
    }
}

// ---- property: every VMCS12 hv accepts gives a VMCS02 the real engine accepts.

/// Fields the property mutates, with how.
const MUTATED_FIELDS: &[VmcsField] = &[
    VmcsField::PinBasedControls,
    VmcsField::PrimaryProcBasedControls,
    VmcsField::SecondaryProcBasedControls,
    VmcsField::PrimaryVmExitControls,
    VmcsField::VmEntryControls,
    VmcsField::ExceptionBitmap,
    VmcsField::PageFaultErrorCodeMask,
    VmcsField::PageFaultErrorCodeMatch,
    VmcsField::Cr3TargetCount,
    VmcsField::Cr0GuestHostMask,
    VmcsField::Cr0ReadShadow,
    VmcsField::Cr4GuestHostMask,
    VmcsField::Cr4ReadShadow,
    VmcsField::TscOffset,
    VmcsField::VmEntryInterruptionInfo,
    VmcsField::VmEntryExceptionErrorCode,
    VmcsField::VmEntryInstructionLength,
    VmcsField::VmxPreemptionTimerValue,
    VmcsField::GuestCr0,
    VmcsField::GuestCr3,
    VmcsField::GuestCr4,
    VmcsField::GuestEfer,
    VmcsField::GuestPat,
    VmcsField::GuestDr7,
    VmcsField::GuestDebugCtl,
    VmcsField::GuestRflags,
    VmcsField::GuestRip,
    VmcsField::GuestActivityState,
    VmcsField::GuestInterruptibilityState,
    VmcsField::GuestPendingDebugExceptions,
    VmcsField::GuestPdpte0,
    VmcsField::GuestPdpte1,
    VmcsField::GuestCsAccessRights,
    VmcsField::GuestCsLimit,
    VmcsField::GuestSsAccessRights,
    VmcsField::GuestSsSelector,
    VmcsField::GuestDsAccessRights,
    VmcsField::GuestTrAccessRights,
    VmcsField::GuestLdtrAccessRights,
    VmcsField::GuestFsBase,
    VmcsField::GuestGdtrLimit,
    VmcsField::GuestSysenterEsp,
    VmcsField::GuestPerfGlobalCtrl,
    VmcsField::GuestBndcfgs,
    VmcsField::GuestSCet,
    VmcsField::EptPointer,
    VmcsField::VirtualProcessorId,
    VmcsField::VmEntryMsrLoadCount,
    VmcsField::VmcsLinkPointer,
];

/// One mutation: a field and how its value changes.
#[derive(Clone, Copy, Debug)]
enum Change {
    /// Flip one bit.
    Flip(u32),
    /// Replace with a small value.
    Small(u8),
    /// Replace with anything.
    Any(u64),
    /// Replace with 0..=3 (activity states, counts, event types).
    Tiny(u8),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (0u32..64).prop_map(Change::Flip),
        2 => any::<u8>().prop_map(Change::Small),
        1 => any::<u64>().prop_map(Change::Any),
        1 => (0u8..4).prop_map(Change::Tiny),
    ]
}

fn mutate(vmcs: &mut VmcsImage, field: VmcsField, change: Change) {
    let value = match change {
        Change::Flip(bit) => vmcs.get(field) ^ (1 << bit),
        Change::Small(value) | Change::Tiny(value) => u64::from(value),
        Change::Any(value) => value,
    };
    vmcs.set(field, value);
}

/// Every guest-state and control field: the property may change any of
/// them (on top of the focused list above).
fn guest_and_control_fields() -> Vec<VmcsField> {
    VmcsField::ALL
        .iter()
        .copied()
        .filter(|field| matches!(field.kind(), FieldKind::Guest | FieldKind::Control))
        .collect()
}

/// The number of [`guest_and_control_fields`].
fn guest_and_control_field_count() -> usize {
    guest_and_control_fields().len()
}

/// An event L1 injects: type (3 bits), vector, "deliver error code",
/// instruction length, and whether L2 was halted or blocked.
fn injection() -> impl Strategy<Value = (u64, u64, u8, Option<u64>)> {
    (
        0u64..8,
        0u64..64,
        any::<bool>(),
        0u8..17,
        proptest::option::of(0u64..16),
    )
        .prop_map(|(kind, vector, error_code, length, interruptibility)| {
            let info = 0x8000_0000 | (kind << 8) | vector | (u64::from(error_code) << 11);
            (
                info,
                u64::from(length),
                u8::from(kind == 0),
                interruptibility,
            )
        })
}

/// The five control words of VMCS12, each either kept or replaced by a
/// random set of the bits hv advertises (plus the required ones).
const CONTROL_WORDS: [(ControlKind, VmcsField); 5] = [
    (ControlKind::PinBased, VmcsField::PinBasedControls),
    (
        ControlKind::PrimaryProcessorBased,
        VmcsField::PrimaryProcBasedControls,
    ),
    (
        ControlKind::SecondaryProcessorBased,
        VmcsField::SecondaryProcBasedControls,
    ),
    (ControlKind::PrimaryExit, VmcsField::PrimaryVmExitControls),
    (ControlKind::Entry, VmcsField::VmEntryControls),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// For any VMCS12 that passes the entry checks against what hv
    /// advertises, prepare_vmcs02 builds a VMCS02 the real engine accepts.
    /// (The same generator ran for about 10^6 cases while this module was
    /// written: no counterexample.)
    #[test]
    fn valid_vmcs12_gives_valid_vmcs02(
        template in 0usize..3,
        focused in proptest::collection::vec((0..MUTATED_FIELDS.len(), change()), 0..5),
        anywhere in proptest::collection::vec(
            (0..guest_and_control_field_count(), change()), 0..4),
        words in proptest::array::uniform5(proptest::option::of(any::<u64>())),
        event in proptest::option::of(injection()),
        pae in any::<bool>(),
        pdptes in proptest::option::of(proptest::array::uniform4(any::<u64>())),
        l1_efer_nxe in any::<bool>(),
    ) {
        let virt = virtual_caps();
        let mut vmcs12 = match template {
            0 => baseline::long_mode_guest(&virt),
            1 => baseline::protected_mode_guest(&virt),
            _ => baseline::unrestricted_real_mode_guest(&virt),
        };
        if pae {
            let cr4 = vmcs12.get(VmcsField::GuestCr4) | Cr4::PAE.bits();
            vmcs12.set(VmcsField::GuestCr4, cr4);
        }
        if let Some(pdptes) = pdptes {
            let fields = [
                VmcsField::GuestPdpte0,
                VmcsField::GuestPdpte1,
                VmcsField::GuestPdpte2,
                VmcsField::GuestPdpte3,
            ];
            for (field, pdpte) in fields.into_iter().zip(pdptes) {
                vmcs12.set(field, pdpte);
            }
        }
        for ((kind, field), wanted) in CONTROL_WORDS.into_iter().zip(words) {
            if let Some(wanted) = wanted {
                let allowed = virt.allowed(kind);
                vmcs12.set(field, (wanted & allowed.may_be_one) | allowed.must_be_one);
            }
        }
        for (index, change) in focused {
            mutate(&mut vmcs12, MUTATED_FIELDS[index], change);
        }
        let fields = guest_and_control_fields();
        for (index, change) in anywhere {
            mutate(&mut vmcs12, fields[index], change);
        }
        if let Some((info, length, halted, interruptibility)) = event {
            vmcs12.set(VmcsField::VmEntryInterruptionInfo, info);
            vmcs12.set(VmcsField::VmEntryInstructionLength, length);
            vmcs12.set(VmcsField::GuestActivityState, u64::from(halted));
            if let Some(interruptibility) = interruptibility {
                vmcs12.set(VmcsField::GuestInterruptibilityState, interruptibility);
            }
        }
        if check_vm_entry(&vmcs12, &virt, &context12()).is_err() {
            return Ok(());
        }
        let mut l1 = inherited();
        if !l1_efer_nxe {
            l1.efer &= !Efer::NXE.bits();
        }
        let result = prepare_vmcs02(&vmcs12, &l1, translation(), &l0(), &real());
        prop_assert!(result.is_ok(), "VMCS12 passes, VMCS02 fails: {:?}", result);
    }

    /// prepare_vmcs02 and l2_exited never panic, whatever the images hold,
    /// and whatever prepare_vmcs02 returns passes the real checks.
    #[test]
    fn arbitrary_images_never_panic(
        changes in proptest::collection::vec(
            (0..guest_and_control_field_count(), any::<u64>()), 0..20),
        efer in any::<u64>(),
        vpid02 in any::<u16>(),
    ) {
        let fields = guest_and_control_fields();
        let mut vmcs12 = long_mode_vmcs12();
        for (index, value) in changes {
            vmcs12.set(fields[index], value);
        }
        let l1 = L1Inherited { efer, ..inherited() };
        let translation = Translation02 { vpid02, ..translation() };
        // Only "never panics": prepare_vmcs02 checks VMCS02 itself, so an
        // Ok here is checked by construction. What the vCPU actually
        // writes to the platform is checked by tests/vcpu.rs
        // (arbitrary_vmcs12_never_runs_an_invalid_vmcs02).
        let _ = prepare_vmcs02(&vmcs12, &l1, translation, &l0(), &real());
        let _ = l2_exited(&vmcs12, &vmcs12, Gprs::default());
    }
}
