//! L1's memory as L0 sees it: one contiguous block of host frames, the
//! hardware EPT01 that maps it (and nothing else), L1's own paging for
//! VMX memory operands, and the frame pool hv-mmu builds EPT02 in.
//!
//! L0 runs with identity paging, so a host-physical address is also the
//! address L0 reads it at.

use hv_arch_vmx::ept::{EptMemoryType, EptPermissions, Eptp};
use hv_core::state::{L1Access, L1Cpu, PageFault};
use hv_mmu::addr::{HostPa, L1Gpa, PageSize};
use hv_mmu::env::{Ept01, Ept01Mapping, FrameAllocator as MmuFrameAllocator, NotL1Memory, Table};

use crate::memory::FrameAllocator;

/// Bytes in a 2-MiB page.
const PAGE_2M: u64 = 2 << 20;
/// Bytes in a 4-KiB page.
const PAGE_4K: u64 = 4096;

/// L1's RAM: `size` bytes of host memory from `host_base`, mapped at L1
/// physical 0.
#[derive(Debug)]
pub(crate) struct L1Ram {
    host_base: u64,
    size: u64,
}

impl L1Ram {
    /// Reserves `size` bytes (a multiple of 2 MiB), 2-MiB aligned so EPT01
    /// can use 2-MiB pages, and zeroes them.
    pub(crate) fn reserve(frames: &mut FrameAllocator, size: u64) -> Option<Self> {
        let slack = PAGE_2M / PAGE_4K;
        let start = frames.reserve_contiguous(size / PAGE_4K + slack)?;
        let host_base = start.next_multiple_of(PAGE_2M);
        // SAFETY: the block was just reserved for good and is identity
        // mapped; nothing else refers to it.
        unsafe { core::ptr::write_bytes(host_base as *mut u8, 0, size as usize) };
        Some(Self { host_base, size })
    }

    /// Bytes of L1 RAM.
    pub(crate) const fn size(&self) -> u64 {
        self.size
    }

    /// The host address of `len` bytes at L1 physical `gpa`, if all of them
    /// are L1 RAM.
    fn host_range(&self, gpa: u64, len: u64) -> Result<u64, NotL1Memory> {
        match gpa.checked_add(len) {
            Some(end) if end <= self.size => Ok(self.host_base + gpa),
            _ => Err(NotL1Memory {
                gpa: L1Gpa::new(gpa),
            }),
        }
    }

    /// Copies `bytes` to L1 physical `gpa` (L0 loading L1).
    pub(crate) fn load(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), NotL1Memory> {
        self.write_bytes(L1Gpa::new(gpa), bytes)
    }

    /// Reads one 8-byte word of L1's own page tables during a walk.
    fn read_table_entry(&self, gpa: u64) -> Result<u64, NotL1Memory> {
        let host = self.host_range(gpa, 8)?;
        // SAFETY: inside L1 RAM, identity mapped; L1 may change it at any
        // time, hence the volatile read.
        Ok(unsafe { (host as *const u64).read_volatile() })
    }
}

impl hv_mmu::env::L1Memory for L1Ram {
    fn read_u64(&self, gpa: L1Gpa) -> Result<u64, NotL1Memory> {
        self.read_table_entry(gpa.raw())
    }

    fn compare_exchange_u64(
        &mut self,
        gpa: L1Gpa,
        old: u64,
        new: u64,
    ) -> Result<bool, NotL1Memory> {
        let host = self.host_range(gpa.raw(), 8)?;
        let word = host as *mut u64;
        let previous: u64;
        // SAFETY: an aligned word of L1 RAM (EPT entries are 8-byte
        // aligned; a misaligned gpa from L1 is still inside the block);
        // LOCK CMPXCHG is atomic with respect to L1 (SDM 29.3.5).
        unsafe {
            core::arch::asm!(
                "lock cmpxchg [{word}], {new}",
                word = in(reg) word,
                new = in(reg) new,
                inout("rax") old => previous,
                options(nostack),
            );
        }
        Ok(previous == old)
    }
}

impl L1Access for L1Ram {
    fn read_bytes(&self, gpa: L1Gpa, buf: &mut [u8]) -> Result<(), NotL1Memory> {
        let host = self.host_range(gpa.raw(), buf.len() as u64)?;
        // SAFETY: inside L1 RAM, identity mapped, not overlapping `buf`
        // (L0's own memory is never L1 RAM).
        unsafe { core::ptr::copy_nonoverlapping(host as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn write_bytes(&mut self, gpa: L1Gpa, buf: &[u8]) -> Result<(), NotL1Memory> {
        let host = self.host_range(gpa.raw(), buf.len() as u64)?;
        // SAFETY: as in `read_bytes`.
        unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), host as *mut u8, buf.len()) };
        Ok(())
    }

