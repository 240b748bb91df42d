//! Model-specific registers that VMX depends on (SDM Vol. 3C Appendix A,
//! Vol. 4 Table 2-2).
//!
//! [`VmxMsr`] names the VMX capability MSRs 0x480..=0x493 so that readers can
//! iterate over them and errors can name them; the free constants cover the
//! other MSRs VMX operation touches (`IA32_FEATURE_CONTROL`, and the MSRs that
//! the VM-entry/VM-exit controls load and save).

use bitflags::bitflags;

/// `IA32_FEATURE_CONTROL`: must be locked with VMX enabled before VMXON
/// (SDM 24.7).
pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
/// `IA32_SMM_MONITOR_CTL`: controls the dual-monitor treatment of SMIs
/// (SDM 32.15.5).
pub const IA32_SMM_MONITOR_CTL: u32 = 0x9B;
/// `IA32_SYSENTER_CS`: guest/host state field saved and loaded by VMX
/// transitions (SDM 25.4.1, 25.5).
pub const IA32_SYSENTER_CS: u32 = 0x174;
/// `IA32_SYSENTER_ESP`: guest/host state field (SDM 25.4.1, 25.5).
pub const IA32_SYSENTER_ESP: u32 = 0x175;
/// `IA32_SYSENTER_EIP`: guest/host state field (SDM 25.4.1, 25.5).
pub const IA32_SYSENTER_EIP: u32 = 0x176;
/// `IA32_DEBUGCTL`: saved/loaded by the "save/load debug controls" controls.
pub const IA32_DEBUGCTL: u32 = 0x1D9;
/// `IA32_PAT`: saved/loaded by the "save/load `IA32_PAT`" controls.
pub const IA32_PAT: u32 = 0x277;
/// `IA32_PERF_GLOBAL_CTRL`: loaded by the "load `IA32_PERF_GLOBAL_CTRL`"
/// controls.
pub const IA32_PERF_GLOBAL_CTRL: u32 = 0x38F;
/// `IA32_RTIT_CTL`: Intel PT control, loaded/cleared by the PT controls.
pub const IA32_RTIT_CTL: u32 = 0x570;
/// `IA32_S_CET`: supervisor CET state, loaded by the "load CET state" controls.
pub const IA32_S_CET: u32 = 0x6A2;
/// `IA32_INTERRUPT_SSP_TABLE_ADDR`: loaded by the "load CET state" controls.
pub const IA32_INTERRUPT_SSP_TABLE_ADDR: u32 = 0x6A8;
/// `IA32_PKRS`: supervisor protection keys, loaded by the "load PKRS" controls.
pub const IA32_PKRS: u32 = 0x6E1;
/// `IA32_BNDCFGS`: MPX configuration, loaded/cleared by the BNDCFGS controls.
pub const IA32_BNDCFGS: u32 = 0xD90;
/// `IA32_LBR_CTL`: arch-LBR control, loaded/cleared by the LBR controls.
pub const IA32_LBR_CTL: u32 = 0x14CE;
/// `IA32_EFER`: saved/loaded by the "save/load `IA32_EFER`" controls.
pub const IA32_EFER: u32 = 0xC000_0080;
/// `IA32_FS_BASE`: the FS base, part of guest/host segment state.
pub const IA32_FS_BASE: u32 = 0xC000_0100;
/// `IA32_GS_BASE`: the GS base, part of guest/host segment state.
pub const IA32_GS_BASE: u32 = 0xC000_0101;
/// `IA32_KERNEL_GS_BASE`: not switched by VMX; hypervisors switch it by hand.
pub const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;

