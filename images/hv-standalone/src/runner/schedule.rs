//! Round-robin scheduling of the workload guests and their VM exits.
//!
//! A slice is one VMPTRLD of the guest's VMCS, a fresh VMX-preemption
//! timer, and VM entries until the timer expires (exit reason 52). Report
//! exits (an `out` to the report port) are checked and the guest resumed
//! within the slice; the timer value is saved at those exits (exit control
//! "save VMX-preemption timer value", SDM 25.7.1) so the slice keeps its
//! length. Any other exit fails the guest.

use alloc::vec::Vec;

use hv_arch_vmx::exit::{ExitReason, ExitReasonWord, IoDirection, IoQualification};
use hv_arch_vmx::vmcs::VmcsField;
use l2_checksum::{REPORT_PORT, checksum};

use crate::memory::FrameAllocator;
use crate::vmx::enter::enter_guest;
use crate::vmx::fields;

use super::guest::{Guest, GuestFailure, GuestSpec, RAX, RBX};
use super::vmcs::VmcsSetup;
use super::{
    GuestSummary, InvalidationCounts, MAX_GUESTS, RunnerConfig, RunnerError, RunnerEvents,
    RunnerReport,
};

/// Reports one slice may carry when the timer value is saved at exits: a
/// guard against a timer that never fires (a slice is 2-3 rounds).
const REPORT_LIMIT_WITH_SAVED_TIMER: u32 = 64;
/// Without the save control the timer restarts at every entry, so the
/// report count is what ends a slice.
const REPORT_LIMIT_WITHOUT_SAVED_TIMER: u32 = 3;

/// Counters over the whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RunStats {
    /// Slices run.
    pub(crate) slices_run: u32,
    /// Slices ended by the report limit.
    pub(crate) report_limit_slices: u32,
    /// Correct reports.
    pub(crate) reports_checked: u64,
    /// Wrong reports.
    pub(crate) wrong_results: u64,
    /// VM exits handled.
    pub(crate) exits_handled: u64,
}

/// How a slice ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SliceEnd {
    /// The VMX-preemption timer expired (exit reason 52).
    TimerExpired,
    /// The report limit was reached.
    ReportLimit,
    /// The guest failed.
    Failed(GuestFailure),
}

/// What one exit meant.
enum ExitOutcome {
    /// A correct report: resume the guest.
    Reported,
    /// The slice is over.
    TimerExpired,
}

/// Creates `config.guests` workload guests (VPIDs 1..=K), runs the slices,
/// destroys the guests and reports.
///
/// # Errors
///
/// [`RunnerError`] if a guest cannot be created or destroyed.
pub(crate) fn run_workloads(
    frames: &mut FrameAllocator,
    setup: &VmcsSetup,
    config: &RunnerConfig,
    counts: &mut InvalidationCounts,
    stats: &mut RunStats,
    events: &mut impl RunnerEvents,
) -> Result<RunnerReport, RunnerError> {
    let mut guests: Vec<Guest> = Vec::new();
    guests
        .try_reserve_exact(usize::from(config.guests))
        .map_err(|_| RunnerError::OutOfMemory("the guest list"))?;
    let outcome = create_and_schedule(frames, setup, config, counts, stats, &mut guests, events);

    let mut summaries = [GuestSummary::default(); MAX_GUESTS];
    let mut teardown = Ok(());
    for guest in guests.drain(..) {
        if let Some(summary) = summaries.get_mut(usize::from(guest.index)) {
            *summary = guest.summary;
        }
        // SAFETY: VMX root operation; the run is over, so the guest is
        // never entered again.
        let destroyed = unsafe { guest.destroy(frames) };
        teardown = teardown.and(destroyed);
    }
    outcome?;
    teardown?;

    let ran = &summaries[..usize::from(config.guests)];
    let l2_ok = stats.wrong_results == 0
        && ran
            .iter()
            .all(|guest| guest.failure.is_none() && guest.reports > 0);
    Ok(RunnerReport {
        l2_ok,
        guest_count: config.guests,
        guests: summaries,
        slices_run: stats.slices_run,
        report_limit_slices: stats.report_limit_slices,
        reports_checked: stats.reports_checked,
        wrong_results: stats.wrong_results,
        exits_handled: stats.exits_handled,
        invept: counts.invept,
        invvpid: counts.invvpid,
        steady_invept: counts.steady_invept,
        steady_invvpid: counts.steady_invvpid,
    })
}

