//! Exact event counts of one [`Vcpu`](super::Vcpu): what happened and what
//! was issued to the platform, never times.

/// INVEPTs issued to the platform, by type (SDM 31.3 INVEPT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InveptCounts {
    /// Single-context (type 1).
    pub single: u64,
    /// All-context (type 2).
    pub global: u64,
}

/// INVVPIDs issued to the platform, by type (SDM 31.3 INVVPID).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InvvpidCounts {
    /// Individual-address (type 0).
    pub individual: u64,
    /// Single-context (type 1).
    pub single: u64,
    /// All-context (type 2).
    pub all: u64,
    /// Single-context retaining globals (type 3).
    pub single_retaining_globals: u64,
}

/// The counters of a [`Vcpu`](super::Vcpu).
///
/// Every L2 exit whose handling returned a [`Step`](super::Step) is either
/// `reflected` or `handled_in_l0`, so `nested_exits == reflected +
/// handled_in_l0 + vmx_aborts` unless a step failed with an error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counters {
    /// Exits from L1 (every `run(L1)` that returned an exit).
    pub l1_exits: u64,
    /// VMX instructions L1 executed (exit reasons 18-27, 50, 53).
    pub vmx_instructions: u64,
    /// Exceptions injected into L1 (VMX instruction faults, #GP on MSRs).
    pub l1_faults_injected: u64,
    /// Nested VM entries: VMLAUNCH/VMRESUME that entered L2.
    pub nested_entries: u64,
    /// VMLAUNCH/VMRESUME that failed the guest-state checks on VMCS12 and
    /// ended in a VM-entry-failure exit to L1 (SDM 27.8).
    pub entry_failures: u64,
    /// VMLAUNCH/VMRESUME completed as VMfailValid(7) because no valid
    /// VMCS02 could be built.
    pub vmcs02_rejected: u64,
    /// VMCS02 fields written to the platform (only changed fields are).
    pub vmcs02_writes: u64,
    /// Exits from L2 (every `run(L2)` that returned an exit).
    pub nested_exits: u64,
    /// L2 exits delivered to L1 (EPT faults L1 must see included).
    pub reflected: u64,
    /// L2 exits L0 handled (EPT02 fills and MMIO included).
    pub handled_in_l0: u64,
    /// Exits to L1 that ended in a VMX abort (L1 shut down).
    pub vmx_aborts: u64,
    /// EPT02 violations that filled EPT02.
    pub ept02_fills: u64,
    /// EPT02 violations reflected to L1 (EPT12 does not allow the access).
    pub ept02_reflected: u64,
    /// EPT02 violations left to the embedder ([`Step::L2Mmio`](super::Step::L2Mmio)).
    pub ept02_emulated: u64,
    /// EPT02 roots cached now (from hv-mmu).
    pub roots_live: u64,
    /// INVEPTs issued to the platform.
    pub invept: InveptCounts,
    /// INVVPIDs issued to the platform.
    pub invvpid: InvvpidCounts,
}
