//! Delivering an exit to L1: what the processor does on a VM exit (SDM
//! 28.2-28.7) and on a VM-entry failure (SDM 27.8), with VMCS12 as the
//! VMCS and [`L1Cpu`] as the processor.
//!
//! Order (SDM 28, "VM Exits"): record the exit information (28.2), save
//! L2's state into the guest-state area (28.3), store L2's MSRs (28.4),
//! load L1's host state (28.5), load L1's MSRs (28.6). A failure in the MSR
//! areas or the host PDPTEs is a VMX abort (28.7): the caller writes
//! [`VmxAbort::indicator`] into the abort field of L1's VMCS region and
//! puts L1's vCPU into the shutdown state. VMCS12 and `L1Cpu` are then
//! partly updated, which is fine because L1 never runs again.

use hv_arch_vmx::checks::GuestCheck;
use hv_arch_vmx::controls::{
    ControlWord, EntryControls, ExitControls, PrimaryProcControls, SecondaryExitControls,
    SecondaryProcControls,
};
use hv_arch_vmx::exit::{ExitReason, ExitReasonWord};
use hv_arch_vmx::interruption::{Interruptibility, InterruptionInfo};
use hv_arch_vmx::registers::{Cr0, Cr4, Dr7, Efer, Rflags};
use hv_arch_vmx::vmcs::{VmcsField, VmcsImage};
use hv_mmu::addr::L1Gpa;

use crate::state::{Exit, Gprs, L1Access, L1Cpu, Segment};

/// The platform refused an MSR access: RDMSR or WRMSR at CPL 0 would have
/// raised #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("access to MSR {index:#x} faults (#GP)")]
pub struct MsrFault {
    /// The MSR index.
    pub index: u32,
}

/// The MSRs of the vCPU as a VM exit reads and writes them. hv-core does
/// not model every MSR, so the engine (or the software model) supplies
/// them.
pub trait MsrAccess {
    /// Reads MSR `index` as the processor holds it at the exit, that is
    /// L2's value (for the VM-exit MSR-store area, SDM 28.4).
    ///
    /// # Errors
    ///
    /// [`MsrFault`] when RDMSR of `index` would raise #GP.
    fn read_msr(&mut self, index: u32) -> Result<u64, MsrFault>;

    /// Writes `value` into MSR `index` for L1, as WRMSR at CPL 0 would
    /// (host-state MSRs, SDM 28.5.1, and the VM-exit MSR-load area, 28.6).
    ///
    /// # Errors
    ///
    /// [`MsrFault`] when WRMSR of `value` to `index` would raise #GP.
    fn write_msr(&mut self, index: u32, value: u64) -> Result<(), MsrFault>;
}

/// L2's register state at the exit, as VMCS12 must record it.
///
/// The caller fills `guest` from VMCS02's guest-state area, adjusted to
/// what L1 must see:
///
/// - `GUEST_CR0`/`GUEST_CR4`: bits L1 owns (set in VMCS12's guest/host
///   mask) keep VMCS12's current guest value; bits only L0 owns come from
///   VMCS02's read shadow (what L2 believes); the rest from VMCS02's guest
///   CR0/CR4 (KVM's `vmcs12_guest_cr0`).
/// - `GUEST_IA32_EFER`: L2's real EFER, even when VMCS12 does not save
///   it: it decides the "IA-32e mode guest" entry control and which EFER
///   bits L1 keeps.
/// - `VMX_PREEMPTION_TIMER_VALUE`: what remains of L1's timer, not L0's.
/// - Every other guest-state field as VMCS02 holds it (segments, GDTR,
///   IDTR, RIP, RSP, RFLAGS, DR7, DEBUGCTL, PAT, SYSENTER, activity state,
///   interruptibility, pending debug exceptions, PDPTEs, interrupt status,
///   PML index, FRED).
///
/// `gprs` are L2's general-purpose registers; L1 gets them unchanged except
/// RSP (index 4 is ignored: `GUEST_RSP` is saved, `HOST_RSP` loaded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L2Exited {
    /// VMCS02's guest-state fields at the exit (see above).
    pub guest: VmcsImage,
    /// L2's general-purpose registers.
    pub gprs: Gprs,
}

/// GDTR or IDTR: a base and a 16-bit limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DescriptorTableRegister {
    /// Linear base address.
    pub base: u64,
    /// Limit in bytes.
    pub limit: u16,
}

/// The L1 state a VM exit loads that [`L1Cpu`] has no place for (SDM
/// 28.5.1-28.5.2): the caller applies it to L1's vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L1SystemRegisters {
    /// TR: host selector and base, limit 67H, busy TSS.
    pub tr: Segment,
    /// LDTR: null selector, unusable.
    pub ldtr: Segment,
    /// GDTR: host base, limit FFFFH.
    pub gdtr: DescriptorTableRegister,
    /// IDTR: host base, limit FFFFH.
    pub idtr: DescriptorTableRegister,
    /// DR7: 400H.
    pub dr7: u64,
}

