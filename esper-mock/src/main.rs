//! A small, fast mock of Esper's runtime decision API for the module's
//! integration tests and benchmarks. See `USAGE` and `route` for what it does.

mod challenge;
mod plan;

use std::{
    collections::HashMap,
    io::{self, Write},
    net::SocketAddr,
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Channel, Full, LengthLimitError, Limited};
use hyper::{
    body::Incoming,
    header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER},
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Map, Value};
use tokio::{
    net::{TcpListener, TcpSocket},
    signal::unix::{signal, SignalKind},
};

use challenge::{Client, Issued, Sessions};
use plan::{Outcome, Payload, Plan, RateLimit};

const USAGE: &str = "\
usage: esper-mock [--listen IP:PORT] [--api-key KEY] [--default-action allow|challenge|block]
                  [--no-record] [--threads N] [--rate-limit N [--retry-after SECS]]
                  [--max-streams N] [--head-bytes N] [--challenge-origin URL] [--help]

  --listen IP:PORT      where to listen (default 127.0.0.1:0); prints \"listening on ADDR\"
  --challenge-origin URL  the challenge page's origin in redirect_url (default http://ADDR),
                        e.g. https://esper.test:8443 for a TLS proxy in front of the mock
  --api-key KEY         answer 401 to API calls without x-esper-api-key: KEY
  --default-action A    the runtime action when mock_action is not given (default allow)
  --no-record           keep no copy of calls for /__mock/requests (benchmarks)
  --threads N           worker threads (default 1)
  --rate-limit N        like Esper's per-key limit: after N runtime calls since start or the
                        last POST /__mock/reset, every runtime call is answered 429
  --retry-after SECS    those 429s carry Retry-After: SECS (default: no Retry-After)
  --max-streams N       HTTP/2: allow N concurrent streams per connection (SETTINGS_MAX_
                        CONCURRENT_STREAMS; default 16384); streams beyond are refused
  --head-bytes N        every runtime answer carries an x-mock-padding header of N bytes

Runtime calls (POST /api/v1/runtime/mitigation) follow mock_* parameters in the payload's
request.query_params:
  mock_action=A          allow, challenge or block (or anything, to test unknown actions)
  mock_redirect=URL      redirect_url, whatever the action; without it a challenge goes to
                         the mock's /challenge page and opens a challenge session there
  mock_decision_id=ID    decision_id (default dec-<call number>)
  mock_id_in_header=1    the decision id in X-Esper-Decision-ID instead of the body
  mock_ttl=SECS          \"ttl_seconds\": SECS in the decision (may be 0 or negative)
  mock_expires_in=SECS   \"expires_at\": now + SECS, RFC 3339 (may be negative: the past)
  mock_status=CODE       answer with this status (e.g. 400, 413, 422, 429, 500, 503)
  mock_retry_after=V     Retry-After: V, as given (seconds, an HTTP-date or garbage)
  mock_content_type=T    Content-Type: T
  mock_body=RAW          this body instead of a decision
  mock_delay_ms=MS       wait before answering
  mock_body_delay_ms=MS  send the head at once and the body MS later
  mock_body_bytes=N      N bytes of padding instead of the body
  mock_reset_in_body=1   break the connection half-way through the body
  mock_hang=1            never answer
  mock_close=1           close the connection without an answer

