//! The exits the model's processor reports: for each action, the VM-exit
//! information fields a processor would write (SDM 28.2), in hv-core's
//! neutral [`Exit`].
//!
//! VMX instructions use the encodings an assembler would pick: memory
//! operands are `[rbx]` with 64-bit addressing in DS, register operands RAX
//! (field encoding or type) and RCX (value). Lengths are those of the
//! shortest encodings (SDM Vol. 2: VMXON `F3 0F C7 /6` 4 bytes, VMCLEAR
//! `66 0F C7 /6` 4, VMPTRLD/VMPTRST `0F C7 /6,/7` 3, VMREAD/VMWRITE
//! `0F 78/79 /r` 3, VMLAUNCH/VMRESUME/VMXOFF/VMCALL `0F 01 Cx` 3,
//! INVEPT/INVVPID `66 0F 38 80/81 /r` 5, CPUID 2, HLT 1, IN/OUT with DX 1).

use hv_arch_vmx::ept::EptPermissions;
use hv_arch_vmx::exit::{
    AddressSize, EptGpaPermissions, EptLinearAccessKind, EptViolationAccess,
    EptViolationQualification, ExitReason, ExitReasonWord, Gpr, IoAccessSize, IoDirection,
    IoQualification, MemoryOperand, SegmentRegister, VmxInstructionInfo,
};
use hv_mmu::addr::L1Gpa;
use hv_mmu::walk::{Access, AccessKind};

use super::memory::ModelMemory;
use super::script::VmxOp;
use crate::state::{Exit, L1Access, L1Cpu};

/// Where memory operands of L1's VMX instructions live: a scratch page of
/// L1 memory (L1 runs with identity translation).
pub const SCRATCH_OPERAND: u64 = 0x1000;

/// The memory operand `[rbx]`, 64-bit addressing, DS.
fn rbx_operand() -> VmxInstructionInfo {
    VmxInstructionInfo::from_memory_operand(MemoryOperand {
        address_size: AddressSize::Bits64,
        segment: SegmentRegister::Ds,
        base: Some(Gpr::Rbx),
        index: None,
    })
}

/// An exit with `reason`, `info` and `length`, qualification 0 (no
/// displacement).
fn instruction_exit(reason: ExitReason, info: VmxInstructionInfo, length: u32) -> Exit {
    Exit {
        instruction_length: length,
        instruction_info: info.raw(),
        ..Exit::new(reason)
    }
}

/// Puts `bytes` at the scratch operand and points RBX at it. The scratch
/// page is L1 memory in every model configuration; a model too small for
/// it simply leaves the operand unreadable (hv-core then reports it).
fn memory_operand(cpu: &mut L1Cpu, memory: &mut ModelMemory, bytes: &[u8]) {
    let _ = memory.write_bytes(L1Gpa::new(SCRATCH_OPERAND), bytes);
    cpu.gprs.set(Gpr::Rbx.index(), SCRATCH_OPERAND);
}

/// Sets up L1's registers and memory for `op` and returns the exit a
/// processor reports for it.
pub fn vmx_exit(op: VmxOp, cpu: &mut L1Cpu, memory: &mut ModelMemory) -> Exit {
    let none = VmxInstructionInfo::from_raw(0);
    match op {
        VmxOp::Vmxon { region } => {
            memory_operand(cpu, memory, &region.to_le_bytes());
            instruction_exit(ExitReason::Vmxon, rbx_operand(), 4)
        }
        VmxOp::Vmxoff => instruction_exit(ExitReason::Vmxoff, none, 3),
        VmxOp::Vmclear { pointer } => {
            memory_operand(cpu, memory, &pointer.to_le_bytes());
            instruction_exit(ExitReason::Vmclear, rbx_operand(), 4)
        }
        VmxOp::Vmptrld { pointer } => {
            memory_operand(cpu, memory, &pointer.to_le_bytes());
            instruction_exit(ExitReason::Vmptrld, rbx_operand(), 3)
        }
        VmxOp::Vmptrst => {
            cpu.gprs.set(Gpr::Rbx.index(), SCRATCH_OPERAND);
            instruction_exit(ExitReason::Vmptrst, rbx_operand(), 3)
        }
        VmxOp::Vmread { encoding } => {
            cpu.gprs.set(Gpr::Rax.index(), encoding);
            let info = VmxInstructionInfo::from_register_operand(Gpr::Rcx).with_reg2(Gpr::Rax);
            instruction_exit(ExitReason::Vmread, info, 3)
        }
        VmxOp::Vmwrite { encoding, value } => {
            cpu.gprs.set(Gpr::Rax.index(), encoding);
            cpu.gprs.set(Gpr::Rcx.index(), value);
            let info = VmxInstructionInfo::from_register_operand(Gpr::Rcx).with_reg2(Gpr::Rax);
            instruction_exit(ExitReason::Vmwrite, info, 3)
        }
        VmxOp::Vmlaunch => instruction_exit(ExitReason::Vmlaunch, none, 3),
        VmxOp::Vmresume => instruction_exit(ExitReason::Vmresume, none, 3),
        VmxOp::Invept { kind, eptp } => {
            let mut descriptor = [0u8; 16];
            descriptor[..8].copy_from_slice(&eptp.to_le_bytes());
            memory_operand(cpu, memory, &descriptor);
            cpu.gprs.set(Gpr::Rax.index(), kind);
            instruction_exit(ExitReason::Invept, rbx_operand().with_reg2(Gpr::Rax), 5)
        }
        VmxOp::Invvpid {
            kind,
            vpid_word,
            linear,
        } => {
            let mut descriptor = [0u8; 16];
            descriptor[..8].copy_from_slice(&vpid_word.to_le_bytes());
            descriptor[8..].copy_from_slice(&linear.to_le_bytes());
            memory_operand(cpu, memory, &descriptor);
            cpu.gprs.set(Gpr::Rax.index(), kind);
            instruction_exit(ExitReason::Invvpid, rbx_operand().with_reg2(Gpr::Rax), 5)
        }
        VmxOp::Vmcall => instruction_exit(ExitReason::Vmcall, none, 3),
        VmxOp::Raw {
            reason,
            instruction_info,
            qualification,
            length,
            registers,
        } => {
            cpu.gprs.set(Gpr::Rax.index(), registers[0]);
            cpu.gprs.set(Gpr::Rcx.index(), registers[1]);
            cpu.gprs.set(Gpr::Rbx.index(), registers[2]);
            Exit {
                reason: ExitReasonWord::new(ExitReason::from_basic(reason)),
                qualification,
                instruction_length: length,
                instruction_info,
                ..Exit::new(ExitReason::from_basic(reason))
            }
        }
    }
}

