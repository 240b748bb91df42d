//! `_start`: the guest's first instructions, already at CPL 3.
//!
//! Why CPL 3: on a software-assisted KVM (such as `kvm_pvm`, the module on
//! hv's CI machines) guest code at CPL 0 is *emulated* instruction by
//! instruction (about 1 µs each, and SSE instructions fail with an
//! emulation error), while code at CPL 3 runs natively. So the host enters
//! the guest at CPL 3 with everything privileged already done through the
//! vCPU's special registers (`hv_guest_abi`'s machine description, ABI
//! version 2): 64-bit mode, SSE enabled, the host's GDT, TSS (with an I/O
//! bitmap for the protocol ports) and an empty IDT loaded, RFLAGS with IOPL
//! 3 and interrupts disabled. `_start` copies the boot information and
//! calls the Rust side, which fills the IDT gates and the TSS stacks (plain
//! memory in user-writable pages). Only exception stubs run at CPL 0. On
//! hardware VMX nothing changes.

use core::arch::naked_asm;
use core::mem::size_of;

use hv_freestanding::SingleCpuCell;
use hv_freestanding::gdt::TaskStateSegment;
use hv_freestanding::idt::Idt;
use hv_guest_abi::{ABI_VERSION, BOOT_INFO_MAGIC, BootInfo, IDT_ADDRESS, TSS_ADDRESS};

pub(crate) use hv_guest_abi::{
    GUEST_RFLAGS as USER_RFLAGS, KERNEL_CODE_SELECTOR, USER_CODE_SELECTOR, USER_DATA_SELECTOR,
};

/// The host's TSS (`hv_guest_abi::TSS_ADDRESS`, user-writable).
///
/// # Safety
///
/// Single vCPU; the caller holds no other reference to it.
pub(crate) unsafe fn tss() -> &'static mut TaskStateSegment {
    // SAFETY: the host maps and loads a TSS there (ABI version 2, checked
    // by `start` before anything else runs); its alignment (a page) suits
    // the packed(4) struct.
    unsafe { &mut *(TSS_ADDRESS as *mut TaskStateSegment) }
}

/// The host's IDT (`hv_guest_abi::IDT_ADDRESS`, user-writable, empty).
///
/// # Safety
///
/// As [`tss`].
pub(crate) unsafe fn idt() -> &'static mut Idt {
    // SAFETY: as in `tss`; 256 gates fill the page at IDT_ADDRESS.
    unsafe { &mut *(IDT_ADDRESS as *mut Idt) }
}

/// The host's boot information, copied by `_start`.
static BOOT_INFO: SingleCpuCell<BootInfo> = SingleCpuCell::new(BootInfo {
    magic: 0,
    abi_version: 0,
    reserved: 0,
    memory_size: 0,
    input_address: 0,
    input_size: 0,
    output_address: 0,
    output_size: 0,
    heap_address: 0,
    heap_size: 0,
    stack_top: 0,
    stack_size: 0,
});

const _: () = assert!(size_of::<BootInfo>().is_multiple_of(8));

unsafe extern "Rust" {
    /// The guest's init function, defined by `hv_guest::main!`.
    fn __hv_guest_init();
}

/// The copy of the boot information.
pub(crate) fn boot_info() -> BootInfo {
    // SAFETY: written once by `_start` before any Rust code runs.
    unsafe { *BOOT_INFO.get() }
}

/// The ELF entry point. The host enters it in 64-bit mode at CPL 3 with
/// RDI = `&BootInfo` and RSP = the stack top (16-byte aligned). A boot
/// information without the magic number stops here (`ud2`: the host sees
/// a triple fault, as no exception gate is installed yet).
#[unsafe(naked)]
#[unsafe(no_mangle)]
unsafe extern "sysv64" fn _start() -> ! {
    naked_asm!(
        "cld",
        "mov rax, {magic}",
        "cmp [rdi], rax",
        "jne 3f",
        // BOOT_INFO = *rdi
        "mov rsi, rdi",
        "lea rdi, [rip + {boot_info}]",
        "mov ecx, {boot_info_qwords}",
        "rep movsq",
        // `start` with RSP = top - 8, as after a call.
        "xor ebp, ebp",
        "push rbp",
        "jmp {start}",
        "3:",
        "ud2",
        magic = const BOOT_INFO_MAGIC,
        boot_info = sym BOOT_INFO,
        boot_info_qwords = const size_of::<BootInfo>() / 8,
        start = sym start,
    );
}

/// The Rust side of `_start`.
extern "sysv64" fn start() -> ! {
    let info = boot_info();
    assert!(
        info.abi_version == ABI_VERSION,
        "hv-guest speaks ABI version {ABI_VERSION}, the host version {}",
        info.abi_version
    );
    // SAFETY: first and only call, before anything can fault usefully (the
    // host's tables are there: the ABI version matches).
    unsafe { crate::exceptions::install() };
    // SAFETY: the host reserved this region for the guest's heap.
    unsafe { crate::allocator::init(info.heap_address, info.heap_size) };
    // SAFETY: defined by `main!` in the guest binary (a link error otherwise).
    unsafe { __hv_guest_init() };
    crate::registry::serve()
}
