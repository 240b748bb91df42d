//! Running Bochs headless: configuration, process, console, log.
//!
//! Facts this relies on (FACTS.md, "Bochs"): the Debian build has the
//! debugger compiled in, so `-rc` gives it `c` then `quit`; `port_e9_hack`
//! copies port 0xE9 to Bochs's standard output; writing "Shutdown" to port
//! 0x8900 ends the run (exit status 1, which is normal);
//! `reset_on_triple_fault=0` makes a triple fault stop with a register
//! dump in the log. There is no `nogui` display library: `term` (package
//! bochs-term, needs `TERM=dumb`) is preferred, else `rfb` (in the bochs
//! package itself) with `timeout=0` so it never waits for a VNC client.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{
    DiskImage, FailedRun, RunConfig, RunFailure, RunMode, StandaloneError, StandaloneOptions,
    StandaloneReport, read_result,
};

/// The emulated CPU: Skylake-X has VMX with EPT, VPID, unrestricted guest
/// and VMCS shadowing in Bochs 2.7.
pub const CPU_MODEL: &str = "corei7_skylake_x";
/// Environment variable overriding the `display_library:` line.
pub const DISPLAY_ENV: &str = "HV_BOCHS_DISPLAY";
/// Where Debian installs Bochs's plugins.
const PLUGIN_DIRS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/bochs/plugins",
    "/usr/lib/bochs/plugins",
    "/usr/local/lib/bochs/plugins",
];
/// Bochs log lines kept for error reports.
const LOG_LINES_KEPT: usize = 60;

/// What the Bochs configuration needs from this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BochsConfig {
    /// The Bochs executable.
    pub bochs: PathBuf,
    /// The system BIOS image.
    pub bios: PathBuf,
    /// The VGA BIOS image.
    pub vga_bios: PathBuf,
    /// The `display_library:` value.
    pub display: String,
    /// Whether the display needs `TERM=dumb`.
    pub needs_term: bool,
    /// The CPU model.
    pub cpu_model: &'static str,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
}

/// Finds `program` the way a shell would: a path with a slash as is,
/// otherwise the first executable file of that name in `PATH`.
fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(program))
        .find(|candidate| candidate.is_file())
}

fn first_existing(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates.iter().find(|path| path.is_file()).cloned()
}

impl BochsConfig {
    /// Finds Bochs, its firmware and a headless display library.
    ///
    /// # Errors
    ///
    /// [`StandaloneError::BochsMissing`], [`StandaloneError::FirmwareMissing`]
    /// or [`StandaloneError::NoDisplayLibrary`].
    pub fn detect(options: &StandaloneOptions) -> Result<Self, StandaloneError> {
        let bochs = find_program(&options.bochs).ok_or_else(|| StandaloneError::BochsMissing {
            bochs: options.bochs.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found in PATH"),
        })?;
        let share = std::env::var_os("BXSHARE")
            .map_or_else(|| PathBuf::from("/usr/share/bochs"), PathBuf::from);
        let bios_path = share.join("BIOS-bochs-latest");
        let bios = first_existing(std::slice::from_ref(&bios_path))
            .ok_or(StandaloneError::FirmwareMissing { path: bios_path })?;
        let vga_candidates = [
            PathBuf::from("/usr/share/vgabios/vgabios.bin"),
            share.join("VGABIOS-lgpl-latest"),
        ];
        let vga_bios =
            first_existing(&vga_candidates).ok_or_else(|| StandaloneError::FirmwareMissing {
                path: vga_candidates[0].clone(),
            })?;
        let (display, needs_term) = Self::detect_display()?;
        Ok(Self {
            bochs,
            bios,
            vga_bios,
            display,
            needs_term,
            cpu_model: CPU_MODEL,
            memory_mib: options.memory_mib,
        })
    }

    fn detect_display() -> Result<(String, bool), StandaloneError> {
        if let Ok(display) = std::env::var(DISPLAY_ENV) {
            let needs_term = display.starts_with("term");
            return Ok((display, needs_term));
        }
        let mut directories: Vec<PathBuf> = std::env::var_os("LTDL_LIBRARY_PATH")
            .map(|paths| std::env::split_paths(&paths).collect())
            .unwrap_or_default();
        directories.extend(PLUGIN_DIRS.iter().map(PathBuf::from));
        let has = |plugin: &str| {
            directories
                .iter()
                .any(|directory| directory.join(plugin).is_file())
        };
        if has("libbx_term.so") {
            Ok(("term".to_owned(), true))
        } else if has("libbx_rfb_gui.so") {
            Ok(("rfb, options=\"timeout=0\"".to_owned(), false))
        } else {
            Err(StandaloneError::NoDisplayLibrary {
                plugin_dir: PathBuf::from(PLUGIN_DIRS[0]),
            })
        }
    }

