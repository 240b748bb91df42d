//! VMX-instruction emulation for L1 (SDM Vol. 3C chapter 31, "VMX
//! Instruction Reference").
//!
//! L1 believes it runs on a processor with VMX. Every VMX instruction it
//! executes exits to L0, and [`NestedVmx::emulate`] carries out the
//! instruction's "Operation" section on hv's model of L1's VMX state: VMX
//! operation (outside or root), the VMXON pointer, and the current VMCS12
//! (cached in L0 as a [`CurrentVmcs`], stored in L1 memory in hv's layout,
//! see [`vmcs12`]). Capabilities are the ones hv advertises
//! ([`VirtualCapabilities`]), never the real engine's.
//!
//! Outcomes follow the SDM conventions of 31.2: `VMsucceed`, `VMfailInvalid`
//! and VMfailValid(n) set RFLAGS and advance RIP ([`Emulation::Completed`]);
//! exceptions are returned for injection without advancing RIP
//! ([`Emulation::Fault`]); what needs the caller (a nested VM entry, an
//! INVEPT/INVVPID to perform, a hypercall) comes back as its own variant.
//!
//! Instruction families live in submodules: VMXON/VMXOFF/VMCLEAR/VMPTRLD/
//! VMPTRST in `pointer`, VMREAD/VMWRITE in `field`, VMLAUNCH/VMRESUME in
//! `entry`, INVEPT/INVVPID in `invalidate`.
//!
//! hv's choices where the SDM leaves room (each documented where it is made):
//! - An operand or VMCS region at an L1 physical address that no L1 memory
//!   backs: VMXON fails with `VMfailInvalid`, VMCLEAR with VMfail(2), VMPTRLD
//!   with VMfail(9) (the region cannot hold a VMCS); a memory operand that
//!   L1's paging maps outside L1 memory gives
//!   [`Emulation::OperandNotInL1Memory`] (the caller's internal error, as
//!   KVM reports an emulation failure).
//! - VMXOFF writes the current VMCS12 back to L1 memory (the SDM does not
//!   require it, SDM 25.11.1; writing back is what a processor may do at any
//!   time and keeps L1 memory the only copy once L1 leaves VMX operation).
//! - VMCALL from L1 at CPL 0 (in or out of its VMX operation) is a hypercall to hv:
//!   [`Emulation::Vmcall`], with RIP already advanced and RFLAGS untouched;
//!   the ABI (registers, results) is hv's and defined by the caller.

pub mod capabilities;
mod entry;
mod field;
mod invalidate;
pub mod operand;
mod pointer;
pub mod vmcs12;

pub use capabilities::{HV_VMCS_REVISION_ID, VirtualCapabilities};
pub use vmcs12::{CurrentVmcs, LaunchState};

use hv_arch_vmx::checks::GuestCheck;
use hv_arch_vmx::controls::ExceptionVector;
use hv_arch_vmx::ept::Eptp;
use hv_arch_vmx::exit::{ExitReason, Gpr, InstructionInfoError, VmxInstructionInfo};
use hv_arch_vmx::instruction_error::VmInstructionError;
use hv_arch_vmx::interruption::Interruptibility;
use hv_arch_vmx::invalidation::{InveptType, InvvpidType, LinearAddressWidth};
use hv_arch_vmx::msr::FeatureControl;
use hv_arch_vmx::registers::{Cr0, Cr4, Rflags};
use hv_arch_vmx::vmcs::VmcsField;
use hv_mmu::addr::L1Gpa;
use hv_mmu::env::NotL1Memory;

use crate::state::{Exit, L1Access, L1Cpu, PageFault};
use operand::OperandError;

/// The current-VMCS pointer when no VMCS is current, as VMPTRST stores it
/// (SDM 31.3 VMPTRST, VMXON: `FFFFFFFF_FFFFFFFFH`).
pub const NO_CURRENT_VMCS: u64 = u64::MAX;

/// The longest x86 instruction (SDM Vol. 2 2.3.11): an exit reporting a
/// longer (or empty) VMX instruction is malformed.
const MAX_INSTRUCTION_LENGTH: u32 = 15;

