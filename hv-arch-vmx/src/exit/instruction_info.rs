//! The VM-exit instruction-information field (SDM Vol. 3C 28.2.5,
//! Tables 28-8 to 28-16): which registers, segment and addressing an exiting
//! instruction used, so a VMM can find its operand without decoding it.

use super::operand::{AddressSize, Gpr, SegmentRegister};

/// An instruction-information field held an encoding the SDM does not use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum InstructionInfoError {
    /// Bits 9:7 held 3-7 (only 0 = 16, 1 = 32 and 2 = 64 bits exist).
    #[error("reserved address-size encoding {0} in instruction information bits 9:7")]
    ReservedAddressSize(u8),
    /// Bits 17:15 held 6 or 7 (only ES, CS, SS, DS, FS, GS exist).
    #[error("reserved segment-register encoding {0} in instruction information bits 17:15")]
    ReservedSegment(u8),
    /// Bits 12:11 of the RDRAND/RDSEED form held 3.
    #[error("reserved operand-size encoding {0} in instruction information bits 12:11")]
    ReservedOperandSize(u8),
}

/// The index part of a memory operand: register times scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScaledIndex {
    /// The index register.
    pub register: Gpr,
    /// The scale factor: 1, 2, 4 or 8.
    pub scale: u8,
}

/// A memory operand as described by instruction information. Its effective
/// address is `base + index * scale + displacement` modulo the address
/// size, where the displacement is the exit qualification
/// ([`super::VmxInstructionQualification`]), in segment `segment`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemoryOperand {
    /// The address size of the instruction.
    pub address_size: AddressSize,
    /// The segment register used.
    pub segment: SegmentRegister,
    /// The base register, if any.
    pub base: Option<Gpr>,
    /// The scaled index register, if any.
    pub index: Option<ScaledIndex>,
}

impl MemoryOperand {
    /// The effective address (before segmentation): base + index * scale +
    /// `displacement`, wrapped to the address size. `register` reads the
    /// guest's general-purpose registers.
    pub fn effective_address(
        &self,
        displacement: u64,
        mut register: impl FnMut(Gpr) -> u64,
    ) -> u64 {
        let base = self.base.map_or(0, &mut register);
        let index = self.index.map_or(0, |index| {
            register(index.register).wrapping_mul(u64::from(index.scale))
        });
        base.wrapping_add(index).wrapping_add(displacement) & self.address_size.mask()
    }
}

/// An operand that is either a register or memory (bit 10 of the field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// A register operand (Reg1, bits 6:3).
    Register(Gpr),
    /// A memory operand.
    Memory(MemoryOperand),
}

/// INS/OUTS (Table 28-8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StringIoInfo {
    /// The address size.
    pub address_size: AddressSize,
    /// The segment: the field's segment for OUTS, always ES for INS.
    pub segment: SegmentRegister,
}

/// INVEPT, INVPCID and INVVPID (Table 28-9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InvalidationInstructionInfo {
    /// The descriptor in memory.
    pub descriptor: MemoryOperand,
    /// The register holding the invalidation type (Reg2).
    pub type_register: Gpr,
}

/// Which of LGDT, LIDT, SGDT, SIDT exited (Table 28-10, bits 29:28).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DescriptorTableInstruction {
    /// 0: SGDT.
    Sgdt,
    /// 1: SIDT.
    Sidt,
    /// 2: LGDT.
    Lgdt,
    /// 3: LIDT.
    Lidt,
}

/// The operand size of LGDT/LIDT/SGDT/SIDT outside 64-bit mode (bit 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DescriptorTableOperandSize {
    /// 0: 16-bit operand size (24-bit base loaded).
    Bits16,
    /// 1: 32-bit operand size. (Undefined for exits from 64-bit mode.)
    Bits32,
}

/// LGDT, LIDT, SGDT, SIDT (Table 28-10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DescriptorTableInfo {
    /// The instruction.
    pub instruction: DescriptorTableInstruction,
    /// The operand size (undefined for exits from 64-bit mode).
    pub operand_size: DescriptorTableOperandSize,
    /// The pseudo-descriptor in memory.
    pub memory: MemoryOperand,
}

