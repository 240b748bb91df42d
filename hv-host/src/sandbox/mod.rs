//! Sandboxes: a guest ELF in its own KVM virtual machine, called like a
//! library. The protocol and memory layout are `hv_guest_abi`'s.
//!
//! ```no_run
//! use hv_host::sandbox::SandboxBuilder;
//! # fn main() -> Result<(), hv_host::sandbox::SandboxError> {
//! let mut sandbox = SandboxBuilder::from_path("guest.elf")
//!     .host_function("host_add", |a: i64, b: i64| a + b)
//!     .build()?;
//! let greeting: String = sandbox.call("echo", ("hello",))?;
//! let clean = sandbox.snapshot()?;
//! sandbox.call::<()>("dirty_pages", (16u32,))?;
//! sandbox.restore(&clean)?;
//! # Ok(()) }
//! ```

pub mod cli;
pub mod elf;
pub mod error;
pub mod host_fn;
pub mod interrupt;
pub mod kvm;
pub mod layout;
pub mod memory;
pub mod snapshot;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hv_guest_abi::{
    BOOT_INFO_ADDRESS, Call, Exception, FrameError, HostCall, HostReply, LogLevel, LogRecord,
    PORT_EXCEPTION, PORT_HOST_CALL, PORT_LOG, PORT_PANIC, PORT_RESPONSE, Panic, ParamType,
    Response, read_message, write_message,
};
use kvm_ioctls::VcpuExit;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use error::{FaultInstruction, GuestFault, KvmError, ProtocolViolation, SandboxError};
pub use host_fn::{HostFunction, HostOutcome};
pub use interrupt::InterruptHandle;
pub use layout::{Layout, MemoryConfig};
pub use snapshot::Snapshot;

use host_fn::ErasedHostFunction;
use interrupt::{Interrupts, StopReason};
use kvm::Machine;
use memory::GuestMemory;
use snapshot::PageBitmap;

/// A function the guest offers (from its `Response::Ready`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GuestFunction {
    /// Name.
    pub name: String,
    /// Parameter types.
    pub params: Vec<ParamType>,
    /// Result type.
    pub result: ParamType,
}

/// A log record the guest sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestLog {
    /// Level.
    pub level: LogLevel,
    /// The guest module that logged.
    pub target: String,
    /// The message.
    pub message: String,
}

type LogCallback = Box<dyn FnMut(&GuestLog) + Send>;

enum ImageSource {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// Configures and creates a [`Sandbox`].
pub struct SandboxBuilder {
    image: ImageSource,
    memory: MemoryConfig,
    host_functions: HashMap<String, ErasedHostFunction>,
    log_callback: Option<LogCallback>,
    default_deadline: Option<Duration>,
    expose_cpuid: bool,
}

impl std::fmt::Debug for SandboxBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxBuilder")
            .field("memory", &self.memory)
            .field("host_functions", &self.host_functions.keys())
            .field("default_deadline", &self.default_deadline)
            .field("expose_cpuid", &self.expose_cpuid)
            .finish_non_exhaustive()
    }
}

