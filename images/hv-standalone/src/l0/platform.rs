//! hv-core's [`Platform`] on real VMX: VMCS01 runs L1, one hardware VMCS02
//! runs L2, EPT01 and the EPT02 frame pool are host memory.
//!
//! L1's architectural state lives in [`L1Cpu`] between exits; `run(L1)`
//! writes what changed into VMCS01's guest-state area and reads it back
//! after the exit (SDM 25.4, 27.3.2, 28.3). L1 and L2 share one x87/SSE
//! state, as on a real processor (VM entries and exits do not switch it),
//! so one [`GuestContext`] serves both levels and only the general-purpose
//! registers are swapped.

use core::fmt;

use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::controls::EntryControls;
use hv_arch_vmx::ept::Eptp;
use hv_arch_vmx::exit::ExitReasonWord;
use hv_arch_vmx::instructions::{self, VmFail};
use hv_arch_vmx::interruption::InterruptionInfo;
use hv_arch_vmx::invalidation::{InveptDescriptor, InveptType, InvvpidDescriptor, InvvpidType};
use hv_arch_vmx::vmcs::VmcsField;
use hv_core::platform::{L0Requirements, L1Parts, Level, Platform};
use hv_core::reflect::{L1SystemRegisters, MsrAccess, MsrFault};
use hv_core::state::{Exit, Gprs, L1Cpu, Segment};
use hv_core::vmx::Fault;

use super::memory::{Ept02Frames, HardwareEpt01, L1Ram};
use crate::vmx::enter::{GuestContext, enter_guest};
use crate::vmx::fields::{read, write};

/// A failure of the hardware engine: a VMX instruction L0 issued failed.
/// Guest input never causes one (hv-core checks VMCS02 before entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EngineError {
    /// What L0 was doing.
    pub(crate) operation: &'static str,
    /// How the instruction failed.
    pub(crate) failure: VmFail,
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.operation, self.failure)
    }
}

impl core::error::Error for EngineError {}

/// Maps a VMX failure to an [`EngineError`] for `operation`.
fn engine(operation: &'static str) -> impl FnOnce(VmFail) -> EngineError {
    move |failure| EngineError { operation, failure }
}

/// `IA32_PAT`'s power-up value (SDM Vol. 3A 13.12.4).
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

/// The MSRs of L1 that hv-core reads or loads at nested entries and exits
/// and that VMCS01 holds as guest state. L1's WRMSR to them exits to L0
/// (the MSR bitmap), so this store is always current.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct L1Msrs {
    pub(crate) pat: u64,
    pub(crate) debugctl: u64,
    pub(crate) sysenter_cs: u64,
    pub(crate) sysenter_esp: u64,
    pub(crate) sysenter_eip: u64,
}

impl Default for L1Msrs {
    fn default() -> Self {
        Self {
            pat: PAT_DEFAULT,
            debugctl: 0,
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
        }
    }
}

impl MsrAccess for L1Msrs {
    fn read_msr(&mut self, index: u32) -> Result<u64, MsrFault> {
        match index {
            0x277 => Ok(self.pat),
            0x1d9 => Ok(self.debugctl),
            0x174 => Ok(self.sysenter_cs),
            0x175 => Ok(self.sysenter_esp),
            0x176 => Ok(self.sysenter_eip),
            _ => Err(MsrFault { index }),
        }
    }

    /// WRMSR's #GP conditions are checked here, so a value VM entry would
    /// reject (SDM 27.3.1.1) never reaches VMCS01.
    fn write_msr(&mut self, index: u32, value: u64) -> Result<(), MsrFault> {
        let fault = Err(MsrFault { index });
        let canonical =
            |address: u64| (address.cast_signed() << 16 >> 16).cast_unsigned() == address;
        let valid = match index {
            // SDM Vol. 3A 13.12.2: each byte a memory type 0, 1, 4, 5, 6 or 7.
            0x277 => value
                .to_le_bytes()
                .iter()
                .all(|&kind| matches!(kind, 0 | 1 | 4..=7)),
            // LBR (bit 0) and BTF (bit 1) only: the rest is model-specific.
            0x1d9 => value & !3 == 0,
            0x174 => value >> 32 == 0,
            0x175 | 0x176 => canonical(value),
            _ => return fault,
        };
        if !valid {
            return fault;
        }
        match index {
            0x277 => self.pat = value,
            0x1d9 => self.debugctl = value,
            0x174 => self.sysenter_cs = value,
            0x175 => self.sysenter_esp = value,
            0x176 => self.sysenter_eip = value,
            _ => return Err(MsrFault { index }),
        }
        Ok(())
    }
}

