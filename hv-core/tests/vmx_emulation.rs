//! Scenario tests for hv-core's VMX-instruction emulation (SDM Vol. 3C
//! chapter 31): one test per rule, every `VMfail` number the emulation can
//! produce, the exceptions, round trips through L1 memory, a full
//! VMXON -> VMLAUNCH flow, and a property that nothing panics.

use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::checks::baseline::long_mode_guest;
use hv_arch_vmx::controls::{ControlKind, ExceptionVector};
use hv_arch_vmx::exit::{
    AddressSize, ExitReason, Gpr, MemoryOperand, SegmentRegister, VmxInstructionInfo,
};
use hv_arch_vmx::instruction_error::VmInstructionError;
use hv_arch_vmx::interruption::Interruptibility;
use hv_arch_vmx::invalidation::{InveptType, InvvpidType};
use hv_arch_vmx::msr::{FeatureControl, VmxMsr};
use hv_arch_vmx::vmcs::{VmcsField, VmcsImage};
use hv_core::state::{Exit, L1Access, L1Cpu, PageFault, Segment};
use hv_core::vmx::vmcs12::{
    self, CurrentVmcs, FIELDS_END, LAUNCH_STATE_OFFSET, REGION_SIZE, RegionHeader,
};
use hv_core::vmx::{
    Emulation, ExitInformationError, Fault, HV_VMCS_REVISION_ID, LaunchState, NestedVmx,
    NestedVmxConfig, VirtualCapabilities, VmxOperation, VmxStatus,
};
use hv_mmu::addr::L1Gpa;
use hv_mmu::env::NotL1Memory;
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Test memory: identity paging over a byte vector, with pages that fault and
// pages that map elsewhere.
// ---------------------------------------------------------------------------

const MEMORY_SIZE: usize = 0x2_0000;
const VMXON_REGION: u64 = 0x1000;
const VMCS_A: u64 = 0x2000;
const VMCS_B: u64 = 0x3000;
const SCRATCH: u64 = 0x8000;
const DESCRIPTOR: u64 = 0x9000;
const MAXPHYADDR: u8 = 39;
const LENGTH: u32 = 4;

/// L1 memory with identity translation; `faulting` linear pages raise #PF
/// (error code bit 1 = write), `remap` sends a linear page elsewhere.
#[derive(Clone, Debug)]
struct Memory {
    bytes: Vec<u8>,
    faulting: Vec<u64>,
    remap: Vec<(u64, u64)>,
}

impl Memory {
    fn new() -> Self {
        Self {
            bytes: vec![0; MEMORY_SIZE],
            faulting: Vec::new(),
            remap: Vec::new(),
        }
    }

    fn range(&self, gpa: L1Gpa, len: usize) -> Result<core::ops::Range<usize>, NotL1Memory> {
        let start = usize::try_from(gpa.raw()).map_err(|_| NotL1Memory { gpa })?;
        let end = start.checked_add(len).ok_or(NotL1Memory { gpa })?;
        if end > self.bytes.len() {
            return Err(NotL1Memory { gpa });
        }
        Ok(start..end)
    }

    fn put_u32(&mut self, at: u64, value: u32) {
        self.write_bytes(L1Gpa::new(at), &value.to_le_bytes())
            .expect("in memory");
    }

    fn put_u64(&mut self, at: u64, value: u64) {
        self.write_bytes(L1Gpa::new(at), &value.to_le_bytes())
            .expect("in memory");
    }

    fn get_u32(&self, at: u64) -> u32 {
        let mut bytes = [0; 4];
        self.read_bytes(L1Gpa::new(at), &mut bytes)
            .expect("in memory");
        u32::from_le_bytes(bytes)
    }

    fn get_u64(&self, at: u64) -> u64 {
        let mut bytes = [0; 8];
        self.read_bytes(L1Gpa::new(at), &mut bytes)
            .expect("in memory");
        u64::from_le_bytes(bytes)
    }
}

impl L1Access for Memory {
    fn read_bytes(&self, gpa: L1Gpa, buf: &mut [u8]) -> Result<(), NotL1Memory> {
        let range = self.range(gpa, buf.len())?;
        buf.copy_from_slice(&self.bytes[range]);
        Ok(())
    }

    fn write_bytes(&mut self, gpa: L1Gpa, buf: &[u8]) -> Result<(), NotL1Memory> {
        let range = self.range(gpa, buf.len())?;
        self.bytes[range].copy_from_slice(buf);
        Ok(())
    }

    fn translate(&self, _cpu: &L1Cpu, linear: u64, write: bool) -> Result<L1Gpa, PageFault> {
        let page = linear >> 12;
        if self.faulting.contains(&page) {
            return Err(PageFault {
                address: linear,
                error_code: if write { 2 } else { 0 },
            });
        }
        let target = self
            .remap
            .iter()
            .find(|(from, _)| *from == page)
            .map_or(page, |(_, to)| *to);
        Ok(L1Gpa::new((target << 12) | (linear & 0xfff)))
    }
}

// ---------------------------------------------------------------------------
// L1 CPU states.
// ---------------------------------------------------------------------------

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

/// 32-bit protected mode with paging (CR4.PAE = 0, EFER = 0).
fn protected_mode_cpu() -> L1Cpu {
    L1Cpu {
        cr4: 0x2000,
        efer: 0,
        cs: Segment {
            access_rights: 0xc09b,
            ..long_mode_cpu().cs
        },
        ..long_mode_cpu()
    }
}

fn advertised() -> VirtualCapabilities {
    VirtualCapabilities::derive(&VmxCapabilities::bochs_skylake_x())
}

fn config() -> NestedVmxConfig {
    NestedVmxConfig::new(
        FeatureControl::LOCK | FeatureControl::VMX_OUTSIDE_SMX,
        MAXPHYADDR,
    )
}

// ---------------------------------------------------------------------------
// Exits.
// ---------------------------------------------------------------------------

fn exit(reason: ExitReason, info: VmxInstructionInfo, qualification: u64) -> Exit {
    Exit {
        qualification,
        instruction_length: LENGTH,
        instruction_info: info.raw(),
        ..Exit::new(reason)
    }
}

fn memory_at(base: Gpr, address_size: AddressSize, segment: SegmentRegister) -> VmxInstructionInfo {
    VmxInstructionInfo::from_memory_operand(MemoryOperand {
        address_size,
        segment,
        base: Some(base),
        index: None,
    })
}

/// `[rbx]`, 64-bit addressing, DS.
fn rbx_operand() -> VmxInstructionInfo {
    memory_at(Gpr::Rbx, AddressSize::Bits64, SegmentRegister::Ds)
}

/// RFLAGS before each instruction: every status flag and RF set, so the
/// tests see that they are cleared.
const DIRTY_RFLAGS: u64 = 0x2 | 0x8d5 | (1 << 16);

struct Harness {
    vmx: NestedVmx,
    cpu: L1Cpu,
    memory: Memory,
}

impl Harness {
    /// Outside VMX operation, with hv-format VMXON/VMCS regions in memory.
    fn new() -> Self {
        let mut memory = Memory::new();
        for region in [VMXON_REGION, VMCS_A, VMCS_B] {
            memory.put_u32(region, HV_VMCS_REVISION_ID);
        }
        Self {
            vmx: NestedVmx::new(advertised(), config()),
            cpu: long_mode_cpu(),
            memory,
        }
    }

    /// VMXON, VMCLEAR A, VMPTRLD A done.
    fn ready() -> Self {
        let mut h = Self::new();
        assert_eq!(
            h.vmxon(VMXON_REGION),
            Emulation::Completed(VmxStatus::Succeed)
        );
        assert_eq!(h.vmclear(VMCS_A), Emulation::Completed(VmxStatus::Succeed));
        assert_eq!(h.vmptrld(VMCS_A), Emulation::Completed(VmxStatus::Succeed));
        h
    }

    fn run(&mut self, exit: &Exit) -> Emulation {
        self.cpu.rflags = DIRTY_RFLAGS;
        self.vmx.emulate(&mut self.cpu, &mut self.memory, exit)
    }

    /// Runs `exit` and checks the SDM 31.2 conventions for `status`.
    fn expect(&mut self, exit: &Exit, status: VmxStatus) {
        let rip = self.cpu.rip;
        assert_eq!(self.run(exit), Emulation::Completed(status));
        assert_status(self, rip, status);
    }

    /// A VMXON/VMCLEAR/VMPTRLD with `pointer` in memory at `[rbx]`.
    fn pointer_instruction(&mut self, reason: ExitReason, pointer: u64) -> Emulation {
        self.memory.put_u64(SCRATCH, pointer);
        self.cpu.gprs.set(Gpr::Rbx.index(), SCRATCH);
        self.run(&exit(reason, rbx_operand(), 0))
    }

    fn vmxon(&mut self, pointer: u64) -> Emulation {
        self.pointer_instruction(ExitReason::Vmxon, pointer)
    }

    fn vmclear(&mut self, pointer: u64) -> Emulation {
        self.pointer_instruction(ExitReason::Vmclear, pointer)
    }

