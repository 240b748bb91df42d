//! Filling: turning one successful EPT12 walk plus its EPT01 mapping into a
//! shadow path, reusing (and, where the walk shows they diverged from EPT12,
//! repairing) the tables already there.
//!
//! A fill has two phases, and only the second touches the shadow tables:
//!
//! 1. [`Mmu::plan_fill`] (`&self`) computes and validates everything the
//!    fill depends on: the composed leaf (EPT12 leaf ∩ EPT01 rights, its
//!    size, host address, memory type and encoding), the direct tables a
//!    split needs and the pointer rights. Anything that cannot be expressed
//!    as an EPT02 leaf is rejected here, so a fault that ends in
//!    [`FaultOutcome::Emulate`](super::FaultOutcome::Emulate) (or
//!    `Reflect`) never zapped, relinked or freed a table and never reused a
//!    frame: there is nothing for hardware to hold stale.
//! 2. [`Mmu::fill`] applies the plan. It can only run out of frames; every
//!    entry it zaps or replaces on the way marks the roots that reach it,
//!    and the mark stays until [`Mmu::switch_to`](super::Mmu::switch_to)
//!    reports it.
//!
//! # What an EPT02 leaf contains
//!
//! - **Memory type**: always EPT01's memory type
//!   ([`Ept01Mapping::memory_type`]) with ignore-PAT set (SDM 29.3.7): L0
//!   knows the host's memory types; L1's EPT12 memory type and ignore-PAT
//!   bit and L2's PAT are not used.
//! - **Dirty tracking**: EPT02 leaves are built without A/D (EPTP02 does not
//!   enable them), and a write by L2 through EPT02 sets **no** dirty flag in
//!   EPT01. An L0 that tracks dirty L1 pages (live migration, ...) must
//!   write-protect them through EPT01 and report the change with
//!   [`Mmu::ept01_changed`](super::Mmu::ept01_changed): the shadow leaves
//!   lose write, the next L2 write exits as
//!   [`FaultOutcome::Emulate`](super::FaultOutcome::Emulate), and L0 logs
//!   the page and restores write (again reporting the change); or it must
//!   use its own means.

use hv_arch_vmx::ept::{EptEntry, EptLevel, EptPermissions};

use crate::addr::{HostPa, L1Gpa, L2Gpa, PageSize};
use crate::env::{Ept01Mapping, FrameAllocator, L1Memory};
use crate::walk::Translation;

use super::Mmu;
use super::rmap::TargetKey;
use super::roots::RootId;
use super::sync::{Change, RIGHTS_MASK, classify, guest_rights, sanitize};
use super::table::{ENTRIES, LINK_LEAF, Role, Slot, TableId, TableKey};

/// The walk and EPT01 mapping cannot be composed into an EPT02 leaf (no
/// usable rights, an address that does not fit, a walk that does not start
/// at the root's EPT12 table): L0's business. Found before any change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Unmappable;

/// No frame for a table, even after evicting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct OutOfFrames;

/// A pointer to a direct (splitting) table on the way to the leaf.
#[derive(Clone, Copy, Debug)]
struct DirectLink {
    /// Index of the pointer in its table.
    index: usize,
    /// The EPT12 entry it stands for (the EPT12 leaf for the first one, 0
    /// below).
    guest: u64,
    /// Its rights.
    rights: EptPermissions,
    /// The direct table it points to.
    child: TableKey,
}

/// The shadow leaf a fill writes.
#[derive(Clone, Copy, Debug)]
struct LeafPlan {
    /// Index in its table.
    index: usize,
    /// The EPT12 entry it was built from (0 under a direct table).
    guest: u64,
    /// The complete EPT02 entry, already encoded and validated.
    entry: u64,
    /// EPT01's rights (kept to widen the leaf later without EPT01).
    ept01: EptPermissions,
    /// The L1 region it maps.
    target: TargetKey,
    /// Its size.
    size: PageSize,
}

