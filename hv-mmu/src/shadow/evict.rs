//! Taking things apart: clearing and zapping entries, freeing unreachable
//! tables (iteratively), evicting and dropping roots, and finding frames
//! within the budget.

use alloc::vec::Vec;

use crate::addr::HostPa;
use crate::env::FrameAllocator;

use super::rmap::TargetKey;
use super::roots::RootId;
use super::table::{ENTRIES, LINK_LEAF, Slot, TableId};
use super::{Mmu, MmuError};

impl<F: FrameAllocator> Mmu<F> {
    /// A zeroed frame for a new shadow table, within the frame budget.
    ///
    /// When the budget or the allocator is exhausted, frees unreachable
    /// tables first, then the least recently used root other than the
    /// current one, one at a time, until a frame comes free.
    pub(super) fn allocate_frame(&mut self) -> Result<HostPa, MmuError> {
        // Each round frees at least one table or gives up, so this ends.
        loop {
            if self.tables.live < self.config.frame_budget
                && let Some(frame) = self.frames.allocate()
            {
                return Ok(frame);
            }
            if !self.reclaim_one() {
                return Err(MmuError::OutOfFrames);
            }
        }
    }

    /// Frees one unreachable table tree, or else evicts one root that is
    /// not current. Returns whether anything was freed.
    fn reclaim_one(&mut self) -> bool {
        if let Some(&orphan) = self.tables.orphans.iter().next() {
            self.stats.evictions += 1;
            tracing::debug!(table = orphan, "evicting unreachable shadow table");
            self.free_tree(orphan, true);
            return true;
        }
        if let Some(victim) = self.roots.least_recently_used(self.current) {
            self.evict_root(victim);
            return true;
        }
        false
    }

    /// Evicts root `id` (capacity or budget): counted as an eviction.
    pub(super) fn evict_root(&mut self, id: RootId) {
        self.stats.evictions += 1;
        tracing::debug!(root = id, "evicting EPT02 root");
        self.free_root(id);
    }

    /// Removes root `id` and frees its top-level table. Tables below that no
    /// other root reaches become orphans (kept by hv, freed otherwise).
    pub(super) fn free_root(&mut self, id: RootId) {
        let Some(root) = self.roots.remove(id) else {
            return;
        };
        if self.current == Some(id) {
            self.current = None;
        }
        let table = root.table;
        if !self.tables.is_live(table) {
            return;
        }
        self.tables.get_mut(table).root = None;
        // Hardware may still cache translations tagged with this EPTP02.
        self.remember_former_root(self.tables.get(table).frame);
        let cascade = !self.config.policy.retains_orphans();
        self.free_tree(table, cascade);
    }

    /// Remembers that `frame` was a root, within
    /// [`Mmu::remembered_root_frames_limit`]: on overflow the set is
    /// forgotten and every later new root is flushed (see there).
    fn remember_former_root(&mut self, frame: HostPa) {
        if self.former_root_frames_forgotten {
            return;
        }
        if self.former_root_frames.len() >= self.remembered_root_frames_limit()
            && !self.former_root_frames.contains(&frame)
        {
            tracing::debug!(
                remembered = self.former_root_frames.len(),
                "freed root frames forgotten: every new root is flushed from now on"
            );
            self.former_root_frames = hashbrown::HashSet::new();
            self.former_root_frames_forgotten = true;
            return;
        }
        self.former_root_frames.insert(frame);
    }

    /// What a policy does when it "drops" a root (INVEPT, INVVPID or EPT01
    /// change under KVM, Xen, flush-always): the current root is emptied in
    /// place and flagged for a flush (so the caller can keep using it); any
    /// other root is freed and will be rebuilt, with a flush, on next use.
    pub(super) fn drop_root(&mut self, id: RootId) {
        if self.current == Some(id) {
            self.empty_root(id);
            let epoch = self.epoch;
            if let Some(root) = self.roots.get_mut(id) {
                root.needs_flush = true;
                // Rebuilt from now on: tables it links must be as fresh as
                // this drop (shared ones may be older; they get resynced).
                root.invept_at = epoch;
                let table = root.table;
                self.tables.get_mut(table).synced_at = epoch;
            }
        } else {
            self.free_root(id);
        }
    }

    /// Zaps every entry of root `id`'s top-level table.
    pub(super) fn empty_root(&mut self, id: RootId) {
        let Some(table) = self.roots.get(id).map(|root| root.table) else {
            return;
        };
        let mut zapped = false;
        for index in 0..ENTRIES {
            zapped |= self.zap_slot(table, index);
        }
        if zapped && let Some(root) = self.roots.get_mut(id) {
            root.needs_flush = true;
        }
    }

    /// Frees every root and every table (flush-always's unload).
    pub(super) fn drop_all_roots_and_tables(&mut self) {
        for id in self.roots.ids() {
            self.free_root(id);
        }
        self.free_orphans();
    }

