//! The `vmx_ops` fuzz scenario (feature `fuzzing`): arbitrary sequences of
//! L1 VMX instructions with arbitrary operands, VMCS12 and EPT12 contents,
//! L2 accesses and EPT01 changes, run by hv-core on the model.
//!
//! Invariants checked ([`VmxOpsScenario::run`]): nothing panics; the model
//! never finds a stale translation; every VMCS02 hv-core runs passes the
//! VM-entry checks (the model refuses others with
//! `ModelError::Vmcs02Rejected`); hv-core never fails a step for a reason
//! the guests caused; no step sequence livelocks.
//!
//! Shared by `fuzz/fuzz_targets/vmx_ops.rs` and the stable corpus replay
//! `hv-core/tests/vmx_ops_corpus.rs`.

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;

use arbitrary::Arbitrary;
use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::checks::baseline::long_mode_guest;
use hv_arch_vmx::ept::EptPermissions;
use hv_arch_vmx::vmcs::VmcsField;
use hv_mmu::addr::{L1Gpa, L2Gpa, PageSize};
use hv_mmu::shadow::Policy;
use hv_mmu::testing::Ept12Builder;

use super::engine::{ModelConfig, StaleTranslation};
use super::harness::{Harness, HarnessError, Idle};
use super::script::{L1Action, L2Action, VmxOp};
use crate::vcpu::VcpuError;
use crate::vmx::{HV_VMCS_REVISION_ID, VirtualCapabilities};

/// L1 memory of the scenario: 64 MiB.
const L1_MEMORY: u64 = 64 << 20;
/// The VMXON region.
const VMXON_REGION: u64 = 0x2000;
/// VMCS12 regions `i` at `VMCS12_BASE + i * 4096`, 4 of them.
const VMCS12_BASE: u64 = 0x10_0000;
/// EPT12 tables of the prologue's L2.
const EPT12_AREA: u64 = 0x100_0000;
/// L2's data pages (linear = L2 physical, 16 pages).
const L2_DATA: u64 = 0x40_0000;
/// L1 pages backing L2's data.
const L1_DATA: u64 = 0x200_0000;
/// L2's CR3 in the prologue.
const L2_CR3: u64 = 0x5000_0000;
/// Steps per action before the run counts as a livelock.
const MAX_STEPS: usize = 2_000;
/// Actions per scenario.
const MAX_ACTIONS: usize = 256;

/// A VMXON/VMCS pointer operand.
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum Pointer {
    /// The VMXON region.
    Vmxon,
    /// VMCS12 region `n % 4`.
    Vmcs(u8),
    /// Anything.
    Raw(u64),
}

impl Pointer {
    fn address(self) -> u64 {
        match self {
            Self::Vmxon => VMXON_REGION,
            Self::Vmcs(n) => VMCS12_BASE + u64::from(n % 4) * 0x1000,
            Self::Raw(raw) => raw,
        }
    }
}

/// A VMREAD/VMWRITE field operand.
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum Field {
    /// A field of hv's table.
    Known(u16),
    /// One of the fields that decide translation and entries.
    Interesting(u8),
    /// Any encoding.
    Raw(u64),
}

/// Fields that matter most for translation and entry checks.
const INTERESTING: [VmcsField; 10] = [
    VmcsField::EptPointer,
    VmcsField::VirtualProcessorId,
    VmcsField::PrimaryProcBasedControls,
    VmcsField::SecondaryProcBasedControls,
    VmcsField::GuestCr3,
    VmcsField::GuestRip,
    VmcsField::ExceptionBitmap,
    VmcsField::GuestCr0,
    VmcsField::PinBasedControls,
    VmcsField::VmEntryControls,
];

impl Field {
    fn encoding(self) -> u64 {
        match self {
            Self::Known(n) => {
                let all = VmcsField::ALL;
                u64::from(all[usize::from(n) % all.len()].encoding())
            }
            Self::Interesting(n) => {
                u64::from(INTERESTING[usize::from(n) % INTERESTING.len()].encoding())
            }
            Self::Raw(raw) => raw,
        }
    }
}

/// A value operand.
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum Value {
    /// Anything.
    Raw(u64),
    /// A small number (VPIDs, types, bits).
    Small(u8),
    /// The prologue EPT12's EPTP with A/D on or off.
    Eptp12(bool),
    /// A single bit.
    Bit(u8),
}

