//! The L2 checksum workload: a freestanding program that checksums its
//! buffer round after round and reports every result on
//! [`REPORT_PORT`](l2_checksum::REPORT_PORT). The entry registers and the
//! report protocol are documented in the library (`l2_checksum`).
#![no_std]
#![no_main]

use core::arch::{asm, naked_asm};

use l2_checksum::{REPORT_PORT, checksum};

// hv-freestanding provides memcpy & co. and the unwinding stubs; linking
// it is enough.
use hv_freestanding as _;

/// The entry point (`e_entry`, first in `.text`): aligns the stack as the
/// System V ABI expects at a call and calls [`workload`] with the entry
/// registers RDI, RSI, RDX, RCX untouched as its four arguments.
#[unsafe(naked)]
#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
pub extern "sysv64" fn _start() -> ! {
    naked_asm!(
        "and rsp, -16",
        "call {workload}",
        "ud2",
        workload = sym workload,
    )
}

/// The workload proper: probe, then report `checksum(buffer, r, index)`
/// for r = 0, 1, 2, ...
extern "sysv64" fn workload(buffer: *const u8, length: usize, index: u64, probe: u64) -> ! {
    if probe != 0 {
        // SAFETY: the runner asked for this read (the address is in its
        // guest-physical map); whatever it causes is the runner's test.
        let _ = unsafe { (probe as *const u64).read_volatile() };
    }
    // SAFETY: the runner gives `length` bytes of memory at `buffer`, which
    // nothing else in this guest writes.
    let data = unsafe { core::slice::from_raw_parts(buffer, length) };
    let mut round: u64 = 0;
    loop {
        report(checksum(data, round, index), round);
        round = round.wrapping_add(1);
    }
}

/// `out dx, eax` with DX = [`REPORT_PORT`], RAX = `hash`, RBX = `round`.
/// RBX is reserved by the compiler, so it is swapped in around the `out`.
fn report(hash: u64, round: u64) {
    // SAFETY: an I/O write to the report port, which the hypervisor
    // intercepts; no memory is touched and every register is restored.
    unsafe {
        asm!(
            "xchg rbx, {round}",
            "out dx, eax",
            "xchg rbx, {round}",
            round = inout(reg) round => _,
            in("dx") REPORT_PORT,
            in("rax") hash,
            options(nomem, nostack, preserves_flags),
        );
    }
}

/// A panic cannot be reported from here: HLT (which the runner intercepts
/// and reports as a workload failure), forever.
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        // SAFETY: HLT only stops the processor (or exits to the runner).
        unsafe { asm!("hlt", options(nomem, nostack, preserves_flags)) };
    }
}
