//! The shadow-table arena: every EPT02 paging structure the engine owns,
//! indexed by a `u32` id, with the metadata that makes precise resync and
//! sharing possible.
//!
//! A shadow table mirrors one EPT12 table (keyed by its L1 GFN, its level
//! and the role of the walks that reach it) or, when EPT01 maps a large
//! EPT12 page with smaller pages, is a *direct* table that splits that page
//! (keyed by the L1 GFN of the region it covers). Tables form a DAG by
//! level (a child is always one level below its parent), so no traversal
//! can cycle; traversals are iterative with explicit worklists.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use hashbrown::{HashMap, HashSet};

use crate::addr::{HostPa, L1Gfn};
use crate::walk::WalkConfig;

use super::roots::RootId;

/// Index of a shadow table in the arena.
pub(crate) type TableId = u32;

/// Entries in a paging structure.
pub(crate) const ENTRIES: usize = 512;

/// The walk parameters a shadow table's contents depend on (KVM calls it
/// the role): tables built for different roles are never shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent walk parameters, each part of the key"
)]
pub(crate) struct Role {
    /// Walk length of the EPTP12 (4 or 5).
    pub(crate) levels: u8,
    /// EPTP12 A/D enable: leaves are write-protected until dirty.
    pub(crate) accessed_dirty: bool,
    /// Execute-only translations allowed in EPT12.
    pub(crate) execute_only: bool,
    /// Mode-based execute control: bit 10 is a right.
    pub(crate) mode_based_execute: bool,
    /// A table that splits a large EPT12 page (contents from EPT01 only).
    pub(crate) direct: bool,
}

impl Role {
    /// The role of walks configured by `config`.
    pub(crate) const fn of(config: WalkConfig) -> Self {
        Self {
            levels: config.levels,
            accessed_dirty: config.accessed_dirty,
            execute_only: config.context.execute_only,
            mode_based_execute: config.mode_based_execute,
            direct: false,
        }
    }

    /// The same role for a direct (splitting) table.
    pub(crate) const fn as_direct(self) -> Self {
        Self {
            direct: true,
            ..self
        }
    }
}

/// What identifies a shadow table: two walks that reach the same EPT12
/// table at the same level with the same role can use the same shadow
/// table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TableKey {
    /// The EPT12 table page mirrored, or the first L1 page of the region a
    /// direct table splits.
    pub(crate) gfn: L1Gfn,
    /// Level of the table's entries (1 = PTE).
    pub(crate) level: u8,
    /// The role of the walks.
    pub(crate) role: Role,
    /// 0 when tables are shared; the owning root's id + 1 under policies
    /// that do not share (Xen).
    pub(crate) owner: u32,
}

/// `Slot::link` of an empty slot.
pub(crate) const LINK_NONE: u32 = u32::MAX;
/// `Slot::link` of a slot holding a leaf.
pub(crate) const LINK_LEAF: u32 = u32::MAX - 1;

/// What the engine knows about one shadow entry, beside the entry itself
/// (which lives in the frame hardware walks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The EPT12 entry this shadow entry was built from, as L1 memory held
    /// it after the walk's A/D update (mirroring tables only; 0 in direct
    /// tables). Resync compares it with L1 memory now.
    pub(crate) guest: u64,
    /// [`LINK_NONE`], [`LINK_LEAF`] or the id of the child table.
    pub(crate) link: u32,
    /// Position of this slot's back-reference: in the child's parent list
    /// (pointer) or in the target reverse map (leaf), for O(1) removal.
    pub(crate) back: u32,
    /// For a leaf: the EPT01 rights it was intersected with (bits 0-2, 10).
    pub(crate) ept01: u16,
}

impl Slot {
    /// An empty slot.
    pub(crate) const EMPTY: Self = Self {
        guest: 0,
        link: LINK_NONE,
        back: 0,
        ept01: 0,
    };

    /// Whether the slot holds an entry.
    pub(crate) const fn is_filled(&self) -> bool {
        self.link != LINK_NONE
    }

    /// The child table, if the slot points to one.
    pub(crate) const fn child(&self) -> Option<TableId> {
        if self.link == LINK_NONE || self.link == LINK_LEAF {
            None
        } else {
            Some(self.link)
        }
    }
}

/// One shadow table.
#[derive(Debug)]
pub(crate) struct ShadowTable {
    /// Its key (valid while live).
    pub(crate) key: TableKey,
    /// The host frame holding the EPT-format table.
    pub(crate) frame: HostPa,
    /// Whether the arena slot is in use.
    pub(crate) live: bool,
    /// Per-entry metadata (always 512 long).
    pub(crate) slots: Box<[Slot]>,
    /// Number of filled slots.
    pub(crate) filled: u16,
    /// Every (table, index) whose entry points here.
    pub(crate) parents: Vec<(TableId, u16)>,
    /// The root whose top-level table this is.
    pub(crate) root: Option<RootId>,
    /// Position in the by-GFN reverse map (mirroring tables).
    pub(crate) gfn_position: u32,
    /// Resync epoch: every entry of this table and of the tables below it
    /// reflects L1 memory no older than INVEPT number `synced_at`
    /// (`u64::MAX` for direct tables, which hold no EPT12 state).
    pub(crate) synced_at: u64,
    /// Traversal stamp (visited marks without a set).
    pub(crate) stamp: u64,
}

impl ShadowTable {
    /// The slot at `index` (masked to 0..512).
    pub(crate) fn slot(&self, index: usize) -> Slot {
        self.slots
            .get(index & (ENTRIES - 1))
            .copied()
            .unwrap_or(Slot::EMPTY)
    }

