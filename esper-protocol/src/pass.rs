//! The pass cookie: proof that this visitor (client IP and user agent, Esper's
//! default entity) solved a challenge on this site for this Esper project,
//! valid until its expiry and for no longer than the checking location's
//! `esper_pass_ttl`.
//!
//! The module issues it itself and checks it locally: the value is
//! `v2.<issued>.<expiry>.<mac>`, where `mac` is HMAC-SHA256 over the version,
//! both times, the entity and the [`PassScope`]'s site and project, so it
//! cannot be forged, extended, or moved to another client, site or project.
//!
//! Checking costs an HMAC, and a request may carry hundreds of cookies: the
//! shape and the times of a value are checked first, without the key, and
//! at most [`MAX_PASS_CANDIDATES`] values per request get as far as the HMAC.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Shortest accepted signing key.
pub const MIN_KEY_BYTES: usize = 32;

/// Most cookie values of the right shape checked per request; a visitor's
/// browser sends one, rarely two (a cookie for a parent domain or path).
pub const MAX_PASS_CANDIDATES: usize = 4;

/// How far ahead of this machine's clock a cookie's issue time may be: the
/// clocks of machines that share `esper_pass_secret_file` drift a little.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The name prefix browsers keep for cookies set with `Secure` over https,
/// so that a plain-http response can never overwrite them.
pub const SECURE_PREFIX: &str = "__Secure-";

const VERSION: &str = "v2";

/// HMAC-SHA256 tag, and its base64url length without padding.
const TAG_BYTES: usize = 32;
const TAG_TEXT_BYTES: usize = 43;

