//! From power-on to Rust: the BIOS boot sector, the real-mode loader, the
//! multiboot2 header and the 32-bit to 64-bit switch.
//!
//! Two ways in, one way out:
//!
//! - **BIOS** (what `hv standalone` uses on Bochs): the BIOS loads disk
//!   sector 0 (`.boot`) at 0x7C00. It reads the loader (`.stage2`, disk
//!   sectors 1..) to 0x7E00 with `int 13h` LBA extensions. The loader
//!   collects the E820 memory map at 0x5000, opens the A20 gate, reads the
//!   kernel in 32 KiB chunks to a bounce buffer at 0x10000 and copies each
//!   chunk to 1 MiB and up in unreal mode, then enters 32-bit protected mode
//!   and jumps to [`entry32`](self) with `EAX = BIOS_BOOT_MAGIC`,
//!   `EBX = 0x5000`.
//! - **Multiboot2** (GRUB on real hardware): GRUB loads the ELF segments and
//!   enters `entry32` in 32-bit protected mode with `EAX = 0x36D76289` and
//!   `EBX` = the multiboot2 information structure.
//!
//! `entry32` zeroes `.bss`, builds identity page tables for the low 4 GiB
//! (2 MiB pages, except 4 KiB pages in the first 2 MiB with page 0 absent),
//! enables PAE, SSE (CR4.OSFXSR | OSXMMEXCPT, CR0.MP, !CR0.EM), CR0.NE and
//! long mode, and calls `hv_standalone_main(magic, info)` on a boot stack.
//!
//! Pitfalls handled (FACTS.md): `int 13h` re-enables interrupts, so every
//! mode switch starts with `cli`; nothing is copied over running code.

use core::arch::global_asm;

/// `EAX` at `entry32` when the BIOS loader booted us ("HVBS").
pub(crate) const BIOS_BOOT_MAGIC: u32 = 0x5342_5648;
/// `EAX` at `entry32` when a multiboot2 loader booted us (multiboot2 spec 3.3).
pub(crate) const MULTIBOOT2_BOOT_MAGIC: u32 = 0x36D7_6289;
/// Where the real-mode loader leaves [`BiosBootInfo`].
pub(crate) const BIOS_BOOT_INFO_ADDRESS: u64 = 0x5000;
/// Boot flag (launcher-set, in the boot sector's layout record): raise #UD
/// once the IDT is installed, to exercise the exception path.
pub(crate) const BOOT_FLAG_SELF_TEST_EXCEPTION: u16 = 1 << 0;

unsafe extern "C" {
    /// The layout record's flags word, in the boot sector at 0x7C00.
    static boot_layout_flags: u16;
}

/// The flags the launcher wrote into the boot sector's layout record.
pub(crate) fn boot_flags() -> u16 {
    // SAFETY: the boot sector stays in memory (nothing reuses 0x7C00) and
    // the word is plain data; read it volatile as the disk, not the
    // compiler, decided its value.
    unsafe { (&raw const boot_layout_flags).read_volatile() }
}

/// The most E820 entries the loader collects.
pub(crate) const E820_MAX_ENTRIES: usize = 64;

/// One entry of the BIOS E820 memory map (ACPI address range descriptor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, packed)]
pub(crate) struct E820Entry {
    /// First byte of the range.
    pub(crate) base: u64,
    /// Length in bytes.
    pub(crate) length: u64,
    /// 1 usable RAM, 2 reserved, 3 ACPI reclaimable, 4 ACPI NVS, 5 bad.
    pub(crate) kind: u32,
    /// ACPI 3.0 extended attributes (bit 0: entry valid).
    pub(crate) attributes: u32,
}

/// What the real-mode loader leaves at [`BIOS_BOOT_INFO_ADDRESS`].
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct BiosBootInfo {
    /// Number of valid entries in `e820`.
    pub(crate) e820_count: u32,
    /// The BIOS drive number we booted from (DL at boot).
    pub(crate) boot_drive: u32,
    /// Kernel sectors the loader read.
    pub(crate) kernel_sectors: u32,
    /// Reserved.
    pub(crate) reserved: u32,
    /// The E820 map.
    pub(crate) e820: [E820Entry; E820_MAX_ENTRIES],
}