    fn vmptrld(&mut self, pointer: u64) -> Emulation {
        self.pointer_instruction(ExitReason::Vmptrld, pointer)
    }

    fn vmptrst(&mut self) -> (Emulation, u64) {
        self.memory.put_u64(SCRATCH, 0x1234);
        self.cpu.gprs.set(Gpr::Rbx.index(), SCRATCH);
        let result = self.run(&exit(ExitReason::Vmptrst, rbx_operand(), 0));
        (result, self.memory.get_u64(SCRATCH))
    }

    /// VMWRITE RAX (encoding), RCX (value): the register form.
    fn vmwrite_exit(&mut self, encoding: u64, value: u64) -> Exit {
        self.cpu.gprs.set(Gpr::Rax.index(), encoding);
        self.cpu.gprs.set(Gpr::Rcx.index(), value);
        exit(
            ExitReason::Vmwrite,
            VmxInstructionInfo::from_register_operand(Gpr::Rcx).with_reg2(Gpr::Rax),
            0,
        )
    }

    fn vmwrite(&mut self, encoding: u64, value: u64) -> Emulation {
        let exit = self.vmwrite_exit(encoding, value);
        self.run(&exit)
    }

    /// VMREAD RCX (destination) <- field RAX.
    fn vmread(&mut self, encoding: u64) -> (Emulation, u64) {
        self.cpu.gprs.set(Gpr::Rax.index(), encoding);
        self.cpu.gprs.set(Gpr::Rcx.index(), 0xdead_beef_dead_beef);
        let result = self.run(&exit(
            ExitReason::Vmread,
            VmxInstructionInfo::from_register_operand(Gpr::Rcx).with_reg2(Gpr::Rax),
            0,
        ));
        (result, self.cpu.gprs.get(Gpr::Rcx.index()))
    }

    fn vmlaunch(&mut self) -> Emulation {
        self.run(&exit(
            ExitReason::Vmlaunch,
            VmxInstructionInfo::from_raw(0),
            0,
        ))
    }

    fn vmresume(&mut self) -> Emulation {
        self.run(&exit(
            ExitReason::Vmresume,
            VmxInstructionInfo::from_raw(0),
            0,
        ))
    }

    /// INVEPT/INVVPID with type RAX and the 16-byte descriptor at `[rbx]`.
    fn invalidation(&mut self, reason: ExitReason, kind: u64, descriptor: [u64; 2]) -> Emulation {
        self.memory.put_u64(DESCRIPTOR, descriptor[0]);
        self.memory.put_u64(DESCRIPTOR + 8, descriptor[1]);
        self.cpu.gprs.set(Gpr::Rbx.index(), DESCRIPTOR);
        self.cpu.gprs.set(Gpr::Rax.index(), kind);
        self.run(&exit(reason, rbx_operand().with_reg2(Gpr::Rax), 0))
    }

    fn instruction_error(&self) -> u64 {
        self.vmx
            .current_vmcs()
            .expect("a current VMCS")
            .image()
            .get(VmcsField::VmInstructionError)
    }

    /// Writes every non-zero field of `image` with emulated VMWRITEs.
    fn vmwrite_image(&mut self, image: &VmcsImage) {
        for (field, value) in image.non_zero() {
            assert_eq!(
                self.vmwrite(u64::from(field.encoding()), value),
                Emulation::Completed(VmxStatus::Succeed),
                "VMWRITE {}",
                field.name()
            );
        }
    }
}

/// RIP advanced by the instruction length, RFLAGS per SDM 31.2, RF cleared,
/// and for `VMfailValid` the error number in the current VMCS12.
fn assert_status(h: &Harness, rip_before: u64, status: VmxStatus) {
    assert_eq!(h.cpu.rip, rip_before + u64::from(LENGTH), "RIP advanced");
    let expected = match status {
        VmxStatus::Succeed => 0x2,
        VmxStatus::FailInvalid => 0x3,
        VmxStatus::FailValid(error) => {
            assert_eq!(h.instruction_error(), u64::from(error.number()));
            0x42
        }
    };
    assert_eq!(h.cpu.rflags, expected, "RFLAGS for {status:?}");
}

fn fail_valid(error: VmInstructionError) -> Emulation {
    Emulation::Completed(VmxStatus::FailValid(error))
}

const FAIL_INVALID: Emulation = Emulation::Completed(VmxStatus::FailInvalid);
const SUCCEED: Emulation = Emulation::Completed(VmxStatus::Succeed);

// ---------------------------------------------------------------------------
// 1. Virtual capabilities (SDM Appendix A).
// ---------------------------------------------------------------------------

#[test]
fn advertised_capabilities_never_exceed_the_real_ones() {
    let real = VmxCapabilities::bochs_skylake_x();
    let virt = VirtualCapabilities::derive(&real);
    let caps = virt.capabilities();
    for kind in [
        ControlKind::PinBased,
        ControlKind::PrimaryProcessorBased,
        ControlKind::SecondaryProcessorBased,
        ControlKind::TertiaryProcessorBased,
        ControlKind::PrimaryExit,
        ControlKind::SecondaryExit,
        ControlKind::Entry,
        ControlKind::VmFunction,
    ] {
        let (adv, real) = (caps.allowed(kind), real.allowed(kind));
        assert_eq!(adv.may_be_one & !real.may_be_one, 0, "{kind:?} allows more");
        assert_eq!(
            real.must_be_one & !adv.must_be_one,
            0,
            "{kind:?} requires less"
        );
    }
    assert_eq!(caps.ept_vpid.raw() & !real.ept_vpid.raw(), 0);
    assert_eq!(caps.cr0_fixed, real.cr0_fixed);
    assert_eq!(caps.cr4_fixed, real.cr4_fixed);
    assert!(caps.misc.cr3_target_count() <= real.misc.cr3_target_count());
    assert!(!caps.misc.activity_shutdown() && !caps.misc.activity_wait_for_sipi());
    assert_eq!(caps.misc.activity_hlt(), real.misc.activity_hlt());
    assert!(
        !caps.misc.vmwrite_any_field(),
        "exit-information fields are read-only"
    );
    assert!(!caps.supports_vmcs_shadowing() && !caps.supports_vm_functions());
    assert!(!caps.supports_posted_interrupts() && !caps.supports_pml());
}

#[test]
fn advertised_capabilities_have_the_promised_features() {
    let virt = advertised();
    let caps = virt.capabilities();
    assert_eq!(caps.basic.revision_id(), 0x4856);
    assert_eq!(virt.revision_id(), HV_VMCS_REVISION_ID);
    assert_eq!(caps.basic.vmcs_region_size(), 4096);
    assert!(caps.has_true_controls());
    assert!(!caps.basic.physical_addresses_limited_to_32_bits());
    assert!(!caps.basic.dual_monitor_smm());
    assert_eq!(caps.basic.vmcs_memory_type_raw(), 6, "write-back");
    assert!(caps.supports_ept() && caps.supports_vpid());
    assert!(caps.supports_unrestricted_guest());
    assert!(caps.supports_preemption_timer());
    let ept = caps.ept_vpid;
    assert!(ept.page_walk_length_4() && ept.memory_type_wb());
    assert!(ept.pages_2m() && ept.pages_1g() && ept.accessed_dirty());
    assert!(ept.invept() && ept.invept_single_context() && ept.invept_all_context());
    assert!(!ept.execute_only() && !ept.memory_type_uc() && !ept.page_walk_length_5());
    assert!(ept.invvpid() && ept.invvpid_individual_address());
    assert!(ept.invvpid_single_context() && ept.invvpid_all_context());
    assert!(ept.invvpid_single_context_retaining_globals());
}

#[test]
fn rdmsr_answers_every_existing_capability_msr() {
    let virt = advertised();
    // Parsing the MSRs L1 reads gives back exactly the checked capabilities.
    let reparsed = VmxCapabilities::from_reader(|msr| virt.msr(msr.index()))
        .expect("every MSR that exists is readable");
    assert_eq!(&reparsed, virt.capabilities());
    assert_eq!(virt.msr(0x480), Some(virt.raw().basic));
    assert_eq!(
        virt.msr(0x480).map(|basic| basic & 0x7fff_ffff),
        Some(0x4856)
    );
    // VMFUNC, PROCBASED_CTLS3 and EXIT_CTLS2 do not exist for L1: #GP.
    assert_eq!(virt.msr(VmxMsr::VmFunc.index()), None);
    assert_eq!(virt.msr(0x492), None);
    assert_eq!(virt.msr(0x493), None);
    assert_eq!(virt.msr(0x47f), None);
    assert_eq!(virt.msr(0x494), None);
    // The non-TRUE pin-based MSR reports the default1 bits 1, 2, 4 as
    // required (SDM A.3.1); the TRUE one matches the effective settings.
    let pin = virt.msr(0x481).expect("exists");
    assert_eq!(pin & 0x16, 0x16);
    let true_pin = virt.msr(0x48d).expect("exists");
    assert_eq!(
        true_pin & 0xffff_ffff,
        virt.capabilities().pin_based.must_be_one
    );
    // VMCS_ENUM bits 9:1: the highest index of hv's field table.
    let enum_msr = virt.msr(0x48a).expect("exists");
    assert_eq!(enum_msr & 1, 0);
    assert!(
        VmcsField::ALL
            .iter()
            .all(|field| u64::from((field.encoding() >> 1) & 0x1ff) <= enum_msr >> 1)
    );
}

