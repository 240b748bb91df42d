//! [`Model`]: the software engine. It implements [`Platform`] over L1
//! memory, an identity EPT01, the EPT02 frames hv-mmu builds, one VMCS02,
//! L2's registers and a tagged TLB, and runs scripted guest actions.

extern crate alloc;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::checks::baseline::long_mode_guest;
use hv_arch_vmx::checks::{EntryCheckFailure, EntryContext, check_vm_entry};
use hv_arch_vmx::controls::{
    EntryControls, ExceptionBitmap, ExceptionVector, ExitControls, PinBasedControls,
    PrimaryProcControls, SecondaryProcControls,
};
use hv_arch_vmx::ept::{EptPermissions, EptWalkContext, Eptp};
use hv_arch_vmx::exit::ExitReason;
use hv_arch_vmx::interruption::InterruptionInfo;
use hv_arch_vmx::invalidation::{InveptType, InvvpidType};
use hv_arch_vmx::vmcs::{VmcsField, VmcsImage};
use hv_mmu::addr::{HostPa, L1Gfn, L1Gpa, L2Gpa};
use hv_mmu::env::Ept01;
use hv_mmu::testing::TestEpt01;
use hv_mmu::testing::hardware::translate_ept02;
use hv_mmu::walk::{Access, AccessKind};

use super::exits;
use super::frames::{Ept02View, ModelFrames};
use super::memory::{ModelMemory, ModelMsrs};
use super::reference::{L1Reference, L1Tag, StaleReason};
use super::script::{L1Action, L2Action};
use super::tlb::{Provenance, Tlb, TlbEntry, TlbKey};
use crate::platform::{L0Requirements, L1Parts, Level, Platform};
use crate::reflect::L1SystemRegisters;
use crate::state::{Exit, Gprs, L1Cpu, Segment};
use crate::vmx::Fault;

/// The model's MAXPHYADDR (L1's and the real engine's).
pub const MAXPHYADDR: u8 = 46;
/// Host address of L1 address 0 in the identity EPT01.
pub const L1_HOST_BASE: u64 = 0x10_0000_0000;
/// The root address EPTP01 names. EPT01 is [`TestEpt01`], not tables in
/// memory: the model translates through it directly for this root.
pub const EPT01_ROOT: u64 = 0x7f_f000_0000;
/// The (fictitious) address of VMCS02, for the link-pointer check.
pub const VMCS02_ADDRESS: u64 = 0x7f_e000_0000;
/// Stale translations recorded in detail (all are counted).
const STALE_RECORDS: usize = 16;
/// RFLAGS bit 1, always set.
const RFLAGS_FIXED: u64 = 0x2;

/// How a [`Model`] is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModelConfig {
    /// Bytes of L1 memory (sparse: only written pages cost memory).
    pub l1_memory: u64,
    /// Frames available for EPT02 tables.
    pub frames: usize,
}

impl Default for ModelConfig {
    /// 1 GiB of L1 memory, 4096 EPT02 frames.
    fn default() -> Self {
        Self {
            l1_memory: 1 << 30,
            frames: 4096,
        }
    }
}

/// Why the model stopped (never a panic: fuzzers stop on these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// `run(level)` found no action queued for `level`.
    #[error("no {0:?} action is queued")]
    QueueEmpty(Level),
    /// hv-core asked to run L2 with a VMCS02 that fails the VM-entry
    /// checks (an hv-core bug: it must never do that).
    #[error("VMCS02 fails the VM-entry checks: {0}")]
    Vmcs02Rejected(EntryCheckFailure),
    /// hv-mmu wrote EPT02 after the last publication (see
    /// [`ModelFrames::publish`]): the model cannot see it.
    #[error("EPT02 writes were not published before running L2")]
    Ept02NotPublished,
}

/// A TLB hit the architecture says must not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StaleTranslation {
    /// The linear address L2 accessed.
    pub linear: u64,
    /// The TLB key of the hit.
    pub key: TlbKey,
    /// The cached mapping.
    pub cached: TlbEntry,
    /// The current host page (`None`: nothing maps it now).
    pub current_host_page: Option<u64>,
    /// The L1 tag running at the hit.
    pub running: L1Tag,
    /// The rule that made it stale.
    pub reason: StaleReason,
}