/// An exception to inject into L1 instead of completing the instruction
/// (RIP is not advanced).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// #UD: not in VMX operation, wrong processor mode, register operand
    /// where memory is required, instruction not advertised.
    InvalidOpcode,
    /// #GP(0): CPL > 0, VMXON preconditions, segment violations.
    GeneralProtection,
    /// #SS(0): a segment violation of an SS-relative operand.
    StackFault,
    /// #PF: L1's paging refused the memory operand; CR2 is the address.
    PageFault(PageFault),
}

impl Fault {
    /// The exception vector.
    pub const fn vector(self) -> ExceptionVector {
        match self {
            Self::InvalidOpcode => ExceptionVector::InvalidOpcode,
            Self::GeneralProtection => ExceptionVector::GeneralProtection,
            Self::StackFault => ExceptionVector::StackSegmentFault,
            Self::PageFault(_) => ExceptionVector::PageFault,
        }
    }

    /// The error code delivered with the exception, if it has one (0 for
    /// #GP(0) and #SS(0), the page-fault error code for #PF).
    pub const fn error_code(self) -> Option<u32> {
        match self {
            Self::InvalidOpcode => None,
            Self::GeneralProtection | Self::StackFault => Some(0),
            Self::PageFault(fault) => Some(fault.error_code),
        }
    }
}

/// How a VMX instruction completed (SDM 31.2 conventions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmxStatus {
    /// `VMsucceed`: CF, PF, AF, ZF, SF and OF cleared.
    Succeed,
    /// `VMfailInvalid`: CF set, PF, AF, ZF, SF, OF cleared (no current VMCS
    /// to hold an error number).
    FailInvalid,
    /// VMfailValid(n): ZF set, CF, PF, AF, SF, OF cleared, and n written to
    /// the VM-instruction error field of the current VMCS.
    FailValid(VmInstructionError),
}

impl VmxStatus {
    /// The arithmetic flags the SDM's `VMsucceed` and `VMfail` operations touch.
    const STATUS_FLAGS: Rflags = Rflags::CF
        .union(Rflags::PF)
        .union(Rflags::AF)
        .union(Rflags::ZF)
        .union(Rflags::SF)
        .union(Rflags::OF);

    /// `rflags` after this status (SDM 31.2).
    pub const fn apply(self, rflags: u64) -> u64 {
        let cleared = rflags & !Self::STATUS_FLAGS.bits();
        match self {
            Self::Succeed => cleared,
            Self::FailInvalid => cleared | Rflags::CF.bits(),
            Self::FailValid(_) => cleared | Rflags::ZF.bits(),
        }
    }
}

/// The VM-exit information fields did not describe a VMX instruction
/// hardware could have reported (an engine bug or fuzzed input).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ExitInformationError {
    /// The instruction-information field holds a reserved encoding.
    #[error(transparent)]
    InstructionInfo(#[from] InstructionInfoError),
    /// The instruction length is 0 or longer than 15 bytes.
    #[error("VM-exit instruction length {0} is not a valid instruction length")]
    InstructionLength(u32),
}

