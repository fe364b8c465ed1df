//! Reading Esper's answer to a runtime decision call.
//!
//! The response schema is not published (docs/esper-contract.md, "Answer",
//! INFERRED).
//! Every inferred name lives in [`contract`] so that one edit follows Esper when it
//! publishes more.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::metrics::EsperResult;

/// Names inferred from Esper's recipes; the alternatives listed in
/// docs/esper-contract.md are all accepted (its "When Esper publishes more"
/// maps each item here to what it stands for).
pub mod contract {
    use std::time::{Duration, SystemTime};

    use serde_json::{Map, Value};

    /// JSON fields that may carry the decision id, in order of preference.
    pub const DECISION_ID_FIELDS: [&str; 2] = ["decision_id", "id"];
    /// Response header that may carry the decision id when the body has none.
    pub const DECISION_ID_HEADER: &str = "x-esper-decision-id";
    /// Longest decision id kept; a longer one is dropped (not cut: a cut id
    /// names no decision). Ids are short tokens; this bounds the header the
    /// application receives and fits the enforcement zone's slot.
    pub const MAX_DECISION_ID_BYTES: usize = 128;
    /// Largest answer body read; a decision is a few hundred bytes.
    pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
    /// Proof verification answer (docs/esper-contract.md, "Managed challenge",
    /// INFERRED): `valid` must be `true`.
    pub const VERIFY_VALID_FIELD: &str = "valid";
    /// How long a verified proof or a decision stays good
    /// (docs/esper-contract.md, "Managed challenge" and "Answer"; INFERRED
    /// for the verify answer; the decision answer is read the same
    /// way, INFERRED too): either field, the sooner wins. See [`lifetime`].
    pub const EXPIRES_AT_FIELD: &str = "expires_at";
    pub const TTL_FIELD: &str = "ttl_seconds";
    /// Verify request (docs/esper-contract.md, "Managed challenge", INFERRED):
    /// the token goes under both candidate names.
    pub const VERIFY_TOKEN_FIELDS: [&str; 2] = ["proof", "token"];
    /// Verify request: the redeeming client, so that Esper can refuse a proof
    /// solved by someone else (INFERRED). Named exactly as in the decision
    /// payload's `request` object (CONFIRMED there), so that one reading of
    /// the contract covers both; the payload module's tests keep them equal.
    pub const VERIFY_CLIENT_IP_FIELD: &str = "client_ip";
    pub const VERIFY_USER_AGENT_FIELD: &str = "user_agent";
    /// Over its per-key rate limit Esper answers 429 (CONFIRMED); that it says
    /// when to come back in the standard `Retry-After` header, as delta-seconds
    /// or an HTTP-date, is INFERRED.
    pub const RETRY_AFTER_HEADER: &str = "retry-after";
    /// Longest `Retry-After` honoured: a wrong or hostile value must not keep
    /// Esper out of the picture for long.
    pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
    /// How long to hold off after a 429 without a usable `Retry-After`. Our
    /// choice, not Esper's: one second takes the pressure off a limit counted
    /// per second or per minute, and is too short for anyone to notice.
    pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

    /// The lifetime an answer gives, from `now`: the sooner of `expires_at`
    /// (RFC 3339) and `ttl_seconds` (an integer). `None` when the answer
    /// gives neither in a readable form; zero when it has passed (a negative
    /// `ttl_seconds` too): good for this request only.
    pub fn lifetime(answer: &Map<String, Value>, now: SystemTime) -> Option<Duration> {
        let until_expiry = answer
            .get(EXPIRES_AT_FIELD)
            .and_then(Value::as_str)
            .and_then(|at| humantime::parse_rfc3339_weak(at).ok())
            .map(|at| at.duration_since(now).unwrap_or_default());
        let ttl = answer
            .get(TTL_FIELD)
            .and_then(Value::as_i64)
            .map(|secs| Duration::from_secs(secs.max(0) as u64));
        match (until_expiry, ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The one action Esper returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Challenge,
    Block,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Challenge => "challenge",
            Action::Block => "block",
        }
    }
}

/// What Esper decided, with what each action needs: a challenge carries
/// the page to send the visitor to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Challenge {
        /// Absolute http(s) URL of Esper's challenge page.
        redirect_url: String,
    },
    Block,
}

impl Verdict {
    pub fn action(&self) -> Action {
        match self {
            Verdict::Allow => Action::Allow,
            Verdict::Challenge { .. } => Action::Challenge,
            Verdict::Block => Action::Block,
        }
    }
}

