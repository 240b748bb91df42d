//! One workload guest: its memory, EPT, VMCS, registers and bookkeeping,
//! and the typed reasons it can fail for.

use alloc::vec::Vec;
use core::fmt;

use hv_arch_vmx::ept::Eptp;
use hv_arch_vmx::instructions::{VmFail, vmclear, vmptrld};
use hv_arch_vmx::vmcs::VmcsField;

use crate::memory::{FrameAllocator, PhysFrame};
use crate::vmx::enter::GuestContext;

use super::ept::{GuestEpt, OutsideMapping};
use super::memory::{self, BUFFER_GPA, BUFFER_LEN, GuestMemory, PROBE_GPA};
use super::vmcs::{GuestVmcs, VmcsSetup, write_guest_vmcs};
use super::{GuestSummary, L2_WORKLOAD_ELF, RunnerError, elf};

/// Indices into [`GuestContext::gprs`] (SDM Table 28-3 order).
pub(crate) const RAX: usize = 0;
const RCX: usize = 1;
const RDX: usize = 2;
pub(crate) const RBX: usize = 3;
const RSI: usize = 6;
const RDI: usize = 7;

/// Why a guest stopped being scheduled. Everything in here came from the
/// guest or from exit information, so it is data, never a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GuestFailure {
    /// VMPTRLD of its VMCS failed.
    Vmptrld(VmFail),
    /// VMWRITE of the preemption timer or of RIP failed.
    Vmwrite(VmcsField, VmFail),
    /// VMLAUNCH/VMRESUME failed (`VMfailInvalid`/`VMfailValid`, SDM 31.2).
    EntryInstruction(VmFail),
    /// VM entry failed while loading guest state (exit reason bit 31,
    /// SDM 27.8): the raw exit reason and the exit qualification.
    EntryFailure {
        /// The full exit-reason word.
        reason: u32,
        /// The exit qualification.
        qualification: u64,
    },
    /// A VMREAD of exit information failed.
    Vmread(VmcsField, VmFail),
    /// Triple fault (exit reason 2): an exception the guest could not
    /// deliver (its IDT is empty).
    TripleFault,
    /// An exception or NMI exit (reason 0) with this interruption
    /// information.
    Exception {
        /// The VM-exit interruption-information field.
        interruption_info: u32,
    },
    /// EPT violation (reason 48, SDM 29.3.3.2).
    EptViolation {
        /// The guest-physical address.
        gpa: u64,
        /// The exit qualification.
        qualification: u64,
    },
    /// EPT misconfiguration (reason 49, SDM 29.3.3.1).
    EptMisconfiguration {
        /// The guest-physical address.
        gpa: u64,
    },
    /// HLT (reason 12): the workload panicked.
    Hlt,
    /// An I/O instruction other than an `out` to the report port.
    UnexpectedIo {
        /// The exit qualification (SDM Table 28-5).
        qualification: u64,
    },
    /// The exit reported an instruction length outside 1..=15.
    BadInstructionLength(u64),
    /// Any other exit reason.
    UnexpectedExit(u16),
    /// A report for another round than the next one.
    WrongRound {
        /// RBX at the report.
        reported: u64,
        /// The round expected next.
        expected: u64,
    },
    /// A report with a wrong checksum.
    WrongResult {
        /// The round.
        round: u64,
        /// RAX at the report.
        reported: u64,
        /// The runner's own checksum.
        expected: u64,
    },
}

impl GuestFailure {
    /// The number that identifies the failure for an illegal case: the
    /// basic exit reason for exits, the VM-instruction error number for a
    /// `VMfailValid`, `u64::MAX` for anything else.
    pub(crate) const fn observed_code(self) -> u64 {
        match self {
            Self::EntryInstruction(VmFail::Valid(error)) | Self::Vmptrld(VmFail::Valid(error)) => {
                error.number() as u64
            }
            Self::EntryFailure { reason, .. } => (reason & 0xffff) as u64,
            Self::TripleFault => 2,
            Self::Exception { .. } => 0,
            Self::EptViolation { .. } => 48,
            Self::EptMisconfiguration { .. } => 49,
            Self::Hlt => 12,
            Self::UnexpectedIo { .. } => 30,
            Self::UnexpectedExit(reason) => reason as u64,
            Self::Vmptrld(_)
            | Self::EntryInstruction(_)
            | Self::Vmwrite(..)
            | Self::Vmread(..)
            | Self::BadInstructionLength(_)
            | Self::WrongRound { .. }
            | Self::WrongResult { .. } => u64::MAX,
        }
    }

    /// Whether the failure is a wrong report (rather than a crash).
    pub(crate) const fn is_wrong_result(self) -> bool {
        matches!(self, Self::WrongRound { .. } | Self::WrongResult { .. })
    }
}

