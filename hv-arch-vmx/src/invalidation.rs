//! INVEPT and INVVPID: invalidation types and descriptors
//! (SDM Vol. 3C 31.3 "INVEPT", "INVVPID"; 29.4.3).
//!
//! The descriptors are the 128-bit in-memory operands of the instructions;
//! their layout is fixed by the SDM and checked at compile time below. A
//! nested hypervisor reads L1's descriptor from guest memory into these types
//! and uses [`InvvpidDescriptor::validate`] and [`InveptDescriptor::validate`]
//! to decide between `VMfailValid` and performing the invalidation.

use core::mem::{offset_of, size_of};

use crate::capabilities::{EptVpidCap, VmxCapabilities};
use crate::ept::{Eptp, EptpError};

/// The INVEPT type, the register operand of INVEPT (SDM 31.3 INVEPT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum InveptType {
    /// Type 1: invalidate mappings derived from one EPTP's root (bits 51:12).
    SingleContext = 1,
    /// Type 2: invalidate mappings derived from all EPTPs.
    Global = 2,
}

impl InveptType {
    /// Decodes the register operand; any other value is not a type.
    pub const fn from_raw(raw: u64) -> Option<Self> {
        match raw {
            1 => Some(Self::SingleContext),
            2 => Some(Self::Global),
            _ => None,
        }
    }

    /// The register operand value.
    pub const fn raw(self) -> u64 {
        self as u64
    }

    /// Whether the processor supports INVEPT with this type
    /// (`EPT_VPID_CAP` bit 20 and bit 25 or 26, SDM A.10).
    pub const fn is_supported(self, cap: &EptVpidCap) -> bool {
        cap.invept()
            && match self {
                Self::SingleContext => cap.invept_single_context(),
                Self::Global => cap.invept_all_context(),
            }
    }
}

/// The INVVPID type, the register operand of INVVPID (SDM 31.3 INVVPID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum InvvpidType {
    /// Type 0: one linear address for one VPID.
    IndividualAddress = 0,
    /// Type 1: all mappings of one VPID.
    SingleContext = 1,
    /// Type 2: all mappings of all VPIDs except VPID 0.
    AllContext = 2,
    /// Type 3: all non-global mappings of one VPID.
    SingleContextRetainingGlobals = 3,
}

impl InvvpidType {
    /// Decodes the register operand; any other value is not a type.
    pub const fn from_raw(raw: u64) -> Option<Self> {
        match raw {
            0 => Some(Self::IndividualAddress),
            1 => Some(Self::SingleContext),
            2 => Some(Self::AllContext),
            3 => Some(Self::SingleContextRetainingGlobals),
            _ => None,
        }
    }

    /// The register operand value.
    pub const fn raw(self) -> u64 {
        self as u64
    }

    /// Whether the processor supports INVVPID with this type
    /// (`EPT_VPID_CAP` bit 32 and bits 43:40, SDM A.10).
    pub const fn is_supported(self, cap: &EptVpidCap) -> bool {
        cap.invvpid()
            && match self {
                Self::IndividualAddress => cap.invvpid_individual_address(),
                Self::SingleContext => cap.invvpid_single_context(),
                Self::AllContext => cap.invvpid_all_context(),
                Self::SingleContextRetainingGlobals => {
                    cap.invvpid_single_context_retaining_globals()
                }
            }
    }
}

/// The INVEPT descriptor (SDM 31.3 INVEPT, Figure 31-1): the EPTP in bits
/// 63:0, bits 127:64 reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(C, align(16))]
pub struct InveptDescriptor {
    /// The EPTP whose mappings a single-context INVEPT invalidates.
    pub eptp: u64,
    /// Bits 127:64, reserved.
    pub reserved: u64,
}

const _: () = assert!(size_of::<InveptDescriptor>() == 16);
const _: () = assert!(offset_of!(InveptDescriptor, eptp) == 0);
const _: () = assert!(offset_of!(InveptDescriptor, reserved) == 8);

impl InveptDescriptor {
    /// A descriptor for `eptp`.
    pub const fn new(eptp: Eptp) -> Self {
        Self {
            eptp: eptp.raw(),
            reserved: 0,
        }
    }

    /// Checks the descriptor as INVEPT would for `invept_type`: a
    /// single-context INVEPT fails (`VMfailValid`, invalid operand) if the
    /// EPTP would fail the VM-entry EPTP checks (SDM 31.3 INVEPT
    /// operation); an all-context INVEPT ignores the descriptor.
    ///
    /// # Errors
    ///
    /// The failing EPTP rule, as an [`EptpError`].
    pub const fn validate(
        &self,
        invept_type: InveptType,
        caps: &VmxCapabilities,
        maxphyaddr: u8,
    ) -> Result<(), EptpError> {
        match invept_type {
            InveptType::SingleContext => Eptp::from_raw(self.eptp).validate(caps, maxphyaddr),
            InveptType::Global => Ok(()),
        }
    }
}

