//! A VMCS image: a value for every field, independent of any processor.
//!
//! hv keeps VMCS12 as an image (L1's VMCS, in hv's own layout), and the
//! VM-entry checks in [`crate::checks`] run over anything that can read
//! fields ([`VmcsRead`]), so they apply equally to an image and to a cache.

use super::{FieldAccess, FieldPart, VmcsField};

/// Read access to the fields of a VMCS, however it is stored.
pub trait VmcsRead {
    /// The current value of `field`, zero-extended to 64 bits.
    fn read_field(&self, field: VmcsField) -> u64;
}

/// Every field of a VMCS as a plain value, indexed by [`VmcsField::index`].
///
/// Values are stored truncated to the field's width, exactly as a VMWRITE of
/// the same value would leave them.
#[derive(Clone, PartialEq, Eq)]
pub struct VmcsImage {
    values: [u64; VmcsField::COUNT],
}

impl VmcsImage {
    /// An image with every field zero.
    pub const fn new() -> Self {
        Self {
            values: [0; VmcsField::COUNT],
        }
    }

    /// The value of `field`.
    pub const fn get(&self, field: VmcsField) -> u64 {
        self.values[field.index()]
    }

    /// Sets `field` to `value` truncated to the field's width.
    pub const fn set(&mut self, field: VmcsField, value: u64) {
        self.values[field.index()] = value & field.width().mask();
    }

    /// Builder form of [`VmcsImage::set`].
    #[must_use]
    pub const fn with(mut self, field: VmcsField, value: u64) -> Self {
        self.set(field, value);
        self
    }

    /// VMREAD semantics for a decoded operand: the whole field, or bits 63:32
    /// of a 64-bit field for a HIGH access (SDM 25.11.2).
    pub const fn read(&self, access: FieldAccess) -> u64 {
        let value = self.get(access.field);
        match access.part {
            FieldPart::Full => value,
            FieldPart::High => value >> 32,
        }
    }

    /// VMWRITE semantics for a decoded operand: a FULL write of a 64-bit
    /// field writes all 64 bits; a HIGH write replaces bits 63:32 with bits
    /// 31:0 of `value` and keeps bits 31:0 (SDM 25.11.2). Read-only fields
    /// are not refused here: whether VMWRITE may write them depends on
    /// `IA32_VMX_MISC` bit 29, which the caller knows.
    pub const fn write(&mut self, access: FieldAccess, value: u64) {
        match access.part {
            FieldPart::Full => self.set(access.field, value),
            FieldPart::High => {
                let low = self.get(access.field) & 0xffff_ffff;
                self.set(access.field, low | (value << 32));
            }
        }
    }

    /// Iterates over `(field, value)` for every field whose value is not zero.
    pub fn non_zero(&self) -> impl Iterator<Item = (VmcsField, u64)> + '_ {
        VmcsField::ALL
            .iter()
            .zip(self.values.iter())
            .filter(|(_, value)| **value != 0)
            .map(|(field, value)| (*field, *value))
    }
}

impl Default for VmcsImage {
    fn default() -> Self {
        Self::new()
    }
}

impl VmcsRead for VmcsImage {
    fn read_field(&self, field: VmcsField) -> u64 {
        self.get(field)
    }
}

impl core::fmt::Debug for VmcsImage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut map = f.debug_map();
        for (field, value) in self.non_zero() {
            map.key(&field.name()).value(&format_args!("{value:#x}"));
        }
        map.finish()
    }
}
