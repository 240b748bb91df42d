//! Known-good VMCS images: templates that pass every VM-entry check.
//!
//! Each function builds a complete [`VmcsImage`] for a common guest mode on a
//! 64-bit host, with the control words adjusted against a
//! [`VmxCapabilities`] (wanted features that the processor does not allow
//! are dropped; must-be-1 bits are added). With
//! [`VmxCapabilities::bochs_skylake_x`] and an [`EntryContext`] whose
//! MAXPHYADDR is at least 32 and whose VMXON pointer is not one of the
//! addresses below, [`check_vm_entry`](super::check_vm_entry) accepts every
//! image built here.
//!
//! Tests start from these images and change one field to provoke exactly one
//! failed check; hv-core uses them as the template for VMCS02 tests. All
//! physical addresses are 4-KiB aligned and below 4 GiB.
//!
//! [`EntryContext`]: super::EntryContext

use crate::capabilities::{AllowedSettings, VmxCapabilities};
use crate::controls::{
    EntryControls, ExitControls, PinBasedControls, PrimaryProcControls, SecondaryProcControls,
};
use crate::vmcs::{VmcsField, VmcsImage};

/// Physical address of I/O bitmap A.
pub const IO_BITMAP_A: u64 = 0x0001_0000;
/// Physical address of I/O bitmap B.
pub const IO_BITMAP_B: u64 = 0x0001_1000;
/// Physical address of the MSR bitmaps.
pub const MSR_BITMAP: u64 = 0x0001_2000;
/// Physical address of the EPT PML4 table referenced by the EPTP.
pub const EPT_PML4: u64 = 0x0002_0000;
/// Host CR3: physical address of the host's PML4 table.
pub const HOST_CR3: u64 = 0x0003_0000;
/// Guest CR3: guest-physical address of the guest's top paging structure.
pub const GUEST_CR3: u64 = 0x0004_0000;
/// Host RIP: where VM exits resume (canonical, upper half).
pub const HOST_RIP: u64 = 0xffff_ffff_8010_0000;
/// Host RSP (canonical, upper half).
pub const HOST_RSP: u64 = 0xffff_ffff_8020_0000;
/// Host GDTR base (canonical).
pub const HOST_GDTR_BASE: u64 = 0xffff_ffff_8030_0000;
/// Host IDTR base (canonical).
pub const HOST_IDTR_BASE: u64 = 0xffff_ffff_8030_1000;
/// Host TR base (canonical).
pub const HOST_TR_BASE: u64 = 0xffff_ffff_8030_2000;
/// Guest GDTR base.
pub const GUEST_GDTR_BASE: u64 = 0x0000_5000;
/// Guest IDTR base.
pub const GUEST_IDTR_BASE: u64 = 0x0000_6000;
/// Guest TR base.
pub const GUEST_TR_BASE: u64 = 0x0000_7000;
/// Guest RIP for the paged guests.
pub const GUEST_RIP: u64 = 0x0010_0000;
/// Guest RSP for the paged guests.
pub const GUEST_RSP: u64 = 0x0020_0000;
/// The VPID the templates use (VPID 0 is reserved for VMX root operation).
pub const VPID: u64 = 1;
/// A valid `IA32_PAT` value (WB, WT, UC-, UC repeated; the power-on default
/// is `0x0007_0406_0007_0406`).
pub const PAT: u64 = 0x0007_0406_0007_0406;

/// Code selector (GDT index 1, RPL 0).
const CODE_SELECTOR: u64 = 0x08;
/// Data/stack selector (GDT index 2, RPL 0).
const DATA_SELECTOR: u64 = 0x10;
/// TSS selector (GDT index 3, RPL 0).
const TSS_SELECTOR: u64 = 0x18;

