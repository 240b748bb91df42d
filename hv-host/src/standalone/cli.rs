//! The `hv standalone` subcommand: arguments, live console, summary, JSON.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{StandaloneError, StandaloneOptions, StandaloneReport, run};

/// `hv standalone [--json] [--image PATH] [--bochs PATH] [--timeout S]
/// [--memory MIB] [--keep]`; `--nested --l2 K --slices N --policy P` are
/// accepted and rejected as not yet implemented.
#[derive(Debug, Clone, clap::Args)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent command-line flags"
)]
pub struct StandaloneArgs {
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
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 128)]
    pub memory: u32,
    /// Keep the temporary directory (bochsrc, disk.img, bochs.log, com1.txt).
    #[arg(long)]
    pub keep: bool,
    /// Make the image raise #UD after installing its IDT (tests failure
    /// reporting).
    #[arg(long, hide = true)]
    pub self_test_exception: bool,
    /// Run hv as L1 under hv L0 (not yet implemented).
    #[arg(long)]
    pub nested: bool,
    /// Number of L2 workloads (not yet implemented).
    #[arg(long, value_name = "K")]
    pub l2: Option<u32>,
    /// Round-robin slices (not yet implemented).
    #[arg(long, value_name = "N")]
    pub slices: Option<u32>,
    /// EPT02 root-cache policy: hv, kvm, xen, flush-always (not yet implemented).
    #[arg(long, value_name = "P")]
    pub policy: Option<String>,
}

impl StandaloneArgs {
    /// The library options these arguments ask for.
    pub fn options(&self) -> StandaloneOptions {
        StandaloneOptions {
            image: self.image.clone(),
            bochs: self.bochs.clone(),
            timeout: Duration::from_secs(self.timeout),
            memory_mib: self.memory,
            keep_temp: self.keep,
            self_test_exception: self.self_test_exception,
            nested: self.nested,
            l2_guests: self.l2,
            slices: self.slices,
            policy: self.policy.clone(),
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

/// The human summary printed after the console.
pub fn summary(report: &StandaloneReport) -> String {
    let vmx = &report.vmx;
    let revision = vmx.get("revision_id").and_then(serde_json::Value::as_u64);
    let instructions = report
        .bochs_instructions
        .map_or_else(|| "unknown".to_owned(), |count| count.to_string());
    format!(
        "hv standalone: ok on Bochs ({}), {:.2} s wall, {instructions} Bochs ticks\n\
         VMX: revision {}, EPT {}, VPID {}, unrestricted guest {}, VMCS shadowing {}, \
         preemption timer {}; VMXON and a VMCS round trip worked",
        report.cpu_model,
        Duration::from_millis(report.bochs_wall_ms).as_secs_f64(),
        revision.map_or_else(|| "?".to_owned(), |revision| format!("{revision:#x}")),
        yes(vmx, "ept"),
        yes(vmx, "vpid"),
        yes(vmx, "unrestricted_guest"),
        yes(vmx, "vmcs_shadowing"),
        yes(vmx, "preemption_timer"),
    )
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
            report_error(&error, json);
            ExitCode::FAILURE
        }
    }
}

fn report_error(error: &StandaloneError, json: bool) {
    eprintln!("hv standalone: {error}");
    if json {
        let object = serde_json::json!({
            "engine": "bochs",
            "nested": false,
            "status": "error",
            "error": error.to_string(),
        });
        println!("{object}");
    }
}
