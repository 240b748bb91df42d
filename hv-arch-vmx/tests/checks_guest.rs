//! Guest-state checks (SDM Vol. 3C 27.3.1): known-good guests in every mode
//! pass, and each rule fails alone when one field of a good guest is broken.

use hv_arch_vmx::capabilities::{VmxCapabilities, VmxMisc};
use hv_arch_vmx::checks::guest::{
    DescriptorTable, GuestCheck, SegmentAccessRights, SegmentRegister, check_guest_state,
};
use hv_arch_vmx::checks::{EntryCheckFailure, EntryContext, baseline, check_vm_entry};
use hv_arch_vmx::controls::{EntryControls, PinBasedControls, SecondaryProcControls};
use hv_arch_vmx::vmcs::{FieldKind, VmcsField, VmcsImage};
use proptest::prelude::*;

use SegmentRegister::{Cs, Ds, Es, Fs, Gs, Ldtr, Ss, Tr};

const CR0_PE: u64 = 1 << 0;
const CR0_WP: u64 = 1 << 16;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_VMXE: u64 = 1 << 13;
const CR4_PCIDE: u64 = 1 << 17;
const CR4_CET: u64 = 1 << 23;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_VM: u64 = 1 << 17;
/// A 48-bit address with bit 47 set and bits 63:48 clear: not canonical.
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;
/// Injection of external interrupt vector 0x20 (valid, type 0).
const INJECT_EXTINT: u64 = 0x8000_0020;
/// Injection of an NMI (valid, type 2, vector 2).
const INJECT_NMI: u64 = 0x8000_0202;
/// Injection of #GP with an error code (valid, deliver error code, type 3).
const INJECT_GP: u64 = 0x8000_0b0d;
/// Injection of #DB (type 3, vector 1).
const INJECT_DB: u64 = 0x8000_0301;
/// Injection of #MC (type 3, vector 18).
const INJECT_MC: u64 = 0x8000_0312;
/// Injection of a pending MTF VM exit (type 7, vector 0).
const INJECT_MTF: u64 = 0x8000_0700;

fn caps() -> VmxCapabilities {
    VmxCapabilities::bochs_skylake_x()
}

fn context() -> EntryContext {
    EntryContext::new(46, 0x1000)
}

fn guest(image: &VmcsImage) -> Result<(), GuestCheck> {
    check_guest_state(image, &caps(), &context())
}

fn long_mode() -> VmcsImage {
    baseline::long_mode_guest(&caps())
}

fn protected_mode() -> VmcsImage {
    baseline::protected_mode_guest(&caps())
}

fn real_mode() -> VmcsImage {
    baseline::unrestricted_real_mode_guest(&caps())
}

/// `image` with `field` changed to `f(old value)`.
fn with(mut image: VmcsImage, field: VmcsField, f: impl FnOnce(u64) -> u64) -> VmcsImage {
    image.set(field, f(image.get(field)));
    image
}

fn set(image: VmcsImage, field: VmcsField, value: u64) -> VmcsImage {
    with(image, field, |_| value)
}

fn add_entry(image: VmcsImage, control: EntryControls) -> VmcsImage {
    with(image, VmcsField::VmEntryControls, |v| {
        v | u64::from(control.bits())
    })
}

fn field(register: SegmentRegister, part: usize) -> VmcsField {
    register.fields()[part]
}

fn selector(register: SegmentRegister) -> VmcsField {
    field(register, 0)
}
fn base(register: SegmentRegister) -> VmcsField {
    field(register, 1)
}
fn limit(register: SegmentRegister) -> VmcsField {
    field(register, 2)
}
fn rights(register: SegmentRegister) -> VmcsField {
    field(register, 3)
}

/// Virtual-8086 segments: base = selector << 4, limit 0xffff, rights 0xf3.
fn with_v8086_segments(mut image: VmcsImage) -> VmcsImage {
    for (register, sel) in [
        (Cs, 0x1000),
        (Ss, 0x2000),
        (Ds, 0x3000),
        (Es, 0x3000),
        (Fs, 0),
        (Gs, 0x4000),
    ] {
        image.set(selector(register), sel);
        image.set(base(register), sel << 4);
        image.set(limit(register), 0xffff);
        image.set(rights(register), 0xf3);
    }
    image
}

/// A virtual-8086 guest: 32-bit paging, CR0.PE = 1, no IA-32e mode,
/// RFLAGS.VM = 1, v8086 segments.
fn v8086() -> VmcsImage {
    let image = with_v8086_segments(protected_mode());
    let image = set(image, VmcsField::GuestRflags, 0x2 | RFLAGS_VM | RFLAGS_IF);
    set(image, VmcsField::GuestRip, 0x100)
}

/// `image` with "unrestricted guest" turned on.
fn unrestricted(image: VmcsImage) -> VmcsImage {
    with(image, VmcsField::SecondaryProcBasedControls, |v| {
        v | u64::from(SecondaryProcControls::UNRESTRICTED_GUEST.bits())
    })
}

// ---------------------------------------------------------------- good guests

#[test]
fn long_mode_baseline_passes_every_check() {
    assert_eq!(check_vm_entry(&long_mode(), &caps(), &context()), Ok(()));
    assert_eq!(guest(&long_mode()), Ok(()));
}

#[test]
fn protected_mode_baseline_passes_guest_checks() {
    assert_eq!(guest(&protected_mode()), Ok(()));
}

#[test]
fn unrestricted_real_mode_guest_passes() {
    let image = real_mode();
    assert_eq!(image.get(VmcsField::GuestCr0) & (CR0_PE | CR0_PG), 0);
    assert_eq!(guest(&image), Ok(()));
    assert_eq!(check_vm_entry(&image, &caps(), &context()), Ok(()));
}

#[test]
fn virtual_8086_guest_passes() {
    let image = v8086();
    assert_ne!(image.get(VmcsField::GuestCr0) & CR0_PE, 0);
    assert_eq!(guest(&image), Ok(()));
    assert_eq!(check_vm_entry(&image, &caps(), &context()), Ok(()));
}

#[test]
fn guest_failure_is_reported_through_check_vm_entry() {
    let image = with(long_mode(), VmcsField::GuestCr4, |v| v & !CR4_PAE);
    let failure = check_vm_entry(&image, &caps(), &context()).unwrap_err();
    assert_eq!(
        failure,
        EntryCheckFailure::Guest(GuestCheck::Ia32eModeWithoutPae {
            cr4: image.get(VmcsField::GuestCr4)
        })
    );
    assert_eq!(failure.sdm_section(), "27.3.1.1");
    assert_eq!(failure.vm_instruction_error(), None);
}

// ------------------------------------------------ 27.3.1.1 control registers

