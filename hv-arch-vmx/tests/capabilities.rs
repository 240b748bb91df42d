//! Capability MSR parsing and control adjustment (SDM Appendix A), checked
//! against the values Bochs 2.7 `corei7_skylake_x` reports.

use hv_arch_vmx::capabilities::{
    AllowedSettings, ControlAdjustError, ControlCheckError, EptVpidCap, FixedBitViolation,
    FixedBits, RawVmxMsrs, VmcsEnum, VmxBasic, VmxCapabilities, VmxMisc,
};
use hv_arch_vmx::controls::{
    ControlKind, ControlWord, EntryControls, PinBasedControls, SecondaryProcControls,
};
use hv_arch_vmx::ept::EptMemoryType;
use hv_arch_vmx::msr::VmxMsr;
use proptest::prelude::*;

fn bochs() -> VmxCapabilities {
    VmxCapabilities::bochs_skylake_x()
}

#[test]
fn bochs_basic() {
    let basic = bochs().basic;
    assert_eq!(basic.raw(), 0x00d8_1000_0000_002b);
    assert_eq!(basic.revision_id(), 0x2b);
    assert_eq!(basic.vmcs_region_size(), 4096);
    assert_eq!(basic.vmcs_memory_type(), Some(EptMemoryType::WriteBack));
    assert!(basic.ins_outs_instruction_info());
    assert!(basic.true_controls());
    assert!(!basic.physical_addresses_limited_to_32_bits());
    assert!(!basic.dual_monitor_smm());
    assert!(!basic.entry_exception_error_code_relaxed());
}

#[test]
fn basic_bit_positions() {
    assert!(VmxBasic::from_raw(1 << 48).physical_addresses_limited_to_32_bits());
    assert!(VmxBasic::from_raw(1 << 49).dual_monitor_smm());
    assert_eq!(VmxBasic::from_raw(0xF << 50).vmcs_memory_type_raw(), 0xF);
    assert_eq!(VmxBasic::from_raw(0xF << 50).vmcs_memory_type(), None);
    assert!(VmxBasic::from_raw(1 << 54).ins_outs_instruction_info());
    assert!(VmxBasic::from_raw(1 << 55).true_controls());
    assert!(VmxBasic::from_raw(1 << 56).entry_exception_error_code_relaxed());
    // Bit 31 is not part of the revision identifier.
    assert_eq!(VmxBasic::from_raw(0x8000_0001).revision_id(), 1);
    // The size field is 13 bits (44:32).
    assert_eq!(
        VmxBasic::from_raw(0x3F_FFFF_0000_0000).vmcs_region_size(),
        0x1FFF
    );
}

#[test]
fn bochs_true_controls_are_effective() {
    let caps = bochs();
    // TRUE_PROCBASED allows CR3-load/store exiting (bits 15, 16) to be 0.
    assert_eq!(caps.primary_proc.must_be_one, 0x0400_6172);
    assert_eq!(caps.primary_proc.may_be_one, 0xf7f9_fffe);
    assert_eq!(caps.primary_exit.must_be_one, 0x0003_6dfb);
    assert_eq!(caps.entry.must_be_one, 0x11fb);
    assert_eq!(caps.pin_based.must_be_one, 0x16);
    assert_eq!(caps.pin_based.may_be_one, 0x7f);
    // Without bit 55 the original MSRs are used.
    let mut raw = VmxCapabilities::BOCHS_SKYLAKE_X_RAW;
    raw.basic &= !(1 << 55);
    let plain = VmxCapabilities::from_raw(&raw);
    assert!(!plain.has_true_controls());
    assert_eq!(plain.primary_proc.must_be_one, 0x0401_e172);
    assert_eq!(plain.entry.must_be_one, 0x11ff);
}

#[test]
fn bochs_misc() {
    let misc = bochs().misc;
    assert_eq!(misc.cr3_target_count(), 4);
    assert_eq!(misc.preemption_timer_tsc_shift(), 0);
    assert!(misc.stores_efer_lma_on_exit());
    assert!(misc.activity_hlt());
    assert!(misc.activity_shutdown());
    assert!(misc.activity_wait_for_sipi());
    assert!(misc.vmwrite_any_field());
    assert!(misc.zero_length_injection());
    assert!(!misc.intel_pt_in_vmx());
    assert!(!misc.smm_vmxoff_unblocks_smi());
    assert_eq!(misc.max_msr_list_entries(), 512);
    assert_eq!(misc.mseg_revision(), 0);
}

