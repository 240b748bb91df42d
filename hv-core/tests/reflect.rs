//! Scenario tests for L2-exit reflection: one per decision rule of SDM
//! 26.1-26.3, and delivery of exits and entry failures to L1 (SDM 27.8,
//! 28.2-28.7).

use std::collections::BTreeMap;

use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::checks::GuestCheck;
use hv_arch_vmx::checks::baseline::{self, long_mode_guest};
use hv_arch_vmx::controls::{
    ControlWord, EntryControls, ExceptionVector, ExitControls, PinBasedControls,
    PrimaryProcControls as P, SecondaryProcControls as S, TertiaryProcControls,
};
use hv_arch_vmx::exit::{
    ControlRegisterAccessQualification, ExitReason as R, ExitReasonWord, Gpr, IoAccessSize,
    IoDirection, IoQualification, LmswOperandType, ReservedIoAccessSize,
};
use hv_arch_vmx::interruption::{InterruptionInfo, InterruptionType};
use hv_arch_vmx::vmcs::{VmcsField as F, VmcsImage};
use hv_core::reflect::{
    Decision, DeliveryError, EntryFailure, L0Reason, L1SystemRegisters, L2Context, L2Exited,
    MsrAccess, MsrAreaFault, MsrFault, ReflectError, VmxAbort, deliver_entry_failure,
    deliver_exit_to_l1, l1_wants_exit,
};
use hv_core::state::{Exit, Gprs, L1Access, L1Cpu, PageFault, Segment};
use hv_mmu::addr::L1Gpa;
use hv_mmu::env::NotL1Memory;
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Test doubles.

/// L1 memory: `bytes.len()` bytes from address 0, identity-translated.
#[derive(Clone, Debug)]
struct Memory {
    bytes: Vec<u8>,
}

impl Memory {
    const SIZE: usize = 0x10_0000;

    fn new() -> Self {
        Self {
            bytes: vec![0; Self::SIZE],
        }
    }

    fn range(&self, gpa: L1Gpa, len: usize) -> Result<std::ops::Range<usize>, NotL1Memory> {
        let start = usize::try_from(gpa.raw()).map_err(|_| NotL1Memory { gpa })?;
        match start.checked_add(len) {
            Some(end) if end <= self.bytes.len() => Ok(start..end),
            _ => Err(NotL1Memory { gpa }),
        }
    }

    fn set_bit(&mut self, base: u64, bit: u64) {
        self.bytes[(base + bit / 8) as usize] |= 1 << (bit % 8);
    }

    fn write_u64(&mut self, address: u64, value: u64) {
        self.write_bytes(L1Gpa::new(address), &value.to_le_bytes())
            .unwrap();
    }

    fn read_u64(&self, address: u64) -> u64 {
        let mut bytes = [0; 8];
        self.read_bytes(L1Gpa::new(address), &mut bytes).unwrap();
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

    fn translate(&self, _cpu: &L1Cpu, linear: u64, _write: bool) -> Result<L1Gpa, PageFault> {
        Ok(L1Gpa::new(linear))
    }
}

/// MSRs: current values (what RDMSR returns), a log of writes, and MSRs
/// whose access faults.
#[derive(Clone, Debug, Default)]
struct Msrs {
    values: BTreeMap<u32, u64>,
    writes: Vec<(u32, u64)>,
    faulting: Vec<u32>,
}

impl MsrAccess for Msrs {
    fn read_msr(&mut self, index: u32) -> Result<u64, MsrFault> {
        if self.faulting.contains(&index) {
            return Err(MsrFault { index });
        }
        Ok(self.values.get(&index).copied().unwrap_or(0))
    }

