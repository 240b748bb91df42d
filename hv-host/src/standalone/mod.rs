//! `hv standalone`: boot the hv-standalone image on Bochs.
//!
//! [`run`] builds a disk image from the image's ELF ([`disk`]), patches the
//! run configuration into it (the "HVCF" record: mode, K, policy, illegal
//! case, N), writes a Bochs configuration into a fresh temporary directory
//! ([`bochs`]), runs Bochs headless with a timeout, streams the image's
//! console (port 0xE9, which Bochs copies to its standard output) line by
//! line, and reads the image's `@@hv <key> <value>` records into a
//! [`StandaloneReport`].
//!
//! The image probes VMX as L0, then (by the record's mode) stops, runs K
//! L2 workloads itself for N slices (one level), or boots itself as L1
//! under hv-core, which runs the workloads as L2 (nested). In both workload
//! modes L0 ends with `@@hv result {json}` ([`RunResult`]); L1's console
//! reaches us through L0 with the prefix `L1| ` (never parsed as records).
//! The contract is `notes/standalone.md`.

pub mod bochs;
pub mod cli;
pub mod disk;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use bochs::BochsConfig;
pub use disk::{
    BOOT_FLAG_SELF_TEST_EXCEPTION, DiskImage, DiskImageError, IllegalCase, MAX_L2_GUESTS,
    MAX_SLICES, Policy, RunConfig, RunConfigError, RunMode, build_disk_image, multiboot2_header,
};

/// The image's file name in the images workspace's release directory.
pub const IMAGE_NAME: &str = "hv-standalone";
/// Environment variable naming the image to boot instead of the built one.
pub const IMAGE_ENV: &str = "HV_STANDALONE_IMAGE";
/// Console lines kept for error reports.
const CONSOLE_TAIL_LINES: usize = 40;
/// Guest RAM by default: L0 gives L1 64 MiB in nested runs, and the
/// L2 workloads, EPT tables and VMCSs need room besides.
pub const DEFAULT_MEMORY_MIB: u32 = 256;
/// The prefix L0 puts on each console line it forwards from L1.
pub const L1_CONSOLE_PREFIX: &str = "L1| ";

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
    /// What the image runs after the VMX probe (patched into its "HVCF"
    /// record).
    pub config: RunConfig,
}

impl Default for StandaloneOptions {
    fn default() -> Self {
        Self {
            image: None,
            bochs: PathBuf::from("bochs"),
            timeout: Duration::from_mins(5),
            memory_mib: DEFAULT_MEMORY_MIB,
            keep_temp: false,
            self_test_exception: false,
            config: RunConfig::default(),
        }
    }
}

/// Why a standalone run failed.
#[derive(Debug, Error)]
pub enum StandaloneError {
    /// The run configuration is invalid (K, N, a policy without nesting).
    #[error("{0}")]
    Config(#[from] RunConfigError),
    /// The image ELF does not exist.
    #[error(
        "hv-standalone image not found at {path} (build it: cargo build --release -p hv-standalone in images/, or set {IMAGE_ENV})"
    )]
    ImageMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The image ELF is malformed, or lacks the run-config record.
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
    #[error(transparent)]
    RunFailed(Box<FailedRun>),
}

