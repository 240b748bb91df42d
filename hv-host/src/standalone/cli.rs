//! The `hv standalone` subcommand: arguments, live console, summary, JSON.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{
    DEFAULT_MEMORY_MIB, IllegalCase, MAX_L2_GUESTS, MAX_SLICES, Policy, RunConfig, RunMode,
    StandaloneError, StandaloneOptions, StandaloneReport, run,
};

/// `hv standalone [--nested] [--l2 K] [--slices N] [--policy P] [--json]
/// [--image PATH] [--bochs PATH] [--timeout S] [--memory MIB] [--keep]`.
/// Without flags: one level (L0 runs the L2 workloads on Bochs's VMX),
/// K = 4, N = 32.
#[derive(Debug, Clone, clap::Args)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent command-line flags"
)]
pub struct StandaloneArgs {
    /// Run hv as L1 under hv L0 (L1 runs the L2 workloads); without it, L0
    /// runs them itself.
    #[arg(long)]
    pub nested: bool,
    /// Number of L2 workloads, K (1 to 8).
    #[arg(
        long,
        value_name = "K",
        default_value_t = 4,
        value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_L2_GUESTS))
    )]
    pub l2: u8,
    /// Round-robin slices, N (1 to 100000).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 32,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SLICES))
    )]
    pub slices: u32,
    /// L0's EPT02 root-cache policy (nested runs; default hv).
    #[arg(long, value_name = "P", value_enum, requires = "nested")]
    pub policy: Option<Policy>,
    /// Print one JSON object (the console goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// The hv-standalone ELF (default: the one the build made, or
    /// `$HV_STANDALONE_IMAGE`).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// The Bochs executable.
    #[arg(long, default_value = "bochs")]
    pub bochs: PathBuf,
    /// Wall-clock limit for Bochs, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Guest RAM in MiB (nested runs give L1 64 MiB of it).
    #[arg(long, default_value_t = DEFAULT_MEMORY_MIB)]
    pub memory: u32,
    /// Keep the temporary directory (bochsrc, disk.img, bochs.log, com1.txt).
    #[arg(long)]
    pub keep: bool,
    /// Only probe VMX as L0 and stop (the first milestone).
    #[arg(
        long,
        hide = true,
        conflicts_with_all = ["nested", "policy", "l1_illegal"]
    )]
    pub probe_only: bool,
    /// Make the runner do something illegal first and check the answer.
    #[arg(long, hide = true, value_name = "CASE", value_enum)]
    pub l1_illegal: Option<IllegalCase>,
    /// Make the image raise #UD after installing its IDT (tests failure
    /// reporting).
    #[arg(long, hide = true)]
    pub self_test_exception: bool,
}

impl StandaloneArgs {
    /// The run configuration these arguments ask for.
    pub fn config(&self) -> RunConfig {
        let mode = if self.probe_only {
            RunMode::Probe
        } else if self.nested {
            RunMode::Nested
        } else {
            RunMode::OneLevel
        };
        RunConfig {
            mode,
            l2_guests: self.l2,
            policy: self.policy,
            l1_illegal: self.l1_illegal,
            slices: self.slices,
        }
    }

    /// The library options these arguments ask for.
    pub fn options(&self) -> StandaloneOptions {
        StandaloneOptions {
            image: self.image.clone(),
            bochs: self.bochs.clone(),
            timeout: Duration::from_secs(self.timeout),
            memory_mib: self.memory,
            keep_temp: self.keep,
            self_test_exception: self.self_test_exception,
            config: self.config(),
        }
    }
}

fn yes(value: &serde_json::Value, key: &str) -> &'static str {
    match value.get(key).and_then(serde_json::Value::as_bool) {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    }
}

fn count(value: Option<u64>) -> String {
    value.map_or_else(|| "?".to_owned(), |value| value.to_string())
}