/// What one scenario step does.
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum Action {
    /// VMXON.
    Vmxon(Pointer),
    /// VMXOFF.
    Vmxoff,
    /// VMCLEAR.
    Vmclear(Pointer),
    /// VMPTRLD.
    Vmptrld(Pointer),
    /// VMPTRST.
    Vmptrst,
    /// VMREAD.
    Vmread(Field),
    /// VMWRITE.
    Vmwrite(Field, Value),
    /// VMLAUNCH.
    Vmlaunch,
    /// VMRESUME.
    Vmresume,
    /// INVEPT (type, descriptor EPTP).
    Invept(u8, Value),
    /// INVVPID (type, VPID word, linear address).
    Invvpid(u8, Value, u64),
    /// VMCALL.
    Vmcall,
    /// A VMX-instruction exit with raw information fields.
    Raw {
        /// Index into the VMX exit reasons.
        reason: u8,
        /// Instruction information.
        info: u32,
        /// Qualification.
        qualification: u64,
        /// Length.
        length: u8,
        /// RAX, RCX, RBX.
        registers: [u64; 3],
    },
    /// L1 maps L2 page `page % 16` to L1 page `target` with `rights`
    /// (bits 2:0) in the prologue's EPT12 (no INVEPT).
    Ept12Map {
        /// The L2 page.
        page: u8,
        /// The L1 page offset from the data area.
        target: u8,
        /// EPT rights.
        rights: u8,
    },
    /// L1 writes 8 bytes of a VMCS12 region.
    WriteVmcs12 {
        /// Region `n % 4`.
        vmcs: u8,
        /// Field index.
        field: u16,
        /// The value.
        value: u64,
    },
    /// L1 writes 8 bytes anywhere in (or beyond) its memory.
    WriteL1 {
        /// The address.
        gpa: u32,
        /// The value.
        value: u64,
    },
    /// L1 edits L2's page map.
    PageMap {
        /// Linear page `n % 16` of the data area.
        linear: u8,
        /// Target page `n % 16`, or unmapped.
        target: Option<u8>,
        /// Writable.
        writable: bool,
    },
    /// L1 CPUID.
    L1Cpuid,
    /// L2 reads data page `n % 16`.
    Read(u8),
    /// L2 writes data page `n % 16`.
    Write(u8),
    /// L2 fetches from data page `n % 16`.
    Fetch(u8),
    /// L2 CPUID.
    L2Cpuid,
    /// L2 I/O.
    Io(u16, u8, bool),
    /// L2 HLT.
    L2Hlt,
    /// L0 moves L1 data page `n % 16` to another host frame.
    Ept01Remap(u8, u16),
}

/// A whole fuzz input.
#[derive(Clone, Debug, Arbitrary)]
pub struct VmxOpsScenario {
    /// Policy `n % 4`.
    pub policy: u8,
    /// Run the prologue (VMXON, a valid VMCS12 current, EPT12 built).
    pub prologue: bool,
    /// The actions.
    pub actions: Vec<Action>,
}

/// What a scenario run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScenarioReport {
    /// Actions executed.
    pub actions: usize,
    /// Nested entries.
    pub nested_entries: u64,
    /// TLB hits checked by the stale rule.
    pub tlb_hits: u64,
    /// EPT02 fills.
    pub ept02_fills: u64,
}

/// A broken invariant.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioFailure {
    /// The model found a translation the architecture forbids.
    #[error("stale translation: {0:?}")]
    Stale(Box<StaleTranslation>),
    /// A step failed for a reason no guest may cause.
    #[error("step failed: {0}")]
    Step(Box<HarnessError>),
    /// Steps went on without consuming an action.
    #[error("livelock after action {0}")]
    Livelock(usize),
    /// The prologue's EPT12 could not be built (test bug).
    #[error("EPT12 setup failed")]
    Setup,
}

impl VmxOpsScenario {
    /// Runs the scenario and checks the invariants.
    ///
    /// # Errors
    ///
    /// The first [`ScenarioFailure`].
    pub fn run(&self) -> Result<ScenarioReport, ScenarioFailure> {
        let policy = Policy::ALL[usize::from(self.policy) % Policy::ALL.len()];
        let mut harness = Harness::new(
            policy,
            ModelConfig {
                l1_memory: L1_MEMORY,
                frames: 1024,
            },
        );
        let mut ept12 = build_ept12(&mut harness).ok_or(ScenarioFailure::Setup)?;
        if self.prologue {
            prologue(&mut harness, &ept12);
        }
        let mut report = ScenarioReport::default();
        if self.prologue {
            drive(&mut harness, 0)?;
        }
        for (index, action) in self.actions.iter().take(MAX_ACTIONS).enumerate() {
            apply(&mut harness, &mut ept12, *action);
            report.actions += 1;
            if !drive(&mut harness, index)? {
                break;
            }
        }
        let stats = harness.model().stats();
        if let Some(stale) = harness.model().stale_translations().first() {
            return Err(ScenarioFailure::Stale(Box::new(*stale)));
        }
        report.nested_entries = harness.vcpu().counters().nested_entries;
        report.ept02_fills = harness.vcpu().counters().ept02_fills;
        report.tlb_hits = harness.model().tlb().stats().hits;
        debug_assert_eq!(stats.stale_translations, 0);
        Ok(report)
    }
}