    /// The slot at `index` for writing (masked to 0..512).
    pub(crate) fn slot_mut(&mut self, index: usize) -> &mut Slot {
        // `slots` always has 512 elements and the index is masked.
        &mut self.slots[index & (ENTRIES - 1)]
    }

    /// Whether no root reaches this table through it or its parents.
    pub(crate) fn is_orphan(&self) -> bool {
        self.parents.is_empty() && self.root.is_none()
    }
}

/// The arena plus the indexes over it.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    /// Every table ever allocated; freed ones have `live == false` and are
    /// on `free`.
    pub(crate) arena: Vec<ShadowTable>,
    /// Ids of freed arena slots.
    pub(crate) free: Vec<TableId>,
    /// Live tables by key.
    pub(crate) by_key: HashMap<TableKey, TableId>,
    /// Mirroring tables by the EPT12 page they were built from: what "L1
    /// wrote this page" must resync.
    pub(crate) by_gfn: HashMap<L1Gfn, Vec<TableId>>,
    /// Live tables no root reaches (kept only by policies that retain them).
    pub(crate) orphans: HashSet<TableId>,
    /// Number of live tables (= shadow frames in use).
    pub(crate) live: usize,
}

impl Tables {
    /// The table `id`. Ids come only from the engine itself.
    pub(crate) fn get(&self, id: TableId) -> &ShadowTable {
        &self.arena[id as usize]
    }

    /// The table `id`, for writing.
    pub(crate) fn get_mut(&mut self, id: TableId) -> &mut ShadowTable {
        &mut self.arena[id as usize]
    }

    /// Whether `id` names a live table.
    pub(crate) fn is_live(&self, id: TableId) -> bool {
        self.arena.get(id as usize).is_some_and(|table| table.live)
    }

    /// Registers a new, empty table in `frame` under `key`.
    pub(crate) fn insert(&mut self, key: TableKey, frame: HostPa, synced_at: u64) -> TableId {
        let id = if let Some(id) = self.free.pop() {
            let table = self.get_mut(id);
            table.key = key;
            table.frame = frame;
            table.live = true;
            table.slots.fill(Slot::EMPTY);
            table.filled = 0;
            table.parents.clear();
            table.root = None;
            table.synced_at = synced_at;
            table.stamp = 0;
            id
        } else {
            let id = self.arena.len() as TableId;
            self.arena.push(ShadowTable {
                key,
                frame,
                live: true,
                slots: vec![Slot::EMPTY; ENTRIES].into_boxed_slice(),
                filled: 0,
                parents: Vec::new(),
                root: None,
                gfn_position: 0,
                synced_at,
                stamp: 0,
            });
            id
        };
        self.by_key.insert(key, id);
        if !key.role.direct {
            let list = self.by_gfn.entry(key.gfn).or_default();
            let position = list.len() as u32;
            list.push(id);
            self.get_mut(id).gfn_position = position;
        }
        self.live += 1;
        id
    }

    /// Unregisters table `id` (which must have no parents and no root) and
    /// returns its frame. Its slots must already be emptied of links.
    pub(crate) fn remove(&mut self, id: TableId) -> HostPa {
        let (key, frame, position) = {
            let table = self.get_mut(id);
            table.live = false;
            table.filled = 0;
            (table.key, table.frame, table.gfn_position)
        };
        if self.by_key.get(&key) == Some(&id) {
            self.by_key.remove(&key);
        }
        if !key.role.direct {
            let moved = self.by_gfn.get_mut(&key.gfn).and_then(|list| {
                let position = position as usize;
                if list.get(position) != Some(&id) {
                    return None;
                }
                list.swap_remove(position);
                list.get(position).copied().map(|moved| (moved, position))
            });
            if let Some((moved, position)) = moved {
                self.get_mut(moved).gfn_position = position as u32;
            }
            if self.by_gfn.get(&key.gfn).is_some_and(Vec::is_empty) {
                self.by_gfn.remove(&key.gfn);
            }
        }
        self.orphans.remove(&id);
        self.free.push(id);
        self.live -= 1;
        frame
    }

    /// Adds the back-reference "`(parent, index)` points to `child`" and
    /// returns its position in `child`'s parent list.
    pub(crate) fn add_parent(&mut self, child: TableId, parent: TableId, index: u16) -> u32 {
        let table = self.get_mut(child);
        let position = table.parents.len() as u32;
        table.parents.push((parent, index));
        self.orphans.remove(&child);
        position
    }

    /// Removes the back-reference at `position` of `child`'s parent list,
    /// fixing the position stored by the entry moved into its place.
    /// Returns whether `child` is now an orphan.
    pub(crate) fn remove_parent(&mut self, child: TableId, position: u32) -> bool {
        let position = position as usize;
        let table = self.get_mut(child);
        if position >= table.parents.len() {
            return table.is_orphan();
        }
        table.parents.swap_remove(position);
        let moved = table.parents.get(position).copied();
        let orphan = table.is_orphan();
        if let Some((parent, index)) = moved {
            self.get_mut(parent).slot_mut(usize::from(index)).back = position as u32;
        }
        orphan
    }

    /// Ids of the live tables.
    pub(crate) fn live_ids(&self) -> impl Iterator<Item = TableId> + '_ {
        self.arena
            .iter()
            .enumerate()
            .filter(|(_, table)| table.live)
            .map(|(id, _)| id as TableId)
    }
}
