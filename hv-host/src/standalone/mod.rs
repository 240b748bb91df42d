//! `hv standalone`: boot the hv-standalone image on Bochs.
//!
//! [`run`] builds a disk image from the image's ELF ([`disk`]), writes a
//! Bochs configuration into a fresh temporary directory ([`bochs`]), runs
//! Bochs headless with a timeout, streams the image's console (port 0xE9,
//! which Bochs copies to its standard output) line by line, and reads the
//! image's `@@hv <key> <value>` records into a [`StandaloneReport`].
//!
//! Today the image probes VMX as L0 and stops; nesting (`--nested`, L2
//! guests, slices, flush policies) is issue 5's next milestone.

pub mod bochs;
pub mod cli;
pub mod disk;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

pub use bochs::BochsConfig;
pub use disk::{
    BOOT_FLAG_SELF_TEST_EXCEPTION, DiskImage, DiskImageError, build_disk_image, multiboot2_header,
};

/// The image's file name in the images workspace's release directory.
pub const IMAGE_NAME: &str = "hv-standalone";
/// Environment variable naming the image to boot instead of the built one.
pub const IMAGE_ENV: &str = "HV_STANDALONE_IMAGE";
/// Console lines kept for error reports.
const CONSOLE_TAIL_LINES: usize = 40;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandaloneOptions {
    /// The image ELF; `None` finds it with [`default_image_path`].
    pub image: Option<PathBuf>,
    /// The Bochs executable (a name looked up in `PATH`, or a path).
    pub bochs: PathBuf,
    /// Wall-clock limit for the Bochs run.
    pub timeout: Duration,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Keep the temporary directory (config, disk, logs) after a success.
    pub keep_temp: bool,
    /// Make the image raise #UD after installing its IDT (tests the
    /// exception path; the run then fails with [`RunFailure::Exception`]).
    pub self_test_exception: bool,
    /// `--nested`: run L1 (hv itself) under hv L0. Not yet implemented.
    pub nested: bool,
    /// `--l2 K`: number of L2 workloads. Not yet implemented.
    pub l2_guests: Option<u32>,
    /// `--slices N`: round-robin slices. Not yet implemented.
    pub slices: Option<u32>,
    /// `--policy P`: the EPT02 root-cache policy. Not yet implemented.
    pub policy: Option<String>,
}

impl Default for StandaloneOptions {
    fn default() -> Self {
        Self {
            image: None,
            bochs: PathBuf::from("bochs"),
            timeout: Duration::from_mins(2),
            memory_mib: 128,
            keep_temp: false,
            self_test_exception: false,
            nested: false,
            l2_guests: None,
            slices: None,
            policy: None,
        }
    }
}

/// Why a standalone run failed.
#[derive(Debug, Error)]
pub enum StandaloneError {
    /// A flag for a later milestone of issue 5.
    #[error(
        "`{flag}` is not yet implemented: hv standalone runs the L0 VMX probe only (issue 5, next milestone)"
    )]
    NotYetImplemented {
        /// The flag as typed.
        flag: &'static str,
    },
    /// The image ELF does not exist.
    #[error(
        "hv-standalone image not found at {path} (build it: cargo build --release -p hv-standalone in images/, or set {IMAGE_ENV})"
    )]
    ImageMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The image ELF is malformed.
    #[error("bad hv-standalone image {path}: {source}")]
    BadImage {
        /// The image.
        path: PathBuf,
        /// What is wrong.
        source: DiskImageError,
    },
    /// Bochs could not be found or started.
    #[error(
        "cannot run Bochs ({bochs}): {source}; install it with `apt-get install bochs bochsbios vgabios`"
    )]
    BochsMissing {
        /// The executable tried.
        bochs: PathBuf,
        /// The spawn error.
        source: std::io::Error,
    },
    /// Bochs's BIOS or VGA BIOS files are missing.
    #[error("Bochs firmware missing: {path} (install bochsbios and vgabios)")]
    FirmwareMissing {
        /// The missing file.
        path: PathBuf,
    },
    /// No usable headless display library.
    #[error(
        "no headless Bochs display library found in {plugin_dir} (want libbx_term or libbx_rfb_gui); set HV_BOCHS_DISPLAY"
    )]
    NoDisplayLibrary {
        /// Where plugins were looked for.
        plugin_dir: PathBuf,
    },
    /// A file operation in the temporary directory failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The run ended badly; `failure` says how, the tails say why.
    #[error("{failure}\n--- console (last lines) ---\n{}\n--- Bochs log (relevant lines) ---\n{}\n--- files kept in {} ---", console_tail.join("\n"), log_lines.join("\n"), run_dir.display())]
    RunFailed {
        /// What went wrong.
        failure: RunFailure,
        /// The last console lines.
        console_tail: Vec<String>,
        /// Bochs log lines that explain it (errors, panics, the CPU dump).
        log_lines: Vec<String>,
        /// The kept temporary directory.
        run_dir: PathBuf,
    },
}

