//! The HTTP/1.1 connections to one Esper origin.
//!
//! A pooled HTTP/1.1 connection serves one call at a time and a new one is
//! opened only when none is idle, so a worker never holds more connections to
//! Esper than it had calls in flight at once. The most recently used idle
//! connection is taken first, so the ones a smaller load no longer needs stay
//! unused and are closed after a few seconds; only when no call is in
//! progress is one kept longer, for the next call. Everything here runs on the
//! worker's runtime thread.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use esper_protocol::answer::contract::MAX_HEAD_BYTES;
use esper_protocol::Failure;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use crate::stream::Unvectored;
use crate::transport::{self, lock, Body};

/// When no call is in progress, the most recently used idle HTTP/1.1
/// connection is closed after this long unused (a quiet site keeps one
/// connection for its next call) ...
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// ... and every other idle one after this long: a burst's surplus.
const SURPLUS_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the idle connections are looked at while there are some.
const TRIM_EVERY: Duration = Duration::from_secs(1);

pub type Sender = http1::SendRequest<Body>;

/// The idle HTTP/1.1 connections, least recently used first.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    /// Whether a task closes the connections idle too long.
    trimming: AtomicBool,
    /// Calls in progress.
    calls: AtomicUsize,
}

/// Counts a call in progress on its pool while it lives.
pub struct InProgress(Arc<Pool>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

impl Pool {
    pub fn in_progress(self: &Arc<Self>) -> InProgress {
        self.calls.fetch_add(1, Ordering::Relaxed);
        InProgress(self.clone())
    }

    /// The most recently used idle connection, once it is ready for a
    /// request (its connection task may not have finished the last answer
    /// yet); one that Esper closed is dropped and the next one tried.
    pub async fn take(&self) -> Option<Sender> {
        loop {
            let mut sender = lock(&self.idle).pop()?.sender;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    pub fn put(self: &Arc<Self>, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let since = Instant::now();
        lock(&self.idle).push(Idle { sender, since });
        if !self.trimming.swap(true, Ordering::Relaxed) {
            tokio::spawn(self.clone().trim());
        }
    }

    /// Closes idle connections as they time out, until there are none.
    async fn trim(self: Arc<Self>) {
        loop {
            tokio::time::sleep(TRIM_EVERY).await;
            let mut idle = lock(&self.idle);
            let now = Instant::now();
            let keep_last = self.calls.load(Ordering::Relaxed) == 0;
            let count = idle.len();
            let expired = idle
                .iter()
                .enumerate()
                .take_while(|(i, c)| {
                    let timeout = if keep_last && i + 1 == count {
                        IDLE_TIMEOUT
                    } else {
                        SURPLUS_IDLE_TIMEOUT
                    };
                    now.duration_since(c.since) >= timeout
                })
                .count();
            idle.drain(..expired);
            idle.retain(|c| !c.sender.is_closed());
            if idle.is_empty() {
                // The runtime has one thread: no `put` runs in between.
                self.trimming.store(false, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// HTTP/1.1 on a new connection. The read buffer, and with it the largest
/// answer head, is bounded by [`MAX_HEAD_BYTES`].
pub async fn handshake(io: Unvectored) -> Result<Sender, Failure> {
    let (sender, connection) = http1::Builder::new()
        .max_buf_size(MAX_HEAD_BYTES)
        .handshake(TokioIo::new(io))
        .await
        .map_err(transport::failure)?;
    tokio::spawn(connection);
    Ok(sender)
}
