//! Flush tracking: which roots may have a translation cached by hardware
//! that the engine just removed or reduced.
//!
//! A translation cached under an EPTP02 came from a walk through that
//! root's tables (SDM 29.4.1: cached mappings are tagged by EPTRTA). When
//! an entry of table T is zapped or reduced, every root from which T is
//! reachable (following parent links upward) is marked; the mark is
//! reported and cleared at the root's next entry or resume. Tables made
//! unreachable by a zap need nothing more: the zap of the link above them
//! already marked every root that reached them.

use alloc::vec;

use crate::env::FrameAllocator;

use super::Mmu;
use super::table::TableId;

impl<F: FrameAllocator> Mmu<F> {
    /// A fresh traversal stamp. Within one stamp, a table whose roots were
    /// already marked is not walked again; use one stamp per phase in which
    /// links are only removed, never added.
    pub(super) fn next_stamp(&mut self) -> u64 {
        self.stamp += 1;
        self.stamp
    }

    /// Marks every root that reaches `start` as needing a flush. Iterative;
    /// each table is visited at most once per `stamp`, and parent links only
    /// go up one level, so this ends.
    pub(super) fn mark_roots_reaching(&mut self, start: TableId, stamp: u64) {
        if !self.tables.is_live(start) || self.tables.get(start).stamp == stamp {
            return;
        }
        self.tables.get_mut(start).stamp = stamp;
        let mut worklist = vec![start];
        while let Some(table) = worklist.pop() {
            if let Some(root) = self.tables.get(table).root
                && let Some(root) = self.roots.get_mut(root)
            {
                root.needs_flush = true;
            }
            let parents = self.tables.get(table).parents.len();
            for position in 0..parents {
                let Some(&(parent, _)) = self.tables.get(table).parents.get(position) else {
                    break;
                };
                let parent_table = self.tables.get_mut(parent);
                if parent_table.stamp != stamp {
                    parent_table.stamp = stamp;
                    worklist.push(parent);
                }
            }
        }
    }

    /// Marks the roots reaching `table` with a stamp of its own (for single
    /// zaps in phases that also add links, like fills).
    pub(super) fn mark_roots_reaching_now(&mut self, table: TableId) {
        let stamp = self.next_stamp();
        self.mark_roots_reaching(table, stamp);
    }
}
