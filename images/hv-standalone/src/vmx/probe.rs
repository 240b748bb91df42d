//! The VMX probe, as L0: is VMX there, what do the capability MSRs say,
//! and do VMXON, VMCLEAR, VMPTRLD, VMPTRST and VMXOFF work on this CPU?
//!
//! Everything goes through hv-arch-vmx: the MSRs are parsed into
//! [`VmxCapabilities`], and the instructions are its wrappers.

use core::arch::asm;
use core::fmt;

use hv_arch_vmx::capabilities::{CapabilityReadError, RawVmxMsrs, VmxCapabilities};
use hv_arch_vmx::instructions::{VmFail, vmclear, vmptrld, vmptrst, vmxoff, vmxon};
use hv_arch_vmx::msr::{FeatureControl, IA32_FEATURE_CONTROL, VmxMsr};
use hv_freestanding::cpu::{read_cr0, read_cr4, write_cr4};

use crate::memory::{FrameAllocator, PhysFrame};

/// CPUID.1:ECX bit 5: VMX (SDM Vol. 3C 24.6).
const CPUID_1_ECX_VMX: u32 = 1 << 5;
/// CPUID.1:ECX bit 31: a hypervisor is present.
const CPUID_1_ECX_HYPERVISOR: u32 = 1 << 31;
/// CR4.VMXE (bit 13).
const CR4_VMXE: u64 = 1 << 13;

/// Reads an MSR.
///
/// # Safety
///
/// The MSR must exist (else #GP).
pub(crate) unsafe fn rdmsr(index: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; RDMSR has no other effect.
    unsafe {
        asm!("rdmsr", in("ecx") index, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags));
    }
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes an MSR.
///
/// # Safety
///
/// The MSR must exist and accept `value`; its effects are the caller's.
pub(crate) unsafe fn wrmsr(index: u32, value: u64) {
    // SAFETY: the caller accepts the MSR's effects.
    unsafe {
        asm!("wrmsr", in("ecx") index, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags));
    }
}

/// CPUID leaf `leaf`, subleaf 0: (EAX, EBX, ECX, EDX).
pub(crate) fn cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    let result = core::arch::x86_64::__cpuid_count(leaf, 0);
    (result.eax, result.ebx, result.ecx, result.edx)
}

/// Why the probe stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProbeError {
    /// CPUID.1:ECX.VMX is 0.
    NoVmx,
    /// A capability MSR the processor enumerates could not be read.
    Capabilities(CapabilityReadError),
    /// `IA32_FEATURE_CONTROL` is locked with VMXON outside SMX disabled
    /// (the firmware turned VMX off).
    DisabledByFirmware(u64),
    /// CR0 or CR4 violates the VMX fixed bits (`register`, `bit`).
    FixedBit(&'static str, u32),
    /// No frame for the VMXON region or the VMCS.
    OutOfMemory,
    /// A VMX instruction failed.
    Instruction(&'static str, VmFail),
    /// VMPTRST returned another pointer than the one VMPTRLD loaded.
    VmptrstMismatch { loaded: u64, stored: Option<u64> },
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoVmx => f.write_str("CPUID.1:ECX.VMX is 0: no VMX"),
            Self::Capabilities(error) => write!(f, "capability MSRs: {error}"),
            Self::DisabledByFirmware(raw) => {
                write!(
                    f,
                    "IA32_FEATURE_CONTROL {raw:#x} is locked without VMXON outside SMX"
                )
            }
            Self::FixedBit(register, bit) => {
                write!(f, "{register} bit {bit} violates the VMX fixed bits")
            }
            Self::OutOfMemory => f.write_str("no frame for the VMXON region or VMCS"),
            Self::Instruction(name, fail) => write!(f, "{name}: {fail}"),
            Self::VmptrstMismatch { loaded, stored } => {
                write!(f, "VMPTRST returned {stored:x?} after VMPTRLD {loaded:#x}")
            }
        }
    }
}

/// What the probe found.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProbeReport {
    /// The raw capability MSRs (0 for MSRs the CPU does not have).
    pub(crate) raw: RawVmxMsrs,
    /// The same, parsed.
    pub(crate) capabilities: VmxCapabilities,
    /// `IA32_FEATURE_CONTROL` before the probe touched it.
    pub(crate) feature_control_before: u64,
    /// Whether CPUID says a hypervisor is below us.
    pub(crate) under_hypervisor: bool,
}

