//! `hv explain exit` and `hv explain vm-error`.

use super::{ExplainError, Explanation, Facts, parse_bounded, parse_number};
use hv_arch_vmx::exit::{
    ApicAccessQualification, ControlRegisterAccess, ControlRegisterAccessQualification,
    DebugExceptionQualification, EptViolationAccess, EptViolationQualification, ExitReason,
    ExitReasonWord, InstructionInfoError, IoDirection, IoQualification, MemoryOperand,
    MovDrQualification, Operand, TaskSwitchQualification, VmxInstructionInfo,
    VmxInstructionQualification,
};
use hv_arch_vmx::instruction_error::VmInstructionError;

/// Explains a VM exit: the reason (a basic reason number, a full 32-bit
/// exit-reason word, or a name), and optionally its exit qualification and
/// VM-exit instruction information, decoded the way the SDM lays them out
/// for that reason (SDM 28.2.1, 28.2.5).
///
/// # Errors
///
/// [`ExplainError`] for a malformed number or an unknown name.
pub fn exit(
    reason: &str,
    qualification: Option<&str>,
    instruction_info: Option<&str>,
) -> Result<Explanation, ExplainError> {
    let word = match parse_number(reason) {
        Ok(number) => {
            let raw = u32::try_from(number).map_err(|_| ExplainError::TooWide {
                value: number,
                bits: 32,
            })?;
            ExitReasonWord::from_raw(raw)
        }
        Err(_) => ExitReasonWord::new(
            ExitReason::from_name(reason)
                .ok_or_else(|| ExplainError::UnknownExitReason(reason.to_owned()))?,
        ),
    };
    let qualification = qualification.map(parse_number).transpose()?;
    let instruction_info = instruction_info
        .map(|info| parse_bounded(info, 32))
        .transpose()?;

    let exit_reason = word.reason();
    let mut facts = Facts::new(format!(
        "exit reason {}: {}",
        exit_reason.number(),
        exit_reason.name()
    ));
    facts
        .fact(
            "reason",
            "basic reason",
            exit_reason.number(),
            exit_reason.number(),
        )
        .text("name", "name", exit_reason.name())
        .flag("defined", "defined by the SDM", exit_reason.is_known());
    if word.raw() >> 16 != 0 {
        facts
            .hex(
                "exit_reason_word",
                "exit-reason word",
                u64::from(word.raw()),
            )
            .flag(
                "entry_failure",
                "VM-entry failure (bit 31)",
                word.is_entry_failure(),
            )
            .flag(
                "from_vmx_root",
                "VM exit from VMX root operation (bit 29)",
                word.from_vmx_root(),
            )
            .flag(
                "pending_mtf",
                "pending MTF VM exit (bit 28)",
                word.pending_mtf(),
            )
            .flag(
                "enclave_mode",
                "incident to enclave mode (bit 27)",
                word.enclave_mode(),
            )
            .flag(
                "bus_lock_detected",
                "bus lock detected (bit 26)",
                word.bus_lock_detected(),
            );
    }
    if let Some(raw) = qualification {
        facts.nested("qualification", explain_qualification(exit_reason, raw));
    }
    if let Some(raw) = instruction_info {
        // Cannot truncate: parse_bounded checked 32 bits.
        let info = VmxInstructionInfo::from_raw(raw as u32);
        let direction = qualification.map(|q| IoQualification::from_raw(q).direction());
        facts.nested(
            "instruction_info",
            explain_instruction_info(exit_reason, info, direction),
        );
    }
    Ok(facts.finish())
}

