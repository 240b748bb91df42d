//! `hv bench sandbox`: sandbox create, call, host call and restore
//! latencies against the raw KVM floor measured in the same run (the same
//! ioctls done directly with the fewest steps). All figures are medians.
//!
//! - create: hv builds a sandbox from the demo guest's bytes and runs it to
//!   `Ready`; the floor creates a VM, a 2 MiB memslot and a vCPU, and runs
//!   a real-mode `out` to the first exit.
//! - call / host call: hv calls `add(1, 2)` / `call_host(1, 2)` (which calls
//!   host function `host_add`); the floor is one `out` exit round trip
//!   (`KVM_RUN` -> `KVM_EXIT_IO` -> `KVM_RUN`) of a guest looping on `out`.
//! - restore: after `dirty_pages(16)`, restore a snapshot; 4 MiB sandbox
//!   (`restore_us`) and 256 MiB sandbox (`restore_large_us`), no floor.

use std::time::{Duration, Instant};

use kvm_bindings::kvm_userspace_memory_region;
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
}

impl Measurement {
    fn new(hv: f64, floor: Option<f64>) -> Self {
        Self {
            hv,
            floor,
            ratio: floor.map(|floor| hv / floor),
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

/// A raw VM whose vCPU sits at its first `out` exit.
struct FloorVm {
    _vm: kvm_ioctls::VmFd,
    vcpu: kvm_ioctls::VcpuFd,
    _memory: MmapMut,
}

/// The floor for creation: VM + memslot + vCPU + registers + run to the
/// first exit, with as few ioctls as that takes.
fn floor_create(kvm: &Kvm) -> Result<FloorVm, SandboxBenchError> {
    let vm = kvm.create_vm().map_err(floor_error("KVM_CREATE_VM"))?;
    let mut memory =
        MmapMut::map_anon(FLOOR_MEMORY).map_err(|source| SandboxBenchError::Floor {
            operation: "mmap",
            source,
        })?;
    memory[0x1000..0x1000 + FLOOR_CODE.len()].copy_from_slice(&FLOOR_CODE);
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
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    let sync = vcpu.sync_regs_mut();
    sync.sregs = sregs;
    sync.regs.rip = 0x1000;
    sync.regs.rdx = 0x6000;
    sync.regs.rflags = 2;
    vcpu.set_sync_dirty_reg(SyncReg::Register);
    vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
    match vcpu.run().map_err(floor_error("KVM_RUN"))? {
        VcpuExit::IoOut(0x6000, _) => {}
        _ => {
            return Err(SandboxBenchError::Floor {
                operation: "first exit is not out to 0x6000",
                source: std::io::ErrorKind::InvalidData.into(),
            });
        }
    }
    Ok(FloorVm {
        _vm: vm,
        vcpu,
        _memory: memory,
    })
}

fn floor_round_trips(kvm: &Kvm, count: usize) -> Result<Vec<Duration>, SandboxBenchError> {
    let mut machine = floor_create(kvm)?;
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        let exit = machine.vcpu.run().map_err(floor_error("KVM_RUN"))?;
        samples.push(start.elapsed());
        if !matches!(exit, VcpuExit::IoOut(0x6000, _)) {
            return Err(SandboxBenchError::Floor {
                operation: "round trip exit is not out to 0x6000",
                source: std::io::ErrorKind::InvalidData.into(),
            });
        }
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

    // Interleave hv and floor creations so both see the same machine load.
    let mut hv_creates = Vec::with_capacity(config.creates);
    let mut floor_creates = Vec::with_capacity(config.creates);
    for _ in 0..config.creates {
        let start = Instant::now();
        let floor = floor_create(&kvm)?;
        floor_creates.push(start.elapsed());
        drop(floor);
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
    let floor_calls = floor_round_trips(&kvm, config.calls)?;
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
    let floor_call = median_us(floor_calls);
    // A host call is two exit round trips (the host call and the return).
    let restore_small = median_us(restore_samples(guest, 4 << 20, config.restores)?);
    let restore_large = median_us(restore_samples(guest, 256 << 20, config.restores)?);
    Ok(SandboxBenchResults {
        create_us: Measurement::new(median_us(hv_creates), Some(median_us(floor_creates))),
        call_us: Measurement::new(median_us(calls), Some(floor_call)),
        host_call_us: Measurement::new(median_us(host_calls), Some(2.0 * floor_call)),
        restore_us: Measurement::new(restore_small, None),
        restore_large_us: Measurement::new(restore_large, Some(restore_small)),
    })
}
