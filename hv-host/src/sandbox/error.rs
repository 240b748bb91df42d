//! Errors: what went wrong with KVM, the image, or the guest.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use hv_arch_vmx::controls::ExceptionVector;
use hv_guest_abi::FrameError;
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

use super::elf::ElfError;
use super::layout::LayoutError;

/// /dev/kvm or a host resource could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// /dev/kvm does not exist (no KVM module, or not in a container).
    #[error("/dev/kvm does not exist: load the kvm module or pass the device in")]
    DeviceMissing,
    /// /dev/kvm exists but this user may not open it.
    #[error("no permission to open /dev/kvm: add the user to the kvm group")]
    PermissionDenied,
    /// Opening /dev/kvm failed otherwise.
    #[error("opening /dev/kvm: {0}")]
    Open(#[source] std::io::Error),
    /// `KVM_GET_API_VERSION` is not 12.
    #[error("KVM API version {found} is not the stable version 12")]
    UnsupportedApiVersion {
        /// What the kernel reported.
        found: i32,
    },
    /// A capability hv needs is missing.
    #[error("KVM lacks the capability {capability}")]
    MissingCapability {
        /// Its name, as in the KVM API documentation.
        capability: &'static str,
    },
    /// An ioctl failed.
    #[error("{operation}: {source}")]
    Ioctl {
        /// Which ioctl.
        operation: &'static str,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
    /// memfd, mmap or another host resource failed.
    #[error("{operation}: {source}")]
    Resource {
        /// What was being done.
        operation: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

impl KvmError {
    pub(crate) fn ioctl(operation: &'static str, error: kvm_ioctls::Error) -> Self {
        Self::Ioctl {
            operation,
            source: std::io::Error::from_raw_os_error(error.errno()),
        }
    }
}

/// The instruction at a fault's RIP, as far as it could be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultInstruction {
    /// Decoded from guest memory, Intel syntax.
    Decoded {
        /// E.g. `mov rax,[rdi]`.
        text: String,
        /// The instruction's bytes.
        bytes: Vec<u8>,
    },
    /// RIP is not in guest memory.
    OutsideGuestMemory,
    /// The bytes at RIP are not a valid instruction.
    Invalid {
        /// Up to 15 bytes from RIP.
        bytes: Vec<u8>,
    },
}

impl FaultInstruction {
    /// Disassembles the instruction at `rip` in `memory` (guest memory from
    /// address 0).
    pub fn at(memory: &[u8], rip: u64) -> Self {
        let Some(start) = usize::try_from(rip).ok().filter(|&at| at < memory.len()) else {
            return Self::OutsideGuestMemory;
        };
        let bytes = &memory[start..memory.len().min(start + 15)];
        let mut decoder = Decoder::with_ip(64, bytes, rip, DecoderOptions::NONE);
        let instruction = decoder.decode();
        if instruction.is_invalid() {
            return Self::Invalid {
                bytes: bytes.to_vec(),
            };
        }
        let mut text = String::new();
        IntelFormatter::new().format(&instruction, &mut text);
        Self::Decoded {
            text,
            bytes: bytes[..instruction.len()].to_vec(),
        }
    }
}

impl fmt::Display for FaultInstruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decoded { text, .. } => f.write_str(text),
            Self::OutsideGuestMemory => f.write_str("(RIP is outside guest memory)"),
            Self::Invalid { bytes } => write!(f, "(invalid instruction bytes {bytes:02x?})"),
        }
    }
}

/// A CPU exception the guest reported (its handler ran and wrote
/// `hv_guest_abi::Exception`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestFault {
    /// Vector (14 = #PF, 13 = #GP, 6 = #UD ...).
    pub vector: u8,
    /// Error code (0 when the exception has none).
    pub error_code: u64,
    /// CR2: the faulting address for a page fault.
    pub address: u64,
    /// RIP of the faulting instruction.
    pub rip: u64,
    /// The faulting instruction.
    pub instruction: FaultInstruction,
}

impl GuestFault {
    /// Mnemonic of the vector ("#PF"; SDM Vol. 3A Table 6-1), or
    /// "exception" for a vector the SDM gives none.
    pub const fn vector_name(&self) -> &'static str {
        match ExceptionVector::from_vector(self.vector).mnemonic() {
            Some(name) => name,
            None => "exception",
        }
    }
}

impl fmt::Display for GuestFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (vector {}, error code {:#x}) at rip {:#x}: {}",
            self.vector_name(),
            self.vector,
            self.error_code,
            self.rip,
            self.instruction
        )?;
        if self.vector == 14 {
            write!(f, ", address {:#x}", self.address)?;
        }
        Ok(())
    }
}

