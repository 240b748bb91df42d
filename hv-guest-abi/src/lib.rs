//! `hv-guest-abi`: the contract between an hv-host sandbox (the host) and
//! the hv-guest runtime (the guest). Both sides build this crate: the host
//! in the main workspace, the guest in `images/` (freestanding).
//!
//! # Machine
//!
//! The guest starts in 64-bit mode at CPL 3 with the host's identity page
//! tables: guest-virtual address = guest-physical address for every mapped
//! page. Memory from [`IMAGE_BASE`] up is mapped user-accessible (U/S = 1 at
//! every level). The host also writes and loads (through the vCPU's special
//! registers, so the guest executes no privileged instruction to start) the
//! descriptor tables: the GDT at [`GDT_ADDRESS`] (the selectors below), a
//! 64-bit TSS at [`TSS_ADDRESS`] whose I/O bitmap allows the ports below at
//! CPL 3, and an IDT of 256 not-present gates at [`IDT_ADDRESS`]. The TSS
//! and IDT pages, like the [`BootInfo`] page, are user-writable: the guest
//! fills its exception gates and interrupt stacks at CPL 3 (plain memory
//! writes). CR0/CR4 enable SSE (MP, OSFXSR, OSXMMEXCPT; EM and TS clear);
//! RFLAGS = [`GUEST_RFLAGS`]. Why CPL 3: some KVMs (`kvm_pvm`) emulate guest
//! CPL 0 instruction by instruction and cannot execute SSE there. The guest
//! never executes `hlt` (a #GP at CPL 3). Page 0 and everything at or above
//! [`BootInfo::memory_size`] are not mapped, so a stray access faults. The
//! host builds the page tables, loads the guest ELF (static, non-PIE,
//! linked at [`IMAGE_BASE`] or above), writes [`BootInfo`] at
//! [`BOOT_INFO_ADDRESS`], and enters the ELF entry point with RDI =
//! [`BOOT_INFO_ADDRESS`] and RSP = [`BootInfo::stack_top`] (16-byte
//! aligned).
//!
//! ABI version 1 entered the guest at CPL 0 and let it load its own tables
//! (about 66 emulated instructions, about 70 µs per sandbox creation on
//! `kvm_pvm`); version 2 is this one.
//!
//! # Protocol
//!
//! Every exchange is a message in a shared buffer followed by a 32-bit
//! `out` to one of the ports below (the value written is ignored). A
//! message is a little-endian `u32` length followed by that many bytes of
//! `postcard`; [`write_message`] and [`read_message`] implement the
//! framing. The host treats everything the guest writes as hostile.
//!
//! 1. After initialisation the guest writes [`Response::Ready`] to the
//!    output buffer and executes `out` to [`PORT_RESPONSE`]. It is now idle:
//!    the host may snapshot it.
//! 2. For a call, the host writes a [`Call`] to the input buffer and resumes
//!    the guest (the `out` completes). The guest runs the function and
//!    writes a [`Response`] to the output buffer, then `out` to
//!    [`PORT_RESPONSE`] again: one VM exit per call.
//! 3. During a call the guest may write a [`HostCall`] to the output buffer
//!    and `out` to [`PORT_HOST_CALL`]; the host writes a [`HostReply`] to the
//!    input buffer and resumes it. Likewise [`LogRecord`] to [`PORT_LOG`]
//!    (the host resumes at once).
//! 4. A panic writes [`Panic`] and `out`s to [`PORT_PANIC`]; an exception
//!    writes [`Exception`] and `out`s to [`PORT_EXCEPTION`]. The guest never
//!    continues after either (it repeats the `out`): the host marks the
//!    sandbox poisoned until it is restored.
#![no_std]

use serde::{Deserialize, Serialize};

/// Version of this contract; [`BootInfo::abi_version`] carries it.
pub const ABI_VERSION: u32 = 2;

/// `BootInfo::magic`: "hvGUEST1".
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"hvGUEST1");

/// The guest-physical (= virtual) address of [`BootInfo`].
pub const BOOT_INFO_ADDRESS: u64 = 0x9000;