/// A usable decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub decision_id: Option<String>,
    /// How long Esper says the decision holds, when it says so; zero: for
    /// this request only (a lifetime already over).
    pub lifetime: Option<Duration>,
}

/// Why no usable decision came back. `Display` is the reason written to the
/// error log; it never contains the API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The whole call did not finish within `esper_timeout`.
    Timeout,
    /// Connecting, sending or reading failed.
    Transport(String),
    /// Esper refused the API key (401/403): a configuration problem.
    Unauthorized(u16),
    /// Esper's per-key rate limit (429); `retry_after` is its `Retry-After`,
    /// at most [`contract::MAX_RETRY_AFTER`].
    RateLimited { retry_after: Option<Duration> },
    /// Any other non-2xx status.
    Status(u16),
    /// The answer body is larger than [`contract::MAX_ANSWER_BYTES`].
    TooLarge,
    /// The answer is declared as something other than JSON.
    ContentType(String),
    /// The body is not a JSON object of the expected shape.
    InvalidBody(String),
    /// `action` is missing or not one of allow, challenge, block.
    UnknownAction(String),
    /// `challenge` without a usable absolute http(s) `redirect_url`.
    BadRedirect(String),
    /// `esper_max_pending` calls are already in flight: Esper is not asked.
    Overloaded(usize),
    /// The circuit breaker is open: Esper is not asked.
    CircuitOpen,
    /// Esper answered 429 and its `Retry-After` runs: Esper is not asked.
    RetryLater,
}

impl Failure {
    /// `$esper_result` for this failure.
    pub fn result(&self) -> EsperResult {
        match self {
            Failure::Timeout => EsperResult::Timeout,
            _ => EsperResult::Error,
        }
    }

    /// True when the failure says Esper is unreachable, slow or overloaded,
    /// which is what a circuit breaker is for; false when the call itself
    /// was at fault (a client error status, a bad key, an unusable answer) or
    /// Esper was not asked at all, since backing off would not help.
    pub fn is_availability_failure(&self) -> bool {
        match self {
            Failure::Timeout | Failure::Transport(_) | Failure::RateLimited { .. } => true,
            Failure::Status(status) => *status >= 500,
            Failure::Unauthorized(_)
            | Failure::TooLarge
            | Failure::ContentType(_)
            | Failure::InvalidBody(_)
            | Failure::UnknownAction(_)
            | Failure::BadRedirect(_)
            | Failure::Overloaded(_)
            | Failure::CircuitOpen
            | Failure::RetryLater => false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout => f.write_str("timed out"),
            Failure::Transport(e) => write!(f, "request failed: {e}"),
            Failure::Unauthorized(s) => {
                write!(f, "status {s}: Esper refused the API key, check \"esper_api_key\"")
            }
            Failure::RateLimited { retry_after } => {
                f.write_str("rate limited by Esper (429)")?;
                match retry_after {
                    Some(after) => write!(f, ", retry after {} s", after.as_secs()),
                    None => Ok(()),
                }
            }
            Failure::Status(s) => write!(f, "unexpected status {s}"),
            Failure::TooLarge => {
                write!(f, "answer larger than {} bytes", contract::MAX_ANSWER_BYTES)
            }
            Failure::ContentType(t) => write!(f, "answer is not JSON (content type \"{t}\")"),
            Failure::InvalidBody(e) => write!(f, "invalid answer body: {e}"),
            Failure::UnknownAction(a) => write!(f, "unknown action \"{a}\""),
            Failure::BadRedirect(u) => write!(f, "challenge without a usable redirect_url ({u})"),
            Failure::Overloaded(n) => {
                write!(f, "{n} decisions already pending (esper_max_pending), Esper not asked")
            }
            Failure::CircuitOpen => f.write_str("circuit breaker open, Esper not asked"),
            Failure::RetryLater => {
                f.write_str("Esper's Retry-After after a 429 is running, Esper not asked")
            }
        }
    }
}

