//! VMREAD and VMWRITE (SDM 31.3) on the current VMCS12.
//!
//! The field operand is a register: all 64 bits in 64-bit mode, bits 31:0
//! outside it, decoded by [`FieldAccess::decode`]. The value operand is a
//! register or memory (instruction information bit 10) of the operand size:
//! 64 bits in 64-bit mode, 32 bits outside. A field narrower than the
//! operand size is zero-extended on VMREAD and takes the low bits on
//! VMWRITE; a wider field is truncated on VMREAD and has its high bits
//! cleared on VMWRITE (SDM 31.3 VMREAD/VMWRITE Description).

use hv_arch_vmx::exit::{Operand, VmxInstructionInfo, VmxInstructionQualification};
use hv_arch_vmx::instruction_error::VmInstructionError;
use hv_arch_vmx::vmcs::FieldAccess;

use super::{Emulation, NestedVmx, operand};
use crate::state::{Exit, L1Access, L1Cpu};

impl NestedVmx {
    /// The operand size of VMREAD/VMWRITE in bytes.
    fn value_size(cpu: &L1Cpu) -> usize {
        if cpu.in_64bit_mode() { 8 } else { 4 }
    }

    /// VMREAD (SDM 31.3 VMREAD, Operation).
    pub(super) fn vmread(
        &mut self,
        cpu: &mut L1Cpu,
        memory: &mut impl L1Access,
        exit: &Exit,
    ) -> Result<Emulation, Emulation> {
        let info = VmxInstructionInfo::from_raw(exit.instruction_info).vmread_vmwrite()?;
        // "ELSIF current-VMCS pointer is not valid THEN VMfailInvalid".
        let Some(current) = self.current.as_ref() else {
            return Ok(self.fail_invalid(cpu, exit));
        };
        // "ELSIF source operand does not correspond to any VMCS field THEN
        // VMfailValid(VMREAD/VMWRITE from/to unsupported VMCS component)".
        let encoding = Self::register_operand(cpu, info.field_register);
        let Ok(access) = FieldAccess::decode(encoding) else {
            return Ok(self.fail(cpu, exit, VmInstructionError::UnsupportedVmcsComponent));
        };
        let value = current.image().read(access);
        let size = Self::value_size(cpu);
        match info.value {
            Operand::Register(register) => {
                // Outside 64-bit mode the 32-bit destination is written
                // zero-extended (bits 63:32 are not visible there).
                let value = if size == 8 {
                    value
                } else {
                    value & 0xffff_ffff
                };
                cpu.gprs.set(register.index(), value);
            }
            Operand::Memory(destination) => {
                let bytes = value.to_le_bytes();
                operand::write_operand(
                    cpu,
                    memory,
                    &destination,
                    VmxInstructionQualification::from_raw(exit.qualification),
                    self.config.linear_address_width,
                    &bytes[..size],
                )?;
            }
        }
        Ok(self.succeed(cpu, exit))
    }

    /// VMWRITE (SDM 31.3 VMWRITE, Operation).
    pub(super) fn vmwrite(
        &mut self,
        cpu: &mut L1Cpu,
        memory: &mut impl L1Access,
        exit: &Exit,
    ) -> Result<Emulation, Emulation> {
        let info = VmxInstructionInfo::from_raw(exit.instruction_info).vmread_vmwrite()?;
        if self.current.is_none() {
            return Ok(self.fail_invalid(cpu, exit));
        }
        let encoding = Self::register_operand(cpu, info.field_register);
        let Ok(access) = FieldAccess::decode(encoding) else {
            return Ok(self.fail(cpu, exit, VmInstructionError::UnsupportedVmcsComponent));
        };
        // "ELSIF VMCS field ... is a VM-exit information field AND processor
        // does not support writing to such fields" (IA32_VMX_MISC bit 29 as
        // advertised).
        if access.field.is_read_only() && !self.capabilities.capabilities().misc.vmwrite_any_field()
        {
            return Ok(self.fail(cpu, exit, VmInstructionError::VmwriteReadOnlyComponent));
        }
        let size = Self::value_size(cpu);
        let value = match info.value {
            Operand::Register(register) => Self::register_operand(cpu, register),
            Operand::Memory(source) => {
                let mut bytes = [0; 8];
                operand::read_operand(
                    cpu,
                    memory,
                    &source,
                    VmxInstructionQualification::from_raw(exit.qualification),
                    self.config.linear_address_width,
                    &mut bytes[..size],
                )?;
                u64::from_le_bytes(bytes)
            }
        };
        if let Some(current) = self.current.as_mut() {
            current.image_mut().write(access, value);
        }
        Ok(self.succeed(cpu, exit))
    }
}
