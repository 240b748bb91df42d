//! The contract of the L2 checksum workload, shared by the workload itself
//! (the `l2-checksum` binary, which runs as an L2 guest) and the
//! hypervisor that checks it (hv-standalone's workload runner).
//!
//! # Entry
//!
//! The runner loads the ELF file at its link address ([`IMAGE_BASE`], one
//! `PT_LOAD` segment each for code, read-only data and data) and enters
//! `e_entry` in 64-bit mode at CPL 0, with paging on and every
//! guest-virtual address equal to its guest-physical address, interrupts
//! disabled, and:
//!
//! | register | value                                                      |
//! |----------|------------------------------------------------------------|
//! | RSP      | the top of the stack (any alignment; `_start` aligns it)   |
//! | RDI      | the address of the data buffer                             |
//! | RSI      | the buffer's length in bytes                               |
//! | RDX      | the guest index (0 for the first guest)                    |
//! | RCX      | a probe address, or 0: see below                           |
//!
//! If RCX is not 0, the workload first reads the 8 bytes at RCX (the
//! runner uses this to make a guest touch a page whose EPT entry is
//! broken on purpose), then works as usual.
//!
//! # Reports
//!
//! For round `r` = 0, 1, 2, ... without end, the workload computes
//! `h = checksum(buffer, r, index)` and executes `out dx, eax` with
//! DX = [`REPORT_PORT`], RAX = `h` and RBX = `r`. The hypervisor must
//! intercept that port (unconditional I/O exiting): at the I/O exit it
//! reads the **full 64-bit** RAX and RBX from the guest's saved registers
//! (the `out` itself only carries EAX), checks them, and continues the
//! guest after the instruction. The workload never returns; if it panicked
//! it would execute HLT.
//!
//! # The checksum
//!
//! 64-bit FNV-1a (offset basis [`FNV_OFFSET_BASIS`], prime [`FNV_PRIME`])
//! over the byte string `round (8 bytes, little endian) || index (8 bytes,
//! little endian) || buffer`: every round and every guest get a different
//! result over the same buffer, and one byte of the buffer costs the
//! workload about five instructions.
#![cfg_attr(not(test), no_std)]

/// The I/O port the workload reports on (`out dx, eax`, DX = 0x7100): a
/// port no PC device uses, so an unintercepted report would be visible as
/// a stray write rather than a device access.
pub const REPORT_PORT: u16 = 0x7100;

/// The workload's link address (images/freestanding/link.ld): code starts
/// here, and guest-physical = guest-virtual.
pub const IMAGE_BASE: u64 = 0x20_0000;

/// The buffer length the runner gives each workload: 16 KiB, so one round
/// (about five instructions per byte) takes on the order of 80 000
/// instructions.
pub const BUFFER_LEN: usize = 16 * 1024;

/// The 64-bit FNV offset basis.
pub const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// The 64-bit FNV prime (2^40 + 2^8 + 0xB3).
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Continues a 64-bit FNV-1a hash `hash` over `bytes`: for each byte,
/// XOR it in, then multiply by [`FNV_PRIME`] (wrapping).
#[inline]
pub fn fnv1a_continue(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// The 64-bit FNV-1a hash of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_continue(FNV_OFFSET_BASIS, bytes)
}

/// The result the workload of guest `index` reports for round `round`
/// over `buffer`: FNV-1a of `round || index || buffer` (both numbers as 8
/// little-endian bytes).
pub fn checksum(buffer: &[u8], round: u64, index: u64) -> u64 {
    let hash = fnv1a_continue(FNV_OFFSET_BASIS, &round.to_le_bytes());
    let hash = fnv1a_continue(hash, &index.to_le_bytes());
    fnv1a_continue(hash, buffer)
}

/// The output function of `SplitMix64`: a well-mixed 64-bit value for `state`.
const fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buffer` with guest `index`'s data: 8-byte chunk `k` holds
/// `splitmix64((index << 32) + k)` in little endian (the last chunk
/// truncated), so every guest checksums different bytes.
pub fn fill_pattern(buffer: &mut [u8], index: u64) {
    let mut state = index << 32;
    for chunk in buffer.chunks_mut(8) {
        let value = splitmix64(state).to_le_bytes();
        chunk.copy_from_slice(&value[..chunk.len()]);
        state = state.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // Published 64-bit FNV-1a test vectors (Fowler/Noll/Vo).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn checksum_is_fnv1a_of_round_index_and_buffer() {
        let buffer = [1u8, 2, 3, 4, 5];
        let mut bytes = std::vec::Vec::new();
        bytes.extend_from_slice(&7u64.to_le_bytes());
        bytes.extend_from_slice(&3u64.to_le_bytes());
        bytes.extend_from_slice(&buffer);
        assert_eq!(checksum(&buffer, 7, 3), fnv1a(&bytes));
    }

    #[test]
    fn rounds_and_guests_give_different_results() {
        let mut buffer = [0u8; 256];
        fill_pattern(&mut buffer, 1);
        let results: std::vec::Vec<u64> = (0..4u64)
            .flat_map(|index| (0..4u64).map(move |round| (index, round)))
            .map(|(index, round)| checksum(&buffer, round, index))
            .collect();
        for (i, a) in results.iter().enumerate() {
            for b in &results[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn patterns_differ_per_guest_and_cover_a_ragged_end() {
        let mut first = [0u8; 21];
        let mut second = [0u8; 21];
        fill_pattern(&mut first, 0);
        fill_pattern(&mut second, 1);
        assert_ne!(first, second);
        assert_eq!(first[..8], splitmix64(0).to_le_bytes());
        assert_eq!(first[16..], splitmix64(2).to_le_bytes()[..5]);
        assert_eq!(second[..8], splitmix64(1 << 32).to_le_bytes());
    }
}
