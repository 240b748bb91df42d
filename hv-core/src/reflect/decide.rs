//! Does L1 want this L2 exit? The rules of SDM 26.1 (instructions), 26.2
//! (events) and 26.3 (EPT) evaluated against VMCS12.
//!
//! The module documentation of [`crate::reflect`] has the full table.

use hv_arch_vmx::controls::{
    ControlWord, ExceptionBitmap, ExceptionVector, PinBasedControls, PrimaryProcControls,
    SecondaryProcControls, TertiaryProcControls,
};
use hv_arch_vmx::exit::{
    ControlRegisterAccess, ControlRegisterAccessQualification, ExitReason, Gpr, IoQualification,
    ReservedIoAccessSize,
};
use hv_arch_vmx::interruption::InterruptionType;
use hv_arch_vmx::registers::{Cr0, Efer};
use hv_arch_vmx::vmcs::{VmcsField, VmcsRead};
use hv_mmu::addr::L1Gpa;

use super::bitmaps::{
    MsrAccessKind, io_bitmaps_want_exit, leaf_bitmap_wants_exit, msr_bitmap_wants_exit,
};
use crate::state::{Exit, Gprs, L1Access, Segment};

/// What to do with an L2 exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// L1 asked for this exit: deliver it with
    /// [`deliver_exit_to_l1`](super::deliver_exit_to_l1).
    ReflectToL1,
    /// L1 did not ask for it: L0 handles it and resumes L2. The note says
    /// why, so L0 knows what handling means (emulate, inject #UD, ...).
    HandleInL0(L0Reason),
    /// An EPT violation or misconfiguration with EPT on in VMCS12: only a
    /// walk of EPT12 (hv-mmu) can tell whether it is L1's (reflect) or
    /// L0's (fill EPT02 and resume).
    EptFault,
}

/// Why an exit stays in L0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L0Reason {
    /// The VMCS12 control or bitmap bit that would make this exit is clear;
    /// L0 does for L2 what the processor would have done without the exit
    /// (for example, executes CPUID-like work, or simply resumes).
    NotRequested,
    /// The instruction's enable control is clear in VMCS12 ("enable
    /// RDTSCP", "enable INVPCID", "enable XSAVES/XRSTORS", ...): under L1's
    /// settings it raises #UD in L2, which L0 injects.
    DisabledForL2,
    /// The exit comes from a feature L0 owns: PAUSE-loop exiting, its own
    /// preemption timer, EPT01 faults when VMCS12 has no EPT, SMIs and RSM.
    L0Feature,
    /// L0 emulates the feature L1 enabled (VM functions); the emulation
    /// decides whether L1 later sees an exit.
    EmulatedByL0,
    /// A VM-entry failure of VMCS02 (reason 33, 34 or 41, or bit 31 set):
    /// L0 built VMCS02, so the failure is L0's.
    EntryFailure,
    /// A basic exit reason the SDM does not define.
    UnknownReason(u16),
}

/// What the decision needs about L2 beyond the exit itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L2Context {
    /// L2's general-purpose registers at the exit (index 4 is RSP): MOV to
    /// CR sources, ECX for RDMSR/WRMSR, EAX/EDX for ENCLS, ENCLV, PCONFIG,
    /// XSAVES and XRSTORS.
    pub gprs: Gprs,
    /// L2's CR0 as it runs (VMCS02 guest CR0). Not needed by the current
    /// rules (MOV to CR0 compares the source with VMCS12's mask and
    /// shadow); kept for L0's handling of exits that stay in L0.
    pub cr0: u64,
    /// L2's CR4 as it runs (VMCS02 guest CR4); see `cr0`.
    pub cr4: u64,
    /// L2's `IA32_EFER` (LMA selects IA-32e mode).
    pub efer: u64,
    /// L2's CS access rights (the L bit selects 64-bit mode).
    pub cs_access_rights: u32,
    /// L2's `IA32_XSS`, which XSAVES/XRSTORS exits depend on.
    pub ia32_xss: u64,
}

impl L2Context {
    /// Whether L2 runs in 64-bit mode (EFER.LMA and CS.L): outside it, a
    /// MOV to CR uses only bits 31:0 of its source register.
    pub const fn in_64bit_mode(&self) -> bool {
        let cs = Segment {
            selector: 0,
            base: 0,
            limit: 0,
            access_rights: self.cs_access_rights,
        };
        Efer::from_bits_retain(self.efer).contains(Efer::LMA) && cs.long_mode()
    }

