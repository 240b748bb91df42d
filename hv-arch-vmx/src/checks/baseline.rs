//! Known-good VMCS images: templates that pass every VM-entry check.
//!
//! Each function builds a complete [`VmcsImage`] for a common guest mode on a
//! 64-bit host, with the control words adjusted against a
//! [`VmxCapabilities`] (wanted features that the processor does not allow
//! are dropped; must-be-1 bits are added). With
//! [`VmxCapabilities::bochs_skylake_x`] and an [`EntryContext`] whose
//! MAXPHYADDR is at least 32, [`check_vm_entry`](super::check_vm_entry)
//! accepts every image built here (the VMCS link pointer is all ones, so the
//! current-VMCS pointer does not matter).
//!
//! Tests start from these images and change one field to provoke exactly one
//! failed check; hv-core uses them as the template for VMCS02 tests. All
//! physical addresses are 4-KiB aligned and below 4 GiB.
//!
//! [`EntryContext`]: super::EntryContext

use super::guest::{SegmentAccessRights, SegmentRegister};
use super::util::NO_LINK_POINTER;
use crate::capabilities::{AllowedSettings, VmxCapabilities};
use crate::controls::{
    EntryControls, ExitControls, PinBasedControls, PrimaryProcControls, SecondaryProcControls,
};
use crate::ept::{EptMemoryType, Eptp};
use crate::registers::{Cr0, Cr4, Dr7, Efer, PAT_RESET, Rflags};
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
/// A valid `IA32_PAT` value: the power-on default `0x0007_0406_0007_0406`
/// (WB, WT, UC-, UC repeated).
pub const PAT: u64 = PAT_RESET;

/// Code selector (GDT index 1, RPL 0).
const CODE_SELECTOR: u64 = 0x08;
/// Data/stack selector (GDT index 2, RPL 0).
const DATA_SELECTOR: u64 = 0x10;
/// TSS selector (GDT index 3, RPL 0).
const TSS_SELECTOR: u64 = 0x18;

/// CR0 of the paged templates and the host: PE, MP, ET, NE, WP, PG.
const PAGED_CR0: Cr0 = Cr0::PE
    .union(Cr0::MP)
    .union(Cr0::ET)
    .union(Cr0::NE)
    .union(Cr0::WP)
    .union(Cr0::PG);
/// EFER of a 64-bit host or guest: LME and LMA.
const LONG_MODE_EFER: Efer = Efer::LME.union(Efer::LMA);
/// Busy 64-bit TSS (type 11), present.
const AR_TSS_BUSY: u64 = 0x008b;
/// EPTP bits 5:3: page-walk length minus 1 (3 = 4-level).
const EPTP_FOUR_LEVEL: u64 = (4 - 1) << 3;

/// `wanted` restricted to the bits `allowed` permits to be 1, plus the bits
/// it requires to be 1.
const fn adjust(allowed: AllowedSettings, wanted: u64) -> u64 {
    (wanted & allowed.may_be_one) | allowed.must_be_one
}

/// The EPTP the templates use: write-back, 4-level, at [`EPT_PML4`], with
/// accessed/dirty flags when the processor supports them.
pub const fn eptp(caps: &VmxCapabilities) -> u64 {
    let accessed_dirty = if caps.ept_vpid.accessed_dirty() {
        Eptp::ACCESSED_DIRTY
    } else {
        0
    };
    EPT_PML4 | EptMemoryType::WriteBack.bits() as u64 | EPTP_FOUR_LEVEL | accessed_dirty
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
    let cr0 = caps.cr0_fixed.apply(PAGED_CR0.bits());
    let cr4 = caps.cr4_fixed.apply(Cr4::PAE.bits());
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
    image.set(VmcsField::HostEfer, LONG_MODE_EFER.bits());
    image.set(VmcsField::HostPat, PAT);
}

/// Guest state common to every mode: link pointer, activity, events,
/// debug registers, MSRs that are loaded, LDTR unusable.
fn set_common_guest_state(image: &mut VmcsImage) {
    image.set(VmcsField::VmcsLinkPointer, NO_LINK_POINTER);
    image.set(VmcsField::GuestActivityState, 0);
    image.set(VmcsField::GuestInterruptibilityState, 0);
    image.set(VmcsField::GuestPendingDebugExceptions, 0);
    image.set(VmcsField::GuestDr7, Dr7::RESET.bits());
    image.set(VmcsField::GuestDebugCtl, 0);
    image.set(VmcsField::GuestRflags, Rflags::RESERVED_ONE.bits());
    image.set(VmcsField::GuestPat, PAT);
    image.set(VmcsField::GuestLdtrSelector, 0);
    image.set(VmcsField::GuestLdtrBase, 0);
    image.set(VmcsField::GuestLdtrLimit, 0);
    image.set(
        VmcsField::GuestLdtrAccessRights,
        u64::from(SegmentAccessRights::UNUSABLE),
    );
}

/// Sets the selector, base, limit and access rights of one guest segment
/// register.
fn set_guest_segment(image: &mut VmcsImage, register: SegmentRegister, values: [u64; 4]) {
    for (field, value) in register.fields().into_iter().zip(values) {
        image.set(field, value);
    }
}

/// ES, SS, DS, FS, GS: the registers that get data-segment values.
const GUEST_DATA_SEGMENTS: [SegmentRegister; 5] = [
    SegmentRegister::Es,
    SegmentRegister::Ss,
    SegmentRegister::Ds,
    SegmentRegister::Fs,
    SegmentRegister::Gs,
];