/// Why a nested VM entry failed after VMCS12's controls and host state
/// passed their checks (SDM 27.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryFailure {
    /// A guest-state check failed: exit reason 33, qualification from the
    /// check (0, or 2/3/4 per SDM 27.8).
    InvalidGuestState(GuestCheck),
    /// Loading VM-entry MSR-load entry `entry` (1-based) failed: exit
    /// reason 34, qualification `entry`.
    MsrLoading {
        /// The 1-based number of the failing entry.
        entry: u32,
    },
}

/// What was wrong with an entry of a VM-exit MSR-store or MSR-load area.
/// `entry` is 0-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum MsrAreaFault {
    /// The area has more entries than the 512 * 8 = 4096 any processor
    /// recommends (`IA32_VMX_MISC` bits 27:25, SDM A.6); hv does not walk
    /// longer areas.
    #[error("MSR area count {count} exceeds the architectural maximum")]
    TooManyEntries {
        /// The count field.
        count: u32,
    },
    /// The entry is not in L1 memory (or its address overflows).
    #[error("MSR area entry {entry} at {address:#x} is not L1 memory")]
    NotL1Memory {
        /// The entry number.
        entry: u32,
        /// Where the entry (or its data half) should be.
        address: u64,
    },
    /// Bits 63:32 of the entry are not 0.
    #[error("MSR area entry {entry} sets reserved bits 63:32 ({reserved:#x})")]
    ReservedBits {
        /// The entry number.
        entry: u32,
        /// Bits 63:32.
        reserved: u32,
    },
    /// The MSR may not appear in this area (x2APIC MSRs, SMBASE, FS/GS
    /// base, SMM-only and model-specific MSRs, SDM 28.4 and 28.6).
    #[error("MSR area entry {entry} names MSR {index:#x}, which this area may not access")]
    ForbiddenMsr {
        /// The entry number.
        entry: u32,
        /// The MSR index.
        index: u32,
    },
    /// RDMSR (store) or WRMSR (load) of the entry would raise #GP.
    #[error("MSR area entry {entry}: access to MSR {index:#x} faults")]
    MsrFaulted {
        /// The entry number.
        entry: u32,
        /// The MSR index.
        index: u32,
    },
}

/// A VMX abort (SDM 28.7): the VM exit cannot complete and L1's vCPU
/// shuts down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum VmxAbort {
    /// Indicator 1: saving guest MSRs failed.
    #[error("VMX abort 1, saving guest MSRs failed: {0}")]
    SaveGuestMsr(MsrAreaFault),
    /// Indicator 2: a host PDPTE (PAE host) sets reserved bits or could not
    /// be read.
    #[error("VMX abort 2, host PDPTE {index} ({pdpte:#x}) is invalid")]
    HostPdpte {
        /// 0-3.
        index: u8,
        /// The PDPTE (all ones when it could not be read).
        pdpte: u64,
    },
    /// Indicator 4: loading host MSRs failed.
    #[error("VMX abort 4, loading host MSRs failed: {0}")]
    LoadHostMsr(MsrAreaFault),
    /// Indicator 6: the processor was in IA-32e mode before the exit and
    /// "host address-space size" is 0.
    #[error("VMX abort 6, IA-32e mode before the exit with host address-space size 0")]
    Ia32eModeWithoutHostAddressSpaceSize,
}

impl VmxAbort {
    /// The VMX-abort indicator the processor writes at offset 4 of the
    /// VMCS region (SDM 28.7).
    pub const fn indicator(&self) -> u32 {
        match self {
            Self::SaveGuestMsr(_) => 1,
            Self::HostPdpte { .. } => 2,
            Self::LoadHostMsr(_) => 4,
            Self::Ia32eModeWithoutHostAddressSpaceSize => 6,
        }
    }
}

/// Why delivering an exit to L1 did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DeliveryError {
    /// The architecture says the exit ends in a VMX abort.
    #[error(transparent)]
    VmxAbort(#[from] VmxAbort),
    /// The platform refused a host-state MSR that the VM-entry checks had
    /// accepted (a platform limitation, not an architectural outcome).
    #[error("the platform refused host-state MSR {0}")]
    HostStateMsr(MsrFault),
}

// MSR indices (SDM Vol. 4).
const IA32_SYSENTER_CS: u32 = 0x174;
const IA32_SYSENTER_ESP: u32 = 0x175;
const IA32_SYSENTER_EIP: u32 = 0x176;
const IA32_DEBUGCTL: u32 = 0x1d9;
const IA32_PAT: u32 = 0x277;
const IA32_PERF_GLOBAL_CTRL: u32 = 0x38f;
const IA32_SPEC_CTRL: u32 = 0x48;
const IA32_BNDCFGS: u32 = 0xd90;
const IA32_RTIT_CTL: u32 = 0x570;
const IA32_LBR_CTL: u32 = 0x14ce;
const IA32_S_CET: u32 = 0x6a2;
const IA32_INTERRUPT_SSP_TABLE_ADDR: u32 = 0x6a8;
const IA32_PKRS: u32 = 0x6e1;
const IA32_EFER: u32 = 0xc000_0080;
const IA32_FS_BASE: u32 = 0xc000_0100;
const IA32_GS_BASE: u32 = 0xc000_0101;
const IA32_SMBASE: u32 = 0x9e;
const IA32_SMM_MONITOR_CTL: u32 = 0x9b;
const IA32_BIOS_UPDT_TRIG: u32 = 0x79;
const IA32_BIOS_SIGN_ID: u32 = 0x8b;

