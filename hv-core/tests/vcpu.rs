//! Scenario tests for hv-core's vCPU engine (`hv_core::vcpu`) on a small
//! scripted platform: nested entry, reflection, EPT02 fills vs reflected
//! EPT violations, the VPID policies, INVEPT/INVVPID mapping, the VMX
//! capability MSRs, VMCS02 rejection, and exact counters.

use std::collections::{HashMap, VecDeque};

use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::checks::baseline::long_mode_guest;
use hv_arch_vmx::checks::{EntryCheckFailure, EntryContext, check_vm_entry};
use hv_arch_vmx::controls::{
    ControlWord, EntryControls, ExceptionBitmap, ExceptionVector, ExitControls, PinBasedControls,
    PrimaryProcControls, SecondaryProcControls,
};
use hv_arch_vmx::ept::{EptPermissions, EptWalkContext, Eptp};
use hv_arch_vmx::exit::{
    AddressSize, ExitReason, Gpr, MemoryOperand, SegmentRegister, VmxInstructionInfo,
};
use hv_arch_vmx::instruction_error::VmInstructionError;
use hv_arch_vmx::interruption::{InterruptionInfo, InterruptionType};
use hv_arch_vmx::invalidation::{InveptType, InvvpidType};
use hv_arch_vmx::msr::FeatureControl;
use hv_arch_vmx::registers::Cr4;
use hv_arch_vmx::vmcs::{FieldKind, VmcsField, VmcsImage};
use hv_core::platform::{L0Requirements, L1Parts, Level, Platform};
use hv_core::reflect::{L0Reason, L1SystemRegisters, MsrAccess, MsrFault};
use hv_core::state::{Exit, Gprs, L1Access, L1Cpu, PageFault, Segment};
use hv_core::vcpu::{Counters, Handled, InveptCounts, Step, Vcpu, VcpuConfig, Vpid02Range};
use hv_core::vmx::{Fault, HV_VMCS_REVISION_ID, LaunchState, NestedVmxConfig, VmxStatus};
use hv_mmu::addr::{HostPa, L1Gpa, L2Gpa, PageSize};
use hv_mmu::env::{L1Memory, NotL1Memory};
use hv_mmu::testing::{Ept12Builder, FramePool, TestEpt01, TestMemory};
use hv_mmu::{MmuConfig, Policy};

// ---------------------------------------------------------------------------
// The scripted platform.
// ---------------------------------------------------------------------------

const MEMORY_SIZE: u64 = 0x10_0000;
const MAXPHYADDR: u8 = 39;
const VMXON_REGION: u64 = 0x1000;
/// VMCS12 regions: VMCS i at `VMCS_BASE + i * 0x1000`.
const VMCS_BASE: u64 = 0x2000;
const SCRATCH: u64 = 0x30000;
const DESCRIPTOR: u64 = 0x31000;
const EPT12_TABLES: u64 = 0x40000;
/// L2 page mapped by EPT12 to `L1_PAGE`.
const L2_PAGE: u64 = 0x20_0000;
const L1_PAGE: u64 = 0x80000;
/// L2 page EPT12 does not map.
const L2_UNMAPPED: u64 = 0x30_0000;
const VMCS02_ADDRESS: u64 = 0xf000;
const LENGTH: u32 = 3;
const L1_PAT: u64 = 0x0007_0406_0007_0406;
const L1_DEBUGCTL: u64 = 0;

/// L1 memory: hv-mmu's `TestMemory` with byte access and identity paging.
#[derive(Clone, Debug)]
struct Memory(TestMemory);

impl L1Memory for Memory {
    fn read_u64(&self, gpa: L1Gpa) -> Result<u64, NotL1Memory> {
        self.0.read_u64(gpa)
    }

    fn compare_exchange_u64(
        &mut self,
        gpa: L1Gpa,
        old: u64,
        new: u64,
    ) -> Result<bool, NotL1Memory> {
        self.0.compare_exchange_u64(gpa, old, new)
    }
}

impl L1Access for Memory {
    fn read_bytes(&self, gpa: L1Gpa, buf: &mut [u8]) -> Result<(), NotL1Memory> {
        self.0.read_bytes(gpa, buf)
    }

    fn write_bytes(&mut self, gpa: L1Gpa, buf: &[u8]) -> Result<(), NotL1Memory> {
        self.0.write_bytes(gpa, buf)
    }

    fn translate(&self, _cpu: &L1Cpu, linear: u64, _write: bool) -> Result<L1Gpa, PageFault> {
        Ok(L1Gpa::new(linear))
    }
}

/// L1's MSRs: whatever was written, PAT and DEBUGCTL preset.
#[derive(Clone, Debug, Default)]
struct Msrs(HashMap<u32, u64>);

impl MsrAccess for Msrs {
    fn read_msr(&mut self, index: u32) -> Result<u64, MsrFault> {
        self.0.get(&index).copied().ok_or(MsrFault { index })
    }

    fn write_msr(&mut self, index: u32, value: u64) -> Result<(), MsrFault> {
        self.0.insert(index, value);
        Ok(())
    }
}

/// What the scripted platform refuses, as hardware would.
#[derive(Debug, thiserror::Error)]
enum ScriptError {
    /// The script ran out: the test asked for more steps than it queued.
    #[error("no scripted exit left for {0:?}")]
    Empty(Level),
    /// VMWRITE of a field this processor does not have (SDM 31.3 VMWRITE:
    /// VMfailValid(12)), which L0 never expects.
    #[error("VMWRITE of unsupported VMCS02 field {0:?}")]
    UnsupportedField(VmcsField),
    /// VMLAUNCH/VMRESUME of a VMCS02 that fails the entry checks.
    #[error("VMCS02 fails the entry checks: {0}")]
    EntryCheck(EntryCheckFailure),
}

/// Guest-state fields of features the scripted processor (Skylake-X) does
/// not have: a VMWRITE to them fails.
const UNSUPPORTED_FIELDS: &[VmcsField] = &[
    VmcsField::GuestInterruptStatus,
    VmcsField::GuestPmlIndex,
    VmcsField::GuestUinv,
    VmcsField::GuestPerfGlobalCtrl,
    VmcsField::GuestBndcfgs,
    VmcsField::GuestRtitCtl,
    VmcsField::GuestLbrCtl,
    VmcsField::GuestPkrs,
    VmcsField::GuestFredConfig,
    VmcsField::GuestFredRsp1,
    VmcsField::GuestFredRsp2,
    VmcsField::GuestFredRsp3,
    VmcsField::GuestFredStklvls,
    VmcsField::GuestFredSsp1,
    VmcsField::GuestFredSsp2,
    VmcsField::GuestFredSsp3,
    VmcsField::GuestSpecCtrl,
    VmcsField::GuestDeadline,
    VmcsField::GuestSCet,
    VmcsField::GuestSsp,
    VmcsField::GuestInterruptSspTableAddress,
];

/// An INVVPID the platform executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Invvpid {
    kind: InvvpidType,
    vpid02: u16,
    linear_address: u64,
}