/// Which of LLDT, LTR, SLDT, STR exited (Table 28-11, bits 29:28).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LdtrTrInstruction {
    /// 0: SLDT.
    Sldt,
    /// 1: STR.
    Str,
    /// 2: LLDT.
    Lldt,
    /// 3: LTR.
    Ltr,
}

/// LLDT, LTR, SLDT, STR (Table 28-11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LdtrTrInfo {
    /// The instruction.
    pub instruction: LdtrTrInstruction,
    /// The selector operand.
    pub operand: Operand,
}

/// The operand size of RDRAND/RDSEED (Table 28-12, bits 12:11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RandomOperandSize {
    /// 0: 16 bits.
    Bits16,
    /// 1: 32 bits.
    Bits32,
    /// 2: 64 bits.
    Bits64,
}

/// RDRAND and RDSEED (Table 28-12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RandomInstructionInfo {
    /// The destination register.
    pub destination: Gpr,
    /// The operand size.
    pub operand_size: RandomOperandSize,
}

/// VMREAD and VMWRITE (Table 28-15).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VmreadVmwriteInfo {
    /// The register holding the VMCS field encoding (Reg2).
    pub field_register: Gpr,
    /// The value operand: VMREAD's destination or VMWRITE's source (Reg1 or
    /// memory).
    pub value: Operand,
}

/// The VM-exit instruction-information field (SDM 28.2.5). Its layout
/// depends on the exiting instruction: use the accessor for that family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VmxInstructionInfo(u32);

impl VmxInstructionInfo {
    /// Wraps the raw VMCS value.
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw VMCS value.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Builds the field for a memory operand (bit 10 clear), as the
    /// processor would for VMCLEAR-style and VMREAD/VMWRITE instructions.
    /// Combine with [`Self::with_reg2`] and friends.
    pub const fn from_memory_operand(memory: MemoryOperand) -> Self {
        let mut raw = ((memory.address_size.encoding() as u32) << 7)
            | ((memory.segment.encoding() as u32) << 15);
        raw |= match memory.index {
            Some(index) => {
                let scaling = match index.scale {
                    8 => 3,
                    4 => 2,
                    2 => 1,
                    _ => 0,
                };
                scaling | ((index.register.index() as u32) << 18)
            }
            None => 1 << 22,
        };
        raw |= match memory.base {
            Some(base) => (base.index() as u32) << 23,
            None => 1 << 27,
        };
        Self(raw)
    }

    /// Builds the field for a register operand: Reg1 = `register`, bit 10 set.
    pub const fn from_register_operand(register: Gpr) -> Self {
        Self(((register.index() as u32) << 3) | (1 << 10))
    }

    /// This field with Reg2 (bits 31:28) set to `register`.
    #[must_use]
    pub const fn with_reg2(self, register: Gpr) -> Self {
        Self((self.0 & 0x0FFF_FFFF) | ((register.index() as u32) << 28))
    }

    /// This field with the instruction identity (bits 29:28) of the
    /// descriptor-table form.
    #[must_use]
    pub const fn with_descriptor_table_instruction(
        self,
        instruction: DescriptorTableInstruction,
    ) -> Self {
        Self((self.0 & !(3 << 28)) | ((instruction as u32) << 28))
    }

    /// This field with the instruction identity (bits 29:28) of the
    /// LLDT/LTR/SLDT/STR form.
    #[must_use]
    pub const fn with_ldtr_tr_instruction(self, instruction: LdtrTrInstruction) -> Self {
        Self((self.0 & !(3 << 28)) | ((instruction as u32) << 28))
    }

    /// Bits 1:0: the scaling encoding (0-3 for scale 1, 2, 4, 8).
    pub const fn scaling(self) -> u8 {
        (self.0 & 3) as u8
    }

    /// Bits 6:3: Reg1.
    pub const fn reg1(self) -> Gpr {
        Gpr::from_index((self.0 >> 3) as u8)
    }

    /// Bits 9:7 as stored.
    pub const fn address_size_encoding(self) -> u8 {
        ((self.0 >> 7) & 7) as u8
    }

