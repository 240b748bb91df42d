//! The VPID02 map: which VPID L2 runs with, and which INVVPIDs the flush
//! policy issues (SDM 29.1, 29.4.3.3; FACTS.md "Reference systems").
//!
//! L1 tags L2's translations with vpid12 (VMCS12's VPID). L0 runs L2 with a
//! VPID02 from a range it owns; the first VPID of the range is reserved for
//! L2s whose VMCS12 does not enable VPID ("no vpid12").
//!
//! | policy | VPID02 per | flush (single-context) at nested entry | L1's INVVPID becomes |
//! |---|---|---|---|
//! | `hv` | vpid12 (LRU over the range) | only a VPID02 newly (re)bound | same type on the mapped VPID02; all-context: one all-context if anything is mapped; unmapped vpid12: nothing |
//! | `kvm` | vCPU (one) | vpid12 differs from the last entry's | single-context on the VPID02 |
//! | `xen` | vCPU (one) | vpid12 differs from the last entry's | all-context |
//! | `flush-always` | vCPU (one) | every nested entry | single-context on the VPID02 |
//! | any, VMCS12 without VPID | reserved VPID02 | every nested entry | (VPID 0 is never invalidated by INVVPID) |
//!
//! Without VPID in VMCS12, entries and exits invalidate VPID 0's mappings
//! (SDM 29.4.3.3). L2 then runs on the reserved VPID02, which nothing else
//! uses, and it is flushed before every nested entry: that is the only
//! moment its stale mappings could be used, so no flush is needed at the
//! exit as well.

use hv_arch_vmx::invalidation::InvvpidType;
use hv_mmu::Policy;

use super::alloc::collections::BTreeMap;
use super::alloc::vec::Vec;

/// The VPIDs L0 gives L2s: `first..=last`. `first` is reserved for VMCS12s
/// without VPID; the others are mapped to vpid12s.
///
/// Contract: when the [`Vpid02Map`] is created, no translation tagged with
/// a VPID of the range is cached (the platform never used them, or flushed
/// them once with INVVPID). The `hv` policy relies on it: a VPID02 bound for
/// the first time needs no flush; one rebound after eviction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vpid02Range {
    first: u16,
    last: u16,
}

/// A VPID02 range that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Vpid02RangeError {
    /// VPID 0 is VMX root operation's; VM entry refuses it (SDM 27.2.1.1).
    #[error("the VPID02 range may not contain VPID 0")]
    ContainsZero,
    /// The range needs the reserved VPID plus at least one more.
    #[error("the VPID02 range {first}..={last} holds fewer than two VPIDs")]
    TooSmall {
        /// First VPID.
        first: u16,
        /// Last VPID.
        last: u16,
    },
}

impl Vpid02Range {
    /// `first..=last`, which must not contain 0 and must hold at least two
    /// VPIDs.
    ///
    /// # Errors
    ///
    /// [`Vpid02RangeError`] otherwise.
    pub const fn new(first: u16, last: u16) -> Result<Self, Vpid02RangeError> {
        if first == 0 {
            return Err(Vpid02RangeError::ContainsZero);
        }
        if last <= first {
            return Err(Vpid02RangeError::TooSmall { first, last });
        }
        Ok(Self { first, last })
    }

    /// The first VPID.
    pub const fn first(self) -> u16 {
        self.first
    }

    /// The last VPID.
    pub const fn last(self) -> u16 {
        self.last
    }

    /// The VPID02 of L2s whose VMCS12 does not enable VPID.
    pub const fn without_vpid12(self) -> u16 {
        self.first
    }

    /// How many vpid12s can be mapped at once (the `hv` policy).
    pub const fn mappable(self) -> usize {
        (self.last - self.first) as usize
    }
}

/// One INVVPID to issue on the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vpid02Flush {
    /// The type.
    pub kind: InvvpidType,
    /// The VPID02 (ignored by all-context).
    pub vpid02: u16,
    /// The linear address (individual-address only).
    pub linear_address: u64,
}

impl Vpid02Flush {
    /// Single-context on `vpid02`.
    const fn single(vpid02: u16) -> Self {
        Self {
            kind: InvvpidType::SingleContext,
            vpid02,
            linear_address: 0,
        }
    }
}

/// What a nested entry with a given vpid12 needs: computed by
/// [`Vpid02Map::plan_entry`] without changing the map, applied by
/// [`Vpid02Map::commit`] once the entry really happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vpid02Entry {
    /// The VPID02 L2 runs with.
    pub vpid02: u16,
    /// Flush this VPID02 (single-context) before the entry.
    pub flush: bool,
    vpid12: Option<u16>,
    bind: Bind,
}

/// How the `hv` map changes at commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Bind {
    /// Nothing (other policies, no vpid12) or only an LRU touch.
    Keep,
    /// Take a free VPID02.
    Free,
    /// Evict the least recently used vpid12.
    Evict(u16),
}

/// A vpid12's binding in the `hv` map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Binding {
    vpid02: u16,
    stamp: u64,
}

/// The VPID02 map and VPID flush policy of one vCPU. See the [module
/// documentation](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vpid02Map {
    policy: Policy,
    range: Vpid02Range,
    /// `hv`: vpid12 -> VPID02 with its LRU stamp.
    bindings: BTreeMap<u16, Binding>,
    /// `hv`: LRU stamp -> vpid12.
    by_age: BTreeMap<u64, u16>,
    /// `hv`: VPID02s never bound or freed, lowest last.
    free: Vec<u16>,
    stamp: u64,
    /// `kvm`/`xen`: vpid12 of the last nested entry with VPID.
    last_vpid12: Option<u16>,
}

