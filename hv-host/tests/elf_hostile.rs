//! The ELF parser against hostile files: each defect is its typed error,
//! and arbitrary or mutated bytes never panic.

use hv_guest_abi::IMAGE_BASE;
use hv_host::sandbox::elf::{ElfError, build_flat_elf, parse};
use proptest::prelude::*;

const LIMIT: u64 = 0x40_0000;

fn valid() -> Vec<u8> {
    build_flat_elf(IMAGE_BASE, &[0x90, 0xf4])
}

fn with(offset: usize, bytes: &[u8]) -> Vec<u8> {
    let mut file = valid();
    file[offset..offset + bytes.len()].copy_from_slice(bytes);
    file
}

/// Offset of the first program header's fields.
const PH: usize = 64;

#[test]
fn each_defect_has_its_error() {
    let cases: Vec<(Vec<u8>, ElfError)> = vec![
        (valid()[..10].to_vec(), ElfError::Truncated { size: 10 }),
        (with(0, b"\x7fELG"), ElfError::BadMagic),
        (with(4, &[1]), ElfError::NotElf64 { class: 1 }),
        (with(5, &[2]), ElfError::NotLittleEndian { encoding: 2 }),
        (
            with(16, &3u16.to_le_bytes()),
            ElfError::NotExecutable { e_type: 3 },
        ),
        (
            with(18, &3u16.to_le_bytes()),
            ElfError::WrongMachine { machine: 3 },
        ),
        (
            with(54, &32u16.to_le_bytes()),
            ElfError::BadHeaderSize {
                found: 32,
                expected: 56,
            },
        ),
        (with(56, &0u16.to_le_bytes()), ElfError::NoProgramHeaders),
        (
            with(56, &1000u16.to_le_bytes()),
            ElfError::TooManyProgramHeaders { count: 1000 },
        ),
        (
            with(32, &u64::MAX.to_le_bytes()),
            ElfError::ProgramHeadersOutOfBounds {
                offset: u64::MAX,
                count: 1,
            },
        ),
        (with(PH, &2u32.to_le_bytes()), ElfError::NoLoadableSegment),
        (
            with(PH + 32, &0x10u64.to_le_bytes()),
            ElfError::FileSizeExceedsMemorySize {
                index: 0,
                file_size: 0x10,
                memory_size: 2,
            },
        ),
        (
            with(PH + 8, &0x10_0000u64.to_le_bytes()),
            ElfError::SegmentDataOutOfBounds {
                index: 0,
                offset: 0x10_0000,
                file_size: 2,
            },
        ),
        (
            with(PH + 16, &0x1000u64.to_le_bytes()),
            ElfError::SegmentBelowImageBase {
                index: 0,
                address: 0x1000,
            },
        ),
        (
            with(PH + 40, &u64::MAX.to_le_bytes()),
            ElfError::SegmentOutsideImageArea {
                index: 0,
                address: IMAGE_BASE,
                memory_size: u64::MAX,
                limit: LIMIT,
            },
        ),
        (
            with(PH + 16, &(IMAGE_BASE + 8).to_le_bytes()),
            ElfError::Misaligned {
                index: 0,
                address: IMAGE_BASE + 8,
                offset: 0x1000,
            },
        ),
        (
            with(PH + 4, &4u32.to_le_bytes()),
            ElfError::EntryOutsideCode { entry: IMAGE_BASE },
        ),
        (
            with(24, &0x10u64.to_le_bytes()),
            ElfError::EntryOutsideCode { entry: 0x10 },
        ),
        (
            with(PH + 4, &0x100u32.to_le_bytes()),
            ElfError::BadSegmentFlags {
                index: 0,
                flags: 0x100,
            },
        ),
    ];
    for (file, expected) in cases {
        assert_eq!(parse(&file, LIMIT), Err(expected));
    }
}

#[test]
fn overlapping_segments_are_rejected() {
    let mut file = valid();
    // Two program headers, the second a copy of the first.
    file[56..58].copy_from_slice(&2u16.to_le_bytes());
    let header = file[PH..PH + 56].to_vec();
    file[PH + 56..PH + 112].copy_from_slice(&header);
    assert_eq!(
        parse(&file, LIMIT),
        Err(ElfError::SegmentsOverlap {
            first: 0,
            second: 1
        })
    );
}

#[test]
fn segment_past_the_image_area_is_rejected() {
    let file = build_flat_elf(LIMIT - 1, &[0x90, 0xf4]);
    assert!(matches!(
        parse(&file, LIMIT),
        Err(ElfError::SegmentOutsideImageArea { .. } | ElfError::Misaligned { .. })
    ));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes, LIMIT);
    }

    #[test]
    fn mutated_valid_files_never_panic(
        mutations in proptest::collection::vec((0usize..0x1002, any::<u8>()), 1..16),
        cut in 0usize..0x1010,
    ) {
        let mut file = valid();
        for (offset, value) in mutations {
            if let Some(byte) = file.get_mut(offset) {
                *byte = value;
            }
        }
        file.truncate(cut.max(1));
        if let Ok(image) = parse(&file, LIMIT) {
            for segment in &image.segments {
                prop_assert!(segment.address >= IMAGE_BASE);
                prop_assert!(segment.end() <= LIMIT);
                prop_assert!(segment.file_offset + segment.file_size <= file.len() as u64);
            }
        }
    }
}
