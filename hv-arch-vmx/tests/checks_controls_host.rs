//! VM-entry checks on the VMX controls (SDM 27.2.1) and the host-state area
//! (SDM 27.2.2-27.2.4): the baseline images pass, and each rule fails with
//! exactly its variant when one field of a known-good image is broken.

use hv_arch_vmx::capabilities::{
    AllowedSettings, ControlCheckError, VmxBasic, VmxCapabilities, VmxMisc,
};
use hv_arch_vmx::checks::controls::check_controls;
use hv_arch_vmx::checks::host::{HostBase, HostSegment, check_host_state};
use hv_arch_vmx::checks::{
    ControlCheck, EntryCheckFailure, EntryContext, HostCheck, baseline, check_vm_entry,
};
use hv_arch_vmx::controls::{
    ControlKind, ControlWord, EntryControls, ExitControls, PinBasedControls, PrimaryProcControls,
    SecondaryProcControls, TertiaryProcControls,
};
use hv_arch_vmx::ept::EptpError;
use hv_arch_vmx::instruction_error::VmInstructionError;
use hv_arch_vmx::vmcs::{VmcsField, VmcsImage};
use proptest::prelude::*;

// ---- fixtures ---------------------------------------------------------------

/// MAXPHYADDR of the test context.
const MAXPHYADDR: u8 = 46;
/// First address beyond MAXPHYADDR.
const BEYOND: u64 = 1 << MAXPHYADDR;
/// A non-canonical address for 48-bit linear addresses.
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;

fn bochs() -> VmxCapabilities {
    VmxCapabilities::bochs_skylake_x()
}

/// Bochs capabilities plus the controls Bochs lacks that some rules need:
/// posted interrupts, MTF, tertiary controls (HLAT, paging-write, paging
/// verification, IPI virtualization), mode-based execute, sub-page
/// permissions, Intel PT guest-physical, secondary exit controls, CET,
/// PKRS, and the RTIT controls.
fn rich() -> VmxCapabilities {
    let mut caps = bochs();
    caps.pin_based.may_be_one |= u64::from(PinBasedControls::PROCESS_POSTED_INTERRUPTS.bits());
    caps.primary_proc.may_be_one |= u64::from(
        (PrimaryProcControls::MONITOR_TRAP_FLAG | PrimaryProcControls::ACTIVATE_TERTIARY_CONTROLS)
            .bits(),
    );
    caps.secondary_proc.may_be_one |= u64::from(
        (SecondaryProcControls::MODE_BASED_EXECUTE_CONTROL_FOR_EPT
            | SecondaryProcControls::SUB_PAGE_WRITE_PERMISSIONS_FOR_EPT
            | SecondaryProcControls::INTEL_PT_USES_GUEST_PHYSICAL_ADDRESSES)
            .bits(),
    );
    caps.tertiary_proc = AllowedSettings::from_allowed1_msr(0x1f);
    caps.primary_exit.may_be_one |= u64::from(
        (ExitControls::CLEAR_IA32_RTIT_CTL
            | ExitControls::LOAD_CET_STATE
            | ExitControls::LOAD_PKRS
            | ExitControls::ACTIVATE_SECONDARY_CONTROLS)
            .bits(),
    );
    caps.secondary_exit = AllowedSettings::from_allowed1_msr(0x1);
    caps.entry.may_be_one |= u64::from(EntryControls::LOAD_IA32_RTIT_CTL.bits());
    caps.cr4_fixed.fixed1 |= 1 << 23; // CR4.CET
    caps
}

fn context() -> EntryContext {
    EntryContext::new(MAXPHYADDR, 0x1000)
}

fn long_mode() -> VmcsImage {
    baseline::long_mode_guest(&bochs())
}

fn set(image: &mut VmcsImage, field: VmcsField, bits: u64) {
    image.set(field, image.get(field) | bits);
}

fn clear(image: &mut VmcsImage, field: VmcsField, bits: u64) {
    image.set(field, image.get(field) & !bits);
}

fn pin(image: &mut VmcsImage, on: PinBasedControls, off: PinBasedControls) {
    set(image, VmcsField::PinBasedControls, on.to_raw());
    clear(image, VmcsField::PinBasedControls, off.to_raw());
}

fn primary(image: &mut VmcsImage, on: PrimaryProcControls, off: PrimaryProcControls) {
    set(image, VmcsField::PrimaryProcBasedControls, on.to_raw());
    clear(image, VmcsField::PrimaryProcBasedControls, off.to_raw());
}

fn secondary(image: &mut VmcsImage, on: SecondaryProcControls, off: SecondaryProcControls) {
    set(image, VmcsField::SecondaryProcBasedControls, on.to_raw());
    clear(image, VmcsField::SecondaryProcBasedControls, off.to_raw());
}

fn tertiary(image: &mut VmcsImage, on: TertiaryProcControls) {
    primary(
        image,
        PrimaryProcControls::ACTIVATE_TERTIARY_CONTROLS,
        PrimaryProcControls::empty(),
    );
    set(image, VmcsField::TertiaryProcBasedControls, on.to_raw());
}

fn exit(image: &mut VmcsImage, on: ExitControls, off: ExitControls) {
    set(image, VmcsField::PrimaryVmExitControls, on.to_raw());
    clear(image, VmcsField::PrimaryVmExitControls, off.to_raw());
}

fn entry(image: &mut VmcsImage, on: EntryControls, off: EntryControls) {
    set(image, VmcsField::VmEntryControls, on.to_raw());
    clear(image, VmcsField::VmEntryControls, off.to_raw());
}

/// A TPR shadow with a valid virtual-APIC page.
fn with_tpr_shadow(image: &mut VmcsImage) {
    primary(
        image,
        PrimaryProcControls::USE_TPR_SHADOW,
        PrimaryProcControls::empty(),
    );
    image.set(VmcsField::VirtualApicAddress, 0x8_0000);
}

/// Runs the whole VM-entry check and expects a control failure: asserts it
/// is reported as VM-instruction error 7 in SDM section 27.2.1.x.
fn control_failure(image: &VmcsImage, caps: &VmxCapabilities) -> ControlCheck {
    control_failure_in(image, caps, &context())
}

fn control_failure_in(
    image: &VmcsImage,
    caps: &VmxCapabilities,
    context: &EntryContext,
) -> ControlCheck {
    let failure = check_vm_entry(image, caps, context).expect_err("the image must fail");
    let EntryCheckFailure::Control(check) = failure else {
        panic!("expected a control-field failure, got {failure:?}");
    };
    let error = failure
        .vm_instruction_error()
        .expect("control failures are VMfailValid");
    assert_eq!(error, VmInstructionError::EntryInvalidControlFields);
    assert_eq!(error.number(), 7);
    assert!(
        failure.sdm_section().starts_with("27.2.1."),
        "{}",
        failure.sdm_section()
    );
    check
}

/// Runs the whole VM-entry check and expects a host-state failure (error 8).
fn host_failure(image: &VmcsImage, caps: &VmxCapabilities, context: &EntryContext) -> HostCheck {
    let failure = check_vm_entry(image, caps, context).expect_err("the image must fail");
    let EntryCheckFailure::Host(check) = failure else {
        panic!("expected a host-state failure, got {failure:?}");
    };
    let error = failure
        .vm_instruction_error()
        .expect("host failures are VMfailValid");
    assert_eq!(error, VmInstructionError::EntryInvalidHostStateFields);
    assert_eq!(error.number(), 8);
    assert!(
        failure.sdm_section().starts_with("27.2."),
        "{}",
        failure.sdm_section()
    );
    check
}

fn host_failure_default(image: &VmcsImage) -> HostCheck {
    host_failure(image, &bochs(), &context())
}

fn passes_controls_and_host(image: &VmcsImage, caps: &VmxCapabilities, context: &EntryContext) {
    assert_eq!(check_controls(image, caps, context), Ok(()));
    assert_eq!(check_host_state(image, caps, context), Ok(()));
}

fn must_be_zero<C: ControlWord>(bit: u32) -> ControlCheck {
    ControlCheck::ReservedControlBit(ControlCheckError::MustBeZero {
        kind: C::KIND,
        bit,
        bit_name: C::bit_name(bit),
    })
}

