//! The function registry and the call loop.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::any::TypeId;

use hv_freestanding::SingleCpuCell;
use hv_guest_abi::{
    Call, FunctionInfo, FunctionList, PORT_RESPONSE, ParamType, Response, read_message,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The postcard bytes of a call's arguments, still in the input buffer.
/// Decoded into owned values before the function runs, so no reference
/// into the input buffer is live when the function calls the host (whose
/// reply overwrites it).
#[derive(Clone, Copy)]
pub struct ArgBytes {
    address: *const u8,
    length: usize,
}

impl ArgBytes {
    /// Decodes the whole argument tuple; `None` when the bytes are not
    /// exactly one `T`.
    fn decode<T: DeserializeOwned>(self) -> Option<T> {
        // SAFETY: the bytes lie in the input buffer, unchanged until the
        // next exit; the slice does not outlive this function.
        let bytes = unsafe { core::slice::from_raw_parts(self.address, self.length) };
        match postcard::take_from_bytes::<T>(bytes) {
            Ok((value, [])) => Some(value),
            Ok(_) | Err(_) => None,
        }
    }
}

impl core::fmt::Debug for ArgBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ArgBytes({} bytes)", self.length)
    }
}

/// The arguments did not decode as the function's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadArguments;

/// The [`ParamType`] that describes `T` in a function signature:
/// primitives, `String`/`&str`, `Vec<u8>`/`&[u8]`; anything else is
/// [`ParamType::Other`].
pub fn param_type_of<T: ?Sized + 'static>() -> ParamType {
    let id = TypeId::of::<T>();
    let table: [(TypeId, ParamType); 13] = [
        (TypeId::of::<()>(), ParamType::Unit),
        (TypeId::of::<bool>(), ParamType::Bool),
        (TypeId::of::<i32>(), ParamType::I32),
        (TypeId::of::<i64>(), ParamType::I64),
        (TypeId::of::<u32>(), ParamType::U32),
        (TypeId::of::<u64>(), ParamType::U64),
        (TypeId::of::<f32>(), ParamType::F32),
        (TypeId::of::<f64>(), ParamType::F64),
        (TypeId::of::<String>(), ParamType::String),
        (TypeId::of::<&'static str>(), ParamType::String),
        (TypeId::of::<Vec<u8>>(), ParamType::Bytes),
        (TypeId::of::<&'static [u8]>(), ParamType::Bytes),
        (TypeId::of::<Box<[u8]>>(), ParamType::Bytes),
    ];
    table
        .iter()
        .find(|(candidate, _)| *candidate == id)
        .map_or(ParamType::Other, |(_, param_type)| *param_type)
}

/// A Rust function or closure the host can call: implemented for every
/// `Fn(A, B, ..) -> R` with up to 8 parameters, each
/// `DeserializeOwned + 'static`, and `R: Serialize + 'static`. `Marker`
/// only tells the implementations apart (it is `fn(A, B, ..) -> R`).
pub trait GuestFunction<Marker>: 'static {
    /// Parameter types, for `FunctionInfo`.
    fn params(&self) -> Vec<ParamType>;
    /// Result type, for `FunctionInfo`.
    fn result(&self) -> ParamType;
    /// Decodes the arguments, calls the function, encodes the result.
    ///
    /// # Errors
    ///
    /// [`BadArguments`] when the arguments do not decode.
    fn invoke(&self, args: ArgBytes) -> Result<Vec<u8>, BadArguments>;
}

