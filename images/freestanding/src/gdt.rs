//! A 64-bit GDT (null, code, data, TSS) and the task-state segment whose
//! interrupt stack table (IST) gives exception handlers known-good stacks.
//! (SDM Vol. 3A 3.4.5, 7.7 "Task management in 64-bit mode", 8.2.3)

use core::arch::asm;

use crate::idt::DescriptorTablePointer;

/// Selector of the 64-bit code segment.
pub const CODE_SELECTOR: u16 = 0x08;
/// Selector of the data segment (SS, DS, ES).
pub const DATA_SELECTOR: u16 = 0x10;
/// Selector of the TSS.
pub const TSS_SELECTOR: u16 = 0x18;

/// Code segment: present, DPL 0, execute/read, accessed, L = 1 (64-bit),
/// G = 1, limit 0xFFFFF. (SDM Vol. 3A 3.4.5, 5.2.1)
pub const CODE64_DESCRIPTOR: u64 = 0x00af_9b00_0000_ffff;
/// Data segment: present, DPL 0, read/write, accessed, D/B = 1, G = 1.
pub const DATA_DESCRIPTOR: u64 = 0x00cf_9300_0000_ffff;
/// [`CODE64_DESCRIPTOR`] with DPL 3, for code running at CPL 3.
pub const USER_CODE64_DESCRIPTOR: u64 = 0x00af_fb00_0000_ffff;
/// [`DATA_DESCRIPTOR`] with DPL 3 (the stack segment at CPL 3).
pub const USER_DATA_DESCRIPTOR: u64 = 0x00cf_f300_0000_ffff;

/// The two GDT entries of a 64-bit TSS descriptor for a TSS at `base`
/// (SDM Vol. 3A 8.2.3, Figure 8-4): type 9 (available 64-bit TSS),
/// present, DPL 0, byte granularity, limit = size - 1.
pub const fn tss_descriptor(base: u64) -> [u64; 2] {
    let limit = (core::mem::size_of::<TaskStateSegment>() - 1) as u64;
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x89 << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    [low, base >> 32]
}

/// The 64-bit task-state segment (SDM Vol. 3A 8.7, Figure 8-11): the
/// stacks the CPU switches to on privilege changes and IST entries.
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskStateSegment {
    reserved0: u32,
    /// RSP0..RSP2: stacks for privilege-level changes (unused at CPL 0).
    pub privilege_stacks: [u64; 3],
    reserved1: u64,
    /// IST1..IST7 (index 0 is IST1): an IDT gate with IST = n switches to
    /// `interrupt_stacks[n - 1]` unconditionally.
    pub interrupt_stacks: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    /// Offset of the I/O permission bitmap; `size_of::<Self>()` = none.
    pub io_map_base: u16,
}

const _: () = assert!(core::mem::size_of::<TaskStateSegment>() == 104);
const _: () = assert!(core::mem::offset_of!(TaskStateSegment, interrupt_stacks) == 0x24);

impl TaskStateSegment {
    /// A TSS with no stacks and no I/O bitmap.
    pub const fn new() -> Self {
        Self {
            reserved0: 0,
            privilege_stacks: [0; 3],
            reserved1: 0,
            interrupt_stacks: [0; 7],
            reserved2: 0,
            reserved3: 0,
            io_map_base: core::mem::size_of::<Self>() as u16,
        }
    }

    /// Sets IST entry `ist` (1..=7) to the stack top `stack_top`.
    ///
    /// # Panics
    ///
    /// When `ist` is not in 1..=7.
    pub fn set_interrupt_stack(&mut self, ist: u8, stack_top: u64) {
        assert!((1..=7).contains(&ist), "IST index {ist} is not 1..=7");
        let mut stacks = self.interrupt_stacks;
        stacks[usize::from(ist - 1)] = stack_top;
        self.interrupt_stacks = stacks;
    }
}

/// The GDT: null, [`CODE_SELECTOR`], [`DATA_SELECTOR`], and a 16-byte TSS
/// descriptor at [`TSS_SELECTOR`].
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gdt {
    entries: [u64; 5],
}