impl SandboxBuilder {
    /// A sandbox for the guest ELF at `path` (read at `build`).
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        Self::new(ImageSource::Path(path.into()))
    }

    /// A sandbox for the guest ELF in `bytes`.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Self::new(ImageSource::Bytes(bytes.into()))
    }

    fn new(image: ImageSource) -> Self {
        Self {
            image,
            memory: MemoryConfig::default(),
            host_functions: HashMap::new(),
            log_callback: None,
            default_deadline: None,
            expose_cpuid: false,
        }
    }

    /// Memory sizes (default: [`MemoryConfig::default`]).
    #[must_use]
    pub fn memory(mut self, memory: MemoryConfig) -> Self {
        self.memory = memory;
        self
    }

    /// Registers a host function the guest may call by `name`, e.g.
    /// `.host_function("host_add", |a: i64, b: i64| a + b)`.
    #[must_use]
    pub fn host_function<Args>(
        mut self,
        name: impl Into<String>,
        function: impl HostFunction<Args>,
    ) -> Self {
        self.host_functions.insert(name.into(), function.erase());
        self
    }

    /// Receives every guest log record (they also go to `tracing` with
    /// target `hv_guest`).
    #[must_use]
    pub fn log_callback(mut self, callback: impl FnMut(&GuestLog) + Send + 'static) -> Self {
        self.log_callback = Some(Box::new(callback));
        self
    }

    /// A deadline for every [`Sandbox::call`] (and for start-up).
    #[must_use]
    pub fn default_deadline(mut self, deadline: Duration) -> Self {
        self.default_deadline = Some(deadline);
        self
    }

    /// Whether the guest's `CPUID` reports the features KVM supports
    /// (`KVM_SET_CPUID2` with `KVM_GET_SUPPORTED_CPUID`'s answer), for guests
    /// that detect CPU features at run time (for example AES-NI or SSE4.2
    /// code paths). Off by default: the hv-guest runtime never executes
    /// `CPUID`, the x86-64 baseline a Rust guest compiles for (SSE2) runs
    /// either way, and on `kvm_pvm` the ioctl costs about 70 µs of the
    /// sandbox's creation (it re-reads the host's CPUID). Without it every
    /// `CPUID` leaf reads as zero.
    #[must_use]
    pub const fn expose_cpuid(mut self, expose: bool) -> Self {
        self.expose_cpuid = expose;
        self
    }

    /// Creates the VM, loads the image, runs the guest to `Ready`.
    ///
    /// # Errors
    ///
    /// Image, layout and KVM errors, or the guest failing at start-up.
    pub fn build(self) -> Result<Sandbox, SandboxError> {
        let span = tracing::debug_span!("sandbox_create");
        let _entered = span.enter();
        let bytes = match self.image {
            ImageSource::Bytes(bytes) => bytes,
            ImageSource::Path(path) => {
                std::fs::read(&path).map_err(|source| SandboxError::ReadImage { path, source })?
            }
        };
        let layout = Layout::new(&self.memory)?;
        let image = elf::parse(&bytes, layout.image_limit())?;
        let mut memory = GuestMemory::new(layout.total)?;
        let mut populated = PageBitmap::new(memory.page_count());
        layout.write_page_tables(memory.bytes_mut());
        Layout::write_descriptor_tables(memory.bytes_mut());
        write_boot_info(&mut memory, &layout);
        for page in Layout::host_structure_pages() {
            populated.set_range(page, 1);
        }
        for segment in &image.segments {
            // Bounds were checked by the parser (file) and the layout (memory).
            let source = &bytes[segment.file_offset as usize..][..segment.file_size as usize];
            if let Some(target) = memory.get_mut(segment.address, segment.file_size) {
                target.copy_from_slice(source);
            }
            populated.set_range(segment.address, segment.file_size);
        }
        let mut machine = Machine::new(&memory, true, self.expose_cpuid)?;
        let sregs = machine.long_mode_sregs()?;
        machine.queue_registers(&kvm::initial_regs(image.entry, layout.stack.end()), &sregs);
        let interrupts = Arc::new(Interrupts::default());
        interrupts.attach(&raw mut machine.vcpu.get_kvm_run().immediate_exit);
        let pages = memory.page_count();
        let mut sandbox = Sandbox {
            machine,
            memory,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            layout,
            functions: Vec::new(),
            host_functions: self.host_functions,
            log_callback: self.log_callback,
            default_deadline: self.default_deadline,
            interrupts,
            poisoned: false,
            populated,
            dirty: PageBitmap::new(pages),
            base_snapshot: None,
            scratch: Vec::new(),
        };
        sandbox.run_guarded(sandbox.default_deadline)?;
        sandbox.functions = sandbox.read_ready()?;
        Ok(sandbox)
    }
}

