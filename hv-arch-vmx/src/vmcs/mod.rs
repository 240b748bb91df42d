//! VMCS fields (SDM Vol. 3C Appendix B) and the VMCS image that holds them.
//!
//! A field encoding is a 32-bit value (SDM 25.11.2, Table 25-21):
//!
//! | bits  | meaning                                                  |
//! |-------|----------------------------------------------------------|
//! | 0     | access type: 0 = full, 1 = high (64-bit fields only)     |
//! | 9:1   | index                                                    |
//! | 11:10 | type: 0 control, 1 VM-exit information, 2 guest, 3 host  |
//! | 12    | reserved, must be 0                                      |
//! | 14:13 | width: 0 16-bit, 1 64-bit, 2 32-bit, 3 natural-width     |
//! | 31:15 | reserved, must be 0                                      |
//!
//! [`VmcsField`] lists every field of the current SDM. Each entry states its
//! width and kind, and a compile-time assertion checks both against the
//! encoding bits, so the table cannot drift from the architecture.

mod fields;
mod image;

pub use fields::VmcsField;
pub use image::{VmcsImage, VmcsRead};

/// Width of a VMCS field (encoding bits 14:13).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Width {
    /// 16-bit field.
    Bits16 = 0,
    /// 64-bit field; also accessible as FULL and HIGH 32-bit halves.
    Bits64 = 1,
    /// 32-bit field.
    Bits32 = 2,
    /// Natural-width field: 64 bits on processors that support Intel 64.
    Natural = 3,
}

impl Width {
    /// The width an encoding names (bits 14:13).
    pub const fn of_encoding(encoding: u32) -> Self {
        match (encoding >> 13) & 3 {
            0 => Self::Bits16,
            1 => Self::Bits64,
            2 => Self::Bits32,
            _ => Self::Natural,
        }
    }

    /// Mask of the bits a field of this width holds (natural width is 64 bits
    /// on an Intel 64 processor).
    pub const fn mask(self) -> u64 {
        match self {
            Self::Bits16 => 0xffff,
            Self::Bits32 => 0xffff_ffff,
            Self::Bits64 | Self::Natural => u64::MAX,
        }
    }

    /// Short name: `"16"`, `"32"`, `"64"` or `"natural"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Bits16 => "16",
            Self::Bits32 => "32",
            Self::Bits64 => "64",
            Self::Natural => "natural",
        }
    }
}

/// Kind of a VMCS field (encoding bits 11:10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// VM-execution, VM-exit or VM-entry control field.
    Control = 0,
    /// VM-exit information field: read-only unless `IA32_VMX_MISC` bit 29 says
    /// VMWRITE may write it (SDM 25.9, A.6).
    ReadOnly = 1,
    /// Guest-state field.
    Guest = 2,
    /// Host-state field.
    Host = 3,
}

impl FieldKind {
    /// The kind an encoding names (bits 11:10).
    pub const fn of_encoding(encoding: u32) -> Self {
        match (encoding >> 10) & 3 {
            0 => Self::Control,
            1 => Self::ReadOnly,
            2 => Self::Guest,
            _ => Self::Host,
        }
    }

    /// Short name: `"control"`, `"read-only"`, `"guest"` or `"host"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Control => "control",
            Self::ReadOnly => "read-only",
            Self::Guest => "guest",
            Self::Host => "host",
        }
    }
}

/// Which part of a field an encoding accesses (encoding bit 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldPart {
    /// The whole field (access type full).
    Full,
    /// Bits 63:32 of a 64-bit field (access type high).
    High,
}

/// A decoded VMREAD/VMWRITE field operand: a field and the part accessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FieldAccess {
    /// The field.
    pub field: VmcsField,
    /// Full field, or the high half of a 64-bit field.
    pub part: FieldPart,
}

/// Why an encoding names no VMCS component; VMREAD/VMWRITE answer it with
/// VMfailValid(12), "VMREAD/VMWRITE from/to unsupported VMCS component".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum UnsupportedField {
    /// Bits 63:15 or bit 12 of the operand are set (SDM 25.11.2).
    #[error("VMCS field encoding {0:#x} sets reserved bits")]
    ReservedBits(u64),
    /// Access type high on a field that is not 64 bits wide.
    #[error("VMCS field encoding {0:#x} asks for the high half of a field that is not 64-bit")]
    HighOfNon64Bit(u64),
    /// A well-formed encoding that no VMCS field has.
    #[error("no VMCS field has encoding {0:#x}")]
    Unknown(u64),
}