impl Gdt {
    /// An all-null GDT, for a `static` filled in at run time with
    /// [`Gdt::new`] (a TSS address is not a constant).
    pub const fn empty() -> Self {
        Self { entries: [0; 5] }
    }

    /// A GDT whose TSS descriptor points at `tss` (its address must stay
    /// valid for as long as the GDT is loaded).
    pub fn new(tss: *const TaskStateSegment) -> Self {
        let [low, high] = tss_descriptor(tss as u64);
        Self {
            entries: [0, CODE64_DESCRIPTOR, DATA_DESCRIPTOR, low, high],
        }
    }

    /// The raw descriptors (for tests and debugging).
    pub const fn entries(&self) -> &[u64; 5] {
        &self.entries
    }

    /// Loads this GDT, reloads CS (far return), SS/DS/ES with the data
    /// selector, clears FS/GS, and loads the task register.
    ///
    /// # Safety
    ///
    /// `self` and the TSS it points at must stay at their addresses and
    /// unchanged for as long as they are in use (in practice: `static`).
    /// CPL 0, long mode. The TSS descriptor must not be busy (load once).
    pub unsafe fn load(&self) {
        let pointer = DescriptorTablePointer {
            limit: (core::mem::size_of::<Self>() - 1) as u16,
            base: core::ptr::from_ref(self) as u64,
        };
        // SAFETY: the caller guarantees the tables stay valid; the selectors
        // match the descriptors built by `new`.
        unsafe {
            asm!(
                "lgdt [{pointer}]",
                "push {code}",
                "lea {scratch}, [rip + 2f]",
                "push {scratch}",
                "retfq",
                "2:",
                "mov ss, {data:e}",
                "mov ds, {data:e}",
                "mov es, {data:e}",
                "xor {scratch:e}, {scratch:e}",
                "mov fs, {scratch:e}",
                "mov gs, {scratch:e}",
                "ltr {tss:x}",
                pointer = in(reg) &raw const pointer,
                code = const CODE_SELECTOR as u64,
                data = in(reg) u32::from(DATA_SELECTOR),
                tss = in(reg) TSS_SELECTOR,
                scratch = out(reg) _,
                options(preserves_flags),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tss_descriptor_encodes_base_and_limit() {
        let gdt = Gdt::new(0x1234_5678_9abc_def0 as *const TaskStateSegment);
        let [_, _, _, low, high] = *gdt.entries();
        assert_eq!(low & 0xffff, 103);
        assert_eq!((low >> 16) & 0xff_ffff, 0xbc_def0);
        assert_eq!((low >> 56) & 0xff, 0x9a);
        assert_eq!((low >> 40) & 0xff, 0x89);
        assert_eq!(high, 0x1234_5678);
    }

    #[test]
    fn user_descriptors_differ_only_in_dpl() {
        assert_eq!(USER_CODE64_DESCRIPTOR ^ CODE64_DESCRIPTOR, 3 << 45);
        assert_eq!(USER_DATA_DESCRIPTOR ^ DATA_DESCRIPTOR, 3 << 45);
    }

    #[test]
    fn code_descriptor_is_64_bit() {
        // L (bit 53) set, D (bit 54) clear, present (bit 47), DPL 0.
        assert_eq!((CODE64_DESCRIPTOR >> 53) & 3, 1);
        assert_eq!((CODE64_DESCRIPTOR >> 47) & 1, 1);
        assert_eq!((CODE64_DESCRIPTOR >> 45) & 3, 0);
    }

    #[test]
    fn interrupt_stacks_are_at_sdm_offsets() {
        let mut tss = TaskStateSegment::new();
        tss.set_interrupt_stack(1, 0x1000);
        tss.set_interrupt_stack(7, 0x7000);
        // SAFETY: TaskStateSegment is plain old data of 104 bytes.
        let bytes: [u8; 104] = unsafe { core::mem::transmute(tss) };
        assert_eq!(&bytes[0x24..0x2c], &0x1000u64.to_le_bytes());
        assert_eq!(&bytes[0x54..0x5c], &0x7000u64.to_le_bytes());
        assert_eq!(&bytes[0x66..0x68], &104u16.to_le_bytes());
    }
}