fn write_boot_info(memory: &mut GuestMemory, layout: &Layout) {
    let info = layout.boot_info();
    let mut bytes = Vec::with_capacity(88);
    bytes.extend_from_slice(&info.magic.to_le_bytes());
    bytes.extend_from_slice(&info.abi_version.to_le_bytes());
    bytes.extend_from_slice(&info.reserved.to_le_bytes());
    for field in [
        info.memory_size,
        info.input_address,
        info.input_size,
        info.output_address,
        info.output_size,
        info.heap_address,
        info.heap_size,
        info.stack_top,
        info.stack_size,
    ] {
        bytes.extend_from_slice(&field.to_le_bytes());
    }
    if let Some(target) = memory.get_mut(BOOT_INFO_ADDRESS, bytes.len() as u64) {
        target.copy_from_slice(&bytes);
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_CALL: AtomicU64 = AtomicU64::new(1);

/// A running guest in its own VM, idle between calls.
pub struct Sandbox {
    // Declared before `memory`: the VM must go before the memory it maps.
    machine: Machine,
    memory: GuestMemory,
    id: u64,
    layout: Layout,
    functions: Vec<GuestFunction>,
    host_functions: HashMap<String, ErasedHostFunction>,
    log_callback: Option<LogCallback>,
    default_deadline: Option<Duration>,
    interrupts: Arc<Interrupts>,
    poisoned: bool,
    /// Pages ever written (by the host or the guest).
    populated: PageBitmap,
    /// Pages written since `base_snapshot` was taken or restored.
    dirty: PageBitmap,
    base_snapshot: Option<u64>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.id)
            .field("layout", &self.layout)
            .field("functions", &self.functions)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.interrupts.detach();
    }
}

/// An exit, owned (the vCPU borrow ends before it is handled).
enum Exit {
    Out(u16),
    In(u16),
    Mmio(u64),
    Halt,
    Shutdown,
    Interrupted,
    Other(u32),
}

impl Sandbox {
    /// The functions the guest offers.
    pub fn functions(&self) -> &[GuestFunction] {
        &self.functions
    }

