//! `hv bench sandbox`: sandbox create, call, host call and restore
//! latencies against the raw KVM floor measured in the same run (the same
//! ioctls done directly with the fewest steps). All figures are medians.
//!
//! - create: hv builds a sandbox from the demo guest's bytes and runs it to
//!   `Ready`; the floor creates a VM, a 2 MiB memslot and a vCPU, loads its
//!   registers through `kvm_run`'s synced registers and runs to the first
//!   `out` exit.
//! - call / host call: hv calls `add(1, 2)` / `call_host(1, 2)` (which calls
//!   host function `host_add`); the floor is one `out` exit round trip
//!   (`KVM_RUN` -> `KVM_EXIT_IO` -> `KVM_RUN`) of a guest looping on `out`
//!   (two round trips for a host call).
//! - restore: after `dirty_pages(16)`, restore a snapshot; 4 MiB sandbox
//!   (`restore_us`) and 256 MiB sandbox (`restore_large_us`, whose floor is
//!   `restore_us`).
//!
//! # Which floor
//!
//! Every measurement with a floor reports two: `floor` (the one `ratio`
//! compares against), whose guest runs in 64-bit mode at CPL 3, and
//! `floor_cpl0`, the same steps with the guest in real mode at CPL 0.
//! On `kvm_pvm` (this project's CI machines: see `shared/FACTS.md`) guest
//! CPL 0 is emulated instruction by instruction and cannot execute x87/SSE,
//! so no compiled guest code can run there: every sandbox guest runs at
//! CPL 3, and an exit from CPL 3 costs about 25 µs against about 7 µs from
//! CPL 0 (the CPL 3 path goes through `kvm_pvm`'s world switch with its MSR
//! and CR writes). The CPL 3 floor is therefore the cheapest round trip any
//! guest that runs compiled code can have on this KVM, and the fair
//! comparison; the CPL 0 number stays in the output so nothing is hidden.
//! The same holds for creation: a sandbox must reach 64-bit mode at CPL 3
//! before its first exit, so the create floor enters the guest there
//! directly (page tables, GDT and TSS written into guest memory, segment
//! registers loaded with DPL 3 through the synced special registers: no
//! extra ioctl and no CPL 0 instruction) and exits from there. On hardware
//! VMX both floors cost about the same.

use std::time::{Duration, Instant};

use kvm_bindings::{kvm_segment, kvm_sregs, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, SyncReg, VcpuExit};
use memmap2::MmapMut;

use crate::sandbox::{MemoryConfig, SandboxBuilder, SandboxError};

/// How many samples each measurement takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SandboxBenchConfig {
    /// Sandbox creations (and floor creations).
    pub creates: usize,
    /// Calls (and floor round trips).
    pub calls: usize,
    /// Restores per sandbox size.
    pub restores: usize,
}

impl Default for SandboxBenchConfig {
    fn default() -> Self {
        Self {
            creates: 60,
            calls: 5_000,
            restores: 300,
        }
    }
}

/// One measurement: hv against its floor, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Measurement {
    /// hv's median.
    pub hv: f64,
    /// The raw-KVM floor's median (`None` when there is no floor).
    pub floor: Option<f64>,
    /// `hv / floor`.
    pub ratio: Option<f64>,
    /// The same floor with its guest at CPL 0 in real mode (`None` when
    /// there is no floor): cheaper on `kvm_pvm`, but no compiled guest can
    /// run there (see the module documentation). Reported, not compared.
    pub floor_cpl0: Option<f64>,
}

impl Measurement {
    fn new(hv: f64, floor: Option<f64>, floor_cpl0: Option<f64>) -> Self {
        Self {
            hv,
            floor,
            ratio: floor.map(|floor| hv / floor),
            floor_cpl0,
        }
    }
}