fn explain_qualification(reason: ExitReason, raw: u64) -> Explanation {
    let mut facts = Facts::new(format!("exit qualification {raw:#x}:"));
    facts.hex("raw", "raw", raw);
    match reason {
        ExitReason::ExceptionOrNmi => debug_exception(&mut facts, raw),
        ExitReason::TaskSwitch => task_switch(&mut facts, raw),
        ExitReason::ControlRegisterAccess => control_register_access(&mut facts, raw),
        ExitReason::MovDr => mov_dr(&mut facts, raw),
        ExitReason::IoInstruction => io_instruction(&mut facts, raw),
        ExitReason::ApicAccess => apic_access(&mut facts, raw),
        ExitReason::EptViolation => {
            explain_ept_violation(&mut facts, EptViolationQualification::from_raw(raw));
        }
        ExitReason::Invlpg => {
            facts.hex(
                "linear_address",
                "linear address of the INVLPG operand",
                raw,
            );
        }
        ExitReason::Vmclear
        | ExitReason::Vmptrld
        | ExitReason::Vmptrst
        | ExitReason::Vmread
        | ExitReason::Vmwrite
        | ExitReason::Vmxon
        | ExitReason::Invept
        | ExitReason::Invvpid
        | ExitReason::Invpcid
        | ExitReason::GdtrIdtrAccess
        | ExitReason::LdtrTrAccess => {
            let displacement = VmxInstructionQualification::from_raw(raw).displacement();
            facts.fact(
                "displacement",
                "memory-operand displacement",
                displacement,
                displacement,
            );
        }
        ExitReason::EntryFailInvalidGuestState => {
            let text = match raw {
                0 => "default",
                2 => "failure loading the PDPTEs",
                3 => "attempt to inject an NMI while NMIs were blocked by STI or MOV SS",
                4 => "invalid VMCS link pointer",
                _ => "not defined by the SDM",
            };
            facts.text("meaning", "meaning (SDM 27.8)", text);
        }
        ExitReason::EntryFailMsrLoading => {
            facts.fact(
                "msr_entry",
                "failing entry of the VM-entry MSR-load area (1-based)",
                raw,
                raw,
            );
        }
        _ => {
            facts.fact(
                "meaning",
                "meaning",
                "the SDM defines no qualification fields for this exit reason",
                "undefined",
            );
        }
    }
    facts.finish()
}

fn debug_exception(facts: &mut Facts, raw: u64) {
    let debug = DebugExceptionQualification::from_raw(raw);
    facts
        .fact(
            "note",
            "meaning",
            "for #PF the faulting linear address; for #DB the bits below",
            "depends on the vector",
        )
        .fact(
            "breakpoints",
            "#DB: breakpoint conditions B3:0",
            format_args!("{:#06b}", debug.breakpoints()),
            debug.breakpoints(),
        )
        .flag(
            "debug_register_access",
            "#DB: BD (debug-register access)",
            debug.debug_register_access(),
        )
        .flag("single_step", "#DB: BS (single step)", debug.single_step())
        .flag("rtm", "#DB: RTM", debug.rtm());
}

fn task_switch(facts: &mut Facts, raw: u64) {
    let task = TaskSwitchQualification::from_raw(raw);
    facts
        .fact(
            "selector",
            "TSS selector",
            format_args!("{:#x}", task.selector()),
            task.selector(),
        )
        .debug("source", "source", task.source());
}

fn control_register_access(facts: &mut Facts, raw: u64) {
    let text = match ControlRegisterAccessQualification::from_raw(raw).decode() {
        ControlRegisterAccess::MovToCr { cr, source } => {
            format!("mov cr{cr}, {}", source.name())
        }
        ControlRegisterAccess::MovFromCr { cr, destination } => {
            format!("mov {}, cr{cr}", destination.name())
        }
        ControlRegisterAccess::Clts => "clts".to_owned(),
        ControlRegisterAccess::Lmsw {
            source_data,
            operand,
        } => {
            format!("lmsw {source_data:#x} (operand in {operand:?})")
        }
    };
    facts.text("instruction", "instruction", text);
}

fn mov_dr(facts: &mut Facts, raw: u64) {
    let dr = MovDrQualification::from_raw(raw);
    facts
        .fact(
            "dr",
            "debug register",
            format_args!("dr{}", dr.dr_number()),
            dr.dr_number(),
        )
        .debug("direction", "direction", dr.direction())
        .fact(
            "register",
            "general-purpose register",
            dr.gpr().name(),
            dr.gpr().name(),
        );
}

