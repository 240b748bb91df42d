//! A strict ELF64 parser for guest images. The file is hostile: every
//! field is checked before it is used, every offset and size is checked for
//! overflow, and every problem is a typed [`ElfError`] (never a panic).
//!
//! Only what a static, non-PIE x86-64 executable linked at
//! [`hv_guest_abi::IMAGE_BASE`] or above needs is accepted (System V ABI,
//! ELF-64 Object File Format 1.5; x86-64 psABI).

use hv_guest_abi::IMAGE_BASE;

/// Size of the ELF64 file header.
const EHDR_SIZE: usize = 64;
/// Size of one ELF64 program header.
const PHDR_SIZE: usize = 56;
/// `e_machine` for x86-64.
const EM_X86_64: u16 = 62;
/// `e_type` for an executable.
const ET_EXEC: u16 = 2;
/// `p_type` of a loadable segment.
const PT_LOAD: u32 = 1;
/// `p_flags` execute bit.
const PF_X: u32 = 1;
/// `p_flags` write bit.
const PF_W: u32 = 2;
/// `p_flags` read bit.
const PF_R: u32 = 4;
/// More program headers than this is absurd for a guest image.
pub const MAX_PROGRAM_HEADERS: u16 = 64;
/// Page size segments are aligned to.
const PAGE: u64 = 0x1000;

/// Why a guest ELF was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    /// The file is shorter than an ELF header.
    #[error("file is {size} bytes, shorter than the 64-byte ELF header")]
    Truncated {
        /// File size.
        size: usize,
    },
    /// The first four bytes are not `\x7fELF`.
    #[error("not an ELF file (bad magic)")]
    BadMagic,
    /// Not ELFCLASS64.
    #[error("ELF class {class} is not ELFCLASS64 (2)")]
    NotElf64 {
        /// `e_ident[EI_CLASS]`.
        class: u8,
    },
    /// Not little endian.
    #[error("ELF data encoding {encoding} is not little endian (1)")]
    NotLittleEndian {
        /// `e_ident[EI_DATA]`.
        encoding: u8,
    },
    /// `e_ident[EI_VERSION]` or `e_version` is not 1.
    #[error("ELF version {version} is not 1")]
    BadVersion {
        /// The version found.
        version: u32,
    },
    /// Not an executable (relocatable, shared object/PIE, core...).
    #[error("ELF type {e_type} is not ET_EXEC (2): link the guest static and non-PIE")]
    NotExecutable {
        /// `e_type`.
        e_type: u16,
    },
    /// Not x86-64.
    #[error("ELF machine {machine} is not x86-64 (62)")]
    WrongMachine {
        /// `e_machine`.
        machine: u16,
    },
    /// `e_ehsize` or `e_phentsize` is not the ELF64 size.
    #[error("header size {found} where {expected} is required")]
    BadHeaderSize {
        /// What the file says.
        found: u16,
        /// What ELF64 requires.
        expected: u16,
    },
    /// No program headers at all.
    #[error("no program headers")]
    NoProgramHeaders,
    /// More program headers than [`MAX_PROGRAM_HEADERS`].
    #[error("{count} program headers (at most {MAX_PROGRAM_HEADERS} are accepted)")]
    TooManyProgramHeaders {
        /// `e_phnum`.
        count: u16,
    },
    /// The program-header table lies (partly) outside the file.
    #[error("program header table at {offset:#x} ({count} entries) exceeds the file")]
    ProgramHeadersOutOfBounds {
        /// `e_phoff`.
        offset: u64,
        /// `e_phnum`.
        count: u16,
    },
    /// No `PT_LOAD` segment.
    #[error("no loadable segment")]
    NoLoadableSegment,
    /// A segment's `p_filesz` exceeds its `p_memsz`.
    #[error("segment {index}: file size {file_size:#x} exceeds memory size {memory_size:#x}")]
    FileSizeExceedsMemorySize {
        /// Program-header index.
        index: usize,
        /// `p_filesz`.
        file_size: u64,
        /// `p_memsz`.
        memory_size: u64,
    },
    /// A segment's file bytes lie outside the file.
    #[error("segment {index}: file bytes {offset:#x}+{file_size:#x} exceed the file")]
    SegmentDataOutOfBounds {
        /// Program-header index.
        index: usize,
        /// `p_offset`.
        offset: u64,
        /// `p_filesz`.
        file_size: u64,
    },
    /// A segment starts below [`IMAGE_BASE`].
    #[error("segment {index}: address {address:#x} is below the image base {IMAGE_BASE:#x}")]
    SegmentBelowImageBase {
        /// Program-header index.
        index: usize,
        /// `p_vaddr`.
        address: u64,
    },
    /// A segment ends past the image area (or its end overflows).
    #[error(
        "segment {index}: {address:#x}+{memory_size:#x} exceeds the image area (ends at {limit:#x})"
    )]
    SegmentOutsideImageArea {
        /// Program-header index.
        index: usize,
        /// `p_vaddr`.
        address: u64,
        /// `p_memsz`.
        memory_size: u64,
        /// End of the image area (exclusive).
        limit: u64,
    },
    /// `p_vaddr` and `p_offset` disagree modulo the page size, or `p_align`
    /// is not a power of two.
    #[error("segment {index}: not page-aligned (vaddr {address:#x}, offset {offset:#x})")]
    Misaligned {
        /// Program-header index.
        index: usize,
        /// `p_vaddr`.
        address: u64,
        /// `p_offset`.
        offset: u64,
    },
    /// Two loadable segments share a page.
    #[error("segments {first} and {second} overlap")]
    SegmentsOverlap {
        /// The earlier segment's index.
        first: usize,
        /// The later segment's index.
        second: usize,
    },
    /// The entry point is not inside an executable segment.
    #[error("entry point {entry:#x} is not inside an executable segment")]
    EntryOutsideCode {
        /// `e_entry`.
        entry: u64,
    },
    /// A segment's flags include bits other than R, W, X.
    #[error("segment {index}: unknown flags {flags:#x}")]
    BadSegmentFlags {
        /// Program-header index.
        index: usize,
        /// `p_flags`.
        flags: u32,
    },
}

