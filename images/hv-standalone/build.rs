//! Links hv-standalone as a static, non-PIE ELF laid out by `linker.ld`:
//! a BIOS boot sector at 0x7C00, the real-mode loader at 0x7E00 and the
//! 64-bit kernel at 1 MiB.
//!
//! It also provides the L2 workload the runner embeds
//! (`include_bytes!(env!("HV_L2_WORKLOAD"))` in `src/runner/mod.rs`): the
//! `l2-checksum` ELF file of this workspace. If `HV_L2_WORKLOAD` is set in
//! the environment it names that file; otherwise this script builds it
//! with a nested `cargo build --release --locked -p l2-checksum` into its
//! own target directory under `OUT_DIR` (a bin cannot depend on another
//! package's bin on stable cargo). The nested cargo gets a cleaned
//! environment, as in hv-host/build.rs: nothing the outer cargo set up for
//! this script (target directory, flags, wrappers, jobserver, profile)
//! leaks into it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

include!("../freestanding/build_support.rs");

fn main() {
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = format!("{dir}/linker.ld");
    println!("cargo:rerun-if-changed={script}");
    println!("cargo:rerun-if-changed=build.rs");
    for arg in FREESTANDING_LINK_ARGS {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    // Its own layout (boot sector, loader, kernel at 1 MiB), not link.ld's.
    println!("cargo:rustc-link-arg-bins=-Wl,--gc-sections");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{script}");

    let workload = l2_workload(Path::new(&dir));
    println!("cargo:rustc-env=HV_L2_WORKLOAD={}", workload.display());
}

/// The path of the `l2-checksum` ELF file: `HV_L2_WORKLOAD` if set, else
/// built here.
fn l2_workload(manifest_dir: &Path) -> PathBuf {
    println!("cargo:rerun-if-env-changed=HV_L2_WORKLOAD");
    if let Some(given) = env::var_os("HV_L2_WORKLOAD") {
        let given = PathBuf::from(given);
        assert!(
            given.is_file(),
            "HV_L2_WORKLOAD={} is not a file: build the l2-checksum image first, or unset \
             HV_L2_WORKLOAD to let this build script build it",
            given.display()
        );
        println!("cargo:rerun-if-changed={}", given.display());
        return given;
    }

    let images = manifest_dir
        .parent()
        .expect("hv-standalone lies in the images workspace");
    for watched in [
        "guests/l2-checksum",
        "freestanding",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", images.join(watched).display());
    }
    let target_dir =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("l2-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(images)
        .args(["build", "--release", "--locked", "-p", "l2-checksum"])
        .arg("--manifest-path")
        .arg(images.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    clean_nested_cargo_env(&mut command);
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("could not run cargo to build l2-checksum: {error}"));
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!(
            "building the L2 workload (cargo build --release -p l2-checksum in {}) failed ({}); \
             its output is above",
            images.display(),
            output.status
        );
    }
    target_dir.join("release").join("l2-checksum")
}
