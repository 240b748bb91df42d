//! Stopping a running guest from another thread: `immediate_exit` plus a
//! real-time signal whose handler does nothing (so `KVM_RUN` returns EINTR),
//! and one process-wide watchdog thread that does the same at deadlines.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once, OnceLock};
use std::time::{Duration, Instant};

/// Offset from SIGRTMIN of the signal that kicks vCPU threads out of
/// `KVM_RUN`.
pub const KICK_SIGNAL_OFFSET: i32 = 3;

/// Why a call was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `InterruptHandle::kill`.
    Killed,
    /// The call's deadline passed.
    Deadline(Duration),
}

#[derive(Debug, Default)]
struct State {
    /// Sequence number of the call in progress (0 = none).
    call: u64,
    /// The thread running it.
    thread: Option<libc::pthread_t>,
    /// Set when the call was asked to stop.
    stop: Option<StopReason>,
    /// `kvm_run.immediate_exit` of the sandbox's vCPU; `None` once the
    /// sandbox is gone.
    immediate_exit: Option<usize>,
}

/// Shared between a sandbox, its handles and the watchdog.
#[derive(Debug, Default)]
pub(crate) struct Interrupts {
    state: Mutex<State>,
}

impl Interrupts {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records where the vCPU's `immediate_exit` byte lives.
    pub(crate) fn attach(&self, immediate_exit: *mut u8) {
        self.lock().immediate_exit = Some(immediate_exit as usize);
    }

    /// The sandbox is going away: handles become no-ops.
    pub(crate) fn detach(&self) {
        let mut state = self.lock();
        state.immediate_exit = None;
        state.call = 0;
    }

    /// A call starts on this thread; returns its sequence number.
    pub(crate) fn begin_call(&self, sequence: u64) {
        install_kick_handler();
        let mut state = self.lock();
        state.call = sequence;
        // SAFETY: pthread_self has no preconditions.
        state.thread = Some(unsafe { libc::pthread_self() });
        state.stop = None;
    }

    /// The call ended; returns why it was stopped, if it was.
    pub(crate) fn end_call(&self) -> Option<StopReason> {
        let mut state = self.lock();
        state.call = 0;
        state.thread = None;
        if let Some(address) = state.immediate_exit {
            immediate_exit_byte(address).store(0, Ordering::SeqCst);
        }
        state.stop.take()
    }

    /// Why the current call was asked to stop, if it was.
    pub(crate) fn stop_reason(&self) -> Option<StopReason> {
        self.lock().stop
    }

    /// Stops call `sequence` (any call when `None`) if it is running.
    fn stop(&self, sequence: Option<u64>, reason: StopReason) -> bool {
        let mut state = self.lock();
        if state.call == 0 || sequence.is_some_and(|sequence| sequence != state.call) {
            return false;
        }
        let (Some(address), Some(thread)) = (state.immediate_exit, state.thread) else {
            return false;
        };
        state.stop = Some(reason);
        immediate_exit_byte(address).store(1, Ordering::SeqCst);
        // SAFETY: the thread is inside a call (it clears `thread` under
        // this lock before it can exit), and the kick handler is installed.
        unsafe {
            libc::pthread_kill(thread, libc::SIGRTMIN() + KICK_SIGNAL_OFFSET);
        }
        true
    }
}

fn immediate_exit_byte(address: usize) -> &'static AtomicU8 {
    // SAFETY: `address` is the immediate_exit byte of a live kvm_run
    // mapping: `detach` (under the same lock) removes it before the vCPU
    // is dropped. KVM reads it; the host writes it only through atomics.
    unsafe { &*(address as *const AtomicU8) }
}

extern "C" fn kick_handler(_: libc::c_int) {}

fn install_kick_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction with a handler that does nothing and
        // no SA_RESTART (so KVM_RUN returns EINTR); the handler is
        // async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = kick_handler as *const () as usize;
            libc::sigemptyset(&raw mut action.sa_mask);
            libc::sigaction(
                libc::SIGRTMIN() + KICK_SIGNAL_OFFSET,
                &raw const action,
                std::ptr::null_mut(),
            );
        }
    });
}

/// Stops a sandbox's running call from any thread. Cheap to clone; stays
/// valid (and harmless) after the sandbox is dropped.
#[derive(Clone, Debug)]
pub struct InterruptHandle {
    pub(crate) interrupts: Arc<Interrupts>,
}

impl InterruptHandle {
    /// Stops the call in progress (the call returns
    /// [`SandboxError::Killed`](super::SandboxError::Killed) and the sandbox
    /// is poisoned). Returns whether a call was running.
    pub fn kill(&self) -> bool {
        self.interrupts.stop(None, StopReason::Killed)
    }
}

/// Pending deadlines: (when, call sequence) -> (whose, the deadline asked).
type Deadlines = BTreeMap<(Instant, u64), (Arc<Interrupts>, Duration)>;

/// The process-wide deadline watchdog: one thread, a map of deadlines.
struct Watchdog {
    pending: Mutex<Deadlines>,
    wake: Condvar,
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let watchdog: &'static Watchdog = Box::leak(Box::new(Watchdog {
            pending: Mutex::new(BTreeMap::new()),
            wake: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("hv-watchdog".into())
            .spawn(move || watchdog.run())
            .map_or_else(
                |_| tracing::error!("could not start the deadline watchdog"),
                drop,
            );
        watchdog
    })
}

impl Watchdog {
    fn run(&self) {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let now = Instant::now();
            while let Some(entry) = pending.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let ((_, sequence), (interrupts, after)) = entry.remove_entry();
                interrupts.stop(Some(sequence), StopReason::Deadline(after));
            }
            let wait = pending
                .first_key_value()
                .map(|((deadline, _), _)| deadline.saturating_duration_since(now));
            pending = match wait {
                Some(wait) => {
                    self.wake
                        .wait_timeout(pending, wait)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
                None => self
                    .wake
                    .wait(pending)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            };
        }
    }
}

/// A registered deadline; dropping it cancels it.
#[derive(Debug)]
pub(crate) struct DeadlineGuard {
    key: (Instant, u64),
}

/// Arms a deadline `after` from now for call `sequence`.
pub(crate) fn arm_deadline(
    interrupts: &Arc<Interrupts>,
    sequence: u64,
    after: Duration,
) -> DeadlineGuard {
    let watchdog = watchdog();
    let key = (Instant::now() + after, sequence);
    watchdog
        .pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(key, (Arc::clone(interrupts), after));
    watchdog.wake.notify_one();
    DeadlineGuard { key }
}

impl Drop for DeadlineGuard {
    fn drop(&mut self) {
        watchdog()
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
    }
}
