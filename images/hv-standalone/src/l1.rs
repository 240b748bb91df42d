//! The L1 role: this image, booted by hv's L0, runs the L2 workloads with
//! its own VMX instructions (every one emulated by L0's hv-core) and
//! reports to L0 through hypercalls.
//!
//! Hypercall ABI (VMCALL at CPL 0, in or out of L1's VMX operation: L1 is
//! always in L0's VMX non-root operation, so VMCALL exits and hv-core hands
//! it to L0 as `Step::L1Hypercall`): RAX = function, RBX/RCX/RDX/RSI =
//! arguments; L0 returns 0 in RAX, or `u64::MAX` for an unknown function.
//! The functions are [`crate::l0::HYPERCALL_STEADY`] (every L2 ran once),
//! [`crate::l0::HYPERCALL_REPORT`] (`l2_ok`, reports checked, slices run)
//! and [`crate::l0::HYPERCALL_ILLEGAL`] (case, ok, observed, expected).

use core::arch::asm;

use crate::config::{IllegalCase, RunConfig};
use crate::l0::{HYPERCALL_ILLEGAL, HYPERCALL_REPORT, HYPERCALL_STEADY};
use crate::runner::{RunnerEvents, RunnerReport};

/// A hypercall to hv's L0.
///
/// # Safety
///
/// CPL 0 under hv's L0 (without a hypervisor below, VMCALL is #UD).
unsafe fn hypercall(function: u64, rbx: u64, rcx: u64, rdx: u64, rsi: u64) -> u64 {
    let status: u64;
    // SAFETY: the caller guarantees CPL 0 under hv; L0 only
    // writes RAX. RBX is reserved by LLVM, so it is swapped in and out.
    unsafe {
        asm!(
            "xchg {rbx}, rbx",
            "vmcall",
            "xchg {rbx}, rbx",
            rbx = inout(reg) rbx => _,
            inout("rax") function => status,
            in("rcx") rcx,
            in("rdx") rdx,
            in("rsi") rsi,
            options(nostack),
        );
    }
    status
}

/// The runner's milestones as hypercalls.
#[derive(Debug, Default)]
struct HypercallEvents {
    failed_calls: u32,
}

impl HypercallEvents {
    fn call(&mut self, function: u64, rbx: u64, rcx: u64, rdx: u64, rsi: u64) {
        // SAFETY: CPL 0, and this role runs only under hv (CPUID
        // 0x40000000).
        if unsafe { hypercall(function, rbx, rcx, rdx, rsi) } != 0 {
            self.failed_calls += 1;
        }
    }
}

impl RunnerEvents for HypercallEvents {
    fn every_guest_ran_once(&mut self) {
        self.call(HYPERCALL_STEADY, 0, 0, 0, 0);
    }

    fn illegal_result(&mut self, case: IllegalCase, ok: bool, observed: u64, expected: u64) {
        self.call(
            HYPERCALL_ILLEGAL,
            u64::from(case.number()),
            u64::from(ok),
            observed,
            expected,
        );
    }
}

/// Runs the workloads as L1 and prints the outcome (L0 forwards it).
pub(crate) fn run(
    frames: &mut crate::memory::FrameAllocator,
    caps: &hv_arch_vmx::capabilities::VmxCapabilities,
    config: RunConfig,
) -> Result<RunnerReport, crate::runner::RunnerError> {
    let mut events = HypercallEvents::default();
    let runner_config =
        crate::runner::RunnerConfig::new(config.l2_count, config.slices, config.illegal);
    let report = crate::runner::run(frames, caps, &runner_config, &mut events)?;
    // After VMXOFF: VMCALL is still a VM exit to L0 (L1 runs in L0's VMX
    // non-root operation), which hv-core hands over as a hypercall.
    events.call(
        HYPERCALL_REPORT,
        u64::from(report.l2_ok),
        report.reports_checked,
        u64::from(report.slices_run),
        0,
    );
    if events.failed_calls != 0 {
        crate::println!(
            "hv-standalone: L1: {} hypercalls were refused",
            events.failed_calls
        );
    }
    Ok(report)
}
