// Build-script support for freestanding hv images, shared by `include!`:
//
//     // build.rs of an image binary crate
//     include!("../../freestanding/build_support.rs"); // path from your crate
//     fn main() {
//         link_freestanding_binaries("../../freestanding");
//     }
//
// It is a file to include, not a crate, because a build dependency on
// hv-freestanding would compile its `memcpy` & co. into the build script.
// hv-host's build script includes it too, for `clean_nested_cargo_env`.

/// Prints the `cargo:` lines that link every binary of the calling package
/// as a freestanding image: no C runtime, no libc, static, not
/// position-independent, laid out by `link.ld` at 2 MiB.
/// `freestanding_dir` is the `images/freestanding` directory, relative to
/// the calling package's manifest directory (a build script's working
/// directory) or absolute.
#[allow(dead_code, clippy::missing_panics_doc)]
pub fn link_freestanding_binaries(freestanding_dir: &str) {
    let script = std::path::Path::new(freestanding_dir).join("link.ld");
    let script = script
        .canonicalize()
        .unwrap_or_else(|error| panic!("linker script {}: {error}", script.display()));
    for arg in FREESTANDING_LINK_ARGS {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=build.rs");
}

/// The linker-driver (`cc`) arguments of a freestanding image, without the
/// `-Wl,-T,<linker script>` that must follow them.
#[allow(dead_code)]
pub const FREESTANDING_LINK_ARGS: [&str; 8] = [
    // No crt1.o/crti.o: `_start` is ours.
    "-nostartfiles",
    // No libc, libgcc or libm.
    "-nostdlib",
    "-static",
    // rustc links position-independent executables by default; the last
    // of `-pie`/`-no-pie` wins, and the image runs at its link address.
    "-no-pie",
    "-Wl,--build-id=none",
    // Segments aligned to 4 KiB pages (not 2 MiB) so the image stays small.
    "-Wl,-z,max-page-size=4096",
    "-Wl,-z,noexecstack",
    "-Wl,--no-dynamic-linker",
];

/// Variables without a `CARGO_` prefix that change what a nested cargo or
/// rustc does.
#[allow(dead_code)]
const NESTED_CARGO_REMOVED_VARIABLES: &[&str] = &[
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "MAKEFLAGS",
    "MFLAGS",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
    "TARGET",
    "HOST",
    "NUM_JOBS",
    "OUT_DIR",
    "RUSTC_LINKER",
    "CLIPPY_ARGS",
    "CLIPPY_CONF_DIR",
    "__CARGO_FIX_PLZ",
];

/// `CARGO_*` variables a nested cargo keeps: where cargo lives, how it
/// reaches the network, how it prints.
#[allow(dead_code)]
const NESTED_CARGO_KEPT_PREFIXES: &[&str] = &[
    "CARGO_HOME",
    "CARGO_NET_",
    "CARGO_HTTP_",
    "CARGO_REGISTRIES_",
    "CARGO_REGISTRY_",
    "CARGO_TERM_",
];

/// Removes from `command` what the outer cargo set up for the calling
/// build script (target directory, flags, wrappers such as clippy's
/// `RUSTC_WORKSPACE_WRAPPER`, the jobserver, profile settings), so that a
/// nested `cargo build` behaves as if run by hand: every `CARGO_*`
/// variable except the user's cargo home, network and terminal settings,
/// and the plain variables in `NESTED_CARGO_REMOVED_VARIABLES`.
#[allow(dead_code)]
pub fn clean_nested_cargo_env(command: &mut std::process::Command) {
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else {
            continue;
        };
        let removed = NESTED_CARGO_REMOVED_VARIABLES.contains(&name)
            || (name.starts_with("CARGO_")
                && !NESTED_CARGO_KEPT_PREFIXES
                    .iter()
                    .any(|prefix| name.starts_with(prefix)));
        if removed {
            command.env_remove(name);
        }
    }
}
