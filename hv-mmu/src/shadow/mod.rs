//! The shadow EPT02 engine: builds EPT02 from L1's EPT12 and L0's EPT01,
//! keeps many roots alive, resyncs them precisely and reports which need
//! an INVEPT.
//!
//! # Model
//!
//! - **Shadow tables** are real EPT-format tables in frames from the
//!   [`FrameAllocator`]. A table mirrors one EPT12 table and is keyed by
//!   (L1 GFN, level, role); every root that reaches that EPT12 table with
//!   the same role shares it (policy permitting). A non-leaf shadow entry
//!   carries the rights of its EPT12 entry (hardware ANDs them along the
//!   walk, SDM 29.3.3.2), so a shared table depends on its own EPT12 table
//!   only. A leaf carries EPT12-leaf ∩ EPT01 rights and, always, EPT01's
//!   memory type ([`Ept01Mapping::memory_type`]) with ignore-PAT set (L0
//!   knows the host's memory types; EPT12's memory type and L2's PAT are
//!   not used); its size is the smaller of the EPT12 and EPT01 pages. A
//!   large EPT12 page over smaller EPT01 pages is split through *direct*
//!   tables keyed by the L1 region they cover; the EPT12 leaf's rights go
//!   on the entry pointing to them.
//! - **EPT01 dirty bits**: L2 writes through EPT02 do not set EPT01's dirty
//!   flags (EPT02 has no A/D and is not EPT01). An L0 that tracks dirty L1
//!   pages must write-protect them through EPT01 and call
//!   [`Mmu::ept01_changed`] (the next L2 write then exits as
//!   [`FaultOutcome::Emulate`]), or use its own means.
//! - **A/D**: with EPTP12 A/D enabled, a leaf whose EPT12 entry is not dirty
//!   is filled without write permission, so the first write faults, the
//!   walker sets the dirty flag in EPT12 and the fill adds write.
//! - **Snapshots**: each filled entry of a mirroring table remembers the
//!   EPT12 entry it was built from. INVEPT and "L1 wrote this page" compare
//!   them with L1 memory: unchanged entries stay, entries that only gained
//!   rights are widened in place, everything else is zapped.
//! - **Flush tracking**: removing or reducing a translation marks every
//!   root that can reach the changed entry; [`Mmu::switch_to`], called
//!   before every entry to L2, reports and clears the mark
//!   ([`FaultOutcome::Filled`] reports it early without clearing it). A
//!   fault that ends in `Reflect` or `Emulate` changes no table: the fill is
//!   planned and validated before anything is touched. Adding translations
//!   never needs a flush, because an EPT violation already invalidates the
//!   faulting address's cached translations (SDM 29.4.3.1).
//! - **Resync epochs**: each INVEPT and each new root advances an epoch. A
//!   root records the epoch of its last INVEPT (or creation), a table the
//!   epoch it was last checked
//!   against; a table is linked under another only if it is at least as
//!   fresh, otherwise it (and what lies below it) is resynced first. So a
//!   shared or orphaned table can never bring stale EPT12 state into a root
//!   after that root's INVEPT.
//!
//! # Concurrency model
//!
//! One [`Mmu`] serves one vCPU (like KVM's per-vCPU `guest_mmu`): all
//! methods take `&mut self`, and "needs a flush" is per root for that vCPU.
//! A platform running several vCPUs of one L1 gives each its own `Mmu`, or
//! serialises access and flushes on every vCPU that used a marked root.

mod evict;
mod fill;
mod flush;
mod policy;
mod rmap;
mod roots;
mod sync;
mod table;

use core::fmt;

use hashbrown::HashSet;
use hv_arch_vmx::ept::{EptMemoryType, Eptp};

use crate::addr::{HostPa, L1Gfn, L1Gpa, L2Gpa, PageSize};
use crate::env::{Ept01, FrameAllocator, L1Memory};
use crate::walk::{self, Access, WalkConfig, WalkConfigError, WalkFault};

#[cfg(doc)]
use crate::env::Ept01Mapping;