/// One loadable segment, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Segment {
    /// Guest address of the first byte.
    pub address: u64,
    /// Offset of its bytes in the file.
    pub file_offset: u64,
    /// Bytes copied from the file.
    pub file_size: u64,
    /// Bytes in memory (the tail past `file_size` is zero).
    pub memory_size: u64,
    /// Executable.
    pub executable: bool,
    /// Writable.
    pub writable: bool,
}

impl Segment {
    /// First page-aligned address of the segment.
    pub const fn page_start(&self) -> u64 {
        self.address & !(PAGE - 1)
    }

    /// End of the segment (exclusive), not rounded.
    pub const fn end(&self) -> u64 {
        // Checked at parse time not to overflow.
        self.address + self.memory_size
    }
}

/// A checked guest executable: where its segments go and where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfImage {
    /// Entry point (inside an executable segment).
    pub entry: u64,
    /// Loadable segments, sorted by address, non-overlapping.
    pub segments: Vec<Segment>,
}

impl ElfImage {
    /// The end of the last segment rounded up to a page (the first free
    /// address after the image).
    pub fn end(&self) -> u64 {
        self.segments
            .iter()
            .map(|segment| segment.end().next_multiple_of(PAGE))
            .max()
            .unwrap_or(IMAGE_BASE)
    }
}

fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(word)
}

