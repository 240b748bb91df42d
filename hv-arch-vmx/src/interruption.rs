//! Event-information fields: the VM-entry interruption-information field
//! (SDM Vol. 3C 25.8.3), the VM-exit interruption-information field
//! (25.9.2) and the IDT-vectoring information field (25.9.3), plus the
//! guest non-register state that governs event delivery (25.4.2):
//! interruptibility, activity state and pending debug exceptions.

use crate::controls::ExceptionVector;

/// The type of an event (bits 10:8 of the interruption-information fields).
/// Recent SDMs call it the "event type".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InterruptionType {
    /// 0: external interrupt.
    ExternalInterrupt,
    /// 1: reserved (VM entry fails if injected).
    Reserved,
    /// 2: non-maskable interrupt.
    Nmi,
    /// 3: hardware exception (for example #PF).
    HardwareException,
    /// 4: software interrupt (INT n).
    SoftwareInterrupt,
    /// 5: privileged software exception (INT1).
    PrivilegedSoftwareException,
    /// 6: software exception (INT3 or INTO).
    SoftwareException,
    /// 7: other event (vector 0: pending MTF VM exit; FRED: SYSCALL/SYSENTER).
    OtherEvent,
}

impl InterruptionType {
    /// Decodes the low three bits of `encoding` (total: every value names a type).
    pub const fn from_encoding(encoding: u8) -> Self {
        match encoding & 7 {
            0 => Self::ExternalInterrupt,
            1 => Self::Reserved,
            2 => Self::Nmi,
            3 => Self::HardwareException,
            4 => Self::SoftwareInterrupt,
            5 => Self::PrivilegedSoftwareException,
            6 => Self::SoftwareException,
            _ => Self::OtherEvent,
        }
    }

    /// The 3-bit encoding.
    pub const fn encoding(self) -> u8 {
        self as u8
    }

    /// Whether injecting this type uses the VM-entry instruction length
    /// (software interrupts and software/privileged software exceptions;
    /// SDM 25.8.3).
    pub const fn uses_instruction_length(self) -> bool {
        matches!(
            self,
            Self::SoftwareInterrupt | Self::PrivilegedSoftwareException | Self::SoftwareException
        )
    }
}

/// An interruption-information word: VM-entry interruption information,
/// VM-exit interruption information or IDT-vectoring information
/// (SDM 25.8.3 Table 25-17, 25.9.2, 25.9.3).
///
/// Bits: 7:0 vector, 10:8 type, 11 deliver/valid error code, 12 NMI
/// unblocking due to IRET (VM-exit interruption information only), 13
/// nested exception (FRED), 31 valid. On VM entry, bits 30:14 and 12 are
/// reserved, and bit 13 may be set only if `IA32_VMX_BASIC[58]` = 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InterruptionInfo(u32);

impl InterruptionInfo {
    /// Bit 11: deliver (entry) / valid (exit) error code.
    pub const ERROR_CODE: u32 = 1 << 11;
    /// Bit 12: NMI unblocking due to IRET (exit interruption information).
    pub const NMI_UNBLOCKING_DUE_TO_IRET: u32 = 1 << 12;
    /// Bit 13: nested exception during FRED event delivery.
    pub const NESTED_EXCEPTION: u32 = 1 << 13;
    /// Bit 31: the field is valid.
    pub const VALID: u32 = 1 << 31;
    /// The bits VM entry requires to be 0 (bit 12 and bits 30:14); bit 13
    /// is checked separately against `IA32_VMX_BASIC[58]` (SDM 27.2.1.3).
    pub const ENTRY_RESERVED_MASK: u32 = 0x7FFF_D000;
    /// A field with the valid bit clear: no event.
    pub const INVALID: Self = Self(0);

    /// Wraps a raw VMCS value.
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw VMCS value.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// A valid event of `kind` with `vector` and no error code.
    pub const fn new(vector: u8, kind: InterruptionType) -> Self {
        Self(vector as u32 | ((kind.encoding() as u32) << 8) | Self::VALID)
    }

