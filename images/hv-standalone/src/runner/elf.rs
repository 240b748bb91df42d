//! Loads the L2 workload's ELF file into guest memory.
//!
//! It is our own file, built next to this image, but it is parsed as if
//! it were hostile: every offset and size is checked, every failure is a
//! typed [`ElfError`], nothing panics. Only what a static, non-PIE
//! x86-64 executable needs is read: the ELF header (ELF-64 Object File
//! Format 1.5, section 3) and the `PT_LOAD` program headers (section 5).

use core::fmt;

use super::memory::{GuestMemory, IMAGE_END, IMAGE_START};

/// Size of the ELF-64 file header.
const HEADER_SIZE: usize = 64;
/// Size of one ELF-64 program header.
const PROGRAM_HEADER_SIZE: usize = 56;
/// `p_type` of a loadable segment.
const PT_LOAD: u32 = 1;
/// `e_type` of an executable.
const ET_EXEC: u16 = 2;
/// `e_machine` of x86-64.
const EM_X86_64: u16 = 62;
/// At most this many program headers are looked at.
const MAX_PROGRAM_HEADERS: u16 = 64;

/// Why the workload could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ElfError {
    /// The file is shorter than the header, or a header table runs past
    /// its end.
    Truncated,
    /// No `\x7fELF` magic.
    NotElf,
    /// Not ELF-64, little endian, version 1, x86-64, executable.
    WrongKind,
    /// `e_phentsize` is not 56 or `e_phnum` is 0 or too large.
    BadProgramHeaderTable,
    /// A segment's file bytes run past the end of the file, or its file
    /// size exceeds its memory size.
    BadSegment {
        /// The program header's index.
        index: u16,
    },
    /// A segment does not lie inside the image window of guest memory.
    SegmentOutsideImage {
        /// Its virtual address (= guest-physical address).
        address: u64,
        /// Its memory size.
        size: u64,
    },
    /// No loadable segment.
    NoLoadableSegment,
    /// The entry point is not inside a loaded segment.
    EntryOutsideImage(u64),
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("file truncated"),
            Self::NotElf => f.write_str("no ELF magic"),
            Self::WrongKind => f.write_str("not a little-endian ELF-64 x86-64 executable"),
            Self::BadProgramHeaderTable => f.write_str("bad program header table"),
            Self::BadSegment { index } => write!(f, "program header {index} is inconsistent"),
            Self::SegmentOutsideImage { address, size } => write!(
                f,
                "segment {address:#x}+{size:#x} is outside {IMAGE_START:#x}..{IMAGE_END:#x}"
            ),
            Self::NoLoadableSegment => f.write_str("no PT_LOAD segment"),
            Self::EntryOutsideImage(entry) => {
                write!(f, "entry {entry:#x} is outside every segment")
            }
        }
    }
}

/// `N` bytes of `file` at `offset`, or [`ElfError::Truncated`].
fn bytes_at<const N: usize>(file: &[u8], offset: usize) -> Result<[u8; N], ElfError> {
    let end = offset.checked_add(N).ok_or(ElfError::Truncated)?;
    let slice = file.get(offset..end).ok_or(ElfError::Truncated)?;
    <[u8; N]>::try_from(slice).map_err(|_| ElfError::Truncated)
}

fn u16_at(file: &[u8], offset: usize) -> Result<u16, ElfError> {
    bytes_at(file, offset).map(u16::from_le_bytes)
}

fn u32_at(file: &[u8], offset: usize) -> Result<u32, ElfError> {
    bytes_at(file, offset).map(u32::from_le_bytes)
}

fn u64_at(file: &[u8], offset: usize) -> Result<u64, ElfError> {
    bytes_at(file, offset).map(u64::from_le_bytes)
}

/// Converts a file offset or size from the file to `usize`.
fn to_usize(value: u64) -> Result<usize, ElfError> {
    usize::try_from(value).map_err(|_| ElfError::Truncated)
}

/// One `PT_LOAD` segment, checked against the file and the image window.
#[derive(Clone, Copy, Debug)]
struct Segment {
    file_offset: usize,
    file_size: usize,
    address: u64,
    memory_size: u64,
}

