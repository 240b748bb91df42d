//! Lookups in the bitmaps L1 keeps in its own memory: the I/O bitmaps
//! (SDM 25.6.4) and the MSR bitmaps (SDM 25.6.9).
//!
//! Every address comes from VMCS12, so it is untrusted. A bitmap byte that is
//! not L1 memory (or whose address overflows) counts as a set bit: the access
//! exits to L1. That is KVM's rule (`nested_vmx_check_io_bitmaps`,
//! `nested_vmx_exit_handled_msr`): an L1 that points a bitmap at nothing
//! gets the exits, which is the safe reading for L0 and what a processor
//! reading all-ones from unbacked memory would also do.

use hv_mmu::addr::L1Gpa;
use hv_mmu::env::NotL1Memory;

use crate::state::L1Access;

/// Size of one I/O bitmap (A or B) and of each of the four MSR bitmaps'
/// parts: 4 KiB, 32768 bits (SDM 25.6.4, 25.6.9).
pub const BITMAP_PAGE_BYTES: u64 = 4096;

/// Ports 0000H-7FFFH are in bitmap A, 8000H-FFFFH in bitmap B (SDM 25.6.4).
const IO_BITMAP_B_FIRST_PORT: u32 = 0x8000;

/// The MSR bitmaps cover MSRs 0000_0000H-0000_1FFFH ("low") and
/// C000_0000H-C000_1FFFH ("high") (SDM 25.6.9).
const MSR_LOW_FIRST: u32 = 0x0000_0000;
const MSR_HIGH_FIRST: u32 = 0xc000_0000;
const MSRS_PER_RANGE: u32 = 0x2000;

/// Which MSR instruction a bitmap lookup is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsrAccessKind {
    /// RDMSR (and the read half of the MSR-list instructions).
    Read,
    /// WRMSR or WRMSRNS.
    Write,
}

/// Where an MSR's bit lives in the 4-KiB MSR-bitmap page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MsrBitmapPosition {
    /// Byte offset from the MSR-bitmap address (0-4095).
    pub byte_offset: u64,
    /// Bit within that byte (0-7).
    pub bit: u8,
}

/// The position of `msr`'s bit for `access` in the MSR bitmaps, or `None`
/// for an MSR outside both covered ranges (such accesses always exit).
///
/// Layout (SDM 25.6.9): read bitmap for low MSRs at offset 0, read bitmap
/// for high MSRs at 1024, write bitmap for low MSRs at 2048, write bitmap
/// for high MSRs at 3072; bit n of each part is MSR (range base + n).
pub const fn msr_bitmap_position(msr: u32, access: MsrAccessKind) -> Option<MsrBitmapPosition> {
    let (range_offset, index) = if msr.wrapping_sub(MSR_LOW_FIRST) < MSRS_PER_RANGE {
        (0, msr - MSR_LOW_FIRST)
    } else if msr.wrapping_sub(MSR_HIGH_FIRST) < MSRS_PER_RANGE {
        (1024, msr - MSR_HIGH_FIRST)
    } else {
        return None;
    };
    let access_offset = match access {
        MsrAccessKind::Read => 0,
        MsrAccessKind::Write => 2048,
    };
    Some(MsrBitmapPosition {
        byte_offset: access_offset + range_offset + (index / 8) as u64,
        bit: (index % 8) as u8,
    })
}

/// Reads bit `bit` (0-7) of the byte at `base + byte_offset` in L1 memory.
///
/// # Errors
///
/// [`NotL1Memory`] when the byte is not L1 memory or the address overflows.
pub fn read_bitmap_bit(
    memory: &impl L1Access,
    base: L1Gpa,
    byte_offset: u64,
    bit: u8,
) -> Result<bool, NotL1Memory> {
    let Some(address) = base.raw().checked_add(byte_offset) else {
        return Err(NotL1Memory { gpa: base });
    };
    let mut byte = [0u8; 1];
    memory.read_bytes(L1Gpa::new(address), &mut byte)?;
    Ok(byte[0] & (1 << (bit & 7)) != 0)
}

