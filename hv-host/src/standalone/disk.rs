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
    /// The loader sectors have no "HVCF" run-config record (an image older
    /// than the nested milestone).
    #[error(
        "the image's loader has no HVCF run-config record (an older image: rebuild images/, or use --probe-only)"
    )]
    NoConfigRecord,
    /// The run configuration is invalid.
    #[error("invalid run configuration: {0}")]
    RunConfig(#[from] RunConfigError),
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

/// Magic of the 16-byte run-config record in the loader (`.stage2`).
pub const CONFIG_RECORD_MAGIC: [u8; 4] = *b"HVCF";
/// Size of the run-config record.
pub const CONFIG_RECORD_BYTES: usize = 16;
/// The most L2 workloads the image runs.
pub const MAX_L2_GUESTS: u8 = 8;
/// The most round-robin slices the launcher asks for.
pub const MAX_SLICES: u32 = 100_000;

/// What the image does after the VMX probe (record byte 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunMode {
    /// Probe VMX and stop (the first milestone).
    Probe = 0,
    /// L0 runs the L2 workloads itself, on the real VMX.
    OneLevel = 1,
    /// L0 runs the same image as L1, which runs the L2 workloads.
    Nested = 2,
}

/// The EPT02 root-cache policy of L0 in nested runs (record byte 6).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// hv's own: precise resync, no flush on a cached root.
    Hv = 0,
    /// A model of KVM (4 cached roots).
    Kvm = 1,
    /// A model of Xen (10 nested tables).
    Xen = 2,
    /// INVEPT on every nested entry (the 2018 behaviour).
    FlushAlways = 3,
}

impl Policy {
    /// The name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hv => "hv",
            Self::Kvm => "kvm",
            Self::Xen => "xen",
            Self::FlushAlways => "flush-always",
        }
    }
}

/// Something illegal the runner does before its workloads (record byte 7),
/// to check the answer it gets (from L0's nested VMX, or Bochs's VMX in one
/// level).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum IllegalCase {
    /// VMXON while already in VMX operation: `VMfailValid`, error 15.
    VmxonTwice = 1,
    /// VMLAUNCH with a reserved control set: `VMfailValid`, error 7.
    VmlaunchBadControl = 2,
    /// An EPT12 entry pointing outside the runner's memory: the L2 access
    /// ends in the VM exit the SDM prescribes (the result's `expected`),
    /// and L0 keeps running.
    Ept12Outside = 3,
}

impl IllegalCase {
    /// The name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::VmxonTwice => "vmxon-twice",
            Self::VmlaunchBadControl => "vmlaunch-bad-control",
            Self::Ept12Outside => "ept12-outside",
        }
    }
}

/// Why a [`RunConfig`] cannot be written.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RunConfigError {
    /// `l2_guests` outside `1..=8`.
    #[error("--l2 {0}: the image runs 1 to {MAX_L2_GUESTS} L2 workloads")]
    L2Guests(u32),
    /// `slices` outside `1..=100000`.
    #[error("--slices {0}: between 1 and {MAX_SLICES}")]
    Slices(u32),
    /// A policy in a run without nesting.
    #[error("--policy {0} needs --nested (the policy is L0's EPT02 cache)")]
    PolicyWithoutNested(&'static str),
    /// Workload settings in a probe-only run.
    #[error("--l1-illegal {0} needs a run with workloads (not --probe-only)")]
    IllegalInProbe(&'static str),
}

/// The run configuration the launcher patches into the image's "HVCF"
/// record (`notes/standalone.md`): bytes 0..4 magic, 4 mode, 5 L2 count,
/// 6 policy, 7 illegal case, 8..12 slices, 12..16 reserved (zero); little
/// endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunConfig {
    /// What to run.
    pub mode: RunMode,
    /// Number of L2 workloads, K (1..=8).
    pub l2_guests: u8,
    /// L0's EPT02 policy (nested runs only; `None` there means hv).
    pub policy: Option<Policy>,
    /// Something illegal the runner does first.
    pub l1_illegal: Option<IllegalCase>,
    /// Round-robin slices, N.
    pub slices: u32,
}

impl Default for RunConfig {
    /// One level, K = 4, N = 32.
    fn default() -> Self {
        Self {
            mode: RunMode::OneLevel,
            l2_guests: 4,
            policy: None,
            l1_illegal: None,
            slices: 32,
        }
    }
}