/// Runs until a queue is dry; `false` when L1 shut down.
fn drive(harness: &mut Harness, index: usize) -> Result<bool, ScenarioFailure> {
    match harness.run_until_idle(MAX_STEPS) {
        Ok(Idle::NeedsActions(_)) => Ok(true),
        Ok(Idle::Shutdown) | Err(VcpuError::L1ShutDown) => Ok(false),
        Ok(Idle::StepLimit) => Err(ScenarioFailure::Livelock(index)),
        Err(error) => Err(ScenarioFailure::Step(Box::new(error))),
    }
}

/// The prologue's EPT12: 8 of the 16 data pages mapped RWX.
fn build_ept12(harness: &mut Harness) -> Option<Ept12Builder> {
    let memory = harness.model_mut().memory_mut().words_mut();
    let mut ept12 = Ept12Builder::new(memory, L1Gpa::new(EPT12_AREA)).ok()?;
    for page in 0..8 {
        ept12
            .map(
                memory,
                L2Gpa::new(L2_DATA + page * 0x1000),
                L1Gpa::new(L1_DATA + page * 0x1000),
                PageSize::Size4K,
                EptPermissions::READ_WRITE_EXECUTE,
            )
            .ok()?;
    }
    Some(ept12)
}

/// VMXON, VMCLEAR + VMPTRLD of VMCS12 0, VMWRITEs of a valid long-mode
/// VMCS12 using the prologue's EPT12, VPID 1 and a page map.
fn prologue(harness: &mut Harness, ept12: &Ept12Builder) {
    let advertised = VirtualCapabilities::derive(&VmxCapabilities::bochs_skylake_x());
    let baseline = long_mode_guest(advertised.capabilities());
    let model = harness.model_mut();
    for region in [VMXON_REGION, VMCS12_BASE, VMCS12_BASE + 0x1000] {
        model.push_l1(L1Action::WriteL1 {
            gpa: region,
            value: u64::from(HV_VMCS_REVISION_ID),
        });
    }
    model.push_l1(L1Action::Vmx(VmxOp::Vmxon {
        region: VMXON_REGION,
    }));
    model.push_l1(L1Action::Vmx(VmxOp::Vmclear {
        pointer: VMCS12_BASE,
    }));
    model.push_l1(L1Action::Vmx(VmxOp::Vmptrld {
        pointer: VMCS12_BASE,
    }));
    for (field, value) in baseline.non_zero() {
        if field.is_read_only() {
            continue;
        }
        let value = match field {
            VmcsField::EptPointer => ept12.eptp(false).raw(),
            VmcsField::GuestCr3 => L2_CR3,
            _ => value,
        };
        model.push_l1(L1Action::Vmx(VmxOp::Vmwrite {
            encoding: u64::from(field.encoding()),
            value,
        }));
    }
    for page in 0..16 {
        let linear_page = (L2_DATA >> 12) + page;
        model.push_l1(L1Action::WriteL2PageMap {
            cr3: L2_CR3,
            linear_page,
            gpa_page: Some(linear_page),
            writable: true,
        });
    }
}

/// The prologue EPT12's EPTP.
fn eptp12(ept12: &Ept12Builder, accessed_dirty: bool) -> u64 {
    ept12.eptp(accessed_dirty).raw()
}