/// Creates the guests into `guests` and runs the slices round-robin.
fn create_and_schedule(
    frames: &mut FrameAllocator,
    setup: &VmcsSetup,
    config: &RunnerConfig,
    counts: &mut InvalidationCounts,
    stats: &mut RunStats,
    guests: &mut Vec<Guest>,
    events: &mut impl RunnerEvents,
) -> Result<(), RunnerError> {
    for index in 0..config.guests {
        let spec = GuestSpec {
            index,
            vpid: u16::from(index) + 1,
            outside: None,
        };
        // SAFETY: VMX root operation (run's caller entered it).
        let guest = unsafe { Guest::create(frames, setup, spec)? };
        guests.push(guest);
    }
    crate::println!(
        "runner: {} guests ready ({} KiB each), {} slices of timer value {}{}",
        guests.len(),
        setup.guest_memory_bytes / 1024,
        config.slices,
        setup.slice_timer,
        if setup.saves_timer {
            ""
        } else {
            " (timer not saved at exits)"
        }
    );

    let count = guests.len();
    let mut cursor = 0;
    let mut steady = false;
    for _ in 0..config.slices {
        let runnable = (0..count)
            .map(|offset| (cursor + offset) % count)
            .find(|&index| guests[index].summary.failure.is_none());
        let Some(index) = runnable else {
            crate::println!("runner: every guest failed; stopping early");
            break;
        };
        let guest = &mut guests[index];
        let end = run_slice(guest, setup, stats);
        if let SliceEnd::Failed(failure) = end {
            crate::println!(
                "runner: guest {} failed in slice {}: {failure}",
                guest.index,
                stats.slices_run
            );
        }
        stats.slices_run += 1;
        cursor = index + 1;
        let all_ran = guests
            .iter()
            .all(|guest| guest.summary.slices > 0 || guest.summary.failure.is_some());
        if all_ran && !steady {
            steady = true;
            counts.steady = true;
            events.every_guest_ran_once();
        }
    }
    Ok(())
}

/// Runs one slice of `guest` (VMPTRLD, timer, entries until the timer
/// expires); a failure is recorded in the guest's summary.
pub(crate) fn run_slice(guest: &mut Guest, setup: &VmcsSetup, stats: &mut RunStats) -> SliceEnd {
    guest.summary.slices += 1;
    let end = run_slice_inner(guest, setup, stats);
    match end {
        SliceEnd::Failed(failure) => {
            guest.summary.failure = Some(failure);
            if failure.is_wrong_result() {
                stats.wrong_results += 1;
            }
        }
        SliceEnd::ReportLimit => stats.report_limit_slices += 1,
        SliceEnd::TimerExpired => {}
    }
    end
}

fn run_slice_inner(guest: &mut Guest, setup: &VmcsSetup, stats: &mut RunStats) -> SliceEnd {
    // SAFETY: VMX root operation (run's caller entered it); the VMCS is
    // this guest's. Switching guests needs only VMPTRLD: the previous VMCS
    // stays active and launched (SDM 25.11.1), no VMCLEAR in between.
    if let Err(fail) = unsafe { guest.make_current() } {
        return SliceEnd::Failed(GuestFailure::Vmptrld(fail));
    }
    // SAFETY: VMX root operation at CPL 0, and the guest's VMCS is now
    // current until this function returns.
    let vmcs = unsafe { CurrentVmcs::assume() };
    let timer = VmcsField::VmxPreemptionTimerValue;
    if let Err(failure) = vmcs.write(timer, u64::from(setup.slice_timer)) {
        return SliceEnd::Failed(failure);
    }
    let report_limit = if setup.saves_timer {
        REPORT_LIMIT_WITH_SAVED_TIMER
    } else {
        REPORT_LIMIT_WITHOUT_SAVED_TIMER
    };
    let mut reports = 0;
    loop {
        // SAFETY: VMX root operation with the guest's VMCS current; its
        // host state is this CPU's (written at creation), its controls and
        // guest state were set up by `write_guest_vmcs`, its EPTP names
        // the guest's own EPT; interrupts are disabled in hv-standalone.
        let entered = unsafe { enter_guest(&mut guest.context, guest.launched) };
        if let Err(fail) = entered {
            return SliceEnd::Failed(GuestFailure::EntryInstruction(fail));
        }
        guest.launched = true;
        stats.exits_handled += 1;
        guest.summary.exits += 1;
        match handle_exit(&vmcs, guest) {
            Ok(ExitOutcome::TimerExpired) => return SliceEnd::TimerExpired,
            Ok(ExitOutcome::Reported) => {
                stats.reports_checked += 1;
                reports += 1;
                if reports >= report_limit {
                    return SliceEnd::ReportLimit;
                }
            }
            Err(failure) => return SliceEnd::Failed(failure),
        }
    }
}