fn io_instruction(facts: &mut Facts, raw: u64) {
    let io = IoQualification::from_raw(raw);
    match io.size() {
        Ok(size) => facts.fact(
            "size",
            "access size",
            format_args!("{} byte(s)", size.bytes()),
            size.bytes(),
        ),
        Err(reserved) => facts.fact(
            "size",
            "access size",
            format_args!("reserved encoding {}", reserved.0),
            "reserved",
        ),
    };
    let direction = match io.direction() {
        IoDirection::In => "in",
        IoDirection::Out => "out",
    };
    facts
        .text("direction", "direction", direction)
        .flag("string", "string instruction (INS/OUTS)", io.is_string())
        .flag("rep", "REP prefixed", io.is_rep())
        .debug("operand", "port operand", io.operand_encoding())
        .fact("port", "port", format_args!("{:#x}", io.port()), io.port());
}

fn apic_access(facts: &mut Facts, raw: u64) {
    let apic = ApicAccessQualification::from_raw(raw);
    facts
        .fact(
            "offset",
            "offset in the APIC page",
            format_args!("{:#x}", apic.offset()),
            apic.offset(),
        )
        .debug("access_type", "access type", apic.access_type())
        .flag("asynchronous", "asynchronous", apic.asynchronous());
}

fn explain_ept_violation(facts: &mut Facts, ept: EptViolationQualification) {
    let access = ept.access();
    let mut kinds = Vec::new();
    for (flag, name) in [
        (EptViolationAccess::DATA_READ, "read"),
        (EptViolationAccess::DATA_WRITE, "write"),
        (EptViolationAccess::INSTRUCTION_FETCH, "instruction fetch"),
    ] {
        if access.contains(flag) {
            kinds.push(name);
        }
    }
    let access_text = if kinds.is_empty() {
        "none".to_owned()
    } else {
        kinds.join(" + ")
    };
    facts
        .text("access", "access", access_text)
        .flag("gpa_readable", "GPA readable per EPT", ept.gpa_readable())
        .flag("gpa_writable", "GPA writable per EPT", ept.gpa_writable())
        .flag(
            "gpa_executable",
            "GPA executable per EPT",
            ept.gpa_executable(),
        )
        .flag(
            "gpa_user_executable",
            "GPA user-executable per EPT",
            ept.gpa_user_executable(),
        )
        .flag(
            "guest_linear_address_valid",
            "guest-linear address valid",
            ept.guest_linear_address_valid(),
        );
    if let Some(kind) = ept.linear_access_kind() {
        facts
            .fact(
                "linear_access",
                "access to",
                format_args!("{kind:?}"),
                format!("{kind:?}"),
            )
            .flag(
                "user_mode",
                "user-mode linear address",
                ept.user_mode_linear_address(),
            )
            .flag(
                "linear_read_write",
                "linear address writable",
                ept.linear_read_write(),
            )
            .flag(
                "linear_execute_disable",
                "linear address execute-disable",
                ept.linear_execute_disable(),
            );
    }
    facts
        .flag(
            "nmi_unblocking",
            "NMI unblocking due to IRET",
            ept.nmi_unblocking_due_to_iret(),
        )
        .flag(
            "shadow_stack",
            "shadow-stack access",
            ept.shadow_stack_access(),
        )
        .flag(
            "supervisor_shadow_stack",
            "supervisor shadow-stack page",
            ept.supervisor_shadow_stack(),
        )
        .flag(
            "guest_paging_verification",
            "guest-paging verification",
            ept.guest_paging_verification(),
        )
        .flag(
            "asynchronous",
            "asynchronous to instruction execution",
            ept.asynchronous(),
        );
}

fn memory_text(memory: MemoryOperand) -> String {
    let mut terms = Vec::new();
    if let Some(base) = memory.base {
        terms.push(base.name().to_owned());
    }
    if let Some(index) = memory.index {
        terms.push(format!("{}*{}", index.register.name(), index.scale));
    }
    terms.push("displacement".to_owned());
    format!(
        "{}:[{}] ({}-bit addressing)",
        memory.segment.name(),
        terms.join(" + "),
        memory.address_size.bits()
    )
}

