//! The KVM shim: /dev/kvm opened once per process, one VM with one memory
//! slot and one vCPU per sandbox, 64-bit mode at CPL 3 set up through the
//! special registers.

use std::sync::OnceLock;

use hv_guest_abi::{
    GDT_ADDRESS, GUEST_RFLAGS, IDT_ADDRESS, TSS_ADDRESS, TSS_SELECTOR, USER_CODE_SELECTOR,
    USER_DATA_SELECTOR,
};
use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, KVM_MEM_LOG_DIRTY_PAGES, kvm_dtable, kvm_regs, kvm_segment,
    kvm_sregs, kvm_userspace_memory_region,
};
use kvm_ioctls::{Cap, Kvm, SyncReg, VcpuFd, VmFd};

use super::error::KvmError;
use super::layout::{GDT_LIMIT, IDT_LIMIT, PML4_ADDRESS, TSS_LIMIT};
use super::memory::GuestMemory;

/// The stable KVM API version (`KVM_GET_API_VERSION`).
const KVM_API_VERSION: i32 = 12;

// Control-register and EFER bits (Intel SDM Vol. 3A 2.5, 2.2.1).
const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

struct System {
    kvm: Kvm,
    cpuid: CpuId,
}

static SYSTEM: OnceLock<System> = OnceLock::new();

/// Opens /dev/kvm (once per process) and checks what hv needs.
fn system() -> Result<&'static System, KvmError> {
    if let Some(system) = SYSTEM.get() {
        return Ok(system);
    }
    let kvm = Kvm::new().map_err(|error| match error.errno() {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => KvmError::DeviceMissing,
        libc::EACCES | libc::EPERM => KvmError::PermissionDenied,
        errno => KvmError::Open(std::io::Error::from_raw_os_error(errno)),
    })?;
    let found = kvm.get_api_version();
    if found != KVM_API_VERSION {
        return Err(KvmError::UnsupportedApiVersion { found });
    }
    for (cap, capability) in [
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
        (Cap::SyncRegs, "KVM_CAP_SYNC_REGS"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(KvmError::MissingCapability { capability });
        }
    }
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|error| KvmError::ioctl("KVM_GET_SUPPORTED_CPUID", error))?;
    Ok(SYSTEM.get_or_init(|| System { kvm, cpuid }))
}

/// Checks that KVM is usable here, without creating a VM.
///
/// # Errors
///
/// Why it is not.
pub fn check_available() -> Result<(), KvmError> {
    system().map(|_| ())
}

/// One VM with one memory slot (slot 0 at guest-physical 0) and one vCPU.
#[derive(Debug)]
pub struct Machine {
    /// The VM.
    pub vm: VmFd,
    /// Its only vCPU (id 0).
    pub vcpu: VcpuFd,
}

