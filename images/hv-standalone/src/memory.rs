//! The physical memory map (BIOS E820 or multiboot2) and the frame
//! allocator over it.
//!
//! Frames come from usable RAM at or above the end of the kernel image
//! (never below 1 MiB: BIOS data, the boot sector and the loader's buffers
//! live there) and below 4 GiB (the boot page tables map that much).

use crate::boot::{BIOS_BOOT_MAGIC, BiosBootInfo, E820_MAX_ENTRIES, MULTIBOOT2_BOOT_MAGIC};

/// Size of a frame.
pub(crate) const FRAME_SIZE: u64 = 4096;
/// The highest address (exclusive) the boot page tables identity-map.
const IDENTITY_MAPPED_END: u64 = 4 << 30;
/// The most regions a [`MemoryMap`] keeps.
const MAX_REGIONS: usize = E820_MAX_ENTRIES;

/// What a memory-map region holds (E820 / multiboot2 type numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RegionKind {
    /// 1: RAM the OS may use.
    Usable,
    /// 2: reserved.
    Reserved,
    /// 3: ACPI tables, reclaimable after reading.
    AcpiReclaimable,
    /// 4: ACPI non-volatile storage.
    AcpiNvs,
    /// 5: defective RAM.
    Bad,
    /// Anything else, with its raw type.
    Other(u32),
}

impl RegionKind {
    const fn from_raw(raw: u32) -> Self {
        match raw {
            1 => Self::Usable,
            2 => Self::Reserved,
            3 => Self::AcpiReclaimable,
            4 => Self::AcpiNvs,
            5 => Self::Bad,
            other => Self::Other(other),
        }
    }

    /// A short name for printing.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Usable => "usable",
            Self::Reserved => "reserved",
            Self::AcpiReclaimable => "acpi-reclaimable",
            Self::AcpiNvs => "acpi-nvs",
            Self::Bad => "bad",
            Self::Other(_) => "other",
        }
    }
}

/// One region of physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Region {
    /// First byte.
    pub(crate) base: u64,
    /// Length in bytes.
    pub(crate) length: u64,
    /// What it holds.
    pub(crate) kind: RegionKind,
}

/// Reads a `u32` at physical address `address`.
///
/// # Safety
///
/// The four bytes are identity-mapped readable memory.
unsafe fn read_u32(address: u64) -> u32 {
    // SAFETY: the caller guarantees the bytes are readable.
    unsafe { (address as *const u32).read_unaligned() }
}

/// Reads a `u64` at physical address `address`.
///
/// # Safety
///
/// The eight bytes are identity-mapped readable memory.
unsafe fn read_u64(address: u64) -> u64 {
    // SAFETY: the caller guarantees the bytes are readable.
    unsafe { (address as *const u64).read_unaligned() }
}

/// Which loader started us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BootProtocol {
    /// Our own boot sector and real-mode loader (E820 map).
    Bios,
    /// A multiboot2 loader such as GRUB.
    Multiboot2,
}

/// Why the memory map could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MemoryMapError {
    /// `EAX` at entry was neither boot magic.
    UnknownBootMagic(u32),
    /// The BIOS returned no E820 entries.
    EmptyE820,
    /// The multiboot2 information has no memory-map tag.
    NoMultiboot2MemoryMap,
}

/// The memory map, as the firmware reported it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MemoryMap {
    regions: [Region; MAX_REGIONS],
    count: usize,
    /// The loader that gave it to us.
    pub(crate) protocol: BootProtocol,
}

impl MemoryMap {
    /// Reads the map the loader left, given the `magic` and `info` it
    /// passed to `entry32`.
    ///
    /// # Safety
    ///
    /// `info` must be what the loader passed together with `magic`
    /// (identity-mapped memory that nothing has overwritten since).
    pub(crate) unsafe fn from_boot(magic: u32, info: u64) -> Result<Self, MemoryMapError> {
        let empty = Region {
            base: 0,
            length: 0,
            kind: RegionKind::Reserved,
        };
        let mut map = Self {
            regions: [empty; MAX_REGIONS],
            count: 0,
            protocol: BootProtocol::Bios,
        };
        match magic {
            BIOS_BOOT_MAGIC => {
                // SAFETY: the loader wrote a BiosBootInfo at `info`.
                let boot = unsafe { &*(info as *const BiosBootInfo) };
                let count = (boot.e820_count as usize).min(E820_MAX_ENTRIES);
                if count == 0 {
                    return Err(MemoryMapError::EmptyE820);
                }
                for entry in &boot.e820[..count] {
                    let (base, length, kind) = (entry.base, entry.length, entry.kind);
                    map.push(base, length, kind);
                }
            }
            MULTIBOOT2_BOOT_MAGIC => {
                map.protocol = BootProtocol::Multiboot2;
                // SAFETY: the loader passed a multiboot2 information block.
                unsafe { map.read_multiboot2(info)? };
            }
            other => return Err(MemoryMapError::UnknownBootMagic(other)),
        }
        Ok(map)
    }

    fn push(&mut self, base: u64, length: u64, kind: u32) {
        if self.count < MAX_REGIONS && length != 0 {
            self.regions[self.count] = Region {
                base,
                length,
                kind: RegionKind::from_raw(kind),
            };
            self.count += 1;
        }
    }

