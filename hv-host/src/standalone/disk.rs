//! The disk image Bochs boots: built from the hv-standalone ELF.
//!
//! Layout (see `images/hv-standalone/linker.ld`): sector 0 is the boot
//! sector (the ELF segment at 0x7C00, exactly 512 bytes), then the
//! real-mode loader (segments in `0x7E00..1 MiB`) padded to whole sectors,
//! then the kernel (segments from 1 MiB) flattened by address and padded to
//! whole sectors. The boot sector carries a layout record ("HVBT", loader
//! sectors as u16, padding, kernel sectors as u32) that must agree with
//! what is written here. The image is padded to whole cylinders of a
//! 16-head, 63-sector geometry.

use thiserror::Error;

/// Bytes per disk sector.
pub const SECTOR_SIZE: usize = 512;
/// Where the BIOS loads the boot sector.
pub const BOOT_SECTOR_ADDRESS: u64 = 0x7C00;
/// Where the boot sector loads the real-mode loader.
pub const LOADER_ADDRESS: u64 = 0x7E00;
/// Where the loader copies the kernel.
pub const KERNEL_ADDRESS: u64 = 0x10_0000;
/// Disk geometry: heads per cylinder.
pub const HEADS: u64 = 16;
/// Disk geometry: sectors per track.
pub const SECTORS_PER_TRACK: u64 = 63;
/// The most loader sectors the boot sector reads (one `int 13h` call).
pub const MAX_LOADER_SECTORS: usize = 64;
/// The largest kernel accepted: the loader copies with 32-bit addresses
/// and Bochs gets a few hundred MiB at most.
pub const MAX_KERNEL_BYTES: usize = 256 << 20;

/// The multiboot2 header magic (multiboot2 spec 3.1.1).
pub const MULTIBOOT2_MAGIC: u32 = 0xE852_50D6;
/// The multiboot2 header must lie within the first 32 KiB of the file.
pub const MULTIBOOT2_SEARCH_BYTES: usize = 32 * 1024;

/// Why the ELF could not be turned into a disk image.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DiskImageError {
    /// Not a 64-bit little-endian x86-64 ELF executable.
    #[error("not an x86-64 ELF64 executable: {0}")]
    NotElf(&'static str),
    /// A header or segment lies outside the file.
    #[error("ELF {0} lies outside the file")]
    OutOfFile(&'static str),
    /// No segment at 0x7C00.
    #[error("no boot-sector segment at {BOOT_SECTOR_ADDRESS:#x}")]
    NoBootSector,
    /// The boot-sector segment is not exactly one sector.
    #[error("the boot-sector segment is {0} bytes, not 512")]
    BootSectorSize(u64),
    /// Bytes 510-511 of the boot sector are not 0x55 0xAA.
    #[error("the boot sector lacks the 0x55AA signature")]
    NoBootSignature,
    /// No segment between 0x7E00 and 1 MiB.
    #[error("no loader segment between {LOADER_ADDRESS:#x} and {KERNEL_ADDRESS:#x}")]
    NoLoader,
    /// No segment at or above 1 MiB.
    #[error("no kernel segment at or above {KERNEL_ADDRESS:#x}")]
    NoKernel,
    /// The loader or kernel is larger than the boot code can load.
    #[error("the {what} is {bytes} bytes; at most {limit} fit")]
    TooLarge {
        /// "loader" or "kernel".
        what: &'static str,
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The boot sector has no "HVBT" layout record.
    #[error("the boot sector has no HVBT layout record")]
    NoLayoutRecord,
    /// The boot sector's sector counts disagree with the ELF segments.
    #[error("the boot sector loads {recorded} {what} sectors but the ELF has {actual}")]
    LayoutMismatch {
        /// "loader" or "kernel".
        what: &'static str,
        /// The count in the boot sector.
        recorded: u64,
        /// The count from the segments.
        actual: u64,
    },
}

/// A disk image ready for Bochs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskImage {
    /// The bytes, a whole number of cylinders.
    pub bytes: Vec<u8>,
    /// Cylinders of the 16-head, 63-sector geometry.
    pub cylinders: u64,
    /// Loader sectors (after the boot sector).
    pub loader_sectors: u64,
    /// Kernel sectors (after the loader).
    pub kernel_sectors: u64,
    /// Offset of the "HVBT" layout record in sector 0.
    pub layout_record: usize,
}

/// Boot flag: the image raises #UD once its IDT is installed (a self-test
/// of the exception path and of failure reporting).
pub const BOOT_FLAG_SELF_TEST_EXCEPTION: u16 = 1 << 0;

impl DiskImage {
    /// Sets the flags word of the boot sector's layout record, which the
    /// image reads after boot (`BOOT_FLAG_*`).
    pub fn set_boot_flags(&mut self, flags: u16) {
        let at = self.layout_record + 6;
        self.bytes[at..at + 2].copy_from_slice(&flags.to_le_bytes());
    }
}

/// One `PT_LOAD` segment: address and file bytes.
struct Segment<'a> {
    address: u64,
    bytes: &'a [u8],
}

fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(offset..offset + 2)?.try_into().ok()?,
    ))
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(offset..offset + 8)?.try_into().ok()?,
    ))
}

/// The `PT_LOAD` segments of an ELF64 x86-64 executable (ELF spec: header
/// fields at their gABI offsets; program headers of 56 bytes).
fn load_segments(elf: &[u8]) -> Result<Vec<Segment<'_>>, DiskImageError> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err(DiskImageError::NotElf("bad magic"));
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err(DiskImageError::NotElf("not 64-bit little-endian"));
    }
    if read_u16(elf, 0x12) != Some(62) {
        return Err(DiskImageError::NotElf("machine is not x86-64"));
    }
    let program_headers = read_u64(elf, 0x20).ok_or(DiskImageError::OutOfFile("header"))?;
    let entry_size = read_u16(elf, 0x36).ok_or(DiskImageError::OutOfFile("header"))?;
    let count = read_u16(elf, 0x38).ok_or(DiskImageError::OutOfFile("header"))?;
    if entry_size != 56 {
        return Err(DiskImageError::NotElf("program header size is not 56"));
    }
    let mut segments = Vec::new();
    for index in 0..u64::from(count) {
        let header = program_headers
            .checked_add(index * 56)
            .and_then(|offset| usize::try_from(offset).ok())
            .filter(|&offset| offset.checked_add(56).is_some_and(|end| end <= elf.len()))
            .ok_or(DiskImageError::OutOfFile("program header"))?;
        let field = |offset| {
            read_u64(elf, header + offset).ok_or(DiskImageError::OutOfFile("program header"))
        };
        if read_u32(elf, header) != Some(1) {
            continue; // not PT_LOAD
        }
        let (file_offset, address, file_size) = (field(8)?, field(16)?, field(32)?);
        let bytes = usize::try_from(file_offset)
            .ok()
            .zip(usize::try_from(file_size).ok())
            .and_then(|(start, size)| elf.get(start..start.checked_add(size)?))
            .ok_or(DiskImageError::OutOfFile("segment"))?;
        segments.push(Segment { address, bytes });
    }
    Ok(segments)
}