/// A validated fill: everything computed from the walk and EPT01, nothing
/// applied yet. Applying it ([`Mmu::fill`]) can only run out of frames.
#[derive(Clone, Copy, Debug)]
pub(super) struct FillPlan<'a> {
    /// The root's top-level table (where the walk starts).
    root_table: TableId,
    /// Owner of the root's tables (0 when shared).
    owner: u32,
    /// The root's role.
    role: Role,
    /// The EPT12 walk.
    translation: &'a Translation,
    /// Direct tables between the EPT12 leaf's table and the shadow leaf
    /// (at most two: 1G -> 2M -> 4K).
    direct: [Option<DirectLink>; 2],
    /// The leaf.
    leaf: LeafPlan,
}

/// The level number of a page size's leaves, as an [`EptLevel`].
fn leaf_level(size: PageSize) -> EptLevel {
    match size {
        PageSize::Size4K => EptLevel::Pte,
        PageSize::Size2M => EptLevel::Pde,
        PageSize::Size1G => EptLevel::Pdpte,
    }
}

/// The host address of the `size` page that maps the L1 region starting at
/// `region` (aligned to `size`), inside EPT01's page `mapping` (at least as
/// large) that contains it.
fn host_page(mapping: &Ept01Mapping, region: L1Gpa) -> HostPa {
    let offset = region.raw() & (mapping.size.bytes() - 1);
    mapping.frame.align_down(mapping.size).wrapping_add(offset)
}

/// A leaf entry mapping `host` with `rights` and EPT01's memory type,
/// ignore-PAT set (L0 decides the memory type, SDM 29.3.7).
fn leaf_entry(
    size: PageSize,
    host: HostPa,
    rights: EptPermissions,
    mapping: &Ept01Mapping,
) -> Result<u64, Unmappable> {
    EptEntry::leaf(leaf_level(size), host.raw(), rights, mapping.memory_type)
        .map(|entry| entry.with_ignore_pat(true).raw())
        .map_err(|_| Unmappable)
}

