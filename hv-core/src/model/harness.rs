//! [`Harness`]: a [`Vcpu`] on a [`Model`], with the embedder's duties done
//! the way a processor would: publishing EPT02 writes before every step,
//! completing L1 exits hv-core leaves to the embedder (RIP past CPUID or
//! HLT), completing L2 exits L0 keeps (`GUEST_RIP` past the instruction)
//! and L0-emulated accesses.

use hv_arch_vmx::msr::FeatureControl;
use hv_arch_vmx::vmcs::VmcsField;
use hv_mmu::addr::{L1Gfn, PageSize};
use hv_mmu::shadow::{MmuConfig, Policy};

use super::engine::{MAXPHYADDR, Model, ModelConfig, ModelError};
use crate::platform::Level;
use crate::vcpu::vpid::Vpid02Range;
use crate::vcpu::{Step, Vcpu, VcpuConfig, VcpuError};
use crate::vmx::NestedVmxConfig;

/// The VPID02s the harness gives hv-core: 1 (L2s without VPID) to 255.
const VPID02_LAST: u16 = 255;

/// Why a step failed (an empty action queue is
/// `VcpuError::Platform(ModelError::QueueEmpty(level))`).
pub type HarnessError = VcpuError<ModelError>;

/// Why [`Harness::run_until_idle`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Idle {
    /// `level` runs next and has no action queued.
    NeedsActions(Level),
    /// L1's vCPU shut down (VMX abort).
    Shutdown,
    /// The step budget ran out.
    StepLimit,
}

/// A vCPU on the model. See the [module documentation](self).
#[derive(Debug)]
pub struct Harness {
    vcpu: Vcpu<Model>,
}

impl Harness {
    /// A vCPU with `policy` on a model with `config`: L1 in 64-bit mode,
    /// `IA32_FEATURE_CONTROL` locked with VMX outside SMX enabled.
    pub fn new(policy: Policy, config: ModelConfig) -> Self {
        let (model, frames) = Model::new(config);
        let mmu = MmuConfig::new(policy, model.walk_context());
        let Ok(vpid02) = Vpid02Range::new(1, VPID02_LAST) else {
            unreachable!("1..=255 is a valid VPID02 range")
        };
        let config = VcpuConfig {
            nested: NestedVmxConfig::new(
                FeatureControl::LOCK | FeatureControl::VMX_OUTSIDE_SMX,
                MAXPHYADDR,
            ),
            mmu,
            vpid02,
        };
        Self {
            vcpu: Vcpu::new(model, frames, config),
        }
    }

    /// The vCPU.
    pub const fn vcpu(&self) -> &Vcpu<Model> {
        &self.vcpu
    }

    /// The vCPU, mutably.
    pub const fn vcpu_mut(&mut self) -> &mut Vcpu<Model> {
        &mut self.vcpu
    }

    /// The model.
    pub const fn model(&self) -> &Model {
        self.vcpu.platform()
    }

    /// The model, mutably (to queue actions).
    pub const fn model_mut(&mut self) -> &mut Model {
        self.vcpu.platform_mut()
    }

    /// L0 moves L1 page `gfn` to host page `host_page` and tells hv-core.
    pub fn ept01_remap(&mut self, gfn: u64, host_page: u64) {
        self.model_mut().ept01_remap(gfn, host_page);
        self.vcpu.ept01_changed(L1Gfn::new(gfn), PageSize::Size4K);
    }

    /// One step: publishes EPT02, steps the vCPU and does the embedder's
    /// part of the result.
    ///
    /// # Errors
    ///
    /// What [`Vcpu::step`] returns (an empty action queue is
    /// `VcpuError::Platform(ModelError::QueueEmpty(level))`).
    pub fn step(&mut self) -> Result<Step, HarnessError> {
        self.vcpu.mmu().frames().publish();
        let step = self.vcpu.step()?;
        match step {
            Step::L1Exit(exit) => {
                // CPUID, HLT: the embedder completes them (RIP past them).
                let cpu = self.vcpu.l1_cpu();
                cpu.rip = cpu.rip.wrapping_add(u64::from(exit.instruction_length));
            }
            Step::L2Exit { exit, .. } => {
                let rip = self.vcpu.read_vmcs02(VmcsField::GuestRip)?;
                let next = rip.wrapping_add(u64::from(exit.instruction_length));
                self.vcpu.write_vmcs02(VmcsField::GuestRip, next)?;
            }
            Step::L2Mmio { .. } => {
                // L0 emulates the access: L2 goes on with its next action.
                self.model_mut().complete_l2_access();
            }
            _ => {}
        }
        Ok(step)
    }

    /// Steps until the level that runs next has no action queued, L1 shuts
    /// down, or `max_steps` steps were taken.
    ///
    /// # Errors
    ///
    /// Any other step failure.
    pub fn run_until_idle(&mut self, max_steps: usize) -> Result<Idle, HarnessError> {
        for _ in 0..max_steps {
            match self.step() {
                Ok(Step::L1Shutdown(_)) | Err(VcpuError::L1ShutDown) => return Ok(Idle::Shutdown),
                Ok(_) => {}
                Err(VcpuError::Platform(ModelError::QueueEmpty(level))) => {
                    return Ok(Idle::NeedsActions(level));
                }
                Err(error) => return Err(error),
            }
        }
        Ok(Idle::StepLimit)
    }
}
