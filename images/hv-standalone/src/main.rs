//! hv-standalone: hv as a freestanding x86-64 image.
//!
//! Boots under a PC BIOS from its own boot sector (or from GRUB through its
//! multiboot2 header), reaches long mode with identity paging, installs a
//! GDT/TSS/IDT with IST stacks, enables SSE, builds a frame allocator over
//! the firmware memory map and a heap, and then, as L0, probes VMX through
//! hv-arch-vmx: capability MSRs, VMXON, a VMCS round trip, VMXOFF. It ends
//! by printing `@@hv status ...` and asking Bochs to shut down (port
//! 0x8900); on a real machine it halts.
//!
//! See `boot.rs` for the boot path and `linker.ld` for the memory layout;
//! `hv standalone` (hv-host) builds the disk image and runs Bochs.
#![no_std]
#![no_main]

extern crate alloc;

// hv-freestanding provides memcpy & co. and the unwinding stubs; linking it
// is enough.
use hv_freestanding as _;

mod boot;
mod config;
mod console;
mod exceptions;
mod heap;
mod l0;
mod l1;
mod memory;
mod runner;
mod vmx;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use hv_freestanding::cpu::{read_cr0, read_cr4};
use hv_freestanding::port::outb;

use crate::config::{RunConfig, RunMode};
use crate::memory::{BootProtocol, FrameAllocator, MemoryMap};

unsafe extern "C" {
    /// End of the kernel image including `.bss` (linker script).
    static __kernel_end: u8;
}

/// Rust entry, called by `entry64` (boot.rs) on the boot stack with the
/// loader's magic and information pointer.
#[unsafe(no_mangle)]
extern "sysv64" fn hv_standalone_main(magic: u32, info: u64) -> ! {
    console::init();
    println!("hv-standalone: long mode, identity paging, Rust entered");
    // SAFETY: first thing after entry, interrupts are disabled.
    unsafe { exceptions::init() };
    println!("hv-standalone: GDT/TSS/IDT loaded (exceptions IST1, NMI IST2, #DF IST3, #MC IST4)");
    if boot::boot_flags() & boot::BOOT_FLAG_SELF_TEST_EXCEPTION != 0 {
        println!("hv-standalone: self-test: raising #UD");
        // SAFETY: deliberately faults; the #UD handler reports and ends the run.
        unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    }
    check_sse();

    // SAFETY: `magic` and `info` are what the loader passed to entry32.
    let map = match unsafe { MemoryMap::from_boot(magic, info) } {
        Ok(map) => map,
        Err(error) => fail(format_args!("memory map: {error:?}")),
    };
    print_memory_map(&map);

    let kernel_end = (&raw const __kernel_end) as u64;
    let mut frames = FrameAllocator::new(&map, kernel_end);
    let Some(heap_start) = frames.reserve_contiguous(heap::HEAP_BYTES / memory::FRAME_SIZE) else {
        fail(format_args!(
            "no {} KiB of contiguous RAM for the heap",
            heap::HEAP_BYTES / 1024
        ))
    };
    // SAFETY: the block was just reserved for good; nothing allocated yet.
    unsafe { heap::init(heap_start, heap::HEAP_BYTES) };
    println!(
        "hv-standalone: frames: {} managed above {kernel_end:#x}, heap {} KiB at {heap_start:#x}",
        frames.total_frames(),
        heap::HEAP_BYTES / 1024
    );
    check_heap();

    let config = match config::run_config() {
        Ok(config) => config,
        Err(error) => fail(format_args!("{error}")),
    };
    let report = match vmx::probe::probe(&mut frames) {
        Ok(report) => report,
        Err(error) => fail(format_args!("vmx probe: {error}")),
    };
    let under_hv = running_under_hv();
    if !under_hv {
        report.print_summary();
    }
    let mut json = String::new();
    // Writing to a String cannot fail.
    let _ = report.write_json(&mut json);
    println!("@@hv vmx {json}");

    if under_hv {
        println!("hv-standalone: running as L1 under hv (CPUID 0x40000000)");
        match l1::run(&mut frames, &report.capabilities, config) {
            Ok(outcome) => print_runner_summary("L1", &outcome),
            Err(error) => fail(format_args!("L1 runner: {error}")),
        }
    } else {
        match config.mode {
            RunMode::Probe => {}
            RunMode::OneLevel => run_one_level(&mut frames, &report, config),
            RunMode::Nested => run_nested(&mut frames, &report, config),
        }
    }
    println!(
        "@@hv frames total={} in_use={}",
        frames.total_frames(),
        frames.frames_in_use()
    );
    println!("@@hv status ok");
    shutdown()
}

