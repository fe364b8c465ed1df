//! The exchange with Esper over HTTP: the two calls, the answer of each
//! call's own kind, the client of a profile, and one call's round trip,
//! read up to a bounded size.

use esper_protocol::answer::contract::{DECISION_ID_HEADER, MAX_ANSWER_BYTES};
use esper_protocol::{parse_answer, parse_verify_answer, Decision, Failure, ProofCheck};

use crate::conf::{ClientProfile, Target};

/// The two calls the module makes to Esper, each with its JSON body.
pub enum Call {
    /// `POST /api/v1/runtime/mitigation`
    Decide(Vec<u8>),
    /// `POST /api/v1/challenge/proof/verify`
    Verify(Vec<u8>),
}

/// What came of a [`Call`], of the call's own kind: a decision call never
/// gets a proof check back, nor the other way round.
pub enum Answer {
    Decision(Result<Decision, Failure>),
    Proof(Result<ProofCheck, Failure>),
}

impl Answer {
    /// The failure, if the call failed.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Answer::Decision(result) => result.as_ref().err(),
            Answer::Proof(result) => result.as_ref().err(),
        }
    }
}

impl Call {
    /// The answer a call of this kind gets when `failure` ends it.
    pub fn failed(&self, failure: Failure) -> Answer {
        self.kind().failed(failure)
    }

    pub fn kind(&self) -> CallKind {
        match self {
            Call::Decide(_) => CallKind::Decide,
            Call::Verify(_) => CallKind::Verify,
        }
    }
}

/// Which of the two calls, without its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    Decide,
    Verify,
}

impl CallKind {
    pub fn failed(self, failure: Failure) -> Answer {
        match self {
            CallKind::Decide => Answer::Decision(Err(failure)),
            CallKind::Verify => Answer::Proof(Err(failure)),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Decide => "runtime decision",
            CallKind::Verify => "proof verification",
        }
    }
}

/// The HTTP client of a client profile (`esper_http2`, `esper_ssl_*`).
pub fn client(profile: &ClientProfile) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .pool_idle_timeout(std::time::Duration::from_secs(60))
        .user_agent(concat!("ngx_http_esper_module/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(!profile.verify);
    // One multiplexed connection (HTTP/2), or a pool of HTTP/1.1 connections.
    builder = if profile.http2 { builder.http2_prior_knowledge() } else { builder.http1_only() };
    if let Some(pem) = &profile.ca_pem {
        builder = builder.tls_built_in_root_certs(false);
        for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| format!("HTTP client: {e}"))
}

/// One call and its answer, of the call's kind.
pub async fn exchange(client: &reqwest::Client, target: &Target, call: Call) -> Answer {
    let kind = call.kind();
    let (url, body) = match call {
        Call::Decide(body) => (&target.decision_url, body),
        Call::Verify(body) => (&target.verify_url, body),
    };
    let response = match read(client, target, url, body).await {
        Ok(response) => response,
        Err(failure) => return kind.failed(failure),
    };
    let now = std::time::SystemTime::now();
    let (status, content_type, retry_after) =
        (response.status, response.content_type.as_deref(), response.retry_after.as_deref());
    match kind {
        CallKind::Decide => Answer::Decision(parse_answer(
            status,
            content_type,
            response.decision_id.as_deref(),
            retry_after,
            &response.body,
            now,
        )),
        CallKind::Verify => Answer::Proof(parse_verify_answer(
            status,
            content_type,
            retry_after,
            &response.body,
            now,
        )),
    }
}

/// What `exchange` reads of Esper's HTTP answer.
struct RawResponse {
    status: u16,
    content_type: Option<Vec<u8>>,
    decision_id: Option<Vec<u8>>,
    retry_after: Option<Vec<u8>>,
    body: Vec<u8>,
}

/// Sends one call and reads its answer, up to [`MAX_ANSWER_BYTES`].
async fn read(
    client: &reqwest::Client,
    target: &Target,
    url: &reqwest::Url,
    body: Vec<u8>,
) -> Result<RawResponse, Failure> {
    let mut response = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("x-esper-api-key", target.api_key.clone())
        .body(body)
        .send()
        .await
        .map_err(transport)?;
    let headers = response.headers();
    let header = |name: &str| headers.get(name).map(|v| v.as_bytes().to_vec());
    let mut raw = RawResponse {
        status: response.status().as_u16(),
        content_type: header(reqwest::header::CONTENT_TYPE.as_str()),
        decision_id: header(DECISION_ID_HEADER),
        retry_after: header(reqwest::header::RETRY_AFTER.as_str()),
        body: Vec::new(),
    };
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if raw.body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(Failure::TooLarge);
        }
        raw.body.extend_from_slice(&chunk);
    }
    Ok(raw)
}

/// The reason of a transport error, without the URL and from the root cause.
fn transport(error: reqwest::Error) -> Failure {
    let error = error.without_url();
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reason = format!("{reason}: {cause}");
        source = cause.source();
    }
    Failure::Transport(reason)
}