/// Bits of CR0/CR4 L0 owns in VMCS01: forced to their fixed values in the
/// real register, shown to L1 from the read shadow.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OwnedBits {
    /// CR0 bits that must be 1 for L1 (NE; PE and PG are L1's under
    /// unrestricted guest, SDM 27.3.1.1).
    pub(crate) cr0: u64,
    /// CR4 bits that must be 1 for L1 (VMXE).
    pub(crate) cr4: u64,
}

/// Which VMCS is current on the processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Current {
    Vmcs01,
    Vmcs02,
}

/// What the engine counts on its own.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EngineCounts {
    pub(crate) invept: u64,
    pub(crate) invvpid: u64,
    pub(crate) l1_entries: u64,
    pub(crate) l2_entries: u64,
    /// INVVPIDs of L1's own VPID after L0 emulated a paging change.
    pub(crate) l1_flushes: u64,
}

/// The hardware platform.
pub(crate) struct HardwarePlatform {
    caps: VmxCapabilities,
    l0: L0Requirements,
    owned: OwnedBits,
    vmcs01: u64,
    vmcs02: u64,
    current: Current,
    launched01: bool,
    launched02: bool,
    /// L1's state between exits, and what VMCS01 holds now.
    cpu: L1Cpu,
    synced: Option<L1Cpu>,
    msrs: L1Msrs,
    synced_msrs: Option<L1Msrs>,
    ram: L1Ram,
    ept01: HardwareEpt01,
    l2_gprs: Gprs,
    context: GuestContext,
    pending_fault: Option<Fault>,
    pending_system_registers: Option<L1SystemRegisters>,
    /// VMX-preemption timer value for every L1 entry (L0's watchdog), if
    /// VMCS01 activates the timer.
    watchdog: Option<u32>,
    counts: EngineCounts,
}

impl fmt::Debug for HardwarePlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HardwarePlatform")
            .field("vmcs01", &format_args!("{:#x}", self.vmcs01))
            .field("vmcs02", &format_args!("{:#x}", self.vmcs02))
            .field("cpu", &self.cpu)
            .finish_non_exhaustive()
    }
}

/// The parts [`HardwarePlatform::new`] assembles.
pub(crate) struct PlatformParts {
    pub(crate) caps: VmxCapabilities,
    pub(crate) l0: L0Requirements,
    pub(crate) owned: OwnedBits,
    pub(crate) vmcs01: u64,
    pub(crate) vmcs02: u64,
    pub(crate) cpu: L1Cpu,
    pub(crate) ram: L1Ram,
    pub(crate) ept01: HardwareEpt01,
    pub(crate) watchdog: Option<u32>,
}

impl HardwarePlatform {
    /// A platform over a prepared VMCS01 (current) and a cleared VMCS02.
    pub(crate) fn new(parts: PlatformParts) -> Self {
        Self {
            caps: parts.caps,
            l0: parts.l0,
            owned: parts.owned,
            vmcs01: parts.vmcs01,
            vmcs02: parts.vmcs02,
            current: Current::Vmcs01,
            launched01: false,
            launched02: false,
            cpu: parts.cpu,
            synced: None,
            msrs: L1Msrs::default(),
            synced_msrs: None,
            ram: parts.ram,
            ept01: parts.ept01,
            l2_gprs: Gprs::default(),
            context: GuestContext::new(),
            pending_fault: None,
            pending_system_registers: None,
            watchdog: parts.watchdog,
            counts: EngineCounts::default(),
        }
    }

    /// The engine's own counts.
    pub(crate) const fn counts(&self) -> EngineCounts {
        self.counts
    }

    /// Invalidates L1's own cached translations (VPID 1) after L0
    /// emulated a CR write that changes paging (SDM 29.4.3.3: the
    /// processor did not execute the MOV to CR, so it flushed nothing).
    pub(crate) fn flush_l1_translations(&mut self) -> Result<(), EngineError> {
        self.counts.l1_flushes += 1;
        let descriptor = InvvpidDescriptor::new(super::vmcs01::VPID01, 0);
        // SAFETY: VMX root operation; VPID support was required for VMCS01.
        unsafe { instructions::invvpid(InvvpidType::SingleContext, &descriptor) }
            .map_err(engine("INVVPID VPID01"))
    }