/// The most MSR-area entries any processor recommends: 512 * (7 + 1).
const MAX_MSR_AREA_ENTRIES: u32 = 512 * 8;
/// Each MSR-area entry is 16 bytes: index (31:0), reserved (63:32), data
/// (127:64) (SDM 25.7.2, Table 25-15).
const MSR_AREA_ENTRY_BYTES: u64 = 16;

/// Access rights of the segments a VM exit loads (SDM 28.5.2).
const AR_UNUSABLE: u32 = 1 << 16;
/// Code, execute/read, accessed (type 11), S, P, L, G.
const AR_HOST_CS_64: u32 = 0xa09b;
/// Code, execute/read, accessed (type 11), S, P, D/B, G.
const AR_HOST_CS_32: u32 = 0xc09b;
/// Data, read/write, accessed (type 3), S, P, D/B, G.
const AR_HOST_DATA: u32 = 0xc093;
/// Busy TSS (type 11), P.
const AR_HOST_TR: u32 = 0x008b;
/// The access-rights bits a VM exit saves: 7:0, 15:12 and 16 (SDM 28.3.2).
const AR_SAVED_BITS: u64 = 0x1_f0ff;

/// CR0 bits a VM exit leaves as they were (SDM 28.5.1): ET, CD, NW and the
/// reserved bits 63:32, 28:19, 17 and 15:6. The bits fixed in VMX
/// operation are also "not modified"; `HOST_CR0` already holds their fixed
/// values (the host-state checks of SDM 27.2.2 ran at the nested entry),
/// so they are taken from it.
const CR0_KEPT_ON_EXIT: u64 = 0xffff_ffff_0000_0000
    | 0x1ff8_0000
    | (1 << 17)
    | 0xffc0
    | Cr0::ET.bits()
    | Cr0::CD.bits()
    | Cr0::NW.bits();

/// Delivers `exit`, which L2 just took, to L1: writes the exit-information
/// fields and L2's state (`l2`) into `vmcs12`, stores L2's MSRs into the
/// VM-exit MSR-store area, then loads L1's host state into `l1` and the
/// VM-exit MSR-load area through `msrs` (SDM 28.2-28.6).
///
/// Returns the part of L1's new state that [`L1Cpu`] has no place for.
///
/// # Errors
///
/// [`DeliveryError::VmxAbort`] when the architecture ends the exit in a
/// VMX abort (a bad MSR-area entry, a bad host PDPTE, SDM 28.7);
/// [`DeliveryError::HostStateMsr`] when `msrs` refuses a host-state MSR.
pub fn deliver_exit_to_l1(
    vmcs12: &mut VmcsImage,
    exit: &Exit,
    l2: &L2Exited,
    l1: &mut L1Cpu,
    memory: &mut impl L1Access,
    msrs: &mut impl MsrAccess,
) -> Result<L1SystemRegisters, DeliveryError> {
    record_exit_information(vmcs12, exit);
    // SDM 28.2 ("updating VM-entry control fields"): every VM exit clears
    // the valid bit of the VM-entry interruption-information field.
    let entry_info = vmcs12.get(VmcsField::VmEntryInterruptionInfo);
    vmcs12.set(
        VmcsField::VmEntryInterruptionInfo,
        entry_info & !u64::from(InterruptionInfo::VALID),
    );
    save_guest_state(vmcs12, &l2.guest);
    store_guest_msrs(vmcs12, memory, msrs)?;

    let before = StateBeforeExit {
        cr0: l2.guest.get(VmcsField::GuestCr0),
        efer: l2.guest.get(VmcsField::GuestEfer),
    };
    l1.gprs = l2.gprs;
    load_host_state(vmcs12, before, l1, memory, msrs)
}

/// Delivers a VM-entry failure of a nested VMLAUNCH/VMRESUME to L1 (SDM
/// 27.8): writes only the exit reason (with bit 31 set) and the exit
/// qualification, saves no guest state, and loads L1's host state and the
/// VM-exit MSR-load area. `l1` holds the processor state at the failure
/// (L1's, since guest state is checked before anything is loaded).
///
/// # Errors
///
/// As [`deliver_exit_to_l1`].
pub fn deliver_entry_failure(
    vmcs12: &mut VmcsImage,
    failure: &EntryFailure,
    l1: &mut L1Cpu,
    memory: &mut impl L1Access,
    msrs: &mut impl MsrAccess,
) -> Result<L1SystemRegisters, DeliveryError> {
    let (reason, qualification) = match failure {
        EntryFailure::InvalidGuestState(check) => (
            ExitReason::EntryFailInvalidGuestState,
            check.exit_qualification(),
        ),
        EntryFailure::MsrLoading { entry } => (ExitReason::EntryFailMsrLoading, u64::from(*entry)),
    };
    vmcs12.set(
        VmcsField::ExitReason,
        u64::from(ExitReasonWord::new(reason).with_entry_failure().raw()),
    );
    vmcs12.set(VmcsField::ExitQualification, qualification);
    let before = StateBeforeExit {
        cr0: l1.cr0,
        efer: l1.efer,
    };
    load_host_state(vmcs12, before, l1, memory, msrs)
}