/// The GDT the host writes and loads: null, kernel code, kernel data, user
/// data, user code, then the TSS descriptor (two entries). Supervisor-only.
pub const GDT_ADDRESS: u64 = 0xa000;
/// The IDT (256 16-byte gates, all not present until the guest fills them).
/// User-writable.
pub const IDT_ADDRESS: u64 = 0xb000;
/// The 64-bit TSS, followed by its I/O permission bitmap (the I/O map base
/// field points right after the 104-byte TSS). User-writable.
pub const TSS_ADDRESS: u64 = 0xc000;
/// Size of the 64-bit TSS without the I/O bitmap (SDM Vol. 3A 8.7).
pub const TSS_SIZE: u64 = 104;
/// Bytes of I/O permission bitmap: every port up to [`PORT_EXCEPTION`]'s
/// bitmap byte is allowed (bits clear), then the all-ones byte the CPU
/// requires after the bitmap (SDM Vol. 1 19.5.2).
pub const IO_BITMAP_SIZE: u64 = PORT_EXCEPTION as u64 / 8 + 2;
/// Kernel (CPL 0) code selector: the exception gates' target segment.
pub const KERNEL_CODE_SELECTOR: u16 = 0x08;
/// Kernel data selector.
pub const KERNEL_DATA_SELECTOR: u16 = 0x10;
/// User data selector with RPL 3 (SS, DS, ES, FS, GS at entry).
pub const USER_DATA_SELECTOR: u16 = 0x18 | 3;
/// User code selector with RPL 3 (CS at entry).
pub const USER_CODE_SELECTOR: u16 = 0x20 | 3;
/// TSS selector (TR at entry).
pub const TSS_SELECTOR: u16 = 0x28;
/// RFLAGS at entry: IOPL 3 (bits 12-13), the always-set bit 1, IF clear.
pub const GUEST_RFLAGS: u64 = 0x3002;

/// Lowest address a guest ELF segment may occupy (2 MiB): everything below
/// belongs to the host's structures (page tables, boot information).
pub const IMAGE_BASE: u64 = 0x20_0000;

/// Port: the guest is idle; the output buffer holds a [`Response`].
pub const PORT_RESPONSE: u16 = 0x6000;
/// Port: the output buffer holds a [`HostCall`]; the reply goes to the
/// input buffer.
pub const PORT_HOST_CALL: u16 = 0x6001;
/// Port: the output buffer holds a [`LogRecord`].
pub const PORT_LOG: u16 = 0x6002;
/// Port: the output buffer holds a [`Panic`]; the guest stops.
pub const PORT_PANIC: u16 = 0x6003;
/// Port: the output buffer holds an [`Exception`]; the guest stops.
pub const PORT_EXCEPTION: u16 = 0x6004;

/// Where things are in the guest, written by the host before the guest
/// starts. All addresses are guest-physical = guest-virtual, page-aligned.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootInfo {
    /// [`BOOT_INFO_MAGIC`].
    pub magic: u64,
    /// [`ABI_VERSION`].
    pub abi_version: u32,
    /// Reserved, 0.
    pub reserved: u32,
    /// Size of guest memory in bytes (everything mapped is below it).
    pub memory_size: u64,
    /// Host -> guest buffer ([`Call`], [`HostReply`]).
    pub input_address: u64,
    /// Size of the input buffer in bytes.
    pub input_size: u64,
    /// Guest -> host buffer ([`Response`], [`HostCall`], [`LogRecord`], ...).
    pub output_address: u64,
    /// Size of the output buffer in bytes.
    pub output_size: u64,
    /// Start of the heap.
    pub heap_address: u64,
    /// Size of the heap in bytes.
    pub heap_size: u64,
    /// Initial RSP (the top of the stack, exclusive).
    pub stack_top: u64,
    /// Size of the stack in bytes (an unmapped guard page lies below it).
    pub stack_size: u64,
}

const _: () = assert!(core::mem::size_of::<BootInfo>() == 88);
const _: () = assert!(core::mem::offset_of!(BootInfo, memory_size) == 16);
const _: () = assert!(core::mem::offset_of!(BootInfo, stack_size) == 80);

/// A primitive type a guest function can take or return, so tools (such
/// as `hv run`) can build arguments from text. Functions with other serde
/// types report [`ParamType::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ParamType {
    /// `()`.
    Unit,
    /// `bool`.
    Bool,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `u32`.
    U32,
    /// `u64`.
    U64,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// `String` / `&str`.
    String,
    /// `Vec<u8>` / `&[u8]` (serialized as a byte sequence).
    Bytes,
    /// Any other serde type.
    Other,
}

