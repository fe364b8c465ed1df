//! Connections to one Esper origin (scheme, host and port) for one client
//! profile: a pool of HTTP/1.1 connections, or one multiplexed HTTP/2
//! connection, over TCP or TLS.
//!
//! A pooled HTTP/1.1 connection serves one call at a time and a new one is
//! opened only when none is idle, so a worker never holds more connections to
//! Esper than it had calls in flight at once. The most recently used idle
//! connection is taken first, so the ones a smaller load no longer needs stay
//! unused and are closed after a few seconds; only when no call is in
//! progress is one kept longer, for the next call. Everything here runs on the
//! worker's runtime thread.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use esper_protocol::answer::contract::MAX_ANSWER_BYTES;
use esper_protocol::Failure;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{HeaderMap, Method, Request, Response, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::conf::ClientProfile;

/// When no call is in progress, the most recently used idle HTTP/1.1
/// connection is closed after this long unused (a quiet site keeps one
/// connection for its next call) ...
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// ... and every other idle one after this long: a burst's surplus.
const SURPLUS_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the idle connections are looked at while there are some.
const TRIM_EVERY: Duration = Duration::from_secs(1);
/// An HTTP/2 connection is pinged after this long without a frame from
/// Esper, and closed when the ping is not answered in time: one a middlebox
/// dropped without a word is found out, rather than each call waiting for
/// its deadline on it.
const HTTP2_PING_AFTER: Duration = Duration::from_secs(10);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(5);
const API_KEY_HEADER: &str = "x-esper-api-key";
const USER_AGENT_VALUE: &str = concat!("ngx_http_esper_module/", env!("CARGO_PKG_VERSION"));

type Body = Full<Bytes>;

/// What a call reads of Esper's HTTP answer.
pub struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

pub struct Origin {
    host: Host,
    port: u16,
    /// `Host` of HTTP/1.1 requests (HTTP/2 takes `:authority` from the URI).
    authority: HeaderValue,
    /// The request targets of the two calls: origin-form for HTTP/1.1,
    /// absolute for HTTP/2.
    pub decision_uri: Uri,
    pub verify_uri: Uri,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connections: Connections,
}

enum Host {
    Name(String),
    Ip(IpAddr),
}

enum Connections {
    Http1 { idle: Arc<Pool> },
    Http2 { shared: Mutex<Option<http2::SendRequest<Body>>>, connecting: tokio::sync::Mutex<()> },
}

/// The idle HTTP/1.1 connections, least recently used first.
#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<Idle>>,
    /// Whether a task closes the connections idle too long.
    trimming: AtomicBool,
    /// Calls in progress.
    calls: AtomicUsize,
}

/// Counts a call in progress on its pool while it lives.
struct InProgress<'a>(&'a AtomicUsize);