struct Scripted {
    caps: VmxCapabilities,
    l0: L0Requirements,
    cpu: L1Cpu,
    memory: Memory,
    ept01: TestEpt01,
    msrs: Msrs,
    vmcs02: HashMap<VmcsField, u64>,
    vmcs02_writes: u64,
    l2_gprs: Gprs,
    l1_exits: VecDeque<Exit>,
    l2_exits: VecDeque<Exit>,
    injected: Vec<Fault>,
    system_registers: Vec<L1SystemRegisters>,
    invepts: Vec<(InveptType, Eptp)>,
    invvpids: Vec<Invvpid>,
    /// Levels run, in order.
    runs: Vec<Level>,
    /// What L2 changes in VMCS02's guest state during its next run.
    l2_changes: Vec<(VmcsField, u64)>,
}

impl Scripted {
    /// VMCS02 as an image.
    fn vmcs02_image(&self) -> VmcsImage {
        let mut image = VmcsImage::new();
        for (&field, &value) in &self.vmcs02 {
            image.set(field, value);
        }
        image
    }
}

impl Platform for Scripted {
    type Error = ScriptError;
    type Memory = Memory;
    type Ept01 = TestEpt01;
    type Msrs = Msrs;
    type Frames = FramePool;

    fn capabilities(&self) -> &VmxCapabilities {
        &self.caps
    }

    fn l0_requirements(&self) -> &L0Requirements {
        &self.l0
    }

    fn eptp01(&self) -> Eptp {
        Eptp::from_raw(0x7_7000 | 6 | (3 << 3))
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
    ) -> Result<(), ScriptError> {
        self.system_registers.push(*registers);
        Ok(())
    }

    fn inject_into_l1(&mut self, fault: Fault) -> Result<(), ScriptError> {
        self.injected.push(fault);
        Ok(())
    }

    fn write_vmcs02(&mut self, field: VmcsField, value: u64) -> Result<(), ScriptError> {
        if UNSUPPORTED_FIELDS.contains(&field) {
            return Err(ScriptError::UnsupportedField(field));
        }
        self.vmcs02.insert(field, value);
        self.vmcs02_writes += 1;
        Ok(())
    }

    fn read_vmcs02(&mut self, field: VmcsField) -> Result<u64, ScriptError> {
        Ok(self.vmcs02.get(&field).copied().unwrap_or(0))
    }

    fn l2_gprs(&mut self) -> &mut Gprs {
        &mut self.l2_gprs
    }

    fn invept(&mut self, kind: InveptType, eptp02: Eptp) -> Result<(), ScriptError> {
        self.invepts.push((kind, eptp02));
        Ok(())
    }

    fn invvpid(
        &mut self,
        kind: InvvpidType,
        vpid02: u16,
        linear_address: u64,
    ) -> Result<(), ScriptError> {
        self.invvpids.push(Invvpid {
            kind,
            vpid02,
            linear_address,
        });
        Ok(())
    }

    fn run(&mut self, level: Level) -> Result<Exit, ScriptError> {
        if level == Level::L2 {
            check_vm_entry(&self.vmcs02_image(), &self.caps, &self.l0.entry_context)
                .map_err(ScriptError::EntryCheck)?;
            for (field, value) in core::mem::take(&mut self.l2_changes) {
                self.vmcs02.insert(field, value);
            }
            // SDM 28.2: every VM exit writes EFER.LMA into "IA-32e mode
            // guest" and clears the valid bit of the VM-entry
            // interruption information.
            let lma = self.vmcs02.get(&VmcsField::GuestEfer).copied().unwrap_or(0) & (1 << 10);
            let entry = self.vmcs02.entry(VmcsField::VmEntryControls).or_insert(0);
            *entry = (*entry & !u64::from(EntryControls::IA32E_MODE_GUEST.bits()))
                | if lma != 0 {
                    u64::from(EntryControls::IA32E_MODE_GUEST.bits())
                } else {
                    0
                };
            let info = self
                .vmcs02
                .entry(VmcsField::VmEntryInterruptionInfo)
                .or_insert(0);
            *info &= !(1 << 31);
        }
        self.runs.push(level);
        match level {
            Level::L1 => self.l1_exits.pop_front(),
            Level::L2 => self.l2_exits.pop_front(),
        }
        .ok_or(ScriptError::Empty(level))
    }
}

fn real() -> VmxCapabilities {
    VmxCapabilities::bochs_skylake_x()
}

fn l0_requirements() -> L0Requirements {
    let mut host_state = VmcsImage::new();
    let template = long_mode_guest(&real());
    for &field in VmcsField::ALL {
        if field.kind() == FieldKind::Host {
            host_state.set(field, template.get(field));
        }
    }
    host_state.set(VmcsField::HostRip, 0xffff_ffff_c000_1000);
    host_state.set(VmcsField::HostRsp, 0xffff_ffff_c000_8000);
    L0Requirements {
        pin_based: PinBasedControls::EXTERNAL_INTERRUPT_EXITING | PinBasedControls::NMI_EXITING,
        primary: PrimaryProcControls::empty(),
        secondary: SecondaryProcControls::empty(),
        exit: ExitControls::HOST_ADDRESS_SPACE_SIZE
            | ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT
            | ExitControls::LOAD_IA32_EFER
            | ExitControls::LOAD_IA32_PAT,
        entry: EntryControls::empty(),
        exception_bitmap: ExceptionBitmap::EMPTY.with(ExceptionVector::MachineCheck),
        host_state,
        entry_context: EntryContext::new(MAXPHYADDR, VMCS02_ADDRESS),
    }
}

const FLAT_DATA: Segment = Segment {
    selector: 0x10,
    base: 0,
    limit: 0xffff_ffff,
    access_rights: 0xc093,
};

/// CR0 PE|MP|ET|NE|WP|PG, CR4 PAE|VMXE, EFER LME|LMA, 64-bit CS, CPL 0.
fn long_mode_cpu() -> L1Cpu {
    L1Cpu {
        rip: 0x10_0000,
        rflags: 0x2,
        cr0: 0x8005_0033,
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
        ..L1Cpu::default()
    }
}

fn walk_context() -> EptWalkContext {
    EptWalkContext {
        maxphyaddr: MAXPHYADDR,
        execute_only: true,
        pages_2m: true,
        pages_1g: true,
        mode_based_execute: false,
    }
}

/// A vCPU on the scripted platform, with EPT12 mapping `L2_PAGE` to
/// `L1_PAGE` and hv-format VMXON/VMCS regions in memory.
struct Harness {
    vcpu: Vcpu<Scripted>,
    eptp12: Eptp,
}

fn put_u32(memory: &mut Memory, at: u64, value: u32) {
    memory
        .write_bytes(L1Gpa::new(at), &value.to_le_bytes())
        .expect("in memory");
}

fn put_u64(memory: &mut Memory, at: u64, value: u64) {
    memory
        .write_bytes(L1Gpa::new(at), &value.to_le_bytes())
        .expect("in memory");
}

fn exit(reason: ExitReason, info: u32, qualification: u64) -> Exit {
    Exit {
        qualification,
        instruction_length: LENGTH,
        instruction_info: info,
        ..Exit::new(reason)
    }
}