    /// A valid hardware exception for `vector`, with the deliver-error-code
    /// bit set exactly when the exception pushes one
    /// ([`ExceptionVector::has_error_code`]).
    pub const fn hardware_exception(vector: ExceptionVector) -> Self {
        let info = Self::new(vector.vector(), InterruptionType::HardwareException);
        if vector.has_error_code() {
            info.with_error_code()
        } else {
            info
        }
    }

    /// This word with bit 11 (deliver error code) set.
    #[must_use]
    pub const fn with_error_code(self) -> Self {
        Self(self.0 | Self::ERROR_CODE)
    }

    /// This word with bit 11 clear.
    #[must_use]
    pub const fn without_error_code(self) -> Self {
        Self(self.0 & !Self::ERROR_CODE)
    }

    /// This word with bit 12 (NMI unblocking due to IRET) set or clear.
    #[must_use]
    pub const fn with_nmi_unblocking_due_to_iret(self, value: bool) -> Self {
        if value {
            Self(self.0 | Self::NMI_UNBLOCKING_DUE_TO_IRET)
        } else {
            Self(self.0 & !Self::NMI_UNBLOCKING_DUE_TO_IRET)
        }
    }

    /// This word with bit 31 clear (what VM exit does to the entry field).
    #[must_use]
    pub const fn invalidated(self) -> Self {
        Self(self.0 & !Self::VALID)
    }

    /// Bits 7:0: the vector.
    pub const fn vector(self) -> u8 {
        self.0 as u8
    }

    /// The vector as an exception name (meaningful for exception types).
    pub const fn exception(self) -> ExceptionVector {
        ExceptionVector::from_vector(self.vector())
    }

    /// Bits 10:8: the event type.
    pub const fn interruption_type(self) -> InterruptionType {
        InterruptionType::from_encoding((self.0 >> 8) as u8)
    }

    /// Bit 11: an error code is delivered (entry) or valid (exit).
    pub const fn has_error_code(self) -> bool {
        self.0 & Self::ERROR_CODE != 0
    }

    /// Bit 12: NMI unblocking due to IRET (VM-exit interruption information
    /// only; undefined in IDT-vectoring information, reserved on entry).
    pub const fn nmi_unblocking_due_to_iret(self) -> bool {
        self.0 & Self::NMI_UNBLOCKING_DUE_TO_IRET != 0
    }

    /// Bit 13: the exception was nested in FRED event delivery.
    pub const fn nested_exception(self) -> bool {
        self.0 & Self::NESTED_EXCEPTION != 0
    }

    /// Bit 31: the field describes an event.
    pub const fn is_valid(self) -> bool {
        self.0 & Self::VALID != 0
    }

    /// The bits set among those VM entry requires to be 0
    /// ([`Self::ENTRY_RESERVED_MASK`]).
    pub const fn entry_reserved_bits(self) -> u32 {
        self.0 & Self::ENTRY_RESERVED_MASK
    }
}

bitflags::bitflags! {
    /// The guest interruptibility state (SDM 25.4.2, Table 25-3).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Interruptibility: u32 {
        /// Bit 0: blocking by STI.
        const BLOCKING_BY_STI = 1 << 0;
        /// Bit 1: blocking by MOV SS (or POP SS).
        const BLOCKING_BY_MOV_SS = 1 << 1;
        /// Bit 2: blocking by SMI.
        const BLOCKING_BY_SMI = 1 << 2;
        /// Bit 3: blocking by NMI (virtual-NMI blocking with virtual NMIs).
        const BLOCKING_BY_NMI = 1 << 3;
        /// Bit 4: enclave interruption.
        const ENCLAVE_INTERRUPTION = 1 << 4;
    }
}

impl Interruptibility {
    /// Bits 31:5, which VM entry requires to be 0 (SDM 27.3.1.5).
    pub const RESERVED_MASK: u32 = !0x1F;

    /// Wraps a raw VMCS value, keeping reserved bits so checks can see them.
    pub const fn from_raw(raw: u32) -> Self {
        Self::from_bits_retain(raw)
    }

    /// The raw VMCS value.
    pub const fn raw(self) -> u32 {
        self.bits()
    }
}

