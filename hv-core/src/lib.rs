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
//! - [`vmcs02`]: VMCS02 preparation: VMCS12 merged with L0's requirements
//!   into the VMCS the real engine runs L2 with, and L2's state read back.
//! - [`reflect`]: whether L1 asked for an L2 exit, and delivering it: exit
//!   fields and L2 state into VMCS12, L1's host state loaded.
//! - [`model`]: the software engine for tests, fuzzers and `hv simulate`:
//!   scripted guests and a TLB tagged by (VPID, EPTP) that makes a missing
//!   flush observable as a stale translation.
//! - [`vcpu`]: the vCPU engine: runs L1 and L2 on a platform one exit at a
//!   time, with the EPT02 flush protocol, the VPID02 map and the flush
//!   policy (`hv`, `kvm`, `xen`, `flush-always`), and exact counters.
//!
//! Not yet here (next steps of the hv-core issue): the platform trait,
//! VMCS02 preparation and the software model with its tagged TLB.
#![no_std]
#![deny(missing_docs)]

#[cfg(any(test, feature = "fuzzing"))]
extern crate std;

pub mod model;
pub mod platform;
pub mod reflect;
pub mod state;
pub mod vcpu;
pub mod vmcs02;
pub mod vmx;
