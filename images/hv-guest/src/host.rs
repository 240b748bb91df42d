//! Talking to the host: the shared buffers, the `out` that hands control
//! to it, and host calls.
//!
//! The host reads and writes the buffers only while the guest is stopped
//! at an `out`. So the runtime never keeps a reference into a buffer
//! across an `out`: it makes a slice, uses it, drops it, then exits.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use hv_freestanding::port::outl;
use hv_guest_abi::{FrameError, HostCall, HostReply, PORT_HOST_CALL, read_message, write_message};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Hands control to the host at `port` (the value written is ignored).
pub(crate) fn exit_to_host(port: u16) {
    // SAFETY: the host handles the port; it may change the buffers, which
    // no live reference covers (see the module documentation).
    unsafe { outl(port, 0) };
}

/// Exits to `port` forever: the end of a guest that reported a panic or an
/// exception (`hlt` is not available at CPL 3; the host does not resume a
/// poisoned guest anyway).
pub(crate) fn stop(port: u16) -> ! {
    loop {
        exit_to_host(port);
    }
}

/// Runs `f` on the input buffer (host -> guest).
pub(crate) fn with_input<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let info = crate::entry::boot_info();
    // SAFETY: the host reserved the input buffer for us; it does not change
    // while the guest runs, and the slice does not outlive `f`.
    let input = unsafe {
        core::slice::from_raw_parts(info.input_address as *const u8, info.input_size as usize)
    };
    f(input)
}

/// Runs `f` on the output buffer (guest -> host).
pub(crate) fn with_output<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    let info = crate::entry::boot_info();
    // SAFETY: as for `with_input`; nothing else references the output
    // buffer while `f` runs (the runtime never nests these calls).
    let output = unsafe {
        core::slice::from_raw_parts_mut(info.output_address as *mut u8, info.output_size as usize)
    };
    f(output)
}

/// Writes `message` to the output buffer and exits to `port`.
/// Returns whether it fitted (nothing is sent when it does not).
pub(crate) fn try_send<T: Serialize + ?Sized>(port: u16, message: &T) -> Result<(), FrameError> {
    with_output(|output| write_message(output, message))?;
    exit_to_host(port);
    Ok(())
}

/// Like [`try_send`], for messages that always fit (small, fixed-size).
pub(crate) fn send<T: Serialize + ?Sized>(port: u16, message: &T) {
    // An output buffer too small for a fixed-size message is a host bug;
    // exit anyway so the host sees the port and whatever the buffer holds.
    let _ = with_output(|output| write_message(output, message));
    exit_to_host(port);
}

/// Why a host call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostCallError {
    /// The arguments could not be encoded.
    ArgumentsEncoding,
    /// The encoded call does not fit in the output buffer.
    ArgumentsTooLarge {
        /// Encoded argument size in bytes.
        size: usize,
    },
    /// The host has no function of this name.
    UnknownFunction,
    /// The host function's parameters did not match the arguments.
    BadArguments,
    /// The host function failed.
    Failed(String),
    /// The host's reply was not a valid `HostReply`.
    BadReply,
    /// The result did not decode as the expected type.
    ResultDecode,
}

impl fmt::Display for HostCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ArgumentsEncoding => f.write_str("the arguments could not be encoded"),
            Self::ArgumentsTooLarge { size } => {
                write!(
                    f,
                    "{size} bytes of arguments do not fit in the output buffer"
                )
            }
            Self::UnknownFunction => f.write_str("the host has no function of this name"),
            Self::BadArguments => f.write_str("the host function rejected the arguments"),
            Self::Failed(message) => write!(f, "the host function failed: {message}"),
            Self::BadReply => f.write_str("the host's reply is malformed"),
            Self::ResultDecode => f.write_str("the result did not decode as the expected type"),
        }
    }
}

impl core::error::Error for HostCallError {}

/// Calls the host function `function` with `args` (a tuple: `(a, b)`,
/// `(a,)` or `()`), and decodes its result as `R`. One exit.
///
/// ```ignore
/// let sum: i64 = hv_guest::call_host("host_add", (2i64, 3i64))?;
/// ```
///
/// # Errors
///
/// A [`HostCallError`] saying which side failed.
pub fn call_host<R: DeserializeOwned>(
    function: &str,
    args: impl Serialize,
) -> Result<R, HostCallError> {
    let args: Vec<u8> =
        postcard::to_allocvec(&args).map_err(|_| HostCallError::ArgumentsEncoding)?;
    try_send(
        PORT_HOST_CALL,
        &HostCall {
            function,
            args: &args,
        },
    )
    .map_err(|_| HostCallError::ArgumentsTooLarge { size: args.len() })?;
    with_input(|input| match read_message::<HostReply<'_>>(input) {
        Ok(HostReply::Return(bytes)) => match postcard::take_from_bytes::<R>(bytes) {
            Ok((value, [])) => Ok(value),
            Ok(_) | Err(_) => Err(HostCallError::ResultDecode),
        },
        Ok(HostReply::UnknownFunction) => Err(HostCallError::UnknownFunction),
        Ok(HostReply::BadArguments) => Err(HostCallError::BadArguments),
        Ok(HostReply::Failed(message)) => Err(HostCallError::Failed(message.to_string())),
        Err(_) => Err(HostCallError::BadReply),
    })
}