/// Parses and checks `file` as a guest image whose segments must lie in
/// `[IMAGE_BASE, image_limit)`.
///
/// # Errors
///
/// The first [`ElfError`] found.
#[allow(clippy::too_many_lines)] // one check per ELF rule, in file order
pub fn parse(file: &[u8], image_limit: u64) -> Result<ElfImage, ElfError> {
    // ELF-64 Object File Format, "ELF Header" (e_ident, then fixed fields).
    let header = file
        .get(..EHDR_SIZE)
        .ok_or(ElfError::Truncated { size: file.len() })?;
    if header[..4] != *b"\x7fELF" {
        return Err(ElfError::BadMagic);
    }
    if header[4] != 2 {
        return Err(ElfError::NotElf64 { class: header[4] });
    }
    if header[5] != 1 {
        return Err(ElfError::NotLittleEndian {
            encoding: header[5],
        });
    }
    if header[6] != 1 {
        return Err(ElfError::BadVersion {
            version: u32::from(header[6]),
        });
    }
    let e_type = u16_at(header, 16);
    let machine = u16_at(header, 18);
    let version = u32_at(header, 20);
    let entry = u64_at(header, 24);
    let phoff = u64_at(header, 32);
    let ehsize = u16_at(header, 52);
    let phentsize = u16_at(header, 54);
    let phnum = u16_at(header, 56);
    if e_type != ET_EXEC {
        return Err(ElfError::NotExecutable { e_type });
    }
    if machine != EM_X86_64 {
        return Err(ElfError::WrongMachine { machine });
    }
    if version != 1 {
        return Err(ElfError::BadVersion { version });
    }
    if usize::from(ehsize) != EHDR_SIZE {
        return Err(ElfError::BadHeaderSize {
            found: ehsize,
            expected: EHDR_SIZE as u16,
        });
    }
    if phnum == 0 {
        return Err(ElfError::NoProgramHeaders);
    }
    if usize::from(phentsize) != PHDR_SIZE {
        return Err(ElfError::BadHeaderSize {
            found: phentsize,
            expected: PHDR_SIZE as u16,
        });
    }
    if phnum > MAX_PROGRAM_HEADERS {
        return Err(ElfError::TooManyProgramHeaders { count: phnum });
    }
    let table_out_of_bounds = ElfError::ProgramHeadersOutOfBounds {
        offset: phoff,
        count: phnum,
    };
    let table_start = usize::try_from(phoff).map_err(|_| table_out_of_bounds)?;
    let table_end = table_start
        .checked_add(usize::from(phnum) * PHDR_SIZE)
        .ok_or(table_out_of_bounds)?;
    let table = file
        .get(table_start..table_end)
        .ok_or(table_out_of_bounds)?;

    let mut segments: Vec<(usize, Segment)> = Vec::new();
    for (index, header) in table.chunks_exact(PHDR_SIZE).enumerate() {
        if u32_at(header, 0) != PT_LOAD {
            continue;
        }
        let flags = u32_at(header, 4);
        let offset = u64_at(header, 8);
        let address = u64_at(header, 16);
        let file_size = u64_at(header, 32);
        let memory_size = u64_at(header, 40);
        let align = u64_at(header, 48);
        if flags & !(PF_R | PF_W | PF_X) != 0 {
            return Err(ElfError::BadSegmentFlags { index, flags });
        }
        if file_size > memory_size {
            return Err(ElfError::FileSizeExceedsMemorySize {
                index,
                file_size,
                memory_size,
            });
        }
        let data_end = offset.checked_add(file_size);
        if data_end.is_none_or(|end| end > file.len() as u64) {
            return Err(ElfError::SegmentDataOutOfBounds {
                index,
                offset,
                file_size,
            });
        }
        // System V ABI: p_vaddr = p_offset modulo p_align; we load by page,
        // so require agreement modulo the page size.
        if (align != 0 && !align.is_power_of_two()) || address % PAGE != offset % PAGE {
            return Err(ElfError::Misaligned {
                index,
                address,
                offset,
            });
        }
        if address < IMAGE_BASE {
            return Err(ElfError::SegmentBelowImageBase { index, address });
        }
        let end = address.checked_add(memory_size);
        if end.is_none_or(|end| end > image_limit) {
            return Err(ElfError::SegmentOutsideImageArea {
                index,
                address,
                memory_size,
                limit: image_limit,
            });
        }
        if memory_size == 0 {
            continue;
        }
        segments.push((
            index,
            Segment {
                address,
                file_offset: offset,
                file_size,
                memory_size,
                executable: flags & PF_X != 0,
                writable: flags & PF_W != 0,
            },
        ));
    }
    if segments.is_empty() {
        return Err(ElfError::NoLoadableSegment);
    }
    segments.sort_by_key(|(_, segment)| segment.address);
    for pair in segments.windows(2) {
        let (first, earlier) = pair[0];
        let (second, later) = pair[1];
        // Segments are loaded page by page: they may not share a page.
        if earlier.end().next_multiple_of(PAGE) > later.page_start() {
            return Err(ElfError::SegmentsOverlap { first, second });
        }
    }
    let entry_in_code = segments.iter().any(|(_, segment)| {
        segment.executable && entry >= segment.address && entry < segment.end()
    });
    if !entry_in_code {
        return Err(ElfError::EntryOutsideCode { entry });
    }
    Ok(ElfImage {
        entry,
        segments: segments.into_iter().map(|(_, segment)| segment).collect(),
    })
}