/// Counters (exact counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ModelStats {
    /// `run(L1)` calls.
    pub l1_runs: u64,
    /// `run(L2)` calls.
    pub l2_runs: u64,
    /// Exits L1 took.
    pub l1_exits: u64,
    /// Exits L2 took.
    pub l2_exits: u64,
    /// EPT violations L2 took.
    pub ept_violations: u64,
    /// Page faults L2's own paging raised (exiting or not).
    pub l2_page_faults: u64,
    /// INVEPT single-context the platform was asked for.
    pub invept_single: u64,
    /// INVEPT global.
    pub invept_global: u64,
    /// INVVPID by type: individual, single, all, single-retaining-globals.
    pub invvpid: [u64; 4],
    /// Faults injected into L1.
    pub faults_injected: u64,
    /// L1 writes outside L1 memory (dropped).
    pub dropped_l1_writes: u64,
    /// TLB hits the architecture forbids.
    pub stale_translations: u64,
    /// Distinct VMCS02 images checked against the VM-entry checks.
    pub vmcs02_checks: u64,
}

/// The software engine. See the [module documentation](super).
#[derive(Debug)]
pub struct Model {
    caps: VmxCapabilities,
    l0: L0Requirements,
    cpu: L1Cpu,
    memory: ModelMemory,
    ept01: TestEpt01,
    msrs: ModelMsrs,
    system_registers: L1SystemRegisters,
    vmcs02: VmcsImage,
    vmcs02_checked: bool,
    l2_gprs: Gprs,
    tlb: Tlb,
    ept02: Ept02View,
    reference: L1Reference,
    page_maps: BTreeMap<u64, BTreeMap<u64, (u64, bool)>>,
    l1_queue: VecDeque<L1Action>,
    l2_queue: VecDeque<L2Action>,
    stats: ModelStats,
    stale: Vec<StaleTranslation>,
    last_fault: Option<Fault>,
    drop_invalidations: bool,
}

/// A flat 64-bit data segment.
const FLAT_DATA: Segment = Segment {
    selector: 0x10,
    base: 0,
    limit: 0xffff_ffff,
    access_rights: 0xc093,
};

/// L1 in 64-bit mode at CPL 0 with CR4.VMXE: CR0 PE|MP|ET|NE|WP|PG, CR4
/// PAE|VMXE, EFER LME|LMA, a 64-bit code segment.
pub const fn l1_long_mode() -> L1Cpu {
    L1Cpu {
        gprs: Gprs([0; 16]),
        rip: 0x10_0000,
        rflags: RFLAGS_FIXED,
        cr0: 0x8005_0033,
        cr3: 0,
        cr4: 0x2020,
        efer: 0x500,
        cs: Segment {
            selector: 0x08,
            base: 0,
            limit: 0xffff_ffff,
            access_rights: 0xa09b,
        },
        ss: FLAT_DATA,
        ds: FLAT_DATA,
        es: FLAT_DATA,
        fs: FLAT_DATA,
        gs: FLAT_DATA,
    }
}

impl Model {
    /// A model with `config`, L1 in 64-bit mode at CPL 0 outside VMX
    /// operation, on Bochs' Skylake-X VMX capabilities; and the frames
    /// hv-mmu must build EPT02 in (give them to the vCPU).
    pub fn new(config: ModelConfig) -> (Self, ModelFrames) {
        let caps = VmxCapabilities::bochs_skylake_x();
        let (frames, ept02) = ModelFrames::new(config.frames);
        let l0 = L0Requirements {
            pin_based: PinBasedControls::empty(),
            primary: PrimaryProcControls::empty(),
            secondary: SecondaryProcControls::empty(),
            exit: ExitControls::HOST_ADDRESS_SPACE_SIZE,
            entry: EntryControls::empty(),
            exception_bitmap: ExceptionBitmap::EMPTY.with(ExceptionVector::MachineCheck),
            host_state: long_mode_guest(&caps),
            entry_context: EntryContext::new(MAXPHYADDR, VMCS02_ADDRESS),
        };
        let model = Self {
            reference: L1Reference::new(Self::walk_context_for(&caps)),
            caps,
            l0,
            cpu: l1_long_mode(),
            memory: ModelMemory::new(config.l1_memory),
            ept01: TestEpt01::identity(config.l1_memory, HostPa::new(L1_HOST_BASE)),
            msrs: ModelMsrs::default(),
            system_registers: L1SystemRegisters::default(),
            vmcs02: VmcsImage::new(),
            vmcs02_checked: false,
            l2_gprs: Gprs::default(),
            tlb: Tlb::default(),
            ept02,
            page_maps: BTreeMap::new(),
            l1_queue: VecDeque::new(),
            l2_queue: VecDeque::new(),
            stats: ModelStats::default(),
            stale: Vec::new(),
            last_fault: None,
            drop_invalidations: false,
        };
        (model, frames)
    }

