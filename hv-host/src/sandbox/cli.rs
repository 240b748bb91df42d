//! The sandbox commands of the `hv` tool: `hv run` (call one guest
//! function with arguments typed from the command line) and `hv demo` (a
//! guided tour of the sandbox API against the demo guest).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hv_guest_abi::ParamType;
use serde::ser::{Serialize, SerializeTuple, Serializer};

use super::{GuestFunction, Sandbox, SandboxBuilder, SandboxError};

/// `hv run <guest.elf> <function> [args...] [--json]`.
#[derive(Debug, clap::Args)]
#[command(allow_negative_numbers = true)]
pub struct RunArgs {
    /// The guest ELF (built with hv-guest).
    pub guest: PathBuf,
    /// The guest function to call.
    pub function: String,
    /// Its arguments, parsed with the parameter types the guest reports
    /// (bytes: `0x`-prefixed hex, or text taken as UTF-8).
    pub args: Vec<String>,
    /// Print one JSON object: {"function", "result", "`elapsed_us`"}.
    #[arg(long)]
    pub json: bool,
    /// Stop the call after this many milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub deadline_ms: u64,
}

/// One command-line argument, typed.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgValue {
    /// `bool`.
    Bool(bool),
    /// `i32`.
    I32(i32),
    /// `i64`.
    I64(i64),
    /// `u32`.
    U32(u32),
    /// `u64`.
    U64(u64),
    /// `f32`.
    F32(f32),
    /// `f64`.
    F64(f64),
    /// `String`.
    String(String),
    /// `Vec<u8>`.
    Bytes(Vec<u8>),
}

impl Serialize for ArgValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Bool(value) => value.serialize(serializer),
            Self::I32(value) => value.serialize(serializer),
            Self::I64(value) => value.serialize(serializer),
            Self::U32(value) => value.serialize(serializer),
            Self::U64(value) => value.serialize(serializer),
            Self::F32(value) => value.serialize(serializer),
            Self::F64(value) => value.serialize(serializer),
            Self::String(value) => value.serialize(serializer),
            // `Vec<u8>` serializes as a sequence, as the guest decodes it.
            Self::Bytes(value) => value.serialize(serializer),
        }
    }
}

/// A function's arguments, serialized as the tuple the guest expects.
#[derive(Clone, Debug, PartialEq)]
pub struct GuestArgs(pub Vec<ArgValue>);

impl Serialize for GuestArgs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for value in &self.0 {
            tuple.serialize_element(value)?;
        }
        tuple.end()
    }
}

/// Why command-line arguments do not fit a guest function.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// The guest has no such function.
    #[error("the guest has no function {name:?}; it offers: {}", available.join(", "))]
    UnknownFunction {
        /// The name asked for.
        name: String,
        /// The functions it has.
        available: Vec<String>,
    },
    /// Too many or too few arguments.
    #[error("{function} takes {expected} argument(s), {found} given")]
    WrongCount {
        /// The function.
        function: String,
        /// Its parameter count.
        expected: usize,
        /// The number given.
        found: usize,
    },
    /// A parameter type the command line cannot express (a struct, a
    /// tuple, ...).
    #[error(
        "parameter {position} of {function} is not a primitive type; call it through the library"
    )]
    Unsupported {
        /// The function.
        function: String,
        /// 1-based parameter position.
        position: usize,
    },
    /// The text does not parse as the parameter's type.
    #[error("argument {position} ({text:?}) is not a valid {expected:?}")]
    Parse {
        /// 1-based parameter position.
        position: usize,
        /// The argument.
        text: String,
        /// The parameter type.
        expected: ParamType,
    },
}

fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.strip_prefix("0x")?;
    if digits.len() % 2 != 0 {
        return None;
    }
    (0..digits.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(digits.get(at..at + 2)?, 16).ok())
        .collect()
}

