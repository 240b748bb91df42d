//! `hv simulate`: K L2 guests switched round-robin by a scripted L1 on the
//! model, under one flush policy, with the counts that show what the
//! policy costs and the stale translations it leaves (0 for every correct
//! policy).
//!
//! The scenario: L1 enters VMX operation and prepares one VMCS12 per L2
//! with VMWRITEs (hv-arch-vmx's long-mode baseline, each L2 with its own
//! EPT12 and vpid12 = i + 1, and its own page map). Then each switch is
//! VMPTRLD of the next L2's VMCS12, VMWRITE of `GUEST_RIP` (past the CPUID
//! of the last slice), VMLAUNCH the first time and VMRESUME after; the L2
//! slice reads each of its pages and ends with CPUID, which L1 always
//! gets. With `churn`, once per round and L2 L1 also moves one EPT12 leaf
//! (then INVEPT single-context) and one page-map entry (then INVVPID
//! individual-address), which makes the policies differ visibly.

extern crate alloc;

use alloc::vec::Vec;

use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::checks::baseline::long_mode_guest;
use hv_arch_vmx::ept::EptPermissions;
use hv_arch_vmx::vmcs::VmcsField;
use hv_mmu::addr::{L1Gpa, L2Gpa, PageSize};
use hv_mmu::shadow::Policy;
use hv_mmu::testing::Ept12Builder;

use super::engine::ModelConfig;
use super::harness::{Harness, HarnessError, Idle};
use super::script::{L1Action, L2Action, VmxOp};
use crate::platform::Level;
use crate::vcpu::Counters;
use crate::vmx::{HV_VMCS_REVISION_ID, VirtualCapabilities};

/// L1 physical address of the VMXON region.
const VMXON_REGION: u64 = 0x2000;
/// VMCS12 of L2 `i` is at `VMCS12_BASE + i * 4096`.
const VMCS12_BASE: u64 = 0x10_0000;
/// EPT12 tables of L2 `i` are taken from `EPT12_BASE + i * EPT12_AREA`.
const EPT12_BASE: u64 = 0x100_0000;
/// Bytes of table area per L2.
const EPT12_AREA: u64 = 0x10_0000;
/// L2 physical (and linear) address of L2's first page.
const L2_DATA: u64 = 0x40_0000;
/// L1 physical pages backing L2 `i` start at `L1_DATA + i * L1_DATA_AREA`.
const L1_DATA: u64 = 0x1000_0000;
/// Bytes of backing per L2 (pages plus the churn spares).
const L1_DATA_AREA: u64 = 0x10_0000;
/// L2 `i`'s CR3 (the key of its page map).
const L2_CR3_BASE: u64 = 0x5000_0000;
/// `GUEST_RIP` of each L2's first instruction.
const L2_RIP: u64 = 0x10_0000;
/// Steps allowed per switch before the run is declared stuck.
const STEPS_PER_SWITCH: usize = 10_000;

/// What to simulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SimulateConfig {
    /// K: L2 guests (1..=250).
    pub l2_guests: usize,
    /// N: L1 -> L2 switches (nested entries L1 asks for).
    pub switches: u64,
    /// The flush policy.
    pub policy: Policy,
    /// Pages each L2 touches per slice (1..=64).
    pub pages_per_l2: u64,
    /// Once per round and L2, L1 moves an EPT12 leaf + INVEPT and a page-map
    /// entry + INVVPID.
    pub churn: bool,
    /// Fault injection for testing the model: the platform drops every
    /// INVEPT/INVVPID, so stale translations must be found.
    pub drop_invalidations: bool,
}

impl SimulateConfig {
    /// K guests, N switches, `policy`, 4 pages per L2, no churn.
    pub const fn new(l2_guests: usize, switches: u64, policy: Policy) -> Self {
        Self {
            l2_guests,
            switches,
            policy,
            pages_per_l2: 4,
            churn: false,
            drop_invalidations: false,
        }
    }
}

/// INVEPTs issued, by type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InveptReport {
    /// Single-context.
    pub single: u64,
    /// Global (all-context).
    pub global: u64,
}

/// INVVPIDs issued, by type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InvvpidReport {
    /// Individual-address.
    pub individual: u64,
    /// Single-context.
    pub single: u64,
    /// All-context.
    pub all: u64,
    /// Single-context retaining globals.
    pub single_retaining_globals: u64,
}

/// What a simulation counted (exact counts; the JSON keys of `hv simulate`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SimulateReport {
    /// Nested VM entries (VMLAUNCH/VMRESUME that entered L2).
    pub nested_entries: u64,
    /// L2 exits.
    pub nested_exits: u64,
    /// L2 exits delivered to L1.
    pub reflected: u64,
    /// L2 exits L0 handled.
    pub handled_in_l0: u64,
    /// EPT violations resolved by filling EPT02.
    pub ept02_fills: u64,
    /// INVEPT issued to the platform.
    pub invept: InveptReport,
    /// INVVPID issued to the platform.
    pub invvpid: InvvpidReport,
    /// TLB hits the architecture forbids (0 unless hv-core misses a flush).
    pub stale_translations: u64,
    /// Exits L1 took.
    pub l1_exits: u64,
    /// EPT02 roots cached at the end.
    pub roots_live: u64,
    /// EPT02 fills after the first round (every L2 ran once).
    pub fills_after_first_round: u64,
    /// INVEPTs and INVVPIDs issued after the first round.
    pub flushes_after_first_round: u64,
    /// TLB hits.
    pub tlb_hits: u64,
    /// TLB misses (walks).
    pub tlb_misses: u64,
}