/// `IA32_VMX_BASIC`: VMCS revision, region size and basic VMX facts (A.1).
pub const IA32_VMX_BASIC: u32 = 0x480;
/// `IA32_VMX_PINBASED_CTLS`: allowed pin-based controls (A.3.1).
pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
/// `IA32_VMX_PROCBASED_CTLS`: allowed primary processor-based controls (A.3.2).
pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
/// `IA32_VMX_EXIT_CTLS`: allowed primary VM-exit controls (A.4.1).
pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
/// `IA32_VMX_ENTRY_CTLS`: allowed VM-entry controls (A.5).
pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
/// `IA32_VMX_MISC`: miscellaneous VMX data (A.6).
pub const IA32_VMX_MISC: u32 = 0x485;
/// `IA32_VMX_CR0_FIXED0`: CR0 bits fixed to 1 in VMX operation (A.7).
pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
/// `IA32_VMX_CR0_FIXED1`: CR0 bits allowed to be 1 in VMX operation (A.7).
pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
/// `IA32_VMX_CR4_FIXED0`: CR4 bits fixed to 1 in VMX operation (A.8).
pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
/// `IA32_VMX_CR4_FIXED1`: CR4 bits allowed to be 1 in VMX operation (A.8).
pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
/// `IA32_VMX_VMCS_ENUM`: highest VMCS field index (A.9).
pub const IA32_VMX_VMCS_ENUM: u32 = 0x48A;
/// `IA32_VMX_PROCBASED_CTLS2`: allowed secondary processor-based controls
/// (A.3.3).
pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
/// `IA32_VMX_EPT_VPID_CAP`: EPT and VPID capabilities (A.10).
pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
/// `IA32_VMX_TRUE_PINBASED_CTLS`: true allowed pin-based controls (A.3.1).
pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
/// `IA32_VMX_TRUE_PROCBASED_CTLS`: true allowed primary processor-based
/// controls (A.3.2).
pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
/// `IA32_VMX_TRUE_EXIT_CTLS`: true allowed primary VM-exit controls (A.4.1).
pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
/// `IA32_VMX_TRUE_ENTRY_CTLS`: true allowed VM-entry controls (A.5).
pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
/// `IA32_VMX_VMFUNC`: allowed VM-function controls (A.11).
pub const IA32_VMX_VMFUNC: u32 = 0x491;
/// `IA32_VMX_PROCBASED_CTLS3`: allowed tertiary processor-based controls
/// (A.3.4).
pub const IA32_VMX_PROCBASED_CTLS3: u32 = 0x492;
/// `IA32_VMX_EXIT_CTLS2`: allowed secondary VM-exit controls (A.4.2).
pub const IA32_VMX_EXIT_CTLS2: u32 = 0x493;

bitflags! {
    /// The bits of IA32_FEATURE_CONTROL (MSR 0x3A) that matter to VMX
    /// (SDM 24.7, Vol. 4 Table 2-2).
    ///
    /// VMXON faults unless the lock bit is set together with the enable bit
    /// for the current mode (inside or outside SMX).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct FeatureControl: u64 {
        /// Bit 0: lock. Once set, the MSR cannot be written until reset.
        const LOCK = 1 << 0;
        /// Bit 1: VMXON allowed inside SMX operation (after GETSEC[SENTER]).
        const VMX_INSIDE_SMX = 1 << 1;
        /// Bit 2: VMXON allowed outside SMX operation (the usual case).
        const VMX_OUTSIDE_SMX = 1 << 2;
        /// Bits 14:8: SENTER local function enables.
        const SENTER_LOCAL_FUNCTIONS = 0x7F << 8;
        /// Bit 15: SENTER global enable.
        const SENTER_GLOBAL_ENABLE = 1 << 15;
        /// Bit 17: SGX launch control enable.
        const SGX_LAUNCH_CONTROL = 1 << 17;
        /// Bit 18: SGX global enable.
        const SGX_GLOBAL_ENABLE = 1 << 18;
        /// Bit 20: LMCE (local machine-check exception) on.
        const LMCE_ON = 1 << 20;
    }
}

impl FeatureControl {
    /// Whether VMXON outside SMX is permitted: the MSR is locked and the
    /// "VMX outside SMX" bit is set (SDM 24.7).
    pub const fn allows_vmxon_outside_smx(self) -> bool {
        self.contains(Self::LOCK.union(Self::VMX_OUTSIDE_SMX))
    }
}