#[test]
fn cr0_must_respect_fixed_bits() {
    let image = with(long_mode(), VmcsField::GuestCr0, |v| v & !(1 << 5));
    let cr0 = image.get(VmcsField::GuestCr0);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::Cr0FixedBit {
            cr0,
            bit: 5,
            must_be_one: true
        })
    );
    // Without "unrestricted guest", PE is a fixed-1 bit.
    let image = with(protected_mode(), VmcsField::GuestCr0, |v| {
        v & !(CR0_PE | CR0_PG)
    });
    let cr0 = image.get(VmcsField::GuestCr0);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::Cr0FixedBit {
            cr0,
            bit: 0,
            must_be_one: true
        })
    );
}

#[test]
fn cr0_cd_and_nw_are_never_checked() {
    let mut caps = caps();
    caps.cr0_fixed.fixed1 &= !(CR0_CD | (1 << 29));
    let image = with(long_mode(), VmcsField::GuestCr0, |v| v | CR0_CD | (1 << 29));
    assert_eq!(check_guest_state(&image, &caps, &context()), Ok(()));
}

#[test]
fn cr0_paging_without_protection_fails_even_unrestricted() {
    // CVE-2023-30456: PG = 1 with PE = 0.
    let image = with(real_mode(), VmcsField::GuestCr0, |v| v | CR0_PG);
    let cr0 = image.get(VmcsField::GuestCr0);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::Cr0PagingWithoutProtection { cr0 })
    );
}

#[test]
fn cr4_must_respect_fixed_bits() {
    let image = with(long_mode(), VmcsField::GuestCr4, |v| v & !CR4_VMXE);
    let cr4 = image.get(VmcsField::GuestCr4);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::Cr4FixedBit {
            cr4,
            bit: 13,
            must_be_one: true
        })
    );
    // Bochs CR4_FIXED1 = 0x3727ff: LA57 (bit 12) may not be 1.
    let image = with(long_mode(), VmcsField::GuestCr4, |v| v | (1 << 12));
    let cr4 = image.get(VmcsField::GuestCr4);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::Cr4FixedBit {
            cr4,
            bit: 12,
            must_be_one: false
        })
    );
}

#[test]
fn cr4_cet_requires_cr0_wp() {
    let mut caps = caps();
    caps.cr4_fixed.fixed1 |= CR4_CET;
    let image = with(long_mode(), VmcsField::GuestCr4, |v| v | CR4_CET);
    assert_eq!(check_guest_state(&image, &caps, &context()), Ok(()));
    let image = with(image, VmcsField::GuestCr0, |v| v & !CR0_WP);
    let cr0 = image.get(VmcsField::GuestCr0);
    assert_eq!(
        check_guest_state(&image, &caps, &context()),
        Err(GuestCheck::CetWithoutWriteProtect { cr0 })
    );
}

#[test]
fn debugctl_reserved_bits_when_loading_debug_controls() {
    let image = add_entry(long_mode(), EntryControls::LOAD_DEBUG_CONTROLS);
    for defined in [1 << 0, 1 << 1, 1 << 6, 1 << 15] {
        assert_eq!(
            guest(&set(image.clone(), VmcsField::GuestDebugCtl, defined)),
            Ok(())
        );
    }
    for reserved in [1 << 2, 1 << 5, 1 << 16, 1 << 63] {
        let bad = set(image.clone(), VmcsField::GuestDebugCtl, reserved);
        assert_eq!(
            guest(&bad),
            Err(GuestCheck::DebugCtlReservedBits { debugctl: reserved })
        );
    }
    // Without "load debug controls" the field is not checked.
    let image = with(image, VmcsField::VmEntryControls, |v| {
        v & !u64::from(EntryControls::LOAD_DEBUG_CONTROLS.bits())
    });
    assert_eq!(
        guest(&set(image, VmcsField::GuestDebugCtl, 1 << 16)),
        Ok(())
    );
}

#[test]
fn ia32e_mode_requires_paging() {
    // "Unrestricted guest" frees PG from the fixed bits, so the IA-32e
    // rule is what fails.
    let image = with(unrestricted(long_mode()), VmcsField::GuestCr0, |v| {
        v & !CR0_PG
    });
    let cr0 = image.get(VmcsField::GuestCr0);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::Ia32eModeWithoutPaging { cr0 })
    );
}

#[test]
fn ia32e_mode_requires_pae() {
    // CVE-2023-30456: IA-32e mode guest without CR4.PAE.
    let image = with(long_mode(), VmcsField::GuestCr4, |v| v & !CR4_PAE);
    let cr4 = image.get(VmcsField::GuestCr4);
    assert_eq!(guest(&image), Err(GuestCheck::Ia32eModeWithoutPae { cr4 }));
}

#[test]
fn pcide_only_in_ia32e_mode() {
    assert_eq!(
        guest(&with(long_mode(), VmcsField::GuestCr4, |v| v | CR4_PCIDE)),
        Ok(())
    );
    let image = with(protected_mode(), VmcsField::GuestCr4, |v| v | CR4_PCIDE);
    let cr4 = image.get(VmcsField::GuestCr4);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::PcideOutsideIa32eMode { cr4 })
    );
}

#[test]
fn cr3_lam_bits_are_reserved_only_without_lam() {
    let lam_u48 = baseline::GUEST_CR3 | (1 << 61);
    let image = set(long_mode(), VmcsField::GuestCr3, lam_u48);
    // Bochs's CR4_FIXED1 does not allow CR4.LAM_SUP: bit 61 is reserved.
    assert_eq!(
        guest(&image),
        Err(GuestCheck::Cr3BeyondPhysicalWidth { cr3: lam_u48 })
    );
    // A processor with LAM defines CR3 bits 62:61.
    let mut lam = caps();
    lam.cr4_fixed = hv_arch_vmx::capabilities::FixedBits::new(
        lam.cr4_fixed.fixed0,
        lam.cr4_fixed.fixed1 | (1 << 28),
    );
    assert_eq!(check_guest_state(&image, &lam, &context()), Ok(()));
}

#[test]
fn cr3_within_physical_width() {
    let image = set(long_mode(), VmcsField::GuestCr3, 1 << 46);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::Cr3BeyondPhysicalWidth { cr3: 1 << 46 })
    );
    assert_eq!(
        guest(&set(long_mode(), VmcsField::GuestCr3, (1 << 46) - 0x1000)),
        Ok(())
    );
    // Bits 31:0 are never checked, even with a 30-bit MAXPHYADDR.
    let narrow = EntryContext::new(30, 0x1000);
    let image = set(long_mode(), VmcsField::GuestCr3, 0xffff_f000);
    assert_eq!(check_guest_state(&image, &caps(), &narrow), Ok(()));
    // Bits 63:52 are always checked, even with MAXPHYADDR 64.
    let wide = EntryContext::new(64, 0x1000);
    let image = set(long_mode(), VmcsField::GuestCr3, 1 << 52);
    assert_eq!(
        check_guest_state(&image, &caps(), &wide),
        Err(GuestCheck::Cr3BeyondPhysicalWidth { cr3: 1 << 52 })
    );
}