/// A run that started and ended badly, with what explains it.
#[derive(Debug, Error)]
#[error("{failure}\n--- console (last lines) ---\n{}\n--- Bochs log (relevant lines) ---\n{}\n--- files kept in {} ---", console_tail.join("\n"), log_lines.join("\n"), run_dir.display())]
pub struct FailedRun {
    /// What went wrong.
    pub failure: RunFailure,
    /// The last console lines.
    pub console_tail: Vec<String>,
    /// Bochs log lines that explain it (errors, panics, the CPU dump).
    pub log_lines: Vec<String>,
    /// The kept temporary directory.
    pub run_dir: PathBuf,
    /// What the image reported, when it got as far as a result line
    /// (a wrong L2 result, a wrong answer to an illegal case).
    pub report: Option<StandaloneReport>,
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
    /// The image said `status ok` without the `@@hv result` line a
    /// workload run must print.
    #[error("the image reported status ok but no `@@hv result` line ({0} run)")]
    NoResult(&'static str),
    /// The `@@hv result` line is not the contract's JSON object.
    #[error("malformed `@@hv result` line: {0}")]
    BadResult(String),
    /// The result describes a different run from the one asked for (an
    /// image that did not read its run-config record).
    #[error("the result says {key} = {reported}, but the run asked for {asked}")]
    ResultMismatch {
        /// The result key.
        key: &'static str,
        /// What the launcher asked for.
        asked: String,
        /// What the image reported.
        reported: String,
    },
    /// An L2 result checked by the runner was wrong (`l2_ok: false`).
    #[error(
        "an L2 result was wrong (l2_ok false; {reports} reports checked, {slices_run} slices run)"
    )]
    L2Failed {
        /// Reports checked.
        reports: u64,
        /// Slices run.
        slices_run: u64,
    },
    /// The illegal case asked for was not reported.
    #[error("the illegal case {0} was asked for but not reported")]
    IllegalNotReported(&'static str),
    /// The illegal case got an answer other than the SDM's.
    #[error(
        "the illegal case {case} got the wrong answer: observed {observed:#x}, expected {expected:#x}"
    )]
    IllegalWrong {
        /// The case.
        case: &'static str,
        /// What the runner saw (VM-instruction error or exit reason).
        observed: u64,
        /// The SDM's answer.
        expected: u64,
    },
}

/// L0's counters in the result line (`l0`); zero where a one-level run
/// has nothing to count. Keys the contract does not name are kept in
/// `extra` and passed through to the JSON summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct L0Counters {
    /// Nested VM entries (L1's VMLAUNCH/VMRESUME that entered L2).
    pub nested_entries: u64,
    /// L2 exits reflected to L1.
    pub reflected_exits: u64,
    /// EPT02 entries filled from EPT12 on EPT violations.
    pub ept02_fills: u64,
    /// EPT02 roots alive at the end.
    pub roots_live: u64,
    /// INVEPTs L0 executed.
    pub invept: u64,
    /// INVVPIDs L0 executed.
    pub invvpid: u64,
    /// INVEPTs after every L2 ran once (the steady state).
    pub steady_invept: u64,
    /// INVVPIDs after every L2 ran once.
    pub steady_invvpid: u64,
    /// VM exits from L1 to L0.
    pub l1_exits: u64,
    /// Any further counters.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The answer the runner got to its illegal case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IllegalOutcome {
    /// The case.
    pub case: IllegalCase,
    /// Whether the answer was the SDM's.
    pub ok: bool,
    /// What the runner saw (VM-instruction error or exit reason).
    pub observed: u64,
    /// The SDM's answer.
    pub expected: u64,
}

/// The `@@hv result {json}` line of a workload run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RunResult {
    /// Whether the workloads ran under L1 (nested).
    pub nested: bool,
    /// K.
    pub l2_guests: u64,
    /// N asked for.
    pub slices: u64,
    /// Slices actually run.
    pub slices_run: u64,
    /// Every L2 result checked was right.
    pub l2_ok: bool,
    /// L2 reports checked.
    pub l2_reports: u64,
    /// L0's EPT02 policy (`null` in one level).
    pub policy: Option<Policy>,
    /// L0's counters.
    pub l0: L0Counters,
    /// The illegal case's outcome, if one was asked for.
    pub illegal: Option<IllegalOutcome>,
}

impl RunResult {
    /// Parses the JSON after `@@hv result `. The text comes from the
    /// guest: anything malformed is an error, never a panic.
    ///
    /// # Errors
    ///
    /// [`RunFailure::BadResult`] with the parser's message.
    pub fn parse(json: &str) -> Result<Self, RunFailure> {
        serde_json::from_str(json.trim()).map_err(|error| RunFailure::BadResult(error.to_string()))
    }

