//! The workload runner: a small VMX hypervisor for K L2 workloads.
//!
//! Used twice by hv-standalone: by L0 on the processor's own VMX ("one
//! level"), and by the same image running as L1 under hv's nested engine,
//! where every VMX instruction below is emulated by L0. It uses nothing
//! but VMX instructions, its own EPT and its own guest page tables; it
//! knows nothing about hv-mmu or hv-core.
//!
//! What it does ([`run`]):
//!
//! 1. CR4.VMXE on, VMXON on its own region, one INVEPT all-context and one
//!    INVVPID all-context (SDM 29.4.3: VMXON invalidates nothing, and frames
//!    this runner uses as EPT roots may have been EPT roots before).
//! 2. If asked, one illegal case ([`IllegalCase`]) on guests of its own,
//!    reported through [`RunnerEvents::illegal_result`].
//! 3. K guests, each with its own guest-physical memory, 4-level EPT (4 KiB
//!    leaves, WB), VPID (1..=K) and VMCS, running the `l2-checksum`
//!    workload in 64-bit mode. Round-robin slices, each ended by the
//!    VMX-preemption timer; every report on
//!    [`REPORT_PORT`](l2_checksum::REPORT_PORT) is checked against the
//!    runner's own computation. Any other exit fails that guest only.
//! 4. VMCLEAR of every VMCS, VMXOFF, CR4.VMXE off, every frame freed.
//!
//! Steady state (after every guest ran once) executes no INVEPT or
//! INVVPID: each guest has its own VPID and EPTP and no EPT entry ever
//! changes.

mod elf;
mod ept;
mod guest;
mod illegal;
mod memory;
mod schedule;
mod vmcs;

use core::fmt;

use hv_arch_vmx::capabilities::{ControlAdjustError, VmxCapabilities};
use hv_arch_vmx::ept::{EptEntryError, EptpBuildError};
use hv_arch_vmx::instructions::{VmFail, vmxoff, vmxon};
use hv_arch_vmx::invalidation::{InveptDescriptor, InveptType, InvvpidDescriptor, InvvpidType};
use hv_arch_vmx::vmcs::VmcsField;
use hv_freestanding::cpu::{read_cr0, read_cr4, write_cr4};

pub(crate) use crate::config::IllegalCase;
use crate::memory::{FrameAllocator, PhysFrame};

pub(crate) use elf::ElfError;
pub(crate) use guest::GuestFailure;

/// The L2 workload: the `l2-checksum` ELF file, built by
/// hv-standalone's build script.
static L2_WORKLOAD_ELF: &[u8] = include_bytes!(env!("HV_L2_WORKLOAD"));

/// Most guests one run can have (VPIDs 1..=8).
pub(crate) const MAX_GUESTS: usize = 8;

/// CR4.VMXE (bit 13).
const CR4_VMXE: u64 = 1 << 13;

/// What to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunnerConfig {
    /// Number of guests, 1..=[`MAX_GUESTS`].
    pub(crate) guests: u8,
    /// Round-robin slices over the guests (at least 1).
    pub(crate) slices: u32,
    /// An illegal case to run before the workloads.
    pub(crate) illegal: Option<IllegalCase>,
    /// Guest-physical memory per guest, in bytes: a multiple of 4 KiB in
    /// [`memory::MIN_GUEST_MEMORY`]..=[`memory::MAX_GUEST_MEMORY`]
    /// (3 MiB..=64 MiB). [`RunnerConfig::new`] uses 4 MiB.
    pub(crate) guest_memory_bytes: u64,
}

impl RunnerConfig {
    /// `guests` workloads over `slices` slices, with 4 MiB of memory each.
    pub(crate) const fn new(guests: u8, slices: u32, illegal: Option<IllegalCase>) -> Self {
        Self {
            guests,
            slices,
            illegal,
            guest_memory_bytes: 4 << 20,
        }
    }
}

/// How the runner tells its caller about milestones while it runs: L0
/// prints, L1 makes hypercalls.
pub(crate) trait RunnerEvents {
    /// Every guest has run one slice (or failed before it could): from now
    /// on the runner is in its steady state.
    fn every_guest_ran_once(&mut self);

