//! The vCPU engine: one L1 vCPU with everything nested, driven one exit at
//! a time.
//!
//! [`Vcpu`] owns the [`Platform`], L1's nested VMX state ([`NestedVmx`]),
//! the EPT02 engine ([`Mmu`]), the [`Vpid02Map`] and the [`Counters`].
//! [`Vcpu::step`] runs the current [`Level`] until its next exit and handles
//! that exit as far as hv-core can; what is left for the embedder comes
//! back as a [`Step`].
//!
//! - L1 exits: VMX instructions are emulated ([`NestedVmx::emulate`]);
//!   INVEPT goes to hv-mmu (the flush it implies is issued by the next
//!   [`Mmu::switch_to`]), INVVPID through the VPID02 map; VMLAUNCH and
//!   VMRESUME build VMCS02 ([`prepare_vmcs02`]) and enter L2; RDMSR of the
//!   VMX capability MSRs and `IA32_FEATURE_CONTROL` is answered here.
//! - L2 exits: [`l1_wants_exit`] decides; exits L1 asked for are delivered
//!   to L1 ([`deliver_exit_to_l1`]); EPT violations go to hv-mmu, which
//!   fills EPT02, reflects EPT12's verdict, or leaves an MMIO access to the
//!   embedder; the rest are the embedder's ([`Step::L2Exit`]).
//! - Every entry into L2, nested entry or resume, goes through
//!   [`Mmu::switch_to`] when VMCS12 enables EPT, and INVEPT single-context
//!   is issued whenever it reports a flush (the hv-mmu flush protocol).
//!
//! # VMCS02 writes
//!
//! The platform's VMCS02 must start with every field 0. The vCPU remembers
//! what it wrote and writes only fields that changed; guest-state fields
//! are refreshed from VMCS02 after each exit to L1 (the processor changes
//! them while L2 runs). The embedder must change VMCS02 through
//! [`Vcpu::write_vmcs02`], never directly on the platform.
//!
//! # Limits
//!
//! - L1's DR7 is not part of [`L1Cpu`]: L2 inherits DR7 = 400H (its reset
//!   value) when VMCS12 does not load debug controls.
//! - L1's interruptibility state is not known: VMLAUNCH/VMRESUME are
//!   emulated as if L1 were not blocked by MOV SS.
//! - External-interrupt and NMI exits from L2 are the platform's (host
//!   events): they come back as [`Step::L2Exit`] with
//!   [`L0Reason::L0Feature`]; delivering virtual interrupts to L1 is not
//!   done here.
//! - When VMCS12 has no VPID, entries and exits must invalidate the
//!   mappings of VPID 0 (SDM 29.4.3.3): hv flushes L2's VPID02, but not
//!   L1's own mappings (VPID01), which needs a [`Platform`] operation to
//!   invalidate them.
//! - L0's TSC offset for L1 is not added to VMCS12's (VMCS02 runs with
//!   VMCS12's offset alone): [`Platform`] does not report one.
//! - `IA32_DEBUGCTL` from VMCS12 or L1 is not filtered by a mask of the
//!   bits L0 allows.
//! - VMCS12's VM-entry MSR-load area (SDM 27.4) is not processed.

extern crate alloc;

mod counters;
mod entry;
mod l2;
mod msr;
mod vmcs02_cache;
pub mod vpid;

pub use counters::{Counters, InveptCounts, InvvpidCounts};
pub use vpid::{Vpid02Entry, Vpid02Flush, Vpid02Map, Vpid02Range, Vpid02RangeError};

use hv_arch_vmx::ept::Eptp;
use hv_arch_vmx::exit::ExitReason;
use hv_arch_vmx::invalidation::{InveptType, InvvpidType};
use hv_arch_vmx::vmcs::VmcsField;
use hv_mmu::addr::{L1Gfn, L1Gpa, PageSize};
use hv_mmu::env::NotL1Memory;
use hv_mmu::{Mmu, MmuConfig, MmuError, Policy};

use crate::platform::{Level, Platform};
use crate::reflect::{L0Reason, MsrFault, ReflectError, VmxAbort};
use crate::state::{Exit, L1Cpu};
use crate::vmcs02::PrepareError;
use crate::vmx::{
    Emulation, ExitInformationError, Fault, NestedVmx, NestedVmxConfig, VirtualCapabilities,
    VmxInstruction, VmxStatus,
};

#[cfg(doc)]
use crate::reflect::{deliver_exit_to_l1, l1_wants_exit};
#[cfg(doc)]
use crate::vmcs02::prepare_vmcs02;

use vmcs02_cache::Vmcs02Cache;