/// CPUID leaf 0x40000000 says hv is the hypervisor below: this boot is L1.
fn running_under_hv() -> bool {
    let (_, _, ecx, _) = vmx::cpuid(1);
    if ecx & (1 << 31) == 0 {
        return false;
    }
    let (_, ebx, ecx, edx) = vmx::cpuid(0x4000_0000);
    (ebx, ecx, edx) == (l0::HV_SIGNATURE, 0, 0)
}

/// The runner's milestones, as L0 sees them in one-level mode.
#[derive(Debug, Default)]
struct LocalEvents {
    steady: bool,
    illegal: Option<l0::IllegalVerdict>,
}

impl runner::RunnerEvents for LocalEvents {
    fn every_guest_ran_once(&mut self) {
        self.steady = true;
    }

    fn illegal_result(
        &mut self,
        case: config::IllegalCase,
        ok: bool,
        observed: u64,
        expected: u64,
    ) {
        println!(
            "hv-standalone: illegal case {}: {} (observed {observed}, expected {expected})",
            case.name(),
            if ok { "the SDM's answer" } else { "WRONG" }
        );
        self.illegal = Some(l0::IllegalVerdict {
            case: Some(case),
            ok,
            observed,
            expected,
        });
    }
}

fn print_runner_summary(who: &str, report: &runner::RunnerReport) {
    println!(
        "hv-standalone: {who}: {} slices, {} reports checked, {} wrong, l2_ok {}",
        report.slices_run, report.reports_checked, report.wrong_results, report.l2_ok
    );
    for (index, guest) in report.guests().iter().enumerate() {
        println!(
            "hv-standalone: {who}:   L2 #{index} (VPID {}): {} slices, {} reports, {} exits{}",
            guest.vpid,
            guest.slices,
            guest.reports,
            guest.exits,
            guest
                .failure
                .map_or_else(String::new, |failure| format!(", FAILED: {failure}"))
        );
    }
}

/// L0 runs the workloads itself on the real VMX (no nesting).
fn run_one_level(frames: &mut FrameAllocator, probe: &vmx::probe::ProbeReport, config: RunConfig) {
    println!(
        "hv-standalone: L0: running {} L2 workloads for {} slices on the real VMX",
        config.l2_count, config.slices
    );
    let mut events = LocalEvents::default();
    let runner_config = runner::RunnerConfig::new(config.l2_count, config.slices, config.illegal);
    match runner::run(frames, &probe.capabilities, &runner_config, &mut events) {
        Ok(report) => {
            print_runner_summary("L0", &report);
            print_result(&ResultRecord {
                config,
                nested: false,
                slices_run: u64::from(report.slices_run),
                l2_ok: report.l2_ok && events.steady,
                l2_reports: report.reports_checked,
                steady_seen: events.steady,
                ending: "runner finished",
                nested_entries: 0,
                reflected_exits: 0,
                ept02_fills: 0,
                roots_live: 0,
                invept: report.invept,
                invvpid: report.invvpid,
                steady_invept: report.steady_invept,
                steady_invvpid: report.steady_invvpid,
                l1_exits: 0,
                illegal: events.illegal,
            });
        }
        Err(error) => fail(format_args!("one-level runner: {error}")),
    }
}

