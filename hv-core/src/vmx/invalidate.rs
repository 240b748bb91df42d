//! INVEPT and INVVPID (SDM 31.3 INVEPT/INVVPID, Operation): the type and
//! descriptor are validated against the advertised capabilities; the
//! invalidation itself is the caller's (hv-mmu and the VPID02 map).

use hv_arch_vmx::ept::Eptp;
use hv_arch_vmx::exit::{VmxInstructionInfo, VmxInstructionQualification};
use hv_arch_vmx::instruction_error::VmInstructionError;
use hv_arch_vmx::invalidation::{InveptType, InvvpidDescriptor, InvvpidType};

use super::{Emulation, NestedVmx, VmxStatus, operand};
use crate::state::{Exit, L1Access, L1Cpu};

/// The INVEPT/INVVPID descriptor size: 128 bits.
const DESCRIPTOR_SIZE: usize = 16;

impl NestedVmx {
    /// The type register value of INVEPT/INVVPID (Reg2, Table 28-9), read
    /// before the descriptor so that an unsupported type fails before
    /// memory is touched, as in the SDM's Operation sections.
    fn invalidation_type(cpu: &L1Cpu, exit: &Exit) -> Result<u64, Emulation> {
        let info = VmxInstructionInfo::from_raw(exit.instruction_info).invalidation()?;
        Ok(Self::register_operand(cpu, info.type_register))
    }

    /// Reads the descriptor operand.
    fn read_descriptor(
        &self,
        cpu: &L1Cpu,
        memory: &impl L1Access,
        exit: &Exit,
    ) -> Result<[u8; DESCRIPTOR_SIZE], Emulation> {
        let info = VmxInstructionInfo::from_raw(exit.instruction_info).invalidation()?;
        let mut bytes = [0; DESCRIPTOR_SIZE];
        operand::read_operand(
            cpu,
            memory,
            &info.descriptor,
            VmxInstructionQualification::from_raw(exit.qualification),
            self.config.linear_address_width,
            &mut bytes,
        )?;
        Ok(bytes)
    }

    /// INVEPT (SDM 31.3 INVEPT, Operation).
    pub(super) fn invept(
        &mut self,
        cpu: &mut L1Cpu,
        memory: &mut impl L1Access,
        exit: &Exit,
    ) -> Result<Emulation, Emulation> {
        let caps = *self.capabilities.capabilities();
        // "IF IA32_VMX_EPT_VPID_CAP MSR indicates that processor does not
        // support INVEPT_TYPE THEN VMfail(Invalid operand to INVEPT/INVVPID)".
        let raw_type = Self::invalidation_type(cpu, exit)?;
        let Some(kind) =
            InveptType::from_raw(raw_type).filter(|kind| kind.is_supported(&caps.ept_vpid))
        else {
            return Ok(self.fail(cpu, exit, VmInstructionError::InvalidInveptInvvpidOperand));
        };
        let descriptor = self.read_descriptor(cpu, memory, exit)?;
        let mut eptp = [0; 8];
        eptp.copy_from_slice(&descriptor[..8]);
        let eptp = Eptp::from_raw(u64::from_le_bytes(eptp));
        // Single-context: "IF VM entry with the enable EPT control set to 1
        // would fail due to the EPTP value THEN VMfail(Invalid operand)".
        if kind == InveptType::SingleContext
            && eptp
                .validate(&caps, self.config.physical_address_width)
                .is_err()
        {
            return Ok(self.fail(cpu, exit, VmInstructionError::InvalidInveptInvvpidOperand));
        }
        let _ = self.complete(cpu, exit, VmxStatus::Succeed);
        Ok(Emulation::Invept { kind, eptp })
    }

    /// INVVPID (SDM 31.3 INVVPID, Operation).
    pub(super) fn invvpid(
        &mut self,
        cpu: &mut L1Cpu,
        memory: &mut impl L1Access,
        exit: &Exit,
    ) -> Result<Emulation, Emulation> {
        let ept_vpid = self.capabilities.capabilities().ept_vpid;
        let raw_type = Self::invalidation_type(cpu, exit)?;
        let Some(kind) =
            InvvpidType::from_raw(raw_type).filter(|kind| kind.is_supported(&ept_vpid))
        else {
            return Ok(self.fail(cpu, exit, VmInstructionError::InvalidInveptInvvpidOperand));
        };
        let bytes = self.read_descriptor(cpu, memory, exit)?;
        let descriptor = decode_invvpid_descriptor(bytes);
        // "IF INVVPID_DESC[63:16] != 0", "IF VPID = 0" (types 0, 1, 3),
        // "IF GL_ADDR is not in a canonical form" (type 0): VMfail(28).
        if descriptor
            .validate(kind, self.config.linear_address_width)
            .is_err()
        {
            return Ok(self.fail(cpu, exit, VmInstructionError::InvalidInveptInvvpidOperand));
        }
        let _ = self.complete(cpu, exit, VmxStatus::Succeed);
        Ok(Emulation::Invvpid {
            kind,
            vpid: descriptor.vpid,
            linear_address: descriptor.linear_address,
        })
    }
}

/// The INVVPID descriptor from its 16 little-endian bytes (SDM 31.3
/// Figure 31-2: VPID in bits 15:0, reserved 63:16, linear address 127:64).
fn decode_invvpid_descriptor(bytes: [u8; DESCRIPTOR_SIZE]) -> InvvpidDescriptor {
    let word = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let mut linear = [0; 8];
    linear.copy_from_slice(&bytes[8..]);
    InvvpidDescriptor {
        vpid: word(0),
        reserved: [word(2), word(4), word(6)],
        linear_address: u64::from_le_bytes(linear),
    }
}
