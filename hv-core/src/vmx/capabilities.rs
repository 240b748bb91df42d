//! The VMX capability MSRs hv advertises to L1 (SDM Vol. 3C Appendix A).
//!
//! L1 reads `IA32_VMX_BASIC` .. `IA32_VMX_EXIT_CTLS2` (0x480..=0x493) to
//! learn what it may put into a VMCS12. hv answers with
//! [`VirtualCapabilities`]: the intersection of what the real engine allows
//! and what hv's nested engine implements, so every VMCS12 that passes the
//! entry checks against these capabilities can be turned into a VMCS02 the
//! real engine accepts. Nothing is ever advertised that the real engine does
//! not support; bits the real engine requires stay required.
//!
//! What hv advertises (each further limited by the real capabilities):
//!
//! - `IA32_VMX_BASIC`: hv's own revision id [`HV_VMCS_REVISION_ID`], region
//!   size 4096, 64-bit physical addresses, no dual-monitor SMM, write-back
//!   VMCS memory type, the TRUE_ control MSRs; INS/OUTS instruction
//!   information and the relaxed error-code rule follow the real engine.
//! - Pin-based: external-interrupt and NMI exiting, virtual NMIs, the
//!   VMX-preemption timer. No posted interrupts.
//! - Primary processor-based: the exiting controls of Table 25-6, TSC
//!   offsetting, I/O and MSR bitmaps, monitor trap flag, secondary controls.
//!   No TPR shadow, no tertiary controls.
//! - Secondary: EPT, RDTSCP, VPID, WBINVD exiting, unrestricted guest,
//!   descriptor-table exiting, RDRAND/RDSEED exiting, INVPCID. No APIC
//!   virtualization, VM functions, VMCS shadowing, PML or #VE.
//! - VM-exit: save debug controls, host address-space size, acknowledge
//!   interrupt on exit, save/load PAT and EFER, save preemption-timer value.
//! - VM-entry: load debug controls, IA-32e mode guest, load PAT and EFER.
//! - `IA32_VMX_EPT_VPID_CAP`: 4-level walks, WB, 2-MiB and 1-GiB pages,
//!   accessed/dirty flags, INVEPT single-context and all-context, INVVPID
//!   individual-address, single-context, all-context and
//!   single-context-retaining-globals.
//! - `IA32_VMX_MISC`: the real preemption-timer rate, "store EFER.LMA", the
//!   HLT activity state only (no shutdown or wait-for-SIPI), the real
//!   CR3-target count (at most 4), the real MSR-list size, the real
//!   zero-length-injection bit; bit 29 (VMWRITE to VM-exit information
//!   fields) is 0 unless enabled with
//!   [`VirtualCapabilities::with_vmwrite_to_exit_information`].
//! - CR0/CR4 FIXED0/FIXED1: the real values, passed through.
//! - `IA32_VMX_VMCS_ENUM`: the highest field index of hv's field table.

use hv_arch_vmx::capabilities::{AllowedSettings, RawVmxMsrs, VmxCapabilities};
use hv_arch_vmx::controls::{
    EntryControls, ExitControls, PinBasedControls, PrimaryProcControls, SecondaryProcControls,
};
use hv_arch_vmx::ept::EptMemoryType;
use hv_arch_vmx::msr::VmxMsr;
use hv_arch_vmx::vmcs::VmcsField;

/// hv's VMCS revision identifier: ASCII "HV" (0x48 0x56) in bits 15:0.
///
/// It differs from every real processor's identifier on purpose: a VMCS12
/// is laid out in hv's own format ([`super::vmcs12`]), so a region prepared
/// for real hardware must fail VMPTRLD with error 11 rather than be
/// misread. Bit 31 is 0 as `IA32_VMX_BASIC` requires (SDM A.1).
pub const HV_VMCS_REVISION_ID: u32 = 0x0000_4856;

/// The size of VMXON and VMCS regions hv advertises (`IA32_VMX_BASIC`
/// bits 44:32; SDM A.1: at most 4096).
pub const HV_VMCS_REGION_SIZE: u32 = 4096;