#[derive(Deserialize)]
struct RawAnswer {
    action: Option<serde_json::Value>,
    redirect_url: Option<serde_json::Value>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

/// Turns a complete HTTP answer into a decision or the reason it is unusable.
/// The headers are the raw values of `Content-Type`,
/// [`contract::DECISION_ID_HEADER`] and [`contract::RETRY_AFTER_HEADER`];
/// `now` is when the answer arrived, for an `expires_at` lifetime.
pub fn parse_answer(
    status: u16,
    content_type: Option<&[u8]>,
    decision_id_header: Option<&[u8]>,
    retry_after: Option<&[u8]>,
    body: &[u8],
    now: SystemTime,
) -> Result<Decision, Failure> {
    check_envelope(status, content_type, retry_after, body, now)?;
    let raw: RawAnswer = serde_json::from_slice(body).map_err(|e| {
        if body.iter().all(u8::is_ascii_whitespace) {
            Failure::InvalidBody("empty body".into())
        } else {
            Failure::InvalidBody(e.to_string())
        }
    })?;

    let verdict = match raw.action.as_ref().and_then(|v| v.as_str()) {
        Some("allow") => Verdict::Allow,
        Some("challenge") => {
            let url = raw.redirect_url.as_ref().and_then(|v| v.as_str());
            Verdict::Challenge { redirect_url: checked_redirect(url)? }
        }
        Some("block") => Verdict::Block,
        Some(other) => return Err(Failure::UnknownAction(printable(other.as_bytes(), 64))),
        None => return Err(Failure::UnknownAction("<missing>".into())),
    };

    let decision_id = contract::DECISION_ID_FIELDS
        .iter()
        .find_map(|name| match raw.rest.get(*name) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
        .or_else(|| {
            decision_id_header
                .filter(|h| !h.is_empty())
                .map(|h| String::from_utf8_lossy(h).into_owned())
        })
        .filter(|id| is_header_safe(id) && id.len() <= contract::MAX_DECISION_ID_BYTES);

    // Tolerant: an unreadable lifetime is no lifetime; a past one is zero.
    let lifetime = contract::lifetime(&raw.rest, now);

    Ok(Decision { verdict, decision_id, lifetime })
}

/// What every answer must be before its body is read: 2xx, JSON, bounded.
fn check_envelope(
    status: u16,
    content_type: Option<&[u8]>,
    retry_after: Option<&[u8]>,
    body: &[u8],
    now: SystemTime,
) -> Result<(), Failure> {
    match status {
        200..=299 => {}
        401 | 403 => return Err(Failure::Unauthorized(status)),
        429 => {
            return Err(Failure::RateLimited {
                retry_after: retry_after.and_then(|v| parse_retry_after(v, now)),
            })
        }
        _ => return Err(Failure::Status(status)),
    }
    if let Some(ct) = content_type {
        if !is_json_content_type(ct) {
            return Err(Failure::ContentType(printable(ct, 64)));
        }
    }
    if body.len() > contract::MAX_ANSWER_BYTES {
        return Err(Failure::TooLarge);
    }
    Ok(())
}

/// A `Retry-After` value (RFC 9110 §10.2.3): delta-seconds or an HTTP-date,
/// in whole seconds rounded up, at most [`contract::MAX_RETRY_AFTER`]; a date
/// in the past is zero. `None` when unreadable.
fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let after = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits to count is still "later than the cap".
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        let ahead = at.duration_since(now).unwrap_or_default();
        Duration::from_secs(ahead.as_secs() + u64::from(ahead.subsec_nanos() > 0))
    };
    Some(after.min(contract::MAX_RETRY_AFTER))
}

/// What Esper said about a challenge proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofCheck {
    /// Valid; `lifetime` is how long Esper says it stays valid, if it says.
    Verified { lifetime: Option<Duration> },
    /// Anything but an explicit `"valid": true` with a lifetime still ahead.
    Refused,
}

/// Reads the answer of `POST /api/v1/challenge/proof/verify`. Transport-level
/// problems (status, content type, size, unreadable JSON) are failures like
/// those of a decision (a 429 too); a readable answer that does not say valid
/// is `Refused`.
pub fn parse_verify_answer(
    status: u16,
    content_type: Option<&[u8]>,
    retry_after: Option<&[u8]>,
    body: &[u8],
    now: SystemTime,
) -> Result<ProofCheck, Failure> {
    check_envelope(status, content_type, retry_after, body, now)?;
    let answer: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| Failure::InvalidBody(e.to_string()))?;
    if answer.get(contract::VERIFY_VALID_FIELD) != Some(&serde_json::Value::Bool(true)) {
        return Ok(ProofCheck::Refused);
    }
    let lifetime = contract::lifetime(&answer, now);
    // Strict, unlike a decision's: a proof whose time is up is no proof.
    if lifetime.is_some_and(|l| l.as_secs() == 0) {
        return Ok(ProofCheck::Refused);
    }
    Ok(ProofCheck::Verified { lifetime })
}

