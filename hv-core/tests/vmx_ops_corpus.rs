//! Replays the `vmx_ops` fuzz corpus (and any regressions kept) through the
//! same scenario code the fuzz target runs, so `cargo test` on stable
//! exercises the target without nightly.
//!
//! Fuzz it for real with `cd fuzz && cargo +nightly fuzz run vmx_ops`.

use arbitrary::{Arbitrary, Unstructured};
use hv_core::model::fuzz::VmxOpsScenario;
use hv_mmu::testing::corpus;

#[test]
fn vmx_ops_corpus_keeps_every_invariant() {
    let files = corpus::files("vmx_ops");
    assert!(
        files.len() >= 10,
        "the committed vmx_ops corpus is missing ({} files)",
        files.len()
    );
    let mut actions = 0;
    let mut entries = 0;
    for path in &files {
        // A running fuzzer may replace corpus files while this test reads them.
        let Ok(data) = std::fs::read(path) else {
            continue;
        };
        // Exactly what fuzz_targets/vmx_ops.rs does.
        let Ok(scenario) = VmxOpsScenario::arbitrary_take_rest(Unstructured::new(&data)) else {
            continue;
        };
        match scenario.run() {
            Ok(report) => {
                actions += report.actions;
                entries += report.nested_entries;
            }
            Err(failure) => panic!("{}: {failure}", path.display()),
        }
    }
    // The corpus must drive hv-core into L2, not just parse.
    assert!(actions > 100, "corpus ran only {actions} actions");
    assert!(entries > 0, "corpus never entered L2");
}
