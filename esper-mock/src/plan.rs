//! Choosing the answer to a runtime call from the `mock_*` query parameters that
//! the nginx module forwards in `request.query_params`.

use std::{
    borrow::Cow,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use hyper::{header::HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::challenge::{self, Client};

/// The parts of the module's payload the mock looks at; serde skips the rest
/// without building values for it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Payload {
    return_url: Option<String>,
    request: Request,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Request {
    query_params: Map<String, Value>,
    /// Read as values, so that a payload with odd types still gets answered.
    client_ip: Value,
    user_agent: Value,
}

impl Payload {
    /// Anything unreadable (not JSON, unexpected shape) behaves like a payload
    /// without `mock_` keys, so the mock still answers.
    pub fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// A `mock_` parameter as text; numbers and booleans are accepted too, for
    /// payloads written by hand.
    fn param(&self, name: &str) -> Option<Cow<'_, str>> {
        match self.request.query_params.get(name)? {
            Value::String(s) => Some(Cow::Borrowed(s)),
            Value::Null => None,
            other => Some(Cow::Owned(other.to_string())),
        }
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.param(name).as_deref(), Some("1" | "true"))
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.param(name)?.parse().ok()
    }

    /// The client the payload speaks for.
    pub fn client(&self) -> Client {
        Client {
            client_ip: self.request.client_ip.as_str().map(str::to_owned),
            user_agent: self.request.user_agent.as_str().map(str::to_owned),
        }
    }
}

/// What to do with one runtime call.
#[derive(Debug, PartialEq)]
pub struct Plan {
    /// Waited before anything else happens.
    pub delay: Option<Duration>,
    pub outcome: Outcome,
}

#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Never answer; the connection stays open until the client goes away.
    Hang,
    /// Close the connection without a response.
    Close,
    Answer(Answer),
}

#[derive(Debug, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: HeaderValue,
    /// Set when the decision id travels in `X-Esper-Decision-ID`.
    pub decision_id_header: Option<HeaderValue>,
    pub retry_after: Option<HeaderValue>,
    pub body: Bytes,
    pub delivery: Delivery,
    /// The answer sends the visitor to the mock's challenge page with the
    /// session id it was given: remember who the challenge is for.
    pub opens_session: bool,
}

/// How the body goes out after the head.
#[derive(Debug, Default, PartialEq)]
pub struct Delivery {
    /// `mock_body_delay_ms`: the head at once, the body this much later.
    pub body_delay: Option<Duration>,
    /// `mock_body_bytes`: this many bytes of padding instead of the body.
    pub body_bytes: Option<usize>,
    /// `mock_reset_in_body=1`: half the body, then the connection breaks.
    pub reset_in_body: bool,
}

impl Delivery {
    /// True when the body cannot simply be sent in one piece.
    pub fn is_streamed(&self) -> bool {
        self != &Delivery::default()
    }
}

#[derive(Serialize)]
struct Decision<'a> {
    action: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    reason: &'static str,
}

/// `--rate-limit N [--retry-after SECS]`: like Esper's per-key limit, every
/// runtime call after the first `calls` (since start or the last reset) is
/// refused with 429.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub calls: u64,
    pub retry_after: Option<u64>,
}

