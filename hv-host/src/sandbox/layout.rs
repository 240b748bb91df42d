//! Where everything lives in guest memory, and the identity page tables
//! the host writes for the guest.
//!
//! ```text
//! 0x0000          page 0, never mapped (null dereferences fault)
//! 0x1000          PML4
//! 0x2000          PDPT
//! 0x3000..0x7000  four page directories (one per GiB, up to 4 GiB)
//! 0x7000          page table of the first 2 MiB (only BootInfo is mapped)
//! 0x8000          page table of the 2 MiB region holding the stack guard
//! 0x9000          BootInfo (hv_guest_abi::BOOT_INFO_ADDRESS), user-readable
//! 0xa000          GDT (hv_guest_abi::GDT_ADDRESS), supervisor-only
//! 0xb000          IDT (hv_guest_abi::IDT_ADDRESS), user-writable, empty
//! 0xc000          TSS + I/O bitmap (hv_guest_abi::TSS_ADDRESS), user-writable
//! 0x20_0000       the ELF image (hv_guest_abi::IMAGE_BASE) ...
//!  ...            input buffer | output buffer | heap | guard page | stack
//! total           end of memory: nothing is mapped at or above it
//! ```

use hv_guest_abi::{
    ABI_VERSION, BOOT_INFO_ADDRESS, BOOT_INFO_MAGIC, BootInfo, GDT_ADDRESS, IDT_ADDRESS,
    IMAGE_BASE, IO_BITMAP_SIZE, TSS_ADDRESS, TSS_SIZE,
};

/// Guest page size.
pub const PAGE_SIZE: u64 = 0x1000;
/// Size of a large page (PDE with PS set).
pub const LARGE_PAGE_SIZE: u64 = 0x20_0000;
/// The GDT's entries (SDM Vol. 3A 3.4.5): null, kernel code (64-bit), kernel
/// data, user data, user code (64-bit); the TSS descriptor follows.
const GDT_ENTRIES: [u64; 5] = [
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x00cf_f300_0000_ffff,
    0x00af_fb00_0000_ffff,
];
/// The GDT's limit (seven 8-byte entries, the TSS descriptor taking two).
pub const GDT_LIMIT: u16 = 7 * 8 - 1;
/// The IDT's limit (256 16-byte gates).
pub const IDT_LIMIT: u16 = 256 * 16 - 1;
/// The TSS segment limit: the TSS and its I/O bitmap.
pub const TSS_LIMIT: u32 = (TSS_SIZE + IO_BITMAP_SIZE - 1) as u32;
const _: () = assert!(TSS_SIZE + IO_BITMAP_SIZE <= PAGE_SIZE);

/// Largest guest memory the page tables cover (four page directories).
pub const MAX_MEMORY: u64 = 4 << 30;
/// Address of the PML4.
pub const PML4_ADDRESS: u64 = 0x1000;
const PDPT_ADDRESS: u64 = 0x2000;
const PD_ADDRESS: u64 = 0x3000;
const LOW_PT_ADDRESS: u64 = 0x7000;
const GUARD_PT_ADDRESS: u64 = 0x8000;

// Paging-structure entry bits (Intel SDM Vol. 3A 4.5, Tables 4-15 .. 4-20).
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
/// U/S: CPL-3 accesses allowed. Set from `IMAGE_BASE` up and on the
/// `BootInfo`, IDT and TSS pages: the guest runs at CPL 3 from its first
/// instruction (`hv_guest_abi`'s machine description).
const USER: u64 = 1 << 2;
const PAGE_SIZE_BIT: u64 = 1 << 7;

/// Sizes of a sandbox's memory regions, in bytes. Every size is rounded up
/// to whole pages; `total` must be a multiple of 2 MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemoryConfig {
    /// Guest heap.
    pub heap: u64,
    /// Guest stack (an unmapped guard page lies below it).
    pub stack: u64,
    /// Host -> guest buffer (calls, host-call replies).
    pub input: u64,
    /// Guest -> host buffer (results, host calls, logs).
    pub output: u64,
    /// All of guest memory.
    pub total: u64,
}

impl Default for MemoryConfig {
    /// 8 MiB in total: 2 MiB heap, 256 KiB stack, 64 KiB buffers.
    fn default() -> Self {
        Self {
            heap: 2 << 20,
            stack: 256 << 10,
            input: 64 << 10,
            output: 64 << 10,
            total: 8 << 20,
        }
    }
}

