//! EPT entries, misconfigurations, EPTP checks and INVEPT/INVVPID
//! descriptors (SDM 29.3, 25.6.11, 27.2.1.1, 31.3).

use core::mem::{align_of, size_of};

use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::ept::{
    EptEntry, EptEntryError, EptLevel, EptMemoryType, EptMisconfiguration, EptPermissions,
    EptWalkContext, Eptp, EptpBuildError, EptpError,
};
use hv_arch_vmx::invalidation::{
    InvalidationError, InveptDescriptor, InveptType, InvvpidDescriptor, InvvpidType,
    LinearAddressWidth,
};
use proptest::prelude::*;

const ALL_LEVELS: [EptLevel; 5] = [
    EptLevel::Pte,
    EptLevel::Pde,
    EptLevel::Pdpte,
    EptLevel::Pml4e,
    EptLevel::Pml5e,
];

fn bochs_context() -> EptWalkContext {
    EptWalkContext::from_capabilities(&VmxCapabilities::bochs_skylake_x(), 39, false)
}

#[test]
fn memory_type_encodings() {
    assert_eq!(
        EptMemoryType::from_bits(0),
        Some(EptMemoryType::Uncacheable)
    );
    assert_eq!(
        EptMemoryType::from_bits(1),
        Some(EptMemoryType::WriteCombining)
    );
    assert_eq!(
        EptMemoryType::from_bits(4),
        Some(EptMemoryType::WriteThrough)
    );
    assert_eq!(
        EptMemoryType::from_bits(5),
        Some(EptMemoryType::WriteProtected)
    );
    assert_eq!(EptMemoryType::from_bits(6), Some(EptMemoryType::WriteBack));
    for reserved in [2, 3, 7, 8, 255] {
        assert_eq!(EptMemoryType::from_bits(reserved), None);
    }
    assert_eq!(EptMemoryType::WriteBack.bits(), 6);
}

#[test]
fn entry_bit_positions() {
    let bit = |n: u32| EptEntry::from_raw(1 << n);
    assert!(bit(0).is_readable());
    assert!(bit(1).is_writable());
    assert!(bit(2).is_executable());
    assert_eq!(EptEntry::from_raw(0b110 << 3).memory_type_bits(), 6);
    assert!(bit(6).ignore_pat());
    assert!(bit(7).page_size_bit());
    assert!(bit(8).accessed());
    assert!(bit(9).dirty());
    assert!(bit(10).is_user_executable());
    assert!(bit(57).verify_guest_paging());
    assert!(bit(58).paging_write_access());
    assert!(bit(60).supervisor_shadow_stack());
    assert!(bit(61).sub_page_write_permissions());
    assert!(bit(63).suppress_ve());
    assert!(!bit(59).supervisor_shadow_stack() && !bit(62).suppress_ve());
    assert_eq!(
        EptEntry::from_raw(u64::MAX).address(),
        0x000F_FFFF_FFFF_F000
    );
    assert_eq!(EptPermissions::USER_EXECUTE.bits(), 1 << 10);
    assert_eq!(EptPermissions::READ_WRITE_EXECUTE.bits(), 0b111);
}

#[test]
fn presence_and_leafness() {
    assert!(!EptEntry::from_raw(0).is_present(false));
    assert!(EptEntry::from_raw(0b100).is_present(false));
    // Bit 10 alone makes an entry present only with mode-based execute.
    assert!(!EptEntry::from_raw(1 << 10).is_present(false));
    assert!(EptEntry::from_raw(1 << 10).is_present(true));

    let large = EptEntry::from_raw(0x8000_0000 | 0x87);
    assert!(large.is_leaf(EptLevel::Pdpte));
    assert!(large.is_leaf(EptLevel::Pde));
    assert!(!large.is_leaf(EptLevel::Pml4e));
    assert!(EptEntry::from_raw(0x7).is_leaf(EptLevel::Pte));
    assert_eq!(large.page_size(EptLevel::Pdpte), Some(1 << 30));
    assert_eq!(large.page_size(EptLevel::Pde), Some(2 << 20));
    assert_eq!(EptEntry::from_raw(0x7).page_size(EptLevel::Pte), Some(4096));
    assert_eq!(EptEntry::from_raw(0x7).page_size(EptLevel::Pde), None);
    assert_eq!(
        EptEntry::from_raw(0x4000_1000 | 0x87).page_frame(EptLevel::Pdpte),
        Some(0x4000_0000)
    );
}

