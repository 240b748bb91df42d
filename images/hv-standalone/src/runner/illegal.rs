//! The illegal cases: things a hypervisor does wrong on purpose, to check
//! that the VMX below it (the processor, or hv's nested engine when the
//! runner is L1) gives the SDM's answer, and that the runner keeps going.
//!
//! Each case reports `observed` against `expected` through
//! [`RunnerEvents::illegal_result`]:
//!
//! | case                   | expected                                   | observed when it went otherwise |
//! |------------------------|--------------------------------------------|---------------------------------|
//! | `vmxon-twice`          | VM-instruction error 15 (SDM 31.3 VMXON)   | the error number; 0 if VMXON succeeded; `u64::MAX` for `VMfailInvalid` |
//! | `vmlaunch-bad-control` | VM-instruction error 7 (SDM 27.2.1.1, 31.4)| the error number; 0 if the guest was entered; `u64::MAX` for `VMfailInvalid` or when no pin-based control must be 1 |
//! | `ept12-outside`        | exit reason 49, EPT misconfiguration (SDM 29.3.3.1: an address bit beyond MAXPHYADDR is a reserved bit) | the basic exit reason (52 if the slice just ended); `u64::MAX` if MAXPHYADDR is 52 |
//!
//! The guests of these cases use VPIDs above the workloads' (9, 10) and
//! are destroyed before the workloads exist; their EPT is invalidated
//! (INVEPT single-context) before its frames are freed, because a freed
//! EPT root frame may become a workload's EPT root (SDM 29.4.3.4).

use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::controls::ControlWord;
use hv_arch_vmx::instruction_error::VmInstructionError;
use hv_arch_vmx::instructions::{VmFail, invept, vmclear, vmptrld, vmxon};
use hv_arch_vmx::invalidation::{InveptDescriptor, InveptType};
use hv_arch_vmx::vmcs::VmcsField;

use crate::memory::{FrameAllocator, PhysFrame};
use crate::vmx::cpuid;
use crate::vmx::enter::enter_guest;

use super::guest::{Guest, GuestSpec};
use super::memory::write_revision;
use super::schedule::{RunStats, SliceEnd, run_slice};
use super::vmcs::{VmcsSetup, put};
use super::{IllegalCase, InvalidationCounts, MAX_GUESTS, RunnerError, RunnerEvents};

/// What the cases need besides frames.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IllegalContext<'a> {
    /// The capabilities.
    pub(crate) caps: &'a VmxCapabilities,
    /// The shared VMCS setup.
    pub(crate) setup: &'a VmcsSetup,
    /// The runner's VMXON region (the operand of the second VMXON).
    pub(crate) vmxon_region: PhysFrame,
}

/// The first VPID of the illegal-case guests.
const ILLEGAL_VPID_BASE: u16 = MAX_GUESTS as u16 + 1;
/// "Something other than a `VMfailValid` error number happened."
const OBSERVED_OTHER: u64 = u64::MAX;
/// "The instruction succeeded" (or the guest was entered).
const OBSERVED_SUCCESS: u64 = 0;
/// Basic exit reason of an EPT misconfiguration (SDM Appendix C).
const EXIT_EPT_MISCONFIGURATION: u64 = 49;

/// Runs `case`, reports it to `events` and prints it.
///
/// # Errors
///
/// [`RunnerError`] if the case's own setup failed (not the illegal
/// operation, whose outcome is the report).
pub(crate) fn run_case(
    case: IllegalCase,
    context: &IllegalContext<'_>,
    frames: &mut FrameAllocator,
    counts: &mut InvalidationCounts,
    stats: &mut RunStats,
    events: &mut impl RunnerEvents,
) -> Result<(), RunnerError> {
    let (observed, expected) = match case {
        IllegalCase::VmxonTwice => vmxon_twice(context, frames)?,
        IllegalCase::VmlaunchBadControl => vmlaunch_bad_control(context, frames, counts, stats)?,
        IllegalCase::Ept12Outside => ept12_outside(context, frames, counts, stats)?,
    };
    let ok = observed == expected;
    crate::println!(
        "runner: illegal case {}: observed {observed}, expected {expected}: {}",
        case.name(),
        if ok {
            "as the SDM says"
        } else {
            "NOT as the SDM says"
        }
    );
    events.illegal_result(case, ok, observed, expected);
    Ok(())
}

