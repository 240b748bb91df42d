//! VMCS01: how L0 runs L1 (SDM 25), and what L0 requires of every VMCS02.
//!
//! L1 starts where a BIOS loader would leave it: `entry32` in 32-bit
//! protected mode with paging off (unrestricted guest, SDM 27.3.1.1), so
//! the image boots as L1 through its own 32-to-64-bit path. L1 exits to L0
//! for CPUID (always), HLT, every I/O instruction, MSRs other than EFER and
//! the FS/GS bases (the MSR bitmap), writes of CR0.NE/CR4.VMXE (owned by
//! L0 through the guest/host masks), VMX instructions (always), EPT
//! violations outside its RAM and external interrupts.

use hv_arch_vmx::capabilities::{AllowedSettings, ControlAdjustError, VmxCapabilities};
use hv_arch_vmx::checks::EntryContext;
use hv_arch_vmx::controls::{
    ControlWord, EntryControls, ExceptionBitmap, ExceptionVector, ExitControls, PinBasedControls,
    PrimaryProcControls, SecondaryProcControls,
};
use hv_arch_vmx::ept::Eptp;
use hv_arch_vmx::instructions::VmFail;
use hv_arch_vmx::vmcs::VmcsField;
use hv_core::platform::L0Requirements;
use hv_core::state::{L1Cpu, Segment};

use super::platform::OwnedBits;
use crate::vmx::fields::write;
use crate::vmx::host::{host_state_image, write_host_state};

/// VPID of L1 (VPID02s start above it).
pub(crate) const VPID01: u16 = 1;

/// Why VMCS01 could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Vmcs01Error {
    /// The processor lacks a control L0 needs.
    Control(ControlAdjustError),
    /// A VMWRITE failed.
    Write(VmcsField, VmFail),
    /// A VMWRITE of the host-state area failed.
    HostState(VmFail),
}

impl core::fmt::Display for Vmcs01Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Control(error) => write!(f, "VMCS01 controls: {error}"),
            Self::Write(field, failure) => write!(f, "VMWRITE {field:?}: {failure}"),
            Self::HostState(failure) => write!(f, "VMWRITE host state: {failure}"),
        }
    }
}

fn adjusted<W: ControlWord>(allowed: AllowedSettings, wanted: W) -> Result<u64, Vmcs01Error> {
    allowed
        .adjust(W::KIND, wanted.to_raw())
        .map_err(Vmcs01Error::Control)
}

/// The CR0/CR4 bits L0 forces for L1: the fixed-1 bits, except PE and PG,
/// which unrestricted guest leaves to L1 (SDM 27.3.1.1).
pub(crate) fn owned_bits(caps: &VmxCapabilities) -> OwnedBits {
    const PE: u64 = 1;
    const PG: u64 = 1 << 31;
    OwnedBits {
        cr0: caps.cr0_fixed.must_be_one() & !(PE | PG),
        cr4: caps.cr4_fixed.must_be_one(),
    }
}

/// L1 at `entry32`: 32-bit protected mode, flat segments, paging off,
/// EAX/EBX as the BIOS loader sets them.
pub(crate) fn l1_reset_state(entry32: u64, magic: u32, info: u64) -> L1Cpu {
    // Access rights (SDM 25.4.1): code 0xC09B (execute/read, accessed,
    // S, P, D/B, G), data 0xC093.
    let code = Segment {
        selector: 0x08,
        base: 0,
        limit: 0xffff_ffff,
        access_rights: 0xc09b,
    };
    let data = Segment {
        selector: 0x10,
        base: 0,
        limit: 0xffff_ffff,
        access_rights: 0xc093,
    };
    let mut cpu = L1Cpu {
        rip: entry32,
        rflags: 2,
        // PE | ET; NE is L0's (forced, shadowed as 1 too).
        cr0: 0x11 | (1 << 5),
        cr3: 0,
        cr4: 0,
        efer: 0,
        cs: code,
        ss: data,
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ..L1Cpu::default()
    };
    cpu.gprs.0[0] = u64::from(magic);
    cpu.gprs.0[3] = info;
    // A small stack below the loader; entry32 sets its own before use.
    cpu.gprs.0[4] = 0x7000;
    cpu
}

/// Builds the MSR bitmap (SDM 25.6.9): every MSR exits except reads and
/// writes of EFER, FS base and GS base, which VMCS01 holds.
pub(crate) fn fill_msr_bitmap(bitmap: &mut [u8; 4096]) {
    bitmap.fill(0xff);
    // High MSRs (C0000000H-C0001FFFH): read bitmap at 1024, write at 3072.
    for msr in [0xC000_0080u32, 0xC000_0100, 0xC000_0101] {
        let bit = (msr - 0xC000_0000) as usize;
        for base in [1024, 3072] {
            bitmap[base + bit / 8] &= !(1 << (bit % 8));
        }
    }
}

/// Addresses VMCS01 points at.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vmcs01Addresses {
    /// EPTP01.
    pub(crate) eptp: Eptp,
    /// The MSR bitmap frame.
    pub(crate) msr_bitmap: u64,
}