fn must_be_one<C: ControlWord>(bit: u32) -> ControlCheck {
    ControlCheck::ReservedControlBit(ControlCheckError::MustBeOne {
        kind: C::KIND,
        bit,
        bit_name: C::bit_name(bit),
    })
}

// ---- baselines ---------------------------------------------------------------

#[test]
fn long_mode_baseline_passes_every_check() {
    assert_eq!(check_vm_entry(&long_mode(), &bochs(), &context()), Ok(()));
}

#[test]
fn every_baseline_passes_every_check() {
    for caps in [bochs(), rich()] {
        for image in [
            baseline::long_mode_guest(&caps),
            baseline::protected_mode_guest(&caps),
            baseline::unrestricted_real_mode_guest(&caps),
        ] {
            assert_eq!(
                check_vm_entry(&image, &caps, &context()),
                Ok(()),
                "{image:?}"
            );
        }
    }
}

#[test]
fn baselines_pass_controls_and_host_checks() {
    for caps in [bochs(), rich()] {
        passes_controls_and_host(&baseline::long_mode_guest(&caps), &caps, &context());
        passes_controls_and_host(&baseline::protected_mode_guest(&caps), &caps, &context());
        passes_controls_and_host(
            &baseline::unrestricted_real_mode_guest(&caps),
            &caps,
            &context(),
        );
    }
}

#[test]
fn baselines_use_the_wanted_controls() {
    let image = long_mode();
    let secondary = image.get(VmcsField::SecondaryProcBasedControls);
    assert_ne!(secondary & SecondaryProcControls::ENABLE_EPT.to_raw(), 0);
    assert_ne!(secondary & SecondaryProcControls::ENABLE_VPID.to_raw(), 0);
    assert_eq!(image.get(VmcsField::VirtualProcessorId), baseline::VPID);
    assert_eq!(image.get(VmcsField::EptPointer), baseline::eptp(&bochs()));
    // WB (6), 4-level (3 << 3), A/D (Bochs supports it).
    assert_eq!(baseline::eptp(&bochs()) & 0xfff, 0x5e);
    assert_ne!(
        image.get(VmcsField::VmEntryControls) & EntryControls::IA32E_MODE_GUEST.to_raw(),
        0
    );
    assert_ne!(
        image.get(VmcsField::PrimaryVmExitControls)
            & ExitControls::HOST_ADDRESS_SPACE_SIZE.to_raw(),
        0
    );
    assert_eq!(image.get(VmcsField::VmcsLinkPointer), u64::MAX);
    let real = baseline::unrestricted_real_mode_guest(&bochs());
    assert_ne!(
        real.get(VmcsField::SecondaryProcBasedControls)
            & SecondaryProcControls::UNRESTRICTED_GUEST.to_raw(),
        0
    );
    assert_eq!(real.get(VmcsField::GuestCr0) & 0x8000_0001, 0);
}

// ---- 27.2.1.1: reserved bits of the execution controls ----------------------------

#[test]
fn pin_based_reserved_bits() {
    let mut image = long_mode();
    clear(&mut image, VmcsField::PinBasedControls, 1 << 1);
    assert_eq!(
        control_failure(&image, &bochs()),
        must_be_one::<PinBasedControls>(1)
    );

    let mut image = long_mode();
    pin(
        &mut image,
        PinBasedControls::PROCESS_POSTED_INTERRUPTS,
        PinBasedControls::empty(),
    );
    assert_eq!(
        control_failure(&image, &bochs()),
        must_be_zero::<PinBasedControls>(7)
    );
}

#[test]
fn primary_reserved_bits() {
    let mut image = long_mode();
    primary(
        &mut image,
        PrimaryProcControls::MONITOR_TRAP_FLAG,
        PrimaryProcControls::empty(),
    );
    let check = control_failure(&image, &bochs());
    assert_eq!(check, must_be_zero::<PrimaryProcControls>(27));
    assert_eq!(check.sdm_section(), "27.2.1.1");
}

#[test]
fn secondary_reserved_bits_only_when_activated() {
    let mut image = long_mode();
    secondary(
        &mut image,
        SecondaryProcControls::ENABLE_ENCLS_EXITING,
        SecondaryProcControls::empty(),
    );
    assert_eq!(
        control_failure(&image, &bochs()),
        must_be_zero::<SecondaryProcControls>(15)
    );

    // Not activated: the secondary controls are not checked (and EPT, VPID
    // and their fields are ignored).
    primary(
        &mut image,
        PrimaryProcControls::empty(),
        PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS,
    );
    image.set(VmcsField::EptPointer, 0xdead);
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));
}

#[test]
fn tertiary_reserved_bits_only_when_activated() {
    let caps = rich();
    let mut image = baseline::long_mode_guest(&caps);
    image.set(VmcsField::TertiaryProcBasedControls, 1 << 20);
    assert_eq!(check_controls(&image, &caps, &context()), Ok(()));
    primary(
        &mut image,
        PrimaryProcControls::ACTIVATE_TERTIARY_CONTROLS,
        PrimaryProcControls::empty(),
    );
    assert_eq!(
        control_failure(&image, &caps),
        must_be_zero::<TertiaryProcControls>(20)
    );
}

#[test]
fn cr3_target_count() {
    let mut image = long_mode();
    image.set(VmcsField::Cr3TargetCount, 4);
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));
    image.set(VmcsField::Cr3TargetCount, 5);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::Cr3TargetCountTooLarge { count: 5, max: 4 }
    );
}

// ---- 27.2.1.1: bitmaps --------------------------------------------------------

#[test]
fn io_bitmap_addresses() {
    let mut image = long_mode();
    image.set(VmcsField::IoBitmapA, 0x1_0800);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::IoBitmapAAddressInvalid { address: 0x1_0800 }
    );

    let mut image = long_mode();
    image.set(VmcsField::IoBitmapB, BEYOND);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::IoBitmapBAddressInvalid { address: BEYOND }
    );

    // Without "use I/O bitmaps" the addresses are not checked.
    primary(
        &mut image,
        PrimaryProcControls::empty(),
        PrimaryProcControls::USE_IO_BITMAPS,
    );
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));
}

#[test]
fn msr_bitmap_address() {
    let mut image = long_mode();
    image.set(VmcsField::MsrBitmap, 0x1_2004);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::MsrBitmapAddressInvalid { address: 0x1_2004 }
    );
    primary(
        &mut image,
        PrimaryProcControls::empty(),
        PrimaryProcControls::USE_MSR_BITMAPS,
    );
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));
}

// ---- 27.2.1.1: APIC virtualization ----------------------------------------------------

#[test]
fn tpr_shadow_virtual_apic_address_and_threshold() {
    let mut image = long_mode();
    with_tpr_shadow(&mut image);
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));

    image.set(VmcsField::VirtualApicAddress, 0x8_0010);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::VirtualApicAddressInvalid { address: 0x8_0010 }
    );

    let mut image = long_mode();
    with_tpr_shadow(&mut image);
    image.set(VmcsField::TprThreshold, 0x10);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::TprThresholdReservedBits { threshold: 0x10 }
    );
    // With virtual-interrupt delivery, bits 31:4 are not checked.
    secondary(
        &mut image,
        SecondaryProcControls::VIRTUAL_INTERRUPT_DELIVERY,
        SecondaryProcControls::empty(),
    );
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));
}

#[test]
fn apic_virtualization_needs_tpr_shadow() {
    for (control, name) in [
        (
            SecondaryProcControls::VIRTUALIZE_X2APIC_MODE,
            "virtualize x2APIC mode",
        ),
        (
            SecondaryProcControls::APIC_REGISTER_VIRTUALIZATION,
            "APIC-register virtualization",
        ),
        (
            SecondaryProcControls::VIRTUAL_INTERRUPT_DELIVERY,
            "virtual-interrupt delivery",
        ),
    ] {
        let mut image = long_mode();
        secondary(&mut image, control, SecondaryProcControls::empty());
        assert_eq!(
            control_failure(&image, &bochs()),
            ControlCheck::ApicVirtualizationWithoutTprShadow { control: name }
        );
    }
    let caps = rich();
    let mut image = baseline::long_mode_guest(&caps);
    tertiary(&mut image, TertiaryProcControls::IPI_VIRTUALIZATION);
    assert_eq!(
        control_failure(&image, &caps),
        ControlCheck::ApicVirtualizationWithoutTprShadow {
            control: "IPI virtualization"
        }
    );
}

