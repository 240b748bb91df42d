//! Soak, against the demo guest: 10,000 calls (plain, string, host-call
//! and memory-dirtying calls, with a restore every 100) and 1,000
//! create/call/drop cycles; open file descriptors and resident memory
//! return to (near) where they started. Counts only, no timing.

mod sandbox_support;

use hv_host::sandbox::SandboxBuilder;
use sandbox_support::require_kvm;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

fn resident_pages() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn demo(image: &[u8]) -> SandboxBuilder {
    SandboxBuilder::from_bytes(image).host_function("host_add", |a: i64, b: i64| a + b)
}

/// Resident memory may grow this much (16 MiB, for allocator caches and
/// the test harness): a leaked 8 MiB sandbox mapping per 1,000 cycles, or
/// a few pages per cycle, exceeds it.
const RESIDENT_SLACK_PAGES: u64 = 4096;

#[test]
fn calls_and_create_drop_cycles_do_not_leak() {
    if !require_kvm() {
        return;
    }
    let image = std::fs::read(hv_host::images::demo_guest()).expect("the demo guest is built");
    // Warm up: /dev/kvm, the kick signal handler and the deadline watchdog
    // are set up once per process.
    {
        let mut sandbox = demo(&image).build().unwrap();
        let _: i64 = sandbox
            .call_with_deadline("add", (1i64, 1i64), std::time::Duration::from_mins(1))
            .unwrap();
    }
    let fds = open_fds();
    let resident = resident_pages();

    let mut sandbox = demo(&image).build().unwrap();
    let snapshot = sandbox.snapshot().unwrap();
    for call in 0..10_000i64 {
        match call % 4 {
            0 => assert_eq!(sandbox.call::<i64>("add", (call, 1i64)).unwrap(), call + 1),
            1 => assert_eq!(
                sandbox
                    .call::<String>("echo", (format!("call {call}"),))
                    .unwrap(),
                format!("call {call}")
            ),
            2 => assert_eq!(
                sandbox.call::<i64>("call_host", (call, 2i64)).unwrap(),
                call + 3
            ),
            _ => assert_eq!(sandbox.call::<u32>("dirty_pages", (4u32,)).unwrap(), 4),
        }
        if call % 100 == 99 {
            sandbox.restore(&snapshot).unwrap();
        }
    }
    drop(snapshot);
    drop(sandbox);
    assert_eq!(open_fds(), fds, "file descriptors leaked by calls");

    for cycle in 0..1_000i64 {
        let mut sandbox = demo(&image).build().unwrap();
        assert_eq!(
            sandbox.call::<i64>("add", (cycle, 2i64)).unwrap(),
            cycle + 2
        );
    }
    assert_eq!(open_fds(), fds, "file descriptors leaked by create/drop");
    let grown = resident_pages().saturating_sub(resident);
    assert!(
        grown < RESIDENT_SLACK_PAGES,
        "resident memory grew by {grown} pages"
    );
}
