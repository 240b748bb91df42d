//! The console: every byte goes to port 0xE9 (Bochs's `port_e9_hack`
//! copies it to its standard output) and to COM1 (a 16550 UART at 0x3F8,
//! which Bochs writes to a file and real machines to a serial line).
//!
//! Lines that start with `@@hv ` are for the launcher (`hv standalone`):
//! `@@hv <key> <value>`, one record per line; everything else is for
//! people.

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use hv_freestanding::port::{inb, outb};

/// Bochs's debug port: writes appear on Bochs's standard output.
const PORT_E9: u16 = 0xE9;
/// COM1's I/O base.
const COM1: u16 = 0x3F8;
/// Line status register offset and its "transmit holding register empty"
/// bit (16550: LSR bit 5).
const LSR: u16 = 5;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// Under a hypervisor (CPUID.1:ECX[31]) every port access is a VM exit:
/// the console then writes port 0xE9 only, which hv's L0 forwards.
static E9_ONLY: AtomicBool = AtomicBool::new(false);

/// Programs COM1 for 115200 baud, 8 data bits, no parity, one stop bit,
/// FIFOs on, interrupts off; or, under a hypervisor, uses port 0xE9 only.
pub(crate) fn init() {
    if core::arch::x86_64::__cpuid(1).ecx & (1 << 31) != 0 {
        E9_ONLY.store(true, Ordering::Relaxed);
        return;
    }
    // SAFETY: the standard 16550 programming sequence; COM1 belongs to us.
    unsafe {
        outb(COM1 + 1, 0x00); // IER: no interrupts
        outb(COM1 + 3, 0x80); // LCR: DLAB on
        outb(COM1, 0x01); // divisor low: 115200 baud
        outb(COM1 + 1, 0x00); // divisor high
        outb(COM1 + 3, 0x03); // LCR: 8N1, DLAB off
        outb(COM1 + 2, 0xC7); // FCR: enable and clear FIFOs
        outb(COM1 + 4, 0x03); // MCR: DTR, RTS
    }
}

/// Writes one byte to both outputs.
pub(crate) fn write_byte(byte: u8) {
    // SAFETY: port 0xE9 is a write-only debug port; COM1 is programmed by
    // `init` and only transmits.
    unsafe {
        outb(PORT_E9, byte);
        if E9_ONLY.load(Ordering::Relaxed) {
            return;
        }
        // Bounded wait: a missing UART reads 0xFF (bit set) and never hangs.
        for _ in 0..100_000 {
            if inb(COM1 + LSR) & LSR_THR_EMPTY != 0 {
                break;
            }
        }
        outb(COM1, byte);
    }
}

/// The console as a `fmt::Write` sink.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        text.bytes().for_each(write_byte);
        Ok(())
    }
}

/// Prints to the console (no newline).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        // Console::write_str never fails.
        let _ = write!($crate::console::Console, $($arg)*);
    }};
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        // Console::write_str never fails.
        let _ = writeln!($crate::console::Console, $($arg)*);
    }};
}