    /// The source operand of a MOV to CR from `register`: the whole
    /// register in 64-bit mode, bits 31:0 otherwise.
    const fn mov_source(&self, register: Gpr) -> u64 {
        let value = self.gprs.get(register.index());
        if self.in_64bit_mode() {
            value
        } else {
            value & 0xffff_ffff
        }
    }

    /// EDX:EAX, the operand of XSAVES/XRSTORS.
    const fn edx_eax(&self) -> u64 {
        ((self.gprs.get(2) & 0xffff_ffff) << 32) | (self.gprs.get(0) & 0xffff_ffff)
    }

    /// EAX, the leaf of ENCLS, ENCLV and PCONFIG.
    const fn eax(&self) -> u32 {
        self.gprs.get(0) as u32
    }

    /// ECX, the MSR index of RDMSR and WRMSR.
    const fn ecx(&self) -> u32 {
        self.gprs.get(1) as u32
    }
}

/// The exit information does not describe an exit the processor can
/// produce; the engine that reported it is wrong, so nothing is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ReflectError {
    /// An exception-or-NMI exit whose interruption information is not
    /// valid (SDM 28.2.2 says it always is for this reason).
    #[error("exception or NMI exit without valid interruption information ({info:#x})")]
    MissingInterruptionInfo {
        /// The VM-exit interruption-information field.
        info: u32,
    },
    /// An exception-or-NMI exit whose interruption type is not NMI or an
    /// exception (external interrupts and INT n never use this reason).
    #[error("exception or NMI exit with interruption type {kind:?} ({info:#x})")]
    UnexpectedInterruptionType {
        /// The type the field names.
        kind: InterruptionType,
        /// The VM-exit interruption-information field.
        info: u32,
    },
    /// An I/O exit whose size field uses a reserved encoding.
    #[error("I/O instruction exit: {0}")]
    IoSize(#[from] ReservedIoAccessSize),
    /// A control-register access that cannot exit (MOV from CR0/CR4, or a
    /// CR other than 0, 3, 4 and 8).
    #[error("control-register access exit with impossible qualification {qualification:#x}")]
    ImpossibleCrAccess {
        /// The exit qualification.
        qualification: u64,
    },
}

/// The VMCS12 VM-execution controls, with the secondary and tertiary words
/// read as 0 when their "activate" bit is clear (SDM 25.6.2).
struct Controls {
    pin: PinBasedControls,
    primary: PrimaryProcControls,
    secondary: SecondaryProcControls,
    tertiary: TertiaryProcControls,
}

impl Controls {
    fn read(vmcs12: &impl VmcsRead) -> Self {
        let primary =
            PrimaryProcControls::from_raw(vmcs12.read_field(VmcsField::PrimaryProcBasedControls));
        let secondary = if primary.contains(PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS) {
            SecondaryProcControls::from_raw(
                vmcs12.read_field(VmcsField::SecondaryProcBasedControls),
            )
        } else {
            SecondaryProcControls::empty()
        };
        let tertiary = if primary.contains(PrimaryProcControls::ACTIVATE_TERTIARY_CONTROLS) {
            TertiaryProcControls::from_raw(vmcs12.read_field(VmcsField::TertiaryProcBasedControls))
        } else {
            TertiaryProcControls::empty()
        };
        Self {
            pin: PinBasedControls::from_raw(vmcs12.read_field(VmcsField::PinBasedControls)),
            primary,
            secondary,
            tertiary,
        }
    }
}

/// Reflect when `requested`, else L0 handles an exit L1 did not ask for.
const fn when(requested: bool) -> Decision {
    if requested {
        Decision::ReflectToL1
    } else {
        Decision::HandleInL0(L0Reason::NotRequested)
    }
}

/// For instructions with an enable control and an exiting control: #UD in
/// L2 without the first, an exit with both, no exit otherwise.
const fn enabled_and(enabled: bool, exiting: bool) -> Decision {
    if enabled {
        when(exiting)
    } else {
        Decision::HandleInL0(L0Reason::DisabledForL2)
    }
}