/// Flat protected-mode segments: CS with access rights `cs_rights`, data
/// segments 0xc093 (read/write accessed, D/B, G), a busy TSS, and
/// GDTR/IDTR.
fn set_flat_guest_segments(image: &mut VmcsImage, cs_rights: u64) {
    set_guest_segment(
        image,
        SegmentRegister::Cs,
        [CODE_SELECTOR, 0, 0xffff_ffff, cs_rights],
    );
    for segment in GUEST_DATA_SEGMENTS {
        set_guest_segment(image, segment, [DATA_SELECTOR, 0, 0xffff_ffff, 0xc093]);
    }
    set_guest_segment(
        image,
        SegmentRegister::Tr,
        [TSS_SELECTOR, GUEST_TR_BASE, 0x67, AR_TSS_BUSY],
    );
    image.set(VmcsField::GuestGdtrBase, GUEST_GDTR_BASE);
    image.set(VmcsField::GuestGdtrLimit, 0x27);
    image.set(VmcsField::GuestIdtrBase, GUEST_IDTR_BASE);
    image.set(VmcsField::GuestIdtrLimit, 0xfff);
}

/// A template with the controls, the host state and the mode-independent
/// guest state set: [`set_controls`], [`set_host_state`],
/// [`set_common_guest_state`].
fn template(
    caps: &VmxCapabilities,
    secondary_wanted: SecondaryProcControls,
    entry_wanted: EntryControls,
) -> VmcsImage {
    let mut image = VmcsImage::new();
    set_controls(&mut image, caps, secondary_wanted, entry_wanted);
    set_host_state(&mut image, caps);
    set_common_guest_state(&mut image);
    image
}

/// A guest with paging on: enable EPT, VPID and RDTSCP, CR0 [`PAGED_CR0`]
/// and CR3 [`GUEST_CR3`], flat segments with CS access rights `cs_rights`,
/// [`GUEST_RIP`] and [`GUEST_RSP`]; `entry_wanted`, `cr4` (before the fixed
/// bits) and `efer` select the paging mode.
fn paged_guest(
    caps: &VmxCapabilities,
    entry_wanted: EntryControls,
    cr4: Cr4,
    efer: Efer,
    cs_rights: u64,
) -> VmcsImage {
    let mut image = template(
        caps,
        SecondaryProcControls::ENABLE_EPT
            | SecondaryProcControls::ENABLE_VPID
            | SecondaryProcControls::ENABLE_RDTSCP,
        entry_wanted,
    );
    image.set(VmcsField::GuestCr0, caps.cr0_fixed.apply(PAGED_CR0.bits()));
    image.set(VmcsField::GuestCr3, GUEST_CR3);
    image.set(VmcsField::GuestCr4, caps.cr4_fixed.apply(cr4.bits()));
    image.set(VmcsField::GuestEfer, efer.bits());
    set_flat_guest_segments(&mut image, cs_rights);
    image.set(VmcsField::GuestRip, GUEST_RIP);
    image.set(VmcsField::GuestRsp, GUEST_RSP);
    image
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
    paged_guest(
        caps,
        EntryControls::IA32E_MODE_GUEST
            | EntryControls::LOAD_IA32_EFER
            | EntryControls::LOAD_IA32_PAT,
        Cr4::PAE,
        LONG_MODE_EFER,
        // CS: type 11 (execute/read, accessed), S, P, L=1, G=1.
        0xa09b,
    )
}

/// A VMCS for a 32-bit protected-mode guest with 32-bit paging (CR0.PG = 1,
/// CR4.PAE = 0, EFER.LME = LMA = 0; no PDPTEs involved) on a 64-bit host.
///
/// The same controls as [`long_mode_guest`] except that "IA-32e mode guest"
/// is 0; CS is a 32-bit code segment (access rights 0xc09b: D=1, G=1).
pub fn protected_mode_guest(caps: &VmxCapabilities) -> VmcsImage {
    paged_guest(
        caps,
        EntryControls::LOAD_IA32_EFER | EntryControls::LOAD_IA32_PAT,
        Cr4::empty(),
        Efer::empty(),
        0xc09b,
    )
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
    let mut image = template(
        caps,
        SecondaryProcControls::ENABLE_EPT
            | SecondaryProcControls::ENABLE_VPID
            | SecondaryProcControls::UNRESTRICTED_GUEST,
        EntryControls::LOAD_IA32_EFER | EntryControls::LOAD_IA32_PAT,
    );
    // SDM 27.3.1.1: with unrestricted guest, CR0.PE and CR0.PG are free.
    let cr0_fixed = caps.cr0_fixed.freeing((Cr0::PE | Cr0::PG).bits());
    image.set(
        VmcsField::GuestCr0,
        cr0_fixed.apply((Cr0::ET | Cr0::NE).bits()),
    );
    image.set(VmcsField::GuestCr3, 0);
    image.set(VmcsField::GuestCr4, caps.cr4_fixed.apply(0));
    image.set(VmcsField::GuestEfer, 0);
    set_guest_segment(&mut image, SegmentRegister::Cs, [0, 0, 0xffff, 0x9b]);
    for segment in GUEST_DATA_SEGMENTS {
        set_guest_segment(&mut image, segment, [0, 0, 0xffff, 0x93]);
    }
    set_guest_segment(&mut image, SegmentRegister::Tr, [0, 0, 0xffff, AR_TSS_BUSY]);
    image.set(VmcsField::GuestGdtrBase, 0);
    image.set(VmcsField::GuestGdtrLimit, 0xffff);
    image.set(VmcsField::GuestIdtrBase, 0);
    image.set(VmcsField::GuestIdtrLimit, 0x3ff);
    image.set(VmcsField::GuestRip, 0x7c00);
    image.set(VmcsField::GuestRsp, 0x7000);
    image
}
