//! VMX control words as typed bit sets (SDM Vol. 3C 25.6-25.8, 26.7).
//!
//! Each control word is a [`bitflags`] type that implements [`ControlWord`],
//! which names the capability MSR that governs it and converts to and from
//! the raw value stored in the VMCS.

/// Which VMX control word a bit belongs to.
///
/// Used in errors so that a rejected bit is named with the word it lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlKind {
    /// Pin-based VM-execution controls (SDM 25.6.1).
    PinBased,
    /// Primary processor-based VM-execution controls (SDM 25.6.2).
    PrimaryProcessorBased,
    /// Secondary processor-based VM-execution controls (SDM 25.6.2).
    SecondaryProcessorBased,
    /// Tertiary processor-based VM-execution controls (SDM 25.6.2), 64 bits.
    TertiaryProcessorBased,
    /// Primary VM-exit controls (SDM 25.7.1).
    PrimaryExit,
    /// Secondary VM-exit controls (SDM 25.7.1), 64 bits.
    SecondaryExit,
    /// VM-entry controls (SDM 25.8.1).
    Entry,
    /// VM-function controls (SDM 25.6.14), 64 bits.
    VmFunction,
}

impl ControlKind {
    /// Human-readable name of the control word.
    pub const fn name(self) -> &'static str {
        match self {
            Self::PinBased => "pin-based VM-execution controls",
            Self::PrimaryProcessorBased => "primary processor-based VM-execution controls",
            Self::SecondaryProcessorBased => "secondary processor-based VM-execution controls",
            Self::TertiaryProcessorBased => "tertiary processor-based VM-execution controls",
            Self::PrimaryExit => "primary VM-exit controls",
            Self::SecondaryExit => "secondary VM-exit controls",
            Self::Entry => "VM-entry controls",
            Self::VmFunction => "VM-function controls",
        }
    }
}

/// A VMX control word: a typed bit set stored in one VMCS control field.
pub trait ControlWord: bitflags::Flags + Copy {
    /// Which control word this is.
    const KIND: ControlKind;

    /// The raw value as stored in the VMCS (zero-extended to 64 bits).
    fn to_raw(self) -> u64;

    /// Builds the word from a raw VMCS value, keeping unknown bits (they are
    /// what the reserved-bit checks look at). Bits above the word's width are
    /// dropped.
    fn from_raw(raw: u64) -> Self;

    /// The name of bit `bit` in this word, if the SDM defines it.
    fn bit_name(bit: u32) -> Option<&'static str> {
        if bit >= 64 {
            return None;
        }
        Self::FLAGS
            .iter()
            .find(|flag| flag.value().to_raw() == 1u64 << bit)
            .map(bitflags::Flag::name)
    }
}

/// Implements [`ControlWord`] for a bit-set type of 32 or 64 bits.
macro_rules! impl_control_word {
    ($ty:ty, u32, $kind:expr) => {
        impl ControlWord for $ty {
            const KIND: ControlKind = $kind;

            fn to_raw(self) -> u64 {
                u64::from(self.bits())
            }

            fn from_raw(raw: u64) -> Self {
                // The VMCS field is 32 bits wide: bits 63:32 do not exist.
                Self::from_bits_retain(raw as u32)
            }
        }
    };
    ($ty:ty, u64, $kind:expr) => {
        impl ControlWord for $ty {
            const KIND: ControlKind = $kind;

            fn to_raw(self) -> u64 {
                self.bits()
            }

            fn from_raw(raw: u64) -> Self {
                Self::from_bits_retain(raw)
            }
        }
    };
}