    /// The outcome of an illegal case: `observed` against the SDM's
    /// `expected` value (a VM-instruction error number for
    /// [`IllegalCase::VmxonTwice`] and [`IllegalCase::VmlaunchBadControl`],
    /// a basic exit reason for [`IllegalCase::Ept12Outside`]; see
    /// [`illegal`] for what `observed` holds when something else happened).
    fn illegal_result(&mut self, case: IllegalCase, ok: bool, observed: u64, expected: u64);
}

/// One guest's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct GuestSummary {
    /// The VPID it ran with.
    pub(crate) vpid: u16,
    /// Correct reports checked.
    pub(crate) reports: u64,
    /// Slices it ran (including the one it failed in).
    pub(crate) slices: u32,
    /// VM exits it caused.
    pub(crate) exits: u64,
    /// Why it stopped being scheduled, if it did.
    pub(crate) failure: Option<GuestFailure>,
}

/// What a run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunnerReport {
    /// No guest failed, every guest reported at least one correct result,
    /// and no result was wrong.
    pub(crate) l2_ok: bool,
    /// Number of guests: the first `guest_count` entries of `guests` are
    /// theirs, by guest index.
    pub(crate) guest_count: u8,
    /// Per guest.
    pub(crate) guests: [GuestSummary; MAX_GUESTS],
    /// Slices actually run (fewer than asked if every guest failed).
    pub(crate) slices_run: u32,
    /// Slices that ended because the report limit per slice was reached
    /// rather than by the preemption timer (0 when the timer works).
    pub(crate) report_limit_slices: u32,
    /// Correct reports checked, over all guests.
    pub(crate) reports_checked: u64,
    /// Reports whose round or checksum was wrong.
    pub(crate) wrong_results: u64,
    /// VM exits handled, over all guests (illegal-case guests included).
    pub(crate) exits_handled: u64,
    /// INVEPT instructions the runner executed.
    pub(crate) invept: u64,
    /// INVVPID instructions the runner executed.
    pub(crate) invvpid: u64,
    /// INVEPT instructions after every guest ran once.
    pub(crate) steady_invept: u64,
    /// INVVPID instructions after every guest ran once.
    pub(crate) steady_invvpid: u64,
}

impl RunnerReport {
    /// The summaries of the guests that ran, by guest index.
    pub(crate) fn guests(&self) -> &[GuestSummary] {
        &self.guests[..usize::from(self.guest_count).min(MAX_GUESTS)]
    }
}

