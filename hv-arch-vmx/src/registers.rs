//! Architectural register bit sets: CR0, CR4, `IA32_EFER`, RFLAGS, DR7,
//! `IA32_DEBUGCTL`, the CET MSRs, and the validity rule for `IA32_PAT`.
//!
//! The VM-entry checks ([`crate::checks`]) and the known-good VMCS templates
//! ([`crate::checks::baseline`]) name bits through these types rather than
//! through raw shifts, so each bit position is written (and tested) once.
//!
//! Each type keeps unknown bits (`from_bits_retain`): a VMCS field may hold
//! any value, and the checks need to see the reserved bits that are set.

bitflags::bitflags! {
    /// Control register CR0 (SDM Vol. 3A 2.5, Figure 2-7). Bits 63:32 and
    /// the bits not named here are reserved.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Cr0: u64 {
        /// Bit 0, PE: protection enable.
        const PE = 1 << 0;
        /// Bit 1, MP: monitor coprocessor.
        const MP = 1 << 1;
        /// Bit 2, EM: x87 emulation.
        const EM = 1 << 2;
        /// Bit 3, TS: task switched.
        const TS = 1 << 3;
        /// Bit 4, ET: extension type (hard-wired to 1 on modern processors).
        const ET = 1 << 4;
        /// Bit 5, NE: native x87 error reporting.
        const NE = 1 << 5;
        /// Bit 16, WP: write protect (supervisor writes honour read-only
        /// pages; required by CET).
        const WP = 1 << 16;
        /// Bit 18, AM: alignment mask.
        const AM = 1 << 18;
        /// Bit 29, NW: not write-through.
        const NW = 1 << 29;
        /// Bit 30, CD: cache disable.
        const CD = 1 << 30;
        /// Bit 31, PG: paging.
        const PG = 1 << 31;
    }
}

bitflags::bitflags! {
    /// Control register CR4 (SDM Vol. 3A 2.5, Figure 2-8). Bits 15, 26 and
    /// 31:29, and bits 63:33, are reserved.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Cr4: u64 {
        /// Bit 0, VME: virtual-8086 mode extensions.
        const VME = 1 << 0;
        /// Bit 1, PVI: protected-mode virtual interrupts.
        const PVI = 1 << 1;
        /// Bit 2, TSD: time stamp disable (RDTSC at CPL 0 only).
        const TSD = 1 << 2;
        /// Bit 3, DE: debugging extensions.
        const DE = 1 << 3;
        /// Bit 4, PSE: page size extensions (4-MByte pages in 32-bit
        /// paging).
        const PSE = 1 << 4;
        /// Bit 5, PAE: physical address extension (required for IA-32e
        /// mode).
        const PAE = 1 << 5;
        /// Bit 6, MCE: machine-check enable.
        const MCE = 1 << 6;
        /// Bit 7, PGE: page global enable.
        const PGE = 1 << 7;
        /// Bit 8, PCE: performance-monitoring counter enable.
        const PCE = 1 << 8;
        /// Bit 9, OSFXSR: OS support for FXSAVE/FXRSTOR.
        const OSFXSR = 1 << 9;
        /// Bit 10, OSXMMEXCPT: OS support for unmasked SIMD exceptions.
        const OSXMMEXCPT = 1 << 10;
        /// Bit 11, UMIP: user-mode instruction prevention.
        const UMIP = 1 << 11;
        /// Bit 12, LA57: 57-bit linear addresses (5-level paging).
        const LA57 = 1 << 12;
        /// Bit 13, VMXE: VMX enable.
        const VMXE = 1 << 13;
        /// Bit 14, SMXE: SMX enable.
        const SMXE = 1 << 14;
        /// Bit 16, FSGSBASE: RDFSBASE/WRFSBASE/RDGSBASE/WRGSBASE enable.
        const FSGSBASE = 1 << 16;
        /// Bit 17, PCIDE: process-context identifiers (IA-32e mode only).
        const PCIDE = 1 << 17;
        /// Bit 18, OSXSAVE: XSAVE and processor extended states enable.
        const OSXSAVE = 1 << 18;
        /// Bit 19, KL: Key Locker enable.
        const KL = 1 << 19;
        /// Bit 20, SMEP: supervisor-mode execution prevention.
        const SMEP = 1 << 20;
        /// Bit 21, SMAP: supervisor-mode access prevention.
        const SMAP = 1 << 21;
        /// Bit 22, PKE: protection keys for user-mode pages.
        const PKE = 1 << 22;
        /// Bit 23, CET: control-flow enforcement technology (needs CR0.WP).
        const CET = 1 << 23;
        /// Bit 24, PKS: protection keys for supervisor-mode pages.
        const PKS = 1 << 24;
        /// Bit 25, UINTR: user interrupts enable.
        const UINTR = 1 << 25;
        /// Bit 27, LASS: linear-address-space separation.
        const LASS = 1 << 27;
        /// Bit 28, `LAM_SUP`: linear-address masking for supervisor
        /// pointers.
        const LAM_SUP = 1 << 28;
        /// Bit 32, FRED: flexible return and event delivery.
        const FRED = 1 << 32;
    }
}

