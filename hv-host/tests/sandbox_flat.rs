//! The VM path against hand-assembled flat guests (no guest runtime):
//! start-up, calls, snapshot/restore, deadline, kill, and the failures a
//! guest can cause.

mod sandbox_support;

use std::time::Duration;

use hv_host::sandbox::{MemoryConfig, ProtocolViolation, SandboxBuilder, SandboxError};
use sandbox_support::*;

#[test]
fn counter_guest_answers_calls_and_restores() {
    if !require_kvm() {
        return;
    }
    let mut sandbox = SandboxBuilder::from_bytes(counter_guest()).build().unwrap();
    assert!(sandbox.functions().is_empty());
    assert_eq!(sandbox.call::<u8>("next", ()).unwrap(), 1);
    assert_eq!(sandbox.call::<u8>("next", ()).unwrap(), 2);
    let snapshot = sandbox.snapshot().unwrap();
    assert_eq!(sandbox.call::<u8>("next", ()).unwrap(), 3);
    assert_eq!(sandbox.call::<u8>("next", ()).unwrap(), 4);
    sandbox.restore(&snapshot).unwrap();
    assert_eq!(sandbox.call::<u8>("next", ()).unwrap(), 3);
    sandbox.restore(&snapshot).unwrap();
    sandbox.restore(&snapshot).unwrap();
    assert_eq!(sandbox.call::<u8>("next", ()).unwrap(), 3);
}

#[test]
fn large_sandbox_restores_too() {
    if !require_kvm() {
        return;
    }
    let memory = MemoryConfig {
        total: 256 << 20,
        ..MemoryConfig::default()
    };
    let mut sandbox = SandboxBuilder::from_bytes(counter_guest())
        .memory(memory)
        .build()
        .unwrap();
    let snapshot = sandbox.snapshot().unwrap();
    assert!(snapshot.stored_pages() < 64, "{}", snapshot.stored_pages());
    for _ in 0..10 {
        assert_eq!(sandbox.call::<u8>("next", ()).unwrap(), 1);
        sandbox.restore(&snapshot).unwrap();
    }
}

#[test]
fn triple_fault_poisons_until_restore() {
    if !require_kvm() {
        return;
    }
    let mut sandbox = SandboxBuilder::from_bytes(fault_guest()).build().unwrap();
    let snapshot = sandbox.snapshot().unwrap();
    for _ in 0..2 {
        match sandbox.call::<()>("fault", ()) {
            Err(SandboxError::TripleFault { instruction, .. }) => {
                assert_eq!(instruction.to_string(), "mov rax,[0]");
            }
            other => panic!("expected a triple fault, got {other:?}"),
        }
        assert!(sandbox.is_poisoned());
        assert!(matches!(
            sandbox.call::<()>("fault", ()),
            Err(SandboxError::Poisoned)
        ));
        sandbox.restore(&snapshot).unwrap();
        assert!(!sandbox.is_poisoned());
    }
}

#[test]
fn deadline_stops_a_spinning_guest() {
    if !require_kvm() {
        return;
    }
    let mut sandbox = SandboxBuilder::from_bytes(spin_guest()).build().unwrap();
    let snapshot = sandbox.snapshot().unwrap();
    let after = Duration::from_millis(30);
    assert!(matches!(
        sandbox.call_with_deadline::<()>("spin", (), after),
        Err(SandboxError::Deadline { after: reported }) if reported == after
    ));
    sandbox.restore(&snapshot).unwrap();
    let handle = sandbox.interrupt_handle();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
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
}

#[test]
fn kill_after_drop_is_harmless() {
    if !require_kvm() {
        return;
    }
    let sandbox = SandboxBuilder::from_bytes(spin_guest()).build().unwrap();
    let handle = sandbox.interrupt_handle();
    assert!(!handle.kill());
    drop(sandbox);
    assert!(!handle.kill());
}

/// A guest image and a check of the error its first call gives.
type Case = (Vec<u8>, fn(&SandboxError) -> bool);

#[test]
fn protocol_violations_are_typed() {
    if !require_kvm() {
        return;
    }
    let cases: [Case; 3] = [
        // The guest runs at CPL 3 (hv_guest_abi): `hlt` is a #GP there, and
        // with no exception gate installed the guest triple-faults.
        (halt_guest(), |error| {
            matches!(error, SandboxError::TripleFault { .. })
        }),
        (port_guest(), |error| {
            matches!(
                error,
                SandboxError::ProtocolViolation {
                    what: ProtocolViolation::UnexpectedPort { port: 0x1234 }
                }
            )
        }),
        (garbage_guest(), |error| {
            matches!(
                error,
                SandboxError::ProtocolViolation {
                    what: ProtocolViolation::BadFrame(_)
                }
            )
        }),
    ];
    for (image, expected) in cases {
        let mut sandbox = SandboxBuilder::from_bytes(image).build().unwrap();
        let error = sandbox.call::<()>("f", ()).unwrap_err();
        assert!(expected(&error), "{error:?}");
        assert!(sandbox.is_poisoned());
    }
}

#[test]
fn arguments_too_large_and_bad_config_are_reported() {
    if !require_kvm() {
        return;
    }
    let mut sandbox = SandboxBuilder::from_bytes(counter_guest()).build().unwrap();
    let big = vec![0u8; 100_000];
    assert!(matches!(
        sandbox.call::<u8>("next", (big,)),
        Err(SandboxError::ArgumentsTooLarge { limit: 65536, .. })
    ));
    assert!(!sandbox.is_poisoned());
    assert_eq!(sandbox.call::<u8>("next", ()).unwrap(), 1);
    let bad = MemoryConfig {
        total: 3 << 20,
        ..MemoryConfig::default()
    };
    assert!(matches!(
        SandboxBuilder::from_bytes(counter_guest())
            .memory(bad)
            .build(),
        Err(SandboxError::MemoryLayout(_))
    ));
    assert!(matches!(
        SandboxBuilder::from_bytes(vec![0u8; 10]).build(),
        Err(SandboxError::BadElf(_))
    ));
}