/// At most this many CR3-target values are advertised (the SDM's minimum
/// guarantee; SDM A.6 bits 24:16).
const MAX_CR3_TARGETS: u64 = 4;

// IA32_VMX_BASIC bit positions (SDM A.1).
const BASIC_REGION_SIZE_SHIFT: u32 = 32;
const BASIC_MEMORY_TYPE_SHIFT: u32 = 50;
const BASIC_INS_OUTS_INFO: u64 = 1 << 54;
const BASIC_TRUE_CONTROLS: u64 = 1 << 55;
const BASIC_NO_ERROR_CODE_RULE: u64 = 1 << 56;

// IA32_VMX_MISC fields (SDM A.6).
const MISC_PREEMPTION_RATE: u64 = 0x1f;
const MISC_STORE_EFER_LMA: u64 = 1 << 5;
const MISC_ACTIVITY_HLT: u64 = 1 << 6;
const MISC_CR3_TARGET_SHIFT: u32 = 16;
const MISC_CR3_TARGET_MASK: u64 = 0x1ff << MISC_CR3_TARGET_SHIFT;
const MISC_MSR_LIST_MASK: u64 = 0b111 << 25;
const MISC_VMWRITE_ANY_FIELD: u64 = 1 << 29;
const MISC_ZERO_LENGTH_INJECTION: u64 = 1 << 30;

// IA32_VMX_EPT_VPID_CAP bits hv supports (SDM A.10).
const EPT_WALK_LENGTH_4: u64 = 1 << 6;
const EPT_MEMORY_TYPE_WB: u64 = 1 << 14;
const EPT_PAGES_2M: u64 = 1 << 16;
const EPT_PAGES_1G: u64 = 1 << 17;
const EPT_INVEPT: u64 = 1 << 20;
const EPT_ACCESSED_DIRTY: u64 = 1 << 21;
const EPT_INVEPT_SINGLE: u64 = 1 << 25;
const EPT_INVEPT_ALL: u64 = 1 << 26;
const VPID_INVVPID: u64 = 1 << 32;
const VPID_INDIVIDUAL_ADDRESS: u64 = 1 << 40;
const VPID_SINGLE_CONTEXT: u64 = 1 << 41;
const VPID_ALL_CONTEXT: u64 = 1 << 42;
const VPID_SINGLE_RETAINING_GLOBALS: u64 = 1 << 43;

/// The EPT capabilities hv's nested EPT engine implements.
const HV_EPT_CAPS: u64 = EPT_WALK_LENGTH_4
    | EPT_MEMORY_TYPE_WB
    | EPT_PAGES_2M
    | EPT_PAGES_1G
    | EPT_INVEPT
    | EPT_ACCESSED_DIRTY
    | EPT_INVEPT_SINGLE
    | EPT_INVEPT_ALL;

/// The VPID capabilities hv's VPID02 map implements.
const HV_VPID_CAPS: u64 = VPID_INVVPID
    | VPID_INDIVIDUAL_ADDRESS
    | VPID_SINGLE_CONTEXT
    | VPID_ALL_CONTEXT
    | VPID_SINGLE_RETAINING_GLOBALS;

/// Pin-based controls hv lets L1 set (plus the default1 class).
pub(crate) const HV_PIN_BASED: PinBasedControls = PinBasedControls::EXTERNAL_INTERRUPT_EXITING
    .union(PinBasedControls::NMI_EXITING)
    .union(PinBasedControls::VIRTUAL_NMIS)
    .union(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER)
    .union(PinBasedControls::DEFAULT1);

