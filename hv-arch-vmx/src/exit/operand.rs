//! Register and addressing encodings shared by exit qualifications and the
//! VM-exit instruction-information field (SDM 28.2.1, 28.2.5).

use super::instruction_info::InstructionInfoError;

/// A general-purpose register, numbered as in exit qualifications and
/// instruction information (0 = RAX ... 7 = RDI, 8-15 = R8-R15; SDM 28.2.1,
/// Table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gpr {
    /// 0: RAX.
    Rax,
    /// 1: RCX.
    Rcx,
    /// 2: RDX.
    Rdx,
    /// 3: RBX.
    Rbx,
    /// 4: RSP.
    Rsp,
    /// 5: RBP.
    Rbp,
    /// 6: RSI.
    Rsi,
    /// 7: RDI.
    Rdi,
    /// 8: R8.
    R8,
    /// 9: R9.
    R9,
    /// 10: R10.
    R10,
    /// 11: R11.
    R11,
    /// 12: R12.
    R12,
    /// 13: R13.
    R13,
    /// 14: R14.
    R14,
    /// 15: R15.
    R15,
}

impl Gpr {
    /// All sixteen registers in encoding order.
    pub const ALL: [Self; 16] = [
        Self::Rax,
        Self::Rcx,
        Self::Rdx,
        Self::Rbx,
        Self::Rsp,
        Self::Rbp,
        Self::Rsi,
        Self::Rdi,
        Self::R8,
        Self::R9,
        Self::R10,
        Self::R11,
        Self::R12,
        Self::R13,
        Self::R14,
        Self::R15,
    ];

    /// The register encoded by the low four bits of `index` (the fields that
    /// hold register numbers are four bits wide, so every value names one).
    pub const fn from_index(index: u8) -> Self {
        Self::ALL[(index & 0xF) as usize]
    }

    /// The 4-bit encoding of this register.
    pub const fn index(self) -> u8 {
        self as u8
    }

    /// The 64-bit register name in lower case ("rax", "r8").
    pub const fn name(self) -> &'static str {
        match self {
            Self::Rax => "rax",
            Self::Rcx => "rcx",
            Self::Rdx => "rdx",
            Self::Rbx => "rbx",
            Self::Rsp => "rsp",
            Self::Rbp => "rbp",
            Self::Rsi => "rsi",
            Self::Rdi => "rdi",
            Self::R8 => "r8",
            Self::R9 => "r9",
            Self::R10 => "r10",
            Self::R11 => "r11",
            Self::R12 => "r12",
            Self::R13 => "r13",
            Self::R14 => "r14",
            Self::R15 => "r15",
        }
    }
}

/// The address size of a memory operand (SDM 28.2.5, instruction-information
/// bits 9:7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressSize {
    /// 0: 16-bit addressing.
    Bits16,
    /// 1: 32-bit addressing.
    Bits32,
    /// 2: 64-bit addressing.
    Bits64,
}

impl AddressSize {
    /// Decodes the 3-bit field; values 3-7 are not used by the SDM.
    ///
    /// # Errors
    ///
    /// [`InstructionInfoError::ReservedAddressSize`] for values 3 and up.
    pub const fn from_encoding(encoding: u8) -> Result<Self, InstructionInfoError> {
        match encoding {
            0 => Ok(Self::Bits16),
            1 => Ok(Self::Bits32),
            2 => Ok(Self::Bits64),
            other => Err(InstructionInfoError::ReservedAddressSize(other)),
        }
    }

    /// The 3-bit field value.
    pub const fn encoding(self) -> u8 {
        self as u8
    }

    /// The width in bits (16, 32 or 64).
    pub const fn bits(self) -> u32 {
        match self {
            Self::Bits16 => 16,
            Self::Bits32 => 32,
            Self::Bits64 => 64,
        }
    }

    /// A mask of the address bits that exist at this size; effective
    /// addresses wrap modulo 2^bits.
    pub const fn mask(self) -> u64 {
        match self {
            Self::Bits16 => 0xFFFF,
            Self::Bits32 => 0xFFFF_FFFF,
            Self::Bits64 => u64::MAX,
        }
    }
}

/// A segment register as encoded in instruction information (bits 17:15).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentRegister {
    /// 0: ES.
    Es,
    /// 1: CS.
    Cs,
    /// 2: SS.
    Ss,
    /// 3: DS.
    Ds,
    /// 4: FS.
    Fs,
    /// 5: GS.
    Gs,
}

impl SegmentRegister {
    /// Decodes the 3-bit field; values 6 and 7 are not used by the SDM.
    ///
    /// # Errors
    ///
    /// [`InstructionInfoError::ReservedSegment`] for 6 and 7 (and larger).
    pub const fn from_encoding(encoding: u8) -> Result<Self, InstructionInfoError> {
        match encoding {
            0 => Ok(Self::Es),
            1 => Ok(Self::Cs),
            2 => Ok(Self::Ss),
            3 => Ok(Self::Ds),
            4 => Ok(Self::Fs),
            5 => Ok(Self::Gs),
            other => Err(InstructionInfoError::ReservedSegment(other)),
        }
    }

    /// The 3-bit field value.
    pub const fn encoding(self) -> u8 {
        self as u8
    }

    /// The register name in lower case ("es").
    pub const fn name(self) -> &'static str {
        match self {
            Self::Es => "es",
            Self::Cs => "cs",
            Self::Ss => "ss",
            Self::Ds => "ds",
            Self::Fs => "fs",
            Self::Gs => "gs",
        }
    }
}