#[test]
fn builders() {
    let table = EptEntry::table(0x1234_5000, EptPermissions::READ_WRITE_EXECUTE).unwrap();
    assert_eq!(table.raw(), 0x1234_5007);
    assert_eq!(
        table.misconfiguration(EptLevel::Pml4e, &bochs_context()),
        None
    );

    let leaf = EptEntry::leaf(
        EptLevel::Pte,
        0x5000,
        EptPermissions::READ,
        EptMemoryType::WriteBack,
    )
    .unwrap()
    .with_ignore_pat(true)
    .with_suppress_ve(true);
    assert_eq!(leaf.raw(), (1 << 63) | 0x5000 | (1 << 6) | (6 << 3) | 1);
    assert_eq!(leaf.memory_type(), Some(EptMemoryType::WriteBack));

    let huge = EptEntry::leaf(
        EptLevel::Pdpte,
        0x4000_0000,
        EptPermissions::READ | EptPermissions::WRITE,
        EptMemoryType::Uncacheable,
    )
    .unwrap();
    assert!(huge.page_size_bit());
    assert_eq!(
        huge.misconfiguration(EptLevel::Pdpte, &bochs_context()),
        None
    );

    assert_eq!(
        EptEntry::leaf(
            EptLevel::Pde,
            0x1000,
            EptPermissions::READ,
            EptMemoryType::WriteBack
        ),
        Err(EptEntryError::AddressNotAligned {
            address: 0x1000,
            alignment: 2 << 20
        })
    );
    assert_eq!(
        EptEntry::leaf(
            EptLevel::Pml4e,
            0,
            EptPermissions::READ,
            EptMemoryType::WriteBack
        ),
        Err(EptEntryError::NotALeafLevel(EptLevel::Pml4e))
    );
    assert_eq!(
        EptEntry::table(1 << 52, EptPermissions::READ),
        Err(EptEntryError::AddressTooWide { address: 1 << 52 })
    );
    assert_eq!(
        table.with_permissions(EptPermissions::READ).permissions(),
        EptPermissions::READ
    );
    assert!(table.with_accessed(true).accessed());
    assert!(!table.with_accessed(true).with_accessed(false).accessed());
    assert!(table.with_dirty(true).dirty());
}

#[test]
fn permissions_compose_along_walk() {
    let walk = EptPermissions::READ_WRITE_EXECUTE
        .along_walk(EptPermissions::READ | EptPermissions::EXECUTE)
        .along_walk(EptPermissions::READ | EptPermissions::WRITE);
    assert_eq!(walk, EptPermissions::READ);
    let user_only = EptPermissions::READ | EptPermissions::USER_EXECUTE;
    assert!(user_only.allows_execute(true, true));
    assert!(!user_only.allows_execute(false, true));
    assert!(!user_only.allows_execute(true, false));
    assert_eq!(user_only.effective(false), EptPermissions::READ);
}

#[test]
fn misconfiguration_write_without_read() {
    let ctx = bochs_context();
    assert_eq!(
        EptEntry::from_raw(0x1000 | 0b010).misconfiguration(EptLevel::Pte, &ctx),
        Some(EptMisconfiguration::WriteWithoutRead)
    );
    assert_eq!(
        EptEntry::from_raw(0x1000 | 0b110).misconfiguration(EptLevel::Pml4e, &ctx),
        Some(EptMisconfiguration::WriteWithoutRead)
    );
}

#[test]
fn misconfiguration_execute_only() {
    let mut ctx = bochs_context();
    let exec_only = EptEntry::from_raw(0x1000 | 0b100 | (6 << 3));
    assert_eq!(exec_only.misconfiguration(EptLevel::Pte, &ctx), None);
    ctx.execute_only = false;
    assert_eq!(
        exec_only.misconfiguration(EptLevel::Pte, &ctx),
        Some(EptMisconfiguration::ExecuteOnlyNotSupported)
    );
    // With mode-based execute, bit 10 alone is execute-only too.
    ctx.mode_based_execute = true;
    assert_eq!(
        EptEntry::from_raw(0x1000 | (1 << 10) | (6 << 3)).misconfiguration(EptLevel::Pte, &ctx),
        Some(EptMisconfiguration::ExecuteOnlyNotSupported)
    );
    // Without it, bit 10 alone is not present: no misconfiguration.
    ctx.mode_based_execute = false;
    assert_eq!(
        EptEntry::from_raw(0x1000 | (1 << 10)).misconfiguration(EptLevel::Pte, &ctx),
        None
    );
}

