//! Helpers shared by the control, host-state and guest-state checks: how a
//! field is read, which controls are in effect, and the rules the SDM states
//! identically for host and guest state.

use super::EntryContext;
use crate::capabilities::VmxCapabilities;
use crate::controls::{
    ControlWord, EntryControls, ExitControls, PinBasedControls, PrimaryProcControls,
    SecondaryProcControls, TertiaryProcControls,
};
use crate::registers::{Cr0, Cr4};
use crate::vmcs::{VmcsField, VmcsRead};

/// The VMCS link pointer value meaning "no shadow VMCS" (SDM 25.4.2,
/// 27.3.1.5).
pub(super) const NO_LINK_POINTER: u64 = u64::MAX;

/// Reads `field`, keeping only the bits its width holds (what VMREAD
/// returns), whatever the reader does with the rest.
pub(super) fn read<V: VmcsRead + ?Sized>(vmcs: &V, field: VmcsField) -> u64 {
    vmcs.read_field(field) & field.width().mask()
}

/// The control words as VM entry uses them: controls that are not
/// activated read as 0 (SDM 25.6.2: secondary and tertiary processor-based
/// controls).
#[derive(Clone, Copy, Debug)]
pub(super) struct EffectiveControls {
    pub(super) pin: PinBasedControls,
    pub(super) primary: PrimaryProcControls,
    pub(super) secondary: SecondaryProcControls,
    pub(super) tertiary: TertiaryProcControls,
    pub(super) exit: ExitControls,
    pub(super) entry: EntryControls,
}

impl EffectiveControls {
    pub(super) fn read<V: VmcsRead + ?Sized>(vmcs: &V) -> Self {
        let primary =
            PrimaryProcControls::from_raw(read(vmcs, VmcsField::PrimaryProcBasedControls));
        let secondary = if primary.contains(PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS) {
            SecondaryProcControls::from_raw(read(vmcs, VmcsField::SecondaryProcBasedControls))
        } else {
            SecondaryProcControls::empty()
        };
        let tertiary = if primary.contains(PrimaryProcControls::ACTIVATE_TERTIARY_CONTROLS) {
            TertiaryProcControls::from_raw(read(vmcs, VmcsField::TertiaryProcBasedControls))
        } else {
            TertiaryProcControls::empty()
        };
        Self {
            pin: PinBasedControls::from_raw(read(vmcs, VmcsField::PinBasedControls)),
            primary,
            secondary,
            tertiary,
            exit: ExitControls::from_raw(read(vmcs, VmcsField::PrimaryVmExitControls)),
            entry: EntryControls::from_raw(read(vmcs, VmcsField::VmEntryControls)),
        }
    }

    /// The "enable EPT" VM-execution control.
    pub(super) const fn ept(&self) -> bool {
        self.secondary.contains(SecondaryProcControls::ENABLE_EPT)
    }

    /// The "unrestricted guest" VM-execution control.
    pub(super) const fn unrestricted_guest(&self) -> bool {
        self.secondary
            .contains(SecondaryProcControls::UNRESTRICTED_GUEST)
    }

    /// The "IA-32e mode guest" VM-entry control.
    pub(super) const fn ia32e_mode_guest(&self) -> bool {
        self.entry.contains(EntryControls::IA32E_MODE_GUEST)
    }

    /// The "host address-space size" VM-exit control.
    pub(super) const fn host_address_space_size(&self) -> bool {
        self.exit.contains(ExitControls::HOST_ADDRESS_SPACE_SIZE)
    }
}

/// Whether a CR3 field passes the rule SDM 27.2.2 (host) and 27.3.1.1
/// (guest) state alike: bits 63:52, and the bits of 51:32 at or above
/// MAXPHYADDR, are 0. Bits 31:0 are never checked. On a processor with LAM
/// (`CR4.LAM_SUP` allowed by `IA32_VMX_CR4_FIXED1`), CR3 bits 62:61
/// (`LAM_U57`, `LAM_U48`) are defined, not reserved, as KVM's
/// `kvm_vcpu_is_legal_cr3` treats them.
pub(super) const fn cr3_within_physical_width(
    cr3: u64,
    caps: &VmxCapabilities,
    context: &EntryContext,
) -> bool {
    const LAM_U57_U48: u64 = (1 << 62) | (1 << 61);
    let cr3 = if caps.cr4_fixed.must_be_zero() & Cr4::LAM_SUP.bits() == 0 {
        cr3 & !LAM_U57_U48
    } else {
        cr3
    };
    let width = if context.physical_address_width < 32 {
        32
    } else if context.physical_address_width > 52 {
        52
    } else {
        context.physical_address_width
    };
    cr3 >> width == 0
}

/// Whether CR4.CET is 1 while CR0.WP is 0, which VM entry rejects for host
/// and guest state alike (SDM 27.2.2, 27.3.1.1).
pub(super) const fn cet_without_write_protect(cr0: Cr0, cr4: Cr4) -> bool {
    cr4.contains(Cr4::CET) && !cr0.contains(Cr0::WP)
}

/// Implements `Display` for register-name enums as their `name()`.
macro_rules! display_as_name {
    ($($ty:ty),+ $(,)?) => {$(
        impl core::fmt::Display for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.name())
            }
        }
    )+};
}
pub(super) use display_as_name;