bitflags::bitflags! {
    /// Pin-based VM-execution controls: how asynchronous events (interrupts,
    /// NMIs, the preemption timer) are handled (SDM 25.6.1, Table 25-5).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PinBasedControls: u32 {
        /// Bit 0: external interrupts cause VM exits.
        const EXTERNAL_INTERRUPT_EXITING = 1 << 0;
        /// Bit 3: NMIs cause VM exits.
        const NMI_EXITING = 1 << 3;
        /// Bit 5: NMIs are never blocked; "blocking by NMI" means virtual-NMI blocking.
        const VIRTUAL_NMIS = 1 << 5;
        /// Bit 6: the VMX-preemption timer counts down in VMX non-root operation.
        const ACTIVATE_VMX_PREEMPTION_TIMER = 1 << 6;
        /// Bit 7: interrupts with the posted-interrupt notification vector are processed.
        const PROCESS_POSTED_INTERRUPTS = 1 << 7;
    }
}

impl PinBasedControls {
    /// The "default1" bits (1, 2, 4): reported as must-be-1 by
    /// `IA32_VMX_PINBASED_CTLS`; only the TRUE_ MSR may allow 0 (SDM A.3.1).
    pub const DEFAULT1: Self = Self::from_bits_retain(0x0000_0016);
}

impl_control_word!(PinBasedControls, u32, ControlKind::PinBased);

bitflags::bitflags! {
    /// Primary processor-based VM-execution controls: which instructions and
    /// events exit (SDM 25.6.2, Table 25-6).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PrimaryProcControls: u32 {
        /// Bit 2: exit at the start of any instruction once RFLAGS.IF = 1 and nothing blocks interrupts.
        const INTERRUPT_WINDOW_EXITING = 1 << 2;
        /// Bit 3: RDTSC/RDTSCP/RDMSR(TSC) return values adjusted by the TSC offset.
        const USE_TSC_OFFSETTING = 1 << 3;
        /// Bit 7: HLT exits.
        const HLT_EXITING = 1 << 7;
        /// Bit 9: INVLPG (and INVPCID) exit.
        const INVLPG_EXITING = 1 << 9;
        /// Bit 10: MWAIT exits.
        const MWAIT_EXITING = 1 << 10;
        /// Bit 11: RDPMC exits.
        const RDPMC_EXITING = 1 << 11;
        /// Bit 12: RDTSC and RDTSCP exit.
        const RDTSC_EXITING = 1 << 12;
        /// Bit 15: MOV to CR3 exits unless the value is a CR3-target value.
        const CR3_LOAD_EXITING = 1 << 15;
        /// Bit 16: MOV from CR3 exits.
        const CR3_STORE_EXITING = 1 << 16;
        /// Bit 17: the tertiary processor-based controls are used.
        const ACTIVATE_TERTIARY_CONTROLS = 1 << 17;
        /// Bit 19: MOV to CR8 exits.
        const CR8_LOAD_EXITING = 1 << 19;
        /// Bit 20: MOV from CR8 exits.
        const CR8_STORE_EXITING = 1 << 20;
        /// Bit 21: TPR virtualization and other APIC-virtualization features.
        const USE_TPR_SHADOW = 1 << 21;
        /// Bit 22: exit at the start of any instruction when there is no virtual-NMI blocking.
        const NMI_WINDOW_EXITING = 1 << 22;
        /// Bit 23: MOV DR exits.
        const MOV_DR_EXITING = 1 << 23;
        /// Bit 24: every I/O instruction exits (ignored when I/O bitmaps are used).
        const UNCONDITIONAL_IO_EXITING = 1 << 24;
        /// Bit 25: I/O bitmaps restrict I/O instructions.
        const USE_IO_BITMAPS = 1 << 25;
        /// Bit 27: the monitor trap flag debugging feature.
        const MONITOR_TRAP_FLAG = 1 << 27;
        /// Bit 28: MSR bitmaps control RDMSR/WRMSR exits (otherwise all exit).
        const USE_MSR_BITMAPS = 1 << 28;
        /// Bit 29: MONITOR exits.
        const MONITOR_EXITING = 1 << 29;
        /// Bit 30: PAUSE exits.
        const PAUSE_EXITING = 1 << 30;
        /// Bit 31: the secondary processor-based controls are used.
        const ACTIVATE_SECONDARY_CONTROLS = 1 << 31;
    }
}