/// SDM 28.2: the exit-information fields.
fn record_exit_information(vmcs12: &mut VmcsImage, exit: &Exit) {
    let exit_controls = ExitControls::from_raw(vmcs12.get(VmcsField::PrimaryVmExitControls));
    // SDM 28.2.2: an external-interrupt exit reports the interrupt only
    // when "acknowledge interrupt on exit" is 1; otherwise the field is
    // invalid.
    let interruption_info = if exit.reason.reason() == ExitReason::ExternalInterrupt
        && !exit_controls.contains(ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT)
    {
        InterruptionInfo::INVALID
    } else {
        exit.interruption_info
    };
    let fields = [
        (VmcsField::ExitReason, u64::from(exit.reason.raw())),
        (VmcsField::ExitQualification, exit.qualification),
        (VmcsField::GuestLinearAddress, exit.guest_linear_address),
        (VmcsField::GuestPhysicalAddress, exit.guest_physical_address),
        (
            VmcsField::VmExitInterruptionInfo,
            u64::from(interruption_info.raw()),
        ),
        (
            VmcsField::VmExitInterruptionErrorCode,
            u64::from(exit.interruption_error_code),
        ),
        (
            VmcsField::IdtVectoringInfo,
            u64::from(exit.idt_vectoring_info.raw()),
        ),
        (
            VmcsField::IdtVectoringErrorCode,
            u64::from(exit.idt_vectoring_error_code),
        ),
        (
            VmcsField::VmExitInstructionLength,
            u64::from(exit.instruction_length),
        ),
        (
            VmcsField::VmxInstructionInfo,
            u64::from(exit.instruction_info),
        ),
    ];
    for (field, value) in fields {
        vmcs12.set(field, value);
    }
}

/// Guest-state fields every VM exit saves (SDM 28.3.1-28.3.4).
const ALWAYS_SAVED: [VmcsField; 14] = [
    VmcsField::GuestCr0,
    VmcsField::GuestCr3,
    VmcsField::GuestCr4,
    VmcsField::GuestRsp,
    VmcsField::GuestRip,
    VmcsField::GuestRflags,
    VmcsField::GuestGdtrBase,
    VmcsField::GuestIdtrBase,
    VmcsField::GuestSysenterCs,
    VmcsField::GuestSysenterEsp,
    VmcsField::GuestSysenterEip,
    VmcsField::GuestActivityState,
    VmcsField::GuestInterruptibilityState,
    VmcsField::GuestPendingDebugExceptions,
];

/// Selector, base, limit and access rights of each segment register.
const SEGMENTS: [[VmcsField; 4]; 8] = [
    [
        VmcsField::GuestEsSelector,
        VmcsField::GuestEsBase,
        VmcsField::GuestEsLimit,
        VmcsField::GuestEsAccessRights,
    ],
    [
        VmcsField::GuestCsSelector,
        VmcsField::GuestCsBase,
        VmcsField::GuestCsLimit,
        VmcsField::GuestCsAccessRights,
    ],
    [
        VmcsField::GuestSsSelector,
        VmcsField::GuestSsBase,
        VmcsField::GuestSsLimit,
        VmcsField::GuestSsAccessRights,
    ],
    [
        VmcsField::GuestDsSelector,
        VmcsField::GuestDsBase,
        VmcsField::GuestDsLimit,
        VmcsField::GuestDsAccessRights,
    ],
    [
        VmcsField::GuestFsSelector,
        VmcsField::GuestFsBase,
        VmcsField::GuestFsLimit,
        VmcsField::GuestFsAccessRights,
    ],
    [
        VmcsField::GuestGsSelector,
        VmcsField::GuestGsBase,
        VmcsField::GuestGsLimit,
        VmcsField::GuestGsAccessRights,
    ],
    [
        VmcsField::GuestLdtrSelector,
        VmcsField::GuestLdtrBase,
        VmcsField::GuestLdtrLimit,
        VmcsField::GuestLdtrAccessRights,
    ],
    [
        VmcsField::GuestTrSelector,
        VmcsField::GuestTrBase,
        VmcsField::GuestTrLimit,
        VmcsField::GuestTrAccessRights,
    ],
];

/// The FRED guest MSR fields ("save `IA32_FRED`", secondary exit control).
const FRED_GUEST_FIELDS: [VmcsField; 8] = [
    VmcsField::GuestFredConfig,
    VmcsField::GuestFredRsp1,
    VmcsField::GuestFredRsp2,
    VmcsField::GuestFredRsp3,
    VmcsField::GuestFredStklvls,
    VmcsField::GuestFredSsp1,
    VmcsField::GuestFredSsp2,
    VmcsField::GuestFredSsp3,
];