pub use policy::{DEFAULT_FRAME_BUDGET, MmuConfig, ParsePolicyError, Policy};

use rmap::Targets;
use roots::{Root, RootId, RootKey, Roots};
use table::{Role, TableKey, Tables};

/// What [`Mmu::switch_to`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RootSwitch {
    /// The EPTP02 to load into the VMCS.
    pub eptp02: Eptp,
    /// The root was cached (nothing rebuilt).
    pub hit: bool,
    /// Issue INVEPT single-context on `eptp02` before entering L2: hardware
    /// may hold translations this root no longer has.
    pub flush_before_entry: bool,
}

/// What [`Mmu::handle_ept_violation`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultOutcome {
    /// EPT02 now maps the address: resume L2 (through [`Mmu::switch_to`],
    /// like every entry).
    Filled {
        /// Size of the shadow leaf written.
        size: PageSize,
        /// The current root has a flush pending (for instance a stale
        /// translation was replaced on the way): the `switch_to` before
        /// resuming reports it as [`RootSwitch::flush_before_entry`], which
        /// is what clears it. This field is the same fact reported early;
        /// a caller that follows the `switch_to` protocol need not act on
        /// it (acting on both only costs a redundant INVEPT).
        flush_before_resume: bool,
    },
    /// L1 must see this EPT violation or misconfiguration. EPT02 was not
    /// changed (the walk may have set EPT12 accessed/dirty flags, as
    /// hardware would).
    Reflect(WalkFault),
    /// EPT12 maps the address to L1 memory that EPT01 does not map, or maps
    /// without the right the access needs, or the composition cannot be
    /// expressed as an EPT02 leaf: L0's business (emulate MMIO, handle its
    /// own write protection, ...). EPT02 was not changed; flushes pending
    /// from earlier operations are still reported by the next
    /// [`Mmu::switch_to`].
    Emulate {
        /// The L1 address the access targets.
        l1_gpa: L1Gpa,
    },
}

/// Why an engine operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum MmuError {
    /// A fault arrived with no root loaded ([`Mmu::switch_to`] first).
    #[error("no EPT02 root is loaded")]
    NoCurrentRoot,
    /// Even after evicting everything allowed, no frame was available for a
    /// shadow table.
    #[error("out of shadow-table frames")]
    OutOfFrames,
    /// The EPTP12 asks for a walk hv cannot do.
    #[error("invalid EPTP12: {0}")]
    InvalidEptp12(#[from] WalkConfigError),
}

/// Counters (exact counts, never times).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MmuStats {
    /// EPT02 violations that filled a shadow leaf.
    pub fills: u64,
    /// EPT02 violations reflected to L1.
    pub reflected: u64,
    /// EPT02 violations left to L0 (EPT01 does not allow the access).
    pub emulated: u64,
    /// Switches to a cached root.
    pub root_hits: u64,
    /// Switches that built a new root.
    pub root_misses: u64,
    /// Roots cached now.
    pub roots_live: usize,
    /// Shadow tables live now.
    pub tables_live: usize,
    /// Shadow-table frames held now.
    pub frames_in_use: usize,
    /// INVEPTs requested from the caller: switches that returned
    /// `flush_before_entry` true (`flush_before_resume` reports a flush the
    /// next switch requests and is not counted again).
    pub flushes: u64,
    /// Shadow tables compared against L1 memory (INVEPT, L1 writes, stale
    /// tables relinked).
    pub resyncs: u64,
    /// Shadow entries removed or reduced because EPT12 or EPT01 changed
    /// (or because a policy dropped a loaded root).
    pub entries_zapped: u64,
    /// Shadow tables freed.
    pub tables_freed: u64,
    /// Roots evicted (capacity or budget) plus unreachable tables evicted
    /// for the budget.
    pub evictions: u64,
    /// Freed root frames remembered now (hardware may hold translations
    /// tagged with them); at most [`Mmu::remembered_root_frames_limit`].
    pub remembered_root_frames: usize,
}