    /// What EPT12 may contain on this model (for `MmuConfig`).
    pub fn walk_context(&self) -> EptWalkContext {
        Self::walk_context_for(&self.caps)
    }

    fn walk_context_for(caps: &VmxCapabilities) -> EptWalkContext {
        EptWalkContext::from_capabilities(caps, MAXPHYADDR, false)
    }

    /// Queues an L1 action.
    pub fn push_l1(&mut self, action: L1Action) {
        self.l1_queue.push_back(action);
    }

    /// Queues an L2 action.
    pub fn push_l2(&mut self, action: L2Action) {
        self.l2_queue.push_back(action);
    }

    /// Actions queued for `level`.
    pub fn queued(&self, level: Level) -> usize {
        match level {
            Level::L1 => self.l1_queue.len(),
            Level::L2 => self.l2_queue.len(),
        }
    }

    /// Drops every queued action of `level`.
    pub fn clear_queue(&mut self, level: Level) {
        match level {
            Level::L1 => self.l1_queue.clear(),
            Level::L2 => self.l2_queue.clear(),
        }
    }

    /// Fault injection for testing the model itself: with `drop` set,
    /// INVEPT and INVVPID requests are counted but do not touch the TLB, as
    /// if L0 forgot them. The stale check must then find the translations
    /// they should have removed.
    pub const fn set_drop_invalidations(&mut self, drop: bool) {
        self.drop_invalidations = drop;
    }

    /// Completes the L2 action at the front of the queue without running
    /// it (L0 emulated it, e.g. an MMIO access).
    pub fn complete_l2_access(&mut self) {
        self.l2_queue.pop_front();
    }

    /// The counters.
    pub const fn stats(&self) -> ModelStats {
        self.stats
    }

    /// The first stale translations found, in detail.
    pub fn stale_translations(&self) -> &[StaleTranslation] {
        &self.stale
    }

    /// The TLB.
    pub const fn tlb(&self) -> &Tlb {
        &self.tlb
    }

    /// L1 memory.
    pub const fn memory(&self) -> &ModelMemory {
        &self.memory
    }

    /// L1 memory, for setting up a scenario (an L1 write without exit).
    pub const fn memory_mut(&mut self) -> &mut ModelMemory {
        &mut self.memory
    }

    /// L1's vCPU.
    pub const fn cpu(&self) -> &L1Cpu {
        &self.cpu
    }

    /// L1's vCPU, for an embedder emulating an L1 exit.
    pub const fn cpu_mut(&mut self) -> &mut L1Cpu {
        &mut self.cpu
    }

    /// VMCS02 as the platform holds it.
    pub const fn vmcs02(&self) -> &VmcsImage {
        &self.vmcs02
    }

    /// The last fault injected into L1.
    pub const fn last_fault(&self) -> Option<Fault> {
        self.last_fault
    }

    /// L1's system registers as the last exit to L1 loaded them.
    pub const fn system_registers(&self) -> &L1SystemRegisters {
        &self.system_registers
    }

    /// EPT01.
    pub const fn ept01(&self) -> &TestEpt01 {
        &self.ept01
    }

    /// The reference L1 tracker.
    pub const fn reference(&self) -> &L1Reference {
        &self.reference
    }

    /// L0 moves L1 page `gfn` to host frame `host_page` (page number):
    /// EPT01 changes. The embedder must then tell hv-core
    /// (`Vcpu::ept01_changed`), which makes the next entry flush.
    pub fn ept01_remap(&mut self, gfn: u64, host_page: u64) {
        self.ept01.map_page(
            L1Gfn::new(gfn),
            HostPa::new(host_page << 12),
            TestEpt01::FULL_RIGHTS,
            hv_arch_vmx::ept::EptMemoryType::WriteBack,
        );
        self.reference.ept01_changed(gfn);
    }

