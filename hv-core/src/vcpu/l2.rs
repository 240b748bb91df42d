//! L2 exits: reflection to L1, EPT violations through hv-mmu, exits left
//! to the embedder, and resuming L2 (SDM 26-28; hv-mmu's flush protocol).

use hv_arch_vmx::controls::{ControlWord, ExitControls};
use hv_arch_vmx::exit::{ExitReason, ExitReasonWord};
use hv_arch_vmx::interruption::{InterruptionInfo, InterruptionType};
use hv_arch_vmx::invalidation::InveptType;
use hv_arch_vmx::msr::IA32_PAT;
use hv_arch_vmx::vmcs::{VmcsField, VmcsImage};
use hv_mmu::addr::L2Gpa;
use hv_mmu::walk::{Access, AccessKind, WalkFault};
use hv_mmu::{FaultOutcome, Policy};

use super::{Handled, Step, Vcpu, VcpuError};
use crate::platform::{Level, Platform};
use crate::reflect::{Decision, L0Reason, L2Context, MsrAccess, deliver_exit_to_l1, l1_wants_exit};
use crate::state::{Exit, Gprs};
use crate::vmcs02::{GUEST_STATE_FIELDS, l2_exited};

/// `IA32_XSS` (SDM Vol. 4), which XSAVES/XRSTORS exits depend on.
const IA32_XSS: u32 = 0xda0;

/// EPT-violation qualification bits that come from the hardware exit when
/// hv reflects EPT12's verdict: 7 and 8 (guest-linear address), 12 and
/// above (NMI unblocking, shadow stack, ...). Bits 6:0 are EPT12's; bits
/// 11:9 (advanced information) are not advertised to L1 (SDM 28.2.1,
/// Table 28-7; `IA32_VMX_EPT_VPID_CAP` bit 22).
const HARDWARE_QUALIFICATION_BITS: u64 = 0x180 | !0xfff;

/// EPT-violation qualification bits 2:0 (read, write, fetch): the
/// hardware's, since a read-modify-write reports both 0 and 1 while EPT12's
/// walk names a single access (SDM 28.2.1, Table 28-7).
const ACCESS_BITS: u64 = 0b111;

/// Qualification bit 12: "NMI unblocking due to IRET" (SDM 28.2.3).
const NMI_UNBLOCKING_DUE_TO_IRET: u64 = 1 << 12;

/// Guest interruptibility bit 3: blocking by NMI (SDM 25.4.2, Table 25-3).
const BLOCKING_BY_NMI: u64 = 1 << 3;

/// The machine-check exception vector (#MC).
const MACHINE_CHECK_VECTOR: u8 = 18;

/// Qualification bit 7: the guest-linear address field is valid.
const LINEAR_ADDRESS_VALID: u64 = 1 << 7;
/// Qualification bit 9 (with bit 7): the linear address is a user-mode one.
const USER_MODE_LINEAR: u64 = 1 << 9;

impl<P: Platform> Vcpu<P> {
    /// Before L2 resumes after an exit L0 handled: the flush protocol
    /// (`switch_to`, INVEPT when it reports a flush, EPTP02 rewritten if
    /// the root moved).
    ///
    /// `flush-always` drops every root at each `switch_to`, so it is called
    /// only at nested entries (the 2018 behaviour it models) and when
    /// something other than a fill changed EPT02; a resume after a fill
    /// keeps the root and flushes if the fill asked for it.
    pub(super) fn resume_l2(&mut self) -> Result<(), VcpuError<P::Error>> {
        let Some(mut active) = self.active else {
            return Err(VcpuError::NoCurrentVmcs);
        };
        if let Some(eptp12) = active.eptp12 {
            if self.policy() == Policy::FlushAlways && !self.resume.full_switch {
                if core::mem::take(&mut self.resume.fill_flush) {
                    self.invept(InveptType::SingleContext, active.eptp02)?;
                }
            } else {
                let switch = self.mmu.switch_to(eptp12).map_err(VcpuError::Mmu)?;
                if switch.flush_before_entry {
                    self.invept(InveptType::SingleContext, switch.eptp02)?;
                }
                if switch.eptp02 != active.eptp02 {
                    self.write_vmcs02(VmcsField::EptPointer, switch.eptp02.raw())?;
                    active.eptp02 = switch.eptp02;
                }
            }
        }
        self.resume.fill_flush = false;
        self.resume.full_switch = false;
        self.resume.pending = false;
        self.active = Some(active);
        Ok(())
    }