// CR0 bits (SDM Vol. 3A 2.5).
const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
// CR4 bits (SDM Vol. 3A 2.5).
const CR4_PAE: u64 = 1 << 5;
// IA32_EFER bits (SDM Vol. 3A 2.2.1).
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS with only the reserved always-1 bit 1 set.
const RFLAGS_RESERVED_ONE: u64 = 0x2;
/// DR7 after reset: bit 10 is reserved and reads as 1.
const DR7_RESET: u64 = 0x400;
/// "Unusable" bit of a segment's access rights (SDM 25.4.1, Table 25-2).
const AR_UNUSABLE: u64 = 1 << 16;
/// Busy 64-bit TSS (type 11), present.
const AR_TSS_BUSY: u64 = 0x008b;
/// The VMCS link pointer value meaning "no shadow VMCS" (SDM 27.3.1.5).
const NO_LINK_POINTER: u64 = u64::MAX;
/// EPTP memory type write-back (SDM 29.3.7 / 25.6.11, Table 25-9).
const EPTP_WRITE_BACK: u64 = 6;
/// EPTP bits 5:3: page-walk length minus 1 (3 = 4-level).
const EPTP_FOUR_LEVEL: u64 = 3 << 3;
/// EPTP bit 6: enable accessed and dirty flags.
const EPTP_ACCESSED_DIRTY: u64 = 1 << 6;

/// `wanted` restricted to the bits `allowed` permits to be 1, plus the bits
/// it requires to be 1.
const fn adjust(allowed: AllowedSettings, wanted: u64) -> u64 {
    (wanted & allowed.may_be_one) | allowed.must_be_one
}

/// The EPTP the templates use: write-back, 4-level, at [`EPT_PML4`], with
/// accessed/dirty flags when the processor supports them.
pub const fn eptp(caps: &VmxCapabilities) -> u64 {
    let accessed_dirty = if caps.ept_vpid.accessed_dirty() {
        EPTP_ACCESSED_DIRTY
    } else {
        0
    };
    EPT_PML4 | EPTP_WRITE_BACK | EPTP_FOUR_LEVEL | accessed_dirty
}

/// Control fields shared by all templates; `secondary_wanted` and
/// `entry_wanted` are the per-mode parts.
fn set_controls(
    image: &mut VmcsImage,
    caps: &VmxCapabilities,
    secondary_wanted: SecondaryProcControls,
    entry_wanted: EntryControls,
) {
    let pin = PinBasedControls::EXTERNAL_INTERRUPT_EXITING
        | PinBasedControls::NMI_EXITING
        | PinBasedControls::VIRTUAL_NMIS;
    let primary = PrimaryProcControls::HLT_EXITING
        | PrimaryProcControls::USE_MSR_BITMAPS
        | PrimaryProcControls::USE_IO_BITMAPS
        | PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS;
    let exit = ExitControls::HOST_ADDRESS_SPACE_SIZE
        | ExitControls::SAVE_IA32_EFER
        | ExitControls::LOAD_IA32_EFER
        | ExitControls::LOAD_IA32_PAT
        | ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT;

    let primary = adjust(caps.primary_proc, u64::from(primary.bits()));
    let secondary =
        if primary & u64::from(PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS.bits()) != 0 {
            adjust(caps.secondary_proc, u64::from(secondary_wanted.bits()))
        } else {
            0
        };
    image.set(
        VmcsField::PinBasedControls,
        adjust(caps.pin_based, u64::from(pin.bits())),
    );
    image.set(VmcsField::PrimaryProcBasedControls, primary);
    image.set(VmcsField::SecondaryProcBasedControls, secondary);
    image.set(
        VmcsField::PrimaryVmExitControls,
        adjust(caps.primary_exit, u64::from(exit.bits())),
    );
    image.set(
        VmcsField::VmEntryControls,
        adjust(caps.entry, u64::from(entry_wanted.bits())),
    );

    image.set(VmcsField::IoBitmapA, IO_BITMAP_A);
    image.set(VmcsField::IoBitmapB, IO_BITMAP_B);
    image.set(VmcsField::MsrBitmap, MSR_BITMAP);
    if secondary & u64::from(SecondaryProcControls::ENABLE_VPID.bits()) != 0 {
        image.set(VmcsField::VirtualProcessorId, VPID);
    }
    if secondary & u64::from(SecondaryProcControls::ENABLE_EPT.bits()) != 0 {
        image.set(VmcsField::EptPointer, eptp(caps));
    }
}

