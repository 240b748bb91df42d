//! `hv bench`: benchmarks that measure hv against the floor it competes
//! with, in the same run, and print ratios or per-policy tables.

pub mod mmu;
pub mod sandbox;