bitflags::bitflags! {
    /// The `IA32_EFER` MSR (C000_0080H; SDM Vol. 3A 2.2.1, Vol. 4 Table
    /// 2-2). Intel defines only these four bits; all others are reserved.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Efer: u64 {
        /// Bit 0, SCE: SYSCALL/SYSRET enable.
        const SCE = 1 << 0;
        /// Bit 8, LME: IA-32e mode enable.
        const LME = 1 << 8;
        /// Bit 10, LMA: IA-32e mode active.
        const LMA = 1 << 10;
        /// Bit 11, NXE: execute-disable bit enable.
        const NXE = 1 << 11;
    }
}

bitflags::bitflags! {
    /// RFLAGS (SDM Vol. 1 3.4.3, Vol. 3A 2.3, Figure 2-5).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Rflags: u64 {
        /// Bit 0, CF: carry.
        const CF = 1 << 0;
        /// Bit 2, PF: parity.
        const PF = 1 << 2;
        /// Bit 4, AF: auxiliary carry.
        const AF = 1 << 4;
        /// Bit 6, ZF: zero.
        const ZF = 1 << 6;
        /// Bit 7, SF: sign.
        const SF = 1 << 7;
        /// Bit 8, TF: trap (single-step).
        const TF = 1 << 8;
        /// Bit 9, IF: interrupt enable.
        const IF = 1 << 9;
        /// Bit 10, DF: direction.
        const DF = 1 << 10;
        /// Bit 11, OF: overflow.
        const OF = 1 << 11;
        /// Bits 13:12, IOPL: I/O privilege level (a two-bit field).
        const IOPL = 0b11 << 12;
        /// Bit 14, NT: nested task.
        const NT = 1 << 14;
        /// Bit 16, RF: resume.
        const RF = 1 << 16;
        /// Bit 17, VM: virtual-8086 mode.
        const VM = 1 << 17;
        /// Bit 18, AC: alignment check / access control.
        const AC = 1 << 18;
        /// Bit 19, VIF: virtual interrupt flag.
        const VIF = 1 << 19;
        /// Bit 20, VIP: virtual interrupt pending.
        const VIP = 1 << 20;
        /// Bit 21, ID: CPUID available.
        const ID = 1 << 21;
    }
}

impl Rflags {
    /// Bit 1: reserved, always 1 (VM entry fails if it is 0, SDM 27.3.1.4).
    pub const RESERVED_ONE: Self = Self::from_bits_retain(1 << 1);
    /// Bits 63:22, 15, 5 and 3: reserved, must be 0 (SDM 27.3.1.4).
    pub const RESERVED_ZERO: Self =
        Self::from_bits_retain(!(Self::all().bits() | Self::RESERVED_ONE.bits()));
}

