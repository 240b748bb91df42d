//! Precise resync: compare the EPT12 entries each shadow table was built
//! from with L1 memory now, keep what is unchanged, widen in place what only
//! gained rights (no flush: an EPT violation invalidates the faulting
//! address's cached translations, SDM 29.4.3.1), zap the rest and mark the
//! roots that reach a zapped entry for a flush. Also the EPT01 side: zap
//! the leaves that map an L1 page L0 changed.

use alloc::vec::Vec;

use hv_arch_vmx::ept::{EptEntry, EptLevel, EptPermissions, EptWalkContext};

use crate::addr::{L1Gfn, L1Gpa, PageSize};
use crate::env::{FrameAllocator, L1Memory};

use super::Mmu;
use super::rmap::TargetKey;
use super::table::{ENTRIES, LINK_LEAF, Role, TableId};

/// Bits of an EPT entry that grant rights: 0, 1, 2 and 10.
pub(super) const RIGHTS_MASK: u64 =
    EptEntry::READ | EptEntry::WRITE | EptEntry::EXECUTE | EptEntry::USER_EXECUTE;

/// How an EPT12 entry changed relative to the snapshot a shadow entry was
/// built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// Same target, same rights: only bits the shadow does not use changed.
    Same,
    /// Same target, more rights: widen the shadow entry in place.
    Widened,
    /// Anything else: zap.
    Incompatible,
}

/// The misconfiguration context of walks with `role` under `context`.
pub(super) const fn role_context(role: Role, context: EptWalkContext) -> EptWalkContext {
    let mut context = context;
    context.mode_based_execute = role.mode_based_execute;
    context
}

/// The rights an EPT12 entry at `level` passes on to the shadow: its bits
/// 0-2 (and 10 with mode-based execute control), minus write for a leaf
/// that is not yet dirty with A/D enabled (so the first write faults and
/// sets the dirty flag, SDM 29.3.5).
pub(super) fn guest_rights(entry: u64, level: u8, role: Role) -> EptPermissions {
    let entry = EptEntry::from_raw(entry);
    let mut rights = entry.permissions().effective(role.mode_based_execute);
    let leaf = EptLevel::from_number(level).is_some_and(|level| entry.is_leaf(level));
    if leaf && role.accessed_dirty && !entry.dirty() {
        rights.remove(EptPermissions::WRITE);
    }
    rights
}

/// `rights` made valid for a shadow entry: write never without read
/// (SDM 29.3.3.1), and nothing when execute-only is not allowed and read
/// is missing.
pub(super) const fn sanitize(rights: EptPermissions, role: Role) -> EptPermissions {
    if rights.contains(EptPermissions::READ) {
        rights
    } else if role.execute_only {
        rights.difference(EptPermissions::WRITE)
    } else {
        EptPermissions::empty()
    }
}

/// How `new` (in L1 memory now) differs from `old` (the snapshot) for an
/// entry at `level` of a table walked with `role`.
pub(super) fn classify(
    old: u64,
    new: u64,
    level: u8,
    role: Role,
    context: EptWalkContext,
) -> Change {
    if old == new {
        return Change::Same;
    }
    let Some(ept_level) = EptLevel::from_number(level) else {
        return Change::Incompatible;
    };
    let context = role_context(role, context);
    let (old_entry, new_entry) = (EptEntry::from_raw(old), EptEntry::from_raw(new));
    if !new_entry.is_present(role.mode_based_execute)
        || new_entry.misconfiguration(ept_level, &context).is_some()
    {
        return Change::Incompatible;
    }
    let leaf = old_entry.is_leaf(ept_level);
    if leaf != new_entry.is_leaf(ept_level) {
        return Change::Incompatible;
    }
    let (old_target, new_target) = if leaf {
        (
            old_entry.page_frame(ept_level),
            new_entry.page_frame(ept_level),
        )
    } else {
        (Some(old_entry.address()), Some(new_entry.address()))
    };
    if old_target != new_target {
        return Change::Incompatible;
    }
    // L1 cleared the accessed flag: it wants to see the next access
    // (SDM 29.3.5), so the cached translation must go.
    if role.accessed_dirty && old_entry.accessed() && !new_entry.accessed() {
        return Change::Incompatible;
    }
    let old_rights = guest_rights(old, level, role);
    let new_rights = guest_rights(new, level, role);
    if !new_rights.contains(old_rights) {
        Change::Incompatible
    } else if new_rights == old_rights {
        Change::Same
    } else {
        Change::Widened
    }
}

