//! Property tests over everything that reads untrusted bytes: the payload
//! builder, the answer parsers, the proof query rewrite, the cookie codec and
//! the reading of `Accept`.
//! No input may panic; the payload is always valid JSON. `make test` runs the
//! default number of cases; `make fuzz` runs many more (PROPTEST_CASES).

use std::time::{Duration, SystemTime};

use esper_protocol::answer::contract::MAX_RETRY_AFTER;
use esper_protocol::pass::{PassKey, PassScope, Project};
use esper_protocol::payload::{
    MAX_ENTRIES, MAX_FIELDS_BYTES, MAX_MAP_BYTES, MAX_NAME_BYTES, MAX_PAYLOAD_BYTES,
    MAX_VALUE_BYTES,
};
use esper_protocol::query::take_proof;
use esper_protocol::response::{accepts_json, block_body, challenge_body, wants_json, JsonMode};
use esper_protocol::{
    build_payload, parse_answer, parse_verify_answer, verify_body, Failure, PayloadSettings,
    RequestView, Verdict,
};
use proptest::prelude::*;
use serde_json::Value;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// Bytes that grow the most on the way to JSON: control bytes (six bytes
/// escaped), invalid UTF-8 (three bytes as U+FFFD), quotes, a split character;
/// a short random pattern repeated, so that long values are cheap to make.
fn swelling(min: usize, max: usize) -> impl Strategy<Value = Vec<u8>> {
    let pattern = prop::collection::vec(
        prop_oneof![
            4 => Just(0x01u8),
            3 => Just(0xffu8),
            1 => Just(b'"'),
            1 => Just(0xc3u8),
            1 => Just(b'a'),
        ],
        1..8,
    );
    (pattern, min..max).prop_map(|(pattern, len)| pattern.into_iter().cycle().take(len).collect())
}

/// Size of a JSON value as serialized; a string's without its quotes.
fn json_len(v: &Value) -> usize {
    let len = serde_json::to_string(v).unwrap().len();
    if v.is_string() {
        len - 2
    } else {
        len
    }
}

/// Every documented payload bound, measured on the serialized JSON.
fn check_bounds(out: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(out.len() <= MAX_PAYLOAD_BYTES, "{} bytes", out.len());
    let v: Value = serde_json::from_slice(out).expect("valid JSON");
    let request = &v["request"];
    for short in [&v["source"], &v["idempotency_key"], &request["method"], &request["client_ip"]] {
        prop_assert!(json_len(short) <= MAX_NAME_BYTES);
    }
    for long in [&v["return_url"], &request["path"], &request["user_agent"]] {
        prop_assert!(long.is_null() || json_len(long) <= MAX_VALUE_BYTES);
    }
    let maps = [
        (&request["headers"], MAX_MAP_BYTES),
        (&request["query_params"], MAX_MAP_BYTES),
        (&request["cookies"], MAX_MAP_BYTES),
        (&v["fields"], MAX_FIELDS_BYTES),
    ];
    for (map, max) in maps {
        let Some(entries) = map.as_object() else {
            continue;
        };
        prop_assert!(json_len(map) <= max, "map of {} bytes", json_len(map));
        prop_assert!(entries.len() <= MAX_ENTRIES);
        for (name, value) in entries {
            prop_assert!(json_len(&Value::String(name.clone())) <= MAX_NAME_BYTES);
            prop_assert!(json_len(value) <= MAX_VALUE_BYTES);
        }
    }
    Ok(())
}

/// Bytes that look like query strings and cookies more often than noise does.
fn queryish(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b'&'),
            Just(b'='),
            Just(b'%'),
            Just(b'+'),
            Just(b';'),
            Just(b' '),
            Just(b'e'),
            any::<u8>(),
        ],
        0..max,
    )
    .prop_map(|mut v| {
        if v.len() > 4 {
            v.splice(0..0, b"esper_challenge_proof=".iter().copied());
        }
        v
    })
}