/// One of the VMX capability MSRs, `IA32_VMX_BASIC` (0x480) through
/// `IA32_VMX_EXIT_CTLS2` (0x493) (SDM Appendix A).
///
/// Used to read capabilities through a caller-supplied RDMSR and to name an
/// MSR in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum VmxMsr {
    /// `IA32_VMX_BASIC` (0x480), A.1.
    Basic = IA32_VMX_BASIC,
    /// `IA32_VMX_PINBASED_CTLS` (0x481), A.3.1.
    PinBasedCtls = IA32_VMX_PINBASED_CTLS,
    /// `IA32_VMX_PROCBASED_CTLS` (0x482), A.3.2.
    ProcBasedCtls = IA32_VMX_PROCBASED_CTLS,
    /// `IA32_VMX_EXIT_CTLS` (0x483), A.4.1.
    ExitCtls = IA32_VMX_EXIT_CTLS,
    /// `IA32_VMX_ENTRY_CTLS` (0x484), A.5.
    EntryCtls = IA32_VMX_ENTRY_CTLS,
    /// `IA32_VMX_MISC` (0x485), A.6.
    Misc = IA32_VMX_MISC,
    /// `IA32_VMX_CR0_FIXED0` (0x486), A.7.
    Cr0Fixed0 = IA32_VMX_CR0_FIXED0,
    /// `IA32_VMX_CR0_FIXED1` (0x487), A.7.
    Cr0Fixed1 = IA32_VMX_CR0_FIXED1,
    /// `IA32_VMX_CR4_FIXED0` (0x488), A.8.
    Cr4Fixed0 = IA32_VMX_CR4_FIXED0,
    /// `IA32_VMX_CR4_FIXED1` (0x489), A.8.
    Cr4Fixed1 = IA32_VMX_CR4_FIXED1,
    /// `IA32_VMX_VMCS_ENUM` (0x48A), A.9.
    VmcsEnum = IA32_VMX_VMCS_ENUM,
    /// `IA32_VMX_PROCBASED_CTLS2` (0x48B), A.3.3.
    ProcBasedCtls2 = IA32_VMX_PROCBASED_CTLS2,
    /// `IA32_VMX_EPT_VPID_CAP` (0x48C), A.10.
    EptVpidCap = IA32_VMX_EPT_VPID_CAP,
    /// `IA32_VMX_TRUE_PINBASED_CTLS` (0x48D), A.3.1.
    TruePinBasedCtls = IA32_VMX_TRUE_PINBASED_CTLS,
    /// `IA32_VMX_TRUE_PROCBASED_CTLS` (0x48E), A.3.2.
    TrueProcBasedCtls = IA32_VMX_TRUE_PROCBASED_CTLS,
    /// `IA32_VMX_TRUE_EXIT_CTLS` (0x48F), A.4.1.
    TrueExitCtls = IA32_VMX_TRUE_EXIT_CTLS,
    /// `IA32_VMX_TRUE_ENTRY_CTLS` (0x490), A.5.
    TrueEntryCtls = IA32_VMX_TRUE_ENTRY_CTLS,
    /// `IA32_VMX_VMFUNC` (0x491), A.11.
    VmFunc = IA32_VMX_VMFUNC,
    /// `IA32_VMX_PROCBASED_CTLS3` (0x492), A.3.4.
    ProcBasedCtls3 = IA32_VMX_PROCBASED_CTLS3,
    /// `IA32_VMX_EXIT_CTLS2` (0x493), A.4.2.
    ExitCtls2 = IA32_VMX_EXIT_CTLS2,
}

impl VmxMsr {
    /// Every VMX capability MSR, in index order.
    pub const ALL: [Self; 20] = [
        Self::Basic,
        Self::PinBasedCtls,
        Self::ProcBasedCtls,
        Self::ExitCtls,
        Self::EntryCtls,
        Self::Misc,
        Self::Cr0Fixed0,
        Self::Cr0Fixed1,
        Self::Cr4Fixed0,
        Self::Cr4Fixed1,
        Self::VmcsEnum,
        Self::ProcBasedCtls2,
        Self::EptVpidCap,
        Self::TruePinBasedCtls,
        Self::TrueProcBasedCtls,
        Self::TrueExitCtls,
        Self::TrueEntryCtls,
        Self::VmFunc,
        Self::ProcBasedCtls3,
        Self::ExitCtls2,
    ];