impl RateLimit {
    /// The 429 for runtime call number `seq`, if it is over the limit.
    pub fn refusal(&self, seq: u64) -> Option<Answer> {
        (seq > self.calls).then(|| Answer {
            status: StatusCode::TOO_MANY_REQUESTS,
            content_type: HeaderValue::from_static("application/json"),
            decision_id_header: None,
            retry_after: self.retry_after.map(HeaderValue::from),
            body: Bytes::from_static(br#"{"error":"rate limited"}"#),
            delivery: Delivery::default(),
            opens_session: false,
        })
    }
}

/// `seq` is the 1-based number of this runtime call; `session` the id of the
/// challenge session the answer opens if it sends the visitor to the mock's
/// challenge page; `challenge_origin` is where that page is reached.
pub fn plan(
    payload: &Payload,
    seq: u64,
    session: u64,
    challenge_origin: &str,
    default_action: &str,
) -> Plan {
    let delay = payload.number("mock_delay_ms").map(Duration::from_millis);
    let outcome = if payload.flag("mock_hang") {
        Outcome::Hang
    } else if payload.flag("mock_close") {
        Outcome::Close
    } else {
        Outcome::Answer(answer(payload, seq, session, challenge_origin, default_action))
    };
    Plan { delay, outcome }
}

/// Unusable values (a status that is not a number, a header value with control
/// characters) fall back to the default rather than failing the call.
fn answer(
    payload: &Payload,
    seq: u64,
    session: u64,
    challenge_origin: &str,
    default_action: &str,
) -> Answer {
    let status = payload
        .number("mock_status")
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK);
    let content_type = payload
        .param("mock_content_type")
        .and_then(|ct| HeaderValue::from_str(&ct).ok())
        .unwrap_or(HeaderValue::from_static("application/json"));
    let decision_id =
        payload.param("mock_decision_id").unwrap_or_else(|| Cow::Owned(format!("dec-{seq}")));
    let id_in_header = payload.flag("mock_id_in_header");
    let decision_id_header =
        id_in_header.then(|| HeaderValue::from_str(&decision_id).ok()).flatten();
    let retry_after =
        payload.param("mock_retry_after").and_then(|value| HeaderValue::from_str(&value).ok());

    let mut opens_session = false;
    let body = match payload.param("mock_body") {
        Some(raw) => Bytes::from(raw.into_owned()),
        None => {
            let action = payload.param("mock_action");
            let action = action.as_deref().unwrap_or(default_action);
            let redirect_url = match payload.param("mock_redirect") {
                Some(url) => Some(url),
                None if action == "challenge" => {
                    opens_session = true;
                    Some(Cow::Owned(challenge_url(payload, session, challenge_origin)))
                }
                None => None,
            };
            let expires_at = payload.number::<i64>("mock_expires_in").map(|secs| {
                let now = SystemTime::now();
                let offset = Duration::from_secs(secs.unsigned_abs());
                challenge::rfc3339(if secs < 0 { now - offset } else { now + offset })
            });
            let decision = Decision {
                action,
                decision_id: (!id_in_header).then_some(&*decision_id),
                redirect_url: redirect_url.as_deref(),
                ttl_seconds: payload.number("mock_ttl"),
                expires_at,
                reason: "mock",
            };
            Bytes::from(serde_json::to_vec(&decision).expect("a decision always serialises"))
        }
    };
    let delivery = Delivery {
        body_delay: payload.number("mock_body_delay_ms").map(Duration::from_millis),
        body_bytes: payload.number("mock_body_bytes"),
        reset_in_body: payload.flag("mock_reset_in_body"),
    };

    Answer { status, content_type, decision_id_header, retry_after, body, delivery, opens_session }
}