impl PrimaryProcControls {
    /// The "default1" bits (1, 4-6, 8, 13-16, 26): must-be-1 in
    /// `IA32_VMX_PROCBASED_CTLS`; only the TRUE_ MSR may allow 0 (SDM A.3.2).
    pub const DEFAULT1: Self = Self::from_bits_retain(0x0401_E172);
}

impl_control_word!(PrimaryProcControls, u32, ControlKind::PrimaryProcessorBased);

bitflags::bitflags! {
    /// Secondary processor-based VM-execution controls (SDM 25.6.2,
    /// Table 25-7). Used only when
    /// [`PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS`] is set.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SecondaryProcControls: u32 {
        /// Bit 0: accesses to the APIC-access page are virtualized or exit.
        const VIRTUALIZE_APIC_ACCESSES = 1 << 0;
        /// Bit 1: extended page tables.
        const ENABLE_EPT = 1 << 1;
        /// Bit 2: LGDT, LIDT, LLDT, LTR, SGDT, SIDT, SLDT and STR exit.
        const DESCRIPTOR_TABLE_EXITING = 1 << 2;
        /// Bit 3: RDTSCP is allowed (otherwise #UD).
        const ENABLE_RDTSCP = 1 << 3;
        /// Bit 4: RDMSR/WRMSR to APIC MSRs 800H-8FFH are treated specially.
        const VIRTUALIZE_X2APIC_MODE = 1 << 4;
        /// Bit 5: cached linear translations are tagged with the VPID.
        const ENABLE_VPID = 1 << 5;
        /// Bit 6: WBINVD and WBNOINVD exit.
        const WBINVD_EXITING = 1 << 6;
        /// Bit 7: the guest may run unpaged or in real-address mode.
        const UNRESTRICTED_GUEST = 1 << 7;
        /// Bit 8: some APIC accesses are virtualized.
        const APIC_REGISTER_VIRTUALIZATION = 1 << 8;
        /// Bit 9: evaluation and delivery of pending virtual interrupts.
        const VIRTUAL_INTERRUPT_DELIVERY = 1 << 9;
        /// Bit 10: a series of PAUSEs may exit (PLE_Gap / PLE_Window).
        const PAUSE_LOOP_EXITING = 1 << 10;
        /// Bit 11: RDRAND exits.
        const RDRAND_EXITING = 1 << 11;
        /// Bit 12: INVPCID is allowed (otherwise #UD).
        const ENABLE_INVPCID = 1 << 12;
        /// Bit 13: VMFUNC is allowed in VMX non-root operation.
        const ENABLE_VM_FUNCTIONS = 1 << 13;
        /// Bit 14: VMREAD/VMWRITE in non-root operation may use a shadow VMCS.
        const VMCS_SHADOWING = 1 << 14;
        /// Bit 15: ENCLS consults the ENCLS-exiting bitmap.
        const ENABLE_ENCLS_EXITING = 1 << 15;
        /// Bit 16: RDSEED exits.
        const RDSEED_EXITING = 1 << 16;
        /// Bit 17: page-modification logging.
        const ENABLE_PML = 1 << 17;
        /// Bit 18: EPT violations may become virtualization exceptions (#VE).
        const EPT_VIOLATION_VE = 1 << 18;
        /// Bit 19: Intel PT hides that the processor is in VMX non-root operation.
        const CONCEAL_VMX_FROM_PT = 1 << 19;
        /// Bit 20: XSAVES/XRSTORS are allowed (otherwise #UD).
        const ENABLE_XSAVES_XRSTORS = 1 << 20;
        /// Bit 21: PASID translation for ENQCMD and ENQCMDS.
        const PASID_TRANSLATION = 1 << 21;
        /// Bit 22: EPT execute permission depends on the linear address's mode.
        const MODE_BASED_EXECUTE_CONTROL_FOR_EPT = 1 << 22;
        /// Bit 23: EPT write permissions at 128-byte granularity.
        const SUB_PAGE_WRITE_PERMISSIONS_FOR_EPT = 1 << 23;
        /// Bit 24: Intel PT output addresses are guest-physical and translated by EPT.
        const INTEL_PT_USES_GUEST_PHYSICAL_ADDRESSES = 1 << 24;
        /// Bit 25: TSC reads are scaled by the TSC multiplier.
        const USE_TSC_SCALING = 1 << 25;
        /// Bit 26: TPAUSE, UMONITOR and UMWAIT are allowed (otherwise #UD).
        const ENABLE_USER_WAIT_AND_PAUSE = 1 << 26;
        /// Bit 27: PCONFIG is allowed (otherwise #UD).
        const ENABLE_PCONFIG = 1 << 27;
        /// Bit 28: ENCLV consults the ENCLV-exiting bitmap.
        const ENABLE_ENCLV_EXITING = 1 << 28;
        /// Bit 30: bus-lock assertion causes VM exits.
        const VMM_BUS_LOCK_DETECTION = 1 << 30;
        /// Bit 31: exit when an instruction boundary is not reached in time.
        const INSTRUCTION_TIMEOUT = 1 << 31;
    }
}