/// The length of `op`'s encoding (what the exit reports).
pub fn vmx_length(op: VmxOp) -> u32 {
    match op {
        VmxOp::Vmxon { .. } | VmxOp::Vmclear { .. } => 4,
        VmxOp::Invept { .. } | VmxOp::Invvpid { .. } => 5,
        VmxOp::Raw { length, .. } => length,
        _ => 3,
    }
}

/// CPUID (reason 10, `0F A2`).
pub fn cpuid_exit() -> Exit {
    instruction_exit(ExitReason::Cpuid, VmxInstructionInfo::from_raw(0), 2)
}

/// HLT (reason 12, `F4`).
pub fn hlt_exit() -> Exit {
    instruction_exit(ExitReason::Hlt, VmxInstructionInfo::from_raw(0), 1)
}

/// IN/OUT with the port in DX (reason 30, one byte: `EC`/`ED`/`EE`/`EF`;
/// 66H prefix for words). Qualification per SDM Table 28-5.
pub fn io_exit(port: u16, size: u8, input: bool) -> Exit {
    let (size, length) = match size {
        2 => (IoAccessSize::Word, 2),
        4 => (IoAccessSize::Dword, 1),
        _ => (IoAccessSize::Byte, 1),
    };
    let direction = if input {
        IoDirection::In
    } else {
        IoDirection::Out
    };
    Exit {
        qualification: IoQualification::new(port, size, direction).raw(),
        instruction_length: length,
        ..Exit::new(ExitReason::IoInstruction)
    }
}

/// The rights an EPT walk granted, as qualification bits 6:3.
fn gpa_permissions(permissions: EptPermissions) -> EptGpaPermissions {
    let mut bits = EptGpaPermissions::empty();
    if permissions.contains(EptPermissions::READ) {
        bits |= EptGpaPermissions::READABLE;
    }
    if permissions.contains(EptPermissions::WRITE) {
        bits |= EptGpaPermissions::WRITABLE;
    }
    if permissions.contains(EptPermissions::EXECUTE) {
        bits |= EptGpaPermissions::EXECUTABLE;
    }
    bits
}

/// An EPT violation (reason 48) for `access` at L2 physical `gpa` from
/// linear `linear` (SDM 28.2.1, Table 28-7): bits 2:0 the access, 6:3 what
/// the EPT02 walk allowed (`None`: an entry was not present), bit 7 the
/// linear address is valid, bit 8 the access was to the translated address
/// (not to a paging structure).
pub fn ept_violation_exit(
    access: Access,
    walk_permissions: Option<EptPermissions>,
    gpa: u64,
    linear: u64,
) -> Exit {
    let kind = match access.kind {
        AccessKind::Read => EptViolationAccess::DATA_READ,
        AccessKind::Write => EptViolationAccess::DATA_WRITE,
        AccessKind::Fetch => EptViolationAccess::INSTRUCTION_FETCH,
    };
    let rights = walk_permissions.map_or(EptGpaPermissions::empty(), gpa_permissions);
    let qualification = EptViolationQualification::new(kind, rights)
        .with_guest_linear_address(EptLinearAccessKind::Translation);
    Exit {
        qualification: qualification.raw(),
        guest_physical_address: gpa,
        guest_linear_address: linear,
        ..Exit::new(ExitReason::EptViolation)
    }
}
