//! hv-standalone on Bochs: the image's multiboot2 header and disk layout,
//! and a real boot that runs the L0 VMX probe (VMXON, a VMCS round trip,
//! VMXOFF) against Bochs's VMX implementation.
//!
//! The Bochs run needs `bochs` (Debian: `bochs bochsbios vgabios`). Without
//! it the run is skipped with a note, unless `HV_REQUIRE_BOCHS=1`, which
//! turns its absence into a failure (CI sets it).

use std::path::PathBuf;
use std::time::Duration;

use hv_arch_vmx::capabilities::VmxCapabilities;
use hv_arch_vmx::msr::VmxMsr;
use hv_host::standalone::{
    RunFailure, StandaloneError, StandaloneOptions, build_disk_image, default_image_path,
    multiboot2_header, run,
};

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
fn later_milestone_flags_are_rejected_clearly() {
    for options in [
        StandaloneOptions {
            nested: true,
            ..StandaloneOptions::default()
        },
        StandaloneOptions {
            l2_guests: Some(4),
            ..StandaloneOptions::default()
        },
        StandaloneOptions {
            policy: Some("hv".to_owned()),
            ..StandaloneOptions::default()
        },
    ] {
        let error = run(&options, |_| {}).unwrap_err();
        assert!(
            matches!(error, StandaloneError::NotYetImplemented { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("not yet implemented"));
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
        ..StandaloneOptions::default()
    };
    let mut streamed = 0;
    let report = match run(&options, |_| streamed += 1) {
        Ok(report) => report,
        Err(error) => panic!("hv standalone failed:\n{error}"),
    };
    assert_eq!(report.engine, "bochs");
    assert!(!report.nested);
    assert_eq!(report.status, "ok");
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
        ..StandaloneOptions::default()
    };
    let error = run(&options, |_| {}).unwrap_err();
    let StandaloneError::RunFailed {
        failure,
        console_tail,
        run_dir,
        ..
    } = &error
    else {
        panic!("expected a failed run, got: {error}");
    };
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