    /// L1's MSR store (L0's RDMSR/WRMSR emulation uses it).
    pub(crate) const fn msrs_mut(&mut self) -> &mut L1Msrs {
        &mut self.msrs
    }

    /// Makes `vmcs` current.
    fn make_current(&mut self, wanted: Current) -> Result<(), EngineError> {
        if self.current != wanted {
            let address = match wanted {
                Current::Vmcs01 => self.vmcs01,
                Current::Vmcs02 => self.vmcs02,
            };
            // SAFETY: VMX root operation; both regions are L0's, carry the
            // revision identifier and were VMCLEARed once at setup.
            unsafe { instructions::vmptrld(address) }.map_err(engine("VMPTRLD"))?;
            self.current = wanted;
        }
        Ok(())
    }

    /// Writes L1's changed state into VMCS01 (current).
    fn sync_l1_state(&mut self) -> Result<(), EngineError> {
        let cpu = self.cpu;
        let before = self.synced;
        let changed = |get: fn(&L1Cpu) -> u64| before.is_none_or(|old| get(&old) != get(&cpu));
        let owned = self.owned;
        let mut writes: [(VmcsField, u64, bool); 9] = [
            (VmcsField::GuestRip, cpu.rip, changed(|c| c.rip)),
            (VmcsField::GuestRsp, cpu.gprs.0[4], changed(|c| c.gprs.0[4])),
            (VmcsField::GuestRflags, cpu.rflags, changed(|c| c.rflags)),
            (VmcsField::GuestCr0, cpu.cr0 | owned.cr0, changed(|c| c.cr0)),
            (VmcsField::Cr0ReadShadow, cpu.cr0, changed(|c| c.cr0)),
            (VmcsField::GuestCr3, cpu.cr3, changed(|c| c.cr3)),
            (VmcsField::GuestCr4, cpu.cr4 | owned.cr4, changed(|c| c.cr4)),
            (VmcsField::Cr4ReadShadow, cpu.cr4, changed(|c| c.cr4)),
            (VmcsField::GuestEfer, cpu.efer, changed(|c| c.efer)),
        ];
        for (field, value, needed) in &mut writes {
            if *needed {
                // SAFETY: VMX root operation, VMCS01 current.
                unsafe { write(*field, *value) }.map_err(engine("VMWRITE VMCS01 guest state"))?;
            }
        }
        if changed(|c| c.efer) {
            // SDM 27.3.2.1: with "load IA32_EFER", "IA-32e mode guest" must
            // equal EFER.LMA.
            // SAFETY: as above.
            let entry = unsafe { read(VmcsField::VmEntryControls) }
                .map_err(engine("VMREAD entry controls"))?;
            let mut entry = EntryControls::from_bits_retain(entry as u32);
            entry.set(EntryControls::IA32E_MODE_GUEST, cpu.efer & (1 << 10) != 0);
            // SAFETY: as above.
            unsafe { write(VmcsField::VmEntryControls, u64::from(entry.bits())) }
                .map_err(engine("VMWRITE entry controls"))?;
        }
        let segments = [
            (&cpu.es, before.map(|c| c.es), SegmentFields::ES),
            (&cpu.cs, before.map(|c| c.cs), SegmentFields::CS),
            (&cpu.ss, before.map(|c| c.ss), SegmentFields::SS),
            (&cpu.ds, before.map(|c| c.ds), SegmentFields::DS),
            (&cpu.fs, before.map(|c| c.fs), SegmentFields::FS),
            (&cpu.gs, before.map(|c| c.gs), SegmentFields::GS),
        ];
        for (segment, old, fields) in segments {
            if old.as_ref() != Some(segment) {
                fields.write(segment)?;
            }
        }
        self.synced = Some(cpu);

        if self.synced_msrs != Some(self.msrs) {
            let msrs = self.msrs;
            for (field, value) in [
                (VmcsField::GuestPat, msrs.pat),
                (VmcsField::GuestDebugCtl, msrs.debugctl),
                (VmcsField::GuestSysenterCs, msrs.sysenter_cs),
                (VmcsField::GuestSysenterEsp, msrs.sysenter_esp),
                (VmcsField::GuestSysenterEip, msrs.sysenter_eip),
            ] {
                // SAFETY: as above.
                unsafe { write(field, value) }.map_err(engine("VMWRITE VMCS01 guest MSRs"))?;
            }
            self.synced_msrs = Some(msrs);
        }

        if let Some(registers) = self.pending_system_registers.take() {
            SegmentFields::TR.write(&registers.tr)?;
            SegmentFields::LDTR.write(&registers.ldtr)?;
            for (field, value) in [
                (VmcsField::GuestGdtrBase, registers.gdtr.base),
                (VmcsField::GuestGdtrLimit, u64::from(registers.gdtr.limit)),
                (VmcsField::GuestIdtrBase, registers.idtr.base),
                (VmcsField::GuestIdtrLimit, u64::from(registers.idtr.limit)),
                (VmcsField::GuestDr7, registers.dr7),
            ] {
                // SAFETY: as above.
                unsafe { write(field, value) }
                    .map_err(engine("VMWRITE VMCS01 system registers"))?;
            }
        }
        Ok(())
    }