#[test]
fn features_the_real_engine_lacks_are_not_advertised() {
    let mut raw = VmxCapabilities::BOCHS_SKYLAKE_X_RAW;
    // No EPT (secondary bit 1) and no unrestricted guest (bit 7).
    raw.procbased_ctls2 &= !((1 << 33) | (1 << 39));
    let virt = VirtualCapabilities::derive(&VmxCapabilities::from_raw(&raw));
    let caps = virt.capabilities();
    assert!(!caps.supports_ept() && !caps.supports_unrestricted_guest());
    assert!(!caps.ept_vpid.invept() && !caps.ept_vpid.accessed_dirty());
    assert!(caps.supports_vpid() && caps.ept_vpid.invvpid());
}

// ---------------------------------------------------------------------------
// 2. VMCS12 layout and cache.
// ---------------------------------------------------------------------------

#[test]
fn vmcs12_layout_fits_and_round_trips() {
    const { assert!(FIELDS_END <= REGION_SIZE) };
    assert_eq!(vmcs12::REVISION_OFFSET, 0);
    assert_eq!(vmcs12::ABORT_INDICATOR_OFFSET, 4);
    let mut memory = Memory::new();
    memory.put_u32(VMCS_A, HV_VMCS_REVISION_ID | (1 << 31));
    memory.put_u32(VMCS_A + 4, 0x55);
    let image = long_mode_guest(advertised().capabilities());
    let vmcs = CurrentVmcs::new(L1Gpa::new(VMCS_A), image.clone(), LaunchState::Launched);
    vmcs.store(&mut memory).expect("in memory");
    // The SDM's header is left as L1 wrote it.
    let header = RegionHeader::read(&memory, L1Gpa::new(VMCS_A)).expect("in memory");
    assert_eq!(header.revision_id, HV_VMCS_REVISION_ID);
    assert!(header.shadow);
    assert_eq!(memory.get_u32(VMCS_A + 4), 0x55);
    assert_eq!(
        memory.get_u64(VMCS_A + vmcs12::field_offset(VmcsField::GuestRip) as u64),
        image.get(VmcsField::GuestRip)
    );
    let loaded = CurrentVmcs::load(&memory, L1Gpa::new(VMCS_A)).expect("in memory");
    assert_eq!(loaded, vmcs);
}

#[test]
fn vmcs12_load_truncates_values_to_field_width() {
    let mut memory = Memory::new();
    let at = VMCS_A + vmcs12::field_offset(VmcsField::GuestCsSelector) as u64;
    memory.put_u64(at, 0xffff_ffff_ffff_1234);
    memory.put_u32(VMCS_A + LAUNCH_STATE_OFFSET as u64, 7);
    let loaded = CurrentVmcs::load(&memory, L1Gpa::new(VMCS_A)).expect("in memory");
    assert_eq!(loaded.image().get(VmcsField::GuestCsSelector), 0x1234);
    assert_eq!(
        loaded.launch_state(),
        LaunchState::Clear,
        "unknown words read as clear"
    );
    assert!(CurrentVmcs::load(&memory, L1Gpa::new(MEMORY_SIZE as u64)).is_err());
}

// ---------------------------------------------------------------------------
// 3. VMXON (SDM 31.3 VMXON).
// ---------------------------------------------------------------------------

#[test]
fn vmxon_enters_vmx_root_operation() {
    let mut h = Harness::new();
    let rip = h.cpu.rip;
    assert_eq!(h.vmxon(VMXON_REGION), SUCCEED);
    assert_status(&h, rip, VmxStatus::Succeed);
    assert_eq!(
        h.vmx.operation(),
        VmxOperation::Root {
            vmxon_pointer: L1Gpa::new(VMXON_REGION)
        }
    );
    assert_eq!(h.vmx.current_vmcs_pointer(), u64::MAX);
}

#[test]
fn vmxon_undefined_opcode_cases() {
    // CR4.VMXE = 0.
    let mut h = Harness::new();
    h.cpu.cr4 &= !0x2000;
    assert_eq!(
        h.vmxon(VMXON_REGION),
        Emulation::Fault(Fault::InvalidOpcode)
    );
    // Real-address mode (CR0.PE = 0).
    let mut h = Harness::new();
    h.cpu.cr0 &= !1;
    assert_eq!(
        h.vmxon(VMXON_REGION),
        Emulation::Fault(Fault::InvalidOpcode)
    );
    // Virtual-8086 mode: the RFLAGS.VM check comes from the state before
    // the instruction, so use emulate directly.
    let mut h = Harness::new();
    h.memory.put_u64(SCRATCH, VMXON_REGION);
    h.cpu.gprs.set(Gpr::Rbx.index(), SCRATCH);
    h.cpu.rflags = 0x2 | (1 << 17);
    let rip = h.cpu.rip;
    let result = h.vmx.emulate(
        &mut h.cpu,
        &mut h.memory,
        &exit(ExitReason::Vmxon, rbx_operand(), 0),
    );
    assert_eq!(result, Emulation::Fault(Fault::InvalidOpcode));
    assert_eq!(
        (h.cpu.rip, h.cpu.rflags),
        (rip, 0x2 | (1 << 17)),
        "nothing changed"
    );
    // Compatibility mode (EFER.LMA = 1, CS.L = 0).
    let mut h = Harness::new();
    h.cpu.cs.access_rights = 0xc09b;
    assert_eq!(
        h.vmxon(VMXON_REGION),
        Emulation::Fault(Fault::InvalidOpcode)
    );
    // Register operand (instruction information bit 10).
    let mut h = Harness::new();
    let register = exit(
        ExitReason::Vmxon,
        VmxInstructionInfo::from_register_operand(Gpr::Rbx),
        0,
    );
    assert_eq!(h.run(&register), Emulation::Fault(Fault::InvalidOpcode));
    assert_eq!(h.vmx.operation(), VmxOperation::Outside);
}

#[test]
fn vmxon_general_protection_cases() {
    // CPL 3.
    let mut h = Harness::new();
    h.cpu.ss.access_rights |= 3 << 5;
    h.cpu.cs.access_rights |= 3 << 5;
    assert_eq!(
        h.vmxon(VMXON_REGION),
        Emulation::Fault(Fault::GeneralProtection)
    );
    // CR0.NE = 0 violates the advertised CR0 FIXED0.
    let mut h = Harness::new();
    h.cpu.cr0 &= !(1 << 5);
    assert_eq!(
        h.vmxon(VMXON_REGION),
        Emulation::Fault(Fault::GeneralProtection)
    );
    // A CR4 bit outside CR4 FIXED1 (bit 25 on Bochs Skylake-X).
    let mut h = Harness::new();
    h.cpu.cr4 |= 1 << 25;
    assert_eq!(
        h.vmxon(VMXON_REGION),
        Emulation::Fault(Fault::GeneralProtection)
    );
    // IA32_FEATURE_CONTROL not locked, or VMX outside SMX not enabled.
    for feature_control in [FeatureControl::VMX_OUTSIDE_SMX, FeatureControl::LOCK] {
        let mut h = Harness::new();
        h.vmx = NestedVmx::new(
            advertised(),
            NestedVmxConfig::new(feature_control, MAXPHYADDR),
        );
        assert_eq!(
            h.vmxon(VMXON_REGION),
            Emulation::Fault(Fault::GeneralProtection)
        );
        assert_eq!(h.vmx.operation(), VmxOperation::Outside);
    }
}

#[test]
fn vmxon_fail_invalid_cases() {
    // Not 4-KiB aligned; beyond MAXPHYADDR; not L1 memory.
    for pointer in [VMXON_REGION + 8, 1 << MAXPHYADDR, 0x40_0000] {
        let mut h = Harness::new();
        let rip = h.cpu.rip;
        assert_eq!(h.vmxon(pointer), FAIL_INVALID, "pointer {pointer:#x}");
        assert_status(&h, rip, VmxStatus::FailInvalid);
        assert_eq!(h.vmx.operation(), VmxOperation::Outside);
    }
    // Wrong revision identifier.
    let mut h = Harness::new();
    h.memory.put_u32(VMXON_REGION, 0x2b);
    assert_eq!(h.vmxon(VMXON_REGION), FAIL_INVALID);
    // Shadow-VMCS indicator set.
    let mut h = Harness::new();
    h.memory
        .put_u32(VMXON_REGION, HV_VMCS_REVISION_ID | (1 << 31));
    assert_eq!(h.vmxon(VMXON_REGION), FAIL_INVALID);
    assert_eq!(h.vmx.operation(), VmxOperation::Outside);
}