/// SDM 28.3: saves L2's state into VMCS12's guest-state area.
fn save_guest_state(vmcs12: &mut VmcsImage, guest: &VmcsImage) {
    let copy = |vmcs12: &mut VmcsImage, field: VmcsField| vmcs12.set(field, guest.get(field));
    for field in ALWAYS_SAVED {
        copy(vmcs12, field);
    }
    // SDM 28.3.4: exits that end outside SMM save blocking by SMI as 0.
    vmcs12.set(
        VmcsField::GuestInterruptibilityState,
        guest.get(VmcsField::GuestInterruptibilityState)
            & !u64::from(Interruptibility::BLOCKING_BY_SMI.bits()),
    );
    // SDM 28.3.3: GDTR/IDTR limits are 16 bits.
    for field in [VmcsField::GuestGdtrLimit, VmcsField::GuestIdtrLimit] {
        vmcs12.set(field, guest.get(field) & 0xffff);
    }
    // SDM 28.3.2: selector, base, limit and access rights; the reserved
    // access-rights bits (11:8, 31:17) are saved as 0.
    for [selector, base, limit, access_rights] in SEGMENTS {
        copy(vmcs12, selector);
        copy(vmcs12, base);
        copy(vmcs12, limit);
        vmcs12.set(access_rights, guest.get(access_rights) & AR_SAVED_BITS);
    }

    // SDM 28.3.1: MSRs and DR7 per the "save" exit controls.
    let exit_controls = ExitControls::from_raw(vmcs12.get(VmcsField::PrimaryVmExitControls));
    let saves = |bit: ExitControls| exit_controls.contains(bit);
    if saves(ExitControls::SAVE_DEBUG_CONTROLS) {
        copy(vmcs12, VmcsField::GuestDr7);
        copy(vmcs12, VmcsField::GuestDebugCtl);
    }
    if saves(ExitControls::SAVE_IA32_PAT) {
        copy(vmcs12, VmcsField::GuestPat);
    }
    if saves(ExitControls::SAVE_IA32_EFER) {
        copy(vmcs12, VmcsField::GuestEfer);
    }
    if saves(ExitControls::SAVE_IA32_PERF_GLOBAL_CTRL) {
        copy(vmcs12, VmcsField::GuestPerfGlobalCtrl);
    }
    if saves(ExitControls::ACTIVATE_SECONDARY_CONTROLS)
        && SecondaryExitControls::from_raw(vmcs12.get(VmcsField::SecondaryVmExitControls))
            .contains(SecondaryExitControls::SAVE_IA32_FRED)
    {
        for field in FRED_GUEST_FIELDS {
            copy(vmcs12, field);
        }
    }
    // SDM 28.3.4: the preemption-timer value per its save control.
    if saves(ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE) {
        copy(vmcs12, VmcsField::VmxPreemptionTimerValue);
    }

    // SDM 28.3.4: guest interrupt status with virtual-interrupt delivery,
    // PML index with PML; SDM 28.3.3 (end): PDPTEs with EPT and PAE paging.
    let primary = PrimaryProcControls::from_raw(vmcs12.get(VmcsField::PrimaryProcBasedControls));
    let secondary = if primary.contains(PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS) {
        SecondaryProcControls::from_raw(vmcs12.get(VmcsField::SecondaryProcBasedControls))
    } else {
        SecondaryProcControls::empty()
    };
    if secondary.contains(SecondaryProcControls::VIRTUAL_INTERRUPT_DELIVERY) {
        copy(vmcs12, VmcsField::GuestInterruptStatus);
    }
    if secondary.contains(SecondaryProcControls::ENABLE_PML) {
        copy(vmcs12, VmcsField::GuestPmlIndex);
    }
    let cr0 = Cr0::from_bits_retain(guest.get(VmcsField::GuestCr0));
    let cr4 = Cr4::from_bits_retain(guest.get(VmcsField::GuestCr4));
    let efer = Efer::from_bits_retain(guest.get(VmcsField::GuestEfer));
    let ia32e_mode = efer.contains(Efer::LMA);
    if secondary.contains(SecondaryProcControls::ENABLE_EPT)
        && cr0.contains(Cr0::PG)
        && cr4.contains(Cr4::PAE)
        && !ia32e_mode
    {
        for field in [
            VmcsField::GuestPdpte0,
            VmcsField::GuestPdpte1,
            VmcsField::GuestPdpte2,
            VmcsField::GuestPdpte3,
        ] {
            copy(vmcs12, field);
        }
    }

    // SDM 28.2 ("updating VM-entry control fields"): the "IA-32e mode
    // guest" entry control receives IA32_EFER.LMA.
    let mut entry = EntryControls::from_raw(vmcs12.get(VmcsField::VmEntryControls));
    entry.set(EntryControls::IA32E_MODE_GUEST, ia32e_mode);
    vmcs12.set(VmcsField::VmEntryControls, entry.to_raw());
}

/// The address of MSR-area entry `entry` at `base`, or `None` on overflow.
fn msr_entry_address(base: u64, entry: u32) -> Option<u64> {
    base.checked_add(u64::from(entry) * MSR_AREA_ENTRY_BYTES)
}