    /// Checks the result against the run asked for: the same run (mode,
    /// K, N, policy, illegal case), the illegal case answered as the SDM
    /// says, every L2 result right.
    ///
    /// # Errors
    ///
    /// The first [`RunFailure`] found.
    pub fn check(&self, config: &RunConfig) -> Result<(), RunFailure> {
        fn mismatch(
            key: &'static str,
            asked: &dyn std::fmt::Display,
            reported: &dyn std::fmt::Display,
        ) -> RunFailure {
            RunFailure::ResultMismatch {
                key,
                asked: asked.to_string(),
                reported: reported.to_string(),
            }
        }
        let name = |policy: Option<Policy>| policy.map_or("null", Policy::name);
        let nested = config.mode == RunMode::Nested;
        if self.nested != nested {
            return Err(mismatch("nested", &nested, &self.nested));
        }
        if self.l2_guests != u64::from(config.l2_guests) {
            return Err(mismatch("l2_guests", &config.l2_guests, &self.l2_guests));
        }
        if self.slices != u64::from(config.slices) {
            return Err(mismatch("slices", &config.slices, &self.slices));
        }
        if self.policy != config.effective_policy() {
            return Err(mismatch(
                "policy",
                &name(config.effective_policy()),
                &name(self.policy),
            ));
        }
        let case_name = |case: Option<IllegalCase>| case.map_or("null", IllegalCase::name);
        match (config.l1_illegal, &self.illegal) {
            (Some(case), None) => return Err(RunFailure::IllegalNotReported(case.name())),
            (asked, Some(outcome)) if asked != Some(outcome.case) => {
                return Err(mismatch(
                    "illegal.case",
                    &case_name(asked),
                    &outcome.case.name(),
                ));
            }
            (_, Some(outcome)) if !outcome.ok => {
                return Err(RunFailure::IllegalWrong {
                    case: outcome.case.name(),
                    observed: outcome.observed,
                    expected: outcome.expected,
                });
            }
            _ => {}
        }
        if !self.l2_ok {
            return Err(RunFailure::L2Failed {
                reports: self.l2_reports,
                slices_run: self.slices_run,
            });
        }
        Ok(())
    }
}

/// The result of a run (successful, or carried by a failure that got as
/// far as a result line).
#[derive(Debug, Clone, Serialize)]
pub struct StandaloneReport {
    /// Always "bochs".
    pub engine: &'static str,
    /// "probe", "one-level" or "nested".
    pub mode: RunMode,
    /// Whether hv ran nested (L1 under L0).
    pub nested: bool,
    /// K, the number of L2 workloads (`null` in a probe-only run).
    pub l2_guests: Option<u8>,
    /// N, the round-robin slices asked for (`null` in a probe-only run).
    pub slices: Option<u32>,
    /// Slices the runner ran.
    pub slices_run: Option<u64>,
    /// Every L2 result checked by the runner was right.
    pub l2_ok: Option<bool>,
    /// L2 reports the runner checked.
    pub l2_reports: Option<u64>,
    /// L0's EPT02 policy (nested runs; `null` otherwise).
    pub policy: Option<Policy>,
    /// L0's counters from the result line.
    pub l0: Option<L0Counters>,
    /// The illegal case's outcome (`null` when none was asked for).
    pub illegal: Option<IllegalOutcome>,
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
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// The image booted.
    pub image: PathBuf,
    /// The console lines (without L0's `@@hv` records; L1's lines keep
    /// their `L1| ` prefix).
    #[serde(skip)]
    pub console: Vec<String>,
}

impl StandaloneReport {
    /// Fills the run keys from the configuration and the result line.
    fn set_run(&mut self, config: RunConfig, result: Option<RunResult>) {
        self.mode = config.mode;
        self.nested = config.mode == RunMode::Nested;
        self.policy = config.effective_policy();
        if config.mode != RunMode::Probe {
            self.l2_guests = Some(config.l2_guests);
            self.slices = Some(config.slices);
        }
        if let Some(result) = result {
            self.slices_run = Some(result.slices_run);
            self.l2_ok = Some(result.l2_ok);
            self.l2_reports = Some(result.l2_reports);
            self.l0 = Some(result.l0);
            self.illegal = result.illegal;
        }
    }
}

