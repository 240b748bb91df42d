//! Checks on the host-state area (SDM Vol. 3C 27.2.2-27.2.4): host control
//! registers and MSRs, host segment and descriptor-table registers, and the
//! rules tied to the host's address-space size.
//!
//! A failure makes VMLAUNCH/VMRESUME fail with VMfailValid(8), "VM entry
//! with invalid host-state field(s)". [`check_host_state`] runs the checks
//! in SDM order and reports the first that fails. It assumes a processor
//! that supports Intel 64 architecture.
//!
//! # Checks not performed here
//!
//! - CR3 bits 62:61 under linear-address masking (LAM): [`EntryContext`]
//!   does not say whether LAM is supported, so bits 63:52 and the bits of
//!   51:32 at or above MAXPHYADDR are treated as reserved, as on processors
//!   without LAM (the same rule as for guest CR3).
//! - `IA32_PERF_GLOBAL_CTRL`: which bits are reserved depends on the number
//!   of general-purpose and fixed counters (CPUID leaf 0AH), which the
//!   capability MSRs do not report. Only bits 63:49 are treated as
//!   reserved: bits 31:0 enable general-purpose counters, bits 47:32 fixed
//!   counters and bit 48 `PERF_METRICS` on some processors
//!   ([`PERF_GLOBAL_CTRL_RESERVED`]).
//! - `IA32_EFER`: only the bits defined on Intel processors (SCE, LME, LMA,
//!   NXE) are treated as allowed; whether NXE is supported (CPUID) is not
//!   checked.
//! - The FRED host-state checks ("load `IA32_FRED`" secondary exit control)
//!   and the alignment of the host SSP: not confirmed against the current
//!   SDM text, so not enforced.

use super::EntryContext;
use super::util::{
    EffectiveControls, cet_without_write_protect, cr3_within_physical_width, display_as_name, read,
};
use crate::capabilities::VmxCapabilities;
use crate::controls::ExitControls;
use crate::registers::{Cet, Cr0, Cr4, Efer, InvalidPatEntry, first_invalid_pat_entry};
use crate::vmcs::{VmcsField, VmcsRead};

/// The bits of host `IA32_PERF_GLOBAL_CTRL` treated as reserved when "load
/// `IA32_PERF_GLOBAL_CTRL`" is 1: 63:49 (see the module docs).
pub const PERF_GLOBAL_CTRL_RESERVED: u64 = !((1 << 49) - 1);

/// The bits of `IA32_EFER` an Intel processor may have set: SCE (0), LME (8),
/// LMA (10), NXE (11) (SDM Vol. 3A 2.2.1, Table 2-1); all others are
/// reserved.
pub const EFER_DEFINED: u64 = Efer::all().bits();

/// A host segment register whose selector the checks look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostSegment {
    /// ES.
    Es,
    /// CS.
    Cs,
    /// SS.
    Ss,
    /// DS.
    Ds,
    /// FS.
    Fs,
    /// GS.
    Gs,
    /// TR.
    Tr,
}

impl HostSegment {
    /// The register name, e.g. `"CS"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Es => "ES",
            Self::Cs => "CS",
            Self::Ss => "SS",
            Self::Ds => "DS",
            Self::Fs => "FS",
            Self::Gs => "GS",
            Self::Tr => "TR",
        }
    }
}

/// A host register whose base address must be canonical.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostBase {
    /// FS base.
    Fs,
    /// GS base.
    Gs,
    /// GDTR base.
    Gdtr,
    /// IDTR base.
    Idtr,
    /// TR base.
    Tr,
}

impl HostBase {
    /// The register name, e.g. `"GDTR"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Fs => "FS",
            Self::Gs => "GS",
            Self::Gdtr => "GDTR",
            Self::Idtr => "IDTR",
            Self::Tr => "TR",
        }
    }
}

display_as_name!(HostSegment, HostBase);

