//! hv-standalone on Bochs: the image's multiboot2 header, disk layout and
//! run-config record; a real boot that runs the L0 VMX probe (VMXON, a
//! VMCS round trip, VMXOFF) against Bochs's VMX implementation; the L2
//! workloads in one level (L0 on Bochs's VMX) and nested (hv L1 under hv
//! L0, with the `hv` and `flush-always` EPT02 policies); and L1 doing
//! something illegal (VMXON twice, VMLAUNCH with a bad control, an EPT12
//! pointing outside its memory) and getting the SDM's answer.
//!
//! K = 4 workloads and N = 8 slices (2K) keep each run to seconds of Bochs
//! time.
//!
//! The Bochs run needs `bochs` (Debian: `bochs bochsbios vgabios`). Without
//! it the run is skipped with a note, unless `HV_REQUIRE_BOCHS=1`, which
//! turns its absence into a failure (CI sets it).

use std::path::PathBuf;
use std::time::Duration;

use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::msr::VmxMsr;
use hv_host::standalone::{
    FailedRun, IllegalCase, Policy, RunConfig, RunConfigError, RunFailure, RunMode,
    StandaloneError, StandaloneOptions, StandaloneReport, build_disk_image, cli,
    default_image_path, multiboot2_header, run,
};

/// K for the workload runs.
const K: u8 = 4;
/// N for the workload runs: 2K, enough for every L2 to run twice (so the
/// steady state after the first round has nested entries in it).
const N: u32 = 8;
/// Wall-clock limit for one workload run (Bochs on a shared machine).
const RUN_TIMEOUT: Duration = Duration::from_mins(10);

fn image_path() -> PathBuf {
    let path = default_image_path();
    assert!(
        path.is_file(),
        "hv-standalone image missing at {} (hv-host's build script builds images/; \
         or build it with `cargo build --release -p hv-standalone` in images/, \
         or point HV_STANDALONE_IMAGE at it)",
        path.display()
    );
    path
}

/// Whether the Bochs tests can run: false (test passes with a note) when
/// Bochs is missing and `HV_REQUIRE_BOCHS` is not 1; panics when it is.
fn require_bochs() -> bool {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|directory| directory.join("bochs").is_file())
    });
    if found {
        return true;
    }
    assert!(
        std::env::var("HV_REQUIRE_BOCHS").as_deref() != Ok("1"),
        "HV_REQUIRE_BOCHS=1 but `bochs` is not in PATH: apt-get install bochs bochsbios vgabios"
    );
    eprintln!(
        "note: bochs not found in PATH; skipping the Bochs boot (set HV_REQUIRE_BOCHS=1 to fail instead)"
    );
    false
}

fn elf_entry(elf: &[u8]) -> u64 {
    u64::from_le_bytes(elf[0x18..0x20].try_into().unwrap())
}

#[test]
fn image_carries_a_valid_multiboot2_header_pointing_at_entry32() {
    let elf = std::fs::read(image_path()).unwrap();
    let header = multiboot2_header(&elf).expect("no valid multiboot2 header in the first 32 KiB");
    assert_eq!(header.offset % 8, 0);
    assert!(header.offset < 32 * 1024);
    assert_eq!(header.architecture, 0, "i386 protected-mode entry");
    assert_eq!(
        header.tags.last(),
        Some(&(0, 0, 8)),
        "ends with the end tag"
    );
    // The entry-address tag and the ELF entry both name entry32, in the
    // kernel at 1 MiB.
    let entry = header.entry_address.expect("entry-address tag");
    assert_eq!(u64::from(entry), elf_entry(&elf));
    assert!(entry >= 0x10_0000);
}

#[test]
fn image_makes_a_bootable_disk() {
    let elf = std::fs::read(image_path()).unwrap();
    let disk = build_disk_image(&elf).unwrap();
    assert_eq!(&disk.bytes[510..512], &[0x55, 0xAA]);
    assert!(disk.loader_sectors >= 1 && disk.loader_sectors <= 64);
    assert!(disk.kernel_sectors >= 1);
    assert_eq!(disk.bytes.len() as u64, disk.cylinders * 16 * 63 * 512);
    // The kernel starts with the multiboot2 header (linker.ld).
    let kernel = 512 * (1 + disk.loader_sectors as usize);
    assert_eq!(
        &disk.bytes[kernel..kernel + 4],
        &0xE852_50D6u32.to_le_bytes()
    );
}