/// Most freed root frames an [`Mmu`] remembers, whatever its frame budget
/// (see [`Mmu::remembered_root_frames_limit`]): 64 Ki entries, about 1 MiB
/// of metadata at worst.
pub const MAX_REMEMBERED_ROOT_FRAMES: usize = 1 << 16;

/// The EPT02 engine for one vCPU. See the [module documentation](self).
///
/// # Entering L2: the flush protocol
///
/// Call [`Mmu::switch_to`] before **every** VM entry to L2: the first entry
/// after L1 runs, and every resume after an exit L0 handled itself (an EPT
/// violation whatever its [`FaultOutcome`], MMIO emulation, an interrupt,
/// ...). For a cached root it is a lookup. It reports in
/// [`RootSwitch::flush_before_entry`] every flush still pending for that
/// root, however it arose (a fill that replaced or relinked entries, an
/// INVEPT resync, [`Mmu::ept01_changed`], a frame that was a root before,
/// a fill that failed with [`MmuError::OutOfFrames`] after changing
/// tables), and only reporting it there clears it. So a caller that follows
/// this protocol and issues INVEPT single-context on the returned EPTP02
/// whenever `flush_before_entry` is set never enters L2 with a stale
/// translation, and never lets L2 use a shadow-table frame that a stale
/// paging-structure cache entry still points to.
/// [`FaultOutcome::Filled::flush_before_resume`] reports the same pending
/// flush early and does not clear it.
pub struct Mmu<F: FrameAllocator> {
    config: MmuConfig,
    frames: F,
    tables: Tables,
    targets: Targets,
    roots: Roots,
    current: Option<RootId>,
    /// Number of INVEPTs seen: the resync epoch.
    epoch: u64,
    /// Traversal stamp source.
    stamp: u64,
    /// Frames that were an EPTP02 root and have been freed: hardware may
    /// still hold translations tagged with them. At most
    /// [`Mmu::remembered_root_frames_limit`] entries.
    former_root_frames: HashSet<HostPa>,
    /// The set above overflowed and was forgotten: any frame may have been
    /// a root, so every new root is flushed before its first entry.
    former_root_frames_forgotten: bool,
    stats: MmuStats,
}

impl<F: FrameAllocator> fmt::Debug for Mmu<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mmu")
            .field("config", &self.config)
            .field("current", &self.current_root())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// EPTP02 for a shadow root in `frame` walked with `levels` levels:
/// write-back paging structures, no A/D (SDM 25.6.11).
const fn eptp02(frame: HostPa, levels: u8) -> Eptp {
    Eptp::from_raw(
        (frame.raw() & Eptp::ADDRESS_MASK)
            | EptMemoryType::WriteBack as u64
            | (((levels as u64).saturating_sub(1) & 0b111) << 3),
    )
}

impl<F: FrameAllocator> Mmu<F> {
    /// An engine with no roots, taking shadow-table frames from `frames`.
    pub fn new(config: MmuConfig, frames: F) -> Self {
        Self {
            config,
            frames,
            tables: Tables::default(),
            targets: Targets::default(),
            roots: Roots::default(),
            current: None,
            epoch: 0,
            stamp: 0,
            former_root_frames: HashSet::new(),
            former_root_frames_forgotten: false,
            stats: MmuStats::default(),
        }
    }

    /// The frame allocator: tests and the hardware engine read EPT02
    /// through it.
    pub fn frames(&self) -> &F {
        &self.frames
    }

    /// The configuration.
    pub fn config(&self) -> &MmuConfig {
        &self.config
    }

    /// The EPTP02 of the loaded root.
    pub fn current_root(&self) -> Option<Eptp> {
        self.current.and_then(|id| self.eptp02_of(id))
    }

