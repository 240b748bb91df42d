//! Snapshots and the page bookkeeping that makes restore cost grow with
//! the pages dirtied since the snapshot, not with the sandbox's size.
//!
//! Mechanism: the memory slot has `KVM_MEM_LOG_DIRTY_PAGES`; `KVM_GET_DIRTY_LOG`
//! returns (and re-arms) the pages the guest wrote since the last fetch.
//! The host's own writes (calls into the input buffer) are marked by the
//! sandbox. A snapshot copies only the pages ever written (host or guest);
//! every other page is known to be zero. Restore copies back (or zeroes)
//! exactly the pages dirtied since the snapshot.

use std::sync::Arc;

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};

use super::layout::PAGE_SIZE;
use super::memory::GuestMemory;

/// One bit per guest page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PageBitmap {
    words: Vec<u64>,
}

impl PageBitmap {
    pub(crate) fn new(pages: usize) -> Self {
        Self {
            words: vec![0; pages.div_ceil(64)],
        }
    }

    pub(crate) fn set(&mut self, page: usize) {
        if let Some(word) = self.words.get_mut(page / 64) {
            *word |= 1 << (page % 64);
        }
    }

    /// Marks every page overlapping `[address, address + length)`.
    pub(crate) fn set_range(&mut self, address: u64, length: u64) {
        if length == 0 {
            return;
        }
        let first = address / PAGE_SIZE;
        let last = (address + length - 1) / PAGE_SIZE;
        for page in first..=last {
            self.set(page as usize);
        }
    }

    pub(crate) fn or_words(&mut self, words: &[u64]) {
        for (mine, theirs) in self.words.iter_mut().zip(words) {
            *mine |= theirs;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.words.fill(0);
    }

    pub(crate) fn count(&self) -> usize {
        self.words
            .iter()
            .map(|word| word.count_ones() as usize)
            .sum()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(index, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(index * 64 + bit)
            })
        })
    }
}

/// Marks a page the snapshot does not hold: it was zero.
const ZERO_PAGE: u32 = u32::MAX;

#[derive(Debug)]
pub(crate) struct SnapshotData {
    pub(crate) sandbox: u64,
    pub(crate) id: u64,
    /// Page index -> index of its copy in `data`, or [`ZERO_PAGE`].
    slots: Vec<u32>,
    data: Vec<u8>,
    pub(crate) regs: kvm_regs,
    pub(crate) sregs: kvm_sregs,
    pub(crate) fpu: kvm_fpu,
}

/// A sandbox's state at one moment (memory and vCPU registers), to
/// restore later with [`Sandbox::restore`](super::Sandbox::restore). Cheap
/// to clone; holds copies of only the pages ever written.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub(crate) data: Arc<SnapshotData>,
}

impl Snapshot {
    /// Copies the `populated` pages of `memory`.
    pub(crate) fn capture(
        sandbox: u64,
        id: u64,
        memory: &GuestMemory,
        populated: &PageBitmap,
        registers: &(kvm_regs, kvm_sregs, kvm_fpu),
    ) -> Self {
        let mut slots = vec![ZERO_PAGE; memory.page_count()];
        let mut data = Vec::with_capacity(populated.count() * PAGE_SIZE as usize);
        for (slot, page) in populated.iter().enumerate() {
            if page < slots.len() {
                slots[page] = slot as u32;
                data.extend_from_slice(memory.page(page));
            }
        }
        let (regs, sregs, fpu) = *registers;
        Self {
            data: Arc::new(SnapshotData {
                sandbox,
                id,
                slots,
                data,
                regs,
                sregs,
                fpu,
            }),
        }
    }

    /// Pages the snapshot holds copies of.
    pub fn stored_pages(&self) -> usize {
        self.data.data.len() / PAGE_SIZE as usize
    }
}

impl SnapshotData {
    /// Puts page `page` of `memory` back as it was.
    pub(crate) fn restore_page(&self, memory: &mut GuestMemory, page: usize) {
        let Some(&slot) = self.slots.get(page) else {
            return;
        };
        let target = memory.page_mut(page);
        if slot == ZERO_PAGE {
            target.fill(0);
        } else {
            let start = slot as usize * PAGE_SIZE as usize;
            target.copy_from_slice(&self.data[start..start + PAGE_SIZE as usize]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_iterates_set_pages_in_order() {
        let mut bitmap = PageBitmap::new(200);
        bitmap.set(3);
        bitmap.set(64);
        bitmap.set_range(0x1000 * 130, 0x1001);
        assert_eq!(bitmap.iter().collect::<Vec<_>>(), vec![3, 64, 130, 131]);
        assert_eq!(bitmap.count(), 4);
        bitmap.clear();
        assert_eq!(bitmap.iter().count(), 0);
    }
}