/// Primary processor-based controls hv lets L1 set (plus the default1
/// class, which contains CR3-load/store exiting and others).
pub(crate) const HV_PRIMARY_PROC: PrimaryProcControls =
    PrimaryProcControls::INTERRUPT_WINDOW_EXITING
        .union(PrimaryProcControls::USE_TSC_OFFSETTING)
        .union(PrimaryProcControls::HLT_EXITING)
        .union(PrimaryProcControls::INVLPG_EXITING)
        .union(PrimaryProcControls::MWAIT_EXITING)
        .union(PrimaryProcControls::RDPMC_EXITING)
        .union(PrimaryProcControls::RDTSC_EXITING)
        .union(PrimaryProcControls::CR3_LOAD_EXITING)
        .union(PrimaryProcControls::CR3_STORE_EXITING)
        .union(PrimaryProcControls::CR8_LOAD_EXITING)
        .union(PrimaryProcControls::CR8_STORE_EXITING)
        .union(PrimaryProcControls::NMI_WINDOW_EXITING)
        .union(PrimaryProcControls::MOV_DR_EXITING)
        .union(PrimaryProcControls::UNCONDITIONAL_IO_EXITING)
        .union(PrimaryProcControls::USE_IO_BITMAPS)
        .union(PrimaryProcControls::MONITOR_TRAP_FLAG)
        .union(PrimaryProcControls::USE_MSR_BITMAPS)
        .union(PrimaryProcControls::MONITOR_EXITING)
        .union(PrimaryProcControls::PAUSE_EXITING)
        .union(PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS)
        .union(PrimaryProcControls::DEFAULT1);

/// Secondary processor-based controls hv lets L1 set.
pub(crate) const HV_SECONDARY_PROC: SecondaryProcControls = SecondaryProcControls::ENABLE_EPT
    .union(SecondaryProcControls::DESCRIPTOR_TABLE_EXITING)
    .union(SecondaryProcControls::ENABLE_RDTSCP)
    .union(SecondaryProcControls::ENABLE_VPID)
    .union(SecondaryProcControls::WBINVD_EXITING)
    .union(SecondaryProcControls::UNRESTRICTED_GUEST)
    .union(SecondaryProcControls::RDRAND_EXITING)
    .union(SecondaryProcControls::ENABLE_INVPCID)
    .union(SecondaryProcControls::RDSEED_EXITING);

/// VM-exit controls hv lets L1 set (plus the default1 class).
const HV_EXIT: ExitControls = ExitControls::SAVE_DEBUG_CONTROLS
    .union(ExitControls::HOST_ADDRESS_SPACE_SIZE)
    .union(ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT)
    .union(ExitControls::SAVE_IA32_PAT)
    .union(ExitControls::LOAD_IA32_PAT)
    .union(ExitControls::SAVE_IA32_EFER)
    .union(ExitControls::LOAD_IA32_EFER)
    .union(ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE)
    .union(ExitControls::DEFAULT1);

/// VM-entry controls hv lets L1 set (plus the default1 class).
const HV_ENTRY: EntryControls = EntryControls::LOAD_DEBUG_CONTROLS
    .union(EntryControls::IA32E_MODE_GUEST)
    .union(EntryControls::LOAD_IA32_PAT)
    .union(EntryControls::LOAD_IA32_EFER)
    .union(EntryControls::DEFAULT1);

/// The capability MSRs hv shows L1, derived from the real engine's.
///
/// Holds both the raw MSR values (what RDMSR returns, [`Self::msr`]) and
/// their parsed form (what VMCS12 is checked against, [`Self::capabilities`]);
/// the parsed form is always computed from the raw values, so the two agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VirtualCapabilities {
    raw: RawVmxMsrs,
    parsed: VmxCapabilities,
}

