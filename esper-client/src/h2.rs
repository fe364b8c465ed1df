//! The HTTP/2 connections to one Esper origin.
//!
//! A call takes a stream on the oldest connection that has one free under
//! the server's limit (SETTINGS_MAX_CONCURRENT_STREAMS, as hyper reports
//! it); when every connection is at its limit, it opens another.
//! Connections beyond the first are closed once
//! they have had no call for [`SURPLUS_IDLE_TIMEOUT`], so a worker holds at
//! most ceil(calls in flight / limit) + 1 of them, plus those a burst left
//! for a few seconds. A connection is opened by a task of its own: one
//! whose handshake ends after the call that opened it gave up still joins
//! the pool for the next calls. A connection takes no new calls once it is
//! [`MAX_CONNECTION_AGE`] old, so that DNS changes and a load balancer's
//! rebalancing reach it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use esper_protocol::answer::contract::MAX_ANSWER_BYTES;
use esper_protocol::Failure;
use hyper::body::Incoming;
use hyper::client::conn::{http2, TrySendError};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;

use crate::connect::CONNECT_TIMEOUT;
use crate::retry::NotOpened;
use crate::stream::Unvectored;
use crate::transport::{self, lock, Body, MAX_CONNECTION_AGE};

/// Streams a new HTTP/2 connection is taken to allow until the server's
/// SETTINGS say otherwise: the least RFC 9113 recommends a server allows
/// (and hyper's own assumption, so neither side waits on the other).
const ASSUMED_STREAM_LIMIT: usize = 100;
/// The largest header list hyper decodes. Larger than the answer head the
/// module reads (`MAX_HEAD_BYTES`, checked per call in `origin`) so that an
/// oversized head fails its own call only: past this bound HTTP/2 can only
/// end the whole connection (RFC 9113, section 10.5.1).
const DECODED_HEAD_BYTES: u32 = 1024 * 1024;

/// An HTTP/2 connection is pinged after this long without a frame from
/// Esper, and closed when the ping is not answered in time: one a middlebox
/// dropped without a word is found out, rather than each call waiting for
/// its deadline on it.
const PING_AFTER: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection beyond the first is closed after this long without a call.
const SURPLUS_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
const TRIM_EVERY: Duration = Duration::from_secs(1);
/// A connection takes no new calls once this many calls in a row ended
/// without an answer on it and none came for [`UNANSWERED_FOR`]: one
/// pinned to a slow backend, or dropped without a word, is left for a new
/// one rather than holding every call until its ping times out.
const UNANSWERED_TO_RETIRE: usize = 3;
const UNANSWERED_FOR: Duration = Duration::from_secs(1);

pub type Sender = http2::SendRequest<Body>;

#[derive(Clone)]
enum State {
    Connecting,
    Ready(Sender, Limit),
    Failed(NotOpened),
}

pub struct Conn {
    state: watch::Sender<State>,
    /// Takes no new calls (Esper is closing it); kept until its streams end.
    retired: AtomicBool,
    created: Instant,
    /// Streams taken by calls.
    streams: AtomicUsize,
    /// When the last call on it ended.
    idle_since: Mutex<Instant>,
    /// Calls in a row that ended without an answer, and when the last
    /// answer came (or the connection opened).
    unanswered: AtomicUsize,
    answered_at: Mutex<Instant>,
}

impl Conn {
    fn closed(&self) -> bool {
        match &*self.state.borrow() {
            State::Connecting => false,
            State::Ready(sender, _) => sender.is_closed(),
            State::Failed(_) => true,
        }
    }

    fn connecting(&self) -> bool {
        matches!(&*self.state.borrow(), State::Connecting)
    }