impl<F: FrameAllocator> Mmu<F> {
    /// Plans the fill of `translation` (the EPT12 walk of `gpa`) composed
    /// with EPT01's `mapping` in root `root`: computes and validates the
    /// leaf and every link before anything changes.
    pub(super) fn plan_fill<'a>(
        &self,
        root: RootId,
        gpa: L2Gpa,
        translation: &'a Translation,
        mapping: Ept01Mapping,
    ) -> Result<FillPlan<'a>, Unmappable> {
        let root = self.roots.get(root).ok_or(Unmappable)?;
        let role = root.key.role;
        let ad = role.accessed_dirty;
        let mbec = role.mode_based_execute;
        let steps = translation.steps();
        let leaf_step = steps.last().ok_or(Unmappable)?;
        let root_key = self.tables.get(root.table).key;
        // The walk starts at the EPTP12 root, which this root mirrors.
        if steps.first().map(|step| step.table) != Some(root_key.gfn) {
            return Err(Unmappable);
        }
        // The leaf as L1 memory now holds it after the walk's A/D update.
        let accessed = if ad { EptEntry::ACCESSED } else { 0 };
        let dirty = if ad && translation.dirty {
            EptEntry::DIRTY
        } else {
            0
        };
        let guest = leaf_step.entry | accessed | dirty;
        let ept01_rights = mapping.permissions.effective(mbec);
        let leaf_rights = guest_rights(guest, leaf_step.level, role);
        let size = translation.page_size.min(mapping.size);
        let region = translation.l1_gpa.align_down(size);
        let target = TargetKey::containing(region.gfn(), size);
        let mut plan = FillPlan {
            root_table: root.table,
            owner: root_key.owner,
            role,
            translation,
            direct: [None; 2],
            leaf: LeafPlan {
                index: entry_index(leaf_step.entry_address),
                guest,
                entry: 0,
                ept01: ept01_rights,
                target,
                size,
            },
        };
        if size == translation.page_size {
            let rights = sanitize(leaf_rights.intersection(ept01_rights), role);
            if rights.is_empty() {
                return Err(Unmappable);
            }
            plan.leaf.entry = leaf_entry(size, host_page(&mapping, region), rights, &mapping)?;
            return Ok(plan);
        }

        // EPT01 maps the EPT12 page with smaller pages: split it through
        // direct tables. The EPT12 leaf's rights go on the pointer (hardware
        // ANDs them with the direct leaves' EPT01 rights, SDM 29.3.3.2).
        let pointer_rights = sanitize(leaf_rights, role);
        let rights = sanitize(ept01_rights, role);
        if pointer_rights.is_empty()
            || rights.is_empty()
            || sanitize(pointer_rights.intersection(rights), role).is_empty()
        {
            return Err(Unmappable);
        }
        let direct = role.as_direct();
        let full = sanitize(EptPermissions::all().effective(mbec), role);
        let mut level = leaf_step.level;
        let (mut link_guest, mut link_rights) = (guest, pointer_rights);
        let mut links = 0;
        // At most two levels of direct tables (1G -> 2M -> 4K).
        for covered in [PageSize::Size1G, PageSize::Size2M, PageSize::Size4K] {
            if covered.level() != level {
                continue;
            }
            if covered == size {
                break;
            }
            let link = DirectLink {
                index: leaf_level(covered).index_of(gpa.raw()),
                guest: link_guest,
                rights: link_rights,
                child: TableKey {
                    gfn: translation.l1_gpa.align_down(covered).gfn(),
                    level: level - 1,
                    role: direct,
                    owner: root_key.owner,
                },
            };
            *plan.direct.get_mut(links).ok_or(Unmappable)? = Some(link);
            links += 1;
            level -= 1;
            (link_guest, link_rights) = (0, full);
        }
        if level != size.level() {
            return Err(Unmappable);
        }
        plan.leaf.entry = leaf_entry(size, host_page(&mapping, region), rights, &mapping)?;
        plan.leaf.index = leaf_level(size).index_of(gpa.raw());
        plan.leaf.guest = 0;
        Ok(plan)
    }

    /// Applies `plan` to its root: links (or repairs) the shadow path and
    /// writes the leaf; returns the size of the leaf written.
    ///
    /// Entries it zaps or replaces on the way mark the roots reaching them
    /// for a flush, whether or not it completes.
    pub(super) fn fill<M: L1Memory + ?Sized>(
        &mut self,
        memory: &M,
        plan: &FillPlan<'_>,
    ) -> Result<PageSize, OutOfFrames> {
        let role = plan.role;
        // Non-leaf levels: the walker set their accessed flags.
        let accessed = if role.accessed_dirty {
            EptEntry::ACCESSED
        } else {
            0
        };
        let mut table = plan.root_table;
        for pair in plan.translation.steps().windows(2) {
            let [step, next] = pair else {
                break;
            };
            let child = TableKey {
                gfn: next.table,
                level: step.level.saturating_sub(1),
                role,
                owner: plan.owner,
            };
            let guest = step.entry | accessed;
            let rights = sanitize(guest_rights(guest, step.level, role), role);
            table = self.ensure_child(
                memory,
                table,
                entry_index(step.entry_address),
                guest,
                rights,
                child,
            )?;
        }
        for link in plan.direct.iter().flatten() {
            table = self.ensure_child(
                memory,
                table,
                link.index,
                link.guest,
                link.rights,
                link.child,
            )?;
        }
        let leaf = plan.leaf;
        self.write_leaf(
            table,
            leaf.index,
            leaf.guest,
            leaf.entry,
            leaf.ept01,
            leaf.target,
        );
        Ok(leaf.size)
    }

    /// Makes entry `index` of `table` point to the table with key `child`,
    /// built from EPT12 entry `guest` (0 in direct tables) with `rights`,
    /// and returns the child. Keeps a matching entry, widens one that only
    /// gained rights, replaces (and flags) anything else.
    fn ensure_child<M: L1Memory + ?Sized>(
        &mut self,
        memory: &M,
        table: TableId,
        index: usize,
        guest: u64,
        rights: EptPermissions,
        child: TableKey,
    ) -> Result<TableId, OutOfFrames> {
        let shadow = self.tables.get(table);
        let (key, slot) = (shadow.key, shadow.slot(index));
        if let Some(existing) = slot.child()
            && self.tables.get(existing).key == child
        {
            if slot.guest == guest {
                return Ok(existing);
            }
            // L1 changed the entry without (or before) INVEPT, and the walk
            // now sees the new value.
            if !key.role.direct
                && classify(
                    slot.guest,
                    guest,
                    key.level,
                    key.role,
                    self.config.walk_context,
                ) != Change::Incompatible
            {
                self.widen_slot(table, index, guest);
                return Ok(existing);
            }
        }
        if self.zap_slot(table, index) {
            self.mark_roots_reaching_now(table);
        }
        let required = self.tables.get(table).synced_at;
        let child = self.find_or_create(memory, child, required)?;
        self.link(table, index, guest, rights, child);
        Ok(child)
    }

    /// The table with `key`, created if needed. An existing table older
    /// than `required` (its parent's resync epoch) is resynced first.
    fn find_or_create<M: L1Memory + ?Sized>(
        &mut self,
        memory: &M,
        key: TableKey,
        required: u64,
    ) -> Result<TableId, OutOfFrames> {
        if let Some(&existing) = self.tables.by_key.get(&key) {
            if !key.role.direct && self.tables.get(existing).synced_at < required {
                self.resync_stale_tree(memory, existing, required);
            }
            return Ok(existing);
        }
        let frame = self.allocate_frame().map_err(|_| OutOfFrames)?;
        let synced_at = if key.role.direct { u64::MAX } else { required };
        let table = self.tables.insert(key, frame, synced_at);
        tracing::trace!(
            table,
            gfn = key.gfn.raw(),
            level = key.level,
            direct = key.role.direct,
            "shadow table created"
        );
        Ok(table)
    }

    /// Writes a pointer from entry `index` of (empty slot) `table` to
    /// `child`.
    fn link(
        &mut self,
        table: TableId,
        index: usize,
        guest: u64,
        rights: EptPermissions,
        child: TableId,
    ) {
        let index = index & (ENTRIES - 1);
        let child_frame = self.tables.get(child).frame;
        let frame = self.tables.get(table).frame;
        if let Some(entry) = self.frames.table_mut(frame).get_mut(index) {
            *entry = (child_frame.raw() & EptEntry::ADDRESS_MASK) | rights.bits();
        }
        let back = self.tables.add_parent(child, table, index as u16);
        let shadow = self.tables.get_mut(table);
        *shadow.slot_mut(index) = Slot {
            guest,
            link: child,
            back,
            ept01: 0,
        };
        shadow.filled += 1;
    }

    /// Writes leaf `entry` (mapping `target`, built from EPT12 entry `guest`
    /// and EPT01 rights `ept01`) into entry `index` of `table`. An existing
    /// leaf with the same target that the new one only widens is updated in
    /// place; anything else there is zapped first (and flagged).
    fn write_leaf(
        &mut self,
        table: TableId,
        index: usize,
        guest: u64,
        entry: u64,
        ept01: EptPermissions,
        target: TargetKey,
    ) {
        let index = index & (ENTRIES - 1);
        let shadow = self.tables.get(table);
        let (frame, slot) = (shadow.frame, shadow.slot(index));
        let ept01 = ept01.bits() as u16;
        if slot.link == LINK_LEAF && self.leaf_target(table, index, slot) == target {
            let old = self.frames.table(frame).get(index).copied().unwrap_or(0);
            let widens = old & !RIGHTS_MASK == entry & !RIGHTS_MASK
                && (entry & RIGHTS_MASK) & (old & RIGHTS_MASK) == old & RIGHTS_MASK;
            if widens {
                if let Some(slot_entry) = self.frames.table_mut(frame).get_mut(index) {
                    *slot_entry = entry;
                }
                let slot = self.tables.get_mut(table).slot_mut(index);
                slot.guest = guest;
                slot.ept01 = ept01;
                return;
            }
        }
        if self.zap_slot(table, index) {
            self.mark_roots_reaching_now(table);
        }
        if let Some(slot_entry) = self.frames.table_mut(frame).get_mut(index) {
            *slot_entry = entry;
        }
        let back = self.targets.insert(target, table, index as u16);
        let shadow = self.tables.get_mut(table);
        *shadow.slot_mut(index) = Slot {
            guest,
            link: LINK_LEAF,
            back,
            ept01,
        };
        shadow.filled += 1;
    }
}

/// The index (0..512) of the entry at `address` within its table.
const fn entry_index(address: L1Gpa) -> usize {
    ((address.raw() >> 3) & 511) as usize
}
