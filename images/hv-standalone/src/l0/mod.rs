//! L0 with nesting: this image boots itself as L1 under hv-core on the
//! real VMX, and L1 runs the L2 workloads with its own VMX instructions.
//!
//! - [`memory`]: L1's RAM, EPT01, L1 paging walks, the EPT02 frame pool.
//! - [`vmcs01`]: how L0 runs L1; what L0 requires of VMCS02.
//! - [`platform`]: hv-core's `Platform` on hardware.
//! - this module: setup, the `Vcpu::step` loop, and what hv-core leaves
//!   to the embedder: L1's CPUID, I/O, MSRs, CR writes, HLT, hypercalls.
//!
//! Nothing L1 or L2 does ends L0: a fault of L1 ends the nested run with a
//! typed [`L0Error`] that L0 reports before shutting down normally.

pub(crate) mod memory;
pub(crate) mod platform;
pub(crate) mod vmcs01;

use alloc::string::String;
use core::fmt;

use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::ept::EptWalkContext;
use hv_arch_vmx::ept::Eptp;
use hv_arch_vmx::exit::ExitReason;
use hv_arch_vmx::instruction_error::VmInstructionError;
use hv_arch_vmx::instructions::{self, VmFail};
use hv_arch_vmx::invalidation::{InveptDescriptor, InveptType, InvvpidDescriptor, InvvpidType};
use hv_arch_vmx::msr::FeatureControl;
use hv_arch_vmx::vmcs::VmcsField;
use hv_core::platform::Platform;
use hv_core::reflect::{L0Reason, VmxAbort};
use hv_core::state::Exit;
use hv_core::vcpu::{Counters, Step, Vcpu, VcpuConfig, VcpuError, Vpid02Range};
use hv_core::vmx::{ExitInformationError, Fault, NestedVmxConfig, VmxOperation, advance_rip};
use hv_freestanding::cpu::{read_cr4, write_cr4};
use hv_freestanding::port::outb;
use hv_mmu::MmuConfig;
use hv_mmu::addr::L1Gpa;

use crate::boot::{BIOS_BOOT_INFO_ADDRESS, BIOS_BOOT_MAGIC};
use crate::config::{IllegalCase, RunConfig, loader_region};
use crate::memory::{FrameAllocator, PhysFrame};
use crate::vmx::cpuid;
use memory::{Ept02Frames, HardwareEpt01, L1Ram};
use platform::{EngineError, HardwarePlatform, PlatformParts};

/// L1's RAM.
const L1_RAM_BYTES: u64 = 64 << 20;
/// Frames hv-mmu may hold for EPT02 tables.
const EPT02_POOL_FRAMES: usize = 1024;
/// VPID02s: 2 (above L1's VPID 1) and up.
const VPID02_FIRST: u16 = 2;
const VPID02_LAST: u16 = 255;
/// CPUID leaf 0x40000000 EBX for hv ("hv\0\0"); ECX = EDX = 0.
pub(crate) const HV_SIGNATURE: u32 = u32::from_le_bytes(*b"hv\0\0");
/// Hypercall numbers (RAX) L1 uses.
pub(crate) const HYPERCALL_STEADY: u64 = 1;
pub(crate) const HYPERCALL_REPORT: u64 = 2;
pub(crate) const HYPERCALL_ILLEGAL: u64 = 3;
/// Most VM exits of one nested run before L0 gives up on L1.
const STEP_LIMIT: u64 = 50_000_000;
/// Watchdog periods (`vmcs01::WATCHDOG_TICKS` each) L1 may run in a row
/// without any other exit.
const WATCHDOG_EXPIRIES: u32 = 8;