    /// Multiboot2 spec 3.6: `total_size`, reserved, then 8-aligned tags
    /// (`type`, `size`); type 6 is the memory map (`entry_size`,
    /// `entry_version`, then entries of base, length, type, reserved).
    unsafe fn read_multiboot2(&mut self, info: u64) -> Result<(), MemoryMapError> {
        // SAFETY: the caller passes the loader's block, which starts with
        // its total size.
        let total = u64::from(unsafe { read_u32(info) });
        let mut tag = info + 8;
        while tag + 8 <= info + total {
            // SAFETY: the tag header lies inside the block (loop condition).
            let (kind, size) = unsafe { (read_u32(tag), read_u32(tag + 4)) };
            if kind == 0 || size < 8 {
                break;
            }
            if kind == 6 && size >= 16 {
                // SAFETY: a memory-map tag has at least 16 bytes (checked).
                let entry_size = u64::from(unsafe { read_u32(tag + 8) });
                let mut entry = tag + 16;
                while entry_size >= 24 && entry + 24 <= tag + u64::from(size) {
                    // SAFETY: the 24-byte entry lies inside the tag.
                    let (base, length, region_kind) =
                        unsafe { (read_u64(entry), read_u64(entry + 8), read_u32(entry + 16)) };
                    self.push(base, length, region_kind);
                    entry += entry_size;
                }
                return Ok(());
            }
            tag += (u64::from(size) + 7) & !7;
        }
        Err(MemoryMapError::NoMultiboot2MemoryMap)
    }

    /// The regions in firmware order.
    pub(crate) fn regions(&self) -> &[Region] {
        &self.regions[..self.count]
    }

    /// Total bytes of usable RAM.
    pub(crate) fn usable_bytes(&self) -> u64 {
        self.regions()
            .iter()
            .filter(|region| region.kind == RegionKind::Usable)
            .map(|region| region.length)
            .sum()
    }
}

/// A 4 KiB-aligned physical address of a frame (identity-mapped, so also
/// its virtual address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PhysFrame(u64);

impl PhysFrame {
    /// The frame's physical address.
    pub(crate) const fn address(self) -> u64 {
        self.0
    }
}

/// A range of free frames not yet handed out.
#[derive(Clone, Copy, Debug)]
struct FreeRange {
    next: u64,
    end: u64,
}

/// Hands out 4 KiB frames: first frames given back (a free list threaded
/// through the frames themselves), then fresh frames from the usable
/// ranges in address order.
#[derive(Debug)]
pub(crate) struct FrameAllocator {
    ranges: [FreeRange; MAX_REGIONS],
    range_count: usize,
    free_list: u64,
    total_frames: u64,
    frames_in_use: u64,
}

impl FrameAllocator {
    /// Frames from every usable region of `map`, clipped to
    /// `[max(1 MiB, reserved_end), 4 GiB)`.
    pub(crate) fn new(map: &MemoryMap, reserved_end: u64) -> Self {
        let low = reserved_end.max(1 << 20);
        let mut allocator = Self {
            ranges: [FreeRange { next: 0, end: 0 }; MAX_REGIONS],
            range_count: 0,
            free_list: 0,
            total_frames: 0,
            frames_in_use: 0,
        };
        for region in map
            .regions()
            .iter()
            .filter(|r| r.kind == RegionKind::Usable)
        {
            let start = region.base.max(low).next_multiple_of(FRAME_SIZE);
            let end = region
                .base
                .saturating_add(region.length)
                .min(IDENTITY_MAPPED_END)
                & !(FRAME_SIZE - 1);
            if start < end && allocator.range_count < MAX_REGIONS {
                allocator.ranges[allocator.range_count] = FreeRange { next: start, end };
                allocator.range_count += 1;
                allocator.total_frames += (end - start) / FRAME_SIZE;
            }
        }
        allocator
    }

    /// A zeroed frame, or `None` when memory is exhausted.
    pub(crate) fn allocate(&mut self) -> Option<PhysFrame> {
        let address = if self.free_list != 0 {
            let frame = self.free_list;
            // SAFETY: frames on the free list are ours and identity-mapped;
            // their first word links to the next one.
            self.free_list = unsafe { (frame as *const u64).read() };
            frame
        } else {
            self.allocate_contiguous(1)?
        };
        // SAFETY: the frame is ours, identity-mapped and 4 KiB long.
        unsafe { core::ptr::write_bytes(address as *mut u8, 0, FRAME_SIZE as usize) };
        self.frames_in_use += 1;
        Some(PhysFrame(address))
    }

    /// `count` physically contiguous fresh frames (not zeroed), or `None`.
    /// Frames given by this call are counted in use by the caller's
    /// bookkeeping only if it comes through [`Self::allocate`]; use
    /// [`Self::reserve_contiguous`] for long-lived blocks.
    fn allocate_contiguous(&mut self, count: u64) -> Option<u64> {
        let bytes = count.checked_mul(FRAME_SIZE)?;
        self.ranges[..self.range_count]
            .iter_mut()
            .find_map(|range| {
                (range.end - range.next >= bytes).then(|| {
                    let start = range.next;
                    range.next += bytes;
                    start
                })
            })
    }

    /// `count` physically contiguous frames for a long-lived block such as
    /// the heap; never given back.
    pub(crate) fn reserve_contiguous(&mut self, count: u64) -> Option<u64> {
        let start = self.allocate_contiguous(count)?;
        self.frames_in_use += count;
        Some(start)
    }

    /// Gives `frame` back.
    ///
    /// # Safety
    ///
    /// `frame` came from [`Self::allocate`], is not already free, and
    /// nothing uses it any more.
    pub(crate) unsafe fn free(&mut self, frame: PhysFrame) {
        // SAFETY: the caller gives the frame up; we own it again.
        unsafe { (frame.0 as *mut u64).write(self.free_list) };
        self.free_list = frame.0;
        self.frames_in_use -= 1;
    }

    /// Frames managed in total.
    pub(crate) const fn total_frames(&self) -> u64 {
        self.total_frames
    }

    /// Frames handed out and not given back.
    pub(crate) const fn frames_in_use(&self) -> u64 {
        self.frames_in_use
    }
}
