//! Exit-qualification decoders, one per layout of SDM Vol. 3C 28.2.1.
//!
//! Each type wraps the raw 64-bit exit qualification, reads its fields and
//! can also build a qualification (for an L0 that reflects an exit to L1 or
//! synthesizes one). Bits the SDM leaves undefined are kept but not
//! interpreted.

use super::operand::Gpr;

/// Reads bit `bit` of `raw`.
const fn bit(raw: u64, bit: u32) -> bool {
    raw & (1 << bit) != 0
}

/// Sets or clears bit `bit` of `raw`.
const fn set_bit(raw: u64, bit: u32, value: bool) -> u64 {
    if value {
        raw | (1 << bit)
    } else {
        raw & !(1 << bit)
    }
}

/// Implements `from_raw`/`raw` for a qualification newtype over `u64`.
macro_rules! qualification_raw {
    ($ty:ident) => {
        impl $ty {
            /// Wraps the raw exit qualification.
            pub const fn from_raw(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw exit qualification.
            pub const fn raw(self) -> u64 {
                self.0
            }
        }
    };
}

/// Exit qualification for debug exceptions (#DB intercepted through the
/// exception bitmap; SDM 28.2.1, Table 28-1). The layout follows DR6, but
/// BLD and RTM are set (not cleared) to report their condition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DebugExceptionQualification(u64);

qualification_raw!(DebugExceptionQualification);

impl DebugExceptionQualification {
    /// Bits 3:0, B0-B3: which breakpoint conditions were met (even if not
    /// enabled in DR7).
    pub const fn breakpoints(self) -> u8 {
        (self.0 & 0xF) as u8
    }

    /// Whether breakpoint condition `index` (0-3) was met; `false` for
    /// other indices.
    pub const fn breakpoint_hit(self, index: u8) -> bool {
        index < 4 && bit(self.0, index as u32)
    }

    /// Bit 11, BLD: a bus lock was asserted with OS bus-lock detection on.
    pub const fn bus_lock_detected(self) -> bool {
        bit(self.0, 11)
    }

    /// Bit 13, BD: the cause was a debug-register access (DR7.GD).
    pub const fn debug_register_access(self) -> bool {
        bit(self.0, 13)
    }

    /// Bit 14, BS: single step (or taken branch with `IA32_DEBUGCTL.BTF`).
    pub const fn single_step(self) -> bool {
        bit(self.0, 14)
    }

    /// Bit 16, RTM: the #DB or #BP happened inside an RTM region.
    pub const fn rtm(self) -> bool {
        bit(self.0, 16)
    }
}

/// What started a task switch (SDM 28.2.1, Table 28-2, bits 31:30).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskSwitchSource {
    /// 0: a CALL instruction.
    Call,
    /// 1: an IRET instruction.
    Iret,
    /// 2: a JMP instruction.
    Jmp,
    /// 3: a task gate in the IDT.
    IdtTaskGate,
}

/// Exit qualification for task switches (SDM 28.2.1, Table 28-2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TaskSwitchQualification(u64);

qualification_raw!(TaskSwitchQualification);

impl TaskSwitchQualification {
    /// A qualification for a switch to the TSS `selector` started by `source`.
    pub const fn new(selector: u16, source: TaskSwitchSource) -> Self {
        Self(selector as u64 | ((source as u64) << 30))
    }

    /// Bits 15:0: the selector of the TSS being switched to.
    pub const fn selector(self) -> u16 {
        self.0 as u16
    }

    /// Bits 31:30: what started the task switch.
    pub const fn source(self) -> TaskSwitchSource {
        match (self.0 >> 30) & 3 {
            0 => TaskSwitchSource::Call,
            1 => TaskSwitchSource::Iret,
            2 => TaskSwitchSource::Jmp,
            _ => TaskSwitchSource::IdtTaskGate,
        }
    }
}

/// The access type of a control-register access exit (Table 28-3, bits 5:4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrAccessType {
    /// 0: MOV to CR.
    MovToCr,
    /// 1: MOV from CR.
    MovFromCr,
    /// 2: CLTS.
    Clts,
    /// 3: LMSW.
    Lmsw,
}