impl SecondaryProcControls {
    /// No default1 class: every undefined bit is reserved as 0 (SDM A.3.3).
    pub const DEFAULT1: Self = Self::empty();
}

impl_control_word!(
    SecondaryProcControls,
    u32,
    ControlKind::SecondaryProcessorBased
);

bitflags::bitflags! {
    /// Tertiary processor-based VM-execution controls, 64 bits (SDM 25.6.2,
    /// Table 25-8). Used only when
    /// [`PrimaryProcControls::ACTIVATE_TERTIARY_CONTROLS`] is set.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct TertiaryProcControls: u64 {
        /// Bit 0: LOADIWKEY exits.
        const LOADIWKEY_EXITING = 1 << 0;
        /// Bit 1: hypervisor-managed linear-address translation (HLAT).
        const ENABLE_HLAT = 1 << 1;
        /// Bit 2: EPT permissions may allow writes only for paging updates.
        const EPT_PAGING_WRITE_CONTROL = 1 << 2;
        /// Bit 3: EPT permissions may verify guest paging.
        const GUEST_PAGING_VERIFICATION = 1 << 3;
        /// Bit 4: IPI virtualization.
        const IPI_VIRTUALIZATION = 1 << 4;
        /// Bit 5: EPT operation in SEAM non-root operation.
        const SEAM_GUEST_PHYSICAL_ADDRESS_WIDTH = 1 << 5;
        /// Bit 6: RDMSRLIST/WRMSRLIST are allowed (otherwise #UD).
        const ENABLE_MSRLIST_INSTRUCTIONS = 1 << 6;
        /// Bit 7: RDMSR/WRMSR of IA32_SPEC_CTRL use the mask and shadow fields.
        const VIRTUALIZE_IA32_SPEC_CTRL = 1 << 7;
        /// Bit 8: guest timer events and virtualized IA32_TSC_DEADLINE.
        const APIC_TIMER_VIRTUALIZATION = 1 << 8;
        /// Bit 9: PBNDKB is allowed (otherwise #UD).
        const ENABLE_PBNDKB = 1 << 9;
        /// Bit 12: architectural PEBS output addresses are guest-physical.
        const PEBS_USES_GUEST_PHYSICAL_ADDRESSES = 1 << 12;
    }
}

impl TertiaryProcControls {
    /// No default1 class: every undefined bit is reserved as 0 (SDM A.3.4).
    pub const DEFAULT1: Self = Self::empty();
}

impl_control_word!(
    TertiaryProcControls,
    u64,
    ControlKind::TertiaryProcessorBased
);