    /// The guest's memory layout.
    pub const fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Whether an earlier failure poisoned the sandbox (calls fail with
    /// [`SandboxError::Poisoned`] until a restore).
    pub const fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// A handle that stops this sandbox's running call from another thread.
    pub fn interrupt_handle(&self) -> InterruptHandle {
        InterruptHandle {
            interrupts: Arc::clone(&self.interrupts),
        }
    }

    /// Calls guest function `function` with `args` (a tuple, e.g.
    /// `("text",)` or `(2i64, 3i64)`), decoding the result as `R`. Uses the
    /// builder's default deadline, if any.
    ///
    /// # Errors
    ///
    /// See [`SandboxError`]; failures that leave the guest in an unknown
    /// state poison the sandbox.
    pub fn call<R: DeserializeOwned>(
        &mut self,
        function: &str,
        args: impl Serialize,
    ) -> Result<R, SandboxError> {
        self.call_inner(function, &args, self.default_deadline)
    }

    /// Like [`Sandbox::call`], stopping the guest after `deadline`.
    ///
    /// # Errors
    ///
    /// [`SandboxError::Deadline`] when it ran too long, or as `call`.
    pub fn call_with_deadline<R: DeserializeOwned>(
        &mut self,
        function: &str,
        args: impl Serialize,
        deadline: Duration,
    ) -> Result<R, SandboxError> {
        self.call_inner(function, &args, Some(deadline))
    }

    /// Like [`Sandbox::call`], returning the result's postcard bytes
    /// undecoded (for callers that learn the result type at run time, such
    /// as `hv run`).
    ///
    /// # Errors
    ///
    /// As [`Sandbox::call`].
    pub fn call_raw(
        &mut self,
        function: &str,
        args: impl Serialize,
        deadline: Option<Duration>,
    ) -> Result<Vec<u8>, SandboxError> {
        self.send_call(function, &args, deadline)?;
        self.read_response(function, |bytes| Ok(bytes.to_vec()))
    }

    fn call_inner<R: DeserializeOwned>(
        &mut self,
        function: &str,
        args: &impl Serialize,
        deadline: Option<Duration>,
    ) -> Result<R, SandboxError> {
        self.send_call(function, args, deadline)?;
        self.read_response(function, |bytes| {
            postcard::from_bytes(bytes).map_err(|source| SandboxError::ResultDecode {
                function: function.to_owned(),
                source,
            })
        })
    }

    /// Writes the call into the input buffer and runs the guest until it
    /// answers.
    fn send_call(
        &mut self,
        function: &str,
        args: &impl Serialize,
        deadline: Option<Duration>,
    ) -> Result<(), SandboxError> {
        let span = tracing::trace_span!("sandbox_call", function);
        let _entered = span.enter();
        if self.poisoned {
            return Err(SandboxError::Poisoned);
        }
        let args = postcard::to_extend(args, std::mem::take(&mut self.scratch))
            .map_err(SandboxError::ArgumentEncode)?;
        let call = Call {
            function,
            args: &args,
        };
        let input = self.layout.input;
        let written = self
            .memory
            .get_mut(input.start, input.size)
            .map(|buffer| write_message(buffer, &call));
        let written = match written {
            Some(Ok(written)) => written,
            Some(Err(FrameError::MessageTooLarge)) | None => {
                let size = 4 + postcard::to_allocvec(&call).map_or(usize::MAX, |bytes| bytes.len());
                self.recycle(args);
                return Err(SandboxError::ArgumentsTooLarge {
                    size,
                    limit: input.size as usize,
                });
            }
            Some(Err(error)) => {
                self.recycle(args);
                return Err(SandboxError::ProtocolViolation {
                    what: ProtocolViolation::BadFrame(error),
                });
            }
        };
        self.recycle(args);
        self.dirty.set_range(input.start, written as u64);
        self.populated.set_range(input.start, written as u64);
        self.run_guarded(deadline)
    }

    fn recycle(&mut self, mut buffer: Vec<u8>) {
        buffer.clear();
        self.scratch = buffer;
    }

    /// Runs the guest until it is idle again, with an optional deadline;
    /// poisons the sandbox on failure.
    fn run_guarded(&mut self, deadline: Option<Duration>) -> Result<(), SandboxError> {
        let sequence = NEXT_CALL.fetch_add(1, Ordering::Relaxed);
        self.interrupts.begin_call(sequence);
        let guard =
            deadline.map(|after| interrupt::arm_deadline(&self.interrupts, sequence, after));
        let result = self.run_until_idle();
        drop(guard);
        self.interrupts.end_call();
        if let Err(error) = &result
            && error.poisons()
        {
            self.poisoned = true;
        }
        result
    }

    fn run_until_idle(&mut self) -> Result<(), SandboxError> {
        loop {
            let exit = match self.machine.vcpu.run() {
                Ok(VcpuExit::IoOut(port, _)) => Exit::Out(port),
                Ok(VcpuExit::IoIn(port, _)) => Exit::In(port),
                Ok(VcpuExit::MmioRead(gpa, _) | VcpuExit::MmioWrite(gpa, _)) => Exit::Mmio(gpa),
                Ok(VcpuExit::Hlt) => Exit::Halt,
                Ok(VcpuExit::Shutdown) => Exit::Shutdown,
                Ok(_) => Exit::Other(self.machine.vcpu.get_kvm_run().exit_reason),
                Err(error) if error.errno() == libc::EINTR => Exit::Interrupted,
                Err(error) => return Err(KvmError::ioctl("KVM_RUN", error).into()),
            };
            match exit {
                Exit::Out(PORT_RESPONSE) => return Ok(()),
                Exit::Out(PORT_HOST_CALL) => self.serve_host_call()?,
                Exit::Out(PORT_LOG) => self.forward_log()?,
                Exit::Out(PORT_PANIC) => return Err(self.panic_error()),
                Exit::Out(PORT_EXCEPTION) => return Err(self.fault_error()),
                Exit::Out(port) => return Err(ProtocolViolation::UnexpectedPort { port }.into()),
                Exit::In(port) => return Err(ProtocolViolation::PortRead { port }.into()),
                Exit::Mmio(gpa) => return Err(ProtocolViolation::UnmappedAccess { gpa }.into()),
                Exit::Halt => return Err(ProtocolViolation::Halted.into()),
                Exit::Shutdown => {
                    let rip = self.machine.last_regs().rip;
                    return Err(SandboxError::TripleFault {
                        rip,
                        instruction: FaultInstruction::at(self.memory.bytes(), rip),
                    });
                }
                Exit::Interrupted => match self.interrupts.stop_reason() {
                    Some(StopReason::Killed) => return Err(SandboxError::Killed),
                    Some(StopReason::Deadline(after)) => {
                        return Err(SandboxError::Deadline { after });
                    }
                    // Another signal interrupted KVM_RUN: carry on.
                    None => {}
                },
                Exit::Other(reason) => {
                    let rip = self.machine.last_regs().rip;
                    return Err(SandboxError::UnexpectedExit {
                        reason,
                        rip,
                        instruction: FaultInstruction::at(self.memory.bytes(), rip),
                    });
                }
            }
        }
    }

    fn output(&self) -> &[u8] {
        let output = self.layout.output;
        self.memory
            .get(output.start, output.size)
            .unwrap_or_default()
    }

    fn read_ready(&self) -> Result<Vec<GuestFunction>, SandboxError> {
        let response: Response<'_> =
            read_message(self.output()).map_err(ProtocolViolation::BadFrame)?;
        let Response::Ready { functions } = response else {
            return Err(ProtocolViolation::NotReady.into());
        };
        functions
            .iter()
            .map(|info| {
                let info = info.map_err(|_| ProtocolViolation::BadFunctionTable)?;
                Ok(GuestFunction {
                    name: info.name.to_owned(),
                    params: info
                        .params
                        .iter()
                        .map(|&index| ParamType::from_index(index))
                        .collect(),
                    result: ParamType::from_index(info.result),
                })
            })
            .collect()
    }

    /// Decodes the guest's answer to a call; `decode` turns the result's
    /// postcard bytes into `R`.
    fn read_response<R>(
        &mut self,
        function: &str,
        decode: impl FnOnce(&[u8]) -> Result<R, SandboxError>,
    ) -> Result<R, SandboxError> {
        let response = read_message::<Response<'_>>(self.output());
        let error = match response {
            Ok(Response::Return(bytes)) => return decode(bytes),
            Ok(Response::UnknownFunction) => SandboxError::UnknownFunction {
                name: function.to_owned(),
            },
            Ok(Response::BadArguments) => SandboxError::BadArguments {
                function: function.to_owned(),
            },
            Ok(Response::ResultTooLarge) => SandboxError::ResultTooLarge {
                function: function.to_owned(),
            },
            Ok(Response::BadCall) => ProtocolViolation::BadCall.into(),
            Ok(Response::Ready { .. }) => ProtocolViolation::UnexpectedReady.into(),
            Err(error) => ProtocolViolation::BadFrame(error).into(),
        };
        if error.poisons() {
            self.poisoned = true;
        }
        Err(error)
    }

    fn serve_host_call(&mut self) -> Result<(), SandboxError> {
        let output = self.layout.output;
        let buffer = self
            .memory
            .get(output.start, output.size)
            .unwrap_or_default();
        let call: HostCall<'_> = read_message(buffer).map_err(ProtocolViolation::BadFrame)?;
        let outcome = match self.host_functions.get_mut(call.function) {
            None => None,
            Some(function) => {
                let args = call.args;
                Some(
                    std::panic::catch_unwind(AssertUnwindSafe(|| function(args))).map_err(
                        |_| SandboxError::HostFunctionPanicked {
                            name: call.function.to_owned(),
                        },
                    )?,
                )
            }
        };
        let input = self.layout.input;
        let Some(buffer) = self.memory.get_mut(input.start, input.size) else {
            return Err(ProtocolViolation::UnmappedAccess { gpa: input.start }.into());
        };
        let reply = match &outcome {
            None => HostReply::UnknownFunction,
            Some(HostOutcome::Return(bytes)) => HostReply::Return(bytes),
            Some(HostOutcome::BadArguments) => HostReply::BadArguments,
            Some(HostOutcome::Failed(message)) => HostReply::Failed(message),
        };
        let written = match write_message(buffer, &reply) {
            Ok(written) => written,
            Err(_) => write_message(buffer, &HostReply::Failed("host reply too large"))
                .map_err(ProtocolViolation::BadFrame)?,
        };
        self.dirty.set_range(input.start, written as u64);
        self.populated.set_range(input.start, written as u64);
        Ok(())
    }

    fn forward_log(&mut self) -> Result<(), SandboxError> {
        let record: LogRecord<'_> =
            read_message(self.output()).map_err(ProtocolViolation::BadFrame)?;
        let (target, message) = (record.target, record.message);
        match record.level {
            LogLevel::Trace => {
                tracing::trace!(target: "hv_guest", guest_target = target, "{message}");
            }
            LogLevel::Debug => {
                tracing::debug!(target: "hv_guest", guest_target = target, "{message}");
            }
            LogLevel::Info => {
                tracing::info!(target: "hv_guest", guest_target = target, "{message}");
            }
            LogLevel::Warn => {
                tracing::warn!(target: "hv_guest", guest_target = target, "{message}");
            }
            LogLevel::Error => {
                tracing::error!(target: "hv_guest", guest_target = target, "{message}");
            }
        }
        let log = GuestLog {
            level: record.level,
            target: target.to_owned(),
            message: message.to_owned(),
        };
        if let Some(callback) = &mut self.log_callback {
            callback(&log);
        }
        Ok(())
    }

    fn panic_error(&self) -> SandboxError {
        match read_message::<Panic<'_>>(self.output()) {
            Ok(panic) => SandboxError::GuestPanic {
                message: panic.message.to_owned(),
                file: panic.file.to_owned(),
                line: panic.line,
            },
            Err(error) => ProtocolViolation::BadFrame(error).into(),
        }
    }

