//! The processor's side of EPT02, for tests, fuzzing and benchmarks: a
//! translation through the shadow tables exactly as hardware walks them
//! (SDM 29.3.2), so a trace can tell which L2 accesses would reach the
//! engine as EPT violations and which the hardware would complete alone.

use hv_arch_vmx::ept::{EptEntry, EptLevel, EptPermissions, Eptp};

use crate::addr::{HostPa, L2Gpa};
use crate::env::FrameAllocator;
use crate::walk::{Access, AccessKind};

/// What a hardware walk of EPT02 yields for one L2 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HardwareTranslation {
    /// The host-physical address the L2 address maps to.
    pub host: HostPa,
    /// Rights intersected along the walk.
    pub permissions: EptPermissions,
}

impl HardwareTranslation {
    /// Whether the hardware would complete `access` without an EPT
    /// violation (mode-based execute control off).
    pub fn allows(&self, access: Access) -> bool {
        let needed = match access.kind {
            AccessKind::Read => EptPermissions::READ,
            AccessKind::Write => EptPermissions::WRITE,
            AccessKind::Fetch => EptPermissions::EXECUTE,
        };
        self.permissions.contains(needed)
    }
}

/// Walks EPT02 from `eptp02` for `gpa` as the processor would; `None` when
/// an entry on the way is not present. The tables are the engine's own, so
/// they are trusted to be well formed ([`crate::testing::check_memory_safety`]
/// checks that separately).
pub fn translate_ept02<F: FrameAllocator + ?Sized>(
    frames: &F,
    eptp02: Eptp,
    gpa: L2Gpa,
) -> Option<HardwareTranslation> {
    let mut level = EptLevel::from_number(eptp02.walk_levels())?;
    let mut table = HostPa::new(eptp02.root_address());
    let mut permissions = EptPermissions::READ_WRITE_EXECUTE;
    loop {
        let entry = EptEntry::from_raw(frames.table(table)[level.index_of(gpa.raw())]);
        if !entry.is_present(false) {
            return None;
        }
        permissions &= entry.permissions();
        if entry.is_leaf(level) {
            let host = entry.translate(level, gpa.raw())?;
            return Some(HardwareTranslation {
                host: HostPa::new(host),
                permissions,
            });
        }
        table = HostPa::new(entry.address());
        level = level.next_lower()?;
    }
}