/// Why the nested run ended early. L0 itself is fine in every case.
#[derive(Debug)]
pub(crate) enum L0Error {
    /// Not enough memory for L1, EPT01 or the EPT02 pool.
    OutOfMemory(&'static str),
    /// A VMX instruction of L0's setup failed.
    Setup(&'static str, VmFail),
    /// VMCS01 could not be built.
    Vmcs01(vmcs01::Vmcs01Error),
    /// The image to load into L1 does not fit.
    Image,
    /// The processor lacks something L0 needs for L1.
    Unsupported(&'static str),
    /// hv-core or the engine failed.
    Vcpu(VcpuError<EngineError>),
    /// L1 (or one of its L2s) did something that ends the nested run.
    L1(L1Failure),
    /// L1 ran for `STEP_LIMIT` exits without finishing.
    Runaway,
    /// L1 ran `WATCHDOG_EXPIRIES` watchdog periods in a row without a
    /// single exit.
    Stuck {
        /// Where L1 was.
        rip: u64,
    },
}

/// What L1 or an L2 did that L0 does not emulate: the nested run ends,
/// L0 reports it and keeps running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum L1Failure {
    /// An L2 exit hv-core left to L0 that L0 has no emulation for.
    UnhandledL2Exit(ExitReason, L0Reason),
    /// L2 accessed L1 physical memory that neither L1 RAM nor a device
    /// backs (EPT12 maps it, EPT01 does not).
    L2Mmio(L1Gpa),
    /// A VMX exit to L0 reported malformed information.
    MalformedExit(ExitReason, ExitInformationError),
    /// A VM exit to L1 failed: VMX abort (SDM 28.7).
    VmxAbort(VmxAbort),
    /// L1 triple-faulted.
    TripleFault {
        /// L1's RIP.
        rip: u64,
    },
    /// L1 accessed L1 physical memory outside its RAM.
    OutsideRam {
        /// The address.
        gpa: u64,
        /// L1's RIP.
        rip: u64,
    },
    /// VM entry to L1 failed the guest-state checks (L0's bug).
    EntryFailure {
        /// The basic exit reason (33, 34 or 41).
        reason: ExitReason,
        /// The exit qualification.
        qualification: u64,
    },
}

impl fmt::Display for L1Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnhandledL2Exit(reason, why) => {
                write!(f, "L2 exit {reason:?} that L0 does not handle ({why:?})")
            }
            Self::L2Mmio(gpa) => write!(
                f,
                "L2 accessed L1 physical {gpa:?}, which no L1 RAM or device backs"
            ),
            Self::MalformedExit(reason, error) => {
                write!(f, "malformed exit information for {reason:?}: {error:?}")
            }
            Self::VmxAbort(abort) => write!(f, "VMX abort {abort:?}"),
            Self::TripleFault { rip } => write!(f, "triple fault at RIP {rip:#x}"),
            Self::OutsideRam { gpa, rip } => write!(
                f,
                "access to L1 physical {gpa:#x} outside its {} MiB of RAM at RIP {rip:#x}",
                L1_RAM_BYTES >> 20
            ),
            Self::EntryFailure {
                reason,
                qualification,
            } => write!(
                f,
                "VM entry to L1 failed: {reason:?}, qualification {qualification:#x}"
            ),
        }
    }
}

impl fmt::Display for L0Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfMemory(what) => write!(f, "out of memory for {what}"),
            Self::Setup(what, failure) => write!(f, "{what}: {failure}"),
            Self::Vmcs01(error) => write!(f, "{error}"),
            Self::Image => f.write_str("the image does not fit in L1's RAM"),
            Self::Unsupported(what) => write!(f, "the processor lacks {what}"),
            Self::Vcpu(error) => write!(f, "hv-core: {error}"),
            Self::L1(failure) => write!(f, "L1: {failure}"),
            Self::Runaway => write!(f, "L1 did not finish within {STEP_LIMIT} exits"),
            Self::Stuck { rip } => write!(
                f,
                "L1 ran {WATCHDOG_EXPIRIES} watchdog periods without an exit (RIP {rip:#x})"
            ),
        }
    }
}

/// What L1 reported through hypercalls.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct L1Report {
    pub(crate) l2_ok: bool,
    pub(crate) reports_checked: u64,
    pub(crate) slices_run: u64,
}

/// An illegal-case verdict L1 reported.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IllegalVerdict {
    pub(crate) case: Option<IllegalCase>,
    pub(crate) ok: bool,
    pub(crate) observed: u64,
    pub(crate) expected: u64,
}

/// The outcome of a nested run.
#[derive(Clone, Debug)]
pub(crate) struct NestedOutcome {
    pub(crate) counters: Counters,
    pub(crate) invept: u64,
    pub(crate) invvpid: u64,
    /// INVEPT/INVVPID counts when L1 said every L2 ran once.
    pub(crate) steady_mark: Option<(u64, u64)>,
    pub(crate) report: Option<L1Report>,
    pub(crate) illegal: Option<IllegalVerdict>,
    /// How L1 ended.
    pub(crate) ending: &'static str,
}