/// The guest's VMCS is current in VMX root operation at CPL 0: while a
/// value of this type exists, VMREAD and VMWRITE of it are sound.
struct CurrentVmcs(());

#[allow(
    clippy::unused_self,
    reason = "the receiver is the proof that a VMCS is current"
)]
impl CurrentVmcs {
    /// Asserts the condition the type stands for.
    ///
    /// # Safety
    ///
    /// VMX root operation at CPL 0 with a current VMCS, for as long as the
    /// value lives.
    unsafe fn assume() -> Self {
        Self(())
    }

    /// VMREAD, failing the guest if it fails.
    fn read(&self, field: VmcsField) -> Result<u64, GuestFailure> {
        // SAFETY: the type's invariant.
        unsafe { fields::read(field) }.map_err(|fail| GuestFailure::Vmread(field, fail))
    }

    /// VMWRITE, failing the guest if it fails.
    fn write(&self, field: VmcsField, value: u64) -> Result<(), GuestFailure> {
        // SAFETY: the type's invariant; the fields written here (guest RIP,
        // the timer) take effect only at the next VM entry.
        unsafe { fields::write(field, value) }.map_err(|fail| GuestFailure::Vmwrite(field, fail))
    }
}

/// Decides what the exit of the current VMCS (`guest`'s, which just
/// exited) means (SDM 28.2, Appendix C).
fn handle_exit(vmcs: &CurrentVmcs, guest: &mut Guest) -> Result<ExitOutcome, GuestFailure> {
    let word = ExitReasonWord::from_raw(vmcs.read(VmcsField::ExitReason)? as u32);
    if word.is_entry_failure() {
        // SDM 27.8: the entry failed while loading guest state or MSRs.
        return Err(GuestFailure::EntryFailure {
            reason: word.raw(),
            qualification: vmcs.read(VmcsField::ExitQualification)?,
        });
    }
    match word.reason() {
        ExitReason::PreemptionTimerExpired => Ok(ExitOutcome::TimerExpired),
        ExitReason::IoInstruction => check_report(vmcs, guest),
        ExitReason::TripleFault => Err(GuestFailure::TripleFault),
        ExitReason::ExceptionOrNmi => Err(GuestFailure::Exception {
            interruption_info: vmcs.read(VmcsField::VmExitInterruptionInfo)? as u32,
        }),
        ExitReason::EptViolation => Err(GuestFailure::EptViolation {
            gpa: vmcs.read(VmcsField::GuestPhysicalAddress)?,
            qualification: vmcs.read(VmcsField::ExitQualification)?,
        }),
        ExitReason::EptMisconfiguration => Err(GuestFailure::EptMisconfiguration {
            gpa: vmcs.read(VmcsField::GuestPhysicalAddress)?,
        }),
        ExitReason::Hlt => Err(GuestFailure::Hlt),
        other => Err(GuestFailure::UnexpectedExit(other.number())),
    }
}

/// An I/O exit: must be a plain `out` to [`REPORT_PORT`] carrying the next
/// round and its correct checksum in RBX/RAX (see `l2_checksum`); then RIP
/// moves past the instruction (SDM 28.2.5: the VM-exit instruction length
/// is valid for I/O exits).
fn check_report(vmcs: &CurrentVmcs, guest: &mut Guest) -> Result<ExitOutcome, GuestFailure> {
    let raw = vmcs.read(VmcsField::ExitQualification)?;
    // SDM 28.2.1, Table 28-5.
    let qualification = IoQualification::from_raw(raw);
    let is_report = qualification.port() == REPORT_PORT
        && qualification.direction() == IoDirection::Out
        && !qualification.is_string()
        && !qualification.is_rep();
    if !is_report {
        return Err(GuestFailure::UnexpectedIo { qualification: raw });
    }
    let length = vmcs.read(VmcsField::VmExitInstructionLength)?;
    if !(1..=15).contains(&length) {
        return Err(GuestFailure::BadInstructionLength(length));
    }
    let round = guest.context.gprs[RBX];
    let reported = guest.context.gprs[RAX];
    if round != guest.next_round {
        return Err(GuestFailure::WrongRound {
            reported: round,
            expected: guest.next_round,
        });
    }
    let expected = checksum(&guest.pattern, round, u64::from(guest.index));
    if reported != expected {
        return Err(GuestFailure::WrongResult {
            round,
            reported,
            expected,
        });
    }
    let rip = vmcs.read(VmcsField::GuestRip)?;
    vmcs.write(VmcsField::GuestRip, rip.wrapping_add(length))?;
    guest.next_round += 1;
    guest.summary.reports += 1;
    Ok(ExitOutcome::Reported)
}