/// The guest activity state (SDM 25.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActivityState {
    /// 0: executing instructions.
    Active,
    /// 1: halted by HLT.
    Hlt,
    /// 2: shutdown after a triple fault.
    Shutdown,
    /// 3: waiting for a start-up IPI.
    WaitForSipi,
    /// Any other value (VM entry fails).
    Reserved(u32),
}

impl ActivityState {
    /// Decodes the raw field (total).
    pub const fn from_raw(raw: u32) -> Self {
        match raw {
            0 => Self::Active,
            1 => Self::Hlt,
            2 => Self::Shutdown,
            3 => Self::WaitForSipi,
            other => Self::Reserved(other),
        }
    }

    /// The raw field value.
    pub const fn raw(self) -> u32 {
        match self {
            Self::Active => 0,
            Self::Hlt => 1,
            Self::Shutdown => 2,
            Self::WaitForSipi => 3,
            Self::Reserved(raw) => raw,
        }
    }
}

/// The guest pending-debug-exceptions field (SDM 25.4.2, Table 25-4). The
/// layout follows DR6, but BLD and RTM are set to report their condition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PendingDebugExceptions(u64);

impl PendingDebugExceptions {
    /// Bit 11, BLD: bus lock detected.
    pub const BUS_LOCK_DETECTED: u64 = 1 << 11;
    /// Bit 12: enabled breakpoint.
    pub const ENABLED_BREAKPOINT: u64 = 1 << 12;
    /// Bit 14, BS: single step.
    pub const SINGLE_STEP: u64 = 1 << 14;
    /// Bit 16, RTM: debug exception inside an RTM region.
    pub const RTM: u64 = 1 << 16;
    /// The reserved bits VM entry requires to be 0: 10:4, 13, 15 and 63:17.
    /// Bit 11 (BLD) is defined by recent SDMs; older ones reserve it.
    pub const RESERVED_MASK: u64 =
        !(0xF | Self::BUS_LOCK_DETECTED | Self::ENABLED_BREAKPOINT | Self::SINGLE_STEP | Self::RTM);

    /// Wraps a raw VMCS value.
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw VMCS value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Bits 3:0, B3-B0: breakpoint conditions met.
    pub const fn breakpoints(self) -> u8 {
        (self.0 & 0xF) as u8
    }

    /// Bit 11, BLD.
    pub const fn bus_lock_detected(self) -> bool {
        self.0 & Self::BUS_LOCK_DETECTED != 0
    }

    /// Bit 12: at least one enabled data or I/O breakpoint matched (or an
    /// RTM/bus-lock condition).
    pub const fn enabled_breakpoint(self) -> bool {
        self.0 & Self::ENABLED_BREAKPOINT != 0
    }

    /// Bit 14, BS: single-step trap pending.
    pub const fn single_step(self) -> bool {
        self.0 & Self::SINGLE_STEP != 0
    }

    /// Bit 16, RTM.
    pub const fn rtm(self) -> bool {
        self.0 & Self::RTM != 0
    }

    /// The reserved bits that are set.
    pub const fn reserved_bits(self) -> u64 {
        self.0 & Self::RESERVED_MASK
    }

    /// This value with bit 14 (BS) set or clear.
    #[must_use]
    pub const fn with_single_step(self, value: bool) -> Self {
        if value {
            Self(self.0 | Self::SINGLE_STEP)
        } else {
            Self(self.0 & !Self::SINGLE_STEP)
        }
    }

