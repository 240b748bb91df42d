//! VMXON, VMXOFF, VMCLEAR, VMPTRLD and VMPTRST (SDM 31.3): the
//! instructions that manage VMX operation and the current-VMCS pointer.
//!
//! The common checks (#UD, CPL) have been made by `NestedVmx::check_mode`.

use hv_arch_vmx::exit::{VmxInstructionInfo, VmxInstructionQualification};
use hv_arch_vmx::instruction_error::VmInstructionError;
use hv_mmu::addr::L1Gpa;

use super::operand;
use super::vmcs12::{CurrentVmcs, LaunchState, RegionHeader};
use super::{Emulation, Fault, NO_CURRENT_VMCS, NestedVmx, VmxOperation};
use crate::state::{Exit, L1Access, L1Cpu};

/// The 64-bit in-memory pointer operand every instruction here uses.
const POINTER_SIZE: usize = 8;

impl NestedVmx {
    /// Reads the 64-bit memory operand of VMXON, VMCLEAR or VMPTRLD.
    fn read_pointer_operand(
        &self,
        cpu: &L1Cpu,
        memory: &impl L1Access,
        exit: &Exit,
    ) -> Result<u64, Emulation> {
        let info = VmxInstructionInfo::from_raw(exit.instruction_info);
        let operand = info.vmx_pointer_operand()?;
        let mut bytes = [0; POINTER_SIZE];
        operand::read_operand(
            cpu,
            memory,
            &operand,
            VmxInstructionQualification::from_raw(exit.qualification),
            self.config.linear_address_width,
            &mut bytes,
        )?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// VMXON (SDM 31.3 VMXON, Operation).
    pub(super) fn vmxon(
        &mut self,
        cpu: &mut L1Cpu,
        memory: &mut impl L1Access,
        exit: &Exit,
    ) -> Result<Emulation, Emulation> {
        if let VmxOperation::Root { .. } = self.operation {
            // "ELSIF CPL > 0 THEN #GP(0); ELSE VMfail(VMXON executed in VMX
            // root operation)" (CPL already checked).
            return Ok(self.fail(cpu, exit, VmInstructionError::VmxonInVmxRoot));
        }
        // Outside VMX operation: #GP(0) if CR0/CR4 are not supported in VMX
        // operation (SDM 24.8, the advertised FIXED MSRs) or
        // IA32_FEATURE_CONTROL is not locked with VMX enabled outside SMX.
        let caps = self.capabilities.capabilities();
        if caps.cr0_fixed.first_violation(cpu.cr0).is_some()
            || caps.cr4_fixed.first_violation(cpu.cr4).is_some()
            || !self.config.feature_control.allows_vmxon_outside_smx()
        {
            return Err(Fault::GeneralProtection.into());
        }
        let address = self.read_pointer_operand(cpu, memory, exit)?;
        // "IF addr is not 4KB-aligned or addr sets any bits beyond the
        // physical-address width THEN VMfailInvalid".
        if !self.config.is_valid_region_address(address) {
            return Ok(self.fail_invalid(cpu, exit));
        }
        // "IF rev[30:0] != VMCS revision identifier OR rev[31] = 1 THEN
        // VMfailInvalid". hv: a region outside L1 memory has no revision
        // identifier and fails the same way.
        let vmxon_pointer = L1Gpa::new(address);
        match RegionHeader::read(memory, vmxon_pointer) {
            Ok(header)
                if header.revision_id == self.capabilities.revision_id() && !header.shadow => {}
            Ok(_) | Err(_) => return Ok(self.fail_invalid(cpu, exit)),
        }
        // "current-VMCS pointer := FFFFFFFF_FFFFFFFFH; enter VMX operation".
        self.current = None;
        self.operation = VmxOperation::Root { vmxon_pointer };
        Ok(self.succeed(cpu, exit))
    }

    /// VMXOFF (SDM 31.3 VMXOFF, Operation). The dual-monitor treatment of
    /// SMIs is never active for L1, so VMfailValid(23) cannot occur. hv
    /// writes the current VMCS12 back to L1 memory first (see the module
    /// documentation).
    pub(super) fn vmxoff(
        &mut self,
        cpu: &mut L1Cpu,
        memory: &mut impl L1Access,
        exit: &Exit,
    ) -> Emulation {
        if let Some(current) = self.current.take() {
            write_back(&current, memory);
        }
        self.operation = VmxOperation::Outside;
        self.succeed(cpu, exit)
    }

    /// VMCLEAR (SDM 31.3 VMCLEAR, Operation).
    pub(super) fn vmclear(
        &mut self,
        cpu: &mut L1Cpu,
        memory: &mut impl L1Access,
        exit: &Exit,
    ) -> Result<Emulation, Emulation> {
        let address = self.read_pointer_operand(cpu, memory, exit)?;
        if !self.config.is_valid_region_address(address) {
            return Ok(self.fail(cpu, exit, VmInstructionError::VmclearInvalidAddress));
        }
        let pointer = L1Gpa::new(address);
        if self.vmxon_pointer() == Some(pointer) {
            return Ok(self.fail(cpu, exit, VmInstructionError::VmclearVmxonPointer));
        }
        // "ensure that data for VMCS referenced by the operand is in memory;
        // launch state := clear; IF addr = current-VMCS pointer THEN
        // current-VMCS pointer := FFFFFFFF_FFFFFFFFH".
        let stored = match self.current.as_mut() {
            Some(current) if current.pointer() == pointer => {
                current.set_launch_state(LaunchState::Clear);
                current.store(memory)
            }
            _ => LaunchState::Clear.write(memory, pointer),
        };
        if stored.is_err() {
            // hv: a VMCS region outside L1 memory is an invalid address.
            return Ok(self.fail(cpu, exit, VmInstructionError::VmclearInvalidAddress));
        }
        if self
            .current
            .as_ref()
            .is_some_and(|current| current.pointer() == pointer)
        {
            self.current = None;
        }
        Ok(self.succeed(cpu, exit))
    }

    /// VMPTRLD (SDM 31.3 VMPTRLD, Operation). Loading a VMCS other than the
    /// current one writes the current one back to L1 memory and reads the
    /// new one from L1 memory; loading the current one keeps the cache.
    pub(super) fn vmptrld(
        &mut self,
        cpu: &mut L1Cpu,
        memory: &mut impl L1Access,
        exit: &Exit,
    ) -> Result<Emulation, Emulation> {
        let address = self.read_pointer_operand(cpu, memory, exit)?;
        if !self.config.is_valid_region_address(address) {
            return Ok(self.fail(cpu, exit, VmInstructionError::VmptrldInvalidAddress));
        }
        let pointer = L1Gpa::new(address);
        if self.vmxon_pointer() == Some(pointer) {
            return Ok(self.fail(cpu, exit, VmInstructionError::VmptrldVmxonPointer));
        }
        // hv: a region outside L1 memory is an invalid address (error 9).
        let Ok(header) = RegionHeader::read(memory, pointer) else {
            return Ok(self.fail(cpu, exit, VmInstructionError::VmptrldInvalidAddress));
        };
        // "IF rev[30:0] != VMCS revision identifier OR rev[31] = 1 AND the
        // processor does not support the 1-setting of VMCS shadowing".
        let shadow_refused =
            header.shadow && !self.capabilities.capabilities().supports_vmcs_shadowing();
        if header.revision_id != self.capabilities.revision_id() || shadow_refused {
            return Ok(self.fail(cpu, exit, VmInstructionError::VmptrldIncorrectRevision));
        }
        if self.current_vmcs_pointer() == address {
            return Ok(self.succeed(cpu, exit));
        }
        let Ok(loaded) = CurrentVmcs::load(memory, pointer) else {
            return Ok(self.fail(cpu, exit, VmInstructionError::VmptrldInvalidAddress));
        };
        if let Some(previous) = self.current.replace(loaded) {
            write_back(&previous, memory);
        }
        Ok(self.succeed(cpu, exit))
    }

    /// VMPTRST (SDM 31.3 VMPTRST, Operation): stores the current-VMCS
    /// pointer (all ones without a current VMCS) to the 64-bit memory
    /// operand.
    pub(super) fn vmptrst(
        &mut self,
        cpu: &mut L1Cpu,
        memory: &mut impl L1Access,
        exit: &Exit,
    ) -> Result<Emulation, Emulation> {
        let info = VmxInstructionInfo::from_raw(exit.instruction_info);
        let operand = info.vmx_pointer_operand()?;
        let pointer = self
            .current
            .as_ref()
            .map_or(NO_CURRENT_VMCS, |current| current.pointer().raw());
        operand::write_operand(
            cpu,
            memory,
            &operand,
            VmxInstructionQualification::from_raw(exit.qualification),
            self.config.linear_address_width,
            &pointer.to_le_bytes(),
        )?;
        Ok(self.succeed(cpu, exit))
    }
}

/// Writes a VMCS12 that stops being current back to L1 memory. The region
/// was L1 memory when it was loaded; if it no longer is (L1's memory map
/// changed), there is nowhere to write and the data is dropped, as on a
/// processor whose VMCS region vanished.
fn write_back(vmcs: &CurrentVmcs, memory: &mut impl L1Access) {
    if let Err(error) = vmcs.store(memory) {
        tracing::warn!(%error, "VMCS12 write-back failed; its cached state is lost");
    }
}