    /// Bits 9:7: the address size.
    ///
    /// # Errors
    ///
    /// [`InstructionInfoError::ReservedAddressSize`] for 3-7.
    pub const fn address_size(self) -> Result<AddressSize, InstructionInfoError> {
        AddressSize::from_encoding(self.address_size_encoding())
    }

    /// Bit 10: the operand is a register (Reg1), not memory.
    pub const fn is_register_operand(self) -> bool {
        self.0 & (1 << 10) != 0
    }

    /// Bits 17:15 as stored.
    pub const fn segment_encoding(self) -> u8 {
        ((self.0 >> 15) & 7) as u8
    }

    /// Bits 17:15: the segment register.
    ///
    /// # Errors
    ///
    /// [`InstructionInfoError::ReservedSegment`] for 6 and 7.
    pub const fn segment(self) -> Result<SegmentRegister, InstructionInfoError> {
        SegmentRegister::from_encoding(self.segment_encoding())
    }

    /// Bits 21:18 unless bit 22 (`IndexReg` invalid) is set.
    pub const fn index_register(self) -> Option<Gpr> {
        if self.0 & (1 << 22) != 0 {
            None
        } else {
            Some(Gpr::from_index((self.0 >> 18) as u8))
        }
    }

    /// Bits 26:23 unless bit 27 (`BaseReg` invalid) is set.
    pub const fn base_register(self) -> Option<Gpr> {
        if self.0 & (1 << 27) != 0 {
            None
        } else {
            Some(Gpr::from_index((self.0 >> 23) as u8))
        }
    }

    /// Bits 31:28: Reg2.
    pub const fn reg2(self) -> Gpr {
        Gpr::from_index((self.0 >> 28) as u8)
    }

    /// The memory operand of the common memory form (scaling, address
    /// size, segment, index, base). Bit 10 is not consulted.
    ///
    /// # Errors
    ///
    /// A reserved address-size or segment encoding.
    pub const fn memory_operand(self) -> Result<MemoryOperand, InstructionInfoError> {
        let address_size = match self.address_size() {
            Ok(size) => size,
            Err(error) => return Err(error),
        };
        let segment = match self.segment() {
            Ok(segment) => segment,
            Err(error) => return Err(error),
        };
        let index = match self.index_register() {
            Some(register) => Some(ScaledIndex {
                register,
                scale: 1 << self.scaling(),
            }),
            None => None,
        };
        Ok(MemoryOperand {
            address_size,
            segment,
            base: self.base_register(),
            index,
        })
    }

    /// The register-or-memory operand selected by bit 10 (VMREAD/VMWRITE,
    /// LLDT/LTR/SLDT/STR). For a register operand the memory fields are
    /// undefined and not decoded.
    ///
    /// # Errors
    ///
    /// A reserved address-size or segment encoding in a memory operand.
    pub const fn operand(self) -> Result<Operand, InstructionInfoError> {
        if self.is_register_operand() {
            Ok(Operand::Register(self.reg1()))
        } else {
            match self.memory_operand() {
                Ok(memory) => Ok(Operand::Memory(memory)),
                Err(error) => Err(error),
            }
        }
    }

    /// Decodes the INS/OUTS form (Table 28-8). `is_input` is true for INS,
    /// whose segment field is undefined: ES is used.
    ///
    /// # Errors
    ///
    /// A reserved address size, or for OUTS a reserved segment.
    pub const fn string_io(self, is_input: bool) -> Result<StringIoInfo, InstructionInfoError> {
        let address_size = match self.address_size() {
            Ok(size) => size,
            Err(error) => return Err(error),
        };
        let segment = if is_input {
            SegmentRegister::Es
        } else {
            match self.segment() {
                Ok(segment) => segment,
                Err(error) => return Err(error),
            }
        };
        Ok(StringIoInfo {
            address_size,
            segment,
        })
    }

