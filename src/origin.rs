//! Calls to one Esper origin (scheme, host and port) for one client profile:
//! which HTTP version carries them (`esper_http2`), when one is sent again,
//! and how an answer is read. The connections are in `h1` and `h2`, new
//! ones are made by `connect`. Everything here runs on the worker's runtime
//! thread.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use esper_protocol::answer::contract::MAX_ANSWER_BYTES;
use esper_protocol::Failure;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{HeaderMap, Method, Request, Response, Uri};
use rustls::pki_types::ServerName;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

use crate::conf::{ClientProfile, Http2};
use crate::connect::{Connected, Connector, Host};
use crate::h2::NotOpened;
use crate::resolve::Resolver;
use crate::transport::{self, Body};
use crate::{h1, h2};

const API_KEY_HEADER: &str = "x-esper-api-key";
const USER_AGENT_VALUE: &str = concat!("ngx_http_esper_module/", env!("CARGO_PKG_VERSION"));
const ALPN_H2: &[u8] = b"h2";

/// What a call reads of Esper's HTTP answer.
pub struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// The request target of one of the two calls in each HTTP version:
/// origin-form for HTTP/1.1, absolute for HTTP/2.
pub struct Targets {
    h1: Uri,
    h2: Uri,
}

/// The HTTP version that `esper_http2 auto` found the server to choose.
const CHOSEN_UNKNOWN: u8 = 0;
const CHOSEN_H1: u8 = 1;
const CHOSEN_H2: u8 = 2;

pub struct Origin {
    /// `Host` of HTTP/1.1 requests (HTTP/2 takes `:authority` from the URI).
    authority: HeaderValue,
    pub decision: Targets,
    pub verify: Targets,
    http2: Http2,
    connector: Arc<Connector>,
    /// Over https with `esper_http2 auto`: the server's last ALPN choice.
    chosen: Arc<AtomicU8>,
    h1: Arc<h1::Pool>,
    h2: Arc<h2::Pool>,
}

/// How one attempt of a call ended: `Err` when it proves Esper never
/// received the call, so that it may be sent once more.
type Attempt = Result<Result<RawResponse, Failure>, Failure>;

impl Origin {
    /// The origin of `decision_url` and `verify_url` (one `esper_api_url`).
    pub fn new(
        decision_url: &url::Url,
        verify_url: &url::Url,
        profile: &ClientProfile,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Origin, String> {
        let port = decision_url.port_or_known_default().ok_or("no port")?;
        let ip = |ip: IpAddr| (Host::Ip(ip), ServerName::IpAddress(ip.into()));
        let (host, server_name) = match decision_url.host() {
            Some(url::Host::Domain(name)) => (
                Host::Name(Resolver::new(name.to_owned(), port)),
                ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?,
            ),
            Some(url::Host::Ipv4(v4)) => ip(v4.into()),
            Some(url::Host::Ipv6(v6)) => ip(v6.into()),
            None => return Err(format!("no host in \"{decision_url}\"")),
        };
        let authority = &decision_url[url::Position::BeforeHost..url::Position::AfterPort];
        let targets = |url: &url::Url| -> Result<Targets, String> {
            let path = &url[url::Position::BeforePath..];
            let absolute = format!("{}://{authority}{path}", url.scheme());
            Ok(Targets {
                h1: Uri::try_from(path).map_err(|e| e.to_string())?,
                h2: Uri::try_from(absolute).map_err(|e| e.to_string())?,
            })
        };
        let tls = tls.map(|config| (TlsConnector::from(config), server_name));
        let chosen = match (profile.http2, tls.is_some()) {
            (Http2::Auto, true) => CHOSEN_UNKNOWN,
            (Http2::On, _) => CHOSEN_H2,
            (Http2::Auto, false) | (Http2::Off, _) => CHOSEN_H1,
        };
        Ok(Origin {
            authority: HeaderValue::from_str(authority).map_err(|e| e.to_string())?,
            decision: targets(decision_url)?,
            verify: targets(verify_url)?,
            http2: profile.http2,
            connector: Arc::new(Connector::new(host, port, tls)),
            chosen: Arc::new(AtomicU8::new(chosen)),
            h1: Arc::default(),
            h2: Arc::default(),
        })
    }

    /// POSTs `body` to `targets` and reads the answer, up to
    /// [`MAX_ANSWER_BYTES`]. A call is sent once more only when its first
    /// attempt proves that Esper never received it (see `Attempt`).
    pub async fn post(
        &self,
        targets: &Targets,
        api_key: &HeaderValue,
        body: Vec<u8>,
    ) -> Result<RawResponse, Failure> {
        let body = Bytes::from(body);
        match self.attempt(targets, api_key, &body).await {
            Ok(answer) => answer,
            Err(_unsent) => self.attempt(targets, api_key, &body).await.unwrap_or_else(Err),
        }
    }

    async fn attempt(&self, targets: &Targets, api_key: &HeaderValue, body: &Bytes) -> Attempt {
        let mut request = Request::new(Full::new(body.clone()));
        *request.method_mut() = Method::POST;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(API_KEY_HEADER, api_key.clone());
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        // Until `auto` knows the server's choice, calls go the HTTP/2 way:
        // a burst then opens connections by the stream limit, not one each.
        if self.chosen.load(Ordering::Relaxed) == CHOSEN_H1 {
            request.headers_mut().insert(HOST, self.authority.clone());
            *request.uri_mut() = targets.h1.clone();
            self.attempt_http1(request).await
        } else {
            *request.uri_mut() = targets.h2.clone();
            self.attempt_http2(request).await
        }
    }

    async fn attempt_http1(&self, request: Request<Body>) -> Attempt {
        let _counted = self.h1.in_progress();
        let mut sender = match self.h1.take().await {
            Some(sender) => sender,
            None => match self.open_http1().await {
                Ok(sender) => sender,
                Err(not) => return not.into(),
            },
        };
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            Err(error) => return unsent_or_failed(error, |_| false),
        };
        let answer = read(response).await;
        // Read to its end, the answer leaves the connection ready for the next call.
        if answer.is_ok() {
            self.h1.put(sender);
        }
        Ok(answer)
    }