/// Runs L1 (this image) under hv-core until L1 shuts down.
pub(crate) fn run_nested(
    frames: &mut FrameAllocator,
    caps: &VmxCapabilities,
    config: RunConfig,
) -> Result<NestedOutcome, L0Error> {
    mask_legacy_pics();
    let maxphyaddr = (cpuid(0x8000_0008).0 & 0xff) as u8;
    let vmxon_region = frame_with_revision(frames, caps, "the VMXON region")?;
    // SDM 24.7-24.8: the probe set IA32_FEATURE_CONTROL; CR4.VMXE now.
    let ept = caps.ept_vpid;
    if !(caps.supports_unrestricted_guest()
        && ept.page_walk_length_4()
        && ept.memory_type_wb()
        && ept.pages_2m()
        && ept.invept()
        && caps.supports_vpid())
    {
        return Err(L0Error::Unsupported(
            "unrestricted guest, 4-level write-back EPT with 2-MiB pages, INVEPT and VPID",
        ));
    }
    // SAFETY: VMX is supported (the probe ran), so CR4.VMXE may be set.
    unsafe { write_cr4(read_cr4() | (1 << 13)) };
    // SAFETY: CPL 0, long mode, CR4.VMXE, fixed bits as the probe checked,
    // a fresh region with the revision identifier.
    if let Err(failure) = unsafe { instructions::vmxon(vmxon_region.address()) } {
        // SAFETY: VMXON failed: not in VMX operation, CR4.VMXE may go.
        unsafe { write_cr4(read_cr4() & !(1 << 13)) };
        return Err(L0Error::Setup("VMXON", failure));
    }
    let result = invalidate_everything()
        .and_then(|()| run_in_vmx_operation(frames, caps, config, maxphyaddr));
    // SAFETY: in VMX root operation; nothing runs on the VMCSs any more.
    if let Err(failure) = unsafe { instructions::vmxoff() } {
        // Still in VMX operation: CR4.VMXE must stay (SDM 24.8).
        return Err(result.err().unwrap_or(L0Error::Setup("VMXOFF", failure)));
    }
    // SAFETY: outside VMX operation now.
    unsafe { write_cr4(read_cr4() & !(1 << 13)) };
    result
}

/// INVEPT all-context and INVVPID all-context right after VMXON: VMXON
/// invalidates nothing, and L0's frames or VPIDs may have been used before
/// (SDM 29.4.3.3, 29.4.3.4).
fn invalidate_everything() -> Result<(), L0Error> {
    let ept = InveptDescriptor::new(Eptp::from_raw(0));
    // SAFETY: VMX root operation; INVEPT support was checked.
    unsafe { instructions::invept(InveptType::Global, &ept) }
        .map_err(|failure| L0Error::Setup("INVEPT all-context", failure))?;
    let vpid = InvvpidDescriptor::new(0, 0);
    // SAFETY: VMX root operation; VPID support was checked (all-context
    // INVVPID is supported whenever INVVPID is, SDM 31.3 INVVPID).
    unsafe { instructions::invvpid(InvvpidType::AllContext, &vpid) }
        .map_err(|failure| L0Error::Setup("INVVPID all-context", failure))
}

/// Masks both 8259 PICs: L0 takes no device interrupts, so an interrupt
/// can never stay pending and make every entry exit again.
fn mask_legacy_pics() {
    // SAFETY: OCW1 to the master (0x21) and slave (0xA1) PIC data ports
    // only masks interrupt lines.
    unsafe {
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
    }
}

fn frame_with_revision(
    frames: &mut FrameAllocator,
    caps: &VmxCapabilities,
    what: &'static str,
) -> Result<PhysFrame, L0Error> {
    let frame = frames.allocate().ok_or(L0Error::OutOfMemory(what))?;
    // SAFETY: a fresh zeroed frame, identity mapped; bit 31 stays clear
    // (SDM 25.2).
    unsafe { (frame.address() as *mut u32).write(caps.basic.revision_id() & 0x7fff_ffff) };
    Ok(frame)
}

unsafe extern "C" {
    /// The 32-bit entry of this image (boot.rs), where L1 starts.
    fn entry32();
}

