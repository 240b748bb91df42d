//! `hv-arch-vmx`: the Intel VMX architecture as Rust types.
//!
//! Everything a hypervisor needs to reason about VMX, with the SDM section it
//! comes from (Intel SDM Vol. 3C, chapters 25-31 and Appendices A-C):
//!
//! - [`vmcs`]: every VMCS field of Appendix B, with width and kind checked
//!   against the encoding at compile time, and a VMCS image to hold values.
//! - [`controls`]: the VM-execution, VM-exit and VM-entry control words as
//!   typed bit sets (SDM 25.6-25.8).
//! - [`exit`]: exit reasons (Appendix C), the exit-reason word, exit
//!   qualifications and VMX-instruction information (SDM 28.2).
//! - [`interruption`]: VM-entry/VM-exit interruption-information fields.
//! - [`instruction_error`]: VM-instruction error numbers (SDM 31.4).
//! - [`ept`] and [`invalidation`]: EPT paging-structure entries, EPTP,
//!   INVEPT/INVVPID types and descriptors (SDM 29.3, 31.3).
//! - [`msr`] and [`capabilities`]: the VMX capability MSRs (Appendix A) and
//!   how to adjust a control word against them.
//! - [`registers`]: CR0, CR4, EFER, RFLAGS, DR7, DEBUGCTL and CET bit sets
//!   and the `IA32_PAT` validity rule (SDM Vol. 3A chapter 2).
//! - [`checks`]: the VM-entry checks (SDM 27.2-27.3) as pure functions.
//! - [`instructions`]: the VMX instructions themselves, as `unsafe fn`.
//!
//! The crate is `no_std` and never allocates.
#![no_std]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod capabilities;
pub mod checks;
pub mod controls;
pub mod ept;
pub mod exit;
pub mod instruction_error;
pub mod instructions;
pub mod interruption;
pub mod invalidation;
pub mod msr;
pub mod registers;
pub mod vmcs;
