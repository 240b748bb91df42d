//! The root cache: EPTP12 (+ role) -> EPT02 root, with O(1) lookup and
//! LRU order by use stamps.
//!
//! The key is the EPTP12's root address (bits 51:12) and the role. Bits
//! 11:0 other than the role (the paging-structure memory type, bit 7) do
//! not change translations, so EPTP12s that differ only there share a root;
//! single-context INVEPT likewise matches on bits 51:12 (SDM 29.4.3.1).

use alloc::vec::Vec;

use hashbrown::HashMap;

use hv_arch_vmx::ept::Eptp;

use crate::walk::WalkConfig;

use super::table::{Role, TableId};

/// Index of a root in the cache's arena.
pub(crate) type RootId = u32;

/// What identifies a root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RootKey {
    /// EPTP12 bits 51:12.
    pub(crate) root_address: u64,
    /// Walk parameters from the EPTP12 and VMCS12.
    pub(crate) role: Role,
}

/// One cached EPT02 root.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Root {
    /// Its key.
    pub(crate) key: RootKey,
    /// The EPTP12 last switched to with this key (full value).
    pub(crate) eptp12: Eptp,
    /// How walks from this EPTP12 go.
    pub(crate) config: WalkConfig,
    /// The top-level shadow table.
    pub(crate) table: TableId,
    /// Hardware may cache a translation of this root that was removed or
    /// reduced since its last flush.
    pub(crate) needs_flush: bool,
    /// Resync epoch of this root's last INVEPT (or of its creation).
    pub(crate) invept_at: u64,
    /// LRU stamp: larger is more recent.
    pub(crate) last_used: u64,
}

/// The cache.
#[derive(Debug, Default)]
pub(crate) struct Roots {
    arena: Vec<Option<Root>>,
    free: Vec<RootId>,
    index: HashMap<RootKey, RootId>,
    tick: u64,
}

impl Roots {
    /// Number of roots.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// The root with `key`.
    pub(crate) fn find(&self, key: &RootKey) -> Option<RootId> {
        self.index.get(key).copied()
    }

    /// Root `id`, if live.
    pub(crate) fn get(&self, id: RootId) -> Option<&Root> {
        self.arena.get(id as usize).and_then(Option::as_ref)
    }

    /// Root `id`, if live, for writing.
    pub(crate) fn get_mut(&mut self, id: RootId) -> Option<&mut Root> {
        self.arena.get_mut(id as usize).and_then(Option::as_mut)
    }

    /// Marks `id` most recently used.
    pub(crate) fn touch(&mut self, id: RootId) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(root) = self.get_mut(id) {
            root.last_used = tick;
        }
    }

    /// The id the next [`Roots::insert`] will use.
    pub(crate) fn next_id(&self) -> RootId {
        self.free
            .last()
            .copied()
            .unwrap_or(self.arena.len() as RootId)
    }

    /// Adds `root` (most recently used) and returns its id.
    pub(crate) fn insert(&mut self, mut root: Root) -> RootId {
        self.tick += 1;
        root.last_used = self.tick;
        let key = root.key;
        let id = if let Some(id) = self.free.pop() {
            if let Some(slot) = self.arena.get_mut(id as usize) {
                *slot = Some(root);
            }
            id
        } else {
            self.arena.push(Some(root));
            (self.arena.len() - 1) as RootId
        };
        self.index.insert(key, id);
        id
    }

    /// Removes root `id` and returns it.
    pub(crate) fn remove(&mut self, id: RootId) -> Option<Root> {
        let root = self.arena.get_mut(id as usize)?.take()?;
        self.index.remove(&root.key);
        self.free.push(id);
        Some(root)
    }

    /// The least recently used root other than `except`.
    pub(crate) fn least_recently_used(&self, except: Option<RootId>) -> Option<RootId> {
        self.iter()
            .filter(|(id, _)| Some(*id) != except)
            .min_by_key(|(_, root)| root.last_used)
            .map(|(id, _)| id)
    }

    /// Every root with its id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (RootId, &Root)> + '_ {
        self.arena
            .iter()
            .enumerate()
            .filter_map(|(id, root)| root.as_ref().map(|root| (id as RootId, root)))
    }

    /// Ids of every root.
    pub(crate) fn ids(&self) -> Vec<RootId> {
        self.iter().map(|(id, _)| id).collect()
    }
}