fn run_in_vmx_operation(
    frames: &mut FrameAllocator,
    caps: &VmxCapabilities,
    config: RunConfig,
    maxphyaddr: u8,
) -> Result<NestedOutcome, L0Error> {
    let mut ram = L1Ram::reserve(frames, L1_RAM_BYTES).ok_or(L0Error::OutOfMemory("L1 RAM"))?;
    load_l1_image(&mut ram)?;
    let ept01 = HardwareEpt01::build(frames, &ram).map_err(|_| L0Error::OutOfMemory("EPT01"))?;
    let msr_bitmap = frames
        .allocate()
        .ok_or(L0Error::OutOfMemory("the MSR bitmap"))?;
    // SAFETY: a fresh frame, identity mapped, only VMCS01 will use it.
    vmcs01::fill_msr_bitmap(unsafe { &mut *(msr_bitmap.address() as *mut [u8; 4096]) });
    let vmcs01_frame = frame_with_revision(frames, caps, "VMCS01")?;
    let vmcs02_frame = frame_with_revision(frames, caps, "VMCS02")?;

    // VMCS02 first (hv-core's contract: every field 0), then VMCS01, which
    // stays current.
    load_zeroed_vmcs(vmcs02_frame.address(), "VMCS02")?;
    load_zeroed_vmcs(vmcs01_frame.address(), "VMCS01")?;
    let addresses = vmcs01::Vmcs01Addresses {
        eptp: ept01.eptp(),
        msr_bitmap: msr_bitmap.address(),
    };
    // SAFETY: VMCS01 is current; the addresses are L0 frames built for it.
    let watchdog = unsafe { vmcs01::build(caps, addresses) }.map_err(L0Error::Vmcs01)?;

    let platform = HardwarePlatform::new(PlatformParts {
        caps: *caps,
        l0: vmcs01::l0_requirements(maxphyaddr, vmcs02_frame.address()),
        owned: vmcs01::owned_bits(caps),
        vmcs01: vmcs01_frame.address(),
        vmcs02: vmcs02_frame.address(),
        cpu: vmcs01::l1_reset_state(
            entry32 as *const () as u64,
            BIOS_BOOT_MAGIC,
            BIOS_BOOT_INFO_ADDRESS,
        ),
        ram,
        ept01,
        watchdog,
    });
    let pool = Ept02Frames::reserve(frames, EPT02_POOL_FRAMES)
        .ok_or(L0Error::OutOfMemory("the EPT02 pool"))?;
    let mut mmu = MmuConfig::new(
        config.policy.policy(),
        EptWalkContext::from_capabilities(caps, maxphyaddr, false),
    );
    mmu.frame_budget = pool.capacity();
    let vpid02 = Vpid02Range::new(VPID02_FIRST, VPID02_LAST)
        .map_err(|_| L0Error::Unsupported("VPIDs 2..=255 for L2"))?;
    let vcpu_config = VcpuConfig {
        nested: NestedVmxConfig::new(
            FeatureControl::LOCK | FeatureControl::VMX_OUTSIDE_SMX,
            maxphyaddr,
        ),
        mmu,
        vpid02,
    };
    let mut driver = Driver {
        vcpu: Vcpu::new(platform, pool, vcpu_config),
        console: String::new(),
        steady_mark: None,
        report: None,
        illegal: None,
        watchdog_expiries: 0,
        cr4_allowed: !caps.cr4_fixed.must_be_zero(),
    };
    let ending = driver.run()?;
    let engine = driver.vcpu.platform().counts();
    Ok(NestedOutcome {
        counters: driver.vcpu.counters(),
        invept: engine.invept,
        invvpid: engine.invvpid,
        steady_mark: driver.steady_mark,
        report: driver.report,
        illegal: driver.illegal,
        ending,
    })
}

/// VMCLEAR and VMPTRLD `vmcs`, then VMWRITE 0 to every field the
/// processor has: a cleared VMCS's contents are implementation-specific
/// (SDM 25.11.3), and entry checks read fields L0 never sets on purpose.
/// Leaves `vmcs` current.
fn load_zeroed_vmcs(vmcs: u64, what: &'static str) -> Result<(), L0Error> {
    // SAFETY: VMX root operation; L0's own region with the revision id.
    unsafe { instructions::vmclear(vmcs) }.map_err(|failure| L0Error::Setup(what, failure))?;
    // SAFETY: as above.
    unsafe { instructions::vmptrld(vmcs) }.map_err(|failure| L0Error::Setup(what, failure))?;
    for &field in VmcsField::ALL {
        if field.is_read_only() {
            continue;
        }
        // SAFETY: `vmcs` is current and not launched; nothing runs on it
        // yet. A field this processor lacks fails with error 12, which
        // only says so.
        match unsafe { instructions::vmwrite(field, 0) } {
            Ok(()) | Err(VmFail::Valid(VmInstructionError::UnsupportedVmcsComponent)) => {}
            Err(failure) => return Err(L0Error::Setup(what, failure)),
        }
    }
    Ok(())
}