    /// Decodes the INVEPT/INVPCID/INVVPID form (Table 28-9).
    ///
    /// # Errors
    ///
    /// A reserved address-size or segment encoding.
    pub const fn invalidation(self) -> Result<InvalidationInstructionInfo, InstructionInfoError> {
        match self.memory_operand() {
            Ok(descriptor) => Ok(InvalidationInstructionInfo {
                descriptor,
                type_register: self.reg2(),
            }),
            Err(error) => Err(error),
        }
    }

    /// Decodes the LIDT/LGDT/SIDT/SGDT form (Table 28-10).
    ///
    /// # Errors
    ///
    /// A reserved address-size or segment encoding.
    pub const fn descriptor_table(self) -> Result<DescriptorTableInfo, InstructionInfoError> {
        let memory = match self.memory_operand() {
            Ok(memory) => memory,
            Err(error) => return Err(error),
        };
        let instruction = match (self.0 >> 28) & 3 {
            0 => DescriptorTableInstruction::Sgdt,
            1 => DescriptorTableInstruction::Sidt,
            2 => DescriptorTableInstruction::Lgdt,
            _ => DescriptorTableInstruction::Lidt,
        };
        let operand_size = if self.0 & (1 << 11) != 0 {
            DescriptorTableOperandSize::Bits32
        } else {
            DescriptorTableOperandSize::Bits16
        };
        Ok(DescriptorTableInfo {
            instruction,
            operand_size,
            memory,
        })
    }

    /// Decodes the LLDT/LTR/SLDT/STR form (Table 28-11).
    ///
    /// # Errors
    ///
    /// A reserved address-size or segment encoding in a memory operand.
    pub const fn ldtr_tr(self) -> Result<LdtrTrInfo, InstructionInfoError> {
        let operand = match self.operand() {
            Ok(operand) => operand,
            Err(error) => return Err(error),
        };
        let instruction = match (self.0 >> 28) & 3 {
            0 => LdtrTrInstruction::Sldt,
            1 => LdtrTrInstruction::Str,
            2 => LdtrTrInstruction::Lldt,
            _ => LdtrTrInstruction::Ltr,
        };
        Ok(LdtrTrInfo {
            instruction,
            operand,
        })
    }

    /// Decodes the RDRAND/RDSEED form (Table 28-12).
    ///
    /// # Errors
    ///
    /// [`InstructionInfoError::ReservedOperandSize`] for operand size 3.
    pub const fn random(self) -> Result<RandomInstructionInfo, InstructionInfoError> {
        let operand_size = match (self.0 >> 11) & 3 {
            0 => RandomOperandSize::Bits16,
            1 => RandomOperandSize::Bits32,
            2 => RandomOperandSize::Bits64,
            other => return Err(InstructionInfoError::ReservedOperandSize(other as u8)),
        };
        Ok(RandomInstructionInfo {
            destination: self.reg1(),
            operand_size,
        })
    }

    /// Decodes the TPAUSE/UMWAIT form (Table 28-13): the source register.
    pub const fn user_wait_register(self) -> Gpr {
        self.reg1()
    }

    /// Decodes the VMCLEAR/VMPTRLD/VMPTRST/VMXON/XRSTORS/XSAVES form
    /// (Table 28-14): the memory operand.
    ///
    /// # Errors
    ///
    /// A reserved address-size or segment encoding.
    pub const fn vmx_pointer_operand(self) -> Result<MemoryOperand, InstructionInfoError> {
        self.memory_operand()
    }

    /// Decodes the VMREAD/VMWRITE form (Table 28-15).
    ///
    /// # Errors
    ///
    /// A reserved address-size or segment encoding in a memory operand.
    pub const fn vmread_vmwrite(self) -> Result<VmreadVmwriteInfo, InstructionInfoError> {
        match self.operand() {
            Ok(value) => Ok(VmreadVmwriteInfo {
                field_register: self.reg2(),
                value,
            }),
            Err(error) => Err(error),
        }
    }

    /// Decodes the LOADIWKEY form (Table 28-16): the two XMM register
    /// numbers (Reg1, Reg2), each 0-15.
    pub const fn loadiwkey_registers(self) -> (u8, u8) {
        (((self.0 >> 3) & 0xF) as u8, ((self.0 >> 28) & 0xF) as u8)
    }
}
