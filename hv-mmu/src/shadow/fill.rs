//! Filling: turning one successful EPT12 walk plus its EPT01 mapping into a
//! shadow path, reusing (and, where the walk shows they diverged from EPT12,
//! repairing) the tables already there.

use hv_arch_vmx::ept::{EptEntry, EptLevel, EptPermissions};

use crate::addr::{HostPa, L1Gpa, L2Gpa, PageSize};
use crate::env::{Ept01Mapping, FrameAllocator, L1Memory};
use crate::walk::Translation;

use super::Mmu;
use super::rmap::TargetKey;
use super::roots::RootId;
use super::sync::{Change, RIGHTS_MASK, classify, guest_rights, sanitize};
use super::table::{ENTRIES, LINK_LEAF, Slot, TableId, TableKey};

/// What to fill.
#[derive(Clone, Copy, Debug)]
pub(super) struct FillRequest<'a> {
    /// The root to fill (the current one).
    pub(super) root: RootId,
    /// The faulting L2 address.
    pub(super) gpa: L2Gpa,
    /// The EPT12 walk for it.
    pub(super) translation: &'a Translation,
    /// EPT01's mapping of the translated L1 address.
    pub(super) mapping: Ept01Mapping,
}

/// Why a fill stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FillError {
    /// No frame for a table, even after evicting.
    OutOfFrames,
    /// The composition cannot be expressed as an EPT02 leaf (no usable
    /// rights, or an address that does not fit): leave it to L0.
    Unmappable,
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
) -> Result<u64, FillError> {
    EptEntry::leaf(leaf_level(size), host.raw(), rights, mapping.memory_type)
        .map(|entry| entry.with_ignore_pat(true).raw())
        .map_err(|_| FillError::Unmappable)
}

impl<F: FrameAllocator> Mmu<F> {
    /// Fills the shadow path of `request`'s walk in its root; returns the
    /// size of the leaf written.
    pub(super) fn fill<M: L1Memory + ?Sized>(
        &mut self,
        memory: &M,
        request: &FillRequest<'_>,
    ) -> Result<PageSize, FillError> {
        let root = *self.roots.get(request.root).ok_or(FillError::Unmappable)?;
        let role = root.key.role;
        let ad = role.accessed_dirty;
        let mbec = role.mode_based_execute;
        let translation = request.translation;
        let steps = translation.steps();
        let Some((leaf_step, path)) = steps.split_last() else {
            return Err(FillError::Unmappable);
        };
        let mut table = root.table;
        let owner = self.tables.get(table).key.owner;
        // The walk starts at the EPTP12 root, which this root mirrors.
        if steps.first().map(|step| step.table) != Some(self.tables.get(table).key.gfn) {
            return Err(FillError::Unmappable);
        }
        // Non-leaf levels: the walker set their accessed flags.
        let accessed = if ad { EptEntry::ACCESSED } else { 0 };
        for (position, step) in path.iter().enumerate() {
            let Some(next) = steps.get(position + 1) else {
                break;
            };
            let child = TableKey {
                gfn: next.table,
                level: step.level.saturating_sub(1),
                role,
                owner,
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

        // The leaf: as L1 memory now holds it after the walk's A/D update.
        let dirty = if ad && translation.dirty {
            EptEntry::DIRTY
        } else {
            0
        };
        let guest = leaf_step.entry | accessed | dirty;
        let index = entry_index(leaf_step.entry_address);
        let mapping = request.mapping;
        let ept01_rights = mapping.permissions.effective(mbec);
        let leaf_rights = guest_rights(guest, leaf_step.level, role);
        let size = translation.page_size.min(mapping.size);
        let region = translation.l1_gpa.align_down(size);
        let target = TargetKey::containing(region.gfn(), size);
        if size == translation.page_size {
            let rights = sanitize(leaf_rights.intersection(ept01_rights), role);
            if rights.is_empty() {
                return Err(FillError::Unmappable);
            }
            let entry = leaf_entry(size, host_page(&mapping, region), rights, &mapping)?;
            self.write_leaf(table, index, guest, entry, ept01_rights, target);
            return Ok(size);
        }

        // EPT01 maps the EPT12 page with smaller pages: split it through
        // direct tables. The EPT12 leaf's rights go on the pointer (hardware
        // ANDs them with the direct leaves' EPT01 rights).
        let pointer_rights = sanitize(leaf_rights, role);
        let sizes = [PageSize::Size1G, PageSize::Size2M, PageSize::Size4K];
        let direct = role.as_direct();
        let full = sanitize(EptPermissions::all().effective(mbec), role);
        let mut level = leaf_step.level;
        let mut rights = pointer_rights;
        let mut guest = guest;
        // At most two levels of direct tables (1G -> 2M -> 4K).
        for covered in sizes {
            if covered.level() != level {
                continue;
            }
            if covered == size {
                break;
            }
            let child_region = translation.l1_gpa.align_down(covered);
            let child = TableKey {
                gfn: child_region.gfn(),
                level: level - 1,
                role: direct,
                owner,
            };
            let index = leaf_level(covered).index_of(request.gpa.raw());
            table = self.ensure_child(memory, table, index, guest, rights, child)?;
            level -= 1;
            rights = full;
            guest = 0;
        }
        let rights = sanitize(ept01_rights, role);
        if rights.is_empty() || level != size.level() {
            return Err(FillError::Unmappable);
        }
        let entry = leaf_entry(size, host_page(&mapping, region), rights, &mapping)?;
        let index = leaf_level(size).index_of(request.gpa.raw());
        self.write_leaf(table, index, 0, entry, ept01_rights, target);
        Ok(size)
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
    ) -> Result<TableId, FillError> {
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
    ) -> Result<TableId, FillError> {
        if let Some(&existing) = self.tables.by_key.get(&key) {
            if !key.role.direct && self.tables.get(existing).synced_at < required {
                self.resync_stale_tree(memory, existing, required);
            }
            return Ok(existing);
        }
        let frame = self.allocate_frame().map_err(|_| FillError::OutOfFrames)?;
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
