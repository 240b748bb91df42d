//! `_start`: from CPL 0 to the guest's code at CPL 3.
//!
//! Why CPL 3: on a software-assisted KVM (such as `kvm_pvm`, the module on
//! hv's CI machines) guest code at CPL 0 is *emulated* instruction by
//! instruction (~0.6 µs each, and SSE instructions fail with an emulation
//! error), while code at CPL 3 runs natively. So `_start` does only what
//! needs CPL 0, in a few dozen instructions of assembly (no Rust, which may
//! use SSE): enable SSE, copy the boot information, load the GDT (with
//! user segments and a TSS), the task register and an (empty) IDT, then
//! `iretq` to CPL 3 with IOPL 3 (so `out` works) and interrupts disabled.
//! Everything else, including filling the IDT and the TSS stacks (plain
//! memory), runs natively at CPL 3. On hardware VMX nothing changes.
//!
//! The host must map guest memory from `IMAGE_BASE` up with U/S = 1 in
//! every paging level; the boot information is copied at CPL 0, so the
//! pages below 2 MiB may stay supervisor-only.

use core::arch::naked_asm;
use core::mem::{offset_of, size_of};

use hv_freestanding::SingleCpuCell;
use hv_freestanding::cpu::{CR0_EM, CR0_MP, CR0_TS, CR4_OSFXSR, CR4_OSXMMEXCPT};
use hv_freestanding::gdt::{
    CODE64_DESCRIPTOR, DATA_DESCRIPTOR, TaskStateSegment, USER_CODE64_DESCRIPTOR,
    USER_DATA_DESCRIPTOR,
};
use hv_freestanding::idt::Idt;
use hv_guest_abi::{ABI_VERSION, BOOT_INFO_MAGIC, BootInfo, PORT_EXCEPTION};

/// Kernel code selector (CPL 0: `_start` and the exception stubs).
pub(crate) const KERNEL_CODE_SELECTOR: u16 = 0x08;
/// Kernel data selector (SS at CPL 0).
const KERNEL_DATA_SELECTOR: u16 = 0x10;
/// User data selector with RPL 3 (SS at CPL 3).
pub(crate) const USER_DATA_SELECTOR: u16 = 0x18 | 3;
/// User code selector with RPL 3.
pub(crate) const USER_CODE_SELECTOR: u16 = 0x20 | 3;
/// TSS selector.
const TSS_SELECTOR: u16 = 0x28;
/// RFLAGS at CPL 3: IOPL 3 (bits 12-13: `out` allowed), bit 1 (always
/// set), IF clear.
pub(crate) const USER_RFLAGS: u64 = 0x3002;

/// The GDT: null, kernel code, kernel data, user data, user code, TSS (two
/// entries, filled by `_start`: the TSS address is not a constant).
#[repr(C, align(16))]
pub(crate) struct GuestGdt([u64; 7]);

static GDT: SingleCpuCell<GuestGdt> = SingleCpuCell::new(GuestGdt([
    0,
    CODE64_DESCRIPTOR,
    DATA_DESCRIPTOR,
    USER_DATA_DESCRIPTOR,
    USER_CODE64_DESCRIPTOR,
    0,
    0,
]));

/// Highest port the guest uses, plus the rest of its 8-port bitmap byte.
const LAST_PORT: usize = PORT_EXCEPTION as usize | 7;
/// I/O permission bitmap size: one bit per port up to [`LAST_PORT`], plus
/// the all-ones byte the CPU requires after it (SDM Vol. 1 19.5.2).
const IO_BITMAP_BYTES: usize = LAST_PORT / 8 + 2;

/// The TSS followed by its I/O permission bitmap. The bitmap allows every
/// port up to [`LAST_PORT`] at CPL 3: software-assisted KVM ignores IOPL
/// for CPL-3 guests and checks the bitmap (measured: without it `out` to
/// 0x6000 raises #GP while `out` to 0x80, inside the bare TSS, works).
#[repr(C)]
pub(crate) struct GuestTss {
    /// IST stacks for the exception stubs (filled at CPL 3).
    pub(crate) tss: TaskStateSegment,
    io_bitmap: [u8; IO_BITMAP_BYTES],
}

pub(crate) static TSS: SingleCpuCell<GuestTss> = SingleCpuCell::new(GuestTss {
    tss: TaskStateSegment::new(),
    io_bitmap: {
        let mut bitmap = [0; IO_BITMAP_BYTES];
        bitmap[IO_BITMAP_BYTES - 1] = 0xff;
        bitmap
    },
});

const _: () = assert!(offset_of!(GuestTss, io_bitmap) == size_of::<TaskStateSegment>());
const _: () = assert!(size_of::<GuestTss>() <= 0xffff);

/// The IDT: loaded empty by `_start`, filled at CPL 3.
pub(crate) static IDT: SingleCpuCell<Idt> = SingleCpuCell::new(Idt::new());

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

