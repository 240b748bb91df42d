//! VMCS12: L1's VMCS, in hv's own layout in L1 memory, and its L0 cache.
//!
//! The SDM fixes only the first eight bytes of a VMCS region (SDM 25.2,
//! Table 25-1): bits 30:0 of the first dword are the VMCS revision
//! identifier, bit 31 the shadow-VMCS indicator, and the second dword the
//! VMX-abort indicator. The rest is implementation-specific; hv's format is
//! [`Vmcs12Header`] followed by one little-endian `u64` per VMCS field at
//! [`field_offset`], indexed by [`VmcsField::index`].
//!
//! While a VMCS12 is current it lives in L0 as a [`CurrentVmcs`]; L1 memory
//! is brought up to date when it stops being current (VMCLEAR of it, VMPTRLD
//! of another VMCS, VMXOFF), as the SDM allows (SDM 25.11.1: data of a
//! current VMCS may be cached on the processor until VMCLEAR).

use core::mem::{offset_of, size_of};

use hv_arch_vmx::vmcs::{VmcsField, VmcsImage};
use hv_mmu::addr::L1Gpa;
use hv_mmu::env::NotL1Memory;

use crate::state::L1Access;

/// The size of a VMCS12 (and VMXON) region: one 4-KiB page.
pub const REGION_SIZE: usize = 4096;

/// The fixed start of every VMCS12 region in L1 memory.
///
/// `revision_and_shadow` and `abort_indicator` are the SDM's (Table 25-1);
/// `launch_state` and `reserved` are hv's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct Vmcs12Header {
    /// Bits 30:0: VMCS revision identifier; bit 31: shadow-VMCS indicator.
    pub revision_and_shadow: u32,
    /// VMX-abort indicator (SDM 28.7).
    pub abort_indicator: u32,
    /// The launch state, as [`LaunchState::word`].
    pub launch_state: u32,
    /// Reserved, 0; keeps the field values 8-byte aligned.
    pub reserved: u32,
}

/// Offset of the revision identifier and shadow-VMCS indicator.
pub const REVISION_OFFSET: usize = offset_of!(Vmcs12Header, revision_and_shadow);
/// Offset of the VMX-abort indicator.
pub const ABORT_INDICATOR_OFFSET: usize = offset_of!(Vmcs12Header, abort_indicator);
/// Offset of hv's launch-state word.
pub const LAUNCH_STATE_OFFSET: usize = offset_of!(Vmcs12Header, launch_state);
/// Offset of the first field value.
pub const FIELDS_OFFSET: usize = size_of::<Vmcs12Header>();
/// Bytes per field value: every field is stored as a `u64`.
pub const FIELD_SIZE: usize = size_of::<u64>();
/// End of the field values (exclusive).
pub const FIELDS_END: usize = FIELDS_OFFSET + VmcsField::COUNT * FIELD_SIZE;

// SDM 25.2: the revision identifier and the abort indicator are the first
// two dwords; everything must fit into the 4-KiB region.
const _: () = assert!(REVISION_OFFSET == 0);
const _: () = assert!(ABORT_INDICATOR_OFFSET == 4);
const _: () = assert!(FIELDS_OFFSET.is_multiple_of(FIELD_SIZE));
const _: () = assert!(
    FIELDS_END <= REGION_SIZE,
    "VMCS12 fields overflow the 4-KiB region"
);

/// Offset of `field`'s value in a VMCS12 region.
pub const fn field_offset(field: VmcsField) -> usize {
    FIELDS_OFFSET + field.index() * FIELD_SIZE
}

/// Bit 31 of the first dword: the region is a shadow VMCS (SDM 25.2).
const SHADOW_VMCS_INDICATOR: u32 = 1 << 31;

/// The first dword of a VMXON or VMCS region, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegionHeader {
    /// Bits 30:0: the VMCS revision identifier.
    pub revision_id: u32,
    /// Bit 31: the shadow-VMCS indicator.
    pub shadow: bool,
}

impl RegionHeader {
    /// Decodes the first dword of a region.
    pub const fn from_dword(dword: u32) -> Self {
        Self {
            revision_id: dword & !SHADOW_VMCS_INDICATOR,
            shadow: dword & SHADOW_VMCS_INDICATOR != 0,
        }
    }

    /// Reads the first dword of the region at `region` in L1 memory.
    ///
    /// # Errors
    ///
    /// [`NotL1Memory`] when the dword is not L1 memory.
    pub fn read(memory: &impl L1Access, region: L1Gpa) -> Result<Self, NotL1Memory> {
        let mut dword = [0; 4];
        memory.read_bytes(region.wrapping_add(REVISION_OFFSET as u64), &mut dword)?;
        Ok(Self::from_dword(u32::from_le_bytes(dword)))
    }
}

/// The launch state of a VMCS (SDM 25.1, Figure 25-1): VMLAUNCH needs
/// "clear", VMRESUME needs "launched".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LaunchState {
    /// Set by VMCLEAR; VMLAUNCH may use the VMCS.
    Clear,
    /// Set by a successful VMLAUNCH; VMRESUME may use the VMCS.
    Launched,
}

