//! What hv-core needs from the engine that runs guest code: hardware VMX
//! (the standalone image), KVM (hv-host) or the software model (tests).
//!
//! The engine owns L1's vCPU (its VMCS01 or equivalent), L1's memory and
//! EPT01, one hardware VMCS02 for L2, and the shadow-table frames hv-mmu
//! builds EPT02 in. hv-core owns everything nested: VMCS12, the EPT02 roots
//! (through hv-mmu), the VPID02 map and the flush policy. The trait is
//! deliberately small: every method is something a processor does or holds.
//!
//! # The run protocol
//!
//! 1. [`Platform::run`] with [`Level::L1`] runs L1 from [`L1Parts::cpu`]
//!    until L1 exits, and leaves L1's state at the exit in `cpu` (RIP at the
//!    exiting instruction, as hardware reports it).
//! 2. hv-core emulates or handles the exit, changing `cpu` (RIP, RFLAGS,
//!    registers) and memory as needed; the next `run(L1)` resumes from the
//!    changed state.
//! 3. For a nested entry hv-core writes VMCS02 with
//!    [`Platform::write_vmcs02`] (guest state, merged controls, EPTP02 and
//!    VPID02 included), sets [`Platform::l2_gprs`], issues whatever INVEPT
//!    or INVVPID the flush policy requires, then calls `run(L2)`.
//! 4. After an L2 exit hv-core reads VMCS02's guest state with
//!    [`Platform::read_vmcs02`] and L2's registers with `l2_gprs`.

use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::checks::EntryContext;
use hv_arch_vmx::controls::{
    EntryControls, ExceptionBitmap, ExitControls, PinBasedControls, PrimaryProcControls,
    SecondaryProcControls,
};
use hv_arch_vmx::ept::Eptp;
use hv_arch_vmx::invalidation::{InveptType, InvvpidType};
use hv_arch_vmx::vmcs::{VmcsField, VmcsImage};
use hv_mmu::env::{Ept01, FrameAllocator, L1Memory};

use crate::reflect::{L1SystemRegisters, MsrAccess};
use crate::state::{Exit, Gprs, L1Access, L1Cpu};
use crate::vmx::Fault;

/// Which guest a [`Platform::run`] enters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// L1, the guest hypervisor, through the engine's VMCS01.
    L1,
    /// L2, L1's guest, through VMCS02.
    L2,
}

/// L1's side of the engine, borrowed all at once because emulating an
/// instruction or delivering an exit needs the CPU, memory, EPT01 and MSRs
/// together.
pub struct L1Parts<'a, P: Platform + ?Sized> {
    /// L1's vCPU: its state at the last L1 exit; changes take effect at
    /// the next `run(L1)`.
    pub cpu: &'a mut L1Cpu,
    /// L1's physical memory and paging.
    pub memory: &'a mut P::Memory,
    /// EPT01: L1 physical -> host physical.
    pub ept01: &'a P::Ept01,
    /// L1's MSRs as a VM exit to L1 reads and writes them.
    pub msrs: &'a mut P::Msrs,
}

impl<P: Platform + ?Sized> core::fmt::Debug for L1Parts<'_, P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("L1Parts")
            .field("cpu", &self.cpu)
            .finish_non_exhaustive()
    }
}

/// What L0 itself requires of every VMCS02 on this engine, merged with
/// what L1 asks for in VMCS12.
///
/// Control bits here are forced to 1 in VMCS02 (L0 needs those exits or
/// features for its own sake); the host-state fields are L0's host state
/// and replace VMCS12's (L2 exits go to L0, never directly to L1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L0Requirements {
    /// Pin-based controls L0 needs (for example external-interrupt exiting
    /// on hardware, so host interrupts reach L0).
    pub pin_based: PinBasedControls,
    /// Primary processor-based controls L0 needs.
    pub primary: PrimaryProcControls,
    /// Secondary controls L0 needs (EPT and VPID are added by hv-core).
    pub secondary: SecondaryProcControls,
    /// VM-exit controls L0 needs (for example host address-space size).
    pub exit: ExitControls,
    /// VM-entry controls L0 needs.
    pub entry: EntryControls,
    /// Exceptions L0 must intercept in L2 (for example #MC).
    pub exception_bitmap: ExceptionBitmap,
    /// VMCS02's host-state area: only host-state fields are read.
    pub host_state: VmcsImage,
    /// The processor context VMCS02 is checked in (MAXPHYADDR, L0's mode,
    /// VMCS02's own address for the link-pointer rule).
    pub entry_context: EntryContext,
}