impl Machine {
    /// Creates the VM over `memory` (with dirty-page logging when
    /// `log_dirty`) and its vCPU; with `expose_cpuid`, sets the vCPU's
    /// CPUID to what KVM supports (`KVM_SET_CPUID2`), otherwise the guest's
    /// CPUID reports no leaves.
    ///
    /// # Errors
    ///
    /// The failing ioctl.
    pub fn new(
        memory: &GuestMemory,
        log_dirty: bool,
        expose_cpuid: bool,
    ) -> Result<Self, KvmError> {
        let system = system()?;
        let vm = system
            .kvm
            .create_vm()
            .map_err(|error| KvmError::ioctl("KVM_CREATE_VM", error))?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: if log_dirty {
                KVM_MEM_LOG_DIRTY_PAGES
            } else {
                0
            },
            guest_phys_addr: 0,
            memory_size: memory.size(),
            userspace_addr: memory.host_address(),
        };
        // SAFETY: the region is the live mapping of `memory`, which the
        // sandbox keeps alive (and mapped) for as long as the VM exists:
        // `Sandbox` declares `machine` before `memory`, so it drops first.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|error| KvmError::ioctl("KVM_SET_USER_MEMORY_REGION", error))?;
        let mut vcpu = vm
            .create_vcpu(0)
            .map_err(|error| KvmError::ioctl("KVM_CREATE_VCPU", error))?;
        if expose_cpuid {
            vcpu.set_cpuid2(&system.cpuid)
                .map_err(|error| KvmError::ioctl("KVM_SET_CPUID2", error))?;
        }
        // General registers come back in kvm_run after every exit (no
        // KVM_GET_REGS needed for fault reports).
        vcpu.set_sync_valid_reg(SyncReg::Register);
        Ok(Self { vm, vcpu })
    }

    /// Special registers for 64-bit mode at CPL 3 with the host's page
    /// tables and descriptor tables (`hv_guest_abi`'s entry state),
    /// starting from the vCPU's reset state: the guest executes no CPL 0
    /// instruction to start, which matters on `kvm_pvm`, where each one is
    /// emulated (about 1 µs each: entering at CPL 3 made creation about 70 µs
    /// faster).
    ///
    /// # Errors
    ///
    /// `KVM_GET_SREGS` failed.
    pub fn long_mode_sregs(&self) -> Result<kvm_sregs, KvmError> {
        let mut sregs = self
            .vcpu
            .get_sregs()
            .map_err(|error| KvmError::ioctl("KVM_GET_SREGS", error))?;
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: USER_CODE_SELECTOR,
            type_: 0b1011, // execute/read, accessed
            present: 1,
            dpl: 3,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let data = kvm_segment {
            selector: USER_DATA_SELECTOR,
            type_: 0b0011, // read/write, accessed
            db: 1,
            l: 0,
            ..code
        };
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.tr = kvm_segment {
            base: TSS_ADDRESS,
            limit: TSS_LIMIT,
            selector: TSS_SELECTOR,
            type_: 0b1011, // busy 64-bit TSS
            dpl: 0,
            db: 0,
            s: 0,
            l: 0,
            g: 0,
            ..code
        };
        sregs.gdt = kvm_dtable {
            base: GDT_ADDRESS,
            limit: GDT_LIMIT,
            padding: [0; 3],
        };
        sregs.idt = kvm_dtable {
            base: IDT_ADDRESS,
            limit: IDT_LIMIT,
            padding: [0; 3],
        };
        sregs.cr3 = PML4_ADDRESS;
        sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
        sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
        sregs.efer = EFER_LME | EFER_LMA | EFER_NXE;
        Ok(sregs)
    }

    /// Queues `regs` and `sregs` to be loaded by the next `KVM_RUN` (through
    /// `kvm_run`'s synced registers: no extra ioctl).
    pub fn queue_registers(&mut self, regs: &kvm_regs, sregs: &kvm_sregs) {
        let sync = self.vcpu.sync_regs_mut();
        sync.regs = *regs;
        sync.sregs = *sregs;
        self.vcpu.set_sync_dirty_reg(SyncReg::Register);
        self.vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
    }

    /// The general registers as of the last exit.
    pub fn last_regs(&self) -> kvm_regs {
        self.vcpu.sync_regs().regs
    }

    /// Runs the vCPU with `immediate_exit` set: KVM completes a pending
    /// I/O or MMIO exit (so the guest state is consistent) and returns
    /// without entering the guest.
    pub fn complete_pending_exit(&mut self) {
        self.vcpu.set_kvm_immediate_exit(1);
        // EINTR is the expected answer.
        let _ = self.vcpu.run();
        self.vcpu.set_kvm_immediate_exit(0);
    }
}

/// The initial general registers: RIP = entry, RSP = stack top, RDI =
/// `BootInfo`, RFLAGS = IOPL 3 and the reserved bit 1 (interrupts off).
pub fn initial_regs(entry: u64, stack_top: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsp: stack_top,
        rdi: hv_guest_abi::BOOT_INFO_ADDRESS,
        rflags: GUEST_RFLAGS,
        ..kvm_regs::default()
    }
}