/// The results, keyed as `hv bench sandbox --json` prints them.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct SandboxBenchResults {
    /// Sandbox creation to `Ready`.
    pub create_us: Measurement,
    /// One guest call.
    pub call_us: Measurement,
    /// One guest call that makes one host call.
    pub host_call_us: Measurement,
    /// Restore of a 4 MiB sandbox that dirtied 16 pages.
    pub restore_us: Measurement,
    /// Restore of a 256 MiB sandbox that dirtied 16 pages.
    pub restore_large_us: Measurement,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxBenchError {
    /// The sandbox failed.
    #[error("sandbox: {0}")]
    Sandbox(#[from] SandboxError),
    /// A raw KVM step of the floor failed.
    #[error("raw KVM floor: {operation}: {source}")]
    Floor {
        /// The step.
        operation: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The demo guest answered something unexpected.
    #[error("{function} returned {value}, expected {expected}")]
    WrongResult {
        /// The guest function.
        function: &'static str,
        /// What it returned.
        value: i64,
        /// What it should have.
        expected: i64,
    },
}

fn floor_error(operation: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SandboxBenchError {
    move |error| SandboxBenchError::Floor {
        operation,
        source: std::io::Error::from_raw_os_error(error.errno()),
    }
}

fn median_us(mut samples: Vec<Duration>) -> f64 {
    samples.sort_unstable();
    samples
        .get(samples.len() / 2)
        .map_or(f64::NAN, |median| median.as_secs_f64() * 1e6)
}

/// Real-mode guest at 0x1000: `out dx, al; jmp $-3` (DX = 0x6000).
const FLOOR_CODE: [u8; 3] = [0xee, 0xeb, 0xfd];
const FLOOR_MEMORY: usize = 2 << 20;
/// The floor's port (the sandbox's `PORT_RESPONSE`).
const FLOOR_PORT: u16 = 0x6000;

/// Where the floor guest's code runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FloorMode {
    /// Real mode at CPL 0 (the reset state with CS moved): the cheapest
    /// possible exit, but no compiled code can run there on `kvm_pvm`.
    Cpl0,
    /// 64-bit mode at CPL 3, as every sandbox guest runs on this KVM.
    Cpl3,
}

// The CPL 3 floor's guest-physical layout (all in the one 2 MiB page).
const FLOOR_PML4: u64 = 0x1000;
const FLOOR_PDPT: u64 = 0x2000;
const FLOOR_PD: u64 = 0x3000;
const FLOOR_GDT: u64 = 0x4000;
const FLOOR_TSS: u64 = 0x5000;
const FLOOR_CODE_ADDRESS: u64 = 0x1000;
const FLOOR_CODE_ADDRESS_CPL3: u64 = 0x8000;
/// 64-bit TSS size without the I/O bitmap (SDM Vol. 3A 8.7).
const TSS_SIZE: u64 = 104;
/// I/O bitmap up to and including `FLOOR_PORT`'s byte, then the all-ones
/// byte the CPU requires (SDM Vol. 1 19.5.2): all zero, every port allowed.
const IO_BITMAP_BYTES: u64 = FLOOR_PORT as u64 / 8 + 2;
const FLOOR_TSS_LIMIT: u64 = TSS_SIZE + IO_BITMAP_BYTES - 1;
/// GDT: null, kernel code, kernel data, user data (0x18), user code (0x20),
/// TSS (0x28, two entries). Descriptors per SDM Vol. 3A 3.4.5.
const FLOOR_GDT_ENTRIES: [u64; 5] = [
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x00cf_f300_0000_ffff,
    0x00af_fb00_0000_ffff,
];
const USER_DATA: u16 = 0x18 | 3;
const USER_CODE: u16 = 0x20 | 3;
const TSS_SELECTOR: u16 = 0x28;

/// Writes the CPL 3 floor's page tables (one user 2 MiB page at 0), GDT,
/// TSS with an all-allowing I/O bitmap (`kvm_pvm` checks the bitmap for
/// CPL 3 `out`, not IOPL: see images/hv-guest/src/entry.rs) and code.
fn write_cpl3_floor(memory: &mut [u8]) {
    let mut put = |address: u64, value: u64| {
        let at = address as usize;
        memory[at..at + 8].copy_from_slice(&value.to_le_bytes());
    };
    // Present, writable, user (SDM Vol. 3A 4.5); PS in the PDE.
    put(FLOOR_PML4, FLOOR_PDPT | 0b111);
    put(FLOOR_PDPT, FLOOR_PD | 0b111);
    put(FLOOR_PD, 0b1000_0111);
    for (index, entry) in FLOOR_GDT_ENTRIES.iter().enumerate() {
        put(FLOOR_GDT + 8 * index as u64, *entry);
    }
    // 64-bit available TSS descriptor: limit 15:0, base 23:0, type 9, P,
    // limit 19:16, base 31:24; base 63:32 in the next entry (zero here).
    let tss_descriptor = (FLOOR_TSS_LIMIT & 0xffff)
        | ((FLOOR_TSS & 0xff_ffff) << 16)
        | (0x89 << 40)
        | (((FLOOR_TSS_LIMIT >> 16) & 0xf) << 48)
        | ((FLOOR_TSS >> 24) << 56);
    put(FLOOR_GDT + 0x28, tss_descriptor);
    // The I/O map base (offset 102) points right after the TSS; the bitmap
    // bytes are already zero except the terminator.
    let iomap = (FLOOR_TSS + 102) as usize;
    memory[iomap..iomap + 2].copy_from_slice(&(TSS_SIZE as u16).to_le_bytes());
    memory[(FLOOR_TSS + FLOOR_TSS_LIMIT) as usize] = 0xff;
    let code = FLOOR_CODE_ADDRESS_CPL3 as usize;
    memory[code..code + FLOOR_CODE.len()].copy_from_slice(&FLOOR_CODE);
}

/// Special registers that start the CPL 3 floor directly at CPL 3 in
/// 64-bit mode (no CPL 0 code at all: `KVM_SET_SREGS` loads CS/SS with
/// DPL 3 and TR with the TSS).
fn cpl3_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: USER_CODE,
        type_: 0b1011,
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
        selector: USER_DATA,
        type_: 0b0011,
        db: 1,
        l: 0,
        ..code
    };
    sregs.cs = code;
    sregs.ss = data;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.tr = kvm_segment {
        base: FLOOR_TSS,
        limit: FLOOR_TSS_LIMIT as u32,
        selector: TSS_SELECTOR,
        type_: 0b1011, // busy 64-bit TSS
        dpl: 0,
        s: 0,
        g: 0,
        db: 0,
        l: 0,
        ..code
    };
    sregs.gdt.base = FLOOR_GDT;
    sregs.gdt.limit = 0x37;
    sregs.cr3 = FLOOR_PML4;
    // PE MP ET NE WP PG (SDM Vol. 3A 2.5); PAE OSFXSR OSXMMEXCPT; LME LMA NXE.
    sregs.cr0 = 0x8001_0033;
    sregs.cr4 = (1 << 5) | (1 << 9) | (1 << 10);
    sregs.efer = (1 << 8) | (1 << 10) | (1 << 11);
    sregs
}