/// Queues (or performs) `action`.
#[allow(
    clippy::too_many_lines,
    reason = "one arm per action, each a line or two: a table, not logic"
)]
fn apply(harness: &mut Harness, ept12: &mut Ept12Builder, action: Action) {
    let value = |value: Value| match value {
        Value::Raw(raw) => raw,
        Value::Small(small) => u64::from(small),
        Value::Eptp12(accessed_dirty) => eptp12(ept12, accessed_dirty),
        Value::Bit(bit) => 1 << (bit % 64),
    };
    let data_page = |n: u8| L2_DATA + u64::from(n % 16) * 0x1000 + u64::from(n) * 8 % 0x1000;
    let l1 = |op| Some(L1Action::Vmx(op));
    let l1_action = match action {
        Action::Vmxon(pointer) => l1(VmxOp::Vmxon {
            region: pointer.address(),
        }),
        Action::Vmxoff => l1(VmxOp::Vmxoff),
        Action::Vmclear(pointer) => l1(VmxOp::Vmclear {
            pointer: pointer.address(),
        }),
        Action::Vmptrld(pointer) => l1(VmxOp::Vmptrld {
            pointer: pointer.address(),
        }),
        Action::Vmptrst => l1(VmxOp::Vmptrst),
        Action::Vmread(field) => l1(VmxOp::Vmread {
            encoding: field.encoding(),
        }),
        Action::Vmwrite(field, operand) => l1(VmxOp::Vmwrite {
            encoding: field.encoding(),
            value: value(operand),
        }),
        Action::Vmlaunch => l1(VmxOp::Vmlaunch),
        Action::Vmresume => l1(VmxOp::Vmresume),
        Action::Invept(kind, operand) => l1(VmxOp::Invept {
            kind: u64::from(kind % 4),
            eptp: value(operand),
        }),
        Action::Invvpid(kind, vpid, linear) => l1(VmxOp::Invvpid {
            kind: u64::from(kind % 5),
            vpid_word: value(vpid),
            linear,
        }),
        Action::Vmcall => l1(VmxOp::Vmcall),
        Action::Raw {
            reason,
            info,
            qualification,
            length,
            registers,
        } => {
            const REASONS: [u16; 12] = [18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 50, 53];
            l1(VmxOp::Raw {
                reason: REASONS[usize::from(reason) % REASONS.len()],
                instruction_info: info,
                qualification,
                length: u32::from(length),
                registers,
            })
        }
        Action::Ept12Map {
            page,
            target,
            rights,
        } => {
            let memory = harness.model_mut().memory_mut().words_mut();
            let _ = ept12.map(
                memory,
                L2Gpa::new(L2_DATA + u64::from(page % 16) * 0x1000),
                L1Gpa::new(L1_DATA + u64::from(target % 32) * 0x1000),
                PageSize::Size4K,
                EptPermissions::from_bits_truncate(u64::from(rights & 7)),
            );
            None
        }
        Action::WriteVmcs12 { vmcs, field, value } => {
            let all = VmcsField::ALL;
            let field = all[usize::from(field) % all.len()];
            Some(L1Action::WriteL1 {
                gpa: VMCS12_BASE
                    + u64::from(vmcs % 4) * 0x1000
                    + crate::vmx::vmcs12::field_offset(field) as u64,
                value,
            })
        }
        Action::WriteL1 { gpa, value } => Some(L1Action::WriteL1 {
            gpa: u64::from(gpa),
            value,
        }),
        Action::PageMap {
            linear,
            target,
            writable,
        } => Some(L1Action::WriteL2PageMap {
            cr3: L2_CR3,
            linear_page: (L2_DATA >> 12) + u64::from(linear % 16),
            gpa_page: target.map(|target| (L2_DATA >> 12) + u64::from(target % 16)),
            writable,
        }),
        Action::L1Cpuid => Some(L1Action::Cpuid),
        Action::Read(n) => {
            harness.model_mut().push_l2(L2Action::Read {
                linear: data_page(n),
            });
            None
        }
        Action::Write(n) => {
            harness.model_mut().push_l2(L2Action::Write {
                linear: data_page(n),
            });
            None
        }
        Action::Fetch(n) => {
            harness.model_mut().push_l2(L2Action::Fetch {
                linear: data_page(n),
            });
            None
        }
        Action::L2Cpuid => {
            harness.model_mut().push_l2(L2Action::Cpuid);
            None
        }
        Action::Io(port, size, input) => {
            harness
                .model_mut()
                .push_l2(L2Action::Io { port, size, input });
            None
        }
        Action::L2Hlt => {
            harness.model_mut().push_l2(L2Action::Hlt);
            None
        }
        Action::Ept01Remap(page, host) => {
            let gfn = (L1_DATA >> 12) + u64::from(page % 16);
            harness.ept01_remap(gfn, 0x20_0000 + u64::from(host));
            None
        }
    };
    if let Some(action) = l1_action {
        harness.model_mut().push_l1(action);
    }
}