/// Where LMSW took its operand from (Table 28-3, bit 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LmswOperandType {
    /// 0: a register (the source data is in bits 31:16).
    Register,
    /// 1: memory (the guest-linear address field holds its address).
    Memory,
}

/// A decoded control-register access, one variant per access type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlRegisterAccess {
    /// `mov crN, reg`.
    MovToCr {
        /// The control register number (0, 3, 4 or 8 in practice).
        cr: u8,
        /// The source register.
        source: Gpr,
    },
    /// `mov reg, crN`.
    MovFromCr {
        /// The control register number (3 or 8 in practice).
        cr: u8,
        /// The destination register.
        destination: Gpr,
    },
    /// `clts`.
    Clts,
    /// `lmsw`.
    Lmsw {
        /// The 16-bit source operand.
        source_data: u16,
        /// Whether the operand came from a register or memory.
        operand: LmswOperandType,
    },
}

/// Exit qualification for control-register accesses: MOV CR, CLTS, LMSW
/// (SDM 28.2.1, Table 28-3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ControlRegisterAccessQualification(u64);

qualification_raw!(ControlRegisterAccessQualification);

impl ControlRegisterAccessQualification {
    /// The qualification for `mov crN, source`.
    pub const fn mov_to_cr(cr: u8, source: Gpr) -> Self {
        Self((cr & 0xF) as u64 | ((source.index() as u64) << 8))
    }

    /// The qualification for `mov destination, crN`.
    pub const fn mov_from_cr(cr: u8, destination: Gpr) -> Self {
        Self((cr & 0xF) as u64 | (1 << 4) | ((destination.index() as u64) << 8))
    }

    /// The qualification for CLTS (CR number 0).
    pub const fn clts() -> Self {
        Self(2 << 4)
    }

    /// The qualification for LMSW with `source_data`.
    pub const fn lmsw(source_data: u16, operand: LmswOperandType) -> Self {
        Self((3 << 4) | ((operand as u64) << 6) | ((source_data as u64) << 16))
    }

    /// Bits 3:0: the control register number (0 for CLTS and LMSW).
    pub const fn cr_number(self) -> u8 {
        (self.0 & 0xF) as u8
    }

    /// Bits 5:4: the access type.
    pub const fn access_type(self) -> CrAccessType {
        match (self.0 >> 4) & 3 {
            0 => CrAccessType::MovToCr,
            1 => CrAccessType::MovFromCr,
            2 => CrAccessType::Clts,
            _ => CrAccessType::Lmsw,
        }
    }

    /// Bit 6: the LMSW operand type (0 for CLTS and MOV CR).
    pub const fn lmsw_operand_type(self) -> LmswOperandType {
        if bit(self.0, 6) {
            LmswOperandType::Memory
        } else {
            LmswOperandType::Register
        }
    }

    /// Bits 11:8: the general-purpose register of a MOV CR.
    pub const fn gpr(self) -> Gpr {
        Gpr::from_index((self.0 >> 8) as u8)
    }

    /// Bits 31:16: the LMSW source data.
    pub const fn lmsw_source_data(self) -> u16 {
        (self.0 >> 16) as u16
    }

    /// The access as one typed value.
    pub const fn decode(self) -> ControlRegisterAccess {
        match self.access_type() {
            CrAccessType::MovToCr => ControlRegisterAccess::MovToCr {
                cr: self.cr_number(),
                source: self.gpr(),
            },
            CrAccessType::MovFromCr => ControlRegisterAccess::MovFromCr {
                cr: self.cr_number(),
                destination: self.gpr(),
            },
            CrAccessType::Clts => ControlRegisterAccess::Clts,
            CrAccessType::Lmsw => ControlRegisterAccess::Lmsw {
                source_data: self.lmsw_source_data(),
                operand: self.lmsw_operand_type(),
            },
        }
    }
}

/// The direction of a MOV DR (Table 28-4, bit 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MovDrDirection {
    /// 0: MOV to DR.
    ToDr,
    /// 1: MOV from DR.
    FromDr,
}

/// Exit qualification for MOV DR (SDM 28.2.1, Table 28-4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MovDrQualification(u64);

qualification_raw!(MovDrQualification);