/// How a [`Vcpu`] is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VcpuConfig {
    /// What L1's virtual processor looks like (feature control, MAXPHYADDR).
    pub nested: NestedVmxConfig,
    /// The EPT02 engine; its policy is also the VPID policy.
    pub mmu: MmuConfig,
    /// The VPIDs L0 gives L2s.
    pub vpid02: Vpid02Range,
}

/// What one [`Vcpu::step`] did. Each variant says what the embedder must do
/// before calling `step` again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// hv-core handled the exit completely (the variant says how). Nothing
    /// to do: call `step` again.
    Handled(Handled),
    /// L1 exited for something that is not VMX (CPUID, I/O, HLT, MSRs other
    /// than the VMX ones, ...). `platform().l1().cpu` holds L1's state at
    /// the exit (RIP at the instruction). The embedder emulates it on
    /// `platform_mut().l1()` (advancing RIP, or injecting a fault) and
    /// calls `step` again, which runs L1.
    L1Exit(Exit),
    /// L1 executed VMCALL at CPL 0 (in or out of VMX operation): a hypercall to
    /// hv. RIP is already past VMCALL; the embedder implements the ABI on
    /// L1's registers and calls `step` again.
    L1Hypercall,
    /// L2 took an exit L1 did not ask for. The level stays L2. The embedder
    /// does what the processor would have done for L2 without the exit
    /// (for example, emulates CPUID and advances `GUEST_RIP` with
    /// [`Vcpu::write_vmcs02`], or injects #UD for
    /// [`L0Reason::DisabledForL2`]) using [`Vcpu::read_vmcs02`],
    /// [`Vcpu::write_vmcs02`] and `platform_mut().l2_gprs()`, then calls
    /// `step` again, which resumes L2.
    ///
    /// If `exit.idt_vectoring_info` is valid, the exit interrupted the
    /// delivery of that event: unless the embedder injects something that
    /// replaces it, it must inject it again through VMCS02's VM-entry
    /// interruption information, exception error code and instruction
    /// length (SDM 27.6, 28.2.4; KVM `vmx_complete_interrupts`), or L2
    /// loses it.
    L2Exit {
        /// The exit as the platform reported it.
        exit: Exit,
        /// Why L1 does not get it.
        reason: L0Reason,
    },
    /// L2 accessed L1 memory that EPT01 does not map (or not for this
    /// access): an EPT violation that is L0's business, typically MMIO. The
    /// level stays L2; the embedder emulates the access at `l1_gpa` (and
    /// advances `GUEST_RIP`), then calls `step` again, which resumes L2.
    ///
    /// As for [`Step::L2Exit`], an event in `exit.idt_vectoring_info`
    /// must be injected again; when it is invalid and qualification bit
    /// 12 ("NMI unblocking due to IRET") is set, the embedder sets
    /// blocking by NMI in `GUEST_INTERRUPTIBILITY_INFO` before resuming
    /// (SDM 28.2.3).
    L2Mmio {
        /// The EPT-violation exit.
        exit: Exit,
        /// The L1 physical address of the access.
        l1_gpa: L1Gpa,
    },
    /// A VMX instruction's memory operand maps, through L1's paging, to an
    /// L1 physical address no memory backs: hv cannot complete it and
    /// changed nothing (KVM reports an emulation failure). The embedder
    /// decides (for example, injects #GP or stops L1); `step` again runs L1
    /// at the same instruction.
    OperandNotInL1Memory {
        /// The exit.
        exit: Exit,
        /// The address.
        error: NotL1Memory,
    },
    /// The platform reported a VMX-instruction exit with malformed exit
    /// information (an engine bug or fuzzed input). Nothing was changed;
    /// `step` again runs L1 at the same instruction.
    InvalidExitInformation {
        /// The exit.
        exit: Exit,
        /// What is wrong with it.
        error: ExitInformationError,
    },
    /// A VM exit to L1 ended in a VMX abort (SDM 28.7): the abort indicator
    /// was written to L1's VMCS region and L1's vCPU is shut down. `step`
    /// now fails with [`VcpuError::L1ShutDown`]; the embedder resets or
    /// stops the vCPU.
    L1Shutdown(VmxAbort),
}