/// Why the runner could not do its job at all (a failing guest is not
/// one of these: it is in [`GuestSummary::failure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunnerError {
    /// The configuration is out of range: the field and its value.
    Config(&'static str, u64),
    /// The processor lacks something the runner needs.
    Unsupported(&'static str),
    /// A wanted control is not allowed by the capability MSRs.
    Control(ControlAdjustError),
    /// CR0 or CR4 (`register`) violates a VMX fixed bit (SDM 24.8).
    FixedBit(&'static str, u32),
    /// Out of frames or heap for what is named.
    OutOfMemory(&'static str),
    /// A VMX instruction the runner needs failed.
    Instruction(&'static str, VmFail),
    /// A VMWRITE while setting up a VMCS failed.
    VmcsWrite(VmcsField, VmFail),
    /// The EPTP could not be built.
    Eptp(EptpBuildError),
    /// An EPT entry could not be built.
    EptEntry(EptEntryError),
    /// The L2 workload's ELF file is unusable.
    Elf(ElfError),
    /// The workload (or its buffer or stack) does not fit the guest memory.
    Layout(&'static str),
}

impl fmt::Display for RunnerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(field, value) => {
                write!(f, "runner config: {field} = {value} is out of range")
            }
            Self::Unsupported(what) => write!(f, "the processor does not support {what}"),
            Self::Control(error) => write!(f, "VMX controls: {error}"),
            Self::FixedBit(register, bit) => {
                write!(f, "{register} bit {bit} violates the VMX fixed bits")
            }
            Self::OutOfMemory(what) => write!(f, "out of memory for {what}"),
            Self::Instruction(name, fail) => write!(f, "{name}: {fail}"),
            Self::VmcsWrite(field, fail) => write!(f, "VMWRITE {}: {fail}", field.name()),
            Self::Eptp(error) => write!(f, "EPTP: {error}"),
            Self::EptEntry(error) => write!(f, "EPT entry: {error}"),
            Self::Elf(error) => write!(f, "L2 workload ELF: {error}"),
            Self::Layout(what) => write!(f, "guest layout: {what}"),
        }
    }
}

impl From<ControlAdjustError> for RunnerError {
    fn from(error: ControlAdjustError) -> Self {
        Self::Control(error)
    }
}

impl From<ElfError> for RunnerError {
    fn from(error: ElfError) -> Self {
        Self::Elf(error)
    }
}

/// INVEPT/INVVPID counts, total and since the steady state began.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct InvalidationCounts {
    invept: u64,
    invvpid: u64,
    steady: bool,
    steady_invept: u64,
    steady_invvpid: u64,
}

impl InvalidationCounts {
    fn count_invept(&mut self) {
        self.invept += 1;
        if self.steady {
            self.steady_invept += 1;
        }
    }

    fn count_invvpid(&mut self) {
        self.invvpid += 1;
        if self.steady {
            self.steady_invvpid += 1;
        }
    }
}

/// Runs `config` with frames from `frames` on a processor with `caps`,
/// telling `events` about milestones. Every frame it takes is given back,
/// and the processor is outside VMX operation with CR4.VMXE clear when it
/// returns (unless VMXOFF itself failed, which the error says).
///
/// Precondition (the caller's, checked by VMXON): `IA32_FEATURE_CONTROL`
/// is locked with VMXON outside SMX enabled, and the processor is not in
/// VMX operation.
///
/// # Errors
///
/// [`RunnerError`] when the runner cannot run at all; a failing guest is
/// reported in [`RunnerReport`] instead.
pub(crate) fn run(
    frames: &mut FrameAllocator,
    caps: &VmxCapabilities,
    config: &RunnerConfig,
    events: &mut impl RunnerEvents,
) -> Result<RunnerReport, RunnerError> {
    validate(config)?;
    let setup = vmcs::VmcsSetup::new(caps, config.guest_memory_bytes)?;

    // SDM 24.8: CR0 and CR4 must honour the fixed bits in VMX operation.
    let cr4 = read_cr4() | CR4_VMXE;
    if let Some(violation) = caps.cr0_fixed.first_violation(read_cr0()) {
        return Err(RunnerError::FixedBit("CR0", violation.bit));
    }
    if let Some(violation) = caps.cr4_fixed.first_violation(cr4) {
        return Err(RunnerError::FixedBit("CR4", violation.bit));
    }
    let vmxon_region = frames
        .allocate()
        .ok_or(RunnerError::OutOfMemory("the VMXON region"))?;
    memory::write_revision(vmxon_region, caps.basic.revision_id());
    // SAFETY: VMX is supported (the caller probed it), so CR4.VMXE may be set.
    unsafe { write_cr4(cr4) };
    // SAFETY: CPL 0 in 64-bit mode, CR4.VMXE and the fixed bits hold,
    // IA32_FEATURE_CONTROL allows VMXON (precondition), and the region is
    // a zeroed frame we own that carries the revision identifier (SDM
    // 25.11.5, 31.3 VMXON). Until VMXOFF nothing touches it.
    if let Err(fail) = unsafe { vmxon(vmxon_region.address()) } {
        // SAFETY: not in VMX operation: CR4.VMXE may be cleared.
        unsafe { write_cr4(read_cr4() & !CR4_VMXE) };
        // SAFETY: VMXON failed, so the processor never took the frame.
        unsafe { frames.free(vmxon_region) };
        return Err(RunnerError::Instruction("VMXON", fail));
    }

    let mut counts = InvalidationCounts::default();
    let result = run_in_vmx_root(
        frames,
        caps,
        config,
        &setup,
        vmxon_region,
        &mut counts,
        events,
    );

    // SAFETY: VMX root operation at CPL 0; every VMCS the runner used was
    // cleared by its guest's teardown (SDM 25.11.3: VMCLEAR before VMXOFF).
    let off = unsafe { vmxoff() };
    if let Err(fail) = off {
        // Still in VMX operation: the VMXON region stays the processor's
        // and CR4.VMXE cannot be cleared (#GP, SDM 24.8). Leak the frame.
        return Err(RunnerError::Instruction("VMXOFF", fail));
    }
    // SAFETY: outside VMX operation now.
    unsafe { write_cr4(read_cr4() & !CR4_VMXE) };
    // SAFETY: after VMXOFF the processor no longer uses the VMXON region.
    unsafe { frames.free(vmxon_region) };
    result
}

/// Checks `config` against the ranges [`RunnerConfig`] documents.
fn validate(config: &RunnerConfig) -> Result<(), RunnerError> {
    if config.guests == 0 || usize::from(config.guests) > MAX_GUESTS {
        return Err(RunnerError::Config("guests", config.guests.into()));
    }
    if config.slices == 0 {
        return Err(RunnerError::Config("slices", 0));
    }
    let bytes = config.guest_memory_bytes;
    if !(memory::MIN_GUEST_MEMORY..=memory::MAX_GUEST_MEMORY).contains(&bytes)
        || !bytes.is_multiple_of(memory::PAGE_SIZE)
    {
        return Err(RunnerError::Config("guest_memory_bytes", bytes));
    }
    Ok(())
}

/// Everything between VMXON and VMXOFF: the initial invalidations, the
/// illegal case, the workloads.
fn run_in_vmx_root(
    frames: &mut FrameAllocator,
    caps: &VmxCapabilities,
    config: &RunnerConfig,
    setup: &vmcs::VmcsSetup,
    vmxon_region: PhysFrame,
    counts: &mut InvalidationCounts,
    events: &mut impl RunnerEvents,
) -> Result<RunnerReport, RunnerError> {
    invalidate_all(caps, counts)?;
    let mut stats = schedule::RunStats::default();
    if let Some(case) = config.illegal {
        let context = illegal::IllegalContext {
            caps,
            setup,
            vmxon_region,
        };
        illegal::run_case(case, &context, frames, counts, &mut stats, events)?;
    }
    schedule::run_workloads(frames, setup, config, counts, &mut stats, events)
}

/// INVEPT all-context and INVVPID all-context, once after VMXON: VMXON
/// invalidates no cached mapping (SDM 29.4.3.2), the SDM's INVVPID
/// guidelines ask for an all-context INVVPID after VMXON (29.4.3.3), and an
/// EPT root frame of ours may have been another EPT's root before (then
/// its guest-physical mappings could still be cached, 29.4.3.4).
fn invalidate_all(
    caps: &VmxCapabilities,
    counts: &mut InvalidationCounts,
) -> Result<(), RunnerError> {
    if InveptType::Global.is_supported(&caps.ept_vpid) {
        // SAFETY: VMX root operation at CPL 0; EPT and INVEPT all-context
        // are supported (checked); invalidation changes no memory.
        unsafe {
            hv_arch_vmx::instructions::invept(InveptType::Global, &InveptDescriptor::default())
        }
        .map_err(|fail| RunnerError::Instruction("INVEPT all-context", fail))?;
        counts.count_invept();
    }
    if InvvpidType::AllContext.is_supported(&caps.ept_vpid) {
        // SAFETY: VMX root operation at CPL 0; VPID and INVVPID
        // all-context are supported (checked); the descriptor is ignored
        // but for its reserved bits, which are 0.
        unsafe {
            hv_arch_vmx::instructions::invvpid(
                InvvpidType::AllContext,
                &InvvpidDescriptor::new(0, 0),
            )
        }
        .map_err(|fail| RunnerError::Instruction("INVVPID all-context", fail))?;
        counts.count_invvpid();
    }
    Ok(())
}