    async fn attempt_http2(&self, request: Request<Body>) -> Attempt {
        let mut stream = match self.h2.reserve() {
            Some(stream) => stream,
            None => {
                let (conn, stream) = self.h2.add();
                tokio::spawn(self.opener().open_http2(conn));
                stream
            }
        };
        let mut sender = match stream.sender().await {
            Ok(sender) => sender,
            Err(not) => return not.into(),
        };
        let response = match stream.send(&mut sender, request).await {
            Ok(response) => response,
            Err(error) => {
                // A connection that took no request, or that Esper is
                // closing (GOAWAY), takes no more calls; its streams finish.
                if error.message().is_some() || went_away(error.error()) {
                    stream.retire();
                }
                return unsent_or_failed(error, never_processed);
            }
        };
        // The stream is held until the answer is read.
        let answer = read(response).await;
        drop(stream);
        Ok(answer)
    }

    /// A new HTTP/1.1 connection, opened by a task of its own: should the
    /// call give up first, the connection goes to the pool.
    async fn open_http1(&self) -> Result<h1::Sender, NotOpened> {
        let (tx, rx) = oneshot::channel();
        tokio::spawn(self.opener().open_http1(tx));
        rx.await.unwrap_or_else(|_| Err(failed(Failure::Transport("not opened".to_owned()))))
    }

    fn opener(&self) -> Opener {
        Opener {
            http2: self.http2,
            connector: self.connector.clone(),
            chosen: self.chosen.clone(),
            h1: self.h1.clone(),
            h2: self.h2.clone(),
        }
    }
}

/// What a task that opens a connection needs of its origin.
struct Opener {
    http2: Http2,
    connector: Arc<Connector>,
    chosen: Arc<AtomicU8>,
    h1: Arc<h1::Pool>,
    h2: Arc<h2::Pool>,
}

impl Opener {
    /// Whether a new connection speaks HTTP/2: the server's ALPN choice
    /// over https; with `esper_http2 on` over http, prior knowledge. The
    /// choice is remembered for the next calls.
    fn speaks_http2(&self, connected: &Connected) -> bool {
        let h2 = match (self.http2, &connected.alpn) {
            (Http2::Off, _) => false,
            (Http2::On, _) => true,
            (Http2::Auto, alpn) => alpn.as_deref() == Some(ALPN_H2),
        };
        if self.http2 == Http2::Auto && self.connector.tls.is_some() {
            self.chosen.store(if h2 { CHOSEN_H2 } else { CHOSEN_H1 }, Ordering::Relaxed);
        }
        h2
    }

