//! The sandbox API against the demo guest (images/guests/demo, built by
//! hv-host's build script): typed calls, host functions, logs,
//! snapshot/restore, deadline, kill, and every guest failure.

mod sandbox_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hv_guest_abi::{LogLevel, ParamType};
use hv_host::sandbox::{
    FaultInstruction, GuestLog, MemoryConfig, Sandbox, SandboxBuilder, SandboxError,
};
use sandbox_support::require_kvm;
use serde::{Deserialize, Serialize};

fn demo() -> SandboxBuilder {
    SandboxBuilder::from_path(hv_host::images::demo_guest())
        .host_function("host_add", |a: i64, b: i64| a + b)
        .host_function("host_panics", |_: i64, _: i64| -> i64 {
            panic!("a host function failing")
        })
}

fn demo_sandbox() -> Sandbox {
    demo().build().expect("the demo guest starts")
}

/// `greet`'s argument, as the guest defines it.
#[derive(Serialize)]
struct Person {
    name: String,
    age: u32,
}

/// `greet`'s result.
#[derive(Debug, PartialEq, Deserialize)]
struct Greeting {
    text: String,
    adult: bool,
}

#[test]
fn the_guest_lists_its_functions_with_types() {
    if !require_kvm() {
        return;
    }
    let sandbox = demo_sandbox();
    let add = sandbox
        .functions()
        .iter()
        .find(|function| function.name == "add")
        .expect("add is listed");
    assert_eq!(add.params, [ParamType::I64, ParamType::I64]);
    assert_eq!(add.result, ParamType::I64);
    for name in ["echo", "checksum", "spin", "panic", "touch_outside"] {
        assert!(
            sandbox
                .functions()
                .iter()
                .any(|function| function.name == name),
            "{name} missing"
        );
    }
}

#[test]
fn typed_calls_round_trip() {
    if !require_kvm() {
        return;
    }
    let mut sandbox = demo_sandbox();
    sandbox.call::<()>("nop", ()).unwrap();
    assert_eq!(sandbox.call::<String>("echo", ("hi",)).unwrap(), "hi");
    assert_eq!(
        sandbox.call::<String>("upper", ("straße",)).unwrap(),
        "STRASSE"
    );
    assert_eq!(sandbox.call::<i64>("add", (40i64, 2i64)).unwrap(), 42);
    assert_eq!(
        sandbox.call::<i64>("add", (i64::MAX, 1i64)).unwrap(),
        i64::MIN
    );
    assert!((sandbox.call::<f64>("mul", (1.5f64, -4.0f64)).unwrap() + 6.0).abs() < f64::EPSILON);
    assert_eq!(
        sandbox
            .call::<u32>("checksum", (b"Wikipedia".to_vec(),))
            .unwrap(),
        0x11E6_0398
    );
    assert_eq!(
        sandbox
            .call::<String>("concat", (("x".to_owned(), 7u32, true),))
            .unwrap(),
        "x-7-true"
    );
    let person = Person {
        name: "Ada".into(),
        age: 36,
    };
    assert_eq!(
        sandbox.call::<Greeting>("greet", (person,)).unwrap(),
        Greeting {
            text: "Hello, Ada (36)!".into(),
            adult: true
        }
    );
    let bytes = sandbox.call::<Vec<u8>>("bytes", (300u32,)).unwrap();
    assert_eq!(bytes.len(), 300);
    assert_eq!(
        (bytes[0], bytes[255], bytes[256], bytes[299]),
        (0, 255, 0, 43)
    );
    assert_eq!(sandbox.call::<u64>("memory_size", ()).unwrap(), 8 << 20);
    assert!(sandbox.call::<u64>("alloc_stress", (500u32,)).unwrap() > 0);
}

#[test]
fn the_guest_calls_host_functions() {
    if !require_kvm() {
        return;
    }
    let mut sandbox = demo_sandbox();
    assert_eq!(sandbox.call::<i64>("call_host", (1i64, 2i64)).unwrap(), 4);
    assert_eq!(
        sandbox
            .call::<Result<i64, String>>("call_host_checked", ("host_add", 5i64, 6i64))
            .unwrap(),
        Ok(11)
    );
    let missing = sandbox
        .call::<Result<i64, String>>("call_host_checked", ("no_such_host_fn", 1i64, 2i64))
        .unwrap();
    assert!(missing.is_err(), "{missing:?}");
    assert!(!sandbox.is_poisoned());
    assert!(matches!(
        sandbox.call::<Result<i64, String>>("call_host_checked", ("host_panics", 1i64, 2i64)),
        Err(SandboxError::HostFunctionPanicked { name }) if name == "host_panics"
    ));
    assert!(sandbox.is_poisoned());
}

