//! The smallest sandbox guest: `nop() -> ()`, for create/call benchmarks.
#![no_std]
#![no_main]

hv_guest::main!(init);

fn init() {
    hv_guest::register("nop", || ());
}