#[test]
fn misc_bit_positions() {
    assert_eq!(VmxMisc::from_raw(0x1F).preemption_timer_tsc_shift(), 31);
    assert!(VmxMisc::from_raw(1 << 14).intel_pt_in_vmx());
    assert!(VmxMisc::from_raw(1 << 15).rdmsr_smbase_in_smm());
    assert_eq!(VmxMisc::from_raw(0x1FF << 16).cr3_target_count(), 511);
    assert_eq!(VmxMisc::from_raw(0b111 << 25).max_msr_list_entries(), 4096);
    assert!(VmxMisc::from_raw(1 << 28).smm_vmxoff_unblocks_smi());
    assert_eq!(
        VmxMisc::from_raw(0x1234_5678 << 32).mseg_revision(),
        0x1234_5678
    );
}

#[test]
fn bochs_secondary_and_ept_vpid() {
    let caps = bochs();
    assert!(caps.supports_secondary_controls());
    assert!(!caps.supports_tertiary_controls());
    assert!(!caps.supports_secondary_exit_controls());
    assert!(caps.supports_ept());
    assert!(caps.supports_vpid());
    assert!(caps.supports_unrestricted_guest());
    assert!(caps.supports_vmcs_shadowing());
    assert!(caps.supports_pml());
    assert!(caps.supports_ept_violation_ve());
    assert!(caps.supports_vm_functions());
    assert!(caps.supports_eptp_switching());
    assert!(!caps.supports_mode_based_execute());
    assert!(caps.supports_preemption_timer());
    // Pin-based allowed-1 is 0x7f: bit 7 (posted interrupts) is not offered.
    assert!(!caps.supports_posted_interrupts());
    assert_eq!(caps.tertiary_proc, AllowedSettings::NONE_ALLOWED);
    assert_eq!(caps.secondary_exit, AllowedSettings::NONE_ALLOWED);

    let ept = caps.ept_vpid;
    assert!(ept.execute_only());
    assert!(ept.page_walk_length_4());
    assert!(!ept.page_walk_length_5());
    assert!(ept.memory_type_uc());
    assert!(ept.memory_type_wb());
    assert!(ept.pages_2m());
    assert!(ept.pages_1g());
    assert!(ept.invept());
    assert!(ept.accessed_dirty());
    assert!(!ept.advanced_violation_info());
    assert!(!ept.supervisor_shadow_stack());
    assert!(ept.invept_single_context());
    assert!(ept.invept_all_context());
    assert!(ept.invvpid());
    assert!(ept.invvpid_individual_address());
    assert!(ept.invvpid_single_context());
    assert!(ept.invvpid_all_context());
    assert!(ept.invvpid_single_context_retaining_globals());
    assert_eq!(ept.max_hlat_prefix_size(), 0);
}

#[test]
fn ept_vpid_bit_positions() {
    let one = |bit: u32| EptVpidCap::from_raw(1 << bit);
    assert!(one(0).execute_only());
    assert!(one(6).page_walk_length_4());
    assert!(one(7).page_walk_length_5());
    assert!(one(8).memory_type_uc());
    assert!(one(14).memory_type_wb());
    assert!(one(16).pages_2m());
    assert!(one(17).pages_1g());
    assert!(one(20).invept());
    assert!(one(21).accessed_dirty());
    assert!(one(22).advanced_violation_info());
    assert!(one(23).supervisor_shadow_stack());
    assert!(one(25).invept_single_context());
    assert!(one(26).invept_all_context());
    assert!(one(32).invvpid());
    assert!(one(40).invvpid_individual_address());
    assert!(one(41).invvpid_single_context());
    assert!(one(42).invvpid_all_context());
    assert!(one(43).invvpid_single_context_retaining_globals());
    assert_eq!(EptVpidCap::from_raw(0x3F << 48).max_hlat_prefix_size(), 63);
    assert!(!one(24).invept_single_context());
}

#[test]
fn bochs_fixed_bits_and_vmcs_enum() {
    let caps = bochs();
    assert_eq!(caps.cr0_fixed.fixed0, 0x8000_0021);
    assert_eq!(caps.cr0_fixed.must_be_one(), 0x8000_0021); // PG, NE, PE
    assert_eq!(caps.cr4_fixed.fixed0, 0x2000); // VMXE
    assert_eq!(caps.cr4_fixed.fixed1, 0x0037_27ff);
    assert_eq!(caps.vmcs_enum.highest_index(), 0x1a);
    assert_eq!(VmcsEnum::from_raw(0x3FF).highest_index(), 0x1FF);
}