#[test]
fn image_carries_a_run_config_record_in_its_loader() {
    let elf = std::fs::read(image_path()).unwrap();
    let mut disk = build_disk_image(&elf).unwrap();
    let record = disk
        .config_record()
        .expect("no HVCF record in the loader sectors");
    assert!(record >= 512 && record + 16 <= 512 * (1 + disk.loader_sectors as usize));
    let config = RunConfig {
        mode: RunMode::Nested,
        l2_guests: 3,
        policy: Some(Policy::Xen),
        l1_illegal: Some(IllegalCase::Ept12Outside),
        slices: 77,
    };
    disk.set_run_config(&config).unwrap();
    assert_eq!(
        &disk.bytes[record..record + 16],
        &[b'H', b'V', b'C', b'F', 2, 3, 2, 3, 77, 0, 0, 0, 0, 0, 0, 0]
    );
}

#[test]
fn invalid_run_configs_are_rejected_before_bochs_starts() {
    for (config, expected) in [
        (
            RunConfig {
                policy: Some(Policy::FlushAlways),
                ..RunConfig::default()
            },
            RunConfigError::PolicyWithoutNested("flush-always"),
        ),
        (
            RunConfig {
                l2_guests: 9,
                ..RunConfig::default()
            },
            RunConfigError::L2Guests(9),
        ),
        (
            RunConfig {
                mode: RunMode::Nested,
                slices: 0,
                ..RunConfig::default()
            },
            RunConfigError::Slices(0),
        ),
    ] {
        let options = StandaloneOptions {
            image: Some(image_path()),
            bochs: PathBuf::from("/nonexistent/bochs"),
            config,
            ..StandaloneOptions::default()
        };
        let error = run(&options, |_| {}).unwrap_err();
        assert!(
            matches!(&error, StandaloneError::Config(found) if *found == expected),
            "{error}"
        );
    }
}