    /// Handles an exit of L2.
    pub(super) fn handle_l2_exit(&mut self, exit: &Exit) -> Result<Step, VcpuError<P::Error>> {
        let reason = exit.reason.reason();
        // Host events are L0's (see the module documentation's limits).
        let nmi = reason == ExitReason::ExceptionOrNmi
            && exit.interruption_info.is_valid()
            && exit.interruption_info.interruption_type() == InterruptionType::Nmi;
        // A machine check in L2 is the host's, even when L1 intercepts #MC
        // (SDM 17 / Vol. 3B 16.10: MCA belongs to the owner of the
        // hardware; KVM nested_vmx_l0_wants_exit keeps #MC in L0).
        let machine_check = reason == ExitReason::ExceptionOrNmi
            && exit.interruption_info.is_valid()
            && exit.interruption_info.interruption_type() == InterruptionType::HardwareException
            && exit.interruption_info.vector() == MACHINE_CHECK_VECTOR;
        if reason == ExitReason::ExternalInterrupt || nmi || machine_check {
            return Ok(self.l0_exit(exit, L0Reason::L0Feature));
        }
        let context = self.l2_context(exit)?;
        let vmcs12 = self.nested.current_vmcs().ok_or(VcpuError::NoCurrentVmcs)?;
        let memory = self.platform.l1().memory;
        let decision = l1_wants_exit(vmcs12.image(), exit, &context, &*memory)
            .map_err(VcpuError::InvalidL2Exit)?;
        match decision {
            Decision::ReflectToL1 => self.reflect(exit),
            Decision::HandleInL0(reason) => Ok(self.l0_exit(exit, reason)),
            Decision::EptFault => self.ept_fault(exit),
        }
    }

    /// An exit the embedder handles for L2.
    fn l0_exit(&mut self, exit: &Exit, reason: L0Reason) -> Step {
        self.counters.handled_in_l0 += 1;
        Step::L2Exit {
            exit: *exit,
            reason,
        }
    }

    /// L2's registers, RSP included from `GUEST_RSP`.
    fn l2_gprs_with_rsp(&mut self) -> Result<Gprs, VcpuError<P::Error>> {
        let rsp = self.read_vmcs02(VmcsField::GuestRsp)?;
        let mut gprs = *self.platform.l2_gprs();
        gprs.set(4, rsp);
        Ok(gprs)
    }

    /// What [`l1_wants_exit`] needs about L2.
    fn l2_context(&mut self, exit: &Exit) -> Result<L2Context, VcpuError<P::Error>> {
        let gprs = self.l2_gprs_with_rsp()?;
        let ia32_xss = if matches!(
            exit.reason.reason(),
            ExitReason::Xsaves | ExitReason::Xrstors
        ) {
            // A platform without IA32_XSS has no XSAVES either: such an
            // exit cannot occur, so 0 (no supervisor state) is never used.
            self.platform.l1().msrs.read_msr(IA32_XSS).unwrap_or(0)
        } else {
            0
        };
        Ok(L2Context {
            gprs,
            cr0: self.read_vmcs02(VmcsField::GuestCr0)?,
            cr4: self.read_vmcs02(VmcsField::GuestCr4)?,
            efer: self.read_vmcs02(VmcsField::GuestEfer)?,
            cs_access_rights: self.read_vmcs02(VmcsField::GuestCsAccessRights)? as u32,
            ia32_xss,
        })
    }

    /// Delivers `exit` to L1 (SDM 28): L2's state from VMCS02 into VMCS12,
    /// L1's host state loaded. The level becomes L1.
    fn reflect(&mut self, exit: &Exit) -> Result<Step, VcpuError<P::Error>> {
        let mut guest = VmcsImage::new();
        for &field in GUEST_STATE_FIELDS {
            let value = self.read_vmcs02(field)?;
            guest.set(field, value);
            self.vmcs02.wrote(field, value);
        }
        let gprs = self.l2_gprs_with_rsp()?;
        let current = self
            .nested
            .current_vmcs_mut()
            .ok_or(VcpuError::NoCurrentVmcs)?;
        let l2 = l2_exited(&guest, current.image(), gprs);
        let parts = self.platform.l1();
        let delivered = deliver_exit_to_l1(
            current.image_mut(),
            exit,
            &l2,
            parts.cpu,
            parts.memory,
            parts.msrs,
        );
        let registers = match delivered {
            Ok(registers) => registers,
            Err(error) => return self.delivery_failed(error),
        };
        // SDM 28.5.1: without "load IA32_PAT" the exit leaves PAT alone, so
        // L1 continues with L2's PAT (VMCS02 loaded and saved it).
        let exit12 = ExitControls::from_raw(current.image().get(VmcsField::PrimaryVmExitControls));
        if !exit12.contains(ExitControls::LOAD_IA32_PAT) {
            parts
                .msrs
                .write_msr(IA32_PAT, guest.get(VmcsField::GuestPat))
                .map_err(VcpuError::L1Msr)?;
        }
        self.platform
            .set_l1_system_registers(&registers)
            .map_err(VcpuError::Platform)?;
        self.level = Level::L1;
        self.active = None;
        self.resume.pending = false;
        self.counters.reflected += 1;
        Ok(Step::Handled(Handled::Reflected(exit.reason.reason())))
    }

