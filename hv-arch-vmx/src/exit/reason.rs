//! Basic exit reasons (SDM Vol. 3C Appendix C) and the exit-reason field
//! (SDM 25.9.1).

use core::fmt;

/// Defines [`ExitReason`] from one table: variant, number, SDM text.
macro_rules! exit_reasons {
    ($( $(#[$doc:meta])* $variant:ident = $number:literal, $name:literal; )*) => {
        /// A basic exit reason: bits 15:0 of the exit-reason field
        /// (SDM Appendix C, "VMX Basic Exit Reasons").
        ///
        /// Numbers the SDM does not define (35, 38, 42, 71, 82, 83, 86 and up)
        /// are kept as [`ExitReason::Unknown`]; build values with
        /// [`ExitReason::from_basic`] so a defined number never ends up in
        /// `Unknown`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ExitReason {
            $( $(#[$doc])* $variant, )*
            /// A basic exit reason this crate does not know.
            Unknown(u16),
        }

        impl ExitReason {
            /// Every defined exit reason, in numeric order.
            pub const ALL: &'static [Self] = &[$( Self::$variant, )*];

            /// The exit reason for basic-reason number `number` (total).
            pub const fn from_basic(number: u16) -> Self {
                match number {
                    $( $number => Self::$variant, )*
                    other => Self::Unknown(other),
                }
            }

            /// The basic-reason number.
            pub const fn number(self) -> u16 {
                match self {
                    $( Self::$variant => $number, )*
                    Self::Unknown(number) => number,
                }
            }

            /// The SDM's text for this reason ("EPT violation").
            pub const fn name(self) -> &'static str {
                match self {
                    $( Self::$variant => $name, )*
                    Self::Unknown(_) => "unknown exit reason",
                }
            }

            /// The Rust variant name (`"EptViolation"`), for tools and logs.
            pub const fn variant_name(self) -> &'static str {
                match self {
                    $( Self::$variant => stringify!($variant), )*
                    Self::Unknown(_) => "Unknown",
                }
            }
        }
    };
}

exit_reasons! {
    /// 0: an exception or NMI (exception bitmap, NMI exiting).
    ExceptionOrNmi = 0, "Exception or non-maskable interrupt (NMI)";
    /// 1: an external interrupt with external-interrupt exiting set.
    ExternalInterrupt = 1, "External interrupt";
    /// 2: a triple fault.
    TripleFault = 2, "Triple fault";
    /// 3: an INIT signal.
    InitSignal = 3, "INIT signal";
    /// 4: a start-up IPI (SIPI) in wait-for-SIPI state.
    StartupIpi = 4, "Start-up IPI (SIPI)";
    /// 5: an SMI right after an I/O instruction (dual-monitor treatment).
    IoSmi = 5, "I/O system-management interrupt (SMI)";
    /// 6: an SMI not following an I/O instruction (dual-monitor treatment).
    OtherSmi = 6, "Other SMI";
    /// 7: interrupt-window exiting.
    InterruptWindow = 7, "Interrupt window";
    /// 8: NMI-window exiting.
    NmiWindow = 8, "NMI window";
    /// 9: a task switch.
    TaskSwitch = 9, "Task switch";
    /// 10: CPUID.
    Cpuid = 10, "CPUID";
    /// 11: GETSEC.
    Getsec = 11, "GETSEC";
    /// 12: HLT.
    Hlt = 12, "HLT";
    /// 13: INVD.
    Invd = 13, "INVD";
    /// 14: INVLPG.
    Invlpg = 14, "INVLPG";
    /// 15: RDPMC.
    Rdpmc = 15, "RDPMC";
    /// 16: RDTSC.
    Rdtsc = 16, "RDTSC";
    /// 17: RSM in SMM.
    Rsm = 17, "RSM";
    /// 18: VMCALL.
    Vmcall = 18, "VMCALL";
    /// 19: VMCLEAR.
    Vmclear = 19, "VMCLEAR";
    /// 20: VMLAUNCH.
    Vmlaunch = 20, "VMLAUNCH";
    /// 21: VMPTRLD.
    Vmptrld = 21, "VMPTRLD";
    /// 22: VMPTRST.
    Vmptrst = 22, "VMPTRST";
    /// 23: VMREAD.
    Vmread = 23, "VMREAD";
    /// 24: VMRESUME.
    Vmresume = 24, "VMRESUME";
    /// 25: VMWRITE.
    Vmwrite = 25, "VMWRITE";
    /// 26: VMXOFF.
    Vmxoff = 26, "VMXOFF";
    /// 27: VMXON.
    Vmxon = 27, "VMXON";
    /// 28: MOV CR, CLTS or LMSW.
    ControlRegisterAccess = 28, "Control-register accesses";
    /// 29: MOV DR.
    MovDr = 29, "MOV DR";
    /// 30: IN, INS, OUT or OUTS.
    IoInstruction = 30, "I/O instruction";
    /// 31: RDMSR.
    Rdmsr = 31, "RDMSR";
    /// 32: WRMSR or WRMSRNS.
    Wrmsr = 32, "WRMSR";
    /// 33: VM entry failed a guest-state check.
    EntryFailInvalidGuestState = 33, "VM-entry failure due to invalid guest state";
    /// 34: VM entry failed loading an MSR.
    EntryFailMsrLoading = 34, "VM-entry failure due to MSR loading";
    /// 36: MWAIT.
    Mwait = 36, "MWAIT";
    /// 37: the monitor trap flag.
    MonitorTrapFlag = 37, "Monitor trap flag";
    /// 39: MONITOR.
    Monitor = 39, "MONITOR";
    /// 40: PAUSE or PAUSE-loop exiting.
    Pause = 40, "PAUSE";
    /// 41: a machine-check event during VM entry.
    EntryFailMachineCheck = 41, "VM-entry failure due to machine-check event";
    /// 43: the virtual TPR fell below the TPR threshold.
    TprBelowThreshold = 43, "TPR below threshold";
    /// 44: an access to the APIC-access page.
    ApicAccess = 44, "APIC access";
    /// 45: EOI virtualization for a vector set in the EOI-exit bitmap.
    VirtualizedEoi = 45, "Virtualized EOI";
    /// 46: LGDT, LIDT, SGDT or SIDT.
    GdtrIdtrAccess = 46, "Access to GDTR or IDTR";
    /// 47: LLDT, LTR, SLDT or STR.
    LdtrTrAccess = 47, "Access to LDTR or TR";
    /// 48: an EPT violation.
    EptViolation = 48, "EPT violation";
    /// 49: an EPT misconfiguration.
    EptMisconfiguration = 49, "EPT misconfiguration";
    /// 50: INVEPT.
    Invept = 50, "INVEPT";
    /// 51: RDTSCP.
    Rdtscp = 51, "RDTSCP";
    /// 52: the VMX-preemption timer counted down to zero.
    PreemptionTimerExpired = 52, "VMX-preemption timer expired";
    /// 53: INVVPID.
    Invvpid = 53, "INVVPID";
    /// 54: WBINVD or WBNOINVD.
    WbinvdOrWbnoinvd = 54, "WBINVD or WBNOINVD";
    /// 55: XSETBV.
    Xsetbv = 55, "XSETBV";
    /// 56: a trap-like APIC write.
    ApicWrite = 56, "APIC write";
    /// 57: RDRAND.
    Rdrand = 57, "RDRAND";
    /// 58: INVPCID.
    Invpcid = 58, "INVPCID";
    /// 59: VMFUNC failed.
    Vmfunc = 59, "VMFUNC";
    /// 60: ENCLS.
    Encls = 60, "ENCLS";
    /// 61: RDSEED.
    Rdseed = 61, "RDSEED";
    /// 62: the page-modification log is full.
    PmlFull = 62, "Page-modification log full";
    /// 63: XSAVES.
    Xsaves = 63, "XSAVES";
    /// 64: XRSTORS.
    Xrstors = 64, "XRSTORS";
    /// 65: PCONFIG.
    Pconfig = 65, "PCONFIG";
    /// 66: an SPP misconfiguration or miss.
    SppRelatedEvent = 66, "SPP-related event";
    /// 67: UMWAIT.
    Umwait = 67, "UMWAIT";
    /// 68: TPAUSE.
    Tpause = 68, "TPAUSE";
    /// 69: LOADIWKEY.
    Loadiwkey = 69, "LOADIWKEY";
    /// 70: ENCLV.
    Enclv = 70, "ENCLV";
    /// 72: PASID translation failed for ENQCMD.
    EnqcmdPasidTranslationFailure = 72, "ENQCMD PASID translation failure";
    /// 73: PASID translation failed for ENQCMDS.
    EnqcmdsPasidTranslationFailure = 73, "ENQCMDS PASID translation failure";
    /// 74: a bus lock with VMM bus-lock detection set.
    BusLock = 74, "Bus lock";
    /// 75: the instruction timeout expired.
    InstructionTimeout = 75, "Instruction timeout";
    /// 76: SEAMCALL.
    Seamcall = 76, "SEAMCALL";
    /// 77: TDCALL.
    Tdcall = 77, "TDCALL";
    /// 78: RDMSRLIST.
    Rdmsrlist = 78, "RDMSRLIST";
    /// 79: WRMSRLIST.
    Wrmsrlist = 79, "WRMSRLIST";
    /// 80: URDMSR (user-mode MSR read, Intel ISE).
    Urdmsr = 80, "URDMSR";
    /// 81: UWRMSR (user-mode MSR write, Intel ISE).
    Uwrmsr = 81, "UWRMSR";
    /// 84: RDMSR with an immediate MSR index (Intel ISE).
    RdmsrImmediate = 84, "RDMSR with immediate";
    /// 85: WRMSRNS with an immediate MSR index (Intel ISE).
    WrmsrnsImmediate = 85, "WRMSRNS with immediate";
}

impl ExitReason {
    /// Whether the number is one the SDM defines.
    pub const fn is_known(self) -> bool {
        !matches!(Self::from_basic(self.number()), Self::Unknown(_))
    }

    /// Finds a reason by name for command-line tools. Case-insensitive;
    /// underscores, hyphens and spaces are ignored, so the variant name
    /// (`"EptViolation"`), snake case (`"ept_violation"`), upper case
    /// (`"EPT_VIOLATION"`) and the SDM text ("EPT violation") all match.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|reason| same_name(name, reason.variant_name()) || same_name(name, reason.name()))
    }
}