fn parse_one(ty: ParamType, text: &str) -> Option<ArgValue> {
    Some(match ty {
        ParamType::Bool => ArgValue::Bool(text.parse().ok()?),
        ParamType::I32 => ArgValue::I32(text.parse().ok()?),
        ParamType::I64 => ArgValue::I64(text.parse().ok()?),
        ParamType::U32 => ArgValue::U32(text.parse().ok()?),
        ParamType::U64 => ArgValue::U64(match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok()?,
            None => text.parse().ok()?,
        }),
        ParamType::F32 => ArgValue::F32(text.parse().ok()?),
        ParamType::F64 => ArgValue::F64(text.parse().ok()?),
        ParamType::String => ArgValue::String(text.to_owned()),
        ParamType::Bytes => {
            ArgValue::Bytes(parse_hex(text).unwrap_or_else(|| text.as_bytes().to_vec()))
        }
        ParamType::Unit | ParamType::Other => return None,
    })
}

/// Finds `name` among `functions` and parses `args` with its parameter
/// types.
///
/// # Errors
///
/// An [`ArgError`] saying which argument does not fit.
pub fn parse_args<'f>(
    functions: &'f [GuestFunction],
    name: &str,
    args: &[String],
) -> Result<(&'f GuestFunction, GuestArgs), ArgError> {
    let Some(function) = functions.iter().find(|function| function.name == name) else {
        return Err(ArgError::UnknownFunction {
            name: name.to_owned(),
            available: functions.iter().map(|f| f.name.clone()).collect(),
        });
    };
    if function.params.len() != args.len() {
        return Err(ArgError::WrongCount {
            function: name.to_owned(),
            expected: function.params.len(),
            found: args.len(),
        });
    }
    let mut values = Vec::with_capacity(args.len());
    for (index, (&ty, text)) in function.params.iter().zip(args).enumerate() {
        let position = index + 1;
        if matches!(ty, ParamType::Unit | ParamType::Other) {
            return Err(ArgError::Unsupported {
                function: name.to_owned(),
                position,
            });
        }
        let value = parse_one(ty, text).ok_or_else(|| ArgError::Parse {
            position,
            text: text.clone(),
            expected: ty,
        })?;
        values.push(value);
    }
    Ok((function, GuestArgs(values)))
}

/// Decodes a result's postcard bytes as `ty` into JSON. Results of other
/// types become `{"postcard_hex": ".."}` (postcard is not self-describing).
///
/// # Errors
///
/// The bytes do not decode as `ty`.
pub fn decode_result(ty: ParamType, bytes: &[u8]) -> Result<serde_json::Value, postcard::Error> {
    use serde_json::json;
    Ok(match ty {
        ParamType::Unit => json!(null),
        ParamType::Bool => json!(postcard::from_bytes::<bool>(bytes)?),
        ParamType::I32 => json!(postcard::from_bytes::<i32>(bytes)?),
        ParamType::I64 => json!(postcard::from_bytes::<i64>(bytes)?),
        ParamType::U32 => json!(postcard::from_bytes::<u32>(bytes)?),
        ParamType::U64 => json!(postcard::from_bytes::<u64>(bytes)?),
        ParamType::F32 => json!(postcard::from_bytes::<f32>(bytes)?),
        ParamType::F64 => json!(postcard::from_bytes::<f64>(bytes)?),
        ParamType::String => json!(postcard::from_bytes::<String>(bytes)?),
        ParamType::Bytes => json!(postcard::from_bytes::<Vec<u8>>(bytes)?),
        ParamType::Other => {
            let hex = bytes.iter().fold(String::new(), |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            });
            json!({ "postcard_hex": hex })
        }
    })
}