impl FieldAccess {
    /// Decodes a VMREAD/VMWRITE field operand: the register value in 64-bit
    /// mode; outside 64-bit mode the instructions use only bits 31:0 of the
    /// register (SDM 31.3), so the caller passes those, zero-extended.
    ///
    /// # Errors
    ///
    /// [`UnsupportedField`] when the value does not name a field this table
    /// knows; VMREAD/VMWRITE then fail with VM-instruction error 12.
    pub const fn decode(encoding: u64) -> Result<Self, UnsupportedField> {
        if encoding & !0x6fff != 0 {
            return Err(UnsupportedField::ReservedBits(encoding));
        }
        // Cannot truncate: bits 63:15 are clear.
        let full = (encoding & !1) as u32;
        let Some(field) = VmcsField::from_encoding(full) else {
            return Err(UnsupportedField::Unknown(encoding));
        };
        if encoding & 1 == 0 {
            return Ok(Self {
                field,
                part: FieldPart::Full,
            });
        }
        match field.width() {
            Width::Bits64 => Ok(Self {
                field,
                part: FieldPart::High,
            }),
            _ => Err(UnsupportedField::HighOfNon64Bit(encoding)),
        }
    }

    /// The encoding this access uses.
    pub const fn encoding(self) -> u32 {
        match self.part {
            FieldPart::Full => self.field.encoding(),
            FieldPart::High => self.field.encoding() | 1,
        }
    }
}

impl VmcsField {
    /// Number of fields in the table.
    pub const COUNT: usize = Self::ALL.len();

    /// The field's encoding (access type full).
    pub const fn encoding(self) -> u32 {
        self as u32
    }

    /// The field's width, from encoding bits 14:13.
    pub const fn width(self) -> Width {
        Width::of_encoding(self.encoding())
    }

    /// The field's kind, from encoding bits 11:10.
    pub const fn kind(self) -> FieldKind {
        FieldKind::of_encoding(self.encoding())
    }

    /// Whether the field is VM-exit information, which VMWRITE may write
    /// only when `IA32_VMX_MISC` bit 29 is set (SDM 31.3, VMWRITE).
    pub const fn is_read_only(self) -> bool {
        matches!(self.kind(), FieldKind::ReadOnly)
    }

    /// Position of the field in [`VmcsField::ALL`], a dense index for tables
    /// such as [`VmcsImage`]: one load from a 1 KiB table built at compile
    /// time, because every field access of an image goes through it.
    pub const fn index(self) -> usize {
        INDEX_BY_SLOT[slot(self.encoding())] as usize
    }

    /// Looks a field up by name, case-insensitively: the SDM-style name
    /// (`GUEST_CR0`) or the Rust variant name (`GuestCr0`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|field| {
            field.name().eq_ignore_ascii_case(name)
                || eq_ignore_case_and_underscores(field.name(), name)
        })
    }
}

fn eq_ignore_case_and_underscores(a: &str, b: &str) -> bool {
    let mut a = a.bytes().filter(|&c| c != b'_');
    let mut b = b.bytes().filter(|&c| c != b'_');
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(&y) => {}
            _ => return false,
        }
    }
}

/// Compresses an encoding's width (bits 14:13), type (bits 11:10) and the
/// low six bits of its index (bits 6:1) into a 10-bit slot. Every field's
/// index is below 64 (checked below), so distinct fields get distinct slots.
const fn slot(encoding: u32) -> usize {
    ((((encoding >> 13) & 3) << 8) | (((encoding >> 10) & 3) << 6) | ((encoding >> 1) & 0x3f))
        as usize
}

/// Field position in [`VmcsField::ALL`] by slot; `u8::MAX` for empty slots.
const INDEX_BY_SLOT: [u8; 1024] = {
    assert!(
        VmcsField::COUNT < u8::MAX as usize,
        "field positions must fit in a u8"
    );
    let mut table = [u8::MAX; 1024];
    let mut i = 0;
    while i < VmcsField::COUNT {
        let encoding = VmcsField::ALL[i].encoding();
        assert!(
            (encoding >> 1) & 0x1ff < 64,
            "a field index does not fit the slot table"
        );
        assert!(table[slot(encoding)] == u8::MAX, "two fields share a slot");
        table[slot(encoding)] = i as u8;
        i += 1;
    }
    table
};

// The table is sorted by encoding and every encoding is a FULL access with the
// reserved bits clear (SDM 25.11.2).
const _: () = {
    let mut i = 0;
    while i < VmcsField::COUNT {
        let encoding = VmcsField::ALL[i].encoding();
        assert!(
            encoding & !0x6ffe == 0,
            "VMCS field encoding sets reserved or high-access bits"
        );
        assert!(
            i == 0 || VmcsField::ALL[i - 1].encoding() < encoding,
            "VMCS field table not sorted"
        );
        i += 1;
    }
};