impl RunConfig {
    /// Checks the ranges and combinations.
    ///
    /// # Errors
    ///
    /// The first [`RunConfigError`] found.
    pub fn validate(&self) -> Result<(), RunConfigError> {
        if !(1..=MAX_L2_GUESTS).contains(&self.l2_guests) {
            return Err(RunConfigError::L2Guests(u32::from(self.l2_guests)));
        }
        if !(1..=MAX_SLICES).contains(&self.slices) {
            return Err(RunConfigError::Slices(self.slices));
        }
        if let Some(policy) = self.policy
            && self.mode != RunMode::Nested
        {
            return Err(RunConfigError::PolicyWithoutNested(policy.name()));
        }
        if let Some(case) = self.l1_illegal
            && self.mode == RunMode::Probe
        {
            return Err(RunConfigError::IllegalInProbe(case.name()));
        }
        Ok(())
    }

    /// The policy in effect: hv by default in nested runs, none otherwise.
    pub fn effective_policy(&self) -> Option<Policy> {
        match self.mode {
            RunMode::Nested => Some(self.policy.unwrap_or(Policy::Hv)),
            RunMode::Probe | RunMode::OneLevel => None,
        }
    }

    /// The 16 record bytes.
    ///
    /// # Errors
    ///
    /// A [`RunConfigError`] if the configuration is invalid.
    pub fn record(&self) -> Result<[u8; CONFIG_RECORD_BYTES], RunConfigError> {
        self.validate()?;
        let mut record = [0u8; CONFIG_RECORD_BYTES];
        record[..4].copy_from_slice(&CONFIG_RECORD_MAGIC);
        record[4] = self.mode as u8;
        record[5] = self.l2_guests;
        record[6] = self.effective_policy().map_or(0, |policy| policy as u8);
        record[7] = self.l1_illegal.map_or(0, |case| case as u8);
        record[8..12].copy_from_slice(&self.slices.to_le_bytes());
        Ok(record)
    }
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

    /// Offset in [`DiskImage::bytes`] of the "HVCF" run-config record: the
    /// first "HVCF" in the loader sectors (1..=`loader_sectors`) whose 16
    /// bytes lie inside them and whose reserved word is zero.
    pub fn config_record(&self) -> Option<usize> {
        let loader_bytes = usize::try_from(self.loader_sectors)
            .ok()?
            .checked_mul(SECTOR_SIZE)?;
        let end = SECTOR_SIZE.checked_add(loader_bytes)?.min(self.bytes.len());
        let loader = self.bytes.get(SECTOR_SIZE..end)?;
        loader
            .windows(CONFIG_RECORD_BYTES)
            .position(|window| window[..4] == CONFIG_RECORD_MAGIC && window[12..] == [0, 0, 0, 0])
            .map(|offset| SECTOR_SIZE + offset)
    }

