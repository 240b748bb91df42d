//! `hv-host`: hv on Linux.
//!
//! Today this crate holds the logic behind the `hv` command-line tool:
//! [`explain`] decodes VMX values for people; [`bench`](mod@bench) runs the
//! benchmarks behind `hv bench`; [`simulate`](mod@simulate) runs hv-core
//! on the software model for `hv simulate`. The KVM shim and the sandboxes
//! arrive with their issues.
#![deny(missing_docs)]

pub mod bench;
pub mod explain;
pub mod images;
pub mod sandbox;
pub mod simulate;
pub mod standalone;