/// Checks the ELF header; returns `(e_entry, e_phoff, e_phnum)`.
fn parse_header(file: &[u8]) -> Result<(u64, usize, u16), ElfError> {
    if file.len() < HEADER_SIZE {
        return Err(ElfError::Truncated);
    }
    if bytes_at::<4>(file, 0)? != *b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    // e_ident: EI_CLASS 2 (64-bit), EI_DATA 1 (little endian), EI_VERSION 1.
    let ident = bytes_at::<3>(file, 4)?;
    let kind_ok = ident == [2, 1, 1]
        && u16_at(file, 16)? == ET_EXEC
        && u16_at(file, 18)? == EM_X86_64
        && u32_at(file, 20)? == 1;
    if !kind_ok {
        return Err(ElfError::WrongKind);
    }
    let entry = u64_at(file, 24)?;
    let program_headers = to_usize(u64_at(file, 32)?)?;
    let entry_size = u16_at(file, 54)?;
    let count = u16_at(file, 56)?;
    if usize::from(entry_size) != PROGRAM_HEADER_SIZE || count == 0 || count > MAX_PROGRAM_HEADERS {
        return Err(ElfError::BadProgramHeaderTable);
    }
    Ok((entry, program_headers, count))
}

/// Reads program header `index` at `offset`; `None` unless it is `PT_LOAD`.
fn parse_segment(file: &[u8], offset: usize, index: u16) -> Result<Option<Segment>, ElfError> {
    if u32_at(file, offset)? != PT_LOAD {
        return Ok(None);
    }
    let file_offset = to_usize(u64_at(file, offset + 8)?)?;
    let address = u64_at(file, offset + 16)?;
    let file_size = to_usize(u64_at(file, offset + 32)?)?;
    let memory_size = u64_at(file, offset + 40)?;
    let file_end = file_offset
        .checked_add(file_size)
        .ok_or(ElfError::BadSegment { index })?;
    if file_end > file.len() || file_size as u64 > memory_size {
        return Err(ElfError::BadSegment { index });
    }
    let inside = address >= IMAGE_START
        && address
            .checked_add(memory_size)
            .is_some_and(|end| end <= IMAGE_END);
    if !inside {
        return Err(ElfError::SegmentOutsideImage {
            address,
            size: memory_size,
        });
    }
    Ok(Some(Segment {
        file_offset,
        file_size,
        address,
        memory_size,
    }))
}

/// Copies every `PT_LOAD` segment of `file` to its virtual address in
/// `memory` (= guest-physical: the workload runs identity-mapped) and
/// zeroes the rest of its memory size; returns the entry point.
///
/// Every segment is checked before anything is written.
///
/// # Errors
///
/// [`ElfError`] naming the first problem found.
pub(crate) fn load(file: &[u8], memory: &mut GuestMemory) -> Result<u64, ElfError> {
    let (entry, table, count) = parse_header(file)?;
    let table_size = usize::from(count) * PROGRAM_HEADER_SIZE;
    if table
        .checked_add(table_size)
        .is_none_or(|end| end > file.len())
    {
        return Err(ElfError::Truncated);
    }
    let mut loadable = 0;
    let mut entry_inside = false;
    for index in 0..count {
        let offset = table + usize::from(index) * PROGRAM_HEADER_SIZE;
        if let Some(segment) = parse_segment(file, offset, index)? {
            loadable += 1;
            entry_inside |=
                entry >= segment.address && entry - segment.address < segment.memory_size;
        }
    }
    if loadable == 0 {
        return Err(ElfError::NoLoadableSegment);
    }
    if !entry_inside {
        return Err(ElfError::EntryOutsideImage(entry));
    }
    for index in 0..count {
        let offset = table + usize::from(index) * PROGRAM_HEADER_SIZE;
        let Some(segment) = parse_segment(file, offset, index)? else {
            continue;
        };
        let bytes = file
            .get(segment.file_offset..segment.file_offset + segment.file_size)
            .ok_or(ElfError::BadSegment { index })?;
        // Inside the image window, which lies inside every guest's memory
        // (MIN_GUEST_MEMORY): these writes cannot fail, but say so if
        // they do rather than assume it.
        let outside = ElfError::SegmentOutsideImage {
            address: segment.address,
            size: segment.memory_size,
        };
        memory.write(segment.address, bytes).map_err(|_| outside)?;
        let file_size = segment.file_size as u64;
        memory
            .zero(segment.address + file_size, segment.memory_size - file_size)
            .map_err(|_| outside)?;
    }
    Ok(entry)
}