#[test]
fn guest_logs_reach_the_callback() {
    if !require_kvm() {
        return;
    }
    let logs: Arc<Mutex<Vec<GuestLog>>> = Arc::default();
    let sink = Arc::clone(&logs);
    let mut sandbox = demo()
        .log_callback(move |log| sink.lock().unwrap().push(log.clone()))
        .build()
        .unwrap();
    assert_eq!(
        sandbox
            .call::<String>("log_and_return", ("hello log",))
            .unwrap(),
        "hello log"
    );
    let logs = logs.lock().unwrap();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].level, LogLevel::Info);
    assert_eq!(logs[0].message, "hello log");
}

#[test]
fn restore_reverts_guest_memory() {
    if !require_kvm() {
        return;
    }
    let mut sandbox = demo_sandbox();
    let clean = sandbox.snapshot().unwrap();
    assert_eq!(sandbox.call::<u32>("dirty_pages", (16u32,)).unwrap(), 16);
    sandbox.restore(&clean).unwrap();
    // The guest's exception handler sets a flag so that a second exception
    // triple-faults. Each restore must clear it again: the fault is
    // reported normally every time.
    for _ in 0..3 {
        assert!(matches!(
            sandbox.call::<()>("invalid_opcode", ()),
            Err(SandboxError::GuestFault(fault)) if fault.vector == 6
        ));
        sandbox.restore(&clean).unwrap();
        assert_eq!(sandbox.call::<i64>("add", (1i64, 1i64)).unwrap(), 2);
    }
    // A faulted guest cannot be snapshotted or called until restored.
    sandbox.call::<()>("invalid_opcode", ()).unwrap_err();
    assert!(matches!(sandbox.snapshot(), Err(SandboxError::Poisoned)));
    assert!(matches!(
        sandbox.call::<()>("nop", ()),
        Err(SandboxError::Poisoned)
    ));
}

#[test]
fn deadline_stops_a_spinning_guest() {
    if !require_kvm() {
        return;
    }
    let mut sandbox = demo_sandbox();
    let clean = sandbox.snapshot().unwrap();
    let after = Duration::from_millis(50);
    assert!(matches!(
        sandbox.call_with_deadline::<()>("spin", (), after),
        Err(SandboxError::Deadline { after: reported }) if reported == after
    ));
    assert!(sandbox.is_poisoned());
    sandbox.restore(&clean).unwrap();
    assert_eq!(sandbox.call::<String>("echo", ("alive",)).unwrap(), "alive");
    // The builder's default deadline applies to plain calls.
    let mut bounded = demo()
        .default_deadline(Duration::from_millis(50))
        .build()
        .unwrap();
    assert!(matches!(
        bounded.call::<()>("spin", ()),
        Err(SandboxError::Deadline { .. })
    ));
}