/// Compares two names ignoring ASCII case and the separators `_`, `-`, ` `.
fn same_name(left: &str, right: &str) -> bool {
    let significant = |c: &char| !matches!(c, '_' | '-' | ' ');
    let mut left = left.chars().filter(significant);
    let mut right = right.chars().filter(significant);
    loop {
        match (left.next(), right.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(&b) => {}
            _ => return false,
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(number) => write!(f, "unknown exit reason {number}"),
            known => f.write_str(known.name()),
        }
    }
}

/// The 32-bit exit-reason field (SDM 25.9.1, Table 25-18 "Format of Exit
/// Reason"; SDM 28.2.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExitReasonWord(u32);

impl ExitReasonWord {
    /// Bit 25: the exit made a shadow stack prematurely busy (only with the
    /// "prematurely busy shadow stack" secondary exit control).
    pub const PREMATURELY_BUSY_SHADOW_STACK: u32 = 1 << 25;
    /// Bit 26: a bus lock was asserted with VMM bus-lock detection set.
    pub const BUS_LOCK_DETECTED: u32 = 1 << 26;
    /// Bit 27: the exit happened in enclave mode.
    pub const ENCLAVE_MODE: u32 = 1 << 27;
    /// Bit 28: a pending MTF VM exit (SMM VM exits only).
    pub const PENDING_MTF: u32 = 1 << 28;
    /// Bit 29: the exit came from VMX root operation (SMM VM exits only).
    pub const FROM_VMX_ROOT: u32 = 1 << 29;
    /// Bit 31: VM-entry failure rather than a true VM exit.
    pub const ENTRY_FAILURE: u32 = 1 << 31;

