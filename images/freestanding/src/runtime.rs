//! Symbols the prebuilt `core` and `alloc` need from "the C library":
//! `memcpy memmove memset memcmp bcmp`, written with string instructions
//! (a plain Rust loop can be compiled back into a call to itself), and the
//! unwinding hooks `rust_eh_personality` and `_Unwind_Resume`, which a
//! `panic = "abort"` image never calls.
//!
//! Left out of `cfg(test)` builds, where the host's libc provides them.
//! Every function leaves the direction flag clear, as the System V ABI
//! requires.

#[cfg(not(test))]
mod symbols {
    use core::arch::asm;

    /// Copies `count` bytes from `source` to `destination` (no overlap).
    ///
    /// # Safety
    ///
    /// As C's `memcpy`.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn memcpy(destination: *mut u8, source: *const u8, count: usize) -> *mut u8 {
        // SAFETY: the caller passes valid, non-overlapping ranges.
        unsafe {
            asm!(
                "rep movsb",
                inout("rcx") count => _,
                inout("rdi") destination => _,
                inout("rsi") source => _,
                options(nostack, preserves_flags),
            );
        }
        destination
    }

    /// Copies `count` bytes from `source` to `destination`; the ranges may
    /// overlap.
    ///
    /// # Safety
    ///
    /// As C's `memmove`.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn memmove(destination: *mut u8, source: *const u8, count: usize) -> *mut u8 {
        let forward_is_safe = (destination as usize).wrapping_sub(source as usize) >= count;
        if forward_is_safe {
            // SAFETY: a forward copy never reads a byte it already wrote.
            unsafe { memcpy(destination, source, count) }
        } else {
            // Destination above an overlapping source: copy backwards.
            // SAFETY: the caller passes valid ranges; `count` > 0 here.
            unsafe {
                asm!(
                    "std",
                    "rep movsb",
                    "cld",
                    inout("rcx") count => _,
                    inout("rdi") destination.add(count - 1) => _,
                    inout("rsi") source.add(count - 1) => _,
                    options(nostack),
                );
            }
            destination
        }
    }

    /// Fills `count` bytes at `destination` with the low byte of `value`.
    ///
    /// # Safety
    ///
    /// As C's `memset`.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn memset(destination: *mut u8, value: i32, count: usize) -> *mut u8 {
        // SAFETY: the caller passes a valid range.
        unsafe {
            asm!(
                "rep stosb",
                inout("rcx") count => _,
                inout("rdi") destination => _,
                // C passes the byte in an int; only the low 8 bits count.
                in("al") value.to_le_bytes()[0],
                options(nostack, preserves_flags),
            );
        }
        destination
    }

    /// Compares `count` bytes: negative, zero or positive as the first
    /// differing byte of `left` is smaller, absent or larger.
    ///
    /// # Safety
    ///
    /// As C's `memcmp`.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn memcmp(left: *const u8, right: *const u8, count: usize) -> i32 {
        if count == 0 {
            return 0;
        }
        let left_end: *const u8;
        let right_end: *const u8;
        let equal: u8;
        // SAFETY: the caller passes valid ranges; `repe cmpsb` compares
        // [rsi] with [rdi] and stops after the first difference.
        unsafe {
            asm!(
                "repe cmpsb",
                "sete {equal}",
                equal = out(reg_byte) equal,
                inout("rcx") count => _,
                inout("rsi") left => left_end,
                inout("rdi") right => right_end,
                options(readonly, nostack),
            );
        }
        if equal == 1 {
            0
        } else {
            // SAFETY: both pointers advanced past the differing byte.
            unsafe { i32::from(*left_end.sub(1)) - i32::from(*right_end.sub(1)) }
        }
    }

    /// Like [`memcmp`], but only zero versus non-zero is meaningful.
    ///
    /// # Safety
    ///
    /// As C's `bcmp`.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn bcmp(left: *const u8, right: *const u8, count: usize) -> i32 {
        // SAFETY: same contract.
        unsafe { memcmp(left, right, count) }
    }

    /// The unwinding personality the prebuilt `core` references. With
    /// `panic = "abort"` nothing unwinds, so it is never called.
    #[unsafe(no_mangle)]
    extern "C" fn rust_eh_personality() {}

    /// Referenced by the prebuilt `alloc`; never called without unwinding.
    #[unsafe(no_mangle)]
    extern "C" fn _Unwind_Resume() -> ! {
        crate::cpu::halt_forever()
    }
}