/// A raw VM whose vCPU sits at its first `out` exit.
struct FloorVm {
    _vm: kvm_ioctls::VmFd,
    vcpu: kvm_ioctls::VcpuFd,
    _memory: MmapMut,
}

/// The floor for creation: VM + memslot + vCPU + registers + run to the
/// first exit, with as few ioctls as that takes (the registers go in
/// `kvm_run`'s synced registers, so the first `KVM_RUN` loads them).
fn floor_create(kvm: &Kvm, mode: FloorMode) -> Result<FloorVm, SandboxBenchError> {
    let vm = kvm.create_vm().map_err(floor_error("KVM_CREATE_VM"))?;
    let mut memory =
        MmapMut::map_anon(FLOOR_MEMORY).map_err(|source| SandboxBenchError::Floor {
            operation: "mmap",
            source,
        })?;
    match mode {
        FloorMode::Cpl0 => {
            let code = FLOOR_CODE_ADDRESS as usize;
            memory[code..code + FLOOR_CODE.len()].copy_from_slice(&FLOOR_CODE);
        }
        FloorMode::Cpl3 => write_cpl3_floor(&mut memory),
    }
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: FLOOR_MEMORY as u64,
        userspace_addr: memory.as_ptr() as u64,
    };
    // SAFETY: `memory` lives in the returned FloorVm next to the VM.
    unsafe { vm.set_user_memory_region(region) }
        .map_err(floor_error("KVM_SET_USER_MEMORY_REGION"))?;
    let mut vcpu = vm.create_vcpu(0).map_err(floor_error("KVM_CREATE_VCPU"))?;
    let mut sregs = vcpu.get_sregs().map_err(floor_error("KVM_GET_SREGS"))?;
    let sync = vcpu.sync_regs_mut();
    match mode {
        FloorMode::Cpl0 => {
            sregs.cs.base = 0;
            sregs.cs.selector = 0;
            sync.regs.rip = FLOOR_CODE_ADDRESS;
            sync.regs.rflags = 2;
        }
        FloorMode::Cpl3 => {
            sregs = cpl3_sregs(sregs);
            sync.regs.rip = FLOOR_CODE_ADDRESS_CPL3;
            sync.regs.rsp = FLOOR_MEMORY as u64;
            // IOPL 3 and the reserved bit 1.
            sync.regs.rflags = 0x3002;
        }
    }
    sync.sregs = sregs;
    sync.regs.rdx = u64::from(FLOOR_PORT);
    vcpu.set_sync_dirty_reg(SyncReg::Register);
    vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
    expect_floor_out(vcpu.run(), "first exit")?;
    Ok(FloorVm {
        _vm: vm,
        vcpu,
        _memory: memory,
    })
}

