//! `hv-guest`: the runtime of an hv-host sandbox guest (`no_std` + `alloc`).
//!
//! A guest is a binary crate that depends on this one, names an init
//! function with [`main!`], registers its functions there, and links with
//! the freestanding recipe (a three-line `build.rs`, see
//! `images/guests/demo`):
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! extern crate alloc;
//! use alloc::string::String;
//!
//! hv_guest::main!(init);
//!
//! fn init() {
//!     hv_guest::register("echo", |text: String| text);
//!     hv_guest::register("add", |a: i64, b: i64| a.wrapping_add(b));
//! }
//! ```
//!
//! What the runtime does (the contract is `hv-guest-abi`):
//!
//! 1. `_start` (entered at CPL 3 with RDI = `BootInfo`, RSP = its stack
//!    top, the host's GDT, TSS and empty IDT loaded) checks the boot
//!    information, gives the host's TSS three IST stacks, fills the IDT so
//!    every exception vector 0-31 reaches a handler that reports an
//!    `Exception` to the host, and puts the global allocator on the heap
//!    the host reserved.
//! 2. It runs the [`main!`] init function, which calls [`register`].
//! 3. It sends `Response::Ready` with every function's signature and
//!    serves calls forever: each call is one `out` to the host.
//!
//! During a call a function can call the host with [`call_host`] and log
//! with [`info!`] & co. (forwarded as `LogRecord`s). A panic reports
//! `Panic` (message, file, line) and stops the guest; so does a CPU
//! exception.
#![no_std]

extern crate alloc;

mod allocator;
mod entry;
mod exceptions;
mod host;
mod logging;
mod panic;
mod registry;

pub use host::{HostCallError, call_host};
pub use hv_guest_abi::{BootInfo, LogLevel, ParamType};
pub use logging::{log_record, max_log_level, set_max_log_level};
pub use registry::{GuestFunction, param_type_of, register};

/// The boot information the host passed (valid once the init function
/// runs).
pub fn boot_info() -> BootInfo {
    entry::boot_info()
}

/// Names the guest's init function: it runs once, after the runtime is set
/// up and before the guest reports ready, and registers the guest's
/// functions with [`register`]. Use it exactly once, in the binary crate.
///
/// ```ignore
/// hv_guest::main!(init);
/// fn init() {
///     hv_guest::register("nop", || ());
/// }
/// ```
#[macro_export]
macro_rules! main {
    ($init:path) => {
        /// The guest's init function, called by the hv-guest runtime.
        #[unsafe(no_mangle)]
        extern "Rust" fn __hv_guest_init() {
            $init()
        }
    };
}

/// Logs a formatted message at `level` ([`LogLevel`]) to the host, which
/// forwards it to `tracing` (target `hv_guest`). Each record is one exit.
///
/// ```ignore
/// hv_guest::log!(hv_guest::LogLevel::Info, "started with {} pages", pages);
/// ```
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        $crate::log_record($level, ::core::module_path!(), ::core::format_args!($($arg)+))
    };
}

/// [`log!`] at [`LogLevel::Trace`].
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log!($crate::LogLevel::Trace, $($arg)+) };
}

/// [`log!`] at [`LogLevel::Debug`].
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log!($crate::LogLevel::Debug, $($arg)+) };
}

/// [`log!`] at [`LogLevel::Info`].
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log!($crate::LogLevel::Info, $($arg)+) };
}

/// [`log!`] at [`LogLevel::Warn`].
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log!($crate::LogLevel::Warn, $($arg)+) };
}

/// [`log!`] at [`LogLevel::Error`].
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log!($crate::LogLevel::Error, $($arg)+) };
}