#[test]
fn fixed_bits_first_violation() {
    let cr0 = bochs().cr0_fixed;
    assert_eq!(cr0.first_violation(0x8000_0031), None);
    // PE (bit 0) clear: must be 1.
    assert_eq!(
        cr0.first_violation(0x8000_0020),
        Some(FixedBitViolation {
            bit: 0,
            required: true
        })
    );
    let cr4 = bochs().cr4_fixed;
    // Bit 22 is clear in CR4_FIXED1 (0x3727ff): must be 0.
    assert_eq!(
        cr4.first_violation(0x2000 | (1 << 22)),
        Some(FixedBitViolation {
            bit: 22,
            required: false
        })
    );
    // VMXE missing and bit 22 set: the lower bit (13) is reported first.
    assert_eq!(
        cr4.first_violation(1 << 22),
        Some(FixedBitViolation {
            bit: 13,
            required: true
        })
    );
    assert_eq!(cr0.apply(0), 0x8000_0021);
    // An unrestricted guest may clear PE and PG (SDM 27.3.1.1).
    assert_eq!(cr0.freeing(0x8000_0001).first_violation(0x20), None);
    let contradictory = FixedBits::new(1, 0);
    assert_eq!(
        contradictory.first_violation(1),
        Some(FixedBitViolation {
            bit: 0,
            required: false
        })
    );
}

#[test]
fn adjust_pin_based_adds_default1_bits() {
    let caps = bochs();
    let adjusted = caps
        .adjust(PinBasedControls::EXTERNAL_INTERRUPT_EXITING | PinBasedControls::NMI_EXITING)
        .expect("allowed");
    // Bits 1, 2, 4 are default-1 and the TRUE MSR still requires them.
    assert_eq!(adjusted.bits(), 0b1_1111);
    assert!(adjusted.contains(PinBasedControls::DEFAULT1));
    // The non-generic path gives the same value.
    assert_eq!(
        caps.allowed(ControlKind::PinBased)
            .adjust(ControlKind::PinBased, 0b1001),
        Ok(0b1_1111)
    );
}

#[test]
fn adjust_rejects_a_bit_that_may_not_be_one() {
    let caps = bochs();
    // Bit 8 of the pin-based controls is not allowed-1 (0x7f).
    let err = caps
        .adjust(PinBasedControls::from_bits_retain(1 << 8))
        .unwrap_err();
    assert_eq!(err.kind(), ControlKind::PinBased);
    assert_eq!(err.bit(), 8);
    assert!(matches!(err, ControlAdjustError::NotAllowedToBeOne { .. }));
    // Mode-based execute control (secondary bit 22) is not allowed on Bochs,
    // and the error names it.
    let err = caps
        .adjust(SecondaryProcControls::from_bits_retain(1 << 22))
        .unwrap_err();
    assert_eq!(err.kind(), ControlKind::SecondaryProcessorBased);
    assert_eq!(err.bit(), 22);
    assert_eq!(err.bit_name(), SecondaryProcControls::bit_name(22));
    assert!(err.bit_name().is_some());
    // The non-generic path names the bit too.
    let err = caps
        .allowed(ControlKind::SecondaryProcessorBased)
        .adjust(ControlKind::SecondaryProcessorBased, (1 << 22) | (1 << 1))
        .unwrap_err();
    assert_eq!(err.bit(), 22);
    assert_eq!(err.bit_name(), SecondaryProcControls::bit_name(22));
}

#[test]
fn adjust_never_masks_and_absent_words_allow_nothing() {
    let caps = bochs();
    assert_eq!(
        caps.allowed(ControlKind::TertiaryProcessorBased)
            .adjust(ControlKind::TertiaryProcessorBased, 0),
        Ok(0)
    );
    let err = caps
        .allowed(ControlKind::TertiaryProcessorBased)
        .adjust(ControlKind::TertiaryProcessorBased, 1 << 40)
        .unwrap_err();
    assert_eq!(err.bit(), 40);
    // 32-bit words reject bits above 31.
    let err = caps
        .allowed(ControlKind::Entry)
        .adjust(ControlKind::Entry, 1 << 32)
        .unwrap_err();
    assert_eq!(err.bit(), 32);
    // VM functions: only EPTP switching.
    assert_eq!(
        caps.allowed(ControlKind::VmFunction)
            .adjust(ControlKind::VmFunction, 1),
        Ok(1)
    );
    assert!(
        caps.allowed(ControlKind::VmFunction)
            .adjust(ControlKind::VmFunction, 2)
            .is_err()
    );
}