fn expect_floor_out(
    exit: Result<VcpuExit<'_>, kvm_ioctls::Error>,
    which: &'static str,
) -> Result<(), SandboxBenchError> {
    match exit.map_err(floor_error("KVM_RUN"))? {
        VcpuExit::IoOut(FLOOR_PORT, _) => Ok(()),
        _ => Err(SandboxBenchError::Floor {
            operation: which,
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the exit is not an out to port 0x6000",
            ),
        }),
    }
}

fn floor_round_trips(
    kvm: &Kvm,
    mode: FloorMode,
    count: usize,
) -> Result<Vec<Duration>, SandboxBenchError> {
    let mut machine = floor_create(kvm, mode)?;
    // Untimed: check that the guest really exits from the intended CPL.
    let sregs = machine
        .vcpu
        .get_sregs()
        .map_err(floor_error("KVM_GET_SREGS"))?;
    let expected_dpl = match mode {
        FloorMode::Cpl0 => 0,
        FloorMode::Cpl3 => 3,
    };
    if sregs.cs.dpl != expected_dpl {
        return Err(SandboxBenchError::Floor {
            operation: "the floor guest runs at the wrong CPL",
            source: std::io::ErrorKind::InvalidData.into(),
        });
    }
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        let exit = machine.vcpu.run();
        samples.push(start.elapsed());
        expect_floor_out(exit, "round trip")?;
    }
    Ok(samples)
}

fn expect(function: &'static str, value: i64, expected: i64) -> Result<(), SandboxBenchError> {
    if value == expected {
        Ok(())
    } else {
        Err(SandboxBenchError::WrongResult {
            function,
            value,
            expected,
        })
    }
}