/// The ELF entry point. The host enters it in 64-bit mode at CPL 0 with
/// RDI = `&BootInfo` and RSP = the stack top (16-byte aligned). A boot
/// information without the magic number stops here (`hlt`).
#[unsafe(naked)]
#[unsafe(no_mangle)]
unsafe extern "sysv64" fn _start() -> ! {
    naked_asm!(
        // SSE on (SDM Vol. 3A 13.1.3); the host normally did it already.
        "mov rax, cr0",
        "and rax, {cr0_clear}",
        "or rax, {cr0_set}",
        "mov cr0, rax",
        "mov rax, cr4",
        "or rax, {cr4_set}",
        "mov cr4, rax",
        "cld",
        "mov rax, {magic}",
        "cmp [rdi], rax",
        "jne 3f",
        // BOOT_INFO = *rdi
        "mov rsi, rdi",
        "lea rdi, [rip + {boot_info}]",
        "mov ecx, {boot_info_qwords}",
        "rep movsq",
        // GDT[5..7] = 64-bit TSS descriptor (SDM Vol. 3A 8.2.3): limit
        // (< 64 KiB) at 0, base 23:0 at 16, type 9 + present at 40, base
        // 31:24 at 56, base 63:32 in the second entry.
        "lea rax, [rip + {tss}]",
        "mov rdx, rax",
        "shl rdx, 16",
        "mov rcx, 0xffffff0000",
        "and rdx, rcx",
        "mov rcx, rax",
        "shr rcx, 24",
        "movzx ecx, cl",
        "shl rcx, 56",
        "or rdx, rcx",
        "mov rcx, {tss_type_and_limit}",
        "or rdx, rcx",
        "lea rsi, [rip + {gdt}]",
        "mov [rsi + 0x28], rdx",
        "shr rax, 32",
        "mov [rsi + 0x30], rax",
        // lgdt, lidt through a 10-byte pointer at [rsp + 6].
        "sub rsp, 16",
        "mov word ptr [rsp + 6], {gdt_limit}",
        "mov [rsp + 8], rsi",
        "lgdt [rsp + 6]",
        "lea rax, [rip + {idt}]",
        "mov word ptr [rsp + 6], {idt_limit}",
        "mov [rsp + 8], rax",
        "lidt [rsp + 6]",
        "add rsp, 16",
        // Reload CS with a far return, then the data segments and TR.
        "push {kernel_code}",
        "lea rax, [rip + 2f]",
        "push rax",
        "retfq",
        "2:",
        "mov ax, {kernel_data}",
        "mov ss, ax",
        "xor eax, eax",
        "mov ds, ax",
        "mov es, ax",
        "mov fs, ax",
        "mov gs, ax",
        "mov ax, {tss_selector}",
        "ltr ax",
        // iretq to `start` at CPL 3, on the host's stack (RSP = top - 8, as
        // after a call).
        "mov rax, [rip + {boot_info} + {stack_top_offset}]",
        "sub rax, 8",
        "push {user_data}",
        "push rax",
        "push {user_rflags}",
        "push {user_code}",
        "lea rax, [rip + {start}]",
        "push rax",
        "xor ebp, ebp",
        "iretq",
        "3:",
        "hlt",
        "jmp 3b",
        cr0_clear = const (!(CR0_EM | CR0_TS)).cast_signed(),
        cr0_set = const CR0_MP,
        cr4_set = const CR4_OSFXSR | CR4_OSXMMEXCPT,
        magic = const BOOT_INFO_MAGIC,
        boot_info = sym BOOT_INFO,
        boot_info_qwords = const size_of::<BootInfo>() / 8,
        stack_top_offset = const offset_of!(BootInfo, stack_top),
        tss = sym TSS,
        tss_type_and_limit = const (0x89u64 << 40) | (size_of::<GuestTss>() as u64 - 1),
        gdt = sym GDT,
        gdt_limit = const size_of::<GuestGdt>() - 1,
        idt = sym IDT,
        idt_limit = const size_of::<Idt>() - 1,
        kernel_code = const KERNEL_CODE_SELECTOR,
        kernel_data = const KERNEL_DATA_SELECTOR,
        tss_selector = const TSS_SELECTOR,
        user_data = const USER_DATA_SELECTOR,
        user_code = const USER_CODE_SELECTOR,
        user_rflags = const USER_RFLAGS,
        start = sym start,
    );
}

/// The Rust side of `_start`, at CPL 3.
extern "sysv64" fn start() -> ! {
    // SAFETY: first and only call, before anything can fault usefully.
    unsafe { crate::exceptions::install() };
    let info = boot_info();
    assert!(
        info.abi_version == ABI_VERSION,
        "hv-guest speaks ABI version {ABI_VERSION}, the host version {}",
        info.abi_version
    );
    // SAFETY: the host reserved this region for the guest's heap.
    unsafe { crate::allocator::init(info.heap_address, info.heap_size) };
    // SAFETY: defined by `main!` in the guest binary (a link error otherwise).
    unsafe { __hv_guest_init() };
    crate::registry::serve()
}
