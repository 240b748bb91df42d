//! The model's TLB: combined mappings (linear -> host physical) tagged by
//! VPID02 and the EPTP02 root address, as a processor with VPID and EPT
//! caches them (SDM 29.4.1), with the invalidations of SDM 29.4.3.

extern crate alloc;

use alloc::collections::BTreeMap;

use hv_arch_vmx::ept::EptPermissions;

use super::reference::L1Tag;

/// What a combined mapping is tagged and indexed with (SDM 29.4.1: VPID,
/// EPTRTA = EPTP bits 51:12, and the linear page; PCIDs are not modelled).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TlbKey {
    /// VMCS02's VPID (0 when VPID is off in VMCS02).
    pub vpid02: u16,
    /// EPTP02 bits 51:12.
    pub eptp02_root: u64,
    /// The linear page number (linear address >> 12).
    pub linear_page: u64,
}

/// Where a cached mapping came from: what the model's L1 reference knew at
/// the fill, for the stale check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Provenance {
    /// The L1 tag of the L2 that was running.
    pub tag: L1Tag,
    /// The L2 guest-physical page the linear page mapped to.
    pub l2_gpa_page: u64,
    /// The L1 guest-physical page the L2 page mapped to, through EPT12 as
    /// it was at the fill (the L2 page itself without EPT in VMCS12), if
    /// EPT12 mapped it.
    pub l1_gpa_page: Option<u64>,
    /// The model's event counter at the fill.
    pub filled_at: u64,
}

/// A cached combined mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TlbEntry {
    /// Host-physical page address.
    pub host_page: u64,
    /// Rights of the EPT02 walk.
    pub permissions: EptPermissions,
    /// Whether L2's paging allowed writes.
    pub writable: bool,
    /// What the fill was derived from.
    pub provenance: Provenance,
}

/// Counters of TLB activity (exact counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlbStats {
    /// Accesses completed from a cached mapping.
    pub hits: u64,
    /// Accesses that walked (L2 paging, then EPT02).
    pub misses: u64,
    /// Mappings inserted.
    pub fills: u64,
    /// Mappings removed by an invalidation.
    pub invalidated: u64,
}

/// The TLB. Unbounded: the model never evicts on its own, so every stale
/// translation a missing flush leaves is still there to be found.
#[derive(Clone, Debug, Default)]
pub struct Tlb {
    entries: BTreeMap<TlbKey, TlbEntry>,
    stats: TlbStats,
}

impl Tlb {
    /// The mapping for `key`, if cached.
    pub fn lookup(&self, key: &TlbKey) -> Option<&TlbEntry> {
        self.entries.get(key)
    }

    /// Caches `entry` for `key`.
    pub fn insert(&mut self, key: TlbKey, entry: TlbEntry) {
        self.stats.fills += 1;
        self.entries.insert(key, entry);
    }

    /// Counts a hit.
    pub const fn count_hit(&mut self) {
        self.stats.hits += 1;
    }

    /// Counts a miss.
    pub const fn count_miss(&mut self) {
        self.stats.misses += 1;
    }

    /// Mappings cached now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The counters.
    pub const fn stats(&self) -> TlbStats {
        self.stats
    }

    /// Removes every mapping `remove` selects.
    fn invalidate(&mut self, mut remove: impl FnMut(&TlbKey) -> bool) {
        let before = self.entries.len();
        self.entries.retain(|key, _| !remove(key));
        self.stats.invalidated += (before - self.entries.len()) as u64;
    }

    /// INVEPT single-context (SDM 29.4.3.1): mappings derived from the EPT
    /// root `eptp02_root`, for every VPID.
    pub fn invept_single_context(&mut self, eptp02_root: u64) {
        self.invalidate(|key| key.eptp02_root == eptp02_root);
    }

    /// INVEPT all-context: mappings derived from every EPTP.
    pub fn invept_global(&mut self) {
        self.invalidate(|_| true);
    }

    /// INVVPID individual-address (SDM 29.4.3.3): `vpid02`'s mappings of
    /// the linear page, for every EPTRTA.
    pub fn invvpid_individual(&mut self, vpid02: u16, linear_page: u64) {
        self.invalidate(|key| key.vpid02 == vpid02 && key.linear_page == linear_page);
    }

    /// INVVPID single-context, and single-context retaining globals (the
    /// model has no global pages): every mapping of `vpid02`.
    pub fn invvpid_single_context(&mut self, vpid02: u16) {
        self.invalidate(|key| key.vpid02 == vpid02);
    }

    /// INVVPID all-context: mappings of every VPID except 0.
    pub fn invvpid_all_context(&mut self) {
        self.invalidate(|key| key.vpid02 != 0);
    }

    /// An EPT violation at a linear page invalidates the mappings that
    /// would be used for it (SDM 29.4.3.1, "EPT violations"): under the
    /// current VPID and EPTRTA.
    pub fn invalidate_page(&mut self, key: &TlbKey) {
        if self.entries.remove(key).is_some() {
            self.stats.invalidated += 1;
        }
    }
}
