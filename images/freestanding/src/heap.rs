//! A first-fit free-list heap over one memory region, for a
//! `#[global_allocator]`: free blocks form a list sorted by address, an
//! allocation takes the first block that fits (splitting off the unused
//! front and back), and a free coalesces with both neighbours, so freeing
//! everything gives back one block.
//!
//! Every block is a multiple of [`GRANULE`] bytes at a multiple of
//! [`GRANULE`]; a free block stores its size and the next free block in
//! its first 16 bytes. The heap has no lock: wrap it for the CPU model
//! of the image (hv images: one CPU, see [`crate::SingleCpuCell`]).

use core::alloc::Layout;
use core::ptr;

/// Allocation granularity and minimum alignment, in bytes (the size of a
/// free-block header).
pub const GRANULE: usize = 16;

#[repr(C)]
struct FreeBlock {
    size: usize,
    next: *mut FreeBlock,
}

const _: () = assert!(core::mem::size_of::<FreeBlock>() == GRANULE);

/// The heap. Empty until [`FreeListHeap::init`].
#[derive(Debug)]
pub struct FreeListHeap {
    head: *mut FreeBlock,
    free_bytes: usize,
    total_bytes: usize,
}

// SAFETY: the heap owns its region; moving it to another thread moves that
// ownership (callers still serialise access, as `&mut self` requires).
unsafe impl Send for FreeListHeap {}

const fn align_up(value: usize, align: usize) -> Option<usize> {
    match value.checked_add(align - 1) {
        Some(sum) => Some(sum & !(align - 1)),
        None => None,
    }
}

/// Block size for a layout: at least one granule, rounded up.
fn block_size(layout: Layout) -> Option<usize> {
    align_up(layout.size().max(1), GRANULE)
}

impl FreeListHeap {
    /// A heap with no memory (every allocation fails).
    pub const fn empty() -> Self {
        Self {
            head: ptr::null_mut(),
            free_bytes: 0,
            total_bytes: 0,
        }
    }

    /// Hands the region `[start, start + size)` to the heap (trimmed to
    /// [`GRANULE`] alignment).
    ///
    /// # Safety
    ///
    /// The region must be valid, writable, unused by anything else for the
    /// heap's lifetime, and must not wrap around the address space. Call
    /// once, on an empty heap.
    pub unsafe fn init(&mut self, start: *mut u8, size: usize) {
        let address = start as usize;
        let Some(first) = align_up(address, GRANULE) else {
            return;
        };
        let usable = size.saturating_sub(first - address) & !(GRANULE - 1);
        if usable == 0 {
            return;
        }
        let block = first as *mut FreeBlock;
        // SAFETY: the caller gives us the region; `block` is aligned inside it.
        unsafe {
            block.write(FreeBlock {
                size: usable,
                next: ptr::null_mut(),
            });
        }
        self.head = block;
        self.free_bytes = usable;
        self.total_bytes = usable;
    }

    /// Bytes currently free (including fragmentation).
    pub const fn free_bytes(&self) -> usize {
        self.free_bytes
    }

    /// Bytes the heap manages.
    pub const fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Number of free blocks (1 when nothing is allocated).
    pub fn free_block_count(&self) -> usize {
        let mut count = 0;
        let mut block = self.head;
        while !block.is_null() {
            count += 1;
            // SAFETY: list nodes are valid free blocks.
            block = unsafe { (*block).next };
        }
        count
    }

    /// Allocates a block for `layout`; null when no free block fits.
    pub fn allocate(&mut self, layout: Layout) -> *mut u8 {
        let Some(size) = block_size(layout) else {
            return ptr::null_mut();
        };
        let align = layout.align().max(GRANULE);
        let mut link: *mut *mut FreeBlock = &raw mut self.head;
        // SAFETY: `link` always points at `self.head` or at the `next` field
        // of a valid free block; free blocks lie inside the heap region.
        unsafe {
            while !(*link).is_null() {
                let block = *link;
                let block_start = block as usize;
                let block_end = block_start + (*block).size;
                let next = (*block).next;
                let fits = align_up(block_start, align)
                    .and_then(|start| Some((start, start.checked_add(size)?)))
                    .filter(|&(_, end)| end <= block_end);
                let Some((start, end)) = fits else {
                    link = &raw mut (*block).next;
                    continue;
                };
                // Both gaps are multiples of GRANULE, so a non-empty gap can
                // hold a free-block header.
                let after = if end < block_end {
                    let back = end as *mut FreeBlock;
                    back.write(FreeBlock {
                        size: block_end - end,
                        next,
                    });
                    back
                } else {
                    next
                };
                if start > block_start {
                    (*block).size = start - block_start;
                    (*block).next = after;
                } else {
                    *link = after;
                }
                self.free_bytes -= size;
                return start as *mut u8;
            }
        }
        ptr::null_mut()
    }

    /// Frees a block from [`FreeListHeap::allocate`].
    ///
    /// # Safety
    ///
    /// `pointer` must come from `allocate` on this heap with this same
    /// `layout`, and must not be freed twice.
    pub unsafe fn deallocate(&mut self, pointer: *mut u8, layout: Layout) {
        let Some(size) = block_size(layout) else {
            return;
        };
        let start = pointer as usize;
        let mut previous: *mut FreeBlock = ptr::null_mut();
        let mut link: *mut *mut FreeBlock = &raw mut self.head;
        // SAFETY: as in `allocate`; the freed block is ours again.
        unsafe {
            while !(*link).is_null() && (*link as usize) < start {
                previous = *link;
                link = &raw mut (*previous).next;
            }
            let next = *link;
            let block = start as *mut FreeBlock;
            block.write(FreeBlock { size, next });
            *link = block;
            if !next.is_null() && start + size == next as usize {
                (*block).size += (*next).size;
                (*block).next = (*next).next;
            }
            if !previous.is_null() && previous as usize + (*previous).size == start {
                (*previous).size += (*block).size;
                (*previous).next = (*block).next;
            }
        }
        self.free_bytes += size;
    }
}