/// `[rbx]`, 64-bit addressing, DS.
fn rbx_operand() -> VmxInstructionInfo {
    VmxInstructionInfo::from_memory_operand(MemoryOperand {
        address_size: AddressSize::Bits64,
        segment: SegmentRegister::Ds,
        base: Some(Gpr::Rbx),
        index: None,
    })
}

fn vmcs_region(index: u64) -> u64 {
    VMCS_BASE + index * 0x1000
}

impl Harness {
    fn new(policy: Policy) -> Self {
        Self::with_frames(policy, 512)
    }

    /// A harness whose EPT02 frame pool holds `frames` frames.
    fn with_frames(policy: Policy, frames: usize) -> Self {
        let mut memory = Memory(TestMemory::new(MEMORY_SIZE));
        put_u32(&mut memory, VMXON_REGION, HV_VMCS_REVISION_ID);
        for index in 0..16 {
            put_u32(&mut memory, vmcs_region(index), HV_VMCS_REVISION_ID);
        }
        let mut builder =
            Ept12Builder::new(&mut memory.0, L1Gpa::new(EPT12_TABLES)).expect("EPT12");
        builder
            .map(
                &mut memory.0,
                L2Gpa::new(L2_PAGE),
                L1Gpa::new(L1_PAGE),
                PageSize::Size4K,
                EptPermissions::READ_WRITE_EXECUTE,
            )
            .expect("EPT12 map");
        let eptp12 = builder.eptp(false);
        let platform = Scripted {
            caps: real(),
            l0: l0_requirements(),
            cpu: long_mode_cpu(),
            memory,
            ept01: TestEpt01::identity(MEMORY_SIZE, HostPa::new(0x1_0000_0000)),
            msrs: Msrs(HashMap::from([(0x277, L1_PAT), (0x1d9, L1_DEBUGCTL)])),
            vmcs02: HashMap::new(),
            vmcs02_writes: 0,
            l2_gprs: Gprs::default(),
            l1_exits: VecDeque::new(),
            l2_exits: VecDeque::new(),
            injected: Vec::new(),
            system_registers: Vec::new(),
            invepts: Vec::new(),
            invvpids: Vec::new(),
            runs: Vec::new(),
            l2_changes: Vec::new(),
        };
        let config = VcpuConfig {
            nested: NestedVmxConfig::new(
                FeatureControl::LOCK | FeatureControl::VMX_OUTSIDE_SMX,
                MAXPHYADDR,
            ),
            mmu: MmuConfig::new(policy, walk_context()),
            vpid02: Vpid02Range::new(16, 31).expect("range"),
        };
        let vcpu = Vcpu::new(
            platform,
            FramePool::with_base(frames, HostPa::new(0x40_0000_0000)),
            config,
        );
        Self { vcpu, eptp12 }
    }

    fn p(&mut self) -> &mut Scripted {
        self.vcpu.platform_mut()
    }

    /// Runs L1 once with `exit` queued.
    fn l1(&mut self, exit: Exit) -> Step {
        self.p().l1_exits.push_back(exit);
        let step = self.vcpu.step().expect("step");
        assert_eq!(self.vcpu.platform().runs.last(), Some(&Level::L1));
        step
    }

    /// Runs L2 once with `exit` queued.
    fn l2(&mut self, exit: Exit) -> Step {
        assert_eq!(self.vcpu.level(), Level::L2);
        self.p().l2_exits.push_back(exit);
        let step = self.vcpu.step().expect("step");
        assert_eq!(self.vcpu.platform().runs.last(), Some(&Level::L2));
        step
    }

    fn pointer_instruction(&mut self, reason: ExitReason, pointer: u64) -> Step {
        let p = self.p();
        put_u64(&mut p.memory, SCRATCH, pointer);
        p.cpu.gprs.set(Gpr::Rbx.index(), SCRATCH);
        self.l1(exit(reason, rbx_operand().raw(), 0))
    }

    fn vmwrite(&mut self, field: VmcsField, value: u64) {
        let p = self.p();
        p.cpu
            .gprs
            .set(Gpr::Rax.index(), u64::from(field.encoding()));
        p.cpu.gprs.set(Gpr::Rcx.index(), value);
        let info = VmxInstructionInfo::from_register_operand(Gpr::Rcx).with_reg2(Gpr::Rax);
        assert_eq!(
            self.l1(exit(ExitReason::Vmwrite, info.raw(), 0)),
            succeed(ExitReason::Vmwrite),
            "VMWRITE {}",
            field.name()
        );
    }

    fn invalidation(&mut self, reason: ExitReason, kind: u64, descriptor: [u64; 2]) -> Step {
        let p = self.p();
        put_u64(&mut p.memory, DESCRIPTOR, descriptor[0]);
        put_u64(&mut p.memory, DESCRIPTOR + 8, descriptor[1]);
        p.cpu.gprs.set(Gpr::Rbx.index(), DESCRIPTOR);
        p.cpu.gprs.set(Gpr::Rax.index(), kind);
        self.l1(exit(reason, rbx_operand().with_reg2(Gpr::Rax).raw(), 0))
    }

    /// VMXON.
    fn vmxon(&mut self) {
        assert_eq!(
            self.pointer_instruction(ExitReason::Vmxon, VMXON_REGION),
            succeed(ExitReason::Vmxon)
        );
    }

    /// VMCLEAR + VMPTRLD of VMCS `index`, VMWRITE of the long-mode baseline
    /// with our EPT12 and `vpid12` (`None`: VPID off).
    fn setup_vmcs(&mut self, index: u64, vpid12: Option<u16>) {
        let region = vmcs_region(index);
        assert_eq!(
            self.pointer_instruction(ExitReason::Vmclear, region),
            succeed(ExitReason::Vmclear)
        );
        self.vmptrld(index);
        self.write_baseline(vpid12);
    }

    /// VMWRITEs of every non-zero field of `image` into the current VMCS.
    fn write_image(&mut self, image: &VmcsImage) {
        for (field, value) in image.non_zero() {
            self.vmwrite(field, value);
        }
    }

    /// VMWRITEs of the long-mode baseline with our EPT12 and `vpid12` into
    /// the current VMCS.
    fn write_baseline(&mut self, vpid12: Option<u16>) {
        let mut image = long_mode_guest(self.vcpu.nested().capabilities().capabilities());
        image.set(VmcsField::EptPointer, self.eptp12.raw());
        let mut secondary =
            SecondaryProcControls::from_raw(image.get(VmcsField::SecondaryProcBasedControls));
        if let Some(vpid) = vpid12 {
            secondary.insert(SecondaryProcControls::ENABLE_VPID);
            image.set(VmcsField::VirtualProcessorId, u64::from(vpid));
        } else {
            secondary.remove(SecondaryProcControls::ENABLE_VPID);
            image.set(VmcsField::VirtualProcessorId, 0);
        }
        image.set(
            VmcsField::SecondaryProcBasedControls,
            u64::from(secondary.bits()),
        );
        for (field, value) in image.non_zero() {
            self.vmwrite(field, value);
        }
    }

    fn vmptrld(&mut self, index: u64) {
        assert_eq!(
            self.pointer_instruction(ExitReason::Vmptrld, vmcs_region(index)),
            succeed(ExitReason::Vmptrld)
        );
    }

