//! VMLAUNCH and VMRESUME (SDM 31.3 VMLAUNCH/VMRESUME, Operation; the
//! checks of SDM 27.1-27.3 on VMCS12 with the advertised capabilities).
//!
//! Not done here: loading guest state and the VM-entry MSR-load area
//! (SDM 27.4), which belong to VMCS02 preparation and the caller.

use hv_arch_vmx::checks::{EntryCheckFailure, EntryContext, check_vm_entry};
use hv_arch_vmx::instruction_error::VmInstructionError;
use hv_arch_vmx::interruption::Interruptibility;

use super::vmcs12::LaunchState;
use super::{Emulation, NestedVmx};
use crate::state::{Exit, L1Cpu};

impl NestedVmx {
    /// VMLAUNCH (`launch`) or VMRESUME, after the common #UD/#GP checks.
    pub(super) fn vm_entry(
        &mut self,
        cpu: &mut L1Cpu,
        exit: &Exit,
        interruptibility: Interruptibility,
        launch: bool,
    ) -> Emulation {
        // "ELSIF current-VMCS pointer is not valid THEN VMfailInvalid".
        let Some(current) = self.current.as_ref() else {
            return self.fail_invalid(cpu, exit);
        };
        // "ELSIF events are being blocked by MOV SS THEN VMfailValid(VM entry
        // with events blocked by MOV SS)".
        if interruptibility.contains(Interruptibility::BLOCKING_BY_MOV_SS) {
            return self.fail(cpu, exit, VmInstructionError::EntryEventsBlockedByMovSs);
        }
        // "ELSIF (VMLAUNCH and launch state of current VMCS is not clear)" /
        // "ELSIF (VMRESUME and launch state of current VMCS is not launched)".
        match (launch, current.launch_state()) {
            (true, LaunchState::Launched) => {
                return self.fail(cpu, exit, VmInstructionError::VmlaunchNonClearVmcs);
            }
            (false, LaunchState::Clear) => {
                return self.fail(cpu, exit, VmInstructionError::VmresumeNonLaunchedVmcs);
            }
            _ => {}
        }
        // "Check settings of VMX controls and host-state area" (27.2), then
        // the guest-state area (27.3), against what hv advertises.
        let context = EntryContext {
            physical_address_width: self.config.physical_address_width,
            // Cannot truncate: 48 or 57.
            linear_address_width: self.config.linear_address_width.bits() as u8,
            current_vmcs_pointer: current.pointer().raw(),
            in_ia32e_mode: cpu.in_ia32e_mode(),
        };
        match check_vm_entry(current.image(), self.capabilities.capabilities(), &context) {
            Ok(()) => {}
            Err(EntryCheckFailure::Control(_)) => {
                return self.fail(cpu, exit, VmInstructionError::EntryInvalidControlFields);
            }
            Err(EntryCheckFailure::Host(_)) => {
                return self.fail(cpu, exit, VmInstructionError::EntryInvalidHostStateFields);
            }
            // SDM 27.8: a guest-state failure is a VM exit, not a VMfail; the
            // launch state does not change.
            Err(EntryCheckFailure::Guest(check)) => {
                return Emulation::EntryFailure {
                    qualification: check.exit_qualification(),
                    check,
                };
            }
        }
        // "IF VMLAUNCH THEN launch state of VMCS being launched := launched".
        if launch && let Some(current) = self.current.as_mut() {
            current.set_launch_state(LaunchState::Launched);
        }
        Emulation::VmEntry { launch }
    }
}