impl VirtualCapabilities {
    /// What hv advertises on top of the real capabilities `real` (see the
    /// module documentation for the exact set). Never allows a control
    /// setting `real` forbids; keeps every setting `real` requires.
    pub fn derive(real: &VmxCapabilities) -> Self {
        let pin_based = restrict(real.pin_based, u64::from(HV_PIN_BASED.bits()));
        let primary_proc = restrict(
            real.primary_proc,
            u64::from(HV_PRIMARY_PROC.bits()) & !tertiary_bit(),
        );
        let secondary_proc = if primary_proc.allows_one(secondary_bit()) {
            restrict(real.secondary_proc, u64::from(HV_SECONDARY_PROC.bits()))
        } else {
            AllowedSettings::NONE_ALLOWED
        };
        let primary_exit = restrict(
            real.primary_exit,
            u64::from(HV_EXIT.bits()) & !secondary_exit_bit(),
        );
        let entry = restrict(real.entry, u64::from(HV_ENTRY.bits()));

        let ept_vpid = {
            let real_cap = real.ept_vpid.raw();
            let mut cap = 0;
            if secondary_proc.allows_one(SecondaryProcControls::ENABLE_EPT.bits().trailing_zeros())
            {
                cap |= real_cap & HV_EPT_CAPS;
            }
            if secondary_proc.allows_one(SecondaryProcControls::ENABLE_VPID.bits().trailing_zeros())
            {
                cap |= real_cap & HV_VPID_CAPS;
            }
            cap
        };

        let real_misc = real.misc.raw();
        let cr3_targets = (real_misc & MISC_CR3_TARGET_MASK) >> MISC_CR3_TARGET_SHIFT;
        let misc = (real_misc
            & (MISC_PREEMPTION_RATE
                | MISC_STORE_EFER_LMA
                | MISC_ACTIVITY_HLT
                | MISC_MSR_LIST_MASK
                | MISC_ZERO_LENGTH_INJECTION))
            | (cr3_targets.min(MAX_CR3_TARGETS) << MISC_CR3_TARGET_SHIFT);

        // SDM A.1: revision id, region size, memory type WB (6), TRUE_ MSRs.
        let basic = u64::from(HV_VMCS_REVISION_ID)
            | (u64::from(HV_VMCS_REGION_SIZE) << BASIC_REGION_SIZE_SHIFT)
            | (u64::from(EptMemoryType::WriteBack.bits()) << BASIC_MEMORY_TYPE_SHIFT)
            | BASIC_TRUE_CONTROLS
            | (real.basic.raw() & (BASIC_INS_OUTS_INFO | BASIC_NO_ERROR_CODE_RULE));

        let raw = RawVmxMsrs {
            basic,
            pinbased_ctls: legacy_split_msr(pin_based, PinBasedControls::DEFAULT1.bits()),
            procbased_ctls: legacy_split_msr(primary_proc, PrimaryProcControls::DEFAULT1.bits()),
            exit_ctls: legacy_split_msr(primary_exit, ExitControls::DEFAULT1.bits()),
            entry_ctls: legacy_split_msr(entry, EntryControls::DEFAULT1.bits()),
            misc,
            cr0_fixed0: real.cr0_fixed.fixed0,
            cr0_fixed1: real.cr0_fixed.fixed1,
            cr4_fixed0: real.cr4_fixed.fixed0,
            cr4_fixed1: real.cr4_fixed.fixed1,
            vmcs_enum: highest_field_index(),
            procbased_ctls2: split_msr(secondary_proc),
            ept_vpid_cap: ept_vpid,
            true_pinbased_ctls: split_msr(pin_based),
            true_procbased_ctls: split_msr(primary_proc),
            true_exit_ctls: split_msr(primary_exit),
            true_entry_ctls: split_msr(entry),
            // Not advertised: VM functions, tertiary and secondary exit
            // controls (their MSRs do not exist for L1, SDM A.3.4, A.4.2, A.11).
            vmfunc: 0,
            procbased_ctls3: 0,
            exit_ctls2: 0,
        };
        Self::from_raw(raw)
    }

    /// Capabilities from raw MSR values, as given.
    const fn from_raw(raw: RawVmxMsrs) -> Self {
        Self {
            raw,
            parsed: VmxCapabilities::from_raw(&raw),
        }
    }