/// Decides whether L1 asked for `exit`, which L2 just took, according to
/// L1's VMCS12 (SDM 26.1-26.3). Bitmaps are read from L1 memory; a bitmap
/// address that is not L1 memory makes the access exit (KVM's rule).
///
/// # Errors
///
/// [`ReflectError`] when `exit` describes an exit no processor reports
/// (the engine is wrong); VMCS12 and memory contents never cause an error.
#[expect(
    clippy::too_many_lines,
    reason = "one arm per exit reason, in the order of the decision table"
)]
pub fn l1_wants_exit(
    vmcs12: &impl VmcsRead,
    exit: &Exit,
    l2: &L2Context,
    memory: &impl L1Access,
) -> Result<Decision, ReflectError> {
    type P = PrimaryProcControls;
    type S = SecondaryProcControls;
    type R = ExitReason;
    if exit.reason.is_entry_failure() {
        return Ok(Decision::HandleInL0(L0Reason::EntryFailure));
    }
    let c = Controls::read(vmcs12);
    let primary = |bit: P| c.primary.contains(bit);
    let secondary = |bit: S| c.secondary.contains(bit);

    let decision = match exit.reason.reason() {
        // SDM 26.2: exceptions, NMIs and external interrupts.
        R::ExceptionOrNmi => exception_or_nmi(vmcs12, &c, exit)?,
        R::ExternalInterrupt => when(c.pin.contains(PinBasedControls::EXTERNAL_INTERRUPT_EXITING)),
        // SDM 26.2: triple fault, INIT, SIPI and task switches always exit;
        // SDM 26.1.2: instructions that exit unconditionally.
        R::TripleFault
        | R::InitSignal
        | R::StartupIpi
        | R::TaskSwitch
        | R::Cpuid
        | R::Getsec
        | R::Invd
        | R::Xsetbv
        | R::Vmcall
        | R::Vmclear
        | R::Vmlaunch
        | R::Vmptrld
        | R::Vmptrst
        | R::Vmread
        | R::Vmresume
        | R::Vmwrite
        | R::Vmxoff
        | R::Vmxon
        | R::Invept
        | R::Invvpid
        | R::Seamcall
        | R::Tdcall
        // Not modelled: KVM's default, an exit L0 does not know is L1's.
        | R::Urdmsr
        | R::Uwrmsr
        | R::RdmsrImmediate
        | R::WrmsrnsImmediate => Decision::ReflectToL1,
        // Dual-monitor SMM and RSM are L0's business.
        R::IoSmi | R::OtherSmi | R::Rsm => Decision::HandleInL0(L0Reason::L0Feature),
        // SDM 26.2: the window exits.
        R::InterruptWindow => when(primary(P::INTERRUPT_WINDOW_EXITING)),
        R::NmiWindow => when(primary(P::NMI_WINDOW_EXITING)),
        // SDM 26.1.3: instructions that exit conditionally.
        R::Hlt => when(primary(P::HLT_EXITING)),
        R::Invlpg => when(primary(P::INVLPG_EXITING)),
        R::Rdpmc => when(primary(P::RDPMC_EXITING)),
        R::Rdtsc => when(primary(P::RDTSC_EXITING)),
        R::Rdtscp => enabled_and(secondary(S::ENABLE_RDTSCP), primary(P::RDTSC_EXITING)),
        R::Mwait => when(primary(P::MWAIT_EXITING)),
        R::Monitor => when(primary(P::MONITOR_EXITING)),
        R::Pause => {
            if primary(P::PAUSE_EXITING) {
                Decision::ReflectToL1
            } else {
                // PAUSE-loop exiting is L0's even when L1 set it too.
                Decision::HandleInL0(L0Reason::L0Feature)
            }
        }
        R::ControlRegisterAccess => control_register_access(vmcs12, &c, exit, l2)?,
        R::MovDr => when(primary(P::MOV_DR_EXITING)),
        R::IoInstruction => io_instruction(vmcs12, &c, exit, memory)?,
        R::Rdmsr => msr_access(vmcs12, &c, l2, MsrAccessKind::Read, memory),
        R::Wrmsr => msr_access(vmcs12, &c, l2, MsrAccessKind::Write, memory),
        R::EntryFailInvalidGuestState | R::EntryFailMsrLoading | R::EntryFailMachineCheck => {
            Decision::HandleInL0(L0Reason::EntryFailure)
        }
        R::MonitorTrapFlag => when(primary(P::MONITOR_TRAP_FLAG)),
        // TPR-below-threshold exits happen with "use TPR shadow" and without
        // virtual-interrupt delivery (SDM 30.1.2).
        R::TprBelowThreshold => when(
            primary(P::USE_TPR_SHADOW) && !secondary(S::VIRTUAL_INTERRUPT_DELIVERY),
        ),
        R::ApicAccess => when(secondary(S::VIRTUALIZE_APIC_ACCESSES)),
        R::VirtualizedEoi => when(
            secondary(S::VIRTUAL_INTERRUPT_DELIVERY)
                && eoi_exit_bitmap_bit(vmcs12, exit.qualification as u8),
        ),
        R::ApicWrite => when(
            c.secondary
                .intersects(S::APIC_REGISTER_VIRTUALIZATION | S::VIRTUAL_INTERRUPT_DELIVERY),
        ),
        R::GdtrIdtrAccess | R::LdtrTrAccess => when(secondary(S::DESCRIPTOR_TABLE_EXITING)),
        // SDM 26.3: with EPT off in VMCS12 the fault is in L0's EPT01.
        R::EptViolation | R::EptMisconfiguration => {
            if secondary(S::ENABLE_EPT) {
                Decision::EptFault
            } else {
                Decision::HandleInL0(L0Reason::L0Feature)
            }
        }
        R::PreemptionTimerExpired => {
            if c.pin.contains(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER) {
                Decision::ReflectToL1
            } else {
                Decision::HandleInL0(L0Reason::L0Feature)
            }
        }
        R::WbinvdOrWbnoinvd => when(secondary(S::WBINVD_EXITING)),
        R::Rdrand => when(secondary(S::RDRAND_EXITING)),
        R::Rdseed => when(secondary(S::RDSEED_EXITING)),
        R::Invpcid => enabled_and(secondary(S::ENABLE_INVPCID), primary(P::INVLPG_EXITING)),
        R::Vmfunc => {
            if secondary(S::ENABLE_VM_FUNCTIONS) {
                Decision::HandleInL0(L0Reason::EmulatedByL0)
            } else {
                Decision::HandleInL0(L0Reason::DisabledForL2)
            }
        }
        R::Encls => when(
            secondary(S::ENABLE_ENCLS_EXITING)
                && leaf_bitmap_wants_exit(
                    vmcs12.read_field(VmcsField::EnclsExitingBitmap),
                    l2.eax(),
                ),
        ),
        R::Enclv => when(
            secondary(S::ENABLE_ENCLV_EXITING)
                && leaf_bitmap_wants_exit(
                    vmcs12.read_field(VmcsField::EnclvExitingBitmap),
                    l2.eax(),
                ),
        ),
        R::Pconfig => enabled_and(
            secondary(S::ENABLE_PCONFIG),
            leaf_bitmap_wants_exit(
                vmcs12.read_field(VmcsField::PconfigExitingBitmap),
                l2.eax(),
            ),
        ),
        R::PmlFull => when(secondary(S::ENABLE_PML)),
        // SDM 26.1.3: XSAVES/XRSTORS exit when EDX:EAX, IA32_XSS and the
        // XSS-exiting bitmap share a set bit.
        R::Xsaves | R::Xrstors => enabled_and(
            secondary(S::ENABLE_XSAVES_XRSTORS),
            l2.edx_eax() & l2.ia32_xss & vmcs12.read_field(VmcsField::XssExitingBitmap) != 0,
        ),
        R::SppRelatedEvent => when(secondary(S::SUB_PAGE_WRITE_PERMISSIONS_FOR_EPT)),
        // SDM 26.1.3: UMWAIT and TPAUSE exit with "RDTSC exiting".
        R::Umwait | R::Tpause => enabled_and(
            secondary(S::ENABLE_USER_WAIT_AND_PAUSE),
            primary(P::RDTSC_EXITING),
        ),
        R::Loadiwkey => when(c.tertiary.contains(TertiaryProcControls::LOADIWKEY_EXITING)),
        R::EnqcmdPasidTranslationFailure | R::EnqcmdsPasidTranslationFailure => {
            when(secondary(S::PASID_TRANSLATION))
        }
        R::BusLock => when(secondary(S::VMM_BUS_LOCK_DETECTION)),
        R::InstructionTimeout => when(secondary(S::INSTRUCTION_TIMEOUT)),
        // Simplified: the per-MSR bitmap check of the list instructions is
        // not modelled; with the instructions enabled every such exit is L1's.
        R::Rdmsrlist | R::Wrmsrlist => enabled_and(
            c.tertiary
                .contains(TertiaryProcControls::ENABLE_MSRLIST_INSTRUCTIONS),
            true,
        ),
        R::Unknown(number) => Decision::HandleInL0(L0Reason::UnknownReason(number)),
    };
    Ok(decision)
}