#[test]
fn misconfiguration_memory_type() {
    let ctx = bochs_context();
    for memory_type in [2u64, 3, 7] {
        let pte = EptEntry::from_raw(0x1000 | 0b111 | (memory_type << 3));
        assert_eq!(
            pte.misconfiguration(EptLevel::Pte, &ctx),
            Some(EptMisconfiguration::InvalidMemoryType(memory_type as u8))
        );
        let large = EptEntry::from_raw(0x20_0000 | 0x80 | 0b111 | (memory_type << 3));
        assert_eq!(
            large.misconfiguration(EptLevel::Pde, &ctx),
            Some(EptMisconfiguration::InvalidMemoryType(memory_type as u8))
        );
    }
    for memory_type in [0u64, 1, 4, 5, 6] {
        let pte = EptEntry::from_raw(0x1000 | 0b111 | (memory_type << 3));
        assert_eq!(pte.misconfiguration(EptLevel::Pte, &ctx), None);
    }
}

#[test]
fn misconfiguration_reserved_bits() {
    let ctx = bochs_context(); // MAXPHYADDR 39
    // Address bit 39 is beyond MAXPHYADDR at every level.
    for level in ALL_LEVELS {
        let memory_type = if level == EptLevel::Pte { 6 << 3 } else { 0 };
        let entry = EptEntry::from_raw((1 << 39) | 0b111 | memory_type);
        assert_eq!(
            entry.misconfiguration(level, &ctx),
            Some(EptMisconfiguration::ReservedBitsSet { mask: 1 << 39 }),
            "{level:?}"
        );
    }
    // Bit 38 is within it.
    assert_eq!(
        EptEntry::from_raw((1 << 38) | 0b111).misconfiguration(EptLevel::Pml4e, &ctx),
        None
    );
    // Bit 7 (page size) in a PML4E or PML5E is reserved.
    for level in [EptLevel::Pml4e, EptLevel::Pml5e] {
        assert_eq!(
            EptEntry::from_raw(0x1000 | 0x80 | 0b111).misconfiguration(level, &ctx),
            Some(EptMisconfiguration::ReservedBitsSet { mask: 0x80 })
        );
        // Bits 6:3 too.
        assert_eq!(
            EptEntry::from_raw(0x1000 | (6 << 3) | 0b111).misconfiguration(level, &ctx),
            Some(EptMisconfiguration::ReservedBitsSet { mask: 6 << 3 })
        );
    }
    // Non-leaf PDE/PDPTE: bits 6:3 reserved.
    assert_eq!(
        EptEntry::from_raw(0x1000 | (1 << 6) | 0b111).misconfiguration(EptLevel::Pde, &ctx),
        Some(EptMisconfiguration::ReservedBitsSet { mask: 1 << 6 })
    );
    // 2-MByte leaf: bits 20:12 reserved; 1-GByte leaf: bits 29:12.
    assert_eq!(
        EptEntry::from_raw(0x20_0000 | 0x1000 | 0x80 | (6 << 3) | 0b111)
            .misconfiguration(EptLevel::Pde, &ctx),
        Some(EptMisconfiguration::ReservedBitsSet { mask: 0x1000 })
    );
    assert_eq!(
        EptEntry::from_raw(0x4000_0000 | 0x20_0000 | 0x80 | (6 << 3) | 0b111)
            .misconfiguration(EptLevel::Pdpte, &ctx),
        Some(EptMisconfiguration::ReservedBitsSet { mask: 0x20_0000 })
    );
    // Bit 7 in a PTE is ignored; bits 63:52 are ignored or defined.
    assert_eq!(
        EptEntry::from_raw(0xFFF0_0000_0000_1000 | 0x80 | (6 << 3) | 0b111)
            .misconfiguration(EptLevel::Pte, &ctx),
        None
    );
}

