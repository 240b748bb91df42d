//! Links this guest as a freestanding image (see images/freestanding).

include!("../../freestanding/build_support.rs");

fn main() {
    link_freestanding_binaries("../../freestanding");
}