/// One function the guest offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionInfo<'a> {
    /// Its name.
    pub name: &'a str,
    /// Parameter types in order (at most 8 are described; longer lists use
    /// [`ParamType::Other`] for the rest).
    #[serde(borrow)]
    pub params: &'a [u8],
    /// Result type, as a [`ParamType`] index (see [`ParamType::from_index`]).
    pub result: u8,
}

impl ParamType {
    /// Every type, in index order.
    pub const ALL: [Self; 11] = [
        Self::Unit,
        Self::Bool,
        Self::I32,
        Self::I64,
        Self::U32,
        Self::U64,
        Self::F32,
        Self::F64,
        Self::String,
        Self::Bytes,
        Self::Other,
    ];

    /// The index [`FunctionInfo`] stores.
    pub const fn index(self) -> u8 {
        self as u8
    }

    /// The type with index `index` ([`ParamType::Other`] when unknown).
    pub const fn from_index(index: u8) -> Self {
        if (index as usize) < Self::ALL.len() {
            Self::ALL[index as usize]
        } else {
            Self::Other
        }
    }
}

/// Host -> guest: call `function` with `args` (the postcard encoding of the
/// argument tuple).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call<'a> {
    /// Function name.
    pub function: &'a str,
    /// postcard-encoded argument tuple.
    #[serde(borrow)]
    pub args: &'a [u8],
}

/// Guest -> host at [`PORT_RESPONSE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response<'a> {
    /// Initialisation finished; these functions exist.
    Ready {
        /// The registered functions.
        #[serde(borrow)]
        functions: FunctionList<'a>,
    },
    /// The call returned: postcard-encoded result.
    Return(&'a [u8]),
    /// No function has this name.
    UnknownFunction,
    /// The arguments did not decode as the function's parameter types.
    BadArguments,
    /// The input buffer did not hold a valid [`Call`].
    BadCall,
    /// The result did not fit in the output buffer.
    ResultTooLarge,
}

/// The function table in [`Response::Ready`], kept as postcard bytes so
/// that this crate needs no allocation: decode with [`FunctionList::iter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionList<'a>(#[serde(borrow)] pub &'a [u8]);

impl<'a> FunctionList<'a> {
    /// The entries, decoded one by one; decoding stops at the first
    /// malformed entry (which the iterator yields as `Err`).
    pub fn iter(&self) -> impl Iterator<Item = Result<FunctionInfo<'a>, postcard::Error>> + 'a {
        let mut rest = self.0;
        core::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            match postcard::take_from_bytes::<FunctionInfo<'a>>(rest) {
                Ok((info, tail)) => {
                    rest = tail;
                    Some(Ok(info))
                }
                Err(error) => {
                    rest = &[];
                    Some(Err(error))
                }
            }
        })
    }
}

/// Guest -> host at [`PORT_HOST_CALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCall<'a> {
    /// Host function name.
    pub function: &'a str,
    /// postcard-encoded argument tuple.
    #[serde(borrow)]
    pub args: &'a [u8],
}

/// Host -> guest, the answer to a [`HostCall`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostReply<'a> {
    /// postcard-encoded result.
    Return(&'a [u8]),
    /// No host function has this name.
    UnknownFunction,
    /// The arguments did not decode as the host function's parameters.
    BadArguments,
    /// The host function failed; the message says why.
    Failed(&'a str),
}

/// Log levels, as `tracing` and `log` have them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LogLevel {
    /// Very verbose.
    Trace,
    /// Debugging.
    Debug,
    /// Information.
    Info,
    /// Something odd.
    Warn,
    /// Something failed.
    Error,
}

/// Guest -> host at [`PORT_LOG`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord<'a> {
    /// Level.
    pub level: LogLevel,
    /// The module or component that logged.
    pub target: &'a str,
    /// The message.
    pub message: &'a str,
}

/// Guest -> host at [`PORT_PANIC`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Panic<'a> {
    /// The panic message (possibly truncated by the guest).
    pub message: &'a str,
    /// Source file, if known.
    pub file: &'a str,
    /// Source line (0 if unknown).
    pub line: u32,
}