/// Puts this image into L1's RAM where a BIOS loader would: the boot
/// sector and loader (with the run configuration), the kernel as loaded
/// with `.data` as the disk had it, and an E820 map at 0x5000.
fn load_l1_image(ram: &mut L1Ram) -> Result<(), L0Error> {
    unsafe extern "C" {
        static __kernel_start: u8;
        static __data_start: u8;
        static __kernel_load_end: u8;
        static __pristine_data: u8;
    }
    let (loader, loader_len) = loader_region();
    let kernel = (&raw const __kernel_start) as u64;
    let data = (&raw const __data_start) as u64;
    let load_end = (&raw const __kernel_load_end) as u64;
    let pristine = (&raw const __pristine_data) as u64;
    // SAFETY: these ranges are this image's own loaded sections (linker
    // script), identity mapped and never written after boot except
    // `.data`, which is read from its pristine copy instead.
    let (loader_bytes, text, data_bytes) = unsafe {
        (
            core::slice::from_raw_parts(loader as *const u8, loader_len as usize),
            core::slice::from_raw_parts(kernel as *const u8, (data - kernel) as usize),
            core::slice::from_raw_parts(pristine as *const u8, (load_end - data) as usize),
        )
    };
    ram.load(loader, loader_bytes).map_err(|_| L0Error::Image)?;
    ram.load(kernel, text).map_err(|_| L0Error::Image)?;
    ram.load(data, data_bytes).map_err(|_| L0Error::Image)?;

    // BiosBootInfo: count, drive, kernel sectors, reserved, then E820.
    let entries: [(u64, u64, u32); 3] = [
        (0, 0x9_f000, 1),
        (0x9_f000, 0x6_1000, 2),
        (0x10_0000, ram.size() - 0x10_0000, 1),
    ];
    let mut info = [0u8; 16 + 3 * 24];
    info[0..4].copy_from_slice(&3u32.to_le_bytes());
    info[4..8].copy_from_slice(&0x80u32.to_le_bytes());
    info[8..12].copy_from_slice(&(((load_end - kernel) / 512) as u32).to_le_bytes());
    for (index, (base, length, kind)) in entries.into_iter().enumerate() {
        let at = 16 + index * 24;
        info[at..at + 8].copy_from_slice(&base.to_le_bytes());
        info[at + 8..at + 16].copy_from_slice(&length.to_le_bytes());
        info[at + 16..at + 20].copy_from_slice(&kind.to_le_bytes());
        info[at + 20..at + 24].copy_from_slice(&1u32.to_le_bytes());
    }
    ram.load(BIOS_BOOT_INFO_ADDRESS, &info)
        .map_err(|_| L0Error::Image)
}

/// How one handled exit leaves the run.
enum Flow {
    Continue,
    Finished(&'static str),
}

struct Driver {
    vcpu: Vcpu<HardwarePlatform>,
    /// L1's console line being collected (port 0xE9).
    console: String,
    steady_mark: Option<(u64, u64)>,
    report: Option<L1Report>,
    illegal: Option<IllegalVerdict>,
    /// Consecutive watchdog expiries without another L1 exit.
    watchdog_expiries: u32,
    /// CR4 bits the processor allows to be 1 (SDM A.8).
    cr4_allowed: u64,
}

impl Driver {
    fn run(&mut self) -> Result<&'static str, L0Error> {
        for _ in 0..STEP_LIMIT {
            let step = self.vcpu.step().map_err(L0Error::Vcpu)?;
            let flow = match step {
                Step::Handled(_) => Flow::Continue,
                Step::L1Exit(exit) => self.l1_exit(&exit)?,
                Step::L1Hypercall => self.hypercall(),
                Step::L2Exit { exit, reason } => {
                    if exit.reason.reason() == ExitReason::ExternalInterrupt {
                        Flow::Continue
                    } else {
                        return Err(L0Error::L1(L1Failure::UnhandledL2Exit(
                            exit.reason.reason(),
                            reason,
                        )));
                    }
                }
                Step::L2Mmio { l1_gpa, .. } => {
                    return Err(L0Error::L1(L1Failure::L2Mmio(l1_gpa)));
                }
                Step::OperandNotInL1Memory { error, .. } => {
                    // No device is there either: #GP, as for an access the
                    // platform cannot complete.
                    crate::println!(
                        "hv-standalone: L0: L1's VMX operand at {:?} is not L1 memory: #GP",
                        error.gpa
                    );
                    self.inject(Fault::GeneralProtection)?;
                    Flow::Continue
                }
                Step::InvalidExitInformation { exit, error } => {
                    return Err(L0Error::L1(L1Failure::MalformedExit(
                        exit.reason.reason(),
                        error,
                    )));
                }
                Step::L1Shutdown(abort) => {
                    return Err(L0Error::L1(L1Failure::VmxAbort(abort)));
                }
            };
            if let Flow::Finished(ending) = flow {
                self.flush_console();
                return Ok(ending);
            }
        }
        self.flush_console();
        Err(L0Error::Runaway)
    }