impl MovDrQualification {
    /// The qualification for a MOV between DR`dr` and `gpr`.
    pub const fn new(dr: u8, direction: MovDrDirection, gpr: Gpr) -> Self {
        Self((dr & 7) as u64 | ((direction as u64) << 4) | ((gpr.index() as u64) << 8))
    }

    /// Bits 2:0: the debug register number.
    pub const fn dr_number(self) -> u8 {
        (self.0 & 7) as u8
    }

    /// Bit 4: the direction.
    pub const fn direction(self) -> MovDrDirection {
        if bit(self.0, 4) {
            MovDrDirection::FromDr
        } else {
            MovDrDirection::ToDr
        }
    }

    /// Bits 11:8: the general-purpose register.
    pub const fn gpr(self) -> Gpr {
        Gpr::from_index((self.0 >> 8) as u8)
    }
}

/// The size of an I/O access (Table 28-5, bits 2:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoAccessSize {
    /// Encoding 0: one byte.
    Byte,
    /// Encoding 1: two bytes.
    Word,
    /// Encoding 3: four bytes.
    Dword,
}

impl IoAccessSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u8 {
        match self {
            Self::Byte => 1,
            Self::Word => 2,
            Self::Dword => 4,
        }
    }

    /// The 3-bit encoding (0, 1 or 3).
    pub const fn encoding(self) -> u8 {
        match self {
            Self::Byte => 0,
            Self::Word => 1,
            Self::Dword => 3,
        }
    }
}

/// The I/O size field held an encoding the SDM does not use (2, 4-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("reserved I/O access-size encoding {0} in exit qualification bits 2:0")]
pub struct ReservedIoAccessSize(pub u8);

/// The direction of an I/O instruction (Table 28-5, bit 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoDirection {
    /// 0: OUT/OUTS.
    Out,
    /// 1: IN/INS.
    In,
}

/// How the port was given (Table 28-5, bit 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoOperandEncoding {
    /// 0: in DX.
    Dx,
    /// 1: as an immediate.
    Immediate,
}

/// Exit qualification for I/O instructions (SDM 28.2.1, Table 28-5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IoQualification(u64);

qualification_raw!(IoQualification);

impl IoQualification {
    /// A plain (non-string, non-REP, port in DX) access of `size` to `port`.
    pub const fn new(port: u16, size: IoAccessSize, direction: IoDirection) -> Self {
        Self(size.encoding() as u64 | ((direction as u64) << 3) | ((port as u64) << 16))
    }

    /// This qualification with the string-instruction bit (4) set or clear.
    #[must_use]
    pub const fn with_string(self, string: bool) -> Self {
        Self(set_bit(self.0, 4, string))
    }

    /// This qualification with the REP-prefix bit (5) set or clear.
    #[must_use]
    pub const fn with_rep(self, rep: bool) -> Self {
        Self(set_bit(self.0, 5, rep))
    }

    /// This qualification with the operand encoding (bit 6).
    #[must_use]
    pub const fn with_operand_encoding(self, encoding: IoOperandEncoding) -> Self {
        Self(set_bit(
            self.0,
            6,
            matches!(encoding, IoOperandEncoding::Immediate),
        ))
    }

    /// Bits 2:0 as stored.
    pub const fn size_encoding(self) -> u8 {
        (self.0 & 7) as u8
    }

    /// Bits 2:0: the access size.
    ///
    /// # Errors
    ///
    /// [`ReservedIoAccessSize`] for the unused encodings 2 and 4-7.
    pub const fn size(self) -> Result<IoAccessSize, ReservedIoAccessSize> {
        match self.size_encoding() {
            0 => Ok(IoAccessSize::Byte),
            1 => Ok(IoAccessSize::Word),
            3 => Ok(IoAccessSize::Dword),
            other => Err(ReservedIoAccessSize(other)),
        }
    }

    /// Bit 3: the direction.
    pub const fn direction(self) -> IoDirection {
        if bit(self.0, 3) {
            IoDirection::In
        } else {
            IoDirection::Out
        }
    }

    /// Bit 4: INS/OUTS.
    pub const fn is_string(self) -> bool {
        bit(self.0, 4)
    }

    /// Bit 5: REP-prefixed.
    pub const fn is_rep(self) -> bool {
        bit(self.0, 5)
    }