    /// Every cached root as (EPTP12, EPTP02).
    pub fn live_roots(&self) -> impl Iterator<Item = (Eptp, Eptp)> + '_ {
        self.roots.iter().map(|(_, root)| {
            let frame = self.tables.get(root.table).frame;
            (root.eptp12, eptp02(frame, root.key.role.levels))
        })
    }

    /// The counters.
    pub fn stats(&self) -> MmuStats {
        MmuStats {
            roots_live: self.roots.len(),
            tables_live: self.tables.live,
            frames_in_use: self.tables.live,
            remembered_root_frames: self.former_root_frames.len(),
            ..self.stats
        }
    }

    /// EPTP02 of root `id`.
    fn eptp02_of(&self, id: RootId) -> Option<Eptp> {
        let root = self.roots.get(id)?;
        let frame = self.tables.get(root.table).frame;
        Some(eptp02(frame, root.key.role.levels))
    }

    /// Makes the root for `eptp12` current: before **every** VM entry to
    /// L2, including each resume after an exit L0 handled itself (see the
    /// [flush protocol](Mmu#entering-l2-the-flush-protocol)).
    ///
    /// A cached root is reused as is (no rebuild, no flush unless something
    /// it may have cached was removed since its last flush). Otherwise a new
    /// root is created, evicting the least recently used root beyond the
    /// capacity. `flush_before_entry` reports, and clears, every flush
    /// pending for the root.
    ///
    /// # Errors
    ///
    /// [`MmuError::InvalidEptp12`] for a walk length other than 4 or 5;
    /// [`MmuError::OutOfFrames`] if no frame can be found for the root table.
    pub fn switch_to(&mut self, eptp12: Eptp) -> Result<RootSwitch, MmuError> {
        let config = WalkConfig::new(
            eptp12,
            self.config.walk_context,
            self.config.mode_based_execute,
        )?;
        let key = RootKey {
            root_address: eptp12.root_address(),
            role: Role::of(config),
        };
        if self.config.policy == Policy::FlushAlways {
            // The 2018 behaviour: unload everything on every nested entry.
            self.drop_all_roots_and_tables();
        } else if let Some(id) = self.roots.find(&key) {
            self.roots.touch(id);
            let mut flush = false;
            if let Some(root) = self.roots.get_mut(id) {
                root.eptp12 = eptp12;
                flush = core::mem::take(&mut root.needs_flush);
            }
            self.current = Some(id);
            self.stats.root_hits += 1;
            if flush {
                self.stats.flushes += 1;
            }
            let eptp02 = self.eptp02_of(id).ok_or(MmuError::NoCurrentRoot)?;
            return Ok(RootSwitch {
                eptp02,
                hit: true,
                flush_before_entry: flush,
            });
        }
        self.stats.root_misses += 1;
        self.current = None;
        let capacity = self.config.root_capacity.max(1);
        while self.roots.len() >= capacity {
            let Some(victim) = self.roots.least_recently_used(None) else {
                break;
            };
            self.evict_root(victim);
        }
        let id = self.create_root(key, eptp12, config)?;
        self.current = Some(id);
        let mut flush = self.config.policy.flushes_on_miss();
        if let Some(root) = self.roots.get_mut(id) {
            flush |= core::mem::take(&mut root.needs_flush);
        }
        if flush {
            self.stats.flushes += 1;
        }
        let eptp02 = self.eptp02_of(id).ok_or(MmuError::NoCurrentRoot)?;
        tracing::debug!(
            eptp12 = eptp12.raw(),
            eptp02 = eptp02.raw(),
            "new EPT02 root"
        );
        Ok(RootSwitch {
            eptp02,
            hit: false,
            flush_before_entry: flush,
        })
    }

    /// Creates the root for `key` with an empty top-level table.
    fn create_root(
        &mut self,
        key: RootKey,
        eptp12: Eptp,
        config: WalkConfig,
    ) -> Result<RootId, MmuError> {
        let frame = self.allocate_frame()?;
        let owner = if self.config.policy.shares_tables() {
            0
        } else {
            self.roots.next_id() + 1
        };
        let table_key = TableKey {
            gfn: L1Gfn::new(key.root_address >> 12),
            level: key.role.levels,
            role: key.role,
            owner,
        };
        // A new root starts a resync epoch: the processor holds nothing for
        // its EPTRTA (SDM 29.4.1), so it must see EPT12 as L1 wrote it now,
        // not as another root's shadow tables remember it. L1 may rewrite a
        // table of an EPTP it retired (after INVEPT) and reuse the frame in
        // a new EPT without another INVEPT; every existing table this root
        // links is therefore resynced first (`find_or_create`).
        self.epoch += 1;
        // A top-level table is only ever a root's (no walk of the same role
        // reaches its level from below), so it is always new.
        let table = self.tables.insert(table_key, frame, self.epoch);
        // Hardware may hold translations tagged with this frame from when
        // it was another root's (SDM 29.4.1: cached mappings are tagged by
        // EPTRTA). Once the remembered set was forgotten, any frame may.
        let reused = self.former_root_frames.remove(&frame) || self.former_root_frames_forgotten;
        let id = self.roots.insert(Root {
            key,
            eptp12,
            config,
            table,
            needs_flush: reused,
            invept_at: self.epoch,
            last_used: 0,
        });
        self.tables.get_mut(table).root = Some(id);
        Ok(id)
    }

    /// Handles an EPT violation of EPT02 at `gpa` for `access`, on the
    /// current root: walks EPT12 (setting A/D flags as hardware would) and
    /// fills the shadow path, or says what else must happen.
    ///
    /// # Errors
    ///
    /// [`MmuError::NoCurrentRoot`] without a loaded root;
    /// [`MmuError::OutOfFrames`] when even emptying the current root leaves
    /// too few frames for one path.
    pub fn handle_ept_violation<M: L1Memory + ?Sized, E: Ept01 + ?Sized>(
        &mut self,
        memory: &mut M,
        ept01: &E,
        gpa: L2Gpa,
        access: Access,
    ) -> Result<FaultOutcome, MmuError> {
        let id = self.current.ok_or(MmuError::NoCurrentRoot)?;
        let root = *self.roots.get(id).ok_or(MmuError::NoCurrentRoot)?;
        let translation = match walk::walk(memory, root.eptp12, gpa, access, &root.config) {
            Ok(translation) => translation,
            Err(fault) => {
                self.stats.reflected += 1;
                tracing::trace!(gpa = gpa.raw(), ?fault, "EPT12 fault reflected");
                return Ok(FaultOutcome::Reflect(fault));
            }
        };
        // Everything is computed and validated before any table changes:
        // an Emulate outcome leaves EPT02 exactly as it was.
        let mbec = root.config.mode_based_execute;
        let plan = ept01
            .translate(translation.l1_gpa)
            .filter(|mapping| access.allowed_by(mapping.permissions.effective(mbec), mbec))
            .and_then(|mapping| self.plan_fill(id, gpa, &translation, mapping).ok());
        let Some(plan) = plan else {
            self.stats.emulated += 1;
            return Ok(FaultOutcome::Emulate {
                l1_gpa: translation.l1_gpa,
            });
        };
        let size = if let Ok(size) = self.fill(&*memory, &plan) {
            size
        } else {
            // Out of frames. Last resort: drop the current root's own
            // tables and retry once; the path needs at most `levels`
            // frames. If that fails too, the root keeps its flush mark for
            // the next `switch_to`.
            self.empty_root(id);
            self.free_orphans();
            self.fill(&*memory, &plan)
                .map_err(|fill::OutOfFrames| MmuError::OutOfFrames)?
        };
        self.stats.fills += 1;
        // Reported, not cleared: only `switch_to` clears the mark.
        let flush = self.roots.get(id).is_some_and(|root| root.needs_flush);
        tracing::trace!(gpa = gpa.raw(), ?size, flush, "EPT02 filled");
        Ok(FaultOutcome::Filled {
            size,
            flush_before_resume: flush,
        })
    }

    /// L1 executed INVEPT single-context for `eptp12` (bits 51:12 select the
    /// roots, SDM 29.4.3.1). hv resyncs every table those roots reach and
    /// zaps only changed entries; the other policies drop the roots.
    pub fn invept_single_context<M: L1Memory + ?Sized>(&mut self, memory: &M, eptp12: Eptp) {
        self.epoch += 1;
        let matching: alloc::vec::Vec<RootId> = self
            .roots
            .iter()
            .filter(|(_, root)| root.key.root_address == eptp12.root_address())
            .map(|(id, _)| id)
            .collect();
        tracing::debug!(
            eptp12 = eptp12.raw(),
            roots = matching.len(),
            "INVEPT single-context"
        );
        if self.config.policy.invept_drops_roots() {
            for id in matching {
                self.drop_root(id);
            }
        } else {
            self.resync_roots(memory, &matching);
        }
    }

    /// L1 executed INVEPT all-context: every root is resynced (hv) or
    /// dropped (the other policies).
    pub fn invept_global<M: L1Memory + ?Sized>(&mut self, memory: &M) {
        self.epoch += 1;
        tracing::debug!("INVEPT global");
        if self.config.policy.invept_drops_roots() {
            for id in self.roots.ids() {
                self.drop_root(id);
            }
        } else {
            self.resync_all(memory);
        }
    }

    /// L1 wrote the page `gfn` (for platforms that write-protect EPT12
    /// pages): resync the shadow tables built from it.
    pub fn l1_wrote<M: L1Memory + ?Sized>(&mut self, memory: &M, gfn: L1Gfn) {
        if self.config.policy.tracks_l1_writes() {
            self.resync_gfn(memory, gfn);
        }
    }

    /// L0 changed EPT01's translation of the `size`-aligned L1 page that
    /// contains `gfn` (remapped, protected, unmapped, new memory type): zaps
    /// every shadow leaf that maps any part of it, whatever the leaf's size
    /// (Xen: flushes every nested table). The roots that lose a leaf are
    /// flushed at their next [`Mmu::switch_to`].
    ///
    /// Report each change with the size of the EPT01 page it affects: a
    /// 2-MByte EPT01 page moved or protected as a whole is one call with
    /// [`PageSize::Size2M`] (any `gfn` inside it); a single 4-KByte page
    /// changed inside a region EPT01 used to map with a large page is
    /// [`PageSize::Size4K`] (the large shadow leaves containing it are
    /// zapped too).
    ///
    /// Work is bounded: three lookups for the leaves at least as large as
    /// the page, plus, for the smaller leaves inside it, the smaller of one
    /// lookup per 4-KByte and 2-MByte sub-page and one pass over the
    /// reverse map.
    pub fn ept01_changed(&mut self, gfn: L1Gfn, size: PageSize) {
        if self.config.policy == Policy::Xen {
            for id in self.roots.ids() {
                self.drop_root(id);
            }
        } else {
            self.zap_ept01_page(gfn, size);
        }
    }

    /// How many freed root frames this engine remembers at most:
    /// `min(frame_budget, MAX_REMEMBERED_ROOT_FRAMES)`.
    ///
    /// A freed root frame is remembered because hardware may still hold
    /// translations tagged with it (SDM 29.4.1): a root later built on it is
    /// flushed before its first entry. An allocator that reuses frames
    /// last-freed-first and serves only this engine never hands out more
    /// distinct frames than the budget, so the set never overflows there.
    /// With an allocator that never reuses frames, or a shared one, it
    /// would grow without bound; instead, when it would exceed this limit,
    /// it is forgotten and from then on **every** new root is flushed
    /// before its first entry (one INVEPT single-context per root miss,
    /// what the KVM policy does anyway). That is always correct, since only
    /// a new root can be built on a forgotten frame, and it needs no
    /// memory.
    pub fn remembered_root_frames_limit(&self) -> usize {
        self.config.frame_budget.min(MAX_REMEMBERED_ROOT_FRAMES)
    }

    /// L1 executed INVVPID: only the Xen policy reacts (it flushes every
    /// nested table); EPT02 does not depend on VPIDs.
    pub fn invvpid(&mut self) {
        if self.config.policy == Policy::Xen {
            for id in self.roots.ids() {
                self.drop_root(id);
            }
        }
    }
}