impl fmt::Display for GuestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vmptrld(fail) => write!(f, "VMPTRLD: {fail}"),
            Self::Vmwrite(field, fail) => write!(f, "VMWRITE {}: {fail}", field.name()),
            Self::EntryInstruction(fail) => write!(f, "VM entry: {fail}"),
            Self::EntryFailure {
                reason,
                qualification,
            } => write!(
                f,
                "VM-entry failure, exit reason {reason:#x}, qualification {qualification:#x}"
            ),
            Self::Vmread(field, fail) => write!(f, "VMREAD {}: {fail}", field.name()),
            Self::TripleFault => f.write_str("triple fault"),
            Self::Exception { interruption_info } => {
                write!(
                    f,
                    "exception exit, interruption info {interruption_info:#x}"
                )
            }
            Self::EptViolation { gpa, qualification } => {
                write!(
                    f,
                    "EPT violation at {gpa:#x}, qualification {qualification:#x}"
                )
            }
            Self::EptMisconfiguration { gpa } => write!(f, "EPT misconfiguration at {gpa:#x}"),
            Self::Hlt => f.write_str("HLT (the workload panicked)"),
            Self::UnexpectedIo { qualification } => {
                write!(f, "unexpected I/O, qualification {qualification:#x}")
            }
            Self::BadInstructionLength(length) => write!(f, "instruction length {length}"),
            Self::UnexpectedExit(reason) => write!(f, "unexpected exit reason {reason}"),
            Self::WrongRound { reported, expected } => {
                write!(f, "reported round {reported}, expected round {expected}")
            }
            Self::WrongResult {
                round,
                reported,
                expected,
            } => write!(
                f,
                "round {round}: reported {reported:#018x}, expected {expected:#018x}"
            ),
        }
    }
}

/// What makes one guest different from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GuestSpec {
    /// The workload's guest index (RDX; selects its data pattern).
    pub(crate) index: u8,
    /// Its VPID (not 0).
    pub(crate) vpid: u16,
    /// For the ept12-outside case: the probe page's EPT leaf names this
    /// host address, and the workload reads the probe page first.
    pub(crate) outside: Option<u64>,
}

/// A guest that exists: memory, EPT and VMCS are allocated and set up.
#[derive(Debug)]
pub(crate) struct Guest {
    /// Its index (as given to the workload).
    pub(crate) index: u8,
    memory: GuestMemory,
    ept: GuestEpt,
    vmcs: PhysFrame,
    /// Registers the VMCS does not hold.
    pub(crate) context: GuestContext,
    /// The runner's own copy of the guest's buffer.
    pub(crate) pattern: Vec<u8>,
    /// Whether VMLAUNCH succeeded once (then VMRESUME).
    pub(crate) launched: bool,
    /// The round the next report must carry.
    pub(crate) next_round: u64,
    /// Counts and outcome.
    pub(crate) summary: GuestSummary,
}