#[cfg(test)]
thread_local! {
    /// HMACs computed by this thread, for the tests of the CPU bound.
    static MACS_COMPUTED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The Esper project a pass was earned under: a digest of the API URL and
/// key, so that a pass never lets a visitor past a location that asks
/// another project (whose rules may block it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Project([u8; 32]);

impl Project {
    pub fn new(api_url: &str, api_key: &[u8]) -> Project {
        let mut hash = Sha256::new();
        for part in [api_url.as_bytes(), api_key] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        Project(hash.finalize().into())
    }
}

/// Whom and where a pass is for: the visitor, the site (the `server` block's
/// name and the request's host) and the Esper project.
pub struct PassScope<'a> {
    pub client_ip: &'a [u8],
    pub user_agent: &'a [u8],
    pub server: &'a [u8],
    pub host: &'a [u8],
    pub project: &'a Project,
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

    fn mac(&self, issued: u64, expiry: u64, scope: &PassScope) -> Hmac<Sha256> {
        #[cfg(test)]
        MACS_COMPUTED.with(|n| n.set(n.get() + 1));
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        // Lengths make the fields unambiguous whatever bytes they hold.
        for part in [
            VERSION.as_bytes(),
            issued.to_string().as_bytes(),
            expiry.to_string().as_bytes(),
            scope.client_ip,
            scope.user_agent,
            scope.server,
            scope.host,
            &scope.project.0,
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// A cookie value for this scope, issued at `issued`, that expires at
    /// `expiry`.
    pub fn issue(&self, issued: SystemTime, expiry: SystemTime, scope: &PassScope) -> String {
        let (issued, expiry) = (unix_seconds(issued), unix_seconds(expiry));
        let tag = self.mac(issued, expiry, scope).finalize().into_bytes();
        format!("{VERSION}.{issued}.{expiry}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// True when `value` was issued with this key for this scope, has not
    /// expired at `now` and is younger than `max_age`. The tag comparison is
    /// constant-time.
    pub fn verify(
        &self,
        value: &[u8],
        now: SystemTime,
        max_age: Duration,
        scope: &PassScope,
    ) -> bool {
        Candidate::parse(value, now, max_age).is_some_and(|c| self.signed(&c, scope))
    }

    /// True when one of the first [`MAX_PASS_CANDIDATES`] well-formed, live
    /// values of the cookies `names` in `cookie_headers` (the values of the
    /// request's `Cookie` headers) verifies.
    pub fn verify_cookies<'a>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'a [u8]>,
        names: &[&str],
        now: SystemTime,
        max_age: Duration,
        scope: &PassScope,
    ) -> bool {
        cookie_headers
            .into_iter()
            .flat_map(crate::payload::cookie_pairs)
            .filter(|(name, _)| names.iter().any(|n| n.as_bytes() == *name))
            .filter_map(|(_, value)| Candidate::parse(value, now, max_age))
            .take(MAX_PASS_CANDIDATES)
            .any(|c| self.signed(&c, scope))
    }

    fn signed(&self, candidate: &Candidate, scope: &PassScope) -> bool {
        self.mac(candidate.issued, candidate.expiry, scope).verify_slice(&candidate.tag).is_ok()
    }
}

/// A cookie value of the right shape whose times hold at `now`: worth an HMAC.
struct Candidate {
    issued: u64,
    expiry: u64,
    tag: [u8; TAG_BYTES],
}

impl Candidate {
    /// Everything that can be checked without the key: version, times in
    /// canonical decimal (issued not ahead of `now` beyond [`CLOCK_SKEW`],
    /// no older than `max_age`, expiry still ahead), a tag of the right
    /// length.
    fn parse(value: &[u8], now: SystemTime, max_age: Duration) -> Option<Candidate> {
        let value = std::str::from_utf8(value).ok()?;
        let mut parts = value.splitn(4, '.');
        let (Some(VERSION), Some(issued), Some(expiry), Some(tag)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let (issued, expiry) = (canonical_number(issued)?, canonical_number(expiry)?);
        let now = unix_seconds(now);
        let live = expiry > now
            && issued <= now.saturating_add(CLOCK_SKEW.as_secs())
            && now < issued.saturating_add(max_age.as_secs());
        if !live || tag.len() != TAG_TEXT_BYTES {
            return None;
        }
        let mut candidate = Candidate { issued, expiry, tag: [0; TAG_BYTES] };
        let decoded = URL_SAFE_NO_PAD.decode_slice(tag, &mut candidate.tag).ok()?;
        (decoded == TAG_BYTES).then_some(candidate)
    }
}

/// Digits only, no leading zero: one time has one spelling.
fn canonical_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.starts_with('0') {
        return None;
    }
    text.parse().ok()
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `SameSite` of the pass cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    /// Sent in cross-site frames too (a protected page embedded elsewhere);
    /// browsers take it only with `Secure`.
    None,
}

impl SameSite {
    fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

/// `esper_pass_cookie`: the cookie's name and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassCookie {
    pub name: String,
    /// `secure`: `Secure` even when nginx's own connection is plain HTTP
    /// (TLS ends in front of it).
    pub force_secure: bool,
    pub same_site: SameSite,
    /// `partitioned`: CHIPS, for a page embedded in another site.
    pub partitioned: bool,
}

impl PassCookie {
    pub fn new(name: String) -> PassCookie {
        PassCookie { name, force_secure: false, same_site: SameSite::Lax, partitioned: false }
    }

    /// Whether the cookie gets `Secure` on a response over `https` (nginx's
    /// own connection); `SameSite=None` and `Partitioned` need it.
    pub fn secure(&self, https: bool) -> bool {
        https || self.force_secure || self.same_site == SameSite::None || self.partitioned
    }

    /// The name the cookie is set under: with `Secure`, the `__Secure-`
    /// prefix, so that the site's plain-http pages (whose cookie of the
    /// plain name a browser refuses to let overwrite a secure one) have a
    /// cookie of their own.
    pub fn name_for(&self, secure: bool) -> Cow<'_, str> {
        if secure {
            Cow::Owned(format!("{SECURE_PREFIX}{}", self.name))
        } else {
            Cow::Borrowed(&self.name)
        }
    }

    /// The names a pass may come under: both, since a request over https
    /// carries the plain-http page's cookie too.
    pub fn names(&self) -> [String; 2] {
        [self.name_for(true).into_owned(), self.name.clone()]
    }

    /// The `Set-Cookie` value for a pass that lives `max_age`.
    pub fn set_cookie(&self, value: &str, max_age: Duration, https: bool) -> String {
        let secure = self.secure(https);
        let mut cookie = format!(
            "{}={value}; Path=/; Max-Age={}; HttpOnly; SameSite={}",
            self.name_for(secure),
            max_age.as_secs(),
            self.same_site.as_str()
        );
        if secure {
            cookie.push_str("; Secure");
        }
        if self.partitioned {
            cookie.push_str("; Partitioned");
        }
        cookie
    }
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

    const DAY: Duration = Duration::from_secs(86_400);

    fn project() -> &'static Project {
        static PROJECT: std::sync::OnceLock<Project> = std::sync::OnceLock::new();
        PROJECT.get_or_init(|| Project::new("https://api.esperr.com", b"sk_a"))
    }

    fn scope<'a>(ip: &'a [u8], ua: &'a [u8]) -> PassScope<'a> {
        PassScope {
            client_ip: ip,
            user_agent: ua,
            server: b"a.example",
            host: b"a.example",
            project: project(),
        }
    }

    #[test]
    fn round_trip() {
        let ua = scope(b"203.0.113.7", b"Mozilla/5.0");
        let value = key().issue(at(1_000_000), at(1_000_900), &ua);
        assert!(value.starts_with("v2.1000000.1000900."));
        assert!(key().verify(value.as_bytes(), at(1_000_000), DAY, &ua));
    }

    #[test]
    fn refuses_expired_moved_forged_and_tampered() {
        let here = scope(b"203.0.113.7", b"UA");
        let value = key().issue(at(1_000_000), at(1_000_900), &here);
        let v = value.as_bytes();
        assert!(!key().verify(v, at(1_000_900), DAY, &here), "expired");
        assert!(!key().verify(v, at(1_000_000), DAY, &scope(b"203.0.113.8", b"UA")), "other IP");
        assert!(!key().verify(v, at(1_000_000), DAY, &scope(b"203.0.113.7", b"UA2")), "other UA");
        let other = PassKey::new(vec![8; 32]).unwrap();
        assert!(!other.verify(v, at(1_000_000), DAY, &here), "other key");
        let extended = value.replacen("1000900", "9999999", 1);
        assert!(!key().verify(extended.as_bytes(), at(1_000_000), DAY, &here), "extended");
        let younger = value.replacen("1000000", "1000100", 1);
        assert!(!key().verify(younger.as_bytes(), at(1_000_200), DAY, &here), "made younger");
        let mut flipped = value.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(!key().verify(&flipped, at(1_000_000), DAY, &here), "tampered tag");
        for junk in
            [&b""[..], b"v2", b"v2.x.y.z", b"v1.1000900.abc", b"v2.1.1000900.!!!", b"\xff\xfe"]
        {
            assert!(!key().verify(junk, at(1_000_000), DAY, &here));
        }
    }

    #[test]
    fn bound_to_the_site_and_the_project() {
        let here = scope(b"203.0.113.7", b"UA");
        let value = key().issue(at(1_000_000), at(1_000_900), &here);
        let v = value.as_bytes();
        let other_project = Project::new("https://api.esperr.com", b"sk_b");
        let other_url = Project::new("https://eu.api.esperr.com", b"sk_a");
        for (what, elsewhere) in [
            (
                "other server block",
                PassScope { server: b"b.example", ..scope(b"203.0.113.7", b"UA") },
            ),
            ("other host", PassScope { host: b"b.example", ..scope(b"203.0.113.7", b"UA") }),
            (
                "other API key",
                PassScope { project: &other_project, ..scope(b"203.0.113.7", b"UA") },
            ),
            ("other API URL", PassScope { project: &other_url, ..scope(b"203.0.113.7", b"UA") }),
        ] {
            assert!(!key().verify(v, at(1_000_000), DAY, &elsewhere), "{what}");
        }
        assert!(key().verify(v, at(1_000_000), DAY, &here));
    }

    #[test]
    fn never_older_than_the_checking_locations_ttl() {
        let here = scope(b"203.0.113.7", b"UA");
        let value = key().issue(at(1_000_000), at(1_003_600), &here);
        let v = value.as_bytes();
        let five_minutes = Duration::from_secs(300);
        assert!(key().verify(v, at(1_000_299), five_minutes, &here));
        assert!(!key().verify(v, at(1_000_300), five_minutes, &here), "older than the ttl");
        assert!(key().verify(v, at(1_003_599), DAY, &here), "a longer ttl keeps the expiry");
        assert!(!key().verify(v, at(1_003_600), DAY, &here));
        // Issued a little ahead of this clock (another machine's): accepted
        // within the skew, never beyond.
        assert!(key().verify(v, at(1_000_000 - 60), DAY, &here));
        assert!(!key().verify(v, at(1_000_000 - 61), DAY, &here));
    }

    fn macs_computed() -> usize {
        MACS_COMPUTED.with(|n| n.get())
    }

    #[test]
    fn malformed_or_expired_values_never_reach_the_hmac() {
        let here = scope(b"203.0.113.7", b"UA");
        let value = key().issue(at(1_000_000), at(1_000_900), &here);
        let (head, tag) = value.rsplit_once('.').unwrap();
        let before = macs_computed();
        for bad in [
            format!("{head}.{}", &tag[1..]),
            format!("{head}.{tag}A"),
            format!("{head}.{}", "A".repeat(4000)),
            format!("v2.1000000.01000900.{tag}"),
            format!("v2.01000000.1000900.{tag}"),
            format!("v2.1000000.+1000900.{tag}"),
            format!("v2.1000000.{}.{tag}", "9".repeat(30)),
            format!("v2.1000000..{tag}"),
            format!("v2..1000900.{tag}"),
            format!("v1.1000000.1000900.{tag}"),
            format!("{head}.{}!", &tag[1..]),
        ] {
            assert!(!key().verify(bad.as_bytes(), at(1_000_000), DAY, &here), "{bad}");
        }
        assert!(!key().verify(value.as_bytes(), at(1_000_900), DAY, &here));
        assert!(!key().verify(value.as_bytes(), at(1_000_500), Duration::from_secs(60), &here));
        assert_eq!(macs_computed(), before, "no HMAC for any of them");
        assert!(key().verify(value.as_bytes(), at(1_000_000), DAY, &here));
        assert_eq!(macs_computed(), before + 1);
    }

    #[test]
    fn few_candidates_per_request() {
        let here = scope(b"203.0.113.7", b"UA");
        let names = ["__Secure-esper_challenge", "esper_challenge"];
        let good = key().issue(at(1_000_000), at(1_000_900), &here);
        let forged = format!("v2.1000000.1000900.{}", "A".repeat(TAG_TEXT_BYTES));
        let many: String = (0..500).map(|_| format!("esper_challenge={forged}; ")).collect();
        let header = format!("{many}esper_challenge={good}");
        let before = macs_computed();
        assert!(!key().verify_cookies([header.as_bytes()], &names, at(1_000_000), DAY, &here));
        assert_eq!(macs_computed() - before, MAX_PASS_CANDIDATES);

        // Malformed and expired values are not candidates: they take no turn.
        let expired = key().issue(at(998_000), at(999_000), &here);
        let junk: String = (0..500)
            .map(|i| {
                format!("esper_challenge=v2.{i}.x; esper_challenge={expired}; other={forged}; ")
            })
            .collect();
        let before = macs_computed();
        let secure = format!("__Secure-esper_challenge={good}");
        assert!(key().verify_cookies(
            [junk.as_bytes(), b"a=b", secure.as_bytes()],
            &names,
            at(1_000_000),
            DAY,
            &here
        ));
        assert_eq!(macs_computed() - before, 1);
        let plain = format!("esper_challenge={good}");
        assert!(key().verify_cookies([plain.as_bytes()], &names, at(1_000_000), DAY, &here));
        assert!(!key().verify_cookies(
            [plain.as_bytes()],
            &names,
            at(1_000_000),
            DAY,
            &scope(b"203.0.113.8", b"UA")
        ));
        let other_name = format!("xesper_challenge={good}; __Host-esper_challenge={good}");
        assert!(!key().verify_cookies([other_name.as_bytes()], &names, at(1_000_000), DAY, &here));
        assert!(!key().verify_cookies(std::iter::empty(), &names, at(1_000_000), DAY, &here));
    }

    #[test]
    fn entity_fields_cannot_be_shifted() {
        let value = key().issue(at(1), at(2_000_000), &scope(b"1.2.3.4", b"5UA"));
        assert!(!key().verify(value.as_bytes(), at(1), DAY, &scope(b"1.2.3.45", b"UA")));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(PassKey::new(vec![1; 31]).is_err());
    }

    #[test]
    fn set_cookie_attributes() {
        let plain = PassCookie::new("esper_challenge".to_owned());
        let max_age = Duration::from_secs(900);
        assert_eq!(
            plain.set_cookie("v", max_age, false),
            "esper_challenge=v; Path=/; Max-Age=900; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            plain.set_cookie("v", max_age, true),
            "__Secure-esper_challenge=v; Path=/; Max-Age=900; HttpOnly; SameSite=Lax; Secure"
        );
        let behind_tls = PassCookie { force_secure: true, ..plain.clone() };
        assert_eq!(behind_tls.set_cookie("v", max_age, true), plain.set_cookie("v", max_age, true));
        assert_eq!(
            behind_tls.set_cookie("v", max_age, false),
            plain.set_cookie("v", max_age, true)
        );
        let embedded = PassCookie { same_site: SameSite::None, partitioned: true, ..plain.clone() };
        assert_eq!(
            embedded.set_cookie("v", max_age, false),
            "__Secure-esper_challenge=v; Path=/; Max-Age=900; HttpOnly; SameSite=None; Secure; Partitioned"
        );
        let partitioned = PassCookie { partitioned: true, ..plain.clone() };
        assert!(partitioned.secure(false), "Partitioned alone needs Secure");
        let none = PassCookie { same_site: SameSite::None, ..plain.clone() };
        assert!(none.secure(false), "SameSite=None alone needs Secure");
        assert!(!plain.secure(false) && plain.secure(true));
        let strict = PassCookie { same_site: SameSite::Strict, ..plain.clone() };
        assert!(strict.set_cookie("v", max_age, false).ends_with("; SameSite=Strict"));
        assert_eq!(
            plain.names(),
            ["__Secure-esper_challenge".to_owned(), "esper_challenge".to_owned()]
        );
    }
}