/// How a run that started ended badly.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RunFailure {
    /// Bochs was still running at the deadline (and was killed).
    #[error("Bochs timed out after {0:?}")]
    Timeout(Duration),
    /// The CPU triple-faulted (Bochs: "3rd exception with no resolution").
    #[error("triple fault in the image")]
    TripleFault,
    /// The image took an exception and reported it.
    #[error("the image took an exception: {0}")]
    Exception(String),
    /// The image reported a failure.
    #[error("the image failed: {0}")]
    ImageFailed(String),
    /// The image panicked.
    #[error("the image panicked: {0}")]
    Panic(String),
    /// Bochs ended without the image printing a status line.
    #[error("Bochs exited ({0}) without a status line from the image")]
    NoStatus(String),
}

/// The result of a successful run.
#[derive(Debug, Clone, Serialize)]
pub struct StandaloneReport {
    /// Always "bochs".
    pub engine: &'static str,
    /// Whether hv ran nested (L1 under L0). Always false for now.
    pub nested: bool,
    /// The image's final status ("ok").
    pub status: String,
    /// The VMX capability summary the image printed (`@@hv vmx`).
    pub vmx: serde_json::Value,
    /// Frame-allocator counts (`@@hv frames`), as key/value pairs.
    pub frames: serde_json::Map<String, serde_json::Value>,
    /// Bochs's tick count at shutdown, from its log: one tick per executed
    /// instruction, with idle (HLT) time skipped ahead under
    /// `clock: sync=none`. Deterministic for a given image.
    pub bochs_instructions: Option<u64>,
    /// Wall-clock time of the Bochs run in milliseconds.
    pub bochs_wall_ms: u64,
    /// The CPU model Bochs emulated.
    pub cpu_model: &'static str,
    /// The image booted.
    pub image: PathBuf,
    /// The console lines (without the `@@hv` records).
    #[serde(skip)]
    pub console: Vec<String>,
}

/// Where the images build (hv-host's build script) leaves hv-standalone,
/// or `$HV_STANDALONE_IMAGE` if set.
pub fn default_image_path() -> PathBuf {
    if let Some(path) = std::env::var_os(IMAGE_ENV) {
        return PathBuf::from(path);
    }
    let directory = option_env!("HV_IMAGES_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/target/release"),
        PathBuf::from,
    );
    directory.join(IMAGE_NAME)
}

/// Rejects the flags of later milestones with a clear error.
fn reject_unimplemented(options: &StandaloneOptions) -> Result<(), StandaloneError> {
    let flag = if options.nested {
        "--nested"
    } else if options.l2_guests.is_some() {
        "--l2"
    } else if options.slices.is_some() {
        "--slices"
    } else if options.policy.is_some() {
        "--policy"
    } else {
        return Ok(());
    };
    Err(StandaloneError::NotYetImplemented { flag })
}

/// Boots hv-standalone on Bochs and returns what it reported.
/// `on_console_line` sees each console line as it arrives (including the
/// `@@hv` records).
///
/// # Errors
///
/// [`StandaloneError`]: a flag not yet implemented, a missing or bad
/// image, Bochs missing, or a run that failed ([`RunFailure`]: timeout,
/// triple fault, exception, image failure, no status).
pub fn run(
    options: &StandaloneOptions,
    on_console_line: impl FnMut(&str),
) -> Result<StandaloneReport, StandaloneError> {
    reject_unimplemented(options)?;
    let image = options.image.clone().unwrap_or_else(default_image_path);
    let elf = std::fs::read(&image).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => StandaloneError::ImageMissing {
            path: image.clone(),
        },
        _ => StandaloneError::Io {
            what: "reading",
            path: image.clone(),
            source,
        },
    })?;
    let mut disk = build_disk_image(&elf).map_err(|source| StandaloneError::BadImage {
        path: image.clone(),
        source,
    })?;
    if options.self_test_exception {
        disk.set_boot_flags(BOOT_FLAG_SELF_TEST_EXCEPTION);
    }
    let config = BochsConfig::detect(options)?;
    let outcome = bochs::run_bochs(&config, &disk, options, on_console_line)?;
    outcome.into_report(image, config.cpu_model)
}
