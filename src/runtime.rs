//! The runtime thread of a worker process: a single-threaded tokio runtime
//! that runs the calls handed over in batches (`worker`), and the queue by
//! which their outcomes come back to the nginx thread.
//!
//! Like the threads of nginx's own thread pools, the runtime thread (and
//! the blocking-pool threads it starts, which inherit its mask) blocks
//! every signal: nginx's signals (reload, stop, child exits) reach the
//! nginx thread only. A call that panics on the runtime thread ends with a
//! failure that names the panic, which its request logs.

use std::cell::Cell;
use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use esper_client::{Answer, HANDSHAKES};
use tokio::sync::mpsc;

/// Identifies a pending call between the nginx thread and the runtime.
pub type CallId = u64;

/// Outcomes waiting for the nginx thread, and the eventfd that wakes it.
pub struct Completions {
    pub queue: Mutex<Vec<(CallId, Answer)>>,
    pub eventfd: File,
}

impl Completions {
    pub fn push(&self, id: CallId, answer: Answer) {
        let was_empty = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.push((id, answer));
            queue.len() == 1
        };
        // One wake-up per batch: the nginx thread reads the eventfd before it
        // takes the queue, so a push onto a non-empty queue is always seen.
        if was_empty {
            // An eventfd write adds to its counter; it cannot be short.
            let _ = (&self.eventfd).write(&1u64.to_ne_bytes());
        }
    }

    /// Resets the eventfd's counter (it is non-blocking: stops when zero).
    pub fn drain(&self) {
        let mut counter = [0u8; 8];
        while (&self.eventfd).read(&mut counter).is_ok_and(|n| n == 8) {}
    }

    pub fn take(&self) -> Vec<(CallId, Answer)> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *queue)
    }
}

/// A call's whole life on the runtime thread.
pub type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts the runtime thread, which spawns each job of each batch it
/// receives until `batches` closes, then cancels the calls still running.
pub fn start(mut batches: mpsc::UnboundedReceiver<Vec<Job>>) -> Result<JoinHandle<()>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .on_thread_park(coalesce_wake_ups)
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let spawned = with_signals_blocked(|| {
        std::thread::Builder::new().name("esper".to_owned()).spawn(move || {
            runtime.block_on(async move {
                while let Some(batch) = batches.recv().await {
                    for job in batch {
                        tokio::spawn(counted(job));
                    }
                }
            });
            // Calls still running are cancelled.
            runtime.shutdown_timeout(Duration::from_millis(500));
        })
    });
    spawned.map_err(|e| format!("thread: {e}"))
}

thread_local! {
    /// Calls running on this runtime thread. Not tokio's count of live
    /// tasks: each pooled connection has a task of its own, busy or idle.
    static IN_FLIGHT: Cell<usize> = const { Cell::new(0) };
}

/// From this many calls in flight, the runtime thread waits
/// `COALESCE_FOR` before it sleeps on its sockets.
const COALESCE_FROM: usize = 128;
const COALESCE_FOR: Duration = Duration::from_millis(2);

/// Under load, lets answers gather before the runtime thread waits for
/// them, so that one wake-up reads several and hands them to the nginx
/// thread with one eventfd write. Over HTTP/1.1 each answer comes on its
/// own socket: at a few thousand calls a second on two cores, a wake-up of
/// each thread per answer cost more than the calls themselves. At low load
/// it does nothing, so a lone call is never delayed.
fn coalesce_wake_ups() {
    if IN_FLIGHT.get() >= COALESCE_FROM {
        std::thread::sleep(COALESCE_FOR);
    }
}

/// `job`, counted in `IN_FLIGHT` while it runs or waits.
async fn counted(job: Job) {
    struct Running;
    impl Drop for Running {
        fn drop(&mut self) {
            IN_FLIGHT.set(IN_FLIGHT.get() - 1);
        }
    }
    IN_FLIGHT.set(IN_FLIGHT.get() + 1);
    let _running = Running;
    job.await
}

/// Runs `start_thread` with every signal blocked in the calling thread, so
/// that a thread it starts blocks them all from its first instruction; the
/// caller's mask is restored after.
fn with_signals_blocked<T>(start_thread: impl FnOnce() -> T) -> T {
    // SAFETY: sigfillset fills the set it is given; pthread_sigmask changes
    // only the calling thread's mask, and `old` receives the mask it had,
    // which is set back right after.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let started = start_thread();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        started
    }
}

/// Runs a call; a panic ends it with the panic's message (unit-tested in
/// esper-protocol, which knows no nginx).
pub use esper_protocol::unwind::catching;

/// What a worker that made `calls` calls says of its connections to Esper
/// as it exits: once per worker and reload.
pub fn report(calls: u64) -> String {
    let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    let (connections, full, resumed) =
        (load(&HANDSHAKES.connections), load(&HANDSHAKES.full), load(&HANDSHAKES.resumed));
    let per_100k = |n: u64| (n * 100_000).checked_div(calls).unwrap_or(0);
    format!(
        "esper: {calls} calls to Esper from this worker over {connections} new connections; \
         {full} full and {resumed} resumed TLS handshakes ({} and {} per 100,000 calls)",
        per_100k(full),
        per_100k(resumed)
    )
}