/// Builds a minimal valid ELF64 x86-64 executable with one RX segment at
/// `address` holding `code`, entered at its first byte. Tests and the raw
/// KVM benchmark use it for hand-assembled guests.
pub fn build_flat_elf(address: u64, code: &[u8]) -> Vec<u8> {
    const CODE_OFFSET: usize = 0x1000;
    let mut file = vec![0u8; CODE_OFFSET];
    file[..4].copy_from_slice(b"\x7fELF");
    file[4] = 2; // ELFCLASS64
    file[5] = 1; // little endian
    file[6] = 1; // EV_CURRENT
    file[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
    file[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
    file[20..24].copy_from_slice(&1u32.to_le_bytes());
    file[24..32].copy_from_slice(&address.to_le_bytes());
    file[32..40].copy_from_slice(&(EHDR_SIZE as u64).to_le_bytes());
    file[52..54].copy_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
    file[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
    file[56..58].copy_from_slice(&1u16.to_le_bytes());
    let program_header = &mut file[EHDR_SIZE..EHDR_SIZE + PHDR_SIZE];
    program_header[0..4].copy_from_slice(&PT_LOAD.to_le_bytes());
    program_header[4..8].copy_from_slice(&(PF_R | PF_X).to_le_bytes());
    program_header[8..16].copy_from_slice(&(CODE_OFFSET as u64).to_le_bytes());
    program_header[16..24].copy_from_slice(&address.to_le_bytes());
    program_header[24..32].copy_from_slice(&address.to_le_bytes());
    program_header[32..40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    program_header[40..48].copy_from_slice(&(code.len() as u64).to_le_bytes());
    program_header[48..56].copy_from_slice(&PAGE.to_le_bytes());
    file.extend_from_slice(code);
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 0x40_0000;

    #[test]
    fn flat_elf_parses() {
        let image = parse(&build_flat_elf(IMAGE_BASE, &[0xf4]), LIMIT).unwrap();
        assert_eq!(image.entry, IMAGE_BASE);
        assert_eq!(image.segments.len(), 1);
        assert_eq!(image.end(), IMAGE_BASE + PAGE);
    }

    #[test]
    fn entry_must_be_in_code() {
        let mut file = build_flat_elf(IMAGE_BASE, &[0xf4]);
        file[24..32].copy_from_slice(&(IMAGE_BASE + 1).to_le_bytes());
        assert_eq!(
            parse(&file, LIMIT),
            Err(ElfError::EntryOutsideCode {
                entry: IMAGE_BASE + 1
            })
        );
    }
}