    /// The `bochsrc` text for a disk of `cylinders` cylinders at
    /// `disk.img`, with the log in `bochs.log` and COM1 in `com1.txt`.
    pub fn render(&self, cylinders: u64) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "# Written by hv standalone.");
        let _ = writeln!(text, "megs: {}", self.memory_mib);
        let _ = writeln!(
            text,
            "cpu: model={}, ips=50000000, reset_on_triple_fault=0",
            self.cpu_model
        );
        let _ = writeln!(text, "romimage: file=\"{}\"", self.bios.display());
        let _ = writeln!(text, "vgaromimage: file=\"{}\"", self.vga_bios.display());
        let _ = writeln!(
            text,
            "ata0-master: type=disk, path=disk.img, mode=flat, cylinders={cylinders}, heads={}, spt={}",
            super::disk::HEADS,
            super::disk::SECTORS_PER_TRACK
        );
        let _ = writeln!(text, "boot: disk");
        let _ = writeln!(text, "display_library: {}", self.display);
        let _ = writeln!(text, "port_e9_hack: enabled=1");
        let _ = writeln!(text, "com1: enabled=1, mode=file, dev=com1.txt");
        let _ = writeln!(text, "clock: sync=none, time0=1");
        let _ = writeln!(text, "speaker: enabled=0");
        let _ = writeln!(text, "sound: driver=dummy");
        let _ = writeln!(text, "log: bochs.log");
        let _ = writeln!(text, "panic: action=fatal");
        let _ = writeln!(text, "error: action=report");
        text
    }
}

