//! The software model on its own (Platform methods called directly) and
//! under a vCPU ([`Harness`]): exit encodings, TLB invalidation rules, EPT02
//! publication, VMCS02 checking, and the stale rule.

use hv_arch_vmx::ept::Eptp;
use hv_arch_vmx::exit::{ExitReason, Gpr, IoQualification, VmxInstructionInfo};
use hv_arch_vmx::invalidation::{InveptType, InvvpidType};
use hv_core::model::exits::{self, SCRATCH_OPERAND};
use hv_core::model::reference::L1Tag;
use hv_core::model::tlb::{Provenance, Tlb, TlbEntry, TlbKey};
use hv_core::model::{
    L1Action, L2Action, Model, ModelConfig, ModelError, ModelMemory, SimulateConfig, VmxOp,
    simulate,
};
use hv_core::platform::{Level, Platform};
use hv_core::state::L1Access;
use hv_mmu::addr::L1Gpa;
use hv_mmu::env::FrameAllocator;
use hv_mmu::shadow::Policy;

fn entry(host_page: u64) -> TlbEntry {
    TlbEntry {
        host_page,
        permissions: hv_arch_vmx::ept::EptPermissions::READ_WRITE_EXECUTE,
        writable: true,
        provenance: Provenance {
            tag: L1Tag::default(),
            l2_gpa_page: 0,
            l1_gpa_page: None,
            filled_at: 0,
        },
    }
}

fn key(vpid02: u16, eptp02_root: u64, linear_page: u64) -> TlbKey {
    TlbKey {
        vpid02,
        eptp02_root,
        linear_page,
    }
}

fn filled() -> Tlb {
    let mut tlb = Tlb::default();
    for vpid in [0, 1, 2] {
        for root in [0x1000, 0x2000] {
            for page in [7, 8] {
                tlb.insert(key(vpid, root, page), entry(page));
            }
        }
    }
    tlb
}

#[test]
fn invept_single_context_removes_one_eptrta_for_every_vpid() {
    let mut tlb = filled();
    tlb.invept_single_context(0x1000);
    assert_eq!(tlb.len(), 6);
    assert!(tlb.lookup(&key(1, 0x1000, 7)).is_none());
    assert!(tlb.lookup(&key(1, 0x2000, 7)).is_some());
    tlb.invept_global();
    assert!(tlb.is_empty());
}

#[test]
fn invvpid_types_follow_sdm_29_4_3_3() {
    let mut tlb = filled();
    tlb.invvpid_individual(1, 7);
    assert_eq!(tlb.len(), 10, "VPID 1, page 7, both EPTRTAs");
    tlb.invvpid_single_context(2);
    assert_eq!(tlb.len(), 6);
    tlb.invvpid_all_context();
    assert_eq!(tlb.len(), 4, "all-context spares VPID 0");
    assert!(tlb.lookup(&key(0, 0x2000, 8)).is_some());
}

#[test]
fn model_memory_is_byte_addressed_and_bounded() {
    let mut memory = ModelMemory::new(0x2000);
    memory
        .write_bytes(L1Gpa::new(0x0ffd), &[1, 2, 3, 4, 5, 6])
        .unwrap();
    let mut back = [0; 6];
    memory.read_bytes(L1Gpa::new(0x0ffd), &mut back).unwrap();
    assert_eq!(back, [1, 2, 3, 4, 5, 6]);
    assert_eq!(memory.read_u64_at(L1Gpa::new(0x1000)).unwrap() & 0xff, 4);
    assert!(memory.write_bytes(L1Gpa::new(0x1ffc), &[0; 8]).is_err());
    assert!(memory.read_u64_at(L1Gpa::new(u64::MAX)).is_err());
}

#[test]
fn vmx_exits_carry_the_operands_where_the_information_says() {
    let (mut model, _frames) = Model::new(ModelConfig::default());
    model.push_l1(L1Action::Vmx(VmxOp::Vmptrld { pointer: 0x5000 }));
    let exit = model.run(Level::L1).unwrap();
    assert_eq!(exit.reason.reason(), ExitReason::Vmptrld);
    assert_eq!(exit.instruction_length, 3);
    let info = VmxInstructionInfo::from_raw(exit.instruction_info);
    let operand = info.vmx_pointer_operand().unwrap();
    assert_eq!(operand.base, Some(Gpr::Rbx));
    let parts = model.l1();
    assert_eq!(parts.cpu.gprs.get(Gpr::Rbx.index()), SCRATCH_OPERAND);
    assert_eq!(
        parts
            .memory
            .read_u64_at(L1Gpa::new(SCRATCH_OPERAND))
            .unwrap(),
        0x5000
    );
}

#[test]
fn l2_exits_have_sdm_encodings() {
    let io = exits::io_exit(0x3f8, 1, false);
    assert_eq!(io.reason.reason(), ExitReason::IoInstruction);
    assert_eq!(IoQualification::from_raw(io.qualification).port(), 0x3f8);
    let cpuid = exits::cpuid_exit();
    assert_eq!((cpuid.reason.basic(), cpuid.instruction_length), (10, 2));
    let violation =
        exits::ept_violation_exit(hv_mmu::walk::Access::WRITE, None, 0x4000_0123, 0x7000_0123);
    assert_eq!(violation.reason.basic(), 48);
    // Bit 1 (write), bit 7 (linear valid), bit 8 (translated address).
    assert_eq!(violation.qualification, (1 << 1) | (1 << 7) | (1 << 8));
    assert_eq!(violation.guest_physical_address, 0x4000_0123);
}

#[test]
fn empty_queues_and_invalid_vmcs02_are_typed_errors() {
    let (mut model, _frames) = Model::new(ModelConfig::default());
    assert_eq!(model.run(Level::L1), Err(ModelError::QueueEmpty(Level::L1)));
    model.push_l2(L2Action::Cpuid);
    // VMCS02 is all zero: the entry checks refuse it.
    assert!(matches!(
        model.run(Level::L2),
        Err(ModelError::Vmcs02Rejected(_))
    ));
}

#[test]
fn unpublished_ept02_writes_stop_l2() {
    let (mut model, mut frames) = Model::new(ModelConfig::default());
    let frame = frames.allocate().unwrap();
    frames.table_mut(frame)[0] = 7;
    model.push_l2(L2Action::Cpuid);
    assert_eq!(model.run(Level::L2), Err(ModelError::Ept02NotPublished));
    frames.publish();
    assert_ne!(model.run(Level::L2), Err(ModelError::Ept02NotPublished));
}

#[test]
fn platform_invalidations_are_counted_by_type() {
    let (mut model, _frames) = Model::new(ModelConfig::default());
    model
        .invept(InveptType::SingleContext, Eptp::from_raw(0x1000 | 0x1e))
        .unwrap();
    model.invvpid(InvvpidType::AllContext, 0, 0).unwrap();
    model
        .invvpid(InvvpidType::IndividualAddress, 3, 0x7000)
        .unwrap();
    let stats = model.stats();
    assert_eq!((stats.invept_single, stats.invept_global), (1, 0));
    assert_eq!(stats.invvpid, [1, 0, 1, 0]);
}

#[test]
fn one_l2_round_trip_under_every_policy() {
    for policy in Policy::ALL {
        let report = simulate(SimulateConfig::new(1, 3, policy)).unwrap();
        assert_eq!(report.nested_entries, 3, "{policy:?}");
        assert_eq!(report.reflected, 3, "{policy:?}");
        assert_eq!(report.stale_translations, 0, "{policy:?}");
        assert!(report.tlb_hits + report.tlb_misses >= 12, "{policy:?}");
    }
}