/// The human summary printed after the console.
pub fn summary(report: &StandaloneReport) -> String {
    let vmx = &report.vmx;
    let revision = vmx.get("revision_id").and_then(serde_json::Value::as_u64);
    let instructions = report
        .bochs_instructions
        .map_or_else(|| "unknown".to_owned(), |count| count.to_string());
    let mut text = format!(
        "hv standalone: {} on Bochs ({}, {} MiB), {:.2} s wall, {instructions} Bochs instructions\n",
        report.status,
        report.cpu_model,
        report.memory_mib,
        Duration::from_millis(report.bochs_wall_ms).as_secs_f64(),
    );
    let run = match report.mode {
        RunMode::Probe => "VMX probe only".to_owned(),
        RunMode::OneLevel => "one level: L0 runs the L2 workloads".to_owned(),
        RunMode::Nested => format!(
            "nested: hv L0 runs hv L1, which runs the L2 workloads; policy {}",
            report.policy.map_or("?", Policy::name)
        ),
    };
    let _ = writeln!(text, "run:     {run}");
    if report.mode != RunMode::Probe {
        let _ = writeln!(
            text,
            "L2:      K = {}, N = {} ({} run), l2_ok {} ({} reports checked)",
            count(report.l2_guests.map(u64::from)),
            count(report.slices.map(u64::from)),
            count(report.slices_run),
            match report.l2_ok {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "?",
            },
            count(report.l2_reports),
        );
    }
    if let Some(l0) = &report.l0 {
        let _ = writeln!(
            text,
            "L0:      nested entries {}, reflected exits {}, EPT02 fills {}, roots live {}, L1 exits {}",
            l0.nested_entries, l0.reflected_exits, l0.ept02_fills, l0.roots_live, l0.l1_exits
        );
        let _ = writeln!(
            text,
            "         INVEPT {} (steady {}), INVVPID {} (steady {})",
            l0.invept, l0.steady_invept, l0.invvpid, l0.steady_invvpid
        );
    }
    if let Some(illegal) = &report.illegal {
        let _ = writeln!(
            text,
            "illegal: {}: {} (observed {:#x}, expected {:#x})",
            illegal.case.name(),
            if illegal.ok {
                "the SDM's answer"
            } else {
                "WRONG answer"
            },
            illegal.observed,
            illegal.expected
        );
    }
    let _ = write!(
        text,
        "VMX:     revision {}, EPT {}, VPID {}, unrestricted guest {}, VMCS shadowing {}, \
         preemption timer {}",
        revision.map_or_else(|| "?".to_owned(), |revision| format!("{revision:#x}")),
        yes(vmx, "ept"),
        yes(vmx, "vpid"),
        yes(vmx, "unrestricted_guest"),
        yes(vmx, "vmcs_shadowing"),
        yes(vmx, "preemption_timer"),
    );
    text
}

/// Runs `hv standalone`.
pub fn main(args: &StandaloneArgs) -> ExitCode {
    let json = args.json;
    let result = run(&args.options(), |line| {
        if line.starts_with("@@hv ") {
            return;
        }
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
            let _ = std::io::stdout().flush();
        }
    });
    match result {
        Ok(report) => {
            if json {
                match serde_json::to_string(&report) {
                    Ok(text) => println!("{text}"),
                    Err(error) => {
                        eprintln!("hv standalone: cannot encode the report: {error}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                println!("{}", summary(&report));
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            report_error(&error, args, json);
            ExitCode::FAILURE
        }
    }
}

/// The JSON object printed for a failed run: the report when the image got
/// as far as a result line, else the run asked for; `status` "error" and
/// the `error` text either way.
pub fn error_json(error: &StandaloneError, config: &RunConfig) -> serde_json::Value {
    let report = match error {
        StandaloneError::RunFailed(failed) => failed
            .report
            .as_ref()
            .and_then(|report| serde_json::to_value(report).ok()),
        _ => None,
    };
    let mut object = report.unwrap_or_else(|| {
        serde_json::json!({
            "engine": "bochs",
            "mode": config.mode,
            "nested": config.mode == RunMode::Nested,
            "l2_guests": config.l2_guests,
            "slices": config.slices,
            "policy": config.effective_policy(),
            "l2_ok": null,
        })
    });
    if let Some(map) = object.as_object_mut() {
        map.insert("status".to_owned(), "error".into());
        map.insert("error".to_owned(), error.to_string().into());
    }
    object
}

fn report_error(error: &StandaloneError, args: &StandaloneArgs, json: bool) {
    if let StandaloneError::RunFailed(failed) = error
        && let Some(report) = &failed.report
        && !json
    {
        let mut report = report.clone();
        "error".clone_into(&mut report.status);
        eprintln!("{}", summary(&report));
    }
    eprintln!("hv standalone: {error}");
    if json {
        println!("{}", error_json(error, &args.config()));
    }
}