    /// L1's linear-to-physical translation for a CPL-0 access: identity
    /// with paging off, else the 4-level walk (SDM Vol. 3A 4.5) with
    /// present and (CR0.WP) write checks. Accessed/dirty flags are not
    /// set: hv-core's accesses are VMX operands, which L1 also reads.
    fn translate(&self, cpu: &L1Cpu, linear: u64, write: bool) -> Result<L1Gpa, PageFault> {
        const PRESENT: u64 = 1;
        const WRITABLE: u64 = 1 << 1;
        const LARGE: u64 = 1 << 7;
        const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
        if cpu.cr0 & (1 << 31) == 0 {
            return Ok(L1Gpa::new(linear & 0xffff_ffff));
        }
        // 4-level paging only (IA-32e mode without LA57). 32-bit and PAE
        // paging are not walked: such an operand gets #PF, a wrong but
        // contained answer (hv-standalone's L1 runs VMX in 64-bit mode).
        if cpu.efer & (1 << 10) == 0 || cpu.cr4 & (1 << 12) != 0 {
            return Err(PageFault {
                address: linear,
                error_code: u32::from(write) << 1,
            });
        }
        let check_write = write && cpu.cr0 & (1 << 16) != 0;
        let fault = |present: bool| PageFault {
            address: linear,
            error_code: u32::from(present) | (u32::from(write) << 1),
        };
        let mut table = cpu.cr3 & ADDRESS;
        // (level shift, whether a large page may end the walk here)
        for (shift, large_allowed) in [(39, false), (30, true), (21, true), (12, false)] {
            let index = (linear >> shift) & 511;
            let entry = self
                .read_table_entry(table + index * 8)
                .map_err(|_| fault(false))?;
            if entry & PRESENT == 0 {
                return Err(fault(false));
            }
            if check_write && entry & WRITABLE == 0 {
                return Err(fault(true));
            }
            let page_mask = (1u64 << shift) - 1;
            if shift == 12 || (large_allowed && entry & LARGE != 0) {
                let base = entry & ADDRESS & !page_mask;
                return Ok(L1Gpa::new(base | (linear & page_mask)));
            }
            table = entry & ADDRESS;
        }
        Err(fault(false))
    }
}

/// EPT01: L1 physical [0, size) to the L1 RAM block, 2-MiB pages, RWX,
/// write-back; nothing else is mapped, so every other L1 physical address
/// is an EPT violation L0 sees (SDM 29.3.3.2).
#[derive(Debug)]
pub(crate) struct HardwareEpt01 {
    pml4: u64,
    host_base: u64,
    size: u64,
}

/// Why EPT01 could not be built: no frame, or more RAM than one page
/// directory maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OutOfFrames;

impl HardwareEpt01 {
    /// Builds the tables for `ram`, which must fit one page directory
    /// (1 GiB): `translate` promises exactly what the tables map.
    pub(crate) fn build(frames: &mut FrameAllocator, ram: &L1Ram) -> Result<Self, OutOfFrames> {
        const TABLE: u64 = EptPermissions::READ_WRITE_EXECUTE.bits();
        if ram.size > 512 * PAGE_2M {
            return Err(OutOfFrames);
        }
        let pml4 = frames.allocate().ok_or(OutOfFrames)?.address();
        let pdpt = frames.allocate().ok_or(OutOfFrames)?.address();
        let pd = frames.allocate().ok_or(OutOfFrames)?.address();
        // SAFETY: three fresh, zeroed (allocator contract), identity-mapped
        // frames only this function refers to.
        unsafe {
            (pml4 as *mut u64).write(pdpt | TABLE);
            (pdpt as *mut u64).write(pd | TABLE);
            let leaf_flags = EptPermissions::READ_WRITE_EXECUTE.bits()
                | ((EptMemoryType::WriteBack as u64) << 3)
                | (1 << 7);
            for index in 0..ram.size / PAGE_2M {
                (pd as *mut u64)
                    .add(index as usize)
                    .write((ram.host_base + index * PAGE_2M) | leaf_flags);
            }
        }
        Ok(Self {
            pml4,
            host_base: ram.host_base,
            size: ram.size,
        })
    }

    /// EPTP01: write-back, 4-level walk, no accessed/dirty flags (SDM
    /// 25.6.11).
    pub(crate) const fn eptp(&self) -> Eptp {
        Eptp::from_raw(self.pml4 | (EptMemoryType::WriteBack as u64) | (3 << 3))
    }
}

impl Ept01 for HardwareEpt01 {
    fn translate(&self, gpa: L1Gpa) -> Option<Ept01Mapping> {
        (gpa.raw() < self.size).then(|| Ept01Mapping {
            frame: HostPa::new(self.host_base + (gpa.raw() & !(PAGE_2M - 1))),
            size: PageSize::Size2M,
            permissions: EptPermissions::READ_WRITE_EXECUTE,
            memory_type: EptMemoryType::WriteBack,
        })
    }
}

/// A fixed pool of host frames for EPT02 tables: hv-mmu's frame budget is
/// the pool's size, so it never asks for more.
#[derive(Debug)]
pub(crate) struct Ept02Frames {
    free: alloc::vec::Vec<u64>,
    capacity: usize,
}

impl Ept02Frames {
    /// Takes `count` frames from `frames` for the pool.
    pub(crate) fn reserve(frames: &mut FrameAllocator, count: usize) -> Option<Self> {
        let start = frames.reserve_contiguous(count as u64)?;
        let free = (0..count as u64)
            .rev()
            .map(|index| start + index * PAGE_4K)
            .collect();
        Some(Self {
            free,
            capacity: count,
        })
    }

    /// Frames in the pool.
    pub(crate) const fn capacity(&self) -> usize {
        self.capacity
    }
}

impl MmuFrameAllocator for Ept02Frames {
    fn allocate(&mut self) -> Option<HostPa> {
        let frame = self.free.pop()?;
        // SAFETY: a pool frame nobody uses now, identity mapped.
        unsafe { core::ptr::write_bytes(frame as *mut u8, 0, PAGE_4K as usize) };
        Some(HostPa::new(frame))
    }

    fn free(&mut self, frame: HostPa) {
        self.free.push(frame.raw());
    }

    fn table(&self, frame: HostPa) -> &Table {
        // SAFETY: hv-mmu passes only frames this pool allocated and did not
        // free: 4-KiB aligned, identity mapped, owned by the pool.
        unsafe { &*(frame.raw() as *const Table) }
    }

    fn table_mut(&mut self, frame: HostPa) -> &mut Table {
        // SAFETY: as in `table`; `&mut self` makes the borrow unique.
        unsafe { &mut *(frame.raw() as *mut Table) }
    }
}
