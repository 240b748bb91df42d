//! `hv-freestanding`: what every freestanding hv image needs, on stable
//! Rust for `x86_64-unknown-linux-gnu` (no `x86_64-unknown-none`, no
//! `build-std`).
//!
//! - [`runtime`]: `memcpy memmove memset memcmp bcmp` (the prebuilt `core`
//!   calls them) and the never-called `rust_eh_personality` and
//!   `_Unwind_Resume` the prebuilt `core`/`alloc` reference.
//! - [`port`]: port I/O. [`cpu`]: control registers, SSE, halting.
//! - [`gdt`], [`idt`]: a 64-bit GDT with a TSS whose IST stacks carry the
//!   exception handlers, and an IDT of interrupt gates.
//! - [`heap`]: a first-fit free-list heap for a `#[global_allocator]`.
//! - [`SingleCpuCell`]: a `static` cell for single-CPU, interrupt-free code.
//!
//! Linking: see `README.md` and `build_support.rs` (`-nostartfiles
//! -nostdlib -static -no-pie -Wl,--build-id=none -T link.ld`; code at
//! 2 MiB). The image must provide `_start` and a `#[panic_handler]`.
//!
//! Unit tests run on the host (`cargo test -p hv-freestanding`); the
//! runtime symbols are left out of test builds, where libc provides them.
#![cfg_attr(not(test), no_std)]

pub mod cpu;
pub mod gdt;
pub mod heap;
pub mod idt;
pub mod port;
pub mod runtime;

use core::cell::UnsafeCell;

/// A `static` whose contents change at run time, for code that runs on one
/// CPU with interrupts disabled (every hv image): no lock, but every access
/// is an `unsafe` promise that no other reference to the contents is live.
///
/// It also puts the value in writable memory (`.data`/`.bss`), which the
/// CPU needs for structures it writes, such as stacks and the TSS busy bit.
#[repr(transparent)]
pub struct SingleCpuCell<T>(UnsafeCell<T>);

// SAFETY: images run on one CPU without interrupt handlers that return; the
// `unsafe` accessors make the caller responsible for exclusive access.
unsafe impl<T> Sync for SingleCpuCell<T> {}

impl<T> SingleCpuCell<T> {
    /// A cell holding `value`.
    pub const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    /// A raw pointer to the contents.
    pub const fn as_ptr(&self) -> *mut T {
        self.0.get()
    }

    /// The contents, shared.
    ///
    /// # Safety
    ///
    /// No mutable reference to the contents may be live while the returned
    /// reference is.
    pub unsafe fn get(&self) -> &T {
        // SAFETY: the caller promises no mutable reference is live.
        unsafe { &*self.0.get() }
    }

    /// The contents, exclusively.
    ///
    /// # Safety
    ///
    /// No other reference to the contents may be live while the returned
    /// reference is (one CPU, and no re-entry from an exception handler).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_mut(&self) -> &mut T {
        // SAFETY: the caller promises exclusive access.
        unsafe { &mut *self.0.get() }
    }
}

impl<T> core::fmt::Debug for SingleCpuCell<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SingleCpuCell { .. }")
    }
}

/// A stack for interrupt/exception handlers (a TSS IST entry or a boot
/// stack): `SIZE` bytes, 16-byte aligned, in `.bss`.
#[repr(C, align(16))]
pub struct Stack<const SIZE: usize>(UnsafeCell<[u8; SIZE]>);

// SAFETY: the stack's bytes are only touched by the CPU while it runs on it;
// Rust code only takes its address.
unsafe impl<const SIZE: usize> Sync for Stack<SIZE> {}

impl<const SIZE: usize> Stack<SIZE> {
    const SIZE_IS_ALIGNED: () = assert!(SIZE.is_multiple_of(16) && SIZE > 0);

    /// A zeroed stack.
    pub const fn new() -> Self {
        let () = Self::SIZE_IS_ALIGNED;
        Self(UnsafeCell::new([0; SIZE]))
    }

    /// The initial stack pointer: one past the highest byte, 16-byte aligned.
    pub fn top(&self) -> u64 {
        self.0.get() as u64 + SIZE as u64
    }
}

impl<const SIZE: usize> Default for Stack<SIZE> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const SIZE: usize> core::fmt::Debug for Stack<SIZE> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Stack {{ size: {SIZE}, top: {:#x} }}", self.top())
    }
}
