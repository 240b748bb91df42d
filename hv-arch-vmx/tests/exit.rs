//! Exit reasons, exit qualifications and VMX-instruction information
//! against SDM Vol. 3C 25.9, 28.2 and Appendix C.

use hv_arch_vmx::exit::{
    AddressSize, ApicAccessQualification, ApicAccessType, ControlRegisterAccess,
    ControlRegisterAccessQualification, CrAccessType, DebugExceptionQualification,
    DescriptorTableInstruction, DescriptorTableOperandSize, EptGpaPermissions, EptLinearAccessKind,
    EptViolationAccess, EptViolationQualification, ExitReason, ExitReasonWord, Gpr,
    InstructionInfoError, IoAccessSize, IoDirection, IoOperandEncoding, IoQualification,
    LdtrTrInstruction, LmswOperandType, MemoryOperand, MovDrDirection, MovDrQualification, Operand,
    RandomOperandSize, ReservedIoAccessSize, ScaledIndex, SegmentRegister, TaskSwitchQualification,
    TaskSwitchSource, VmxInstructionInfo, VmxInstructionQualification,
};
use proptest::prelude::*;

#[test]
fn known_exit_reason_numbers_and_names() {
    let expected = [
        (
            0,
            ExitReason::ExceptionOrNmi,
            "Exception or non-maskable interrupt (NMI)",
        ),
        (1, ExitReason::ExternalInterrupt, "External interrupt"),
        (2, ExitReason::TripleFault, "Triple fault"),
        (10, ExitReason::Cpuid, "CPUID"),
        (12, ExitReason::Hlt, "HLT"),
        (18, ExitReason::Vmcall, "VMCALL"),
        (
            28,
            ExitReason::ControlRegisterAccess,
            "Control-register accesses",
        ),
        (30, ExitReason::IoInstruction, "I/O instruction"),
        (
            33,
            ExitReason::EntryFailInvalidGuestState,
            "VM-entry failure due to invalid guest state",
        ),
        (37, ExitReason::MonitorTrapFlag, "Monitor trap flag"),
        (
            41,
            ExitReason::EntryFailMachineCheck,
            "VM-entry failure due to machine-check event",
        ),
        (48, ExitReason::EptViolation, "EPT violation"),
        (49, ExitReason::EptMisconfiguration, "EPT misconfiguration"),
        (
            52,
            ExitReason::PreemptionTimerExpired,
            "VMX-preemption timer expired",
        ),
        (54, ExitReason::WbinvdOrWbnoinvd, "WBINVD or WBNOINVD"),
        (62, ExitReason::PmlFull, "Page-modification log full"),
        (74, ExitReason::BusLock, "Bus lock"),
        (75, ExitReason::InstructionTimeout, "Instruction timeout"),
        (79, ExitReason::Wrmsrlist, "WRMSRLIST"),
    ];
    for (number, reason, name) in expected {
        assert_eq!(ExitReason::from_basic(number), reason);
        assert_eq!(reason.number(), number);
        assert_eq!(reason.name(), name);
    }
}

#[test]
fn undefined_exit_reasons_are_unknown() {
    for number in [35, 38, 42, 71, 82, 83, 86, 1000, 65535] {
        assert_eq!(ExitReason::from_basic(number), ExitReason::Unknown(number));
        assert!(!ExitReason::from_basic(number).is_known());
    }
}

#[test]
fn all_exit_reasons_round_trip_and_are_sorted() {
    assert_eq!(ExitReason::ALL.len(), 80);
    for pair in ExitReason::ALL.windows(2) {
        assert!(pair[0].number() < pair[1].number());
    }
    for &reason in ExitReason::ALL {
        assert!(reason.is_known());
        assert_eq!(ExitReason::from_basic(reason.number()), reason);
    }
}