#[test]
fn misconfiguration_large_page_support() {
    let mut ctx = bochs_context();
    let one_gig = EptEntry::from_raw(0x4000_0000 | 0x80 | (6 << 3) | 0b111);
    assert_eq!(one_gig.misconfiguration(EptLevel::Pdpte, &ctx), None);
    ctx.pages_1g = false;
    assert_eq!(
        one_gig.misconfiguration(EptLevel::Pdpte, &ctx),
        Some(EptMisconfiguration::LargePageNotSupported {
            level: EptLevel::Pdpte
        })
    );
    ctx.pages_2m = false;
    assert_eq!(
        EptEntry::from_raw(0x20_0000 | 0x80 | (6 << 3) | 0b111)
            .misconfiguration(EptLevel::Pde, &ctx),
        Some(EptMisconfiguration::LargePageNotSupported {
            level: EptLevel::Pde
        })
    );
}

#[test]
fn not_present_entries_are_never_misconfigured() {
    let ctx = bochs_context();
    let junk = EptEntry::from_raw(!0b111 & !(1 << 10));
    for level in ALL_LEVELS {
        assert_eq!(junk.misconfiguration(level, &ctx), None);
    }
}

#[test]
fn eptp_fields() {
    let eptp = Eptp::new(0x12_3456_7000, EptMemoryType::WriteBack, 4, true).unwrap();
    assert_eq!(eptp.raw(), 0x12_3456_7000 | 6 | (3 << 3) | (1 << 6));
    assert_eq!(eptp.memory_type(), Some(EptMemoryType::WriteBack));
    assert_eq!(eptp.walk_levels(), 4);
    assert_eq!(eptp.root_level(), Some(EptLevel::Pml4e));
    assert!(eptp.accessed_dirty_enabled());
    assert!(!eptp.supervisor_shadow_stack());
    assert_eq!(eptp.root_address(), 0x12_3456_7000);
    assert!(Eptp::from_raw(1 << 7).supervisor_shadow_stack());
    assert_eq!(
        Eptp::new(0x1001, EptMemoryType::WriteBack, 4, false),
        Err(EptpBuildError::RootNotPageAligned(0x1001))
    );
    assert_eq!(
        Eptp::new(1 << 52, EptMemoryType::WriteBack, 4, false),
        Err(EptpBuildError::RootTooWide(1 << 52))
    );
    assert_eq!(
        Eptp::new(0, EptMemoryType::WriteBack, 3, false),
        Err(EptpBuildError::InvalidWalkLevels(3))
    );
    assert_eq!(
        Eptp::new(0, EptMemoryType::WriteBack, 5, false)
            .unwrap()
            .root_level(),
        Some(EptLevel::Pml5e)
    );
}

#[test]
fn eptp_validate_against_bochs() {
    let caps = VmxCapabilities::bochs_skylake_x();
    let good = Eptp::new(0x10_0000, EptMemoryType::WriteBack, 4, true).unwrap();
    assert_eq!(good.validate(&caps, 39), Ok(()));
    let uc = Eptp::new(0x10_0000, EptMemoryType::Uncacheable, 4, false).unwrap();
    assert_eq!(uc.validate(&caps, 39), Ok(()));

    let with = |bits: u64| Eptp::from_raw(good.raw() | bits).validate(&caps, 39);
    let base = good.raw() & !0b111;
    for memory_type in [1u64, 2, 3, 4, 5, 7] {
        assert_eq!(
            Eptp::from_raw(base | memory_type).validate(&caps, 39),
            Err(EptpError::UnsupportedMemoryType(memory_type as u8))
        );
    }
    // Walk lengths: 5 is unsupported on Bochs, and 1, 2, 3, 6, 7, 8 never are.
    let no_walk = good.raw() & !(0b111 << 3);
    for field in 0u64..8 {
        let result = Eptp::from_raw(no_walk | (field << 3)).validate(&caps, 39);
        if field == 3 {
            assert_eq!(result, Ok(()));
        } else {
            assert_eq!(
                result,
                Err(EptpError::UnsupportedWalkLength(field as u8 + 1))
            );
        }
    }
    assert_eq!(
        with(1 << 7),
        Err(EptpError::SupervisorShadowStackNotSupported)
    );
    assert_eq!(
        with(1 << 8),
        Err(EptpError::ReservedBitsSet { mask: 1 << 8 })
    );
    assert_eq!(with(0xF00), Err(EptpError::ReservedBitsSet { mask: 0xF00 }));
    assert_eq!(
        with(1 << 39),
        Err(EptpError::AddressBeyondMaxPhyAddr { mask: 1 << 39 })
    );
    assert_eq!(
        with(1 << 63),
        Err(EptpError::AddressBeyondMaxPhyAddr { mask: 1 << 63 })
    );
    assert_eq!(
        Eptp::from_raw(good.raw() | (1 << 45)).validate(&caps, 46),
        Ok(())
    );

    let mut no_ad = caps;
    no_ad.ept_vpid =
        hv_arch_vmx::capabilities::EptVpidCap::from_raw(caps.ept_vpid.raw() & !(1 << 21));
    assert_eq!(
        good.validate(&no_ad, 39),
        Err(EptpError::AccessedDirtyNotSupported)
    );
    let mut no_wb = caps;
    no_wb.ept_vpid =
        hv_arch_vmx::capabilities::EptVpidCap::from_raw(caps.ept_vpid.raw() & !(1 << 14));
    assert_eq!(
        good.validate(&no_wb, 39),
        Err(EptpError::UnsupportedMemoryType(6))
    );
}