/// Guest -> host at [`PORT_EXCEPTION`]: a CPU exception the guest did not
/// expect, as its handler saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exception {
    /// Vector (14 = #PF, 13 = #GP, 6 = #UD, ...).
    pub vector: u8,
    /// Error code (0 for exceptions without one).
    pub error_code: u64,
    /// RIP of the faulting instruction.
    pub rip: u64,
    /// RSP at the fault.
    pub rsp: u64,
    /// RFLAGS at the fault.
    pub rflags: u64,
    /// CR2 (the faulting address, for #PF).
    pub cr2: u64,
}

/// Why a message could not be framed or unframed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The buffer is smaller than the 4-byte length prefix.
    BufferTooSmall,
    /// The length prefix exceeds the buffer.
    LengthOutOfBounds {
        /// The length the prefix claims.
        length: u32,
    },
    /// The message does not fit in the buffer.
    MessageTooLarge,
    /// postcard failed to encode or decode.
    Postcard(postcard::Error),
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BufferTooSmall => f.write_str("buffer smaller than the length prefix"),
            Self::LengthOutOfBounds { length } => {
                write!(f, "message length {length} exceeds the buffer")
            }
            Self::MessageTooLarge => f.write_str("message does not fit in the buffer"),
            Self::Postcard(error) => write!(f, "postcard: {error}"),
        }
    }
}

impl core::error::Error for FrameError {}

/// Writes `message` framed (length prefix + postcard) into `buffer`;
/// returns the number of bytes used.
///
/// # Errors
///
/// [`FrameError::MessageTooLarge`] when it does not fit.
pub fn write_message<T: Serialize + ?Sized>(
    buffer: &mut [u8],
    message: &T,
) -> Result<usize, FrameError> {
    let (prefix, body) = buffer
        .split_at_mut_checked(4)
        .ok_or(FrameError::BufferTooSmall)?;
    let used = postcard::to_slice(message, body)
        .map_err(|error| match error {
            postcard::Error::SerializeBufferFull => FrameError::MessageTooLarge,
            other => FrameError::Postcard(other),
        })?
        .len();
    let length = u32::try_from(used).map_err(|_| FrameError::MessageTooLarge)?;
    prefix.copy_from_slice(&length.to_le_bytes());
    Ok(4 + used)
}

/// Reads a framed message from `buffer`, borrowing from it.
///
/// # Errors
///
/// A [`FrameError`] when the prefix or the body is malformed.
pub fn read_message<'a, T: Deserialize<'a>>(buffer: &'a [u8]) -> Result<T, FrameError> {
    let (prefix, body) = buffer
        .split_at_checked(4)
        .ok_or(FrameError::BufferTooSmall)?;
    let length = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let body = body
        .get(..length as usize)
        .ok_or(FrameError::LengthOutOfBounds { length })?;
    postcard::from_bytes(body).map_err(FrameError::Postcard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_round_trips_through_a_frame() {
        let mut buffer = [0u8; 64];
        let args = [1, 2, 3];
        let used = write_message(
            &mut buffer,
            &Call {
                function: "add",
                args: &args,
            },
        )
        .unwrap();
        assert!(used > 4);
        let call: Call<'_> = read_message(&buffer).unwrap();
        assert_eq!(call.function, "add");
        assert_eq!(call.args, &args);
    }

    #[test]
    fn hostile_length_prefix_is_an_error() {
        let mut buffer = [0u8; 16];
        buffer[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            read_message::<Call<'_>>(&buffer),
            Err(FrameError::LengthOutOfBounds { length: u32::MAX })
        );
        assert_eq!(
            read_message::<Call<'_>>(&buffer[..3]),
            Err(FrameError::BufferTooSmall)
        );
    }

    #[test]
    fn message_too_large_for_the_buffer() {
        let mut buffer = [0u8; 8];
        let big = [0u8; 32];
        assert_eq!(
            write_message(&mut buffer, &Response::Return(&big)),
            Err(FrameError::MessageTooLarge)
        );
    }

    #[test]
    fn param_type_indices_round_trip() {
        for ty in ParamType::ALL {
            assert_eq!(ParamType::from_index(ty.index()), ty);
        }
        assert_eq!(ParamType::from_index(200), ParamType::Other);
    }
}