/// A failed check on the host-state area (SDM 27.2.2-27.2.4), naming the
/// SDM rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostCheck {
    // ---- SDM 27.2.2: host control registers and MSRs --------------------
    /// Host CR0 sets a bit to a value not supported in VMX operation
    /// (`IA32_VMX_CR0_FIXED0`/FIXED1).
    #[error("host CR0 {value:#x} sets bit {bit} to a value not supported in VMX operation (must be {})", u8::from(*must_be_one))]
    Cr0NotSupportedInVmx {
        /// The host CR0 field.
        value: u64,
        /// The lowest offending bit.
        bit: u32,
        /// Whether the bit must be 1 (else it must be 0).
        must_be_one: bool,
    },
    /// Host CR4 sets a bit to a value not supported in VMX operation
    /// (`IA32_VMX_CR4_FIXED0`/FIXED1).
    #[error("host CR4 {value:#x} sets bit {bit} to a value not supported in VMX operation (must be {})", u8::from(*must_be_one))]
    Cr4NotSupportedInVmx {
        /// The host CR4 field.
        value: u64,
        /// The lowest offending bit.
        bit: u32,
        /// Whether the bit must be 1 (else it must be 0).
        must_be_one: bool,
    },
    /// Host CR4.CET = 1 but CR0.WP = 0.
    #[error("host CR0.WP must be 1 when host CR4.CET is 1")]
    CetWithoutWriteProtect,
    /// Host CR3 sets bits beyond MAXPHYADDR.
    #[error("host CR3 {value:#x} sets bits beyond the physical-address width")]
    Cr3BeyondPhysicalAddressWidth {
        /// The host CR3 field.
        value: u64,
    },
    /// Host `IA32_SYSENTER_ESP` is not canonical.
    #[error("host IA32_SYSENTER_ESP {address:#x} must be canonical")]
    SysenterEspNotCanonical {
        /// The field.
        address: u64,
    },
    /// Host `IA32_SYSENTER_EIP` is not canonical.
    #[error("host IA32_SYSENTER_EIP {address:#x} must be canonical")]
    SysenterEipNotCanonical {
        /// The field.
        address: u64,
    },
    /// "load CET state" = 1 and host `IA32_S_CET` is not canonical.
    #[error("host IA32_S_CET {value:#x} must be canonical")]
    SCetNotCanonical {
        /// The field.
        value: u64,
    },
    /// "load CET state" = 1 and host `IA32_S_CET` sets reserved bits 9:6.
    #[error("host IA32_S_CET {value:#x} sets reserved bits 9:6")]
    SCetReservedBits {
        /// The field.
        value: u64,
    },
    /// "load CET state" = 1 and host `IA32_S_CET` sets both SUPPRESS (bit 10)
    /// and TRACKER (bit 11).
    #[error("host IA32_S_CET {value:#x} must not set both SUPPRESS and TRACKER")]
    SCetSuppressWithTracker {
        /// The field.
        value: u64,
    },
    /// "load CET state" = 1 and host `IA32_INTERRUPT_SSP_TABLE_ADDR` is not
    /// canonical.
    #[error("host IA32_INTERRUPT_SSP_TABLE_ADDR {address:#x} must be canonical")]
    InterruptSspTableAddressNotCanonical {
        /// The field.
        address: u64,
    },
    /// "load CET state" is 1 and host SSP bits 1:0 are not 0.
    #[error("host SSP {ssp:#x}: bits 1:0 must be 0")]
    SspMisaligned {
        /// The field.
        ssp: u64,
    },
    /// "load `IA32_PERF_GLOBAL_CTRL`" = 1 and the field sets reserved bits
    /// ([`PERF_GLOBAL_CTRL_RESERVED`]).
    #[error("host IA32_PERF_GLOBAL_CTRL {value:#x} sets reserved bits")]
    PerfGlobalCtrlReservedBits {
        /// The field.
        value: u64,
    },
    /// "load `IA32_PAT`" = 1 and a PAT entry is not a valid memory type (0, 1,
    /// 4, 5, 6 or 7).
    #[error("host IA32_PAT entry {entry} has invalid memory type {memory_type}")]
    PatInvalidMemoryType {
        /// The entry index (0-7).
        entry: u8,
        /// The entry's value.
        memory_type: u8,
    },
    /// "load `IA32_EFER`" = 1 and host `IA32_EFER` sets reserved bits.
    #[error("host IA32_EFER {value:#x} sets reserved bits")]
    EferReservedBits {
        /// The field.
        value: u64,
    },
    /// "load `IA32_EFER`" = 1 and EFER.LMA differs from "host address-space
    /// size".
    #[error("host IA32_EFER.LMA must equal \"host address-space size\" ({})", u8::from(*host_address_space_size))]
    EferLmaMismatch {
        /// The "host address-space size" exit control.
        host_address_space_size: bool,
    },
    /// "load `IA32_EFER`" = 1 and EFER.LME differs from "host address-space
    /// size".
    #[error("host IA32_EFER.LME must equal \"host address-space size\" ({})", u8::from(*host_address_space_size))]
    EferLmeMismatch {
        /// The "host address-space size" exit control.
        host_address_space_size: bool,
    },
    /// "load PKRS" = 1 and bits 63:32 of host `IA32_PKRS` are not 0.
    #[error("bits 63:32 of host IA32_PKRS {value:#x} must be 0")]
    PkrsReservedBits {
        /// The field.
        value: u64,
    },

    // ---- SDM 27.2.3: host segment and descriptor-table registers --------
    /// A host selector has RPL or TI set.
    #[error("host {register} selector {selector:#x} must have RPL and TI 0")]
    SelectorRplOrTiSet {
        /// The register.
        register: HostSegment,
        /// The selector.
        selector: u16,
    },
    /// The host CS selector is 0000H.
    #[error("host CS selector must not be 0000H")]
    CsSelectorNull,
    /// The host TR selector is 0000H.
    #[error("host TR selector must not be 0000H")]
    TrSelectorNull,
    /// The host SS selector is 0000H while "host address-space size" is 0.
    #[error("host SS selector must not be 0000H when \"host address-space size\" is 0")]
    SsSelectorNullWith32BitHost,
    /// A host base address is not canonical.
    #[error("host {register} base {base:#x} must be canonical")]
    BaseNotCanonical {
        /// The register.
        register: HostBase,
        /// The base address.
        base: u64,
    },

    // ---- SDM 27.2.4: address-space size ---------------------------------
    /// The processor is in IA-32e mode but "host address-space size" is 0.
    #[error("\"host address-space size\" must be 1 when VM entry is executed in IA-32e mode")]
    HostAddressSpaceSizeZeroInIa32eMode,
    /// The processor is outside IA-32e mode but "IA-32e mode guest" is 1.
    #[error("\"IA-32e mode guest\" must be 0 when VM entry is executed outside IA-32e mode")]
    Ia32eModeGuestOutsideIa32eMode,
    /// The processor is outside IA-32e mode but "host address-space size"
    /// is 1.
    #[error("\"host address-space size\" must be 0 when VM entry is executed outside IA-32e mode")]
    HostAddressSpaceSizeOneOutsideIa32eMode,
    /// "host address-space size" = 0 but host CR4.PCIDE = 1.
    #[error("host CR4.PCIDE must be 0 when \"host address-space size\" is 0")]
    PcideWith32BitHost,
    /// "host address-space size" = 0 but host RIP bits 63:32 are not 0.
    #[error("bits 63:32 of host RIP {rip:#x} must be 0 when \"host address-space size\" is 0")]
    RipHighBitsWith32BitHost {
        /// The host RIP field.
        rip: u64,
    },
    /// "host address-space size" = 0, "load CET state" = 1 and bits 63:32
    /// of host `IA32_S_CET` or SSP are not 0.
    #[error(
        "bits 63:32 of host {register} {value:#x} must be 0 when \"host address-space size\" is 0"
    )]
    CetStateHighBitsWith32BitHost {
        /// `"IA32_S_CET"` or `"SSP"`.
        register: &'static str,
        /// The field.
        value: u64,
    },
    /// "host address-space size" = 1 but host CR4.PAE = 0.
    #[error("host CR4.PAE must be 1 when \"host address-space size\" is 1")]
    PaeClearWith64BitHost,
    /// "host address-space size" = 1 but host RIP is not canonical.
    #[error("host RIP {rip:#x} must be canonical when \"host address-space size\" is 1")]
    RipNotCanonical {
        /// The host RIP field.
        rip: u64,
    },
    /// "host address-space size" = 1, "load CET state" = 1 and host SSP is
    /// not canonical.
    #[error("host SSP {ssp:#x} must be canonical when \"host address-space size\" is 1")]
    SspNotCanonical {
        /// The host SSP field.
        ssp: u64,
    },
}

