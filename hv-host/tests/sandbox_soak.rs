//! Soak: 10,000 calls and 1,000 create/drop cycles; open file descriptors
//! and resident memory return to (near) where they started.

mod sandbox_support;

use hv_host::sandbox::SandboxBuilder;
use sandbox_support::{counter_guest, require_kvm};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

fn resident_pages() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn calls_and_create_drop_cycles_do_not_leak() {
    if !require_kvm() {
        return;
    }
    let image = counter_guest();
    // Warm up: /dev/kvm and the watchdog are opened once per process.
    drop(SandboxBuilder::from_bytes(image.clone()).build().unwrap());
    let fds = open_fds();
    let resident = resident_pages();

    let mut sandbox = SandboxBuilder::from_bytes(image.clone()).build().unwrap();
    let snapshot = sandbox.snapshot().unwrap();
    for call in 0..10_000u32 {
        let value: u8 = sandbox.call("next", ()).unwrap();
        assert_eq!(u32::from(value), call % 100 + 1);
        if value == 100 {
            sandbox.restore(&snapshot).unwrap();
        }
    }
    drop(sandbox);
    for _ in 0..1_000 {
        let mut sandbox = SandboxBuilder::from_bytes(image.clone()).build().unwrap();
        assert_eq!(sandbox.call::<u8>("next", ()).unwrap(), 1);
    }
    assert_eq!(open_fds(), fds, "file descriptors leaked");
    let grown = resident_pages().saturating_sub(resident);
    // 16 MiB of slack for allocator caches; a leak of one 8 MiB sandbox
    // mapping (or a few pages per cycle) exceeds it.
    assert!(grown < 4096, "resident memory grew by {grown} pages");
}