#[test]
fn check_reports_first_violating_bit() {
    let caps = bochs();
    let entry = caps.allowed(ControlKind::Entry);
    assert_eq!(entry.check(ControlKind::Entry, 0x11fb), Ok(()));
    // Bit 0 (default-1) clear.
    let err = entry.check(ControlKind::Entry, 0x11fa).unwrap_err();
    assert!(matches!(
        err,
        ControlCheckError::MustBeOne {
            kind: ControlKind::Entry,
            bit: 0,
            ..
        }
    ));
    // Bit 16 may not be 1 (allowed-1 is 0xffff); bit 0 missing comes first.
    let err = entry
        .check(ControlKind::Entry, 0x11fa | (1 << 16))
        .unwrap_err();
    assert_eq!(err.bit(), 0);
    let err = entry
        .check(ControlKind::Entry, 0x11fb | (1 << 16))
        .unwrap_err();
    assert!(matches!(err, ControlCheckError::MustBeZero { bit: 16, .. }));
    // Generic path.
    assert_eq!(caps.check(EntryControls::from_bits_retain(0x11fb)), Ok(()));
    let err = caps
        .check(EntryControls::from_bits_retain(0x11f3))
        .unwrap_err();
    assert_eq!(err.bit(), 3);
    assert_eq!(err.kind(), ControlKind::Entry);
}

#[test]
fn reader_reads_only_existing_msrs() {
    let raw = VmxCapabilities::BOCHS_SKYLAKE_X_RAW;
    let mut read = Vec::new();
    let caps = VmxCapabilities::from_reader(|msr| {
        read.push(msr);
        Some(raw.get(msr))
    })
    .expect("readable");
    assert_eq!(caps, bochs());
    assert!(!read.contains(&VmxMsr::ProcBasedCtls3));
    assert!(!read.contains(&VmxMsr::ExitCtls2));
    // A processor without secondary controls: no PROCBASED_CTLS2,
    // EPT_VPID_CAP or VMFUNC read, and no TRUE MSRs without BASIC[55].
    let minimal = RawVmxMsrs {
        basic: 0x0000_1000_0000_0001,
        ..RawVmxMsrs::default()
    };
    let mut read = Vec::new();
    let caps = VmxCapabilities::from_reader(|msr| {
        read.push(msr);
        Some(minimal.get(msr))
    })
    .expect("readable");
    assert_eq!(read.len(), 11);
    assert!(!caps.supports_ept());
    assert_eq!(caps.ept_vpid.raw(), 0);
}

proptest! {
    #[test]
    fn arbitrary_raw_msrs_never_panic(values in proptest::array::uniform20(any::<u64>()), wanted in any::<u64>(), kind_index in 0usize..8) {
        let mut raw = RawVmxMsrs::default();
        for (msr, value) in VmxMsr::ALL.iter().zip(values) {
            raw.set(*msr, value);
        }
        let caps = VmxCapabilities::from_raw(&raw);
        let kinds = [
            ControlKind::PinBased,
            ControlKind::PrimaryProcessorBased,
            ControlKind::SecondaryProcessorBased,
            ControlKind::TertiaryProcessorBased,
            ControlKind::PrimaryExit,
            ControlKind::SecondaryExit,
            ControlKind::Entry,
            ControlKind::VmFunction,
        ];
        let kind = kinds[kind_index];
        let allowed = caps.allowed(kind);
        if let Ok(value) = allowed.adjust(kind, wanted) {
            // Adjust never clears a wanted bit and its result passes check.
            prop_assert_eq!(value & wanted, wanted);
            prop_assert_eq!(allowed.check(kind, value), Ok(()));
        }
        if let Err(err) = allowed.check(kind, wanted) {
            prop_assert!(err.bit() < 64);
        }
        let _ = caps.adjust(PinBasedControls::from_bits_retain(wanted as u32));
        let _ = caps.check(SecondaryProcControls::from_bits_retain(wanted as u32));
        let _ = caps.cr0_fixed.first_violation(wanted);
        let _ = (caps.misc.max_msr_list_entries(), caps.basic.vmcs_memory_type());
        let read = VmxCapabilities::from_reader(|msr| Some(raw.get(msr)));
        prop_assert_eq!(read, Ok(caps));
    }

    #[test]
    fn fixed_bits_apply_satisfies_consistent_rules(fixed0 in any::<u64>(), fixed1 in any::<u64>(), value in any::<u64>()) {
        let fixed = FixedBits::new(fixed0 & fixed1, fixed1);
        prop_assert_eq!(fixed.first_violation(fixed.apply(value)), None);
    }
}