#[test]
fn nmi_controls() {
    let mut image = long_mode();
    pin(
        &mut image,
        PinBasedControls::empty(),
        PinBasedControls::NMI_EXITING,
    );
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::VirtualNmisWithoutNmiExiting
    );

    let mut image = long_mode();
    pin(
        &mut image,
        PinBasedControls::empty(),
        PinBasedControls::VIRTUAL_NMIS,
    );
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));
    primary(
        &mut image,
        PrimaryProcControls::NMI_WINDOW_EXITING,
        PrimaryProcControls::empty(),
    );
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::NmiWindowExitingWithoutVirtualNmis
    );
}

#[test]
fn apic_access_address() {
    let mut image = long_mode();
    secondary(
        &mut image,
        SecondaryProcControls::VIRTUALIZE_APIC_ACCESSES,
        SecondaryProcControls::empty(),
    );
    image.set(VmcsField::ApicAccessAddress, BEYOND | 0x1000);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::ApicAccessAddressInvalid {
            address: BEYOND | 0x1000
        }
    );
    image.set(VmcsField::ApicAccessAddress, 0xfee0_0000);
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));
}

#[test]
fn x2apic_mode_excludes_apic_access_virtualization() {
    let mut image = long_mode();
    with_tpr_shadow(&mut image);
    image.set(VmcsField::ApicAccessAddress, 0xfee0_0000);
    secondary(
        &mut image,
        SecondaryProcControls::VIRTUALIZE_X2APIC_MODE
            | SecondaryProcControls::VIRTUALIZE_APIC_ACCESSES,
        SecondaryProcControls::empty(),
    );
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::X2ApicModeWithApicAccessVirtualization
    );
}

#[test]
fn virtual_interrupt_delivery_needs_external_interrupt_exiting() {
    let mut image = long_mode();
    with_tpr_shadow(&mut image);
    secondary(
        &mut image,
        SecondaryProcControls::VIRTUAL_INTERRUPT_DELIVERY,
        SecondaryProcControls::empty(),
    );
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));
    pin(
        &mut image,
        PinBasedControls::empty(),
        PinBasedControls::EXTERNAL_INTERRUPT_EXITING,
    );
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::VirtualInterruptDeliveryWithoutExternalInterruptExiting
    );
}

/// Posted interrupts with everything they need, on `rich()` capabilities.
fn posted_interrupts() -> VmcsImage {
    let mut image = baseline::long_mode_guest(&rich());
    with_tpr_shadow(&mut image);
    secondary(
        &mut image,
        SecondaryProcControls::VIRTUAL_INTERRUPT_DELIVERY,
        SecondaryProcControls::empty(),
    );
    pin(
        &mut image,
        PinBasedControls::PROCESS_POSTED_INTERRUPTS,
        PinBasedControls::empty(),
    );
    image.set(VmcsField::PostedInterruptNotificationVector, 0xf2);
    image.set(VmcsField::PostedInterruptDescriptorAddress, 0x9_0040);
    image
}

#[test]
fn posted_interrupt_rules() {
    let caps = rich();
    assert_eq!(
        check_controls(&posted_interrupts(), &caps, &context()),
        Ok(())
    );

    let mut image = posted_interrupts();
    secondary(
        &mut image,
        SecondaryProcControls::empty(),
        SecondaryProcControls::VIRTUAL_INTERRUPT_DELIVERY,
    );
    assert_eq!(
        control_failure(&image, &caps),
        ControlCheck::PostedInterruptsWithoutVirtualInterruptDelivery
    );

    let mut image = posted_interrupts();
    exit(
        &mut image,
        ExitControls::empty(),
        ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT,
    );
    assert_eq!(
        control_failure(&image, &caps),
        ControlCheck::PostedInterruptsWithoutAcknowledgeInterruptOnExit
    );

    let mut image = posted_interrupts();
    image.set(VmcsField::PostedInterruptNotificationVector, 0x1f2);
    assert_eq!(
        control_failure(&image, &caps),
        ControlCheck::PostedInterruptNotificationVectorInvalid { vector: 0x1f2 }
    );

    let mut image = posted_interrupts();
    image.set(VmcsField::PostedInterruptDescriptorAddress, 0x9_0020);
    assert_eq!(
        control_failure(&image, &caps),
        ControlCheck::PostedInterruptDescriptorAddressInvalid { address: 0x9_0020 }
    );
    image.set(VmcsField::PostedInterruptDescriptorAddress, BEYOND);
    assert_eq!(
        control_failure(&image, &caps),
        ControlCheck::PostedInterruptDescriptorAddressInvalid { address: BEYOND }
    );
}

// ---- 27.2.1.1: VPID, EPT and what depends on EPT -------------------------------

#[test]
fn vpid_must_not_be_zero() {
    let mut image = long_mode();
    image.set(VmcsField::VirtualProcessorId, 0);
    assert_eq!(control_failure(&image, &bochs()), ControlCheck::VpidZero);
}

#[test]
fn eptp_is_validated() {
    let mut image = long_mode();
    let eptp = (image.get(VmcsField::EptPointer) & !0x7) | 5;
    image.set(VmcsField::EptPointer, eptp);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::EptpInvalid {
            eptp,
            reason: EptpError::UnsupportedMemoryType(5)
        }
    );

    // A 5-level walk: Bochs reports only 4-level walks.
    let mut image = long_mode();
    let eptp = (image.get(VmcsField::EptPointer) & !0x38) | (4 << 3);
    image.set(VmcsField::EptPointer, eptp);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::EptpInvalid {
            eptp,
            reason: EptpError::UnsupportedWalkLength(5)
        }
    );

    let mut image = long_mode();
    let eptp = image.get(VmcsField::EptPointer) | BEYOND;
    image.set(VmcsField::EptPointer, eptp);
    assert!(matches!(
        control_failure(&image, &bochs()),
        ControlCheck::EptpInvalid {
            reason: EptpError::AddressBeyondMaxPhyAddr { .. },
            ..
        }
    ));
}

fn without_ept(image: &mut VmcsImage) {
    secondary(
        image,
        SecondaryProcControls::empty(),
        SecondaryProcControls::ENABLE_EPT,
    );
}

#[test]
fn hlat_rules() {
    let caps = rich();
    let mut image = baseline::long_mode_guest(&caps);
    tertiary(&mut image, TertiaryProcControls::ENABLE_HLAT);
    image.set(VmcsField::HlatPointer, 0xa_0018); // PWT | PCD allowed
    assert_eq!(check_controls(&image, &caps, &context()), Ok(()));

    image.set(VmcsField::HlatPointer, 0xa_0020);
    assert_eq!(
        control_failure(&image, &caps),
        ControlCheck::HlatPointerInvalid { address: 0xa_0020 }
    );
    image.set(VmcsField::HlatPointer, 0xa_0001);
    assert_eq!(
        control_failure(&image, &caps),
        ControlCheck::HlatPointerInvalid { address: 0xa_0001 }
    );

    image.set(VmcsField::HlatPointer, 0xa_0000);
    without_ept(&mut image);
    assert_eq!(control_failure(&image, &caps), ControlCheck::HlatWithoutEpt);
}

#[test]
fn pml_rules() {
    let mut image = long_mode();
    secondary(
        &mut image,
        SecondaryProcControls::ENABLE_PML,
        SecondaryProcControls::empty(),
    );
    image.set(VmcsField::PmlAddress, 0xb_0000);
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));
    image.set(VmcsField::PmlAddress, 0xb_0008);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::PmlAddressInvalid { address: 0xb_0008 }
    );
    without_ept(&mut image);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::PmlWithoutEpt
    );
}

#[test]
fn unrestricted_guest_and_mode_based_execute_need_ept() {
    let mut image = long_mode();
    secondary(
        &mut image,
        SecondaryProcControls::UNRESTRICTED_GUEST,
        SecondaryProcControls::ENABLE_EPT,
    );
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::UnrestrictedGuestWithoutEpt
    );

    let caps = rich();
    let mut image = baseline::long_mode_guest(&caps);
    secondary(
        &mut image,
        SecondaryProcControls::MODE_BASED_EXECUTE_CONTROL_FOR_EPT,
        SecondaryProcControls::ENABLE_EPT,
    );
    assert_eq!(
        control_failure(&image, &caps),
        ControlCheck::ModeBasedExecuteControlWithoutEpt
    );
}