#[test]
fn dr7_high_bits_when_loading_debug_controls() {
    let image = set(long_mode(), VmcsField::GuestDr7, 1 << 32);
    assert_eq!(guest(&image), Ok(()));
    let image = add_entry(image, EntryControls::LOAD_DEBUG_CONTROLS);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::Dr7HighBitsSet { dr7: 1 << 32 })
    );
}

#[test]
fn sysenter_fields_canonical() {
    let image = set(long_mode(), VmcsField::GuestSysenterEsp, NON_CANONICAL);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::SysenterEspNotCanonical {
            address: NON_CANONICAL
        })
    );
    let image = set(long_mode(), VmcsField::GuestSysenterEip, NON_CANONICAL);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::SysenterEipNotCanonical {
            address: NON_CANONICAL
        })
    );
    let upper = 0xffff_8000_0000_0000;
    assert_eq!(
        guest(&set(long_mode(), VmcsField::GuestSysenterEip, upper)),
        Ok(())
    );
}

#[test]
fn cet_state_when_loaded() {
    let image = add_entry(long_mode(), EntryControls::LOAD_CET_STATE);
    assert_eq!(guest(&image), Ok(()));
    let bad = set(image.clone(), VmcsField::GuestSCet, NON_CANONICAL);
    assert_eq!(
        guest(&bad),
        Err(GuestCheck::SCetNotCanonical {
            value: NON_CANONICAL
        })
    );
    let bad = set(
        image.clone(),
        VmcsField::GuestInterruptSspTableAddress,
        NON_CANONICAL,
    );
    assert_eq!(
        guest(&bad),
        Err(GuestCheck::InterruptSspTableNotCanonical {
            address: NON_CANONICAL
        })
    );
    let bad = set(image.clone(), VmcsField::GuestSCet, 1 << 6);
    assert_eq!(
        guest(&bad),
        Err(GuestCheck::SCetReservedBits { value: 1 << 6 })
    );
    let both = (1 << 10) | (1 << 11);
    let bad = set(image.clone(), VmcsField::GuestSCet, both);
    assert_eq!(
        guest(&bad),
        Err(GuestCheck::SCetSuppressAndTracker { value: both })
    );
    // Without "load CET state" nothing is checked.
    assert_eq!(
        guest(&set(
            long_mode(),
            VmcsField::GuestSCet,
            NON_CANONICAL | (1 << 6)
        )),
        Ok(())
    );
}

#[test]
fn perf_global_ctrl_reserved_bits() {
    let image = add_entry(long_mode(), EntryControls::LOAD_IA32_PERF_GLOBAL_CTRL);
    assert_eq!(
        guest(&set(
            image.clone(),
            VmcsField::GuestPerfGlobalCtrl,
            (1 << 48) | 0x7_0000_00ff
        )),
        Ok(())
    );
    let bad = set(image, VmcsField::GuestPerfGlobalCtrl, 1 << 49);
    assert_eq!(
        guest(&bad),
        Err(GuestCheck::PerfGlobalCtrlReservedBits { value: 1 << 49 })
    );
}

#[test]
fn pat_entries_must_be_memory_types() {
    for memory_type in [2u8, 3, 8, 0xff] {
        let pat = (baseline::PAT & !(0xff << 40)) | (u64::from(memory_type) << 40);
        let image = set(long_mode(), VmcsField::GuestPat, pat);
        assert_eq!(
            guest(&image),
            Err(GuestCheck::PatInvalidMemoryType {
                pat,
                entry: 5,
                memory_type
            })
        );
    }
    assert_eq!(
        guest(&set(
            long_mode(),
            VmcsField::GuestPat,
            0x0706_0504_0100_0607
        )),
        Ok(())
    );
}

#[test]
fn efer_rules_when_loaded() {
    let image = with(long_mode(), VmcsField::GuestEfer, |v| v | (1 << 12));
    assert_eq!(
        guest(&image),
        Err(GuestCheck::EferReservedBits {
            efer: EFER_LME | EFER_LMA | (1 << 12)
        })
    );
    // NXE and SCE are defined.
    assert_eq!(
        guest(&with(long_mode(), VmcsField::GuestEfer, |v| v
            | 1
            | (1 << 11))),
        Ok(())
    );
    let image = with(long_mode(), VmcsField::GuestEfer, |v| v & !EFER_LMA);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::EferLmaMismatch {
            efer: EFER_LME,
            ia32e_mode_guest: true
        })
    );
    let image = with(long_mode(), VmcsField::GuestEfer, |v| v & !EFER_LME);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::EferLmeMismatch { efer: EFER_LMA })
    );
    let image = set(protected_mode(), VmcsField::GuestEfer, EFER_LME);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::EferLmeMismatch { efer: EFER_LME })
    );
    let image = set(protected_mode(), VmcsField::GuestEfer, EFER_LMA);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::EferLmaMismatch {
            efer: EFER_LMA,
            ia32e_mode_guest: false
        })
    );
    // Without paging, LME is free (real mode, unrestricted guest).
    assert_eq!(
        guest(&set(real_mode(), VmcsField::GuestEfer, EFER_LME)),
        Ok(())
    );
}

#[test]
fn bndcfgs_rules_when_loaded() {
    let image = add_entry(long_mode(), EntryControls::LOAD_IA32_BNDCFGS);
    assert_eq!(
        guest(&set(
            image.clone(),
            VmcsField::GuestBndcfgs,
            0xffff_8000_0000_0003
        )),
        Ok(())
    );
    for reserved in [1 << 2, 1 << 11] {
        let bad = set(image.clone(), VmcsField::GuestBndcfgs, reserved | 1);
        assert_eq!(
            guest(&bad),
            Err(GuestCheck::BndcfgsReservedBits {
                value: reserved | 1
            })
        );
    }
    let bad = set(image, VmcsField::GuestBndcfgs, NON_CANONICAL | 1);
    assert_eq!(
        guest(&bad),
        Err(GuestCheck::BndcfgsBaseNotCanonical {
            value: NON_CANONICAL | 1
        })
    );
}

#[test]
fn rtit_ctl_reserved_bits() {
    let image = add_entry(long_mode(), EntryControls::LOAD_IA32_RTIT_CTL);
    assert_eq!(
        guest(&set(image.clone(), VmcsField::GuestRtitCtl, 0x2001)),
        Ok(())
    );
    for reserved in [1 << 18, 1 << 23, 1 << 28, 1 << 48, 1 << 63] {
        let bad = set(image.clone(), VmcsField::GuestRtitCtl, reserved);
        assert_eq!(
            guest(&bad),
            Err(GuestCheck::RtitCtlReservedBits { value: reserved })
        );
    }
}

#[test]
fn lbr_ctl_reserved_bits() {
    let image = add_entry(long_mode(), EntryControls::LOAD_IA32_LBR_CTL);
    assert_eq!(
        guest(&set(image.clone(), VmcsField::GuestLbrCtl, 0x7f_000f)),
        Ok(())
    );
    let bad = set(image, VmcsField::GuestLbrCtl, 1 << 4);
    assert_eq!(
        guest(&bad),
        Err(GuestCheck::LbrCtlReservedBits { value: 1 << 4 })
    );
}