/// How hv-core handled an exit by itself ([`Step::Handled`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// A VMX instruction completed with `status` (RFLAGS set, RIP
    /// advanced); for INVEPT/INVVPID the invalidation was done.
    Vmx {
        /// The instruction.
        instruction: VmxInstruction,
        /// How it completed.
        status: VmxStatus,
    },
    /// An exception was injected into L1 (a VMX instruction fault, or #GP
    /// for a VMX MSR access); RIP is unchanged.
    FaultInjected(Fault),
    /// RDMSR of a VMX capability MSR or `IA32_FEATURE_CONTROL` was
    /// answered: EDX:EAX = `value`, RIP advanced.
    MsrRead {
        /// The MSR.
        index: u32,
        /// The value returned.
        value: u64,
    },
    /// VMLAUNCH (`launch`) or VMRESUME entered L2: the level is now L2.
    NestedEntry {
        /// VMLAUNCH (true) or VMRESUME.
        launch: bool,
    },
    /// VMLAUNCH/VMRESUME failed the guest-state checks (SDM 27.8): L1 got a
    /// VM-entry-failure exit and runs at its host RIP.
    EntryFailure,
    /// No VMCS02 the real engine accepts could be built: VMLAUNCH/VMRESUME
    /// completed as VMfailValid(7) for L1 and L2 was not entered.
    Vmcs02Rejected(PrepareError),
    /// An L2 exit was delivered to L1: the level is now L1.
    Reflected(ExitReason),
    /// An EPT violation was resolved by filling EPT02; L2 resumes.
    Ept02Filled,
}

/// Why a step failed: the engine or hv-core's environment is broken, never
/// a consequence of what L1 or L2 did.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError<E: core::error::Error + 'static> {
    /// The platform failed.
    #[error("platform: {0}")]
    Platform(#[source] E),
    /// hv-mmu failed (out of shadow-table frames).
    #[error("EPT02 engine: {0}")]
    Mmu(MmuError),
    /// The platform reported an L2 exit no processor produces.
    #[error("invalid L2 exit: {0}")]
    InvalidL2Exit(ReflectError),
    /// An EPT violation from L2 whose qualification names no access (bits
    /// 2:0 are 0).
    #[error("EPT violation without access bits (qualification {qualification:#x})")]
    EptViolationWithoutAccess {
        /// The exit qualification.
        qualification: u64,
    },
    /// An EPT misconfiguration exit from L2: EPT02 (or EPT01) is L0's and
    /// never misconfigured, so this is an L0 bug.
    #[error("EPT misconfiguration in L0's tables at {gpa:#x}")]
    L0EptMisconfiguration {
        /// The guest-physical address.
        gpa: u64,
    },
    /// The platform refused an L1 MSR hv-core needs (`IA32_PAT` or
    /// `IA32_DEBUGCTL` for VMCS02, a host-state MSR on an exit to L1).
    #[error("L1 MSR: {0}")]
    L1Msr(MsrFault),
    /// L2 is running but L1 has no current VMCS (an internal inconsistency).
    #[error("L2 runs without a current VMCS12")]
    NoCurrentVmcs,
    /// L1's vCPU is shut down after a VMX abort.
    #[error("L1's vCPU is shut down")]
    L1ShutDown,
}

/// The L2 translation context of the last nested entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ActiveL2 {
    /// EPTP12 when VMCS12 enables EPT (hv-mmu builds EPT02), else `None`
    /// (L2 runs on EPTP01).
    eptp12: Option<Eptp>,
    /// The EPTP in VMCS02.
    eptp02: Eptp,
}

/// What the next resume of L2 (after an exit L0 handled) must do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct Resume {
    /// L2 resumes after an exit L0 handled: `switch_to` first.
    pending: bool,
    /// `flush-always`: a fill reported a pending flush for the resume.
    fill_flush: bool,
    /// `flush-always`: something other than a fill changed EPT02 since the
    /// nested entry (EPT01 change, L1 write): resume through `switch_to`.
    full_switch: bool,
}

/// One L1 vCPU and its nested state. See the [module documentation](self).
pub struct Vcpu<P: Platform> {
    platform: P,
    nested: NestedVmx,
    mmu: Mmu<P::Frames>,
    vpids: Vpid02Map,
    counters: Counters,
    level: Level,
    shut_down: bool,
    /// Set by an L2 entry, kept while L2 is the level.
    active: Option<ActiveL2>,
    /// What the next resume of L2 must do.
    resume: Resume,
    vmcs02: Vmcs02Cache,
}

impl<P: Platform> core::fmt::Debug for Vcpu<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Vcpu")
            .field("level", &self.level)
            .field("policy", &self.policy())
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

