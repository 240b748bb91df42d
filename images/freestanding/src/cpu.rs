//! Control registers, SSE enabling, interrupts and halting.

use core::arch::asm;

/// CR0.MP (bit 1): `wait`/`fwait` honour CR0.TS. (SDM Vol. 3A 2.5)
pub const CR0_MP: u64 = 1 << 1;
/// CR0.EM (bit 2): x87/SSE instructions raise #UD when set.
pub const CR0_EM: u64 = 1 << 2;
/// CR0.TS (bit 3): the first x87/SSE instruction raises #NM when set.
pub const CR0_TS: u64 = 1 << 3;
/// CR4.OSFXSR (bit 9): FXSAVE/FXRSTOR and SSE are enabled.
pub const CR4_OSFXSR: u64 = 1 << 9;
/// CR4.OSXMMEXCPT (bit 10): unmasked SSE exceptions raise #XM.
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;

/// Reads CR0.
pub fn read_cr0() -> u64 {
    let value: u64;
    // SAFETY: reading CR0 has no side effects (CPL 0 is the images' mode).
    unsafe { asm!("mov {}, cr0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR2 (the linear address of the last page fault).
pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR3 (the page-table root).
pub fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR4.
pub fn read_cr4() -> u64 {
    let value: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes CR0.
///
/// # Safety
///
/// CR0 controls paging and protection: the new value must keep the current
/// code running (PE, PG and WP as the program expects).
pub unsafe fn write_cr0(value: u64) {
    // SAFETY: the caller vouches for the value.
    unsafe { asm!("mov cr0, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Writes CR4.
///
/// # Safety
///
/// CR4 controls paging modes: the new value must keep PAE and the other
/// modes the program depends on.
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: the caller vouches for the value.
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Enables SSE as the prebuilt `core` needs it: CR0.EM and CR0.TS clear,
/// CR0.MP set, CR4.OSFXSR and CR4.OSXMMEXCPT set. (SDM Vol. 3A 13.1.3)
///
/// Call it before any Rust code that may use SSE registers. `_start`
/// stubs usually do the same in assembly, before entering Rust at all.
///
/// # Safety
///
/// Must run at CPL 0.
pub unsafe fn enable_sse() {
    let cr0 = (read_cr0() & !(CR0_EM | CR0_TS)) | CR0_MP;
    let cr4 = read_cr4() | CR4_OSFXSR | CR4_OSXMMEXCPT;
    // SAFETY: only the x87/SSE bits change.
    unsafe {
        write_cr0(cr0);
        write_cr4(cr4);
    }
}

/// Disables maskable interrupts (`cli`).
pub fn disable_interrupts() {
    // SAFETY: `cli` only changes RFLAGS.IF (CPL 0).
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Stops this CPU for good: `cli; hlt` forever. Under a hypervisor each
/// `hlt` is an exit the host sees.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` only stops the CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Forces a triple fault (and so a shutdown the hypervisor sees): loads an
/// empty IDT and raises an exception. For failures so bad that even the
/// exception handlers cannot run.
pub fn triple_fault() -> ! {
    let empty = crate::idt::DescriptorTablePointer { limit: 0, base: 0 };
    // SAFETY: deliberately ends execution; nothing after it runs.
    unsafe {
        asm!("lidt [{}]", "ud2", in(reg) &raw const empty, options(noreturn, nostack));
    }
}