/// The result of emulating one VMX instruction for L1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulation {
    /// The instruction completed: RIP advanced by the instruction length,
    /// RFLAGS set for `status` (and, for `VMfailValid`, the error number
    /// written to the current VMCS12).
    Completed(VmxStatus),
    /// Inject this exception into L1; RIP and RFLAGS are unchanged.
    Fault(Fault),
    /// INVEPT with a valid operand: the caller invalidates the mappings.
    /// `VMsucceed` is already set and RIP advanced. `eptp` is the
    /// descriptor's EPTP (meaningful for single-context only).
    Invept {
        /// The invalidation type.
        kind: InveptType,
        /// Bits 63:0 of the INVEPT descriptor.
        eptp: Eptp,
    },
    /// INVVPID with a valid operand: the caller invalidates the mappings
    /// (through the VPID02 map). `VMsucceed` is already set and RIP advanced.
    Invvpid {
        /// The invalidation type.
        kind: InvvpidType,
        /// The VPID of the descriptor (ignored by all-context).
        vpid: u16,
        /// The linear address of the descriptor (individual-address only).
        linear_address: u64,
    },
    /// VMLAUNCH/VMRESUME passed the checks on controls and host state and
    /// the guest-state checks: the caller enters L2 from the current VMCS12.
    /// For VMLAUNCH the VMCS12 is already marked launched. RIP and RFLAGS
    /// are unchanged (L1 next runs at its host RIP).
    VmEntry {
        /// VMLAUNCH (true) or VMRESUME (false).
        launch: bool,
    },
    /// VMLAUNCH/VMRESUME failed a guest-state check (SDM 27.8): the caller
    /// delivers a VM exit to L1 with basic reason 33 and the entry-failure
    /// bit, this exit qualification, and loads L1's host state. The launch
    /// state is unchanged.
    EntryFailure {
        /// The exit qualification (SDM 27.8: 0, 2, 3 or 4).
        qualification: u64,
        /// The failed check.
        check: GuestCheck,
    },
    /// VMCALL from L1 at CPL 0, in or out of its VMX operation: a
    /// hypercall to hv. RIP is already advanced; RFLAGS and registers are
    /// the ABI's.
    Vmcall,
    /// A memory operand maps, through L1's paging, to an L1 physical
    /// address no L1 memory backs: hv cannot complete the instruction.
    /// Nothing was changed.
    OperandNotInL1Memory(NotL1Memory),
    /// The exit information is malformed; nothing was changed.
    InvalidExitInformation(ExitInformationError),
    /// The exit is not one of the VMX instructions this module emulates.
    NotVmxInstruction(ExitReason),
}

impl From<Fault> for Emulation {
    fn from(fault: Fault) -> Self {
        Self::Fault(fault)
    }
}

impl From<OperandError> for Emulation {
    fn from(error: OperandError) -> Self {
        match error {
            OperandError::Fault(fault) => Self::Fault(fault),
            OperandError::NotL1Memory(error) => Self::OperandNotInL1Memory(error),
        }
    }
}

impl From<InstructionInfoError> for Emulation {
    fn from(error: InstructionInfoError) -> Self {
        Self::InvalidExitInformation(ExitInformationError::InstructionInfo(error))
    }
}

/// The VMX instructions L1 may execute, identified by their exit reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmxInstruction {
    /// VMCALL (exit reason 18).
    Vmcall,
    /// VMCLEAR (19).
    Vmclear,
    /// VMLAUNCH (20).
    Vmlaunch,
    /// VMPTRLD (21).
    Vmptrld,
    /// VMPTRST (22).
    Vmptrst,
    /// VMREAD (23).
    Vmread,
    /// VMRESUME (24).
    Vmresume,
    /// VMWRITE (25).
    Vmwrite,
    /// VMXOFF (26).
    Vmxoff,
    /// VMXON (27).
    Vmxon,
    /// INVEPT (50).
    Invept,
    /// INVVPID (53).
    Invvpid,
}

impl VmxInstruction {
    /// The instruction an exit reason names, if it is one of these.
    pub const fn from_exit_reason(reason: ExitReason) -> Option<Self> {
        Some(match reason {
            ExitReason::Vmcall => Self::Vmcall,
            ExitReason::Vmclear => Self::Vmclear,
            ExitReason::Vmlaunch => Self::Vmlaunch,
            ExitReason::Vmptrld => Self::Vmptrld,
            ExitReason::Vmptrst => Self::Vmptrst,
            ExitReason::Vmread => Self::Vmread,
            ExitReason::Vmresume => Self::Vmresume,
            ExitReason::Vmwrite => Self::Vmwrite,
            ExitReason::Vmxoff => Self::Vmxoff,
            ExitReason::Vmxon => Self::Vmxon,
            ExitReason::Invept => Self::Invept,
            ExitReason::Invvpid => Self::Invvpid,
            _ => return None,
        })
    }

    /// Whether the instruction's operand must be in memory: a register
    /// operand (ModRM.mod = 3) is #UD (SDM 31.3 VMCLEAR, VMPTRLD, VMPTRST,
    /// VMXON, INVEPT, INVVPID: "IF (register operand) ... THEN #UD").
    const fn requires_memory_operand(self) -> bool {
        matches!(
            self,
            Self::Vmclear
                | Self::Vmptrld
                | Self::Vmptrst
                | Self::Vmxon
                | Self::Invept
                | Self::Invvpid
        )
    }
}