/// The `@@hv result` record (notes/standalone.md) of a one-level or
/// nested run; one level has zeros for the nested counters and the
/// runner's own INVEPT/INVVPID counts.
struct ResultRecord {
    config: RunConfig,
    nested: bool,
    slices_run: u64,
    l2_ok: bool,
    l2_reports: u64,
    steady_seen: bool,
    ending: &'static str,
    nested_entries: u64,
    reflected_exits: u64,
    ept02_fills: u64,
    roots_live: u64,
    invept: u64,
    invvpid: u64,
    steady_invept: u64,
    steady_invvpid: u64,
    l1_exits: u64,
    illegal: Option<l0::IllegalVerdict>,
}

/// Prints `@@hv result {json}`.
fn print_result(record: &ResultRecord) {
    let mut json = String::new();
    // Writing to a String cannot fail.
    let _ = write_result_json(&mut json, record);
    println!("@@hv result {json}");
}

fn write_result_json(out: &mut String, r: &ResultRecord) -> core::fmt::Result {
    let policy = if r.nested {
        format!("\"{}\"", r.config.policy.policy().name())
    } else {
        String::from("null")
    };
    write!(
        out,
        "{{\"nested\":{},\"l2_guests\":{},\"slices\":{},\"slices_run\":{},\"l2_ok\":{},\
         \"l2_reports\":{},\"policy\":{policy},\"steady_seen\":{},\"ending\":\"{}\",\
         \"l0\":{{\"nested_entries\":{},\"reflected_exits\":{},\"ept02_fills\":{},\"roots_live\":{},\
         \"invept\":{},\"invvpid\":{},\"steady_invept\":{},\"steady_invvpid\":{},\"l1_exits\":{}}},\
         \"illegal\":",
        r.nested,
        r.config.l2_count,
        r.config.slices,
        r.slices_run,
        r.l2_ok,
        r.l2_reports,
        r.steady_seen,
        r.ending,
        r.nested_entries,
        r.reflected_exits,
        r.ept02_fills,
        r.roots_live,
        r.invept,
        r.invvpid,
        r.steady_invept,
        r.steady_invvpid,
        r.l1_exits,
    )?;
    match r.illegal {
        None => out.write_str("null}"),
        Some(verdict) => write!(
            out,
            "{{\"case\":\"{}\",\"ok\":{},\"observed\":{},\"expected\":{}}}}}",
            verdict.case.map_or("unknown", config::IllegalCase::name),
            verdict.ok,
            verdict.observed,
            verdict.expected
        ),
    }
}

/// L0 with nesting: boots this image as L1 and reports what happened.
fn run_nested(frames: &mut FrameAllocator, report: &vmx::probe::ProbeReport, config: RunConfig) {
    println!(
        "hv-standalone: L0: booting this image as L1 under hv-core ({} L2s, {} slices, policy {:?})",
        config.l2_count, config.slices, config.policy
    );
    match l0::run_nested(frames, &report.capabilities, config) {
        Ok(outcome) => {
            let counters = outcome.counters;
            println!(
                "hv-standalone: L0: {} ({} L1 exits, {} nested entries, {} reflected, {} EPT02 fills, INVEPT {}, INVVPID {})",
                outcome.ending,
                counters.l1_exits,
                counters.nested_entries,
                counters.reflected,
                counters.ept02_fills,
                outcome.invept,
                outcome.invvpid
            );
            let (steady_invept, steady_invvpid) =
                outcome.steady_mark.map_or((0, 0), |(invept, invvpid)| {
                    (outcome.invept - invept, outcome.invvpid - invvpid)
                });
            let report = outcome.report.unwrap_or_default();
            print_result(&ResultRecord {
                config,
                nested: true,
                slices_run: report.slices_run,
                l2_ok: outcome.report.is_some() && report.l2_ok && outcome.steady_mark.is_some(),
                l2_reports: report.reports_checked,
                steady_seen: outcome.steady_mark.is_some(),
                ending: outcome.ending,
                nested_entries: counters.nested_entries,
                reflected_exits: counters.reflected,
                ept02_fills: counters.ept02_fills,
                roots_live: counters.roots_live,
                invept: outcome.invept,
                invvpid: outcome.invvpid,
                steady_invept,
                steady_invvpid,
                l1_exits: counters.l1_exits,
                illegal: outcome.illegal,
            });
        }
        Err(error) => fail(format_args!("nested run: {error}")),
    }
}