#[test]
fn sub_page_write_permission_rules() {
    let caps = rich();
    let mut image = baseline::long_mode_guest(&caps);
    secondary(
        &mut image,
        SecondaryProcControls::SUB_PAGE_WRITE_PERMISSIONS_FOR_EPT,
        SecondaryProcControls::empty(),
    );
    image.set(VmcsField::SubPagePermissionTablePointer, 0xc_0000);
    assert_eq!(check_controls(&image, &caps, &context()), Ok(()));
    image.set(VmcsField::SubPagePermissionTablePointer, 0xc_0100);
    assert_eq!(
        control_failure(&image, &caps),
        ControlCheck::SubPagePermissionTablePointerInvalid { address: 0xc_0100 }
    );
    without_ept(&mut image);
    assert_eq!(
        control_failure(&image, &caps),
        ControlCheck::SubPageWritePermissionsWithoutEpt
    );
}

#[test]
fn vm_function_rules() {
    let mut image = long_mode();
    secondary(
        &mut image,
        SecondaryProcControls::ENABLE_VM_FUNCTIONS,
        SecondaryProcControls::empty(),
    );
    image.set(VmcsField::VmFunctionControls, 1 << 1);
    let check = control_failure(&image, &bochs());
    assert_eq!(
        check,
        ControlCheck::ReservedControlBit(ControlCheckError::MustBeZero {
            kind: ControlKind::VmFunction,
            bit: 1,
            bit_name: None,
        })
    );
    assert_eq!(check.sdm_section(), "27.2.1.1");

    image.set(VmcsField::VmFunctionControls, 1);
    image.set(VmcsField::EptpListAddress, 0xd_0000);
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));
    image.set(VmcsField::EptpListAddress, 0xd_0004);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::EptpListAddressInvalid { address: 0xd_0004 }
    );
    without_ept(&mut image);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::EptpSwitchingWithoutEpt
    );

    // VM functions disabled: the VM-function controls are not checked.
    secondary(
        &mut image,
        SecondaryProcControls::ENABLE_EPT,
        SecondaryProcControls::ENABLE_VM_FUNCTIONS,
    );
    image.set(VmcsField::VmFunctionControls, u64::MAX);
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));
}

#[test]
fn vmcs_shadowing_bitmaps() {
    let mut image = long_mode();
    secondary(
        &mut image,
        SecondaryProcControls::VMCS_SHADOWING,
        SecondaryProcControls::empty(),
    );
    image.set(VmcsField::VmreadBitmapAddress, 0xe_0000);
    image.set(VmcsField::VmwriteBitmapAddress, 0xe_1000);
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));
    image.set(VmcsField::VmreadBitmapAddress, 0xe_0001);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::VmreadBitmapAddressInvalid { address: 0xe_0001 }
    );
    image.set(VmcsField::VmreadBitmapAddress, 0xe_0000);
    image.set(VmcsField::VmwriteBitmapAddress, BEYOND);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::VmwriteBitmapAddressInvalid { address: BEYOND }
    );
}

#[test]
fn ve_information_address() {
    let mut image = long_mode();
    secondary(
        &mut image,
        SecondaryProcControls::EPT_VIOLATION_VE,
        SecondaryProcControls::empty(),
    );
    image.set(VmcsField::VirtualizationExceptionInfoAddress, 0xf_0000);
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));
    image.set(VmcsField::VirtualizationExceptionInfoAddress, 0xf_0800);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::VeInformationAddressInvalid { address: 0xf_0800 }
    );
}

#[test]
fn intel_pt_guest_physical_rules() {
    let caps = rich();
    let mut image = baseline::long_mode_guest(&caps);
    secondary(
        &mut image,
        SecondaryProcControls::INTEL_PT_USES_GUEST_PHYSICAL_ADDRESSES,
        SecondaryProcControls::empty(),
    );
    exit(
        &mut image,
        ExitControls::CLEAR_IA32_RTIT_CTL,
        ExitControls::empty(),
    );
    entry(
        &mut image,
        EntryControls::LOAD_IA32_RTIT_CTL,
        EntryControls::empty(),
    );
    assert_eq!(check_controls(&image, &caps, &context()), Ok(()));

    let mut no_load = image.clone();
    entry(
        &mut no_load,
        EntryControls::empty(),
        EntryControls::LOAD_IA32_RTIT_CTL,
    );
    assert_eq!(
        control_failure(&no_load, &caps),
        ControlCheck::IntelPtGuestPhysicalWithoutLoadRtitCtl
    );

    let mut no_clear = image.clone();
    exit(
        &mut no_clear,
        ExitControls::empty(),
        ExitControls::CLEAR_IA32_RTIT_CTL,
    );
    assert_eq!(
        control_failure(&no_clear, &caps),
        ControlCheck::IntelPtGuestPhysicalWithoutClearRtitCtl
    );

    without_ept(&mut image);
    assert_eq!(
        control_failure(&image, &caps),
        ControlCheck::IntelPtGuestPhysicalWithoutEpt
    );
}

#[test]
fn tertiary_ept_dependencies() {
    let caps = rich();
    for (control, expected) in [
        (
            TertiaryProcControls::EPT_PAGING_WRITE_CONTROL,
            ControlCheck::EptPagingWriteControlWithoutEpt,
        ),
        (
            TertiaryProcControls::GUEST_PAGING_VERIFICATION,
            ControlCheck::GuestPagingVerificationWithoutEpt,
        ),
    ] {
        let mut image = baseline::long_mode_guest(&caps);
        tertiary(&mut image, control);
        assert_eq!(check_controls(&image, &caps, &context()), Ok(()));
        without_ept(&mut image);
        assert_eq!(control_failure(&image, &caps), expected);
    }
}

#[test]
fn ipi_virtualization_pid_pointer_table() {
    let caps = rich();
    let mut image = baseline::long_mode_guest(&caps);
    with_tpr_shadow(&mut image);
    tertiary(&mut image, TertiaryProcControls::IPI_VIRTUALIZATION);
    image.set(VmcsField::PidPointerTableAddress, 0x7_0008);
    assert_eq!(check_controls(&image, &caps, &context()), Ok(()));
    image.set(VmcsField::PidPointerTableAddress, 0x7_0004);
    assert_eq!(
        control_failure(&image, &caps),
        ControlCheck::PidPointerTableAddressInvalid { address: 0x7_0004 }
    );
}

// ---- 27.2.1.2: VM-exit controls -----------------------------------------------------

#[test]
fn exit_reserved_bits() {
    let mut image = long_mode();
    clear(&mut image, VmcsField::PrimaryVmExitControls, 1);
    let check = control_failure(&image, &bochs());
    assert_eq!(check, must_be_one::<ExitControls>(0));
    assert_eq!(check.sdm_section(), "27.2.1.2");

    let mut image = long_mode();
    exit(
        &mut image,
        ExitControls::LOAD_CET_STATE,
        ExitControls::empty(),
    );
    assert_eq!(
        control_failure(&image, &bochs()),
        must_be_zero::<ExitControls>(28)
    );
}

#[test]
fn secondary_exit_reserved_bits_only_when_activated() {
    let caps = rich();
    let mut image = baseline::long_mode_guest(&caps);
    image.set(VmcsField::SecondaryVmExitControls, 1 << 2);
    assert_eq!(check_controls(&image, &caps, &context()), Ok(()));
    exit(
        &mut image,
        ExitControls::ACTIVATE_SECONDARY_CONTROLS,
        ExitControls::empty(),
    );
    let check = control_failure(&image, &caps);
    assert_eq!(
        check,
        ControlCheck::ReservedControlBit(ControlCheckError::MustBeZero {
            kind: ControlKind::SecondaryExit,
            bit: 2,
            bit_name: hv_arch_vmx::controls::SecondaryExitControls::bit_name(2),
        })
    );
    assert_eq!(check.sdm_section(), "27.2.1.2");
}