impl<P: Platform> Vcpu<P> {
    /// A vCPU for L1 on `platform`, outside VMX operation, advertising
    /// [`VirtualCapabilities::derive`] of the platform's capabilities, with
    /// EPT02 tables in `frames`. The platform's VMCS02 must hold 0 in every
    /// field (see the [module documentation](self)).
    pub fn new(platform: P, frames: P::Frames, config: VcpuConfig) -> Self {
        let capabilities = VirtualCapabilities::derive(platform.capabilities());
        Self {
            platform,
            nested: NestedVmx::new(capabilities, config.nested),
            mmu: Mmu::new(config.mmu, frames),
            vpids: Vpid02Map::new(config.mmu.policy, config.vpid02),
            counters: Counters::default(),
            level: Level::L1,
            shut_down: false,
            active: None,
            resume: Resume::default(),
            vmcs02: Vmcs02Cache::new(),
        }
    }

    /// The level the next [`Self::step`] runs.
    pub const fn level(&self) -> Level {
        self.level
    }

    /// Whether L1 is shut down after a VMX abort.
    pub const fn is_shut_down(&self) -> bool {
        self.shut_down
    }

    /// The counters, with `roots_live` from hv-mmu.
    pub fn counters(&self) -> Counters {
        Counters {
            roots_live: self.mmu.stats().roots_live as u64,
            ..self.counters
        }
    }

    /// The flush policy (EPT02 roots and VPIDs).
    pub fn policy(&self) -> Policy {
        self.mmu.config().policy
    }

    /// The platform.
    pub const fn platform(&self) -> &P {
        &self.platform
    }

    /// The platform, for the embedder's handling of [`Step`]s. VMCS02 must
    /// be changed through [`Self::write_vmcs02`] instead.
    pub const fn platform_mut(&mut self) -> &mut P {
        &mut self.platform
    }

    /// The EPT02 engine (its statistics, roots and frames).
    pub const fn mmu(&self) -> &Mmu<P::Frames> {
        &self.mmu
    }

    /// L1's nested VMX state.
    pub const fn nested(&self) -> &NestedVmx {
        &self.nested
    }

    /// The VPID02 map.
    pub const fn vpids(&self) -> &Vpid02Map {
        &self.vpids
    }

    /// The L1 CPU state (shortcut for `platform_mut().l1().cpu`).
    pub fn l1_cpu(&mut self) -> &mut L1Cpu {
        self.platform.l1().cpu
    }

    /// Reads `field` of VMCS02 from the platform.
    ///
    /// # Errors
    ///
    /// The platform's failure.
    pub fn read_vmcs02(&mut self, field: VmcsField) -> Result<u64, VcpuError<P::Error>> {
        self.platform
            .read_vmcs02(field)
            .map_err(VcpuError::Platform)
    }

    /// Writes `field` of VMCS02 on the platform and remembers it, for the
    /// embedder's handling of an L2 exit (advancing `GUEST_RIP`, injecting
    /// an event).
    ///
    /// # Errors
    ///
    /// The platform's failure.
    pub fn write_vmcs02(
        &mut self,
        field: VmcsField,
        value: u64,
    ) -> Result<(), VcpuError<P::Error>> {
        self.platform
            .write_vmcs02(field, value)
            .map_err(VcpuError::Platform)?;
        self.vmcs02.wrote(field, value);
        self.counters.vmcs02_writes += 1;
        Ok(())
    }

    /// L0 changed EPT01's translation of the `size` page containing `gfn`:
    /// EPT02 leaves built from it are zapped and flushed before L2 next
    /// runs (hv-mmu [`Mmu::ept01_changed`]). L0 flushes EPTP01 itself.
    pub fn ept01_changed(&mut self, gfn: L1Gfn, size: PageSize) {
        self.mmu.ept01_changed(gfn, size);
        // Found by the vmx_ops fuzzer: L2 may be about to run without a
        // resume (right after a nested entry); it must go through
        // `switch_to`, which reports the flush this change needs.
        self.resume.pending = true;
        self.resume.full_switch = true;
    }

    /// L1 wrote page `gfn`, for platforms that write-protect EPT12 pages
    /// (hv-mmu [`Mmu::l1_wrote`]).
    pub fn l1_wrote(&mut self, gfn: L1Gfn) {
        let parts = self.platform.l1();
        self.mmu.l1_wrote(&*parts.memory, gfn);
        self.resume.pending = true;
        self.resume.full_switch = true;
    }

    /// Runs the current level until its next exit and handles the exit.
    ///
    /// # Errors
    ///
    /// [`VcpuError`]: the platform or hv-mmu failed, the platform reported
    /// an impossible exit, or L1 is shut down. Guest behaviour never causes
    /// an error.
    pub fn step(&mut self) -> Result<Step, VcpuError<P::Error>> {
        if self.shut_down {
            return Err(VcpuError::L1ShutDown);
        }
        match self.level {
            Level::L1 => {
                let exit = self.platform.run(Level::L1).map_err(VcpuError::Platform)?;
                self.counters.l1_exits += 1;
                self.handle_l1_exit(&exit)
            }
            Level::L2 => {
                if self.resume.pending {
                    self.resume_l2()?;
                }
                let exit = self.platform.run(Level::L2).map_err(VcpuError::Platform)?;
                self.counters.nested_exits += 1;
                self.vmcs02.l2_exited();
                self.resume.pending = true;
                self.handle_l2_exit(&exit)
            }
        }
    }