/// The host-state area of a 64-bit host (SDM 27.2.2-27.2.4, 28.5).
fn set_host_state(image: &mut VmcsImage, caps: &VmxCapabilities) {
    let cr0 = caps
        .cr0_fixed
        .apply(CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG);
    let cr4 = caps.cr4_fixed.apply(CR4_PAE);
    image.set(VmcsField::HostCr0, cr0);
    image.set(VmcsField::HostCr3, HOST_CR3);
    image.set(VmcsField::HostCr4, cr4);
    image.set(VmcsField::HostCsSelector, CODE_SELECTOR);
    for field in [
        VmcsField::HostSsSelector,
        VmcsField::HostDsSelector,
        VmcsField::HostEsSelector,
        VmcsField::HostFsSelector,
        VmcsField::HostGsSelector,
    ] {
        image.set(field, DATA_SELECTOR);
    }
    image.set(VmcsField::HostTrSelector, TSS_SELECTOR);
    image.set(VmcsField::HostFsBase, 0);
    image.set(VmcsField::HostGsBase, 0);
    image.set(VmcsField::HostTrBase, HOST_TR_BASE);
    image.set(VmcsField::HostGdtrBase, HOST_GDTR_BASE);
    image.set(VmcsField::HostIdtrBase, HOST_IDTR_BASE);
    image.set(VmcsField::HostSysenterCs, 0);
    image.set(VmcsField::HostSysenterEsp, 0);
    image.set(VmcsField::HostSysenterEip, 0);
    image.set(VmcsField::HostRip, HOST_RIP);
    image.set(VmcsField::HostRsp, HOST_RSP);
    image.set(VmcsField::HostEfer, EFER_LME | EFER_LMA);
    image.set(VmcsField::HostPat, PAT);
}

/// Guest state common to every mode: link pointer, activity, events,
/// debug registers, MSRs that are loaded, LDTR unusable.
fn set_common_guest_state(image: &mut VmcsImage) {
    image.set(VmcsField::VmcsLinkPointer, NO_LINK_POINTER);
    image.set(VmcsField::GuestActivityState, 0);
    image.set(VmcsField::GuestInterruptibilityState, 0);
    image.set(VmcsField::GuestPendingDebugExceptions, 0);
    image.set(VmcsField::GuestDr7, DR7_RESET);
    image.set(VmcsField::GuestDebugCtl, 0);
    image.set(VmcsField::GuestRflags, RFLAGS_RESERVED_ONE);
    image.set(VmcsField::GuestPat, PAT);
    image.set(VmcsField::GuestLdtrSelector, 0);
    image.set(VmcsField::GuestLdtrBase, 0);
    image.set(VmcsField::GuestLdtrLimit, 0);
    image.set(VmcsField::GuestLdtrAccessRights, AR_UNUSABLE);
}

/// Sets one guest segment register.
fn set_guest_segment(
    image: &mut VmcsImage,
    [selector, base, limit, rights]: [VmcsField; 4],
    values: [u64; 4],
) {
    image.set(selector, values[0]);
    image.set(base, values[1]);
    image.set(limit, values[2]);
    image.set(rights, values[3]);
}

/// Selector, base, limit and access-rights fields of ES, SS, DS, FS, GS.
const GUEST_DATA_SEGMENTS: [[VmcsField; 4]; 5] = [
    [
        VmcsField::GuestEsSelector,
        VmcsField::GuestEsBase,
        VmcsField::GuestEsLimit,
        VmcsField::GuestEsAccessRights,
    ],
    [
        VmcsField::GuestSsSelector,
        VmcsField::GuestSsBase,
        VmcsField::GuestSsLimit,
        VmcsField::GuestSsAccessRights,
    ],
    [
        VmcsField::GuestDsSelector,
        VmcsField::GuestDsBase,
        VmcsField::GuestDsLimit,
        VmcsField::GuestDsAccessRights,
    ],
    [
        VmcsField::GuestFsSelector,
        VmcsField::GuestFsBase,
        VmcsField::GuestFsLimit,
        VmcsField::GuestFsAccessRights,
    ],
    [
        VmcsField::GuestGsSelector,
        VmcsField::GuestGsBase,
        VmcsField::GuestGsLimit,
        VmcsField::GuestGsAccessRights,
    ],
];