/// Reads the `@@hv result` record's JSON (from L0: lines from L1 carry
/// the `L1| ` prefix). A probe-only run needs none; check the result
/// against the run with [`RunResult::check`].
///
/// # Errors
///
/// [`RunFailure::NoResult`] when a workload run has none,
/// [`RunFailure::BadResult`] when it is malformed.
pub fn read_result(
    config: &RunConfig,
    result_json: Option<&str>,
) -> Result<Option<RunResult>, RunFailure> {
    let what = match config.mode {
        RunMode::Probe => return Ok(None),
        RunMode::OneLevel => "one-level",
        RunMode::Nested => "nested",
    };
    let json = result_json.ok_or(RunFailure::NoResult(what))?;
    RunResult::parse(json).map(Some)
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

/// Boots hv-standalone on Bochs and returns what it reported.
/// `on_console_line` sees each console line as it arrives (including the
/// `@@hv` records).
///
/// # Errors
///
/// [`StandaloneError`]: an invalid run configuration, a missing or bad
/// image (or one without the run-config record for a workload run), Bochs
/// missing, or a run that failed ([`RunFailure`]: timeout, triple fault,
/// exception, image failure, no status, no or a bad result, a wrong L2
/// result, a wrong answer to the illegal case).
pub fn run(
    options: &StandaloneOptions,
    on_console_line: impl FnMut(&str),
) -> Result<StandaloneReport, StandaloneError> {
    options.config.validate()?;
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
    match disk.set_run_config(&options.config) {
        // An image from before the record still probes.
        Err(DiskImageError::NoConfigRecord) if options.config.mode == RunMode::Probe => {}
        result => result.map_err(|source| StandaloneError::BadImage {
            path: image.clone(),
            source,
        })?,
    }
    let config = BochsConfig::detect(options)?;
    let outcome = bochs::run_bochs(&config, &disk, options, on_console_line)?;
    outcome.into_report(image, &config, options.config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads and checks, keeping the result with a failure.
    #[allow(
        clippy::result_large_err,
        clippy::trivially_copy_pass_by_ref,
        reason = "a test helper shaped for assertions"
    )]
    fn judge_result(
        config: &RunConfig,
        json: Option<&str>,
    ) -> Result<Option<RunResult>, (RunFailure, Option<RunResult>)> {
        let result = read_result(config, json).map_err(|failure| (failure, None))?;
        if let Some(result) = &result
            && let Err(failure) = result.check(config)
        {
            return Err((failure, Some(result.clone())));
        }
        Ok(result)
    }

    const NESTED_OK: &str = r#"{"nested":true,"l2_guests":4,"slices":32,"slices_run":32,"l2_ok":true,"l2_reports":32,"policy":"hv","l0":{"nested_entries":40,"reflected_exits":38,"ept02_fills":12,"roots_live":4,"invept":4,"invvpid":0,"steady_invept":0,"steady_invvpid":0,"l1_exits":900},"illegal":null}"#;

    fn nested(policy: Option<Policy>) -> RunConfig {
        RunConfig {
            mode: RunMode::Nested,
            policy,
            ..RunConfig::default()
        }
    }

    #[test]
    fn parses_and_accepts_a_nested_result() {
        let result = judge_result(&nested(None), Some(NESTED_OK))
            .unwrap()
            .unwrap();
        assert!(result.nested && result.l2_ok);
        assert_eq!(result.policy, Some(Policy::Hv));
        assert_eq!(result.l0.nested_entries, 40);
        assert_eq!(result.l0.l1_exits, 900);
        assert!(result.l0.extra.is_empty());
        // The explicit policy is the same run.
        assert!(judge_result(&nested(Some(Policy::Hv)), Some(NESTED_OK)).is_ok());
    }

    #[test]
    fn accepts_a_one_level_result_with_an_illegal_case_and_extra_keys() {
        let json = r#" {"nested":false,"l2_guests":2,"slices":8,"slices_run":8,"l2_ok":true,"l2_reports":8,"policy":null,"l0":{"nested_entries":0,"reflected_exits":0,"ept02_fills":0,"roots_live":0,"invept":3,"invvpid":1,"steady_invept":0,"steady_invvpid":0,"l1_exits":0,"vmcs02_live":0},"illegal":{"case":"vmlaunch-bad-control","ok":true,"observed":7,"expected":7},"future":1} "#;
        let config = RunConfig {
            l2_guests: 2,
            slices: 8,
            l1_illegal: Some(IllegalCase::VmlaunchBadControl),
            ..RunConfig::default()
        };
        let result = judge_result(&config, Some(json)).unwrap().unwrap();
        let illegal = result.illegal.clone().unwrap();
        assert_eq!(illegal.case, IllegalCase::VmlaunchBadControl);
        assert_eq!((illegal.observed, illegal.expected), (7, 7));
        assert_eq!(result.l0.extra["vmcs02_live"], 0);
        // The extra counter passes through to the JSON summary.
        let l0 = serde_json::to_value(&result.l0).unwrap();
        assert_eq!(l0["vmcs02_live"], 0);
        assert_eq!(l0["invept"], 3);
    }

    #[test]
    fn a_probe_needs_no_result_and_a_workload_run_does() {
        let probe = RunConfig {
            mode: RunMode::Probe,
            ..RunConfig::default()
        };
        assert_eq!(judge_result(&probe, None).unwrap(), None);
        assert_eq!(
            judge_result(&RunConfig::default(), None).unwrap_err(),
            (RunFailure::NoResult("one-level"), None)
        );
        assert_eq!(
            judge_result(&nested(None), None).unwrap_err().0,
            RunFailure::NoResult("nested")
        );
    }

    #[test]
    fn malformed_results_are_failures_not_panics() {
        for json in [
            "",
            "{",
            "null",
            "[]",
            "{\"nested\":true}",
            &NESTED_OK.replace("\"l2_ok\":true", "\"l2_ok\":\"yes\""),
            &NESTED_OK.replace("\"hv\"", "\"vmware\""),
            &NESTED_OK.replace("\"invept\":4", "\"invept\":-4"),
            &NESTED_OK.replace("\"invept\":4", "\"invept\":18446744073709551616"),
            &NESTED_OK[..NESTED_OK.len() - 1],
            "\u{0}\u{ffff}garbage",
            &"[".repeat(10_000),
        ] {
            let (failure, result) = judge_result(&nested(None), Some(json)).unwrap_err();
            assert!(
                matches!(failure, RunFailure::BadResult(_)),
                "{json}: {failure}"
            );
            assert_eq!(result, None);
        }
    }

    #[test]
    fn a_result_for_another_run_is_a_mismatch() {
        for (config, key) in [
            (RunConfig::default(), "nested"),
            (
                RunConfig {
                    l2_guests: 3,
                    ..nested(None)
                },
                "l2_guests",
            ),
            (
                RunConfig {
                    slices: 33,
                    ..nested(None)
                },
                "slices",
            ),
            (nested(Some(Policy::FlushAlways)), "policy"),
        ] {
            let (failure, result) = judge_result(&config, Some(NESTED_OK)).unwrap_err();
            let RunFailure::ResultMismatch { key: found, .. } = &failure else {
                panic!("{failure}");
            };
            assert_eq!(*found, key);
            assert!(result.is_some(), "the result is kept for the report");
        }
        let failure = judge_result(&nested(Some(Policy::Kvm)), Some(NESTED_OK))
            .unwrap_err()
            .0;
        assert_eq!(
            failure.to_string(),
            "the result says policy = hv, but the run asked for kvm"
        );
    }

    #[test]
    fn wrong_l2_results_and_wrong_illegal_answers_fail_with_the_result() {
        let bad = NESTED_OK.replace("\"l2_ok\":true", "\"l2_ok\":false");
        let (failure, result) = judge_result(&nested(None), Some(&bad)).unwrap_err();
        assert_eq!(
            failure,
            RunFailure::L2Failed {
                reports: 32,
                slices_run: 32
            }
        );
        assert!(!result.unwrap().l2_ok);

        let asked = RunConfig {
            l1_illegal: Some(IllegalCase::VmxonTwice),
            ..nested(None)
        };
        assert_eq!(
            judge_result(&asked, Some(NESTED_OK)).unwrap_err().0,
            RunFailure::IllegalNotReported("vmxon-twice")
        );
        let wrong = NESTED_OK.replace(
            "\"illegal\":null",
            r#""illegal":{"case":"vmxon-twice","ok":false,"observed":0,"expected":15}"#,
        );
        assert_eq!(
            judge_result(&asked, Some(&wrong)).unwrap_err().0,
            RunFailure::IllegalWrong {
                case: "vmxon-twice",
                observed: 0,
                expected: 15
            }
        );
        let other = wrong.replace("vmxon-twice", "ept12-outside");
        assert!(matches!(
            judge_result(&asked, Some(&other)).unwrap_err().0,
            RunFailure::ResultMismatch {
                key: "illegal.case",
                ..
            }
        ));
        // Reported without being asked for.
        assert!(matches!(
            judge_result(&nested(None), Some(&other)).unwrap_err().0,
            RunFailure::ResultMismatch {
                key: "illegal.case",
                ..
            }
        ));
    }

    #[test]
    fn the_report_carries_the_run_and_the_result() {
        let result = RunResult::parse(NESTED_OK).unwrap();
        let mut report = StandaloneReport {
            engine: "bochs",
            mode: RunMode::Probe,
            nested: false,
            l2_guests: None,
            slices: None,
            slices_run: None,
            l2_ok: None,
            l2_reports: None,
            policy: None,
            l0: None,
            illegal: None,
            status: "ok".to_owned(),
            vmx: serde_json::json!({"revision_id": 0x2b, "ept": true}),
            frames: serde_json::Map::new(),
            bochs_instructions: Some(123),
            bochs_wall_ms: 4567,
            cpu_model: "corei7_skylake_x",
            memory_mib: DEFAULT_MEMORY_MIB,
            image: PathBuf::from("/x/hv-standalone"),
            console: vec!["L1| hello".to_owned()],
        };
        report.set_run(nested(None), Some(result));
        let json = serde_json::to_value(&report).unwrap();
        for (key, value) in [
            ("engine", serde_json::json!("bochs")),
            ("mode", serde_json::json!("nested")),
            ("nested", serde_json::json!(true)),
            ("l2_guests", serde_json::json!(4)),
            ("slices", serde_json::json!(32)),
            ("slices_run", serde_json::json!(32)),
            ("l2_ok", serde_json::json!(true)),
            ("policy", serde_json::json!("hv")),
            ("illegal", serde_json::Value::Null),
            ("bochs_instructions", serde_json::json!(123)),
            ("status", serde_json::json!("ok")),
        ] {
            assert_eq!(json[key], value, "{key}");
        }
        assert_eq!(json["l0"]["ept02_fills"], 12);
        assert_eq!(json["l0"]["steady_invvpid"], 0);
        assert!(json.get("console").is_none());
        let summary = cli::summary(&report);
        assert!(
            summary.contains("K = 4, N = 32 (32 run), l2_ok yes"),
            "{summary}"
        );
        assert!(summary.contains("INVEPT 4 (steady 0)"), "{summary}");
        assert!(summary.contains("123 Bochs instructions"), "{summary}");

        // A failed run still prints the whole object, marked as an error.
        let error = StandaloneError::RunFailed(Box::new(FailedRun {
            failure: RunFailure::L2Failed {
                reports: 1,
                slices_run: 2,
            },
            console_tail: vec![],
            log_lines: vec![],
            run_dir: PathBuf::from("/tmp/x"),
            report: Some(report),
        }));
        let json = cli::error_json(&error, &nested(None));
        assert_eq!(json["status"], "error");
        assert_eq!(json["l0"]["nested_entries"], 40);
        assert!(
            json["error"]
                .as_str()
                .unwrap()
                .contains("L2 result was wrong")
        );
        let json = cli::error_json(
            &StandaloneError::Config(RunConfigError::Slices(0)),
            &RunConfig::default(),
        );
        assert_eq!(json["nested"], false);
        assert_eq!(json["mode"], "one-level");
        assert_eq!(json["status"], "error");
    }
}