/// SDM 26.2: NMIs exit with "NMI exiting"; exceptions exit per the
/// exception bitmap, and #PF per bit 14 together with the error-code mask
/// and match: if `(PFEC & mask) == match` bit 14 decides, otherwise its
/// complement does.
fn exception_or_nmi(
    vmcs12: &impl VmcsRead,
    controls: &Controls,
    exit: &Exit,
) -> Result<Decision, ReflectError> {
    let info = exit.interruption_info;
    if !info.is_valid() {
        return Err(ReflectError::MissingInterruptionInfo { info: info.raw() });
    }
    match info.interruption_type() {
        InterruptionType::Nmi => Ok(when(controls.pin.contains(PinBasedControls::NMI_EXITING))),
        InterruptionType::HardwareException
        | InterruptionType::SoftwareException
        | InterruptionType::PrivilegedSoftwareException => {
            let bitmap =
                ExceptionBitmap::from_raw(vmcs12.read_field(VmcsField::ExceptionBitmap) as u32);
            let vector = info.exception();
            if vector == ExceptionVector::PageFault {
                let mask = vmcs12.read_field(VmcsField::PageFaultErrorCodeMask) as u32;
                let expected = vmcs12.read_field(VmcsField::PageFaultErrorCodeMatch) as u32;
                let matches = exit.interruption_error_code & mask == expected;
                Ok(when(bitmap.intercepts(vector) == matches))
            } else {
                Ok(when(bitmap.intercepts(vector)))
            }
        }
        kind => Err(ReflectError::UnexpectedInterruptionType {
            kind,
            info: info.raw(),
        }),
    }
}

