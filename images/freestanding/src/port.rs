//! Port I/O (`in`/`out`). Under a hypervisor each access is a VM exit.
//!
//! None of these functions is marked `nomem`: the host may read or write
//! guest memory while it handles the exit (that is how hv-guest passes
//! messages), so the compiler must not cache memory across them.

use core::arch::asm;

/// Writes a byte to `port`.
///
/// # Safety
///
/// The device behind `port` may do anything, including change memory the
/// program relies on.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller accepts the device's side effects.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nostack, preserves_flags)) };
}

/// Writes a 16-bit word to `port`.
///
/// # Safety
///
/// As for [`outb`].
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: the caller accepts the device's side effects.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") value, options(nostack, preserves_flags)) };
}

/// Writes a 32-bit word to `port`.
///
/// # Safety
///
/// As for [`outb`].
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller accepts the device's side effects.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, preserves_flags));
    };
}

/// Reads a byte from `port`.
///
/// # Safety
///
/// As for [`outb`]: reads can have side effects too.
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller accepts the device's side effects.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nostack, preserves_flags)) };
    value
}

/// Reads a 16-bit word from `port`.
///
/// # Safety
///
/// As for [`inb`].
pub unsafe fn inw(port: u16) -> u16 {
    let value: u16;
    // SAFETY: the caller accepts the device's side effects.
    unsafe { asm!("in ax, dx", in("dx") port, out("ax") value, options(nostack, preserves_flags)) };
    value
}

/// Reads a 32-bit word from `port`.
///
/// # Safety
///
/// As for [`inb`].
pub unsafe fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: the caller accepts the device's side effects.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") value, options(nostack, preserves_flags));
    };
    value
}