bitflags::bitflags! {
    /// Debug register DR7, the enable and control bits (SDM Vol. 3B, "Debug
    /// Control Register (DR7)"). Bits 31:16 hold the R/W and LEN fields of the four
    /// breakpoints; bits 63:32 are reserved.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Dr7: u64 {
        /// Bit 0, L0: local enable of breakpoint 0.
        const L0 = 1 << 0;
        /// Bit 1, G0: global enable of breakpoint 0.
        const G0 = 1 << 1;
        /// Bit 2, L1.
        const L1 = 1 << 2;
        /// Bit 3, G1.
        const G1 = 1 << 3;
        /// Bit 4, L2.
        const L2 = 1 << 4;
        /// Bit 5, G2.
        const G2 = 1 << 5;
        /// Bit 6, L3.
        const L3 = 1 << 6;
        /// Bit 7, G3.
        const G3 = 1 << 7;
        /// Bit 8, LE: local exact breakpoint enable.
        const LE = 1 << 8;
        /// Bit 9, GE: global exact breakpoint enable.
        const GE = 1 << 9;
        /// Bit 11, RTM: advanced debugging of RTM regions.
        const RTM = 1 << 11;
        /// Bit 13, GD: general detect (MOV DR faults).
        const GD = 1 << 13;
    }
}

impl Dr7 {
    /// Bit 10: reserved, reads as 1.
    pub const RESERVED_ONE: Self = Self::from_bits_retain(1 << 10);
    /// DR7 after power-up, reset or INIT: `0000_0400H`, only the reserved
    /// bit 10 set (SDM Vol. 3A, "Processor State Following Power-up, Reset,
    /// or INIT").
    pub const RESET: Self = Self::RESERVED_ONE;
}

bitflags::bitflags! {
    /// The `IA32_DEBUGCTL` MSR (1D9H; SDM Vol. 3B, "IA32_DEBUGCTL MSR";
    /// Vol. 4 Table 2-2). Bits 5:3 and 63:16 are reserved; which of the
    /// named bits exist depends on CPUID.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct DebugCtl: u64 {
        /// Bit 0, LBR: last-branch recording.
        const LBR = 1 << 0;
        /// Bit 1, BTF: single-step on branches (RFLAGS.TF traps on taken
        /// branches only).
        const BTF = 1 << 1;
        /// Bit 2, BLD: #DB on bus locks (bus-lock detection).
        const BLD = 1 << 2;
        /// Bit 6, TR: branch trace messages.
        const TR = 1 << 6;
        /// Bit 7, BTS: branch trace store.
        const BTS = 1 << 7;
        /// Bit 8, BTINT: interrupt when the BTS buffer fills.
        const BTINT = 1 << 8;
        /// Bit 9, `BTS_OFF_OS`: no BTS at CPL 0.
        const BTS_OFF_OS = 1 << 9;
        /// Bit 10, `BTS_OFF_USR`: no BTS above CPL 0.
        const BTS_OFF_USR = 1 << 10;
        /// Bit 11, `FREEZE_LBRS_ON_PMI`.
        const FREEZE_LBRS_ON_PMI = 1 << 11;
        /// Bit 12, `FREEZE_PERFMON_ON_PMI`.
        const FREEZE_PERFMON_ON_PMI = 1 << 12;
        /// Bit 13, `ENABLE_UNCORE_PMI`.
        const ENABLE_UNCORE_PMI = 1 << 13;
        /// Bit 14, `FREEZE_WHILE_SMM`.
        const FREEZE_WHILE_SMM = 1 << 14;
        /// Bit 15, `RTM_DEBUG`: advanced debugging of RTM regions.
        const RTM_DEBUG = 1 << 15;
    }
}

bitflags::bitflags! {
    /// The CET control MSRs `IA32_U_CET` (6A0H) and `IA32_S_CET` (6A2H),
    /// which share one layout (SDM Vol. 1, CET chapter; Vol. 4 Table 2-2). Bits
    /// 63:12 hold the legacy code-page bitmap base.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Cet: u64 {
        /// Bit 0, `SH_STK_EN`: shadow stacks enabled.
        const SH_STK_EN = 1 << 0;
        /// Bit 1, `WR_SHSTK_EN`: WRSS allowed.
        const WR_SHSTK_EN = 1 << 1;
        /// Bit 2, `ENDBR_EN`: indirect-branch tracking enabled.
        const ENDBR_EN = 1 << 2;
        /// Bit 3, `LEG_IW_EN`: legacy compatibility treatment enabled.
        const LEG_IW_EN = 1 << 3;
        /// Bit 4, `NO_TRACK_EN`: the NOTRACK prefix is honoured.
        const NO_TRACK_EN = 1 << 4;
        /// Bit 5, `SUPPRESS_DIS`: no suppression of tracker updates.
        const SUPPRESS_DIS = 1 << 5;
        /// Bit 10, SUPPRESS: indirect-branch tracking suppressed.
        const SUPPRESS = 1 << 10;
        /// Bit 11, TRACKER: waiting for an ENDBRANCH.
        const TRACKER = 1 << 11;
    }
}