/// Whether `value` differs from the read shadow in a bit the guest/host
/// mask owns (SDM 26.1.3, MOV to CR0 / MOV to CR4).
fn masked_bits_differ(
    vmcs12: &impl VmcsRead,
    mask: VmcsField,
    shadow: VmcsField,
    value: u64,
) -> bool {
    (value ^ vmcs12.read_field(shadow)) & vmcs12.read_field(mask) != 0
}

/// Whether `value` equals one of the first CR3-target-count CR3-target
/// values. A count above 4 fails VM entry, so it cannot occur in a running
/// L2; it is clamped to 4 rather than trusted.
fn is_cr3_target(vmcs12: &impl VmcsRead, value: u64) -> bool {
    const TARGETS: [VmcsField; 4] = [
        VmcsField::Cr3TargetValue0,
        VmcsField::Cr3TargetValue1,
        VmcsField::Cr3TargetValue2,
        VmcsField::Cr3TargetValue3,
    ];
    let count = vmcs12.read_field(VmcsField::Cr3TargetCount).min(4) as usize;
    TARGETS[..count]
        .iter()
        .any(|&target| vmcs12.read_field(target) == value)
}

/// SDM 26.1.3: MOV to/from CR, CLTS and LMSW.
fn control_register_access(
    vmcs12: &impl VmcsRead,
    controls: &Controls,
    exit: &Exit,
    l2: &L2Context,
) -> Result<Decision, ReflectError> {
    type P = PrimaryProcControls;
    let primary = |bit: P| controls.primary.contains(bit);
    let cr0_ts = Cr0::TS.bits();
    let decision = match ControlRegisterAccessQualification::from_raw(exit.qualification).decode() {
        ControlRegisterAccess::MovToCr { cr: 0, source } => when(masked_bits_differ(
            vmcs12,
            VmcsField::Cr0GuestHostMask,
            VmcsField::Cr0ReadShadow,
            l2.mov_source(source),
        )),
        ControlRegisterAccess::MovToCr { cr: 4, source } => when(masked_bits_differ(
            vmcs12,
            VmcsField::Cr4GuestHostMask,
            VmcsField::Cr4ReadShadow,
            l2.mov_source(source),
        )),
        ControlRegisterAccess::MovToCr { cr: 3, source } => {
            when(primary(P::CR3_LOAD_EXITING) && !is_cr3_target(vmcs12, l2.mov_source(source)))
        }
        // Simplified: with "use TPR shadow" a MOV to/from CR8 that does not
        // exit is virtualized by the processor; only the exiting controls
        // matter here.
        ControlRegisterAccess::MovToCr { cr: 8, .. } => when(primary(P::CR8_LOAD_EXITING)),
        ControlRegisterAccess::MovFromCr { cr: 3, .. } => when(primary(P::CR3_STORE_EXITING)),
        ControlRegisterAccess::MovFromCr { cr: 8, .. } => when(primary(P::CR8_STORE_EXITING)),
        ControlRegisterAccess::Clts => {
            let mask = vmcs12.read_field(VmcsField::Cr0GuestHostMask);
            let shadow = vmcs12.read_field(VmcsField::Cr0ReadShadow);
            when(mask & shadow & cr0_ts != 0)
        }
        ControlRegisterAccess::Lmsw { source_data, .. } => {
            let mask = vmcs12.read_field(VmcsField::Cr0GuestHostMask);
            let shadow = vmcs12.read_field(VmcsField::Cr0ReadShadow);
            let source = u64::from(source_data);
            let pe = Cr0::PE.bits();
            // LMSW can set CR0.PE but never clear it: bit 0 exits only when
            // it would go from 0 (shadow) to 1 (source).
            let sets_owned_pe = mask & source & !shadow & pe != 0;
            // Bits 3:1 (MP, EM, TS) exit whenever they differ.
            let changes_owned_low_bits = mask & (source ^ shadow) & 0b1110 != 0;
            when(sets_owned_pe || changes_owned_low_bits)
        }
        ControlRegisterAccess::MovToCr { .. } | ControlRegisterAccess::MovFromCr { .. } => {
            return Err(ReflectError::ImpossibleCrAccess {
                qualification: exit.qualification,
            });
        }
    };
    Ok(decision)
}

