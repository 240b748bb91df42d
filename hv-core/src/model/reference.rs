//! The model's own account of what L1's architecture allows, kept
//! independently of hv-core: which VMCS12 is current and what its EPTP,
//! VPID and controls are (from the script's VMPTRLD/VMWRITE, committed
//! when L1's RIP and RFLAGS show the instruction succeeded), which L2
//! context runs, and every invalidation L1 asked for. With it,
//! [`L1Reference::stale_reason`] decides whether a TLB hit that no longer
//! matches the current translation is one hardware may still use, or one
//! a missing flush left behind.
//!
//! # The stale rule
//!
//! A cached combined mapping that differs from the current composition
//! (L2 page map -> EPT12 walk via `hv_mmu::oracle` -> EPT01) is *stale*
//! when any of these holds, and may be used otherwise (L1 changed EPT12 or
//! L2's page tables without invalidating: SDM 29.4.4 lets the processor
//! keep the old translation):
//!
//! 1. EPT01 changed for its L1 page after the fill: L0's change, which L0
//!    must always flush.
//! 2. It was filled for another L1 context (VPID12, EPTRTA12 or L2 CR3):
//!    L2s never share translations L1 kept apart (SDM 29.4.1 tags).
//! 3. An L1 invalidation covering it came after the fill: INVEPT
//!    single-context of its EPTRTA12 or global (only with EPT in VMCS12);
//!    INVVPID individual-address of its VPID12 and page, single-context (or
//!    retaining globals) of its VPID12, all-context (SDM 29.4.3); or a
//!    nested entry or exit with VPID off in VMCS12 (SDM 29.4.3.3: VM entries
//!    and exits then invalidate the linear and combined mappings of VPID 0).

extern crate alloc;

use alloc::collections::BTreeMap;

use hv_arch_vmx::controls::{PrimaryProcControls, SecondaryProcControls};
use hv_arch_vmx::ept::{EptPermissions, EptWalkContext, Eptp};
use hv_arch_vmx::invalidation::{InveptType, InvvpidType};
use hv_arch_vmx::vmcs::{FieldAccess, VmcsField, VmcsImage};
use hv_mmu::addr::{L1Gpa, L2Gpa};
use hv_mmu::env::Ept01;
use hv_mmu::oracle;
use hv_mmu::walk::WalkConfig;

use super::memory::ModelMemory;
use super::script::VmxOp;
use crate::vmx::vmcs12::field_offset;

/// The VMCS12 fields the reference follows.
const TRACKED: [VmcsField; 5] = [
    VmcsField::EptPointer,
    VmcsField::VirtualProcessorId,
    VmcsField::PrimaryProcBasedControls,
    VmcsField::SecondaryProcBasedControls,
    VmcsField::GuestCr3,
];

/// RFLAGS.CF and ZF: `VMfailInvalid` / `VMfailValid` (SDM 31.2).
const FAIL_FLAGS: u64 = 1 | (1 << 6);

/// The L1 context an L2 translation belongs to: what SDM 29.4.1 tags
/// cached mappings with, at L1's level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct L1Tag {
    /// VMCS12's VPID, `None` with VPID off.
    pub vpid12: Option<u16>,
    /// VMCS12's EPTP bits 51:12 (EPTRTA), `None` with EPT off.
    pub eptrta12: Option<u64>,
    /// L2's CR3 (selects the page map the model holds for L2).
    pub cr3: u64,
}

/// Why a hit was judged stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StaleReason {
    /// Rule 1: EPT01 changed for the L1 page after the fill.
    Ept01Changed,
    /// Rule 2: filled for another L1 context.
    OtherL1Context,
    /// Rule 3: INVEPT single-context or global after the fill.
    InveptByL1,
    /// Rule 3: INVVPID after the fill.
    InvvpidByL1,
    /// Rule 3: nested entry or exit with VPID off after the fill.
    EntryOrExitWithoutVpid,
}

/// An L1 instruction whose effect waits for its completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    op: VmxOp,
    /// RIP L1 has after the instruction completed.
    rip_after: u64,
}

/// The current composition of an L2 linear page, for comparison with a
/// cached mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Composition {
    /// L2 physical page.
    pub l2_gpa_page: u64,
    /// L1 physical page (through EPT12, or the L2 page without EPT).
    pub l1_gpa_page: u64,
    /// Host page.
    pub host_page: u64,
    /// EPT12 ∩ EPT01 rights (EPT01's alone without EPT).
    pub permissions: EptPermissions,
}

/// The model's reference L1: see the [module documentation](self).
#[derive(Clone, Debug)]
pub struct L1Reference {
    /// Current VMCS12 pointer and the tracked fields.
    current: Option<(u64, VmcsImage)>,
    pending: Option<Pending>,
    /// The L2 running (set at a committed nested entry).
    running: Option<L1Tag>,
    /// The full EPTP12 of the running L2 (for walks).
    running_eptp12: Option<Eptp>,
    /// Event counter: every invalidation and fill takes the next value.
    now: u64,
    invept_global: u64,
    invept_single: BTreeMap<u64, u64>,
    invvpid_all: u64,
    invvpid_single: BTreeMap<u16, u64>,
    invvpid_page: BTreeMap<(u16, u64), u64>,
    vpid_off_transition: u64,
    ept01_changed: BTreeMap<u64, u64>,
    walk_context: EptWalkContext,
}