    /// Patches the run configuration into the image's "HVCF" record.
    ///
    /// # Errors
    ///
    /// [`DiskImageError::RunConfig`] if the configuration is invalid,
    /// [`DiskImageError::NoConfigRecord`] if the loader has no record.
    pub fn set_run_config(&mut self, config: &RunConfig) -> Result<(), DiskImageError> {
        let record = config.record()?;
        let at = self.config_record().ok_or(DiskImageError::NoConfigRecord)?;
        self.bytes[at..at + CONFIG_RECORD_BYTES].copy_from_slice(&record);
        Ok(())
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

    /// A disk whose loader (2 sectors) holds an HVCF record at `at` (an
    /// offset into the loader), with a decoy "HVCF" in code before it.
    fn disk_with_config_record(at: usize) -> DiskImage {
        let mut loader = vec![0x90u8; 1024];
        loader[4..8].copy_from_slice(b"HVCF"); // an immediate, followed by code
        loader[16..20].copy_from_slice(&[1, 2, 3, 4]);
        loader[at..at + 4].copy_from_slice(b"HVCF");
        loader[at + 4..at + 16].fill(0);
        let elf = elf_with(&[
            (0x7C00, boot_sector(2, 1)),
            (0x7E00, loader),
            (0x10_0000, b"HVCF in the kernel\0\0\0\0\0\0\0\0".to_vec()),
        ]);
        build_disk_image(&elf).unwrap()
    }

    #[test]
    fn patches_the_run_config_record() {
        let mut disk = disk_with_config_record(600);
        let record = 512 + 600;
        assert_eq!(disk.config_record(), Some(record));
        let before = disk.bytes.clone();
        let config = RunConfig {
            mode: RunMode::Nested,
            l2_guests: 8,
            policy: Some(Policy::FlushAlways),
            l1_illegal: Some(IllegalCase::Ept12Outside),
            slices: 0x0001_8203,
        };
        disk.set_run_config(&config).unwrap();
        assert_eq!(
            &disk.bytes[record..record + 16],
            &[
                b'H', b'V', b'C', b'F', 2, 8, 3, 3, 0x03, 0x82, 0x01, 0x00, 0, 0, 0, 0
            ]
        );
        // Nothing else changed.
        let changed: Vec<usize> = (0..before.len())
            .filter(|&index| before[index] != disk.bytes[index])
            .collect();
        assert!(
            changed
                .iter()
                .all(|&index| (record..record + 16).contains(&index))
        );

        // Defaults: one level, K = 4, N = 32, no policy byte.
        disk.set_run_config(&RunConfig::default()).unwrap();
        assert_eq!(
            &disk.bytes[record + 4..record + 16],
            &[1, 4, 0, 0, 32, 0, 0, 0, 0, 0, 0, 0]
        );
        // Nested without a policy means hv; probe writes mode 0.
        let nested = RunConfig {
            mode: RunMode::Nested,
            l1_illegal: Some(IllegalCase::VmxonTwice),
            ..RunConfig::default()
        };
        disk.set_run_config(&nested).unwrap();
        assert_eq!(&disk.bytes[record + 4..record + 8], &[2, 4, 0, 1]);
        let probe = RunConfig {
            mode: RunMode::Probe,
            ..RunConfig::default()
        };
        disk.set_run_config(&probe).unwrap();
        assert_eq!(disk.bytes[record + 4], 0);
    }

    #[test]
    fn finds_a_record_at_the_end_of_the_loader_only() {
        let disk = disk_with_config_record(1024 - 16);
        assert_eq!(disk.config_record(), Some(512 + 1024 - 16));
        // A record in the kernel or the boot sector does not count.
        let elf = elf_with(&[
            (0x7C00, boot_sector(1, 1)),
            (0x7E00, vec![0; 100]),
            (0x10_0000, b"HVCF\0\0\0\0\0\0\0\0\0\0\0\0".to_vec()),
        ]);
        let mut disk = build_disk_image(&elf).unwrap();
        assert_eq!(disk.config_record(), None);
        assert_eq!(
            disk.set_run_config(&RunConfig::default()),
            Err(DiskImageError::NoConfigRecord)
        );
    }

    #[test]
    fn rejects_invalid_run_configs() {
        let mut disk = disk_with_config_record(64);
        let before = disk.bytes.clone();
        for (config, error) in [
            (
                RunConfig {
                    l2_guests: 0,
                    ..RunConfig::default()
                },
                RunConfigError::L2Guests(0),
            ),
            (
                RunConfig {
                    l2_guests: 9,
                    ..RunConfig::default()
                },
                RunConfigError::L2Guests(9),
            ),
            (
                RunConfig {
                    slices: 0,
                    ..RunConfig::default()
                },
                RunConfigError::Slices(0),
            ),
            (
                RunConfig {
                    slices: MAX_SLICES + 1,
                    ..RunConfig::default()
                },
                RunConfigError::Slices(MAX_SLICES + 1),
            ),
            (
                RunConfig {
                    policy: Some(Policy::Kvm),
                    ..RunConfig::default()
                },
                RunConfigError::PolicyWithoutNested("kvm"),
            ),
            (
                RunConfig {
                    mode: RunMode::Probe,
                    l1_illegal: Some(IllegalCase::VmxonTwice),
                    ..RunConfig::default()
                },
                RunConfigError::IllegalInProbe("vmxon-twice"),
            ),
        ] {
            assert_eq!(
                disk.set_run_config(&config),
                Err(DiskImageError::RunConfig(error.clone())),
                "{config:?}"
            );
            assert!(!error.to_string().is_empty());
        }
        assert_eq!(disk.bytes, before, "nothing patched on an error");
        // Illegal cases are allowed in one level.
        let one_level = RunConfig {
            l1_illegal: Some(IllegalCase::VmlaunchBadControl),
            ..RunConfig::default()
        };
        disk.set_run_config(&one_level).unwrap();
        assert_eq!(disk.bytes[512 + 64 + 7], 2);
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