/// Where L1 is with respect to VMX operation (SDM 24.7). L1 never is in
/// VMX non-root operation from its own point of view: while L2 runs, L1 is
/// not executing instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmxOperation {
    /// Outside VMX operation (before VMXON, after VMXOFF).
    Outside,
    /// VMX root operation, entered by VMXON with this VMXON pointer.
    Root {
        /// The VMXON region's L1 physical address.
        vmxon_pointer: L1Gpa,
    },
}

/// What L1's virtual processor looks like beyond its capability MSRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NestedVmxConfig {
    /// L1's `IA32_FEATURE_CONTROL`: VMXON needs the lock bit and "enable VMX
    /// outside SMX" (SDM 24.7; L1 never is in SMX operation).
    pub feature_control: FeatureControl,
    /// L1's MAXPHYADDR (`CPUID.80000008H:EAX[7:0]`): VMXON/VMCS pointers
    /// must not set bits at or above it.
    pub physical_address_width: u8,
    /// L1's linear-address width, for canonical checks.
    pub linear_address_width: LinearAddressWidth,
}

impl NestedVmxConfig {
    /// A configuration with `feature_control`, MAXPHYADDR
    /// `physical_address_width` and 48-bit linear addresses.
    pub const fn new(feature_control: FeatureControl, physical_address_width: u8) -> Self {
        Self {
            feature_control,
            physical_address_width,
            linear_address_width: LinearAddressWidth::Bits48,
        }
    }

    /// Whether `address` is a valid VMXON/VMCS pointer: 4-KiB aligned and
    /// no bit set at or above MAXPHYADDR (SDM 31.3 VMXON, VMCLEAR, VMPTRLD).
    pub const fn is_valid_region_address(&self, address: u64) -> bool {
        let within_width =
            self.physical_address_width >= 64 || address >> self.physical_address_width == 0;
        address.trailing_zeros() >= 12 && within_width
    }
}

/// The nested VMX state of one L1 vCPU and the emulation of its VMX
/// instructions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NestedVmx {
    capabilities: VirtualCapabilities,
    config: NestedVmxConfig,
    operation: VmxOperation,
    current: Option<CurrentVmcs>,
}

impl NestedVmx {
    /// A vCPU outside VMX operation, advertising `capabilities`.
    pub const fn new(capabilities: VirtualCapabilities, config: NestedVmxConfig) -> Self {
        Self {
            capabilities,
            config,
            operation: VmxOperation::Outside,
            current: None,
        }
    }

    /// The capabilities advertised to L1.
    pub const fn capabilities(&self) -> &VirtualCapabilities {
        &self.capabilities
    }

    /// The configuration.
    pub const fn config(&self) -> &NestedVmxConfig {
        &self.config
    }

    /// Outside VMX operation or in VMX root operation.
    pub const fn operation(&self) -> VmxOperation {
        self.operation
    }

    /// The VMXON pointer, in VMX operation.
    pub const fn vmxon_pointer(&self) -> Option<L1Gpa> {
        match self.operation {
            VmxOperation::Outside => None,
            VmxOperation::Root { vmxon_pointer } => Some(vmxon_pointer),
        }
    }

    /// The current VMCS12 (its pointer, cached fields and launch state).
    pub const fn current_vmcs(&self) -> Option<&CurrentVmcs> {
        self.current.as_ref()
    }

    /// The current VMCS12, for exit reflection and VMCS02 preparation.
    pub const fn current_vmcs_mut(&mut self) -> Option<&mut CurrentVmcs> {
        self.current.as_mut()
    }

    /// The current-VMCS pointer as VMPTRST stores it: all ones without a
    /// current VMCS.
    pub fn current_vmcs_pointer(&self) -> u64 {
        self.current
            .as_ref()
            .map_or(NO_CURRENT_VMCS, |current| current.pointer().raw())
    }

    /// Emulates the VMX instruction L1 executed, described by `exit`, with
    /// no event blocking in L1. See [`Self::emulate_with_interruptibility`].
    pub fn emulate(
        &mut self,
        cpu: &mut L1Cpu,
        memory: &mut impl L1Access,
        exit: &Exit,
    ) -> Emulation {
        self.emulate_with_interruptibility(cpu, memory, exit, Interruptibility::empty())
    }