#[test]
fn save_preemption_timer_needs_activation() {
    let mut image = long_mode();
    exit(
        &mut image,
        ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE,
        ExitControls::empty(),
    );
    let check = control_failure(&image, &bochs());
    assert_eq!(check, ControlCheck::SavePreemptionTimerWithoutActivation);
    assert_eq!(check.sdm_section(), "27.2.1.2");
    pin(
        &mut image,
        PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER,
        PinBasedControls::empty(),
    );
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));
}

#[test]
fn exit_msr_areas() {
    let mut image = long_mode();
    // Count 0: the address is not checked.
    image.set(VmcsField::VmExitMsrStoreAddress, u64::MAX);
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));

    image.set(VmcsField::VmExitMsrStoreCount, 1);
    image.set(VmcsField::VmExitMsrStoreAddress, 0x5_0008);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::ExitMsrStoreAreaInvalid {
            address: 0x5_0008,
            count: 1
        }
    );
    // The last entry ends exactly at MAXPHYADDR: valid; one more is not.
    image.set(VmcsField::VmExitMsrStoreAddress, BEYOND - 16);
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));
    image.set(VmcsField::VmExitMsrStoreCount, 2);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::ExitMsrStoreAreaInvalid {
            address: BEYOND - 16,
            count: 2
        }
    );

    let mut image = long_mode();
    image.set(VmcsField::VmExitMsrLoadCount, 3);
    image.set(VmcsField::VmExitMsrLoadAddress, BEYOND);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::ExitMsrLoadAreaInvalid {
            address: BEYOND,
            count: 3
        }
    );
}

#[test]
fn msr_area_end_overflow_fails_without_panic() {
    // With a 64-bit physical-address width only the overflow catches it.
    let context = EntryContext::new(64, 0x1000);
    let mut image = long_mode();
    image.set(VmcsField::VmExitMsrLoadAddress, 0xffff_ffff_ffff_fff0);
    image.set(VmcsField::VmExitMsrLoadCount, 1);
    assert_eq!(check_controls(&image, &bochs(), &context), Ok(()));
    image.set(VmcsField::VmExitMsrLoadCount, 2);
    assert_eq!(
        control_failure_in(&image, &bochs(), &context),
        ControlCheck::ExitMsrLoadAreaInvalid {
            address: 0xffff_ffff_ffff_fff0,
            count: 2
        }
    );
    image.set(VmcsField::VmExitMsrLoadCount, u64::from(u32::MAX));
    assert!(check_controls(&image, &bochs(), &context).is_err());
}

// ---- 27.2.1.3: VM-entry controls ------------------------------------------------------

const VALID: u64 = 1 << 31;
const DELIVER_ERROR_CODE: u64 = 1 << 11;
const fn event(interruption_type: u64, vector: u64) -> u64 {
    VALID | (interruption_type << 8) | vector
}

fn inject(image: &VmcsImage, info: u64) -> VmcsImage {
    let mut image = image.clone();
    image.set(VmcsField::VmEntryInterruptionInfo, info);
    image
}

#[test]
fn entry_reserved_bits() {
    let mut image = long_mode();
    clear(&mut image, VmcsField::VmEntryControls, 1 << 0);
    let check = control_failure(&image, &bochs());
    assert_eq!(check, must_be_one::<EntryControls>(0));
    assert_eq!(check.sdm_section(), "27.2.1.3");
    let mut image = long_mode();
    entry(
        &mut image,
        EntryControls::LOAD_CET_STATE,
        EntryControls::empty(),
    );
    assert_eq!(
        control_failure(&image, &bochs()),
        must_be_zero::<EntryControls>(20)
    );
}

#[test]
fn injection_type_reserved() {
    let image = long_mode();
    let check = control_failure(&inject(&image, event(1, 0x20)), &bochs());
    assert_eq!(
        check,
        ControlCheck::InjectionTypeReserved {
            interruption_type: 1
        }
    );
    assert_eq!(check.sdm_section(), "27.2.1.3");
    // Bochs does not support the monitor trap flag: type 7 is reserved.
    assert_eq!(
        control_failure(&inject(&image, event(7, 0)), &bochs()),
        ControlCheck::InjectionTypeReserved {
            interruption_type: 7
        }
    );
    // The invalid bit clear: nothing is checked.
    let mut unused = image.clone();
    unused.set(VmcsField::VmEntryInterruptionInfo, 0x7fff_ffff);
    assert_eq!(check_controls(&unused, &bochs(), &context()), Ok(()));
}

#[test]
fn injection_vector_must_fit_the_type() {
    let image = long_mode();
    let caps = rich(); // supports MTF, so type 7 is usable
    let image_rich = baseline::long_mode_guest(&caps);
    assert_eq!(
        check_controls(&inject(&image_rich, event(7, 0)), &caps, &context()),
        Ok(())
    );
    assert_eq!(
        control_failure(&inject(&image_rich, event(7, 1)), &caps),
        ControlCheck::InjectedOtherEventVectorNotZero { vector: 1 }
    );
    assert_eq!(
        control_failure(&inject(&image, event(2, 3)), &bochs()),
        ControlCheck::InjectedNmiVectorNot2 { vector: 3 }
    );
    assert_eq!(
        check_controls(&inject(&image, event(2, 2)), &bochs(), &context()),
        Ok(())
    );
    assert_eq!(
        control_failure(&inject(&image, event(3, 32)), &bochs()),
        ControlCheck::InjectedHardwareExceptionVectorTooLarge { vector: 32 }
    );
    // External interrupts may use any vector.
    assert_eq!(
        check_controls(&inject(&image, event(0, 0xff)), &bochs(), &context()),
        Ok(())
    );
}

#[test]
fn injection_deliver_error_code_rule() {
    let image = long_mode();
    // #GP (13) needs an error code in protected mode.
    assert_eq!(
        control_failure(&inject(&image, event(3, 13)), &bochs()),
        ControlCheck::InjectionDeliverErrorCodeMismatch {
            expected: true,
            interruption_type: 3,
            vector: 13
        }
    );
    for vector in [8, 10, 11, 12, 13, 14, 17] {
        let info = event(3, vector) | DELIVER_ERROR_CODE;
        assert_eq!(
            check_controls(&inject(&image, info), &bochs(), &context()),
            Ok(()),
            "vector {vector}"
        );
    }
    // #CP (21) pushes an error code, but SDM 27.2.1.3 lists it among the
    // vectors whose deliver-error-code bit must be 0 (without BASIC[56]).
    assert_eq!(
        control_failure(&inject(&image, event(3, 21) | DELIVER_ERROR_CODE), &bochs()),
        ControlCheck::InjectionDeliverErrorCodeMismatch {
            expected: false,
            interruption_type: 3,
            vector: 21
        }
    );
    // #UD (6) has none.
    assert_eq!(
        control_failure(&inject(&image, event(3, 6) | DELIVER_ERROR_CODE), &bochs()),
        ControlCheck::InjectionDeliverErrorCodeMismatch {
            expected: false,
            interruption_type: 3,
            vector: 6
        }
    );
    // A software interrupt never delivers one.
    let mut software = inject(&image, event(4, 0x80) | DELIVER_ERROR_CODE);
    software.set(VmcsField::VmEntryInstructionLength, 2);
    assert_eq!(
        control_failure(&software, &bochs()),
        ControlCheck::InjectionDeliverErrorCodeMismatch {
            expected: false,
            interruption_type: 4,
            vector: 0x80
        }
    );
    // Unrestricted guest in real mode (CR0.PE = 0): no error codes at all.
    let real = baseline::unrestricted_real_mode_guest(&bochs());
    assert_eq!(
        control_failure(&inject(&real, event(3, 13) | DELIVER_ERROR_CODE), &bochs()),
        ControlCheck::InjectionDeliverErrorCodeMismatch {
            expected: false,
            interruption_type: 3,
            vector: 13
        }
    );
    assert_eq!(
        check_controls(&inject(&real, event(3, 13)), &bochs(), &context()),
        Ok(())
    );
}