    /// Handles an exit of L1.
    fn handle_l1_exit(&mut self, exit: &Exit) -> Result<Step, VcpuError<P::Error>> {
        let reason = exit.reason.reason();
        if let Some(step) = self.handle_vmx_msr(exit)? {
            return Ok(step);
        }
        let Some(instruction) = VmxInstruction::from_exit_reason(reason) else {
            return Ok(Step::L1Exit(*exit));
        };
        self.counters.vmx_instructions += 1;
        let parts = self.platform.l1();
        let emulation = self.nested.emulate(parts.cpu, parts.memory, exit);
        let completed = |status| {
            Ok(Step::Handled(Handled::Vmx {
                instruction,
                status,
            }))
        };
        match emulation {
            Emulation::Completed(status) => completed(status),
            Emulation::Fault(fault) => self.inject(fault),
            Emulation::Invept { kind, eptp } => {
                let parts = self.platform.l1();
                match kind {
                    InveptType::SingleContext => {
                        self.mmu.invept_single_context(&*parts.memory, eptp);
                    }
                    InveptType::Global => self.mmu.invept_global(&*parts.memory),
                }
                completed(VmxStatus::Succeed)
            }
            Emulation::Invvpid {
                kind,
                vpid,
                linear_address,
            } => {
                self.mmu.invvpid();
                if let Some(flush) = self.vpids.invvpid(kind, vpid, linear_address) {
                    self.invvpid(flush)?;
                }
                completed(VmxStatus::Succeed)
            }
            Emulation::VmEntry { launch } => self.nested_entry(exit, launch),
            Emulation::EntryFailure { check, .. } => self.entry_failure(check),
            Emulation::Vmcall => Ok(Step::L1Hypercall),
            Emulation::OperandNotInL1Memory(error) => {
                Ok(Step::OperandNotInL1Memory { exit: *exit, error })
            }
            Emulation::InvalidExitInformation(error) => {
                Ok(Step::InvalidExitInformation { exit: *exit, error })
            }
            Emulation::NotVmxInstruction(_) => Ok(Step::L1Exit(*exit)),
        }
    }

    /// Injects `fault` into L1.
    fn inject(&mut self, fault: Fault) -> Result<Step, VcpuError<P::Error>> {
        self.platform
            .inject_into_l1(fault)
            .map_err(VcpuError::Platform)?;
        self.counters.l1_faults_injected += 1;
        Ok(Step::Handled(Handled::FaultInjected(fault)))
    }

    /// INVEPT on the platform, counted.
    fn invept(&mut self, kind: InveptType, eptp02: Eptp) -> Result<(), VcpuError<P::Error>> {
        self.platform
            .invept(kind, eptp02)
            .map_err(VcpuError::Platform)?;
        match kind {
            InveptType::SingleContext => self.counters.invept.single += 1,
            InveptType::Global => self.counters.invept.global += 1,
        }
        Ok(())
    }

    /// INVVPID on the platform, counted.
    fn invvpid(&mut self, flush: Vpid02Flush) -> Result<(), VcpuError<P::Error>> {
        self.platform
            .invvpid(flush.kind, flush.vpid02, flush.linear_address)
            .map_err(VcpuError::Platform)?;
        let counts = &mut self.counters.invvpid;
        match flush.kind {
            InvvpidType::IndividualAddress => counts.individual += 1,
            InvvpidType::SingleContext => counts.single += 1,
            InvvpidType::AllContext => counts.all += 1,
            InvvpidType::SingleContextRetainingGlobals => counts.single_retaining_globals += 1,
        }
        Ok(())
    }
}

/// Advances L1's RIP past an instruction of `length` bytes (wrapping at
/// 4 GiB outside 64-bit mode) and clears RFLAGS.RF, as completing any
/// instruction does (SDM Vol. 3A 18.3.1.1).
fn advance_rip(cpu: &mut L1Cpu, length: u32) {
    let next = cpu.rip.wrapping_add(u64::from(length));
    cpu.rip = if cpu.in_64bit_mode() {
        next
    } else {
        next & 0xffff_ffff
    };
    cpu.rflags &= !hv_arch_vmx::registers::Rflags::RF.bits();
}