/// SDM 26.1.3: IN/INS/OUT/OUTS exit per the I/O bitmaps when "use I/O
/// bitmaps" is 1 ("unconditional I/O exiting" is then ignored), else per
/// "unconditional I/O exiting".
fn io_instruction(
    vmcs12: &impl VmcsRead,
    controls: &Controls,
    exit: &Exit,
    memory: &impl L1Access,
) -> Result<Decision, ReflectError> {
    let qualification = IoQualification::from_raw(exit.qualification);
    let size = qualification.size()?;
    if controls
        .primary
        .contains(PrimaryProcControls::USE_IO_BITMAPS)
    {
        Ok(when(io_bitmaps_want_exit(
            memory,
            L1Gpa::new(vmcs12.read_field(VmcsField::IoBitmapA)),
            L1Gpa::new(vmcs12.read_field(VmcsField::IoBitmapB)),
            qualification.port(),
            size.bytes(),
        )))
    } else {
        Ok(when(
            controls
                .primary
                .contains(PrimaryProcControls::UNCONDITIONAL_IO_EXITING),
        ))
    }
}

/// SDM 26.1.3: RDMSR/WRMSR always exit without "use MSR bitmaps";
/// otherwise the bitmaps decide (MSRs outside the covered ranges exit).
fn msr_access(
    vmcs12: &impl VmcsRead,
    controls: &Controls,
    l2: &L2Context,
    access: MsrAccessKind,
    memory: &impl L1Access,
) -> Decision {
    if !controls
        .primary
        .contains(PrimaryProcControls::USE_MSR_BITMAPS)
    {
        return Decision::ReflectToL1;
    }
    when(msr_bitmap_wants_exit(
        memory,
        L1Gpa::new(vmcs12.read_field(VmcsField::MsrBitmap)),
        l2.ecx(),
        access,
    ))
}

/// Bit `vector` of the EOI-exit bitmap (four 64-bit fields, SDM 25.6.8).
fn eoi_exit_bitmap_bit(vmcs12: &impl VmcsRead, vector: u8) -> bool {
    let field = match vector / 64 {
        0 => VmcsField::EoiExitBitmap0,
        1 => VmcsField::EoiExitBitmap1,
        2 => VmcsField::EoiExitBitmap2,
        _ => VmcsField::EoiExitBitmap3,
    };
    vmcs12.read_field(field) & (1 << (vector % 64)) != 0
}