#[test]
fn injection_error_code_relaxed_by_vmx_basic_bit_56() {
    let mut caps = bochs();
    caps.basic = VmxBasic::from_raw(caps.basic.raw() | 1 << 56);
    let image = long_mode();
    // Hardware exceptions in protected mode: any combination.
    assert_eq!(
        check_controls(&inject(&image, event(3, 13)), &caps, &context()),
        Ok(())
    );
    assert_eq!(
        check_controls(
            &inject(&image, event(3, 6) | DELIVER_ERROR_CODE),
            &caps,
            &context()
        ),
        Ok(())
    );
    // Other types and real mode keep the rule.
    assert_eq!(
        control_failure(&inject(&image, event(0, 0x20) | DELIVER_ERROR_CODE), &caps),
        ControlCheck::InjectionDeliverErrorCodeMismatch {
            expected: false,
            interruption_type: 0,
            vector: 0x20
        }
    );
    let real = baseline::unrestricted_real_mode_guest(&caps);
    assert_eq!(
        control_failure(&inject(&real, event(3, 13) | DELIVER_ERROR_CODE), &caps),
        ControlCheck::InjectionDeliverErrorCodeMismatch {
            expected: false,
            interruption_type: 3,
            vector: 13
        }
    );
}

#[test]
fn injection_reserved_bits_and_error_code() {
    let image = long_mode();
    let info = event(0, 0x20) | 1 << 12;
    assert_eq!(
        control_failure(&inject(&image, info), &bochs()),
        ControlCheck::InjectionReservedBits { info: info as u32 }
    );
    let info = event(0, 0x20) | 1 << 30;
    assert_eq!(
        control_failure(&inject(&image, info), &bochs()),
        ControlCheck::InjectionReservedBits { info: info as u32 }
    );

    let mut image = inject(&image, event(3, 14) | DELIVER_ERROR_CODE);
    image.set(VmcsField::VmEntryExceptionErrorCode, 0x8000);
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));
    image.set(VmcsField::VmEntryExceptionErrorCode, 0x1_0000);
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::InjectionErrorCodeReservedBits {
            error_code: 0x1_0000
        }
    );
}

#[test]
fn injection_instruction_length() {
    let image = long_mode();
    for interruption_type in [4, 5, 6] {
        let vector = if interruption_type == 5 { 1 } else { 3 };
        let mut software = inject(&image, event(interruption_type, vector));
        software.set(VmcsField::VmEntryInstructionLength, 15);
        assert_eq!(check_controls(&software, &bochs(), &context()), Ok(()));
        software.set(VmcsField::VmEntryInstructionLength, 16);
        assert_eq!(
            control_failure(&software, &bochs()),
            ControlCheck::InjectionInstructionLengthInvalid { length: 16 }
        );
        // Bochs sets IA32_VMX_MISC[30]: length 0 is allowed.
        software.set(VmcsField::VmEntryInstructionLength, 0);
        assert_eq!(check_controls(&software, &bochs(), &context()), Ok(()));
        let mut caps = bochs();
        caps.misc = VmxMisc::from_raw(caps.misc.raw() & !(1 << 30));
        assert_eq!(
            control_failure(&software, &caps),
            ControlCheck::InjectionInstructionLengthInvalid { length: 0 }
        );
    }
    // Hardware exceptions ignore the length.
    let mut hardware = inject(&image, event(3, 6));
    hardware.set(VmcsField::VmEntryInstructionLength, 99);
    assert_eq!(check_controls(&hardware, &bochs(), &context()), Ok(()));
}

#[test]
fn entry_msr_load_area() {
    let mut image = long_mode();
    image.set(VmcsField::VmEntryMsrLoadCount, 1);
    image.set(VmcsField::VmEntryMsrLoadAddress, 0x6_0000);
    assert_eq!(check_controls(&image, &bochs(), &context()), Ok(()));
    image.set(VmcsField::VmEntryMsrLoadAddress, 0x6_0001);
    let check = control_failure(&image, &bochs());
    assert_eq!(
        check,
        ControlCheck::EntryMsrLoadAreaInvalid {
            address: 0x6_0001,
            count: 1
        }
    );
    assert_eq!(check.sdm_section(), "27.2.1.3");
}

#[test]
fn smm_controls_outside_smm() {
    let mut image = long_mode();
    entry(
        &mut image,
        EntryControls::ENTRY_TO_SMM,
        EntryControls::empty(),
    );
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::EntryToSmmOutsideSmm
    );
    let mut image = long_mode();
    entry(
        &mut image,
        EntryControls::DEACTIVATE_DUAL_MONITOR_TREATMENT,
        EntryControls::empty(),
    );
    assert_eq!(
        control_failure(&image, &bochs()),
        ControlCheck::DeactivateDualMonitorTreatmentOutsideSmm
    );
}

#[test]
fn controls_are_checked_before_host_state() {
    let mut image = long_mode();
    image.set(VmcsField::HostCsSelector, 0);
    image.set(VmcsField::VirtualProcessorId, 0);
    assert_eq!(control_failure(&image, &bochs()), ControlCheck::VpidZero);
}

// ---- 27.2.2: host control registers and MSRs ---------------------------------------------

#[test]
fn host_cr0_and_cr4_fixed_bits() {
    let mut image = long_mode();
    clear(&mut image, VmcsField::HostCr0, 1);
    let value = image.get(VmcsField::HostCr0);
    let check = host_failure_default(&image);
    assert_eq!(
        check,
        HostCheck::Cr0NotSupportedInVmx {
            value,
            bit: 0,
            must_be_one: true
        }
    );
    assert_eq!(check.sdm_section(), "27.2.2");

    let mut image = long_mode();
    set(&mut image, VmcsField::HostCr0, 1 << 32);
    let value = image.get(VmcsField::HostCr0);
    assert_eq!(
        host_failure_default(&image),
        HostCheck::Cr0NotSupportedInVmx {
            value,
            bit: 32,
            must_be_one: false
        }
    );

    let mut image = long_mode();
    clear(&mut image, VmcsField::HostCr4, 1 << 13);
    let value = image.get(VmcsField::HostCr4);
    assert_eq!(
        host_failure_default(&image),
        HostCheck::Cr4NotSupportedInVmx {
            value,
            bit: 13,
            must_be_one: true
        }
    );

    let mut image = long_mode();
    set(&mut image, VmcsField::HostCr4, 1 << 11);
    let value = image.get(VmcsField::HostCr4);
    assert_eq!(
        host_failure_default(&image),
        HostCheck::Cr4NotSupportedInVmx {
            value,
            bit: 11,
            must_be_one: false
        }
    );
}

#[test]
fn host_cet_needs_write_protect() {
    let caps = rich();
    let mut image = baseline::long_mode_guest(&caps);
    set(&mut image, VmcsField::HostCr4, 1 << 23);
    assert_eq!(check_host_state(&image, &caps, &context()), Ok(()));
    clear(&mut image, VmcsField::HostCr0, 1 << 16);
    assert_eq!(
        host_failure(&image, &caps, &context()),
        HostCheck::CetWithoutWriteProtect
    );
}

#[test]
fn host_cr3_within_physical_address_width() {
    let mut image = long_mode();
    image.set(VmcsField::HostCr3, BEYOND | 0x3000);
    assert_eq!(
        host_failure_default(&image),
        HostCheck::Cr3BeyondPhysicalAddressWidth {
            value: BEYOND | 0x3000
        }
    );
}

#[test]
fn host_sysenter_canonical() {
    let mut image = long_mode();
    image.set(VmcsField::HostSysenterEsp, NON_CANONICAL);
    assert_eq!(
        host_failure_default(&image),
        HostCheck::SysenterEspNotCanonical {
            address: NON_CANONICAL
        }
    );
    let mut image = long_mode();
    image.set(VmcsField::HostSysenterEip, NON_CANONICAL);
    assert_eq!(
        host_failure_default(&image),
        HostCheck::SysenterEipNotCanonical {
            address: NON_CANONICAL
        }
    );
}

fn cet_host(caps: &VmxCapabilities) -> VmcsImage {
    let mut image = baseline::long_mode_guest(caps);
    exit(
        &mut image,
        ExitControls::LOAD_CET_STATE,
        ExitControls::empty(),
    );
    image.set(VmcsField::HostSCet, 0x1);
    image.set(VmcsField::HostSsp, 0xffff_ffff_8040_0000);
    image.set(
        VmcsField::HostInterruptSspTableAddress,
        0xffff_ffff_8040_1000,
    );
    image
}