impl Vpid02Map {
    /// An empty map over `range` for `policy`.
    pub fn new(policy: Policy, range: Vpid02Range) -> Self {
        let free = if policy == Policy::Hv {
            (range.first + 1..=range.last).rev().collect()
        } else {
            Vec::new()
        };
        Self {
            policy,
            range,
            bindings: BTreeMap::new(),
            by_age: BTreeMap::new(),
            free,
            stamp: 0,
            last_vpid12: None,
        }
    }

    /// The range.
    pub const fn range(&self) -> Vpid02Range {
        self.range
    }

    /// The one VPID02 of the `kvm`, `xen` and `flush-always` policies.
    const fn shared(&self) -> u16 {
        self.range.first + 1
    }

    /// The VPID02 `vpid12` is mapped to now (`hv`), or the shared VPID02
    /// (other policies).
    pub fn vpid02_of(&self, vpid12: u16) -> Option<u16> {
        match self.policy {
            Policy::Hv => self.bindings.get(&vpid12).map(|binding| binding.vpid02),
            Policy::Kvm | Policy::Xen | Policy::FlushAlways => Some(self.shared()),
        }
    }

    /// vpid12s mapped now (`hv`; 0 for the other policies).
    pub fn mapped(&self) -> usize {
        self.bindings.len()
    }

    /// What a nested entry with `vpid12` (`None`: VMCS12 without VPID)
    /// needs. Changes nothing.
    pub fn plan_entry(&self, vpid12: Option<u16>) -> Vpid02Entry {
        let Some(vpid) = vpid12 else {
            // SDM 29.4.3.3: without VPID, every entry invalidates VPID 0's
            // mappings.
            return Vpid02Entry {
                vpid02: self.range.without_vpid12(),
                flush: true,
                vpid12,
                bind: Bind::Keep,
            };
        };
        let (vpid02, flush, bind) = match self.policy {
            Policy::Hv => {
                if let Some(binding) = self.bindings.get(&vpid) {
                    (binding.vpid02, false, Bind::Keep)
                } else if let Some(&vpid02) = self.free.last() {
                    // Never used since the map was created: nothing is
                    // cached under it (see `Vpid02Range`).
                    (vpid02, false, Bind::Free)
                } else {
                    // The range has at least one mappable VPID, so a full
                    // map has an oldest binding.
                    let (victim, vpid02) = self
                        .by_age
                        .first_key_value()
                        .and_then(|(_, victim)| {
                            self.bindings.get(victim).map(|b| (*victim, b.vpid02))
                        })
                        .unwrap_or((vpid, self.shared()));
                    (vpid02, true, Bind::Evict(victim))
                }
            }
            // KVM nested_vmx_transition_tlb_flush; Xen nvmx_vmenter.
            Policy::Kvm | Policy::Xen => {
                (self.shared(), self.last_vpid12 != Some(vpid), Bind::Keep)
            }
            Policy::FlushAlways => (self.shared(), true, Bind::Keep),
        };
        Vpid02Entry {
            vpid02,
            flush,
            vpid12,
            bind,
        }
    }

    /// Applies `entry` (from [`Self::plan_entry`] on this map, unchanged
    /// since): the nested entry happens.
    pub fn commit(&mut self, entry: Vpid02Entry) {
        let Some(vpid12) = entry.vpid12 else {
            return;
        };
        match self.policy {
            Policy::Hv => {
                match entry.bind {
                    Bind::Keep => {}
                    Bind::Free => {
                        self.free.pop();
                    }
                    Bind::Evict(victim) => {
                        if let Some(old) = self.bindings.remove(&victim) {
                            self.by_age.remove(&old.stamp);
                            tracing::debug!(victim, vpid02 = old.vpid02, "VPID02 rebound");
                        }
                    }
                }
                self.stamp += 1;
                let stamp = self.stamp;
                if let Some(old) = self.bindings.insert(
                    vpid12,
                    Binding {
                        vpid02: entry.vpid02,
                        stamp,
                    },
                ) {
                    self.by_age.remove(&old.stamp);
                }
                self.by_age.insert(stamp, vpid12);
            }
            Policy::Kvm | Policy::Xen => self.last_vpid12 = Some(vpid12),
            Policy::FlushAlways => {}
        }
    }

    /// What L1's INVVPID of type `kind` for `vpid12` (and `linear_address`
    /// for individual-address) becomes on the platform: at most one
    /// INVVPID. L1's INVVPID never concerns VPID 0 (SDM 31.3 INVVPID), so
    /// the reserved VPID02 is never named.
    pub fn invvpid(
        &self,
        kind: InvvpidType,
        vpid12: u16,
        linear_address: u64,
    ) -> Option<Vpid02Flush> {
        match self.policy {
            Policy::Hv => match kind {
                InvvpidType::AllContext => (!self.bindings.is_empty()).then_some(Vpid02Flush {
                    kind,
                    vpid02: 0,
                    linear_address: 0,
                }),
                InvvpidType::IndividualAddress
                | InvvpidType::SingleContext
                | InvvpidType::SingleContextRetainingGlobals => {
                    self.bindings.get(&vpid12).map(|binding| Vpid02Flush {
                        kind,
                        vpid02: binding.vpid02,
                        linear_address: if kind == InvvpidType::IndividualAddress {
                            linear_address
                        } else {
                            0
                        },
                    })
                }
            },
            Policy::Kvm | Policy::FlushAlways => Some(Vpid02Flush::single(self.shared())),
            Policy::Xen => Some(Vpid02Flush {
                kind: InvvpidType::AllContext,
                vpid02: 0,
                linear_address: 0,
            }),
        }
    }
}
