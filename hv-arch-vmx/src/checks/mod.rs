//! VM-entry checks (SDM Vol. 3C, chapter 27.2-27.3) as pure functions.
//!
//! A VMLAUNCH/VMRESUME checks, in this order (SDM 27.1-27.3):
//!
//! 1. the VMX controls (SDM 27.2.1): a failure is VMfailValid(7),
//!    "VM entry with invalid control field(s)";
//! 2. the host-state area (SDM 27.2.2-27.2.4): VMfailValid(8),
//!    "VM entry with invalid host-state field(s)";
//! 3. the guest-state area (SDM 27.3.1): a failure is a VM exit with basic
//!    reason 33 and the VM-entry-failure bit set, exit qualification 0
//!    (or 4 for a bad VMCS link pointer, SDM 27.8).
//!
//! [`check_vm_entry`] runs them in that order over anything that reads VMCS
//! fields ([`VmcsRead`]) and returns the first failed check as a typed value
//! naming the SDM rule. hv-core runs it on every VMCS12 before a nested entry:
//! L1 controls every bit of it.

pub mod baseline;
pub mod controls;
pub mod guest;
pub mod host;
mod util;

pub use controls::ControlCheck;
pub use guest::GuestCheck;
pub use host::HostCheck;

use crate::capabilities::VmxCapabilities;
use crate::instruction_error::VmInstructionError;
use crate::vmcs::VmcsRead;

/// What the checks need to know about the processor beyond the capability
/// MSRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryContext {
    /// MAXPHYADDR (`CPUID.80000008H:EAX[7:0]`): physical addresses in the VMCS
    /// must not set bits at or above it.
    pub physical_address_width: u8,
    /// Linear-address width: 48, or 57 with 5-level paging (`CPUID.7:ECX[16]`);
    /// addresses must be canonical for it.
    pub linear_address_width: u8,
    /// The current-VMCS pointer (the VMCS being launched); outside SMM the
    /// VMCS link pointer must not equal it (SDM 27.3.1.5).
    pub current_vmcs_pointer: u64,
    /// Whether the logical processor executing VMLAUNCH/VMRESUME is in
    /// IA-32e mode; then the "host address-space size" exit control must be
    /// 1, otherwise 0 (SDM 27.2.4).
    pub in_ia32e_mode: bool,
}

impl EntryContext {
    /// A context for a 64-bit processor with the given MAXPHYADDR, 48-bit
    /// linear addresses, launching the VMCS at `current_vmcs_pointer`.
    pub const fn new(physical_address_width: u8, current_vmcs_pointer: u64) -> Self {
        Self {
            physical_address_width,
            linear_address_width: 48,
            current_vmcs_pointer,
            in_ia32e_mode: true,
        }
    }

    /// Whether `address` is a valid physical address: no bit set at or above
    /// MAXPHYADDR.
    pub const fn is_valid_physical(&self, address: u64) -> bool {
        self.physical_address_width >= 64 || address >> self.physical_address_width == 0
    }

    /// Whether `address` is canonical for the linear-address width: bits
    /// 63:width-1 all equal (SDM 3.3.7.1).
    /// A width outside 1..=64 is treated as 64 (every address canonical)
    /// rather than trusted as a shift count.
    pub const fn is_canonical(&self, address: u64) -> bool {
        let width = self.linear_address_width as u32;
        if width == 0 || width >= 64 {
            return true;
        }
        // Bits 63:width-1 must be all zeros or all ones.
        let top = address >> (width - 1);
        top == 0 || top == u64::MAX >> (width - 1)
    }
}

/// The first VM-entry check that failed, naming its SDM rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryCheckFailure {
    /// A check on VMX controls failed (SDM 27.2.1): VMfailValid(7).
    #[error("invalid VMX control field: {0}")]
    Control(#[from] ControlCheck),
    /// A check on the host-state area failed (SDM 27.2.2-27.2.4):
    /// VMfailValid(8).
    #[error("invalid host-state field: {0}")]
    Host(#[from] HostCheck),
    /// A check on the guest-state area failed (SDM 27.3.1): VM-entry failure,
    /// exit reason 33.
    #[error("invalid guest state: {0}")]
    Guest(#[from] GuestCheck),
}

impl EntryCheckFailure {
    /// The VM-instruction error a VMLAUNCH/VMRESUME reports for this failure,
    /// or `None` when it is reported as a VM-entry-failure VM exit instead.
    pub const fn vm_instruction_error(&self) -> Option<VmInstructionError> {
        match self {
            Self::Control(_) => Some(VmInstructionError::EntryInvalidControlFields),
            Self::Host(_) => Some(VmInstructionError::EntryInvalidHostStateFields),
            Self::Guest(_) => None,
        }
    }

    /// The SDM section that states the failed rule, e.g. `"27.3.1.1"`.
    pub const fn sdm_section(&self) -> &'static str {
        match self {
            Self::Control(check) => check.sdm_section(),
            Self::Host(check) => check.sdm_section(),
            Self::Guest(check) => check.sdm_section(),
        }
    }
}

/// Runs every VM-entry check, controls first, then host state, then guest
/// state, and returns the first that fails.
///
/// # Errors
///
/// The first failed check, as [`EntryCheckFailure`].
pub fn check_vm_entry<V: VmcsRead + ?Sized>(
    vmcs: &V,
    caps: &VmxCapabilities,
    context: &EntryContext,
) -> Result<(), EntryCheckFailure> {
    controls::check_controls(vmcs, caps, context)?;
    host::check_host_state(vmcs, caps, context)?;
    guest::check_guest_state(vmcs, caps, context)?;
    Ok(())
}