    /// Opens a connection for an HTTP/1.1 call. Should the server choose
    /// HTTP/2 by ALPN, the connection goes to the HTTP/2 pool and the call
    /// is sent there, having sent nothing here.
    async fn open_http1(self, tx: oneshot::Sender<Result<h1::Sender, NotOpened>>) {
        let opened = match self.connector.connect().await {
            Ok(connected) if self.speaks_http2(&connected) => {
                let (conn, stream) = self.h2.add();
                conn.opened(h2::handshake(connected.io).await.map_err(failed));
                drop(stream);
                let _ = tx.send(Err(NotOpened {
                    failure: Failure::Transport("the server chose HTTP/2".to_owned()),
                    unsent: true,
                }));
                return;
            }
            Ok(connected) => h1::handshake(connected.io).await.map_err(failed),
            Err(failure) => Err(failed(failure)),
        };
        if let Err(Ok(sender)) = tx.send(opened) {
            self.h1.put(sender);
        }
    }

    /// Opens `conn` for the HTTP/2 calls waiting on it. Should the server
    /// choose HTTP/1.1 by ALPN (`auto`), the connection goes to the HTTP/1.1
    /// pool and those calls are sent there, having sent nothing here.
    /// Nothing of those calls was written when opening fails, so they are
    /// sent again (to a new connection).
    async fn open_http2(self, conn: Arc<h2::Conn>) {
        let opened = match self.connector.connect().await {
            Ok(connected) if self.speaks_http2(&connected) => {
                h2::handshake(connected.io).await.map_err(unsent)
            }
            Ok(connected) => {
                if let Ok(sender) = h1::handshake(connected.io).await {
                    self.h1.put(sender);
                }
                Err(NotOpened {
                    failure: Failure::Transport("the server chose HTTP/1.1".to_owned()),
                    unsent: true,
                })
            }
            Err(failure) => Err(unsent(failure)),
        };
        conn.opened(opened);
    }
}

fn failed(failure: Failure) -> NotOpened {
    NotOpened { failure, unsent: false }
}

fn unsent(failure: Failure) -> NotOpened {
    NotOpened { failure, unsent: true }
}

impl From<NotOpened> for Attempt {
    fn from(not: NotOpened) -> Attempt {
        if not.unsent {
            Err(not.failure)
        } else {
            Ok(Err(not.failure))
        }
    }
}

/// A failed send: `Err` (it may be sent again) when the request was never
/// written, or `unsent` says Esper never processed it.
fn unsent_or_failed(
    mut error: TrySendError<Request<Body>>,
    unsent: impl Fn(&hyper::Error) -> bool,
) -> Attempt {
    let never_written = error.take_message().is_some();
    let error = error.into_error();
    let again = never_written || unsent(&error);
    let failure = transport::failure(error);
    if again {
        Err(failure)
    } else {
        Ok(Err(failure))
    }
}

/// The HTTP/2 error under a hyper error, if any.
fn h2_error(error: &hyper::Error) -> Option<&::h2::Error> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<::h2::Error>() {
            return Some(h2);
        }
        source = cause.source();
    }
    None
}

/// Whether Esper's GOAWAY ended the stream: it was above the last stream id
/// Esper said it would process, or opened after the GOAWAY.
fn went_away(error: &hyper::Error) -> bool {
    h2_error(error).is_some_and(|h2| h2.is_go_away() && h2.is_remote())
}

/// Whether an HTTP/2 error proves that Esper did not process the stream:
/// refused (REFUSED_STREAM), or left out by its GOAWAY (RFC 9113, section
/// 8.7). A stream reset for another reason, or a connection that failed,
/// may have been processed.
fn never_processed(error: &hyper::Error) -> bool {
    let refused = |h2: &::h2::Error| {
        h2.is_remote() && h2.is_reset() && h2.reason() == Some(::h2::Reason::REFUSED_STREAM)
    };
    went_away(error) || h2_error(error).is_some_and(refused)
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
        let Ok(data) = frame.map_err(transport::failure)?.into_data() else {
            continue;
        };
        if raw.body.len() + data.len() > MAX_ANSWER_BYTES {
            return Err(Failure::TooLarge);
        }
        raw.body.extend_from_slice(&data);
    }
    Ok(raw)
}