    /// Runs L1 actions until one exits.
    fn run_l1(&mut self) -> Result<Exit, ModelError> {
        self.stats.l1_runs += 1;
        self.reference
            .l1_runs(self.cpu.rip, self.cpu.rflags, &self.memory);
        loop {
            let action = self
                .l1_queue
                .pop_front()
                .ok_or(ModelError::QueueEmpty(Level::L1))?;
            let exit = match action {
                L1Action::Vmx(op) => {
                    self.reference
                        .issue(op, self.cpu.rip, exits::vmx_length(op));
                    exits::vmx_exit(op, &mut self.cpu, &mut self.memory)
                }
                L1Action::WriteL1 { gpa, value } => {
                    if self.memory.write_u64_at(L1Gpa::new(gpa), value).is_err() {
                        self.stats.dropped_l1_writes += 1;
                    }
                    continue;
                }
                L1Action::WriteL2PageMap {
                    cr3,
                    linear_page,
                    gpa_page,
                    writable,
                } => {
                    let map = self.page_maps.entry(cr3).or_default();
                    match gpa_page {
                        Some(page) => map.insert(linear_page, (page, writable)),
                        None => map.remove(&linear_page),
                    };
                    continue;
                }
                L1Action::Cpuid => exits::cpuid_exit(),
                L1Action::Hlt => exits::hlt_exit(),
            };
            self.stats.l1_exits += 1;
            return Ok(exit);
        }
    }

    /// Runs L2 actions until one exits.
    fn run_l2(&mut self) -> Result<Exit, ModelError> {
        if self.ept02.has_unpublished_writes() {
            return Err(ModelError::Ept02NotPublished);
        }
        if !self.vmcs02_checked {
            self.stats.vmcs02_checks += 1;
            check_vm_entry(&self.vmcs02, &self.caps, &self.l0.entry_context)
                .map_err(ModelError::Vmcs02Rejected)?;
            self.vmcs02_checked = true;
        }
        self.stats.l2_runs += 1;
        let (tag, eptp12) = self.reference.l2_runs(&self.memory);
        loop {
            let action = *self
                .l2_queue
                .front()
                .ok_or(ModelError::QueueEmpty(Level::L2))?;
            let exit = match action {
                L2Action::Read { linear } => self.access(linear, Access::READ, tag, eptp12),
                L2Action::Write { linear } => self.access(linear, Access::WRITE, tag, eptp12),
                L2Action::Fetch { linear } => self.access(linear, Access::FETCH, tag, eptp12),
                L2Action::Cpuid => Some(exits::cpuid_exit()),
                L2Action::Io { port, size, input } => Some(exits::io_exit(port, size, input)),
                L2Action::Hlt => self
                    .primary_controls()
                    .contains(PrimaryProcControls::HLT_EXITING)
                    .then(exits::hlt_exit),
            };
            let Some(exit) = exit else {
                self.l2_queue.pop_front();
                continue;
            };
            // A faulting access is retried once the exit is handled; an
            // instruction that exited completes (its emulation is L0's or
            // L1's), and so does a page fault (L2's handler skips it).
            if exit.reason.reason() == ExitReason::EptViolation {
                self.stats.ept_violations += 1;
            } else {
                self.l2_queue.pop_front();
            }
            self.stats.l2_exits += 1;
            return Ok(exit);
        }
    }

    fn primary_controls(&self) -> PrimaryProcControls {
        PrimaryProcControls::from_bits_retain(
            self.vmcs02.get(VmcsField::PrimaryProcBasedControls) as u32
        )
    }

    /// VMCS02's VPID (0 with VPID off in VMCS02).
    fn vpid02(&self) -> u16 {
        let secondary = if self
            .primary_controls()
            .contains(PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS)
        {
            SecondaryProcControls::from_bits_retain(
                self.vmcs02.get(VmcsField::SecondaryProcBasedControls) as u32,
            )
        } else {
            SecondaryProcControls::empty()
        };
        if secondary.contains(SecondaryProcControls::ENABLE_VPID) {
            self.vmcs02.get(VmcsField::VirtualProcessorId) as u16
        } else {
            0
        }
    }