    /// Reads L1's state back from VMCS01 after an exit (SDM 28.3).
    fn read_l1_state(&mut self) -> Result<(), EngineError> {
        let read_field = |field| {
            // SAFETY: VMX root operation, VMCS01 current.
            unsafe { read(field) }.map_err(engine("VMREAD VMCS01 guest state"))
        };
        let owned = self.owned;
        let cpu = &mut self.cpu;
        cpu.rip = read_field(VmcsField::GuestRip)?;
        cpu.gprs.0[4] = read_field(VmcsField::GuestRsp)?;
        cpu.rflags = read_field(VmcsField::GuestRflags)?;
        // L1's view: its own bits from the register, L0's from the shadow.
        let cr0 = read_field(VmcsField::GuestCr0)?;
        let cr0_shadow = read_field(VmcsField::Cr0ReadShadow)?;
        cpu.cr0 = (cr0 & !owned.cr0) | (cr0_shadow & owned.cr0);
        cpu.cr3 = read_field(VmcsField::GuestCr3)?;
        let cr4 = read_field(VmcsField::GuestCr4)?;
        let cr4_shadow = read_field(VmcsField::Cr4ReadShadow)?;
        cpu.cr4 = (cr4 & !owned.cr4) | (cr4_shadow & owned.cr4);
        cpu.efer = read_field(VmcsField::GuestEfer)?;
        cpu.es = SegmentFields::ES.read()?;
        cpu.cs = SegmentFields::CS.read()?;
        cpu.ss = SegmentFields::SS.read()?;
        cpu.ds = SegmentFields::DS.read()?;
        cpu.fs = SegmentFields::FS.read()?;
        cpu.gs = SegmentFields::GS.read()?;
        self.synced = Some(*cpu);
        Ok(())
    }

    /// The exit-information fields of the current VMCS (SDM 25.9).
    fn read_exit() -> Result<Exit, EngineError> {
        let read_field = |field| {
            // SAFETY: VMX root operation with a current VMCS.
            unsafe { read(field) }.map_err(engine("VMREAD exit information"))
        };
        Ok(Exit {
            reason: ExitReasonWord::from_raw(read_field(VmcsField::ExitReason)? as u32),
            qualification: read_field(VmcsField::ExitQualification)?,
            guest_linear_address: read_field(VmcsField::GuestLinearAddress)?,
            guest_physical_address: read_field(VmcsField::GuestPhysicalAddress)?,
            interruption_info: InterruptionInfo::from_raw(read_field(
                VmcsField::VmExitInterruptionInfo,
            )? as u32),
            interruption_error_code: read_field(VmcsField::VmExitInterruptionErrorCode)? as u32,
            idt_vectoring_info: InterruptionInfo::from_raw(
                read_field(VmcsField::IdtVectoringInfo)? as u32,
            ),
            idt_vectoring_error_code: read_field(VmcsField::IdtVectoringErrorCode)? as u32,
            instruction_length: read_field(VmcsField::VmExitInstructionLength)? as u32,
            instruction_info: read_field(VmcsField::VmxInstructionInfo)? as u32,
        })
    }

