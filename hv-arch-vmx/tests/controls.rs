//! Control-word bit positions and helpers against SDM Vol. 3C 25.6-25.8 and
//! Appendix A.

use hv_arch_vmx::controls::{
    ControlKind, ControlWord, EntryControls, ExceptionBitmap, ExceptionVector, ExitControls,
    PinBasedControls, PrimaryProcControls, SecondaryExitControls, SecondaryProcControls,
    TertiaryProcControls, VmFunctionControls,
};

#[test]
fn pin_based_bit_positions() {
    assert_eq!(PinBasedControls::EXTERNAL_INTERRUPT_EXITING.bits(), 1 << 0);
    assert_eq!(PinBasedControls::NMI_EXITING.bits(), 1 << 3);
    assert_eq!(PinBasedControls::VIRTUAL_NMIS.bits(), 1 << 5);
    assert_eq!(
        PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER.bits(),
        1 << 6
    );
    assert_eq!(PinBasedControls::PROCESS_POSTED_INTERRUPTS.bits(), 1 << 7);
}

#[test]
fn primary_processor_based_bit_positions() {
    let expected = [
        (PrimaryProcControls::INTERRUPT_WINDOW_EXITING, 2),
        (PrimaryProcControls::USE_TSC_OFFSETTING, 3),
        (PrimaryProcControls::HLT_EXITING, 7),
        (PrimaryProcControls::INVLPG_EXITING, 9),
        (PrimaryProcControls::MWAIT_EXITING, 10),
        (PrimaryProcControls::RDPMC_EXITING, 11),
        (PrimaryProcControls::RDTSC_EXITING, 12),
        (PrimaryProcControls::CR3_LOAD_EXITING, 15),
        (PrimaryProcControls::CR3_STORE_EXITING, 16),
        (PrimaryProcControls::ACTIVATE_TERTIARY_CONTROLS, 17),
        (PrimaryProcControls::CR8_LOAD_EXITING, 19),
        (PrimaryProcControls::CR8_STORE_EXITING, 20),
        (PrimaryProcControls::USE_TPR_SHADOW, 21),
        (PrimaryProcControls::NMI_WINDOW_EXITING, 22),
        (PrimaryProcControls::MOV_DR_EXITING, 23),
        (PrimaryProcControls::UNCONDITIONAL_IO_EXITING, 24),
        (PrimaryProcControls::USE_IO_BITMAPS, 25),
        (PrimaryProcControls::MONITOR_TRAP_FLAG, 27),
        (PrimaryProcControls::USE_MSR_BITMAPS, 28),
        (PrimaryProcControls::MONITOR_EXITING, 29),
        (PrimaryProcControls::PAUSE_EXITING, 30),
        (PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS, 31),
    ];
    for (flag, bit) in expected {
        assert_eq!(flag.to_raw(), 1u64 << bit, "{flag:?}");
    }
}

#[test]
fn secondary_processor_based_bit_positions() {
    assert_eq!(
        SecondaryProcControls::VIRTUALIZE_APIC_ACCESSES.bits(),
        1 << 0
    );
    assert_eq!(SecondaryProcControls::ENABLE_EPT.bits(), 1 << 1);
    assert_eq!(SecondaryProcControls::ENABLE_VPID.bits(), 1 << 5);
    assert_eq!(SecondaryProcControls::UNRESTRICTED_GUEST.bits(), 1 << 7);
    assert_eq!(
        SecondaryProcControls::VIRTUAL_INTERRUPT_DELIVERY.bits(),
        1 << 9
    );
    assert_eq!(SecondaryProcControls::VMCS_SHADOWING.bits(), 1 << 14);
    assert_eq!(SecondaryProcControls::ENABLE_PML.bits(), 1 << 17);
    assert_eq!(SecondaryProcControls::EPT_VIOLATION_VE.bits(), 1 << 18);
    assert_eq!(
        SecondaryProcControls::MODE_BASED_EXECUTE_CONTROL_FOR_EPT.bits(),
        1 << 22
    );
    assert_eq!(SecondaryProcControls::USE_TSC_SCALING.bits(), 1 << 25);
    assert_eq!(SecondaryProcControls::ENABLE_ENCLV_EXITING.bits(), 1 << 28);
    assert_eq!(
        SecondaryProcControls::VMM_BUS_LOCK_DETECTION.bits(),
        1 << 30
    );
    assert_eq!(SecondaryProcControls::INSTRUCTION_TIMEOUT.bits(), 1 << 31);
    // Bit 29 is not defined.
    assert_eq!(SecondaryProcControls::bit_name(29), None);
}

