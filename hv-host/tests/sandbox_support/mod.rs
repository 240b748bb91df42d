//! Shared helpers for the sandbox tests: the /dev/kvm gate and
//! hand-assembled flat guests.
#![allow(dead_code, unreachable_pub)]

use hv_guest_abi::IMAGE_BASE;
use hv_host::sandbox::elf::build_flat_elf;

/// Whether /dev/kvm can be used. Without it the test passes trivially
/// (with a note), unless `HV_REQUIRE_KVM=1`, where its absence fails.
pub fn require_kvm() -> bool {
    match hv_host::sandbox::kvm::check_available() {
        Ok(()) => true,
        Err(error) => {
            assert!(
                std::env::var("HV_REQUIRE_KVM").as_deref() != Ok("1"),
                "HV_REQUIRE_KVM=1 but KVM is unusable: {error}"
            );
            eprintln!("skipping: KVM is unusable here ({error})");
            false
        }
    }
}

/// RSI = output buffer, RBX = heap; writes `Response::Ready` with no
/// functions and `out dx, eax` to 0x6000 (DX stays 0x6000).
const READY: [u8; 25] = [
    0x48, 0x8b, 0x77, 0x28, // mov rsi, [rdi+0x28]
    0x48, 0x8b, 0x5f, 0x38, // mov rbx, [rdi+0x38]
    0xc7, 0x06, 0x02, 0x00, 0x00, 0x00, // mov dword [rsi], 2
    0x66, 0xc7, 0x46, 0x04, 0x00, 0x00, // mov word [rsi+4], 0
    0x66, 0xba, 0x00, 0x60, // mov dx, 0x6000
    0xef, // out dx, eax
];

fn guest(tail: &[u8]) -> Vec<u8> {
    let mut code = READY.to_vec();
    code.extend_from_slice(tail);
    build_flat_elf(IMAGE_BASE, &code)
}

/// Every call increments a byte on the heap and returns it as a `u8`.
pub fn counter_guest() -> Vec<u8> {
    guest(&[
        0xfe, 0x03, // 1: inc byte [rbx]
        0x8a, 0x03, // mov al, [rbx]
        0xc7, 0x06, 0x03, 0x00, 0x00, 0x00, // mov dword [rsi], 3
        0x66, 0xc7, 0x46, 0x04, 0x01, 0x01, // mov word [rsi+4], 0x0101
        0x88, 0x46, 0x06, // mov [rsi+6], al
        0xef, // out dx, eax
        0xeb, 0xea, // jmp 1b
    ])
}

/// The first call reads address 0 (no exception gates: a triple fault).
pub fn fault_guest() -> Vec<u8> {
    guest(&[0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0, 0xf4]) // mov rax, [0]; hlt
}

/// The first call spins forever.
pub fn spin_guest() -> Vec<u8> {
    guest(&[0xeb, 0xfe]) // jmp $
}

/// The first call halts (a #GP at CPL 3: a triple fault without an IDT).
pub fn halt_guest() -> Vec<u8> {
    guest(&[0xf4])
}

/// The first call writes to port 0x1234.
pub fn port_guest() -> Vec<u8> {
    guest(&[0x66, 0xba, 0x34, 0x12, 0xee]) // mov dx, 0x1234; out dx, al
}

/// The first call answers with a frame whose length exceeds the buffer.
pub fn garbage_guest() -> Vec<u8> {
    guest(&[0xc7, 0x06, 0xff, 0xff, 0xff, 0x00, 0xef]) // mov dword [rsi], 0xffffff; out
}
