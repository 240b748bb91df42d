//! Nested VM entry (VMLAUNCH/VMRESUME that passed the checks on VMCS12):
//! choose EPTP02 and VPID02, build VMCS02, write it, enter L2. Also the
//! two ways an entry ends in L1 instead: VMfailValid(7) when no VMCS02 can
//! be built, and the VM-entry-failure exit (SDM 27.8).

use hv_arch_vmx::checks::{GuestCheck, check_vm_entry};
use hv_arch_vmx::controls::{
    ControlWord, EntryControls, PrimaryProcControls, SecondaryProcControls,
};
use hv_arch_vmx::ept::Eptp;
use hv_arch_vmx::instruction_error::VmInstructionError;
use hv_arch_vmx::invalidation::{InveptType, InvvpidType};
use hv_arch_vmx::msr::{IA32_DEBUGCTL, IA32_PAT};
use hv_arch_vmx::registers::{Cr0, Cr4};
use hv_arch_vmx::vmcs::{VmcsField, VmcsImage};
use hv_mmu::addr::L1Gpa;

use super::{ActiveL2, Handled, Step, Vcpu, VcpuError, Vpid02Flush, advance_rip};
use crate::platform::{Level, Platform};
use crate::reflect::{DeliveryError, EntryFailure, MsrAccess, deliver_entry_failure};
use crate::state::{Exit, L1Access};
use crate::vmcs02::{L1Inherited, PrepareError, Translation02, prepare_vmcs02};
use crate::vmx::{LaunchState, VmxStatus};

/// DR7 after reset (SDM Vol. 3A 18.2.4): what L2 inherits as L1's DR7,
/// which [`crate::state::L1Cpu`] does not hold.
const L1_DR7: u64 = 0x400;

/// PDPTE bits that must be 0 in a present PDPTE: 2:1 and 8:5 (SDM Vol. 3A
/// 4.4.1); bits at and above MAXPHYADDR are checked separately.
const PDPTE_RESERVED_LOW: u64 = 0x1e6;

/// What VMCS12 asks for, read once per entry.
struct Vmcs12Translation {
    /// EPTP12 when "enable EPT" is on.
    eptp12: Option<Eptp>,
    /// vpid12 when "enable VPID" is on.
    vpid12: Option<u16>,
}

impl Vmcs12Translation {
    /// Secondary controls count only when activated (SDM 25.6.2).
    fn read(vmcs12: &VmcsImage) -> Self {
        let primary =
            PrimaryProcControls::from_raw(vmcs12.get(VmcsField::PrimaryProcBasedControls));
        let secondary = if primary.contains(PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS) {
            SecondaryProcControls::from_raw(vmcs12.get(VmcsField::SecondaryProcBasedControls))
        } else {
            SecondaryProcControls::empty()
        };
        Self {
            eptp12: secondary
                .contains(SecondaryProcControls::ENABLE_EPT)
                .then(|| Eptp::from_raw(vmcs12.get(VmcsField::EptPointer))),
            // The field is 16 bits wide.
            vpid12: secondary
                .contains(SecondaryProcControls::ENABLE_VPID)
                .then(|| vmcs12.get(VmcsField::VirtualProcessorId) as u16),
        }
    }
}

