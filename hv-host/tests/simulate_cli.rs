//! `hv simulate`: the JSON keys of issue 4 and its targets for K = 16 (with
//! N = 1,000 instead of 100,000 to keep the test fast; the counts scale).

use std::process::Command;

use serde_json::Value;

fn simulate(policy: &str, extra: &[&str]) -> (bool, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_hv"))
        .args([
            "simulate",
            "--l2",
            "16",
            "--switches",
            "1000",
            "--policy",
            policy,
            "--json",
        ])
        .args(extra)
        .output()
        .expect("hv runs");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let json = serde_json::from_str(&stdout).expect("one JSON object");
    (output.status.success(), json)
}

fn count(json: &Value, path: &[&str]) -> u64 {
    let mut value = json;
    for key in path {
        value = &value[key];
    }
    value
        .as_u64()
        .unwrap_or_else(|| panic!("{path:?} is a count in {json}"))
}

#[test]
fn json_has_every_key_of_the_issue() {
    let (ok, json) = simulate("hv", &[]);
    assert!(ok);
    for key in [
        "nested_entries",
        "nested_exits",
        "reflected",
        "handled_in_l0",
        "ept02_fills",
        "stale_translations",
        "l1_exits",
        "roots_live",
        "fills_after_first_round",
    ] {
        count(&json, &[key]);
    }
    for key in ["single", "global"] {
        count(&json, &["invept", key]);
    }
    for key in ["individual", "single", "all", "single_retaining_globals"] {
        count(&json, &["invvpid", key]);
    }
}

#[test]
fn hv_policy_flushes_nothing_on_switches_and_stops_filling() {
    let (ok, json) = simulate("hv", &[]);
    assert!(ok, "{json}");
    assert_eq!(count(&json, &["nested_entries"]), 1000);
    assert_eq!(count(&json, &["invept", "single"]), 0);
    assert_eq!(count(&json, &["invept", "global"]), 0);
    assert_eq!(count(&json, &["flushes_after_first_round"]), 0, "{json}");
    assert_eq!(count(&json, &["fills_after_first_round"]), 0, "{json}");
    assert_eq!(count(&json, &["stale_translations"]), 0);
}

#[test]
fn every_policy_has_no_stale_translations_and_kvm_xen_show_their_costs() {
    for policy in ["hv", "kvm", "xen", "flush-always"] {
        let (ok, json) = simulate(policy, &[]);
        assert!(ok, "{policy}: {json}");
        assert_eq!(count(&json, &["stale_translations"]), 0, "{policy}");
        if policy != "hv" {
            assert!(
                count(&json, &["fills_after_first_round"]) > 0,
                "{policy}: {json}"
            );
            assert!(count(&json, &["invept", "single"]) > 0, "{policy}: {json}");
        }
    }
}

#[test]
fn churn_keeps_every_policy_correct() {
    for policy in ["hv", "kvm", "xen"] {
        let (ok, json) = simulate(policy, &["--churn"]);
        assert!(ok, "{policy}: {json}");
        assert_eq!(count(&json, &["stale_translations"]), 0, "{policy}");
    }
}

#[test]
fn unknown_policy_is_rejected() {
    let output = Command::new(env!("CARGO_BIN_EXE_hv"))
        .args(["simulate", "--policy", "vmware"])
        .output()
        .expect("hv runs");
    assert!(!output.status.success());
}
