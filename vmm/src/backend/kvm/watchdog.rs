//! The host watchdog of DESIGN point 9.
//!
//! A guest that computes without exits never hands control back. One thread per VM
//! looks at every vCPU now and then; a vCPU inside one KVM_RUN for longer than
//! [`WatchdogConfig::kick_after`] gets a signal, which makes KVM_RUN return EINTR. The
//! vCPU thread re-enters at once: the kick is invisible (no time advance, no
//! injection, nothing in the trace). Only a vCPU that keeps going without a real exit
//! for [`WatchdogConfig::force_after`] is reported to the core as a forced preemption.
//!
//! The race where the signal lands just before KVM_RUN starts is benign: the next
//! look kicks again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

/// Host-time limits of the watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// Kick a vCPU whose KVM_RUN lasts longer than this.
    pub kick_after: Duration,
    /// Report a forced preemption when a run sees only kicks for this long.
    pub force_after: Duration,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            kick_after: Duration::from_millis(10),
            force_after: Duration::from_secs(2),
        }
    }
}

/// The signal that kicks vCPU threads (glibc keeps SIGRTMIN-2 and -1 for itself).
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN() + 2
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: interrupting KVM_RUN is the whole point.
}

fn install_handler() -> Result<(), String> {
    static ONCE: Once = Once::new();
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    ONCE.call_once(|| {
        let r = register_signal_handler(kick_signal(), on_kick)
            .map_err(|e| format!("installing the watchdog signal handler: {e}"));
        let _ = RESULT.set(r);
    });
    RESULT.get().cloned().unwrap_or(Ok(()))
}

/// Monotonic host nanoseconds since the first call, plus one (0 means "not running").
fn now_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    origin.elapsed().as_nanos() as u64 + 1
}

/// One vCPU thread as the watchdog sees it.
#[derive(Debug)]
pub struct Slot {
    thread: libc::pthread_t,
    /// When the current KVM_RUN began, 0 outside KVM_RUN.
    entered: AtomicU64,
}

impl Slot {
    pub fn enter(&self) {
        self.entered.store(now_ns(), Ordering::Release);
    }

    pub fn leave(&self) {
        self.entered.store(0, Ordering::Release);
    }
}

#[derive(Debug, Default)]
struct Shared {
    slots: Mutex<Vec<Arc<Slot>>>,
    stop: AtomicBool,
}

#[derive(Debug)]
pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    pub config: WatchdogConfig,
}

impl Watchdog {
    pub fn start(config: WatchdogConfig) -> Result<Watchdog, String> {
        install_handler()?;
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let kick_ns = config.kick_after.as_nanos().max(1) as u64;
        let period = (config.kick_after / 2).max(Duration::from_micros(100));
        let thread = std::thread::Builder::new()
            .name("kvm-watchdog".into())
            .spawn(move || watch(&s, kick_ns, period))
            .map_err(|e| format!("starting the watchdog thread: {e}"))?;
        Ok(Watchdog {
            shared,
            thread: Some(thread),
            config,
        })
    }

    /// Registers the calling thread; it must call [`Watchdog::unregister`] before it ends.
    pub fn register(&self) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            // SAFETY: pthread_self has no preconditions.
            thread: unsafe { libc::pthread_self() },
            entered: AtomicU64::new(0),
        });
        lock(&self.shared.slots).push(Arc::clone(&slot));
        slot
    }

    pub fn unregister(&self, slot: &Arc<Slot>) {
        lock(&self.shared.slots).retain(|s| !Arc::ptr_eq(s, slot));
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn watch(shared: &Shared, kick_ns: u64, period: Duration) {
    while !shared.stop.load(Ordering::Acquire) {
        std::thread::park_timeout(period);
        let now = now_ns();
        // The lock keeps every listed thread alive: a vCPU thread unregisters (under
        // this lock) before it ends, so `thread` is valid for pthread_kill.
        let slots = lock(&shared.slots);
        for slot in slots.iter() {
            let entered = slot.entered.load(Ordering::Acquire);
            if entered != 0 && now.saturating_sub(entered) > kick_ns {
                // SAFETY: the thread is alive (see above) and the signal has a handler.
                unsafe { libc::pthread_kill(slot.thread, kick_signal()) };
            }
        }
    }
}