/// Reads `buf.len()` bytes at `address`; `None` when not L1 memory.
fn read_l1(memory: &impl L1Access, address: u64, buf: &mut [u8]) -> Option<()> {
    memory.read_bytes(L1Gpa::new(address), buf).ok()
}

/// The MSR-area count, refused above the architectural maximum.
fn msr_area_count(vmcs12: &VmcsImage, field: VmcsField) -> Result<u32, MsrAreaFault> {
    let count = vmcs12.get(field) as u32;
    if count > MAX_MSR_AREA_ENTRIES {
        return Err(MsrAreaFault::TooManyEntries { count });
    }
    Ok(count)
}

/// Bits 31:0 and 63:32 of an MSR-area entry's first quadword.
fn split_entry_head(head: [u8; 8]) -> (u32, u32) {
    let word = u64::from_le_bytes(head);
    (word as u32, (word >> 32) as u32)
}

/// SDM 28.4: stores L2's MSRs into the VM-exit MSR-store area.
fn store_guest_msrs(
    vmcs12: &VmcsImage,
    memory: &mut impl L1Access,
    msrs: &mut impl MsrAccess,
) -> Result<(), DeliveryError> {
    let abort = |fault| DeliveryError::VmxAbort(VmxAbort::SaveGuestMsr(fault));
    let count = msr_area_count(vmcs12, VmcsField::VmExitMsrStoreCount).map_err(abort)?;
    let base = vmcs12.get(VmcsField::VmExitMsrStoreAddress);
    for entry in 0..count {
        let not_l1_memory = |address| abort(MsrAreaFault::NotL1Memory { entry, address });
        let address = msr_entry_address(base, entry).ok_or_else(|| not_l1_memory(base))?;
        let mut head = [0u8; 8];
        read_l1(memory, address, &mut head).ok_or_else(|| not_l1_memory(address))?;
        let (index, reserved) = split_entry_head(head);
        if reserved != 0 {
            return Err(abort(MsrAreaFault::ReservedBits { entry, reserved }));
        }
        // SDM 28.4: x2APIC MSRs (bits 31:8 = 000008H) and IA32_SMBASE may
        // not be stored.
        if index >> 8 == 0x8 || index == IA32_SMBASE {
            return Err(abort(MsrAreaFault::ForbiddenMsr { entry, index }));
        }
        let value = msrs
            .read_msr(index)
            .map_err(|_| abort(MsrAreaFault::MsrFaulted { entry, index }))?;
        let data = address
            .checked_add(8)
            .ok_or_else(|| not_l1_memory(address))?;
        memory
            .write_bytes(L1Gpa::new(data), &value.to_le_bytes())
            .map_err(|_| not_l1_memory(data))?;
    }
    Ok(())
}

/// SDM 28.6: the MSRs a VM-exit MSR-load entry may not name: FS/GS base
/// (loaded from the host-state area), x2APIC MSRs, the SMM-only
/// `IA32_SMM_MONITOR_CTL`, and the microcode-update MSRs that processors
/// refuse for model-specific reasons (as KVM does).
const fn msr_forbidden_in_load_area(index: u32) -> bool {
    matches!(
        index,
        IA32_FS_BASE
            | IA32_GS_BASE
            | IA32_SMM_MONITOR_CTL
            | IA32_BIOS_UPDT_TRIG
            | IA32_BIOS_SIGN_ID
    ) || index >> 8 == 0x8
}

/// SDM 28.6: loads L1's MSRs from the VM-exit MSR-load area.
fn load_host_msrs(
    vmcs12: &VmcsImage,
    l1: &mut L1Cpu,
    memory: &impl L1Access,
    msrs: &mut impl MsrAccess,
) -> Result<(), DeliveryError> {
    let abort = |fault| DeliveryError::VmxAbort(VmxAbort::LoadHostMsr(fault));
    let count = msr_area_count(vmcs12, VmcsField::VmExitMsrLoadCount).map_err(abort)?;
    let base = vmcs12.get(VmcsField::VmExitMsrLoadAddress);
    for entry in 0..count {
        let not_l1_memory = |address| abort(MsrAreaFault::NotL1Memory { entry, address });
        let address = msr_entry_address(base, entry).ok_or_else(|| not_l1_memory(base))?;
        let mut bytes = [0u8; 16];
        read_l1(memory, address, &mut bytes).ok_or_else(|| not_l1_memory(address))?;
        let [
            h0,
            h1,
            h2,
            h3,
            h4,
            h5,
            h6,
            h7,
            d0,
            d1,
            d2,
            d3,
            d4,
            d5,
            d6,
            d7,
        ] = bytes;
        let (index, reserved) = split_entry_head([h0, h1, h2, h3, h4, h5, h6, h7]);
        let value = u64::from_le_bytes([d0, d1, d2, d3, d4, d5, d6, d7]);
        if reserved != 0 {
            return Err(abort(MsrAreaFault::ReservedBits { entry, reserved }));
        }
        if msr_forbidden_in_load_area(index) {
            return Err(abort(MsrAreaFault::ForbiddenMsr { entry, index }));
        }
        msrs.write_msr(index, value)
            .map_err(|_| abort(MsrAreaFault::MsrFaulted { entry, index }))?;
        if index == IA32_EFER {
            // L1Cpu holds EFER; LMA is not writable by WRMSR.
            let lma = Efer::LMA.bits();
            l1.efer = (value & !lma) | (l1.efer & lma);
        }
    }
    Ok(())
}