impl HostCheck {
    /// The SDM section that states the failed rule: `"27.2.2"`, `"27.2.3"`
    /// or `"27.2.4"`.
    pub const fn sdm_section(&self) -> &'static str {
        match self {
            Self::Cr0NotSupportedInVmx { .. }
            | Self::Cr4NotSupportedInVmx { .. }
            | Self::CetWithoutWriteProtect
            | Self::Cr3BeyondPhysicalAddressWidth { .. }
            | Self::SysenterEspNotCanonical { .. }
            | Self::SysenterEipNotCanonical { .. }
            | Self::SCetNotCanonical { .. }
            | Self::SCetReservedBits { .. }
            | Self::SCetSuppressWithTracker { .. }
            | Self::InterruptSspTableAddressNotCanonical { .. }
            | Self::SspMisaligned { .. }
            | Self::PerfGlobalCtrlReservedBits { .. }
            | Self::PatInvalidMemoryType { .. }
            | Self::EferReservedBits { .. }
            | Self::EferLmaMismatch { .. }
            | Self::EferLmeMismatch { .. }
            | Self::PkrsReservedBits { .. } => "27.2.2",
            Self::SelectorRplOrTiSet { .. }
            | Self::CsSelectorNull
            | Self::TrSelectorNull
            | Self::SsSelectorNullWith32BitHost
            | Self::BaseNotCanonical { .. } => "27.2.3",
            Self::HostAddressSpaceSizeZeroInIa32eMode
            | Self::Ia32eModeGuestOutsideIa32eMode
            | Self::HostAddressSpaceSizeOneOutsideIa32eMode
            | Self::PcideWith32BitHost
            | Self::RipHighBitsWith32BitHost { .. }
            | Self::CetStateHighBitsWith32BitHost { .. }
            | Self::PaeClearWith64BitHost
            | Self::RipNotCanonical { .. }
            | Self::SspNotCanonical { .. } => "27.2.4",
        }
    }
}

