//! The pass cookie: proof that this visitor (client IP and user agent, Esper's
//! default entity) solved a challenge, valid until its expiry.
//!
//! The module issues it itself and checks it locally: the value is
//! `v1.<expiry>.<mac>`, where `mac` is HMAC-SHA256 over the version, the expiry
//! and the entity, so it cannot be forged, extended, or moved to another client.
//!
//! Checking costs an HMAC, and a request may carry hundreds of cookies: the
//! shape and the expiry of a value are checked first, without the key, and
//! at most [`MAX_PASS_CANDIDATES`] values per request get as far as the HMAC.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Shortest accepted signing key.
pub const MIN_KEY_BYTES: usize = 32;

/// Most cookie values of the right shape checked per request; a visitor's
/// browser sends one, rarely two (a cookie for a parent domain or path).
pub const MAX_PASS_CANDIDATES: usize = 4;

const VERSION: &str = "v1";

/// HMAC-SHA256 tag, and its base64url length without padding.
const TAG_BYTES: usize = 32;
const TAG_TEXT_BYTES: usize = 43;

#[cfg(test)]
thread_local! {
    /// HMACs computed by this thread, for the tests of the CPU bound.
    static MACS_COMPUTED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The signing key of pass cookies.
#[derive(Clone)]
pub struct PassKey(Vec<u8>);

impl PassKey {
    pub fn new(key: Vec<u8>) -> Result<PassKey, String> {
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the key has {} bytes, at least {MIN_KEY_BYTES} are needed",
                key.len()
            ));
        }
        Ok(PassKey(key))
    }

    fn mac(&self, expiry: u64, client_ip: &[u8], user_agent: &[u8]) -> Hmac<Sha256> {
        #[cfg(test)]
        MACS_COMPUTED.with(|n| n.set(n.get() + 1));
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        // Lengths make the fields unambiguous whatever bytes they hold.
        for part in [VERSION.as_bytes(), expiry.to_string().as_bytes(), client_ip, user_agent] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// A cookie value for this entity that expires at `expiry`.
    pub fn issue(&self, expiry: SystemTime, client_ip: &[u8], user_agent: &[u8]) -> String {
        let expiry = unix_seconds(expiry);
        let tag = self.mac(expiry, client_ip, user_agent).finalize().into_bytes();
        format!("{VERSION}.{expiry}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// True when `value` was issued with this key for this entity and has not
    /// expired at `now`. The tag comparison is constant-time.
    pub fn verify(
        &self,
        value: &[u8],
        now: SystemTime,
        client_ip: &[u8],
        user_agent: &[u8],
    ) -> bool {
        Candidate::parse(value, now).is_some_and(|c| self.signed(&c, client_ip, user_agent))
    }

    /// True when one of the first [`MAX_PASS_CANDIDATES`] well-formed,
    /// unexpired values of cookie `name` in `cookie_headers` (the values of
    /// the request's `Cookie` headers) verifies.
    pub fn verify_cookies<'a>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'a [u8]>,
        name: &str,
        now: SystemTime,
        client_ip: &[u8],
        user_agent: &[u8],
    ) -> bool {
        cookie_headers
            .into_iter()
            .flat_map(|header| cookie_values(header, name))
            .filter_map(|value| Candidate::parse(value, now))
            .take(MAX_PASS_CANDIDATES)
            .any(|c| self.signed(&c, client_ip, user_agent))
    }

    fn signed(&self, candidate: &Candidate, client_ip: &[u8], user_agent: &[u8]) -> bool {
        self.mac(candidate.expiry, client_ip, user_agent).verify_slice(&candidate.tag).is_ok()
    }
}

/// A cookie value of the right shape that has not expired: worth an HMAC.
struct Candidate {
    expiry: u64,
    tag: [u8; TAG_BYTES],
}

impl Candidate {
    /// Everything that can be checked without the key: version, an expiry in
    /// canonical decimal that is still ahead of `now`, a tag of the right
    /// length.
    fn parse(value: &[u8], now: SystemTime) -> Option<Candidate> {
        let value = std::str::from_utf8(value).ok()?;
        let mut parts = value.splitn(3, '.');
        let (Some(VERSION), Some(expiry), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        // Digits only, no leading zero: one expiry has one spelling.
        if !expiry.bytes().all(|b| b.is_ascii_digit()) || expiry.starts_with('0') {
            return None;
        }
        let expiry = expiry.parse::<u64>().ok()?;
        if expiry <= unix_seconds(now) || tag.len() != TAG_TEXT_BYTES {
            return None;
        }
        let mut candidate = Candidate { expiry, tag: [0; TAG_BYTES] };
        let decoded = URL_SAFE_NO_PAD.decode_slice(tag, &mut candidate.tag).ok()?;
        (decoded == TAG_BYTES).then_some(candidate)
    }
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The `Set-Cookie` value for a pass cookie that lives `max_age`.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}", max_age.as_secs())
}

/// Every value of cookie `name` in a `Cookie` header; a client may send several.
pub fn cookie_values<'a>(header: &'a [u8], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    crate::payload::cookie_pairs(header)
        .filter_map(move |(pair_name, value)| (pair_name == name.as_bytes()).then_some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PassKey {
        PassKey::new(vec![7; 32]).unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn round_trip() {
        let value = key().issue(at(1_000_900), b"203.0.113.7", b"Mozilla/5.0");
        assert!(value.starts_with("v1.1000900."));
        assert!(key().verify(value.as_bytes(), at(1_000_000), b"203.0.113.7", b"Mozilla/5.0"));
    }

    #[test]
    fn refuses_expired_moved_forged_and_tampered() {
        let value = key().issue(at(1_000_900), b"203.0.113.7", b"UA");
        let v = value.as_bytes();
        assert!(!key().verify(v, at(1_000_900), b"203.0.113.7", b"UA"), "expired");
        assert!(!key().verify(v, at(1_000_000), b"203.0.113.8", b"UA"), "other IP");
        assert!(!key().verify(v, at(1_000_000), b"203.0.113.7", b"UA2"), "other user agent");
        let other = PassKey::new(vec![8; 32]).unwrap();
        assert!(!other.verify(v, at(1_000_000), b"203.0.113.7", b"UA"), "other key");
        let extended = value.replacen("1000900", "9999999", 1);
        assert!(
            !key().verify(extended.as_bytes(), at(1_000_000), b"203.0.113.7", b"UA"),
            "extended"
        );
        let mut flipped = value.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(!key().verify(&flipped, at(1_000_000), b"203.0.113.7", b"UA"), "tampered tag");
        for junk in [&b""[..], b"v1", b"v1.x.y", b"v2.1000900.abc", b"v1.1000900.!!!", b"\xff\xfe"]
        {
            assert!(!key().verify(junk, at(1_000_000), b"203.0.113.7", b"UA"));
        }
    }

    fn macs_computed() -> usize {
        MACS_COMPUTED.with(|n| n.get())
    }

    #[test]
    fn malformed_or_expired_values_never_reach_the_hmac() {
        let value = key().issue(at(1_000_900), b"203.0.113.7", b"UA");
        let (head, tag) = value.rsplit_once('.').unwrap();
        let before = macs_computed();
        for bad in [
            format!("{head}.{}", &tag[1..]),
            format!("{head}.{tag}A"),
            format!("{head}.{}", "A".repeat(4000)),
            format!("v1.01000900.{tag}"),
            format!("v1.+1000900.{tag}"),
            format!("v1.{}.{tag}", "9".repeat(30)),
            format!("v1..{tag}"),
            format!("v2.1000900.{tag}"),
            format!("{head}.{}!", &tag[1..]),
        ] {
            assert!(!key().verify(bad.as_bytes(), at(1_000_000), b"203.0.113.7", b"UA"), "{bad}");
        }
        assert!(!key().verify(value.as_bytes(), at(1_000_900), b"203.0.113.7", b"UA"));
        assert_eq!(macs_computed(), before, "no HMAC for any of them");
        assert!(key().verify(value.as_bytes(), at(1_000_000), b"203.0.113.7", b"UA"));
        assert_eq!(macs_computed(), before + 1);
    }

    #[test]
    fn few_candidates_per_request() {
        let good = key().issue(at(1_000_900), b"203.0.113.7", b"UA");
        let forged = format!("v1.1000900.{}", "A".repeat(TAG_TEXT_BYTES));
        let many: String = (0..500).map(|_| format!("esper_challenge={forged}; ")).collect();
        let header = format!("{many}esper_challenge={good}");
        let before = macs_computed();
        assert!(!key().verify_cookies(
            [header.as_bytes()],
            "esper_challenge",
            at(1_000_000),
            b"203.0.113.7",
            b"UA"
        ));
        assert_eq!(macs_computed() - before, MAX_PASS_CANDIDATES);

        // Malformed and expired values are not candidates: they take no turn.
        let expired = key().issue(at(999_000), b"203.0.113.7", b"UA");
        let junk: String = (0..500)
            .map(|i| {
                format!("esper_challenge=v1.{i}.x; esper_challenge={expired}; other={forged}; ")
            })
            .collect();
        let before = macs_computed();
        assert!(key().verify_cookies(
            [junk.as_bytes(), b"a=b", format!("esper_challenge={good}").as_bytes()],
            "esper_challenge",
            at(1_000_000),
            b"203.0.113.7",
            b"UA"
        ));
        assert_eq!(macs_computed() - before, 1);
        assert!(!key().verify_cookies(
            [format!("esper_challenge={good}").as_bytes()],
            "esper_challenge",
            at(1_000_000),
            b"203.0.113.8",
            b"UA"
        ));
        assert!(!key().verify_cookies(
            std::iter::empty(),
            "esper_challenge",
            at(1_000_000),
            b"203.0.113.7",
            b"UA"
        ));
    }

    #[test]
    fn entity_fields_cannot_be_shifted() {
        let value = key().issue(at(2_000_000), b"1.2.3.4", b"5UA");
        assert!(!key().verify(value.as_bytes(), at(1), b"1.2.3.45", b"UA"));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(PassKey::new(vec![1; 31]).is_err());
    }

    #[test]
    fn set_cookie_attributes() {
        assert_eq!(
            set_cookie("esper_challenge", "v1.1.x", Duration::from_secs(900), false),
            "esper_challenge=v1.1.x; Path=/; Max-Age=900; HttpOnly; SameSite=Lax"
        );
        assert!(set_cookie("n", "v", Duration::from_secs(1), true).ends_with("; Secure"));
    }

    #[test]
    fn finds_cookie_values() {
        let found: Vec<_> =
            cookie_values(b"a=1; esper_challenge=x; b=2;esper_challenge = y ", "esper_challenge")
                .collect();
        assert_eq!(found, vec![&b"x"[..], b"y"]);
        assert_eq!(cookie_values(b"xesper_challenge=1", "esper_challenge").count(), 0);
    }
}
