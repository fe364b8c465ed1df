//! The HTTP/1.1 connections to one Esper origin.
//!
//! A pooled HTTP/1.1 connection serves one call at a time. A call takes the
//! most recently used idle connection; when none is idle it waits for the
//! first connection to become free: one another call gives back, or one
//! newly opened. At most [`MAX_OPENING`] connections are being opened at
//! once per origin, and never more than there are calls waiting, so a
//! worker never holds more connections to Esper than it had calls in
//! flight at once, and a burst against an unreachable Esper holds a few
//! sockets, not one per call. The ones a smaller load no longer needs stay
//! unused and are closed after a few seconds; only when no call is in
//! progress is one kept longer, for the next call. A connection takes no
//! new call once it is [`MAX_CONNECTION_AGE`] old. Everything here runs on
//! the worker's runtime thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use esper_protocol::answer::contract::MAX_HEAD_BYTES;
use esper_protocol::Failure;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use crate::retry::NotOpened;
use crate::stream::Unvectored;
use crate::transport::{self, lock, Body, MAX_CONNECTION_AGE};

/// When no call is in progress, the most recently used idle HTTP/1.1
/// connection is closed after this long unused (a quiet site keeps one
/// connection for its next call) ...
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// ... and every other idle one after this long: a burst's surplus.
const SURPLUS_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the idle connections are looked at while there are some.
const TRIM_EVERY: Duration = Duration::from_secs(1);
/// Connections being opened at once, per origin.
pub const MAX_OPENING: usize = 32;

pub type Sender = http1::SendRequest<Body>;

/// A connection, ready for a request.
pub struct Conn {
    pub sender: Sender,
    created: Instant,
    /// It served a call or sat idle: Esper may be closing it as idle.
    pub reused: bool,
}

impl Conn {
    pub fn new(sender: Sender) -> Conn {
        Conn { sender, created: Instant::now(), reused: false }
    }

    fn current(&self) -> bool {
        !self.sender.is_closed() && self.created.elapsed() < MAX_CONNECTION_AGE
    }
}

type Waiter = oneshot::Sender<Result<Conn, NotOpened>>;

/// The idle HTTP/1.1 connections, least recently used first, and the calls
/// waiting for one, first come first.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    waiting: Mutex<VecDeque<Waiter>>,
    /// Connections being opened.
    opening: AtomicUsize,
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

/// Counts a connection being opened while it lives (also should its
/// opener panic).
pub struct OpeningSlot(Arc<Pool>);

impl Drop for OpeningSlot {
    fn drop(&mut self) {
        self.0.opening.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// A call's place in line for a connection.
pub struct Waiting {
    pub connection: oneshot::Receiver<Result<Conn, NotOpened>>,
    /// A slot to open a new connection with, when the call should.
    pub open: Option<OpeningSlot>,
}

impl Pool {
    pub fn in_progress(self: &Arc<Self>) -> InProgress {
        self.calls.fetch_add(1, Ordering::Relaxed);
        InProgress(self.clone())
    }

    /// The most recently used idle connection, once it is ready for a
    /// request (its connection task may not have finished the last answer
    /// yet); one that Esper closed, or too old, is dropped and the next one
    /// tried.
    pub async fn take(&self) -> Option<Conn> {
        loop {
            let mut conn = lock(&self.idle).pop()?.conn;
            if conn.current() && conn.sender.ready().await.is_ok() {
                return Some(conn);
            }
        }
    }

    /// Waits in line for the next connection free; with a slot to open one
    /// when fewer are being opened than there are calls in line.
    pub fn wait(self: &Arc<Self>) -> Waiting {
        let (tx, rx) = oneshot::channel();
        let waiting = {
            let mut waiting = lock(&self.waiting);
            waiting.retain(|w| !w.is_closed());
            waiting.push_back(tx);
            waiting.len()
        };
        Waiting { connection: rx, open: self.opening_slot(waiting) }
    }

    /// A slot to open one more connection, while fewer than `needed` and
    /// [`MAX_OPENING`] are being opened.
    fn opening_slot(self: &Arc<Self>, needed: usize) -> Option<OpeningSlot> {
        let cap = needed.min(MAX_OPENING);
        let taken = self
            .opening
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < cap).then_some(n + 1));
        taken.ok().map(|_| OpeningSlot(self.clone()))
    }

    /// Whether the opener holding a slot should open another connection
    /// once this one is handed over: more calls wait than are being opened.
    pub fn more_needed(&self) -> bool {
        let mut waiting = lock(&self.waiting);
        waiting.retain(|w| !w.is_closed());
        waiting.len() > self.opening.load(Ordering::Relaxed).saturating_sub(1)
    }

    /// Gives `conn` to the first call waiting, else keeps it idle.
    pub fn put(self: &Arc<Self>, mut conn: Conn) {
        if !conn.current() {
            return;
        }
        loop {
            let Some(waiter) = lock(&self.waiting).pop_front() else { break };
            match waiter.send(Ok(conn)) {
                Ok(()) => return,
                Err(Ok(back)) => conn = back,
                Err(Err(_)) => unreachable!("sent a connection"),
            }
        }
        let since = Instant::now();
        // Idle, it may be closed by Esper at any time.
        conn.reused = true;
        lock(&self.idle).push(Idle { conn, since });
        if !self.trimming.swap(true, Ordering::Relaxed) {
            tokio::spawn(self.clone().trim());
        }
    }

    /// Tells the first call waiting that a connection failed to open; when
    /// the server chose HTTP/2, every call waiting, as they all go there.
    pub fn fail(&self, not: NotOpened) {
        loop {
            let Some(waiter) = lock(&self.waiting).pop_front() else { return };
            if waiter.send(Err(not.clone())).is_ok() && !not.switched {
                return;
            }
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
            idle.retain(|c| c.conn.current());
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
