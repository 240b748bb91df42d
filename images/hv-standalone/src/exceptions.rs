//! GDT, TSS and IDT: every exception vector (0-31) has a handler on an IST
//! stack, so a fault is reported even when the faulting code's stack is
//! gone. hv-standalone expects no exception at all: the handler prints the
//! vector, RIP, error code and registers, emits `@@hv status exception ...`
//! and ends the run.

use core::arch::{asm, global_asm};

use hv_arch_vmx::controls::ExceptionVector;
use hv_freestanding::gdt::{CODE_SELECTOR, Gdt, TaskStateSegment};
use hv_freestanding::idt::{Idt, IdtEntry};
use hv_freestanding::{SingleCpuCell, Stack};

/// IST slot of ordinary exceptions.
const IST_EXCEPTIONS: u8 = 1;
/// IST slot of NMI (may arrive at any instruction, even in a handler).
const IST_NMI: u8 = 2;
/// IST slot of #DF (the stack may be what failed).
const IST_DOUBLE_FAULT: u8 = 3;
/// IST slot of #MC.
const IST_MACHINE_CHECK: u8 = 4;

const IST_STACK_SIZE: usize = 16 * 1024;

static EXCEPTION_STACK: Stack<IST_STACK_SIZE> = Stack::new();
static NMI_STACK: Stack<IST_STACK_SIZE> = Stack::new();
static DOUBLE_FAULT_STACK: Stack<IST_STACK_SIZE> = Stack::new();
static MACHINE_CHECK_STACK: Stack<IST_STACK_SIZE> = Stack::new();

static TSS: SingleCpuCell<TaskStateSegment> = SingleCpuCell::new(TaskStateSegment::new());
static GDT: SingleCpuCell<Option<Gdt>> = SingleCpuCell::new(None);
static IDT: SingleCpuCell<Idt> = SingleCpuCell::new(Idt::new());
/// Set while an exception is being reported: a second one ends the run
/// without trying to print again.
static IN_HANDLER: SingleCpuCell<bool> = SingleCpuCell::new(false);

/// The registers as the stubs below leave them on the IST stack.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct ExceptionFrame {
    /// General-purpose registers, pushed by `exception_common`.
    pub(crate) r15: u64,
    pub(crate) r14: u64,
    pub(crate) r13: u64,
    pub(crate) r12: u64,
    pub(crate) r11: u64,
    pub(crate) r10: u64,
    pub(crate) r9: u64,
    pub(crate) r8: u64,
    pub(crate) rbp: u64,
    pub(crate) rdi: u64,
    pub(crate) rsi: u64,
    pub(crate) rdx: u64,
    pub(crate) rcx: u64,
    pub(crate) rbx: u64,
    pub(crate) rax: u64,
    /// Vector number, pushed by the per-vector stub.
    pub(crate) vector: u64,
    /// Error code (0 for vectors without one; SDM Vol. 3A Table 7-1).
    pub(crate) error_code: u64,
    /// Interrupted RIP, CS, RFLAGS, RSP, SS, pushed by the CPU.
    pub(crate) rip: u64,
    pub(crate) cs: u64,
    pub(crate) rflags: u64,
    pub(crate) rsp: u64,
    pub(crate) ss: u64,
}

// One stub per vector: push a zero error code where the CPU pushes none
// (SDM Vol. 3A Table 7-1), push the vector, join the common path. The
// common path saves the registers and calls Rust with RSP 16-byte aligned
// (5 CPU words + 2 + 15 = 22 words = 176 bytes from the aligned IST top).
global_asm!(
    r#"
    .section .text.exceptions, "ax"
    .code64
    .irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
exception_stub_\vector:
    .if (\vector == 8) || (\vector >= 10 && \vector <= 14) || (\vector == 17) || (\vector == 21) || (\vector == 29) || (\vector == 30)
    .else
    pushq $0
    .endif
    pushq $\vector
    jmp exception_common
    .endr

exception_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    cld
    call hv_standalone_exception
exception_halt:
    cli
    hlt
    jmp exception_halt

    .section .rodata.exceptions, "a"
    .balign 8
    .global exception_stub_table
exception_stub_table:
    .irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exception_stub_\vector
    .endr
"#,
    options(att_syntax)
);