/// Runs every check on the host-state area (SDM 27.2.2-27.2.4), in SDM
/// order.
///
/// # Errors
///
/// The first failed check, as a [`HostCheck`].
pub fn check_host_state<V: VmcsRead + ?Sized>(
    vmcs: &V,
    caps: &VmxCapabilities,
    context: &EntryContext,
) -> Result<(), HostCheck> {
    let controls = EffectiveControls::read(vmcs);
    check_control_registers_and_msrs(vmcs, caps, context, controls.exit)?;
    check_segment_registers(vmcs, context, &controls)?;
    check_address_space_size(vmcs, context, &controls)
}

/// SDM 27.2.2: host control registers and MSRs.
fn check_control_registers_and_msrs<V: VmcsRead + ?Sized>(
    vmcs: &V,
    caps: &VmxCapabilities,
    context: &EntryContext,
    exit: ExitControls,
) -> Result<(), HostCheck> {
    let cr0 = read(vmcs, VmcsField::HostCr0);
    if let Some(violation) = caps.cr0_fixed.first_violation(cr0) {
        return Err(HostCheck::Cr0NotSupportedInVmx {
            value: cr0,
            bit: violation.bit,
            must_be_one: violation.required,
        });
    }
    let cr4 = read(vmcs, VmcsField::HostCr4);
    if let Some(violation) = caps.cr4_fixed.first_violation(cr4) {
        return Err(HostCheck::Cr4NotSupportedInVmx {
            value: cr4,
            bit: violation.bit,
            must_be_one: violation.required,
        });
    }
    if cet_without_write_protect(Cr0::from_bits_retain(cr0), Cr4::from_bits_retain(cr4)) {
        return Err(HostCheck::CetWithoutWriteProtect);
    }
    let cr3 = read(vmcs, VmcsField::HostCr3);
    if !cr3_within_physical_width(cr3, caps, context) {
        return Err(HostCheck::Cr3BeyondPhysicalAddressWidth { value: cr3 });
    }

    let address = read(vmcs, VmcsField::HostSysenterEsp);
    if !context.is_canonical(address) {
        return Err(HostCheck::SysenterEspNotCanonical { address });
    }
    let address = read(vmcs, VmcsField::HostSysenterEip);
    if !context.is_canonical(address) {
        return Err(HostCheck::SysenterEipNotCanonical { address });
    }

    if exit.contains(ExitControls::LOAD_CET_STATE) {
        let value = read(vmcs, VmcsField::HostSCet);
        if !context.is_canonical(value) {
            return Err(HostCheck::SCetNotCanonical { value });
        }
        let s_cet = Cet::from_bits_retain(value);
        if s_cet.intersects(Cet::RESERVED) {
            return Err(HostCheck::SCetReservedBits { value });
        }
        if s_cet.contains(Cet::SUPPRESS | Cet::TRACKER) {
            return Err(HostCheck::SCetSuppressWithTracker { value });
        }
        let address = read(vmcs, VmcsField::HostInterruptSspTableAddress);
        if !context.is_canonical(address) {
            return Err(HostCheck::InterruptSspTableAddressNotCanonical { address });
        }
        // SSP bits 1:0 must be 0 (KVM nested_vmx_check_cet_state_common,
        // Bochs VMenterLoadCheckHostState).
        let ssp = read(vmcs, VmcsField::HostSsp);
        if ssp & 0b11 != 0 {
            return Err(HostCheck::SspMisaligned { ssp });
        }
    }

    if exit.contains(ExitControls::LOAD_IA32_PERF_GLOBAL_CTRL) {
        let value = read(vmcs, VmcsField::HostPerfGlobalCtrl);
        if value & PERF_GLOBAL_CTRL_RESERVED != 0 {
            return Err(HostCheck::PerfGlobalCtrlReservedBits { value });
        }
    }

    if exit.contains(ExitControls::LOAD_IA32_PAT)
        && let Some(InvalidPatEntry { index, memory_type }) =
            first_invalid_pat_entry(read(vmcs, VmcsField::HostPat))
    {
        return Err(HostCheck::PatInvalidMemoryType {
            entry: index,
            memory_type,
        });
    }

    if exit.contains(ExitControls::LOAD_IA32_EFER) {
        let value = read(vmcs, VmcsField::HostEfer);
        let efer = Efer::from_bits_retain(value);
        if !Efer::all().contains(efer) {
            return Err(HostCheck::EferReservedBits { value });
        }
        let host_address_space_size = exit.contains(ExitControls::HOST_ADDRESS_SPACE_SIZE);
        if efer.contains(Efer::LMA) != host_address_space_size {
            return Err(HostCheck::EferLmaMismatch {
                host_address_space_size,
            });
        }
        if efer.contains(Efer::LME) != host_address_space_size {
            return Err(HostCheck::EferLmeMismatch {
                host_address_space_size,
            });
        }
    }

    if exit.contains(ExitControls::LOAD_PKRS) {
        let value = read(vmcs, VmcsField::HostPkrs);
        if value >> 32 != 0 {
            return Err(HostCheck::PkrsReservedBits { value });
        }
    }
    Ok(())
}

