//! In-process fake Esper servers for the client's tests, each on a
//! loopback port of its own, and a client for them.

#![allow(dead_code)] // each test file uses some of these

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use esper_client::{client_config, ClientProfile, Http2, Origin};
use esper_protocol::Failure;
use hyper::header::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The origin of `url`, with no certificate checked over https.
pub fn origin(url: &str, http2: Http2) -> Arc<Origin> {
    let profile = ClientProfile { http2, verify: false, ca_file: None, ca_certs: None };
    let decision = url::Url::parse(url).unwrap().join("/api/v1/runtime/mitigation").unwrap();
    let verify = url::Url::parse(url).unwrap().join("/api/v1/challenge/proof/verify").unwrap();
    let tls = url.starts_with("https:").then(|| client_config(&profile).unwrap());
    Arc::new(Origin::new(&decision, &verify, &profile, tls).unwrap())
}

/// One decision call whose body is `{"n":N}`: the status and body of the
/// answer.
pub async fn call(origin: &Origin, n: usize) -> Result<(u16, String), Failure> {
    let key = HeaderValue::from_static("test-key");
    let body = format!("{{\"n\":{n}}}").into_bytes();
    // A call that hangs fails its test rather than holding the run.
    let post = origin.post(&origin.decision, &key, body);
    let answer = tokio::time::timeout(Duration::from_secs(20), post)
        .await
        .map_err(|_| Failure::Timeout)??;
    Ok((answer.status, String::from_utf8_lossy(&answer.body).into_owned()))
}

/// `count` calls at once, each with its own number; their results in order.
pub async fn burst(origin: &Arc<Origin>, count: usize) -> Vec<Result<(u16, String), Failure>> {
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..count {
        let origin = origin.clone();
        calls.spawn(async move { (n, call(&origin, n).await) });
    }
    let mut results: Vec<_> = (0..count).map(|_| Err(Failure::Timeout)).collect();
    while let Some(done) = calls.join_next().await {
        let (n, result) = done.unwrap();
        results[n] = result;
    }
    results
}

/// What a fake server saw.
#[derive(Default)]
pub struct Seen {
    pub connections: AtomicUsize,
    /// The bodies of the calls it answered, in order.
    pub answered: Mutex<Vec<String>>,
}

impl Seen {
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn answered(&self) -> Vec<String> {
        self.answered.lock().unwrap().clone()
    }
}

pub const ALLOW: &str = r#"{"action":"allow"}"#;

/// An HTTP/2 server (prior knowledge) that allows `max_streams` streams per
/// connection, answers each call after `delay`, and closes each connection
/// gracefully (GOAWAY with NO_ERROR, as nginx's `keepalive_requests` does)
/// once it has taken `requests_per_connection` calls. A call whose head
/// carries `n` in `big_head` gets an answer head of 70 KB.
pub struct H2Server {
    pub max_streams: u32,
    pub requests_per_connection: usize,
    pub delay: Duration,
    pub big_head: Vec<usize>,
}

impl H2Server {
    pub async fn start(self) -> (SocketAddr, Arc<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let server = Arc::new(self);
        let all = seen.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                all.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(server.clone().serve(tcp, all.clone()));
            }
        });
        (address, seen)
    }

    async fn serve(self: Arc<Self>, tcp: TcpStream, seen: Arc<Seen>) {
        let mut builder = h2::server::Builder::new();
        builder.max_concurrent_streams(self.max_streams);
        let Ok(mut conn) = builder.handshake::<_, Bytes>(tcp).await else { return };
        let mut taken = 0;
        while let Some(Ok((request, mut respond))) = conn.accept().await {
            taken += 1;
            if taken == self.requests_per_connection {
                conn.graceful_shutdown();
            }
            let (server, seen) = (self.clone(), seen.clone());
            tokio::spawn(async move {
                let mut body = request.into_body();
                let mut text = Vec::new();
                while let Some(Ok(data)) = body.data().await {
                    let _ = body.flow_control().release_capacity(data.len());
                    text.extend_from_slice(&data);
                }
                let text = String::from_utf8_lossy(&text).into_owned();
                tokio::time::sleep(server.delay).await;
                let mut answer = hyper::Response::builder()
                    .status(200)
                    .header("content-type", "application/json");
                let n: usize =
                    text.trim_start_matches("{\"n\":").trim_end_matches('}').parse().unwrap_or(0);
                if server.big_head.contains(&n) {
                    answer = answer.header("x-padding", "p".repeat(70_000));
                }
                seen.answered.lock().unwrap().push(text);
                if let Ok(mut stream) = respond.send_response(answer.body(()).unwrap(), false) {
                    let _ = stream.send_data(Bytes::from_static(ALLOW.as_bytes()), true);
                }
            });
        }
    }
}

/// A peer that accepts connections and never answers: what the client
/// sends is read and dropped (the calls are far smaller than a socket's
/// buffer, so a peer that does not read at all looks the same to them).
/// How many connections it accepted, and how many of them the client has
/// closed since.
pub async fn mute_peer() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, c) = (accepted.clone(), closed.clone());
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while let Ok(n) = tcp.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (address, accepted, closed)
}

/// An HTTP/1.1 server that answers the first call on each connection with
/// keep-alive, and closes the connection without an answer when the next
/// call arrives on it: the close that crosses a kept-alive request.
pub async fn h1_closing_after_one() -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let all = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            all.connections.fetch_add(1, Ordering::SeqCst);
            let seen = all.clone();
            tokio::spawn(async move {
                let Some(body) = read_request(&mut tcp).await else { return };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{ALLOW}",
                    ALLOW.len()
                );
                seen.answered.lock().unwrap().push(body);
                tcp.write_all(answer.as_bytes()).await.unwrap();
                let _ = read_request(&mut tcp).await;
                drop(tcp);
            });
        }
    });
    (address, seen)
}

/// One HTTP/1.1 request's body (with a content-length), or `None` at the
/// end of the stream.
async fn read_request(tcp: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Some(text[end + 4..end + 4 + length].to_owned());
            }
        }
    }
}