    /// Bit 6: whether the port came from DX or an immediate.
    pub const fn operand_encoding(self) -> IoOperandEncoding {
        if bit(self.0, 6) {
            IoOperandEncoding::Immediate
        } else {
            IoOperandEncoding::Dx
        }
    }

    /// Bits 31:16: the port number.
    pub const fn port(self) -> u16 {
        (self.0 >> 16) as u16
    }
}

/// How the APIC-access page was accessed (SDM 28.2.1, Table 28-6, bits 15:12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApicAccessType {
    /// 0: linear access for a data read during instruction execution.
    LinearDataRead,
    /// 1: linear access for a data write during instruction execution.
    LinearDataWrite,
    /// 2: linear access for an instruction fetch.
    LinearInstructionFetch,
    /// 3: linear access (read or write) during event delivery.
    LinearEventDelivery,
    /// 10: guest-physical access during event delivery.
    GuestPhysicalEventDelivery,
    /// 15: guest-physical access for an instruction fetch or during
    /// instruction execution.
    GuestPhysicalInstruction,
    /// Any other encoding (not used by the SDM).
    Reserved(u8),
}

impl ApicAccessType {
    /// Decodes the 4-bit field (total).
    pub const fn from_encoding(encoding: u8) -> Self {
        match encoding & 0xF {
            0 => Self::LinearDataRead,
            1 => Self::LinearDataWrite,
            2 => Self::LinearInstructionFetch,
            3 => Self::LinearEventDelivery,
            10 => Self::GuestPhysicalEventDelivery,
            15 => Self::GuestPhysicalInstruction,
            other => Self::Reserved(other),
        }
    }

    /// The 4-bit encoding.
    pub const fn encoding(self) -> u8 {
        match self {
            Self::LinearDataRead => 0,
            Self::LinearDataWrite => 1,
            Self::LinearInstructionFetch => 2,
            Self::LinearEventDelivery => 3,
            Self::GuestPhysicalEventDelivery => 10,
            Self::GuestPhysicalInstruction => 15,
            Self::Reserved(encoding) => encoding & 0xF,
        }
    }

    /// Whether the access used a linear address (the page offset is valid).
    pub const fn is_linear(self) -> bool {
        matches!(self.encoding(), 0..=3)
    }
}

/// Exit qualification for APIC-access exits from linear or guest-physical
/// accesses (SDM 28.2.1, Table 28-6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ApicAccessQualification(u64);

qualification_raw!(ApicAccessQualification);

impl ApicAccessQualification {
    /// A qualification for an access of `access_type` at page offset
    /// `offset` (bits above 11 of `offset` are dropped).
    pub const fn new(offset: u16, access_type: ApicAccessType) -> Self {
        Self((offset & 0xFFF) as u64 | ((access_type.encoding() as u64) << 12))
    }

    /// This qualification with bit 16 (asynchronous, not event delivery).
    #[must_use]
    pub const fn with_asynchronous(self, asynchronous: bool) -> Self {
        Self(set_bit(self.0, 16, asynchronous))
    }

    /// Bits 11:0: the offset in the APIC page (undefined for
    /// guest-physical accesses).
    pub const fn offset(self) -> u16 {
        (self.0 & 0xFFF) as u16
    }

    /// Bits 15:12: the access type.
    pub const fn access_type(self) -> ApicAccessType {
        ApicAccessType::from_encoding((self.0 >> 12) as u8)
    }

    /// Bit 16: the access was asynchronous to instruction execution and not
    /// part of event delivery (Intel PT output, PEBS, user-interrupt delivery).
    pub const fn asynchronous(self) -> bool {
        bit(self.0, 16)
    }
}

bitflags::bitflags! {
    /// The kind of access that caused an EPT violation (Table 28-7, bits 2:0).
    /// Reads and writes of guest paging structures with EPT A/D enabled
    /// report both bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EptViolationAccess: u64 {
        /// Bit 0: a data read.
        const DATA_READ = 1 << 0;
        /// Bit 1: a data write.
        const DATA_WRITE = 1 << 1;
        /// Bit 2: an instruction fetch.
        const INSTRUCTION_FETCH = 1 << 2;
    }
}