/// The processor state just before the exit that a VM exit leaves partly
/// in place (SDM 28.5.1: CR0 bits it does not modify, EFER without "load
/// `IA32_EFER`").
#[derive(Clone, Copy)]
struct StateBeforeExit {
    cr0: u64,
    efer: u64,
}

/// A data segment as a VM exit loads it (SDM 28.5.2): unusable with a null
/// selector, else a flat read/write segment. Base, limit and attributes of
/// an unusable segment are undefined; hv uses base (FS/GS keep their host
/// base), limit 0 and DPL 0.
const fn host_data_segment(selector: u16, base: u64) -> Segment {
    if selector == 0 {
        Segment {
            selector,
            base,
            limit: 0,
            access_rights: AR_UNUSABLE,
        }
    } else {
        Segment {
            selector,
            base,
            limit: 0xffff_ffff,
            access_rights: AR_HOST_DATA,
        }
    }
}

/// Writes a host-state MSR through `msrs`.
fn write_host_msr(msrs: &mut impl MsrAccess, index: u32, value: u64) -> Result<(), DeliveryError> {
    msrs.write_msr(index, value)
        .map_err(DeliveryError::HostStateMsr)
}

/// The MSRs a VM exit loads or clears per the exit controls (SDM 28.5.1),
/// other than EFER (which `L1Cpu` holds).
fn load_host_msrs_from_fields(
    vmcs12: &VmcsImage,
    exit_controls: ExitControls,
    msrs: &mut impl MsrAccess,
) -> Result<(), DeliveryError> {
    let host = |field: VmcsField| vmcs12.get(field);
    // Always: DEBUGCTL cleared, SYSENTER from the host fields.
    write_host_msr(msrs, IA32_DEBUGCTL, 0)?;
    write_host_msr(msrs, IA32_SYSENTER_CS, host(VmcsField::HostSysenterCs))?;
    write_host_msr(msrs, IA32_SYSENTER_ESP, host(VmcsField::HostSysenterEsp))?;
    write_host_msr(msrs, IA32_SYSENTER_EIP, host(VmcsField::HostSysenterEip))?;

    let conditional: [(ExitControls, u32, u64); 8] = [
        (
            ExitControls::LOAD_IA32_PERF_GLOBAL_CTRL,
            IA32_PERF_GLOBAL_CTRL,
            host(VmcsField::HostPerfGlobalCtrl),
        ),
        (
            ExitControls::LOAD_IA32_PAT,
            IA32_PAT,
            host(VmcsField::HostPat),
        ),
        (ExitControls::CLEAR_IA32_BNDCFGS, IA32_BNDCFGS, 0),
        (ExitControls::CLEAR_IA32_RTIT_CTL, IA32_RTIT_CTL, 0),
        (ExitControls::CLEAR_IA32_LBR_CTL, IA32_LBR_CTL, 0),
        (
            ExitControls::LOAD_CET_STATE,
            IA32_S_CET,
            host(VmcsField::HostSCet),
        ),
        (
            ExitControls::LOAD_CET_STATE,
            IA32_INTERRUPT_SSP_TABLE_ADDR,
            host(VmcsField::HostInterruptSspTableAddress),
        ),
        (
            ExitControls::LOAD_PKRS,
            IA32_PKRS,
            host(VmcsField::HostPkrs),
        ),
    ];
    for (control, index, value) in conditional {
        if exit_controls.contains(control) {
            write_host_msr(msrs, index, value)?;
        }
    }

    if exit_controls.contains(ExitControls::ACTIVATE_SECONDARY_CONTROLS) {
        let secondary =
            SecondaryExitControls::from_raw(vmcs12.get(VmcsField::SecondaryVmExitControls));
        if secondary.contains(SecondaryExitControls::LOAD_IA32_SPEC_CTRL) {
            write_host_msr(msrs, IA32_SPEC_CTRL, host(VmcsField::HostSpecCtrl))?;
        }
        if secondary.contains(SecondaryExitControls::LOAD_IA32_FRED) {
            // IA32_FRED_RSP1-3 (1CDH-1CFH), STKLVLS (1D0H), SSP1-3
            // (1D1H-1D3H), CONFIG (1D4H).
            let fred = [
                (0x1cd, VmcsField::HostFredRsp1),
                (0x1ce, VmcsField::HostFredRsp2),
                (0x1cf, VmcsField::HostFredRsp3),
                (0x1d0, VmcsField::HostFredStklvls),
                (0x1d1, VmcsField::HostFredSsp1),
                (0x1d2, VmcsField::HostFredSsp2),
                (0x1d3, VmcsField::HostFredSsp3),
                (0x1d4, VmcsField::HostFredConfig),
            ];
            for (index, field) in fred {
                write_host_msr(msrs, index, host(field))?;
            }
        }
    }
    Ok(())
}