/// What the guest did that the protocol does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolViolation {
    /// A message in the output buffer did not decode.
    #[error("bad message frame: {0}")]
    BadFrame(FrameError),
    /// `out` to a port that is not one of the protocol's.
    #[error("out to unexpected port {port:#x}")]
    UnexpectedPort {
        /// The port.
        port: u16,
    },
    /// `in` from a port (the protocol never reads ports).
    #[error("in from port {port:#x}")]
    PortRead {
        /// The port.
        port: u16,
    },
    /// An access to a guest-physical address with no memory.
    #[error("access to unmapped guest-physical address {gpa:#x}")]
    UnmappedAccess {
        /// The address.
        gpa: u64,
    },
    /// The guest executed `hlt`.
    #[error("the guest halted")]
    Halted,
    /// The guest's first message was not `Response::Ready`.
    #[error("the guest did not start with Response::Ready")]
    NotReady,
    /// `Response::Ready` came again after start-up.
    #[error("Response::Ready in answer to a call")]
    UnexpectedReady,
    /// The guest said the host's call frame was bad.
    #[error("the guest could not decode the host's call")]
    BadCall,
    /// The Ready message's function table did not decode.
    #[error("bad function table")]
    BadFunctionTable,
}

/// Why creating, calling, snapshotting or restoring a sandbox failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// KVM or a host resource is unavailable.
    #[error("KVM unavailable: {0}")]
    KvmUnavailable(#[from] KvmError),
    /// The guest image file could not be read.
    #[error("reading {path}: {source}")]
    ReadImage {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The guest image is not an acceptable ELF.
    #[error("bad guest ELF: {0}")]
    BadElf(#[from] ElfError),
    /// The memory configuration cannot be laid out.
    #[error("memory layout: {0}")]
    MemoryLayout(#[from] LayoutError),
    /// The guest panicked.
    #[error("guest panicked at {file}:{line}: {message}")]
    GuestPanic {
        /// The panic message.
        message: String,
        /// Source file.
        file: String,
        /// Source line.
        line: u32,
    },
    /// The guest took a CPU exception.
    #[error("guest fault: {0}")]
    GuestFault(Box<GuestFault>),
    /// The guest triple-faulted (`KVM_EXIT_SHUTDOWN`).
    #[error("guest triple fault (shutdown) at rip {rip:#x}: {instruction}")]
    TripleFault {
        /// RIP when the shutdown happened.
        rip: u64,
        /// The instruction there.
        instruction: FaultInstruction,
    },
    /// The call ran past its deadline and was stopped.
    #[error("the call ran past its deadline of {after:?} and was stopped")]
    Deadline {
        /// The deadline.
        after: Duration,
    },
    /// An [`InterruptHandle`](super::InterruptHandle) stopped the call.
    #[error("the call was killed")]
    Killed,
    /// An earlier failure left the guest in an unknown state; restore a
    /// snapshot first.
    #[error("the sandbox is poisoned by an earlier failure; restore a snapshot")]
    Poisoned,
    /// The guest has no function of this name.
    #[error("the guest has no function {name:?}")]
    UnknownFunction {
        /// The name.
        name: String,
    },
    /// The guest could not decode the arguments as its parameter types.
    #[error("the arguments do not match the parameters of {function:?}")]
    BadArguments {
        /// The function.
        function: String,
    },
    /// The arguments could not be serialized.
    #[error("serializing arguments: {0}")]
    ArgumentEncode(#[source] postcard::Error),
    /// The call does not fit in the input buffer.
    #[error("the call needs {size} bytes but the input buffer holds {limit}")]
    ArgumentsTooLarge {
        /// Bytes needed.
        size: usize,
        /// Input buffer size.
        limit: usize,
    },
    /// The result did not fit in the guest's output buffer.
    #[error("the result of {function:?} does not fit in the output buffer")]
    ResultTooLarge {
        /// The function.
        function: String,
    },
    /// The result did not decode as the requested type.
    #[error("the result of {function:?} does not decode as the requested type: {source}")]
    ResultDecode {
        /// The function.
        function: String,
        /// postcard's reason.
        #[source]
        source: postcard::Error,
    },
    /// A host function panicked while serving the guest.
    #[error("host function {name:?} panicked")]
    HostFunctionPanicked {
        /// The host function.
        name: String,
    },
    /// The guest broke the protocol.
    #[error("protocol violation: {what}")]
    ProtocolViolation {
        /// What it did.
        what: ProtocolViolation,
    },
    /// KVM stopped the vCPU for a reason the sandbox does not handle
    /// (`KVM_EXIT`_* number).
    #[error("unexpected KVM exit {reason} at rip {rip:#x}: {instruction}")]
    UnexpectedExit {
        /// `kvm_run.exit_reason` (17 = `KVM_EXIT_INTERNAL_ERROR`, e.g. an
        /// instruction KVM could not emulate).
        reason: u32,
        /// RIP at the exit.
        rip: u64,
        /// The instruction there.
        instruction: FaultInstruction,
    },
    /// The snapshot belongs to another sandbox.
    #[error("the snapshot was taken of another sandbox")]
    ForeignSnapshot,
}

impl From<ProtocolViolation> for SandboxError {
    fn from(what: ProtocolViolation) -> Self {
        Self::ProtocolViolation { what }
    }
}

impl SandboxError {
    /// Whether this failure leaves the sandbox poisoned (the guest's state
    /// is unknown until a restore).
    pub const fn poisons(&self) -> bool {
        matches!(
            self,
            Self::GuestPanic { .. }
                | Self::GuestFault(_)
                | Self::TripleFault { .. }
                | Self::Deadline { .. }
                | Self::Killed
                | Self::HostFunctionPanicked { .. }
                | Self::ProtocolViolation { .. }
                | Self::UnexpectedExit { .. }
                | Self::KvmUnavailable(_)
        )
    }
}