impl LaunchState {
    /// The word hv stores for "launched"; every other value reads as clear.
    const LAUNCHED_WORD: u32 = 1;
    /// The word hv stores for "clear".
    const CLEAR_WORD: u32 = 0;

    /// Decodes hv's launch-state word. The SDM leaves the launch state of a
    /// region L1 never `VMCLEARed` undefined (SDM 25.11.3); hv reads any word
    /// other than "launched" as clear.
    pub const fn from_word(word: u32) -> Self {
        if word == Self::LAUNCHED_WORD {
            Self::Launched
        } else {
            Self::Clear
        }
    }

    /// The word hv stores in the region.
    pub const fn word(self) -> u32 {
        match self {
            Self::Clear => Self::CLEAR_WORD,
            Self::Launched => Self::LAUNCHED_WORD,
        }
    }

    /// Writes `self` into the launch-state word of the region at `region`
    /// (what VMCLEAR does to a VMCS that is not current).
    ///
    /// # Errors
    ///
    /// [`NotL1Memory`] when the word is not L1 memory.
    pub fn write(self, memory: &mut impl L1Access, region: L1Gpa) -> Result<(), NotL1Memory> {
        memory.write_bytes(
            region.wrapping_add(LAUNCH_STATE_OFFSET as u64),
            &self.word().to_le_bytes(),
        )
    }
}

/// The current VMCS12, cached in L0: its address in L1 memory, every field
/// value, and its launch state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentVmcs {
    pointer: L1Gpa,
    image: VmcsImage,
    launch_state: LaunchState,
}

impl CurrentVmcs {
    /// A cache for the VMCS12 at `pointer` holding `image` and
    /// `launch_state` (for tests and for engines that restore state).
    pub const fn new(pointer: L1Gpa, image: VmcsImage, launch_state: LaunchState) -> Self {
        Self {
            pointer,
            image,
            launch_state,
        }
    }

    /// Reads the VMCS12 region at `pointer` from L1 memory (VMPTRLD). Each
    /// value is truncated to its field's width, as a VMWRITE would leave it,
    /// whatever L1 stored there directly.
    ///
    /// # Errors
    ///
    /// [`NotL1Memory`] when part of the region is not L1 memory.
    pub fn load(memory: &impl L1Access, pointer: L1Gpa) -> Result<Self, NotL1Memory> {
        let mut region = [0u8; FIELDS_END];
        memory.read_bytes(pointer, &mut region)?;
        let launch_word = read_u32(&region, LAUNCH_STATE_OFFSET);
        let mut image = VmcsImage::new();
        for &field in VmcsField::ALL {
            image.set(field, read_u64(&region, field_offset(field)));
        }
        Ok(Self {
            pointer,
            image,
            launch_state: LaunchState::from_word(launch_word),
        })
    }

    /// Writes the launch state and every field value back to the region in
    /// L1 memory. The revision identifier and the abort indicator are left
    /// as L1 wrote them.
    ///
    /// # Errors
    ///
    /// [`NotL1Memory`] when part of the region is not L1 memory.
    pub fn store(&self, memory: &mut impl L1Access) -> Result<(), NotL1Memory> {
        let mut bytes = [0u8; FIELDS_END - LAUNCH_STATE_OFFSET];
        bytes[..4].copy_from_slice(&self.launch_state.word().to_le_bytes());
        for &field in VmcsField::ALL {
            let at = field_offset(field) - LAUNCH_STATE_OFFSET;
            bytes[at..at + FIELD_SIZE].copy_from_slice(&self.image.get(field).to_le_bytes());
        }
        memory.write_bytes(
            self.pointer.wrapping_add(LAUNCH_STATE_OFFSET as u64),
            &bytes,
        )
    }

    /// The L1 physical address of the VMCS12 region (the current-VMCS
    /// pointer).
    pub const fn pointer(&self) -> L1Gpa {
        self.pointer
    }

    /// The cached field values.
    pub const fn image(&self) -> &VmcsImage {
        &self.image
    }

    /// The cached field values, for writers other than VMWRITE (exit
    /// reflection writes the exit-information fields and guest state).
    pub const fn image_mut(&mut self) -> &mut VmcsImage {
        &mut self.image
    }

    /// The launch state.
    pub const fn launch_state(&self) -> LaunchState {
        self.launch_state
    }

    /// Sets the launch state (VMLAUNCH marks the VMCS launched).
    pub const fn set_launch_state(&mut self, state: LaunchState) {
        self.launch_state = state;
    }
}

/// The little-endian `u32` at `offset` of `bytes` (callers pass offsets
/// that the layout constants keep in bounds).
fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0; 4];
    if let Some(source) = bytes.get(offset..offset + 4) {
        word.copy_from_slice(source);
    }
    u32::from_le_bytes(word)
}

/// The little-endian `u64` at `offset` of `bytes`.
fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0; 8];
    if let Some(source) = bytes.get(offset..offset + 8) {
        word.copy_from_slice(source);
    }
    u64::from_le_bytes(word)
}