    /// Frees every table no root reaches.
    pub(super) fn free_orphans(&mut self) {
        let orphans: Vec<TableId> = self.tables.orphans.iter().copied().collect();
        for orphan in orphans {
            self.free_tree(orphan, true);
        }
    }

    /// Zaps entry `index` of `table` because what it was built from
    /// changed: clears it and counts it. The caller marks the roots that
    /// reach `table` for a flush. Returns whether the entry was filled.
    pub(super) fn zap_slot(&mut self, table: TableId, index: usize) -> bool {
        let zapped = self.clear_slot(table, index);
        if zapped {
            self.stats.entries_zapped += 1;
            tracing::trace!(table, index, "shadow entry zapped");
        }
        zapped
    }

    /// Empties entry `index` of `table` in the frame and in the metadata,
    /// dropping its back-references. A child left unreachable becomes an
    /// orphan (kept or freed per policy).
    pub(super) fn clear_slot(&mut self, table: TableId, index: usize) -> bool {
        let index = index & (ENTRIES - 1);
        let slot = self.tables.get(table).slot(index);
        if !slot.is_filled() {
            return false;
        }
        let frame = self.tables.get(table).frame;
        if let Some(entry) = self.frames.table_mut(frame).get_mut(index) {
            *entry = 0;
        }
        self.drop_back_reference(table, index, slot);
        let shadow = self.tables.get_mut(table);
        *shadow.slot_mut(index) = Slot::EMPTY;
        shadow.filled = shadow.filled.saturating_sub(1);
        true
    }

    /// Removes the back-reference of filled `slot` (entry `index` of
    /// `table`): from the target map for a leaf, from the child's parent list
    /// for a pointer. A child left unreachable becomes an orphan, kept or
    /// freed per policy.
    fn drop_back_reference(&mut self, table: TableId, index: usize, slot: Slot) {
        if let Some(orphan) = self.unlink_back_reference(table, index, slot) {
            if self.config.policy.retains_orphans() {
                self.tables.orphans.insert(orphan);
            } else {
                self.free_tree(orphan, true);
            }
        }
    }

    /// Removes the back-reference of `slot` and returns the child if that
    /// left it unreachable.
    fn unlink_back_reference(
        &mut self,
        table: TableId,
        index: usize,
        slot: Slot,
    ) -> Option<TableId> {
        if slot.link == LINK_LEAF {
            let key = self.leaf_target(table, index, slot);
            if let Some((moved_table, moved_index)) = self.targets.remove(key, slot.back) {
                self.tables
                    .get_mut(moved_table)
                    .slot_mut(usize::from(moved_index))
                    .back = slot.back;
            }
            None
        } else if let Some(child) = slot.child() {
            self.tables.remove_parent(child, slot.back).then_some(child)
        } else {
            None
        }
    }

    /// Where the leaf in entry `index` of `table` maps: for a direct
    /// table, the part of its region the entry covers; for a mirroring
    /// table, the EPT12 leaf's page.
    pub(super) fn leaf_target(&self, table: TableId, index: usize, slot: Slot) -> TargetKey {
        let key = self.tables.get(table).key;
        let size =
            crate::addr::PageSize::at_level(key.level).unwrap_or(crate::addr::PageSize::Size4K);
        let pages = size.bytes() >> 12;
        if key.role.direct {
            TargetKey::containing(
                crate::addr::L1Gfn::new(key.gfn.raw().wrapping_add((index as u64 & 511) * pages)),
                size,
            )
        } else {
            let address = slot.guest & hv_arch_vmx::ept::EptEntry::ADDRESS_MASK;
            TargetKey::containing(crate::addr::L1Gfn::new(address >> 12), size)
        }
    }

    /// Frees the unreachable table `start` and, with `cascade`, every table
    /// below it that becomes unreachable (worklist, no recursion); without
    /// `cascade` those become orphans.
    pub(super) fn free_tree(&mut self, start: TableId, cascade: bool) {
        let mut worklist = alloc::vec![start];
        while let Some(table) = worklist.pop() {
            if !self.tables.is_live(table) || !self.tables.get(table).is_orphan() {
                continue;
            }
            if self.tables.get(table).filled > 0 {
                for index in 0..ENTRIES {
                    let slot = self.tables.get(table).slot(index);
                    if !slot.is_filled() {
                        continue;
                    }
                    if let Some(orphan) = self.unlink_back_reference(table, index, slot) {
                        if cascade {
                            worklist.push(orphan);
                        } else {
                            self.tables.orphans.insert(orphan);
                        }
                    }
                    *self.tables.get_mut(table).slot_mut(index) = Slot::EMPTY;
                }
            }
            let frame = self.tables.remove(table);
            self.frames.free(frame);
            self.stats.tables_freed += 1;
            tracing::trace!(table, "shadow table freed");
        }
    }
}
