//! The edges of the answer reader that mutation testing found untested:
//! the exact size bound, the decision id's fallback, the rounding of a
//! `Retry-After` date and which media types count as JSON; and the bounds
//! the documentation states.

use std::time::{Duration, SystemTime};

use esper_protocol::answer::contract::{self, MAX_ANSWER_BYTES};
use esper_protocol::{entity_table, parse_answer, payload, Failure, Verdict};

/// 2026-03-26T12:00:00.500Z: half a second past a whole second.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_774_526_400_500)
}

fn decide(content_type: &str, id_header: Option<&str>, body: &[u8]) -> Result<Verdict, Failure> {
    parse_answer(
        200,
        Some(content_type.as_bytes()),
        id_header.map(str::as_bytes),
        None,
        body,
        now(),
    )
    .map(|d| d.verdict)
}

/// `{"action":"allow"}` padded with spaces to `len` bytes.
fn padded(len: usize) -> Vec<u8> {
    let mut body = br#"{"action":"allow"}"#.to_vec();
    body.resize(len, b' ');
    body
}

#[test]
fn an_answer_of_exactly_the_bound_is_read_one_byte_more_is_not() {
    assert_eq!(decide("application/json", None, &padded(MAX_ANSWER_BYTES)), Ok(Verdict::Allow));
    assert_eq!(
        decide("application/json", None, &padded(MAX_ANSWER_BYTES + 1)),
        Err(Failure::TooLarge)
    );
}

#[test]
fn an_empty_decision_id_falls_back_to_the_header() {
    let id = |body: &str, header: Option<&str>| {
        parse_answer(200, None, header.map(str::as_bytes), None, body.as_bytes(), now())
            .unwrap()
            .decision_id
    };
    assert_eq!(id(r#"{"action":"allow","decision_id":""}"#, Some("h-1")), Some("h-1".to_owned()));
    assert_eq!(
        id(r#"{"action":"allow","decision_id":"b-1"}"#, Some("h-1")),
        Some("b-1".to_owned())
    );
    assert_eq!(id(r#"{"action":"allow","decision_id":""}"#, None), None);
    assert_eq!(id(r#"{"action":"allow"}"#, Some("")), None);
}

#[test]
fn a_retry_after_date_rounds_up_to_whole_seconds() {
    let limited = |value: &str| parse_answer(429, None, None, Some(value.as_bytes()), b"{}", now());
    // 12:00:10 is 9.5 s after `now`: ten seconds, never nine.
    assert_eq!(
        limited("Thu, 26 Mar 2026 12:00:10 GMT"),
        Err(Failure::RateLimited { retry_after: Some(Duration::from_secs(10)) })
    );
    assert_eq!(
        limited("Thu, 26 Mar 2026 12:00:00 GMT"),
        Err(Failure::RateLimited { retry_after: Some(Duration::ZERO) }),
        "a date already past is zero"
    );
}

#[test]
fn only_json_media_types_are_read() {
    for json in ["application/json", "Application/JSON; charset=utf-8", "application/problem+json"]
    {
        assert_eq!(decide(json, None, br#"{"action":"block"}"#), Ok(Verdict::Block), "{json}");
    }
    for other in
        ["application/xml", "application/jsonx", "text/json", "text/x+json", "application/", "json"]
    {
        assert!(
            matches!(decide(other, None, br#"{"action":"block"}"#), Err(Failure::ContentType(_))),
            "{other}"
        );
    }
}

/// The bounds the documentation gives in numbers (docs/esper-contract.md's
/// size limits and answer table, docs/directives.md's answer head and body,
/// docs/challenge.md and docs/security.md's largest payload): changing one
/// changes what operators were told, so it is done here too.
#[test]
fn the_bounds_are_the_documented_ones() {
    assert_eq!(MAX_ANSWER_BYTES, 64 * 1024);
    assert_eq!(contract::MAX_HEAD_BYTES, 16 * 1024);
    assert_eq!(contract::MAX_DECISION_ID_BYTES, 128);
    assert_eq!(payload::MAX_NAME_BYTES, 256);
    assert_eq!(payload::MAX_VALUE_BYTES, 2048);
    assert_eq!(payload::MAX_ENTRIES, 64);
    assert_eq!(payload::MAX_MAP_BYTES, 16 * 1024);
    assert_eq!(payload::MAX_FIELDS_BYTES, 4 * 1024);
    assert_eq!(payload::MAX_PAYLOAD_BYTES, 60_638);
    assert_eq!(entity_table::MAX_URL_BYTES, 1024);
}
