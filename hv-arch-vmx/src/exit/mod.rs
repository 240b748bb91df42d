//! Why a VM exit happened and what the processor reported about it
//! (SDM Vol. 3C 25.9, 28.2 and Appendix C).
//!
//! - [`ExitReason`] and [`ExitReasonWord`]: the basic exit reason and the
//!   flags of the 32-bit exit-reason field.
//! - Exit qualifications, one decoder per layout of SDM 28.2.1 (for example
//!   [`EptViolationQualification`] or [`IoQualification`]). The decoders
//!   also build qualifications, so an L0 can produce what it reflects to L1.
//! - [`VmxInstructionInfo`]: the VM-exit instruction-information field of
//!   SDM 28.2.5, decoded per instruction family.
//!
//! Every decoder accepts any raw value: undefined encodings become explicit
//! `Reserved`/`Unknown` values or typed errors, never panics.

mod instruction_info;
mod operand;
mod qualification;
mod reason;

pub use instruction_info::{
    DescriptorTableInfo, DescriptorTableInstruction, DescriptorTableOperandSize,
    InstructionInfoError, InvalidationInstructionInfo, LdtrTrInfo, LdtrTrInstruction,
    MemoryOperand, Operand, RandomInstructionInfo, RandomOperandSize, ScaledIndex, StringIoInfo,
    VmreadVmwriteInfo, VmxInstructionInfo,
};
pub use operand::{AddressSize, Gpr, SegmentRegister};
pub use qualification::{
    ApicAccessQualification, ApicAccessType, ControlRegisterAccess,
    ControlRegisterAccessQualification, CrAccessType, DebugExceptionQualification,
    EptGpaPermissions, EptLinearAccessKind, EptViolationAccess, EptViolationQualification,
    IoAccessSize, IoDirection, IoOperandEncoding, IoQualification, LmswOperandType, MovDrDirection,
    MovDrQualification, ReservedIoAccessSize, TaskSwitchQualification, TaskSwitchSource,
    VmxInstructionQualification,
};
pub use reason::{ExitReason, ExitReasonWord};