/// `Accept`-like bytes: the pieces its parser looks at, and any byte.
fn acceptish(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(&b"application/json"[..]),
        Just(&b"+json"[..]),
        Just(&b"*/*"[..]),
        Just(&b";q=0"[..]),
        Just(&b"q=0.5"[..]),
        Just(&b";"[..]),
        Just(&b","[..]),
        Just(&b"="[..]),
        Just(&b"\""[..]),
        Just(&b"\\"[..]),
        Just(&b" "[..]),
        Just(&b"."[..]),
    ]
    .prop_map(<[u8]>::to_vec);
    let any_byte = any::<u8>().prop_map(|b| vec![b]);
    prop::collection::vec(prop_oneof![3 => piece, 1 => any_byte], 0..max).prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn payload_is_always_valid_bounded_json(
        method in bytes(16),
        uri in queryish(512),
        ip in bytes(64),
        ua in prop::option::of(bytes(256)),
        id in bytes(64),
        headers in prop::collection::vec((bytes(32), bytes(128)), 0..80),
        fields in prop::collection::vec(("[a-z]{1,8}", bytes(64)), 0..4),
        cookies in any::<bool>(),
        return_url in prop::option::of(bytes(128)),
    ) {
        let view = RequestView {
            method: &method,
            unparsed_uri: &uri,
            client_ip: &ip,
            user_agent: ua.as_deref(),
            request_id: &id,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        };
        let fields: Vec<(&str, &[u8])> = fields.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        let settings = PayloadSettings {
            source: "nginx",
            return_url: return_url.as_deref(),
            fields: &fields,
            send_cookies: cookies,
        };
        let mut out = Vec::new();
        build_payload(&view, headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())), &settings, &mut out);
        check_bounds(&out)?;
        let v: Value = serde_json::from_slice(&out).expect("valid JSON");
        prop_assert!(!v["fields"].as_object().unwrap().is_empty());
        prop_assert!(v["request"]["headers"].get("authorization").is_none());
    }

    #[test]
    fn escaping_and_replacement_never_break_the_bounds(
        headers in prop::collection::vec((swelling(1, 400), swelling(0, 3000)), 0..80),
        cookies in prop::collection::vec(swelling(0, 3000), 0..20),
        ua in swelling(0, 3000),
        path in swelling(0, 3000),
        query in prop::collection::vec((swelling(1, 400), swelling(0, 3000)), 0..40),
        field in swelling(0, 3000),
    ) {
        let mut uri = b"/".to_vec();
        uri.extend_from_slice(&path);
        uri.push(b'?');
        for (name, value) in &query {
            for b in name.iter().chain(b"=").chain(value).chain(b"&") {
                match b {
                    b'=' | b'&' => uri.push(*b),
                    _ => uri.extend_from_slice(format!("%{b:02X}").as_bytes()),
                }
            }
        }
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = headers;
        for cookie in cookies {
            let mut header = b"c=".to_vec();
            header.extend_from_slice(&cookie);
            headers.push((b"Cookie".to_vec(), header));
        }
        let view = RequestView {
            method: &field,
            unparsed_uri: &uri,
            client_ip: &field,
            user_agent: Some(&ua),
            request_id: &field,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        };
        let fields: Vec<(&str, &[u8])> = vec![("a", &field), ("b", &ua), ("c", &path)];
        let settings = PayloadSettings {
            source: "nginx",
            return_url: Some(&path),
            fields: &fields,
            send_cookies: true,
        };
        let mut out = Vec::new();
        build_payload(&view, headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())), &settings, &mut out);
        check_bounds(&out)?;

        let verify: Value = serde_json::from_slice(&verify_body("t", &field, &ua)).expect("valid JSON");
        let payload: Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(&verify["client_ip"], &payload["request"]["client_ip"]);
        prop_assert_eq!(&verify["user_agent"], &payload["request"]["user_agent"]);
    }

    #[test]
    fn answers_never_panic(status in 100u16..600, ct in prop::option::of(bytes(40)),
                           id in prop::option::of(bytes(40)), retry_after in prop::option::of(bytes(40)),
                           body in bytes(512)) {
        let now = SystemTime::now();
        let answer = parse_answer(status, ct.as_deref(), id.as_deref(), retry_after.as_deref(), &body, now);
        if let Err(Failure::RateLimited { retry_after: Some(after) }) = answer {
            prop_assert!(after <= MAX_RETRY_AFTER);
        }
        let _ = parse_verify_answer(status, ct.as_deref(), retry_after.as_deref(), &body, now);
    }

    #[test]
    fn json_shaped_answers_never_panic(action in "[a-z]{0,10}", url in ".{0,64}", id in ".{0,20}",
                                       ttl in any::<i64>(), expires_at in ".{0,30}") {
        let body = serde_json::json!({
            "action": action, "redirect_url": url, "decision_id": id,
            "ttl_seconds": ttl, "expires_at": expires_at,
        }).to_string();
        if let Ok(d) = parse_answer(200, Some(b"application/json"), None, None, body.as_bytes(), SystemTime::now()) {
            prop_assert!(d.lifetime.is_none_or(|l| !l.is_zero()));
            if let Verdict::Challenge { redirect_url: url } = d.verdict {
                prop_assert!(url.starts_with("http://") || url.starts_with("https://"));
                prop_assert!(!url.chars().any(char::is_control));
            }
        }
    }

    #[test]
    fn proof_rewrite_keeps_everything_else(query in queryish(256)) {
        if let Some(proof) = take_proof(&query) {
            prop_assert!(take_proof(&proof.rest).is_none(), "no proof is left behind");
            prop_assert!(proof.rest.len() <= query.len());
        }
    }

    #[test]
    fn cookies_never_panic_and_never_verify_by_chance(header in queryish(256), value in bytes(80)) {
        let key = PassKey::new(vec![9; 32]).unwrap();
        let project = Project::new("https://api.esperr.com", b"k");
        let scope = PassScope {
            client_ip: b"1.2.3.4",
            user_agent: b"ua",
            server: b"s",
            host: b"h",
            project: &project,
        };
        let day = std::time::Duration::from_secs(86_400);
        let names = ["__Secure-esper_challenge", "esper_challenge"];
        prop_assert!(!key.verify_cookies([&header[..]], &names, SystemTime::now(), day, &scope));
        prop_assert!(!key.verify(&value, SystemTime::now(), day, &scope));
    }

    #[test]
    fn accept_never_panics_and_an_explicit_refusal_wins(a in acceptish(24), b in acceptish(24)) {
        let accepted = accepts_json([&a[..], &b[..]]);
        let headers: [(&[u8], &[u8]); 3] =
            [(b"Sec-Fetch-Mode", b"cors"), (b"Accept", &a), (b"accept", &b)];
        prop_assert_eq!(wants_json(JsonMode::Auto, headers), accepted);
        prop_assert!(!accepts_json([&a[..], b"application/json;q=0", &b[..]]));
    }

    #[test]
    fn json_bodies_carry_any_text(url in any::<String>(), id in prop::option::of(any::<String>())) {
        let challenge: Value = serde_json::from_str(&challenge_body(&url, id.as_deref())).unwrap();
        prop_assert_eq!(&challenge["action"], "challenge");
        prop_assert_eq!(&challenge["redirect_url"], url.as_str());
        let block: Value = serde_json::from_str(&block_body(id.as_deref())).unwrap();
        prop_assert_eq!(&block["action"], "block");
        for body in [&challenge, &block] {
            prop_assert_eq!(body.get("decision_id").and_then(Value::as_str), id.as_deref());
        }
    }
}
