//! The managed-challenge side of the mock: a visitor "solves" a challenge at
//! `/challenge/solve`, comes back with `esper_challenge_proof=<token>`, and the
//! module verifies the token at `/api/v1/challenge/proof/verify`.
//!
//! Tokens issued by `solve` are valid; tests also script the verify answer by
//! the token's prefix (see [`verdict`]).

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

/// What the verify endpoint does with one token.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// 200 with this JSON body.
    Answer(Value),
    /// 500.
    Fail,
    /// 200 with a body that is not JSON.
    Junk,
    /// Never answer.
    Hang,
}

/// Token prefixes: `valid-` valid; `ttl<N>-` valid for N seconds
/// (`ttl_seconds`); `exp<N>-` valid until now + N seconds (`expires_at`);
/// `slow-` hangs; `fail-` answers 500; `junk-` answers a body that is not JSON.
/// `issued` tokens are valid, with the lifetime given at solve time. Anything
/// else is `{"valid": false}`.
pub fn verdict(token: &str, issued: Option<Option<u64>>) -> Verdict {
    if let Some(ttl) = issued {
        return Verdict::Answer(match ttl {
            Some(ttl) => json!({"valid": true, "ttl_seconds": ttl}),
            None => json!({"valid": true}),
        });
    }
    let number = |prefix: &str| -> Option<u64> {
        token.strip_prefix(prefix)?.split('-').next()?.parse().ok()
    };
    if token.starts_with("valid-") {
        Verdict::Answer(json!({"valid": true}))
    } else if let Some(ttl) = number("ttl") {
        Verdict::Answer(json!({"valid": true, "ttl_seconds": ttl}))
    } else if let Some(secs) = number("exp") {
        let at = SystemTime::now() + Duration::from_secs(secs);
        Verdict::Answer(json!({"valid": true, "expires_at": rfc3339(at)}))
    } else if token.starts_with("slow-") {
        Verdict::Hang
    } else if token.starts_with("fail-") {
        Verdict::Fail
    } else if token.starts_with("junk-") {
        Verdict::Junk
    } else {
        Verdict::Answer(json!({"valid": false}))
    }
}

/// The token a verify request carries (`proof`, or `token`).
pub fn token_of(body: &Value) -> Option<&str> {
    body.get("proof").or_else(|| body.get("token"))?.as_str()
}

/// Where `/challenge/solve` sends the visitor: the return URL with the proof
/// appended.
pub fn return_location(return_url: &str, token: &str) -> String {
    let separator = if return_url.contains('?') { '&' } else { '?' };
    let token: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
    format!("{return_url}{separator}esper_challenge_proof={token}")
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_tokens() {
        assert_eq!(
            verdict("valid-1", None),
            Verdict::Answer(json!({"valid": true}))
        );
        assert_eq!(
            verdict("ttl5-x", None),
            Verdict::Answer(json!({"valid": true, "ttl_seconds": 5}))
        );
        assert!(
            matches!(verdict("exp60-x", None), Verdict::Answer(v) if v["expires_at"].is_string())
        );
        assert_eq!(verdict("slow-1", None), Verdict::Hang);
        assert_eq!(verdict("fail-1", None), Verdict::Fail);
        assert_eq!(verdict("junk-1", None), Verdict::Junk);
        assert_eq!(
            verdict("anything", None),
            Verdict::Answer(json!({"valid": false}))
        );
        assert_eq!(
            verdict("proof-1", Some(Some(9))),
            Verdict::Answer(json!({"valid": true, "ttl_seconds": 9}))
        );
        assert_eq!(
            verdict("proof-1", Some(None)),
            Verdict::Answer(json!({"valid": true}))
        );
    }

    #[test]
    fn return_locations() {
        assert_eq!(
            return_location("http://a/p", "t 1"),
            "http://a/p?esper_challenge_proof=t+1"
        );
        assert_eq!(
            return_location("http://a/p?x=1", "t"),
            "http://a/p?x=1&esper_challenge_proof=t"
        );
        assert_eq!(token_of(&json!({"proof": "a", "token": "b"})), Some("a"));
        assert_eq!(token_of(&json!({"token": "b"})), Some("b"));
        assert_eq!(token_of(&json!({})), None);
    }
}