bitflags::bitflags! {
    /// What the EPT paging-structure entries allowed for the guest-physical
    /// address (Table 28-7, bits 6:3, shifted down to bits 3:0 here): the
    /// AND of bits 0, 1, 2 and 10 of each entry on the walk. All zero when
    /// an entry was not present.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EptGpaPermissions: u64 {
        /// Qualification bit 3: readable.
        const READABLE = 1 << 0;
        /// Qualification bit 4: writable.
        const WRITABLE = 1 << 1;
        /// Qualification bit 5: executable (for supervisor-mode linear
        /// addresses when mode-based execute control is on).
        const EXECUTABLE = 1 << 2;
        /// Qualification bit 6: executable for user-mode linear addresses
        /// (only with mode-based execute control; undefined otherwise).
        const USER_EXECUTABLE = 1 << 3;
    }
}

/// What a guest-linear access that violated EPT was touching (Table 28-7,
/// bit 8, valid only when bit 7 is set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EptLinearAccessKind {
    /// Bit 8 = 1: the guest-physical address the linear address translates to.
    Translation,
    /// Bit 8 = 0: a guest paging-structure entry (page walk or A/D update).
    PagingStructure,
}

/// Exit qualification for EPT violations (SDM 28.2.1, Table 28-7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EptViolationQualification(u64);

qualification_raw!(EptViolationQualification);

impl EptViolationQualification {
    /// A qualification for an `access` to a guest-physical address whose
    /// EPT entries granted `permissions`, without a guest-linear address.
    /// Add the rest with the `with_*` methods.
    pub const fn new(access: EptViolationAccess, permissions: EptGpaPermissions) -> Self {
        Self(access.bits() | (permissions.bits() << 3))
    }

    /// Sets bit 7 (guest-linear address valid) and bit 8 from `kind`.
    #[must_use]
    pub const fn with_guest_linear_address(self, kind: EptLinearAccessKind) -> Self {
        Self(set_bit(
            self.0 | (1 << 7),
            8,
            matches!(kind, EptLinearAccessKind::Translation),
        ))
    }

    /// Sets the advanced information of bits 9-11 about the linear address:
    /// user-mode (9), read/write page (10), execute-disable page (11).
    #[must_use]
    pub const fn with_linear_attributes(
        self,
        user_mode: bool,
        read_write: bool,
        execute_disable: bool,
    ) -> Self {
        Self(set_bit(
            set_bit(set_bit(self.0, 9, user_mode), 10, read_write),
            11,
            execute_disable,
        ))
    }

    /// Sets bit 12, NMI unblocking due to IRET.
    #[must_use]
    pub const fn with_nmi_unblocking_due_to_iret(self, value: bool) -> Self {
        Self(set_bit(self.0, 12, value))
    }

    /// Sets bit 13, shadow-stack access.
    #[must_use]
    pub const fn with_shadow_stack_access(self, value: bool) -> Self {
        Self(set_bit(self.0, 13, value))
    }

    /// Sets bit 14, the supervisor shadow-stack bit of the mapping entry.
    #[must_use]
    pub const fn with_supervisor_shadow_stack(self, value: bool) -> Self {
        Self(set_bit(self.0, 14, value))
    }

    /// Sets bit 15, caused by guest-paging verification.
    #[must_use]
    pub const fn with_guest_paging_verification(self, value: bool) -> Self {
        Self(set_bit(self.0, 15, value))
    }

    /// Sets bit 16, asynchronous to instruction execution.
    #[must_use]
    pub const fn with_asynchronous(self, value: bool) -> Self {
        Self(set_bit(self.0, 16, value))
    }

    /// Bits 2:0: the kind of access.
    pub const fn access(self) -> EptViolationAccess {
        EptViolationAccess::from_bits_truncate(self.0)
    }

    /// Bit 0: a data read.
    pub const fn data_read(self) -> bool {
        bit(self.0, 0)
    }

    /// Bit 1: a data write.
    pub const fn data_write(self) -> bool {
        bit(self.0, 1)
    }

    /// Bit 2: an instruction fetch.
    pub const fn instruction_fetch(self) -> bool {
        bit(self.0, 2)
    }

    /// Bits 6:3: what the EPT entries allowed.
    pub const fn permissions(self) -> EptGpaPermissions {
        EptGpaPermissions::from_bits_truncate(self.0 >> 3)
    }