/// Runs the `hv` binary with `args`; returns (success, stdout, stderr).
fn hv(args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hv"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_command_line_rejects_bad_combinations() {
    for (args, says) in [
        (&["standalone", "--policy", "hv"][..], "--nested"),
        (&["standalone", "--nested", "--policy", "vmware"], "vmware"),
        (&["standalone", "--l2", "0"], "0"),
        (&["standalone", "--l2", "9"], "9"),
        (&["standalone", "--slices", "0"], "0"),
        (&["standalone", "--probe-only", "--nested"], "--nested"),
        (
            &["standalone", "--l1-illegal", "vmxon-thrice"],
            "vmxon-thrice",
        ),
    ] {
        let (success, _, stderr) = hv(args);
        assert!(!success, "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let (success, stdout, _) = hv(&["standalone", "--help"]);
    assert!(success);
    for flag in ["--nested", "--l2", "--slices", "--policy", "flush-always"] {
        assert!(stdout.contains(flag), "--help lacks {flag}:\n{stdout}");
    }
}

#[test]
fn missing_bochs_is_a_clear_error() {
    let options = StandaloneOptions {
        image: Some(image_path()),
        bochs: PathBuf::from("/nonexistent/bochs"),
        ..StandaloneOptions::default()
    };
    let error = run(&options, |_| {}).unwrap_err();
    assert!(
        matches!(error, StandaloneError::BochsMissing { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("apt-get install bochs"));
}

#[test]
fn boots_on_bochs_and_probes_vmx_as_l0() {
    if !require_bochs() {
        return;
    }
    let options = StandaloneOptions {
        image: Some(image_path()),
        timeout: Duration::from_mins(1),
        config: RunConfig {
            mode: RunMode::Probe,
            ..RunConfig::default()
        },
        ..StandaloneOptions::default()
    };
    let mut streamed = 0;
    let report = match run(&options, |_| streamed += 1) {
        Ok(report) => report,
        Err(error) => panic!("hv standalone failed:\n{error}"),
    };
    assert_eq!(report.engine, "bochs");
    assert_eq!(report.mode, RunMode::Probe);
    assert!(!report.nested);
    assert_eq!(report.status, "ok");
    assert_eq!((report.l2_ok, report.l0.as_ref()), (None, None));
    assert!(streamed > 10, "the console was streamed");

    // The boot path, stage by stage.
    let console = report.console.join("\n");
    for stage in [
        "boot sector",
        "loader: e820, a20, kernel",
        "Rust entered",
        "GDT/TSS/IDT loaded",
        "SSE on",
        "memory map (BIOS E820)",
        "heap ok",
        "VMXON ok",
        "VMCLEAR, VMPTRLD, VMPTRST",
        "VMXOFF ok",
    ] {
        assert!(
            console.contains(stage),
            "console lacks {stage:?}:\n{console}"
        );
    }

    // What the image read from Bochs's MSRs is what hv-arch-vmx's fixture
    // says Bochs 2.7's corei7_skylake_x reports.
    let vmx = &report.vmx;
    assert_eq!(vmx["revision_id"], 0x2b);
    assert_eq!(vmx["vmcs_size"], 4096);
    for key in [
        "ept",
        "vpid",
        "unrestricted_guest",
        "vmcs_shadowing",
        "vmxon",
        "vmcs_round_trip",
    ] {
        assert_eq!(vmx[key], true, "{key}");
    }
    let fixture = VmxCapabilities::BOCHS_SKYLAKE_X_RAW;
    for msr in VmxMsr::ALL {
        if fixture.msr_exists(msr) {
            let read = vmx["msrs"][msr.name()]
                .as_str()
                .unwrap_or_else(|| panic!("{} not reported", msr.name()));
            assert_eq!(
                read,
                format!("{:#018x}", fixture.get(msr)),
                "{}",
                msr.name()
            );
        }
    }

    assert!(report.frames["total"].as_u64().unwrap() > 1000);
    let ticks = report.bochs_instructions.expect("Bochs tick count");
    assert!(ticks > 1_000_000, "{ticks}");
    eprintln!(
        "hv-standalone on Bochs: {} ms wall, {ticks} Bochs ticks",
        report.bochs_wall_ms
    );
}

#[test]
fn an_unexpected_exception_is_reported_with_vector_and_rip() {
    if !require_bochs() {
        return;
    }
    let options = StandaloneOptions {
        image: Some(image_path()),
        timeout: Duration::from_mins(1),
        self_test_exception: true,
        config: RunConfig {
            mode: RunMode::Probe,
            ..RunConfig::default()
        },
        ..StandaloneOptions::default()
    };
    let error = run(&options, |_| {}).unwrap_err();
    let StandaloneError::RunFailed(failed) = &error else {
        panic!("expected a failed run, got: {error}");
    };
    let FailedRun {
        failure,
        console_tail,
        run_dir,
        ..
    } = failed.as_ref();
    let RunFailure::Exception(detail) = failure else {
        panic!("expected an exception, got: {error}");
    };
    assert!(detail.contains("vector=6 name=#UD"), "{detail}");
    assert!(
        detail.contains("rip=0x1"),
        "RIP in the kernel at 1 MiB: {detail}"
    );
    assert!(
        console_tail
            .iter()
            .any(|line| line.contains("EXCEPTION #UD (vector 6)"))
    );
    assert!(error.to_string().contains("Bochs log"));
    let _ = std::fs::remove_dir_all(run_dir);
}

/// Runs the image with `config` (K = 4, N = 8 unless set) and returns the
/// report of a successful run; panics with the launcher's error (console
/// tail, Bochs log lines) otherwise.
fn run_workloads(config: RunConfig) -> StandaloneReport {
    let options = StandaloneOptions {
        image: Some(image_path()),
        timeout: RUN_TIMEOUT,
        config,
        ..StandaloneOptions::default()
    };
    let mut l1_lines = 0;
    let report = match run(&options, |line| {
        if line.starts_with("L1| ") {
            l1_lines += 1;
        }
    }) {
        Ok(report) => report,
        Err(error) => panic!("hv standalone {config:?} failed:\n{error}"),
    };
    eprintln!("{}", cli::summary(&report));
    assert_eq!(report.status, "ok");
    assert_eq!(report.mode, config.mode);
    assert_eq!(report.nested, config.mode == RunMode::Nested);
    assert_eq!(report.l2_guests, Some(config.l2_guests));
    assert_eq!(report.slices, Some(config.slices));
    assert_eq!(report.l2_ok, Some(true));
    assert_eq!(report.slices_run, Some(u64::from(config.slices)));
    assert!(report.l0.is_some());
    assert!(report.bochs_instructions.is_some_and(|count| count > 0));
    if config.mode == RunMode::Nested {
        assert!(l1_lines > 0, "L1's console was forwarded with `L1| `");
        assert!(
            report.console.iter().any(|line| line.starts_with("L1| ")),
            "L1's lines are in the console"
        );
    }
    report
}

fn one_level() -> RunConfig {
    RunConfig {
        mode: RunMode::OneLevel,
        l2_guests: K,
        policy: None,
        l1_illegal: None,
        slices: N,
    }
}

fn nested(policy: Policy) -> RunConfig {
    RunConfig {
        mode: RunMode::Nested,
        policy: Some(policy),
        ..one_level()
    }
}

#[test]
fn one_level_l0_runs_four_l2_workloads() {
    if !require_bochs() {
        return;
    }
    let report = run_workloads(one_level());
    assert_eq!(report.policy, None);
    assert_eq!(report.illegal, None);
    let l0 = report.l0.unwrap();
    assert_eq!(l0.nested_entries, 0);
    assert_eq!(l0.reflected_exits, 0);
    assert_eq!(l0.ept02_fills, 0);
    assert_eq!(l0.roots_live, 0);
    assert_eq!(l0.l1_exits, 0);
}

#[test]
fn nested_k4_policy_hv_has_no_steady_state_flushes() {
    if !require_bochs() {
        return;
    }
    let report = run_workloads(nested(Policy::Hv));
    assert_eq!(report.policy, Some(Policy::Hv));
    let l0 = report.l0.unwrap();
    assert!(l0.nested_entries > 0, "{l0:?}");
    assert!(l0.ept02_fills > 0, "{l0:?}");
    assert!(l0.roots_live >= u64::from(K), "one root per L2: {l0:?}");
    assert!(l0.l1_exits > 0, "{l0:?}");
    assert_eq!(l0.steady_invept, 0, "{l0:?}");
    assert_eq!(l0.steady_invvpid, 0, "{l0:?}");
}

#[test]
fn nested_k4_policy_flush_always_flushes_on_every_entry() {
    if !require_bochs() {
        return;
    }
    let report = run_workloads(nested(Policy::FlushAlways));
    assert_eq!(report.policy, Some(Policy::FlushAlways));
    let l0 = report.l0.unwrap();
    assert!(l0.nested_entries > 0, "{l0:?}");
    assert!(
        l0.invept >= l0.nested_entries,
        "at least one INVEPT per nested entry: {l0:?}"
    );
    assert!(l0.steady_invept > 0, "{l0:?}");
}

/// Runs an illegal case and checks the SDM's answer came back and the run
/// went on: the workloads still ran and checked out.
fn illegal(mode: RunMode, case: IllegalCase) {
    if !require_bochs() {
        return;
    }
    let config = RunConfig {
        mode,
        l1_illegal: Some(case),
        policy: (mode == RunMode::Nested).then_some(Policy::Hv),
        ..one_level()
    };
    let report = run_workloads(config);
    let outcome = report.illegal.expect("the illegal case's outcome");
    assert_eq!(outcome.case, case);
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(outcome.observed, outcome.expected, "{outcome:?}");
    // L0 kept running: the workloads ran after it (run_workloads checked
    // l2_ok and the status).
    assert_eq!(report.l2_ok, Some(true));
}

#[test]
fn nested_l1_vmxon_twice_gets_the_sdm_answer() {
    illegal(RunMode::Nested, IllegalCase::VmxonTwice);
}

#[test]
fn nested_l1_vmlaunch_with_a_bad_control_gets_the_sdm_answer() {
    illegal(RunMode::Nested, IllegalCase::VmlaunchBadControl);
}

#[test]
fn nested_l1_ept12_outside_its_memory_gets_the_sdm_answer() {
    illegal(RunMode::Nested, IllegalCase::Ept12Outside);
}

#[test]
fn one_level_vmlaunch_with_a_bad_control_gets_bochs_answer() {
    illegal(RunMode::OneLevel, IllegalCase::VmlaunchBadControl);
}
