//! Fuzz hv-core on the software model with arbitrary L1 VMX instruction
//! sequences (arbitrary operands, VMCS12 and EPT12 contents, L2 accesses,
//! EPT01 changes), checking that nothing panics, no stale translation is
//! ever used, every VMCS02 passes the entry checks and nothing livelocks.
//! The scenario lives in `hv_core::model::fuzz` so `cargo test` replays the
//! corpus.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use hv_core::model::fuzz::VmxOpsScenario;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(scenario) = VmxOpsScenario::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    if let Err(failure) = scenario.run() {
        panic!("{failure}");
    }
});