    /// Emulates the VMX instruction L1 executed, described by `exit` (basic
    /// reason, instruction information, qualification, length), on `cpu`
    /// and `memory`. `interruptibility` is L1's interruptibility state at
    /// the instruction: VMLAUNCH/VMRESUME fail with VMfailValid(26) under
    /// blocking by MOV SS.
    ///
    /// Never panics, whatever the exit, CPU state or memory contents.
    pub fn emulate_with_interruptibility(
        &mut self,
        cpu: &mut L1Cpu,
        memory: &mut impl L1Access,
        exit: &Exit,
        interruptibility: Interruptibility,
    ) -> Emulation {
        let reason = exit.reason.reason();
        let Some(instruction) = VmxInstruction::from_exit_reason(reason) else {
            return Emulation::NotVmxInstruction(reason);
        };
        if exit.instruction_length == 0 || exit.instruction_length > MAX_INSTRUCTION_LENGTH {
            return Emulation::InvalidExitInformation(ExitInformationError::InstructionLength(
                exit.instruction_length,
            ));
        }
        if let Err(fault) = self.check_mode(cpu, instruction, exit) {
            return Emulation::Fault(fault);
        }
        let result = match instruction {
            VmxInstruction::Vmxon => self.vmxon(cpu, memory, exit),
            VmxInstruction::Vmxoff => Ok(self.vmxoff(cpu, memory, exit)),
            VmxInstruction::Vmclear => self.vmclear(cpu, memory, exit),
            VmxInstruction::Vmptrld => self.vmptrld(cpu, memory, exit),
            VmxInstruction::Vmptrst => self.vmptrst(cpu, memory, exit),
            VmxInstruction::Vmread => self.vmread(cpu, memory, exit),
            VmxInstruction::Vmwrite => self.vmwrite(cpu, memory, exit),
            VmxInstruction::Vmlaunch => Ok(self.vm_entry(cpu, exit, interruptibility, true)),
            VmxInstruction::Vmresume => Ok(self.vm_entry(cpu, exit, interruptibility, false)),
            VmxInstruction::Invept => self.invept(cpu, memory, exit),
            VmxInstruction::Invvpid => self.invvpid(cpu, memory, exit),
            VmxInstruction::Vmcall => {
                advance_rip(cpu, exit);
                Ok(Emulation::Vmcall)
            }
        };
        result.unwrap_or_else(|early| early)
    }

    /// The checks every VMX instruction makes first, in the order of the
    /// SDM's Operation sections (SDM 31.3): #UD for a register operand
    /// where memory is required, for VMXON with CR4.VMXE = 0, outside VMX
    /// operation (all but VMXON), for INVEPT/INVVPID not advertised, in
    /// real-address, virtual-8086 or compatibility mode; then #GP(0) at
    /// CPL > 0. (The "in VMX non-root operation: VM exit" branch does not
    /// arise: L1 executes in what it sees as root operation.)
    fn check_mode(
        &self,
        cpu: &L1Cpu,
        instruction: VmxInstruction,
        exit: &Exit,
    ) -> Result<(), Fault> {
        let info = VmxInstructionInfo::from_raw(exit.instruction_info);
        if instruction.requires_memory_operand() && info.is_register_operand() {
            return Err(Fault::InvalidOpcode);
        }
        let in_vmx_operation = matches!(self.operation, VmxOperation::Root { .. });
        match instruction {
            VmxInstruction::Vmxon if !cpu.cr4().contains(Cr4::VMXE) => {
                return Err(Fault::InvalidOpcode);
            }
            // VMXON is what enters VMX operation. L1 always runs in VMX
            // non-root operation of L0, where VMCALL is a VM exit (SDM 31.3
            // VMCALL): a hypercall whether or not L1 entered its own
            // (virtual) VMX operation, as KVM treats it.
            VmxInstruction::Vmxon | VmxInstruction::Vmcall => {}
            _ if !in_vmx_operation => return Err(Fault::InvalidOpcode),
            _ => {}
        }
        // SDM 31.3 INVEPT/INVVPID "#UD ... if the logical processor does not
        // support EPT/VPID or the INVEPT/INVVPID instruction" (as advertised).
        let caps = self.capabilities.capabilities();
        let unsupported = match instruction {
            VmxInstruction::Invept => !(caps.supports_ept() && caps.ept_vpid.invept()),
            VmxInstruction::Invvpid => !(caps.supports_vpid() && caps.ept_vpid.invvpid()),
            _ => false,
        };
        if unsupported {
            return Err(Fault::InvalidOpcode);
        }
        // CR0.PE = 0 (real-address mode), RFLAGS.VM = 1 (virtual-8086) or
        // IA32_EFER.LMA = 1 with CS.L = 0 (compatibility mode): #UD.
        let real_mode = !cpu.cr0().contains(Cr0::PE);
        let compatibility_mode = cpu.in_ia32e_mode() && !cpu.cs.long_mode();
        if real_mode || cpu.in_virtual_8086_mode() || compatibility_mode {
            return Err(Fault::InvalidOpcode);
        }
        if cpu.cpl() > 0 {
            return Err(Fault::GeneralProtection);
        }
        Ok(())
    }