    /// These capabilities with `IA32_VMX_MISC` bit 29 set or cleared: whether
    /// L1 may VMWRITE the VM-exit information fields of its VMCS12 (SDM
    /// A.6, 31.3 VMWRITE). VMCS12 is hv's software structure, so this does
    /// not depend on the real engine; hv leaves it off by default so that
    /// only hv's exit reflection writes those fields.
    #[must_use]
    pub const fn with_vmwrite_to_exit_information(self, enable: bool) -> Self {
        let mut raw = self.raw;
        raw.misc = if enable {
            raw.misc | MISC_VMWRITE_ANY_FIELD
        } else {
            raw.misc & !MISC_VMWRITE_ANY_FIELD
        };
        Self::from_raw(raw)
    }

    /// RDMSR of `index` by L1: the advertised value of a VMX capability MSR
    /// (0x480..=0x493) that exists for L1, or `None` when RDMSR must raise
    /// #GP (not a VMX capability MSR, or one the advertised capabilities say
    /// does not exist, SDM Appendix A).
    pub fn msr(&self, index: u32) -> Option<u64> {
        let msr = VmxMsr::ALL.into_iter().find(|msr| msr.index() == index)?;
        self.raw.msr_exists(msr).then(|| self.raw.get(msr))
    }

    /// The raw values of every capability MSR (0 for the ones that do not
    /// exist for L1).
    pub const fn raw(&self) -> &RawVmxMsrs {
        &self.raw
    }

    /// The advertised capabilities, parsed: what VMCS12 is checked against
    /// before a nested VM entry and what INVEPT/INVVPID types are validated
    /// against.
    pub const fn capabilities(&self) -> &VmxCapabilities {
        &self.parsed
    }

    /// The VMCS revision identifier L1 must write into its VMXON and VMCS
    /// regions.
    pub const fn revision_id(&self) -> u32 {
        self.parsed.basic.revision_id()
    }
}

/// `real` restricted to the bits hv implements (`supported`): a bit may be 1
/// only if both allow it, and every bit `real` requires stays required (and
/// therefore allowed).
const fn restrict(real: AllowedSettings, supported: u64) -> AllowedSettings {
    AllowedSettings {
        must_be_one: real.must_be_one,
        may_be_one: (real.may_be_one & supported) | real.must_be_one,
    }
}

/// A 32-bit control MSR value: allowed 0-settings in bits 31:0, allowed
/// 1-settings in bits 63:32 (SDM A.3.1).
const fn split_msr(allowed: AllowedSettings) -> u64 {
    (allowed.must_be_one & 0xffff_ffff) | ((allowed.may_be_one & 0xffff_ffff) << 32)
}

/// The original (non-TRUE) control MSR: it reports the default1 controls
/// as required (SDM A.2), except any the allowed settings forbid.
const fn legacy_split_msr(allowed: AllowedSettings, default1: u32) -> u64 {
    let default1 = default1 as u64 & allowed.may_be_one;
    split_msr(AllowedSettings {
        must_be_one: allowed.must_be_one | default1,
        may_be_one: allowed.may_be_one,
    })
}

/// Primary processor-based bit 31: activate secondary controls.
const fn secondary_bit() -> u32 {
    PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS
        .bits()
        .trailing_zeros()
}

/// Primary processor-based bit 17 as a mask: activate tertiary controls.
const fn tertiary_bit() -> u64 {
    PrimaryProcControls::ACTIVATE_TERTIARY_CONTROLS.bits() as u64
}

/// Primary VM-exit bit 31 as a mask: activate secondary exit controls.
const fn secondary_exit_bit() -> u64 {
    ExitControls::ACTIVATE_SECONDARY_CONTROLS.bits() as u64
}

/// `IA32_VMX_VMCS_ENUM`: bits 9:1 hold the highest field index of any
/// field hv's VMCS12 supports (SDM A.9).
const fn highest_field_index() -> u64 {
    let mut highest = 0;
    let mut i = 0;
    while i < VmcsField::COUNT {
        let index = (VmcsField::ALL[i].encoding() >> 1) & 0x1ff;
        if index > highest {
            highest = index;
        }
        i += 1;
    }
    (highest as u64) << 1
}