    /// Takes no new calls: Esper is closing it, its calls went unanswered,
    /// or it is [`MAX_CONNECTION_AGE`] old.
    fn retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed) || self.created.elapsed() >= MAX_CONNECTION_AGE
    }

    /// Whether a new call may take a stream on it.
    fn usable(&self) -> bool {
        !self.retired() && !self.closed()
    }

    /// The server's stream limit, once the connection is open (until the
    /// server's SETTINGS arrive, [`ASSUMED_STREAM_LIMIT`]).
    fn known_limit(&self) -> Option<usize> {
        match &*self.state.borrow() {
            State::Ready(_, limit) => Some(limit.get()),
            State::Connecting | State::Failed(_) => None,
        }
    }

    fn opened(&self, opened: Result<(Sender, Limit), NotOpened>) {
        // A spare connection's idle time starts once it can serve.
        *lock(&self.idle_since) = Instant::now();
        *lock(&self.answered_at) = Instant::now();
        self.state.send_replace(match opened {
            Ok((sender, limit)) => State::Ready(sender, limit),
            Err(not) => State::Failed(not),
        });
    }
}

/// A connection being opened, in the hands of its opener. Should the
/// opener end without saying how (a panic), the calls waiting for it are
/// told it failed rather than wait for their deadline.
pub struct Opening(Arc<Conn>);

impl Opening {
    /// Tells the calls waiting for this connection how its opening ended.
    pub fn opened(self, opened: Result<(Sender, Limit), NotOpened>) {
        self.0.opened(opened);
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        if self.0.connecting() {
            let failure = Failure::Transport("connection not opened".to_owned());
            self.0.opened(Err(NotOpened::failed(failure)));
        }
    }
}

/// A stream taken on a connection, given back when dropped.
pub struct Stream {
    conn: Arc<Conn>,
    /// Its request is out and no answer came yet: dropped so, the call
    /// gave up waiting on this connection.
    awaiting: bool,
}

impl Stream {
    fn new(conn: Arc<Conn>) -> Stream {
        Stream { conn, awaiting: false }
    }