#[test]
fn vmxon_in_vmx_root_fails_with_15() {
    // Without a current VMCS: VMfailInvalid.
    let mut h = Harness::new();
    assert_eq!(h.vmxon(VMXON_REGION), SUCCEED);
    assert_eq!(h.vmxon(VMXON_REGION), FAIL_INVALID);
    // With one: VMfailValid(15).
    let mut h = Harness::ready();
    h.memory.put_u64(SCRATCH, VMXON_REGION);
    h.expect(
        &exit(ExitReason::Vmxon, rbx_operand(), 0),
        VmxStatus::FailValid(VmInstructionError::VmxonInVmxRoot),
    );
    assert_eq!(h.instruction_error(), 15);
}

#[test]
fn vmx_instructions_outside_vmx_operation_are_undefined() {
    let mut h = Harness::new();
    for reason in [
        ExitReason::Vmclear,
        ExitReason::Vmptrld,
        ExitReason::Vmptrst,
        ExitReason::Vmread,
        ExitReason::Vmwrite,
        ExitReason::Vmlaunch,
        ExitReason::Vmresume,
        ExitReason::Vmxoff,
        ExitReason::Invept,
        ExitReason::Invvpid,
    ] {
        let rip = h.cpu.rip;
        assert_eq!(
            h.run(&exit(reason, rbx_operand(), 0)),
            Emulation::Fault(Fault::InvalidOpcode),
            "{reason:?}"
        );
        assert_eq!(h.cpu.rip, rip, "RIP not advanced on a fault");
    }
}

#[test]
fn vmx_instructions_at_cpl3_raise_general_protection() {
    let mut h = Harness::ready();
    h.cpu.ss.access_rights |= 3 << 5;
    for reason in [
        ExitReason::Vmclear,
        ExitReason::Vmptrld,
        ExitReason::Vmptrst,
        ExitReason::Vmread,
        ExitReason::Vmwrite,
        ExitReason::Vmlaunch,
        ExitReason::Vmresume,
        ExitReason::Vmxoff,
        ExitReason::Invept,
        ExitReason::Invvpid,
        ExitReason::Vmcall,
    ] {
        let result = h.run(&exit(reason, rbx_operand(), 0));
        assert_eq!(
            result,
            Emulation::Fault(Fault::GeneralProtection),
            "{reason:?}"
        );
        assert_eq!(Fault::GeneralProtection.error_code(), Some(0));
    }
}

// ---------------------------------------------------------------------------
// 4. VMCLEAR (SDM 31.3 VMCLEAR).
// ---------------------------------------------------------------------------

#[test]
fn vmclear_invalid_address_fails_with_2() {
    let mut h = Harness::ready();
    let rip = h.cpu.rip;
    assert_eq!(
        h.vmclear(VMCS_B | 0x10),
        fail_valid(VmInstructionError::VmclearInvalidAddress)
    );
    assert_status(
        &h,
        rip,
        VmxStatus::FailValid(VmInstructionError::VmclearInvalidAddress),
    );
    assert_eq!(
        h.vmclear(1 << 45),
        fail_valid(VmInstructionError::VmclearInvalidAddress)
    );
    // Not L1 memory (hv's choice: the region cannot exist).
    assert_eq!(
        h.vmclear(0x40_0000),
        fail_valid(VmInstructionError::VmclearInvalidAddress)
    );
    // Without a current VMCS: VMfailInvalid.
    let mut h = Harness::new();
    assert_eq!(h.vmxon(VMXON_REGION), SUCCEED);
    assert_eq!(h.vmclear(VMCS_B + 1), FAIL_INVALID);
}

#[test]
fn vmclear_of_the_vmxon_pointer_fails_with_3() {
    let mut h = Harness::ready();
    assert_eq!(
        h.vmclear(VMXON_REGION),
        fail_valid(VmInstructionError::VmclearVmxonPointer)
    );
    assert_eq!(h.instruction_error(), 3);
}

#[test]
fn vmclear_writes_launch_state_clear_to_memory() {
    let mut h = Harness::new();
    assert_eq!(h.vmxon(VMXON_REGION), SUCCEED);
    let word = VMCS_B + LAUNCH_STATE_OFFSET as u64;
    h.memory.put_u32(word, LaunchState::Launched.word());
    assert_eq!(h.vmclear(VMCS_B), SUCCEED);
    assert_eq!(h.memory.get_u32(word), LaunchState::Clear.word());
    assert!(h.vmx.current_vmcs().is_none());
}

#[test]
fn vmclear_of_the_current_vmcs_writes_it_back_and_drops_it() {
    let mut h = Harness::ready();
    assert_eq!(
        h.vmwrite(u64::from(VmcsField::GuestRip.encoding()), 0xabc),
        SUCCEED
    );
    // Launch it so the write-back must also clear the launch state.
    h.vmx
        .current_vmcs_mut()
        .expect("current")
        .set_launch_state(LaunchState::Launched);
    let field = VMCS_A + vmcs12::field_offset(VmcsField::GuestRip) as u64;
    assert_eq!(h.memory.get_u64(field), 0, "cached, not yet in memory");
    assert_eq!(h.vmclear(VMCS_A), SUCCEED);
    assert_eq!(h.memory.get_u64(field), 0xabc);
    assert_eq!(
        h.memory.get_u32(VMCS_A + LAUNCH_STATE_OFFSET as u64),
        LaunchState::Clear.word()
    );
    assert_eq!(h.vmx.current_vmcs_pointer(), u64::MAX);
    // No current VMCS any more: VMREAD fails invalid.
    assert_eq!(
        h.vmread(u64::from(VmcsField::GuestRip.encoding())).0,
        FAIL_INVALID
    );
}

// ---------------------------------------------------------------------------
// 5. VMPTRLD and VMPTRST (SDM 31.3 VMPTRLD, VMPTRST).
// ---------------------------------------------------------------------------

#[test]
fn vmptrld_invalid_address_fails_with_9() {
    let mut h = Harness::ready();
    for pointer in [VMCS_B + 0x800, 1 << MAXPHYADDR, 0x40_0000] {
        assert_eq!(
            h.vmptrld(pointer),
            fail_valid(VmInstructionError::VmptrldInvalidAddress),
            "{pointer:#x}"
        );
        assert_eq!(h.instruction_error(), 9);
    }
    let mut h = Harness::new();
    assert_eq!(h.vmxon(VMXON_REGION), SUCCEED);
    assert_eq!(h.vmptrld(VMCS_B + 0x800), FAIL_INVALID);
}

#[test]
fn vmptrld_of_the_vmxon_pointer_fails_with_10() {
    let mut h = Harness::ready();
    assert_eq!(
        h.vmptrld(VMXON_REGION),
        fail_valid(VmInstructionError::VmptrldVmxonPointer)
    );
    assert_eq!(h.instruction_error(), 10);
}

#[test]
fn vmptrld_with_wrong_revision_or_shadow_bit_fails_with_11() {
    let mut h = Harness::ready();
    h.memory.put_u32(VMCS_B, 0x2b);
    assert_eq!(
        h.vmptrld(VMCS_B),
        fail_valid(VmInstructionError::VmptrldIncorrectRevision)
    );
    assert_eq!(h.instruction_error(), 11);
    // Shadow VMCS indicator, VMCS shadowing not advertised.
    h.memory.put_u32(VMCS_B, HV_VMCS_REVISION_ID | (1 << 31));
    assert_eq!(
        h.vmptrld(VMCS_B),
        fail_valid(VmInstructionError::VmptrldIncorrectRevision)
    );
    assert_eq!(h.vmx.current_vmcs_pointer(), VMCS_A, "A stays current");
}

#[test]
fn vmptrld_of_another_vmcs_writes_back_the_old_and_loads_the_new() {
    let mut h = Harness::ready();
    let rip_field = u64::from(VmcsField::GuestRip.encoding());
    assert_eq!(h.vmwrite(rip_field, 0xaaaa), SUCCEED);
    // B's memory already holds a value, as if L1 had used it before.
    h.memory.put_u64(
        VMCS_B + vmcs12::field_offset(VmcsField::GuestRip) as u64,
        0xbbbb,
    );
    h.memory.put_u32(
        VMCS_B + LAUNCH_STATE_OFFSET as u64,
        LaunchState::Launched.word(),
    );
    assert_eq!(h.vmptrld(VMCS_B), SUCCEED);
    assert_eq!(
        h.memory
            .get_u64(VMCS_A + vmcs12::field_offset(VmcsField::GuestRip) as u64),
        0xaaaa,
        "A written back"
    );
    assert_eq!(
        h.vmread(rip_field),
        (SUCCEED, 0xbbbb),
        "B loaded from memory"
    );
    assert_eq!(
        h.vmx.current_vmcs().map(CurrentVmcs::launch_state),
        Some(LaunchState::Launched)
    );
    assert_eq!(h.vmptrld(VMCS_A), SUCCEED);
    assert_eq!(h.vmread(rip_field), (SUCCEED, 0xaaaa));
}

#[test]
fn vmptrld_of_the_current_vmcs_keeps_the_cache() {
    let mut h = Harness::ready();
    let rip_field = u64::from(VmcsField::GuestRip.encoding());
    assert_eq!(h.vmwrite(rip_field, 0x77), SUCCEED);
    assert_eq!(h.vmptrld(VMCS_A), SUCCEED);
    assert_eq!(h.vmread(rip_field), (SUCCEED, 0x77));
}

