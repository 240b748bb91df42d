//! Exceptions: every vector 0-31 reports an `Exception` to the host, which
//! poisons the sandbox.
//!
//! Each vector has an interrupt gate to a CPL-0 stub on an IST stack (IST1
//! for most vectors, IST2 for #DF and #MC, IST3 for NMI), so even a fault
//! on a broken stack (the guard page below the main stack) is reported.
//! The stubs stay tiny (CPL-0 code may be emulated, see `entry`): they
//! push the vector, read CR2 and `iretq` to [`report`] at CPL 3 on a stack
//! of its own, which sends the report. A fault while reporting
//! triple-faults on purpose: the host sees a shutdown instead of a loop.

use core::arch::naked_asm;
use core::sync::atomic::AtomicU8;

use hv_freestanding::Stack;
use hv_guest_abi::{Exception, PORT_EXCEPTION};

use crate::entry::{KERNEL_CODE_SELECTOR, USER_CODE_SELECTOR, USER_DATA_SELECTOR, USER_RFLAGS};

const STACK_SIZE: usize = 16 * 1024;

static GENERAL_STACK: Stack<STACK_SIZE> = Stack::new();
static DOUBLE_FAULT_STACK: Stack<STACK_SIZE> = Stack::new();
static NMI_STACK: Stack<STACK_SIZE> = Stack::new();
/// The CPL-3 stack [`report`] runs on.
static REPORT_STACK: Stack<STACK_SIZE> = Stack::new();
/// Set by the first exception; a second one triple-faults.
static HANDLING: AtomicU8 = AtomicU8::new(0);

const IST_GENERAL: u8 = 1;
const IST_DOUBLE_FAULT: u8 = 2;
const IST_NMI: u8 = 3;

/// The stack the stubs build: vector, error code (0 when the CPU pushes
/// none), then the CPU's interrupt frame. (SDM Vol. 3A 7.14.2)
#[repr(C)]
struct ExceptionFrame {
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

/// Fills the TSS stacks and the IDT gates (the host's, already loaded;
/// plain memory in user-writable pages).
///
/// # Safety
///
/// Once, at start.
pub(crate) unsafe fn install() {
    // SAFETY: nothing else references the TSS or the IDT yet.
    unsafe {
        let tss = crate::entry::tss();
        tss.set_interrupt_stack(IST_GENERAL, GENERAL_STACK.top());
        tss.set_interrupt_stack(IST_DOUBLE_FAULT, DOUBLE_FAULT_STACK.top());
        tss.set_interrupt_stack(IST_NMI, NMI_STACK.top());
        let idt = crate::entry::idt();
        for (vector, stub) in STUBS.iter().enumerate() {
            let ist = match vector {
                2 => IST_NMI,
                8 | 18 => IST_DOUBLE_FAULT,
                _ => IST_GENERAL,
            };
            idt.entries[vector] = hv_freestanding::idt::IdtEntry::interrupt_gate(
                *stub as usize as u64,
                KERNEL_CODE_SELECTOR,
                ist,
            );
        }
    }
}

/// Common CPL-0 tail of the stubs: RSP points at an [`ExceptionFrame`].
#[unsafe(naked)]
unsafe extern "sysv64" fn exception_entry() -> ! {
    naked_asm!(
        "cld",
        "mov al, 1",
        "xchg al, byte ptr [rip + {handling}]",
        "test al, al",
        "jnz 2f",
        "mov rdi, rsp",
        "mov rsi, cr2",
        "lea rax, [rip + {report_stack} + {report_stack_size} - 8]",
        "push {user_data}",
        "push rax",
        "push {user_rflags}",
        "push {user_code}",
        "lea rax, [rip + {report}]",
        "push rax",
        "iretq",
        // Second exception: load an empty IDT and fault (triple fault).
        "2:",
        "xor eax, eax",
        "push rax",
        "push rax",
        "lidt [rsp + 6]",
        "ud2",
        handling = sym HANDLING,
        report_stack = sym REPORT_STACK,
        report_stack_size = const STACK_SIZE,
        user_data = const USER_DATA_SELECTOR,
        user_rflags = const USER_RFLAGS,
        user_code = const USER_CODE_SELECTOR,
        report = sym report,
    );
}

/// Sends the report (CPL 3). Never returns: the host poisons the sandbox
/// and restores it from a snapshot.
extern "sysv64" fn report(frame: *const ExceptionFrame, cr2: u64) -> ! {
    // SAFETY: the stub passes the frame it built on the IST stack, which
    // nothing else uses until the next exception (which triple-faults).
    let frame = unsafe { &*frame };
    let exception = Exception {
        vector: frame.vector as u8,
        error_code: frame.error_code,
        rip: frame.rip,
        rsp: frame.rsp,
        rflags: frame.rflags,
        cr2,
    };
    let _ = (frame.cs, frame.ss);
    crate::host::send(PORT_EXCEPTION, &exception);
    crate::host::stop(PORT_EXCEPTION)
}

/// Defines one stub per vector: push a zero error code when the CPU does
/// not push one, push the vector, jump to [`exception_entry`].
macro_rules! stubs {
    ($($vector:literal => $name:ident,)*) => {
        $(
            #[unsafe(naked)]
            unsafe extern "sysv64" fn $name() -> ! {
                naked_asm!(
                    ".if {has_error_code} == 0",
                    "push 0",
                    ".endif",
                    "push {vector}",
                    "jmp {entry}",
                    has_error_code = const hv_freestanding::idt::exception_has_error_code($vector) as u8,
                    vector = const $vector,
                    entry = sym exception_entry,
                );
            }
        )*
        const STUBS: [unsafe extern "sysv64" fn() -> !; 32] = [$($name,)*];
    };
}

stubs! {
    0 => vector_0, 1 => vector_1, 2 => vector_2, 3 => vector_3,
    4 => vector_4, 5 => vector_5, 6 => vector_6, 7 => vector_7,
    8 => vector_8, 9 => vector_9, 10 => vector_10, 11 => vector_11,
    12 => vector_12, 13 => vector_13, 14 => vector_14, 15 => vector_15,
    16 => vector_16, 17 => vector_17, 18 => vector_18, 19 => vector_19,
    20 => vector_20, 21 => vector_21, 22 => vector_22, 23 => vector_23,
    24 => vector_24, 25 => vector_25, 26 => vector_26, 27 => vector_27,
    28 => vector_28, 29 => vector_29, 30 => vector_30, 31 => vector_31,
}
