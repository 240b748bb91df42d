//! Root-cache policies: hv's own and faithful models of KVM, Xen and the
//! 2018 "unload on every nested entry" behaviour, so that one engine can
//! replay one trace under each for an honest comparison.

use core::fmt;
use core::str::FromStr;

use hv_arch_vmx::ept::EptWalkContext;

/// How the engine caches EPT02 roots and reacts to invalidations.
///
/// All policies share the same shadow-table code (fills, A/D handling,
/// EPT01 composition); they differ only in what they keep and what they
/// throw away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// hv: many roots (default 64), shadow tables shared between roots,
    /// orphaned tables kept until the frame budget needs them, INVEPT
    /// resyncs precisely and flushes only roots that lost a translation.
    Hv,
    /// KVM nVMX: the current root plus 3 previous ones, keyed by (EPTP12
    /// bits 51:12, role); a root not cached is rebuilt and flushed: the
    /// rebuild reuses the shadow tables it reaches that other live roots
    /// share (KVM finds shadow pages by GFN and role), and builds the rest
    /// (unreachable tables are freed at once, never kept); INVEPT
    /// single-context frees the matching roots, global frees all.
    Kvm,
    /// Xen: 10 nested p2m tables keyed by (EPTP12 bits 51:12, role), LRU; a
    /// slot reused for another EPTP12 is emptied and flushed; any INVEPT
    /// drops the matching table (global: all); INVVPID and EPT01 changes
    /// flush every nested table; nothing is shared between tables.
    Xen,
    /// The 2018 KVM behaviour of the seed thread: every nested entry
    /// unloads the MMU (every shadow table) and flushes.
    FlushAlways,
}

impl Policy {
    /// Every policy, in the order benchmarks report them.
    pub const ALL: [Self; 4] = [Self::Hv, Self::Kvm, Self::Xen, Self::FlushAlways];

    /// The policy's name as the CLI and JSON output spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Hv => "hv",
            Self::Kvm => "kvm",
            Self::Xen => "xen",
            Self::FlushAlways => "flush-always",
        }
    }

    /// Default root-cache capacity: hv 64, KVM 4 (current + 3 previous,
    /// `KVM_MMU_NUM_PREV_ROOTS`), Xen 10 (`MAX_NESTEDP2M`), flush-always 1.
    pub const fn default_root_capacity(self) -> usize {
        match self {
            Self::Hv => 64,
            Self::Kvm => 4,
            Self::Xen => 10,
            Self::FlushAlways => 1,
        }
    }

    /// Whether shadow tables no root reaches are kept (to be relinked
    /// cheaply) until the frame budget needs them. Only hv keeps them; the
    /// others free them at once.
    pub(crate) const fn retains_orphans(self) -> bool {
        matches!(self, Self::Hv)
    }

    /// Whether roots share shadow tables built from the same EPT12 table.
    /// Xen keeps one private p2m per nested table.
    pub(crate) const fn shares_tables(self) -> bool {
        !matches!(self, Self::Xen)
    }

    /// Whether a root-cache miss always needs a TLB flush (a rebuilt root
    /// or a reused slot), rather than only when its frame was a root before.
    pub(crate) const fn flushes_on_miss(self) -> bool {
        !matches!(self, Self::Hv)
    }

    /// Whether INVEPT drops the matching roots instead of resyncing them.
    pub(crate) const fn invept_drops_roots(self) -> bool {
        !matches!(self, Self::Hv)
    }

    /// Whether the optional "L1 wrote this EPT12 page" notification is
    /// acted on (Xen does not write-protect EPT12 pages).
    pub(crate) const fn tracks_l1_writes(self) -> bool {
        !matches!(self, Self::Xen)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string that names no [`Policy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("unknown MMU policy (expected hv, kvm, xen or flush-always)")]
pub struct ParsePolicyError;

impl FromStr for Policy {
    type Err = ParsePolicyError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|policy| policy.name() == name)
            .ok_or(ParsePolicyError)
    }
}

/// Default frame budget: shadow-table frames the engine may hold at once.
pub const DEFAULT_FRAME_BUDGET: usize = 4096;

/// How an [`Mmu`](super::Mmu) is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MmuConfig {
    /// The caching policy.
    pub policy: Policy,
    /// Most EPT02 roots kept at once (at least 1 is used).
    pub root_capacity: usize,
    /// Most shadow-table frames held at once; the engine evicts unreachable
    /// tables, then least recently used roots, to stay within it.
    pub frame_budget: usize,
    /// What L1's EPT12 may contain (MAXPHYADDR, large pages, execute-only
    /// support): the EPT capabilities L0 exposes to L1.
    pub walk_context: EptWalkContext,
    /// VMCS12 enables mode-based execute control for EPT (bit 10 grants
    /// user-mode fetches).
    pub mode_based_execute: bool,
}

impl MmuConfig {
    /// The defaults for `policy`: its root capacity, a budget of
    /// [`DEFAULT_FRAME_BUDGET`] frames, mode-based execute control as in
    /// `walk_context`.
    pub const fn new(policy: Policy, walk_context: EptWalkContext) -> Self {
        Self {
            policy,
            root_capacity: policy.default_root_capacity(),
            frame_budget: DEFAULT_FRAME_BUDGET,
            walk_context,
            mode_based_execute: walk_context.mode_based_execute,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for policy in Policy::ALL {
            assert_eq!(policy.name().parse::<Policy>(), Ok(policy));
        }
        assert_eq!("flush-always".parse::<Policy>(), Ok(Policy::FlushAlways));
        assert_eq!("HV".parse::<Policy>(), Err(ParsePolicyError));
    }

    #[test]
    fn capacities_match_the_reference_systems() {
        assert_eq!(Policy::Hv.default_root_capacity(), 64);
        assert_eq!(Policy::Kvm.default_root_capacity(), 4);
        assert_eq!(Policy::Xen.default_root_capacity(), 10);
        assert_eq!(Policy::FlushAlways.default_root_capacity(), 1);
    }
}