    /// An EPT violation with EPT on in VMCS12: hv-mmu walks EPT12 and fills
    /// EPT02, or says L1 (reflect) or the embedder (MMIO) must see it.
    fn ept_fault(&mut self, exit: &Exit) -> Result<Step, VcpuError<P::Error>> {
        if exit.reason.reason() != ExitReason::EptViolation {
            // EPT02 is built by hv-mmu, which never writes a misconfigured
            // entry: EPT12 misconfigurations arrive as violations.
            return Err(VcpuError::L0EptMisconfiguration {
                gpa: exit.guest_physical_address,
            });
        }
        let qualification = exit.qualification;
        // Bits 2:0 (Table 28-7); a fetch also reads, so it wins, then write.
        let kind = if qualification & 0b100 != 0 {
            AccessKind::Fetch
        } else if qualification & 0b010 != 0 {
            AccessKind::Write
        } else if qualification & 0b001 != 0 {
            AccessKind::Read
        } else {
            return Err(VcpuError::EptViolationWithoutAccess { qualification });
        };
        let user_mode = qualification & (LINEAR_ADDRESS_VALID | USER_MODE_LINEAR)
            == LINEAR_ADDRESS_VALID | USER_MODE_LINEAR;
        let access = Access { kind, user_mode };
        let parts = self.platform.l1();
        let outcome = match self.mmu.handle_ept_violation(
            parts.memory,
            parts.ept01,
            L2Gpa::new(exit.guest_physical_address),
            access,
        ) {
            Ok(outcome) => outcome,
            Err(error) => {
                // hv-mmu may have emptied the root (and marked it for a
                // flush) before failing: the next resume must go through
                // switch_to, whatever the policy.
                self.resume.full_switch = true;
                return Err(VcpuError::Mmu(error));
            }
        };
        match outcome {
            FaultOutcome::Filled {
                flush_before_resume,
                ..
            } => {
                self.resume.fill_flush |= flush_before_resume;
                self.requeue_interrupted_event(exit)?;
                self.counters.ept02_fills += 1;
                self.counters.handled_in_l0 += 1;
                Ok(Step::Handled(Handled::Ept02Filled))
            }
            FaultOutcome::Reflect(fault) => {
                self.counters.ept02_reflected += 1;
                let exit = ept_exit_for_l1(exit, fault, access);
                self.reflect(&exit)
            }
            FaultOutcome::Emulate { l1_gpa } => {
                self.counters.ept02_emulated += 1;
                self.counters.handled_in_l0 += 1;
                Ok(Step::L2Mmio {
                    exit: *exit,
                    l1_gpa,
                })
            }
        }
    }
}

impl<P: Platform> Vcpu<P> {
    /// After an EPT violation L0 resolved: the event whose delivery caused
    /// it (IDT-vectoring information valid) is injected again through
    /// VMCS02's VM-entry interruption fields (SDM 27.2.4, 28.2.4: the VMM
    /// re-injects it; KVM `vmx_complete_interrupts`); otherwise, when the
    /// exit unblocked NMIs by an IRET that did not complete, blocking by
    /// NMI is set again (SDM 28.2.3).
    fn requeue_interrupted_event(&mut self, exit: &Exit) -> Result<(), VcpuError<P::Error>> {
        let vectoring = exit.idt_vectoring_info;
        if vectoring.is_valid() {
            // Valid bit, error-code bit, type and vector; bit 12 and the
            // reserved bits are 0 in an injected event (SDM 27.2.1.3).
            let info =
                vectoring.raw() & (InterruptionInfo::VALID | InterruptionInfo::ERROR_CODE | 0x7ff);
            self.write_vmcs02(VmcsField::VmEntryInterruptionInfo, u64::from(info))?;
            if vectoring.has_error_code() {
                self.write_vmcs02(
                    VmcsField::VmEntryExceptionErrorCode,
                    u64::from(exit.idt_vectoring_error_code),
                )?;
            }
            // Software interrupts and exceptions: the exit's instruction
            // length is the one delivery needs (SDM 28.2.4-28.2.5).
            if vectoring.interruption_type().uses_instruction_length() {
                self.write_vmcs02(
                    VmcsField::VmEntryInstructionLength,
                    u64::from(exit.instruction_length),
                )?;
            }
        } else if exit.qualification & NMI_UNBLOCKING_DUE_TO_IRET != 0 {
            let state = self.read_vmcs02(VmcsField::GuestInterruptibilityState)?;
            self.write_vmcs02(
                VmcsField::GuestInterruptibilityState,
                state | BLOCKING_BY_NMI,
            )?;
        }
        Ok(())
    }
}

/// The exit L1 sees for EPT12's `fault` on `access`: an EPT violation with
/// EPT12's bits 6:0 and the hardware's other bits, or an EPT
/// misconfiguration (reason 49, qualification 0, SDM 28.2.1). A table
/// outside L1 memory is a violation, as KVM reports it.
fn ept_exit_for_l1(hardware: &Exit, fault: WalkFault, access: Access) -> Exit {
    match fault.violation_qualification(access) {
        Some(walk) => Exit {
            qualification: walk.raw()
                | (hardware.qualification & (HARDWARE_QUALIFICATION_BITS | ACCESS_BITS)),
            ..*hardware
        },
        None => Exit {
            reason: ExitReasonWord::new(ExitReason::EptMisconfiguration),
            qualification: 0,
            guest_linear_address: 0,
            ..*hardware
        },
    }
}