    fn vmlaunch(&mut self) -> Step {
        self.l1(exit(ExitReason::Vmlaunch, 0, 0))
    }

    fn vmresume(&mut self) -> Step {
        self.l1(exit(ExitReason::Vmresume, 0, 0))
    }

    fn vmcs12(&self, field: VmcsField) -> u64 {
        self.vcpu
            .nested()
            .current_vmcs()
            .expect("current VMCS")
            .image()
            .get(field)
    }

    fn vmcs02(&self, field: VmcsField) -> u64 {
        self.vcpu
            .platform()
            .vmcs02
            .get(&field)
            .copied()
            .unwrap_or(0)
    }

    /// L2 executes CPUID, which L1 always gets (SDM 26.1.2).
    fn cpuid_in_l2(&mut self) {
        let mut cpuid = Exit::new(ExitReason::Cpuid);
        cpuid.instruction_length = 2;
        assert_eq!(
            self.l2(cpuid),
            Step::Handled(Handled::Reflected(ExitReason::Cpuid))
        );
        assert_eq!(self.vcpu.level(), Level::L1);
    }

    fn invvpids(&self) -> Vec<Invvpid> {
        self.vcpu.platform().invvpids.clone()
    }
}

fn succeed(reason: ExitReason) -> Step {
    Step::Handled(Handled::Vmx {
        instruction: hv_core::vmx::VmxInstruction::from_exit_reason(reason).expect("VMX"),
        status: VmxStatus::Succeed,
    })
}

fn ept_violation(gpa: u64, qualification: u64) -> Exit {
    Exit {
        qualification,
        guest_physical_address: gpa,
        guest_linear_address: 0x7000_1000,
        ..Exit::new(ExitReason::EptViolation)
    }
}

