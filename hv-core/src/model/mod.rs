//! The software model: an execution engine for tests, fuzzers and `hv
//! simulate` that makes a missing flush observable.
//!
//! [`Model`] implements [`Platform`](crate::platform::Platform). It holds
//! L1's memory and vCPU, an identity EPT01, one VMCS02, L2's registers, the
//! frames hv-mmu builds EPT02 in ([`ModelFrames`]) and a TLB tagged by
//! (VPID02, EPTP02 root, linear page) with the SDM's invalidation rules
//! ([`tlb`]). Guests are scripts ([`script`]): L1 executes VMX
//! instructions (the model reports the exits a processor would, [`exits`])
//! and writes memory; L2 reads, writes, fetches and executes CPUID, I/O and
//! HLT, translating through the TLB or walking its page map and EPT02.
//!
//! Independently of hv-core, [`reference::L1Reference`] follows what L1's
//! architecture allows, and every TLB hit is checked against it: a cached
//! translation the architecture says must be gone is counted in
//! [`ModelStats::stale_translations`].
//!
//! - [`memory`]: L1 memory and MSRs.
//! - [`frames`]: EPT02 frames shared between hv-mmu and the model.
//! - [`script`]: L1 and L2 actions.
//! - [`exits`]: the exit each action reports.
//! - [`tlb`]: the tagged TLB.
//! - [`reference`](mod@reference): the reference L1 and the stale rule.
//! - [`engine`]: [`Model`] and its `Platform` implementation.
//! - [`harness`]: a vCPU on the model, with the embedder's duties done.
//! - `fuzz` (feature `fuzzing`): the `vmx_ops` fuzz scenario.
//! - [`simulate`](mod@simulate): K L2s switched round-robin, the numbers of
//!   `hv simulate`.

pub mod engine;
pub mod exits;
pub mod frames;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod harness;
pub mod memory;
pub mod reference;
pub mod script;
pub mod simulate;
pub mod tlb;

pub use engine::{Model, ModelConfig, ModelError, ModelStats, StaleTranslation};
pub use frames::{Ept02View, ModelFrames};
pub use harness::{Harness, HarnessError, Idle};
pub use memory::{ModelMemory, ModelMsrs};
pub use reference::{L1Reference, L1Tag, StaleReason};
pub use script::{L1Action, L2Action, VmxOp};
pub use simulate::{SimulateConfig, SimulateError, SimulateReport, simulate};
pub use tlb::{Tlb, TlbEntry, TlbKey, TlbStats};