macro_rules! impl_guest_function {
    ($($arg:ident),*) => {
        impl<F, R, $($arg,)*> GuestFunction<fn($($arg,)*) -> R> for F
        where
            F: Fn($($arg),*) -> R + 'static,
            R: Serialize + 'static,
            $($arg: DeserializeOwned + 'static,)*
        {
            fn params(&self) -> Vec<ParamType> {
                alloc::vec![$(param_type_of::<$arg>()),*]
            }

            fn result(&self) -> ParamType {
                param_type_of::<R>()
            }

            #[allow(non_snake_case, clippy::unused_unit)]
            fn invoke(&self, args: ArgBytes) -> Result<Vec<u8>, BadArguments> {
                let ($($arg,)*): ($($arg,)*) = args.decode().ok_or(BadArguments)?;
                let result = self($($arg),*);
                Ok(encode_result(&result))
            }
        }
    };
}

impl_guest_function!();
impl_guest_function!(A);
impl_guest_function!(A, B);
impl_guest_function!(A, B, C);
impl_guest_function!(A, B, C, D);
impl_guest_function!(A, B, C, D, E);
impl_guest_function!(A, B, C, D, E, G);
impl_guest_function!(A, B, C, D, E, G, H);
impl_guest_function!(A, B, C, D, E, G, H, I);

fn encode_result<R: Serialize>(result: &R) -> Vec<u8> {
    match postcard::to_allocvec(result) {
        Ok(bytes) => bytes,
        // Only types postcard cannot describe (e.g. sequences of unknown
        // length) fail here: a bug in the guest, reported as a panic.
        Err(error) => panic!("the result does not encode with postcard: {error}"),
    }
}

type Handler = Box<dyn Fn(ArgBytes) -> Result<Vec<u8>, BadArguments>>;

struct Entry {
    name: String,
    params: Vec<ParamType>,
    result: ParamType,
    handler: Handler,
}

static FUNCTIONS: SingleCpuCell<Vec<Entry>> = SingleCpuCell::new(Vec::new());
static SERVING: SingleCpuCell<bool> = SingleCpuCell::new(false);

/// Registers `function` under `name`, for the host to call. Call it from
/// the init function named by [`main!`](crate::main).
///
/// ```ignore
/// hv_guest::register("add", |a: i64, b: i64| a.wrapping_add(b));
/// hv_guest::register("upper", upper); // fn upper(text: String) -> String
/// ```
///
/// # Panics
///
/// When `name` is already registered, or when called after init (the
/// host already has the function list).
pub fn register<Marker, F: GuestFunction<Marker>>(name: &str, function: F) {
    // SAFETY: single CPU; `SERVING` is only written by `serve`.
    let serving = unsafe { *SERVING.get() };
    assert!(
        !serving,
        "register({name:?}) after init: the host already has the function list"
    );
    // SAFETY: during init nothing else references the registry.
    let functions = unsafe { FUNCTIONS.get_mut() };
    assert!(
        functions.iter().all(|entry| entry.name != name),
        "function {name:?} registered twice"
    );
    functions.push(Entry {
        name: String::from(name),
        params: function.params(),
        result: function.result(),
        handler: Box::new(move |args| function.invoke(args)),
    });
}

/// The `FunctionList` bytes: each entry's `FunctionInfo`, postcard-encoded.
fn function_list(functions: &[Entry]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in functions {
        let params: Vec<u8> = entry
            .params
            .iter()
            .take(8)
            .map(|param| param.index())
            .collect();
        let info = FunctionInfo {
            name: &entry.name,
            params: &params,
            result: entry.result.index(),
        };
        bytes = postcard::to_extend(&info, bytes).expect("a FunctionInfo always encodes");
    }
    bytes
}

/// What to answer a call with.
enum Outcome {
    Return(Vec<u8>),
    UnknownFunction,
    BadArguments,
    BadCall,
}

/// Reports ready, then serves calls forever.
pub(crate) fn serve() -> ! {
    // SAFETY: init is over; from now on the registry is only read.
    unsafe { *SERVING.get_mut() = true };
    // SAFETY: no mutable reference exists any more (`register` refuses).
    let functions: &[Entry] = unsafe { FUNCTIONS.get() };
    let list = function_list(functions);
    let ready = Response::Ready {
        functions: FunctionList(&list),
    };
    assert!(
        crate::host::try_send(PORT_RESPONSE, &ready).is_ok(),
        "the function list ({} bytes) does not fit in the output buffer",
        list.len()
    );
    drop(list);
    loop {
        // The host wrote a `Call` to the input buffer.
        let outcome = dispatch(functions);
        let response = match &outcome {
            Outcome::Return(bytes) => Response::Return(bytes),
            Outcome::UnknownFunction => Response::UnknownFunction,
            Outcome::BadArguments => Response::BadArguments,
            Outcome::BadCall => Response::BadCall,
        };
        if crate::host::try_send(PORT_RESPONSE, &response).is_err() {
            crate::host::send(PORT_RESPONSE, &Response::ResultTooLarge);
        }
    }
}

fn dispatch(functions: &[Entry]) -> Outcome {
    let found = crate::host::with_input(|input| {
        let call = read_message::<Call<'_>>(input).ok()?;
        let entry = functions.iter().find(|entry| entry.name == call.function);
        let args = ArgBytes {
            address: call.args.as_ptr(),
            length: call.args.len(),
        };
        Some(entry.map(|entry| (entry, args)))
    });
    match found {
        None => Outcome::BadCall,
        Some(None) => Outcome::UnknownFunction,
        Some(Some((entry, args))) => match (entry.handler)(args) {
            Ok(bytes) => Outcome::Return(bytes),
            Err(BadArguments) => Outcome::BadArguments,
        },
    }
}