    fn inject(&mut self, fault: Fault) -> Result<(), L0Error> {
        self.vcpu
            .platform_mut()
            .inject_into_l1(fault)
            .map_err(|error| L0Error::Vcpu(VcpuError::Platform(error)))
    }

    fn advance(&mut self, exit: &Exit) {
        advance_rip(self.vcpu.l1_cpu(), exit);
    }

    /// L1 exits hv-core leaves to L0.
    fn l1_exit(&mut self, exit: &Exit) -> Result<Flow, L0Error> {
        let reason = exit.reason.reason();
        if reason == ExitReason::PreemptionTimerExpired {
            self.watchdog_expiries += 1;
            if self.watchdog_expiries >= WATCHDOG_EXPIRIES {
                return Err(L0Error::Stuck {
                    rip: self.vcpu.l1_cpu().rip,
                });
            }
            return Ok(Flow::Continue);
        }
        self.watchdog_expiries = 0;
        match reason {
            ExitReason::Cpuid => {
                self.cpuid();
                self.advance(exit);
            }
            ExitReason::IoInstruction => return self.io(exit),
            ExitReason::Rdmsr | ExitReason::Wrmsr => self.msr(exit)?,
            ExitReason::ControlRegisterAccess => self.control_register(exit)?,
            ExitReason::Hlt => return Ok(Flow::Finished("L1 halted")),
            ExitReason::ExternalInterrupt => {}
            ExitReason::TripleFault => {
                return Err(L0Error::L1(L1Failure::TripleFault {
                    rip: self.vcpu.l1_cpu().rip,
                }));
            }
            ExitReason::EptViolation | ExitReason::EptMisconfiguration => {
                return Err(L0Error::L1(L1Failure::OutsideRam {
                    gpa: exit.guest_physical_address,
                    rip: self.vcpu.l1_cpu().rip,
                }));
            }
            other if exit.reason.is_entry_failure() => {
                return Err(L0Error::L1(L1Failure::EntryFailure {
                    reason: other,
                    qualification: exit.qualification,
                }));
            }
            // XSETBV, INVD, GETSEC, MWAIT, MONITOR and the rest: not
            // offered to L1 (CPUID hides them), so #UD.
            other => {
                crate::println!("hv-standalone: L0: L1 exit {other:?}: #UD");
                self.inject(Fault::InvalidOpcode)?;
            }
        }
        Ok(Flow::Continue)
    }

    /// CPUID as the host answers it, plus VMX (leaf 1 ECX[5]), the
    /// hypervisor bit (ECX[31]) and hv's leaf 0x40000000.
    fn cpuid(&mut self) {
        let cpu = self.vcpu.l1_cpu();
        let leaf = cpu.gprs.0[0] as u32;
        let subleaf = cpu.gprs.0[1] as u32;
        let (eax, mut ebx, mut ecx, mut edx) = if leaf == 0x4000_0000 {
            (0x4000_0000, HV_SIGNATURE, 0, 0)
        } else if (0x4000_0001..0x5000_0000).contains(&leaf) {
            (0, 0, 0, 0)
        } else {
            let result = core::arch::x86_64::__cpuid_count(leaf, subleaf);
            (result.eax, result.ebx, result.ecx, result.edx)
        };
        match (leaf, subleaf) {
            // VMX (5) and "hypervisor present" (31) on; MONITOR (3), XSAVE
            // (26) and OSXSAVE (27) off: MONITOR/MWAIT and XSETBV raise #UD
            // in L1.
            (1, _) => ecx = (ecx | (1 << 5) | (1 << 31)) & !((1 << 3) | (1 << 26) | (1 << 27)),
            // INVPCID (EBX 10): its enable control is off in VMCS01.
            (7, 0) => ebx &= !(1 << 10),
            // RDTSCP (EDX 27): its enable control is off in VMCS01.
            (0x8000_0001, _) => edx &= !(1 << 27),
            _ => {}
        }
        let cpu = self.vcpu.l1_cpu();
        cpu.gprs.0[0] = u64::from(eax);
        cpu.gprs.0[3] = u64::from(ebx);
        cpu.gprs.0[1] = u64::from(ecx);
        cpu.gprs.0[2] = u64::from(edx);
    }

