//! The `hv` command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hv_host::explain::{self, ExplainError, Explanation};

/// hv: a nested-capable x86-64 hypervisor, shaped as libraries.
#[derive(Debug, Parser)]
#[command(name = "hv", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode VMX values: VMCS fields, exit reasons and qualifications,
    /// VM-instruction errors, EPTPs and EPT entries.
    Explain {
        #[command(subcommand)]
        what: ExplainCommand,
    },
    /// Run the demo guest in a KVM sandbox: typed calls, a host callback,
    /// snapshot/restore, a runaway guest stopped by a deadline, a panic and
    /// a fault report, and measured latencies.
    Demo,
    /// Call one function of a guest ELF in a fresh sandbox and print the
    /// result.
    Run(hv_host::sandbox::cli::RunArgs),
    /// Benchmarks, each against what it competes with, in the same run.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Boot the hv-standalone image on Bochs (real VMX instructions) and
    /// report what it found.
    Standalone(hv_host::standalone::cli::StandaloneArgs),
    /// Run hv-core on the software model: K L2 guests switched round-robin
    /// under a flush policy; counts flushes, fills and stale translations.
    Simulate(hv_host::simulate::SimulateArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Sandbox create/call/host-call/restore latencies against raw KVM
    /// measured in the same run.
    Sandbox {
        /// A guest ELF offering the demo guest's functions (default: the
        /// demo guest built with hv).
        guest: Option<std::path::PathBuf>,
        /// Print one JSON object (`create_us`, `call_us`, `host_call_us`,
        /// `restore_us`, `restore_large_us`).
        #[arg(long)]
        json: bool,
    },
    /// One L1 round-robins K L2 guests; every EPT02 policy replays the same
    /// trace (hv, kvm, xen, flush-always).
    Mmu {
        /// Measured switches per trace (after warm-up).
        #[arg(long, default_value_t = 100_000)]
        switches: usize,
        /// Numbers of L2 guests, one trace each.
        #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16, 64])]
        guests: Vec<usize>,
        /// Print one JSON object with key `results`.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ExplainCommand {
    /// A VMCS field by name (`GUEST_CR0`) or encoding (0x6800), or every field.
    Vmcs {
        /// Field name or encoding; omit with --all.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        field: Option<String>,
        /// List every field of SDM Appendix B.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A VM-exit reason (number or name) with its qualification and
    /// instruction information.
    Exit {
        /// Basic exit reason (e.g. 48) or a full exit-reason word
        /// (e.g. 0x80000021), or a name (ept-violation).
        reason: String,
        /// The exit qualification.
        #[arg(long, short = 'q')]
        qualification: Option<String>,
        /// The VM-exit instruction-information field.
        #[arg(long, short = 'i')]
        instruction_info: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A VM-instruction error number (SDM 31.4).
    VmError {
        /// The error number (1..=28).
        number: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// An EPT pointer (SDM 25.6.11).
    Eptp {
        /// The EPTP value.
        value: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// An EPT paging-structure entry (SDM 29.3.2).
    EptEntry {
        /// The entry value.
        value: String,
        /// Level: 1 = PTE, 2 = PDE, 3 = PDPTE, 4 = PML4E, 5 = PML5E.
        #[arg(long, short = 'l')]
        level: u8,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Explain { what } => run_explain(what),
        Command::Demo => hv_host::sandbox::cli::demo_main(),
        Command::Run(args) => hv_host::sandbox::cli::run_main(&args),
        Command::Bench {
            what: BenchCommand::Sandbox { guest, json },
        } => bench_sandbox(&guest.unwrap_or_else(hv_host::images::demo_guest), json),
        Command::Bench {
            what:
                BenchCommand::Mmu {
                    switches,
                    guests,
                    json,
                },
        } => bench_mmu(switches, guests, json),
        Command::Standalone(args) => hv_host::standalone::cli::main(&args),
        Command::Simulate(args) => hv_host::simulate::main(&args),
    }
}

fn bench_mmu(switches: usize, guests: Vec<usize>, json: bool) -> ExitCode {
    if guests.is_empty() || guests.contains(&0) {
        eprintln!("hv: --guests takes positive numbers of L2 guests");
        return ExitCode::from(2);
    }
    let config = hv_host::bench::mmu::MmuBenchConfig { guests, switches };
    let results = match hv_host::bench::mmu::run(&config) {
        Ok(results) => results,
        Err(error) => {
            eprintln!("hv: bench mmu: {error}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::json!({ "switches": switches, "results": results })
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "{switches} switches per trace; engine time only (the simulated hardware walk is not counted)"
    );
    println!(
        "{:<13} {:>4} {:>12} {:>10} {:>11} {:>7} {:>12}",
        "policy", "K", "ns/switch", "fills/sw", "flushes/sw", "frames", "vs hv"
    );
    for result in &results {
        let hv = results
            .iter()
            .find(|r| r.policy == "hv" && r.l2_guests == result.l2_guests)
            .map_or(f64::NAN, |r| r.ns_per_switch);
        println!(
            "{:<13} {:>4} {:>12.1} {:>10.2} {:>11.2} {:>7} {:>11.1}x",
            result.policy,
            result.l2_guests,
            result.ns_per_switch,
            result.fills_per_switch,
            result.flushes_per_switch,
            result.frames,
            result.ns_per_switch / hv
        );
    }
    ExitCode::SUCCESS
}

fn run_explain(what: ExplainCommand) -> ExitCode {
    let (result, json) = match what {
        ExplainCommand::Vmcs {
            field: None, json, ..
        } => (Ok(explain::vmcs_all()), json),
        ExplainCommand::Vmcs {
            field: Some(field),
            json,
            ..
        } => (explain::vmcs_field(&field), json),
        ExplainCommand::Exit {
            reason,
            qualification,
            instruction_info,
            json,
        } => (
            explain::exit(
                &reason,
                qualification.as_deref(),
                instruction_info.as_deref(),
            ),
            json,
        ),
        ExplainCommand::VmError { number, json } => (explain::vm_error(&number), json),
        ExplainCommand::Eptp { value, json } => (explain::eptp(&value), json),
        ExplainCommand::EptEntry { value, level, json } => {
            (explain::ept_entry(&value, level), json)
        }
    };
    match result {
        Ok(explanation) => {
            print(&explanation, json);
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error),
    }
}

fn print(explanation: &Explanation, json: bool) {
    if json {
        println!("{}", explanation.json);
    } else {
        println!("{}", explanation.text);
    }
}

/// Bad input: a clear message and exit status 2 (the status clap uses for
/// usage errors).
fn fail(error: &ExplainError) -> ExitCode {
    eprintln!("hv: {error}");
    ExitCode::from(2)
}

/// `hv bench sandbox`.
fn bench_sandbox(guest: &std::path::Path, json: bool) -> ExitCode {
    let bytes = match std::fs::read(guest) {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("hv: reading {}: {error}", guest.display());
            return ExitCode::from(2);
        }
    };
    let config = hv_host::bench::sandbox::SandboxBenchConfig::default();
    match hv_host::bench::sandbox::run(&bytes, &config) {
        Ok(results) if json => {
            println!("{}", serde_json::json!(results));
            ExitCode::SUCCESS
        }
        Ok(results) => {
            println!(
                "{:<18} {:>10} {:>10} {:>7} {:>12}",
                "measure", "hv us", "floor us", "ratio", "CPL0 floor"
            );
            for (name, m) in [
                ("create", results.create_us),
                ("call", results.call_us),
                ("host call", results.host_call_us),
                ("restore 4 MiB", results.restore_us),
                ("restore 256 MiB", results.restore_large_us),
            ] {
                let floor = m
                    .floor
                    .map_or_else(|| "-".to_owned(), |f| format!("{f:.1}"));
                let ratio = m
                    .ratio
                    .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
                let cpl0 = m
                    .floor_cpl0
                    .map_or_else(|| "-".to_owned(), |f| format!("{f:.1}"));
                println!(
                    "{name:<18} {:>10.1} {floor:>10} {ratio:>7} {cpl0:>12}",
                    m.hv
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("hv: bench sandbox: {error}");
            ExitCode::FAILURE
        }
    }
}