// The boot sector: 16-bit real mode at 0x7C00, exactly 512 bytes.
global_asm!(
    r#"
    .section .boot, "ax"
    .code16
    .global boot_sector_start
boot_sector_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw $0x7c00, %sp
    ljmp $0, $boot_normalized
boot_normalized:
    sti
    cld
    movb %dl, boot_drive
    movw $boot_msg_hello, %si
    call boot_print
    /* int 13h extensions are required (hard-disk image, LBA reads). */
    movb $0x41, %ah
    movw $0x55aa, %bx
    movb boot_drive, %dl
    int $0x13
    jc boot_no_lba
    cmpw $0xaa55, %bx
    jne boot_no_lba
    /* Read the loader: sectors 1.. to 0x7E00. */
    movw boot_layout_stage2_sectors, %ax
    movw %ax, boot_dap_count
    movw $0x7e00, boot_dap_offset
    movw $0, boot_dap_segment
    movl $1, boot_dap_lba
    movl $0, boot_dap_lba + 4
    movw $boot_dap, %si
    movb $0x42, %ah
    movb boot_drive, %dl
    int $0x13
    jc boot_disk_error
    jmp stage2_entry

boot_no_lba:
    movw $boot_msg_no_lba, %si
    jmp boot_fail
boot_disk_error:
    movw $boot_msg_disk, %si
    .global boot_fail
boot_fail:
    call boot_print
    /* Ask Bochs to end the run, then halt for real machines. */
    movw $0x8900, %dx
    movw $boot_shutdown_word, %si
boot_fail_shutdown:
    lodsb
    testb %al, %al
    jz boot_fail_halt
    outb %al, %dx
    jmp boot_fail_shutdown
boot_fail_halt:
    cli
    hlt
    jmp boot_fail_halt

    /* Prints the NUL-terminated string at DS:SI to port 0xE9. */
    .global boot_print
boot_print:
    pushw %ax
boot_print_next:
    lodsb
    testb %al, %al
    jz boot_print_done
    outb %al, $0xe9
    jmp boot_print_next
boot_print_done:
    popw %ax
    ret

boot_msg_hello: .asciz "hv-standalone: boot sector\n"
boot_msg_no_lba: .asciz "hv-standalone: BOOT FAILED: no int 13h extensions\n"
boot_msg_disk: .asciz "hv-standalone: BOOT FAILED: disk read error\n"
boot_shutdown_word: .asciz "Shutdown"

    .global boot_drive
boot_drive: .byte 0

    /* Disk address packet for int 13h AH=42h (shared with stage2). */
    .balign 4
    .global boot_dap, boot_dap_count, boot_dap_offset, boot_dap_segment, boot_dap_lba
boot_dap: .byte 16, 0
boot_dap_count: .word 0
boot_dap_offset: .word 0
boot_dap_segment: .word 0
boot_dap_lba: .quad 0

    /* Layout record the launcher cross-checks: "HVBT", sector counts. */
    .balign 4
    .global boot_layout_stage2_sectors, boot_layout_kernel_sectors, boot_layout_flags
boot_layout: .ascii "HVBT"
boot_layout_stage2_sectors: .word __stage2_sectors
boot_layout_flags: .word 0 /* set by the launcher in the disk image, see BOOT_FLAG_* */
boot_layout_kernel_sectors: .long __kernel_sectors

    .org 510
    .word 0xaa55
"#,
    options(att_syntax)
);