    /// Sends `request` on this stream and waits for the answer's head. An
    /// answer of any kind shows the connection serves; a call dropped while
    /// waiting counts against it (see [`UNANSWERED_TO_RETIRE`]).
    pub async fn send(
        &mut self,
        sender: &mut Sender,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, TrySendError<Request<Body>>> {
        self.awaiting = true;
        let sent = sender.try_send_request(request).await;
        self.awaiting = false;
        if sent.is_ok() {
            self.conn.unanswered.store(0, Ordering::Relaxed);
            *lock(&self.conn.answered_at) = Instant::now();
        }
        sent
    }

    /// No more calls on this stream's connection.
    pub fn retire(&self) {
        self.conn.retired.store(true, Ordering::Relaxed);
    }

    /// The connection's sender, once it is open.
    pub async fn sender(&self) -> Result<Sender, NotOpened> {
        let mut state = self.conn.state.subscribe();
        let state = state.wait_for(|s| !matches!(s, State::Connecting)).await;
        match state.as_deref() {
            Ok(State::Ready(sender, _)) => Ok(sender.clone()),
            Ok(State::Failed(not)) => Err(not.clone()),
            Ok(State::Connecting) | Err(_) => {
                Err(NotOpened::failed(Failure::Transport("connection not opened".to_owned())))
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let conn = &self.conn;
        if self.awaiting {
            let unanswered = conn.unanswered.fetch_add(1, Ordering::Relaxed) + 1;
            if unanswered >= UNANSWERED_TO_RETIRE
                && lock(&conn.answered_at).elapsed() >= UNANSWERED_FOR
            {
                conn.retired.store(true, Ordering::Relaxed);
            }
        }
        if conn.streams.fetch_sub(1, Ordering::Relaxed) == 1 {
            *lock(&conn.idle_since) = Instant::now();
        }
    }
}

/// The connections, oldest first.
#[derive(Default)]
pub struct Pool {
    conns: Mutex<Vec<Arc<Conn>>>,
    trimming: AtomicBool,
}

impl Pool {
    /// A stream on the oldest connection with one free, open or opening.
    pub fn reserve(&self) -> Option<Stream> {
        let mut conns = lock(&self.conns);
        conns.retain(|c| !c.closed());
        // A connection whose server has not said its limit yet is taken to
        // have the one another connection to the same server has, else
        // ASSUMED_STREAM_LIMIT.
        let assumed =
            conns.iter().filter_map(|c| c.known_limit()).min().unwrap_or(ASSUMED_STREAM_LIMIT);
        let free = |c: &&Arc<Conn>| {
            let limit = c.known_limit().unwrap_or(assumed);
            c.usable() && c.streams.load(Ordering::Relaxed) < limit
        };
        // One still handshaking is taken only when no open one has a
        // stream free: a wedged handshake holds no call a healthy
        // connection could serve.
        let conn = conns
            .iter()
            .filter(|c| !c.connecting())
            .find(free)
            .or_else(|| conns.iter().filter(|c| c.connecting()).find(free))?;
        conn.streams.fetch_add(1, Ordering::Relaxed);
        Some(Stream::new(conn.clone()))
    }

    /// A new connection, for its opener to open (`Conn::opened`), with a
    /// stream taken on it.
    pub fn add(self: &Arc<Self>) -> (Opening, Stream) {
        let conn = Arc::new(Conn {
            state: watch::channel(State::Connecting).0,
            retired: AtomicBool::new(false),
            created: Instant::now(),
            streams: AtomicUsize::new(1),
            idle_since: Mutex::new(Instant::now()),
            unanswered: AtomicUsize::new(0),
            answered_at: Mutex::new(Instant::now()),
        });
        lock(&self.conns).push(conn.clone());
        if !self.trimming.swap(true, Ordering::Relaxed) {
            tokio::spawn(self.clone().trim());
        }
        (Opening(conn.clone()), Stream::new(conn))
    }

    /// Closes the connections beyond the first that have been idle long
    /// enough, until only one is left.
    async fn trim(self: Arc<Self>) {
        loop {
            tokio::time::sleep(TRIM_EVERY).await;
            let mut conns = lock(&self.conns);
            let now = Instant::now();
            conns.retain(|c| {
                let busy = c.streams.load(Ordering::Relaxed) > 0;
                !c.closed() && (busy || !c.retired())
            });
            let mut first = true;
            conns.retain(|c| {
                let keep = first
                    || c.connecting()
                    || c.streams.load(Ordering::Relaxed) > 0
                    || now.duration_since(*lock(&c.idle_since)) < SURPLUS_IDLE_TIMEOUT;
                first = false;
                keep
            });
            if conns.len() <= 1 {
                // The runtime has one thread: no `add` runs in between.
                self.trimming.store(false, Ordering::Relaxed);
                return;
            }
        }
    }
}

type Connection = http2::Connection<TokioIo<Unvectored>, Body, TokioExecutor>;

/// The server's SETTINGS_MAX_CONCURRENT_STREAMS, as hyper reports it: read
/// off the connection, which its own task drives (and drops once it ends,
/// so that its sender reports it closed).
#[derive(Clone)]
pub struct Limit(Arc<Mutex<Option<Connection>>>);

impl Limit {
    fn get(&self) -> usize {
        // Zero would leave no stream ever: one is the least.
        lock(&self.0).as_ref().map_or(1, |c| c.current_max_send_streams().max(1))
    }
}

/// HTTP/2 on a new connection: its sender, and the server's stream limit.
pub async fn handshake(io: Unvectored) -> Result<(Sender, Limit), Failure> {
    let handshake = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(PING_AFTER)
        .keep_alive_timeout(PING_TIMEOUT)
        .keep_alive_while_idle(true)
        // Esper's answer is read up to MAX_ANSWER_BYTES: no more is let in
        // per stream before it is read.
        .initial_stream_window_size(MAX_ANSWER_BYTES as u32)
        .initial_max_send_streams(ASSUMED_STREAM_LIMIT)
        .max_header_list_size(DECODED_HEAD_BYTES)
        .handshake(TokioIo::new(io));
    let (sender, connection) = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| Failure::Transport("HTTP/2 handshake: no progress".to_owned()))?
        .map_err(transport::failure)?;
    let connection = Arc::new(Mutex::new(Some(connection)));
    let driven = connection.clone();
    // The runtime has one thread: the lock is never contended.
    tokio::spawn(std::future::poll_fn(move |cx| {
        let mut connection = lock(&driven);
        let Some(running) = connection.as_mut() else { return Poll::Ready(()) };
        let polled = Pin::new(running).poll(cx);
        if polled.is_ready() {
            *connection = None;
        }
        polled.map(|_| ())
    }));
    Ok((sender, Limit(connection)))
}