    /// Bit 3: the guest-physical address was readable.
    pub const fn gpa_readable(self) -> bool {
        bit(self.0, 3)
    }

    /// Bit 4: the guest-physical address was writable.
    pub const fn gpa_writable(self) -> bool {
        bit(self.0, 4)
    }

    /// Bit 5: the guest-physical address was executable (supervisor-mode
    /// with mode-based execute control).
    pub const fn gpa_executable(self) -> bool {
        bit(self.0, 5)
    }

    /// Bit 6: the guest-physical address was executable for user-mode
    /// linear addresses (meaningful only with mode-based execute control).
    pub const fn gpa_user_executable(self) -> bool {
        bit(self.0, 6)
    }

    /// Bit 7: the guest-linear address field is valid.
    pub const fn guest_linear_address_valid(self) -> bool {
        bit(self.0, 7)
    }

    /// Bit 8, meaningful only when bit 7 is set: `None` if there is no
    /// guest-linear address.
    pub const fn linear_access_kind(self) -> Option<EptLinearAccessKind> {
        if !self.guest_linear_address_valid() {
            None
        } else if bit(self.0, 8) {
            Some(EptLinearAccessKind::Translation)
        } else {
            Some(EptLinearAccessKind::PagingStructure)
        }
    }

    /// Bit 9: user-mode linear address (defined only with bits 7 and 8 set
    /// and advanced EPT-violation exit information).
    pub const fn user_mode_linear_address(self) -> bool {
        bit(self.0, 9)
    }

    /// Bit 10: paging mapped the linear address read/write (same conditions
    /// as bit 9).
    pub const fn linear_read_write(self) -> bool {
        bit(self.0, 10)
    }

    /// Bit 11: paging mapped the linear address execute-disable (same
    /// conditions as bit 9).
    pub const fn linear_execute_disable(self) -> bool {
        bit(self.0, 11)
    }

    /// Bit 12: NMI unblocking due to IRET (SDM 28.2.3).
    pub const fn nmi_unblocking_due_to_iret(self) -> bool {
        bit(self.0, 12)
    }

    /// Bit 13: a shadow-stack access.
    pub const fn shadow_stack_access(self) -> bool {
        bit(self.0, 13)
    }

    /// Bit 14: bit 60 (supervisor shadow stack) of the mapping EPT entry,
    /// when EPTP bit 7 enables supervisor shadow-stack control.
    pub const fn supervisor_shadow_stack(self) -> bool {
        bit(self.0, 14)
    }

    /// Bit 15: caused by guest-paging verification.
    pub const fn guest_paging_verification(self) -> bool {
        bit(self.0, 15)
    }

    /// Bit 16: asynchronous to instruction execution, not event delivery.
    pub const fn asynchronous(self) -> bool {
        bit(self.0, 16)
    }
}

/// Exit qualification for instructions with a memory operand (INVEPT,
/// INVPCID, INVVPID, LGDT, LIDT, LLDT, LTR, SGDT, SIDT, SLDT, STR, VMCLEAR,
/// VMPTRLD, VMPTRST, VMREAD, VMWRITE, VMXON, XRSTORS, XSAVES): the
/// displacement of the memory operand, sign-extended to 64 bits, or 0 for a
/// register operand (SDM 28.2.1).
///
/// With RIP-relative addressing (64-bit mode) the processor stores the
/// displacement plus the RIP of the next instruction. Bits at and above the
/// address size are undefined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VmxInstructionQualification(u64);

qualification_raw!(VmxInstructionQualification);

impl VmxInstructionQualification {
    /// The qualification for a displacement, sign-extended as the processor
    /// does.
    pub const fn from_displacement(displacement: i32) -> Self {
        // Widening i32 -> i64 sign-extends, as the processor does.
        Self((displacement as i64).cast_unsigned())
    }

    /// The displacement as a signed value.
    pub const fn displacement(self) -> i64 {
        self.0.cast_signed()
    }

    /// The displacement truncated to `address_size`, ready to add to base
    /// and index modulo 2^size.
    pub const fn displacement_masked(self, address_size: super::operand::AddressSize) -> u64 {
        self.0 & address_size.mask()
    }
}