impl L1Reference {
    /// A reference for an L1 outside VMX operation; EPT12 walks use
    /// `walk_context` (what L0 tells L1 EPT12 may contain).
    pub fn new(walk_context: EptWalkContext) -> Self {
        Self {
            current: None,
            pending: None,
            running: None,
            running_eptp12: None,
            now: 0,
            invept_global: 0,
            invept_single: BTreeMap::new(),
            invvpid_all: 0,
            invvpid_single: BTreeMap::new(),
            invvpid_page: BTreeMap::new(),
            vpid_off_transition: 0,
            ept01_changed: BTreeMap::new(),
            walk_context,
        }
    }

    /// The next event number.
    pub const fn tick(&mut self) -> u64 {
        self.now += 1;
        self.now
    }

    /// L1 is about to execute `op` at `rip`; its effect is committed by
    /// [`Self::commit`] if it succeeds.
    pub fn issue(&mut self, op: VmxOp, rip: u64, length: u32) {
        self.pending = Some(Pending {
            op,
            rip_after: rip.wrapping_add(u64::from(length)),
        });
    }

    /// Commits the pending instruction if it completed: for VMLAUNCH and
    /// VMRESUME, if the next run is L2 (`entering_l2`); for the others, if
    /// L1's RIP moved past it with CF = ZF = 0. Reads VMCS12 fields from
    /// `memory` on VMPTRLD (hv's layout: it is what L1 put there).
    pub fn commit(&mut self, entering_l2: bool, rip: u64, rflags: u64, memory: &ModelMemory) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let completed = rip == pending.rip_after && rflags & FAIL_FLAGS == 0;
        match pending.op {
            VmxOp::Vmlaunch | VmxOp::Vmresume if entering_l2 => self.enter(),
            _ if entering_l2 || !completed => {}
            VmxOp::Vmxon { .. } | VmxOp::Vmxoff => self.current = None,
            VmxOp::Vmclear { pointer } if self.is_current(pointer) => self.current = None,
            // VMPTRLD of the current VMCS keeps hv's cache (and ours).
            VmxOp::Vmptrld { pointer } if !self.is_current(pointer) => {
                let mut image = VmcsImage::new();
                for field in TRACKED {
                    let at = L1Gpa::new(pointer.wrapping_add(field_offset(field) as u64));
                    if let Ok(value) = memory.read_u64_at(at) {
                        image.set(field, value);
                    }
                }
                self.current = Some((pointer, image));
            }
            VmxOp::Vmwrite { encoding, value } => {
                if let (Ok(access), Some((_, image))) =
                    (FieldAccess::decode(encoding), self.current.as_mut())
                    && TRACKED.contains(&access.field)
                {
                    image.write(access, value);
                }
            }
            VmxOp::Invept { kind, eptp } => match InveptType::from_raw(kind) {
                Some(InveptType::Global) => self.invept_global = self.tick(),
                Some(InveptType::SingleContext) => {
                    let at = self.tick();
                    self.invept_single
                        .insert(Eptp::from_raw(eptp).root_address(), at);
                }
                None => {}
            },
            VmxOp::Invvpid {
                kind,
                vpid_word,
                linear,
            } => {
                let vpid = vpid_word as u16;
                let at = self.tick();
                match InvvpidType::from_raw(kind) {
                    Some(InvvpidType::IndividualAddress) => {
                        self.invvpid_page.insert((vpid, linear >> 12), at);
                    }
                    Some(
                        InvvpidType::SingleContext | InvvpidType::SingleContextRetainingGlobals,
                    ) => {
                        self.invvpid_single.insert(vpid, at);
                    }
                    Some(InvvpidType::AllContext) => self.invvpid_all = at,
                    None => {}
                }
            }
            _ => {}
        }
    }

    /// Whether `pointer` is the current VMCS12.
    fn is_current(&self, pointer: u64) -> bool {
        self.current
            .as_ref()
            .is_some_and(|(ptr, _)| *ptr == pointer)
    }

    /// The tag VMCS12 would give an L2 entered now.
    fn current_tag(&self) -> (L1Tag, Option<Eptp>) {
        let Some((_, image)) = self.current.as_ref() else {
            return (L1Tag::default(), None);
        };
        let primary = PrimaryProcControls::from_bits_retain(
            image.get(VmcsField::PrimaryProcBasedControls) as u32,
        );
        let secondary = if primary.contains(PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS) {
            SecondaryProcControls::from_bits_retain(
                image.get(VmcsField::SecondaryProcBasedControls) as u32,
            )
        } else {
            SecondaryProcControls::empty()
        };
        let eptp = secondary
            .contains(SecondaryProcControls::ENABLE_EPT)
            .then(|| Eptp::from_raw(image.get(VmcsField::EptPointer)));
        let vpid12 = secondary
            .contains(SecondaryProcControls::ENABLE_VPID)
            .then(|| image.get(VmcsField::VirtualProcessorId) as u16);
        (
            L1Tag {
                vpid12,
                eptrta12: eptp.map(Eptp::root_address),
                cr3: image.get(VmcsField::GuestCr3),
            },
            eptp,
        )
    }

    /// A nested entry: L2 runs with VMCS12's current tag.
    fn enter(&mut self) {
        let (tag, eptp) = self.current_tag();
        self.running = Some(tag);
        self.running_eptp12 = eptp;
        if tag.vpid12.is_none() {
            self.vpid_off_transition = self.tick();
        }
    }

    /// L2 runs (`run(L2)`): commits a pending VMLAUNCH/VMRESUME, or treats
    /// a run without one as an entry with the current VMCS12 (a caller that
    /// drives the platform without hv-core). Returns the running tag.
    pub fn l2_runs(&mut self, memory: &ModelMemory) -> (L1Tag, Option<Eptp>) {
        self.commit(true, 0, 0, memory);
        if self.running.is_none() {
            self.enter();
        }
        (self.running.unwrap_or_default(), self.running_eptp12)
    }

    /// L1 runs (`run(L1)`): a nested exit if L2 was running, then commits
    /// a pending instruction.
    pub fn l1_runs(&mut self, rip: u64, rflags: u64, memory: &ModelMemory) {
        if let Some(tag) = self.running.take() {
            self.running_eptp12 = None;
            if tag.vpid12.is_none() {
                self.vpid_off_transition = self.tick();
            }
        }
        self.commit(false, rip, rflags, memory);
    }

    /// L0 changed EPT01 for L1 page `gfn`.
    pub fn ept01_changed(&mut self, gfn: u64) {
        let at = self.tick();
        self.ept01_changed.insert(gfn, at);
    }

    /// The composition of `linear` for the L2 with `tag` now: L2 paging
    /// (`page_map`: linear page -> (L2 physical page, writable); identity
    /// when `None`), EPT12 (with `eptp12`) and EPT01. `None` when any stage
    /// maps nothing.
    pub fn compose(
        &self,
        memory: &ModelMemory,
        ept01: &impl Ept01,
        eptp12: Option<Eptp>,
        l2_gpa_page: u64,
    ) -> Option<Composition> {
        let (l1_gpa_page, permissions) = if let Some(eptp12) = eptp12 {
            let config = WalkConfig::new(eptp12, self.walk_context, false).ok()?;
            let mapping = oracle::compose(
                memory,
                ept01,
                eptp12,
                L2Gpa::new(l2_gpa_page << 12),
                &config,
            )?;
            (mapping.l1_gpa.raw() >> 12, mapping.permissions)
        } else {
            let mapping = ept01.translate(L1Gpa::new(l2_gpa_page << 12))?;
            (l2_gpa_page, mapping.permissions)
        };
        let mapping = ept01.translate(L1Gpa::new(l1_gpa_page << 12))?;
        let offset = (l1_gpa_page << 12) & (mapping.size.bytes() - 1);
        Some(Composition {
            l2_gpa_page,
            l1_gpa_page,
            host_page: mapping.frame.raw().wrapping_add(offset) >> 12,
            permissions,
        })
    }

    /// Whether a hit that differs from the current composition is stale
    /// (see the [module documentation](self)); `None`: hardware may use
    /// it.
    pub fn stale_reason(
        &self,
        fill: &super::tlb::Provenance,
        running: L1Tag,
        linear_page: u64,
    ) -> Option<StaleReason> {
        let after = |at: u64| at > fill.filled_at;
        if let Some(gfn) = fill.l1_gpa_page
            && self.ept01_changed.get(&gfn).copied().is_some_and(after)
        {
            return Some(StaleReason::Ept01Changed);
        }
        if fill.tag != running {
            return Some(StaleReason::OtherL1Context);
        }
        let tag = fill.tag;
        if let Some(root) = tag.eptrta12
            && (after(self.invept_global)
                || self.invept_single.get(&root).copied().is_some_and(after))
        {
            return Some(StaleReason::InveptByL1);
        }
        match tag.vpid12 {
            Some(vpid) => {
                if after(self.invvpid_all)
                    || self.invvpid_single.get(&vpid).copied().is_some_and(after)
                    || self
                        .invvpid_page
                        .get(&(vpid, linear_page))
                        .copied()
                        .is_some_and(after)
                {
                    return Some(StaleReason::InvvpidByL1);
                }
            }
            None => {
                if after(self.vpid_off_transition) {
                    return Some(StaleReason::EntryOrExitWithoutVpid);
                }
            }
        }
        None
    }
}