    /// L2's paging for `linear_page` under CR3 `cr3`: identity without a
    /// page map, else the map's entry (`None`: not present).
    fn l2_paging(&self, cr3: u64, linear_page: u64) -> Option<(u64, bool)> {
        match self.page_maps.get(&cr3) {
            None => Some((linear_page, true)),
            Some(map) => map.get(&linear_page).copied(),
        }
    }

    /// One L2 memory access: TLB, else L2 paging then EPT02. Returns the
    /// exit it causes, if any.
    fn access(
        &mut self,
        linear: u64,
        access: Access,
        tag: L1Tag,
        eptp12: Option<Eptp>,
    ) -> Option<Exit> {
        let write = access.kind == AccessKind::Write;
        let eptp02 = Eptp::from_raw(self.vmcs02.get(VmcsField::EptPointer));
        let key = TlbKey {
            vpid02: self.vpid02(),
            eptp02_root: eptp02.root_address(),
            linear_page: linear >> 12,
        };
        if let Some(entry) = self.tlb.lookup(&key).copied() {
            if access.allowed_by(entry.permissions, false) && (!write || entry.writable) {
                self.tlb.count_hit();
                self.check_hit(linear, key, entry, tag, eptp12);
                return None;
            }
            // Not enough rights cached: the processor walks again.
            self.tlb.invalidate_page(&key);
        }
        self.tlb.count_miss();
        let Some((gpa_page, writable)) = self.l2_paging(tag.cr3, key.linear_page) else {
            return self.l2_page_fault(linear, write, false);
        };
        if write && !writable {
            return self.l2_page_fault(linear, write, true);
        }
        let gpa = (gpa_page << 12) | (linear & 0xfff);
        let walked = if eptp02.root_address() == EPT01_ROOT {
            self.ept01.translate(L1Gpa::new(gpa)).map(|mapping| {
                (
                    mapping.frame.raw() + (gpa & (mapping.size.bytes() - 1)),
                    mapping.permissions,
                )
            })
        } else {
            self.ept02.with_tables(|tables| {
                translate_ept02(tables, eptp02, L2Gpa::new(gpa))
                    .map(|translation| (translation.host.raw(), translation.permissions))
            })
        };
        match walked {
            Some((host, permissions)) if access.allowed_by(permissions, false) => {
                let l1_gpa_page = self
                    .reference
                    .compose(&self.memory, &self.ept01, eptp12, gpa_page)
                    .map(|composition| composition.l1_gpa_page);
                let provenance = Provenance {
                    tag,
                    l2_gpa_page: gpa_page,
                    l1_gpa_page,
                    filled_at: self.reference.tick(),
                };
                self.tlb.insert(
                    key,
                    TlbEntry {
                        host_page: host >> 12,
                        permissions,
                        writable,
                        provenance,
                    },
                );
                None
            }
            other => {
                // SDM 29.4.3.1: an EPT violation invalidates the mappings
                // for the faulting address.
                self.tlb.invalidate_page(&key);
                Some(exits::ept_violation_exit(
                    access,
                    other.map(|(_, permissions)| permissions),
                    gpa,
                    linear,
                ))
            }
        }
    }

    /// Compares a hit with the current composition and records it if stale.
    fn check_hit(
        &mut self,
        linear: u64,
        key: TlbKey,
        entry: TlbEntry,
        tag: L1Tag,
        eptp12: Option<Eptp>,
    ) {
        let now = self
            .l2_paging(tag.cr3, key.linear_page)
            .and_then(|(gpa_page, writable)| {
                self.reference
                    .compose(&self.memory, &self.ept01, eptp12, gpa_page)
                    .map(|composition| (composition, writable))
            });
        let same = now.is_some_and(|(composition, writable)| {
            composition.host_page == entry.host_page
                && composition
                    .permissions
                    .contains(entry.permissions & EptPermissions::READ_WRITE_EXECUTE)
                && (writable || !entry.writable)
        });
        if same {
            return;
        }
        let Some(reason) = self
            .reference
            .stale_reason(&entry.provenance, tag, key.linear_page)
        else {
            return;
        };
        self.stats.stale_translations += 1;
        if self.stale.len() < STALE_RECORDS {
            self.stale.push(StaleTranslation {
                linear,
                key,
                cached: entry,
                current_host_page: now.map(|(composition, _)| composition.host_page),
                running: tag,
                reason,
            });
        }
    }

