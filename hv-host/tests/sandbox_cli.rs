//! `hv run` and `hv demo` as a user runs them: the binary, its output and
//! exit status, against the demo guest.

mod sandbox_support;

use std::process::{Command, Output};

use sandbox_support::require_kvm;
use serde_json::Value;

fn hv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hv"))
        .args(args)
        .output()
        .expect("run hv")
}

fn demo_path() -> String {
    hv_host::images::demo_guest().display().to_string()
}

/// `hv run <demo> args..`.
fn run(args: &[&str]) -> Output {
    let demo = demo_path();
    let mut all = vec!["run", demo.as_str()];
    all.extend_from_slice(args);
    hv(&all)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn run_prints_typed_results() {
    if !require_kvm() {
        return;
    }
    let output = run(&["add", "40", "-2"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "38\n");
    let output = run(&["echo", "hello sandbox"]);
    assert_eq!(stdout(&output), "hello sandbox\n");
    let output = run(&["checksum", "Wikipedia"]);
    assert_eq!(stdout(&output), format!("{}\n", 0x11E6_0398));
    let output = run(&["call_host", "1", "2"]);
    assert_eq!(stdout(&output), "4\n");
}

#[test]
fn run_json_has_function_result_and_time() {
    if !require_kvm() {
        return;
    }
    let output = run(&["mul", "1.5", "4", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let value: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(value["function"], "mul");
    assert_eq!(value["result"], 6.0);
    assert!(value["elapsed_us"].as_f64().is_some_and(|us| us > 0.0));
    let output = run(&["bytes", "3", "--json"]);
    let value: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(value["result"], serde_json::json!([0, 1, 2]));
}

#[test]
fn run_rejects_bad_input_with_status_2() {
    if !require_kvm() {
        return;
    }
    for (args, needle) in [
        (&["no_such_function"][..], "offers: nop, echo"),
        (&["add", "1"][..], "takes 2 argument(s), 1 given"),
        (&["add", "one", "2"][..], "argument 1"),
        (&["greet", "x"][..], "not a primitive type"),
    ] {
        let output = run(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(needle),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let output = hv(&["run", "/nonexistent/guest.elf", "nop"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(!stderr(&output).contains("panicked"));
}

#[test]
fn run_reports_guest_failures_with_status_1() {
    if !require_kvm() {
        return;
    }
    let output = run(&["touch_outside", "0x10000000000"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("#PF") && message.contains("0x10000000000"),
        "{message}"
    );
    let output = run(&["panic", "no more"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("no more"), "{}", stderr(&output));
    let output = run(&["spin", "--deadline-ms", "50"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("deadline"), "{}", stderr(&output));
}

#[test]
fn demo_runs_every_step() {
    if !require_kvm() {
        return;
    }
    let output = hv(&["demo"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}\n{}", stderr(&output));
    assert!(!text.contains("FAIL"), "{text}");
    for needle in [
        "host_add(40, 1) called from the guest",
        "guest log Info",
        "restored in",
        "deadline",
        "guest panicked",
        "#PF",
        "call add(1, 2)",
        "Every step behaved.",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}