/// `hv run`: exit status 0 when the call returned, 1 when the guest or
/// KVM failed, 2 for bad command-line input.
pub fn run_main(args: &RunArgs) -> ExitCode {
    let built = SandboxBuilder::from_path(&args.guest)
        // A host function for guests that call one (the demo's `call_host`).
        .host_function("host_add", |a: i64, b: i64| a.wrapping_add(b))
        .log_callback(|log| eprintln!("guest {:?} {}: {}", log.level, log.target, log.message))
        .build();
    let mut sandbox = match built {
        Ok(sandbox) => sandbox,
        Err(error @ (SandboxError::ReadImage { .. } | SandboxError::BadElf(_))) => {
            eprintln!("hv: {error}");
            return ExitCode::from(2);
        }
        Err(error) => {
            eprintln!("hv: starting the guest: {error}");
            return ExitCode::FAILURE;
        }
    };
    let (function, call_args) = match parse_args(sandbox.functions(), &args.function, &args.args) {
        Ok((function, call_args)) => (function.clone(), call_args),
        Err(error) => {
            eprintln!("hv: {error}");
            return ExitCode::from(2);
        }
    };
    let deadline = Duration::from_millis(args.deadline_ms);
    let start = Instant::now();
    let result = sandbox.call_raw(&function.name, &call_args, Some(deadline));
    let elapsed = start.elapsed();
    let bytes = match result {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("hv: {}: {error}", function.name);
            return ExitCode::FAILURE;
        }
    };
    let value = match decode_result(function.result, &bytes) {
        Ok(value) => value,
        Err(error) => {
            eprintln!(
                "hv: the result of {} does not decode as {:?}: {error}",
                function.name, function.result
            );
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "function": function.name,
                "result": value,
                "elapsed_us": elapsed.as_secs_f64() * 1e6,
            })
        );
    } else if let serde_json::Value::String(text) = &value {
        println!("{text}");
    } else {
        println!("{value}");
    }
    ExitCode::SUCCESS
}

fn median_us(mut samples: Vec<Duration>) -> f64 {
    samples.sort_unstable();
    samples
        .get(samples.len() / 2)
        .map_or(f64::NAN, |median| median.as_secs_f64() * 1e6)
}

/// Counts the steps of `hv demo` and prints each verdict.
#[derive(Default)]
struct Tour {
    failures: usize,
}