/// A fresh directory under the system temporary directory.
fn make_run_dir() -> Result<PathBuf, StandaloneError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let path = std::env::temp_dir().join(format!(
        "hv-standalone-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&path).map_err(|source| StandaloneError::Io {
        what: "creating",
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn write_file(path: PathBuf, bytes: &[u8]) -> Result<(), StandaloneError> {
    std::fs::write(&path, bytes).map_err(|source| StandaloneError::Io {
        what: "writing",
        path,
        source,
    })
}

/// Whether a line on Bochs's standard output is Bochs's own (banner,
/// debugger state) rather than the image's console.
fn is_bochs_line(line: &str) -> bool {
    let trimmed = line.trim_start();
    line.starts_with("=====")
        || line.starts_with("Next at t=")
        || line.starts_with("<bochs:")
        || (line.starts_with('(')
            && line[1..].starts_with(|c: char| c.is_ascii_digit())
            && line.contains(')'))
        || trimmed.starts_with("Bochs x86 Emulator")
        || trimmed.starts_with("Built from SVN")
        || trimmed.starts_with("Timestamp:")
}

/// The tick count in a debugger state line `(0).[12345] [0x...] ...`.
fn debugger_ticks(line: &str) -> Option<u64> {
    let rest = line.strip_prefix('(')?;
    let (_, rest) = rest.split_once(").[")?;
    let (ticks, _) = rest.split_once(']')?;
    ticks.parse().ok()
}

/// What a finished (or killed) Bochs run produced.
#[derive(Debug)]
pub(super) struct RunOutcome {
    console: Vec<String>,
    timed_out: Option<Duration>,
    exit: String,
    log: String,
    ticks_from_stdout: Option<u64>,
    wall: Duration,
    run_dir: PathBuf,
    keep: bool,
}

/// Writes the files, runs Bochs until it exits or the timeout, streaming
/// console lines to `on_console_line`.
pub(super) fn run_bochs(
    config: &BochsConfig,
    disk: &DiskImage,
    options: &StandaloneOptions,
    mut on_console_line: impl FnMut(&str),
) -> Result<RunOutcome, StandaloneError> {
    let run_dir = make_run_dir()?;
    write_file(run_dir.join("disk.img"), &disk.bytes)?;
    write_file(
        run_dir.join("bochsrc"),
        config.render(disk.cylinders).as_bytes(),
    )?;
    write_file(run_dir.join("rc"), b"c\nquit\n")?;
    let stderr_path = run_dir.join("stderr.txt");
    let stderr = std::fs::File::create(&stderr_path).map_err(|source| StandaloneError::Io {
        what: "creating",
        path: stderr_path,
        source,
    })?;

    let mut command = Command::new(&config.bochs);
    command
        .args(["-q", "-f", "bochsrc", "-rc", "rc"])
        .current_dir(&run_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    if config.needs_term {
        command.env("TERM", "dumb");
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|source| StandaloneError::BochsMissing {
            bochs: config.bochs.clone(),
            source,
        })?;
    let stdout = child.stdout.take().expect("stdout was piped");
    let (sender, receiver) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdout.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line)
                        .trim_end_matches(['\n', '\r'])
                        .to_owned();
                    if sender.send(text).is_err() {
                        break;
                    }
                }
            }
        }
    });

    let deadline = started + options.timeout;
    let mut console = Vec::new();
    let mut ticks_from_stdout = None;
    let mut timed_out = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok(line) => {
                if is_bochs_line(&line) {
                    ticks_from_stdout = debugger_ticks(&line).or(ticks_from_stdout);
                } else {
                    on_console_line(&line);
                    console.push(line);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = Some(options.timeout);
                // Killing the child we spawned closes its stdout, which
                // ends the reader thread.
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait().map_err(|source| StandaloneError::Io {
        what: "waiting for",
        path: config.bochs.clone(),
        source,
    })?;
    let _ = reader.join();
    let wall = started.elapsed();
    let log = std::fs::read_to_string(run_dir.join("bochs.log")).unwrap_or_default();
    Ok(RunOutcome {
        console,
        timed_out,
        exit: status.to_string(),
        log,
        ticks_from_stdout,
        wall,
        run_dir,
        keep: options.keep_temp,
    })
}

impl RunOutcome {
    /// Bochs's tick count when it stopped: the timestamp of the log's
    /// last `quit_sim` line (`00171511085i[SIM   ] quit_sim ...`), else the
    /// debugger's final state line.
    fn ticks(&self) -> Option<u64> {
        self.log
            .lines()
            .rev()
            .find(|line| line.contains("quit_sim"))
            .and_then(|line| line.get(..11))
            .and_then(|digits| digits.parse().ok())
            .or(self.ticks_from_stdout)
    }

    /// Log lines that explain a failure: errors, panics, exceptions, the
    /// final CPU dump; at most the last [`LOG_LINES_KEPT`].
    fn relevant_log_lines(&self) -> Vec<String> {
        let lines: Vec<&str> = self
            .log
            .lines()
            .filter(|line| {
                let level = line.as_bytes().get(11).copied();
                matches!(level, Some(b'e' | b'p'))
                    || line.contains("exception")
                    || line.contains("shutdown")
                    || line.contains("| RIP=")
                    || line.contains("| CR0=")
                    || line.contains("| CR3=")
            })
            .collect();
        let start = lines.len().saturating_sub(LOG_LINES_KEPT);
        lines[start..]
            .iter()
            .map(|line| (*line).to_owned())
            .collect()
    }

    fn failure(self, failure: RunFailure) -> StandaloneError {
        self.failure_with_report(failure, None)
    }

    fn failure_with_report(
        self,
        failure: RunFailure,
        report: Option<StandaloneReport>,
    ) -> StandaloneError {
        let start = self.console.len().saturating_sub(super::CONSOLE_TAIL_LINES);
        StandaloneError::RunFailed(Box::new(FailedRun {
            failure,
            console_tail: self.console[start..].to_vec(),
            log_lines: self.relevant_log_lines(),
            run_dir: self.run_dir,
            report,
        }))
    }

    /// Judges the run by what the image printed: L0's `@@hv` records (L1's
    /// lines arrive as `L1| ...` and are console only).
    pub(super) fn into_report(
        self,
        image: PathBuf,
        bochs: &BochsConfig,
        run: RunConfig,
    ) -> Result<StandaloneReport, StandaloneError> {
        if let Some(after) = self.timed_out {
            return Err(self.failure(RunFailure::Timeout(after)));
        }
        let mut status = None;
        let mut result_json = None;
        let mut vmx = serde_json::Value::Null;
        let mut frames = serde_json::Map::new();
        let mut console = Vec::new();
        for line in &self.console {
            let Some(record) = line.strip_prefix("@@hv ") else {
                console.push(line.clone());
                continue;
            };
            let (key, value) = record.split_once(' ').unwrap_or((record, ""));
            match key {
                "status" => status = Some(value.to_owned()),
                "result" => result_json = Some(value.to_owned()),
                "vmx" => {
                    vmx = serde_json::from_str(value)
                        .unwrap_or(serde_json::Value::String(value.to_owned()));
                }
                "frames" => {
                    for pair in value.split_whitespace() {
                        if let Some((name, number)) = pair.split_once('=') {
                            let number = number
                                .parse::<u64>()
                                .map_or_else(|_| number.into(), Into::into);
                            frames.insert(name.to_owned(), number);
                        }
                    }
                }
                _ => {}
            }
        }
        let triple_fault = self.log.contains("with no resolution");
        let failure = match status.as_deref() {
            Some("ok") => None,
            Some(other) => Some(match other.split_once(' ').unwrap_or((other, "")) {
                ("exception", detail) => RunFailure::Exception(detail.to_owned()),
                ("panic", detail) => RunFailure::Panic(detail.to_owned()),
                ("fail", detail) => RunFailure::ImageFailed(detail.to_owned()),
                (_, _) => RunFailure::ImageFailed(other.to_owned()),
            }),
            None if triple_fault => Some(RunFailure::TripleFault),
            None => Some(RunFailure::NoStatus(self.exit.clone())),
        };
        if let Some(failure) = failure {
            return Err(self.failure(failure));
        }
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
            vmx,
            frames,
            bochs_instructions: self.ticks(),
            bochs_wall_ms: u64::try_from(self.wall.as_millis()).unwrap_or(u64::MAX),
            cpu_model: bochs.cpu_model,
            memory_mib: bochs.memory_mib,
            image,
            console,
        };
        let result = match read_result(&run, result_json.as_deref()) {
            Ok(result) => result,
            Err(failure) => return Err(self.failure(failure)),
        };
        let checked = result.as_ref().map_or(Ok(()), |result| result.check(&run));
        report.set_run(run, result);
        if let Err(failure) = checked {
            return Err(self.failure_with_report(failure, Some(report)));
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_bochs_lines_from_console_lines() {
        assert!(is_bochs_line(
            "========================================================================"
        ));
        assert!(is_bochs_line("Next at t=0"));
        assert!(is_bochs_line(
            "(0) [0x0000fffffff0] f000:fff0 (unk. ctxt): jmpf 0xf000:e05b"
        ));
        assert!(is_bochs_line(
            "(0).[171511085] [0x000000101b6b] 0008:0000000000101b6b (unk. ctxt): out dx, al"
        ));
        assert!(is_bochs_line(
            "                        Bochs x86 Emulator 2.7"
        ));
        assert!(!is_bochs_line("hv-standalone: boot sector"));
        assert!(!is_bochs_line("@@hv status ok"));
        assert!(!is_bochs_line("(hello)"));
    }

    #[test]
    fn reads_ticks_from_the_debugger_line() {
        assert_eq!(
            debugger_ticks("(0).[171511085] [0x000000101b6b] out dx, al"),
            Some(171_511_085)
        );
        assert_eq!(debugger_ticks("(0) [0x0000fffffff0] f000:fff0"), None);
    }

    #[test]
    fn renders_a_headless_config() {
        let config = BochsConfig {
            bochs: PathBuf::from("/usr/bin/bochs"),
            bios: PathBuf::from("/usr/share/bochs/BIOS-bochs-latest"),
            vga_bios: PathBuf::from("/usr/share/vgabios/vgabios.bin"),
            display: "term".to_owned(),
            needs_term: true,
            cpu_model: CPU_MODEL,
            memory_mib: 64,
        };
        let text = config.render(3);
        for expected in [
            "megs: 64",
            "cpu: model=corei7_skylake_x",
            "reset_on_triple_fault=0",
            "cylinders=3, heads=16, spt=63",
            "display_library: term",
            "port_e9_hack: enabled=1",
            "com1: enabled=1, mode=file, dev=com1.txt",
            "clock: sync=none",
            "log: bochs.log",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }
}
