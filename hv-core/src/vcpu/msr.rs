//! RDMSR and WRMSR of the MSRs that describe L1's virtual VMX: the
//! capability MSRs (`IA32_VMX_BASIC` .. `IA32_VMX_EXIT_CTLS2`, SDM
//! Appendix A) and `IA32_FEATURE_CONTROL` (SDM 24.7).

use hv_arch_vmx::exit::ExitReason;
use hv_arch_vmx::msr::{IA32_FEATURE_CONTROL, IA32_VMX_BASIC, IA32_VMX_EXIT_CTLS2};

use super::{Handled, Step, Vcpu, VcpuError, advance_rip};
use crate::platform::Platform;
use crate::state::Exit;
use crate::vmx::Fault;

/// Whether hv-core answers accesses to MSR `index` itself.
const fn is_vmx_msr(index: u32) -> bool {
    index == IA32_FEATURE_CONTROL || (index >= IA32_VMX_BASIC && index <= IA32_VMX_EXIT_CTLS2)
}

impl<P: Platform> Vcpu<P> {
    /// RDMSR/WRMSR of a VMX MSR by L1: RDMSR returns the advertised value
    /// in EDX:EAX (upper halves of RAX and RDX cleared) and advances RIP; a
    /// capability MSR that does not exist for L1 raises #GP (SDM Appendix
    /// A). WRMSR raises #GP: the capability MSRs are read-only, and
    /// `IA32_FEATURE_CONTROL` is presented locked (SDM Vol. 4, "WRMSR while
    /// the lock bit is set: #GP"; an unlocked configuration is treated the
    /// same, since hv does not let L1 change it). `None` for other exits.
    pub(super) fn handle_vmx_msr(
        &mut self,
        exit: &Exit,
    ) -> Result<Option<Step>, VcpuError<P::Error>> {
        let reason = exit.reason.reason();
        if !matches!(reason, ExitReason::Rdmsr | ExitReason::Wrmsr) {
            return Ok(None);
        }
        let parts = self.platform.l1();
        // ECX holds the MSR index (bits 63:32 of RCX are ignored).
        let index = parts.cpu.gprs.get(1) as u32;
        if !is_vmx_msr(index) {
            return Ok(None);
        }
        let value = if reason == ExitReason::Wrmsr {
            None
        } else if index == IA32_FEATURE_CONTROL {
            Some(self.nested.config().feature_control.bits())
        } else {
            self.nested.capabilities().msr(index)
        };
        let Some(value) = value else {
            return self.inject(Fault::GeneralProtection).map(Some);
        };
        parts.cpu.gprs.set(0, value & 0xffff_ffff);
        parts.cpu.gprs.set(2, value >> 32);
        advance_rip(parts.cpu, exit.instruction_length);
        Ok(Some(Step::Handled(Handled::MsrRead { index, value })))
    }
}