    /// Writes a pending fault into VMCS01's VM-entry event injection (SDM
    /// 25.8.3, 27.6) and CR2 for a page fault.
    fn inject_pending(&mut self) -> Result<(), EngineError> {
        let Some(fault) = self.pending_fault.take() else {
            return Ok(());
        };
        let vector = u64::from(fault.vector().vector());
        // Hardware exception (type 3), valid; #GP/#SS/#PF push an error code.
        let mut info = vector | (3 << 8) | (1 << 31);
        let error_code = match fault {
            Fault::InvalidOpcode => None,
            Fault::GeneralProtection | Fault::StackFault => Some(0),
            Fault::PageFault(page_fault) => {
                // SAFETY: CR2 is L1's until the exit; L0 takes no page
                // fault between here and the entry.
                unsafe {
                    core::arch::asm!("mov cr2, {}", in(reg) page_fault.address, options(nostack, nomem));
                }
                Some(u64::from(page_fault.error_code))
            }
        };
        // SDM 27.2.1.3: an error code is delivered only with CR0.PE = 1
        // (unrestricted guest lets L1 run in real mode).
        if let Some(code) = error_code.filter(|_| self.cpu.cr0 & 1 != 0) {
            info |= 1 << 11;
            // SAFETY: VMX root operation, VMCS01 current.
            unsafe { write(VmcsField::VmEntryExceptionErrorCode, code) }
                .map_err(engine("VMWRITE entry error code"))?;
        }
        // SAFETY: as above.
        unsafe { write(VmcsField::VmEntryInterruptionInfo, info) }
            .map_err(engine("VMWRITE entry interruption information"))
    }

    fn run_l1(&mut self) -> Result<Exit, EngineError> {
        self.make_current(Current::Vmcs01)?;
        self.sync_l1_state()?;
        self.inject_pending()?;
        if let Some(value) = self.watchdog {
            // SDM 26.5.1: the timer counts down from this value in L1.
            // SAFETY: VMX root operation, VMCS01 current.
            unsafe { write(VmcsField::VmxPreemptionTimerValue, u64::from(value)) }
                .map_err(engine("VMWRITE watchdog"))?;
        }
        self.context.gprs = self.cpu.gprs.0;
        self.counts.l1_entries += 1;
        // SAFETY: VMCS01 is current and was set up by `vmcs01::build`
        // (host state, controls, EPTP01 over L1's own RAM, MSR bitmap);
        // interrupts are off in L0.
        unsafe { enter_guest(&mut self.context, self.launched01) }
            .map_err(engine("VM entry to L1"))?;
        let rsp = self.cpu.gprs.0[4];
        self.cpu.gprs.0 = self.context.gprs;
        self.cpu.gprs.0[4] = rsp;
        let exit = Self::read_exit()?;
        // SDM 31.3 VMLAUNCH, 27.8: only a successful entry launches.
        self.launched01 |= !exit.reason.is_entry_failure();
        self.read_l1_state()?;
        Ok(exit)
    }

    fn run_l2(&mut self) -> Result<Exit, EngineError> {
        self.make_current(Current::Vmcs02)?;
        self.context.gprs = self.l2_gprs.0;
        self.counts.l2_entries += 1;
        // SAFETY: VMCS02 is current, written by hv-core, which checked it
        // against the entry checks, with L0's host state and controls; its
        // EPTP is EPT02 in L0's frame pool or EPT01.
        unsafe { enter_guest(&mut self.context, self.launched02) }
            .map_err(engine("VM entry to L2"))?;
        let rsp = self.l2_gprs.0[4];
        self.l2_gprs.0 = self.context.gprs;
        self.l2_gprs.0[4] = rsp;
        let exit = Self::read_exit()?;
        self.launched02 |= !exit.reason.is_entry_failure();
        Ok(exit)
    }
}

/// The four guest-state fields of one segment register.
#[derive(Clone, Copy)]
struct SegmentFields {
    selector: VmcsField,
    base: VmcsField,
    limit: VmcsField,
    access_rights: VmcsField,
}

macro_rules! segment_fields {
    ($name:ident, $selector:ident, $base:ident, $limit:ident, $ar:ident) => {
        const $name: Self = Self {
            selector: VmcsField::$selector,
            base: VmcsField::$base,
            limit: VmcsField::$limit,
            access_rights: VmcsField::$ar,
        };
    };
}

impl SegmentFields {
    segment_fields!(
        ES,
        GuestEsSelector,
        GuestEsBase,
        GuestEsLimit,
        GuestEsAccessRights
    );
    segment_fields!(
        CS,
        GuestCsSelector,
        GuestCsBase,
        GuestCsLimit,
        GuestCsAccessRights
    );
    segment_fields!(
        SS,
        GuestSsSelector,
        GuestSsBase,
        GuestSsLimit,
        GuestSsAccessRights
    );
    segment_fields!(
        DS,
        GuestDsSelector,
        GuestDsBase,
        GuestDsLimit,
        GuestDsAccessRights
    );
    segment_fields!(
        FS,
        GuestFsSelector,
        GuestFsBase,
        GuestFsLimit,
        GuestFsAccessRights
    );
    segment_fields!(
        GS,
        GuestGsSelector,
        GuestGsBase,
        GuestGsLimit,
        GuestGsAccessRights
    );
    segment_fields!(
        TR,
        GuestTrSelector,
        GuestTrBase,
        GuestTrLimit,
        GuestTrAccessRights
    );
    segment_fields!(
        LDTR,
        GuestLdtrSelector,
        GuestLdtrBase,
        GuestLdtrLimit,
        GuestLdtrAccessRights
    );