impl Change {
    /// `Some(new)` when the shadow entry can be widened (or kept) to match
    /// `new`, `None` when it must be zapped.
    const fn then_widen(self, new: u64) -> Option<u64> {
        match self {
            Self::Same | Self::Widened => Some(new),
            Self::Incompatible => None,
        }
    }
}

impl<F: FrameAllocator> Mmu<F> {
    /// Replaces the snapshot of entry `index` of `table` with `guest`, which
    /// [`classify`] found [`Change::Same`] or [`Change::Widened`], and
    /// rewrites the shadow entry's rights accordingly (never fewer).
    pub(super) fn widen_slot(&mut self, table: TableId, index: usize, guest: u64) {
        let index = index & (ENTRIES - 1);
        let shadow = self.tables.get(table);
        let (key, frame, slot) = (shadow.key, shadow.frame, shadow.slot(index));
        let mut rights = guest_rights(guest, key.level, key.role);
        if slot.link == LINK_LEAF {
            rights = rights.intersection(EptPermissions::from_bits_truncate(u64::from(slot.ept01)));
        }
        let rights = sanitize(rights, key.role);
        if let Some(entry) = self.frames.table_mut(frame).get_mut(index) {
            *entry = (*entry & !RIGHTS_MASK) | rights.bits();
        }
        self.tables.get_mut(table).slot_mut(index).guest = guest;
    }

    /// Compares every filled entry of mirroring `table` with L1 memory,
    /// widening or zapping; marks (with `stamp`) the roots reaching it if
    /// anything was zapped. Returns the number of entries zapped.
    pub(super) fn resync_table<M: L1Memory + ?Sized>(
        &mut self,
        memory: &M,
        table: TableId,
        stamp: u64,
    ) -> u64 {
        if !self.tables.is_live(table) {
            return 0;
        }
        let key = self.tables.get(table).key;
        if key.role.direct {
            return 0;
        }
        self.stats.resyncs += 1;
        let context = self.config.walk_context;
        let base = key.gfn.address();
        let mut zapped = 0;
        for index in 0..ENTRIES {
            let slot = self.tables.get(table).slot(index);
            if !slot.is_filled() {
                continue;
            }
            let address = L1Gpa::new(base.raw().wrapping_add(index as u64 * 8));
            let change = match memory.read_u64(address) {
                Ok(now) if now == slot.guest => continue,
                Ok(now) => classify(slot.guest, now, key.level, key.role, context).then_widen(now),
                // The page left L1 memory: nothing can be built from it.
                Err(_) => None,
            };
            match change {
                Some(now) => self.widen_slot(table, index, now),
                None => {
                    if self.zap_slot(table, index) {
                        zapped += 1;
                    }
                }
            }
        }
        if zapped > 0 {
            tracing::debug!(table, gfn = key.gfn.raw(), zapped, "resync zapped entries");
            self.mark_roots_reaching(table, stamp);
        }
        zapped
    }

    /// Resyncs every table reachable from the roots `ids` (their INVEPT):
    /// each table at most once, children after their parent (a zapped link
    /// is not followed).
    pub(super) fn resync_roots<M: L1Memory + ?Sized>(&mut self, memory: &M, ids: &[super::RootId]) {
        let stamp = self.next_stamp();
        let epoch = self.epoch;
        for &id in ids {
            let Some(root) = self.roots.get_mut(id) else {
                continue;
            };
            root.invept_at = epoch;
            let start = root.table;
            self.resync_below(memory, start, epoch, stamp);
        }
    }

    /// Resyncs `start` and every mirroring table below it whose epoch is
    /// older than `epoch`, and raises them to `epoch`.
    fn resync_below<M: L1Memory + ?Sized>(
        &mut self,
        memory: &M,
        start: TableId,
        epoch: u64,
        stamp: u64,
    ) {
        let mut worklist = alloc::vec![start];
        while let Some(table) = worklist.pop() {
            if !self.tables.is_live(table) {
                continue;
            }
            let shadow = self.tables.get(table);
            if shadow.key.role.direct || shadow.synced_at >= epoch {
                continue;
            }
            self.resync_table(memory, table, stamp);
            let shadow = self.tables.get_mut(table);
            shadow.synced_at = epoch;
            if shadow.filled == 0 {
                continue;
            }
            worklist.extend(shadow.slots.iter().filter_map(super::table::Slot::child));
        }
    }