/// Why a [`MemoryConfig`] cannot be laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// `total` is not a multiple of 2 MiB, or is zero.
    #[error("total memory {total:#x} is not a non-zero multiple of 2 MiB")]
    TotalNotLargePageMultiple {
        /// The requested total.
        total: u64,
    },
    /// `total` is above [`MAX_MEMORY`].
    #[error("total memory {total:#x} exceeds the {MAX_MEMORY:#x} the page tables cover")]
    TotalTooLarge {
        /// The requested total.
        total: u64,
    },
    /// A region has size zero.
    #[error("the {region} region has size zero")]
    EmptyRegion {
        /// `"heap"`, `"stack"`, `"input"` or `"output"`.
        region: &'static str,
    },
    /// The regions do not fit above the image base.
    #[error(
        "the regions need {needed:#x} bytes above the image base but memory ends at {total:#x}"
    )]
    RegionsDoNotFit {
        /// Bytes needed from `IMAGE_BASE` on (image excluded).
        needed: u64,
        /// The requested total.
        total: u64,
    },
    /// The image and the regions together exceed memory.
    #[error("the image ends at {image_end:#x} but the buffers start at {regions_start:#x}")]
    ImageTooLarge {
        /// End of the image (page-rounded).
        image_end: u64,
        /// Where the input buffer starts.
        regions_start: u64,
    },
}

/// A half-open guest address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Region {
    /// First address.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

impl Region {
    /// End (exclusive).
    pub const fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// The computed layout of one sandbox's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    /// Total memory.
    pub total: u64,
    /// Host -> guest buffer.
    pub input: Region,
    /// Guest -> host buffer.
    pub output: Region,
    /// Heap.
    pub heap: Region,
    /// The unmapped page below the stack.
    pub guard_page: u64,
    /// Stack (top = `stack.end()`).
    pub stack: Region,
}

fn pages(bytes: u64) -> Option<u64> {
    bytes.checked_next_multiple_of(PAGE_SIZE)
}

impl Layout {
    /// Lays the regions out at the top of memory, stack highest.
    /// `image_limit()` then says where the image must end.
    ///
    /// # Errors
    ///
    /// A [`LayoutError`] when the sizes are unusable.
    pub fn new(config: &MemoryConfig) -> Result<Self, LayoutError> {
        let total = config.total;
        if total == 0 || !total.is_multiple_of(LARGE_PAGE_SIZE) {
            return Err(LayoutError::TotalNotLargePageMultiple { total });
        }
        if total > MAX_MEMORY {
            return Err(LayoutError::TotalTooLarge { total });
        }
        for (region, size) in [
            ("heap", config.heap),
            ("stack", config.stack),
            ("input", config.input),
            ("output", config.output),
        ] {
            if size == 0 {
                return Err(LayoutError::EmptyRegion { region });
            }
        }
        let too_big = LayoutError::RegionsDoNotFit {
            needed: u64::MAX,
            total,
        };
        let stack = pages(config.stack).ok_or(too_big)?;
        let heap = pages(config.heap).ok_or(too_big)?;
        let input = pages(config.input).ok_or(too_big)?;
        let output = pages(config.output).ok_or(too_big)?;
        let needed = [stack, PAGE_SIZE, heap, output, input]
            .iter()
            .try_fold(0u64, |sum, size| sum.checked_add(*size))
            .ok_or(too_big)?;
        if needed > total - IMAGE_BASE {
            return Err(LayoutError::RegionsDoNotFit { needed, total });
        }
        let stack_start = total - stack;
        let guard_page = stack_start - PAGE_SIZE;
        let heap_start = guard_page - heap;
        let output_start = heap_start - output;
        let input_start = output_start - input;
        Ok(Self {
            total,
            input: Region {
                start: input_start,
                size: input,
            },
            output: Region {
                start: output_start,
                size: output,
            },
            heap: Region {
                start: heap_start,
                size: heap,
            },
            guard_page,
            stack: Region {
                start: stack_start,
                size: stack,
            },
        })
    }

    /// End (exclusive) of the area the ELF image may occupy.
    pub const fn image_limit(&self) -> u64 {
        self.input.start
    }

    /// The [`BootInfo`] the guest receives.
    pub const fn boot_info(&self) -> BootInfo {
        BootInfo {
            magic: BOOT_INFO_MAGIC,
            abi_version: ABI_VERSION,
            reserved: 0,
            memory_size: self.total,
            input_address: self.input.start,
            input_size: self.input.size,
            output_address: self.output.start,
            output_size: self.output.size,
            heap_address: self.heap.start,
            heap_size: self.heap.size,
            stack_top: self.stack.end(),
            stack_size: self.stack.size,
        }
    }