// The real-mode loader at 0x7E00.
global_asm!(
    r#"
    .section .stage2, "ax"
    .code16
    .global stage2_entry
stage2_entry:
    movw $stage2_msg_hello, %si
    call boot_print

    /* Fast A20 gate (port 0x92 bit 1; never touch bit 0: reset). */
    inb $0x92, %al
    orb $2, %al
    andb $0xfe, %al
    outb %al, $0x92

    /* Boot information header at 0x5000. */
    movl $0, 0x5000
    movzbl boot_drive, %eax
    movl %eax, 0x5004
    movl $0, 0x5008
    movl $0, 0x500c

    /* E820 map to 0x5010, 24-byte entries. */
    xorl %ebx, %ebx
    movw $0x5010, %di
stage2_e820_next:
    movl $1, %es:20(%di)
    movl $0xe820, %eax
    movl $0x534d4150, %edx
    movl $24, %ecx
    int $0x15
    jc stage2_e820_done
    cmpl $0x534d4150, %eax
    jne stage2_e820_done
    incl 0x5000
    addw $24, %di
    cmpl ${e820_max}, 0x5000
    jae stage2_e820_done
    testl %ebx, %ebx
    jnz stage2_e820_next
stage2_e820_done:

    /* Kernel: sectors after the loader, to 1 MiB and up. */
    movzwl boot_layout_stage2_sectors, %eax
    incl %eax
    movl %eax, stage2_lba
    movl boot_layout_kernel_sectors, %eax
    movl %eax, stage2_remaining
    movl $0x100000, stage2_destination
stage2_load_next:
    movl stage2_remaining, %ecx
    testl %ecx, %ecx
    jz stage2_load_done
    cmpl $64, %ecx
    jbe stage2_chunk_ok
    movl $64, %ecx
stage2_chunk_ok:
    movw %cx, boot_dap_count
    movw %cx, stage2_chunk
    movw $0, boot_dap_offset
    movw $0x1000, boot_dap_segment
    movl stage2_lba, %eax
    movl %eax, boot_dap_lba
    movl $0, boot_dap_lba + 4
    movw $boot_dap, %si
    movb $0x42, %ah
    movb boot_drive, %dl
    int $0x13
    jc stage2_disk_error

    /* int 13h enabled interrupts: off again around the unreal copy. */
    cli
    call stage2_enter_unreal
    movzwl stage2_chunk, %ecx
    shll $9, %ecx
    movl $0x10000, %esi
    movl stage2_destination, %edi
    .byte 0x67 /* address-size prefix: ESI/EDI/ECX */
    rep movsb
    sti

    movzwl stage2_chunk, %eax
    addl %eax, stage2_lba
    subl %eax, stage2_remaining
    addl %eax, 0x5008
    shll $9, %eax
    addl %eax, stage2_destination
    jmp stage2_load_next

stage2_disk_error:
    movw $boot_msg_disk, %si
    jmp boot_fail

    /* Unreal mode: DS and ES keep a 4 GiB limit with base 0 back in real mode. */
stage2_enter_unreal:
    lgdtl stage2_gdt_pointer
    movl %cr0, %eax
    orb $1, %al
    movl %eax, %cr0
    jmp stage2_unreal_pm
stage2_unreal_pm:
    movw $0x10, %bx
    movw %bx, %ds
    movw %bx, %es
    andb $0xfe, %al
    movl %eax, %cr0
    xorw %bx, %bx
    movw %bx, %ds
    movw %bx, %es
    ret

stage2_load_done:
    movw $stage2_msg_loaded, %si
    call boot_print
    cli
    lgdtl stage2_gdt_pointer
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $stage2_protected

    .code32
stage2_protected:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl ${bios_magic}, %eax
    movl ${bios_info}, %ebx
    jmp entry32

    /* The run configuration the launcher patches in the disk image
       (`RunConfig`): "HVCF", mode, L2 count, policy, L1 illegal case,
       slices, reserved. Mode 0 (probe only) unless patched. */
    .balign 16
    .global hv_run_config
hv_run_config:
    .ascii "HVCF"
    .byte 0, 4, 0, 0
    .long 32
    .long 0

stage2_msg_hello: .asciz "hv-standalone: loader: e820, a20, kernel\n"
stage2_msg_loaded: .asciz "hv-standalone: kernel loaded, entering protected mode\n"

    .balign 4
stage2_lba: .long 0
stage2_remaining: .long 0
stage2_destination: .long 0
stage2_chunk: .word 0

    .balign 8
stage2_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff /* 0x08: 32-bit code, base 0, 4 GiB */
    .quad 0x00cf92000000ffff /* 0x10: data, base 0, 4 GiB */
stage2_gdt_pointer:
    .word stage2_gdt_pointer - stage2_gdt - 1
    .long stage2_gdt
"#,
    e820_max = const E820_MAX_ENTRIES,
    bios_magic = const BIOS_BOOT_MAGIC,
    bios_info = const BIOS_BOOT_INFO_ADDRESS,
    options(att_syntax)
);