#[test]
fn vmptrst_stores_the_current_vmcs_pointer() {
    let mut h = Harness::new();
    assert_eq!(h.vmxon(VMXON_REGION), SUCCEED);
    let rip = h.cpu.rip;
    assert_eq!(h.vmptrst(), (SUCCEED, u64::MAX));
    assert_status(&h, rip, VmxStatus::Succeed);
    assert_eq!(h.vmptrld(VMCS_B), SUCCEED);
    assert_eq!(h.vmptrst(), (SUCCEED, VMCS_B));
}

#[test]
fn vmptrst_to_a_faulting_page_is_a_write_page_fault() {
    let mut h = Harness::ready();
    h.memory.faulting.push(SCRATCH >> 12);
    let rip = h.cpu.rip;
    let (result, _) = h.vmptrst();
    let expected = Fault::PageFault(PageFault {
        address: SCRATCH,
        error_code: 2,
    });
    assert_eq!(result, Emulation::Fault(expected));
    assert_eq!(expected.vector(), ExceptionVector::PageFault);
    assert_eq!(expected.error_code(), Some(2));
    assert_eq!(h.cpu.rip, rip);
}

// ---------------------------------------------------------------------------
// 6. VMREAD and VMWRITE (SDM 31.3 VMREAD, VMWRITE).
// ---------------------------------------------------------------------------

#[test]
fn vmread_and_vmwrite_without_current_vmcs_fail_invalid() {
    let mut h = Harness::new();
    assert_eq!(h.vmxon(VMXON_REGION), SUCCEED);
    let rip = h.cpu.rip;
    assert_eq!(
        h.vmwrite(u64::from(VmcsField::GuestRip.encoding()), 1),
        FAIL_INVALID
    );
    assert_status(&h, rip, VmxStatus::FailInvalid);
    assert_eq!(
        h.vmread(u64::from(VmcsField::GuestRip.encoding())).0,
        FAIL_INVALID
    );
}

#[test]
fn unsupported_component_fails_with_12() {
    let mut h = Harness::ready();
    for encoding in [0x1_0000_0000_u64 | 0x681e, 0x7fff, 0x1000, 0x0801] {
        let exit = h.vmwrite_exit(encoding, 5);
        h.expect(
            &exit,
            VmxStatus::FailValid(VmInstructionError::UnsupportedVmcsComponent),
        );
        assert_eq!(
            h.vmread(encoding).0,
            fail_valid(VmInstructionError::UnsupportedVmcsComponent),
            "{encoding:#x}"
        );
    }
}

#[test]
fn vmwrite_to_read_only_field_fails_with_13() {
    let mut h = Harness::ready();
    let exit = h.vmwrite_exit(u64::from(VmcsField::ExitQualification.encoding()), 1);
    h.expect(
        &exit,
        VmxStatus::FailValid(VmInstructionError::VmwriteReadOnlyComponent),
    );
    assert_eq!(h.instruction_error(), 13);
    // With IA32_VMX_MISC bit 29 advertised, the write succeeds.
    let mut h = Harness::new();
    h.vmx = NestedVmx::new(
        advertised().with_vmwrite_to_exit_information(true),
        config(),
    );
    assert_eq!(h.vmxon(VMXON_REGION), SUCCEED);
    assert_eq!(h.vmptrld(VMCS_A), SUCCEED);
    let qualification = u64::from(VmcsField::ExitQualification.encoding());
    assert_eq!(h.vmwrite(qualification, 0x99), SUCCEED);
    assert_eq!(h.vmread(qualification), (SUCCEED, 0x99));
}

#[test]
fn vmwrite_then_vmread_round_trips_with_width_rules() {
    let mut h = Harness::ready();
    let selector = u64::from(VmcsField::GuestCsSelector.encoding());
    assert_eq!(h.vmwrite(selector, 0xffff_1234), SUCCEED);
    assert_eq!(
        h.vmread(selector),
        (SUCCEED, 0x1234),
        "16-bit field truncated"
    );
    // A 64-bit field and its HIGH half (encoding | 1).
    let link = u64::from(VmcsField::VmcsLinkPointer.encoding());
    assert_eq!(h.vmwrite(link, 0x1111_2222_3333_4444), SUCCEED);
    assert_eq!(h.vmread(link | 1), (SUCCEED, 0x1111_2222));
    assert_eq!(h.vmwrite(link | 1, 0xaaaa_bbbb), SUCCEED);
    assert_eq!(h.vmread(link), (SUCCEED, 0xaaaa_bbbb_3333_4444));
}

#[test]
fn vmread_and_vmwrite_with_memory_operands() {
    let mut h = Harness::ready();
    let rip_field = u64::from(VmcsField::GuestRip.encoding());
    // VMWRITE from [rbx + 8] (displacement in the exit qualification).
    h.memory.put_u64(SCRATCH + 8, 0x1234_5678_9abc);
    h.cpu.gprs.set(Gpr::Rbx.index(), SCRATCH);
    h.cpu.gprs.set(Gpr::Rax.index(), rip_field);
    h.expect(
        &exit(ExitReason::Vmwrite, rbx_operand().with_reg2(Gpr::Rax), 8),
        VmxStatus::Succeed,
    );
    // VMREAD to [rbx - 8].
    h.cpu.gprs.set(Gpr::Rbx.index(), SCRATCH + 0x20);
    h.expect(
        &exit(
            ExitReason::Vmread,
            rbx_operand().with_reg2(Gpr::Rax),
            (-8_i64).cast_unsigned(),
        ),
        VmxStatus::Succeed,
    );
    assert_eq!(h.memory.get_u64(SCRATCH + 0x18), 0x1234_5678_9abc);
}

#[test]
fn vmread_to_memory_page_fault_reports_a_write() {
    let mut h = Harness::ready();
    h.memory.faulting.push(SCRATCH >> 12);
    h.cpu.gprs.set(Gpr::Rbx.index(), SCRATCH);
    h.cpu
        .gprs
        .set(Gpr::Rax.index(), u64::from(VmcsField::GuestRip.encoding()));
    let result = h.run(&exit(
        ExitReason::Vmread,
        rbx_operand().with_reg2(Gpr::Rax),
        0,
    ));
    assert_eq!(
        result,
        Emulation::Fault(Fault::PageFault(PageFault {
            address: SCRATCH,
            error_code: 2
        }))
    );
    // VMWRITE reads: error code without the write bit.
    let result = h.run(&exit(
        ExitReason::Vmwrite,
        rbx_operand().with_reg2(Gpr::Rax),
        0,
    ));
    assert_eq!(
        result,
        Emulation::Fault(Fault::PageFault(PageFault {
            address: SCRATCH,
            error_code: 0
        }))
    );
}

#[test]
fn memory_operand_split_across_pages() {
    let mut h = Harness::ready();
    // Linear page 0xa maps to 0xc; 0xb is identity. An 8-byte operand at
    // 0xaffc takes 4 bytes from 0xcffc and 4 bytes from 0xb000.
    h.memory.remap.push((0xa, 0xc));
    h.memory.put_u32(0xcffc, 0x4444_3333);
    h.memory.put_u32(0xb000, 0x2222_1111);
    h.cpu.gprs.set(Gpr::Rbx.index(), 0xaffc);
    let rip_field = u64::from(VmcsField::GuestRip.encoding());
    h.cpu.gprs.set(Gpr::Rax.index(), rip_field);
    h.expect(
        &exit(ExitReason::Vmwrite, rbx_operand().with_reg2(Gpr::Rax), 0),
        VmxStatus::Succeed,
    );
    assert_eq!(h.vmread(rip_field), (SUCCEED, 0x2222_1111_4444_3333));
    // A fault on the second page leaves the first untouched.
    h.memory.faulting.push(0xb);
    h.cpu.gprs.set(Gpr::Rbx.index(), 0xaffc);
    h.cpu.gprs.set(Gpr::Rax.index(), rip_field);
    let result = h.run(&exit(
        ExitReason::Vmread,
        rbx_operand().with_reg2(Gpr::Rax),
        0,
    ));
    assert_eq!(
        result,
        Emulation::Fault(Fault::PageFault(PageFault {
            address: 0xb000,
            error_code: 2
        }))
    );
    assert_eq!(h.memory.get_u32(0xcffc), 0x4444_3333);
}

#[test]
fn operand_in_no_l1_memory_is_reported() {
    let mut h = Harness::ready();
    h.cpu.gprs.set(Gpr::Rbx.index(), 0x40_0000);
    let result = h.run(&exit(ExitReason::Vmptrst, rbx_operand(), 0));
    assert_eq!(
        result,
        Emulation::OperandNotInL1Memory(NotL1Memory {
            gpa: L1Gpa::new(0x40_0000)
        })
    );
}

