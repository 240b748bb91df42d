//! What the platform's VMCS02 holds, as far as hv-core knows: so that a
//! nested entry writes only the fields that changed (KVM splits
//! `prepare_vmcs02` into a rare and a frequent part for the same reason).
//!
//! The processor changes VMCS02 while L2 runs: it saves guest state at
//! every exit (SDM 28.3) and clears the valid bit of the VM-entry
//! interruption-information field (SDM 28.2, "updating VM-entry control
//! fields"). The fields it saves are [`GUEST_STATE_FIELDS`] (the others
//! belong to features hv never enables in VMCS02); they are unknown after
//! an L2 exit until read back, and unknown fields are always written. The
//! same update writes `IA32_EFER.LMA` into the "IA-32e mode guest" entry
//! control (SDM 28.2), so the VM-entry controls are unknown too.

use hv_arch_vmx::interruption::InterruptionInfo;
use hv_arch_vmx::vmcs::{FieldKind, VmcsField, VmcsImage};

use crate::vmcs02::GUEST_STATE_FIELDS;

/// hv-core's knowledge of the platform's VMCS02.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Vmcs02Cache {
    /// The value of every known field (the platform's VMCS02 starts all 0).
    known: VmcsImage,
    /// Fields whose value is unknown (indexed by [`VmcsField::index`]).
    unknown: [bool; VmcsField::COUNT],
}

impl Vmcs02Cache {
    /// A VMCS02 with every field 0.
    pub(super) const fn new() -> Self {
        Self {
            known: VmcsImage::new(),
            unknown: [false; VmcsField::COUNT],
        }
    }

    /// The fields of `image` that differ from (or may differ from) the
    /// platform's VMCS02, with their new values.
    pub(super) fn changes<'a>(
        &'a self,
        image: &'a VmcsImage,
    ) -> impl Iterator<Item = (VmcsField, u64)> + 'a {
        VmcsField::ALL.iter().filter_map(move |&field| {
            let value = image.get(field);
            let stale = self.unknown[field.index()] || self.known.get(field) != value;
            // Read-only fields are the processor's; never written.
            (stale && field.kind() != FieldKind::ReadOnly).then_some((field, value))
        })
    }

    /// `field` now holds `value` on the platform.
    pub(super) fn wrote(&mut self, field: VmcsField, value: u64) {
        self.known.set(field, value);
        self.unknown[field.index()] = false;
    }

    /// L2 exited: the processor saved guest state, cleared the valid bit
    /// of the VM-entry interruption information and wrote L2's EFER.LMA
    /// into "IA-32e mode guest" (SDM 28.2).
    pub(super) fn l2_exited(&mut self) {
        for &field in GUEST_STATE_FIELDS {
            self.unknown[field.index()] = true;
        }
        // SDM 28.2: "the VM exit ... loads the 'IA-32e mode guest' control
        // with IA32_EFER.LMA": the next entry always rewrites the word.
        self.unknown[VmcsField::VmEntryControls.index()] = true;
        let info = self.known.get(VmcsField::VmEntryInterruptionInfo);
        self.known.set(
            VmcsField::VmEntryInterruptionInfo,
            info & !u64::from(InterruptionInfo::VALID),
        );
    }
}
