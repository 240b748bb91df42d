//! Address newtypes, one per address space, so that an L2 address can never
//! be used where an L1 or host address is meant. Conversions are explicit.
//!
//! - [`L2Gpa`]: guest-physical address of the L2 guest (input of EPT12 and
//!   of the shadow EPT02).
//! - [`L1Gpa`]: guest-physical address of the L1 hypervisor (output of
//!   EPT12, input of EPT01); [`L1Gfn`] is its frame number.
//! - [`HostPa`]: host-physical address (output of EPT01 and EPT02; where
//!   shadow tables live).

use core::fmt;

/// Size of a 4-KiB page.
pub const PAGE_SIZE: u64 = 4096;

macro_rules! address {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw address.
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw address.
            pub const fn raw(self) -> u64 {
                self.0
            }

            /// The offset of this address within its 4-KiB page.
            pub const fn page_offset(self) -> u64 {
                self.0 & (PAGE_SIZE - 1)
            }

            /// This address rounded down to a multiple of `size`.
            #[must_use]
            pub const fn align_down(self, size: PageSize) -> Self {
                Self(self.0 & !(size.bytes() - 1))
            }

            /// `self + offset`, wrapping (addresses are 64-bit values from
            /// untrusted tables; callers check ranges separately).
            #[must_use]
            pub const fn wrapping_add(self, offset: u64) -> Self {
                Self(self.0.wrapping_add(offset))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{:#x}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

address!(
    /// An L2 guest-physical address.
    L2Gpa,
    "l2:"
);
address!(
    /// An L1 guest-physical address.
    L1Gpa,
    "l1:"
);
address!(
    /// A host-physical address.
    HostPa,
    "hpa:"
);

/// An L1 guest-physical frame number (an [`L1Gpa`] shifted right by 12).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct L1Gfn(u64);

impl L1Gfn {
    /// Wraps a frame number.
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The frame number.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The address of the first byte of the frame.
    pub const fn address(self) -> L1Gpa {
        L1Gpa(self.0 << 12)
    }
}

impl L1Gpa {
    /// The frame this address lies in.
    pub const fn gfn(self) -> L1Gfn {
        L1Gfn(self.0 >> 12)
    }
}

impl fmt::Debug for L1Gfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gfn:{:#x}", self.0)
    }
}

/// The size of a page a translation maps (SDM 29.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// 4 KiB, mapped by a PTE.
    Size4K,
    /// 2 MiB, mapped by a PDE with bit 7 set.
    Size2M,
    /// 1 GiB, mapped by a PDPTE with bit 7 set.
    Size1G,
}

impl PageSize {
    /// Size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Size4K => 1 << 12,
            Self::Size2M => 1 << 21,
            Self::Size1G => 1 << 30,
        }
    }

    /// The EPT level whose entry maps a page of this size (1 = PTE).
    pub const fn level(self) -> u8 {
        match self {
            Self::Size4K => 1,
            Self::Size2M => 2,
            Self::Size1G => 3,
        }
    }

    /// The page size a leaf at `level` maps, if a leaf may sit there.
    pub const fn at_level(level: u8) -> Option<Self> {
        match level {
            1 => Some(Self::Size4K),
            2 => Some(Self::Size2M),
            3 => Some(Self::Size1G),
            _ => None,
        }
    }

    /// The smaller of two sizes: what a composed mapping can use.
    #[must_use]
    pub fn min(self, other: Self) -> Self {
        Ord::min(self, other)
    }
}