/// Runs the probe: CPUID, capability MSRs, `IA32_FEATURE_CONTROL`, CR4.VMXE,
/// VMXON, VMCLEAR, VMPTRLD, VMPTRST, VMCLEAR, VMXOFF, CR4.VMXE off again.
pub(crate) fn probe(frames: &mut FrameAllocator) -> Result<ProbeReport, ProbeError> {
    let (_, _, ecx, _) = cpuid(1);
    let under_hypervisor = ecx & CPUID_1_ECX_HYPERVISOR != 0;
    if ecx & CPUID_1_ECX_VMX == 0 {
        return Err(ProbeError::NoVmx);
    }
    crate::println!("hv-standalone: vmx: CPUID.1:ECX.VMX = 1");

    // SAFETY: `read_from` only asks for MSRs the CPU enumerates (SDM
    // Appendix A), and VMX is present, so each one exists.
    let raw = RawVmxMsrs::read_from(|msr: VmxMsr| Some(unsafe { rdmsr(msr.index()) }))
        .map_err(ProbeError::Capabilities)?;
    let capabilities = VmxCapabilities::from_raw(&raw);

    // SDM 24.7: VMXON needs IA32_FEATURE_CONTROL locked with bit 2 set. The
    // BIOS of a real machine locks it; Bochs's leaves it to us.
    // SAFETY: the MSR exists on every VMX processor.
    let feature_control_before = unsafe { rdmsr(IA32_FEATURE_CONTROL) };
    let feature_control = FeatureControl::from_bits_retain(feature_control_before);
    if !feature_control.contains(FeatureControl::LOCK) {
        let wanted = feature_control | FeatureControl::LOCK | FeatureControl::VMX_OUTSIDE_SMX;
        // SAFETY: unlocked, so writable; we only enable VMX outside SMX.
        unsafe { wrmsr(IA32_FEATURE_CONTROL, wanted.bits()) };
    }
    // SAFETY: as above.
    let feature_control = FeatureControl::from_bits_retain(unsafe { rdmsr(IA32_FEATURE_CONTROL) });
    if !feature_control.allows_vmxon_outside_smx() {
        return Err(ProbeError::DisabledByFirmware(feature_control.bits()));
    }

    // SDM 24.8: CR0 and CR4 must honour the fixed bits in VMX operation.
    let cr4 = read_cr4() | CR4_VMXE;
    if let Some(violation) = capabilities.cr0_fixed.first_violation(read_cr0()) {
        return Err(ProbeError::FixedBit("CR0", violation.bit));
    }
    if let Some(violation) = capabilities.cr4_fixed.first_violation(cr4) {
        return Err(ProbeError::FixedBit("CR4", violation.bit));
    }
    // SAFETY: VMX is supported, so CR4.VMXE may be set.
    unsafe { write_cr4(cr4) };

    let result = vmx_round_trip(&capabilities, frames);
    // SAFETY: outside VMX operation now (or VMXON never succeeded).
    unsafe { write_cr4(read_cr4() & !CR4_VMXE) };
    result?;

    Ok(ProbeReport {
        raw,
        capabilities,
        feature_control_before,
        under_hypervisor,
    })
}

/// VMXON, VMCLEAR, VMPTRLD, VMPTRST, VMCLEAR, VMXOFF on fresh frames.
fn vmx_round_trip(
    capabilities: &VmxCapabilities,
    frames: &mut FrameAllocator,
) -> Result<(), ProbeError> {
    let revision = capabilities.basic.revision_id();
    let vmxon_frame = frames.allocate().ok_or(ProbeError::OutOfMemory)?;
    let vmcs_frame = frames.allocate().ok_or(ProbeError::OutOfMemory)?;
    write_revision(vmxon_frame, revision);
    write_revision(vmcs_frame, revision);

    // SAFETY: CPL 0, long mode, CR4.VMXE and the fixed bits hold,
    // IA32_FEATURE_CONTROL allows VMXON, the region is a zeroed frame we own
    // carrying the revision identifier (SDM 25.11.5).
    unsafe { vmxon(vmxon_frame.address()) }
        .map_err(|fail| ProbeError::Instruction("VMXON", fail))?;
    crate::println!(
        "hv-standalone: vmx: VMXON ok (region {:#x}, revision {revision:#x})",
        vmxon_frame.address()
    );

    let vmcs_result = vmcs_round_trip(vmcs_frame.address());

    // SAFETY: in VMX root operation; the VMCS was cleared (or never loaded).
    unsafe { vmxoff() }.map_err(|fail| ProbeError::Instruction("VMXOFF", fail))?;
    crate::println!("hv-standalone: vmx: VMXOFF ok");
    // SAFETY: the processor no longer uses either frame.
    unsafe {
        frames.free(vmcs_frame);
        frames.free(vmxon_frame);
    }
    vmcs_result
}

/// VMCLEAR, VMPTRLD, VMPTRST, VMCLEAR on the VMCS region at `vmcs`.
fn vmcs_round_trip(vmcs: u64) -> Result<(), ProbeError> {
    // SAFETY: VMX root operation; `vmcs` is a zeroed frame we own carrying
    // the revision identifier, and nothing else references it.
    unsafe { vmclear(vmcs) }.map_err(|fail| ProbeError::Instruction("VMCLEAR", fail))?;
    // SAFETY: as above; the region was just cleared.
    unsafe { vmptrld(vmcs) }.map_err(|fail| ProbeError::Instruction("VMPTRLD", fail))?;
    // SAFETY: VMX root operation; VMPTRST only stores the pointer.
    let stored = unsafe { vmptrst() };
    // SAFETY: as for the first VMCLEAR; it makes the VMCS inactive again
    // before VMXOFF.
    unsafe { vmclear(vmcs) }.map_err(|fail| ProbeError::Instruction("VMCLEAR", fail))?;
    if stored != Some(vmcs) {
        return Err(ProbeError::VmptrstMismatch {
            loaded: vmcs,
            stored,
        });
    }
    crate::println!("hv-standalone: vmx: VMCLEAR, VMPTRLD, VMPTRST ({vmcs:#x}), VMCLEAR ok");
    Ok(())
}