#[test]
fn tertiary_exit_entry_and_vmfunc_bit_positions() {
    assert_eq!(TertiaryProcControls::LOADIWKEY_EXITING.bits(), 1 << 0);
    assert_eq!(TertiaryProcControls::IPI_VIRTUALIZATION.bits(), 1 << 4);
    assert_eq!(
        TertiaryProcControls::VIRTUALIZE_IA32_SPEC_CTRL.bits(),
        1 << 7
    );

    assert_eq!(ExitControls::HOST_ADDRESS_SPACE_SIZE.bits(), 1 << 9);
    assert_eq!(ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT.bits(), 1 << 15);
    assert_eq!(ExitControls::LOAD_IA32_EFER.bits(), 1 << 21);
    assert_eq!(
        ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE.bits(),
        1 << 22
    );
    assert_eq!(ExitControls::ACTIVATE_SECONDARY_CONTROLS.bits(), 1 << 31);

    assert_eq!(SecondaryExitControls::SAVE_IA32_FRED.bits(), 1 << 0);
    assert_eq!(SecondaryExitControls::LOAD_IA32_FRED.bits(), 1 << 1);
    assert_eq!(
        SecondaryExitControls::PREMATURELY_BUSY_SHADOW_STACK.bits(),
        1 << 3
    );

    assert_eq!(EntryControls::LOAD_DEBUG_CONTROLS.bits(), 1 << 2);
    assert_eq!(EntryControls::IA32E_MODE_GUEST.bits(), 1 << 9);
    assert_eq!(EntryControls::LOAD_IA32_PAT.bits(), 1 << 14);
    assert_eq!(EntryControls::LOAD_IA32_EFER.bits(), 1 << 15);
    assert_eq!(EntryControls::LOAD_CET_STATE.bits(), 1 << 20);
    assert_eq!(EntryControls::LOAD_IA32_FRED.bits(), 1 << 23);

    assert_eq!(VmFunctionControls::EPTP_SWITCHING.bits(), 1);
}

#[test]
fn default1_classes_match_appendix_a() {
    // SDM A.3.1-A.5; the values also equal the must-be-1 halves that Bochs's
    // non-TRUE capability MSRs report (FACTS.md).
    assert_eq!(PinBasedControls::DEFAULT1.to_raw(), 0x16);
    assert_eq!(PrimaryProcControls::DEFAULT1.to_raw(), 0x0401_E172);
    assert_eq!(ExitControls::DEFAULT1.to_raw(), 0x0003_6DFF);
    assert_eq!(EntryControls::DEFAULT1.to_raw(), 0x11FF);
    // The only default1 bits that are also named controls: first VMX
    // processors supported only the 1-setting of these (SDM 25.6.2, 25.7.1, 25.8.1).
    assert!(!PinBasedControls::DEFAULT1.intersects(PinBasedControls::all()));
    assert_eq!(
        PrimaryProcControls::DEFAULT1 & PrimaryProcControls::all(),
        PrimaryProcControls::CR3_LOAD_EXITING | PrimaryProcControls::CR3_STORE_EXITING
    );
    assert_eq!(
        ExitControls::DEFAULT1 & ExitControls::all(),
        ExitControls::SAVE_DEBUG_CONTROLS
    );
    assert_eq!(
        EntryControls::DEFAULT1 & EntryControls::all(),
        EntryControls::LOAD_DEBUG_CONTROLS
    );
    assert!(SecondaryProcControls::DEFAULT1.is_empty());
}

#[test]
fn bit_name_names_defined_bits() {
    assert_eq!(SecondaryProcControls::bit_name(1), Some("ENABLE_EPT"));
    assert_eq!(PinBasedControls::bit_name(3), Some("NMI_EXITING"));
    assert_eq!(
        PrimaryProcControls::bit_name(31),
        Some("ACTIVATE_SECONDARY_CONTROLS")
    );
    assert_eq!(EntryControls::bit_name(9), Some("IA32E_MODE_GUEST"));
    assert_eq!(ExitControls::bit_name(9), Some("HOST_ADDRESS_SPACE_SIZE"));
    assert_eq!(
        TertiaryProcControls::bit_name(4),
        Some("IPI_VIRTUALIZATION")
    );
    assert_eq!(PinBasedControls::bit_name(1), None);
    assert_eq!(PinBasedControls::bit_name(64), None);
}

