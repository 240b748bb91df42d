//! hv-mmu's hot paths, with criterion:
//!
//! - `root_switch_hit`: `switch_to` an EPTP12 whose root is cached (the
//!   plain L1->L2 entry). Target: under 100 ns.
//! - `fill_4k` against `oracle_walk_4k`: handling an EPT02 violation on a 4K
//!   page of an existing root (walk EPT12 with A/D, compose with EPT01,
//!   write the shadow leaf and its reverse-map entry) against the bare
//!   reference composition of the same page (walk EPT12, then EPT01, no
//!   caching). Target: fill under 3x the oracle walk.
//!
//! Run: `cargo bench -p hv-benches --bench mmu`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::ept::{EptPermissions, EptWalkContext, Eptp};
use hv_mmu::addr::{HostPa, L1Gfn, L1Gpa, L2Gpa, PAGE_SIZE, PageSize};
use hv_mmu::oracle::compose;
use hv_mmu::testing::{Ept12Builder, FramePool, TestEpt01, TestMemory};
use hv_mmu::walk::{Access, WalkConfig};
use hv_mmu::{Mmu, MmuConfig, Policy};

const PAGES: u64 = 512;

struct World {
    memory: TestMemory,
    ept01: TestEpt01,
    eptps: [Eptp; 2],
    context: EptWalkContext,
}

fn world() -> World {
    let size = 64 * PAGE_SIZE + 2 * PAGES * PAGE_SIZE;
    let mut memory = TestMemory::new(size);
    let ept01 = TestEpt01::identity(size, HostPa::new(0x1_0000_0000));
    let mut eptps = [Eptp::from_raw(0); 2];
    for (guest, eptp) in eptps.iter_mut().enumerate() {
        let guest = guest as u64;
        let mut ept12 =
            Ept12Builder::new(&mut memory, L1Gpa::new(guest * 32 * PAGE_SIZE)).expect("tables");
        let data = L1Gpa::new(64 * PAGE_SIZE + guest * PAGES * PAGE_SIZE);
        ept12
            .map_range(
                &mut memory,
                L2Gpa::new(0),
                data,
                PAGES * PAGE_SIZE,
                PageSize::Size4K,
                EptPermissions::READ_WRITE_EXECUTE,
            )
            .expect("map");
        *eptp = ept12.eptp(true);
    }
    let context = EptWalkContext::from_capabilities(&VmxCapabilities::bochs_skylake_x(), 46, false);
    World {
        memory,
        ept01,
        eptps,
        context,
    }
}

fn mmu(world: &World) -> Mmu<FramePool> {
    let config = MmuConfig::new(Policy::Hv, world.context);
    Mmu::new(config, FramePool::new(config.frame_budget))
}

fn root_switch_hit(c: &mut Criterion) {
    let mut world = world();
    let mut mmu = mmu(&world);
    for eptp in world.eptps {
        mmu.switch_to(eptp).expect("switch");
        mmu.handle_ept_violation(&mut world.memory, &world.ept01, L2Gpa::new(0), Access::READ)
            .expect("fill");
    }
    let mut next = 0;
    c.bench_function("root_switch_hit", |b| {
        b.iter(|| {
            next ^= 1;
            black_box(mmu.switch_to(black_box(world.eptps[next])).expect("switch"))
        });
    });
    assert_eq!(
        mmu.stats().root_misses,
        2,
        "every measured switch hit the cache"
    );
}

/// Fills `iters` 4K pages, each on a root that already has its tables (so
/// the time is the fill, not table allocation), timing only the fills.
fn fill_pages(world: &mut World, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let mut mmu = mmu(world);
        mmu.switch_to(world.eptps[0]).expect("switch");
        // Page 0 builds the PML4, PDPT, PD and PT; the timed fills reuse them.
        mmu.handle_ept_violation(&mut world.memory, &world.ept01, L2Gpa::new(0), Access::READ)
            .expect("fill");
        for page in 1..PAGES {
            if done == iters {
                break;
            }
            let gpa = L2Gpa::new(page * PAGE_SIZE);
            let start = Instant::now();
            black_box(
                mmu.handle_ept_violation(&mut world.memory, &world.ept01, gpa, Access::READ)
                    .expect("fill"),
            );
            total += start.elapsed();
            done += 1;
        }
        // Clear the A/D flags the walks set, so every batch walks the same.
        for gfn in 0..64 {
            for index in 0..512 {
                let gpa = L1Gfn::new(gfn).address().wrapping_add(index * 8);
                let value = world.memory.read_u64(gpa).expect("table");
                let _ = world.memory.write_u64(gpa, value & !(3 << 8));
            }
        }
    }
    total
}

fn fill_against_oracle(c: &mut Criterion) {
    let mut world = world();
    let mut group = c.benchmark_group("4k");
    group.bench_function("fill_4k", |b| {
        b.iter_custom(|iters| fill_pages(&mut world, iters));
    });
    let config = WalkConfig::new(world.eptps[0], world.context, false).expect("config");
    let mut page = 0;
    group.bench_function("oracle_walk_4k", |b| {
        b.iter(|| {
            page = (page + 1) % PAGES;
            black_box(compose(
                &world.memory,
                &world.ept01,
                world.eptps[0],
                L2Gpa::new(page * PAGE_SIZE),
                &config,
            ))
        });
    });
    group.finish();
}

criterion_group!(
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = root_switch_hit, fill_against_oracle
);
criterion_main!(benches);