#[test]
fn pkrs_high_bits() {
    let image = add_entry(long_mode(), EntryControls::LOAD_PKRS);
    assert_eq!(
        guest(&set(image.clone(), VmcsField::GuestPkrs, 0xffff_ffff)),
        Ok(())
    );
    let bad = set(image, VmcsField::GuestPkrs, 1 << 32);
    assert_eq!(
        guest(&bad),
        Err(GuestCheck::PkrsReservedBits { value: 1 << 32 })
    );
}

#[test]
fn uinv_bits_15_8() {
    let image = add_entry(long_mode(), EntryControls::LOAD_UINV);
    assert_eq!(
        guest(&set(image.clone(), VmcsField::GuestUinv, 0xec)),
        Ok(())
    );
    let bad = set(image, VmcsField::GuestUinv, 0x1ec);
    assert_eq!(
        guest(&bad),
        Err(GuestCheck::UinvReservedBits { value: 0x1ec })
    );
}

// ------------------------------------------------ 27.3.1.2 segment registers

#[test]
fn tr_selector_ti_must_be_zero() {
    let image = set(long_mode(), selector(Tr), 0x1c);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::TrSelectorTableIndicator { selector: 0x1c })
    );
}

#[test]
fn ldtr_selector_ti_only_if_usable() {
    let image = set(long_mode(), selector(Ldtr), 0x24);
    assert_eq!(guest(&image), Ok(()));
    let image = set(set(image, rights(Ldtr), 0x82), limit(Ldtr), 0xffff);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::LdtrSelectorTableIndicator { selector: 0x24 })
    );
    assert_eq!(guest(&set(image, selector(Ldtr), 0x20)), Ok(()));
}

#[test]
fn ss_rpl_must_equal_cs_rpl() {
    let image = set(long_mode(), selector(Ss), 0x13);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::SsRplNotCsRpl {
            ss_rpl: 3,
            cs_rpl: 0
        })
    );
    // Not checked with "unrestricted guest" (SS.DPL stays 0 as PE = 0 needs).
    assert_eq!(guest(&set(real_mode(), selector(Ss), 3)), Ok(()));
}

#[test]
fn v8086_bases_are_selector_times_16() {
    let image = set(v8086(), base(Ds), 0x3_0001);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::V8086BaseNotSelectorTimes16 {
            segment: Ds,
            selector: 0x3000,
            base: 0x3_0001
        })
    );
}

#[test]
fn bases_must_be_canonical() {
    for register in [Tr, Fs, Gs] {
        let image = set(long_mode(), base(register), NON_CANONICAL);
        assert_eq!(
            guest(&image),
            Err(GuestCheck::BaseNotCanonical {
                segment: register,
                base: NON_CANONICAL
            })
        );
    }
    // LDTR only if usable.
    let image = set(long_mode(), base(Ldtr), NON_CANONICAL);
    assert_eq!(guest(&image), Ok(()));
    let image = set(image, rights(Ldtr), 0x82);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::BaseNotCanonical {
            segment: Ldtr,
            base: NON_CANONICAL
        })
    );
}

#[test]
fn cs_and_usable_ss_ds_es_bases_fit_32_bits() {
    for register in [Cs, Ss, Ds, Es] {
        let image = set(long_mode(), base(register), 1 << 32);
        assert_eq!(
            guest(&image),
            Err(GuestCheck::BaseHighBitsSet {
                segment: register,
                base: 1 << 32
            })
        );
    }
    let unusable_ds = set(set(long_mode(), rights(Ds), 0x1_0000), base(Ds), 1 << 32);
    assert_eq!(guest(&unusable_ds), Ok(()));
}

#[test]
fn v8086_limits_are_ffff() {
    let image = set(v8086(), limit(Es), 0xf_ffff);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::V8086LimitNotFfff {
            segment: Es,
            limit: 0xf_ffff
        })
    );
}

#[test]
fn v8086_access_rights_are_f3() {
    let image = set(v8086(), rights(Gs), 0xf2);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::V8086AccessRightsNotF3 {
            segment: Gs,
            access_rights: 0xf2
        })
    );
    let image = set(v8086(), rights(Ss), 0x1_00f3);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::V8086AccessRightsNotF3 {
            segment: Ss,
            access_rights: 0x1_00f3
        })
    );
}

#[test]
fn cs_type_is_accessed_code_or_unrestricted_data() {
    let image = set(protected_mode(), rights(Cs), 0xc093);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::CsTypeInvalid { segment_type: 3 })
    );
    let image = set(long_mode(), rights(Cs), 0xa09a);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::CsTypeInvalid { segment_type: 10 })
    );
    assert_eq!(guest(&set(real_mode(), rights(Cs), 0x93)), Ok(()));
    let image = set(real_mode(), rights(Cs), 0x97);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::CsTypeInvalid { segment_type: 7 })
    );
}

#[test]
fn usable_ss_type_is_3_or_7() {
    let image = set(long_mode(), rights(Ss), 0xc091);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::SsTypeInvalid { segment_type: 1 })
    );
    assert_eq!(guest(&set(long_mode(), rights(Ss), 0xc097)), Ok(()));
    assert_eq!(guest(&set(long_mode(), rights(Ss), 0x1_0000)), Ok(()));
}

#[test]
fn usable_data_segments_accessed_and_readable() {
    let image = set(long_mode(), rights(Ds), 0xc092);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::DataSegmentNotAccessed {
            segment: Ds,
            segment_type: 2
        })
    );
    let image = set(long_mode(), rights(Es), 0xc099);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::CodeSegmentNotReadable {
            segment: Es,
            segment_type: 9
        })
    );
    assert_eq!(guest(&set(long_mode(), rights(Fs), 0xc09b)), Ok(()));
    assert_eq!(guest(&set(long_mode(), rights(Gs), 0x1_0092)), Ok(()));
}

#[test]
fn s_bit_for_cs_and_usable_segments() {
    let image = set(long_mode(), rights(Fs), 0xc083);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::SegmentNotCodeOrData { segment: Fs })
    );
    let image = set(long_mode(), rights(Cs), 0xa08b);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::SegmentNotCodeOrData { segment: Cs })
    );
}

#[test]
fn cs_dpl_rules() {
    // Type 3 (unrestricted guest only): DPL 0.
    let image = set(real_mode(), rights(Cs), 0xb3);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::CsDataTypeDplNotZero { dpl: 1 })
    );
    // Non-conforming: DPL = SS.DPL.
    let image = set(long_mode(), rights(Cs), 0xa0fb);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::CsDplNotSsDpl {
            cs_dpl: 3,
            ss_dpl: 0
        })
    );
    // Conforming: DPL <= SS.DPL.
    let image = set(long_mode(), rights(Cs), 0xa0ff);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::CsDplAboveSsDpl {
            cs_dpl: 3,
            ss_dpl: 0
        })
    );
    assert_eq!(guest(&set(long_mode(), rights(Cs), 0xa09f)), Ok(()));
}