bitflags::bitflags! {
    /// Primary VM-exit controls (SDM 25.7.1, Table 25-13).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct ExitControls: u32 {
        /// Bit 2: DR7 and IA32_DEBUGCTL are saved on VM exit.
        const SAVE_DEBUG_CONTROLS = 1 << 2;
        /// Bit 9: the host runs in 64-bit mode after the exit.
        const HOST_ADDRESS_SPACE_SIZE = 1 << 9;
        /// Bit 12: IA32_PERF_GLOBAL_CTRL is loaded on VM exit.
        const LOAD_IA32_PERF_GLOBAL_CTRL = 1 << 12;
        /// Bit 15: external-interrupt exits acknowledge the interrupt and store its vector.
        const ACKNOWLEDGE_INTERRUPT_ON_EXIT = 1 << 15;
        /// Bit 18: IA32_PAT is saved on VM exit.
        const SAVE_IA32_PAT = 1 << 18;
        /// Bit 19: IA32_PAT is loaded on VM exit.
        const LOAD_IA32_PAT = 1 << 19;
        /// Bit 20: IA32_EFER is saved on VM exit.
        const SAVE_IA32_EFER = 1 << 20;
        /// Bit 21: IA32_EFER is loaded on VM exit.
        const LOAD_IA32_EFER = 1 << 21;
        /// Bit 22: the VMX-preemption timer value is saved on VM exit.
        const SAVE_VMX_PREEMPTION_TIMER_VALUE = 1 << 22;
        /// Bit 23: IA32_BNDCFGS is cleared on VM exit.
        const CLEAR_IA32_BNDCFGS = 1 << 23;
        /// Bit 24: Intel PT produces no PIP on VM exit (no VMCS packet on SMM VM exit).
        const CONCEAL_VMX_FROM_PT = 1 << 24;
        /// Bit 25: IA32_RTIT_CTL is cleared on VM exit.
        const CLEAR_IA32_RTIT_CTL = 1 << 25;
        /// Bit 26: IA32_LBR_CTL is cleared on VM exit.
        const CLEAR_IA32_LBR_CTL = 1 << 26;
        /// Bit 27: UINV is cleared on VM exit.
        const CLEAR_UINV = 1 << 27;
        /// Bit 28: CET MSRs and SSP are loaded on VM exit.
        const LOAD_CET_STATE = 1 << 28;
        /// Bit 29: IA32_PKRS is loaded on VM exit.
        const LOAD_PKRS = 1 << 29;
        /// Bit 30: IA32_PERF_GLOBAL_CTRL is saved on VM exit.
        const SAVE_IA32_PERF_GLOBAL_CTRL = 1 << 30;
        /// Bit 31: the secondary VM-exit controls are used.
        const ACTIVATE_SECONDARY_CONTROLS = 1 << 31;
    }
}

impl ExitControls {
    /// The "default1" bits (0-8, 10, 11, 13, 14, 16, 17): must-be-1 in
    /// `IA32_VMX_EXIT_CTLS`; only the TRUE_ MSR may allow 0 (SDM A.4.1).
    pub const DEFAULT1: Self = Self::from_bits_retain(0x0003_6DFF);
}

impl_control_word!(ExitControls, u32, ControlKind::PrimaryExit);

bitflags::bitflags! {
    /// Secondary VM-exit controls, 64 bits (SDM 25.7.1, Table 25-14). Used only
    /// when [`ExitControls::ACTIVATE_SECONDARY_CONTROLS`] is set.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SecondaryExitControls: u64 {
        /// Bit 0: the FRED MSRs are saved on VM exit.
        const SAVE_IA32_FRED = 1 << 0;
        /// Bit 1: the FRED MSRs are loaded on VM exit.
        const LOAD_IA32_FRED = 1 << 1;
        /// Bit 2: IA32_SPEC_CTRL is loaded on VM exit.
        const LOAD_IA32_SPEC_CTRL = 1 << 2;
        /// Bit 3: exits that make a shadow stack prematurely busy say so and save details.
        const PREMATURELY_BUSY_SHADOW_STACK = 1 << 3;
    }
}

impl SecondaryExitControls {
    /// No default1 class: every undefined bit is reserved as 0 (SDM A.4.2).
    pub const DEFAULT1: Self = Self::empty();
}

impl_control_word!(SecondaryExitControls, u64, ControlKind::SecondaryExit);