/// The INVVPID descriptor (SDM 31.3 INVVPID, Figure 31-2): VPID in bits
/// 15:0, bits 63:16 reserved, linear address in bits 127:64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(C, align(16))]
pub struct InvvpidDescriptor {
    /// Bits 15:0: the VPID.
    pub vpid: u16,
    /// Bits 63:16: reserved, must be 0.
    pub reserved: [u16; 3],
    /// Bits 127:64: the linear address (individual-address type only).
    pub linear_address: u64,
}

const _: () = assert!(size_of::<InvvpidDescriptor>() == 16);
const _: () = assert!(offset_of!(InvvpidDescriptor, vpid) == 0);
const _: () = assert!(offset_of!(InvvpidDescriptor, reserved) == 2);
const _: () = assert!(offset_of!(InvvpidDescriptor, linear_address) == 8);

/// The processor's linear-address width, which decides canonicality
/// (SDM 4.1.4: 57 bits with 5-level paging support, else 48).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinearAddressWidth {
    /// 48-bit linear addresses (4-level paging only).
    Bits48,
    /// 57-bit linear addresses (`CPUID.(EAX=7,ECX=0):ECX[16]`, LA57).
    Bits57,
}

impl LinearAddressWidth {
    /// The number of significant linear-address bits.
    pub const fn bits(self) -> u32 {
        match self {
            Self::Bits48 => 48,
            Self::Bits57 => 57,
        }
    }

    /// Whether `address` is canonical: bits 63:width-1 all equal.
    pub const fn is_canonical(self, address: u64) -> bool {
        // Bits 63:width-1 are all 0 or all 1.
        let top = address >> (self.bits() - 1);
        top == 0 || top == u64::MAX >> (self.bits() - 1)
    }
}

/// Why INVVPID would fail with VMfailValid(invalid operand) on a
/// descriptor (SDM 31.3 INVVPID operation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum InvalidationError {
    /// Bits 63:16 of the descriptor are not all 0.
    #[error("reserved INVVPID descriptor bits 63:16 are set")]
    ReservedBitsSet,
    /// VPID 0 with a type other than all-context.
    #[error("VPID 0 is not valid for this INVVPID type")]
    ZeroVpid,
    /// Individual-address type with a non-canonical linear address.
    #[error("linear address {0:#x} is not canonical")]
    NonCanonicalAddress(u64),
}

impl InvvpidDescriptor {
    /// A descriptor for `vpid` and `linear_address`.
    pub const fn new(vpid: u16, linear_address: u64) -> Self {
        Self {
            vpid,
            reserved: [0; 3],
            linear_address,
        }
    }

    /// Checks the descriptor as INVVPID of type `invvpid_type` would on a
    /// processor with linear-address width `width` (SDM 31.3 INVVPID
    /// operation): reserved bits first, then the type-specific rules.
    ///
    /// # Errors
    ///
    /// The failing rule, as an [`InvalidationError`].
    pub const fn validate(
        &self,
        invvpid_type: InvvpidType,
        width: LinearAddressWidth,
    ) -> Result<(), InvalidationError> {
        if self.reserved[0] != 0 || self.reserved[1] != 0 || self.reserved[2] != 0 {
            return Err(InvalidationError::ReservedBitsSet);
        }
        match invvpid_type {
            InvvpidType::IndividualAddress => {
                if self.vpid == 0 {
                    return Err(InvalidationError::ZeroVpid);
                }
                if !width.is_canonical(self.linear_address) {
                    return Err(InvalidationError::NonCanonicalAddress(self.linear_address));
                }
                Ok(())
            }
            InvvpidType::SingleContext | InvvpidType::SingleContextRetainingGlobals => {
                if self.vpid == 0 {
                    Err(InvalidationError::ZeroVpid)
                } else {
                    Ok(())
                }
            }
            InvvpidType::AllContext => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        let w48 = LinearAddressWidth::Bits48;
        let w57 = LinearAddressWidth::Bits57;
        assert!(w48.is_canonical(0x0000_7FFF_FFFF_FFFF));
        assert!(w48.is_canonical(0xFFFF_8000_0000_0000));
        assert!(!w48.is_canonical(0x0000_8000_0000_0000));
        assert!(w57.is_canonical(0x0000_8000_0000_0000));
        assert!(w57.is_canonical(0xFF00_0000_0000_0000));
        assert!(!w57.is_canonical(0x0100_0000_0000_0000));
    }

    #[test]
    fn type_encodings() {
        assert_eq!(InveptType::from_raw(0), None);
        assert_eq!(InveptType::from_raw(1), Some(InveptType::SingleContext));
        assert_eq!(InveptType::from_raw(2), Some(InveptType::Global));
        assert_eq!(InveptType::from_raw(3), None);
        for raw in 0..4 {
            assert_eq!(InvvpidType::from_raw(raw).map(InvvpidType::raw), Some(raw));
        }
        assert_eq!(InvvpidType::from_raw(4), None);
        assert_eq!(InvvpidType::from_raw(u64::MAX), None);
    }
}