/// A VMX instruction's outcome as an observed number.
fn observed_of(result: Result<(), VmFail>) -> u64 {
    match result {
        Ok(()) => OBSERVED_SUCCESS,
        Err(VmFail::Valid(error)) => u64::from(error.number()),
        Err(_) => OBSERVED_OTHER,
    }
}

/// VMXON in VMX root operation with a current VMCS: `VMfailValid` with
/// error 15 (SDM 31.3 VMXON: "ELSE VMfail(VMXON executed in VMX root
/// operation)"; with a current VMCS, `VMfail` is `VMfailValid`, 31.2).
fn vmxon_twice(
    context: &IllegalContext<'_>,
    frames: &mut FrameAllocator,
) -> Result<(u64, u64), RunnerError> {
    let expected = u64::from(VmInstructionError::VmxonInVmxRoot.number());
    let scratch = frames
        .allocate()
        .ok_or(RunnerError::OutOfMemory("a scratch VMCS"))?;
    write_revision(scratch, context.setup.revision);
    // SAFETY: VMX root operation; a fresh frame with the revision
    // identifier becomes the current VMCS, so VMfail is VMfailValid.
    let loaded = unsafe { vmclear(scratch.address()) }.and_then(|()| {
        // SAFETY: as above.
        unsafe { vmptrld(scratch.address()) }
    });
    let observed = match loaded {
        // SAFETY: CPL 0, CR4.VMXE set, in VMX root operation: VMXON only
        // reports VMfail there (the region it names is ours, already the
        // processor's as the VMXON region, and is not re-initialized).
        Ok(()) => observed_of(unsafe { vmxon(context.vmxon_region.address()) }),
        Err(fail) => {
            release_scratch(frames, scratch);
            return Err(RunnerError::Instruction(
                "VMPTRLD of the scratch VMCS",
                fail,
            ));
        }
    };
    release_scratch(frames, scratch);
    Ok((observed, expected))
}

/// VMCLEAR and free a scratch VMCS (leaked if VMCLEAR fails).
fn release_scratch(frames: &mut FrameAllocator, scratch: PhysFrame) {
    // SAFETY: VMX root operation; the region is our scratch VMCS.
    if unsafe { vmclear(scratch.address()) }.is_ok() {
        // SAFETY: inactive now and referenced by nothing.
        unsafe { frames.free(scratch) };
    }
}

/// A complete, valid guest whose pin-based controls then lose their
/// lowest must-be-1 bit: VMLAUNCH fails with `VMfailValid` error 7, "VM
/// entry with invalid control field(s)" (SDM 27.2.1.1: reserved control
/// bits must be set according to the capability MSRs; 31.4).
fn vmlaunch_bad_control(
    context: &IllegalContext<'_>,
    frames: &mut FrameAllocator,
    counts: &mut InvalidationCounts,
    stats: &mut RunStats,
) -> Result<(u64, u64), RunnerError> {
    let expected = u64::from(VmInstructionError::EntryInvalidControlFields.number());
    let must_be_one = context.caps.pin_based.must_be_one;
    if must_be_one == 0 {
        crate::println!("runner: no pin-based control must be 1 here: nothing to clear");
        return Ok((OBSERVED_OTHER, expected));
    }
    let cleared_bit = must_be_one.trailing_zeros();
    let spec = GuestSpec {
        index: 0,
        vpid: ILLEGAL_VPID_BASE,
        outside: None,
    };
    // SAFETY: VMX root operation.
    let mut guest = unsafe { Guest::create(frames, context.setup, spec)? };
    let bad_pin = context.setup.pin.to_raw() & !(1 << cleared_bit);
    // SAFETY: the guest's VMCS is current (create leaves it so).
    let observed = match unsafe { put(VmcsField::PinBasedControls, bad_pin) } {
        Ok(()) => {
            // SAFETY: VMX root operation, the guest's VMCS current and
            // otherwise fully set up; the entry is expected to fail, and
            // if it does not, the guest runs its workload until an exit
            // (its preemption timer is set).
            let entered = unsafe { enter_guest(&mut guest.context, false) };
            if entered.is_ok() {
                stats.exits_handled += 1;
            }
            observed_of(entered)
        }
        Err(error) => {
            retire(context, frames, counts, guest)?;
            return Err(error);
        }
    };
    retire(context, frames, counts, guest)?;
    Ok((observed, expected))
}