    /// Resyncs every live mirroring table (INVEPT all-context) and raises
    /// every root and table to the current epoch.
    pub(super) fn resync_all<M: L1Memory + ?Sized>(&mut self, memory: &M) {
        let stamp = self.next_stamp();
        let epoch = self.epoch;
        let ids: Vec<TableId> = self.tables.live_ids().collect();
        for table in ids {
            if !self.tables.is_live(table) || self.tables.get(table).key.role.direct {
                continue;
            }
            self.resync_table(memory, table, stamp);
            self.tables.get_mut(table).synced_at = epoch;
        }
        for id in self.roots.ids() {
            if let Some(root) = self.roots.get_mut(id) {
                root.invept_at = epoch;
            }
        }
    }

    /// Resyncs the tables built from EPT12 page `gfn` (L1 wrote it).
    pub(super) fn resync_gfn<M: L1Memory + ?Sized>(&mut self, memory: &M, gfn: L1Gfn) {
        let Some(ids) = self.tables.by_gfn.get(&gfn).cloned() else {
            return;
        };
        let stamp = self.next_stamp();
        for table in ids {
            self.resync_table(memory, table, stamp);
        }
    }

    /// Brings `start` (about to be linked under a table synced at epoch
    /// `required`) and the tables below it up to `required`.
    pub(super) fn resync_stale_tree<M: L1Memory + ?Sized>(
        &mut self,
        memory: &M,
        start: TableId,
        required: u64,
    ) {
        let stamp = self.next_stamp();
        self.resync_below(memory, start, required, stamp);
    }

    /// Zaps every leaf that maps any part of the `size`-aligned L1 page
    /// containing `gfn` (EPT01 changed it) and marks the roots that reach
    /// them.
    ///
    /// Leaves at least as large as the page can only be the one of each
    /// size that contains it (three keys). Smaller leaves inside it are
    /// found by looking up each 4-KByte and 2-MByte sub-page, or, when the
    /// reverse map has fewer keys than that, by one pass over it: work is
    /// bounded by the smaller of the page's sub-page count and the number
    /// of leaves.
    pub(super) fn zap_ept01_page(&mut self, gfn: L1Gfn, size: PageSize) {
        let stamp = self.next_stamp();
        let page = TargetKey::containing(gfn, size);
        for leaf_size in [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G] {
            if leaf_size >= size {
                self.zap_leaves_of(TargetKey::containing(page.gfn, leaf_size), stamp);
            }
        }
        if size == PageSize::Size4K {
            return;
        }
        // Sub-page keys: every 4K page, plus every 2M page of a 1G page.
        let pages = size.bytes() >> 12;
        let middles = if size == PageSize::Size1G {
            pages / 512
        } else {
            0
        };
        let inside: Vec<TargetKey> = if pages + middles <= self.targets.key_count() as u64 {
            let small = (0..pages).map(|offset| {
                TargetKey::containing(
                    L1Gfn::new(page.gfn.raw().wrapping_add(offset)),
                    PageSize::Size4K,
                )
            });
            let middle = (0..middles).map(|offset| {
                TargetKey::containing(
                    L1Gfn::new(page.gfn.raw().wrapping_add(offset * 512)),
                    PageSize::Size2M,
                )
            });
            small
                .chain(middle)
                .filter(|key| self.targets.len(*key) > 0)
                .collect()
        } else {
            self.targets.keys_inside(page).collect()
        };
        for key in inside {
            self.zap_leaves_of(key, stamp);
        }
    }

    /// Zaps every leaf filed under `key` and marks (with `stamp`) the roots
    /// that reach them.
    fn zap_leaves_of(&mut self, key: TargetKey, stamp: u64) {
        // Each zap removes one leaf from the list; bounded by its length.
        for _ in 0..self.targets.len(key) {
            let Some((table, index)) = self.targets.any(key) else {
                break;
            };
            self.zap_slot(table, usize::from(index));
            self.mark_roots_reaching(table, stamp);
        }
    }
}