#[test]
fn host_cet_state() {
    let caps = rich();
    let ctx = context();
    assert_eq!(check_host_state(&cet_host(&caps), &caps, &ctx), Ok(()));

    let mut image = cet_host(&caps);
    image.set(VmcsField::HostSCet, NON_CANONICAL);
    assert_eq!(
        host_failure(&image, &caps, &ctx),
        HostCheck::SCetNotCanonical {
            value: NON_CANONICAL
        }
    );

    image.set(VmcsField::HostSCet, 1 << 6);
    assert_eq!(
        host_failure(&image, &caps, &ctx),
        HostCheck::SCetReservedBits { value: 1 << 6 }
    );

    image.set(VmcsField::HostSCet, 0xc00);
    assert_eq!(
        host_failure(&image, &caps, &ctx),
        HostCheck::SCetSuppressWithTracker { value: 0xc00 }
    );

    let mut image = cet_host(&caps);
    image.set(VmcsField::HostInterruptSspTableAddress, NON_CANONICAL);
    assert_eq!(
        host_failure(&image, &caps, &ctx),
        HostCheck::InterruptSspTableAddressNotCanonical {
            address: NON_CANONICAL
        }
    );

    let mut image = cet_host(&caps);
    image.set(VmcsField::HostSsp, NON_CANONICAL);
    let check = host_failure(&image, &caps, &ctx);
    assert_eq!(check, HostCheck::SspNotCanonical { ssp: NON_CANONICAL });
    assert_eq!(check.sdm_section(), "27.2.4");

    let mut image = cet_host(&caps);
    image.set(VmcsField::HostSsp, 0x7000_0002);
    assert_eq!(
        host_failure(&image, &caps, &ctx),
        HostCheck::SspMisaligned { ssp: 0x7000_0002 }
    );
}

#[test]
fn host_perf_global_ctrl_reserved_bits() {
    let mut image = long_mode();
    exit(
        &mut image,
        ExitControls::LOAD_IA32_PERF_GLOBAL_CTRL,
        ExitControls::empty(),
    );
    image.set(VmcsField::HostPerfGlobalCtrl, 0x1_0007_0000_000f);
    assert_eq!(check_host_state(&image, &bochs(), &context()), Ok(()));
    image.set(VmcsField::HostPerfGlobalCtrl, 1 << 49);
    assert_eq!(
        host_failure_default(&image),
        HostCheck::PerfGlobalCtrlReservedBits { value: 1 << 49 }
    );
}

#[test]
fn host_pat_memory_types() {
    let mut image = long_mode();
    image.set(VmcsField::HostPat, 0x0706_0504_0100_0706);
    assert_eq!(check_host_state(&image, &bochs(), &context()), Ok(()));
    image.set(VmcsField::HostPat, 0x0007_0406_0207_0406);
    assert_eq!(
        host_failure_default(&image),
        HostCheck::PatInvalidMemoryType {
            entry: 3,
            memory_type: 2
        }
    );
    image.set(VmcsField::HostPat, 0x0807_0406_0007_0406);
    assert_eq!(
        host_failure_default(&image),
        HostCheck::PatInvalidMemoryType {
            entry: 7,
            memory_type: 8
        }
    );
    // Not loaded: not checked.
    exit(
        &mut image,
        ExitControls::empty(),
        ExitControls::LOAD_IA32_PAT,
    );
    assert_eq!(check_host_state(&image, &bochs(), &context()), Ok(()));
}

#[test]
fn host_efer() {
    let mut image = long_mode();
    set(&mut image, VmcsField::HostEfer, 1 << 11 | 1); // NXE | SCE are fine
    assert_eq!(check_host_state(&image, &bochs(), &context()), Ok(()));
    set(&mut image, VmcsField::HostEfer, 1 << 1);
    let value = image.get(VmcsField::HostEfer);
    assert_eq!(
        host_failure_default(&image),
        HostCheck::EferReservedBits { value }
    );

    let mut image = long_mode();
    clear(&mut image, VmcsField::HostEfer, 1 << 10);
    assert_eq!(
        host_failure_default(&image),
        HostCheck::EferLmaMismatch {
            host_address_space_size: true
        }
    );
    let mut image = long_mode();
    clear(&mut image, VmcsField::HostEfer, 1 << 8);
    assert_eq!(
        host_failure_default(&image),
        HostCheck::EferLmeMismatch {
            host_address_space_size: true
        }
    );
}

#[test]
fn host_pkrs() {
    let caps = rich();
    let mut image = baseline::long_mode_guest(&caps);
    exit(&mut image, ExitControls::LOAD_PKRS, ExitControls::empty());
    image.set(VmcsField::HostPkrs, 0xffff_ffff);
    assert_eq!(check_host_state(&image, &caps, &context()), Ok(()));
    image.set(VmcsField::HostPkrs, 1 << 32);
    assert_eq!(
        host_failure(&image, &caps, &context()),
        HostCheck::PkrsReservedBits { value: 1 << 32 }
    );
}

// ---- 27.2.3: host segment and descriptor-table registers -------------------------

#[test]
fn host_selectors_rpl_and_ti() {
    for (register, field) in [
        (HostSegment::Es, VmcsField::HostEsSelector),
        (HostSegment::Cs, VmcsField::HostCsSelector),
        (HostSegment::Ss, VmcsField::HostSsSelector),
        (HostSegment::Ds, VmcsField::HostDsSelector),
        (HostSegment::Fs, VmcsField::HostFsSelector),
        (HostSegment::Gs, VmcsField::HostGsSelector),
        (HostSegment::Tr, VmcsField::HostTrSelector),
    ] {
        for low_bits in [1, 3, 4] {
            let mut image = long_mode();
            let selector = 0x20 | low_bits;
            image.set(field, selector);
            let check = host_failure_default(&image);
            assert_eq!(
                check,
                HostCheck::SelectorRplOrTiSet {
                    register,
                    selector: selector as u16
                }
            );
            assert_eq!(check.sdm_section(), "27.2.3");
        }
    }
}

#[test]
fn host_null_selectors() {
    let mut image = long_mode();
    image.set(VmcsField::HostCsSelector, 0);
    assert_eq!(host_failure_default(&image), HostCheck::CsSelectorNull);
    let mut image = long_mode();
    image.set(VmcsField::HostTrSelector, 0);
    assert_eq!(host_failure_default(&image), HostCheck::TrSelectorNull);
    // A 64-bit host may have a null SS (and null data selectors).
    let mut image = long_mode();
    for field in [
        VmcsField::HostSsSelector,
        VmcsField::HostDsSelector,
        VmcsField::HostEsSelector,
    ] {
        image.set(field, 0);
    }
    assert_eq!(check_host_state(&image, &bochs(), &context()), Ok(()));
}

#[test]
fn host_bases_canonical() {
    for (register, field) in [
        (HostBase::Fs, VmcsField::HostFsBase),
        (HostBase::Gs, VmcsField::HostGsBase),
        (HostBase::Gdtr, VmcsField::HostGdtrBase),
        (HostBase::Idtr, VmcsField::HostIdtrBase),
        (HostBase::Tr, VmcsField::HostTrBase),
    ] {
        let mut image = long_mode();
        image.set(field, NON_CANONICAL);
        assert_eq!(
            host_failure_default(&image),
            HostCheck::BaseNotCanonical {
                register,
                base: NON_CANONICAL
            }
        );
    }
}

// ---- 27.2.4: address-space size ----------------------------------------------------------

/// A 32-bit host (VM entry outside IA-32e mode) running a protected-mode
/// guest.
fn legacy_host() -> (VmcsImage, EntryContext) {
    let mut image = baseline::protected_mode_guest(&bochs());
    exit(
        &mut image,
        ExitControls::empty(),
        ExitControls::HOST_ADDRESS_SPACE_SIZE,
    );
    image.set(VmcsField::HostEfer, 0);
    image.set(VmcsField::HostRip, 0x0010_0000);
    let context = EntryContext {
        in_ia32e_mode: false,
        ..context()
    };
    (image, context)
}

#[test]
fn legacy_host_baseline_passes() {
    let (image, context) = legacy_host();
    passes_controls_and_host(&image, &bochs(), &context);
}

