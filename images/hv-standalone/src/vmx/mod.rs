//! hv-standalone's VMX layer on top of hv-arch-vmx: the probe, the entry
//! stub every run loop shares, and the host-state area.
//!
//! - [`probe`]: is VMX there, what do the capability MSRs say, do the
//!   basic instructions work (SDM 24.6-24.8, Appendix A).
//! - [`enter`]: VMLAUNCH/VMRESUME with the guest's general-purpose and
//!   FPU/SSE registers switched around the entry and the exit (SDM 27, 28).
//! - [`host`]: the host-state area from the running CPU (SDM 25.5, 28.5).
//! - [`fields`]: VMREAD/VMWRITE of typed fields.

pub(crate) mod enter;
pub(crate) mod fields;
pub(crate) mod host;
pub(crate) mod probe;

#[allow(unused_imports, reason = "shared with the runner and L0")]
pub(crate) use probe::{cpuid, rdmsr, wrmsr};