    fn write_msr(&mut self, index: u32, value: u64) -> Result<(), MsrFault> {
        if self.faulting.contains(&index) {
            return Err(MsrFault { index });
        }
        self.writes.push((index, value));
        self.values.insert(index, value);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Decision helpers.

const REFLECT: Decision = Decision::ReflectToL1;
const NOT_REQUESTED: Decision = Decision::HandleInL0(L0Reason::NotRequested);
const DISABLED: Decision = Decision::HandleInL0(L0Reason::DisabledForL2);
const L0_FEATURE: Decision = Decision::HandleInL0(L0Reason::L0Feature);

const IO_A: u64 = 0x1_0000;
const IO_B: u64 = 0x1_1000;
const MSR_BITMAP: u64 = 0x1_2000;

/// A VMCS12 with these execution controls (secondary activated when any
/// secondary bit is wanted) and bitmaps at `IO_A`, `IO_B`, `MSR_BITMAP`.
fn vmcs(primary: P, secondary: S) -> VmcsImage {
    let primary = if secondary.is_empty() {
        primary
    } else {
        primary | P::ACTIVATE_SECONDARY_CONTROLS
    };
    VmcsImage::new()
        .with(F::PrimaryProcBasedControls, primary.to_raw())
        .with(F::SecondaryProcBasedControls, secondary.to_raw())
        .with(F::IoBitmapA, IO_A)
        .with(F::IoBitmapB, IO_B)
        .with(F::MsrBitmap, MSR_BITMAP)
}

/// L2 in 64-bit mode with the given registers.
fn l2_64bit(gprs: Gprs) -> L2Context {
    L2Context {
        gprs,
        efer: 0x500,
        cs_access_rights: 0xa09b,
        ..L2Context::default()
    }
}

fn decide_with(vmcs12: &VmcsImage, exit: &Exit, l2: &L2Context, memory: &Memory) -> Decision {
    l1_wants_exit(vmcs12, exit, l2, memory).expect("well-formed exit")
}

fn decide(vmcs12: &VmcsImage, exit: &Exit) -> Decision {
    decide_with(vmcs12, exit, &l2_64bit(Gprs::default()), &Memory::new())
}

fn exit(reason: R) -> Exit {
    Exit::new(reason)
}

fn exit_with_qualification(reason: R, qualification: u64) -> Exit {
    Exit {
        qualification,
        ..Exit::new(reason)
    }
}

fn gprs_with(index: u8, value: u64) -> Gprs {
    let mut gprs = Gprs::default();
    gprs.set(index, value);
    gprs
}

// ---------------------------------------------------------------------------
// Unconditional exits and single-control rules.

#[test]
fn unconditional_exits_always_reflect() {
    let empty = VmcsImage::new();
    for reason in [
        R::TripleFault,
        R::InitSignal,
        R::StartupIpi,
        R::TaskSwitch,
        R::Cpuid,
        R::Getsec,
        R::Invd,
        R::Xsetbv,
        R::Vmcall,
        R::Vmclear,
        R::Vmlaunch,
        R::Vmptrld,
        R::Vmptrst,
        R::Vmread,
        R::Vmresume,
        R::Vmwrite,
        R::Vmxoff,
        R::Vmxon,
        R::Invept,
        R::Invvpid,
    ] {
        assert_eq!(decide(&empty, &exit(reason)), REFLECT, "{reason}");
    }
}

#[test]
fn primary_exiting_controls_decide_their_exits() {
    let rules = [
        (R::Hlt, P::HLT_EXITING),
        (R::Invlpg, P::INVLPG_EXITING),
        (R::Rdpmc, P::RDPMC_EXITING),
        (R::Rdtsc, P::RDTSC_EXITING),
        (R::Mwait, P::MWAIT_EXITING),
        (R::Monitor, P::MONITOR_EXITING),
        (R::MovDr, P::MOV_DR_EXITING),
        (R::MonitorTrapFlag, P::MONITOR_TRAP_FLAG),
        (R::InterruptWindow, P::INTERRUPT_WINDOW_EXITING),
        (R::NmiWindow, P::NMI_WINDOW_EXITING),
    ];
    for (reason, control) in rules {
        assert_eq!(
            decide(&vmcs(control, S::empty()), &exit(reason)),
            REFLECT,
            "{reason} on"
        );
        // Every other primary control set: only this one matters.
        let others = P::all().difference(control);
        assert_eq!(
            decide(&vmcs(others, S::empty()), &exit(reason)),
            NOT_REQUESTED,
            "{reason} off"
        );
    }
}

#[test]
fn secondary_exiting_controls_decide_their_exits() {
    let rules = [
        (R::WbinvdOrWbnoinvd, S::WBINVD_EXITING),
        (R::Rdrand, S::RDRAND_EXITING),
        (R::Rdseed, S::RDSEED_EXITING),
        (R::GdtrIdtrAccess, S::DESCRIPTOR_TABLE_EXITING),
        (R::LdtrTrAccess, S::DESCRIPTOR_TABLE_EXITING),
        (R::ApicAccess, S::VIRTUALIZE_APIC_ACCESSES),
        (R::PmlFull, S::ENABLE_PML),
        (R::SppRelatedEvent, S::SUB_PAGE_WRITE_PERMISSIONS_FOR_EPT),
        (R::EnqcmdPasidTranslationFailure, S::PASID_TRANSLATION),
        (R::BusLock, S::VMM_BUS_LOCK_DETECTION),
        (R::InstructionTimeout, S::INSTRUCTION_TIMEOUT),
    ];
    for (reason, control) in rules {
        assert_eq!(
            decide(&vmcs(P::empty(), control), &exit(reason)),
            REFLECT,
            "{reason} on"
        );
        let others = S::all().difference(control);
        assert_eq!(
            decide(&vmcs(P::empty(), others), &exit(reason)),
            NOT_REQUESTED,
            "{reason} off"
        );
    }
}

#[test]
fn secondary_controls_count_as_zero_without_activate_secondary_controls() {
    let vmcs12 = VmcsImage::new()
        .with(F::PrimaryProcBasedControls, 0)
        .with(F::SecondaryProcBasedControls, S::all().to_raw());
    assert_eq!(decide(&vmcs12, &exit(R::WbinvdOrWbnoinvd)), NOT_REQUESTED);
    assert_eq!(decide(&vmcs12, &exit(R::Rdrand)), NOT_REQUESTED);
}

#[test]
fn rdtscp_needs_enable_rdtscp_and_rdtsc_exiting() {
    let rdtscp = exit(R::Rdtscp);
    assert_eq!(
        decide(&vmcs(P::RDTSC_EXITING, S::ENABLE_RDTSCP), &rdtscp),
        REFLECT
    );
    assert_eq!(
        decide(&vmcs(P::empty(), S::ENABLE_RDTSCP), &rdtscp),
        NOT_REQUESTED
    );
    assert_eq!(
        decide(&vmcs(P::RDTSC_EXITING, S::empty()), &rdtscp),
        DISABLED
    );
}

#[test]
fn invpcid_needs_enable_invpcid_and_invlpg_exiting() {
    let invpcid = exit(R::Invpcid);
    assert_eq!(
        decide(&vmcs(P::INVLPG_EXITING, S::ENABLE_INVPCID), &invpcid),
        REFLECT
    );
    assert_eq!(
        decide(&vmcs(P::empty(), S::ENABLE_INVPCID), &invpcid),
        NOT_REQUESTED
    );
    assert_eq!(
        decide(&vmcs(P::INVLPG_EXITING, S::empty()), &invpcid),
        DISABLED
    );
}

#[test]
fn umwait_and_tpause_follow_rdtsc_exiting() {
    for reason in [R::Umwait, R::Tpause] {
        let enabled = S::ENABLE_USER_WAIT_AND_PAUSE;
        assert_eq!(
            decide(&vmcs(P::RDTSC_EXITING, enabled), &exit(reason)),
            REFLECT
        );
        assert_eq!(
            decide(&vmcs(P::empty(), enabled), &exit(reason)),
            NOT_REQUESTED
        );
        assert_eq!(
            decide(&vmcs(P::RDTSC_EXITING, S::empty()), &exit(reason)),
            DISABLED
        );
    }
}

#[test]
fn pause_exiting_reflects_and_pause_loop_exiting_stays_in_l0() {
    let pause = exit(R::Pause);
    assert_eq!(decide(&vmcs(P::PAUSE_EXITING, S::empty()), &pause), REFLECT);
    assert_eq!(
        decide(&vmcs(P::empty(), S::PAUSE_LOOP_EXITING), &pause),
        L0_FEATURE
    );
    assert_eq!(decide(&vmcs(P::empty(), S::empty()), &pause), L0_FEATURE);
}

#[test]
fn loadiwkey_follows_the_tertiary_control_only_when_activated() {
    let with_tertiary = |activate: bool| {
        let primary = if activate {
            P::ACTIVATE_TERTIARY_CONTROLS
        } else {
            P::empty()
        };
        vmcs(primary, S::empty()).with(
            F::TertiaryProcBasedControls,
            TertiaryProcControls::LOADIWKEY_EXITING.bits(),
        )
    };
    assert_eq!(decide(&with_tertiary(true), &exit(R::Loadiwkey)), REFLECT);
    assert_eq!(
        decide(&with_tertiary(false), &exit(R::Loadiwkey)),
        NOT_REQUESTED
    );
}

#[test]
fn vm_functions_are_emulated_by_l0() {
    let vmfunc = exit(R::Vmfunc);
    assert_eq!(
        decide(&vmcs(P::empty(), S::ENABLE_VM_FUNCTIONS), &vmfunc),
        Decision::HandleInL0(L0Reason::EmulatedByL0)
    );
    assert_eq!(decide(&vmcs(P::empty(), S::empty()), &vmfunc), DISABLED);
}

#[test]
fn smis_rsm_and_entry_failures_stay_in_l0() {
    let everything = vmcs(P::all(), S::all());
    for reason in [R::IoSmi, R::OtherSmi, R::Rsm] {
        assert_eq!(decide(&everything, &exit(reason)), L0_FEATURE);
    }
    let entry_failure = Decision::HandleInL0(L0Reason::EntryFailure);
    for reason in [
        R::EntryFailInvalidGuestState,
        R::EntryFailMsrLoading,
        R::EntryFailMachineCheck,
    ] {
        assert_eq!(decide(&everything, &exit(reason)), entry_failure);
    }
    let flagged = Exit {
        reason: ExitReasonWord::new(R::Cpuid).with_entry_failure(),
        ..Exit::default()
    };
    assert_eq!(decide(&everything, &flagged), entry_failure);
}

#[test]
fn unknown_reasons_stay_in_l0_with_their_number() {
    let everything = vmcs(P::all(), S::all());
    for number in [35, 38, 42, 71, 200, u16::MAX] {
        let unknown = Exit {
            reason: ExitReasonWord::from_raw(u32::from(number)),
            ..Exit::default()
        };
        assert_eq!(
            decide(&everything, &unknown),
            Decision::HandleInL0(L0Reason::UnknownReason(number))
        );
    }
}

// ---------------------------------------------------------------------------
// Events (SDM 26.2).

fn exception_exit(vector: ExceptionVector, error_code: u32) -> Exit {
    Exit {
        interruption_info: InterruptionInfo::hardware_exception(vector),
        interruption_error_code: error_code,
        ..Exit::new(R::ExceptionOrNmi)
    }
}

#[test]
fn exception_bitmap_decides_exceptions() {
    let ud = exception_exit(ExceptionVector::InvalidOpcode, 0);
    let with_bitmap = |bits: u32| VmcsImage::new().with(F::ExceptionBitmap, u64::from(bits));
    assert_eq!(decide(&with_bitmap(1 << 6), &ud), REFLECT);
    assert_eq!(decide(&with_bitmap(!(1 << 6)), &ud), NOT_REQUESTED);

    let int3 = Exit {
        interruption_info: InterruptionInfo::new(3, InterruptionType::SoftwareException),
        ..Exit::new(R::ExceptionOrNmi)
    };
    assert_eq!(decide(&with_bitmap(1 << 3), &int3), REFLECT);
    assert_eq!(decide(&with_bitmap(0), &int3), NOT_REQUESTED);
}

#[test]
fn page_faults_use_the_error_code_mask_and_match() {
    // Mask: P (bit 0) and W/R (bit 1); match: a write to a present page.
    let pf_vmcs = |bit14: bool| {
        VmcsImage::new()
            .with(F::ExceptionBitmap, if bit14 { 1 << 14 } else { 0 })
            .with(F::PageFaultErrorCodeMask, 0b11)
            .with(F::PageFaultErrorCodeMatch, 0b11)
    };
    let matching = exception_exit(ExceptionVector::PageFault, 0b111);
    let other = exception_exit(ExceptionVector::PageFault, 0b101);
    // Match: bit 14 decides.
    assert_eq!(decide(&pf_vmcs(true), &matching), REFLECT);
    assert_eq!(decide(&pf_vmcs(false), &matching), NOT_REQUESTED);
    // No match: the complement of bit 14 decides.
    assert_eq!(decide(&pf_vmcs(true), &other), NOT_REQUESTED);
    assert_eq!(decide(&pf_vmcs(false), &other), REFLECT);
    // Mask 0, match 0 (the usual setting): every #PF matches.
    let plain = VmcsImage::new().with(F::ExceptionBitmap, 1 << 14);
    assert_eq!(decide(&plain, &other), REFLECT);
}

#[test]
fn nmis_follow_nmi_exiting() {
    let nmi = Exit {
        interruption_info: InterruptionInfo::new(2, InterruptionType::Nmi),
        ..Exit::new(R::ExceptionOrNmi)
    };
    let pin = |controls: PinBasedControls| {
        VmcsImage::new()
            .with(F::PinBasedControls, controls.to_raw())
            .with(F::ExceptionBitmap, 1 << 2)
    };
    assert_eq!(decide(&pin(PinBasedControls::NMI_EXITING), &nmi), REFLECT);
    // Bit 2 of the exception bitmap does not make NMIs exit.
    assert_eq!(decide(&pin(PinBasedControls::empty()), &nmi), NOT_REQUESTED);
}

#[test]
fn external_interrupts_follow_external_interrupt_exiting() {
    let pin =
        |controls: PinBasedControls| VmcsImage::new().with(F::PinBasedControls, controls.to_raw());
    let interrupt = exit(R::ExternalInterrupt);
    assert_eq!(
        decide(
            &pin(PinBasedControls::EXTERNAL_INTERRUPT_EXITING),
            &interrupt
        ),
        REFLECT
    );
    assert_eq!(
        decide(&pin(PinBasedControls::NMI_EXITING), &interrupt),
        NOT_REQUESTED
    );
}

#[test]
fn preemption_timer_exits_are_l1s_only_with_its_timer_active() {
    let pin =
        |controls: PinBasedControls| VmcsImage::new().with(F::PinBasedControls, controls.to_raw());
    let expired = exit(R::PreemptionTimerExpired);
    assert_eq!(
        decide(
            &pin(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER),
            &expired
        ),
        REFLECT
    );
    assert_eq!(
        decide(&pin(PinBasedControls::empty()), &expired),
        L0_FEATURE
    );
}

#[test]
fn malformed_exception_exits_are_errors() {
    let memory = Memory::new();
    let l2 = l2_64bit(Gprs::default());
    let no_info = exit(R::ExceptionOrNmi);
    assert_eq!(
        l1_wants_exit(&VmcsImage::new(), &no_info, &l2, &memory),
        Err(ReflectError::MissingInterruptionInfo { info: 0 })
    );
    let interrupt_type = Exit {
        interruption_info: InterruptionInfo::new(0x30, InterruptionType::ExternalInterrupt),
        ..Exit::new(R::ExceptionOrNmi)
    };
    assert!(matches!(
        l1_wants_exit(&VmcsImage::new(), &interrupt_type, &l2, &memory),
        Err(ReflectError::UnexpectedInterruptionType {
            kind: InterruptionType::ExternalInterrupt,
            ..
        })
    ));
}

// ---------------------------------------------------------------------------
// Control-register accesses (SDM 26.1.3).

fn mov_to_cr(cr: u8, value: u64) -> (Exit, L2Context) {
    let exit = exit_with_qualification(
        R::ControlRegisterAccess,
        ControlRegisterAccessQualification::mov_to_cr(cr, Gpr::Rbx).raw(),
    );
    (exit, l2_64bit(gprs_with(3, value)))
}

fn cr_vmcs(mask: F, shadow: F, mask_value: u64, shadow_value: u64) -> VmcsImage {
    VmcsImage::new()
        .with(mask, mask_value)
        .with(shadow, shadow_value)
}

#[test]
fn mov_to_cr0_reflects_iff_a_masked_bit_differs_from_the_shadow() {
    // L1 owns PG (31) and CD (30); the shadow says PG=1, CD=0.
    let vmcs12 = cr_vmcs(
        F::Cr0GuestHostMask,
        F::Cr0ReadShadow,
        0xc000_0000,
        0x8000_0001,
    );
    let memory = Memory::new();
    let cases = [
        (0x8000_0001, NOT_REQUESTED), // same as the shadow
        (0x8000_0033, NOT_REQUESTED), // differs only in bits L1 does not own
        (0x0000_0001, REFLECT),       // clears PG
        (0xc000_0001, REFLECT),       // sets CD
    ];
    for (value, expected) in cases {
        let (exit, l2) = mov_to_cr(0, value);
        assert_eq!(
            decide_with(&vmcs12, &exit, &l2, &memory),
            expected,
            "{value:#x}"
        );
    }
}

#[test]
fn mov_to_cr4_reflects_iff_a_masked_bit_differs_from_the_shadow() {
    // L1 owns VMXE (13); the shadow says 0.
    let vmcs12 = cr_vmcs(F::Cr4GuestHostMask, F::Cr4ReadShadow, 1 << 13, 0x20);
    let memory = Memory::new();
    let (exit, l2) = mov_to_cr(4, 0x20 | (1 << 13));
    assert_eq!(decide_with(&vmcs12, &exit, &l2, &memory), REFLECT);
    let (exit, l2) = mov_to_cr(4, 0x20 | (1 << 7));
    assert_eq!(decide_with(&vmcs12, &exit, &l2, &memory), NOT_REQUESTED);
}

#[test]
fn mov_to_cr_outside_64bit_mode_uses_the_low_32_bits_of_the_source() {
    // L1 owns bit 32 (reserved) of CR0, shadow 0.
    let vmcs12 = cr_vmcs(F::Cr0GuestHostMask, F::Cr0ReadShadow, 1 << 32, 0);
    let memory = Memory::new();
    let (exit, l2) = mov_to_cr(0, 1 << 32);
    assert_eq!(decide_with(&vmcs12, &exit, &l2, &memory), REFLECT);
    let protected_mode = L2Context {
        efer: 0,
        cs_access_rights: 0xc09b,
        ..l2
    };
    assert!(!protected_mode.in_64bit_mode());
    assert_eq!(
        decide_with(&vmcs12, &exit, &protected_mode, &memory),
        NOT_REQUESTED
    );
}

#[test]
fn clts_reflects_iff_ts_is_owned_and_set_in_the_shadow() {
    let clts = exit_with_qualification(
        R::ControlRegisterAccess,
        ControlRegisterAccessQualification::clts().raw(),
    );
    let ts = 1 << 3;
    let cases = [
        (ts, ts, REFLECT),
        (ts, 0, NOT_REQUESTED),
        (0, ts, NOT_REQUESTED),
        (!ts, !0, NOT_REQUESTED),
    ];
    for (mask, shadow, expected) in cases {
        let vmcs12 = cr_vmcs(F::Cr0GuestHostMask, F::Cr0ReadShadow, mask, shadow);
        assert_eq!(
            decide(&vmcs12, &clts),
            expected,
            "mask {mask:#x} shadow {shadow:#x}"
        );
    }
}

#[test]
fn lmsw_follows_the_mask_and_shadow_with_the_pe_special_case() {
    let lmsw = |source: u16| {
        exit_with_qualification(
            R::ControlRegisterAccess,
            ControlRegisterAccessQualification::lmsw(source, LmswOperandType::Register).raw(),
        )
    };
    let pe_owned_shadow_set = cr_vmcs(F::Cr0GuestHostMask, F::Cr0ReadShadow, 0b1, 0b1);
    // LMSW cannot clear PE: writing 0 over a shadow of 1 does not exit.
    assert_eq!(decide(&pe_owned_shadow_set, &lmsw(0)), NOT_REQUESTED);
    let pe_owned_shadow_clear = cr_vmcs(F::Cr0GuestHostMask, F::Cr0ReadShadow, 0b1, 0);
    // Setting PE over a shadow of 0 does.
    assert_eq!(decide(&pe_owned_shadow_clear, &lmsw(1)), REFLECT);
    // MP/EM/TS: any difference in an owned bit exits, in both directions.
    let ts_owned = cr_vmcs(F::Cr0GuestHostMask, F::Cr0ReadShadow, 0b1000, 0b1000);
    assert_eq!(decide(&ts_owned, &lmsw(0)), REFLECT);
    assert_eq!(decide(&ts_owned, &lmsw(0b1000)), NOT_REQUESTED);
    // Bits above 3 are not loaded by LMSW even if owned.
    let high_owned = cr_vmcs(F::Cr0GuestHostMask, F::Cr0ReadShadow, 0xfff0, 0);
    assert_eq!(decide(&high_owned, &lmsw(0xfff0)), NOT_REQUESTED);
}

#[test]
fn mov_to_cr3_exits_unless_the_value_is_one_of_the_first_count_targets() {
    let memory = Memory::new();
    let targets = |count: u64| {
        vmcs(P::CR3_LOAD_EXITING, S::empty())
            .with(F::Cr3TargetCount, count)
            .with(F::Cr3TargetValue0, 0x1000)
            .with(F::Cr3TargetValue1, 0x2000)
            .with(F::Cr3TargetValue2, 0x3000)
            .with(F::Cr3TargetValue3, 0x4000)
    };
    let run = |vmcs12: &VmcsImage, value: u64| {
        let (exit, l2) = mov_to_cr(3, value);
        decide_with(vmcs12, &exit, &l2, &memory)
    };
    assert_eq!(run(&targets(0), 0x1000), REFLECT);
    assert_eq!(run(&targets(2), 0x2000), NOT_REQUESTED);
    assert_eq!(
        run(&targets(2), 0x3000),
        REFLECT,
        "target 2 is beyond the count"
    );
    assert_eq!(run(&targets(2), 0x5000), REFLECT);
    // A count above 4 fails VM entry; it is clamped, never trusted.
    assert_eq!(run(&targets(1000), 0x4000), NOT_REQUESTED);
    assert_eq!(run(&targets(1000), 0x5000), REFLECT);
    // Without CR3-load exiting nothing exits.
    let off = targets(0).with(F::PrimaryProcBasedControls, 0);
    assert_eq!(run(&off, 0x5000), NOT_REQUESTED);
}

#[test]
fn cr3_store_and_cr8_accesses_follow_their_controls() {
    let memory = Memory::new();
    let l2 = l2_64bit(Gprs::default());
    let from = |cr: u8| {
        exit_with_qualification(
            R::ControlRegisterAccess,
            ControlRegisterAccessQualification::mov_from_cr(cr, Gpr::Rax).raw(),
        )
    };
    let (to_cr8, _) = mov_to_cr(8, 0);
    let cases = [
        (from(3), P::CR3_STORE_EXITING),
        (from(8), P::CR8_STORE_EXITING),
        (to_cr8, P::CR8_LOAD_EXITING),
    ];
    for (exit, control) in cases {
        let on = vmcs(control, S::empty());
        let off = vmcs(P::all().difference(control), S::empty());
        assert_eq!(decide_with(&on, &exit, &l2, &memory), REFLECT);
        assert_eq!(decide_with(&off, &exit, &l2, &memory), NOT_REQUESTED);
    }
}

#[test]
fn impossible_control_register_accesses_are_errors() {
    let memory = Memory::new();
    let l2 = l2_64bit(Gprs::default());
    for qualification in [
        ControlRegisterAccessQualification::mov_from_cr(0, Gpr::Rax),
        ControlRegisterAccessQualification::mov_from_cr(4, Gpr::Rax),
        ControlRegisterAccessQualification::mov_to_cr(2, Gpr::Rax),
    ] {
        let exit = exit_with_qualification(R::ControlRegisterAccess, qualification.raw());
        assert_eq!(
            l1_wants_exit(&vmcs(P::all(), S::all()), &exit, &l2, &memory),
            Err(ReflectError::ImpossibleCrAccess {
                qualification: qualification.raw()
            })
        );
    }
}

// ---------------------------------------------------------------------------
// I/O (SDM 26.1.3).

fn io_exit(port: u16, size: IoAccessSize) -> Exit {
    exit_with_qualification(
        R::IoInstruction,
        IoQualification::new(port, size, IoDirection::In).raw(),
    )
}

fn decide_io(vmcs12: &VmcsImage, memory: &Memory, port: u16, size: IoAccessSize) -> Decision {
    decide_with(
        vmcs12,
        &io_exit(port, size),
        &l2_64bit(Gprs::default()),
        memory,
    )
}

#[test]
fn io_without_bitmaps_follows_unconditional_io_exiting() {
    let memory = Memory::new();
    let unconditional = vmcs(P::UNCONDITIONAL_IO_EXITING, S::empty());
    assert_eq!(
        decide_io(&unconditional, &memory, 0x60, IoAccessSize::Byte),
        REFLECT
    );
    let none = vmcs(P::empty(), S::empty());
    assert_eq!(
        decide_io(&none, &memory, 0x60, IoAccessSize::Byte),
        NOT_REQUESTED
    );
}

#[test]
fn io_bitmaps_a_and_b_decide_each_port() {
    let mut memory = Memory::new();
    memory.set_bit(IO_A, 0x60);
    let bitmaps = vmcs(P::USE_IO_BITMAPS, S::empty());
    assert_eq!(
        decide_io(&bitmaps, &memory, 0x60, IoAccessSize::Byte),
        REFLECT
    );
    assert_eq!(
        decide_io(&bitmaps, &memory, 0x61, IoAccessSize::Byte),
        NOT_REQUESTED
    );
    assert_eq!(
        decide_io(&bitmaps, &memory, 0x5f, IoAccessSize::Word),
        REFLECT
    );
    assert_eq!(
        decide_io(&bitmaps, &memory, 0x8cf8, IoAccessSize::Byte),
        NOT_REQUESTED
    );
    memory.set_bit(IO_B, 0x0cf8);
    assert_eq!(
        decide_io(&bitmaps, &memory, 0x8cf8, IoAccessSize::Byte),
        REFLECT
    );
    // The same bit position in bitmap A stands for port 0xcf8, not 0x8cf8.
    assert_eq!(
        decide_io(&bitmaps, &memory, 0x0cf8, IoAccessSize::Byte),
        NOT_REQUESTED
    );
}

#[test]
fn multi_byte_io_crossing_into_bitmap_b_checks_both_bitmaps() {
    let mut memory = Memory::new();
    let bitmaps = vmcs(P::USE_IO_BITMAPS, S::empty());
    // Ports 0x7ffe..=0x8001: all clear.
    assert_eq!(
        decide_io(&bitmaps, &memory, 0x7ffe, IoAccessSize::Dword),
        NOT_REQUESTED
    );
    // Port 0x8001 is bit 1 of bitmap B.
    memory.set_bit(IO_B, 1);
    assert_eq!(
        decide_io(&bitmaps, &memory, 0x7ffe, IoAccessSize::Dword),
        REFLECT
    );
    assert_eq!(
        decide_io(&bitmaps, &memory, 0x7fff, IoAccessSize::Word),
        NOT_REQUESTED
    );
    assert_eq!(
        decide_io(&bitmaps, &memory, 0x8000, IoAccessSize::Word),
        REFLECT
    );
}

#[test]
fn io_wrapping_past_port_ffff_always_exits() {
    let memory = Memory::new();
    let bitmaps = vmcs(P::USE_IO_BITMAPS, S::empty());
    assert_eq!(
        decide_io(&bitmaps, &memory, 0xfffe, IoAccessSize::Word),
        NOT_REQUESTED
    );
    assert_eq!(
        decide_io(&bitmaps, &memory, 0xffff, IoAccessSize::Word),
        REFLECT
    );
    assert_eq!(
        decide_io(&bitmaps, &memory, 0xfffd, IoAccessSize::Dword),
        REFLECT
    );
}

#[test]
fn io_bitmaps_override_unconditional_io_exiting() {
    let memory = Memory::new();
    let both = vmcs(P::USE_IO_BITMAPS | P::UNCONDITIONAL_IO_EXITING, S::empty());
    assert_eq!(
        decide_io(&both, &memory, 0x60, IoAccessSize::Byte),
        NOT_REQUESTED
    );
}

#[test]
fn io_bitmap_outside_l1_memory_exits() {
    let memory = Memory::new();
    let bitmaps = vmcs(P::USE_IO_BITMAPS, S::empty())
        .with(F::IoBitmapA, 0xfff0_0000)
        .with(F::IoBitmapB, u64::MAX - 0xfff);
    assert_eq!(
        decide_io(&bitmaps, &memory, 0x60, IoAccessSize::Byte),
        REFLECT
    );
    // Bitmap B's address overflows when the port offset is added.
    assert_eq!(
        decide_io(&bitmaps, &memory, 0xffff, IoAccessSize::Byte),
        REFLECT
    );
}

#[test]
fn io_reserved_size_encoding_is_an_error() {
    let exit = exit_with_qualification(R::IoInstruction, 2);
    assert_eq!(
        l1_wants_exit(
            &vmcs(P::USE_IO_BITMAPS, S::empty()),
            &exit,
            &l2_64bit(Gprs::default()),
            &Memory::new()
        ),
        Err(ReflectError::IoSize(ReservedIoAccessSize(2)))
    );
}

// ---------------------------------------------------------------------------
// MSRs (SDM 26.1.3, 25.6.9).

fn decide_msr(vmcs12: &VmcsImage, memory: &Memory, reason: R, rcx: u64) -> Decision {
    decide_with(vmcs12, &exit(reason), &l2_64bit(gprs_with(1, rcx)), memory)
}

#[test]
fn msr_accesses_without_bitmaps_always_exit() {
    let memory = Memory::new();
    let none = vmcs(P::empty(), S::empty());
    assert_eq!(decide_msr(&none, &memory, R::Rdmsr, 0x10), REFLECT);
    assert_eq!(decide_msr(&none, &memory, R::Wrmsr, 0x10), REFLECT);
}

#[test]
fn msr_bitmaps_have_read_low_read_high_write_low_write_high_parts() {
    let mut memory = Memory::new();
    let bitmaps = vmcs(P::USE_MSR_BITMAPS, S::empty());
    // Read-low: MSR 0x10 (TSC) at offset 0.
    memory.set_bit(MSR_BITMAP, 0x10);
    // Read-high: MSR 0xc000_0100 (FS base) at offset 0x400.
    memory.set_bit(MSR_BITMAP + 0x400, 0x100);
    // Write-low: MSR 0x1ff at offset 0x800.
    memory.set_bit(MSR_BITMAP + 0x800, 0x1ff);
    // Write-high: MSR 0xc000_0080 (EFER) at offset 0xc00.
    memory.set_bit(MSR_BITMAP + 0xc00, 0x80);

    let cases = [
        (R::Rdmsr, 0x10, REFLECT),
        (R::Wrmsr, 0x10, NOT_REQUESTED),
        (R::Rdmsr, 0xc000_0100, REFLECT),
        (R::Wrmsr, 0xc000_0100, NOT_REQUESTED),
        (R::Wrmsr, 0x1ff, REFLECT),
        (R::Rdmsr, 0x1ff, NOT_REQUESTED),
        (R::Wrmsr, 0xc000_0080, REFLECT),
        (R::Rdmsr, 0xc000_0080, NOT_REQUESTED),
        // Only ECX counts: bits 63:32 of RCX are ignored.
        (R::Rdmsr, 0xffff_ffff_0000_0010, REFLECT),
    ];
    for (reason, msr, expected) in cases {
        assert_eq!(
            decide_msr(&bitmaps, &memory, reason, msr),
            expected,
            "{reason} {msr:#x}"
        );
    }
}

#[test]
fn msrs_outside_both_ranges_always_exit() {
    let memory = Memory::new();
    let bitmaps = vmcs(P::USE_MSR_BITMAPS, S::empty());
    for msr in [0x2000, 0x4000_0000, 0xbfff_ffff, 0xc000_2000, 0xffff_ffff] {
        assert_eq!(
            decide_msr(&bitmaps, &memory, R::Rdmsr, msr),
            REFLECT,
            "{msr:#x}"
        );
        assert_eq!(
            decide_msr(&bitmaps, &memory, R::Wrmsr, msr),
            REFLECT,
            "{msr:#x}"
        );
    }
    for msr in [0, 0x1fff, 0xc000_0000, 0xc000_1fff] {
        assert_eq!(
            decide_msr(&bitmaps, &memory, R::Rdmsr, msr),
            NOT_REQUESTED,
            "{msr:#x}"
        );
    }
}

#[test]
fn msr_bitmap_outside_l1_memory_exits() {
    let memory = Memory::new();
    let bitmaps = vmcs(P::USE_MSR_BITMAPS, S::empty()).with(F::MsrBitmap, 0x1_0000_0000);
    assert_eq!(decide_msr(&bitmaps, &memory, R::Rdmsr, 0x10), REFLECT);
}

// ---------------------------------------------------------------------------
// EPT, APIC virtualization, leaf bitmaps, XSS.

#[test]
fn ept_faults_go_to_hv_mmu_only_with_ept_on_in_vmcs12() {
    for reason in [R::EptViolation, R::EptMisconfiguration] {
        assert_eq!(
            decide(&vmcs(P::empty(), S::ENABLE_EPT), &exit(reason)),
            Decision::EptFault
        );
        assert_eq!(
            decide(&vmcs(P::empty(), S::empty()), &exit(reason)),
            L0_FEATURE
        );
    }
}

#[test]
fn apic_virtualization_exits_follow_l1s_controls() {
    let apic_write = exit(R::ApicWrite);
    assert_eq!(
        decide(
            &vmcs(P::empty(), S::APIC_REGISTER_VIRTUALIZATION),
            &apic_write
        ),
        REFLECT
    );
    assert_eq!(
        decide(
            &vmcs(P::empty(), S::VIRTUAL_INTERRUPT_DELIVERY),
            &apic_write
        ),
        REFLECT
    );
    assert_eq!(
        decide(
            &vmcs(P::USE_TPR_SHADOW, S::VIRTUALIZE_APIC_ACCESSES),
            &apic_write
        ),
        NOT_REQUESTED
    );

    // Virtualized EOI: VID and the EOI-exit-bitmap bit of the vector.
    let eoi = exit_with_qualification(R::VirtualizedEoi, 0x41);
    let vid = vmcs(P::empty(), S::VIRTUAL_INTERRUPT_DELIVERY);
    assert_eq!(
        decide(&vid.clone().with(F::EoiExitBitmap1, 1 << 1), &eoi),
        REFLECT
    );
    assert_eq!(
        decide(&vid.clone().with(F::EoiExitBitmap0, 1 << 1), &eoi),
        NOT_REQUESTED
    );
    assert_eq!(
        decide(
            &vmcs(P::empty(), S::empty()).with(F::EoiExitBitmap1, !0),
            &eoi
        ),
        NOT_REQUESTED
    );

    // TPR below threshold: TPR shadow without virtual-interrupt delivery.
    let tpr = exit(R::TprBelowThreshold);
    assert_eq!(decide(&vmcs(P::USE_TPR_SHADOW, S::empty()), &tpr), REFLECT);
    assert_eq!(
        decide(
            &vmcs(P::USE_TPR_SHADOW, S::VIRTUAL_INTERRUPT_DELIVERY),
            &tpr
        ),
        NOT_REQUESTED
    );
    assert_eq!(decide(&vmcs(P::empty(), S::empty()), &tpr), NOT_REQUESTED);
}

#[test]
fn encls_enclv_and_pconfig_use_their_leaf_bitmaps() {
    let memory = Memory::new();
    let with_eax = |eax: u64| l2_64bit(gprs_with(0, eax));
    let encls =
        vmcs(P::empty(), S::ENABLE_ENCLS_EXITING).with(F::EnclsExitingBitmap, (1 << 2) | (1 << 63));
    assert_eq!(
        decide_with(&encls, &exit(R::Encls), &with_eax(2), &memory),
        REFLECT
    );
    assert_eq!(
        decide_with(&encls, &exit(R::Encls), &with_eax(3), &memory),
        NOT_REQUESTED
    );
    assert_eq!(
        decide_with(&encls, &exit(R::Encls), &with_eax(500), &memory),
        REFLECT
    );
    let no_enable = vmcs(P::empty(), S::empty()).with(F::EnclsExitingBitmap, !0);
    assert_eq!(
        decide_with(&no_enable, &exit(R::Encls), &with_eax(2), &memory),
        NOT_REQUESTED
    );

    let enclv_vmcs = vmcs(P::empty(), S::ENABLE_ENCLV_EXITING).with(F::EnclvExitingBitmap, 1 << 1);
    assert_eq!(
        decide_with(&enclv_vmcs, &exit(R::Enclv), &with_eax(1), &memory),
        REFLECT
    );
    assert_eq!(
        decide_with(&enclv_vmcs, &exit(R::Enclv), &with_eax(0), &memory),
        NOT_REQUESTED
    );

    let pconfig = vmcs(P::empty(), S::ENABLE_PCONFIG).with(F::PconfigExitingBitmap, 1);
    assert_eq!(
        decide_with(&pconfig, &exit(R::Pconfig), &with_eax(0), &memory),
        REFLECT
    );
    assert_eq!(
        decide_with(&pconfig, &exit(R::Pconfig), &with_eax(1), &memory),
        NOT_REQUESTED
    );
    assert_eq!(
        decide_with(
            &vmcs(P::empty(), S::empty()),
            &exit(R::Pconfig),
            &with_eax(0),
            &memory
        ),
        DISABLED
    );
}

#[test]
fn xsaves_and_xrstors_use_the_xss_exiting_bitmap() {
    let memory = Memory::new();
    let vmcs12 =
        vmcs(P::empty(), S::ENABLE_XSAVES_XRSTORS).with(F::XssExitingBitmap, (1 << 8) | (1 << 40));
    let l2 = |edx: u64, eax: u64, xss: u64| {
        let mut gprs = gprs_with(0, eax);
        gprs.set(2, edx);
        L2Context {
            ia32_xss: xss,
            ..l2_64bit(gprs)
        }
    };
    for reason in [R::Xsaves, R::Xrstors] {
        // Bit 8 requested and enabled in IA32_XSS and in the bitmap.
        assert_eq!(
            decide_with(&vmcs12, &exit(reason), &l2(0, 1 << 8, 1 << 8), &memory),
            REFLECT
        );
        // Bit 40 (EDX bit 8) requested and in the bitmap, but not in XSS.
        assert_eq!(
            decide_with(&vmcs12, &exit(reason), &l2(1 << 8, 0, 1 << 8), &memory),
            NOT_REQUESTED
        );
        assert_eq!(
            decide_with(&vmcs12, &exit(reason), &l2(1 << 8, 0, 1 << 40), &memory),
            REFLECT
        );
        // Requested bit not in the bitmap.
        assert_eq!(
            decide_with(&vmcs12, &exit(reason), &l2(0, 1 << 9, 1 << 9), &memory),
            NOT_REQUESTED
        );
        assert_eq!(
            decide_with(
                &vmcs(P::empty(), S::empty()),
                &exit(reason),
                &l2(0, 1, 1),
                &memory
            ),
            DISABLED
        );
    }
}

#[test]
fn msr_list_instructions_need_their_tertiary_enable() {
    let enabled = vmcs(P::ACTIVATE_TERTIARY_CONTROLS, S::empty()).with(
        F::TertiaryProcBasedControls,
        TertiaryProcControls::ENABLE_MSRLIST_INSTRUCTIONS.bits(),
    );
    assert_eq!(decide(&enabled, &exit(R::Rdmsrlist)), REFLECT);
    assert_eq!(
        decide(&vmcs(P::empty(), S::empty()), &exit(R::Wrmsrlist)),
        DISABLED
    );
}

// ---------------------------------------------------------------------------
// Delivery (SDM 28.2-28.7).

fn caps() -> VmxCapabilities {
    VmxCapabilities::bochs_skylake_x()
}

/// The CPUID exit of the scenario: L2 at `GUEST_RIP` executed CPUID (2
/// bytes) with some registers set.
fn cpuid_scenario() -> (VmcsImage, Exit, L2Exited) {
    let vmcs12 = long_mode_guest(&caps());
    let mut guest = vmcs12.clone();
    guest.set(F::GuestRip, baseline::GUEST_RIP + 0x40);
    guest.set(F::GuestRsp, baseline::GUEST_RSP - 0x80);
    guest.set(F::GuestRflags, 0x246);
    guest.set(F::GuestInterruptibilityState, 0b101); // STI and SMI blocking
    guest.set(F::GuestFsBase, 0x7000_0000);
    guest.set(F::GuestCr3, 0x5_5000);
    let mut gprs = Gprs::default();
    for index in 0..16u8 {
        gprs.set(index, 0x1111 * u64::from(index + 1));
    }
    let exit = Exit {
        instruction_length: 2,
        ..Exit::new(R::Cpuid)
    };
    (vmcs12, exit, L2Exited { guest, gprs })
}

fn flat(selector: u16, access_rights: u32) -> Segment {
    Segment {
        selector,
        base: 0,
        limit: 0xffff_ffff,
        access_rights,
    }
}

#[test]
fn cpuid_exit_from_the_long_mode_baseline_loads_exactly_the_host_state() {
    let (mut vmcs12, exit, l2) = cpuid_scenario();
    let exit_controls = ExitControls::from_raw(vmcs12.get(F::PrimaryVmExitControls));
    assert!(exit_controls.contains(ExitControls::LOAD_IA32_EFER | ExitControls::LOAD_IA32_PAT));
    let host = vmcs12.clone();
    let mut memory = Memory::new();
    let mut msrs = Msrs::default();
    let mut l1 = L1Cpu::default();

    let system =
        deliver_exit_to_l1(&mut vmcs12, &exit, &l2, &mut l1, &mut memory, &mut msrs).unwrap();

    let mut gprs = l2.gprs;
    gprs.set(4, baseline::HOST_RSP);
    let data = flat(0x10, 0xc093);
    let expected = L1Cpu {
        gprs,
        rip: baseline::HOST_RIP,
        rflags: 0x2,
        cr0: host.get(F::HostCr0),
        cr3: baseline::HOST_CR3,
        cr4: host.get(F::HostCr4),
        efer: 0x500,
        cs: flat(0x08, 0xa09b),
        ss: data,
        ds: data,
        es: data,
        fs: data,
        gs: data,
    };
    assert_eq!(l1, expected);
    assert_eq!(
        system,
        L1SystemRegisters {
            tr: Segment {
                selector: 0x18,
                base: baseline::HOST_TR_BASE,
                limit: 0x67,
                access_rights: 0x8b,
            },
            ldtr: Segment {
                selector: 0,
                base: 0,
                limit: 0,
                access_rights: 1 << 16,
            },
            gdtr: hv_core::reflect::DescriptorTableRegister {
                base: baseline::HOST_GDTR_BASE,
                limit: 0xffff,
            },
            idtr: hv_core::reflect::DescriptorTableRegister {
                base: baseline::HOST_IDTR_BASE,
                limit: 0xffff,
            },
            dr7: 0x400,
        }
    );
    assert_eq!(
        msrs.writes,
        vec![
            (0x1d9, 0),
            (0x174, 0),
            (0x175, 0),
            (0x176, 0),
            (0x277, baseline::PAT)
        ]
    );
}

#[test]
fn cpuid_exit_writes_the_exit_fields_and_l2_state_into_vmcs12() {
    let (mut vmcs12, exit, l2) = cpuid_scenario();
    vmcs12.set(
        F::VmEntryInterruptionInfo,
        u64::from(InterruptionInfo::hardware_exception(ExceptionVector::GeneralProtection).raw()),
    );
    vmcs12.set(
        F::VmEntryControls,
        vmcs12.get(F::VmEntryControls) & !(1 << 9),
    );
    let before = vmcs12.clone();
    deliver_exit_to_l1(
        &mut vmcs12,
        &exit,
        &l2,
        &mut L1Cpu::default(),
        &mut Memory::new(),
        &mut Msrs::default(),
    )
    .unwrap();

    assert_eq!(vmcs12.get(F::ExitReason), 10);
    assert_eq!(vmcs12.get(F::VmExitInstructionLength), 2);
    assert_eq!(vmcs12.get(F::ExitQualification), 0);
    for field in [
        F::GuestRip,
        F::GuestRsp,
        F::GuestRflags,
        F::GuestFsBase,
        F::GuestCr3,
        F::GuestEfer,
    ] {
        assert_eq!(vmcs12.get(field), l2.guest.get(field), "{}", field.name());
    }
    // SDM 28.3.4: blocking by SMI is saved as 0 outside SMM.
    assert_eq!(vmcs12.get(F::GuestInterruptibilityState), 0b001);
    // SDM 28.2: the VM-entry interruption information is no longer valid.
    let entry_info = vmcs12.get(F::VmEntryInterruptionInfo);
    assert_eq!(entry_info & (1 << 31), 0);
    assert_eq!(entry_info & 0xff, 13);
    // SDM 28.3: "IA-32e mode guest" receives EFER.LMA.
    assert!(
        EntryControls::from_raw(vmcs12.get(F::VmEntryControls))
            .contains(EntryControls::IA32E_MODE_GUEST)
    );
    // Host state and controls are untouched.
    for field in [
        F::HostRip,
        F::HostCr3,
        F::PrimaryProcBasedControls,
        F::MsrBitmap,
    ] {
        assert_eq!(vmcs12.get(field), before.get(field), "{}", field.name());
    }
}

#[test]
fn guest_msrs_and_dr7_are_saved_only_with_their_save_controls() {
    let (mut vmcs12, exit, mut l2) = cpuid_scenario();
    l2.guest.set(F::GuestDr7, 0x4ff);
    l2.guest.set(F::GuestPat, 0x0606_0606_0606_0606);
    l2.guest.set(F::VmxPreemptionTimerValue, 1234);
    let controls = ExitControls::HOST_ADDRESS_SPACE_SIZE | ExitControls::SAVE_DEBUG_CONTROLS;
    vmcs12.set(F::PrimaryVmExitControls, controls.to_raw());
    deliver_exit_to_l1(
        &mut vmcs12,
        &exit,
        &l2,
        &mut L1Cpu::default(),
        &mut Memory::new(),
        &mut Msrs::default(),
    )
    .unwrap();
    assert_eq!(vmcs12.get(F::GuestDr7), 0x4ff);
    assert_eq!(vmcs12.get(F::GuestPat), baseline::PAT, "PAT not saved");
    assert_eq!(vmcs12.get(F::VmxPreemptionTimerValue), 0, "timer not saved");

    let controls = ExitControls::HOST_ADDRESS_SPACE_SIZE
        | ExitControls::SAVE_IA32_PAT
        | ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE;
    vmcs12.set(F::PrimaryVmExitControls, controls.to_raw());
    vmcs12.set(F::GuestDr7, 0x400);
    deliver_exit_to_l1(
        &mut vmcs12,
        &exit,
        &l2,
        &mut L1Cpu::default(),
        &mut Memory::new(),
        &mut Msrs::default(),
    )
    .unwrap();
    assert_eq!(vmcs12.get(F::GuestDr7), 0x400, "DR7 not saved");
    assert_eq!(vmcs12.get(F::GuestPat), 0x0606_0606_0606_0606);
    assert_eq!(vmcs12.get(F::VmxPreemptionTimerValue), 1234);
}

#[test]
fn external_interrupt_information_needs_acknowledge_interrupt_on_exit() {
    let (mut vmcs12, _, l2) = cpuid_scenario();
    let info = InterruptionInfo::new(0x30, InterruptionType::ExternalInterrupt);
    let interrupt = Exit {
        interruption_info: info,
        ..Exit::new(R::ExternalInterrupt)
    };
    let deliver = |vmcs12: &mut VmcsImage| {
        deliver_exit_to_l1(
            vmcs12,
            &interrupt,
            &l2,
            &mut L1Cpu::default(),
            &mut Memory::new(),
            &mut Msrs::default(),
        )
        .unwrap();
        vmcs12.get(F::VmExitInterruptionInfo)
    };
    let with_ack = vmcs12.get(F::PrimaryVmExitControls) | (1 << 15);
    vmcs12.set(F::PrimaryVmExitControls, with_ack);
    assert_eq!(deliver(&mut vmcs12), u64::from(info.raw()));
    vmcs12.set(F::PrimaryVmExitControls, with_ack & !(1 << 15));
    assert_eq!(deliver(&mut vmcs12) & (1 << 31), 0);
}

/// Writes MSR-area entries (index, data) at `address`.
fn write_msr_area(memory: &mut Memory, address: u64, entries: &[(u64, u64)]) {
    for (slot, &(head, data)) in (0u64..).zip(entries) {
        memory.write_u64(address + 16 * slot, head);
        memory.write_u64(address + 16 * slot + 8, data);
    }
}

const STORE_AREA: u64 = 0x8_0000;
const LOAD_AREA: u64 = 0x8_1000;

fn with_msr_areas(mut vmcs12: VmcsImage, stores: u64, loads: u64) -> VmcsImage {
    vmcs12.set(F::VmExitMsrStoreAddress, STORE_AREA);
    vmcs12.set(F::VmExitMsrStoreCount, stores);
    vmcs12.set(F::VmExitMsrLoadAddress, LOAD_AREA);
    vmcs12.set(F::VmExitMsrLoadCount, loads);
    vmcs12
}

#[test]
fn msr_store_and_load_areas_round_trip() {
    let (vmcs12, exit, l2) = cpuid_scenario();
    let mut vmcs12 = with_msr_areas(vmcs12, 2, 3);
    let mut memory = Memory::new();
    write_msr_area(&mut memory, STORE_AREA, &[(0xc000_0102, 0), (0x10, 0xdead)]);
    write_msr_area(
        &mut memory,
        LOAD_AREA,
        &[
            (0xc000_0102, 0xffff_8000_0000_1000),
            (0x3a, 5),
            (0xc000_0080, 0xd01),
        ],
    );
    let mut msrs = Msrs::default();
    msrs.values.insert(0xc000_0102, 0x7fff_0000_2000); // L2's KERNEL_GS_BASE
    msrs.values.insert(0x10, 42); // L2's TSC
    let mut l1 = L1Cpu::default();
    deliver_exit_to_l1(&mut vmcs12, &exit, &l2, &mut l1, &mut memory, &mut msrs).unwrap();

    // Store: data written, indices kept.
    assert_eq!(memory.read_u64(STORE_AREA), 0xc000_0102);
    assert_eq!(memory.read_u64(STORE_AREA + 8), 0x7fff_0000_2000);
    assert_eq!(memory.read_u64(STORE_AREA + 16), 0x10);
    assert_eq!(memory.read_u64(STORE_AREA + 24), 42);
    // Load: in order, after the host-state MSRs.
    let tail = &msrs.writes[msrs.writes.len() - 3..];
    assert_eq!(
        tail,
        &[
            (0xc000_0102, 0xffff_8000_0000_1000),
            (0x3a, 5),
            (0xc000_0080, 0xd01)
        ]
    );
    // EFER loaded through the area reaches L1Cpu (LMA stays as loaded).
    assert_eq!(l1.efer, 0xd01 | 0x400);
}

fn deliver_with_areas(
    stores: &[(u64, u64)],
    loads: &[(u64, u64)],
    msrs: &mut Msrs,
) -> Result<L1SystemRegisters, DeliveryError> {
    let (vmcs12, exit, l2) = cpuid_scenario();
    let mut vmcs12 = with_msr_areas(vmcs12, stores.len() as u64, loads.len() as u64);
    let mut memory = Memory::new();
    write_msr_area(&mut memory, STORE_AREA, stores);
    write_msr_area(&mut memory, LOAD_AREA, loads);
    deliver_exit_to_l1(
        &mut vmcs12,
        &exit,
        &l2,
        &mut L1Cpu::default(),
        &mut memory,
        msrs,
    )
}

#[test]
fn bad_msr_load_entries_are_vmx_abort_4() {
    let load_abort = |fault| Err(DeliveryError::VmxAbort(VmxAbort::LoadHostMsr(fault)));
    let cases = [
        (
            vec![(0x10, 1), (0xc000_0100, 0)],
            MsrAreaFault::ForbiddenMsr {
                entry: 1,
                index: 0xc000_0100,
            },
        ),
        (
            vec![(0x808, 0)],
            MsrAreaFault::ForbiddenMsr {
                entry: 0,
                index: 0x808,
            },
        ),
        (
            vec![(0x1_0000_0010, 0)],
            MsrAreaFault::ReservedBits {
                entry: 0,
                reserved: 1,
            },
        ),
        (
            vec![(0x9b, 0)],
            MsrAreaFault::ForbiddenMsr {
                entry: 0,
                index: 0x9b,
            },
        ),
    ];
    for (loads, fault) in cases {
        let result = deliver_with_areas(&[], &loads, &mut Msrs::default());
        assert_eq!(result, load_abort(fault));
        assert_eq!(4, VmxAbort::LoadHostMsr(fault).indicator());
    }
    // An MSR whose WRMSR faults.
    let mut msrs = Msrs {
        faulting: vec![0x123],
        ..Msrs::default()
    };
    assert_eq!(
        deliver_with_areas(&[], &[(0x123, 0)], &mut msrs),
        load_abort(MsrAreaFault::MsrFaulted {
            entry: 0,
            index: 0x123
        })
    );
}

#[test]
fn msr_areas_outside_l1_memory_or_too_long_abort() {
    let (vmcs12, exit, l2) = cpuid_scenario();
    let run = |vmcs12: &mut VmcsImage| {
        deliver_exit_to_l1(
            vmcs12,
            &exit,
            &l2,
            &mut L1Cpu::default(),
            &mut Memory::new(),
            &mut Msrs::default(),
        )
    };
    let mut far = vmcs12.clone();
    far.set(F::VmExitMsrLoadAddress, 0x4000_0000);
    far.set(F::VmExitMsrLoadCount, 1);
    assert_eq!(
        run(&mut far),
        Err(DeliveryError::VmxAbort(VmxAbort::LoadHostMsr(
            MsrAreaFault::NotL1Memory {
                entry: 0,
                address: 0x4000_0000
            }
        )))
    );
    let mut long = vmcs12.clone();
    long.set(F::VmExitMsrStoreCount, 5000);
    assert_eq!(
        run(&mut long),
        Err(DeliveryError::VmxAbort(VmxAbort::SaveGuestMsr(
            MsrAreaFault::TooManyEntries { count: 5000 }
        )))
    );
}

#[test]
fn bad_msr_store_entries_are_vmx_abort_1() {
    let result = deliver_with_areas(&[(0x10, 0), (0x9e, 0)], &[], &mut Msrs::default());
    let fault = MsrAreaFault::ForbiddenMsr {
        entry: 1,
        index: 0x9e,
    };
    assert_eq!(
        result,
        Err(DeliveryError::VmxAbort(VmxAbort::SaveGuestMsr(fault)))
    );
    assert_eq!(VmxAbort::SaveGuestMsr(fault).indicator(), 1);
}

#[test]
fn null_host_selectors_give_unusable_segments_with_host_bases() {
    let (mut vmcs12, exit, l2) = cpuid_scenario();
    vmcs12.set(F::HostSsSelector, 0);
    vmcs12.set(F::HostFsSelector, 0);
    vmcs12.set(F::HostFsBase, 0x1234_5000);
    let mut l1 = L1Cpu::default();
    deliver_exit_to_l1(
        &mut vmcs12,
        &exit,
        &l2,
        &mut l1,
        &mut Memory::new(),
        &mut Msrs::default(),
    )
    .unwrap();
    assert!(l1.ss.unusable());
    assert_eq!(l1.cpl(), 0);
    assert!(l1.fs.unusable());
    assert_eq!(l1.fs.base, 0x1234_5000);
    assert!(!l1.ds.unusable());
}

#[test]
fn a_32bit_host_gets_a_32bit_code_segment_and_efer_without_long_mode() {
    let (mut vmcs12, exit, mut l2) = cpuid_scenario();
    // A protected-mode L2 under a 32-bit L1 host without "load IA32_EFER".
    l2.guest.set(F::GuestEfer, 0x801); // NXE | SCE
    vmcs12.set(F::PrimaryVmExitControls, ExitControls::DEFAULT1.to_raw());
    vmcs12.set(F::HostCr4, (1 << 17) | (1 << 13)); // PCIDE | VMXE
    let mut l1 = L1Cpu::default();
    deliver_exit_to_l1(
        &mut vmcs12,
        &exit,
        &l2,
        &mut l1,
        &mut Memory::new(),
        &mut Msrs::default(),
    )
    .unwrap();
    assert_eq!(l1.cs, flat(0x08, 0xc09b));
    assert_eq!(l1.efer, 0x801, "LME/LMA cleared, other bits kept");
    assert_eq!(l1.cr4, 1 << 13, "PCIDE cleared");
    assert!(!l1.in_64bit_mode());

    // From an IA-32e L2 the same exit is VMX abort 6.
    l2.guest.set(F::GuestEfer, 0x500);
    assert_eq!(
        deliver_exit_to_l1(
            &mut vmcs12,
            &exit,
            &l2,
            &mut L1Cpu::default(),
            &mut Memory::new(),
            &mut Msrs::default()
        ),
        Err(DeliveryError::VmxAbort(
            VmxAbort::Ia32eModeWithoutHostAddressSpaceSize
        ))
    );
}

#[test]
fn cr0_keeps_cd_nw_and_et_from_before_the_exit() {
    let (mut vmcs12, exit, mut l2) = cpuid_scenario();
    let host_cr0 = vmcs12.get(F::HostCr0);
    l2.guest.set(F::GuestCr0, host_cr0 | (1 << 30) | (1 << 29));
    let mut l1 = L1Cpu::default();
    deliver_exit_to_l1(
        &mut vmcs12,
        &exit,
        &l2,
        &mut l1,
        &mut Memory::new(),
        &mut Msrs::default(),
    )
    .unwrap();
    assert_eq!(l1.cr0, host_cr0 | (1 << 30) | (1 << 29));
}

#[test]
fn a_pae_host_with_a_bad_pdpte_is_vmx_abort_2() {
    let (mut vmcs12, exit, mut l2) = cpuid_scenario();
    l2.guest.set(F::GuestEfer, 0);
    vmcs12.set(F::PrimaryVmExitControls, ExitControls::DEFAULT1.to_raw());
    vmcs12.set(F::HostCr4, 1 << 5); // PAE
    vmcs12.set(F::HostCr3, 0x9_0000);
    let mut memory = Memory::new();
    memory.write_u64(0x9_0000, 0x1001);
    memory.write_u64(0x9_0008, 0x2001 | (1 << 1)); // present, reserved bit 1
    let run = |memory: &mut Memory, vmcs12: &mut VmcsImage| {
        deliver_exit_to_l1(
            vmcs12,
            &exit,
            &l2,
            &mut L1Cpu::default(),
            memory,
            &mut Msrs::default(),
        )
    };
    assert_eq!(
        run(&mut memory, &mut vmcs12),
        Err(DeliveryError::VmxAbort(VmxAbort::HostPdpte {
            index: 1,
            pdpte: 0x2003
        }))
    );
    memory.write_u64(0x9_0008, 0x2001);
    assert!(run(&mut memory, &mut vmcs12).is_ok());
}

#[test]
fn entry_failure_writes_only_reason_and_qualification_and_loads_host_state() {
    let mut vmcs12 = long_mode_guest(&caps());
    vmcs12.set(
        F::VmEntryInterruptionInfo,
        u64::from(InterruptionInfo::hardware_exception(ExceptionVector::PageFault).raw()),
    );
    let before = vmcs12.clone();
    let mut l1 = L1Cpu {
        rip: 0x1234,
        ..L1Cpu::default()
    };
    l1.gprs.set(0, 77);
    let failure =
        EntryFailure::InvalidGuestState(GuestCheck::LinkPointerNotAligned { pointer: 0x1001 });
    deliver_entry_failure(
        &mut vmcs12,
        &failure,
        &mut l1,
        &mut Memory::new(),
        &mut Msrs::default(),
    )
    .unwrap();

    assert_eq!(vmcs12.get(F::ExitReason), (1 << 31) | 0x21);
    assert_eq!(vmcs12.get(F::ExitQualification), 4);
    for (field, value) in vmcs12.non_zero().chain(before.non_zero()) {
        if field != F::ExitReason && field != F::ExitQualification {
            assert_eq!(
                vmcs12.get(field),
                before.get(field),
                "{} ({value:#x})",
                field.name()
            );
        }
    }
    assert_eq!(l1.rip, baseline::HOST_RIP);
    assert_eq!(l1.gprs.get(4), baseline::HOST_RSP);
    assert_eq!(l1.gprs.get(0), 77, "GPRs other than RSP are kept");
    assert_eq!(l1.cs, flat(0x08, 0xa09b));

    deliver_entry_failure(
        &mut vmcs12,
        &EntryFailure::MsrLoading { entry: 3 },
        &mut l1,
        &mut Memory::new(),
        &mut Msrs::default(),
    )
    .unwrap();
    assert_eq!(vmcs12.get(F::ExitReason), (1 << 31) | 0x22);
    assert_eq!(vmcs12.get(F::ExitQualification), 3);
}

// ---------------------------------------------------------------------------
// Never panic on any VMCS12, exit or memory content.

fn arbitrary_vmcs() -> impl Strategy<Value = VmcsImage> {
    // Values biased towards small addresses so bitmaps and MSR areas often
    // land in the test memory.
    let value = prop_oneof![any::<u64>(), 0u64..0x2_0000, Just(0u64), Just(u64::MAX)];
    proptest::collection::vec(value, F::COUNT).prop_map(|values| {
        let mut image = VmcsImage::new();
        for (field, value) in F::ALL.iter().zip(values) {
            image.set(*field, value);
        }
        image
    })
}

fn arbitrary_exit() -> impl Strategy<Value = Exit> {
    (
        prop_oneof![0u32..100, any::<u32>()],
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(|(reason, qualification, info, error_code, address)| Exit {
            reason: ExitReasonWord::from_raw(reason),
            qualification,
            guest_linear_address: address,
            guest_physical_address: address,
            interruption_info: InterruptionInfo::from_raw(info),
            interruption_error_code: error_code,
            idt_vectoring_info: InterruptionInfo::from_raw(info.rotate_left(7)),
            idt_vectoring_error_code: error_code,
            instruction_length: info & 0xf,
            instruction_info: info,
        })
}

fn small_memory() -> impl Strategy<Value = Memory> {
    proptest::collection::vec(any::<u8>(), 0x2_0000).prop_map(|bytes| Memory { bytes })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn decision_never_panics(
        vmcs12 in arbitrary_vmcs(),
        exit in arbitrary_exit(),
        registers in proptest::array::uniform16(any::<u64>()),
        efer in any::<u64>(),
        cs in any::<u32>(),
        memory in small_memory(),
    ) {
        let l2 = L2Context {
            gprs: Gprs(registers),
            efer,
            cs_access_rights: cs,
            ia32_xss: registers[5],
            ..L2Context::default()
        };
        let _ = l1_wants_exit(&vmcs12, &exit, &l2, &memory);
    }

    #[test]
    fn delivery_never_panics(
        mut vmcs12 in arbitrary_vmcs(),
        guest in arbitrary_vmcs(),
        exit in arbitrary_exit(),
        registers in proptest::array::uniform16(any::<u64>()),
        mut memory in small_memory(),
        failing_msr in any::<u32>(),
    ) {
        let l2 = L2Exited { guest, gprs: Gprs(registers) };
        let mut msrs = Msrs { faulting: vec![failing_msr], ..Msrs::default() };
        let mut l1 = L1Cpu::default();
        let _ = deliver_exit_to_l1(&mut vmcs12, &exit, &l2, &mut l1, &mut memory, &mut msrs);
        let _ = deliver_entry_failure(
            &mut vmcs12,
            &EntryFailure::MsrLoading { entry: registers[0] as u32 },
            &mut l1,
            &mut memory,
            &mut msrs,
        );
    }
}