Challenge: a challenge sent to the mock's /challenge page opens a session there that
remembers the payload's request.client_ip and request.user_agent. The page is a form with a
\"Solve\" button (id solve) that a browser follows: GET /challenge/solve with the same query
(return_url, session, and optionally ttl=SECS for the proof's ttl_seconds) sends the visitor
back to return_url with esper_challenge_proof=proof-<n>.

Proof verification (POST /api/v1/challenge/proof/verify) answers by token (proof or token):
  proof-<n> from /challenge/solve   valid, but {\"valid\": false} when the body's client_ip
                                    or user_agent is not the challenged client's (a body
                                    without them is not checked)
  valid-*                           valid
  ttl<N>-*                          valid, ttl_seconds N
  exp<N>-*                          valid, expires_at now + N seconds
  status<CODE>-*                    answers that status, e.g. status422-x, status429-x
  fail-*                            answers 500
  junk-*                            answers 200 with a body that is not JSON
  slow-*                            never answers
  anything else                     {\"valid\": false}

Control:
  GET /__mock/requests   every API call received: seq, path, peer (the client's address and
                         port: one per connection), version, headers, body
  GET /__mock/count      {\"runtime\": n, \"verify\": n, \"rate_limited\": n, \"connections\": n}
                         (rate_limited: runtime calls answered 429, by the rate limit or
                         mock_status; connections: client connections open now, this one
                         included)
  POST /__mock/reset     forget calls and counts; the rate limit counts afresh
  POST /__mock/close-idle  close every open connection (one busy with a call once it is
                         answered), as a server does with idle keepalive connections";
const RUNTIME_PATH: &str = "/api/v1/runtime/mitigation";
const VERIFY_PATH: &str = "/api/v1/challenge/proof/verify";
const API_KEY_HEADER: &str = "x-esper-api-key";
const MAX_BODY: usize = 1024 * 1024;
const MAX_STREAMS: u32 = 16 * 1024;

type Body = BoxBody<Bytes, Error>;
type Error = Box<dyn std::error::Error + Send + Sync>;

struct Options {
    listen: SocketAddr,
    api_key: Option<String>,
    default_action: &'static str,
    record: bool,
    threads: usize,
    rate_limit: Option<RateLimit>,
    max_streams: u32,
    head_bytes: usize,
    challenge_origin: Option<String>,
}

/// What the command line asks for.
enum Command {
    Run(Options),
    Help,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut opts = Options {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        api_key: None,
        default_action: "allow",
        record: true,
        threads: 1,
        rate_limit: None,
        max_streams: MAX_STREAMS,
        head_bytes: 0,
        challenge_origin: None,
    };
    let mut rate_limit = None;
    let mut retry_after = None;
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => opts.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--api-key" => opts.api_key = Some(value()?),
            "--default-action" => {
                opts.default_action = match value()?.as_str() {
                    "allow" => "allow",
                    "challenge" => "challenge",
                    "block" => "block",
                    other => return Err(format!("--default-action: unknown action {other:?}")),
                }
            }
            "--no-record" => opts.record = false,
            "--threads" => {
                opts.threads = value()?
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("--threads needs a positive number")?
            }
            "--rate-limit" => {
                rate_limit =
                    Some(value()?.parse().map_err(|_| "--rate-limit needs a number of calls")?)
            }
            "--retry-after" => {
                retry_after =
                    Some(value()?.parse().map_err(|_| "--retry-after needs a number of seconds")?)
            }
            "--max-streams" => {
                opts.max_streams =
                    value()?.parse().map_err(|_| "--max-streams needs a number of streams")?
            }
            "--head-bytes" => {
                opts.head_bytes =
                    value()?.parse().map_err(|_| "--head-bytes needs a number of bytes")?
            }
            "--challenge-origin" => opts.challenge_origin = Some(value()?),
            "--help" | "-h" => return Ok(Command::Help),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    opts.rate_limit = match (rate_limit, retry_after) {
        (Some(calls), retry_after) => Some(RateLimit { calls, retry_after }),
        (None, Some(_)) => return Err("--retry-after needs --rate-limit".into()),
        (None, None) => None,
    };
    Ok(Command::Run(opts))
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(opts)) => opts,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("esper-mock: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut builder = if opts.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(opts.threads);
        builder
    };
    let result = builder.enable_all().build().and_then(|runtime| runtime.block_on(run(opts)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("esper-mock: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A listening socket with a backlog as deep as a production server's: a
/// worker that opens hundreds of connections at once (a benchmark's first
/// second) must not see SYNs dropped and retried a second later.
fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(4096)
}

async fn run(opts: Options) -> io::Result<()> {
    let listener = bind(opts.listen)
        .map_err(|e| io::Error::new(e.kind(), format!("listen on {}: {e}", opts.listen)))?;
    let listen = listener.local_addr()?;
    // Registered before announcing the port, so a test may stop us right away.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    println!("listening on {listen}");
    io::stdout().flush()?;

    let mock = Arc::new(Mock {
        challenge_origin: opts.challenge_origin.unwrap_or_else(|| format!("http://{listen}")),
        api_key: opts.api_key,
        default_action: opts.default_action,
        record: opts.record,
        rate_limit: opts.rate_limit,
        max_streams: opts.max_streams,
        head_bytes: opts.head_bytes,
        runtime_calls: AtomicU64::new(0),
        verify_calls: AtomicU64::new(0),
        rate_limited: AtomicU64::new(0),
        records: Mutex::new(Vec::new()),
        connections: AtomicU64::new(0),
        closing: tokio::sync::watch::channel(0).0,
        sessions: Mutex::new(Sessions::default()),
        sessions_opened: AtomicU64::new(0),
        tokens: Mutex::new(HashMap::new()),
        issued: AtomicU64::new(0),
    });
    tokio::select! {
        () = serve(listener, mock) => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

async fn serve(listener: TcpListener, mock: Arc<Mock>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically out of file descriptors: back off rather than spin.
                eprintln!("esper-mock: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Small request/response exchanges: don't let Nagle delay them.
        let _ = stream.set_nodelay(true);
        let mut closing = mock.closing.subscribe();
        let max_streams = mock.max_streams;
        let mock = Arc::clone(&mock);
        mock.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let open = Arc::clone(&mock);
            let service = service_fn(move |req| Arc::clone(&mock).route(req, peer));
            // HTTP/1.1, or HTTP/2 with prior knowledge (`esper_http2 on`).
            // Errors here are clients going away or a deliberate `mock_close`.
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // By default, let a benchmark hold thousands of decisions on one connection.
            builder.http2().max_concurrent_streams(max_streams);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                // `/__mock/close-idle`: closed once its exchange in progress, if any, is done.
                _ = closing.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            open.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

struct Mock {
    /// Where the challenge page is reached: `--challenge-origin`, or the
    /// mock's own address.
    challenge_origin: String,
    api_key: Option<String>,
    default_action: &'static str,
    record: bool,
    rate_limit: Option<RateLimit>,
    /// HTTP/2 streams allowed per connection.
    max_streams: u32,
    /// Bytes of padding header on every runtime answer.
    head_bytes: usize,
    runtime_calls: AtomicU64,
    verify_calls: AtomicU64,
    /// Runtime calls answered 429.
    rate_limited: AtomicU64,
    records: Mutex<Vec<Value>>,
    /// Client connections open now.
    connections: AtomicU64,
    /// Changed by `/__mock/close-idle`: every open connection closes.
    closing: tokio::sync::watch::Sender<u64>,
    /// Who each challenge was shown to.
    sessions: Mutex<Sessions>,
    /// Never reset, so that a session id outlives `/__mock/reset`.
    sessions_opened: AtomicU64,
    /// Tokens issued by `/challenge/solve`.
    tokens: Mutex<HashMap<String, Issued>>,
    issued: AtomicU64,
}

impl Mock {
    async fn route(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, Error> {
        let response = match (req.method(), req.uri().path()) {
            (&Method::POST, RUNTIME_PATH) => return self.runtime_call(req, peer).await,
            (&Method::POST, VERIFY_PATH) => return self.verify_call(req, peer).await,
            (&Method::GET, "/challenge/solve") => self.solve(req.uri().query().unwrap_or("")),
            (_, RUNTIME_PATH) => {
                let mut response = json_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    r#"{"error":"method not allowed"}"#,
                );
                response.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
                response
            }
            (&Method::GET, "/__mock/requests") => {
                let records = serde_json::to_vec(&*self.records.lock().unwrap())?;
                json_response(StatusCode::OK, records)
            }
            (&Method::GET, "/__mock/count") => {
                let count = json!({
                    "runtime": self.runtime_calls.load(Ordering::Relaxed),
                    "verify": self.verify_calls.load(Ordering::Relaxed),
                    "rate_limited": self.rate_limited.load(Ordering::Relaxed),
                    "connections": self.connections.load(Ordering::Relaxed),
                });
                json_response(StatusCode::OK, count.to_string())
            }
            (&Method::POST, "/__mock/close-idle") => {
                self.closing.send_modify(|generation| *generation += 1);
                json_response(StatusCode::OK, r#"{"ok":true}"#)
            }
            (&Method::POST, "/__mock/reset") => {
                let mut records = self.records.lock().unwrap();
                records.clear();
                self.runtime_calls.store(0, Ordering::Relaxed);
                self.verify_calls.store(0, Ordering::Relaxed);
                self.rate_limited.store(0, Ordering::Relaxed);
                json_response(StatusCode::OK, r#"{"ok":true}"#)
            }
            (&Method::GET, "/challenge") => respond(
                StatusCode::OK,
                HeaderValue::from_static("text/html; charset=utf-8"),
                challenge::page(req.uri().query().unwrap_or("")),
            ),
            _ => json_response(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#),
        };
        Ok(response)
    }

    /// Reads, counts, records and authenticates an API call; `Err` is the
    /// response that ends it early.
    async fn accept_call(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        path: &str,
        counter: &AtomicU64,
    ) -> Result<Result<(u64, Bytes), Response<Body>>, Error> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => {
                return Ok(Err(json_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    r#"{"error":"body too large"}"#,
                )));
            }
            Err(e) => return Err(e),
        };
        let seq = counter.fetch_add(1, Ordering::Relaxed) + 1;
        if self.record {
            let entry = record_entry(seq, path, peer, &parts, &body);
            self.records.lock().unwrap().push(entry);
        }
        if let Some(key) = &self.api_key {
            if parts.headers.get(API_KEY_HEADER).map(HeaderValue::as_bytes) != Some(key.as_bytes())
            {
                return Ok(Err(json_response(
                    StatusCode::UNAUTHORIZED,
                    r#"{"error":"unauthorized"}"#,
                )));
            }
        }
        Ok(Ok((seq, body)))
    }

    async fn runtime_call(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, Error> {
        let (seq, body) =
            match self.accept_call(req, peer, RUNTIME_PATH, &self.runtime_calls).await? {
                Ok(call) => call,
                Err(response) => return Ok(response),
            };
        let refusal = self.rate_limit.and_then(|limit| limit.refusal(seq));
        let plan = match refusal {
            Some(answer) => Plan { delay: None, outcome: Outcome::Answer(answer) },
            None => {
                let payload = Payload::parse(&body);
                let session = self.sessions_opened.fetch_add(1, Ordering::Relaxed) + 1;
                let plan =
                    plan::plan(&payload, seq, session, &self.challenge_origin, self.default_action);
                if matches!(&plan.outcome, Outcome::Answer(a) if a.opens_session) {
                    self.sessions.lock().unwrap().open(session, payload.client());
                }
                plan
            }
        };
        if let Some(delay) = plan.delay {
            tokio::time::sleep(delay).await;
        }
        match plan.outcome {
            // hyper drops this future when the client closes the connection.
            Outcome::Hang => std::future::pending().await,
            // A service error makes hyper close the connection without a response.
            Outcome::Close => Err("mock_close".into()),
            Outcome::Answer(answer) => {
                let mut response = if answer.delivery.is_streamed() {
                    let mut response = Response::new(streamed(answer.body, answer.delivery));
                    *response.status_mut() = answer.status;
                    response.headers_mut().insert(CONTENT_TYPE, answer.content_type);
                    response
                } else {
                    respond(answer.status, answer.content_type, answer.body)
                };
                if let Some(id) = answer.decision_id_header {
                    response.headers_mut().insert("x-esper-decision-id", id);
                }
                if let Some(after) = answer.retry_after {
                    response.headers_mut().insert(RETRY_AFTER, after);
                }
                if self.head_bytes > 0 {
                    let padding = HeaderValue::from_str(&"p".repeat(self.head_bytes))?;
                    response.headers_mut().insert("x-mock-padding", padding);
                }
                if answer.status == StatusCode::TOO_MANY_REQUESTS {
                    self.rate_limited.fetch_add(1, Ordering::Relaxed);
                }
                Ok(response)
            }
        }
    }
}

impl Mock {
    async fn verify_call(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, Error> {
        let body = match self.accept_call(req, peer, VERIFY_PATH, &self.verify_calls).await? {
            Ok((_, body)) => body,
            Err(response) => return Ok(response),
        };
        let body: Value = serde_json::from_slice(&body).unwrap_or_default();
        let token = challenge::token_of(&body).unwrap_or_default();
        let issued = self.tokens.lock().unwrap().get(token).cloned();
        let verdict = challenge::verdict(token, issued.as_ref(), &Client::of(&body));
        Ok(match verdict {
            challenge::Verdict::Answer(answer) => json_response(StatusCode::OK, answer.to_string()),
            challenge::Verdict::Status(status) => json_response(status, r#"{"error":"mock"}"#),
            challenge::Verdict::Fail => {
                json_response(StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":"mock"}"#)
            }
            challenge::Verdict::Junk => json_response(StatusCode::OK, "not json"),
            challenge::Verdict::Hang => std::future::pending().await,
        })
    }
}

/// A body sent piece by piece: after a delay, padded to a size, or broken
/// off half-way (which makes hyper cut the connection).
fn streamed(body: Bytes, delivery: plan::Delivery) -> Body {
    let (mut tx, rx) = Channel::<Bytes, Error>::new(4);
    tokio::spawn(async move {
        if let Some(delay) = delivery.body_delay {
            tokio::time::sleep(delay).await;
        }
        let body = match delivery.body_bytes {
            Some(n) => Bytes::from(vec![b' '; n]),
            None => body,
        };
        let end = if delivery.reset_in_body { body.len() / 2 } else { body.len() };
        for chunk in body.slice(..end).chunks(64 * 1024) {
            if tx.send_data(Bytes::copy_from_slice(chunk)).await.is_err() {
                return;
            }
        }
        if delivery.reset_in_body {
            tx.abort("mock_reset_in_body".into());
        }
    });
    rx.boxed()
}

fn respond(
    status: StatusCode,
    content_type: HeaderValue,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response =
        Response::new(Full::new(body.into()).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    respond(status, HeaderValue::from_static("application/json"), body)
}

/// One entry of `/__mock/requests`.
fn record_entry(
    seq: u64,
    path: &str,
    peer: SocketAddr,
    parts: &hyper::http::request::Parts,
    body: &[u8],
) -> Value {
    let headers = &parts.headers;
    let headers: Map<String, Value> = headers
        .keys()
        .map(|name| {
            let values: Vec<_> = headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .collect();
            (name.to_string(), Value::String(values.join(", ")))
        })
        .collect();
    let bytes = body.len();
    let body = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    let received_at_ms =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let version = format!("{:?}", parts.version);
    json!({"seq": seq, "path": path, "peer": peer.to_string(), "version": version, "headers": headers, "body": body, "bytes": bytes, "received_at_ms": received_at_ms})
}
