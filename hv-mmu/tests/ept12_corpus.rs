//! Replays the `ept12` fuzz corpus (and the crashes it found, kept as
//! regressions) through the same scenario code the fuzz target runs, so
//! `cargo test` on stable exercises the target without nightly.
//!
//! Fuzz it for real with `cd fuzz && cargo +nightly fuzz run ept12`.

use arbitrary::{Arbitrary, Unstructured};
use hv_mmu::testing::corpus;
use hv_mmu::testing::scenario::Scenario;

#[test]
fn ept12_corpus_keeps_every_invariant() {
    let files = corpus::files("ept12");
    assert!(
        files.len() >= 10,
        "the committed ept12 corpus is missing ({} files)",
        files.len()
    );
    let mut steps = 0;
    let mut full_checks = 0;
    for path in &files {
        // A running fuzzer may replace corpus files while this test reads them.
        let Ok(data) = std::fs::read(path) else {
            continue;
        };
        // Exactly what fuzz_targets/ept12.rs does.
        let Ok(scenario) = Scenario::arbitrary_take_rest(Unstructured::new(&data)) else {
            continue;
        };
        match scenario.run() {
            Ok(report) => {
                steps += report.steps;
                full_checks += report.full_checks;
            }
            Err(failure) => panic!("{}: {failure}", path.display()),
        }
    }
    // The corpus must actually drive the engine, not just parse.
    assert!(steps > 1000, "corpus ran only {steps} steps");
    assert!(
        full_checks > 100,
        "corpus ran only {full_checks} oracle checks"
    );
}