#[test]
fn descriptor_layouts() {
    assert_eq!(size_of::<InveptDescriptor>(), 16);
    assert_eq!(align_of::<InveptDescriptor>(), 16);
    assert_eq!(size_of::<InvvpidDescriptor>(), 16);
    assert_eq!(align_of::<InvvpidDescriptor>(), 16);
    let d = InvvpidDescriptor::new(0x1234, 0xFFFF_8000_0000_1000);
    // SAFETY: InvvpidDescriptor is repr(C), 16 bytes, with no padding.
    let bytes: [u8; 16] = unsafe { core::mem::transmute(d) };
    assert_eq!(&bytes[0..2], &0x1234u16.to_le_bytes());
    assert_eq!(&bytes[2..8], &[0; 6]);
    assert_eq!(&bytes[8..16], &0xFFFF_8000_0000_1000u64.to_le_bytes());
    let e = InveptDescriptor::new(Eptp::from_raw(0xABCD_E05E));
    // SAFETY: InveptDescriptor is repr(C), two u64 fields, no padding.
    let bytes: [u8; 16] = unsafe { core::mem::transmute(e) };
    assert_eq!(&bytes[0..8], &0xABCD_E05Eu64.to_le_bytes());
    assert_eq!(&bytes[8..16], &[0; 8]);
}

#[test]
fn invalidation_types_supported_on_bochs() {
    let cap = VmxCapabilities::bochs_skylake_x().ept_vpid;
    assert!(InveptType::SingleContext.is_supported(&cap));
    assert!(InveptType::Global.is_supported(&cap));
    for raw in 0..4 {
        assert!(InvvpidType::from_raw(raw).unwrap().is_supported(&cap));
    }
    let no_invept = hv_arch_vmx::capabilities::EptVpidCap::from_raw(cap.raw() & !(1 << 20));
    assert!(!InveptType::Global.is_supported(&no_invept));
    let no_single = hv_arch_vmx::capabilities::EptVpidCap::from_raw(cap.raw() & !(1 << 41));
    assert!(!InvvpidType::SingleContext.is_supported(&no_single));
    assert!(InvvpidType::AllContext.is_supported(&no_single));
}