/// The segments in `[low, high)` laid out by address from `low`, padded to
/// whole sectors; `None` when there are none.
fn flatten(
    segments: &[Segment<'_>],
    low: u64,
    high: u64,
    what: &'static str,
    limit: usize,
) -> Result<Option<Vec<u8>>, DiskImageError> {
    let inside: Vec<&Segment<'_>> = segments
        .iter()
        .filter(|segment| (low..high).contains(&segment.address))
        .collect();
    let Some(end) = inside
        .iter()
        .map(|segment| segment.address + segment.bytes.len() as u64)
        .max()
    else {
        return Ok(None);
    };
    let length = usize::try_from(end - low).unwrap_or(usize::MAX);
    if length > limit {
        return Err(DiskImageError::TooLarge {
            what,
            bytes: length,
            limit,
        });
    }
    let mut flat = vec![0; length.next_multiple_of(SECTOR_SIZE)];
    for segment in inside {
        // In range: the address is >= low and its end <= end.
        let start = (segment.address - low) as usize;
        flat[start..start + segment.bytes.len()].copy_from_slice(segment.bytes);
    }
    Ok(Some(flat))
}

/// Builds the disk image from the hv-standalone ELF.
///
/// # Errors
///
/// A [`DiskImageError`] naming what is wrong with the ELF.
pub fn build_disk_image(elf: &[u8]) -> Result<DiskImage, DiskImageError> {
    let segments = load_segments(elf)?;
    let boot = segments
        .iter()
        .find(|segment| segment.address == BOOT_SECTOR_ADDRESS)
        .ok_or(DiskImageError::NoBootSector)?;
    if boot.bytes.len() != SECTOR_SIZE {
        return Err(DiskImageError::BootSectorSize(boot.bytes.len() as u64));
    }
    if boot.bytes[510..] != [0x55, 0xAA] {
        return Err(DiskImageError::NoBootSignature);
    }
    let loader = flatten(
        &segments,
        LOADER_ADDRESS,
        KERNEL_ADDRESS,
        "loader",
        MAX_LOADER_SECTORS * SECTOR_SIZE,
    )?
    .ok_or(DiskImageError::NoLoader)?;
    let kernel = flatten(
        &segments,
        KERNEL_ADDRESS,
        u64::MAX,
        "kernel",
        MAX_KERNEL_BYTES,
    )?
    .ok_or(DiskImageError::NoKernel)?;
    let loader_sectors = (loader.len() / SECTOR_SIZE) as u64;
    let kernel_sectors = (kernel.len() / SECTOR_SIZE) as u64;

    let record = boot
        .bytes
        .windows(4)
        .position(|window| window == b"HVBT")
        .ok_or(DiskImageError::NoLayoutRecord)?;
    let recorded_loader = read_u16(boot.bytes, record + 4).ok_or(DiskImageError::NoLayoutRecord)?;
    let recorded_kernel = read_u32(boot.bytes, record + 8).ok_or(DiskImageError::NoLayoutRecord)?;
    for (what, recorded, actual) in [
        ("loader", u64::from(recorded_loader), loader_sectors),
        ("kernel", u64::from(recorded_kernel), kernel_sectors),
    ] {
        if recorded != actual {
            return Err(DiskImageError::LayoutMismatch {
                what,
                recorded,
                actual,
            });
        }
    }

    let mut bytes = Vec::with_capacity(SECTOR_SIZE + loader.len() + kernel.len());
    bytes.extend_from_slice(boot.bytes);
    bytes.extend_from_slice(&loader);
    bytes.extend_from_slice(&kernel);
    let cylinder = (HEADS * SECTORS_PER_TRACK) as usize * SECTOR_SIZE;
    bytes.resize(bytes.len().next_multiple_of(cylinder), 0);
    Ok(DiskImage {
        cylinders: (bytes.len() / cylinder) as u64,
        bytes,
        loader_sectors,
        kernel_sectors,
        layout_record: record,
    })
}

/// A multiboot2 header found in an image (multiboot2 spec 3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multiboot2Header {
    /// File offset of the header (8-byte aligned, below 32 KiB).
    pub offset: usize,
    /// Architecture field (0: i386 protected mode).
    pub architecture: u32,
    /// `header_length`.
    pub length: u32,
    /// The tags as (type, flags, size), up to and including the end tag.
    pub tags: Vec<(u16, u16, u32)>,
    /// The entry address of an entry-address tag (type 3), if any.
    pub entry_address: Option<u32>,
}