impl<'a> InProgress<'a> {
    fn new(calls: &'a AtomicUsize) -> InProgress<'a> {
        calls.fetch_add(1, Ordering::Relaxed);
        InProgress(calls)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

/// The data behind `mutex`, also after a panic elsewhere left it poisoned
/// (the data stays consistent: every change is one push, pop or drain).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    /// The most recently used idle connection, once it is ready for a
    /// request (its connection task may not have finished the last answer
    /// yet); one that Esper closed is dropped and the next one tried.
    async fn take(&self) -> Option<http1::SendRequest<Body>> {
        loop {
            let mut sender = lock(&self.idle).pop()?.sender;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn put(self: &Arc<Self>, sender: http1::SendRequest<Body>) {
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

impl Origin {
    /// The origin of `decision_url` and `verify_url` (one `esper_api_url`).
    pub fn new(
        decision_url: &url::Url,
        verify_url: &url::Url,
        profile: &ClientProfile,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Origin, String> {
        let ip = |ip: IpAddr| (Host::Ip(ip), ServerName::IpAddress(ip.into()));
        let (host, server_name) = match decision_url.host() {
            Some(url::Host::Domain(name)) => (
                Host::Name(name.to_owned()),
                ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?,
            ),
            Some(url::Host::Ipv4(v4)) => ip(v4.into()),
            Some(url::Host::Ipv6(v6)) => ip(v6.into()),
            None => return Err(format!("no host in \"{decision_url}\"")),
        };
        let port = decision_url.port_or_known_default().ok_or("no port")?;
        let authority = &decision_url[url::Position::BeforeHost..url::Position::AfterPort];
        let uri = |url: &url::Url| {
            let target = if profile.http2 {
                format!("{}://{authority}{}", url.scheme(), &url[url::Position::BeforePath..])
            } else {
                url[url::Position::BeforePath..].to_owned()
            };
            Uri::try_from(target).map_err(|e| e.to_string())
        };
        Ok(Origin {
            host,
            port,
            authority: HeaderValue::from_str(authority).map_err(|e| e.to_string())?,
            decision_uri: uri(decision_url)?,
            verify_uri: uri(verify_url)?,
            tls: tls.map(|config| (TlsConnector::from(config), server_name)),
            connections: if profile.http2 {
                Connections::Http2 {
                    shared: Mutex::new(None),
                    connecting: tokio::sync::Mutex::new(()),
                }
            } else {
                Connections::Http1 { idle: Arc::default() }
            },
        })
    }

    /// POSTs `body` to `uri` and reads the answer, up to [`MAX_ANSWER_BYTES`].
    ///
    /// A connection that was open before the call may have been closed by
    /// Esper while idle: when it fails before any answer, the call is sent
    /// once more on a new connection (its `idempotency_key` is the same).
    pub async fn post(
        &self,
        uri: &Uri,
        api_key: &HeaderValue,
        body: Vec<u8>,
    ) -> Result<RawResponse, Failure> {
        let body = Bytes::from(body);
        let request = || {
            let mut request = Request::new(Full::new(body.clone()));
            *request.method_mut() = Method::POST;
            *request.uri_mut() = uri.clone();
            let headers = request.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(API_KEY_HEADER, api_key.clone());
            headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
            if let Connections::Http1 { .. } = self.connections {
                headers.insert(HOST, self.authority.clone());
            }
            request
        };
        match &self.connections {
            Connections::Http1 { idle } => {
                let _counted = InProgress::new(&idle.calls);
                if let Some(sender) = idle.take().await {
                    if let Ok(answer) = exchange_http1(idle, sender, request()).await {
                        return answer;
                    }
                }
                let sender = self.connect_http1().await?;
                exchange_http1(idle, sender, request()).await.unwrap_or_else(|e| Err(transport(e)))
            }
            Connections::Http2 { shared, connecting } => {
                let (mut sender, reused) = self.http2_sender(shared, connecting).await?;
                // As for HTTP/1.1: a connection that was open already and
                // fails before any answer (closed, or going away) is given
                // up, and the call is sent once more on a new one.
                let response = match sender.send_request(request()).await {
                    Err(_) if reused => {
                        // Calls already on it keep their own handle. Should
                        // another call have replaced it meanwhile, that
                        // costs one more new connection, only after errors.
                        *lock(shared) = None;
                        let (mut sender, _) = self.http2_sender(shared, connecting).await?;
                        sender.send_request(request()).await
                    }
                    sent => sent,
                };
                read(response.map_err(transport)?).await
            }
        }
    }

    async fn connect_http1(&self) -> Result<http1::SendRequest<Body>, Failure> {
        let io = self.connect().await?;
        let (sender, connection) = http1::handshake(io).await.map_err(transport)?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// The shared HTTP/2 connection, opened by the first call that needs it
    /// (the others wait for it) and again once it has closed; true when it
    /// was open already.
    async fn http2_sender(
        &self,
        shared: &Mutex<Option<http2::SendRequest<Body>>>,
        connecting: &tokio::sync::Mutex<()>,
    ) -> Result<(http2::SendRequest<Body>, bool), Failure> {
        let open = || lock(shared).as_ref().filter(|s| !s.is_closed()).cloned();
        if let Some(sender) = open() {
            return Ok((sender, true));
        }
        let _one_at_a_time = connecting.lock().await;
        if let Some(sender) = open() {
            return Ok((sender, true));
        }
        let io = self.connect().await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(HTTP2_PING_AFTER)
            .keep_alive_timeout(HTTP2_PING_TIMEOUT)
            .keep_alive_while_idle(true)
            // Esper's answer is read up to MAX_ANSWER_BYTES: no more is
            // let in per stream before it is read.
            .initial_stream_window_size(MAX_ANSWER_BYTES as u32)
            .handshake(io)
            .await
            .map_err(transport)?;
        tokio::spawn(connection);
        *lock(shared) = Some(sender.clone());
        Ok((sender, false))
    }

    /// A new TCP connection, with TLS for https.
    async fn connect(&self) -> Result<TokioIo<Unvectored>, Failure> {
        let tcp = match &self.host {
            Host::Ip(ip) => TcpStream::connect(SocketAddr::new(*ip, self.port)).await,
            Host::Name(name) => TcpStream::connect((name.as_str(), self.port)).await,
        }
        .and_then(|tcp| tcp.set_nodelay(true).map(|()| tcp))
        .map_err(|e| Failure::Transport(format!("connect: {e}")))?;
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| Failure::Transport(format!("TLS handshake: {e}")))?,
            ),
        };
        Ok(TokioIo::new(Unvectored(stream)))
    }
}

/// A TCP or TLS stream.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A stream that does not offer vectored writes. Without them, the HTTP/2
/// codec copies a body of up to 1 KiB into its write buffer instead of
/// flushing it on its own, so the requests of a batch leave in one write
/// rather than one write each (and HTTP/1.1 writes head and body together
/// either way).
struct Unvectored(Box<dyn Stream>);

impl AsyncRead for Unvectored {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Unvectored {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// One call on an HTTP/1.1 connection, which goes back to the pool once its
/// answer is read; `Err` when the connection failed before any answer.
async fn exchange_http1(
    idle: &Arc<Pool>,
    mut sender: http1::SendRequest<Body>,
    request: Request<Body>,
) -> Result<Result<RawResponse, Failure>, hyper::Error> {
    let response = sender.try_send_request(request).await.map_err(|e| e.into_error())?;
    let answer = read(response).await;
    // Read to its end, the answer leaves the connection ready for the next call.
    if answer.is_ok() && !sender.is_closed() {
        idle.put(sender);
    }
    Ok(answer)
}

async fn read(response: Response<Incoming>) -> Result<RawResponse, Failure> {
    let (parts, mut body) = response.into_parts();
    // A Content-Length beyond the bound is refused before anything is read.
    let announced = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
    if announced > MAX_ANSWER_BYTES {
        return Err(Failure::TooLarge);
    }
    let mut raw = RawResponse {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: Vec::with_capacity(announced),
    };
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(transport)?.into_data() else {
            continue;
        };
        if raw.body.len() + data.len() > MAX_ANSWER_BYTES {
            return Err(Failure::TooLarge);
        }
        raw.body.extend_from_slice(&data);
    }
    Ok(raw)
}

/// The reason of a transport error, down to its root cause.
fn transport(error: hyper::Error) -> Failure {
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reason = format!("{reason}: {cause}");
        source = cause.source();
    }
    Failure::Transport(reason)
}
