//! The global allocator: hv-freestanding's first-fit free-list heap over a
//! contiguous block of frames.

use core::alloc::{GlobalAlloc, Layout};

use hv_freestanding::SingleCpuCell;
use hv_freestanding::heap::FreeListHeap;

/// The heap size: 4 MiB.
pub(crate) const HEAP_BYTES: u64 = 4 << 20;

/// `FreeListHeap` behind `GlobalAlloc`. hv-standalone runs on one CPU with
/// interrupts disabled and its exception handlers never allocate and never
/// return, so an allocation can never interrupt another one: no lock.
struct Heap(SingleCpuCell<FreeListHeap>);

// SAFETY: see the type's comment: accesses never overlap.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: no other reference to the heap is live (single CPU).
        unsafe { self.0.get_mut() }.allocate(layout)
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: as above; the caller passes a block from `alloc`.
        unsafe { self.0.get_mut().deallocate(pointer, layout) }
    }
}

#[global_allocator]
static HEAP: Heap = Heap(SingleCpuCell::new(FreeListHeap::empty()));

/// Gives the heap `[start, start + size)`.
///
/// # Safety
///
/// Once, before any allocation; the block is identity-mapped RAM that
/// nothing else uses, for good.
pub(crate) unsafe fn init(start: u64, size: u64) {
    // SAFETY: the caller's promises are FreeListHeap::init's.
    unsafe { HEAP.0.get_mut().init(start as *mut u8, size as usize) };
}

/// (bytes free, bytes managed).
pub(crate) fn usage() -> (usize, usize) {
    // SAFETY: a short shared borrow; no allocation is in progress.
    let heap = unsafe { HEAP.0.get() };
    (heap.free_bytes(), heap.total_bytes())
}
