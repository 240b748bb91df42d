//! Builds the freestanding images (`images/`, a separate cargo workspace
//! with `panic = "abort"` and its own link recipe) with a nested
//! `cargo build --release --locked`, and tells the crate where they are:
//! `HV_IMAGES_DIR` (see `src/images.rs`).
//!
//! The nested cargo must not inherit what the outer cargo set up for this
//! crate: a target directory, flags, wrappers (clippy sets
//! `RUSTC_WORKSPACE_WRAPPER`), the jobserver, profile settings. Every
//! `CARGO_*` variable except the user's cargo home, network and terminal
//! settings is removed, along with a list of plain ones
//! (`clean_nested_cargo_env` in `images/freestanding/build_support.rs`,
//! shared with hv-standalone's build script).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

include!("../images/freestanding/build_support.rs");

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let repository = manifest_dir
        .parent()
        .expect("hv-host lies in the repository root");
    let images = repository.join("images");
    let target_dir = images.join("target");

    // The images link these workspace crates by path (hv-standalone runs
    // hv-core on hardware): a change to any of them rebuilds the images.
    let path_dependencies =
        ["hv-guest-abi", "hv-arch-vmx", "hv-mmu", "hv-core"].map(|name| repository.join(name));
    watch_sources(&images, &path_dependencies);

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&images)
        .arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--manifest-path")
        .arg(images.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    clean_nested_cargo_env(&mut command);
    let output = command.output().unwrap_or_else(|error| {
        panic!("could not run cargo to build {}: {error}", images.display())
    });
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!(
            "building the freestanding images in {} failed ({}); the nested cargo's output is above",
            images.display(),
            output.status
        );
    }
    println!(
        "cargo:rustc-env=HV_IMAGES_DIR={}",
        target_dir.join("release").display()
    );
}

/// Asks cargo to rerun this script when a source of the images changes:
/// every entry of `images/` except `target/` (cargo scans directories
/// recursively), and the ABI crate they share with the host.
fn watch_sources(images: &Path, path_dependencies: &[PathBuf]) {
    let entries =
        fs::read_dir(images).unwrap_or_else(|error| panic!("{}: {error}", images.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|error| panic!("{}: {error}", images.display()))
            .path();
        let skipped = path
            .file_name()
            .is_some_and(|name| name == "target" || name.to_string_lossy().starts_with('.'));
        if !skipped {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    for crate_dir in path_dependencies {
        println!("cargo:rerun-if-changed={}", crate_dir.join("src").display());
        println!(
            "cargo:rerun-if-changed={}",
            crate_dir.join("Cargo.toml").display()
        );
    }
    println!("cargo:rerun-if-changed=build.rs");
}
