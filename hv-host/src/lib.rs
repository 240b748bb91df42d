//! `hv-host`: hv on Linux.
//!
//! - [`sandbox`]: Hyperlight-style micro-VMs on `/dev/kvm` (the KVM shim,
//!   hostile-ELF loading, typed calls, host functions, snapshot/restore,
//!   deadlines and kill), behind `hv run` and `hv demo`.
//! - [`images`]: where the freestanding images built from `images/` are.
//! - [`standalone`]: the Bochs launcher for the standalone image
//!   (`hv standalone`).
//! - [`simulate`](mod@simulate): hv-core on the software model
//!   (`hv simulate`).
//! - [`explain`]: VMX values decoded for people; [`bench`](mod@bench): the
//!   benchmarks behind `hv bench`, each against a floor.
#![deny(missing_docs)]

pub mod bench;
pub mod explain;
pub mod images;
pub mod sandbox;
pub mod simulate;
pub mod standalone;