fn restore_samples(
    guest: &[u8],
    total: u64,
    count: usize,
) -> Result<Vec<Duration>, SandboxBenchError> {
    let memory = MemoryConfig {
        heap: 1 << 20,
        stack: 128 << 10,
        input: 16 << 10,
        output: 16 << 10,
        total,
    };
    let mut sandbox = SandboxBuilder::from_bytes(guest).memory(memory).build()?;
    let snapshot = sandbox.snapshot()?;
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        sandbox.call::<()>("dirty_pages", (16u32,))?;
        let start = Instant::now();
        sandbox.restore(&snapshot)?;
        samples.push(start.elapsed());
    }
    Ok(samples)
}

/// Runs every measurement against the demo guest `guest` (ELF bytes).
///
/// # Errors
///
/// When KVM, the guest or the floor fails.
pub fn run(
    guest: &[u8],
    config: &SandboxBenchConfig,
) -> Result<SandboxBenchResults, SandboxBenchError> {
    crate::sandbox::kvm::check_available().map_err(SandboxError::from)?;
    let kvm = Kvm::new().map_err(floor_error("open /dev/kvm"))?;

    // Interleave hv and floor creations so all see the same machine load.
    let mut hv_creates = Vec::with_capacity(config.creates);
    let mut floor_creates = Vec::with_capacity(config.creates);
    let mut floor_creates_cpl0 = Vec::with_capacity(config.creates);
    for _ in 0..config.creates {
        for (mode, samples) in [
            (FloorMode::Cpl3, &mut floor_creates),
            (FloorMode::Cpl0, &mut floor_creates_cpl0),
        ] {
            let start = Instant::now();
            let floor = floor_create(&kvm, mode)?;
            samples.push(start.elapsed());
            drop(floor);
        }
        let start = Instant::now();
        let sandbox = SandboxBuilder::from_bytes(guest).build()?;
        hv_creates.push(start.elapsed());
        drop(sandbox);
    }

    let mut sandbox = SandboxBuilder::from_bytes(guest)
        .host_function("host_add", |a: i64, b: i64| a + b)
        .build()?;
    expect("add", sandbox.call("add", (1i64, 2i64))?, 3)?;
    expect("call_host", sandbox.call("call_host", (1i64, 2i64))?, 4)?;
    let floor_calls = median_us(floor_round_trips(&kvm, FloorMode::Cpl3, config.calls)?);
    let floor_calls_cpl0 = median_us(floor_round_trips(&kvm, FloorMode::Cpl0, config.calls)?);
    let mut calls = Vec::with_capacity(config.calls);
    for _ in 0..config.calls {
        let start = Instant::now();
        let sum: i64 = sandbox.call("add", (1i64, 2i64))?;
        calls.push(start.elapsed());
        std::hint::black_box(sum);
    }
    let mut host_calls = Vec::with_capacity(config.calls);
    for _ in 0..config.calls {
        let start = Instant::now();
        let sum: i64 = sandbox.call("call_host", (1i64, 2i64))?;
        host_calls.push(start.elapsed());
        std::hint::black_box(sum);
    }
    drop(sandbox);
    let restore_small = median_us(restore_samples(guest, 4 << 20, config.restores)?);
    let restore_large = median_us(restore_samples(guest, 256 << 20, config.restores)?);
    Ok(SandboxBenchResults {
        create_us: Measurement::new(
            median_us(hv_creates),
            Some(median_us(floor_creates)),
            Some(median_us(floor_creates_cpl0)),
        ),
        call_us: Measurement::new(median_us(calls), Some(floor_calls), Some(floor_calls_cpl0)),
        // A host call is two exit round trips (the host call and the return).
        host_call_us: Measurement::new(
            median_us(host_calls),
            Some(2.0 * floor_calls),
            Some(2.0 * floor_calls_cpl0),
        ),
        restore_us: Measurement::new(restore_small, None, None),
        restore_large_us: Measurement::new(restore_large, Some(restore_small), None),
    })
}