    /// L1's port I/O: 0xE9 is its console (forwarded line by line with
    /// "L1| "), 0x8900 is Bochs's shutdown port (L1 is done), COM1 reads
    /// as an idle UART, everything else reads as all ones and ignores
    /// writes (no device). SDM 28.2.1 Table 28-5 for the qualification.
    fn io(&mut self, exit: &Exit) -> Result<Flow, L0Error> {
        let qualification = exit.qualification;
        // Bits 2:0: access size - 1 (0, 1 or 3; other values unused).
        let size: u64 = match qualification & 7 {
            0 => 1,
            1 => 2,
            _ => 4,
        };
        let is_in = qualification & (1 << 3) != 0;
        let string = qualification & (1 << 4) != 0;
        let port = (qualification >> 16) as u16;
        if string {
            // INS/OUTS are not emulated (hv-standalone's L1 never uses
            // them): #GP rather than a half-done transfer.
            crate::println!("hv-standalone: L0: L1 string I/O on port {port:#x}: #GP");
            self.inject(Fault::GeneralProtection)?;
            return Ok(Flow::Continue);
        }
        self.advance(exit);
        let cpu = self.vcpu.l1_cpu();
        if is_in {
            let value: u64 = if port == 0x3fd { 0x60 } else { u64::MAX };
            let mask = (1u64 << (size * 8)) - 1;
            // IN to AL/AX keeps the rest of RAX; IN to EAX zero-extends.
            cpu.gprs.0[0] = if size == 4 {
                value & mask
            } else {
                (cpu.gprs.0[0] & !mask) | (value & mask)
            };
            return Ok(Flow::Continue);
        }
        let byte = cpu.gprs.0[0] as u8;
        match port {
            0xe9 => {
                if byte == b'\n' {
                    self.flush_console();
                } else if self.console.len() < 512 {
                    self.console.push(char::from(byte));
                }
            }
            0x8900 => return Ok(Flow::Finished("L1 shut down")),
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn flush_console(&mut self) {
        if !self.console.is_empty() {
            crate::println!("L1| {}", self.console);
            self.console.clear();
        }
    }

    /// RDMSR/WRMSR that exited (the MSR bitmap passes EFER and the FS/GS
    /// bases; hv-core answers the VMX MSRs): the MSRs VMCS01 holds for L1,
    /// else #GP (SDM Vol. 4: an MSR the virtual processor does not have).
    fn msr(&mut self, exit: &Exit) -> Result<(), L0Error> {
        let cpu = *self.vcpu.l1_cpu();
        let index = cpu.gprs.0[1] as u32;
        let msrs = self.vcpu.platform_mut().msrs_mut();
        let result = if exit.reason.reason() == ExitReason::Rdmsr {
            hv_core::reflect::MsrAccess::read_msr(msrs, index).map(Some)
        } else {
            let value = (cpu.gprs.0[2] << 32) | (cpu.gprs.0[0] & 0xffff_ffff);
            hv_core::reflect::MsrAccess::write_msr(msrs, index, value).map(|()| None)
        };
        match result {
            Ok(read) => {
                if let Some(value) = read {
                    let cpu = self.vcpu.l1_cpu();
                    cpu.gprs.0[0] = value & 0xffff_ffff;
                    cpu.gprs.0[2] = value >> 32;
                }
                self.advance(exit);
                Ok(())
            }
            Err(_) => self.inject(Fault::GeneralProtection),
        }
    }

    /// MOV to CR0/CR4 that changed a bit L0 owns (CR0.NE, CR4.VMXE): L1's
    /// view takes the new value; the real register keeps L0's bits (SDM
    /// 25.6.6, 28.1.3). The exit comes before the instruction's own checks
    /// (SDM 26.1.1), so L0 makes them: the #GP conditions of MOV to CR
    /// (SDM Vol. 2 "MOV—Move to/from Control Registers", Vol. 3A 2.5) and
    /// VMX's (CR4.VMXE stays 1 in VMX operation, SDM 24.8). Exit
    /// qualification: SDM Table 28-3.
    fn control_register(&mut self, exit: &Exit) -> Result<(), L0Error> {
        const PE: u64 = 1;
        const NW: u64 = 1 << 29;
        const CD: u64 = 1 << 30;
        const PG: u64 = 1 << 31;
        const PAE: u64 = 1 << 5;
        const PGE: u64 = 1 << 7;
        const PCIDE: u64 = 1 << 17;
        const VMXE: u64 = 1 << 13;
        const LME: u64 = 1 << 8;
        const LMA: u64 = 1 << 10;
        let qualification = exit.qualification;
        let register = qualification & 15;
        let access = (qualification >> 4) & 3;
        let gpr = ((qualification >> 8) & 15) as usize;
        if access != 0 {
            return self.inject(Fault::GeneralProtection);
        }
        let in_vmx_operation = !matches!(self.vcpu.nested().operation(), VmxOperation::Outside);
        let cr4_allowed = self.cr4_allowed;
        let cpu = self.vcpu.l1_cpu();
        let value = cpu.gprs.0[gpr];
        let (old, paging_bits) = match register {
            0 => (cpu.cr0, PE | PG),
            4 => (cpu.cr4, PAE | PGE | PCIDE),
            _ => return self.inject(Fault::GeneralProtection),
        };
        let valid = if register == 0 {
            let long_mode_switch = (old ^ value) & PG != 0 && cpu.efer & LME != 0;
            value >> 32 == 0
                && (value & PG == 0 || value & PE != 0)
                && (value & NW == 0 || value & CD != 0)
                && !(long_mode_switch && value & PG != 0 && cpu.cr4 & PAE == 0)
        } else {
            value & !cr4_allowed == 0
                && (value & VMXE != 0 || !in_vmx_operation)
                && (cpu.efer & LMA == 0 || value & PAE != 0)
        };
        if !valid {
            return self.inject(Fault::GeneralProtection);
        }
        if register == 0 {
            // SDM Vol. 3A 10.8.5: setting PG with EFER.LME activates IA-32e
            // mode, clearing it leaves it.
            if (old ^ value) & PG != 0 && cpu.efer & LME != 0 {
                cpu.efer = if value & PG != 0 {
                    cpu.efer | LMA
                } else {
                    cpu.efer & !LMA
                };
            }
            cpu.cr0 = value;
        } else {
            cpu.cr4 = value;
        }
        self.advance(exit);
        if (old ^ value) & paging_bits != 0 {
            self.vcpu
                .platform_mut()
                .flush_l1_translations()
                .map_err(|error| L0Error::Vcpu(VcpuError::Platform(error)))?;
        }
        Ok(())
    }

    /// VMCALL from L1 (in VMX root operation, CPL 0): the ABI in
    /// /work/notes: RAX = function, RBX/RCX/RDX/RSI = arguments.
    fn hypercall(&mut self) -> Flow {
        let cpu = *self.vcpu.l1_cpu();
        let [rax, rcx, rdx, rbx] = [cpu.gprs.0[0], cpu.gprs.0[1], cpu.gprs.0[2], cpu.gprs.0[3]];
        let rsi = cpu.gprs.0[6];
        let status = match rax {
            HYPERCALL_STEADY => {
                if self.steady_mark.is_none() {
                    let engine = self.vcpu.platform().counts();
                    self.steady_mark = Some((engine.invept, engine.invvpid));
                }
                0
            }
            HYPERCALL_REPORT => {
                self.report = Some(L1Report {
                    l2_ok: rbx == 1,
                    reports_checked: rcx,
                    slices_run: rdx,
                });
                0
            }
            HYPERCALL_ILLEGAL => {
                self.illegal = Some(IllegalVerdict {
                    case: IllegalCase::from_number(rbx),
                    ok: rcx == 1,
                    observed: rdx,
                    expected: rsi,
                });
                0
            }
            _ => u64::MAX,
        };
        self.vcpu.l1_cpu().gprs.0[0] = status;
        Flow::Continue
    }
}
