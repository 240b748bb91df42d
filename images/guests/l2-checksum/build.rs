//! Links the `l2-checksum` binary as a freestanding image at 2 MiB (see
//! images/freestanding); the library is an ordinary rlib.

include!("../../freestanding/build_support.rs");

fn main() {
    link_freestanding_binaries("../../freestanding");
}