/// Why a simulation could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// K or pages per L2 is out of range.
    #[error("unsupported configuration: {0}")]
    Config(&'static str),
    /// Building an EPT12 failed.
    #[error("EPT12 setup: {0}")]
    Ept12(#[from] hv_mmu::testing::Ept12BuildError),
    /// A step failed.
    #[error("step: {0}")]
    Step(#[from] HarnessError),
    /// The run stopped for another reason than an empty L1 queue.
    #[error("switch {switch}: the run stopped unexpectedly ({idle:?})")]
    Stuck {
        /// The switch.
        switch: u64,
        /// What stopped it.
        idle: Idle,
    },
}

/// The address of L2 `guest`'s VMCS12.
const fn vmcs12(guest: usize) -> u64 {
    VMCS12_BASE + guest as u64 * 0x1000
}

/// The L1 page backing L2 `guest`'s page `page` (`spare`: the churn
/// alternative).
const fn backing(guest: usize, page: u64, spare: bool) -> u64 {
    L1_DATA + guest as u64 * L1_DATA_AREA + page * 0x1000 + if spare { 0x8_0000 } else { 0 }
}

/// Runs the scenario described in the [module documentation](self).
///
/// # Errors
///
/// [`SimulateError`]: a bad configuration, or hv-core failing (which is a
/// bug this simulation exists to find).
pub fn simulate(config: SimulateConfig) -> Result<SimulateReport, SimulateError> {
    if config.l2_guests == 0 || config.l2_guests > 250 {
        return Err(SimulateError::Config("--l2 must be 1..=250"));
    }
    if config.pages_per_l2 == 0 || config.pages_per_l2 > 64 {
        return Err(SimulateError::Config("pages per L2 must be 1..=64"));
    }
    let mut harness = Harness::new(config.policy, ModelConfig::default());
    harness
        .model_mut()
        .set_drop_invalidations(config.drop_invalidations);
    let ept12 = setup(&mut harness, config)?;
    let mut first_round = None;
    let mut launched = alloc::vec![false; config.l2_guests];
    for switch in 0..config.switches {
        let guest = (switch % config.l2_guests as u64) as usize;
        if switch == config.l2_guests as u64 {
            first_round = Some(harness.vcpu().counters());
        }
        let round = switch / config.l2_guests as u64;
        if config.churn && round > 0 {
            churn(&mut harness, &ept12[guest], guest, round)?;
        }
        let model = harness.model_mut();
        model.push_l1(L1Action::Vmx(VmxOp::Vmptrld {
            pointer: vmcs12(guest),
        }));
        model.push_l1(L1Action::Vmx(VmxOp::Vmwrite {
            encoding: u64::from(VmcsField::GuestRip.encoding()),
            value: L2_RIP + 2 * round,
        }));
        let entry = if launched[guest] {
            VmxOp::Vmresume
        } else {
            VmxOp::Vmlaunch
        };
        launched[guest] = true;
        model.push_l1(L1Action::Vmx(entry));
        for page in 0..config.pages_per_l2 {
            model.push_l2(L2Action::Read {
                linear: L2_DATA + page * 0x1000 + 8,
            });
        }
        model.push_l2(L2Action::Cpuid);
        match harness.run_until_idle(STEPS_PER_SWITCH)? {
            Idle::NeedsActions(Level::L1) if harness.model().queued(Level::L2) == 0 => {}
            idle => return Err(SimulateError::Stuck { switch, idle }),
        }
    }
    Ok(report(&harness, first_round))
}

/// VMXON, then one VMCS12 per L2 written with VMWRITEs, and each L2's EPT12
/// and page map.
fn setup(
    harness: &mut Harness,
    config: SimulateConfig,
) -> Result<Vec<Ept12Builder>, SimulateError> {
    let advertised = VirtualCapabilities::derive(&VmxCapabilities::bochs_skylake_x());
    let baseline = long_mode_guest(advertised.capabilities());
    let mut builders = Vec::with_capacity(config.l2_guests);
    let model = harness.model_mut();
    model.push_l1(L1Action::WriteL1 {
        gpa: VMXON_REGION,
        value: u64::from(HV_VMCS_REVISION_ID),
    });
    model.push_l1(L1Action::Vmx(VmxOp::Vmxon {
        region: VMXON_REGION,
    }));
    for guest in 0..config.l2_guests {
        let memory = model.memory_mut().words_mut();
        let table_area = L1Gpa::new(EPT12_BASE + guest as u64 * EPT12_AREA);
        let mut ept12 = Ept12Builder::new(memory, table_area)?;
        for page in 0..config.pages_per_l2 {
            ept12.map(
                memory,
                L2Gpa::new(L2_DATA + page * 0x1000),
                L1Gpa::new(backing(guest, page, false)),
                PageSize::Size4K,
                EptPermissions::READ_WRITE_EXECUTE,
            )?;
        }
        let cr3 = L2_CR3_BASE + guest as u64 * 0x1000;
        for page in 0..config.pages_per_l2 {
            let linear_page = (L2_DATA >> 12) + page;
            model.push_l1(L1Action::WriteL2PageMap {
                cr3,
                linear_page,
                gpa_page: Some(linear_page),
                writable: true,
            });
        }
        let pointer = vmcs12(guest);
        model.push_l1(L1Action::WriteL1 {
            gpa: pointer,
            value: u64::from(HV_VMCS_REVISION_ID),
        });
        model.push_l1(L1Action::Vmx(VmxOp::Vmclear { pointer }));
        model.push_l1(L1Action::Vmx(VmxOp::Vmptrld { pointer }));
        for (field, value) in baseline.non_zero() {
            if field.is_read_only() {
                continue;
            }
            let value = match field {
                VmcsField::EptPointer => ept12.eptp(false).raw(),
                VmcsField::VirtualProcessorId => guest as u64 + 1,
                VmcsField::GuestCr3 => cr3,
                VmcsField::GuestRip => L2_RIP,
                _ => value,
            };
            model.push_l1(L1Action::Vmx(VmxOp::Vmwrite {
                encoding: u64::from(field.encoding()),
                value,
            }));
        }
        builders.push(ept12);
    }
    match harness.run_until_idle(STEPS_PER_SWITCH * config.l2_guests)? {
        Idle::NeedsActions(Level::L1) => Ok(builders),
        idle => Err(SimulateError::Stuck { switch: 0, idle }),
    }
}

/// One churn round for `guest`: move page 0's EPT12 leaf between its two
/// backings + INVEPT single-context, and page 1's page-map entry between two
/// L2 pages + INVVPID individual-address.
fn churn(
    harness: &mut Harness,
    ept12: &Ept12Builder,
    guest: usize,
    round: u64,
) -> Result<(), SimulateError> {
    let mut ept12 = ept12.clone();
    let model = harness.model_mut();
    let spare = round % 2 == 1;
    ept12.map(
        model.memory_mut().words_mut(),
        L2Gpa::new(L2_DATA),
        L1Gpa::new(backing(guest, 0, spare)),
        PageSize::Size4K,
        EptPermissions::READ_WRITE_EXECUTE,
    )?;
    model.push_l1(L1Action::Vmx(VmxOp::Invept {
        kind: 1,
        eptp: ept12.eptp(false).raw(),
    }));
    let cr3 = L2_CR3_BASE + guest as u64 * 0x1000;
    let linear_page = (L2_DATA >> 12) + 1;
    // Page 1 alternates between L2 page 1 and L2 page 0.
    let gpa_page = if spare { linear_page - 1 } else { linear_page };
    model.push_l1(L1Action::WriteL2PageMap {
        cr3,
        linear_page,
        gpa_page: Some(gpa_page),
        writable: true,
    });
    model.push_l1(L1Action::Vmx(VmxOp::Invvpid {
        kind: 0,
        vpid_word: guest as u64 + 1,
        linear: linear_page << 12,
    }));
    Ok(())
}

/// The report from the counters.
fn report(harness: &Harness, first_round: Option<Counters>) -> SimulateReport {
    let counters: Counters = harness.vcpu().counters();
    let flushes = |c: &Counters| {
        c.invept.single
            + c.invept.global
            + c.invvpid.individual
            + c.invvpid.single
            + c.invvpid.all
            + c.invvpid.single_retaining_globals
    };
    let stats = harness.model().stats();
    let tlb = harness.model().tlb().stats();
    SimulateReport {
        nested_entries: counters.nested_entries,
        nested_exits: counters.nested_exits,
        reflected: counters.reflected,
        handled_in_l0: counters.handled_in_l0,
        ept02_fills: counters.ept02_fills,
        invept: InveptReport {
            single: counters.invept.single,
            global: counters.invept.global,
        },
        invvpid: InvvpidReport {
            individual: counters.invvpid.individual,
            single: counters.invvpid.single,
            all: counters.invvpid.all,
            single_retaining_globals: counters.invvpid.single_retaining_globals,
        },
        stale_translations: stats.stale_translations,
        l1_exits: stats.l1_exits,
        roots_live: counters.roots_live,
        fills_after_first_round: first_round
            .map_or(0, |first| counters.ept02_fills - first.ept02_fills),
        flushes_after_first_round: first_round
            .map_or(0, |first| flushes(&counters) - flushes(&first)),
        tlb_hits: tlb.hits,
        tlb_misses: tlb.misses,
    }
}