impl Default for FreeListHeap {
    fn default() -> Self {
        Self::empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Arena {
        memory: Vec<u128>,
        heap: FreeListHeap,
    }

    impl Arena {
        fn new(bytes: usize) -> Self {
            let mut memory = vec![0u128; bytes / 16];
            let mut heap = FreeListHeap::empty();
            // SAFETY: the vector outlives the heap and is not touched otherwise.
            unsafe { heap.init(memory.as_mut_ptr().cast(), bytes) };
            Self { memory, heap }
        }

        fn range(&self) -> std::ops::Range<usize> {
            let start = self.memory.as_ptr() as usize;
            start..start + self.memory.len() * 16
        }
    }

    /// xorshift64: deterministic pseudo-random numbers without a dependency.
    fn next_random(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn empty_heap_fails_every_allocation() {
        let mut heap = FreeListHeap::empty();
        assert!(heap.allocate(Layout::new::<u8>()).is_null());
    }

    #[test]
    fn whole_heap_can_be_allocated_and_comes_back_as_one_block() {
        let mut arena = Arena::new(4096);
        let layout = Layout::from_size_align(4096, 16).unwrap();
        let block = arena.heap.allocate(layout);
        assert_eq!(block as usize, arena.range().start);
        assert_eq!(arena.heap.free_bytes(), 0);
        assert!(arena.heap.allocate(Layout::new::<u8>()).is_null());
        // SAFETY: allocated above with this layout.
        unsafe { arena.heap.deallocate(block, layout) };
        assert_eq!(arena.heap.free_bytes(), 4096);
        assert_eq!(arena.heap.free_block_count(), 1);
    }

    #[test]
    fn large_alignment_is_honoured_and_front_gap_stays_free() {
        let mut arena = Arena::new(64 * 1024);
        let small = arena.heap.allocate(Layout::new::<u64>());
        let layout = Layout::from_size_align(100, 4096).unwrap();
        let aligned = arena.heap.allocate(layout);
        assert_eq!(aligned as usize % 4096, 0);
        assert!(arena.range().contains(&(aligned as usize)));
        // The gap in front of the aligned block is reused.
        let third = arena.heap.allocate(Layout::new::<u64>());
        assert!((third as usize) < aligned as usize);
        // SAFETY: each pointer was allocated above with its layout.
        unsafe {
            arena.heap.deallocate(aligned, layout);
            arena.heap.deallocate(small, Layout::new::<u64>());
            arena.heap.deallocate(third, Layout::new::<u64>());
        }
        assert_eq!(arena.heap.free_block_count(), 1);
        assert_eq!(arena.heap.free_bytes(), arena.heap.total_bytes());
    }

    #[test]
    fn absurd_layouts_fail_without_overflow() {
        let mut arena = Arena::new(4096);
        let huge = Layout::from_size_align(isize::MAX as usize - 4096, 4096).unwrap();
        assert!(arena.heap.allocate(huge).is_null());
        assert_eq!(arena.heap.free_bytes(), 4096);
    }

    #[test]
    fn random_allocations_never_overlap_and_keep_their_contents() {
        let mut arena = Arena::new(256 * 1024);
        let range = arena.range();
        let mut live: Vec<(usize, Layout, u8)> = Vec::new();
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for round in 0..20_000u32 {
            let roll = next_random(&mut state);
            if !roll.is_multiple_of(3) || live.is_empty() {
                let size = (next_random(&mut state) % 2048) as usize + 1;
                let align = 1 << (next_random(&mut state) % 8);
                let layout = Layout::from_size_align(size, align).unwrap();
                let block = arena.heap.allocate(layout);
                if block.is_null() {
                    continue;
                }
                let start = block as usize;
                assert_eq!(start % align, 0);
                assert!(range.contains(&start) && start + size <= range.end);
                for &(other, other_layout, _) in &live {
                    let disjoint = start + size <= other || other + other_layout.size() <= start;
                    assert!(disjoint, "round {round}: overlap");
                }
                let fill = round as u8;
                // SAFETY: the block is ours and `size` bytes long.
                unsafe { block.write_bytes(fill, size) };
                live.push((start, layout, fill));
            } else {
                let index = (next_random(&mut state) as usize) % live.len();
                let (start, layout, fill) = live.swap_remove(index);
                // SAFETY: allocated above, still live.
                let bytes =
                    unsafe { std::slice::from_raw_parts(start as *const u8, layout.size()) };
                assert!(
                    bytes.iter().all(|&b| b == fill),
                    "round {round}: contents changed"
                );
                // SAFETY: allocated above with this layout, freed once.
                unsafe { arena.heap.deallocate(start as *mut u8, layout) };
            }
        }
        for (start, layout, _) in live {
            // SAFETY: still live.
            unsafe { arena.heap.deallocate(start as *mut u8, layout) };
        }
        assert_eq!(arena.heap.free_block_count(), 1);
        assert_eq!(arena.heap.free_bytes(), arena.heap.total_bytes());
    }
}
