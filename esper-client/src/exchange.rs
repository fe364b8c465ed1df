//! The exchange with Esper: the two calls, the answer of each call's own
//! kind, and one call's round trip (its connections are in `origin`).

use esper_protocol::answer::contract::{DECISION_ID_HEADER, RETRY_AFTER_HEADER};
use esper_protocol::{parse_answer, parse_verify_answer, Decision, Failure, ProofCheck};
use hyper::header::{HeaderValue, CONTENT_TYPE};

use crate::origin::Origin;

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

/// One call and its answer, of the call's kind.
pub async fn exchange(origin: &Origin, api_key: &HeaderValue, call: Call) -> Answer {
    let kind = call.kind();
    let (uri, body) = match call {
        Call::Decide(body) => (&origin.decision, body),
        Call::Verify(body) => (&origin.verify, body),
    };
    let response = match origin.post(uri, api_key, body).await {
        Ok(response) => response,
        Err(failure) => return kind.failed(failure),
    };
    let now = std::time::SystemTime::now();
    let header = |name: &str| response.headers.get(name).map(|v| v.as_bytes());
    let (status, content_type, retry_after) =
        (response.status, header(CONTENT_TYPE.as_str()), header(RETRY_AFTER_HEADER));
    match kind {
        CallKind::Decide => Answer::Decision(parse_answer(
            status,
            content_type,
            header(DECISION_ID_HEADER),
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
