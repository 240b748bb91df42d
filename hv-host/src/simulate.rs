//! `hv simulate`: runs hv-core on the software model (K L2 guests switched
//! round-robin by a scripted L1, see `hv_core::model::simulate`) and prints
//! what the flush policy cost and whether any stale translation was used.

use std::process::ExitCode;

use hv_core::model::{SimulateConfig, SimulateReport, simulate};
use hv_mmu::shadow::Policy;

/// Arguments of `hv simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// K: number of L2 guests L1 switches between.
    #[arg(long = "l2", default_value_t = 16)]
    pub l2_guests: usize,
    /// N: L1 -> L2 switches (nested entries L1 asks for).
    #[arg(long, default_value_t = 100_000)]
    pub switches: u64,
    /// Flush policy: hv, kvm, xen or flush-always.
    #[arg(long, default_value = "hv", value_parser = parse_policy)]
    pub policy: Policy,
    /// Pages each L2 reads per slice.
    #[arg(long, default_value_t = 4)]
    pub pages: u64,
    /// Once per round and L2, L1 moves an EPT12 leaf (+ INVEPT) and a
    /// page-map entry (+ INVVPID).
    #[arg(long)]
    pub churn: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Parses a policy name as the CLI spells it.
fn parse_policy(name: &str) -> Result<Policy, String> {
    name.parse()
        .map_err(|_| format!("unknown policy {name:?} (hv, kvm, xen, flush-always)"))
}

/// The report as the JSON object `hv simulate --json` prints.
pub fn report_json(config: &SimulateConfig, report: &SimulateReport) -> serde_json::Value {
    serde_json::json!({
        "policy": config.policy.name(),
        "l2_guests": config.l2_guests,
        "switches": config.switches,
        "churn": config.churn,
        "nested_entries": report.nested_entries,
        "nested_exits": report.nested_exits,
        "reflected": report.reflected,
        "handled_in_l0": report.handled_in_l0,
        "ept02_fills": report.ept02_fills,
        "invept": {
            "single": report.invept.single,
            "global": report.invept.global,
        },
        "invvpid": {
            "individual": report.invvpid.individual,
            "single": report.invvpid.single,
            "all": report.invvpid.all,
            "single_retaining_globals": report.invvpid.single_retaining_globals,
        },
        "stale_translations": report.stale_translations,
        "l1_exits": report.l1_exits,
        "roots_live": report.roots_live,
        "fills_after_first_round": report.fills_after_first_round,
        "flushes_after_first_round": report.flushes_after_first_round,
        "tlb_hits": report.tlb_hits,
        "tlb_misses": report.tlb_misses,
    })
}

/// Runs `hv simulate`.
pub fn main(args: &SimulateArgs) -> ExitCode {
    let config = SimulateConfig {
        pages_per_l2: args.pages,
        churn: args.churn,
        ..SimulateConfig::new(args.l2_guests, args.switches, args.policy)
    };
    let report = match simulate(config) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("hv: simulate: {error}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!("{}", report_json(&config, &report));
    } else {
        print_table(&config, &report);
    }
    if report.stale_translations == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "hv: simulate: {} stale translations used (a missing flush)",
            report.stale_translations
        );
        ExitCode::FAILURE
    }
}

/// The human-readable report.
fn print_table(config: &SimulateConfig, report: &SimulateReport) {
    println!(
        "policy {}, {} L2 guests, {} switches{}",
        config.policy.name(),
        config.l2_guests,
        config.switches,
        if config.churn { ", churn" } else { "" }
    );
    let rows: [(&str, u64); 17] = [
        ("nested entries", report.nested_entries),
        ("nested exits", report.nested_exits),
        ("  reflected to L1", report.reflected),
        ("  handled in L0", report.handled_in_l0),
        ("EPT02 fills", report.ept02_fills),
        ("  after the first round", report.fills_after_first_round),
        ("INVEPT single-context", report.invept.single),
        ("INVEPT global", report.invept.global),
        ("INVVPID individual-address", report.invvpid.individual),
        ("INVVPID single-context", report.invvpid.single),
        ("INVVPID all-context", report.invvpid.all),
        (
            "INVVPID single, retaining globals",
            report.invvpid.single_retaining_globals,
        ),
        (
            "flushes after the first round",
            report.flushes_after_first_round,
        ),
        ("EPT02 roots live", report.roots_live),
        ("L1 exits", report.l1_exits),
        ("TLB hits / misses", report.tlb_hits),
        ("stale translations", report.stale_translations),
    ];
    for (name, value) in rows {
        if name.starts_with("TLB") {
            println!("{name:<34} {value:>12} / {}", report.tlb_misses);
        } else {
            println!("{name:<34} {value:>12}");
        }
    }
}