impl<P: Platform> Vcpu<P> {
    /// Enters L2 from the current VMCS12 after VMLAUNCH (`launch`) or
    /// VMRESUME passed its checks.
    pub(super) fn nested_entry(
        &mut self,
        exit: &Exit,
        launch: bool,
    ) -> Result<Step, VcpuError<P::Error>> {
        let vmcs12 = self
            .nested
            .current_vmcs()
            .ok_or(VcpuError::NoCurrentVmcs)?
            .image()
            .clone();
        let wanted = Vmcs12Translation::read(&vmcs12);

        // EPTP02: hv-mmu's root for EPTP12 (the flush protocol), or EPTP01.
        let eptp02 = if let Some(eptp12) = wanted.eptp12 {
            let switch = self.mmu.switch_to(eptp12).map_err(VcpuError::Mmu)?;
            if switch.flush_before_entry {
                self.invept(InveptType::SingleContext, switch.eptp02)?;
            }
            switch.eptp02
        } else {
            self.platform.eptp01()
        };
        let vpid = self.vpids.plan_entry(wanted.vpid12);

        let parts = self.platform.l1();
        let pat = parts.msrs.read_msr(IA32_PAT).map_err(VcpuError::L1Msr)?;
        let debugctl = parts
            .msrs
            .read_msr(IA32_DEBUGCTL)
            .map_err(VcpuError::L1Msr)?;
        let inherited = L1Inherited {
            efer: parts.cpu.efer,
            pat,
            debugctl,
            dr7: L1_DR7,
        };
        let gprs = parts.cpu.gprs;
        let translation = Translation02 {
            eptp02,
            vpid02: vpid.vpid02,
        };
        let prepared = prepare_vmcs02(
            &vmcs12,
            &inherited,
            translation,
            self.platform.l0_requirements(),
            self.platform.capabilities(),
        );
        let mut vmcs02 = match prepared {
            Ok(vmcs02) => vmcs02,
            Err(error) => return self.reject(exit, launch, error),
        };
        if wanted.eptp12.is_none() {
            if let Err(check) = self.load_pdptes(&vmcs12, &mut vmcs02) {
                if launch {
                    self.set_launch_state(LaunchState::Clear);
                }
                return self.entry_failure(check);
            }
            // The PDPTEs passed L1's MAXPHYADDR; VMCS02 must also pass the
            // real engine's PDPTE checks (SDM 27.3.1.6), whose width may
            // be smaller: check the final image before writing it.
            let l0 = self.platform.l0_requirements();
            if let Err(error) =
                check_vm_entry(&vmcs02, self.platform.capabilities(), &l0.entry_context)
            {
                return self.reject(exit, launch, PrepareError::EntryCheck(error));
            }
        }

        self.vpids.commit(vpid);
        if vpid.flush {
            self.invvpid(Vpid02Flush {
                kind: InvvpidType::SingleContext,
                vpid02: vpid.vpid02,
                linear_address: 0,
            })?;
        }
        self.write_vmcs02_image(&vmcs02)?;
        // VM entry does not change general-purpose registers (RSP comes
        // from GUEST_RSP).
        *self.platform.l2_gprs() = gprs;
        self.level = Level::L2;
        self.active = Some(ActiveL2 {
            eptp12: wanted.eptp12,
            eptp02,
        });
        self.resume.pending = false;
        self.resume.fill_flush = false;
        self.resume.full_switch = false;
        self.counters.nested_entries += 1;
        Ok(Step::Handled(Handled::NestedEntry { launch }))
    }

    /// Writes the fields of `vmcs02` the platform does not hold yet.
    pub(super) fn write_vmcs02_image(
        &mut self,
        vmcs02: &VmcsImage,
    ) -> Result<(), VcpuError<P::Error>> {
        let changes: super::alloc::vec::Vec<_> = self.vmcs02.changes(vmcs02).collect();
        for (field, value) in changes {
            self.write_vmcs02(field, value)?;
        }
        Ok(())
    }

    /// PAE paging in L2 without EPT in VMCS12: the processor loads the
    /// PDPTEs from L1 memory at CR3 (SDM 27.3.2.4) and fails the entry
    /// with qualification 2 when a present one sets reserved bits (SDM
    /// 27.8). A PDPTE outside L1 memory reads as all ones, as reads of
    /// nonexistent memory do, and so fails too.
    fn load_pdptes(
        &mut self,
        vmcs12: &VmcsImage,
        vmcs02: &mut VmcsImage,
    ) -> Result<(), GuestCheck> {
        let cr0 = Cr0::from_bits_retain(vmcs12.get(VmcsField::GuestCr0));
        let cr4 = Cr4::from_bits_retain(vmcs12.get(VmcsField::GuestCr4));
        let ia32e = EntryControls::from_raw(vmcs12.get(VmcsField::VmEntryControls))
            .contains(EntryControls::IA32E_MODE_GUEST);
        if !cr0.contains(Cr0::PG) || !cr4.contains(Cr4::PAE) || ia32e {
            return Ok(());
        }
        let width = self.nested.config().physical_address_width;
        let beyond_width = if width >= 64 { 0 } else { u64::MAX << width };
        // PAE CR3: bits 31:5 hold the PDPT address (SDM Vol. 3A 4.4.1).
        let pdpt = vmcs12.get(VmcsField::GuestCr3) & 0xffff_ffe0;
        let fields = [
            VmcsField::GuestPdpte0,
            VmcsField::GuestPdpte1,
            VmcsField::GuestPdpte2,
            VmcsField::GuestPdpte3,
        ];
        let memory = self.platform.l1().memory;
        for (index, field) in (0u8..).zip(fields) {
            let mut bytes = [0xff; 8];
            if memory
                .read_bytes(L1Gpa::new(pdpt + u64::from(index) * 8), &mut bytes)
                .is_err()
            {
                bytes = [0xff; 8];
            }
            let pdpte = u64::from_le_bytes(bytes);
            if pdpte & 1 != 0 && pdpte & (PDPTE_RESERVED_LOW | beyond_width) != 0 {
                return Err(GuestCheck::PdpteReservedBits { index, pdpte });
            }
            vmcs02.set(field, pdpte);
        }
        Ok(())
    }