impl Tour {
    fn step(&mut self, title: &str, outcome: Result<String, String>) {
        match outcome {
            Ok(detail) => println!("  ok    {title}: {detail}"),
            Err(detail) => {
                self.failures += 1;
                println!("  FAIL  {title}: {detail}");
            }
        }
    }
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(
    result: Result<T, SandboxError>,
    expected: &T,
) -> Result<String, String> {
    match result {
        Ok(value) if value == *expected => Ok(format!("{value:?}")),
        Ok(value) => Err(format!("got {value:?}, expected {expected:?}")),
        Err(error) => Err(error.to_string()),
    }
}

/// The demo sandbox; its host function and log callback print what they
/// see while `narrate` is set.
fn create_demo(path: &Path, narrate: &Arc<AtomicBool>) -> Result<Sandbox, SandboxError> {
    let (host_narrate, log_narrate) = (Arc::clone(narrate), Arc::clone(narrate));
    SandboxBuilder::from_path(path)
        .host_function("host_add", move |a: i64, b: i64| {
            if host_narrate.load(Ordering::Relaxed) {
                println!("        (host) host_add({a}, {b}) called from the guest");
            }
            a.wrapping_add(b)
        })
        .log_callback(move |log| {
            if log_narrate.load(Ordering::Relaxed) {
                println!(
                    "        (host) guest log {:?} {}: {}",
                    log.level, log.target, log.message
                );
            }
        })
        .build()
}

/// `hv demo`: runs the demo guest through every sandbox feature and prints
/// what happened and how long it took; exit status 0 only when every step
/// behaved.
#[allow(clippy::too_many_lines)] // one linear script, easier read whole
pub fn demo_main() -> ExitCode {
    let path = crate::images::demo_guest();
    println!(
        "hv demo: the demo guest {} in a KVM sandbox\n",
        path.display()
    );
    let narrate = Arc::new(AtomicBool::new(true));
    let start = Instant::now();
    let mut sandbox = match create_demo(&path, &narrate) {
        Ok(sandbox) => sandbox,
        Err(error) => {
            eprintln!("hv demo: cannot create the sandbox: {error}");
            return ExitCode::FAILURE;
        }
    };
    let created = start.elapsed();
    let mut tour = Tour::default();
    tour.step(
        "create",
        Ok(format!(
            "{} functions ready in {:.0} us",
            sandbox.functions().len(),
            created.as_secs_f64() * 1e6
        )),
    );

    println!("\nTyped calls");
    tour.step(
        "echo(\"hello, sandbox\")",
        expect_eq(
            sandbox.call::<String>("echo", ("hello, sandbox",)),
            &"hello, sandbox".to_owned(),
        ),
    );
    tour.step(
        "add(40, 2)",
        expect_eq(sandbox.call::<i64>("add", (40i64, 2i64)), &42),
    );
    tour.step(
        "mul(1.5, 4.0)",
        expect_eq(sandbox.call::<f64>("mul", (1.5f64, 4.0f64)), &6.0),
    );
    tour.step(
        "checksum(b\"Wikipedia\") (Adler-32)",
        expect_eq(
            sandbox.call::<u32>("checksum", (b"Wikipedia".to_vec(),)),
            &0x11E6_0398,
        ),
    );
    tour.step(
        "concat((\"hv\", 1, true))",
        expect_eq(
            sandbox.call::<String>("concat", (("hv", 1u32, true),)),
            &"hv-1-true".to_owned(),
        ),
    );

    println!("\nThe guest calls the host, and logs");
    tour.step(
        "call_host(40, 1) = host_add(40, 1) + 1",
        expect_eq(sandbox.call::<i64>("call_host", (40i64, 1i64)), &42),
    );
    tour.step(
        "log_and_return(\"logged by the guest\")",
        expect_eq(
            sandbox.call::<String>("log_and_return", ("logged by the guest",)),
            &"logged by the guest".to_owned(),
        ),
    );

    println!("\nSnapshot and restore");
    let clean = match sandbox.snapshot() {
        Ok(snapshot) => snapshot,
        Err(error) => {
            eprintln!("hv demo: snapshot failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    let dirtied = sandbox.call::<u32>("dirty_pages", (16u32,));
    let start = Instant::now();
    let restored = sandbox.restore(&clean);
    let restore_time = start.elapsed();
    tour.step(
        "dirty 16 pages, restore",
        match (dirtied, restored) {
            (Ok(16), Ok(())) => Ok(format!(
                "restored in {:.1} us",
                restore_time.as_secs_f64() * 1e6
            )),
            (dirtied, restored) => Err(format!("{dirtied:?}, {restored:?}")),
        },
    );

    println!("\nFailures are contained and reported");
    let deadline = Duration::from_millis(100);
    let start = Instant::now();
    let spun = sandbox.call_with_deadline::<()>("spin", (), deadline);
    tour.step(
        "spin() with a 100 ms deadline",
        match spun {
            Err(error @ SandboxError::Deadline { .. }) => Ok(format!(
                "{error} (after {:.0} ms); poisoned: {}",
                start.elapsed().as_secs_f64() * 1e3,
                sandbox.is_poisoned()
            )),
            other => Err(format!("expected a deadline, got {other:?}")),
        },
    );
    tour.step(
        "a poisoned sandbox refuses calls",
        match sandbox.call::<i64>("add", (1i64, 1i64)) {
            Err(SandboxError::Poisoned) => Ok("Poisoned".to_owned()),
            other => Err(format!("expected Poisoned, got {other:?}")),
        },
    );
    let restored = sandbox
        .restore(&clean)
        .and_then(|()| sandbox.call::<i64>("add", (1i64, 1i64)));
    tour.step("restore, then add(1, 1)", expect_eq(restored, &2));
    tour.step(
        "panic(\"out of ideas\")",
        match sandbox.call::<()>("panic", ("out of ideas",)) {
            Err(error @ SandboxError::GuestPanic { .. }) => Ok(error.to_string()),
            other => Err(format!("expected a guest panic, got {other:?}")),
        },
    );
    let outside = 1u64 << 40;
    let fault = sandbox
        .restore(&clean)
        .and_then(|()| sandbox.call::<u8>("touch_outside", (outside,)));
    tour.step(
        "touch_outside(1 << 40)",
        match fault {
            Err(SandboxError::GuestFault(fault))
                if fault.vector == 14 && fault.address == outside =>
            {
                Ok(fault.to_string())
            }
            other => Err(format!("expected a page fault, got {other:?}")),
        },
    );
    if let Err(error) = sandbox.restore(&clean) {
        eprintln!("hv demo: restore failed: {error}");
        return ExitCode::FAILURE;
    }

    println!("\nLatencies (medians; `hv bench sandbox` compares them with raw KVM)");
    narrate.store(false, Ordering::Relaxed);
    let mut table = Vec::new();
    table.push((
        "create + start to Ready",
        median_us(measure(20, || create_demo(&path, &narrate).map(drop))),
    ));
    table.push((
        "call add(1, 2)",
        median_us(measure(2000, || {
            sandbox.call::<i64>("add", (1i64, 2i64)).map(drop)
        })),
    ));
    table.push((
        "call with a host call",
        median_us(measure(2000, || {
            sandbox.call::<i64>("call_host", (1i64, 2i64)).map(drop)
        })),
    ));
    let mut restore_samples = Vec::new();
    for _ in 0..200 {
        if sandbox.call::<u32>("dirty_pages", (16u32,)).is_err() {
            break;
        }
        let start = Instant::now();
        if sandbox.restore(&clean).is_err() {
            break;
        }
        restore_samples.push(start.elapsed());
    }
    table.push(("restore after 16 dirty pages", median_us(restore_samples)));
    println!("  {:<30} {:>10}", "operation", "us");
    for (name, us) in &table {
        if us.is_nan() {
            tour.failures += 1;
            println!("  {name:<30} {:>10}", "FAILED");
        } else {
            println!("  {name:<30} {us:>10.1}");
        }
    }

    if tour.failures == 0 {
        println!("\nEvery step behaved.");
        ExitCode::SUCCESS
    } else {
        println!("\n{} step(s) misbehaved.", tour.failures);
        ExitCode::FAILURE
    }
}

/// Times `count` runs of `operation`; stops (with fewer samples) at its
/// first failure, and returns nothing when it fails at once.
fn measure(count: usize, mut operation: impl FnMut() -> Result<(), SandboxError>) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        if operation().is_err() {
            return Vec::new();
        }
        samples.push(start.elapsed());
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    fn function(params: Vec<ParamType>) -> Vec<GuestFunction> {
        vec![GuestFunction {
            name: "f".into(),
            params,
            result: ParamType::Unit,
        }]
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|&item| item.to_owned()).collect()
    }

    #[test]
    fn arguments_parse_by_parameter_type() {
        let functions = function(vec![
            ParamType::I64,
            ParamType::Bool,
            ParamType::F64,
            ParamType::String,
            ParamType::Bytes,
            ParamType::U64,
        ]);
        let (_, args) = parse_args(
            &functions,
            "f",
            &strings(&["-5", "true", "2.5", "hi", "0x0aff", "0x10"]),
        )
        .unwrap();
        assert_eq!(
            args.0,
            [
                ArgValue::I64(-5),
                ArgValue::Bool(true),
                ArgValue::F64(2.5),
                ArgValue::String("hi".into()),
                ArgValue::Bytes(vec![0x0a, 0xff]),
                ArgValue::U64(16),
            ]
        );
        // The tuple encoding is what postcard gives the typed tuple.
        let typed =
            postcard::to_allocvec(&(-5i64, true, 2.5f64, "hi", vec![0x0au8, 0xff], 16u64)).unwrap();
        assert_eq!(postcard::to_allocvec(&args).unwrap(), typed);
    }

    #[test]
    fn bad_arguments_are_typed_errors() {
        let functions = function(vec![ParamType::I32, ParamType::Other]);
        assert!(matches!(
            parse_args(&functions, "g", &[]),
            Err(ArgError::UnknownFunction { available, .. }) if available == ["f"]
        ));
        assert!(matches!(
            parse_args(&functions, "f", &strings(&["1"])),
            Err(ArgError::WrongCount {
                expected: 2,
                found: 1,
                ..
            })
        ));
        assert!(matches!(
            parse_args(&functions, "f", &strings(&["x", "y"])),
            Err(ArgError::Parse { position: 1, .. })
        ));
        assert!(matches!(
            parse_args(&functions, "f", &strings(&["1", "y"])),
            Err(ArgError::Unsupported { position: 2, .. })
        ));
    }

    #[test]
    fn results_decode_to_json() {
        let bytes = postcard::to_allocvec("text").unwrap();
        assert_eq!(
            decode_result(ParamType::String, &bytes).unwrap(),
            serde_json::json!("text")
        );
        assert_eq!(
            decode_result(ParamType::Other, &[1, 0xab]).unwrap(),
            serde_json::json!({ "postcard_hex": "01ab" })
        );
        assert!(decode_result(ParamType::U64, &[]).is_err());
    }
}