/// `application/json`, `application/problem+json` and the like, any parameters.
fn is_json_content_type(ct: &[u8]) -> bool {
    let ct = String::from_utf8_lossy(ct).to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A redirect target must be an absolute http(s) URL that is safe to place in a
/// `Location` header as it is.
fn checked_redirect(url: Option<&str>) -> Result<String, Failure> {
    let Some(url) = url else {
        return Err(Failure::BadRedirect("missing".into()));
    };
    if !is_header_safe(url) {
        return Err(Failure::BadRedirect("control characters".into()));
    }
    match url::Url::parse(url) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.has_host() => {
            Ok(url.to_owned())
        }
        Ok(u) => Err(Failure::BadRedirect(format!("scheme \"{}\"", u.scheme()))),
        Err(e) => Err(Failure::BadRedirect(e.to_string())),
    }
}

/// Header values must not carry CR, LF or other control characters.
fn is_header_safe(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_control())
}

/// A bounded, printable rendering of untrusted bytes for a log line.
fn printable(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-26T12:00:00Z
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_774_526_400)
    }

    /// A decision answer without `Retry-After`, arriving at [`now`].
    fn answer(
        status: u16,
        content_type: Option<&[u8]>,
        decision_id_header: Option<&[u8]>,
        body: &[u8],
    ) -> Result<Decision, Failure> {
        parse_answer(status, content_type, decision_id_header, None, body, now())
    }

    fn ok(body: &str) -> Result<Decision, Failure> {
        answer(200, Some(b"application/json"), None, body.as_bytes())
    }

    #[test]
    fn reads_each_action() {
        assert_eq!(ok(r#"{"action":"allow"}"#).unwrap().verdict.action(), Action::Allow);
        assert_eq!(
            ok(r#"{"action":"block","reason":"bot","score":97}"#).unwrap().verdict.action(),
            Action::Block
        );
        let d =
            ok(r#"{"action":"challenge","redirect_url":"https://c.esperr.com/x?y=1"}"#).unwrap();
        assert_eq!(
            d.verdict,
            Verdict::Challenge { redirect_url: "https://c.esperr.com/x?y=1".into() }
        );
    }

    #[test]
    fn decision_id_from_body_alternatives_or_header() {
        assert_eq!(
            ok(r#"{"action":"allow","decision_id":"d1"}"#).unwrap().decision_id.as_deref(),
            Some("d1")
        );
        assert_eq!(
            ok(r#"{"action":"allow","id":"d2"}"#).unwrap().decision_id.as_deref(),
            Some("d2")
        );
        assert_eq!(ok(r#"{"action":"allow","id":42}"#).unwrap().decision_id.as_deref(), Some("42"));
        let d = answer(200, None, Some(b"h3"), br#"{"action":"allow"}"#).unwrap();
        assert_eq!(d.decision_id.as_deref(), Some("h3"));
        let d = answer(200, None, Some(b"h3"), br#"{"action":"allow","decision_id":"b"}"#).unwrap();
        assert_eq!(d.decision_id.as_deref(), Some("b"));
        let longest = "d".repeat(contract::MAX_DECISION_ID_BYTES);
        let body = format!(r#"{{"action":"allow","decision_id":"{longest}"}}"#);
        assert_eq!(ok(&body).unwrap().decision_id.as_deref(), Some(longest.as_str()));
        let body = format!(r#"{{"action":"allow","decision_id":"{longest}x"}}"#);
        assert_eq!(ok(&body).unwrap().decision_id, None, "too long: dropped, never cut");
        let long_header = format!("{longest}x");
        let d = answer(200, None, Some(long_header.as_bytes()), br#"{"action":"allow"}"#).unwrap();
        assert_eq!(d.decision_id, None);
        assert_eq!(ok("{\"action\":\"allow\",\"id\":\"a\\r\\nb\"}").unwrap().decision_id, None);
    }

    #[test]
    fn statuses() {
        assert_eq!(answer(401, None, None, b""), Err(Failure::Unauthorized(401)));
        assert_eq!(answer(403, None, None, b""), Err(Failure::Unauthorized(403)));
        assert_eq!(answer(500, None, None, b"{}"), Err(Failure::Status(500)));
        assert_eq!(answer(302, None, None, b"{}"), Err(Failure::Status(302)));
        assert_eq!(
            answer(204, None, None, br#"{"action":"allow"}"#).unwrap().verdict.action(),
            Action::Allow
        );
    }

    #[test]
    fn bodies_that_are_not_decisions() {
        assert!(matches!(ok(""), Err(Failure::InvalidBody(m)) if m == "empty body"));
        assert!(matches!(ok("{\"action\":"), Err(Failure::InvalidBody(_))));
        assert!(matches!(ok("[1]"), Err(Failure::InvalidBody(_))));
        assert!(matches!(ok("<html>"), Err(Failure::InvalidBody(_))));
        assert_eq!(ok(r#"{"action":"maybe"}"#), Err(Failure::UnknownAction("maybe".into())));
        assert_eq!(ok(r#"{"action":1}"#), Err(Failure::UnknownAction("<missing>".into())));
        assert_eq!(ok(r#"{}"#), Err(Failure::UnknownAction("<missing>".into())));
        let big =
            format!(r#"{{"action":"allow","pad":"{}"}}"#, "x".repeat(contract::MAX_ANSWER_BYTES));
        assert_eq!(ok(&big), Err(Failure::TooLarge));
    }

    #[test]
    fn content_types() {
        let body = br#"{"action":"allow"}"#;
        assert!(answer(200, Some(b"application/json; charset=utf-8"), None, body).is_ok());
        assert!(answer(200, Some(b"Application/JSON"), None, body).is_ok());
        assert!(answer(200, Some(b"application/problem+json"), None, body).is_ok());
        assert!(answer(200, None, None, body).is_ok());
        assert_eq!(
            answer(200, Some(b"text/html"), None, body),
            Err(Failure::ContentType("text/html".into()))
        );
    }

    #[test]
    fn challenge_needs_absolute_http_redirect() {
        for bad in [
            r#"{"action":"challenge"}"#,
            r#"{"action":"challenge","redirect_url":""}"#,
            r#"{"action":"challenge","redirect_url":"/relative"}"#,
            r#"{"action":"challenge","redirect_url":"javascript:alert(1)"}"#,
            r#"{"action":"challenge","redirect_url":"ftp://x.example/"}"#,
            "{\"action\":\"challenge\",\"redirect_url\":\"https://x.example/\\r\\nSet-Cookie: a=b\"}",
            r#"{"action":"challenge","redirect_url":7}"#,
        ] {
            assert!(matches!(ok(bad), Err(Failure::BadRedirect(_))), "{bad}");
        }
    }

    #[test]
    fn proof_answers() {
        let now = now();
        let check = |body: &str| {
            parse_verify_answer(200, Some(b"application/json"), None, body.as_bytes(), now)
        };
        assert_eq!(check(r#"{"valid":true}"#), Ok(ProofCheck::Verified { lifetime: None }));
        assert_eq!(
            check(r#"{"valid":true,"ttl_seconds":60}"#),
            Ok(ProofCheck::Verified { lifetime: Some(Duration::from_secs(60)) })
        );
        assert_eq!(
            check(r#"{"valid":true,"expires_at":"2026-03-26T12:05:00Z","ttl_seconds":600}"#),
            Ok(ProofCheck::Verified { lifetime: Some(Duration::from_secs(300)) })
        );
        assert_eq!(
            check(r#"{"valid":true,"expires_at":"2026-03-26T11:00:00Z"}"#),
            Ok(ProofCheck::Refused)
        );
        assert_eq!(check(r#"{"valid":true,"ttl_seconds":0}"#), Ok(ProofCheck::Refused));
        assert_eq!(check(r#"{"valid":false}"#), Ok(ProofCheck::Refused));
        assert_eq!(check(r#"{"valid":"true"}"#), Ok(ProofCheck::Refused));
        assert_eq!(check(r#"{}"#), Ok(ProofCheck::Refused));
        assert!(matches!(check("nope"), Err(Failure::InvalidBody(_))));
        assert_eq!(parse_verify_answer(500, None, None, b"{}", now), Err(Failure::Status(500)));
        assert_eq!(
            parse_verify_answer(401, None, None, b"{}", now),
            Err(Failure::Unauthorized(401))
        );
    }

    #[test]
    fn decision_lifetime_is_read_tolerantly() {
        let lifetime =
            |extra: &str| ok(&format!(r#"{{"action":"block"{extra}}}"#)).unwrap().lifetime;
        assert_eq!(lifetime(""), None);
        assert_eq!(lifetime(r#","ttl_seconds":30"#), Some(Duration::from_secs(30)));
        assert_eq!(
            lifetime(r#","expires_at":"2026-03-26T12:01:00Z""#),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            lifetime(r#","expires_at":"2026-03-26T12:01:00Z","ttl_seconds":10"#),
            Some(Duration::from_secs(10)),
            "the sooner wins"
        );
        for over in [
            r#","ttl_seconds":0"#,
            r#","ttl_seconds":-5"#,
            r#","expires_at":"2026-03-26T11:59:59Z""#,
            r#","expires_at":"2026-03-26T12:01:00Z","ttl_seconds":0"#,
        ] {
            assert_eq!(lifetime(over), Some(Duration::ZERO), "{over}: this request only");
        }
        for unusable in [
            r#","ttl_seconds":"30""#,
            r#","ttl_seconds":1.5"#,
            r#","expires_at":"tomorrow""#,
            r#","expires_at":12"#,
        ] {
            assert_eq!(lifetime(unusable), None, "{unusable}");
        }
    }

    #[test]
    fn rate_limited_with_retry_after() {
        let limited =
            |retry_after: Option<&[u8]>| parse_answer(429, None, None, retry_after, b"{}", now());
        let after =
            |secs| Err(Failure::RateLimited { retry_after: Some(Duration::from_secs(secs)) });
        assert_eq!(limited(None), Err(Failure::RateLimited { retry_after: None }));
        assert_eq!(limited(Some(b"5")), after(5));
        assert_eq!(limited(Some(b" 7 ")), after(7));
        assert_eq!(limited(Some(b"0")), after(0));
        assert_eq!(limited(Some(b"3600")), after(60), "capped");
        assert_eq!(limited(Some(b"99999999999999999999999")), after(60));
        assert_eq!(limited(Some(b"Thu, 26 Mar 2026 12:00:09 GMT")), after(9));
        assert_eq!(limited(Some(b"Thu, 26 Mar 2026 13:00:00 GMT")), after(60));
        assert_eq!(limited(Some(b"Thu, 26 Mar 2026 11:00:00 GMT")), after(0));
        for garbage in [&b""[..], b"-5", b"+5", b"5s", b"1.5", b"soon", b"\xff"] {
            assert_eq!(
                limited(Some(garbage)),
                Err(Failure::RateLimited { retry_after: None }),
                "{garbage:?}"
            );
        }
        assert_eq!(
            parse_verify_answer(429, None, Some(b"2"), b"", now()),
            Err(Failure::RateLimited { retry_after: Some(Duration::from_secs(2)) })
        );
        assert_eq!(
            parse_answer(503, None, None, Some(b"5"), b"{}", now()),
            Err(Failure::Status(503)),
            "Retry-After matters only with 429"
        );
    }

    #[test]
    fn availability_failures() {
        for failure in [
            Failure::Timeout,
            Failure::Transport("connection refused".into()),
            Failure::Status(500),
            Failure::Status(503),
            Failure::RateLimited { retry_after: None },
        ] {
            assert!(failure.is_availability_failure(), "{failure:?}");
        }
        for failure in [
            Failure::Status(400),
            Failure::Status(413),
            Failure::Status(422),
            Failure::Status(404),
            Failure::Status(302),
            Failure::Unauthorized(401),
            Failure::TooLarge,
            Failure::ContentType("text/html".into()),
            Failure::InvalidBody("x".into()),
            Failure::UnknownAction("x".into()),
            Failure::BadRedirect("x".into()),
            Failure::Overloaded(10),
            Failure::CircuitOpen,
        ] {
            assert!(!failure.is_availability_failure(), "{failure:?}");
        }
    }

    #[test]
    fn reasons_are_printable() {
        assert_eq!(
            Failure::RateLimited { retry_after: Some(Duration::from_secs(5)) }.to_string(),
            "rate limited by Esper (429), retry after 5 s"
        );
        assert_eq!(
            Failure::RateLimited { retry_after: None }.to_string(),
            "rate limited by Esper (429)"
        );
        assert_eq!(Failure::RateLimited { retry_after: None }.result().as_str(), "error");
        assert_eq!(Failure::Status(502).to_string(), "unexpected status 502");
        assert_eq!(Failure::Timeout.result().as_str(), "timeout");
        assert_eq!(Failure::Status(502).result().as_str(), "error");
        assert_eq!(ok("{\"action\":\"a\\nb\"}"), Err(Failure::UnknownAction("a?b".into())));
    }
}