    /// The MSR index, as given to RDMSR in ECX.
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The MSR for an index, or `None` if the index is not a VMX capability
    /// MSR.
    pub const fn from_index(index: u32) -> Option<Self> {
        if index < IA32_VMX_BASIC || index > IA32_VMX_EXIT_CTLS2 {
            return None;
        }
        // The enum is dense over 0x480..=0x493 and `ALL` is in index order.
        Some(Self::ALL[(index - IA32_VMX_BASIC) as usize])
    }

    /// The SDM name of the MSR, e.g. `"IA32_VMX_BASIC"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Basic => "IA32_VMX_BASIC",
            Self::PinBasedCtls => "IA32_VMX_PINBASED_CTLS",
            Self::ProcBasedCtls => "IA32_VMX_PROCBASED_CTLS",
            Self::ExitCtls => "IA32_VMX_EXIT_CTLS",
            Self::EntryCtls => "IA32_VMX_ENTRY_CTLS",
            Self::Misc => "IA32_VMX_MISC",
            Self::Cr0Fixed0 => "IA32_VMX_CR0_FIXED0",
            Self::Cr0Fixed1 => "IA32_VMX_CR0_FIXED1",
            Self::Cr4Fixed0 => "IA32_VMX_CR4_FIXED0",
            Self::Cr4Fixed1 => "IA32_VMX_CR4_FIXED1",
            Self::VmcsEnum => "IA32_VMX_VMCS_ENUM",
            Self::ProcBasedCtls2 => "IA32_VMX_PROCBASED_CTLS2",
            Self::EptVpidCap => "IA32_VMX_EPT_VPID_CAP",
            Self::TruePinBasedCtls => "IA32_VMX_TRUE_PINBASED_CTLS",
            Self::TrueProcBasedCtls => "IA32_VMX_TRUE_PROCBASED_CTLS",
            Self::TrueExitCtls => "IA32_VMX_TRUE_EXIT_CTLS",
            Self::TrueEntryCtls => "IA32_VMX_TRUE_ENTRY_CTLS",
            Self::VmFunc => "IA32_VMX_VMFUNC",
            Self::ProcBasedCtls3 => "IA32_VMX_PROCBASED_CTLS3",
            Self::ExitCtls2 => "IA32_VMX_EXIT_CTLS2",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_dense_and_in_index_order() {
        for (offset, msr) in VmxMsr::ALL.iter().enumerate() {
            assert_eq!(msr.index(), 0x480 + offset as u32);
            assert_eq!(VmxMsr::from_index(msr.index()), Some(*msr));
            assert!(msr.name().starts_with("IA32_VMX_"));
        }
    }

    #[test]
    fn known_indices() {
        assert_eq!(VmxMsr::Basic.index(), 0x480);
        assert_eq!(VmxMsr::EptVpidCap.index(), 0x48C);
        assert_eq!(VmxMsr::TrueEntryCtls.index(), 0x490);
        assert_eq!(VmxMsr::VmFunc.index(), 0x491);
        assert_eq!(VmxMsr::ProcBasedCtls3.index(), 0x492);
        assert_eq!(VmxMsr::ExitCtls2.index(), 0x493);
        assert_eq!(VmxMsr::from_index(0x47F), None);
        assert_eq!(VmxMsr::from_index(0x494), None);
        assert_eq!(VmxMsr::from_index(u32::MAX), None);
        assert_eq!(VmxMsr::ProcBasedCtls2.name(), "IA32_VMX_PROCBASED_CTLS2");
    }

    #[test]
    fn feature_control_bits() {
        assert_eq!(FeatureControl::LOCK.bits(), 1);
        assert_eq!(FeatureControl::VMX_INSIDE_SMX.bits(), 2);
        assert_eq!(FeatureControl::VMX_OUTSIDE_SMX.bits(), 4);
        assert!(FeatureControl::from_bits_retain(0x5).allows_vmxon_outside_smx());
        assert!(!FeatureControl::from_bits_retain(0x4).allows_vmxon_outside_smx());
        assert!(!FeatureControl::from_bits_retain(0x3).allows_vmxon_outside_smx());
    }
}