/// Selector, base, limit and access-rights fields of CS.
const GUEST_CS: [VmcsField; 4] = [
    VmcsField::GuestCsSelector,
    VmcsField::GuestCsBase,
    VmcsField::GuestCsLimit,
    VmcsField::GuestCsAccessRights,
];

/// Selector, base, limit and access-rights fields of TR.
const GUEST_TR: [VmcsField; 4] = [
    VmcsField::GuestTrSelector,
    VmcsField::GuestTrBase,
    VmcsField::GuestTrLimit,
    VmcsField::GuestTrAccessRights,
];

/// Flat protected-mode segments: CS with access rights `cs_rights`, data
/// segments 0xc093 (read/write accessed, D/B, G), a busy TSS, and
/// GDTR/IDTR.
fn set_flat_guest_segments(image: &mut VmcsImage, cs_rights: u64) {
    set_guest_segment(image, GUEST_CS, [CODE_SELECTOR, 0, 0xffff_ffff, cs_rights]);
    for segment in GUEST_DATA_SEGMENTS {
        set_guest_segment(image, segment, [DATA_SELECTOR, 0, 0xffff_ffff, 0xc093]);
    }
    set_guest_segment(
        image,
        GUEST_TR,
        [TSS_SELECTOR, GUEST_TR_BASE, 0x67, AR_TSS_BUSY],
    );
    image.set(VmcsField::GuestGdtrBase, GUEST_GDTR_BASE);
    image.set(VmcsField::GuestGdtrLimit, 0x27);
    image.set(VmcsField::GuestIdtrBase, GUEST_IDTR_BASE);
    image.set(VmcsField::GuestIdtrLimit, 0xfff);
}

/// A VMCS for a 64-bit guest on a 64-bit host that passes every VM-entry
/// check.
///
/// Controls (each kept only if `caps` allows it, plus every must-be-1 bit):
/// - pin-based: external-interrupt exiting, NMI exiting, virtual NMIs;
/// - primary: HLT exiting, use I/O bitmaps, use MSR bitmaps, activate
///   secondary controls;
/// - secondary: enable EPT ([`eptp`]: WB, 4-level), enable VPID ([`VPID`]),
///   enable RDTSCP;
/// - exit: host address-space size, save/load `IA32_EFER`, load `IA32_PAT`,
///   acknowledge interrupt on exit;
/// - entry: IA-32e mode guest, load `IA32_EFER`, load `IA32_PAT`.
///
/// Host: CR0 PE|MP|ET|NE|WP|PG and CR4 PAE adjusted to the fixed bits, CR3
/// [`HOST_CR3`], CS 0x08, SS/DS/ES/FS/GS 0x10, TR 0x18, EFER LME|LMA, PAT
/// [`PAT`]. Guest: the same CR0, CR4 PAE (+ VMXE via the fixed bits), EFER
/// LME|LMA, flat segments (CS 0x08 with L=1, data 0x10, busy TSS 0x18), LDTR
/// unusable, RFLAGS 0x2, DR7 0x400, active, no event blocking, VMCS link
/// pointer all ones.
pub fn long_mode_guest(caps: &VmxCapabilities) -> VmcsImage {
    let mut image = VmcsImage::new();
    set_controls(
        &mut image,
        caps,
        SecondaryProcControls::ENABLE_EPT
            | SecondaryProcControls::ENABLE_VPID
            | SecondaryProcControls::ENABLE_RDTSCP,
        EntryControls::IA32E_MODE_GUEST
            | EntryControls::LOAD_IA32_EFER
            | EntryControls::LOAD_IA32_PAT,
    );
    set_host_state(&mut image, caps);
    set_common_guest_state(&mut image);
    image.set(
        VmcsField::GuestCr0,
        caps.cr0_fixed
            .apply(CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG),
    );
    image.set(VmcsField::GuestCr3, GUEST_CR3);
    image.set(VmcsField::GuestCr4, caps.cr4_fixed.apply(CR4_PAE));
    image.set(VmcsField::GuestEfer, EFER_LME | EFER_LMA);
    // CS: type 11 (execute/read, accessed), S, P, L=1, G=1.
    set_flat_guest_segments(&mut image, 0xa09b);
    image.set(VmcsField::GuestRip, GUEST_RIP);
    image.set(VmcsField::GuestRsp, GUEST_RSP);
    image
}