fn operand_text(operand: Operand) -> String {
    match operand {
        Operand::Register(register) => register.name().to_owned(),
        Operand::Memory(memory) => memory_text(memory),
    }
}

fn explain_instruction_info(
    reason: ExitReason,
    info: VmxInstructionInfo,
    io_direction: Option<IoDirection>,
) -> Explanation {
    let mut facts = Facts::new(format!(
        "VM-exit instruction information {:#x}:",
        info.raw()
    ));
    facts.hex("raw", "raw", u64::from(info.raw()));
    if let Err(error) = describe_instruction_info(&mut facts, reason, info, io_direction) {
        facts.fact("reserved", "reserved encoding", error, error.to_string());
    }
    facts.finish()
}

/// Adds the fields of `info` in the layout the SDM gives for `reason`
/// (SDM 28.2.5, one table per instruction family).
fn describe_instruction_info(
    facts: &mut Facts,
    reason: ExitReason,
    info: VmxInstructionInfo,
    io_direction: Option<IoDirection>,
) -> Result<(), InstructionInfoError> {
    match reason {
        ExitReason::Vmread | ExitReason::Vmwrite => {
            let rw = info.vmread_vmwrite()?;
            facts
                .text(
                    "field_register",
                    "register holding the field encoding",
                    rw.field_register.name(),
                )
                .text("value_operand", "value operand", operand_text(rw.value));
        }
        ExitReason::Vmclear | ExitReason::Vmptrld | ExitReason::Vmptrst | ExitReason::Vmxon => {
            facts.text(
                "operand",
                "memory operand",
                memory_text(info.vmx_pointer_operand()?),
            );
        }
        ExitReason::Invept | ExitReason::Invvpid | ExitReason::Invpcid => {
            let inv = info.invalidation()?;
            facts
                .text(
                    "descriptor",
                    "descriptor operand",
                    memory_text(inv.descriptor),
                )
                .text(
                    "type_register",
                    "register holding the type",
                    inv.type_register.name(),
                );
        }
        ExitReason::GdtrIdtrAccess => {
            let table = info.descriptor_table()?;
            facts
                .debug("instruction", "instruction", table.instruction)
                .debug("operand_size", "operand size", table.operand_size)
                .text("operand", "memory operand", memory_text(table.memory));
        }
        ExitReason::LdtrTrAccess => {
            let ldtr = info.ldtr_tr()?;
            facts
                .debug("instruction", "instruction", ldtr.instruction)
                .text("operand", "operand", operand_text(ldtr.operand));
        }
        ExitReason::Rdrand | ExitReason::Rdseed => {
            let random = info.random()?;
            facts
                .text(
                    "destination",
                    "destination register",
                    random.destination.name(),
                )
                .debug("operand_size", "operand size", random.operand_size);
        }
        ExitReason::IoInstruction => {
            let io = info.string_io(matches!(io_direction, Some(IoDirection::In)))?;
            facts
                .fact(
                    "address_size",
                    "address size",
                    format_args!("{} bits", io.address_size.bits()),
                    io.address_size.bits(),
                )
                .text("segment", "segment", io.segment.name());
        }
        _ => {
            facts.text(
                "meaning",
                "meaning",
                "the SDM defines no instruction information for this exit reason",
            );
        }
    }
    Ok(())
}

/// Explains a VM-instruction error number (SDM 31.4).
///
/// # Errors
///
/// [`ExplainError`] for a malformed number.
pub fn vm_error(number: &str) -> Result<Explanation, ExplainError> {
    let number = parse_bounded(number, 32)?;
    // Cannot truncate: parse_bounded checked 32 bits.
    let error = VmInstructionError::from_number(number as u32);
    let mut facts = Facts::new(format!("VM-instruction error {number}: {}", error.text()));
    facts
        .fact("number", "number", number, number)
        .text("text", "meaning", error.text())
        .flag(
            "defined",
            "defined by the SDM",
            !matches!(error, VmInstructionError::Unknown(_)),
        );
    Ok(facts.finish())
}
