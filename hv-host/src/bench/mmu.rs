//! `hv bench mmu`: one trace, four policies.
//!
//! One L1 runs K L2 guests (each with its own EPT12 mapping 256 pages) and
//! switches between them round-robin. In each slice the running L2 touches
//! 64 of its pages (alternating writes and reads, a window that moves by 64
//! pages every round, so every page is touched every four rounds). An
//! access reaches the engine only when the EPT02 the engine built would
//! fault in hardware (checked with [`translate_ept02`]); engine time is the
//! time spent inside `switch_to` and `handle_ept_violation`, so the
//! simulated hardware walk is not counted. Counts (fills, flushes, frames)
//! are exact; times are medians of nothing, just totals over the run,
//! measured for all policies in the same process.

use std::time::{Duration, Instant};

use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::ept::{EptPermissions, EptWalkContext, Eptp};
use hv_mmu::addr::{HostPa, L1Gpa, L2Gpa, PAGE_SIZE, PageSize};
use hv_mmu::testing::hardware::translate_ept02;
use hv_mmu::testing::{Ept12Builder, FramePool, TestEpt01, TestMemory};
use hv_mmu::walk::Access;
use hv_mmu::{FaultOutcome, Mmu, MmuConfig, MmuError, Policy};

/// Pages each L2 maps.
pub const PAGES_PER_GUEST: u64 = 256;
/// Pages an L2 touches per slice.
pub const PAGES_PER_SLICE: u64 = 64;
/// L1 pages reserved for each L2's EPT12 tables.
const TABLE_PAGES_PER_GUEST: u64 = 8;
/// Host address of L1 page 0.
const HOST_BASE: u64 = 0x1_0000_0000;

/// The trace's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmuBenchConfig {
    /// Numbers of L2 guests to run, one trace each.
    pub guests: Vec<usize>,
    /// Measured switches per trace, after warm-up.
    pub switches: usize,
}

impl Default for MmuBenchConfig {
    fn default() -> Self {
        Self {
            guests: vec![1, 4, 16, 64],
            switches: 100_000,
        }
    }
}

/// One policy on one trace.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MmuBenchResult {
    /// `"hv"`, `"kvm"`, `"xen"` or `"flush-always"`.
    pub policy: &'static str,
    /// Number of L2 guests (K).
    pub l2_guests: usize,
    /// Engine time per switch, including the fills the switch caused.
    pub ns_per_switch: f64,
    /// EPT02 fills per switch.
    pub fills_per_switch: f64,
    /// INVEPTs the engine asked for, per switch.
    pub flushes_per_switch: f64,
    /// Shadow-table frames in use at the end.
    pub frames: usize,
    /// Measured switches.
    pub switches: usize,
    /// EPT02 fills during the measured switches (exact).
    pub fills: u64,
    /// INVEPTs asked for during the measured switches (exact).
    pub flushes: u64,
}