#[test]
fn every_u16_round_trips() {
    for number in 0..=u16::MAX {
        assert_eq!(ExitReason::from_basic(number).number(), number);
    }
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[test]
fn from_name_accepts_variant_snake_upper_and_sdm_text() {
    for &reason in ExitReason::ALL {
        let snake = snake_case(reason.variant_name());
        assert_eq!(ExitReason::from_name(reason.variant_name()), Some(reason));
        assert_eq!(ExitReason::from_name(&snake), Some(reason), "{snake}");
        assert_eq!(
            ExitReason::from_name(&snake.to_ascii_uppercase()),
            Some(reason)
        );
        assert_eq!(ExitReason::from_name(reason.name()), Some(reason));
    }
    assert_eq!(
        ExitReason::from_name("ept_violation"),
        Some(ExitReason::EptViolation)
    );
    assert_eq!(
        ExitReason::from_name("EPT_MISCONFIGURATION"),
        Some(ExitReason::EptMisconfiguration)
    );
    assert_eq!(ExitReason::from_name("ept"), None);
    assert_eq!(ExitReason::from_name(""), None);
}

#[test]
fn exit_reason_word_flags() {
    let failure = ExitReasonWord::from_raw(0x8000_0021);
    assert!(failure.is_entry_failure());
    assert_eq!(failure.reason(), ExitReason::EntryFailInvalidGuestState);
    assert_eq!(failure.basic(), 33);

    let enclave = ExitReasonWord::from_raw((1 << 27) | 0x30);
    assert!(enclave.enclave_mode());
    assert!(!enclave.is_entry_failure());
    assert_eq!(enclave.reason(), ExitReason::EptViolation);

    let flags = ExitReasonWord::from_raw((1 << 25) | (1 << 26) | (1 << 28) | (1 << 29));
    assert!(flags.prematurely_busy_shadow_stack());
    assert!(flags.bus_lock_detected());
    assert!(flags.pending_mtf());
    assert!(flags.from_vmx_root());
    assert_eq!(flags.reason(), ExitReason::ExceptionOrNmi);

    let built = ExitReasonWord::new(ExitReason::EntryFailMsrLoading).with_entry_failure();
    assert_eq!(built.raw(), 0x8000_0022);
    assert_eq!(
        ExitReasonWord::new(ExitReason::Hlt)
            .with_flags(ExitReasonWord::BUS_LOCK_DETECTED | 0xFFFF)
            .raw(),
        (1 << 26) | 0xC
    );
}

#[test]
fn ept_violation_read_with_guest_linear_translation() {
    let qualification = EptViolationQualification::from_raw(0x181);
    assert!(qualification.data_read());
    assert!(!qualification.data_write());
    assert!(!qualification.instruction_fetch());
    assert_eq!(qualification.access(), EptViolationAccess::DATA_READ);
    assert_eq!(qualification.permissions(), EptGpaPermissions::empty());
    assert!(qualification.guest_linear_address_valid());
    assert_eq!(
        qualification.linear_access_kind(),
        Some(EptLinearAccessKind::Translation)
    );

    let built =
        EptViolationQualification::new(EptViolationAccess::DATA_READ, EptGpaPermissions::empty())
            .with_guest_linear_address(EptLinearAccessKind::Translation);
    assert_eq!(built.raw(), 0x181);
}

#[test]
fn ept_violation_write_to_read_only_page_and_other_bits() {
    // Write (bit 1) to a readable, not writable page (bit 3), during a page walk.
    let qualification = EptViolationQualification::from_raw(0x8A);
    assert!(qualification.data_write());
    assert!(qualification.gpa_readable());
    assert!(!qualification.gpa_writable());
    assert_eq!(
        qualification.linear_access_kind(),
        Some(EptLinearAccessKind::PagingStructure)
    );
    assert_eq!(
        EptViolationQualification::from_raw(0x1).linear_access_kind(),
        None
    );

    let everything = EptViolationQualification::new(
        EptViolationAccess::all(),
        EptGpaPermissions::READABLE
            | EptGpaPermissions::EXECUTABLE
            | EptGpaPermissions::USER_EXECUTABLE,
    )
    .with_guest_linear_address(EptLinearAccessKind::Translation)
    .with_linear_attributes(true, false, true)
    .with_nmi_unblocking_due_to_iret(true)
    .with_shadow_stack_access(true)
    .with_supervisor_shadow_stack(true)
    .with_guest_paging_verification(true)
    .with_asynchronous(true);
    assert_eq!(
        everything.raw(),
        0x7 | 0x8
            | 0x20
            | 0x40
            | 0x180
            | 0x200
            | 0x800
            | 0x1000
            | 0x2000
            | 0x4000
            | 0x8000
            | 0x1_0000
    );
    assert!(everything.user_mode_linear_address());
    assert!(!everything.linear_read_write());
    assert!(everything.linear_execute_disable());
    assert!(everything.nmi_unblocking_due_to_iret());
    assert!(everything.shadow_stack_access());
    assert!(everything.supervisor_shadow_stack());
    assert!(everything.guest_paging_verification());
    assert!(everything.asynchronous());
    assert!(everything.gpa_user_executable());
}

#[test]
fn control_register_access_qualifications() {
    // mov cr3, rax
    let mov_to_cr3 = ControlRegisterAccessQualification::from_raw(0x3);
    assert_eq!(mov_to_cr3.cr_number(), 3);
    assert_eq!(mov_to_cr3.access_type(), CrAccessType::MovToCr);
    assert_eq!(mov_to_cr3.gpr(), Gpr::Rax);
    assert_eq!(
        mov_to_cr3.decode(),
        ControlRegisterAccess::MovToCr {
            cr: 3,
            source: Gpr::Rax
        }
    );
    assert_eq!(
        ControlRegisterAccessQualification::mov_to_cr(3, Gpr::Rax).raw(),
        0x3
    );

    // mov r12, cr8
    let mov_from_cr8 = ControlRegisterAccessQualification::from_raw(0xC18);
    assert_eq!(
        mov_from_cr8.decode(),
        ControlRegisterAccess::MovFromCr {
            cr: 8,
            destination: Gpr::R12
        }
    );
    assert_eq!(
        ControlRegisterAccessQualification::mov_from_cr(8, Gpr::R12).raw(),
        0xC18
    );

    assert_eq!(
        ControlRegisterAccessQualification::from_raw(0x20).decode(),
        ControlRegisterAccess::Clts
    );
    assert_eq!(ControlRegisterAccessQualification::clts().raw(), 0x20);

    // lmsw word [mem] with source 0x0011
    let lmsw = ControlRegisterAccessQualification::from_raw(0x0011_0070);
    assert_eq!(
        lmsw.decode(),
        ControlRegisterAccess::Lmsw {
            source_data: 0x11,
            operand: LmswOperandType::Memory
        }
    );
    assert_eq!(
        ControlRegisterAccessQualification::lmsw(0x11, LmswOperandType::Memory).raw(),
        0x0011_0070
    );
    assert_eq!(Gpr::from_index(15).name(), "r15");
}

#[test]
fn mov_dr_qualifications() {
    // mov dr7, rcx
    let to_dr7 = MovDrQualification::from_raw(0x107);
    assert_eq!(to_dr7.dr_number(), 7);
    assert_eq!(to_dr7.direction(), MovDrDirection::ToDr);
    assert_eq!(to_dr7.gpr(), Gpr::Rcx);
    // mov rdx, dr6
    let from_dr6 = MovDrQualification::from_raw(0x216);
    assert_eq!(from_dr6.dr_number(), 6);
    assert_eq!(from_dr6.direction(), MovDrDirection::FromDr);
    assert_eq!(from_dr6.gpr(), Gpr::Rdx);
    assert_eq!(
        MovDrQualification::new(6, MovDrDirection::FromDr, Gpr::Rdx).raw(),
        0x216
    );
}

#[test]
fn io_qualifications() {
    // out dx, al with DX = 0x3F8
    let out = IoQualification::from_raw(0x03F8_0000);
    assert_eq!(out.size(), Ok(IoAccessSize::Byte));
    assert_eq!(out.direction(), IoDirection::Out);
    assert!(!out.is_string());
    assert!(!out.is_rep());
    assert_eq!(out.operand_encoding(), IoOperandEncoding::Dx);
    assert_eq!(out.port(), 0x3F8);
    assert_eq!(
        IoQualification::new(0x3F8, IoAccessSize::Byte, IoDirection::Out).raw(),
        0x03F8_0000
    );

    // in al, 0x60
    let input = IoQualification::from_raw(0x0060_0048);
    assert_eq!(input.direction(), IoDirection::In);
    assert_eq!(input.operand_encoding(), IoOperandEncoding::Immediate);
    assert_eq!(input.port(), 0x60);
    assert_eq!(
        IoQualification::new(0x60, IoAccessSize::Byte, IoDirection::In)
            .with_operand_encoding(IoOperandEncoding::Immediate)
            .raw(),
        0x0060_0048
    );

    // rep outsw with DX = 0x1F0
    let rep_outsw = IoQualification::new(0x1F0, IoAccessSize::Word, IoDirection::Out)
        .with_string(true)
        .with_rep(true);
    assert_eq!(rep_outsw.raw(), 0x01F0_0031);
    assert_eq!(
        IoQualification::from_raw(0x3)
            .size()
            .map(IoAccessSize::bytes),
        Ok(4)
    );
    assert_eq!(
        IoQualification::from_raw(0x2).size(),
        Err(ReservedIoAccessSize(2))
    );
}

#[test]
fn apic_access_task_switch_and_debug_qualifications() {
    // Linear write to the ICR low register (offset 0x300).
    let icr_write = ApicAccessQualification::from_raw(0x1300);
    assert_eq!(icr_write.offset(), 0x300);
    assert_eq!(icr_write.access_type(), ApicAccessType::LinearDataWrite);
    assert!(icr_write.access_type().is_linear());
    assert_eq!(
        ApicAccessQualification::new(0x300, ApicAccessType::LinearDataWrite).raw(),
        0x1300
    );
    assert_eq!(
        ApicAccessQualification::from_raw(0xF000).access_type(),
        ApicAccessType::GuestPhysicalInstruction
    );
    assert_eq!(
        ApicAccessQualification::from_raw(0x5000).access_type(),
        ApicAccessType::Reserved(5)
    );
    assert!(ApicAccessQualification::from_raw(0x1_B000).asynchronous());

    let task_switch = TaskSwitchQualification::from_raw(0xC000_0028);
    assert_eq!(task_switch.selector(), 0x28);
    assert_eq!(task_switch.source(), TaskSwitchSource::IdtTaskGate);
    assert_eq!(
        TaskSwitchQualification::new(0x30, TaskSwitchSource::Jmp).raw(),
        0x8000_0030
    );

    let debug = DebugExceptionQualification::from_raw(0x4000 | 0x2000 | 0x1);
    assert!(debug.single_step());
    assert!(debug.debug_register_access());
    assert!(debug.breakpoint_hit(0));
    assert!(!debug.breakpoint_hit(1));
    assert!(!debug.breakpoint_hit(9));
    assert_eq!(debug.breakpoints(), 1);
    assert!(DebugExceptionQualification::from_raw(1 << 16).rtm());
    assert!(DebugExceptionQualification::from_raw(1 << 11).bus_lock_detected());
}

#[test]
fn vmx_instruction_qualification_is_the_sign_extended_displacement() {
    let negative = VmxInstructionQualification::from_displacement(-8);
    assert_eq!(negative.raw(), 0xFFFF_FFFF_FFFF_FFF8);
    assert_eq!(negative.displacement(), -8);
    assert_eq!(
        negative.displacement_masked(AddressSize::Bits32),
        0xFFFF_FFF8
    );
    assert_eq!(negative.displacement_masked(AddressSize::Bits16), 0xFFF8);
    assert_eq!(
        VmxInstructionQualification::from_displacement(0x10).raw(),
        0x10
    );
}

#[test]
fn vmread_memory_form() {
    // vmread [rbx + rcx*8 + disp], rdx in 64-bit mode, DS.
    let info = VmxInstructionInfo::from_raw(0x2185_8103);
    let decoded = info.vmread_vmwrite().unwrap();
    assert_eq!(decoded.field_register, Gpr::Rdx);
    let expected_memory = MemoryOperand {
        address_size: AddressSize::Bits64,
        segment: SegmentRegister::Ds,
        base: Some(Gpr::Rbx),
        index: Some(ScaledIndex {
            register: Gpr::Rcx,
            scale: 8,
        }),
    };
    assert_eq!(decoded.value, Operand::Memory(expected_memory));
    assert_eq!(
        VmxInstructionInfo::from_memory_operand(expected_memory).with_reg2(Gpr::Rdx),
        info
    );

    let registers = |register: Gpr| match register {
        Gpr::Rbx => 0x1000,
        Gpr::Rcx => 3,
        _ => 0,
    };
    let displacement = VmxInstructionQualification::from_displacement(0x10).raw();
    assert_eq!(
        expected_memory.effective_address(displacement, registers),
        0x1000 + 24 + 0x10
    );
}

#[test]
fn vmwrite_register_form_ignores_memory_fields() {
    // vmwrite rdx, rax: Reg1 = rax (value), Reg2 = rdx (field), bit 10 set;
    // address size 3 and segment 7 are undefined for register operands.
    let info = VmxInstructionInfo::from_raw(0x2000_0400 | (3 << 7) | (7 << 15));
    let decoded = info.vmread_vmwrite().unwrap();
    assert_eq!(decoded.field_register, Gpr::Rdx);
    assert_eq!(decoded.value, Operand::Register(Gpr::Rax));
    assert_eq!(
        VmxInstructionInfo::from_register_operand(Gpr::Rax)
            .with_reg2(Gpr::Rdx)
            .raw(),
        0x2000_0400
    );
}

#[test]
fn invept_descriptor_table_ldtr_and_random_forms() {
    // invept rax, [rsp] (SS, no index).
    let invept = VmxInstructionInfo::from_raw(0x0241_0100)
        .invalidation()
        .unwrap();
    assert_eq!(invept.type_register, Gpr::Rax);
    assert_eq!(invept.descriptor.segment, SegmentRegister::Ss);
    assert_eq!(invept.descriptor.base, Some(Gpr::Rsp));
    assert_eq!(invept.descriptor.index, None);

    // lidt [rax] in 64-bit mode.
    let lidt = VmxInstructionInfo::from_raw(0x3041_8100)
        .descriptor_table()
        .unwrap();
    assert_eq!(lidt.instruction, DescriptorTableInstruction::Lidt);
    assert_eq!(lidt.memory.base, Some(Gpr::Rax));
    assert_eq!(lidt.operand_size, DescriptorTableOperandSize::Bits16);
    let sgdt32 =
        VmxInstructionInfo::from_raw((1 << 7) | (1 << 11) | (3 << 15) | (1 << 22) | (1 << 27));
    let sgdt32 = sgdt32.descriptor_table().unwrap();
    assert_eq!(sgdt32.instruction, DescriptorTableInstruction::Sgdt);
    assert_eq!(sgdt32.operand_size, DescriptorTableOperandSize::Bits32);
    assert_eq!(sgdt32.memory.address_size, AddressSize::Bits32);
    assert_eq!((sgdt32.memory.base, sgdt32.memory.index), (None, None));

    // ltr cx
    let ltr = VmxInstructionInfo::from_raw(0x3000_0408).ldtr_tr().unwrap();
    assert_eq!(ltr.instruction, LdtrTrInstruction::Ltr);
    assert_eq!(ltr.operand, Operand::Register(Gpr::Rcx));

    // rdrand r9d
    let rdrand = VmxInstructionInfo::from_raw(0x848).random().unwrap();
    assert_eq!(rdrand.destination, Gpr::R9);
    assert_eq!(rdrand.operand_size, RandomOperandSize::Bits32);

    // outsb from 32-bit code with an FS override; INS always uses ES.
    let outs = VmxInstructionInfo::from_raw((1 << 7) | (4 << 15))
        .string_io(false)
        .unwrap();
    assert_eq!(
        (outs.address_size, outs.segment),
        (AddressSize::Bits32, SegmentRegister::Fs)
    );
    let ins = VmxInstructionInfo::from_raw((1 << 7) | (7 << 15))
        .string_io(true)
        .unwrap();
    assert_eq!(ins.segment, SegmentRegister::Es);
}

#[test]
fn reserved_instruction_info_encodings_are_errors() {
    assert_eq!(
        VmxInstructionInfo::from_raw(3 << 7).memory_operand(),
        Err(InstructionInfoError::ReservedAddressSize(3))
    );
    assert_eq!(
        VmxInstructionInfo::from_raw(6 << 15).memory_operand(),
        Err(InstructionInfoError::ReservedSegment(6))
    );
    assert_eq!(
        VmxInstructionInfo::from_raw(7 << 15).string_io(false),
        Err(InstructionInfoError::ReservedSegment(7))
    );
    assert_eq!(
        VmxInstructionInfo::from_raw(3 << 11).random(),
        Err(InstructionInfoError::ReservedOperandSize(3))
    );
}

proptest! {
    #[test]
    fn qualification_decoders_never_panic(raw in any::<u64>()) {
        let debug = DebugExceptionQualification::from_raw(raw);
        let _ = (debug.breakpoints(), debug.breakpoint_hit((raw >> 60) as u8), debug.single_step(), debug.rtm());
        let task = TaskSwitchQualification::from_raw(raw);
        let _ = (task.selector(), task.source());
        let cr = ControlRegisterAccessQualification::from_raw(raw);
        let _ = (cr.decode(), cr.lmsw_operand_type());
        let dr = MovDrQualification::from_raw(raw);
        let _ = (dr.dr_number(), dr.direction(), dr.gpr());
        let io = IoQualification::from_raw(raw);
        let _ = (io.size(), io.direction(), io.port(), io.operand_encoding(), io.is_rep(), io.is_string());
        let apic = ApicAccessQualification::from_raw(raw);
        prop_assert_eq!(u64::from(apic.access_type().encoding()), (raw >> 12) & 0xF);
        let ept = EptViolationQualification::from_raw(raw);
        let _ = (ept.access(), ept.permissions(), ept.linear_access_kind(), ept.asynchronous());
        let vmx = VmxInstructionQualification::from_raw(raw);
        prop_assert_eq!(vmx.displacement().cast_unsigned(), raw);
        let _ = ExitReasonWord::from_raw(raw as u32).reason();
    }

    #[test]
    fn instruction_info_decoders_never_panic(raw in any::<u32>()) {
        let info = VmxInstructionInfo::from_raw(raw);
        let _ = (info.operand(), info.string_io(false), info.string_io(true), info.invalidation());
        let _ = (info.descriptor_table(), info.ldtr_tr(), info.random(), info.vmread_vmwrite());
        let _ = (info.vmx_pointer_operand(), info.user_wait_register(), info.loadiwkey_registers());
        if let Ok(memory) = info.memory_operand() {
            // Rebuilding the field from the decoded operand reproduces every
            // defined memory-operand bit (scaling only matters with an index).
            let rebuilt = VmxInstructionInfo::from_memory_operand(memory).memory_operand();
            prop_assert_eq!(rebuilt, Ok(memory));
            let _ = memory.effective_address(raw.into(), |register| u64::from(register.index()));
        }
    }

    #[test]
    fn builders_round_trip(port in any::<u16>(), selector in any::<u16>(), gpr in 0u8..16, cr in 0u8..16) {
        let gpr = Gpr::from_index(gpr);
        prop_assert_eq!(IoQualification::new(port, IoAccessSize::Dword, IoDirection::In).port(), port);
        prop_assert_eq!(TaskSwitchQualification::new(selector, TaskSwitchSource::Call).selector(), selector);
        prop_assert_eq!(
            ControlRegisterAccessQualification::mov_to_cr(cr, gpr).decode(),
            ControlRegisterAccess::MovToCr { cr, source: gpr }
        );
        prop_assert_eq!(
            ControlRegisterAccessQualification::lmsw(selector, LmswOperandType::Register).lmsw_source_data(),
            selector
        );
    }
}