/// SDM 27.2.3: host segment and descriptor-table registers.
fn check_segment_registers<V: VmcsRead + ?Sized>(
    vmcs: &V,
    context: &EntryContext,
    controls: &EffectiveControls,
) -> Result<(), HostCheck> {
    let selectors = [
        (HostSegment::Es, VmcsField::HostEsSelector),
        (HostSegment::Cs, VmcsField::HostCsSelector),
        (HostSegment::Ss, VmcsField::HostSsSelector),
        (HostSegment::Ds, VmcsField::HostDsSelector),
        (HostSegment::Fs, VmcsField::HostFsSelector),
        (HostSegment::Gs, VmcsField::HostGsSelector),
        (HostSegment::Tr, VmcsField::HostTrSelector),
    ];
    for (register, field) in selectors {
        let selector = read(vmcs, field) as u16;
        // Bits 1:0 are the RPL, bit 2 the table indicator.
        if selector & 0x7 != 0 {
            return Err(HostCheck::SelectorRplOrTiSet { register, selector });
        }
    }
    if read(vmcs, VmcsField::HostCsSelector) == 0 {
        return Err(HostCheck::CsSelectorNull);
    }
    if read(vmcs, VmcsField::HostTrSelector) == 0 {
        return Err(HostCheck::TrSelectorNull);
    }
    if !controls.host_address_space_size() && read(vmcs, VmcsField::HostSsSelector) == 0 {
        return Err(HostCheck::SsSelectorNullWith32BitHost);
    }
    let bases = [
        (HostBase::Fs, VmcsField::HostFsBase),
        (HostBase::Gs, VmcsField::HostGsBase),
        (HostBase::Gdtr, VmcsField::HostGdtrBase),
        (HostBase::Idtr, VmcsField::HostIdtrBase),
        (HostBase::Tr, VmcsField::HostTrBase),
    ];
    for (register, field) in bases {
        let base = read(vmcs, field);
        if !context.is_canonical(base) {
            return Err(HostCheck::BaseNotCanonical { register, base });
        }
    }
    Ok(())
}

