//! `hv-mmu`: hv's nested EPT engine.
//!
//! This crate will hold the EPT12 walker, the shadow EPT02 tables, the root
//! cache that keeps many EPT02 roots alive across L1<->L2 switches, change
//! tracking and flush tracking (see `ARCHITECTURE.md`, section hv-mmu).
//!
//! It is intentionally empty today: nothing here pretends to work before it
//! does. The EPT entry and EPTP formats it will build on live in
//! [`hv_arch_vmx::ept`].
#![no_std]
#![deny(missing_docs)]

pub use hv_arch_vmx::ept;