    /// Wraps a raw VMCS value.
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw VMCS value.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// A word reporting `reason` with no flags set.
    pub const fn new(reason: ExitReason) -> Self {
        Self(reason.number() as u32)
    }

    /// Bits 15:0, the basic exit reason number.
    pub const fn basic(self) -> u16 {
        self.0 as u16
    }

    /// The basic exit reason.
    pub const fn reason(self) -> ExitReason {
        ExitReason::from_basic(self.basic())
    }

    /// Bit 25: the exit made a shadow stack prematurely busy.
    pub const fn prematurely_busy_shadow_stack(self) -> bool {
        self.0 & Self::PREMATURELY_BUSY_SHADOW_STACK != 0
    }

    /// Bit 26: a bus lock was detected.
    pub const fn bus_lock_detected(self) -> bool {
        self.0 & Self::BUS_LOCK_DETECTED != 0
    }

    /// Bit 27: the exit happened in enclave mode.
    pub const fn enclave_mode(self) -> bool {
        self.0 & Self::ENCLAVE_MODE != 0
    }

    /// Bit 28: a pending MTF VM exit.
    pub const fn pending_mtf(self) -> bool {
        self.0 & Self::PENDING_MTF != 0
    }

    /// Bit 29: the exit came from VMX root operation.
    pub const fn from_vmx_root(self) -> bool {
        self.0 & Self::FROM_VMX_ROOT != 0
    }

    /// Bit 31: this reports a failed VM entry (guest state, MSR loading or
    /// machine check), not a true VM exit.
    pub const fn is_entry_failure(self) -> bool {
        self.0 & Self::ENTRY_FAILURE != 0
    }

    /// This word with bit 31 (VM-entry failure) set.
    #[must_use]
    pub const fn with_entry_failure(self) -> Self {
        Self(self.0 | Self::ENTRY_FAILURE)
    }

    /// This word with the flag bits in `flags` (the associated constants)
    /// set. Bits 15:0 of `flags` are ignored, so the basic reason is kept.
    #[must_use]
    pub const fn with_flags(self, flags: u32) -> Self {
        Self(self.0 | (flags & 0xFFFF_0000))
    }
}

impl From<ExitReason> for ExitReasonWord {
    fn from(reason: ExitReason) -> Self {
        Self::new(reason)
    }
}