bitflags::bitflags! {
    /// VM-entry controls (SDM 25.8.1, Table 25-16).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EntryControls: u32 {
        /// Bit 2: DR7 and IA32_DEBUGCTL are loaded on VM entry.
        const LOAD_DEBUG_CONTROLS = 1 << 2;
        /// Bit 9: the guest is in IA-32e mode after entry (loaded into IA32_EFER.LMA).
        const IA32E_MODE_GUEST = 1 << 9;
        /// Bit 10: the logical processor is in SMM after entry.
        const ENTRY_TO_SMM = 1 << 10;
        /// Bit 11: the default treatment of SMIs and SMM is in effect after entry.
        const DEACTIVATE_DUAL_MONITOR_TREATMENT = 1 << 11;
        /// Bit 13: IA32_PERF_GLOBAL_CTRL is loaded on VM entry.
        const LOAD_IA32_PERF_GLOBAL_CTRL = 1 << 13;
        /// Bit 14: IA32_PAT is loaded on VM entry.
        const LOAD_IA32_PAT = 1 << 14;
        /// Bit 15: IA32_EFER is loaded on VM entry.
        const LOAD_IA32_EFER = 1 << 15;
        /// Bit 16: IA32_BNDCFGS is loaded on VM entry.
        const LOAD_IA32_BNDCFGS = 1 << 16;
        /// Bit 17: Intel PT produces no PIP on VM entry.
        const CONCEAL_VMX_FROM_PT = 1 << 17;
        /// Bit 18: IA32_RTIT_CTL is loaded on VM entry.
        const LOAD_IA32_RTIT_CTL = 1 << 18;
        /// Bit 19: UINV is loaded on VM entry.
        const LOAD_UINV = 1 << 19;
        /// Bit 20: CET MSRs and SSP are loaded on VM entry.
        const LOAD_CET_STATE = 1 << 20;
        /// Bit 21: IA32_LBR_CTL is loaded on VM entry ("load guest IA32_LBR_CTL").
        const LOAD_IA32_LBR_CTL = 1 << 21;
        /// Bit 22: IA32_PKRS is loaded on VM entry.
        const LOAD_PKRS = 1 << 22;
        /// Bit 23: the FRED MSRs are loaded on VM entry.
        const LOAD_IA32_FRED = 1 << 23;
        /// Bit 24: IA32_SPEC_CTRL is loaded on VM entry.
        const LOAD_IA32_SPEC_CTRL = 1 << 24;
        /// Bit 25: core out-of-band telemetry may be enabled on entry to SEAM non-root operation.
        const ALLOW_SEAM_GUEST_TELEMETRY = 1 << 25;
    }
}

impl EntryControls {
    /// The "default1" bits (0-8, 12): must-be-1 in `IA32_VMX_ENTRY_CTLS`;
    /// only the TRUE_ MSR may allow 0 (SDM A.5).
    pub const DEFAULT1: Self = Self::from_bits_retain(0x0000_11FF);
}

impl_control_word!(EntryControls, u32, ControlKind::Entry);

bitflags::bitflags! {
    /// VM-function controls, 64 bits: which VMFUNC leaves are enabled
    /// (SDM 25.6.14, Table 25-10).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct VmFunctionControls: u64 {
        /// Bit 0 (VM function 0): EPTP switching from the EPTP list.
        const EPTP_SWITCHING = 1 << 0;
    }
}

impl VmFunctionControls {
    /// No default1 class: every undefined bit is reserved as 0 (SDM A.11).
    pub const DEFAULT1: Self = Self::empty();
}

impl_control_word!(VmFunctionControls, u64, ControlKind::VmFunction);