    fn fault_error(&self) -> SandboxError {
        match read_message::<Exception>(self.output()) {
            Ok(exception) => SandboxError::GuestFault(Box::new(GuestFault {
                vector: exception.vector,
                error_code: exception.error_code,
                address: exception.cr2,
                rip: exception.rip,
                instruction: FaultInstruction::at(self.memory.bytes(), exception.rip),
            })),
            Err(error) => ProtocolViolation::BadFrame(error).into(),
        }
    }

    /// Pulls KVM's dirty log into the sandbox's bitmaps.
    fn fetch_dirty_log(&mut self) -> Result<(), SandboxError> {
        let words = self
            .machine
            .vm
            .get_dirty_log(0, self.memory.bytes().len())
            .map_err(|error| KvmError::ioctl("KVM_GET_DIRTY_LOG", error))?;
        self.dirty.or_words(&words);
        self.populated.or_words(&words);
        Ok(())
    }

    /// Captures the guest's memory and registers. The sandbox must be idle
    /// and not poisoned.
    ///
    /// # Errors
    ///
    /// [`SandboxError::Poisoned`], or a failing ioctl.
    pub fn snapshot(&mut self) -> Result<Snapshot, SandboxError> {
        let span = tracing::debug_span!("sandbox_snapshot");
        let _entered = span.enter();
        if self.poisoned {
            return Err(SandboxError::Poisoned);
        }
        // Finish the pending `out` so the registers are the idle point's.
        self.machine.complete_pending_exit();
        let vcpu = &self.machine.vcpu;
        let regs = vcpu
            .get_regs()
            .map_err(|error| KvmError::ioctl("KVM_GET_REGS", error))?;
        let sregs = vcpu
            .get_sregs()
            .map_err(|error| KvmError::ioctl("KVM_GET_SREGS", error))?;
        let fpu = vcpu
            .get_fpu()
            .map_err(|error| KvmError::ioctl("KVM_GET_FPU", error))?;
        self.fetch_dirty_log()?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let snapshot = Snapshot::capture(
            self.id,
            id,
            &self.memory,
            &self.populated,
            &(regs, sregs, fpu),
        );
        self.dirty.clear();
        self.base_snapshot = Some(id);
        Ok(snapshot)
    }

    /// Puts the guest back to `snapshot` (taken of this sandbox) and clears
    /// the poisoned state. Copies only the pages dirtied since the snapshot
    /// was taken or last restored.
    ///
    /// # Errors
    ///
    /// [`SandboxError::ForeignSnapshot`], or a failing ioctl.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<(), SandboxError> {
        let span = tracing::debug_span!("sandbox_restore");
        let _entered = span.enter();
        let data = &snapshot.data;
        if data.sandbox != self.id {
            return Err(SandboxError::ForeignSnapshot);
        }
        // Complete whatever exit is pending so KVM does not apply it on top
        // of the restored registers.
        self.machine.complete_pending_exit();
        self.fetch_dirty_log()?;
        let pages = if self.base_snapshot == Some(data.id) {
            &self.dirty
        } else {
            &self.populated
        };
        for page in pages.iter() {
            data.restore_page(&mut self.memory, page);
        }
        self.dirty.clear();
        self.base_snapshot = Some(data.id);
        self.machine
            .vcpu
            .set_fpu(&data.fpu)
            .map_err(|error| KvmError::ioctl("KVM_SET_FPU", error))?;
        self.machine.queue_registers(&data.regs, &data.sregs);
        self.poisoned = false;
        Ok(())
    }
}