#[test]
fn ss_dpl_rules() {
    // Conforming CS at DPL 0 so that SS.DPL 1 passes the CS rules.
    let image = set(set(long_mode(), rights(Cs), 0xa09f), rights(Ss), 0xc0b3);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::SsDplNotRpl { dpl: 1, rpl: 0 })
    );
    // CR0.PE = 0: SS.DPL must be 0 even with "unrestricted guest".
    let image = set(set(real_mode(), rights(Cs), 0x9f), rights(Ss), 0xb3);
    assert_eq!(guest(&image), Err(GuestCheck::SsDplNotZero { dpl: 1 }));
    // CS type 3: SS.DPL must be 0 even in protected mode.
    let image = with(
        set(set(real_mode(), rights(Cs), 0x93), rights(Ss), 0xb3),
        VmcsField::GuestCr0,
        |v| v | CR0_PE,
    );
    assert_eq!(guest(&image), Err(GuestCheck::SsDplNotZero { dpl: 1 }));
}

#[test]
fn data_segment_dpl_not_below_rpl() {
    let image = set(long_mode(), selector(Ds), 0x13);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::DataSegmentDplBelowRpl {
            segment: Ds,
            dpl: 0,
            rpl: 3
        })
    );
    // Conforming code (type 15) is exempt, as is an unusable register.
    assert_eq!(
        guest(&set(
            set(long_mode(), selector(Gs), 0x13),
            rights(Gs),
            0xc09f
        )),
        Ok(())
    );
    assert_eq!(
        guest(&set(
            set(long_mode(), selector(Gs), 0x13),
            rights(Gs),
            0x1_0000
        )),
        Ok(())
    );
    // "Unrestricted guest" is exempt.
    assert_eq!(guest(&set(real_mode(), selector(Fs), 3)), Ok(()));
}

#[test]
fn present_bit_for_cs_and_usable_segments() {
    let image = set(long_mode(), rights(Gs), 0xc013);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::SegmentNotPresent { segment: Gs })
    );
    let image = set(long_mode(), rights(Cs), 0xa01b);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::SegmentNotPresent { segment: Cs })
    );
}

#[test]
fn access_rights_reserved_bits() {
    let image = set(long_mode(), rights(Ds), 0xc193);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::AccessRightsReservedBits {
            segment: Ds,
            access_rights: 0xc193
        })
    );
    let image = set(long_mode(), rights(Ss), 0x2_c093);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::AccessRightsReservedBits {
            segment: Ss,
            access_rights: 0x2_c093
        })
    );
    // An unusable register's other bits are not checked.
    assert_eq!(
        guest(&set(long_mode(), rights(Es), 0xfffe_ff00 | 0x1_0000)),
        Ok(())
    );
}

#[test]
fn cs_d_must_be_zero_with_l_in_ia32e_mode() {
    let image = set(long_mode(), rights(Cs), 0xe09b);
    assert_eq!(guest(&image), Err(GuestCheck::CsLongModeWithDefaultBig));
    // Compatibility mode (L = 0, D = 1) is fine.
    assert_eq!(guest(&set(long_mode(), rights(Cs), 0xc09b)), Ok(()));
}

#[test]
fn granularity_matches_limit() {
    let image = set(long_mode(), limit(Ds), 0xffff_e000);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::LimitRequiresByteGranularity {
            segment: Ds,
            limit: 0xffff_e000
        })
    );
    let image = set(set(long_mode(), rights(Fs), 0x4093), limit(Fs), 0x10_0000);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::LimitRequiresPageGranularity {
            segment: Fs,
            limit: 0x10_0000
        })
    );
    assert_eq!(
        guest(&set(
            set(long_mode(), rights(Fs), 0x4093),
            limit(Fs),
            0xf_ffff
        )),
        Ok(())
    );
}

#[test]
fn tr_rules() {
    let image = set(long_mode(), rights(Tr), 0x83);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::TrTypeInvalid {
            segment_type: 3,
            ia32e_mode_guest: true
        })
    );
    assert_eq!(guest(&set(protected_mode(), rights(Tr), 0x83)), Ok(()));
    let image = set(protected_mode(), rights(Tr), 0x89);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::TrTypeInvalid {
            segment_type: 9,
            ia32e_mode_guest: false
        })
    );
    let image = set(long_mode(), rights(Tr), 0x9b);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::SystemSegmentNotSystem { segment: Tr })
    );
    let image = set(long_mode(), rights(Tr), 0x0b);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::SegmentNotPresent { segment: Tr })
    );
    let image = set(long_mode(), rights(Tr), 0x18b);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::AccessRightsReservedBits {
            segment: Tr,
            access_rights: 0x18b
        })
    );
    let image = set(long_mode(), rights(Tr), 0x808b);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::LimitRequiresByteGranularity {
            segment: Tr,
            limit: 0x67
        })
    );
    let image = set(long_mode(), rights(Tr), 0x1_008b);
    assert_eq!(guest(&image), Err(GuestCheck::TrUnusable));
    let image = set(long_mode(), rights(Tr), 0x2_008b);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::AccessRightsReservedBits {
            segment: Tr,
            access_rights: 0x2_008b
        })
    );
}

#[test]
fn tr_rules_apply_in_virtual_8086_mode() {
    let image = set(v8086(), rights(Tr), 0x1_008b);
    assert_eq!(guest(&image), Err(GuestCheck::TrUnusable));
}

#[test]
fn usable_ldtr_rules() {
    let usable = set(set(long_mode(), rights(Ldtr), 0x82), limit(Ldtr), 0xffff);
    assert_eq!(guest(&usable), Ok(()));
    let image = set(usable.clone(), rights(Ldtr), 0x83);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::LdtrTypeInvalid { segment_type: 3 })
    );
    let image = set(usable.clone(), rights(Ldtr), 0x92);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::SystemSegmentNotSystem { segment: Ldtr })
    );
    let image = set(usable.clone(), rights(Ldtr), 0x02);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::SegmentNotPresent { segment: Ldtr })
    );
    let image = set(usable.clone(), rights(Ldtr), 0x882);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::AccessRightsReservedBits {
            segment: Ldtr,
            access_rights: 0x882
        })
    );
    let image = set(usable, limit(Ldtr), 0x10_0000);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::LimitRequiresPageGranularity {
            segment: Ldtr,
            limit: 0x10_0000
        })
    );
}

// ------------------------------------------------ 27.3.1.3 GDTR and IDTR

#[test]
fn descriptor_tables() {
    let image = set(long_mode(), VmcsField::GuestGdtrBase, NON_CANONICAL);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::DescriptorTableBaseNotCanonical {
            table: DescriptorTable::Gdtr,
            base: NON_CANONICAL
        })
    );
    let image = set(long_mode(), VmcsField::GuestIdtrLimit, 0x1_0000);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::DescriptorTableLimitTooLarge {
            table: DescriptorTable::Idtr,
            limit: 0x1_0000
        })
    );
    assert_eq!(
        guest(&set(long_mode(), VmcsField::GuestIdtrLimit, 0xffff)),
        Ok(())
    );
}