#[test]
fn host_address_space_size_must_match_processor_mode() {
    let mut image = long_mode();
    exit(
        &mut image,
        ExitControls::empty(),
        ExitControls::HOST_ADDRESS_SPACE_SIZE,
    );
    image.set(VmcsField::HostEfer, 0);
    let check = host_failure_default(&image);
    assert_eq!(check, HostCheck::HostAddressSpaceSizeZeroInIa32eMode);
    assert_eq!(check.sdm_section(), "27.2.4");

    let (mut image, context) = legacy_host();
    entry(
        &mut image,
        EntryControls::IA32E_MODE_GUEST,
        EntryControls::empty(),
    );
    assert_eq!(
        host_failure(&image, &bochs(), &context),
        HostCheck::Ia32eModeGuestOutsideIa32eMode
    );

    let (mut image, context) = legacy_host();
    exit(
        &mut image,
        ExitControls::HOST_ADDRESS_SPACE_SIZE,
        ExitControls::empty(),
    );
    image.set(VmcsField::HostEfer, 0x500);
    assert_eq!(
        host_failure(&image, &bochs(), &context),
        HostCheck::HostAddressSpaceSizeOneOutsideIa32eMode
    );
}

#[test]
fn legacy_host_rules() {
    let (mut image, context) = legacy_host();
    image.set(VmcsField::HostSsSelector, 0);
    assert_eq!(
        host_failure(&image, &bochs(), &context),
        HostCheck::SsSelectorNullWith32BitHost
    );

    let (mut image, context) = legacy_host();
    set(&mut image, VmcsField::HostCr4, 1 << 17);
    assert_eq!(
        host_failure(&image, &bochs(), &context),
        HostCheck::PcideWith32BitHost
    );

    let (mut image, context) = legacy_host();
    image.set(VmcsField::HostRip, 0x1_0000_0000);
    assert_eq!(
        host_failure(&image, &bochs(), &context),
        HostCheck::RipHighBitsWith32BitHost { rip: 0x1_0000_0000 }
    );

    let caps = rich();
    let mut image = cet_host(&caps);
    entry(
        &mut image,
        EntryControls::empty(),
        EntryControls::IA32E_MODE_GUEST,
    );
    exit(
        &mut image,
        ExitControls::empty(),
        ExitControls::HOST_ADDRESS_SPACE_SIZE,
    );
    image.set(VmcsField::HostEfer, 0);
    image.set(VmcsField::HostRip, 0x0010_0000);
    image.set(VmcsField::HostSsp, 0x0040_0000);
    image.set(VmcsField::HostInterruptSspTableAddress, 0x0040_1000);
    image.set(VmcsField::HostSCet, 0x1_0000_0001);
    assert_eq!(
        host_failure(&image, &caps, &context),
        HostCheck::CetStateHighBitsWith32BitHost {
            register: "IA32_S_CET",
            value: 0x1_0000_0001
        }
    );
    image.set(VmcsField::HostSCet, 1);
    image.set(VmcsField::HostSsp, 0x1_0040_0000);
    assert_eq!(
        host_failure(&image, &caps, &context),
        HostCheck::CetStateHighBitsWith32BitHost {
            register: "SSP",
            value: 0x1_0040_0000
        }
    );
}

#[test]
fn sixty_four_bit_host_rules() {
    let mut image = long_mode();
    clear(&mut image, VmcsField::HostCr4, 1 << 5);
    assert_eq!(
        host_failure_default(&image),
        HostCheck::PaeClearWith64BitHost
    );

    let mut image = long_mode();
    image.set(VmcsField::HostRip, NON_CANONICAL);
    assert_eq!(
        host_failure_default(&image),
        HostCheck::RipNotCanonical { rip: NON_CANONICAL }
    );
}

#[test]
fn every_failure_names_its_rule() {
    // The Display text comes from the SDM wording and carries the values.
    let check = ControlCheck::Cr3TargetCountTooLarge { count: 9, max: 4 };
    assert_eq!(
        check.to_string(),
        "the CR3-target count (9) must not be greater than 4"
    );
    let failure = EntryCheckFailure::from(HostCheck::CsSelectorNull);
    assert_eq!(failure.sdm_section(), "27.2.3");
    assert!(
        failure
            .to_string()
            .contains("host CS selector must not be 0000H")
    );
}

// ---- never panics ---------------------------------------------------------------------------

/// Control and host fields the proptest randomizes.
const RANDOMIZED_FIELDS: &[VmcsField] = &[
    VmcsField::PinBasedControls,
    VmcsField::PrimaryProcBasedControls,
    VmcsField::SecondaryProcBasedControls,
    VmcsField::TertiaryProcBasedControls,
    VmcsField::PrimaryVmExitControls,
    VmcsField::SecondaryVmExitControls,
    VmcsField::VmEntryControls,
    VmcsField::VmFunctionControls,
    VmcsField::Cr3TargetCount,
    VmcsField::IoBitmapA,
    VmcsField::MsrBitmap,
    VmcsField::VirtualApicAddress,
    VmcsField::TprThreshold,
    VmcsField::PostedInterruptNotificationVector,
    VmcsField::PostedInterruptDescriptorAddress,
    VmcsField::VirtualProcessorId,
    VmcsField::EptPointer,
    VmcsField::HlatPointer,
    VmcsField::PidPointerTableAddress,
    VmcsField::VmExitMsrStoreAddress,
    VmcsField::VmExitMsrStoreCount,
    VmcsField::VmExitMsrLoadAddress,
    VmcsField::VmExitMsrLoadCount,
    VmcsField::VmEntryMsrLoadAddress,
    VmcsField::VmEntryMsrLoadCount,
    VmcsField::VmEntryInterruptionInfo,
    VmcsField::VmEntryExceptionErrorCode,
    VmcsField::VmEntryInstructionLength,
    VmcsField::HostCr0,
    VmcsField::HostCr3,
    VmcsField::HostCr4,
    VmcsField::HostCsSelector,
    VmcsField::HostSsSelector,
    VmcsField::HostTrSelector,
    VmcsField::HostGdtrBase,
    VmcsField::HostRip,
    VmcsField::HostEfer,
    VmcsField::HostPat,
    VmcsField::HostSCet,
    VmcsField::HostSsp,
    VmcsField::HostPkrs,
];

fn any_context() -> impl Strategy<Value = EntryContext> {
    (
        0u8..=64,
        prop_oneof![Just(48u8), Just(57u8)],
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                physical_address_width,
                linear_address_width,
                current_vmcs_pointer,
                in_ia32e_mode,
            )| {
                EntryContext {
                    physical_address_width,
                    linear_address_width,
                    current_vmcs_pointer,
                    in_ia32e_mode,
                }
            },
        )
}

proptest! {
    #[test]
    fn random_control_and_host_fields_never_panic(
        values in proptest::collection::vec(any::<u64>(), RANDOMIZED_FIELDS.len()),
        mask in any::<u64>(),
        context in any_context(),
        rich_caps in any::<bool>(),
    ) {
        let caps = if rich_caps { rich() } else { bochs() };
        let mut image = baseline::long_mode_guest(&caps);
        for (index, (field, value)) in RANDOMIZED_FIELDS.iter().zip(values).enumerate() {
            // Randomize a random subset so that images stay close enough to
            // valid to reach the later checks.
            if mask >> (index % 64) & 1 != 0 {
                image.set(*field, value);
            }
        }
        let result = check_vm_entry(&image, &caps, &context);
        if let Err(failure) = result {
            prop_assert!(failure.sdm_section().starts_with("27."));
            let _ = failure.to_string();
        }
    }

    #[test]
    fn fully_random_images_never_panic(
        values in proptest::collection::vec(any::<u64>(), VmcsField::COUNT),
        context in any_context(),
    ) {
        let mut image = VmcsImage::new();
        for (field, value) in VmcsField::ALL.iter().zip(values) {
            image.set(*field, value);
        }
        let _ = check_vm_entry(&image, &bochs(), &context);
        let _ = check_vm_entry(&image, &rich(), &context);
    }

    #[test]
    fn random_capabilities_never_panic(
        raw in proptest::collection::vec(any::<u64>(), 20),
        context in any_context(),
    ) {
        let mut msrs = hv_arch_vmx::capabilities::RawVmxMsrs::default();
        for (msr, value) in hv_arch_vmx::msr::VmxMsr::ALL.iter().zip(raw) {
            msrs.set(*msr, value);
        }
        let caps = VmxCapabilities::from_raw(&msrs);
        let image = baseline::long_mode_guest(&caps);
        let _ = check_vm_entry(&image, &caps, &context);
    }
}
