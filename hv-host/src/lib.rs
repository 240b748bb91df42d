//! `hv-host`: hv on Linux.
//!
//! Today this crate holds the logic behind the `hv` command-line tool:
//! [`explain`] decodes VMX values for people; [`bench`](mod@bench) runs the
//! benchmarks behind `hv bench`. The KVM shim and the sandboxes
//! arrive with their issues.
#![deny(missing_docs)]

pub mod bench;
pub mod explain;