// ------------------------------------------------ 27.3.1.4 RIP, RFLAGS, SSP

#[test]
fn rip_fits_32_bits_outside_64_bit_mode() {
    let image = set(protected_mode(), VmcsField::GuestRip, 1 << 32);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::RipHighBitsSet { rip: 1 << 32 })
    );
    // Compatibility mode: IA-32e mode guest with CS.L = 0.
    let image = set(
        set(long_mode(), rights(Cs), 0xc09b),
        VmcsField::GuestRip,
        1 << 32,
    );
    assert_eq!(
        guest(&image),
        Err(GuestCheck::RipHighBitsSet { rip: 1 << 32 })
    );
}

#[test]
fn rip_in_64_bit_mode_needs_bits_63_n_identical_not_canonical() {
    // Bit 47 differs from bit 63: not canonical, but bits 63:48 agree.
    assert_eq!(
        guest(&set(long_mode(), VmcsField::GuestRip, NON_CANONICAL)),
        Ok(())
    );
    let rip = 1 << 48;
    let image = set(long_mode(), VmcsField::GuestRip, rip);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::RipBeyondLinearWidth {
            rip,
            linear_address_width: 48
        })
    );
    let la57 = EntryContext {
        linear_address_width: 57,
        ..context()
    };
    assert_eq!(check_guest_state(&image, &caps(), &la57), Ok(()));
}

#[test]
fn rflags_reserved_bits() {
    for rflags in [
        0,
        0x2 | (1 << 3),
        0x2 | (1 << 5),
        0x2 | (1 << 15),
        0x2 | (1 << 22),
        0x2 | (1 << 63),
    ] {
        let image = set(long_mode(), VmcsField::GuestRflags, rflags);
        assert_eq!(
            guest(&image),
            Err(GuestCheck::RflagsReservedBits { rflags })
        );
    }
}

#[test]
fn rflags_vm_only_in_protected_non_ia32e_mode() {
    let image = set(
        with_v8086_segments(long_mode()),
        VmcsField::GuestRflags,
        0x2 | RFLAGS_VM,
    );
    assert_eq!(guest(&image), Err(GuestCheck::V8086InIa32eMode));
    let image = set(
        with_v8086_segments(real_mode()),
        VmcsField::GuestRflags,
        0x2 | RFLAGS_VM,
    );
    assert_eq!(guest(&image), Err(GuestCheck::V8086WithoutProtection));
}

#[test]
fn external_interrupt_injection_needs_if() {
    let image = set(
        long_mode(),
        VmcsField::VmEntryInterruptionInfo,
        INJECT_EXTINT,
    );
    assert_eq!(
        guest(&image),
        Err(GuestCheck::ExternalInterruptWithInterruptsDisabled)
    );
    assert_eq!(
        guest(&set(image, VmcsField::GuestRflags, 0x2 | RFLAGS_IF)),
        Ok(())
    );
    // The valid bit matters.
    assert_eq!(
        guest(&set(long_mode(), VmcsField::VmEntryInterruptionInfo, 0x20)),
        Ok(())
    );
}

#[test]
fn ssp_when_loading_cet_state() {
    let image = add_entry(long_mode(), EntryControls::LOAD_CET_STATE);
    let bad = set(image.clone(), VmcsField::GuestSsp, 0x1002);
    assert_eq!(guest(&bad), Err(GuestCheck::SspMisaligned { ssp: 0x1002 }));
    let bad = set(image.clone(), VmcsField::GuestSsp, 1 << 48);
    assert_eq!(
        guest(&bad),
        Err(GuestCheck::SspBeyondLinearWidth {
            ssp: 1 << 48,
            linear_address_width: 48
        })
    );
    assert_eq!(
        guest(&set(image, VmcsField::GuestSsp, NON_CANONICAL)),
        Ok(())
    );
}

// ------------------------------------------------ 27.3.1.5 non-register state

#[test]
fn activity_state_range_and_support() {
    let image = set(long_mode(), VmcsField::GuestActivityState, 4);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::ActivityStateInvalid { state: 4 })
    );
    for state in 1..=3 {
        assert_eq!(
            guest(&set(long_mode(), VmcsField::GuestActivityState, state)),
            Ok(())
        );
    }
    let mut caps = caps();
    caps.misc = VmxMisc::from_raw(caps.misc.raw() & !(1 << 6));
    let image = set(long_mode(), VmcsField::GuestActivityState, 1);
    assert_eq!(
        check_guest_state(&image, &caps, &context()),
        Err(GuestCheck::ActivityStateUnsupported { state: 1 })
    );
}

#[test]
fn hlt_needs_ss_dpl_zero() {
    let image = set(v8086(), VmcsField::GuestActivityState, 1);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::HaltWithNonZeroSsDpl { ss_dpl: 3 })
    );
}

#[test]
fn sti_or_mov_ss_blocking_needs_active_state() {
    let image = set(long_mode(), VmcsField::GuestActivityState, 1);
    let image = set(image, VmcsField::GuestInterruptibilityState, 2);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::BlockingWhileNotActive { state: 1 })
    );
}

#[test]
fn injection_allowed_per_activity_state() {
    let cases: [(u64, u64, bool); 12] = [
        (1, INJECT_EXTINT, true),
        (1, INJECT_NMI, true),
        (1, INJECT_DB, true),
        (1, INJECT_MC, true),
        (1, INJECT_MTF, true),
        (1, INJECT_GP, false),
        (2, INJECT_NMI, true),
        (2, INJECT_MC, true),
        (2, INJECT_EXTINT, false),
        (2, INJECT_DB, false),
        (3, INJECT_NMI, false),
        (3, INJECT_MC, false),
    ];
    for (state, info, allowed) in cases {
        let image = set(long_mode(), VmcsField::GuestActivityState, state);
        let image = set(image, VmcsField::GuestRflags, 0x2 | RFLAGS_IF);
        let image = set(image, VmcsField::VmEntryInterruptionInfo, info);
        let expected = if allowed {
            Ok(())
        } else {
            Err(GuestCheck::EventBlockedInActivityState {
                state: state as u32,
                interruption_info: info as u32,
            })
        };
        assert_eq!(guest(&image), expected, "state {state} info {info:#x}");
    }
}

#[test]
fn wait_for_sipi_not_with_entry_to_smm() {
    let image = add_entry(
        set(long_mode(), VmcsField::GuestActivityState, 3),
        EntryControls::ENTRY_TO_SMM,
    );
    assert_eq!(guest(&image), Err(GuestCheck::WaitForSipiWithEntryToSmm));
}

fn with_interruptibility(value: u64) -> VmcsImage {
    let image = set(long_mode(), VmcsField::GuestRflags, 0x2 | RFLAGS_IF);
    set(image, VmcsField::GuestInterruptibilityState, value)
}