#[test]
fn invvpid_descriptor_validation() {
    let w = LinearAddressWidth::Bits48;
    let ok = InvvpidDescriptor::new(1, 0x7FFF_FFFF_F000);
    for t in [
        InvvpidType::IndividualAddress,
        InvvpidType::SingleContext,
        InvvpidType::AllContext,
        InvvpidType::SingleContextRetainingGlobals,
    ] {
        assert_eq!(ok.validate(t, w), Ok(()));
        let mut reserved = ok;
        reserved.reserved[2] = 1;
        assert_eq!(
            reserved.validate(t, w),
            Err(InvalidationError::ReservedBitsSet)
        );
    }
    let vpid0 = InvvpidDescriptor::new(0, 0);
    assert_eq!(
        vpid0.validate(InvvpidType::IndividualAddress, w),
        Err(InvalidationError::ZeroVpid)
    );
    assert_eq!(
        vpid0.validate(InvvpidType::SingleContext, w),
        Err(InvalidationError::ZeroVpid)
    );
    assert_eq!(
        vpid0.validate(InvvpidType::SingleContextRetainingGlobals, w),
        Err(InvalidationError::ZeroVpid)
    );
    assert_eq!(vpid0.validate(InvvpidType::AllContext, w), Ok(()));
    let noncanonical = InvvpidDescriptor::new(1, 0x0000_8000_0000_0000);
    assert_eq!(
        noncanonical.validate(InvvpidType::IndividualAddress, w),
        Err(InvalidationError::NonCanonicalAddress(
            0x0000_8000_0000_0000
        ))
    );
    // The address only matters for the individual-address type.
    assert_eq!(noncanonical.validate(InvvpidType::SingleContext, w), Ok(()));
    assert_eq!(
        noncanonical.validate(InvvpidType::IndividualAddress, LinearAddressWidth::Bits57),
        Ok(())
    );
}

#[test]
fn invept_descriptor_validation() {
    let caps = VmxCapabilities::bochs_skylake_x();
    let bad = InveptDescriptor {
        eptp: 0x1000 | (3 << 3) | 2,
        reserved: 0,
    };
    assert_eq!(bad.validate(InveptType::Global, &caps, 39), Ok(()));
    assert_eq!(
        bad.validate(InveptType::SingleContext, &caps, 39),
        Err(EptpError::UnsupportedMemoryType(2))
    );
    let good =
        InveptDescriptor::new(Eptp::new(0x1000, EptMemoryType::WriteBack, 4, false).unwrap());
    assert_eq!(good.validate(InveptType::SingleContext, &caps, 39), Ok(()));
}

proptest! {
    #[test]
    fn misconfiguration_never_panics(
        raw in any::<u64>(),
        level in 1u8..=5,
        maxphyaddr in any::<u8>(),
        flags in any::<[bool; 4]>(),
    ) {
        let ctx = EptWalkContext {
            maxphyaddr,
            execute_only: flags[0],
            pages_2m: flags[1],
            pages_1g: flags[2],
            mode_based_execute: flags[3],
        };
        let level = EptLevel::from_number(level).unwrap();
        let entry = EptEntry::from_raw(raw);
        let result = entry.misconfiguration(level, &ctx);
        if !entry.is_present(ctx.mode_based_execute) {
            prop_assert_eq!(result, None);
        }
        if let Some(EptMisconfiguration::ReservedBitsSet { mask }) = result {
            prop_assert_eq!(mask & !raw, 0);
        }
        let _ = (entry.page_frame(level), entry.translate(level, raw), entry.memory_type());
    }

    #[test]
    fn eptp_validate_never_panics(raw in any::<u64>(), cap in any::<u64>(), maxphyaddr in any::<u8>()) {
        let mut caps = VmxCapabilities::bochs_skylake_x();
        caps.ept_vpid = hv_arch_vmx::capabilities::EptVpidCap::from_raw(cap);
        let eptp = Eptp::from_raw(raw);
        let _ = (eptp.validate(&caps, maxphyaddr), eptp.root_level(), eptp.walk_levels());
    }

    #[test]
    fn built_entries_are_well_formed(page in 0u64..(1 << 27), level in 1u8..=3, perms in 0u64..8) {
        let level = EptLevel::from_number(level).unwrap();
        let address = (page << 12) & !(level.coverage() - 1);
        let perms = EptPermissions::from_bits_truncate(perms | 1);
        let entry = EptEntry::leaf(level, address, perms, EptMemoryType::WriteBack).unwrap();
        prop_assert_eq!(entry.misconfiguration(level, &bochs_context()), None);
        prop_assert_eq!(entry.page_frame(level), Some(address));
        prop_assert_eq!(entry.permissions(), perms);
    }

    #[test]
    fn invvpid_validate_never_panics(vpid in any::<u16>(), reserved in any::<[u16; 3]>(), address in any::<u64>(), t in 0u64..4) {
        let d = InvvpidDescriptor { vpid, reserved, linear_address: address };
        let t = InvvpidType::from_raw(t).unwrap();
        let _ = d.validate(t, LinearAddressWidth::Bits48);
        let _ = d.validate(t, LinearAddressWidth::Bits57);
    }
}