/// Writes VMCS01's controls, host state and the L1 fields that stay
/// constant (the rest comes from [`L1Cpu`] at each entry).
///
/// # Safety
///
/// VMX root operation with VMCS01 current; the addresses name L0 frames
/// built for this use.
pub(crate) unsafe fn build(
    caps: &VmxCapabilities,
    addresses: Vmcs01Addresses,
) -> Result<Option<u32>, Vmcs01Error> {
    // The VMX-preemption timer is L0's watchdog over L1 (an L1 that loops
    // without exiting would otherwise hold the CPU forever, with the PICs
    // masked): every L1 entry loads `WATCHDOG_TICKS` (SDM 26.5.1).
    let watchdog = caps.pin_based.allows_one(
        PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER
            .bits()
            .trailing_zeros(),
    );
    let mut wanted_pin = PinBasedControls::EXTERNAL_INTERRUPT_EXITING;
    wanted_pin.set(PinBasedControls::ACTIVATE_VMX_PREEMPTION_TIMER, watchdog);
    let pin = adjusted(caps.pin_based, wanted_pin)?;
    // MWAIT and MONITOR exit (and raise #UD in L1): L0 offers no monitor,
    // and MWAIT could otherwise sleep without an exit.
    let primary = adjusted(
        caps.primary_proc,
        PrimaryProcControls::HLT_EXITING
            | PrimaryProcControls::UNCONDITIONAL_IO_EXITING
            | PrimaryProcControls::USE_MSR_BITMAPS
            | PrimaryProcControls::MWAIT_EXITING
            | PrimaryProcControls::MONITOR_EXITING
            | PrimaryProcControls::ACTIVATE_SECONDARY_CONTROLS,
    )?;
    let secondary = adjusted(
        caps.secondary_proc,
        SecondaryProcControls::ENABLE_EPT
            | SecondaryProcControls::ENABLE_VPID
            | SecondaryProcControls::UNRESTRICTED_GUEST,
    )?;
    let exit = adjusted(
        caps.primary_exit,
        ExitControls::HOST_ADDRESS_SPACE_SIZE
            | ExitControls::SAVE_IA32_EFER
            | ExitControls::LOAD_IA32_EFER
            | ExitControls::LOAD_IA32_PAT,
    )?;
    let entry = adjusted(
        caps.entry,
        EntryControls::LOAD_IA32_EFER | EntryControls::LOAD_IA32_PAT,
    )?;
    let owned = owned_bits(caps);
    let fields: [(VmcsField, u64); 26] = [
        (VmcsField::PinBasedControls, pin),
        (VmcsField::PrimaryProcBasedControls, primary),
        (VmcsField::SecondaryProcBasedControls, secondary),
        (VmcsField::PrimaryVmExitControls, exit),
        (VmcsField::VmEntryControls, entry),
        (
            VmcsField::ExceptionBitmap,
            u64::from(
                ExceptionBitmap::EMPTY
                    .with(ExceptionVector::MachineCheck)
                    .raw(),
            ),
        ),
        (VmcsField::Cr0GuestHostMask, owned.cr0),
        (VmcsField::Cr4GuestHostMask, owned.cr4),
        (VmcsField::Cr3TargetCount, 0),
        (VmcsField::MsrBitmap, addresses.msr_bitmap),
        (VmcsField::EptPointer, addresses.eptp.raw()),
        (VmcsField::VirtualProcessorId, u64::from(VPID01)),
        (VmcsField::VmcsLinkPointer, u64::MAX),
        (VmcsField::VmExitMsrStoreCount, 0),
        (VmcsField::VmExitMsrLoadCount, 0),
        (VmcsField::VmEntryMsrLoadCount, 0),
        (VmcsField::VmEntryInterruptionInfo, 0),
        // TR: busy 32-bit TSS at 0 (usable, as VM entry requires, SDM
        // 26.3.1.2); L1 loads its own before it needs one.
        (VmcsField::GuestTrSelector, 0),
        (VmcsField::GuestTrLimit, 0xffff),
        (VmcsField::GuestTrAccessRights, 0x8b),
        (VmcsField::GuestLdtrAccessRights, 1 << 16),
        (VmcsField::GuestGdtrLimit, 0xffff),
        (VmcsField::GuestIdtrLimit, 0x3ff),
        (VmcsField::GuestDr7, 0x400),
        (VmcsField::GuestActivityState, 0),
        (VmcsField::GuestInterruptibilityState, 0),
    ];
    for (field, value) in fields {
        // SAFETY: the caller guarantees VMX root operation with VMCS01
        // current; nothing runs until the first entry.
        unsafe { write(field, value) }.map_err(|failure| Vmcs01Error::Write(field, failure))?;
    }
    // SAFETY: as above.
    unsafe { write_host_state() }.map_err(Vmcs01Error::HostState)?;
    Ok(watchdog.then_some(WATCHDOG_TICKS))
}

/// Preemption-timer ticks L1 may run without a VM exit before L0 counts
/// one watchdog expiry (2^28 TSC ticks >> the timer's TSC shift; on Bochs,
/// shift 0, about 5 s of emulated time).
pub(crate) const WATCHDOG_TICKS: u32 = 1 << 28;

/// What L0 requires of every VMCS02: external interrupts and #MC exit to
/// L0, the host is 64-bit and reloads its EFER and PAT, host state as
/// VMCS01's.
pub(crate) fn l0_requirements(physical_address_width: u8, vmcs02: u64) -> L0Requirements {
    L0Requirements {
        pin_based: PinBasedControls::EXTERNAL_INTERRUPT_EXITING,
        primary: PrimaryProcControls::empty(),
        secondary: SecondaryProcControls::empty(),
        // L0 reloads its own EFER and PAT at every L2 exit (L1 may let L2
        // change PAT), and VMCS02 saves L2's PAT for hv-core (SDM 28.3.1).
        exit: ExitControls::HOST_ADDRESS_SPACE_SIZE
            | ExitControls::LOAD_IA32_EFER
            | ExitControls::SAVE_IA32_PAT
            | ExitControls::LOAD_IA32_PAT,
        entry: EntryControls::empty(),
        exception_bitmap: ExceptionBitmap::EMPTY.with(ExceptionVector::MachineCheck),
        host_state: host_state_image(),
        entry_context: EntryContext::new(physical_address_width, vmcs02),
    }
}
