//! Fuzz hv-mmu with hostile EPT12 tables and operation sequences (L2
//! accesses, EPT12 writes with and without INVEPT, root switches, EPT01
//! changes, evictions), checking after every step that no EPT02 leaf maps
//! anything but L1 memory or grants more than EPT12 ∩ EPT01. The scenario
//! lives in `hv_mmu::testing::scenario` so `cargo test` replays the corpus.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use hv_mmu::testing::scenario::Scenario;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(scenario) = Scenario::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    if let Err(failure) = scenario.run() {
        panic!("{failure}");
    }
});