/// The mock's own `/challenge` page, carrying the payload's `return_url` and
/// the challenge session along.
fn challenge_url(payload: &Payload, session: u64, challenge_origin: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("return_url", payload.return_url.as_deref().unwrap_or(""))
        .append_pair("session", &session.to_string())
        .finish();
    format!("{challenge_origin}/challenge?{query}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ORIGIN: &str = "http://127.0.0.1:4242";

    fn plan_for(payload: Value) -> Plan {
        plan(&Payload::parse(payload.to_string().as_bytes()), 7, 70, ORIGIN, "allow")
    }

    fn with_params(params: Value) -> Plan {
        plan_for(json!({
            "return_url": "https://shop.example.com/a?b=1&c=d e",
            "request": {"method": "GET", "query_params": params}
        }))
    }

    fn answer_of(plan: Plan) -> Answer {
        match plan.outcome {
            Outcome::Answer(a) => a,
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn body_json(answer: &Answer) -> Value {
        serde_json::from_slice(&answer.body).unwrap()
    }

    #[test]
    fn plain_payload_is_allowed_with_sequential_id() {
        let plan = with_params(json!({"page": "2"}));
        assert_eq!(plan.delay, None);
        let a = answer_of(plan);
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.content_type, "application/json");
        assert_eq!(a.decision_id_header, None);
        assert_eq!(
            body_json(&a),
            json!({"action": "allow", "decision_id": "dec-7", "reason": "mock"})
        );
    }

    #[test]
    fn default_action_applies_without_mock_action() {
        let a = answer_of(plan(&Payload::default(), 1, 10, ORIGIN, "block"));
        assert_eq!(body_json(&a)["action"], "block");
    }

    #[test]
    fn unreadable_payload_gets_the_default_answer() {
        for body in [&b"not json"[..], b"", br#"{"request":"x"}"#] {
            let a = answer_of(plan(&Payload::parse(body), 3, 30, ORIGIN, "allow"));
            assert_eq!(body_json(&a)["decision_id"], "dec-3");
        }
    }

    #[test]
    fn challenge_points_at_the_mock_with_encoded_return_url_and_session() {
        let a = answer_of(with_params(json!({"mock_action": "challenge"})));
        assert_eq!(
            body_json(&a)["redirect_url"],
            "http://127.0.0.1:4242/challenge?return_url=https%3A%2F%2Fshop.example.com%2Fa%3Fb%3D1%26c%3Dd+e&session=70"
        );
        assert!(a.opens_session);
        let a =
            answer_of(plan_for(json!({"request": {"query_params": {"mock_action": "challenge"}}})));
        assert_eq!(
            body_json(&a)["redirect_url"],
            "http://127.0.0.1:4242/challenge?return_url=&session=70"
        );
        let a = answer_of(with_params(
            json!({"mock_action": "challenge", "mock_redirect": "https://c.example/x"}),
        ));
        assert!(!a.opens_session, "not the mock's page");
        assert!(!answer_of(with_params(json!({}))).opens_session);
    }

    #[test]
    fn the_payload_names_its_client() {
        let payload = Payload::parse(
            json!({"request": {"client_ip": "203.0.113.7", "user_agent": "UA"}})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(
            payload.client(),
            Client { client_ip: Some("203.0.113.7".into()), user_agent: Some("UA".into()) }
        );
        let odd = Payload::parse(
            br#"{"request": {"client_ip": 5, "query_params": {"mock_action": "block"}}}"#,
        );
        assert_eq!(odd.client(), Client::default());
        let a = answer_of(plan(&odd, 1, 1, ORIGIN, "allow"));
        assert_eq!(body_json(&a)["action"], "block", "odd types do not spoil the payload");
    }

    #[test]
    fn decision_lifetimes() {
        let a = answer_of(with_params(json!({"mock_ttl": "30"})));
        assert_eq!(body_json(&a)["ttl_seconds"], 30);
        let a = answer_of(with_params(json!({"mock_ttl": "-5"})));
        assert_eq!(body_json(&a)["ttl_seconds"], -5);
        let at = |params: Value| {
            let a = answer_of(with_params(params));
            let at = body_json(&a)["expires_at"].as_str().unwrap().to_owned();
            humantime::parse_rfc3339(&at).unwrap()
        };
        let now = SystemTime::now();
        let later = at(json!({"mock_expires_in": "120"}));
        let ahead = later.duration_since(now).unwrap().as_secs();
        assert!((118..=121).contains(&ahead), "{ahead}");
        let earlier = at(json!({"mock_expires_in": -60}));
        let behind = now.duration_since(earlier).unwrap().as_secs();
        assert!((58..=61).contains(&behind), "{behind}");
        let a = answer_of(with_params(json!({"mock_ttl": "x", "mock_expires_in": "y"})));
        assert!(body_json(&a).get("ttl_seconds").is_none());
        assert!(body_json(&a).get("expires_at").is_none());
    }

    #[test]
    fn retry_after_header() {
        let a = answer_of(with_params(json!({"mock_status": "429", "mock_retry_after": "5"})));
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(a.retry_after, Some(HeaderValue::from_static("5")));
        let a =
            answer_of(with_params(json!({"mock_retry_after": "Thu, 26 Mar 2026 12:00:09 GMT"})));
        assert_eq!(a.retry_after, Some(HeaderValue::from_static("Thu, 26 Mar 2026 12:00:09 GMT")));
        assert_eq!(answer_of(with_params(json!({}))).retry_after, None);
    }

    #[test]
    fn rate_limit_refuses_after_the_limit() {
        let limit = RateLimit { calls: 2, retry_after: Some(7) };
        assert_eq!(limit.refusal(1), None);
        assert_eq!(limit.refusal(2), None);
        let refusal = limit.refusal(3).unwrap();
        assert_eq!(refusal.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refusal.retry_after, Some(HeaderValue::from_static("7")));
        assert_eq!(body_json(&refusal), json!({"error": "rate limited"}));
        assert!(limit.refusal(1000).is_some());
        let silent = RateLimit { calls: 0, retry_after: None };
        assert_eq!(silent.refusal(1).unwrap().retry_after, None);
    }

    #[test]
    fn explicit_redirect_is_sent_whatever_the_action() {
        let a = answer_of(with_params(json!({"mock_redirect": "https://c.example/x"})));
        assert_eq!(
            body_json(&a),
            json!({"action": "allow", "decision_id": "dec-7", "redirect_url": "https://c.example/x", "reason": "mock"})
        );
    }

    #[test]
    fn decision_id_can_move_to_a_header() {
        let a =
            answer_of(with_params(json!({"mock_decision_id": "abc", "mock_id_in_header": "1"})));
        assert_eq!(a.decision_id_header, Some(HeaderValue::from_static("abc")));
        assert_eq!(body_json(&a), json!({"action": "allow", "reason": "mock"}));
    }

    #[test]
    fn client_error_and_server_error_statuses() {
        for code in [400, 413, 422, 500, 503] {
            let a = answer_of(with_params(json!({"mock_status": code.to_string()})));
            assert_eq!(a.status.as_u16(), code);
            assert_eq!(body_json(&a)["action"], "allow", "the body stays a decision");
        }
    }

    #[test]
    fn raw_body_status_and_content_type() {
        let a = answer_of(with_params(json!({
            "mock_body": "oops", "mock_status": "503", "mock_content_type": "text/plain"
        })));
        assert_eq!(
            (a.status, a.content_type, a.body),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                HeaderValue::from_static("text/plain"),
                Bytes::from("oops")
            )
        );
    }

    #[test]
    fn numbers_are_accepted_and_garbage_ignored() {
        let a = answer_of(with_params(json!({"mock_status": 500, "mock_delay_ms": "x"})));
        assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
        let plan = with_params(json!({"mock_status": "abc", "mock_delay_ms": 250}));
        assert_eq!(plan.delay, Some(Duration::from_millis(250)));
        assert_eq!(answer_of(plan).status, StatusCode::OK);
    }

    #[test]
    fn hang_wins_over_close_and_keeps_the_delay() {
        let plan = with_params(json!({"mock_hang": "1", "mock_close": "1", "mock_delay_ms": "5"}));
        assert_eq!(plan, Plan { delay: Some(Duration::from_millis(5)), outcome: Outcome::Hang });
        assert_eq!(with_params(json!({"mock_close": "1"})).outcome, Outcome::Close);
        assert!(matches!(with_params(json!({"mock_close": "0"})).outcome, Outcome::Answer(_)));
    }
}
