//! The demo guest of hv-host sandboxes. Every function here is part of the
//! contract with hv-host's tests, `hv demo` and `hv bench sandbox`: keep the
//! names and signatures stable.
//!
//! | function | signature | does |
//! |---|---|---|
//! | `nop` | `() -> ()` | nothing (call-latency benchmarks) |
//! | `echo` | `(String) -> String` | returns its argument |
//! | `upper` | `(String) -> String` | ASCII/Unicode upper case |
//! | `add` | `(i64, i64) -> i64` | wrapping sum |
//! | `mul` | `(f64, f64) -> f64` | product |
//! | `checksum` | `(Vec<u8>) -> u32` | Adler-32 (RFC 1950) |
//! | `concat` | `((String, u32, bool)) -> String` | `"{text}-{number}-{flag}"` |
//! | `greet` | `(Person) -> Greeting` | struct argument and result |
//! | `bytes` | `(u32) -> Vec<u8>` | `n` bytes `0, 1, .., 255, 0, ..` (result-size tests) |
//! | `call_host` | `(i64, i64) -> i64` | host function `host_add(a, b)` + 1 (panics if the host call fails) |
//! | `call_host_checked` | `(String, i64, i64) -> Result<i64, String>` | host function `name(a, b)`, the error as text |
//! | `log_and_return` | `(String) -> String` | logs the text at info, returns it |
//! | `spin` | `() -> ()` | loops forever (deadline/kill tests) |
//! | `panic` | `(String) -> ()` | panics with that message |
//! | `touch_outside` | `(u64) -> u8` | reads the byte at that address (>= memory size: #PF) |
//! | `invalid_opcode` | `() -> ()` | executes `ud2` (#UD) |
//! | `dirty_pages` | `(u32) -> u32` | writes one byte in each of `n` distinct heap pages, returns `n` |
//! | `alloc_stress` | `(u32) -> u64` | `n` rounds of mixed allocations checked for corruption; returns bytes allocated |
//! | `memory_size` | `() -> u64` | `BootInfo::memory_size` |
#![no_std]
#![no_main]

extern crate alloc;

use alloc::alloc::{Layout, alloc, dealloc};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

hv_guest::main!(init);

fn init() {
    hv_guest::register("nop", || ());
    hv_guest::register("echo", |text: String| text);
    hv_guest::register("upper", |text: String| text.to_uppercase());
    hv_guest::register("add", |a: i64, b: i64| a.wrapping_add(b));
    hv_guest::register("mul", |a: f64, b: f64| a * b);
    hv_guest::register("checksum", |data: Vec<u8>| adler32(&data));
    hv_guest::register("concat", |(text, number, flag): (String, u32, bool)| {
        format!("{text}-{number}-{flag}")
    });
    hv_guest::register("greet", greet);
    hv_guest::register("bytes", bytes);
    hv_guest::register("call_host", call_host);
    hv_guest::register("call_host_checked", call_host_checked);
    hv_guest::register("log_and_return", log_and_return);
    hv_guest::register("spin", spin);
    hv_guest::register("panic", |message: String| -> () { panic!("{message}") });
    hv_guest::register("touch_outside", touch_outside);
    hv_guest::register("invalid_opcode", invalid_opcode);
    hv_guest::register("dirty_pages", dirty_pages);
    hv_guest::register("alloc_stress", alloc_stress);
    hv_guest::register("memory_size", || hv_guest::boot_info().memory_size);
}

/// Adler-32 (RFC 1950 section 8.2): two sums modulo 65521, the sum of the
/// bytes plus one (low half) and the sum of those sums (high half).
/// `adler32(b"Wikipedia") == 0x11E6_0398`.
fn adler32(data: &[u8]) -> u32 {
    const MODULUS: u32 = 65_521;
    // 5552 bytes is the most that can be summed before a u32 overflows.
    let (mut low, mut high) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            low += u32::from(byte);
            high += low;
        }
        low %= MODULUS;
        high %= MODULUS;
    }
    (high << 16) | low
}

/// The struct argument of `greet`.
#[derive(Debug, Serialize, Deserialize)]
struct Person {
    name: String,
    age: u32,
}

/// The struct result of `greet`.
#[derive(Debug, Serialize, Deserialize)]
struct Greeting {
    text: String,
    adult: bool,
}

#[allow(clippy::needless_pass_by_value)] // guest functions take owned arguments
fn greet(person: Person) -> Greeting {
    Greeting {
        text: format!("Hello, {} ({})!", person.name, person.age),
        adult: person.age >= 18,
    }
}

fn bytes(length: u32) -> Vec<u8> {
    (0..length).map(|index| index as u8).collect()
}

fn call_host(a: i64, b: i64) -> i64 {
    match hv_guest::call_host::<i64>("host_add", (a, b)) {
        Ok(sum) => sum.wrapping_add(1),
        Err(error) => panic!("host_add failed: {error}"),
    }
}

#[allow(clippy::needless_pass_by_value)] // guest functions take owned arguments
fn call_host_checked(function: String, a: i64, b: i64) -> Result<i64, String> {
    hv_guest::call_host::<i64>(&function, (a, b)).map_err(|error| format!("{error}"))
}

fn log_and_return(text: String) -> String {
    hv_guest::info!("{text}");
    text
}

fn spin() {
    loop {
        core::hint::spin_loop();
    }
}

fn touch_outside(address: u64) -> u8 {
    // SAFETY: deliberately not safe: the point is to fault when the address
    // is not mapped; the host reports the #PF and poisons the sandbox.
    unsafe { (address as *const u8).read_volatile() }
}

fn invalid_opcode() {
    // SAFETY: raises #UD on purpose, reported to the host.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
}

const PAGE_SIZE: usize = 4096;

fn dirty_pages(count: u32) -> u32 {
    let pages = count as usize;
    if pages == 0 {
        return 0;
    }
    let layout =
        Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("page count too large");
    // SAFETY: a non-zero-sized layout; checked for null below.
    let block = unsafe { alloc(layout) };
    assert!(!block.is_null(), "the heap has no room for {pages} pages");
    for page in 0..pages {
        // SAFETY: inside the block just allocated. Written, not zeroed
        // first, so exactly one byte per page is touched.
        unsafe { block.add(page * PAGE_SIZE).write_volatile(page as u8 | 1) };
    }
    // SAFETY: allocated above with this layout.
    unsafe { dealloc(block, layout) };
    count
}

/// `rounds` rounds of allocating vectors of pseudo-random sizes, filling
/// them, freeing some, and checking the survivors' contents.
fn alloc_stress(rounds: u32) -> u64 {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut live: Vec<Vec<u8>> = Vec::new();
    let mut allocated = 0u64;
    for round in 0..rounds {
        let size = (next() % 4096) as usize + 1;
        let fill = round as u8;
        live.push(alloc::vec![fill; size]);
        allocated += size as u64;
        if live.len() > 64 || next() % 3 == 0 {
            let index = (next() as usize) % live.len();
            let block = live.swap_remove(index);
            let expected = block[0];
            assert!(
                block.iter().all(|&byte| byte == expected),
                "heap corruption in round {round}"
            );
        }
    }
    allocated
}