fn write_revision(frame: PhysFrame, revision: u32) {
    // SAFETY: the frame is ours and identity-mapped; bit 31 stays clear.
    unsafe { (frame.address() as *mut u32).write(revision & 0x7fff_ffff) };
}

impl ProbeReport {
    /// Human-readable capability summary.
    pub(crate) fn print_summary(&self) {
        let caps = &self.capabilities;
        let ept = caps.ept_vpid;
        let yes = |value: bool| if value { "yes" } else { "no" };
        crate::println!(
            "hv-standalone: vmx: revision {:#x}, VMCS {} bytes, true controls {}, under a hypervisor {}",
            caps.basic.revision_id(),
            caps.basic.vmcs_region_size(),
            yes(caps.has_true_controls()),
            yes(self.under_hypervisor)
        );
        crate::println!(
            "hv-standalone: vmx: EPT {} VPID {} unrestricted guest {} VMCS shadowing {} PML {} preemption timer {} VM functions {}",
            yes(caps.supports_ept()),
            yes(caps.supports_vpid()),
            yes(caps.supports_unrestricted_guest()),
            yes(caps.supports_vmcs_shadowing()),
            yes(caps.supports_pml()),
            yes(caps.supports_preemption_timer()),
            yes(caps.supports_vm_functions())
        );
        crate::println!(
            "hv-standalone: vmx: EPT 4-level {} 2M {} 1G {} A/D {} INVEPT single {} all {}; INVVPID individual {} single {} all {}",
            yes(ept.page_walk_length_4()),
            yes(ept.pages_2m()),
            yes(ept.pages_1g()),
            yes(ept.accessed_dirty()),
            yes(ept.invept_single_context()),
            yes(ept.invept_all_context()),
            yes(ept.invvpid_individual_address()),
            yes(ept.invvpid_single_context()),
            yes(ept.invvpid_all_context())
        );
        for msr in VmxMsr::ALL {
            if self.raw.msr_exists(msr) {
                crate::println!(
                    "hv-standalone: vmx:   {:#x} {:<28} {:016x}",
                    msr.index(),
                    msr.name(),
                    self.raw.get(msr)
                );
            }
        }
    }

    /// The `@@hv vmx {json}` record: one JSON object the launcher passes on.
    pub(crate) fn write_json(&self, out: &mut impl fmt::Write) -> fmt::Result {
        let caps = &self.capabilities;
        let ept = caps.ept_vpid;
        write!(
            out,
            "{{\"revision_id\":{},\"vmcs_size\":{},\"true_controls\":{},\"under_hypervisor\":{},\
             \"feature_control_before\":\"{:#x}\",\"vmxon\":true,\"vmcs_round_trip\":true,\
             \"ept\":{},\"vpid\":{},\"unrestricted_guest\":{},\"vmcs_shadowing\":{},\"pml\":{},\
             \"preemption_timer\":{},\"posted_interrupts\":{},\"vm_functions\":{},\
             \"ept_4_level\":{},\"ept_5_level\":{},\"ept_2m\":{},\"ept_1g\":{},\"ept_accessed_dirty\":{},\
             \"invept_single\":{},\"invept_all\":{},\"invvpid_individual\":{},\"invvpid_single\":{},\
             \"invvpid_all\":{},\"cr3_targets\":{},\"preemption_timer_shift\":{},\"msrs\":{{",
            caps.basic.revision_id(),
            caps.basic.vmcs_region_size(),
            caps.has_true_controls(),
            self.under_hypervisor,
            self.feature_control_before,
            caps.supports_ept(),
            caps.supports_vpid(),
            caps.supports_unrestricted_guest(),
            caps.supports_vmcs_shadowing(),
            caps.supports_pml(),
            caps.supports_preemption_timer(),
            caps.supports_posted_interrupts(),
            caps.supports_vm_functions(),
            ept.page_walk_length_4(),
            ept.page_walk_length_5(),
            ept.pages_2m(),
            ept.pages_1g(),
            ept.accessed_dirty(),
            ept.invept_single_context(),
            ept.invept_all_context(),
            ept.invvpid_individual_address(),
            ept.invvpid_single_context(),
            ept.invvpid_all_context(),
            caps.misc.cr3_target_count(),
            caps.misc.preemption_timer_tsc_shift(),
        )?;
        let mut first = true;
        for msr in VmxMsr::ALL {
            if self.raw.msr_exists(msr) {
                if !first {
                    out.write_char(',')?;
                }
                first = false;
                write!(out, "\"{}\":\"{:#018x}\"", msr.name(), self.raw.get(msr))?;
            }
        }
        out.write_str("}}")
    }
}