/// Harness with VMXON done and VMCS 0 set up with vpid12 = 1, launched.
fn launched(policy: Policy) -> Harness {
    let mut h = Harness::new(policy);
    h.vmxon();
    h.setup_vmcs(0, Some(1));
    h.p().cpu.gprs = Gprs([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
    assert_eq!(
        h.vmlaunch(),
        Step::Handled(Handled::NestedEntry { launch: true })
    );
    h
}

// ---------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------

#[test]
fn nested_entry_writes_vmcs02_with_eptp02_vpid02_and_l1_gprs() {
    let h = launched(Policy::Hv);
    assert_eq!(h.vcpu.level(), Level::L2);
    let eptp02 = h.vcpu.mmu().current_root().expect("a root");
    assert_ne!(eptp02, h.eptp12);
    assert_eq!(h.vmcs02(VmcsField::EptPointer), eptp02.raw());
    // vpid12 1 -> the first mappable VPID02 (16 is reserved for "no vpid12").
    assert_eq!(h.vmcs02(VmcsField::VirtualProcessorId), 17);
    let secondary =
        SecondaryProcControls::from_raw(h.vmcs02(VmcsField::SecondaryProcBasedControls));
    assert!(
        secondary.contains(SecondaryProcControls::ENABLE_EPT | SecondaryProcControls::ENABLE_VPID)
    );
    // Guest state from VMCS12; host state L0's.
    assert_eq!(h.vmcs02(VmcsField::GuestRip), h.vmcs12(VmcsField::GuestRip));
    assert_eq!(h.vmcs02(VmcsField::HostRip), 0xffff_ffff_c000_1000);
    assert_eq!(
        h.vcpu.platform().l2_gprs,
        Gprs([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])
    );
    // Only non-zero fields were written (the VMCS02 starts all 0), each once.
    let written = h.vcpu.platform().vmcs02_writes;
    assert_eq!(written, h.vcpu.counters().vmcs02_writes);
    assert_eq!(written, h.vcpu.platform().vmcs02.len() as u64);
    assert!(h.vcpu.platform().vmcs02.values().all(|&value| value != 0));
    // New root, first binding of a never-used VPID02: no INVVPID and no
    // INVEPT (hv flushes neither a never-used root frame nor a VPID02 that
    // carries no translations, see `Vpid02Range`).
    assert_eq!(h.invvpids(), vec![]);
    assert_eq!(h.vcpu.vpids().vpid02_of(1), Some(17));
    assert!(h.vcpu.platform().invepts.is_empty());
}

#[test]
fn cpuid_in_l2_is_reflected_to_l1_at_host_rip_with_exact_counters() {
    let mut h = launched(Policy::Hv);
    h.cpuid_in_l2();
    let host_rip = h.vmcs12(VmcsField::HostRip);
    assert_eq!(h.vcpu.platform().cpu.rip, host_rip);
    assert_eq!(h.vmcs12(VmcsField::ExitReason), 10);
    assert_eq!(h.vmcs12(VmcsField::VmExitInstructionLength), 2);
    assert_eq!(h.vcpu.platform().system_registers.len(), 1);
    let writes = h.vcpu.counters().vmcs02_writes;
    // 1 VMXON + 1 VMCLEAR + 1 VMPTRLD + the VMWRITEs + VMLAUNCH.
    let vmx = h.vcpu.counters().vmx_instructions;
    assert_eq!(
        h.vcpu.counters(),
        Counters {
            l1_exits: vmx,
            vmx_instructions: vmx,
            nested_entries: 1,
            nested_exits: 1,
            reflected: 1,
            vmcs02_writes: writes,
            roots_live: 1,
            ..Counters::default()
        }
    );
    // VMRESUME: only changed fields are written again.
    let before = h.vcpu.platform().vmcs02_writes;
    assert_eq!(
        h.vmresume(),
        Step::Handled(Handled::NestedEntry { launch: false })
    );
    assert!(h.vcpu.platform().vmcs02_writes - before < 10);
    assert_eq!(h.vcpu.counters().invvpid.single, 0, "vpid12 already bound");
}

#[test]
fn ept_violation_is_filled_in_l0_or_reflected_to_l1() {
    let mut h = launched(Policy::Hv);
    // A read of a page EPT12 maps: hv-mmu fills EPT02, L2 resumes.
    assert_eq!(
        h.l2(ept_violation(L2_PAGE + 0x10, 0x1 | 0x180)),
        Step::Handled(Handled::Ept02Filled)
    );
    assert_eq!(h.vcpu.level(), Level::L2);
    // A page EPT12 does not map: L1 gets the EPT violation.
    assert_eq!(
        h.l2(ept_violation(L2_UNMAPPED, 0x2 | 0x180)),
        Step::Handled(Handled::Reflected(ExitReason::EptViolation))
    );
    assert_eq!(h.vcpu.level(), Level::L1);
    assert_eq!(h.vmcs12(VmcsField::ExitReason), 48);
    assert_eq!(h.vmcs12(VmcsField::GuestPhysicalAddress), L2_UNMAPPED);
    // Bits 2:0 the write, 5:3 no rights (not present), 7/8 from hardware.
    assert_eq!(h.vmcs12(VmcsField::ExitQualification), 0x2 | 0x180);
    let c = h.vcpu.counters();
    assert_eq!(
        (
            c.nested_exits,
            c.ept02_fills,
            c.ept02_reflected,
            c.reflected,
            c.handled_in_l0
        ),
        (2, 1, 1, 1, 1)
    );
    assert_eq!(h.vcpu.mmu().stats().fills, 1);
}

#[test]
fn ept_violation_on_l1_memory_ept01_does_not_map_is_mmio() {
    let mut h = launched(Policy::Hv);
    h.p().ept01.unmap(hv_mmu::addr::L1Gfn::new(L1_PAGE >> 12));
    let step = h.l2(ept_violation(L2_PAGE, 0x1));
    assert!(
        matches!(step, Step::L2Mmio { l1_gpa, .. } if l1_gpa == L1Gpa::new(L1_PAGE)),
        "{step:?}"
    );
    assert_eq!(h.vcpu.level(), Level::L2);
    assert_eq!(h.vcpu.counters().ept02_emulated, 1);
}

#[test]
fn exits_l1_did_not_ask_for_stay_in_l0_and_resume_l2() {
    let mut h = launched(Policy::Hv);
    // The baseline has no RDTSC exiting: RDTSC stays in L0.
    let step = h.l2(Exit::new(ExitReason::Rdtsc));
    assert_eq!(
        step,
        Step::L2Exit {
            exit: Exit::new(ExitReason::Rdtsc),
            reason: L0Reason::NotRequested
        }
    );
    // The embedder advances GUEST_RIP; the next step resumes L2.
    let rip = h.vcpu.read_vmcs02(VmcsField::GuestRip).expect("read");
    h.vcpu
        .write_vmcs02(VmcsField::GuestRip, rip + 2)
        .expect("write");
    h.cpuid_in_l2();
    assert_eq!(h.vmcs12(VmcsField::GuestRip), rip + 2);
    assert_eq!(h.vcpu.counters().handled_in_l0, 1);
}

/// K L2s with vpid12 = 1..=K, round-robin for `rounds`: returns the
/// INVVPIDs issued.
fn round_robin(policy: Policy, k: u64, rounds: u64) -> Harness {
    let mut h = Harness::new(policy);
    h.vmxon();
    for index in 0..k {
        h.setup_vmcs(index, Some(index as u16 + 1));
    }
    for round in 0..rounds {
        for index in 0..k {
            h.vmptrld(index);
            let step = if round == 0 {
                h.vmlaunch()
            } else {
                h.vmresume()
            };
            assert_eq!(
                step,
                Step::Handled(Handled::NestedEntry { launch: round == 0 })
            );
            h.cpuid_in_l2();
        }
    }
    assert_eq!(h.vcpu.counters().nested_entries, k * rounds);
    h
}

#[test]
fn hv_policy_round_robin_flushes_nothing() {
    let h = round_robin(Policy::Hv, 4, 5);
    let flushes = h.invvpids();
    assert!(flushes.is_empty(), "{flushes:?}");
    let vpids: Vec<Option<u16>> = (1..=4).map(|v| h.vcpu.vpids().vpid02_of(v)).collect();
    assert_eq!(vpids.len(), 4);
    assert!(vpids.iter().all(Option::is_some));
    assert!(h.vcpu.platform().invepts.is_empty());
    assert_eq!(h.vcpu.counters().invept, InveptCounts::default());
}

#[test]
fn hv_policy_rebinding_after_eviction_flushes() {
    // Range 16..=31: 15 mappable VPIDs; 16 L2s evict one per entry once full.
    let h = round_robin(Policy::Hv, 16, 2);
    // Round 1: 15 first bindings (no flush), the 16th evicts (flush);
    // round 2: LRU evicts exactly the next one, 16 rebindings, 16 flushes.
    assert_eq!(h.invvpids().len(), 17);
    assert_eq!(h.vcpu.vpids().mapped(), 15);
}

#[test]
fn kvm_policy_flushes_when_vpid12_changes() {
    let h = round_robin(Policy::Kvm, 4, 3);
    assert_eq!(h.invvpids().len(), 12);
    assert!(h.invvpids().iter().all(|f| f.vpid02 == 17));
    // Same L2 twice in a row: no flush the second time.
    let mut h = launched(Policy::Kvm);
    h.cpuid_in_l2();
    assert_eq!(
        h.vmresume(),
        Step::Handled(Handled::NestedEntry { launch: false })
    );
    assert_eq!(h.invvpids().len(), 1);
}

#[test]
fn flush_always_flushes_at_every_entry() {
    let h = round_robin(Policy::FlushAlways, 2, 3);
    assert_eq!(h.invvpids().len(), 6);
    assert_eq!(h.vcpu.counters().invvpid.single, 6);
    // Every nested entry rebuilds the root and flushes it.
    assert_eq!(h.vcpu.counters().invept.single, 6);
}

#[test]
fn flush_always_resumes_after_a_fill_without_rebuilding() {
    let mut h = launched(Policy::FlushAlways);
    let root = h.vcpu.mmu().current_root();
    assert_eq!(
        h.l2(ept_violation(L2_PAGE, 0x1)),
        Step::Handled(Handled::Ept02Filled)
    );
    h.cpuid_in_l2();
    assert_eq!(h.vcpu.mmu().current_root(), root);
    assert_eq!(h.vcpu.mmu().stats().fills, 1);
}

#[test]
fn vmcs12_without_vpid_flushes_the_reserved_vpid02_at_each_entry() {
    for policy in Policy::ALL {
        let mut h = Harness::new(policy);
        h.vmxon();
        h.setup_vmcs(0, None);
        assert_eq!(
            h.vmlaunch(),
            Step::Handled(Handled::NestedEntry { launch: true })
        );
        assert_eq!(h.vmcs02(VmcsField::VirtualProcessorId), 16);
        h.cpuid_in_l2();
        for _ in 0..3 {
            assert_eq!(
                h.vmresume(),
                Step::Handled(Handled::NestedEntry { launch: false })
            );
            h.cpuid_in_l2();
        }
        let flushes = h.invvpids();
        assert_eq!(flushes.len(), 4, "{policy}: {flushes:?}");
        assert!(
            flushes
                .iter()
                .all(|f| f.vpid02 == 16 && f.kind == InvvpidType::SingleContext)
        );
    }
}

#[test]
fn invvpid_maps_by_type_under_hv() {
    let mut h = launched(Policy::Hv);
    h.cpuid_in_l2();
    let before = h.invvpids().len();
    let cases = [
        (
            InvvpidType::IndividualAddress,
            1_u16,
            0x7000_0000_u64,
            Some((17_u16, 0x7000_0000_u64)),
        ),
        (InvvpidType::SingleContext, 1, 0, Some((17, 0))),
        (
            InvvpidType::SingleContextRetainingGlobals,
            1,
            0,
            Some((17, 0)),
        ),
        (InvvpidType::AllContext, 0, 0, Some((0, 0))),
        // vpid12 77 was never bound: nothing is cached, nothing issued.
        (InvvpidType::SingleContext, 77, 0, None),
    ];
    for (kind, vpid12, address, expected) in cases {
        let count = h.invvpids().len();
        assert_eq!(
            h.invalidation(
                ExitReason::Invvpid,
                kind.raw(),
                [u64::from(vpid12), address]
            ),
            succeed(ExitReason::Invvpid),
            "{kind:?}"
        );
        let issued = h.invvpids()[count..].to_vec();
        let expected: Vec<Invvpid> = expected
            .map(|(vpid02, linear_address)| Invvpid {
                kind,
                vpid02,
                linear_address,
            })
            .into_iter()
            .collect();
        assert_eq!(issued, expected, "{kind:?}");
    }
    let c = h.vcpu.counters().invvpid;
    assert_eq!(
        (c.individual, c.single, c.all, c.single_retaining_globals),
        (1, 1 + before as u64, 1, 1)
    );
}

#[test]
fn invvpid_under_kvm_and_xen() {
    let mut kvm = launched(Policy::Kvm);
    kvm.cpuid_in_l2();
    kvm.invalidation(
        ExitReason::Invvpid,
        InvvpidType::IndividualAddress.raw(),
        [1, 0x1000],
    );
    assert_eq!(
        kvm.invvpids().last(),
        Some(&Invvpid {
            kind: InvvpidType::SingleContext,
            vpid02: 17,
            linear_address: 0
        })
    );
    let mut xen = launched(Policy::Xen);
    xen.cpuid_in_l2();
    let invept = xen.vcpu.counters().invept.single;
    xen.invalidation(
        ExitReason::Invvpid,
        InvvpidType::SingleContext.raw(),
        [1, 0],
    );
    assert_eq!(
        xen.invvpids().last().map(|f| f.kind),
        Some(InvvpidType::AllContext)
    );
    // Xen: any INVVPID flushes every nested p2m table; the next entry
    // flushes the root.
    xen.vmresume();
    assert_eq!(xen.vcpu.counters().invept.single, invept + 1);
}

#[test]
fn invept_goes_to_hv_mmu_and_issues_nothing_itself() {
    for kind in [InveptType::SingleContext, InveptType::Global] {
        let mut h = launched(Policy::Kvm);
        h.cpuid_in_l2();
        // KVM flushes every rebuilt root: the first entry did.
        assert_eq!(h.vcpu.counters().invept.single, 1);
        let descriptor = if kind == InveptType::SingleContext {
            h.eptp12.raw()
        } else {
            0
        };
        assert_eq!(
            h.invalidation(ExitReason::Invept, kind.raw(), [descriptor, 0]),
            succeed(ExitReason::Invept)
        );
        assert_eq!(h.vcpu.platform().invepts.len(), 1, "nothing issued now");
        // KVM drops the matching root; the next entry flushes it.
        assert_eq!(
            h.vmresume(),
            Step::Handled(Handled::NestedEntry { launch: false })
        );
        assert_eq!(h.vcpu.counters().invept.single, 2, "{kind:?}");
        h.cpuid_in_l2();
        // Without INVEPT, VMRESUME of a cached root flushes nothing.
        h.vmresume();
        assert_eq!(h.vcpu.counters().invept.single, 2, "{kind:?}");
    }
    // hv resyncs instead: nothing changed in EPT12, so no flush at all.
    let mut h = launched(Policy::Hv);
    h.cpuid_in_l2();
    let eptp12 = h.eptp12.raw();
    h.invalidation(
        ExitReason::Invept,
        InveptType::SingleContext.raw(),
        [eptp12, 0],
    );
    h.vmresume();
    assert_eq!(h.vcpu.counters().invept, InveptCounts::default());
}

#[test]
fn rdmsr_of_vmx_capability_msrs_is_answered_and_wrmsr_faults() {
    let mut h = Harness::new(Policy::Hv);
    let basic = h.vcpu.nested().capabilities().msr(0x480).expect("basic");
    h.p().cpu.gprs.set(1, 0xffff_ffff_0000_0480);
    h.p().cpu.gprs.set(0, u64::MAX);
    h.p().cpu.gprs.set(2, u64::MAX);
    let rip = h.vcpu.platform().cpu.rip;
    assert_eq!(
        h.l1(exit(ExitReason::Rdmsr, 0, 0)),
        Step::Handled(Handled::MsrRead {
            index: 0x480,
            value: basic
        })
    );
    let cpu = h.vcpu.platform().cpu;
    assert_eq!(
        (cpu.gprs.get(0), cpu.gprs.get(2)),
        (basic & 0xffff_ffff, basic >> 32)
    );
    assert_eq!(cpu.rip, rip + u64::from(LENGTH));
    // Feature control from the configuration.
    h.p().cpu.gprs.set(1, 0x3a);
    assert_eq!(
        h.l1(exit(ExitReason::Rdmsr, 0, 0)),
        Step::Handled(Handled::MsrRead {
            index: 0x3a,
            value: 0b101
        })
    );
    // IA32_VMX_VMFUNC does not exist for L1: #GP; WRMSR: #GP.
    h.p().cpu.gprs.set(1, 0x491);
    let rip = h.vcpu.platform().cpu.rip;
    assert_eq!(
        h.l1(exit(ExitReason::Rdmsr, 0, 0)),
        Step::Handled(Handled::FaultInjected(Fault::GeneralProtection))
    );
    h.p().cpu.gprs.set(1, 0x480);
    assert_eq!(
        h.l1(exit(ExitReason::Wrmsr, 0, 0)),
        Step::Handled(Handled::FaultInjected(Fault::GeneralProtection))
    );
    assert_eq!(h.vcpu.platform().cpu.rip, rip);
    assert_eq!(h.vcpu.platform().injected.len(), 2);
    // Other MSRs are the embedder's.
    h.p().cpu.gprs.set(1, 0x10);
    assert!(matches!(
        h.l1(exit(ExitReason::Rdmsr, 0, 0)),
        Step::L1Exit(_)
    ));
    assert_eq!(h.vcpu.counters().l1_faults_injected, 2);
}

#[test]
fn rejected_vmcs02_fails_with_7_and_l0_keeps_going() {
    let mut h = Harness::new(Policy::Hv);
    // L0 needs an entry control this engine refuses (CET state): no
    // VMCS02 can be built for any VMCS12.
    let allowed = h.vcpu.platform().caps.entry.may_be_one;
    let refused = (0..32)
        .map(|bit| 1u32 << bit)
        .find(|bit| u64::from(*bit) & allowed == 0 && EntryControls::from_bits(*bit).is_some())
        .expect("a refused entry control");
    h.p().l0.entry = EntryControls::from_raw(u64::from(refused));
    h.vmxon();
    h.setup_vmcs(0, Some(1));
    let rip = h.vcpu.platform().cpu.rip;
    let step = h.vmlaunch();
    assert!(
        matches!(step, Step::Handled(Handled::Vmcs02Rejected(_))),
        "{step:?}"
    );
    assert_eq!(h.vcpu.level(), Level::L1);
    let cpu = h.vcpu.platform().cpu;
    assert_eq!(cpu.rip, rip + u64::from(LENGTH));
    assert_eq!(cpu.rflags & 0x8d5, 0x40, "ZF only");
    assert_eq!(
        h.vmcs12(VmcsField::VmInstructionError),
        u64::from(VmInstructionError::EntryInvalidControlFields.number())
    );
    assert_eq!(
        h.vcpu
            .nested()
            .current_vmcs()
            .map(hv_core::vmx::CurrentVmcs::launch_state),
        Some(LaunchState::Clear)
    );
    assert!(h.vcpu.platform().vmcs02.is_empty(), "nothing written");
    assert!(h.invvpids().is_empty(), "no VPID02 bound");
    // L0 keeps running L1.
    assert!(matches!(
        h.l1(Exit::new(ExitReason::Cpuid)),
        Step::L1Exit(_)
    ));
    let c = h.vcpu.counters();
    assert_eq!((c.vmcs02_rejected, c.nested_entries), (1, 0));
}

#[test]
fn l1_exits_that_are_not_vmx_go_to_the_embedder() {
    let mut h = Harness::new(Policy::Hv);
    for reason in [
        ExitReason::Cpuid,
        ExitReason::Hlt,
        ExitReason::IoInstruction,
    ] {
        assert_eq!(h.l1(Exit::new(reason)), Step::L1Exit(Exit::new(reason)));
    }
    // VMX instructions before VMXON: #UD injected, L0 keeps going.
    assert_eq!(
        h.l1(exit(ExitReason::Vmlaunch, 0, 0)),
        Step::Handled(Handled::FaultInjected(Fault::InvalidOpcode))
    );
    // A malformed exit is a typed step, not a panic.
    let mut bad = exit(ExitReason::Vmptrld, rbx_operand().raw(), 0);
    bad.instruction_length = 0;
    assert!(matches!(h.l1(bad), Step::InvalidExitInformation { .. }));
}

#[test]
fn vpid02_range_rejects_zero_and_single_vpid() {
    assert!(Vpid02Range::new(0, 5).is_err());
    assert!(Vpid02Range::new(5, 5).is_err());
    let range = Vpid02Range::new(1, 8).expect("range");
    assert_eq!((range.without_vpid12(), range.mappable()), (1, 7));
}

#[test]
fn ept01_change_is_flushed_before_l2_resumes() {
    let mut h = launched(Policy::Hv);
    assert_eq!(
        h.l2(ept_violation(L2_PAGE, 0x1)),
        Step::Handled(Handled::Ept02Filled)
    );
    h.vcpu
        .ept01_changed(hv_mmu::addr::L1Gfn::new(L1_PAGE >> 12), PageSize::Size4K);
    let invepts = h.vcpu.platform().invepts.len();
    h.cpuid_in_l2();
    assert_eq!(h.vcpu.platform().invepts.len(), invepts + 1);
}

#[test]
fn ia32e_entry_control_is_rewritten_after_the_exit_changed_it() {
    let mut h = launched(Policy::Hv);
    // L2 leaves long mode (paging off, EFER.LME/LMA clear); the exit
    // writes LMA = 0 into VMCS02's "IA-32e mode guest" (SDM 28.2).
    let efer = h.vmcs02(VmcsField::GuestEfer) & !0x500;
    let cr0 = h.vmcs02(VmcsField::GuestCr0) & !(1 << 31);
    h.p().l2_changes = vec![(VmcsField::GuestEfer, efer), (VmcsField::GuestCr0, cr0)];
    h.cpuid_in_l2();
    let ia32e = u64::from(EntryControls::IA32E_MODE_GUEST.bits());
    assert_eq!(h.vmcs02(VmcsField::VmEntryControls) & ia32e, 0);
    // L1 puts L2 back in long mode and resumes it.
    h.write_baseline(Some(1));
    assert_eq!(
        h.vmresume(),
        Step::Handled(Handled::NestedEntry { launch: false })
    );
    assert_ne!(h.vmcs02(VmcsField::VmEntryControls) & ia32e, 0);
    // The platform checks VMCS02 before running L2.
    h.cpuid_in_l2();
}

#[test]
fn vmcs12_fields_of_features_hv_does_not_use_never_reach_vmcs02() {
    let mut h = Harness::new(Policy::Hv);
    h.vmxon();
    h.setup_vmcs(0, Some(1));
    // L1 may VMWRITE any field; the scripted processor has none of these.
    for &field in UNSUPPORTED_FIELDS {
        h.vmwrite(field, 1);
    }
    assert_eq!(
        h.vmlaunch(),
        Step::Handled(Handled::NestedEntry { launch: true })
    );
    h.cpuid_in_l2();
}

#[test]
fn event_interrupted_by_a_filled_ept_violation_is_injected_again() {
    // L2's INT 0x80 (software interrupt, 2 bytes) hit an EPT02 miss.
    let mut h = launched(Policy::Hv);
    let mut fault = ept_violation(L2_PAGE, 0x1);
    fault.idt_vectoring_info = InterruptionInfo::new(0x80, InterruptionType::SoftwareInterrupt);
    fault.instruction_length = 2;
    assert_eq!(h.l2(fault), Step::Handled(Handled::Ept02Filled));
    assert_eq!(
        h.vmcs02(VmcsField::VmEntryInterruptionInfo),
        u64::from(InterruptionInfo::VALID | (4 << 8) | 0x80)
    );
    assert_eq!(h.vmcs02(VmcsField::VmEntryInstructionLength), 2);
    // The platform checks the injection when L2 runs.
    h.cpuid_in_l2();

    // A #PF with error code whose delivery faulted on EPT02.
    let mut h = launched(Policy::Hv);
    let mut fault = ept_violation(L2_PAGE, 0x2);
    fault.idt_vectoring_info =
        InterruptionInfo::hardware_exception(ExceptionVector::PageFault).with_error_code();
    fault.idt_vectoring_error_code = 0x6;
    assert_eq!(h.l2(fault), Step::Handled(Handled::Ept02Filled));
    assert_eq!(
        h.vmcs02(VmcsField::VmEntryInterruptionInfo),
        u64::from(InterruptionInfo::VALID | InterruptionInfo::ERROR_CODE | (3 << 8) | 0x0e)
    );
    assert_eq!(h.vmcs02(VmcsField::VmEntryExceptionErrorCode), 6);
    h.cpuid_in_l2();
}

#[test]
fn nmi_unblocking_by_iret_is_undone_after_a_fill() {
    let mut h = launched(Policy::Hv);
    assert_eq!(h.vmcs02(VmcsField::GuestInterruptibilityState) & 0x8, 0);
    assert_eq!(
        h.l2(ept_violation(L2_PAGE, 0x1 | (1 << 12))),
        Step::Handled(Handled::Ept02Filled)
    );
    assert_eq!(h.vmcs02(VmcsField::GuestInterruptibilityState) & 0x8, 0x8);
    assert_eq!(h.vmcs02(VmcsField::VmEntryInterruptionInfo), 0);
}

#[test]
fn machine_check_in_l2_goes_to_l0_even_when_l1_intercepts_it() {
    let mut h = Harness::new(Policy::Hv);
    h.vmxon();
    h.setup_vmcs(0, Some(1));
    h.vmwrite(VmcsField::ExceptionBitmap, 1 << 18);
    assert_eq!(
        h.vmlaunch(),
        Step::Handled(Handled::NestedEntry { launch: true })
    );
    let mut mc = Exit::new(ExitReason::ExceptionOrNmi);
    mc.interruption_info = InterruptionInfo::hardware_exception(ExceptionVector::MachineCheck);
    assert_eq!(
        h.l2(mc),
        Step::L2Exit {
            exit: mc,
            reason: L0Reason::L0Feature
        }
    );
    assert_eq!(h.vcpu.level(), Level::L2);
    assert_eq!(h.vcpu.counters().reflected, 0);
}

#[test]
fn read_modify_write_violation_reaches_l1_with_both_access_bits() {
    let mut h = launched(Policy::Hv);
    assert_eq!(
        h.l2(ept_violation(L2_UNMAPPED, 0x3 | 0x180)),
        Step::Handled(Handled::Reflected(ExitReason::EptViolation))
    );
    assert_eq!(h.vmcs12(VmcsField::ExitQualification), 0x3 | 0x180);
}

#[test]
fn flush_always_switches_after_a_failed_fill() {
    // Two frames: the root and one table; a fill needs three tables.
    let mut h = Harness::with_frames(Policy::FlushAlways, 2);
    h.vmxon();
    h.setup_vmcs(0, Some(1));
    assert_eq!(
        h.vmlaunch(),
        Step::Handled(Handled::NestedEntry { launch: true })
    );
    let invepts = h.vcpu.counters().invept.single;
    h.p().l2_exits.push_back(ept_violation(L2_PAGE, 0x1));
    let failed = h.vcpu.step();
    assert!(failed.is_err(), "{failed:?}");
    // The resume goes through switch_to, which flushes the root.
    h.cpuid_in_l2();
    assert!(h.vcpu.counters().invept.single > invepts);
}

#[test]
fn pdptes_l1_accepts_but_the_real_engine_refuses_are_rejected() {
    const PDPT: u64 = 0x50000;
    let mut h = Harness::new(Policy::Hv);
    // The real engine has MAXPHYADDR 36, L1 sees 39.
    h.p().l0.entry_context = EntryContext::new(36, VMCS02_ADDRESS);
    // PAE paging without EPT in VMCS12: PDPTEs come from L1 memory.
    let pdpte = 0x51000 | 1 | (1 << 37);
    put_u64(&mut h.p().memory, PDPT, pdpte);
    h.vmxon();
    assert_eq!(
        h.pointer_instruction(ExitReason::Vmclear, vmcs_region(0)),
        succeed(ExitReason::Vmclear)
    );
    h.vmptrld(0);
    let virt = *h.vcpu.nested().capabilities().capabilities();
    let mut image = hv_arch_vmx::checks::baseline::protected_mode_guest(&virt);
    image.set(
        VmcsField::GuestCr4,
        image.get(VmcsField::GuestCr4) | Cr4::PAE.bits(),
    );
    image.set(VmcsField::GuestCr3, PDPT);
    let mut secondary =
        SecondaryProcControls::from_raw(image.get(VmcsField::SecondaryProcBasedControls));
    secondary.remove(SecondaryProcControls::ENABLE_EPT);
    image.set(
        VmcsField::SecondaryProcBasedControls,
        u64::from(secondary.bits()),
    );
    image.set(VmcsField::EptPointer, 0);
    h.write_image(&image);
    let step = h.vmlaunch();
    assert!(
        matches!(step, Step::Handled(Handled::Vmcs02Rejected(_))),
        "{step:?}"
    );
    assert_eq!(h.vcpu.level(), Level::L1);
    // Within the real width the same L2 runs.
    put_u64(&mut h.p().memory, PDPT, 0x51000 | 1);
    assert_eq!(
        h.vmlaunch(),
        Step::Handled(Handled::NestedEntry { launch: true })
    );
    assert_eq!(h.vmcs02(VmcsField::GuestPdpte0), 0x51000 | 1);
    h.cpuid_in_l2();
}

/// Guest-state and control fields, the ones L1 shapes L2 with.
fn guest_and_control_fields() -> Vec<VmcsField> {
    VmcsField::ALL
        .iter()
        .copied()
        .filter(|field| matches!(field.kind(), FieldKind::Guest | FieldKind::Control))
        .collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Whatever L1 writes into VMCS12, the VMCS02 the platform holds when
    /// L2 runs passes the real entry checks (the scripted platform checks
    /// it in run(L2)), and nothing fails or panics.
    #[test]
    fn arbitrary_vmcs12_never_runs_an_invalid_vmcs02(
        changes in proptest::collection::vec(
            (proptest::prelude::any::<proptest::sample::Index>(),
             proptest::prelude::any::<u64>(),
             proptest::option::of(0u32..64)),
            0..12),
        launches in 1usize..3,
    ) {
        let fields = guest_and_control_fields();
        let mut h = Harness::new(Policy::Hv);
        h.vmxon();
        h.setup_vmcs(0, Some(1));
        for (index, raw, flip) in changes {
            let field = *index.get(&fields);
            // Either a flipped bit of the baseline value or raw bits.
            let value = match flip {
                Some(bit) => h.vmcs12(field) ^ (1 << bit),
                None => raw,
            };
            let p = h.p();
            p.cpu.gprs.set(Gpr::Rax.index(), u64::from(field.encoding()));
            p.cpu.gprs.set(Gpr::Rcx.index(), value);
            let info = VmxInstructionInfo::from_register_operand(Gpr::Rcx).with_reg2(Gpr::Rax);
            h.l1(exit(ExitReason::Vmwrite, info.raw(), 0));
        }
        for round in 0..launches {
            if h.vcpu.is_shut_down() {
                // A VMX abort on an exit to L1 (SDM 28.7): L1 is gone.
                break;
            }
            let reason = if round == 0 { ExitReason::Vmlaunch } else { ExitReason::Vmresume };
            h.p().l1_exits.push_back(exit(reason, 0, 0));
            let step = h.vcpu.step();
            proptest::prop_assert!(step.is_ok(), "{:?}", step);
            if h.vcpu.level() != Level::L2 {
                continue;
            }
            let mut cpuid = Exit::new(ExitReason::Cpuid);
            cpuid.instruction_length = 2;
            h.p().l2_exits.push_back(cpuid);
            let ran = h.vcpu.step();
            proptest::prop_assert!(ran.is_ok(), "{:?}", ran);
        }
    }
}

#[test]
fn l1_keeps_l2s_pat_when_vmcs12_does_not_load_pat_on_exit() {
    const L2_PAT: u64 = 0x0006_0606_0606_0606;
    for load_pat in [false, true] {
        let mut h = Harness::new(Policy::Hv);
        h.vmxon();
        h.setup_vmcs(0, Some(1));
        let mut exit12 = ExitControls::from_raw(h.vmcs12(VmcsField::PrimaryVmExitControls));
        exit12.set(ExitControls::LOAD_IA32_PAT, load_pat);
        h.vmwrite(VmcsField::PrimaryVmExitControls, exit12.to_raw());
        assert_eq!(
            h.vmlaunch(),
            Step::Handled(Handled::NestedEntry { launch: true })
        );
        // L2 changes its PAT; VMCS02 saves it at the exit.
        h.p().l2_changes = vec![(VmcsField::GuestPat, L2_PAT)];
        h.cpuid_in_l2();
        let expected = if load_pat {
            h.vmcs12(VmcsField::HostPat)
        } else {
            L2_PAT
        };
        assert_eq!(
            h.vcpu.platform().msrs.0.get(&0x277),
            Some(&expected),
            "{load_pat}"
        );
    }
}