#[test]
fn interruptibility_rules() {
    assert_eq!(
        guest(&with_interruptibility(1 << 5)),
        Err(GuestCheck::InterruptibilityReservedBits { value: 1 << 5 })
    );
    assert_eq!(
        guest(&with_interruptibility(3)),
        Err(GuestCheck::BlockingByStiAndMovSs)
    );
    let sti_without_if = set(with_interruptibility(1), VmcsField::GuestRflags, 0x2);
    assert_eq!(
        guest(&sti_without_if),
        Err(GuestCheck::StiBlockingWithInterruptsDisabled)
    );
    for blocking in [1, 2] {
        let image = set(
            with_interruptibility(blocking),
            VmcsField::VmEntryInterruptionInfo,
            INJECT_EXTINT,
        );
        assert_eq!(
            guest(&image),
            Err(GuestCheck::ExternalInterruptWhileBlocked)
        );
    }
    let image = set(
        with_interruptibility(2),
        VmcsField::VmEntryInterruptionInfo,
        INJECT_NMI,
    );
    assert_eq!(guest(&image), Err(GuestCheck::NmiWhileBlockedByMovSs));
    assert_eq!(
        guest(&with_interruptibility(4)),
        Err(GuestCheck::SmiBlockingOutsideSmm)
    );
    let smm = add_entry(with_interruptibility(0), EntryControls::ENTRY_TO_SMM);
    assert_eq!(guest(&smm), Err(GuestCheck::EntryToSmmWithoutSmiBlocking));
    let image = set(
        with_interruptibility(1),
        VmcsField::VmEntryInterruptionInfo,
        INJECT_NMI,
    );
    assert_eq!(guest(&image), Err(GuestCheck::NmiWhileBlockedBySti));
    assert_eq!(GuestCheck::NmiWhileBlockedBySti.exit_qualification(), 3);
    assert_eq!(guest(&with_interruptibility(0x11)), Ok(()));
    assert_eq!(
        guest(&with_interruptibility(0x12)),
        Err(GuestCheck::EnclaveInterruptionWithMovSsBlocking)
    );
}

#[test]
fn nmi_blocking_with_virtual_nmis() {
    let image = set(
        with_interruptibility(8),
        VmcsField::VmEntryInterruptionInfo,
        INJECT_NMI,
    );
    assert_ne!(
        image.get(VmcsField::PinBasedControls) & u64::from(PinBasedControls::VIRTUAL_NMIS.bits()),
        0
    );
    assert_eq!(
        guest(&image),
        Err(GuestCheck::NmiInjectedWhileVirtualNmiBlocked)
    );
    let plain = with(image, VmcsField::PinBasedControls, |v| {
        v & !u64::from(PinBasedControls::VIRTUAL_NMIS.bits())
    });
    assert_eq!(guest(&plain), Ok(()));
}

#[test]
fn pending_debug_reserved_bits() {
    for value in [1 << 4, 1 << 10, 1 << 13, 1 << 15, 1 << 17, 1 << 63] {
        let image = set(long_mode(), VmcsField::GuestPendingDebugExceptions, value);
        assert_eq!(
            guest(&image),
            Err(GuestCheck::PendingDebugReservedBits { value })
        );
    }
    // Bit 11 is BLD (bus lock detected) in current SDMs.
    let defined = 0xf | (1 << 11) | (1 << 12) | (1 << 14);
    assert_eq!(
        guest(&set(
            long_mode(),
            VmcsField::GuestPendingDebugExceptions,
            defined
        )),
        Ok(())
    );
}

#[test]
fn pending_debug_bs_follows_tf_and_btf() {
    let bs = 1 << 14;
    let single_step = set(
        with_interruptibility(1),
        VmcsField::GuestRflags,
        0x2 | RFLAGS_IF | RFLAGS_TF,
    );
    assert_eq!(guest(&single_step), Err(GuestCheck::PendingDebugBsRequired));
    assert_eq!(
        guest(&set(
            single_step.clone(),
            VmcsField::GuestPendingDebugExceptions,
            bs
        )),
        Ok(())
    );
    let branch_trap = set(single_step, VmcsField::GuestDebugCtl, 1 << 1);
    assert_eq!(guest(&branch_trap), Ok(()));
    let image = set(branch_trap, VmcsField::GuestPendingDebugExceptions, bs);
    assert_eq!(guest(&image), Err(GuestCheck::PendingDebugBsForbidden));
    // HLT triggers the rule too; TF = 0 forbids BS.
    let halted = set(
        set(long_mode(), VmcsField::GuestActivityState, 1),
        VmcsField::GuestPendingDebugExceptions,
        bs,
    );
    assert_eq!(guest(&halted), Err(GuestCheck::PendingDebugBsForbidden));
    // Active without blocking: no rule.
    assert_eq!(
        guest(&set(
            long_mode(),
            VmcsField::GuestPendingDebugExceptions,
            bs
        )),
        Ok(())
    );
}

#[test]
fn pending_debug_rtm_rules() {
    let rtm = 1 << 16;
    let enabled_breakpoint = 1 << 12;
    assert_eq!(
        guest(&set(
            long_mode(),
            VmcsField::GuestPendingDebugExceptions,
            rtm | enabled_breakpoint
        )),
        Ok(())
    );
    for value in [
        rtm,
        rtm | enabled_breakpoint | 1,
        rtm | enabled_breakpoint | (1 << 14),
    ] {
        let image = set(long_mode(), VmcsField::GuestPendingDebugExceptions, value);
        assert_eq!(
            guest(&image),
            Err(GuestCheck::PendingDebugRtmInvalid { value })
        );
    }
    let image = set(
        with_interruptibility(2),
        VmcsField::GuestPendingDebugExceptions,
        rtm | enabled_breakpoint,
    );
    assert_eq!(
        guest(&image),
        Err(GuestCheck::PendingDebugRtmWithMovSsBlocking)
    );
}

#[test]
fn vmcs_link_pointer() {
    let image = set(long_mode(), VmcsField::VmcsLinkPointer, 0x5008);
    let failure = guest(&image).unwrap_err();
    assert_eq!(
        failure,
        GuestCheck::LinkPointerNotAligned { pointer: 0x5008 }
    );
    assert_eq!(failure.exit_qualification(), 4);
    let image = set(long_mode(), VmcsField::VmcsLinkPointer, 1 << 46);
    let failure = guest(&image).unwrap_err();
    assert_eq!(
        failure,
        GuestCheck::LinkPointerBeyondPhysicalWidth { pointer: 1 << 46 }
    );
    assert_eq!(failure.exit_qualification(), 4);
    assert_eq!(
        guest(&set(long_mode(), VmcsField::VmcsLinkPointer, 0x5000)),
        Ok(())
    );
    // SDM 27.3.1.5: outside SMM the link pointer must not be the
    // current-VMCS pointer.
    let current = context().current_vmcs_pointer;
    let failure = guest(&set(long_mode(), VmcsField::VmcsLinkPointer, current));
    assert_eq!(
        failure,
        Err(GuestCheck::LinkPointerIsCurrentVmcs { pointer: current })
    );
}