/// Why the trace could not run.
#[derive(Debug, thiserror::Error)]
pub enum MmuBenchError {
    /// Building the L2s' EPT12 failed.
    #[error("building EPT12 for the trace: {0}")]
    Build(#[from] hv_mmu::testing::Ept12BuildError),
    /// The engine failed.
    #[error("engine: {0}")]
    Engine(#[from] MmuError),
    /// The engine did not fill a page the trace maps.
    #[error("{policy}: access to {gpa} of L2 {guest} was not filled: {outcome:?}")]
    NotFilled {
        /// Policy.
        policy: &'static str,
        /// Which L2.
        guest: usize,
        /// Address.
        gpa: L2Gpa,
        /// What the engine said instead.
        outcome: FaultOutcome,
    },
}

/// The L1 image: K L2 guests with their EPT12s.
struct World {
    memory: TestMemory,
    ept01: TestEpt01,
    eptps: Vec<Eptp>,
}

fn build_world(guests: usize) -> Result<World, MmuBenchError> {
    let guests_u64 = guests as u64;
    let table_bytes = guests_u64 * TABLE_PAGES_PER_GUEST * PAGE_SIZE;
    let size = table_bytes + guests_u64 * PAGES_PER_GUEST * PAGE_SIZE;
    let mut memory = TestMemory::new(size);
    let ept01 = TestEpt01::identity(size, HostPa::new(HOST_BASE));
    let mut eptps = Vec::with_capacity(guests);
    for guest in 0..guests_u64 {
        let tables = L1Gpa::new(guest * TABLE_PAGES_PER_GUEST * PAGE_SIZE);
        let data = L1Gpa::new(table_bytes + guest * PAGES_PER_GUEST * PAGE_SIZE);
        let mut ept12 = Ept12Builder::new(&mut memory, tables)?;
        ept12.map_range(
            &mut memory,
            L2Gpa::new(0),
            data,
            PAGES_PER_GUEST * PAGE_SIZE,
            PageSize::Size4K,
            EptPermissions::READ_WRITE_EXECUTE,
        )?;
        eptps.push(ept12.eptp(false));
    }
    Ok(World {
        memory,
        ept01,
        eptps,
    })
}

/// Runs one slice of guest `guest` (the `round`-th of that guest): switch
/// to its root, touch its window of pages. Returns the engine time.
fn slice(
    mmu: &mut Mmu<FramePool>,
    world: &mut World,
    guest: usize,
    round: u64,
) -> Result<Duration, MmuBenchError> {
    let start = Instant::now();
    let switch = mmu.switch_to(world.eptps[guest])?;
    let mut engine = start.elapsed();
    let first = (round * PAGES_PER_SLICE) % PAGES_PER_GUEST;
    for page in first..first + PAGES_PER_SLICE {
        let gpa = L2Gpa::new((page % PAGES_PER_GUEST) * PAGE_SIZE);
        let access = if page % 2 == 0 {
            Access::WRITE
        } else {
            Access::READ
        };
        let hardware = translate_ept02(mmu.frames(), switch.eptp02, gpa);
        if hardware.is_some_and(|translation| translation.allows(access)) {
            continue;
        }
        let start = Instant::now();
        let outcome = mmu.handle_ept_violation(&mut world.memory, &world.ept01, gpa, access)?;
        engine += start.elapsed();
        if !matches!(outcome, FaultOutcome::Filled { .. }) {
            return Err(MmuBenchError::NotFilled {
                policy: mmu.config().policy.name(),
                guest,
                gpa,
                outcome,
            });
        }
    }
    Ok(engine)
}

/// Runs the trace for `guests` L2s under `policy`: a warm-up that touches
/// every page of every L2, then `switches` measured switches.
///
/// # Errors
///
/// [`MmuBenchError`] when the engine fails or leaves a mapped page unfilled.
pub fn run_one(
    policy: Policy,
    guests: usize,
    switches: usize,
) -> Result<MmuBenchResult, MmuBenchError> {
    let mut world = build_world(guests)?;
    let caps = VmxCapabilities::bochs_skylake_x();
    let config = MmuConfig::new(policy, EptWalkContext::from_capabilities(&caps, 46, false));
    let mut mmu = Mmu::new(config, FramePool::new(config.frame_budget));
    let rounds_to_touch_all = PAGES_PER_GUEST / PAGES_PER_SLICE;
    let warmup = guests * rounds_to_touch_all as usize;
    for step in 0..warmup {
        slice(&mut mmu, &mut world, step % guests, (step / guests) as u64)?;
    }
    let before = mmu.stats();
    let mut engine = Duration::ZERO;
    for step in warmup..warmup + switches {
        engine += slice(&mut mmu, &mut world, step % guests, (step / guests) as u64)?;
    }
    let after = mmu.stats();
    #[allow(clippy::cast_precision_loss)]
    let per_switch = |count: u64| count as f64 / switches.max(1) as f64;
    let fills = after.fills - before.fills;
    let flushes = after.flushes - before.flushes;
    Ok(MmuBenchResult {
        policy: policy.name(),
        l2_guests: guests,
        ns_per_switch: per_switch(u64::try_from(engine.as_nanos()).unwrap_or(u64::MAX)),
        fills_per_switch: per_switch(fills),
        flushes_per_switch: per_switch(flushes),
        frames: after.frames_in_use,
        switches,
        fills,
        flushes,
    })
}

/// Runs every policy on every trace of `config`.
///
/// # Errors
///
/// The first [`MmuBenchError`].
pub fn run(config: &MmuBenchConfig) -> Result<Vec<MmuBenchResult>, MmuBenchError> {
    let mut results = Vec::new();
    for &guests in &config.guests {
        for policy in Policy::ALL {
            results.push(run_one(policy, guests, config.switches)?);
        }
    }
    Ok(results)
}
