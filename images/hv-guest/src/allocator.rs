//! The global allocator: a [`FreeListHeap`] over the heap region the host
//! reserved (`BootInfo::heap_address`, `heap_size`).

use core::alloc::{GlobalAlloc, Layout};

use hv_freestanding::SingleCpuCell;
use hv_freestanding::heap::FreeListHeap;

struct GuestAllocator(SingleCpuCell<FreeListHeap>);

#[global_allocator]
static ALLOCATOR: GuestAllocator = GuestAllocator(SingleCpuCell::new(FreeListHeap::empty()));

/// Gives the heap its region.
///
/// # Safety
///
/// Once, at start; the region must be guest memory reserved for the heap.
pub(crate) unsafe fn init(address: u64, size: u64) {
    // SAFETY: the host reserved the region; nothing allocates yet.
    unsafe {
        ALLOCATOR
            .0
            .get_mut()
            .init(address as *mut u8, size as usize);
    };
}

// SAFETY: `FreeListHeap` returns blocks of at least `layout.size()` bytes
// aligned to `layout.align()`, disjoint while live. The guest runs on one
// CPU, its exception handlers never return or allocate, so the allocator
// is never re-entered.
unsafe impl GlobalAlloc for GuestAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: no other reference to the heap is live (see above).
        unsafe { self.0.get_mut().allocate(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: as above; the caller passes a block from `alloc`.
        unsafe { self.0.get_mut().deallocate(pointer, layout) }
    }
}