    /// Sets the current VMCS12's launch state.
    fn set_launch_state(&mut self, state: LaunchState) {
        if let Some(current) = self.nested.current_vmcs_mut() {
            current.set_launch_state(state);
        }
    }

    /// No VMCS02 can be built: L2 is not entered and the instruction
    /// completes as VMfailValid(7), "VM entry with invalid control fields"
    /// (the closest the SDM offers: the controls L1 chose cannot run on
    /// this engine). VMLAUNCH leaves the launch state clear (SDM 31.3).
    fn reject(
        &mut self,
        exit: &Exit,
        launch: bool,
        error: PrepareError,
    ) -> Result<Step, VcpuError<P::Error>> {
        tracing::warn!(%error, "VMCS02 rejected; VMLAUNCH/VMRESUME fails with VMfailValid(7)");
        let status = VmxStatus::FailValid(VmInstructionError::EntryInvalidControlFields);
        let current = self
            .nested
            .current_vmcs_mut()
            .ok_or(VcpuError::NoCurrentVmcs)?;
        if launch {
            current.set_launch_state(LaunchState::Clear);
        }
        current.image_mut().set(
            VmcsField::VmInstructionError,
            u64::from(VmInstructionError::EntryInvalidControlFields.number()),
        );
        let cpu = self.platform.l1().cpu;
        cpu.rflags = status.apply(cpu.rflags);
        advance_rip(cpu, exit.instruction_length);
        self.counters.vmcs02_rejected += 1;
        Ok(Step::Handled(Handled::Vmcs02Rejected(error)))
    }

    /// VMLAUNCH/VMRESUME failed guest-state check `check`: the
    /// VM-entry-failure exit to L1 (SDM 27.8).
    pub(super) fn entry_failure(&mut self, check: GuestCheck) -> Result<Step, VcpuError<P::Error>> {
        let current = self
            .nested
            .current_vmcs_mut()
            .ok_or(VcpuError::NoCurrentVmcs)?;
        let parts = self.platform.l1();
        let delivered = deliver_entry_failure(
            current.image_mut(),
            &EntryFailure::InvalidGuestState(check),
            parts.cpu,
            parts.memory,
            parts.msrs,
        );
        match delivered {
            Ok(registers) => {
                self.platform
                    .set_l1_system_registers(&registers)
                    .map_err(VcpuError::Platform)?;
                self.counters.entry_failures += 1;
                Ok(Step::Handled(Handled::EntryFailure))
            }
            Err(error) => self.delivery_failed(error),
        }
    }

    /// A VM exit to L1 did not complete: a VMX abort shuts L1 down (SDM
    /// 28.7: the indicator goes to offset 4 of L1's VMCS region).
    pub(super) fn delivery_failed(
        &mut self,
        error: DeliveryError,
    ) -> Result<Step, VcpuError<P::Error>> {
        match error {
            DeliveryError::VmxAbort(abort) => {
                if let Some(current) = self.nested.current_vmcs() {
                    let at = L1Gpa::new(current.pointer().raw() + 4);
                    let indicator = abort.indicator().to_le_bytes();
                    if self
                        .platform
                        .l1()
                        .memory
                        .write_bytes(at, &indicator)
                        .is_err()
                    {
                        tracing::warn!(%abort, "VMX-abort indicator not written: VMCS12 region is not L1 memory");
                    }
                }
                tracing::warn!(%abort, "VMX abort: L1 shut down");
                self.level = Level::L1;
                self.active = None;
                self.shut_down = true;
                self.counters.vmx_aborts += 1;
                Ok(Step::L1Shutdown(abort))
            }
            DeliveryError::HostStateMsr(fault) => Err(VcpuError::L1Msr(fault)),
        }
    }
}