    /// Completes the instruction with `status`: RFLAGS per SDM 31.2 and
    /// RIP past the instruction. For `VMfailValid` the error number goes into
    /// the current VMCS12's VM-instruction error field.
    fn complete(&mut self, cpu: &mut L1Cpu, exit: &Exit, status: VmxStatus) -> Emulation {
        if let (VmxStatus::FailValid(error), Some(current)) = (status, self.current.as_mut()) {
            current
                .image_mut()
                .set(VmcsField::VmInstructionError, u64::from(error.number()));
        }
        cpu.rflags = status.apply(cpu.rflags);
        advance_rip(cpu, exit);
        Emulation::Completed(status)
    }

    /// `VMsucceed` (SDM 31.2).
    fn succeed(&mut self, cpu: &mut L1Cpu, exit: &Exit) -> Emulation {
        self.complete(cpu, exit, VmxStatus::Succeed)
    }

    /// `VMfailInvalid` (SDM 31.2).
    fn fail_invalid(&mut self, cpu: &mut L1Cpu, exit: &Exit) -> Emulation {
        self.complete(cpu, exit, VmxStatus::FailInvalid)
    }

    /// VMfail(error) (SDM 31.2): VMfailValid(error) if there is a current
    /// VMCS, otherwise `VMfailInvalid`.
    fn fail(&mut self, cpu: &mut L1Cpu, exit: &Exit, error: VmInstructionError) -> Emulation {
        let status = if self.current.is_some() {
            VmxStatus::FailValid(error)
        } else {
            VmxStatus::FailInvalid
        };
        self.complete(cpu, exit, status)
    }

    /// The value of register operand `register` at the operand size of the
    /// current mode: 64 bits in 64-bit mode, bits 31:0 outside (SDM 31.3
    /// VMREAD/VMWRITE/INVEPT/INVVPID "outside 64-bit mode ... 32 bits").
    fn register_operand(cpu: &L1Cpu, register: Gpr) -> u64 {
        let value = cpu.gprs.get(register.index());
        if cpu.in_64bit_mode() {
            value
        } else {
            value & 0xffff_ffff
        }
    }
}

/// Advances RIP past the instruction (wrapping at 4 GiB outside 64-bit
/// mode) and clears RFLAGS.RF, as completing any instruction does (SDM
/// Vol. 3A 18.3.1.1).
/// Completes an instruction L0 emulated for L1: RIP past it (wrapping at
/// 4 GiB outside 64-bit mode) and RFLAGS.RF cleared (SDM Vol. 3A 18.3.1.1:
/// RF is cleared after an instruction completes). For embedders that
/// emulate L1's non-VMX exits (CPUID, I/O, MSRs) the same way.
pub fn advance_rip(cpu: &mut L1Cpu, exit: &Exit) {
    let next = cpu.rip.wrapping_add(u64::from(exit.instruction_length));
    cpu.rip = if cpu.in_64bit_mode() {
        next
    } else {
        next & 0xffff_ffff
    };
    cpu.rflags &= !Rflags::RF.bits();
}
