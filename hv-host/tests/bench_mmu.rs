//! The `hv bench mmu` trace, asserted by exact counts (never times).

use hv_host::bench::mmu::run_one;
use hv_mmu::Policy;

#[test]
fn hv_switches_need_no_fill_and_no_flush_after_warm_up() {
    for guests in [1, 4, 16, 64] {
        let result = run_one(Policy::Hv, guests, 256).expect("trace runs");
        assert_eq!(result.fills, 0, "K = {guests}");
        assert_eq!(result.flushes, 0, "K = {guests}");
        // One 4-level EPT02 per L2: PML4, PDPT, PD and one PT for 256 pages.
        assert_eq!(result.frames, 4 * guests, "K = {guests}");
    }
}

#[test]
fn kvm_and_xen_rebuild_and_flush_beyond_their_root_caches() {
    // 16 guests round-robin: more than KVM's 4 and Xen's 10 cached roots,
    // so every switch rebuilds the slice's 64 pages and flushes.
    for policy in [Policy::Kvm, Policy::Xen, Policy::FlushAlways] {
        let result = run_one(policy, 16, 256).expect("trace runs");
        assert_eq!(result.fills, 64 * 256, "{}", policy.name());
        assert_eq!(result.flushes, 256, "{}", policy.name());
    }
    // Within the cache they behave like hv.
    let kvm = run_one(Policy::Kvm, 4, 256).expect("trace runs");
    assert_eq!(kvm.fills, 0);
    assert_eq!(kvm.flushes, 0);
}

#[test]
fn bench_cli_prints_one_json_object_with_results() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hv"))
        .args([
            "bench",
            "mmu",
            "--switches",
            "64",
            "--guests",
            "1,4",
            "--json",
        ])
        .output()
        .expect("run hv");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON value");
    let results = json["results"].as_array().expect("results array");
    assert_eq!(results.len(), 8);
    for result in results {
        for key in [
            "policy",
            "l2_guests",
            "ns_per_switch",
            "fills_per_switch",
            "flushes_per_switch",
            "frames",
        ] {
            assert!(!result[key].is_null(), "missing {key}");
        }
    }
    let policies: Vec<&str> = results
        .iter()
        .filter_map(|r| r["policy"].as_str())
        .collect();
    assert_eq!(&policies[..4], ["hv", "kvm", "xen", "flush-always"]);
}