#[test]
fn vmread_and_vmwrite_outside_64_bit_mode_use_32_bits() {
    let mut h = Harness::ready();
    h.cpu = protected_mode_cpu();
    let link = u64::from(VmcsField::VmcsLinkPointer.encoding());
    // Bits 63:32 of the field register are ignored outside 64-bit mode.
    assert_eq!(
        h.vmwrite(link | 0xffff_0000_0000_0000, 0xffff_ffff_8765_4321),
        SUCCEED
    );
    // The 32-bit operand is zero-extended into the 64-bit field.
    assert_eq!(
        h.vmx
            .current_vmcs()
            .map(|vmcs| vmcs.image().get(VmcsField::VmcsLinkPointer)),
        Some(0x8765_4321)
    );
    h.vmx
        .current_vmcs_mut()
        .expect("current")
        .image_mut()
        .set(VmcsField::VmcsLinkPointer, 0x1234_5678_9abc_def0);
    assert_eq!(h.vmread(link), (SUCCEED, 0x9abc_def0), "bits 31:0 only");
    // A 4-byte memory destination: the bytes after it are untouched.
    h.memory.put_u64(SCRATCH, u64::MAX);
    h.cpu.gprs.set(Gpr::Rbx.index(), SCRATCH);
    h.cpu.gprs.set(Gpr::Rax.index(), link);
    h.expect(
        &exit(
            ExitReason::Vmread,
            memory_at(Gpr::Rbx, AddressSize::Bits32, SegmentRegister::Ds).with_reg2(Gpr::Rax),
            0,
        ),
        VmxStatus::Succeed,
    );
    assert_eq!(h.memory.get_u64(SCRATCH), 0xffff_ffff_9abc_def0);
}

#[test]
fn segment_checks_outside_64_bit_mode() {
    let mut h = Harness::ready();
    h.cpu = protected_mode_cpu();
    h.cpu.gprs.set(Gpr::Rbx.index(), SCRATCH);
    let vmptrst = |segment| {
        exit(
            ExitReason::Vmptrst,
            memory_at(Gpr::Rbx, AddressSize::Bits32, segment),
            0,
        )
    };
    // Limit below the operand's last byte: #GP(0); for SS: #SS(0).
    h.cpu.ds.limit = (SCRATCH + 6) as u32;
    assert_eq!(
        h.run(&vmptrst(SegmentRegister::Ds)),
        Emulation::Fault(Fault::GeneralProtection)
    );
    h.cpu.ss.limit = (SCRATCH + 6) as u32;
    assert_eq!(
        h.run(&vmptrst(SegmentRegister::Ss)),
        Emulation::Fault(Fault::StackFault)
    );
    assert_eq!(
        Fault::StackFault.vector(),
        ExceptionVector::StackSegmentFault
    );
    // Writing through CS (a code segment): #GP(0).
    assert_eq!(
        h.run(&vmptrst(SegmentRegister::Cs)),
        Emulation::Fault(Fault::GeneralProtection)
    );
    // Unusable (null) ES: #GP(0).
    h.cpu.es.access_rights |= 1 << 16;
    assert_eq!(
        h.run(&vmptrst(SegmentRegister::Es)),
        Emulation::Fault(Fault::GeneralProtection)
    );
    // Read-only data segment: VMPTRST (a write) faults, VMPTRLD (a read)
    // does not.
    h.cpu.fs.access_rights = 0xc091;
    assert_eq!(
        h.run(&vmptrst(SegmentRegister::Fs)),
        Emulation::Fault(Fault::GeneralProtection)
    );
    h.memory.put_u64(SCRATCH, VMCS_A);
    let vmptrld = exit(
        ExitReason::Vmptrld,
        memory_at(Gpr::Rbx, AddressSize::Bits32, SegmentRegister::Fs),
        0,
    );
    assert_eq!(h.run(&vmptrld), SUCCEED);
    // Segment base is added: GS base 0x1000, offset SCRATCH - 0x1000.
    h.cpu.gs.base = 0x1000;
    h.cpu.gprs.set(Gpr::Rbx.index(), SCRATCH - 0x1000);
    assert_eq!(h.run(&vmptrst(SegmentRegister::Gs)), SUCCEED);
    assert_eq!(h.memory.get_u64(SCRATCH), VMCS_A);
}

#[test]
fn canonical_checks_in_64_bit_mode() {
    let mut h = Harness::ready();
    h.cpu.gprs.set(Gpr::Rbx.index(), 0x0000_8000_0000_0000);
    assert_eq!(
        h.run(&exit(ExitReason::Vmptrst, rbx_operand(), 0)),
        Emulation::Fault(Fault::GeneralProtection)
    );
    let ss_operand = memory_at(Gpr::Rbx, AddressSize::Bits64, SegmentRegister::Ss);
    assert_eq!(
        h.run(&exit(ExitReason::Vmptrst, ss_operand, 0)),
        Emulation::Fault(Fault::StackFault)
    );
    // The last byte crosses into the non-canonical range.
    h.cpu.gprs.set(Gpr::Rbx.index(), 0x0000_7fff_ffff_fffc);
    assert_eq!(
        h.run(&exit(ExitReason::Vmptrst, rbx_operand(), 0)),
        Emulation::Fault(Fault::GeneralProtection)
    );
    // FS has a base in 64-bit mode; DS does not.
    h.cpu.fs.base = 0x1000;
    h.cpu.ds.base = 0x5000;
    h.cpu.gprs.set(Gpr::Rbx.index(), SCRATCH - 0x1000);
    let fs_operand = memory_at(Gpr::Rbx, AddressSize::Bits64, SegmentRegister::Fs);
    assert_eq!(h.run(&exit(ExitReason::Vmptrst, fs_operand, 0)), SUCCEED);
    assert_eq!(h.memory.get_u64(SCRATCH), VMCS_A);
}

// ---------------------------------------------------------------------------
// 7. VMLAUNCH and VMRESUME (SDM 31.3, 27.2-27.3, 27.8).
// ---------------------------------------------------------------------------

/// VMXON, VMCLEAR A, VMPTRLD A, VMWRITE of the long-mode baseline.
fn baseline_harness() -> Harness {
    let mut h = Harness::ready();
    let image = long_mode_guest(h.vmx.capabilities().capabilities());
    h.vmwrite_image(&image);
    assert_eq!(h.vmx.current_vmcs().map(CurrentVmcs::image), Some(&image));
    h
}

#[test]
fn full_flow_vmxon_to_vmlaunch_enters_l2() {
    let mut h = baseline_harness();
    let (rip, rflags) = (h.cpu.rip, DIRTY_RFLAGS);
    assert_eq!(h.vmlaunch(), Emulation::VmEntry { launch: true });
    assert_eq!(
        (h.cpu.rip, h.cpu.rflags),
        (rip, rflags),
        "L1 state untouched"
    );
    assert_eq!(
        h.vmx.current_vmcs().map(CurrentVmcs::launch_state),
        Some(LaunchState::Launched)
    );
    assert_eq!(h.vmresume(), Emulation::VmEntry { launch: false });
    // VMCLEAR then VMPTRLD: launch state is clear again.
    assert_eq!(h.vmclear(VMCS_A), SUCCEED);
    assert_eq!(h.vmptrld(VMCS_A), SUCCEED);
    assert_eq!(h.vmlaunch(), Emulation::VmEntry { launch: true });
}

#[test]
fn vmlaunch_without_current_vmcs_fails_invalid() {
    let mut h = Harness::new();
    assert_eq!(h.vmxon(VMXON_REGION), SUCCEED);
    assert_eq!(h.vmlaunch(), FAIL_INVALID);
    assert_eq!(h.vmresume(), FAIL_INVALID);
}

#[test]
fn vmlaunch_of_launched_vmcs_fails_with_4() {
    let mut h = baseline_harness();
    assert_eq!(h.vmlaunch(), Emulation::VmEntry { launch: true });
    let rip = h.cpu.rip;
    assert_eq!(
        h.vmlaunch(),
        fail_valid(VmInstructionError::VmlaunchNonClearVmcs)
    );
    assert_status(
        &h,
        rip,
        VmxStatus::FailValid(VmInstructionError::VmlaunchNonClearVmcs),
    );
}

#[test]
fn vmresume_of_clear_vmcs_fails_with_5() {
    let mut h = baseline_harness();
    assert_eq!(
        h.vmresume(),
        fail_valid(VmInstructionError::VmresumeNonLaunchedVmcs)
    );
    assert_eq!(h.instruction_error(), 5);
}

#[test]
fn vm_entry_under_mov_ss_blocking_fails_with_26() {
    let mut h = baseline_harness();
    let result = h.vmx.emulate_with_interruptibility(
        &mut h.cpu,
        &mut h.memory,
        &exit(ExitReason::Vmlaunch, VmxInstructionInfo::from_raw(0), 0),
        Interruptibility::BLOCKING_BY_MOV_SS,
    );
    assert_eq!(
        result,
        fail_valid(VmInstructionError::EntryEventsBlockedByMovSs)
    );
    assert_eq!(h.instruction_error(), 26);
    // Blocking by STI does not prevent VM entry.
    let result = h.vmx.emulate_with_interruptibility(
        &mut h.cpu,
        &mut h.memory,
        &exit(ExitReason::Vmlaunch, VmxInstructionInfo::from_raw(0), 0),
        Interruptibility::BLOCKING_BY_STI,
    );
    assert_eq!(result, Emulation::VmEntry { launch: true });
}