/// A VMCS for a 32-bit protected-mode guest with 32-bit paging (CR0.PG = 1,
/// CR4.PAE = 0, EFER.LME = LMA = 0; no PDPTEs involved) on a 64-bit host.
///
/// The same controls as [`long_mode_guest`] except that "IA-32e mode guest"
/// is 0; CS is a 32-bit code segment (access rights 0xc09b: D=1, G=1).
pub fn protected_mode_guest(caps: &VmxCapabilities) -> VmcsImage {
    let mut image = VmcsImage::new();
    set_controls(
        &mut image,
        caps,
        SecondaryProcControls::ENABLE_EPT
            | SecondaryProcControls::ENABLE_VPID
            | SecondaryProcControls::ENABLE_RDTSCP,
        EntryControls::LOAD_IA32_EFER | EntryControls::LOAD_IA32_PAT,
    );
    set_host_state(&mut image, caps);
    set_common_guest_state(&mut image);
    image.set(
        VmcsField::GuestCr0,
        caps.cr0_fixed
            .apply(CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG),
    );
    image.set(VmcsField::GuestCr3, GUEST_CR3);
    image.set(VmcsField::GuestCr4, caps.cr4_fixed.apply(0));
    image.set(VmcsField::GuestEfer, 0);
    set_flat_guest_segments(&mut image, 0xc09b);
    image.set(VmcsField::GuestRip, GUEST_RIP);
    image.set(VmcsField::GuestRsp, GUEST_RSP);
    image
}

/// A VMCS for a real-address-mode guest (CR0.PE = PG = 0) run with
/// "unrestricted guest" and EPT, on a 64-bit host; the guest starts at
/// 0000:7C00 like a boot sector.
///
/// Needs "unrestricted guest" (SDM 25.6.2): if `caps` does not allow it,
/// the image is built anyway but fails the guest CR0 checks.
/// Segments are real-mode style: selector 0, base 0, limit 0xffff, CS access
/// rights 0x9b and data 0x93 (DPL 0, present, byte granular), TR a busy
/// 16-bit-limit TSS, LDTR unusable; CR4 has only its fixed-1 bits.
pub fn unrestricted_real_mode_guest(caps: &VmxCapabilities) -> VmcsImage {
    let mut image = VmcsImage::new();
    set_controls(
        &mut image,
        caps,
        SecondaryProcControls::ENABLE_EPT
            | SecondaryProcControls::ENABLE_VPID
            | SecondaryProcControls::UNRESTRICTED_GUEST,
        EntryControls::LOAD_IA32_EFER | EntryControls::LOAD_IA32_PAT,
    );
    set_host_state(&mut image, caps);
    set_common_guest_state(&mut image);
    // SDM 27.3.1.1: with unrestricted guest, CR0.PE and CR0.PG are free.
    let cr0_fixed = caps.cr0_fixed.freeing(CR0_PE | CR0_PG);
    image.set(VmcsField::GuestCr0, cr0_fixed.apply(CR0_ET | CR0_NE));
    image.set(VmcsField::GuestCr3, 0);
    image.set(VmcsField::GuestCr4, caps.cr4_fixed.apply(0));
    image.set(VmcsField::GuestEfer, 0);
    set_guest_segment(&mut image, GUEST_CS, [0, 0, 0xffff, 0x9b]);
    for segment in GUEST_DATA_SEGMENTS {
        set_guest_segment(&mut image, segment, [0, 0, 0xffff, 0x93]);
    }
    set_guest_segment(&mut image, GUEST_TR, [0, 0, 0xffff, AR_TSS_BUSY]);
    image.set(VmcsField::GuestGdtrBase, 0);
    image.set(VmcsField::GuestGdtrLimit, 0xffff);
    image.set(VmcsField::GuestIdtrBase, 0);
    image.set(VmcsField::GuestIdtrLimit, 0x3ff);
    image.set(VmcsField::GuestRip, 0x7c00);
    image.set(VmcsField::GuestRsp, 0x7000);
    image
}