    /// Writes the identity page tables into `memory` (guest memory from
    /// address 0, `self.total` bytes long): page 0, the page tables
    /// themselves and the guard page are not mapped; the first 2 MiB use
    /// 4 KiB pages, the rest 2 MiB pages; nothing at or above `total`.
    pub fn write_page_tables(&self, memory: &mut [u8]) {
        let mut put = |address: u64, value: u64| {
            let at = address as usize;
            memory[at..at + 8].copy_from_slice(&value.to_le_bytes());
        };
        put(PML4_ADDRESS, PDPT_ADDRESS | PRESENT | WRITABLE | USER);
        let gigabytes = self.total.div_ceil(1 << 30);
        for gigabyte in 0..gigabytes {
            put(
                PDPT_ADDRESS + gigabyte * 8,
                (PD_ADDRESS + gigabyte * PAGE_SIZE) | PRESENT | WRITABLE | USER,
            );
        }
        let guard_region = self.guard_page / LARGE_PAGE_SIZE;
        for region in 0..self.total / LARGE_PAGE_SIZE {
            let entry_address = PD_ADDRESS + region * 8;
            let base = region * LARGE_PAGE_SIZE;
            let entry = if region == 0 {
                LOW_PT_ADDRESS | PRESENT | WRITABLE | USER
            } else if region == guard_region {
                GUARD_PT_ADDRESS | PRESENT | WRITABLE | USER
            } else {
                base | PRESENT | WRITABLE | USER | PAGE_SIZE_BIT
            };
            put(entry_address, entry);
        }
        // First 2 MiB: only BootInfo and the descriptor tables are mapped
        // (and the guard page, if the stack reaches that low, stays
        // unmapped). The GDT stays supervisor-only: the guest never writes
        // it, and the CPU's own descriptor accesses ignore U/S.
        for (address, user) in [
            (BOOT_INFO_ADDRESS, USER),
            (GDT_ADDRESS, 0),
            (IDT_ADDRESS, USER),
            (TSS_ADDRESS, USER),
        ] {
            put(
                LOW_PT_ADDRESS + (address / PAGE_SIZE) * 8,
                address | PRESENT | WRITABLE | user,
            );
        }
        if guard_region != 0 {
            let base = guard_region * LARGE_PAGE_SIZE;
            for page in 0..LARGE_PAGE_SIZE / PAGE_SIZE {
                let address = base + page * PAGE_SIZE;
                if address != self.guard_page {
                    put(
                        GUARD_PT_ADDRESS + page * 8,
                        address | PRESENT | WRITABLE | USER,
                    );
                }
            }
        }
    }

    /// Writes the GDT (with the TSS descriptor) and the TSS with its I/O
    /// bitmap (every port up to `PORT_EXCEPTION`'s byte allowed). The IDT
    /// stays zero: 256 not-present gates until the guest fills them.
    pub fn write_descriptor_tables(memory: &mut [u8]) {
        let mut put = |address: u64, value: u64| {
            let at = address as usize;
            memory[at..at + 8].copy_from_slice(&value.to_le_bytes());
        };
        for (index, entry) in GDT_ENTRIES.iter().enumerate() {
            put(GDT_ADDRESS + 8 * index as u64, *entry);
        }
        // 64-bit available TSS descriptor (SDM Vol. 3A 8.2.3): limit 15:0,
        // base 23:0, type 9, present, limit 19:16, base 31:24; the second
        // entry holds base 63:32 (zero).
        let limit = u64::from(TSS_LIMIT);
        put(
            GDT_ADDRESS + 8 * GDT_ENTRIES.len() as u64,
            (limit & 0xffff)
                | ((TSS_ADDRESS & 0xff_ffff) << 16)
                | (0x89 << 40)
                | (((limit >> 16) & 0xf) << 48)
                | (((TSS_ADDRESS >> 24) & 0xff) << 56),
        );
        // The I/O map base (offset 102) points right after the TSS.
        let io_map_base = (TSS_ADDRESS + 102) as usize;
        memory[io_map_base..io_map_base + 2].copy_from_slice(&(TSS_SIZE as u16).to_le_bytes());
        memory[(TSS_ADDRESS + u64::from(TSS_LIMIT)) as usize] = 0xff;
    }

    /// The pages [`Layout::write_page_tables`],
    /// [`Layout::write_descriptor_tables`] and the `BootInfo` use.
    pub const fn host_structure_pages() -> [u64; 12] {
        [
            PML4_ADDRESS,
            PDPT_ADDRESS,
            PD_ADDRESS,
            PD_ADDRESS + PAGE_SIZE,
            PD_ADDRESS + 2 * PAGE_SIZE,
            PD_ADDRESS + 3 * PAGE_SIZE,
            LOW_PT_ADDRESS,
            GUARD_PT_ADDRESS,
            BOOT_INFO_ADDRESS,
            GDT_ADDRESS,
            IDT_ADDRESS,
            TSS_ADDRESS,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_layout_puts_the_stack_at_the_top() {
        let layout = Layout::new(&MemoryConfig::default()).unwrap();
        assert_eq!(layout.stack.end(), 8 << 20);
        assert_eq!(layout.guard_page + PAGE_SIZE, layout.stack.start);
        assert!(layout.image_limit() > IMAGE_BASE);
    }

    #[test]
    fn bad_totals_are_rejected() {
        let config = MemoryConfig {
            total: 3 << 20,
            ..MemoryConfig::default()
        };
        assert!(matches!(
            Layout::new(&config),
            Err(LayoutError::TotalNotLargePageMultiple { .. })
        ));
        let config = MemoryConfig {
            heap: u64::MAX,
            ..MemoryConfig::default()
        };
        assert!(matches!(
            Layout::new(&config),
            Err(LayoutError::RegionsDoNotFit { .. })
        ));
    }
}
