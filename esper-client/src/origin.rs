//! Calls to one Esper origin (scheme, host and port) for one client profile:
//! which HTTP version carries them (`esper_http2`), their attempts (when
//! one is sent again is `retry`'s), and how an answer is read. The
//! connections are in `h1` and `h2`, new ones are made by `connect`.
//! Everything here runs on the worker's runtime thread.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use esper_protocol::answer::contract::{MAX_ANSWER_BYTES, MAX_HEAD_BYTES};
use esper_protocol::Failure;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{HeaderMap, Method, Request, Response, Uri};
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::connect::{Connected, Connector, Host};
use crate::h1::OpeningSlot;
use crate::profile::{ClientProfile, Http2};
use crate::resolve::Resolver;
use crate::retry::{self, Attempt, NotOpened, Sent, MAX_ATTEMPTS, MAX_SWITCHES};
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
    /// The connections, shared with the tasks that open them.
    links: Opener,
}

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
            links: Opener {
                http2: profile.http2,
                connector: Arc::new(Connector::new(host, port, tls)),
                chosen: Arc::new(AtomicU8::new(chosen)),
                h1: Arc::default(),
                h2: Arc::default(),
            },
        })
    }

    /// POSTs `body` to `targets` and reads the answer, up to
    /// [`MAX_ANSWER_BYTES`]. A call is sent again only while its attempts
    /// prove that Esper never processed it (`retry`).
    pub async fn post(
        &self,
        targets: &Targets,
        api_key: &HeaderValue,
        body: Vec<u8>,
    ) -> Result<RawResponse, Failure> {
        let body = Bytes::from(body);
        let (mut attempts, mut switches) = (0, 0);
        loop {
            let failure = match self.attempt(targets, api_key, &body).await {
                Attempt::Done(answer) => return answer,
                Attempt::Unsent(failure) => {
                    attempts += 1;
                    failure
                }
                Attempt::Switched(failure) => {
                    switches += 1;
                    failure
                }
            };
            if attempts >= MAX_ATTEMPTS || switches > MAX_SWITCHES {
                return Err(failure);
            }
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
        if self.links.chosen.load(Ordering::Relaxed) == CHOSEN_H1 {
            request.headers_mut().insert(HOST, self.authority.clone());
            *request.uri_mut() = targets.h1.clone();
            self.attempt_http1(request).await
        } else {
            *request.uri_mut() = targets.h2.clone();
            self.attempt_http2(request).await
        }
    }

    async fn attempt_http1(&self, request: Request<Body>) -> Attempt {
        let _counted = self.links.h1.in_progress();
        let mut conn = match self.links.h1.take().await {
            Some(conn) => conn,
            None => match self.connection_http1().await {
                Ok(conn) => conn,
                Err(not) => return not.into(),
            },
        };
        let response = match conn.sender.try_send_request(request).await {
            Ok(response) => response,
            Err(error) => return retry::failed_send(error, Sent::Http1 { reused: conn.reused }),
        };
        let answer = read(response).await;
        // Read to its end, the answer leaves the connection ready for the next call.
        if answer.is_ok() {
            conn.reused = true;
            self.links.h1.put(conn);
        }
        Attempt::Done(answer)
    }

    async fn attempt_http2(&self, request: Request<Body>) -> Attempt {
        let mut stream = match self.links.h2.reserve() {
            Some(stream) => stream,
            None => {
                let (opening, stream) = self.links.h2.add();
                tokio::spawn(self.links.clone().open_http2(opening));
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
                // A connection that took no request, that Esper is closing
                // (GOAWAY), or that ended, takes no more calls.
                if retry::connection_ending(&error) {
                    stream.retire();
                }
                return retry::failed_send(error, Sent::Http2);
            }
        };
        // The stream is held until the answer is read.
        let answer = read(response).await;
        drop(stream);
        Attempt::Done(answer)
    }

    /// The first HTTP/1.1 connection to become free, a new one opened for
    /// this call or one another call gives back meanwhile. Connections are
    /// opened by a task of their own: should the call give up first, the
    /// connection goes to the pool.
    async fn connection_http1(&self) -> Result<h1::Conn, NotOpened> {
        let waiting = self.links.h1.wait();
        if let Some(slot) = waiting.open {
            tokio::spawn(self.links.clone().open_http1(slot));
        }
        let not_opened = || NotOpened::failed(Failure::Transport("not opened".to_owned()));
        waiting.connection.await.unwrap_or_else(|_| Err(not_opened()))
    }
}

/// An origin's connections and how new ones are made: what a task that
/// opens a connection needs of its origin.
#[derive(Clone)]
struct Opener {
    http2: Http2,
    connector: Arc<Connector>,
    /// Over https with `esper_http2 auto`: the server's last ALPN choice.
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

    /// Opens HTTP/1.1 connections for the calls waiting, one at a time,
    /// while more calls wait than are being opened. Should the server
    /// choose HTTP/2 by ALPN, the connection goes to the HTTP/2 pool and the
    /// calls waiting are sent there, having sent nothing here.
    async fn open_http1(self, _slot: OpeningSlot) {
        loop {
            match self.connector.connect().await {
                Ok(connected) if self.speaks_http2(&connected) => {
                    let (opening, stream) = self.h2.add();
                    drop(stream);
                    self.h1.fail(NotOpened::switched("the server chose HTTP/2"));
                    opening.opened(h2::handshake(connected.io).await.map_err(NotOpened::failed));
                    return;
                }
                Ok(connected) => match h1::handshake(connected.io).await {
                    Ok(sender) => self.h1.put(h1::Conn::new(sender)),
                    Err(failure) => self.h1.fail(NotOpened::failed(failure)),
                },
                Err(failure) => self.h1.fail(NotOpened::failed(failure)),
            }
            if !self.h1.more_needed() {
                return;
            }
        }
    }

    /// Opens a connection for the HTTP/2 calls waiting on it. Should the
    /// server choose HTTP/1.1 by ALPN (`auto`), the connection goes to the
    /// HTTP/1.1 pool and those calls are sent there, having sent nothing
    /// here. Nothing of those calls was written when opening fails, so
    /// they are sent again (to a new connection).
    async fn open_http2(self, opening: h2::Opening) {
        let opened = match self.connector.connect().await {
            Ok(connected) if self.speaks_http2(&connected) => {
                h2::handshake(connected.io).await.map_err(NotOpened::failed)
            }
            Ok(connected) => {
                if let Ok(sender) = h1::handshake(connected.io).await {
                    self.h1.put(h1::Conn::new(sender));
                }
                Err(NotOpened::switched("the server chose HTTP/1.1"))
            }
            Err(failure) => Err(NotOpened::failed(failure)),
        };
        opening.opened(opened);
    }
}

async fn read(response: Response<Incoming>) -> Result<RawResponse, Failure> {
    let (parts, mut body) = response.into_parts();
    // HTTP/2's decoder lets in more (`h2::DECODED_HEAD_BYTES`), so that a
    // head over the bound fails this call only; counted as HTTP/2 counts
    // a header list (RFC 9113, section 6.5.2).
    let head: usize = parts.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 32).sum();
    if head > MAX_HEAD_BYTES {
        return Err(Failure::TooLarge);
    }
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