#[test]
fn invalid_control_fields_fail_with_7() {
    let mut h = baseline_harness();
    // Pin-based controls 0: the default1 bits 1, 2, 4 are required.
    assert_eq!(
        h.vmwrite(u64::from(VmcsField::PinBasedControls.encoding()), 0),
        SUCCEED
    );
    assert_eq!(
        h.vmlaunch(),
        fail_valid(VmInstructionError::EntryInvalidControlFields)
    );
    assert_eq!(h.instruction_error(), 7);
    assert_eq!(
        h.vmx.current_vmcs().map(CurrentVmcs::launch_state),
        Some(LaunchState::Clear)
    );
}

#[test]
fn controls_hv_does_not_advertise_fail_with_7() {
    let mut h = baseline_harness();
    // Posted interrupts (pin-based bit 7): the real engine has it, hv does
    // not advertise it.
    let pin = u64::from(VmcsField::PinBasedControls.encoding());
    let (_, value) = h.vmread(pin);
    assert_eq!(h.vmwrite(pin, value | (1 << 7)), SUCCEED);
    assert_eq!(
        h.vmlaunch(),
        fail_valid(VmInstructionError::EntryInvalidControlFields)
    );
}

#[test]
fn invalid_host_state_fails_with_8() {
    let mut h = baseline_harness();
    assert_eq!(
        h.vmwrite(u64::from(VmcsField::HostCr0.encoding()), 0),
        SUCCEED
    );
    assert_eq!(
        h.vmlaunch(),
        fail_valid(VmInstructionError::EntryInvalidHostStateFields)
    );
    assert_eq!(h.instruction_error(), 8);
}