/// An exception or interrupt vector, named after its SDM mnemonic
/// (SDM Vol. 3A 6.3.1, Table 6-1).
///
/// [`ExceptionVector::from_vector`] maps every named vector to its variant;
/// all other vectors (reserved 9/15/22-27/31 aside from the named ones, and
/// the external-interrupt range 32-255) become [`ExceptionVector::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExceptionVector {
    /// 0, #DE: divide error.
    DivideError,
    /// 1, #DB: debug exception.
    Debug,
    /// 2: non-maskable interrupt.
    Nmi,
    /// 3, #BP: breakpoint (INT3).
    Breakpoint,
    /// 4, #OF: overflow (INTO).
    Overflow,
    /// 5, #BR: BOUND range exceeded.
    BoundRangeExceeded,
    /// 6, #UD: invalid opcode.
    InvalidOpcode,
    /// 7, #NM: device not available.
    DeviceNotAvailable,
    /// 8, #DF: double fault (error code, always 0).
    DoubleFault,
    /// 9: coprocessor segment overrun (reserved since the Intel486).
    CoprocessorSegmentOverrun,
    /// 10, #TS: invalid TSS.
    InvalidTss,
    /// 11, #NP: segment not present.
    SegmentNotPresent,
    /// 12, #SS: stack-segment fault.
    StackSegmentFault,
    /// 13, #GP: general protection.
    GeneralProtection,
    /// 14, #PF: page fault.
    PageFault,
    /// 16, #MF: x87 floating-point error.
    X87FloatingPoint,
    /// 17, #AC: alignment check.
    AlignmentCheck,
    /// 18, #MC: machine check.
    MachineCheck,
    /// 19, #XM: SIMD floating-point exception.
    SimdFloatingPoint,
    /// 20, #VE: virtualization exception.
    Virtualization,
    /// 21, #CP: control-protection exception.
    ControlProtection,
    /// 28, #HV: hypervisor injection exception (AMD SEV-SNP; reserved on Intel).
    HypervisorInjection,
    /// 29, #VC: VMM communication exception (AMD SEV-ES; reserved on Intel).
    VmmCommunication,
    /// 30, #SX: security exception (AMD; reserved on Intel).
    Security,
    /// Any other vector: reserved exception vectors and interrupts 32-255.
    Other(u8),
}

impl ExceptionVector {
    /// The vector for `vector`; total, unnamed vectors become [`Self::Other`].
    pub const fn from_vector(vector: u8) -> Self {
        match vector {
            0 => Self::DivideError,
            1 => Self::Debug,
            2 => Self::Nmi,
            3 => Self::Breakpoint,
            4 => Self::Overflow,
            5 => Self::BoundRangeExceeded,
            6 => Self::InvalidOpcode,
            7 => Self::DeviceNotAvailable,
            8 => Self::DoubleFault,
            9 => Self::CoprocessorSegmentOverrun,
            10 => Self::InvalidTss,
            11 => Self::SegmentNotPresent,
            12 => Self::StackSegmentFault,
            13 => Self::GeneralProtection,
            14 => Self::PageFault,
            16 => Self::X87FloatingPoint,
            17 => Self::AlignmentCheck,
            18 => Self::MachineCheck,
            19 => Self::SimdFloatingPoint,
            20 => Self::Virtualization,
            21 => Self::ControlProtection,
            28 => Self::HypervisorInjection,
            29 => Self::VmmCommunication,
            30 => Self::Security,
            other => Self::Other(other),
        }
    }

    /// The vector number.
    pub const fn vector(self) -> u8 {
        match self {
            Self::DivideError => 0,
            Self::Debug => 1,
            Self::Nmi => 2,
            Self::Breakpoint => 3,
            Self::Overflow => 4,
            Self::BoundRangeExceeded => 5,
            Self::InvalidOpcode => 6,
            Self::DeviceNotAvailable => 7,
            Self::DoubleFault => 8,
            Self::CoprocessorSegmentOverrun => 9,
            Self::InvalidTss => 10,
            Self::SegmentNotPresent => 11,
            Self::StackSegmentFault => 12,
            Self::GeneralProtection => 13,
            Self::PageFault => 14,
            Self::X87FloatingPoint => 16,
            Self::AlignmentCheck => 17,
            Self::MachineCheck => 18,
            Self::SimdFloatingPoint => 19,
            Self::Virtualization => 20,
            Self::ControlProtection => 21,
            Self::HypervisorInjection => 28,
            Self::VmmCommunication => 29,
            Self::Security => 30,
            Self::Other(vector) => vector,
        }
    }