impl Cet {
    /// Bits 9:6: reserved, must be 0.
    pub const RESERVED: Self = Self::from_bits_retain(0x3c0);
    /// Bits 63:12, `EB_LEG_BITMAP_BASE`: linear address of the legacy
    /// code-page bitmap.
    pub const LEGACY_BITMAP_BASE: Self = Self::from_bits_retain(!0xfff);
}

/// `IA32_PAT` after power-up or reset: WB, WT, UC-, UC in entries 0-3 and
/// again in 4-7 (SDM Vol. 3A 13.12.4).
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;

/// An `IA32_PAT` entry whose memory type is reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InvalidPatEntry {
    /// The entry index, 0-7 (PA0-PA7, bits 8i+7:8i).
    pub index: u8,
    /// The entry's value (its low 3 bits are the type; bits 7:3 are
    /// reserved).
    pub memory_type: u8,
}

/// Whether `memory_type` is a valid `IA32_PAT` entry: UC (0), WC (1),
/// WT (4), WP (5), WB (6) or UC- (7); 2, 3 and 8-255 are reserved and make
/// WRMSR fault (SDM Vol. 3A 13.12.2, Table 13-10).
pub const fn pat_memory_type_is_valid(memory_type: u8) -> bool {
    matches!(memory_type, 0 | 1 | 4..=7)
}

/// The lowest-numbered entry of `pat` that holds a reserved memory type,
/// if any (SDM Vol. 3A 13.12.2).
pub const fn first_invalid_pat_entry(pat: u64) -> Option<InvalidPatEntry> {
    let entries = pat.to_le_bytes();
    let mut index = 0;
    while index < entries.len() {
        let memory_type = entries[index];
        if !pat_memory_type_is_valid(memory_type) {
            return Some(InvalidPatEntry {
                index: index as u8,
                memory_type,
            });
        }
        index += 1;
    }
    None
}