#[test]
fn kinds_are_wired() {
    assert_eq!(PinBasedControls::KIND, ControlKind::PinBased);
    assert_eq!(
        PrimaryProcControls::KIND,
        ControlKind::PrimaryProcessorBased
    );
    assert_eq!(
        SecondaryProcControls::KIND,
        ControlKind::SecondaryProcessorBased
    );
    assert_eq!(
        TertiaryProcControls::KIND,
        ControlKind::TertiaryProcessorBased
    );
    assert_eq!(ExitControls::KIND, ControlKind::PrimaryExit);
    assert_eq!(SecondaryExitControls::KIND, ControlKind::SecondaryExit);
    assert_eq!(EntryControls::KIND, ControlKind::Entry);
    assert_eq!(VmFunctionControls::KIND, ControlKind::VmFunction);
}

#[test]
fn from_raw_keeps_unknown_bits_and_truncates_to_width() {
    let pin = PinBasedControls::from_raw(0x16 | (1 << 20));
    assert_eq!(pin.to_raw(), 0x16 | (1 << 20));
    assert!(!pin.contains(PinBasedControls::NMI_EXITING));
    // 32-bit words drop bits 63:32; 64-bit words keep them.
    assert_eq!(
        PrimaryProcControls::from_raw(0xFFFF_FFFF_0000_0080).to_raw(),
        0x80
    );
    assert_eq!(TertiaryProcControls::from_raw(1 << 40).to_raw(), 1 << 40);
    assert_eq!(VmFunctionControls::from_raw(u64::MAX).to_raw(), u64::MAX);
}

#[test]
fn exception_vectors_and_error_codes() {
    assert_eq!(ExceptionVector::from_vector(14), ExceptionVector::PageFault);
    assert_eq!(ExceptionVector::PageFault.mnemonic(), Some("#PF"));
    assert_eq!(ExceptionVector::ControlProtection.vector(), 21);
    assert_eq!(ExceptionVector::from_vector(15), ExceptionVector::Other(15));
    assert_eq!(ExceptionVector::from_vector(32), ExceptionVector::Other(32));
    assert_eq!(
        ExceptionVector::from_vector(28),
        ExceptionVector::HypervisorInjection
    );
    assert_eq!(ExceptionVector::Other(40).mnemonic(), None);
    let with_error_code: Vec<u8> = (0..=255u8)
        .filter(|&vector| ExceptionVector::from_vector(vector).has_error_code())
        .collect();
    assert_eq!(with_error_code, [8, 10, 11, 12, 13, 14, 17, 21]);
    for vector in 0..=255u8 {
        assert_eq!(ExceptionVector::from_vector(vector).vector(), vector);
    }
}

#[test]
fn exception_bitmap_helpers() {
    let bitmap = ExceptionBitmap::EMPTY
        .with(ExceptionVector::PageFault)
        .with(ExceptionVector::InvalidOpcode)
        .with(ExceptionVector::Other(40));
    assert_eq!(bitmap.raw(), (1 << 14) | (1 << 6));
    assert!(bitmap.intercepts(ExceptionVector::PageFault));
    assert!(!bitmap.intercepts(ExceptionVector::GeneralProtection));
    assert!(!bitmap.intercepts(ExceptionVector::Other(40)));
    let bitmap = bitmap.without(ExceptionVector::PageFault);
    assert_eq!(bitmap.raw(), 1 << 6);

    let collected: ExceptionBitmap = [
        ExceptionVector::Debug,
        ExceptionVector::Breakpoint,
        ExceptionVector::MachineCheck,
    ]
    .into_iter()
    .collect();
    assert_eq!(collected.raw(), (1 << 1) | (1 << 3) | (1 << 18));
    let vectors: Vec<_> = collected.vectors().collect();
    assert_eq!(
        vectors,
        [
            ExceptionVector::Debug,
            ExceptionVector::Breakpoint,
            ExceptionVector::MachineCheck
        ]
    );
    assert_eq!(ExceptionBitmap::from_raw(u32::MAX).vectors().count(), 32);
}
