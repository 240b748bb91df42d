//! `hv-mmu`: hv's nested EPT engine.
//!
//! When L1 runs L2 with EPT, the processor needs an EPT02 that composes L1's
//! EPT12 (L2 GPA -> L1 GPA) with L0's EPT01 (L1 GPA -> host). This crate
//! builds EPT02 as shadow tables in real EPT format, keeps many EPT02 roots
//! alive across L1<->L2 switches, resyncs them precisely when L1 changes
//! EPT12, and reports exactly which roots need an INVEPT (see
//! `ARCHITECTURE.md`, section hv-mmu). Every byte of EPT12 is L1-controlled:
//! nothing here trusts it.
//!
//! - [`addr`]: address newtypes per address space.
//! - [`mod@env`]: the traits a platform implements (L1 memory, EPT01, frames).
//! - [`walk`]: the EPT12 walker (violations, misconfigurations, A/D flags).
//! - [`shadow`]: the engine: shadow tables, the root cache, change and flush
//!   tracking, and the four policies (`hv`, `kvm`, `xen`, `flush-always`).
//! - [`oracle`]: the reference composition every EPT02 leaf is checked
//!   against.
//! - [`testing`]: in-memory surroundings, a hardware EPT02 walk and the
//!   invariant checker, for tests, fuzzing (`testing::scenario`, feature
//!   `fuzzing`) and benchmarks.
#![no_std]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(any(test, feature = "fuzzing"))]
extern crate std;

pub mod addr;
pub mod env;
pub mod oracle;
pub mod shadow;
pub mod testing;
pub mod walk;

pub use shadow::{FaultOutcome, Mmu, MmuConfig, MmuError, MmuStats, Policy, RootSwitch};
