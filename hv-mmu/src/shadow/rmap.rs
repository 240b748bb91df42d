//! Reverse map from an L1 page to the shadow leaves that map it, so that an
//! EPT01 change ("L0 moved or protected this L1 page") zaps exactly those
//! leaves.
//!
//! A leaf is filed under the L1 region it maps: its first L1 GFN and its
//! size. The leaves covering an L1 page are found by looking up the aligned
//! region at each size at least as large (at most three lookups); the
//! leaves inside a large page by looking up its sub-pages or, when there
//! are fewer targets than sub-pages, by one pass over the map. The
//! "EPT12 table page -> shadow tables" direction lives in the table arena
//! ([`super::table::Tables::by_gfn`]).

use alloc::vec::Vec;

use hashbrown::HashMap;

use crate::addr::{L1Gfn, PageSize};

use super::table::TableId;

/// Where a leaf maps: the L1 region's first page and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TargetKey {
    /// First L1 page of the region (aligned to `size`).
    pub(crate) gfn: L1Gfn,
    /// Size of the leaf.
    pub(crate) size: PageSize,
}

impl TargetKey {
    /// The key of a `size` leaf whose region contains `gfn`.
    pub(crate) const fn containing(gfn: L1Gfn, size: PageSize) -> Self {
        let pages = size.bytes() >> 12;
        Self {
            gfn: L1Gfn::new(gfn.raw() & !(pages - 1)),
            size,
        }
    }

    /// Whether this region lies inside `page` and is smaller than it.
    pub(crate) fn is_strictly_inside(self, page: Self) -> bool {
        let pages = page.size.bytes() >> 12;
        self.size < page.size && self.gfn.raw().wrapping_sub(page.gfn.raw()) < pages
    }
}

/// The leaves filed under one target: almost always exactly one, so the
/// first is stored inline (no allocation per fill).
#[derive(Debug)]
enum Leaves {
    /// One leaf.
    One((TableId, u16)),
    /// Several leaves (L1 maps one page at several L2 addresses).
    Many(Vec<(TableId, u16)>),
}

impl Leaves {
    fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Many(list) => list.len(),
        }
    }

    fn push(&mut self, leaf: (TableId, u16)) {
        match self {
            Self::One(first) => *self = Self::Many(alloc::vec![*first, leaf]),
            Self::Many(list) => list.push(leaf),
        }
    }

    fn last(&self) -> Option<(TableId, u16)> {
        match self {
            Self::One(leaf) => Some(*leaf),
            Self::Many(list) => list.last().copied(),
        }
    }
}

/// Leaves by target.
#[derive(Debug, Default)]
pub(crate) struct Targets {
    map: HashMap<TargetKey, Leaves>,
}

impl Targets {
    /// Files the leaf at `(table, index)` under `key`; returns its position.
    pub(crate) fn insert(&mut self, key: TargetKey, table: TableId, index: u16) -> u32 {
        match self.map.entry(key) {
            hashbrown::hash_map::Entry::Occupied(mut entry) => {
                let leaves = entry.get_mut();
                let position = leaves.len() as u32;
                leaves.push((table, index));
                position
            }
            hashbrown::hash_map::Entry::Vacant(entry) => {
                entry.insert(Leaves::One((table, index)));
                0
            }
        }
    }

    /// Removes the leaf filed at `position` under `key`. Returns the leaf
    /// moved into that position (whose stored position must be updated).
    pub(crate) fn remove(&mut self, key: TargetKey, position: u32) -> Option<(TableId, u16)> {
        let position = position as usize;
        let leaves = self.map.get_mut(&key)?;
        let (moved, empty) = match leaves {
            Leaves::One(_) => (None, position == 0),
            Leaves::Many(list) => {
                if position >= list.len() {
                    return None;
                }
                list.swap_remove(position);
                (list.get(position).copied(), list.is_empty())
            }
        };
        if empty {
            self.map.remove(&key);
        }
        moved
    }

    /// One leaf filed under `key`, if any.
    pub(crate) fn any(&self, key: TargetKey) -> Option<(TableId, u16)> {
        self.map.get(&key).and_then(Leaves::last)
    }

    /// Number of leaves filed under `key`.
    pub(crate) fn len(&self, key: TargetKey) -> usize {
        self.map.get(&key).map_or(0, Leaves::len)
    }

    /// Number of distinct targets with leaves.
    pub(crate) fn key_count(&self) -> usize {
        self.map.len()
    }

    /// The targets with leaves that lie inside `page` and are smaller than
    /// it (one pass over the map).
    pub(crate) fn keys_inside(&self, page: TargetKey) -> impl Iterator<Item = TargetKey> + '_ {
        self.map
            .keys()
            .copied()
            .filter(move |key| key.is_strictly_inside(page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containing_aligns_to_the_size() {
        let gfn = L1Gfn::new(0x4_0203);
        let [small, middle, large] = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G]
            .map(|size| TargetKey::containing(gfn, size));
        assert_eq!(small.gfn, gfn);
        assert_eq!(middle.gfn, L1Gfn::new(0x4_0200));
        assert_eq!(large.gfn, L1Gfn::new(0x4_0000));
        assert_eq!(large.size, PageSize::Size1G);
    }

    #[test]
    fn strictly_inside_means_smaller_and_within_the_page() {
        let page = TargetKey::containing(L1Gfn::new(0x4_0000), PageSize::Size1G);
        let first = TargetKey::containing(L1Gfn::new(0x4_0000), PageSize::Size4K);
        let last = TargetKey::containing(L1Gfn::new(0x7_FFFF), PageSize::Size4K);
        let middle = TargetKey::containing(L1Gfn::new(0x5_0200), PageSize::Size2M);
        let after = TargetKey::containing(L1Gfn::new(0x8_0000), PageSize::Size4K);
        let before = TargetKey::containing(L1Gfn::new(0x3_FFFF), PageSize::Size4K);
        assert!(first.is_strictly_inside(page) && last.is_strictly_inside(page));
        assert!(middle.is_strictly_inside(page));
        assert!(!after.is_strictly_inside(page) && !before.is_strictly_inside(page));
        assert!(!page.is_strictly_inside(page), "same size is not inside");
    }

    #[test]
    fn remove_reports_the_moved_leaf() {
        let mut targets = Targets::default();
        let key = TargetKey::containing(L1Gfn::new(7), PageSize::Size4K);
        assert_eq!(targets.insert(key, 1, 10), 0);
        assert_eq!(targets.insert(key, 2, 20), 1);
        assert_eq!(targets.insert(key, 3, 30), 2);
        assert_eq!(targets.remove(key, 0), Some((3, 30)));
        assert_eq!(targets.len(key), 2);
        assert_eq!(targets.remove(key, 1), None);
        assert_eq!(targets.remove(key, 5), None);
        assert_eq!(targets.remove(key, 0), None);
        assert_eq!(targets.any(key), None);
    }
}