/// Whether every entry of `pat` is a valid memory type, i.e. whether WRMSR
/// to `IA32_PAT` would accept it (SDM Vol. 3A 13.12.2; VM entry applies the
/// same rule, SDM 27.2.2 and 27.3.1.1).
pub const fn pat_is_valid(pat: u64) -> bool {
    first_invalid_pat_entry(pat).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cr0_bit_positions() {
        let expected = [
            (Cr0::PE, 0),
            (Cr0::MP, 1),
            (Cr0::EM, 2),
            (Cr0::TS, 3),
            (Cr0::ET, 4),
            (Cr0::NE, 5),
            (Cr0::WP, 16),
            (Cr0::AM, 18),
            (Cr0::NW, 29),
            (Cr0::CD, 30),
            (Cr0::PG, 31),
        ];
        for (flag, bit) in expected {
            assert_eq!(flag.bits(), 1 << bit, "{flag:?}");
        }
        assert_eq!(Cr0::all().bits(), 0xe005_003f);
    }

    #[test]
    fn cr4_bit_positions() {
        let expected = [
            (Cr4::VME, 0),
            (Cr4::PVI, 1),
            (Cr4::TSD, 2),
            (Cr4::DE, 3),
            (Cr4::PSE, 4),
            (Cr4::PAE, 5),
            (Cr4::MCE, 6),
            (Cr4::PGE, 7),
            (Cr4::PCE, 8),
            (Cr4::OSFXSR, 9),
            (Cr4::OSXMMEXCPT, 10),
            (Cr4::UMIP, 11),
            (Cr4::LA57, 12),
            (Cr4::VMXE, 13),
            (Cr4::SMXE, 14),
            (Cr4::FSGSBASE, 16),
            (Cr4::PCIDE, 17),
            (Cr4::OSXSAVE, 18),
            (Cr4::KL, 19),
            (Cr4::SMEP, 20),
            (Cr4::SMAP, 21),
            (Cr4::PKE, 22),
            (Cr4::CET, 23),
            (Cr4::PKS, 24),
            (Cr4::UINTR, 25),
            (Cr4::LASS, 27),
            (Cr4::LAM_SUP, 28),
            (Cr4::FRED, 32),
        ];
        for (flag, bit) in expected {
            assert_eq!(flag.bits(), 1 << bit, "{flag:?}");
        }
        // Bits 15, 26 and 31:29 are the reserved holes below bit 32.
        assert_eq!(Cr4::all().bits(), 0x1_1bff_7fff);
    }

    #[test]
    fn efer_defines_only_sce_lme_lma_nxe() {
        assert_eq!(Efer::SCE.bits(), 1);
        assert_eq!(Efer::LME.bits(), 1 << 8);
        assert_eq!(Efer::LMA.bits(), 1 << 10);
        assert_eq!(Efer::NXE.bits(), 1 << 11);
        assert_eq!(Efer::all().bits(), 0xd01);
        assert!(!Efer::all().contains(Efer::from_bits_retain(1 << 9)));
    }

    #[test]
    fn rflags_bits_and_reserved_masks() {
        assert_eq!(Rflags::TF.bits(), 1 << 8);
        assert_eq!(Rflags::IF.bits(), 1 << 9);
        assert_eq!(Rflags::IOPL.bits(), 0x3000);
        assert_eq!(Rflags::VM.bits(), 1 << 17);
        assert_eq!(Rflags::ID.bits(), 1 << 21);
        assert_eq!(Rflags::RESERVED_ONE.bits(), 0x2);
        // Bits 63:22, 15, 5 and 3.
        assert_eq!(
            Rflags::RESERVED_ZERO.bits(),
            !0x3f_ffff | (1 << 15) | (1 << 5) | (1 << 3)
        );
    }

    #[test]
    fn dr7_debugctl_and_cet_bits() {
        assert_eq!(Dr7::RESET.bits(), 0x400);
        assert_eq!(Dr7::GD.bits(), 1 << 13);
        assert_eq!(Dr7::RTM.bits(), 1 << 11);
        assert_eq!(DebugCtl::BTF.bits(), 1 << 1);
        assert_eq!(DebugCtl::BLD.bits(), 1 << 2);
        assert_eq!(DebugCtl::RTM_DEBUG.bits(), 1 << 15);
        // Reserved: bits 5:3 and 63:16.
        assert_eq!(!DebugCtl::all().bits(), 0x38 | !0xffff);
        assert_eq!(Cet::SUPPRESS.bits(), 1 << 10);
        assert_eq!(Cet::TRACKER.bits(), 1 << 11);
        assert_eq!(Cet::RESERVED.bits(), 0x3c0);
        assert_eq!(
            Cet::all().bits() | Cet::RESERVED.bits() | Cet::LEGACY_BITMAP_BASE.bits(),
            u64::MAX
        );
    }

    #[test]
    fn pat_entries() {
        assert!(pat_is_valid(PAT_RESET));
        assert!(pat_is_valid(0x0706_0504_0100_0000));
        for memory_type in 0..=u8::MAX {
            assert_eq!(
                pat_memory_type_is_valid(memory_type),
                [0, 1, 4, 5, 6, 7].contains(&memory_type),
            );
        }
        assert_eq!(
            first_invalid_pat_entry(0x0002_0000_0300_0006),
            Some(InvalidPatEntry {
                index: 3,
                memory_type: 3
            })
        );
        assert_eq!(
            first_invalid_pat_entry(0x0800_0000_0000_0000),
            Some(InvalidPatEntry {
                index: 7,
                memory_type: 8
            })
        );
        assert!(!pat_is_valid(0x0800_0000_0000_0000));
    }
}