    /// The SDM mnemonic ("#PF"), `"NMI"` for vector 2, or `None` for vectors
    /// the SDM gives no mnemonic (9 and [`Self::Other`]).
    pub const fn mnemonic(self) -> Option<&'static str> {
        Some(match Self::from_vector(self.vector()) {
            Self::DivideError => "#DE",
            Self::Debug => "#DB",
            Self::Nmi => "NMI",
            Self::Breakpoint => "#BP",
            Self::Overflow => "#OF",
            Self::BoundRangeExceeded => "#BR",
            Self::InvalidOpcode => "#UD",
            Self::DeviceNotAvailable => "#NM",
            Self::DoubleFault => "#DF",
            Self::InvalidTss => "#TS",
            Self::SegmentNotPresent => "#NP",
            Self::StackSegmentFault => "#SS",
            Self::GeneralProtection => "#GP",
            Self::PageFault => "#PF",
            Self::X87FloatingPoint => "#MF",
            Self::AlignmentCheck => "#AC",
            Self::MachineCheck => "#MC",
            Self::SimdFloatingPoint => "#XM",
            Self::Virtualization => "#VE",
            Self::ControlProtection => "#CP",
            Self::HypervisorInjection => "#HV",
            Self::VmmCommunication => "#VC",
            Self::Security => "#SX",
            Self::CoprocessorSegmentOverrun | Self::Other(_) => return None,
        })
    }

    /// Whether delivering this exception pushes an error code: #DF, #TS, #NP,
    /// #SS, #GP, #PF, #AC and #CP (SDM Vol. 3A Table 6-1; the same set VM
    /// entry checks for injected hardware exceptions, SDM 27.2.1.3).
    ///
    /// Judged on the vector number, so `Other(14)` counts as #PF. The AMD
    /// vectors #VC and #SX, which push error codes on AMD processors, are
    /// reserved on Intel and answer `false` here.
    pub const fn has_error_code(self) -> bool {
        matches!(self.vector(), 8 | 10..=14 | 17 | 21)
    }
}

/// The exception bitmap: bit *n* set means exception vector *n* causes a VM
/// exit (SDM 25.6.3). #PF additionally depends on the page-fault error-code
/// mask and match fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExceptionBitmap(u32);

impl ExceptionBitmap {
    /// No exception exits.
    pub const EMPTY: Self = Self(0);

    /// Wraps a raw VMCS value.
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw VMCS value.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Whether `vector` causes a VM exit. Vectors 32 and up are never
    /// exceptions and have no bit, so they answer `false`.
    pub const fn intercepts(self, vector: ExceptionVector) -> bool {
        let vector = vector.vector();
        vector < 32 && self.0 & (1 << vector) != 0
    }

    /// This bitmap with `vector` intercepted. Vectors 32 and up have no bit
    /// and leave the bitmap unchanged.
    #[must_use]
    pub const fn with(self, vector: ExceptionVector) -> Self {
        let vector = vector.vector();
        if vector < 32 {
            Self(self.0 | (1 << vector))
        } else {
            self
        }
    }

    /// This bitmap with `vector` no longer intercepted. Vectors 32 and up
    /// have no bit and leave the bitmap unchanged.
    #[must_use]
    pub const fn without(self, vector: ExceptionVector) -> Self {
        let vector = vector.vector();
        if vector < 32 {
            Self(self.0 & !(1 << vector))
        } else {
            self
        }
    }

    /// The intercepted vectors, lowest first.
    pub fn vectors(self) -> impl Iterator<Item = ExceptionVector> {
        (0u8..32)
            .filter(move |&vector| self.0 & (1 << vector) != 0)
            .map(ExceptionVector::from_vector)
    }
}

impl FromIterator<ExceptionVector> for ExceptionBitmap {
    fn from_iter<I: IntoIterator<Item = ExceptionVector>>(iter: I) -> Self {
        iter.into_iter().fold(Self::EMPTY, Self::with)
    }
}
