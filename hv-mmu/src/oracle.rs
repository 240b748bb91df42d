//! The reference composition of EPT12 and EPT01: what an EPT02 entry for an
//! L2 GPA may at most allow, computed the slow, obvious way (walk EPT12,
//! then look up EPT01; no caching, no writes). Tests and fuzzers check every
//! shadow EPT02 leaf against it.
//!
//! The EPT12 walk is [`walk::inspect`], the same code as the engine's
//! [`walk::walk`] minus the access check and the A/D updates, so the oracle
//! and the engine cannot disagree on how EPT12 is read.

use crate::addr::{HostPa, L1Gpa, L2Gpa};
use crate::env::Ept01;
use crate::env::L1Memory;
use crate::walk::{self, WalkConfig};
use hv_arch_vmx::ept::{EptPermissions, Eptp};

/// Where an L2 GPA ends up in host memory and with what rights, through
/// EPT12 then EPT01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OracleMapping {
    /// The exact host-physical byte address of the L2 GPA.
    pub host: HostPa,
    /// The L1 GPA EPT12 translates the L2 GPA to.
    pub l1_gpa: L1Gpa,
    /// The rights of the composition: the EPT12 walk's intersected rights
    /// (bit 10 only with mode-based execute control) ∩ EPT01's rights.
    pub permissions: EptPermissions,
}

/// Composes EPT12 (from `eptp12`, read from `memory`) with `ept01` for
/// `gpa`: the most an EPT02 leaf for `gpa` may allow. `None` when the EPT12
/// walk faults (not present, misconfigured, table outside L1 memory) or
/// EPT01 maps no host memory at the L1 GPA. No access is checked, so the
/// permissions may be empty (e.g. an entry granting only bit 10 without
/// mode-based execute control); EPT02 must then map nothing usable.
pub fn compose<M: L1Memory + ?Sized, E: Ept01 + ?Sized>(
    memory: &M,
    ept01: &E,
    eptp12: Eptp,
    gpa: L2Gpa,
    config: &WalkConfig,
) -> Option<OracleMapping> {
    let translation = walk::inspect(memory, eptp12, gpa, config).ok()?;
    let l1_gpa = translation.l1_gpa;
    let mapping = ept01.translate(l1_gpa)?;
    // The EPT01 page holds `l1_gpa` at the same offset from its start.
    let offset = l1_gpa.raw() & (mapping.size.bytes() - 1);
    Some(OracleMapping {
        host: mapping.frame.wrapping_add(offset),
        l1_gpa,
        permissions: translation.permissions.intersection(mapping.permissions),
    })
}