#[test]
fn invalid_guest_state_is_an_entry_failure_exit() {
    let mut h = baseline_harness();
    // RFLAGS bit 1 must be 1 (SDM 27.3.1.4): qualification 0.
    assert_eq!(
        h.vmwrite(u64::from(VmcsField::GuestRflags.encoding()), 0),
        SUCCEED
    );
    let rip = h.cpu.rip;
    match h.vmlaunch() {
        Emulation::EntryFailure { qualification, .. } => assert_eq!(qualification, 0),
        other => panic!("expected an entry failure, got {other:?}"),
    }
    assert_eq!(h.cpu.rip, rip, "RIP is the reflection's business");
    assert_eq!(
        h.vmx.current_vmcs().map(CurrentVmcs::launch_state),
        Some(LaunchState::Clear),
        "a failed VMLAUNCH does not launch"
    );
    // A misaligned VMCS link pointer: qualification 4 (SDM 27.8).
    assert_eq!(
        h.vmwrite(u64::from(VmcsField::GuestRflags.encoding()), 2),
        SUCCEED
    );
    assert_eq!(
        h.vmwrite(u64::from(VmcsField::VmcsLinkPointer.encoding()), 0x1001),
        SUCCEED
    );
    match h.vmlaunch() {
        Emulation::EntryFailure { qualification, .. } => assert_eq!(qualification, 4),
        other => panic!("expected an entry failure, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// 8. INVEPT and INVVPID (SDM 31.3 INVEPT, INVVPID).
// ---------------------------------------------------------------------------

#[test]
fn invept_valid_operands_are_returned_to_the_caller() {
    let mut h = Harness::ready();
    let eptp = hv_arch_vmx::checks::baseline::eptp(h.vmx.capabilities().capabilities());
    let rip = h.cpu.rip;
    match h.invalidation(ExitReason::Invept, 1, [eptp, 0xffff]) {
        Emulation::Invept { kind, eptp: got } => {
            assert_eq!(kind, InveptType::SingleContext);
            assert_eq!(got.raw(), eptp);
        }
        other => panic!("expected INVEPT, got {other:?}"),
    }
    assert_status(&h, rip, VmxStatus::Succeed);
    // Global: the descriptor is ignored.
    assert!(matches!(
        h.invalidation(ExitReason::Invept, 2, [u64::MAX, u64::MAX]),
        Emulation::Invept {
            kind: InveptType::Global,
            ..
        }
    ));
}

#[test]
fn invept_invalid_operands_fail_with_28() {
    let mut h = Harness::ready();
    let eptp = hv_arch_vmx::checks::baseline::eptp(h.vmx.capabilities().capabilities());
    // Types 0, 3 and a value above 32 bits are not INVEPT types.
    for kind in [0, 3, 1 << 32 | 1] {
        assert_eq!(
            h.invalidation(ExitReason::Invept, kind, [eptp, 0]),
            fail_valid(VmInstructionError::InvalidInveptInvvpidOperand),
            "type {kind:#x}"
        );
    }
    // Single-context with an EPTP VM entry would refuse (UC not advertised,
    // 5-level walk not advertised).
    for bad in [eptp & !7, (eptp & !0x38) | (4 << 3)] {
        assert_eq!(
            h.invalidation(ExitReason::Invept, 1, [bad, 0]),
            fail_valid(VmInstructionError::InvalidInveptInvvpidOperand)
        );
    }
    assert_eq!(h.instruction_error(), 28);
    // Without a current VMCS: VMfailInvalid.
    let mut h = Harness::new();
    assert_eq!(h.vmxon(VMXON_REGION), SUCCEED);
    assert_eq!(h.invalidation(ExitReason::Invept, 0, [0, 0]), FAIL_INVALID);
}

#[test]
fn invept_outside_64_bit_mode_uses_32_bit_type() {
    let mut h = Harness::ready();
    h.cpu = protected_mode_cpu();
    assert!(matches!(
        h.invalidation(ExitReason::Invept, 0xffff_ffff_0000_0002, [0, 0]),
        Emulation::Invept {
            kind: InveptType::Global,
            ..
        }
    ));
}

#[test]
fn invept_without_advertised_ept_is_undefined() {
    let mut raw = VmxCapabilities::BOCHS_SKYLAKE_X_RAW;
    raw.procbased_ctls2 &= !(1 << 33);
    let mut h = Harness::new();
    h.vmx = NestedVmx::new(
        VirtualCapabilities::derive(&VmxCapabilities::from_raw(&raw)),
        config(),
    );
    assert_eq!(h.vmxon(VMXON_REGION), SUCCEED);
    assert_eq!(
        h.invalidation(ExitReason::Invept, 2, [0, 0]),
        Emulation::Fault(Fault::InvalidOpcode)
    );
}

#[test]
fn invvpid_valid_operands_are_returned_to_the_caller() {
    let mut h = Harness::ready();
    let cases = [
        (
            0,
            [7, 0xffff_8000_0000_1000],
            InvvpidType::IndividualAddress,
        ),
        (1, [7, 0x0000_8000_0000_0000], InvvpidType::SingleContext),
        (2, [0, 0], InvvpidType::AllContext),
        (3, [7, 0], InvvpidType::SingleContextRetainingGlobals),
    ];
    for (raw, descriptor, expected) in cases {
        let rip = h.cpu.rip;
        assert_eq!(
            h.invalidation(ExitReason::Invvpid, raw, descriptor),
            Emulation::Invvpid {
                kind: expected,
                vpid: descriptor[0] as u16,
                linear_address: descriptor[1],
            }
        );
        assert_status(&h, rip, VmxStatus::Succeed);
    }
}

#[test]
fn invvpid_invalid_operands_fail_with_28() {
    let mut h = Harness::ready();
    let cases: [(u64, [u64; 2]); 6] = [
        (4, [7, 0]),                     // not a type
        (1, [7 | (1 << 16), 0]),         // reserved bits 63:16
        (0, [0, 0x1000]),                // VPID 0, individual address
        (1, [0, 0]),                     // VPID 0, single context
        (3, [0, 0]),                     // VPID 0, retaining globals
        (0, [7, 0x0000_8000_0000_0000]), // non-canonical address
    ];
    for (kind, descriptor) in cases {
        assert_eq!(
            h.invalidation(ExitReason::Invvpid, kind, descriptor),
            fail_valid(VmInstructionError::InvalidInveptInvvpidOperand),
            "type {kind}, descriptor {descriptor:x?}"
        );
        assert_eq!(h.instruction_error(), 28);
    }
    let mut h = Harness::new();
    assert_eq!(h.vmxon(VMXON_REGION), SUCCEED);
    assert_eq!(h.invalidation(ExitReason::Invvpid, 1, [0, 0]), FAIL_INVALID);
}

#[test]
fn invvpid_descriptor_page_fault() {
    let mut h = Harness::ready();
    h.memory.faulting.push(DESCRIPTOR >> 12);
    assert_eq!(
        h.invalidation(ExitReason::Invvpid, 1, [7, 0]),
        Emulation::Fault(Fault::PageFault(PageFault {
            address: DESCRIPTOR,
            error_code: 0
        }))
    );
    // An unsupported type fails before the descriptor is read.
    assert_eq!(
        h.invalidation(ExitReason::Invvpid, 9, [7, 0]),
        fail_valid(VmInstructionError::InvalidInveptInvvpidOperand)
    );
}

// ---------------------------------------------------------------------------
// 9. VMXOFF and VMCALL (SDM 31.3 VMXOFF, VMCALL).
// ---------------------------------------------------------------------------

#[test]
fn vmxoff_leaves_vmx_operation_and_writes_back() {
    let mut h = Harness::ready();
    assert_eq!(
        h.vmwrite(u64::from(VmcsField::GuestRsp.encoding()), 0x5555),
        SUCCEED
    );
    let rip = h.cpu.rip;
    assert_eq!(
        h.run(&exit(
            ExitReason::Vmxoff,
            VmxInstructionInfo::from_raw(0),
            0
        )),
        SUCCEED
    );
    assert_status(&h, rip, VmxStatus::Succeed);
    assert_eq!(h.vmx.operation(), VmxOperation::Outside);
    assert!(h.vmx.current_vmcs().is_none());
    assert_eq!(
        h.memory
            .get_u64(VMCS_A + vmcs12::field_offset(VmcsField::GuestRsp) as u64),
        0x5555
    );
    assert_eq!(
        h.vmread(u64::from(VmcsField::GuestRsp.encoding())).0,
        Emulation::Fault(Fault::InvalidOpcode)
    );
    // VMXON again: no current VMCS.
    assert_eq!(h.vmxon(VMXON_REGION), SUCCEED);
    assert_eq!(h.vmptrst(), (SUCCEED, u64::MAX));
}

#[test]
fn vmcall_outside_vmx_operation_is_a_hypercall() {
    // L1 runs in L0's VMX non-root operation, where VMCALL exits (SDM 31.3
    // VMCALL): a hypercall even before L1's own VMXON.
    let mut h = Harness::new();
    let rip = h.cpu.rip;
    assert_eq!(
        h.run(&exit(
            ExitReason::Vmcall,
            VmxInstructionInfo::from_raw(0),
            0
        )),
        Emulation::Vmcall
    );
    assert_eq!(h.cpu.rip, rip + u64::from(LENGTH));
}

#[test]
fn vmcall_in_vmx_root_is_a_hypercall() {
    let mut h = Harness::ready();
    let rip = h.cpu.rip;
    assert_eq!(
        h.run(&exit(
            ExitReason::Vmcall,
            VmxInstructionInfo::from_raw(0),
            0
        )),
        Emulation::Vmcall
    );
    assert_eq!(h.cpu.rip, rip + u64::from(LENGTH));
    assert_eq!(h.cpu.rflags, DIRTY_RFLAGS & !(1 << 16), "only RF cleared");
}

// ---------------------------------------------------------------------------
// 10. Malformed exits.
// ---------------------------------------------------------------------------

#[test]
fn malformed_exits_are_reported_not_emulated() {
    let mut h = Harness::ready();
    let mut bad_length = exit(ExitReason::Vmptrst, rbx_operand(), 0);
    bad_length.instruction_length = 0;
    assert_eq!(
        h.run(&bad_length),
        Emulation::InvalidExitInformation(ExitInformationError::InstructionLength(0))
    );
    // Address size 3 is reserved.
    let reserved = exit(
        ExitReason::Vmptrst,
        VmxInstructionInfo::from_raw(rbx_operand().raw() | (3 << 7)),
        0,
    );
    assert!(matches!(
        h.run(&reserved),
        Emulation::InvalidExitInformation(ExitInformationError::InstructionInfo(_))
    ));
    assert_eq!(
        h.run(&exit(ExitReason::Cpuid, rbx_operand(), 0)),
        Emulation::NotVmxInstruction(ExitReason::Cpuid)
    );
}

// ---------------------------------------------------------------------------
// 11. Nothing panics.
// ---------------------------------------------------------------------------

/// The VMX exit reasons except VMXOFF (26).
const VMX_REASONS: [u16; 11] = [18, 19, 20, 21, 22, 23, 24, 25, 27, 50, 53];

fn arbitrary_segment() -> impl Strategy<Value = Segment> {
    (
        any::<u16>(),
        prop_oneof![Just(0_u64), any::<u64>()],
        prop_oneof![Just(0xffff_ffff_u32), any::<u32>()],
        prop_oneof![Just(0xc093_u32), Just(0xa09b), any::<u32>()],
    )
        .prop_map(|(selector, base, limit, access_rights)| Segment {
            selector,
            base,
            limit,
            access_rights,
        })
}

fn arbitrary_cpu() -> impl Strategy<Value = L1Cpu> {
    (
        proptest::array::uniform16(prop_oneof![0x0_u64..0x2_0000, any::<u64>()]),
        any::<u64>(),
        prop_oneof![Just(0x2_u64), any::<u64>()],
        prop_oneof![Just(0x8005_0033_u64), any::<u64>()],
        prop_oneof![Just(0x2020_u64), any::<u64>()],
        prop_oneof![Just(0x500_u64), any::<u64>()],
        proptest::array::uniform6(arbitrary_segment()),
        proptest::bool::weighted(0.75),
    )
        .prop_map(|(gprs, rip, rflags, cr0, cr4, efer, segments, sane)| {
            let mut cpu = L1Cpu {
                gprs: hv_core::state::Gprs(gprs),
                rip,
                rflags,
                cr0,
                cr3: 0,
                cr4,
                efer,
                cs: segments[0],
                ss: segments[1],
                ds: segments[2],
                es: segments[3],
                fs: segments[4],
                gs: segments[5],
            };
            if sane {
                // Mostly a valid 64-bit CPL-0 state, to get past the
                // mode checks.
                cpu = L1Cpu {
                    gprs: cpu.gprs,
                    ..long_mode_cpu()
                };
            }
            cpu
        })
}

fn arbitrary_exit() -> impl Strategy<Value = Exit> {
    (
        prop_oneof![
            // VMXOFF (26) is rare so that sequences stay in VMX operation.
            20 => proptest::sample::select(VMX_REASONS.to_vec()),
            1 => Just(26),
            2 => any::<u16>(),
        ],
        prop_oneof![Just(0_u64), 0_u64..0x100, any::<u64>()],
        prop_oneof![9 => Just(LENGTH), 1 => any::<u32>()],
        prop_oneof![
            2 => Just(rbx_operand().with_reg2(Gpr::Rax).raw()),
            2 => Just(
                VmxInstructionInfo::from_register_operand(Gpr::Rcx)
                    .with_reg2(Gpr::Rax)
                    .raw()
            ),
            1 => any::<u32>(),
        ],
    )
        .prop_map(
            |(reason, qualification, instruction_length, instruction_info)| Exit {
                reason: hv_arch_vmx::exit::ExitReasonWord::from_raw(u32::from(reason)),
                qualification,
                instruction_length,
                instruction_info,
                ..Exit::default()
            },
        )
}

/// L1 memory filled from `seed` by xorshift, with hv's revision identifier
/// at the start of some pages so VMPTRLD of garbage VMCS12s succeeds.
fn seeded_memory(seed: u64, faulting: Vec<u64>) -> Memory {
    let mut memory = Memory::new();
    let mut state = seed | 1;
    for chunk in memory.bytes.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Half the words are page-aligned addresses inside L1 memory, so
        // pointer operands often name a region.
        let word = if state & 1 == 0 {
            state & 0x1_f000
        } else {
            state
        };
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
    for page in (0..MEMORY_SIZE as u64).step_by(4096) {
        if (page >> 12) % 3 == 0 {
            memory.put_u32(page, HV_VMCS_REVISION_ID);
        }
    }
    memory.faulting = faulting;
    memory
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_exits_cpu_states_and_memory_never_panic(
        start_ready in proptest::bool::weighted(0.75),
        seed in any::<u64>(),
        faulting in proptest::collection::vec(0_u64..0x20, 0..4),
        steps in proptest::collection::vec(
            (
                arbitrary_exit(),
                arbitrary_cpu(),
                prop_oneof![4 => Just(0_u32), 1 => any::<u32>()],
            ),
            1..24,
        ),
    ) {
        let mut h = if start_ready { Harness::ready() } else { Harness::new() };
        h.memory = seeded_memory(seed, faulting);
        for (exit, cpu, interruptibility) in steps {
            h.cpu = cpu;
            let before = h.cpu;
            let result = h.vmx.emulate_with_interruptibility(
                &mut h.cpu,
                &mut h.memory,
                &exit,
                Interruptibility::from_raw(interruptibility),
            );
            // Outcomes that must leave L1's registers alone do.
            if matches!(
                result,
                Emulation::Fault(_)
                    | Emulation::OperandNotInL1Memory(_)
                    | Emulation::InvalidExitInformation(_)
                    | Emulation::NotVmxInstruction(_)
                    | Emulation::VmEntry { .. }
                    | Emulation::EntryFailure { .. }
            ) {
                prop_assert_eq!(h.cpu, before);
            }
            // A current VMCS only exists in VMX operation.
            if h.vmx.operation() == VmxOperation::Outside {
                prop_assert!(h.vmx.current_vmcs().is_none());
            }
        }
    }
}