/// SSE was enabled by entry32; check the bits and use it once.
fn check_sse() {
    let (cr0, cr4) = (read_cr0(), read_cr4());
    let ok = cr0 & (1 << 1) != 0 && cr0 & (1 << 2) == 0 && cr4 & (3 << 9) == 3 << 9;
    if !ok {
        fail(format_args!("SSE not enabled: CR0 {cr0:#x} CR4 {cr4:#x}"));
    }
    // A floating-point computation the compiler cannot fold: SSE2 code.
    let x = core::hint::black_box(1.5f64);
    let y = x * x + 0.25;
    if y.to_bits() != 2.5f64.to_bits() {
        fail(format_args!("SSE arithmetic gave {y}"));
    }
    println!("hv-standalone: SSE on (CR0 {cr0:#x}, CR4 {cr4:#x})");
}

fn print_memory_map(map: &MemoryMap) {
    let source = match map.protocol {
        BootProtocol::Bios => "BIOS E820",
        BootProtocol::Multiboot2 => "multiboot2",
    };
    println!(
        "hv-standalone: memory map ({source}), {} KiB usable:",
        map.usable_bytes() / 1024
    );
    for region in map.regions() {
        println!(
            "hv-standalone:   {:#012x}..{:#012x} {}",
            region.base,
            region.base.saturating_add(region.length),
            region.kind.name()
        );
    }
}

/// Uses the heap through `alloc` once, and checks that freeing works.
fn check_heap() {
    let (free_before, total) = heap::usage();
    {
        let squares: Vec<u64> = (0..1000u64).map(|n| n * n).collect();
        let mut names = BTreeMap::new();
        for (index, square) in squares.iter().enumerate().step_by(100) {
            let mut name = String::new();
            let _ = write!(name, "square-{index}");
            names.insert(name, *square);
        }
        let sum: u64 = names.values().sum();
        if sum != (0..1000u64).step_by(100).map(|n| n * n).sum::<u64>() {
            fail(format_args!("heap check: wrong sum {sum}"));
        }
    }
    let (free_after, _) = heap::usage();
    if free_after != free_before {
        fail(format_args!(
            "heap check: {free_before} bytes free before, {free_after} after"
        ));
    }
    println!("hv-standalone: heap ok ({free_after} of {total} bytes free)");
}

/// Prints a failure status and ends the run.
fn fail(message: core::fmt::Arguments<'_>) -> ! {
    println!("hv-standalone: FAILED: {message}");
    println!("@@hv status fail {message}");
    shutdown()
}

/// Ends the run: Bochs's shutdown port (0x8900, "Shutdown"), then halt
/// (real machines).
pub(crate) fn shutdown() -> ! {
    for byte in *b"Shutdown" {
        // SAFETY: port 0x8900 is Bochs's shutdown port; elsewhere it is unused.
        unsafe { outb(0x8900, byte) };
    }
    hv_freestanding::cpu::halt_forever()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("hv-standalone: PANIC: {info}");
    if let Some(location) = info.location() {
        println!(
            "@@hv status panic {}:{}: {}",
            location.file(),
            location.line(),
            info.message()
        );
    } else {
        println!("@@hv status panic {}", info.message());
    }
    shutdown()
}
