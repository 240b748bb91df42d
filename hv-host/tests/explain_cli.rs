//! `hv explain` as a user runs it: the binary, its output and exit status.

use serde_json::Value;
use std::process::{Command, Output};

fn hv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hv"))
        .args(args)
        .output()
        .expect("run hv")
}

fn json(args: &[&str]) -> Value {
    let output = hv(args);
    assert!(
        output.status.success(),
        "hv {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON value")
}

/// Bad input: status 2, a message on stderr, and no panic.
fn rejects(args: &[&str]) -> String {
    let output = hv(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "hv {args:?}: {stderr}");
    assert!(
        !stderr.contains("panicked"),
        "hv {args:?} panicked: {stderr}"
    );
    assert!(!stderr.trim().is_empty(), "hv {args:?} gave no message");
    stderr
}

#[test]
fn vmcs_all_json_lists_every_field_with_width_and_kind() {
    let fields = json(&["explain", "vmcs", "--all", "--json"]);
    let fields = fields.as_array().expect("an array");
    assert!(fields.len() >= 170, "only {} fields", fields.len());
    let mut names = std::collections::HashSet::new();
    for field in fields {
        let name = field["name"].as_str().expect("name");
        let encoding = field["encoding"].as_u64().expect("encoding");
        let width = field["width"].as_str().expect("width");
        let kind = field["kind"].as_str().expect("kind");
        assert!(names.insert(name.to_owned()), "{name} twice");
        // SDM 25.11.2: width in bits 14:13, type in bits 11:10.
        assert_eq!(
            width,
            ["16", "64", "32", "natural"][((encoding >> 13) & 3) as usize],
            "{name}"
        );
        assert_eq!(
            kind,
            ["control", "read-only", "guest", "host"][((encoding >> 10) & 3) as usize],
            "{name}"
        );
    }
    let cr0 = fields
        .iter()
        .find(|f| f["name"] == "GUEST_CR0")
        .expect("GUEST_CR0");
    assert_eq!(cr0["encoding"], 0x6800);
    assert_eq!(cr0["width"], "natural");
    assert_eq!(cr0["kind"], "guest");
}

#[test]
fn vmcs_field_by_name_and_by_high_encoding() {
    let by_name = json(&["explain", "vmcs", "EPT_POINTER", "--json"]);
    assert_eq!(by_name["encoding"], 0x201a);
    assert_eq!(by_name["width"], "64");
    let high = json(&["explain", "vmcs", "0x201b", "--json"]);
    assert_eq!(high["name"], "EPT_POINTER");
    assert_eq!(high["access"], "high");
    let text = hv(&["explain", "vmcs", "0x4402"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("VM_EXIT_REASON"));
}

#[test]
fn exit_json_has_reason_and_name() {
    let exit = json(&["explain", "exit", "48", "--json"]);
    assert_eq!(exit["reason"], 48);
    assert_eq!(exit["name"], "EPT violation");
    let by_name = json(&["explain", "exit", "ept-violation", "--json"]);
    assert_eq!(by_name["reason"], 48);
}

#[test]
fn exit_qualifications_are_decoded_per_reason() {
    let ept = json(&[
        "explain",
        "exit",
        "48",
        "--qualification",
        "0x181",
        "--json",
    ]);
    assert_eq!(ept["qualification"]["access"], "read");
    assert_eq!(ept["qualification"]["guest_linear_address_valid"], true);
    let cr = json(&["explain", "exit", "28", "-q", "0x3", "--json"]);
    assert_eq!(cr["qualification"]["instruction"], "mov cr3, rax");
    let io = json(&["explain", "exit", "30", "-q", "0x3f80008", "--json"]);
    assert_eq!(io["qualification"]["port"], 0x3f8);
    assert_eq!(io["qualification"]["direction"], "in");
    // VMREAD rax -> [rbx]: reg2 = rax (field), memory operand with base rbx,
    // 64-bit addressing, DS, no index.
    let info: u32 = (1 << 8) | (3 << 15) | (1 << 22) | (3 << 23);
    let vmread = json(&[
        "explain",
        "exit",
        "vmread",
        "-i",
        &format!("{info:#x}"),
        "--json",
    ]);
    assert_eq!(vmread["instruction_info"]["field_register"], "rax");
    assert_eq!(
        vmread["instruction_info"]["value_operand"],
        "ds:[rbx + displacement] (64-bit addressing)"
    );
}

#[test]
fn entry_failure_word_is_split() {
    let exit = json(&["explain", "exit", "0x80000021", "--json"]);
    assert_eq!(exit["reason"], 33);
    assert_eq!(exit["entry_failure"], true);
}

#[test]
fn vm_error_json_has_number_and_text() {
    let error = json(&["explain", "vm-error", "28", "--json"]);
    assert_eq!(error["number"], 28);
    assert_eq!(error["text"], "Invalid operand to INVEPT/INVVPID");
}

#[test]
fn eptp_and_ept_entry_report_validity() {
    let good = json(&["explain", "eptp", "0x105e", "--json"]);
    assert_eq!(good["valid"], true);
    assert_eq!(good["walk_levels"], 4);
    let reserved = json(&["explain", "eptp", "0x115e", "--json"]);
    assert_eq!(reserved["valid"], false);
    let write_only = json(&["explain", "ept-entry", "0x1002", "--level", "1", "--json"]);
    assert_eq!(write_only["misconfigured"], true);
    let leaf = json(&["explain", "ept-entry", "0x2000b7", "--level", "2", "--json"]);
    assert_eq!(leaf["page_size"], 2 * 1024 * 1024);
    assert_eq!(leaf["misconfigured"], false);
}

#[test]
fn bad_input_is_status_2_with_a_message() {
    assert!(rejects(&["explain", "vmcs", "0x682e"]).contains("no VMCS field"));
    assert!(rejects(&["explain", "vmcs", "NOT_A_FIELD"]).contains("NOT_A_FIELD"));
    rejects(&["explain", "vmcs", "0x6801"]);
    rejects(&["explain", "vmcs", "0xffffffffffffffffff"]);
    rejects(&["explain", "exit", "0x1_0000_0000"]);
    rejects(&["explain", "exit", "not-a-reason"]);
    rejects(&["explain", "exit", "48", "--qualification", "zz"]);
    rejects(&[
        "explain",
        "exit",
        "23",
        "--instruction-info",
        "0x1_0000_0000",
    ]);
    rejects(&["explain", "vm-error", "-1"]);
    rejects(&["explain", "eptp", "0xg"]);
    rejects(&["explain", "ept-entry", "0x7", "--level", "9"]);
    rejects(&["explain", "ept-entry", "0x7"]);
    rejects(&["explain", "vmcs"]);
}