    /// This value with bit 12 (enabled breakpoint) set or clear.
    #[must_use]
    pub const fn with_enabled_breakpoint(self, value: bool) -> Self {
        if value {
            Self(self.0 | Self::ENABLED_BREAKPOINT)
        } else {
            Self(self.0 & !Self::ENABLED_BREAKPOINT)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_fault_injection_word() {
        // #PF, hardware exception, deliver error code, valid: 0x80000B0E.
        let info = InterruptionInfo::hardware_exception(ExceptionVector::PageFault);
        assert_eq!(info.raw(), 0x8000_0B0E);
        assert_eq!(info.vector(), 14);
        assert_eq!(
            info.interruption_type(),
            InterruptionType::HardwareException
        );
        assert!(info.has_error_code());
        assert!(info.is_valid());
        assert_eq!(info.entry_reserved_bits(), 0);
        assert_eq!(info.invalidated().raw(), 0x0B0E);
        // #UD has no error code.
        assert_eq!(
            InterruptionInfo::hardware_exception(ExceptionVector::InvalidOpcode).raw(),
            0x8000_0306
        );
    }

    #[test]
    fn constructors_and_flags() {
        assert_eq!(
            InterruptionInfo::new(0x20, InterruptionType::ExternalInterrupt).raw(),
            0x8000_0020
        );
        assert_eq!(
            InterruptionInfo::new(2, InterruptionType::Nmi).raw(),
            0x8000_0202
        );
        assert_eq!(
            InterruptionInfo::new(3, InterruptionType::SoftwareException).raw(),
            0x8000_0603
        );
        assert_eq!(
            InterruptionInfo::new(0x80, InterruptionType::SoftwareInterrupt).raw(),
            0x8000_0480
        );
        assert_eq!(
            InterruptionInfo::new(1, InterruptionType::PrivilegedSoftwareException).raw(),
            0x8000_0501
        );
        assert_eq!(
            InterruptionInfo::new(0, InterruptionType::OtherEvent).raw(),
            0x8000_0700
        );
        assert!(InterruptionType::SoftwareInterrupt.uses_instruction_length());
        assert!(!InterruptionType::HardwareException.uses_instruction_length());
        let with_unblocking =
            InterruptionInfo::from_raw(0x8000_0B0D).with_nmi_unblocking_due_to_iret(true);
        assert!(with_unblocking.nmi_unblocking_due_to_iret());
        assert_eq!(with_unblocking.entry_reserved_bits(), 1 << 12);
        assert!(InterruptionInfo::from_raw(1 << 13).nested_exception());
        assert_eq!(
            InterruptionInfo::from_raw(0x4000_0000).entry_reserved_bits(),
            0x4000_0000
        );
        assert_eq!(
            InterruptionInfo::from_raw(0x8000_0B0E)
                .without_error_code()
                .raw(),
            0x8000_030E
        );
        assert_eq!(
            InterruptionInfo::from_raw(1 << 8).interruption_type(),
            InterruptionType::Reserved
        );
    }

    #[test]
    fn interruptibility_activity_and_pending_debug() {
        assert_eq!(Interruptibility::BLOCKING_BY_STI.raw(), 1);
        assert_eq!(Interruptibility::BLOCKING_BY_MOV_SS.raw(), 2);
        assert_eq!(Interruptibility::BLOCKING_BY_SMI.raw(), 4);
        assert_eq!(Interruptibility::BLOCKING_BY_NMI.raw(), 8);
        assert_eq!(Interruptibility::ENCLAVE_INTERRUPTION.raw(), 16);
        assert_eq!(
            Interruptibility::from_raw(0x20).raw() & Interruptibility::RESERVED_MASK,
            0x20
        );

        for raw in 0..4 {
            assert_eq!(ActivityState::from_raw(raw).raw(), raw);
        }
        assert_eq!(ActivityState::from_raw(1), ActivityState::Hlt);
        assert_eq!(ActivityState::from_raw(3), ActivityState::WaitForSipi);
        assert_eq!(ActivityState::from_raw(4), ActivityState::Reserved(4));

        let pending = PendingDebugExceptions::from_raw(0x4000 | 0x1000 | 0x3);
        assert!(pending.single_step());
        assert!(pending.enabled_breakpoint());
        assert_eq!(pending.breakpoints(), 3);
        assert_eq!(pending.reserved_bits(), 0);
        assert!(PendingDebugExceptions::from_raw(1 << 16).rtm());
        assert_eq!(
            PendingDebugExceptions::from_raw(1 << 13).reserved_bits(),
            1 << 13
        );
        assert_eq!(PendingDebugExceptions::from_raw(0x10).reserved_bits(), 0x10);
        assert_eq!(
            PendingDebugExceptions::default()
                .with_single_step(true)
                .raw(),
            0x4000
        );
        assert_eq!(
            PendingDebugExceptions::default()
                .with_enabled_breakpoint(true)
                .raw(),
            0x1000
        );
    }
}
