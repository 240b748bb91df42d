//! Log records forwarded to the host (`LogRecord` at `PORT_LOG`).

use alloc::string::String;
use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

use hv_guest_abi::{LogLevel, LogRecord, PORT_LOG};

/// Least severe level forwarded, as its `LogLevel` discriminant.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Trace as u8);

/// Forwards only records at `level` or more severe (default: all). Each
/// record costs one exit, so a chatty guest may raise this.
pub fn set_max_log_level(level: LogLevel) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// The least severe level forwarded.
pub fn max_log_level() -> LogLevel {
    match MAX_LEVEL.load(Ordering::Relaxed) {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        2 => LogLevel::Info,
        3 => LogLevel::Warn,
        _ => LogLevel::Error,
    }
}

/// Sends one record (what [`log!`](crate::log) expands to). A message
/// longer than the output buffer allows is truncated at a character
/// boundary.
pub fn log_record(level: LogLevel, target: &str, message: fmt::Arguments<'_>) {
    if level < max_log_level() {
        return;
    }
    let formatted: String;
    let mut message = if let Some(text) = message.as_str() {
        text
    } else {
        formatted = alloc::fmt::format(message);
        &formatted
    };
    // Framing overhead: 4-byte prefix, level, two varint lengths (<= 5
    // bytes each), the target.
    let overhead = 4 + 1 + 5 + 5 + target.len();
    let room = (crate::entry::boot_info().output_size as usize).saturating_sub(overhead);
    if message.len() > room {
        let mut end = room;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message = &message[..end];
    }
    crate::host::send(
        PORT_LOG,
        &LogRecord {
            level,
            target,
            message,
        },
    );
}
