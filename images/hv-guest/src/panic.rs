//! The panic handler: reports `Panic` (message, file, line) to the host and
//! stops. It does not allocate (the panic may be an allocation failure).

use core::fmt::{self, Write};
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use hv_guest_abi::{PORT_PANIC, Panic};

/// Longest message reported, in bytes.
const MESSAGE_CAPACITY: usize = 1024;

static PANICKING: AtomicBool = AtomicBool::new(false);

/// A `fmt::Write` into a fixed buffer that drops what does not fit (at a
/// character boundary).
struct TruncatingBuffer {
    bytes: [u8; MESSAGE_CAPACITY],
    length: usize,
}

impl TruncatingBuffer {
    fn as_str(&self) -> &str {
        // Only whole UTF-8 strings are ever appended.
        core::str::from_utf8(&self.bytes[..self.length]).unwrap_or("")
    }
}

impl Write for TruncatingBuffer {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = MESSAGE_CAPACITY - self.length;
        let mut end = text.len().min(room);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.bytes[self.length..self.length + end].copy_from_slice(&text.as_bytes()[..end]);
        self.length += end;
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    if PANICKING.swap(true, Ordering::Relaxed) {
        // Panicked while reporting a panic: nothing more can be said.
        crate::host::stop(PORT_PANIC);
    }
    let mut message = TruncatingBuffer {
        bytes: [0; MESSAGE_CAPACITY],
        length: 0,
    };
    let _ = write!(message, "{}", info.message());
    let (file, line) = info
        .location()
        .map_or(("", 0), |location| (location.file(), location.line()));
    let mut report = Panic {
        message: message.as_str(),
        file,
        line,
    };
    // Shorten the message until the report fits the output buffer.
    loop {
        if crate::host::try_send(PORT_PANIC, &report).is_ok() {
            break;
        }
        if report.message.is_empty() {
            // Not even an empty report fits: exit anyway, the host knows.
            crate::host::exit_to_host(PORT_PANIC);
            break;
        }
        let mut end = report.message.len() / 2;
        while !report.message.is_char_boundary(end) {
            end -= 1;
        }
        report.message = &report.message[..end];
        report.file = "";
    }
    crate::host::stop(PORT_PANIC)
}