/// Finds and checks the multiboot2 header of `file`: magic at an 8-byte
/// aligned offset in the first 32 KiB, `magic + architecture + length +
/// checksum == 0 (mod 2^32)`, 8-byte aligned tags ending with an end tag
/// (type 0, size 8) inside `header_length`. `None` if there is none.
pub fn multiboot2_header(file: &[u8]) -> Option<Multiboot2Header> {
    let search = file.len().min(MULTIBOOT2_SEARCH_BYTES);
    (0..search).step_by(8).find_map(|offset| {
        if read_u32(file, offset)? != MULTIBOOT2_MAGIC {
            return None;
        }
        let architecture = read_u32(file, offset + 4)?;
        let length = read_u32(file, offset + 8)?;
        let checksum = read_u32(file, offset + 12)?;
        let sum = MULTIBOOT2_MAGIC
            .wrapping_add(architecture)
            .wrapping_add(length)
            .wrapping_add(checksum);
        if sum != 0 || length < 24 {
            return None;
        }
        let end = offset.checked_add(length as usize)?;
        let mut tags = Vec::new();
        let mut entry_address = None;
        let mut tag = offset + 16;
        while tag + 8 <= end {
            let (kind, flags, size) = (
                read_u16(file, tag)?,
                read_u16(file, tag + 2)?,
                read_u32(file, tag + 4)?,
            );
            tags.push((kind, flags, size));
            if kind == 0 {
                return (size == 8).then_some(Multiboot2Header {
                    offset,
                    architecture,
                    length,
                    tags,
                    entry_address,
                });
            }
            if size < 8 {
                return None;
            }
            if kind == 3 {
                entry_address = Some(read_u32(file, tag + 8)?);
            }
            tag += (size as usize).next_multiple_of(8);
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf_with(segments: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let header_size = 64 + 56 * segments.len();
        let mut elf = vec![0u8; header_size];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x12..0x14].copy_from_slice(&62u16.to_le_bytes());
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (index, (address, bytes)) in segments.iter().enumerate() {
            let header = 64 + 56 * index;
            let offset = elf.len() as u64;
            elf[header..header + 4].copy_from_slice(&1u32.to_le_bytes());
            elf[header + 8..header + 16].copy_from_slice(&offset.to_le_bytes());
            elf[header + 16..header + 24].copy_from_slice(&address.to_le_bytes());
            elf[header + 32..header + 40].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
            elf.extend_from_slice(bytes);
        }
        elf
    }

    fn boot_sector(loader: u16, kernel: u32) -> Vec<u8> {
        let mut sector = vec![0u8; 512];
        sector[0x100..0x104].copy_from_slice(b"HVBT");
        sector[0x104..0x106].copy_from_slice(&loader.to_le_bytes());
        sector[0x108..0x10c].copy_from_slice(&kernel.to_le_bytes());
        sector[510] = 0x55;
        sector[511] = 0xAA;
        sector
    }

    #[test]
    fn lays_out_boot_loader_and_kernel_in_sectors() {
        let elf = elf_with(&[
            (0x7C00, boot_sector(1, 3)),
            (0x7E00, vec![0xAB; 100]),
            (0x10_0000, vec![0xCD; 600]),
            (0x10_0400, vec![0xEF; 10]),
        ]);
        let disk = build_disk_image(&elf).unwrap();
        assert_eq!((disk.loader_sectors, disk.kernel_sectors), (1, 3));
        assert_eq!(disk.bytes[512], 0xAB);
        assert_eq!(disk.bytes[1024], 0xCD);
        assert_eq!(disk.bytes[1024 + 0x400], 0xEF);
        assert_eq!(disk.bytes.len(), 16 * 63 * 512);
        assert_eq!(disk.cylinders, 1);
        let mut disk = disk;
        disk.set_boot_flags(BOOT_FLAG_SELF_TEST_EXCEPTION);
        assert_eq!(&disk.bytes[0x106..0x108], &[1, 0]);
    }

    #[test]
    fn rejects_a_layout_record_that_disagrees() {
        let elf = elf_with(&[
            (0x7C00, boot_sector(2, 3)),
            (0x7E00, vec![1; 10]),
            (0x10_0000, vec![1; 600]),
        ]);
        assert_eq!(
            build_disk_image(&elf),
            Err(DiskImageError::LayoutMismatch {
                what: "loader",
                recorded: 2,
                actual: 1
            })
        );
    }

    #[test]
    fn rejects_missing_signature_and_garbage() {
        let mut sector = boot_sector(1, 1);
        sector[511] = 0;
        let elf = elf_with(&[(0x7C00, sector), (0x7E00, vec![1]), (0x10_0000, vec![1])]);
        assert_eq!(build_disk_image(&elf), Err(DiskImageError::NoBootSignature));
        assert!(matches!(
            build_disk_image(b"hello"),
            Err(DiskImageError::NotElf(_))
        ));
        assert!(build_disk_image(&[]).is_err());
    }

    #[test]
    fn finds_a_multiboot2_header_and_rejects_a_bad_checksum() {
        let mut file = vec![0u8; 64];
        let header: [u32; 10] = [
            MULTIBOOT2_MAGIC,
            0,
            40,
            0u32.wrapping_sub(MULTIBOOT2_MAGIC + 40),
            3,
            12,
            0x10_0028,
            0,
            0,
            8,
        ];
        for (index, word) in header.iter().enumerate() {
            file[16 + index * 4..20 + index * 4].copy_from_slice(&word.to_le_bytes());
        }
        let found = multiboot2_header(&file).unwrap();
        assert_eq!(found.offset, 16);
        assert_eq!(found.entry_address, Some(0x10_0028));
        assert_eq!(found.tags, vec![(3, 0, 12), (0, 0, 8)]);
        file[28] ^= 1;
        assert_eq!(multiboot2_header(&file), None);
    }
}