    fn write(self, segment: &Segment) -> Result<(), EngineError> {
        for (field, value) in [
            (self.selector, u64::from(segment.selector)),
            (self.base, segment.base),
            (self.limit, u64::from(segment.limit)),
            (self.access_rights, u64::from(segment.access_rights)),
        ] {
            // SAFETY: VMX root operation with VMCS01 current.
            unsafe { write(field, value) }.map_err(engine("VMWRITE segment"))?;
        }
        Ok(())
    }

    fn read(self) -> Result<Segment, EngineError> {
        let read_field = |field| {
            // SAFETY: VMX root operation with VMCS01 current.
            unsafe { read(field) }.map_err(engine("VMREAD segment"))
        };
        Ok(Segment {
            selector: read_field(self.selector)? as u16,
            base: read_field(self.base)?,
            limit: read_field(self.limit)? as u32,
            access_rights: read_field(self.access_rights)? as u32,
        })
    }
}

impl Platform for HardwarePlatform {
    type Error = EngineError;
    type Memory = L1Ram;
    type Ept01 = HardwareEpt01;
    type Msrs = L1Msrs;
    type Frames = Ept02Frames;

    fn capabilities(&self) -> &VmxCapabilities {
        &self.caps
    }

    fn l0_requirements(&self) -> &L0Requirements {
        &self.l0
    }

    fn eptp01(&self) -> Eptp {
        self.ept01.eptp()
    }

    fn l1(&mut self) -> L1Parts<'_, Self> {
        L1Parts {
            cpu: &mut self.cpu,
            memory: &mut self.ram,
            ept01: &self.ept01,
            msrs: &mut self.msrs,
        }
    }

    fn set_l1_system_registers(
        &mut self,
        registers: &L1SystemRegisters,
    ) -> Result<(), Self::Error> {
        self.pending_system_registers = Some(*registers);
        Ok(())
    }

    fn inject_into_l1(&mut self, fault: Fault) -> Result<(), Self::Error> {
        // One event per entry: a second fault before L1 ran would be
        // delivered while delivering the first (#DF rules, SDM Vol. 3A
        // 6.15); hv never asks for two, so the first one stays.
        self.pending_fault.get_or_insert(fault);
        Ok(())
    }

    fn write_vmcs02(&mut self, field: VmcsField, value: u64) -> Result<(), Self::Error> {
        self.make_current(Current::Vmcs02)?;
        // SAFETY: VMX root operation, VMCS02 current; hv-core vouches for
        // the values (it checks the whole VMCS02 before any entry).
        unsafe { write(field, value) }.map_err(engine("VMWRITE VMCS02"))
    }

    fn read_vmcs02(&mut self, field: VmcsField) -> Result<u64, Self::Error> {
        self.make_current(Current::Vmcs02)?;
        // SAFETY: VMX root operation, VMCS02 current.
        unsafe { read(field) }.map_err(engine("VMREAD VMCS02"))
    }

    fn l2_gprs(&mut self) -> &mut Gprs {
        &mut self.l2_gprs
    }

    fn invept(&mut self, kind: InveptType, eptp02: Eptp) -> Result<(), Self::Error> {
        self.counts.invept += 1;
        let descriptor = InveptDescriptor::new(eptp02);
        // SAFETY: VMX root operation; the probe checked INVEPT support
        // before hv-core was given EPT; invalidation changes no memory.
        unsafe { instructions::invept(kind, &descriptor) }.map_err(engine("INVEPT"))
    }

    fn invvpid(
        &mut self,
        kind: InvvpidType,
        vpid02: u16,
        linear_address: u64,
    ) -> Result<(), Self::Error> {
        self.counts.invvpid += 1;
        let descriptor = InvvpidDescriptor::new(vpid02, linear_address);
        // SAFETY: as for INVEPT (INVVPID support checked at setup).
        unsafe { instructions::invvpid(kind, &descriptor) }.map_err(engine("INVVPID"))
    }

    fn run(&mut self, level: Level) -> Result<Exit, Self::Error> {
        match level {
            Level::L1 => self.run_l1(),
            Level::L2 => self.run_l2(),
        }
    }
}