unsafe extern "C" {
    /// The 32 stub addresses, by vector.
    static exception_stub_table: [u64; 32];
}

/// Installs the GDT (with the TSS and its IST stacks) and the IDT.
///
/// # Safety
///
/// Call once, early, with interrupts disabled, before anything else uses
/// the GDT, TSS or IDT.
pub(crate) unsafe fn init() {
    // SAFETY: single CPU, called once before any other access.
    let tss = unsafe { TSS.get_mut() };
    tss.set_interrupt_stack(IST_EXCEPTIONS, EXCEPTION_STACK.top());
    tss.set_interrupt_stack(IST_NMI, NMI_STACK.top());
    tss.set_interrupt_stack(IST_DOUBLE_FAULT, DOUBLE_FAULT_STACK.top());
    tss.set_interrupt_stack(IST_MACHINE_CHECK, MACHINE_CHECK_STACK.top());

    // SAFETY: as above; the GDT lives in a static and is loaded once.
    unsafe {
        let gdt = GDT.get_mut().insert(Gdt::new(TSS.as_ptr()));
        gdt.load();
    }

    // SAFETY: as above.
    let idt = unsafe { IDT.get_mut() };
    for (vector, entry) in idt.entries.iter_mut().take(32).enumerate() {
        let ist = match vector {
            2 => IST_NMI,
            8 => IST_DOUBLE_FAULT,
            18 => IST_MACHINE_CHECK,
            _ => IST_EXCEPTIONS,
        };
        // SAFETY: the table is written once by the linker and never changes.
        let handler = unsafe { exception_stub_table[vector] };
        *entry = IdtEntry::interrupt_gate(handler, CODE_SELECTOR, ist);
    }
    // SAFETY: the IDT is a static whose gates point at the stubs above.
    unsafe { idt.load() };
}

/// The mnemonic of an exception vector (SDM Vol. 3A Table 7-1), or
/// "reserved".
fn mnemonic(vector: u64) -> &'static str {
    u8::try_from(vector)
        .ok()
        .and_then(|vector| ExceptionVector::from_vector(vector).mnemonic())
        .unwrap_or("reserved")
}

/// Reports an unexpected exception and ends the run. Called by
/// `exception_common` on an IST stack with interrupts disabled.
#[unsafe(no_mangle)]
extern "sysv64" fn hv_standalone_exception(frame: &ExceptionFrame) -> ! {
    // SAFETY: single CPU, interrupts are off in a handler.
    let in_handler = unsafe { IN_HANDLER.get_mut() };
    if *in_handler {
        crate::shutdown();
    }
    *in_handler = true;
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    let f = frame;
    crate::println!(
        "\nhv-standalone: EXCEPTION {} (vector {}) at rip {:#x}, error code {:#x}, cr2 {:#x}",
        mnemonic(f.vector),
        f.vector,
        f.rip,
        f.error_code,
        cr2
    );
    crate::println!(
        "  cs {:#x} rflags {:#x} rsp {:#x} ss {:#x}",
        f.cs,
        f.rflags,
        f.rsp,
        f.ss
    );
    crate::println!(
        "  rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x} rsi {:#x} rdi {:#x} rbp {:#x}",
        f.rax,
        f.rbx,
        f.rcx,
        f.rdx,
        f.rsi,
        f.rdi,
        f.rbp
    );
    crate::println!(
        "  r8 {:#x} r9 {:#x} r10 {:#x} r11 {:#x} r12 {:#x} r13 {:#x} r14 {:#x} r15 {:#x}",
        f.r8,
        f.r9,
        f.r10,
        f.r11,
        f.r12,
        f.r13,
        f.r14,
        f.r15
    );
    crate::println!(
        "@@hv status exception vector={} name={} rip={:#x} error_code={:#x} cr2={:#x}",
        f.vector,
        mnemonic(f.vector),
        f.rip,
        f.error_code,
        cr2
    );
    crate::shutdown()
}