// The multiboot2 header (multiboot2 spec 3.1): magic, architecture 0
// (i386 protected mode), length, checksum; an entry-address tag pointing at
// `entry32`; the end tag. It sits at the start of the kernel (1 MiB), inside
// the first 32 KiB of the ELF file as the spec requires.
global_asm!(
    r#"
    .section .multiboot2, "a"
    .balign 8
    .global multiboot2_header
multiboot2_header:
    .long 0xe85250d6
    .long 0
    .long multiboot2_header_end - multiboot2_header
    .long 0x100000000 - (0xe85250d6 + (multiboot2_header_end - multiboot2_header))
    /* entry address tag: type 3, flags 0, size 12 */
    .short 3, 0
    .long 12
    .long entry32
    .long 0
    /* end tag */
    .short 0, 0
    .long 8
multiboot2_header_end:
"#,
    options(att_syntax)
);

// 32-bit protected mode to long mode, shared by both boot paths.
global_asm!(
    r#"
    .section .text.entry32, "ax"
    .code32
    .global entry32
entry32:
    cli
    cld
    movl %eax, %ebp
    movl %ebx, %esi

    /* Zero .bss (page tables and stacks live there). */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb

    /* PML4[0] -> PDPT; PDPT[0..4] -> 4 page directories. */
    movl $boot_pdpt, %eax
    orl $3, %eax
    movl %eax, boot_pml4
    movl $boot_pdpt, %edi
    movl $boot_page_directories, %eax
    orl $3, %eax
    movl $4, %ecx
entry32_pdpt_next:
    movl %eax, (%edi)
    addl $0x1000, %eax
    addl $8, %edi
    loop entry32_pdpt_next

    /* 2048 x 2 MiB pages: the low 4 GiB, identity. */
    movl $boot_page_directories, %edi
    movl $0x83, %eax
    movl $2048, %ecx
entry32_pd_next:
    movl %eax, (%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop entry32_pd_next

    /* The first 2 MiB in 4 KiB pages, page 0 not present (null pointers fault). */
    movl $boot_page_table_low, %eax
    orl $3, %eax
    movl %eax, boot_page_directories
    movl $boot_page_table_low + 8, %edi
    movl $0x1003, %eax
    movl $511, %ecx
entry32_pt_next:
    movl %eax, (%edi)
    addl $0x1000, %eax
    addl $8, %edi
    loop entry32_pt_next

    /* CR4: PAE (5), OSFXSR (9), OSXMMEXCPT (10). */
    movl %cr4, %eax
    orl $0x620, %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    /* EFER.LME */
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    /* CR0: PG (31), WP (16), NE (5), MP (1), PE (0); clear EM (2), TS (3). */
    movl %cr0, %eax
    andl $0xfffffff3, %eax
    orl $0x80010023, %eax
    movl %eax, %cr0

    lgdt entry32_gdt_pointer
    ljmp $0x08, $entry64

    .code64
entry64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movq $boot_stack_top, %rsp
    /* Keep .data as loaded (see `pristine_data`); ESI is the info pointer. */
    movl %esi, %r8d
    movq $__data_start, %rsi
    movq $__pristine_data, %rdi
    movq $__kernel_load_end, %rcx
    subq %rsi, %rcx
    rep movsb
    movl %r8d, %esi
    movl %ebp, %edi
    movl %esi, %esi
    xorl %ebp, %ebp
    call hv_standalone_main
entry64_halt:
    cli
    hlt
    jmp entry64_halt

    .section .rodata.entry32, "a"
    .balign 8
entry32_gdt:
    .quad 0
    .quad 0x00af9a000000ffff /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff /* 0x10: data */
entry32_gdt_pointer:
    .word entry32_gdt_pointer - entry32_gdt - 1
    .quad entry32_gdt

    .section .bss.boot, "aw", @nobits
    .balign 4096
    .global boot_pml4
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_page_directories: .skip 4 * 4096
boot_page_table_low: .skip 4096
boot_stack: .skip 64 * 1024
boot_stack_top:
"#,
    options(att_syntax)
);
