//! `hv-core`: hv's nested VMX engine.
//!
//! This crate will hold the VMX instruction emulation for L1 (VMXON through
//! INVVPID on a VMCS12 cache), VMCS02 preparation, exit reflection, the VPID02
//! map and the flush policy (see `ARCHITECTURE.md`, section hv-core).
//!
//! It is intentionally empty today: nothing here pretends to work before it
//! does. The VM-entry checks it will run on every VMCS12 live in
//! [`hv_arch_vmx::checks`].
#![no_std]
#![deny(missing_docs)]

pub use hv_arch_vmx::checks;