/// SDM 28.5.4: with PAE paging after the exit, the four PDPTEs at CR3 must
/// not set reserved bits (2:1, 8:5; bits 63:52 stand in for "beyond
/// MAXPHYADDR", which this layer does not know).
fn check_host_pdptes(l1: &L1Cpu, memory: &impl L1Access) -> Result<(), DeliveryError> {
    const RESERVED: u64 = 0b110 | 0x1e0 | (0xfff << 52);
    let table = l1.cr3 & 0xffff_ffe0;
    for index in 0..4u8 {
        let mut bytes = [0u8; 8];
        let pdpte = match read_l1(memory, table + u64::from(index) * 8, &mut bytes) {
            Some(()) => u64::from_le_bytes(bytes),
            None => u64::MAX,
        };
        if pdpte & 1 != 0 && pdpte & RESERVED != 0 {
            return Err(VmxAbort::HostPdpte { index, pdpte }.into());
        }
    }
    Ok(())
}

/// SDM 28.5-28.6: loads L1's host state from VMCS12, then the VM-exit
/// MSR-load area.
fn load_host_state(
    vmcs12: &VmcsImage,
    before: StateBeforeExit,
    l1: &mut L1Cpu,
    memory: &impl L1Access,
    msrs: &mut impl MsrAccess,
) -> Result<L1SystemRegisters, DeliveryError> {
    let host = |field: VmcsField| vmcs12.get(field);
    let selector = |field: VmcsField| host(field) as u16;
    let exit_controls = ExitControls::from_raw(host(VmcsField::PrimaryVmExitControls));
    let host_64bit = exit_controls.contains(ExitControls::HOST_ADDRESS_SPACE_SIZE);
    let long_mode = (Efer::LME | Efer::LMA).bits();

    // SDM 28.7: an exit from IA-32e mode to a host that is not 64-bit.
    if before.efer & Efer::LMA.bits() != 0 && !host_64bit {
        return Err(VmxAbort::Ia32eModeWithoutHostAddressSpaceSize.into());
    }

    // SDM 28.5.1: control registers.
    l1.cr0 = (before.cr0 & CR0_KEPT_ON_EXIT) | (host(VmcsField::HostCr0) & !CR0_KEPT_ON_EXIT);
    l1.cr3 = host(VmcsField::HostCr3);
    let mut cr4 = Cr4::from_bits_retain(host(VmcsField::HostCr4));
    if host_64bit {
        cr4.insert(Cr4::PAE);
    } else {
        cr4.remove(Cr4::PCIDE);
    }
    l1.cr4 = cr4.bits();
    // SDM 28.5.1: IA32_EFER from its field with "load IA32_EFER", else
    // only LME and LMA change, to the host address-space size.
    l1.efer = if exit_controls.contains(ExitControls::LOAD_IA32_EFER) {
        host(VmcsField::HostEfer)
    } else if host_64bit {
        before.efer | long_mode
    } else {
        before.efer & !long_mode
    };
    load_host_msrs_from_fields(vmcs12, exit_controls, msrs)?;

    // SDM 28.5.2: segment registers and descriptor tables.
    l1.cs = Segment {
        selector: selector(VmcsField::HostCsSelector),
        base: 0,
        limit: 0xffff_ffff,
        access_rights: if host_64bit {
            AR_HOST_CS_64
        } else {
            AR_HOST_CS_32
        },
    };
    l1.ss = host_data_segment(selector(VmcsField::HostSsSelector), 0);
    l1.ds = host_data_segment(selector(VmcsField::HostDsSelector), 0);
    l1.es = host_data_segment(selector(VmcsField::HostEsSelector), 0);
    l1.fs = host_data_segment(
        selector(VmcsField::HostFsSelector),
        host(VmcsField::HostFsBase),
    );
    l1.gs = host_data_segment(
        selector(VmcsField::HostGsSelector),
        host(VmcsField::HostGsBase),
    );
    let system = L1SystemRegisters {
        tr: Segment {
            selector: selector(VmcsField::HostTrSelector),
            base: host(VmcsField::HostTrBase),
            limit: 0x67,
            access_rights: AR_HOST_TR,
        },
        ldtr: Segment {
            selector: 0,
            base: 0,
            limit: 0,
            access_rights: AR_UNUSABLE,
        },
        gdtr: DescriptorTableRegister {
            base: host(VmcsField::HostGdtrBase),
            limit: 0xffff,
        },
        idtr: DescriptorTableRegister {
            base: host(VmcsField::HostIdtrBase),
            limit: 0xffff,
        },
        dr7: Dr7::RESET.bits(),
    };

    // SDM 28.5.3: RIP, RSP, RFLAGS.
    l1.rip = host(VmcsField::HostRip);
    l1.gprs.set(4, host(VmcsField::HostRsp));
    l1.rflags = Rflags::RESERVED_ONE.bits();

    // SDM 28.5.4: PAE host paging.
    if l1.cr0().contains(Cr0::PG) && l1.cr4().contains(Cr4::PAE) && !l1.in_ia32e_mode() {
        check_host_pdptes(l1, memory)?;
    }

    load_host_msrs(vmcs12, l1, memory, msrs)?;
    Ok(system)
}