impl Guest {
    /// Builds the guest of `spec` and leaves its VMCS current.
    ///
    /// # Errors
    ///
    /// [`RunnerError`]; every frame taken so far is given back.
    ///
    /// # Safety
    ///
    /// VMX root operation at CPL 0.
    pub(crate) unsafe fn create(
        frames: &mut FrameAllocator,
        setup: &VmcsSetup,
        spec: GuestSpec,
    ) -> Result<Self, RunnerError> {
        let mut memory = GuestMemory::new(frames, setup.guest_memory_bytes)?;
        let prepared = prepare_memory(&mut memory, spec.index);
        let (entry, pattern) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                memory.free(frames);
                return Err(error);
            }
        };
        let outside = spec.outside.map(|host| OutsideMapping {
            gpa: PROBE_GPA,
            host,
        });
        let ept = match GuestEpt::new(frames, &memory, outside) {
            Ok(ept) => ept,
            Err(error) => {
                memory.free(frames);
                return Err(error);
            }
        };
        let vmcs_values = GuestVmcs {
            vpid: spec.vpid,
            eptp: ept.eptp(),
            rip: entry,
            rsp: memory.bytes(),
        };
        let Some(vmcs) = frames.allocate() else {
            ept.free(frames);
            memory.free(frames);
            return Err(RunnerError::OutOfMemory("a VMCS"));
        };
        memory::write_revision(vmcs, setup.revision);
        // SAFETY: VMX root operation (the caller's promise); the VMCS is a
        // fresh frame carrying the revision identifier, and every address
        // it will hold (EPTP) names frames this guest owns.
        if let Err(error) = unsafe { set_up_vmcs(vmcs, &vmcs_values, setup) } {
            // SAFETY: as above; VMCLEAR makes the region inactive so that
            // it can be freed (SDM 25.11.3). If that fails, leak it.
            let cleared = unsafe { vmclear(vmcs.address()) };
            if cleared.is_ok() {
                // SAFETY: inactive and referenced by nothing now.
                unsafe { frames.free(vmcs) };
            }
            ept.free(frames);
            memory.free(frames);
            return Err(error);
        }
        let mut context = GuestContext::new();
        context.gprs[RDI] = BUFFER_GPA;
        context.gprs[RSI] = BUFFER_LEN;
        context.gprs[RDX] = u64::from(spec.index);
        context.gprs[RCX] = if spec.outside.is_some() { PROBE_GPA } else { 0 };
        Ok(Self {
            index: spec.index,
            memory,
            ept,
            vmcs,
            context,
            pattern,
            launched: false,
            next_round: 0,
            summary: GuestSummary {
                vpid: spec.vpid,
                ..GuestSummary::default()
            },
        })
    }

    /// The guest's EPTP.
    pub(crate) const fn eptp(&self) -> Eptp {
        self.ept.eptp()
    }

    /// Makes the guest's VMCS current (SDM 31.3 VMPTRLD).
    ///
    /// # Errors
    ///
    /// The VMPTRLD failure.
    ///
    /// # Safety
    ///
    /// VMX root operation at CPL 0.
    pub(crate) unsafe fn make_current(&self) -> Result<(), VmFail> {
        // SAFETY: VMX root operation (caller); the region is this guest's
        // VMCS, carrying the revision identifier, used only by the CPU.
        unsafe { vmptrld(self.vmcs.address()) }
    }

    /// Clears the VMCS and gives every frame back.
    ///
    /// # Errors
    ///
    /// [`RunnerError::Instruction`] if VMCLEAR failed (the VMCS, its EPT
    /// and its memory are then leaked rather than freed while possibly
    /// active).
    ///
    /// # Safety
    ///
    /// VMX root operation at CPL 0; the guest will not be entered again.
    pub(crate) unsafe fn destroy(self, frames: &mut FrameAllocator) -> Result<(), RunnerError> {
        // SAFETY: VMX root operation (caller); VMCLEAR writes the VMCS
        // back and makes it inactive, so its region may be freed (SDM
        // 25.11.3).
        match unsafe { vmclear(self.vmcs.address()) } {
            Ok(()) => {
                self.ept.free(frames);
                self.memory.free(frames);
                // SAFETY: inactive now, and no longer referenced.
                unsafe { frames.free(self.vmcs) };
                Ok(())
            }
            // The VMCS may still be active and point at its EPT and
            // memory: leak all three rather than hand them out again.
            Err(fail) => Err(RunnerError::Instruction("VMCLEAR", fail)),
        }
    }
}

/// Writes page tables, workload and buffer into fresh guest memory;
/// returns the entry point and the runner's copy of the buffer.
fn prepare_memory(memory: &mut GuestMemory, index: u8) -> Result<(u64, Vec<u8>), RunnerError> {
    memory
        .write_page_tables()
        .map_err(|_| RunnerError::Layout("the guest page tables do not fit"))?;
    let entry = elf::load(L2_WORKLOAD_ELF, memory)?;
    let mut pattern = Vec::new();
    pattern
        .try_reserve_exact(l2_checksum::BUFFER_LEN)
        .map_err(|_| RunnerError::OutOfMemory("a guest buffer copy"))?;
    pattern.resize(l2_checksum::BUFFER_LEN, 0);
    l2_checksum::fill_pattern(&mut pattern, u64::from(index));
    memory
        .write(BUFFER_GPA, &pattern)
        .map_err(|_| RunnerError::Layout("the buffer does not fit"))?;
    Ok((entry, pattern))
}

/// VMCLEAR, VMPTRLD and every field of a new guest VMCS.
///
/// # Safety
///
/// VMX root operation at CPL 0; `vmcs` is a fresh frame carrying the
/// revision identifier; `values.eptp` names an EPT the caller owns.
unsafe fn set_up_vmcs(
    vmcs: PhysFrame,
    values: &GuestVmcs,
    setup: &VmcsSetup,
) -> Result<(), RunnerError> {
    // SAFETY: as the caller promises; VMCLEAR initializes the launch
    // state to clear (SDM 25.11.3), VMPTRLD makes the VMCS current.
    unsafe { vmclear(vmcs.address()) }.map_err(|fail| RunnerError::Instruction("VMCLEAR", fail))?;
    // SAFETY: as above.
    unsafe { vmptrld(vmcs.address()) }.map_err(|fail| RunnerError::Instruction("VMPTRLD", fail))?;
    // SAFETY: the VMCS just loaded is current and ours.
    unsafe { write_guest_vmcs(setup, values) }
}