/// SDM 27.2.4: checks related to address-space size.
fn check_address_space_size<V: VmcsRead + ?Sized>(
    vmcs: &V,
    context: &EntryContext,
    controls: &EffectiveControls,
) -> Result<(), HostCheck> {
    let host_64_bit = controls.host_address_space_size();
    let load_cet = controls.exit.contains(ExitControls::LOAD_CET_STATE);

    if context.in_ia32e_mode {
        if !host_64_bit {
            return Err(HostCheck::HostAddressSpaceSizeZeroInIa32eMode);
        }
    } else {
        if controls.ia32e_mode_guest() {
            return Err(HostCheck::Ia32eModeGuestOutsideIa32eMode);
        }
        if host_64_bit {
            return Err(HostCheck::HostAddressSpaceSizeOneOutsideIa32eMode);
        }
    }

    let cr4 = Cr4::from_bits_retain(read(vmcs, VmcsField::HostCr4));
    let rip = read(vmcs, VmcsField::HostRip);
    if host_64_bit {
        if !cr4.contains(Cr4::PAE) {
            return Err(HostCheck::PaeClearWith64BitHost);
        }
        if !context.is_canonical(rip) {
            return Err(HostCheck::RipNotCanonical { rip });
        }
        if load_cet {
            let ssp = read(vmcs, VmcsField::HostSsp);
            if !context.is_canonical(ssp) {
                return Err(HostCheck::SspNotCanonical { ssp });
            }
        }
    } else {
        // "IA-32e mode guest" must also be 0 here; with the rules above that
        // is already checked (a 32-bit host means VM entry outside IA-32e
        // mode, where the guest control was required to be 0).
        if cr4.contains(Cr4::PCIDE) {
            return Err(HostCheck::PcideWith32BitHost);
        }
        if rip >> 32 != 0 {
            return Err(HostCheck::RipHighBitsWith32BitHost { rip });
        }
        if load_cet {
            for (register, field) in [
                ("IA32_S_CET", VmcsField::HostSCet),
                ("SSP", VmcsField::HostSsp),
            ] {
                let value = read(vmcs, field);
                if value >> 32 != 0 {
                    return Err(HostCheck::CetStateHighBitsWith32BitHost { register, value });
                }
            }
        }
    }
    Ok(())
}