/// Whether the MSR bitmaps at `bitmap` make an access to `msr` exit
/// (SDM 26.1.3, RDMSR and WRMSR, with "use MSR bitmaps" = 1): MSRs outside
/// the two covered ranges always exit; otherwise the MSR's bit decides. A
/// bitmap byte that is not L1 memory counts as set.
pub fn msr_bitmap_wants_exit(
    memory: &impl L1Access,
    bitmap: L1Gpa,
    msr: u32,
    access: MsrAccessKind,
) -> bool {
    match msr_bitmap_position(msr, access) {
        None => true,
        Some(position) => {
            read_bitmap_bit(memory, bitmap, position.byte_offset, position.bit).unwrap_or(true)
        }
    }
}

/// Whether the I/O bitmaps make an access of `size` bytes at `port` exit
/// (SDM 26.1.3, I/O instructions, with "use I/O bitmaps" = 1): the access
/// exits if the bit of any port it touches is set (bitmap A for ports
/// 0000H-7FFFH, bitmap B for 8000H-FFFFH) or if it wraps around past FFFFH.
/// A bitmap byte that is not L1 memory counts as set.
pub fn io_bitmaps_want_exit(
    memory: &impl L1Access,
    bitmap_a: L1Gpa,
    bitmap_b: L1Gpa,
    port: u16,
    size: u8,
) -> bool {
    let first = u32::from(port);
    (first..first + u32::from(size)).any(|port| {
        if port > 0xffff {
            // SDM 26.1.3: an access that wraps around the 16-bit port space
            // always exits.
            return true;
        }
        let (bitmap, index) = if port < IO_BITMAP_B_FIRST_PORT {
            (bitmap_a, port)
        } else {
            (bitmap_b, port - IO_BITMAP_B_FIRST_PORT)
        };
        read_bitmap_bit(memory, bitmap, u64::from(index / 8), (index % 8) as u8).unwrap_or(true)
    })
}

/// Whether bit `index` of a 64-bit exiting bitmap (ENCLS, ENCLV, PCONFIG)
/// is set, where leaf numbers 63 and above all share bit 63 (SDM 26.1.3,
/// ENCLS/ENCLV/PCONFIG).
pub const fn leaf_bitmap_wants_exit(bitmap: u64, leaf: u32) -> bool {
    let bit = if leaf < 63 { leaf } else { 63 };
    bitmap & (1 << bit) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msr_positions_follow_the_four_part_layout() {
        let read_low = msr_bitmap_position(0x10, MsrAccessKind::Read).unwrap();
        assert_eq!((read_low.byte_offset, read_low.bit), (2, 0));
        let read_high = msr_bitmap_position(0xc000_0080, MsrAccessKind::Read).unwrap();
        assert_eq!((read_high.byte_offset, read_high.bit), (1024 + 16, 0));
        let write_low = msr_bitmap_position(0x1fff, MsrAccessKind::Write).unwrap();
        assert_eq!((write_low.byte_offset, write_low.bit), (2048 + 1023, 7));
        let write_high = msr_bitmap_position(0xc000_0103, MsrAccessKind::Write).unwrap();
        assert_eq!((write_high.byte_offset, write_high.bit), (3072 + 32, 3));
        assert_eq!(msr_bitmap_position(0x2000, MsrAccessKind::Read), None);
        assert_eq!(msr_bitmap_position(0xbfff_ffff, MsrAccessKind::Write), None);
        assert_eq!(msr_bitmap_position(0xc000_2000, MsrAccessKind::Read), None);
    }

    #[test]
    fn leaf_bitmaps_fold_high_leaves_into_bit_63() {
        assert!(leaf_bitmap_wants_exit(1 << 5, 5));
        assert!(!leaf_bitmap_wants_exit(1 << 5, 6));
        assert!(leaf_bitmap_wants_exit(1 << 63, 63));
        assert!(leaf_bitmap_wants_exit(1 << 63, u32::MAX));
        assert!(!leaf_bitmap_wants_exit(!(1 << 63), 1000));
    }
}