#[test]
fn kill_from_another_thread_stops_the_guest() {
    if !require_kvm() {
        return;
    }
    let mut sandbox = demo_sandbox();
    let clean = sandbox.snapshot().unwrap();
    let handle = sandbox.interrupt_handle();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        while !handle.kill() {
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    assert!(matches!(
        sandbox.call::<()>("spin", ()),
        Err(SandboxError::Killed)
    ));
    killer.join().unwrap();
    assert!(sandbox.is_poisoned());
    sandbox.restore(&clean).unwrap();
    assert_eq!(sandbox.call::<i64>("add", (2i64, 2i64)).unwrap(), 4);
}

#[test]
fn guest_panic_reports_its_message_and_poisons_until_restore() {
    if !require_kvm() {
        return;
    }
    let mut sandbox = demo_sandbox();
    let clean = sandbox.snapshot().unwrap();
    match sandbox.call::<()>("panic", ("the guest gave up",)) {
        Err(SandboxError::GuestPanic {
            message,
            file,
            line,
        }) => {
            assert_eq!(message, "the guest gave up");
            assert!(file.ends_with("main.rs"), "{file}");
            assert!(line > 0);
        }
        other => panic!("expected a guest panic, got {other:?}"),
    }
    assert!(sandbox.is_poisoned());
    assert!(matches!(
        sandbox.call::<String>("echo", ("x",)),
        Err(SandboxError::Poisoned)
    ));
    assert!(matches!(sandbox.snapshot(), Err(SandboxError::Poisoned)));
    sandbox.restore(&clean).unwrap();
    assert!(!sandbox.is_poisoned());
    assert_eq!(sandbox.call::<String>("echo", ("x",)).unwrap(), "x");
    // A second panic after the restore is reported in full again.
    assert!(matches!(
        sandbox.call::<()>("panic", ("again",)),
        Err(SandboxError::GuestPanic { message, .. }) if message == "again"
    ));
}

#[test]
fn page_fault_reports_address_and_instruction() {
    if !require_kvm() {
        return;
    }
    let mut sandbox = demo_sandbox();
    let address = 1u64 << 40;
    let Err(SandboxError::GuestFault(fault)) = sandbox.call::<u8>("touch_outside", (address,))
    else {
        panic!("expected a page fault");
    };
    assert_eq!(fault.vector, 14);
    assert_eq!(fault.vector_name(), "#PF");
    assert_eq!(fault.address, address);
    // Error code: not present (bit 0 clear), read (bit 1 clear), user (bit 2).
    assert_eq!(fault.error_code & 0b111, 0b100);
    let FaultInstruction::Decoded { text, bytes } = &fault.instruction else {
        panic!("instruction not decoded: {:?}", fault.instruction);
    };
    assert!(text.contains("byte ptr ["), "{text}");
    assert!(!bytes.is_empty());
    let report = SandboxError::GuestFault(fault.clone()).to_string();
    assert!(
        report.contains("#PF") && report.contains("0x10000000000"),
        "{report}"
    );
    assert!(sandbox.is_poisoned());
    // Just past the end of memory faults too.
    let mut sandbox = demo_sandbox();
    assert!(matches!(
        sandbox.call::<u8>("touch_outside", (8u64 << 20,)),
        Err(SandboxError::GuestFault(fault)) if fault.address == 8 << 20
    ));
    // Page 0 is never mapped.
    let mut sandbox = demo_sandbox();
    assert!(matches!(
        sandbox.call::<u8>("touch_outside", (0u64,)),
        Err(SandboxError::GuestFault(fault)) if fault.vector == 14 && fault.address == 0
    ));
}

#[test]
fn invalid_opcode_is_reported_as_ud() {
    if !require_kvm() {
        return;
    }
    let mut sandbox = demo_sandbox();
    let Err(SandboxError::GuestFault(fault)) = sandbox.call::<()>("invalid_opcode", ()) else {
        panic!("expected #UD");
    };
    assert_eq!(fault.vector, 6);
    assert_eq!(fault.vector_name(), "#UD");
    assert_eq!(fault.instruction.to_string(), "ud2");
    assert!(sandbox.is_poisoned());
}

#[test]
fn call_errors_are_typed_and_do_not_poison() {
    if !require_kvm() {
        return;
    }
    let mut sandbox = demo_sandbox();
    assert!(matches!(
        sandbox.call::<()>("no_such_function", ()),
        Err(SandboxError::UnknownFunction { name }) if name == "no_such_function"
    ));
    assert!(matches!(
        sandbox.call::<i64>("add", ()),
        Err(SandboxError::BadArguments { function }) if function == "add"
    ));
    let big = "x".repeat(100_000);
    assert!(matches!(
        sandbox.call::<String>("echo", (big,)),
        Err(SandboxError::ArgumentsTooLarge { size, limit: 65536 }) if size > 100_000
    ));
    assert!(matches!(
        sandbox.call::<Vec<u8>>("bytes", (100_000u32,)),
        Err(SandboxError::ResultTooLarge { function }) if function == "bytes"
    ));
    assert!(matches!(
        sandbox.call::<String>("add", (1i64, 2i64)),
        Err(SandboxError::ResultDecode { .. })
    ));
    assert!(!sandbox.is_poisoned());
    assert_eq!(sandbox.call::<i64>("add", (1i64, 2i64)).unwrap(), 3);
}

#[test]
fn bigger_buffers_allow_bigger_calls() {
    if !require_kvm() {
        return;
    }
    let memory = MemoryConfig {
        input: 256 << 10,
        output: 256 << 10,
        heap: 4 << 20,
        ..MemoryConfig::default()
    };
    let mut sandbox = demo().memory(memory).build().unwrap();
    let big = "y".repeat(100_000);
    assert_eq!(sandbox.call::<String>("echo", (big.clone(),)).unwrap(), big);
    assert_eq!(
        sandbox
            .call::<Vec<u8>>("bytes", (100_000u32,))
            .unwrap()
            .len(),
        100_000
    );
}

#[test]
fn guests_run_with_and_without_the_kvm_cpuid() {
    if !require_kvm() {
        return;
    }
    for expose in [false, true] {
        let mut sandbox = demo()
            .expose_cpuid(expose)
            .build()
            .expect("the demo guest starts");
        assert!((sandbox.call::<f64>("mul", (1.5f64, 4.0f64)).unwrap() - 6.0).abs() < f64::EPSILON);
        assert_eq!(sandbox.call::<i64>("call_host", (40i64, 1i64)).unwrap(), 42);
    }
}