/// The engine hv-core runs guests on. See the [module documentation](self)
/// for the protocol.
///
/// Every method that can fail returns [`Platform::Error`]: a failure of
/// the engine itself (an ioctl that failed, a hardware `VMfail` L0 did not
/// expect), never a consequence of guest input, which always arrives as an
/// [`Exit`].
pub trait Platform {
    /// A failure of the engine.
    type Error: core::error::Error + 'static;
    /// L1's physical memory, for VMX emulation (`L1Access`) and for hv-mmu's
    /// EPT12 walks (`L1Memory`).
    type Memory: L1Access + L1Memory;
    /// L0's EPT01.
    type Ept01: Ept01;
    /// L1's MSRs, as VM exits to L1 load and store them.
    type Msrs: MsrAccess;
    /// The frames hv-mmu builds EPT02 in. The engine must be able to point
    /// the hardware at them (real host memory, or the model's frame pool).
    type Frames: FrameAllocator;

    /// The engine's real VMX capabilities: what every VMCS02 is checked
    /// against, and what the capabilities advertised to L1 derive from.
    fn capabilities(&self) -> &VmxCapabilities;

    /// What L0 requires of every VMCS02 on this engine.
    fn l0_requirements(&self) -> &L0Requirements;

    /// EPTP01: VMCS02 uses it when VMCS12 does not enable EPT (L2's
    /// guest-physical addresses are then L1's).
    fn eptp01(&self) -> Eptp;

    /// L1's vCPU, memory, EPT01 and MSRs.
    fn l1(&mut self) -> L1Parts<'_, Self>;

    /// Applies the L1 state a VM exit to L1 loads that [`L1Cpu`] has no
    /// place for (TR, LDTR, GDTR, IDTR, DR7; SDM 28.5.1-28.5.2).
    ///
    /// # Errors
    ///
    /// An engine failure.
    fn set_l1_system_registers(&mut self, registers: &L1SystemRegisters)
    -> Result<(), Self::Error>;

    /// Makes the next `run(L1)` deliver `fault` to L1 (vector, error code,
    /// and CR2 for a page fault) before L1 executes anything.
    ///
    /// # Errors
    ///
    /// An engine failure.
    fn inject_into_l1(&mut self, fault: Fault) -> Result<(), Self::Error>;

    /// Writes `value` into `field` of VMCS02. Values are full width (the
    /// engine stores what the field's width keeps).
    ///
    /// # Errors
    ///
    /// An engine failure (on hardware, a VMWRITE that failed).
    fn write_vmcs02(&mut self, field: VmcsField, value: u64) -> Result<(), Self::Error>;

    /// Reads `field` of VMCS02 as the last L2 exit left it.
    ///
    /// # Errors
    ///
    /// An engine failure (on hardware, a VMREAD that failed).
    fn read_vmcs02(&mut self, field: VmcsField) -> Result<u64, Self::Error>;

    /// L2's general-purpose registers: as the last L2 exit left them;
    /// changes take effect at the next `run(L2)`. Index 4 (RSP) is ignored:
    /// RSP is `GUEST_RSP` in VMCS02.
    fn l2_gprs(&mut self) -> &mut Gprs;

    /// INVEPT of type `kind` on the engine, for `eptp02` (single-context)
    /// or every EPTP (all-context). SDM 31.3 INVEPT.
    ///
    /// # Errors
    ///
    /// An engine failure.
    fn invept(&mut self, kind: InveptType, eptp02: Eptp) -> Result<(), Self::Error>;

    /// INVVPID of type `kind` on the engine, for `vpid02` (and
    /// `linear_address` for individual-address). SDM 31.3 INVVPID.
    ///
    /// # Errors
    ///
    /// An engine failure.
    fn invvpid(
        &mut self,
        kind: InvvpidType,
        vpid02: u16,
        linear_address: u64,
    ) -> Result<(), Self::Error>;

    /// Runs `level` until its next VM exit and reports the exit.
    ///
    /// # Errors
    ///
    /// An engine failure, including "the entry failed" on hardware (the
    /// `VMfail` of VMLAUNCH/VMRESUME: hv-core never asks for an entry that
    /// fails the entry checks, so that is an engine bug).
    fn run(&mut self, level: Level) -> Result<Exit, Self::Error>;
}
