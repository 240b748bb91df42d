//! `hv-core`: hv's nested VMX engine.
//!
//! hv-core emulates VMX for an L1 hypervisor exactly as the SDM specifies,
//! turns L1's VMCS12 into a VMCS02 the hardware accepts, and decides for
//! every L2 exit whether L1 asked to see it (see `ARCHITECTURE.md`, section
//! hv-core). It is generic over the engine that runs guest code.
//!
//! - [`state`]: the L1 processor state VMX emulation reads and writes, and
//!   the neutral description of a VM exit every engine reports.
//! - [`vmx`]: VMX instruction emulation for L1 (VMXON through INVVPID and
//!   VMCALL) on a VMCS12 cache, with the capability MSRs hv advertises.
//! - [`reflect`]: whether L1 asked for an L2 exit, and delivering it: exit
//!   fields and L2 state into VMCS12, L1's host state loaded.
//!
//! Not yet here (next steps of the hv-core issue): the platform trait,
//! VMCS02 preparation, the VPID02 map, the flush policy and the software
//! model with its tagged TLB.
#![no_std]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod platform;
pub mod reflect;
pub mod state;
pub mod vmx;