/// A guest whose EPT maps the probe page to the address 2^MAXPHYADDR and
/// whose workload reads that page first: EPT misconfiguration, exit
/// reason 49 (SDM 29.3.3.1: "a reserved bit is set ... This includes
/// setting a bit in the range 51:12 that is beyond the logical
/// processor's physical-address width").
fn ept12_outside(
    context: &IllegalContext<'_>,
    frames: &mut FrameAllocator,
    counts: &mut InvalidationCounts,
    stats: &mut RunStats,
) -> Result<(u64, u64), RunnerError> {
    let expected = EXIT_EPT_MISCONFIGURATION;
    let width = maxphyaddr();
    if width >= 52 {
        crate::println!("runner: MAXPHYADDR is {width}: no EPT address bit is beyond it");
        return Ok((OBSERVED_OTHER, expected));
    }
    let spec = GuestSpec {
        index: 0,
        vpid: ILLEGAL_VPID_BASE + 1,
        outside: Some(1 << width),
    };
    // SAFETY: VMX root operation.
    let mut guest = unsafe { Guest::create(frames, context.setup, spec)? };
    let observed = match run_slice(&mut guest, context.setup, stats) {
        SliceEnd::Failed(failure) => failure.observed_code(),
        SliceEnd::TimerExpired => 52,
        SliceEnd::ReportLimit => 30,
    };
    retire(context, frames, counts, guest)?;
    Ok((observed, expected))
}

/// MAXPHYADDR: CPUID.80000008H:EAX[7:0], or 36 without that leaf (SDM
/// Vol. 3A 4.1.4).
fn maxphyaddr() -> u8 {
    let (highest, ..) = cpuid(0x8000_0000);
    if highest >= 0x8000_0008 {
        cpuid(0x8000_0008).0.to_le_bytes()[0]
    } else {
        36
    }
}

/// INVEPT single-context for the guest's EPTP (all-context if only that
/// is supported), then destroys it: its EPT root frame may be reused as
/// another guest's root, whose guest-physical mappings must not be this
/// EPT's (SDM 29.4.3.4).
fn retire(
    context: &IllegalContext<'_>,
    frames: &mut FrameAllocator,
    counts: &mut InvalidationCounts,
    guest: Guest,
) -> Result<(), RunnerError> {
    let cap = &context.caps.ept_vpid;
    let kind = if InveptType::SingleContext.is_supported(cap) {
        Some(InveptType::SingleContext)
    } else if InveptType::Global.is_supported(cap) {
        Some(InveptType::Global)
    } else {
        None
    };
    let invalidated = match kind {
        Some(kind) => {
            counts.count_invept();
            // SAFETY: VMX root operation; INVEPT of this type is supported
            // (checked) and the EPTP passes the VM-entry checks (it ran).
            unsafe { invept(kind, &InveptDescriptor::new(guest.eptp())) }
        }
        None => Ok(()),
    };
    // SAFETY: VMX root operation; the guest is never entered again.
    let destroyed = unsafe { guest.destroy(frames) };
    invalidated.map_err(|fail| RunnerError::Instruction("INVEPT after an illegal case", fail))?;
    destroyed
}
