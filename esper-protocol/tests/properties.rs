//! Property tests over everything that reads untrusted bytes: the payload
//! builder, the answer parsers, the proof query rewrite and the cookie codec.
//! No input may panic; the payload is always valid JSON. `make test` runs the
//! default number of cases; `make fuzz` runs many more (PROPTEST_CASES).

use std::time::{Duration, SystemTime};

use esper_protocol::answer::contract::MAX_RETRY_AFTER;
use esper_protocol::pass::{cookie_values, PassKey};
use esper_protocol::query::take_proof;
use esper_protocol::{
    build_payload, parse_answer, parse_verify_answer, Failure, PayloadSettings, RequestView,
};
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
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
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        prop_assert!(out.len() < 64 * 1024);
        prop_assert!(!v["fields"].as_object().unwrap().is_empty());
        prop_assert!(v["request"]["headers"].get("authorization").is_none());
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
            if let Some(url) = d.redirect_url {
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
        for v in cookie_values(&header, "esper_challenge") {
            prop_assert!(!key.verify(v, SystemTime::now(), b"1.2.3.4", b"ua"));
        }
        prop_assert!(!key.verify(&value, SystemTime::now(), b"1.2.3.4", b"ua"));
    }
}
