//! `hv-host`: hv on Linux.
#![deny(missing_docs)]