    /// A page fault of L2's own paging: an exception exit if VMCS02 asks
    /// for it (SDM 26.2: bit 14 of the exception bitmap, inverted when the
    /// error code does not match the mask/match pair), else L2 handles it.
    fn l2_page_fault(&mut self, linear: u64, write: bool, present: bool) -> Option<Exit> {
        self.stats.l2_page_faults += 1;
        let error_code = u32::from(present) | (u32::from(write) << 1);
        let bitmap = ExceptionBitmap::from_raw(self.vmcs02.get(VmcsField::ExceptionBitmap) as u32);
        let mask = self.vmcs02.get(VmcsField::PageFaultErrorCodeMask) as u32;
        let matched = self.vmcs02.get(VmcsField::PageFaultErrorCodeMatch) as u32;
        let intercepted = bitmap.intercepts(ExceptionVector::PageFault);
        let exits = if error_code & mask == matched {
            intercepted
        } else {
            !intercepted
        };
        exits.then(|| Exit {
            qualification: linear,
            // Vector 14, hardware exception (type 3), error code valid, valid.
            interruption_info: InterruptionInfo::from_raw(0xe | (3 << 8) | (1 << 11) | (1 << 31)),
            interruption_error_code: error_code,
            ..Exit::new(ExitReason::ExceptionOrNmi)
        })
    }
}

impl Platform for Model {
    type Error = ModelError;
    type Memory = ModelMemory;
    type Ept01 = TestEpt01;
    type Msrs = ModelMsrs;
    type Frames = ModelFrames;

    fn capabilities(&self) -> &VmxCapabilities {
        &self.caps
    }

    fn l0_requirements(&self) -> &L0Requirements {
        &self.l0
    }

    fn eptp01(&self) -> Eptp {
        // Write-back (6), 4-level walk (3 << 3).
        Eptp::from_raw(EPT01_ROOT | 6 | (3 << 3))
    }

    fn l1(&mut self) -> L1Parts<'_, Self> {
        L1Parts {
            cpu: &mut self.cpu,
            memory: &mut self.memory,
            ept01: &self.ept01,
            msrs: &mut self.msrs,
        }
    }

    fn set_l1_system_registers(
        &mut self,
        registers: &L1SystemRegisters,
    ) -> Result<(), Self::Error> {
        self.system_registers = *registers;
        Ok(())
    }

    fn inject_into_l1(&mut self, fault: Fault) -> Result<(), Self::Error> {
        self.stats.faults_injected += 1;
        self.last_fault = Some(fault);
        Ok(())
    }

    fn write_vmcs02(&mut self, field: VmcsField, value: u64) -> Result<(), Self::Error> {
        if self.vmcs02.get(field) != value {
            self.vmcs02.set(field, value);
            self.vmcs02_checked = false;
        }
        Ok(())
    }

    fn read_vmcs02(&mut self, field: VmcsField) -> Result<u64, Self::Error> {
        Ok(self.vmcs02.get(field))
    }

    fn l2_gprs(&mut self) -> &mut Gprs {
        &mut self.l2_gprs
    }

    fn invept(&mut self, kind: InveptType, eptp02: Eptp) -> Result<(), Self::Error> {
        if self.drop_invalidations {
            return Ok(());
        }
        match kind {
            InveptType::SingleContext => {
                self.stats.invept_single += 1;
                self.tlb.invept_single_context(eptp02.root_address());
            }
            InveptType::Global => {
                self.stats.invept_global += 1;
                self.tlb.invept_global();
            }
        }
        Ok(())
    }

    fn invvpid(
        &mut self,
        kind: InvvpidType,
        vpid02: u16,
        linear_address: u64,
    ) -> Result<(), Self::Error> {
        self.stats.invvpid[kind.raw() as usize & 3] += 1;
        if self.drop_invalidations {
            return Ok(());
        }
        match kind {
            InvvpidType::IndividualAddress => {
                self.tlb.invvpid_individual(vpid02, linear_address >> 12);
            }
            InvvpidType::SingleContext | InvvpidType::SingleContextRetainingGlobals => {
                self.tlb.invvpid_single_context(vpid02);
            }
            InvvpidType::AllContext => self.tlb.invvpid_all_context(),
        }
        Ok(())
    }

    fn run(&mut self, level: Level) -> Result<Exit, Self::Error> {
        match level {
            Level::L1 => self.run_l1(),
            Level::L2 => self.run_l2(),
        }
    }
}