// ------------------------------------------------ 27.3.1.6 PDPTEs

fn pae_guest() -> VmcsImage {
    with(protected_mode(), VmcsField::GuestCr4, |v| v | CR4_PAE)
}

#[test]
fn pdptes_checked_with_pae_paging_and_ept() {
    assert_eq!(guest(&pae_guest()), Ok(()));
    let image = set(pae_guest(), VmcsField::GuestPdpte0, 0x5000 | 1 | (1 << 1));
    let failure = guest(&image).unwrap_err();
    assert_eq!(
        failure,
        GuestCheck::PdpteReservedBits {
            index: 0,
            pdpte: 0x5003
        }
    );
    assert_eq!(failure.exit_qualification(), 2);
    assert_eq!(failure.sdm_section(), "27.3.1.6");
    let pdpte = 1 | (1 << 5);
    let image = set(pae_guest(), VmcsField::GuestPdpte1, pdpte);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::PdpteReservedBits { index: 1, pdpte })
    );
    let pdpte = 1 | (1 << 46);
    let image = set(pae_guest(), VmcsField::GuestPdpte3, pdpte);
    assert_eq!(
        guest(&image),
        Err(GuestCheck::PdpteReservedBits { index: 3, pdpte })
    );
    // Not present: not checked.
    assert_eq!(
        guest(&set(pae_guest(), VmcsField::GuestPdpte2, u64::MAX - 1)),
        Ok(())
    );
}

#[test]
fn pdptes_not_checked_without_ept_or_outside_pae_paging() {
    let bad = 1 | (1 << 1);
    let no_ept = with(pae_guest(), VmcsField::SecondaryProcBasedControls, |v| {
        v & !u64::from(SecondaryProcControls::ENABLE_EPT.bits())
    });
    assert_eq!(guest(&set(no_ept, VmcsField::GuestPdpte0, bad)), Ok(()));
    assert_eq!(
        guest(&set(long_mode(), VmcsField::GuestPdpte0, bad)),
        Ok(())
    );
    assert_eq!(
        guest(&set(protected_mode(), VmcsField::GuestPdpte0, bad)),
        Ok(())
    );
}

// ------------------------------------------------ metadata

#[test]
fn sections_and_exit_qualifications() {
    assert_eq!(
        GuestCheck::Cr0PagingWithoutProtection { cr0: 1 << 31 }.sdm_section(),
        "27.3.1.1"
    );
    assert_eq!(GuestCheck::TrUnusable.sdm_section(), "27.3.1.2");
    let table = GuestCheck::DescriptorTableLimitTooLarge {
        table: DescriptorTable::Gdtr,
        limit: 0x1_0000,
    };
    assert_eq!(table.sdm_section(), "27.3.1.3");
    assert_eq!(GuestCheck::V8086InIa32eMode.sdm_section(), "27.3.1.4");
    assert_eq!(GuestCheck::BlockingByStiAndMovSs.sdm_section(), "27.3.1.5");
    assert_eq!(GuestCheck::TrUnusable.exit_qualification(), 0);
    assert_eq!(
        GuestCheck::Cr0PagingWithoutProtection { cr0: 1 << 31 }.exit_qualification(),
        0
    );
}

#[test]
fn messages_name_the_register() {
    let message = GuestCheck::BaseNotCanonical {
        segment: Fs,
        base: NON_CANONICAL,
    }
    .to_string();
    assert!(
        message.contains("FS") && message.contains("0x800000000000"),
        "{message}"
    );
    let message = GuestCheck::Cr0FixedBit {
        cr0: 0,
        bit: 0,
        must_be_one: true,
    }
    .to_string();
    assert!(message.contains("bit 0 must be 1"), "{message}");
}

#[test]
fn access_rights_decode() {
    let rights = SegmentAccessRights::from_raw(0xa09b);
    assert_eq!(rights.segment_type(), 11);
    assert!(rights.is_code_or_data() && rights.is_present() && rights.is_long_mode());
    assert!(rights.is_page_granular() && !rights.is_default_big() && !rights.is_unusable());
    assert_eq!(rights.dpl(), 0);
    assert_eq!(SegmentAccessRights::from_raw(0xf3).dpl(), 3);
    assert_eq!(
        SegmentAccessRights::from_raw(0xfffe_0f00).reserved_bits(),
        0xfffe_0f00
    );
    assert_eq!(SegmentAccessRights::from_raw(0x1_f0ff).reserved_bits(), 0);
}

// ------------------------------------------------ never panics

fn guest_fields() -> Vec<VmcsField> {
    let mut fields: Vec<VmcsField> = VmcsField::ALL
        .iter()
        .copied()
        .filter(|field| field.kind() == FieldKind::Guest)
        .collect();
    fields.extend([
        VmcsField::VmEntryControls,
        VmcsField::PinBasedControls,
        VmcsField::PrimaryProcBasedControls,
        VmcsField::SecondaryProcBasedControls,
        VmcsField::VmEntryInterruptionInfo,
    ]);
    fields
}

proptest! {
    #[test]
    fn random_guest_state_never_panics(
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u64>()), 0..40),
        physical_address_width in any::<u8>(),
        linear_address_width in any::<u8>(),
    ) {
        let fields = guest_fields();
        let mut image = long_mode();
        for (index, value) in changes {
            image.set(*index.get(&fields), value);
        }
        let context = EntryContext { physical_address_width, linear_address_width, ..context() };
        let result = check_guest_state(&image, &caps(), &context);
        if let Err(failure) = result {
            prop_assert!(failure.sdm_section().starts_with("27.3.1."));
            prop_assert!(failure.exit_qualification() <= 4);
        }
        let _ = check_vm_entry(&image, &caps(), &EntryContext::new(46, 0x1000));
    }

    #[test]
    fn random_images_never_panic(values in proptest::collection::vec(any::<u64>(), VmcsField::COUNT)) {
        let mut image = VmcsImage::new();
        for (field, value) in VmcsField::ALL.iter().zip(values) {
            image.set(*field, value);
        }
        let _ = check_guest_state(&image, &caps(), &context());
        let _ = check_vm_entry(&image, &caps(), &context());
    }

    #[test]
    fn random_guest_state_with_random_capabilities_never_panics(
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u64>()), 0..40),
        cr0_fixed in any::<(u64, u64)>(),
        cr4_fixed in any::<(u64, u64)>(),
        misc in any::<u64>(),
    ) {
        let fields = guest_fields();
        let mut image = long_mode();
        for (index, value) in changes {
            image.set(*index.get(&fields), value);
        }
        let mut caps = caps();
        caps.cr0_fixed.fixed0 = cr0_fixed.0;
        caps.cr0_fixed.fixed1 = cr0_fixed.1;
        caps.cr4_fixed.fixed0 = cr4_fixed.0;
        caps.cr4_fixed.fixed1 = cr4_fixed.1;
        caps.misc = VmxMisc::from_raw(misc);
        let _ = check_guest_state(&image, &caps, &context());
    }
}
