//! The JSON body of `POST /api/v1/runtime/mitigation` (ESPER_API.md §1).
//!
//! Input is whatever bytes the client sent; output is always valid JSON of a
//! bounded size. Non-UTF-8 bytes become U+FFFD; over-long values are cut (a
//! character split by the cut becomes U+FFFD too); beyond the entry limits, later
//! entries are left out. The limits below are the README's "payload bounds".

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// Longest name kept (header, query parameter, cookie, field).
pub const MAX_NAME_BYTES: usize = 256;
/// Longest value kept (path, user agent, URL, header, parameter, cookie, field).
pub const MAX_VALUE_BYTES: usize = 2048;
/// Most entries kept in each of `headers`, `query_params`, `cookies`.
pub const MAX_ENTRIES: usize = 64;
/// Most bytes of names and values kept in each of those maps.
pub const MAX_MAP_BYTES: usize = 16 * 1024;

/// Headers that carry credentials; they never leave nginx.
const SECRET_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// The request as nginx saw it, borrowed for the time it takes to serialize.
pub struct RequestView<'a> {
    pub method: &'a [u8],
    /// Path and query exactly as in the request line (`$request_uri`).
    pub unparsed_uri: &'a [u8],
    /// nginx's client address, after the realip module if configured.
    pub client_ip: &'a [u8],
    pub user_agent: Option<&'a [u8]>,
    /// Unique per request (`$request_id`).
    pub request_id: &'a [u8],
    pub started_at: SystemTime,
}

/// What the location's configuration adds to the payload.
pub struct PayloadSettings<'a> {
    pub source: &'a str,
    pub return_url: Option<&'a [u8]>,
    /// Evaluated `esper_field` pairs; never sent empty.
    pub fields: &'a [(&'a str, &'a [u8])],
    pub send_cookies: bool,
}

/// Serializes the decision request into `out` (cleared first).
pub fn build_payload<'a>(
    req: &RequestView<'a>,
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    settings: &PayloadSettings<'_>,
    out: &mut Vec<u8>,
) {
    let (path, query) = split_uri(req.unparsed_uri);

    let mut header_map = Pairs::default();
    let mut cookie_map = Pairs::default();
    for (name, value) in headers {
        let name = lower_text(name);
        if name == "cookie" && settings.send_cookies {
            add_cookies(&mut cookie_map, value);
        }
        if SECRET_HEADERS.contains(&name.as_ref()) {
            continue;
        }
        header_map.join(name, text(value, MAX_VALUE_BYTES));
    }

    let mut query_map = Pairs::default();
    if let Some(query) = query {
        for (name, value) in form_urlencoded::parse(query) {
            query_map.set(cut(name, MAX_NAME_BYTES), cut(value, MAX_VALUE_BYTES));
        }
    }

    let mut fields = Pairs::default();
    for (name, value) in settings.fields {
        fields.set(
            text(name.as_bytes(), MAX_NAME_BYTES),
            text(value, MAX_VALUE_BYTES),
        );
    }
    if fields.entries.is_empty() {
        // Esper rejects an empty `fields` map.
        fields.set(Cow::Borrowed("source"), Cow::Borrowed(settings.source));
    }

    let payload = Payload {
        source: settings.source,
        observed_at: format_observed_at(req.started_at),
        idempotency_key: text(req.request_id, MAX_NAME_BYTES),
        return_url: settings.return_url.map(|u| text(u, MAX_VALUE_BYTES)),
        request: RequestJson {
            method: text(req.method, MAX_NAME_BYTES),
            path: text(path, MAX_VALUE_BYTES),
            client_ip: text(req.client_ip, MAX_NAME_BYTES),
            user_agent: text(req.user_agent.unwrap_or_default(), MAX_VALUE_BYTES),
            headers: header_map,
            query_params: query_map,
            cookies: settings.send_cookies.then_some(cookie_map),
            route_params: Pairs::default(),
        },
        fields,
    };
    out.clear();
    serde_json::to_writer(&mut *out, &payload).expect("serializing to a Vec cannot fail");
}

/// Body of the proof verification call. Esper's field name is not published
/// (ESPER_API.md §2, INFERRED): the token goes under both candidate names.
pub fn verify_body(token: &str) -> Vec<u8> {
    let token = text(token.as_bytes(), MAX_VALUE_BYTES);
    serde_json::to_vec(&serde_json::json!({ "proof": token, "token": token }))
        .expect("serializing to a Vec cannot fail")
}

/// RFC 3339 UTC with milliseconds, as Esper's recipes send `observed_at`.
pub fn format_observed_at(at: SystemTime) -> String {
    let since_epoch = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let millis = Duration::from_millis(since_epoch.as_millis() as u64);
    humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + millis).to_string()
}

#[derive(Serialize)]
struct Payload<'a> {
    source: &'a str,
    observed_at: String,
    idempotency_key: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    return_url: Option<Cow<'a, str>>,
    request: RequestJson<'a>,
    fields: Pairs<'a>,
}

#[derive(Serialize)]
struct RequestJson<'a> {
    method: Cow<'a, str>,
    path: Cow<'a, str>,
    client_ip: Cow<'a, str>,
    user_agent: Cow<'a, str>,
    headers: Pairs<'a>,
    query_params: Pairs<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cookies: Option<Pairs<'a>>,
    route_params: Pairs<'a>,
}

/// A JSON object of strings that keeps first-seen order and stays within
/// [`MAX_ENTRIES`] and [`MAX_MAP_BYTES`].
#[derive(Default)]
struct Pairs<'a> {
    entries: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    bytes: usize,
}

impl<'a> Pairs<'a> {
    fn position(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|(n, _)| n == name)
    }

    fn fits(&self, extra: usize) -> bool {
        self.bytes + extra <= MAX_MAP_BYTES
    }

    /// Last value wins.
    fn set(&mut self, name: Cow<'a, str>, value: Cow<'a, str>) {
        match self.position(&name) {
            Some(i) => {
                let old = self.entries[i].1.len();
                if self.fits(value.len().saturating_sub(old)) {
                    self.bytes = self.bytes + value.len() - old;
                    self.entries[i].1 = value;
                }
            }
            None => self.push(name, value),
        }
    }

    /// Repeated names are joined with ", ", as HTTP folds repeated headers.
    fn join(&mut self, name: Cow<'a, str>, value: Cow<'a, str>) {
        match self.position(&name) {
            Some(i) => {
                let current = &self.entries[i].1;
                let room = MAX_VALUE_BYTES.saturating_sub(current.len() + 2);
                let added = cut_str(&value, room);
                if added.is_empty() || !self.fits(added.len() + 2) {
                    return;
                }
                let joined = format!("{current}, {added}");
                self.bytes += added.len() + 2;
                self.entries[i].1 = Cow::Owned(joined);
            }
            None => self.push(name, value),
        }
    }

    fn push(&mut self, name: Cow<'a, str>, value: Cow<'a, str>) {
        let size = name.len() + value.len();
        if self.entries.len() < MAX_ENTRIES && self.fits(size) {
            self.bytes += size;
            self.entries.push((name, value));
        }
    }
}

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (name, value) in &self.entries {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// `name=value` pairs of a `Cookie` header, values as sent, last one wins.
fn add_cookies<'a>(map: &mut Pairs<'a>, header: &'a [u8]) {
    for pair in header.split(|&b| b == b';') {
        let pair = pair.trim_ascii();
        let Some(eq) = pair.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (name, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
        if name.is_empty() {
            continue;
        }
        let value = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(value);
        map.set(text(name, MAX_NAME_BYTES), text(value, MAX_VALUE_BYTES));
    }
}

fn split_uri(uri: &[u8]) -> (&[u8], Option<&[u8]>) {
    match uri.iter().position(|&b| b == b'?') {
        Some(q) => (&uri[..q], Some(&uri[q + 1..])),
        None => (uri, None),
    }
}

/// Untrusted bytes as a string of at most `max` bytes.
fn text(bytes: &[u8], max: usize) -> Cow<'_, str> {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)])
}

fn lower_text(bytes: &[u8]) -> Cow<'_, str> {
    let name = text(bytes, MAX_NAME_BYTES);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        name
    }
}

fn cut(value: Cow<'_, str>, max: usize) -> Cow<'_, str> {
    match value {
        Cow::Borrowed(s) => Cow::Borrowed(cut_str(s, max)),
        Cow::Owned(s) if s.len() <= max => Cow::Owned(s),
        Cow::Owned(s) => Cow::Owned(cut_str(&s, max).to_owned()),
    }
}

fn cut_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn view<'a>(uri: &'a [u8], ua: Option<&'a [u8]>) -> RequestView<'a> {
        RequestView {
            method: b"GET",
            unparsed_uri: uri,
            client_ip: b"203.0.113.7",
            user_agent: ua,
            request_id: b"0123456789abcdef0123456789abcdef",
            started_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_774_526_400_123),
        }
    }

    fn build(
        req: &RequestView<'_>,
        headers: &[(&'static [u8], &'static [u8])],
        cookies: bool,
    ) -> Value {
        let fields: [(&str, &[u8]); 1] = [("host", b"shop.example.com")];
        let settings = PayloadSettings {
            source: "nginx",
            return_url: Some(b"https://shop.example.com/checkout?step=2"),
            fields: &fields,
            send_cookies: cookies,
        };
        let mut out = Vec::new();
        build_payload(req, headers.iter().copied(), &settings, &mut out);
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn nested_body_of_the_contract() {
        let req = view(b"/checkout?step=2&a=%C3%A9+x&step=3", Some(b"Mozilla/5.0"));
        let v = build(
            &req,
            &[
                (b"Host", b"shop.example.com"),
                (b"User-Agent", b"Mozilla/5.0"),
                (b"X-Forwarded-For", b"10.0.0.1"),
                (b"x-forwarded-for", b"10.0.0.2"),
                (b"Authorization", b"Basic c2VjcmV0"),
                (b"Proxy-Authorization", b"Basic c2VjcmV0"),
                (b"Cookie", b"session=abc"),
            ],
            false,
        );
        assert_eq!(
            v,
            json!({
                "source": "nginx",
                "observed_at": "2026-03-26T12:00:00.123Z",
                "idempotency_key": "0123456789abcdef0123456789abcdef",
                "return_url": "https://shop.example.com/checkout?step=2",
                "request": {
                    "method": "GET",
                    "path": "/checkout",
                    "client_ip": "203.0.113.7",
                    "user_agent": "Mozilla/5.0",
                    "headers": {
                        "host": "shop.example.com",
                        "user-agent": "Mozilla/5.0",
                        "x-forwarded-for": "10.0.0.1, 10.0.0.2"
                    },
                    "query_params": {"step": "3", "a": "é x"},
                    "route_params": {}
                },
                "fields": {"host": "shop.example.com"}
            })
        );
    }

    #[test]
    fn cookies_only_when_asked() {
        let req = view(b"/", None);
        let headers: &[(&[u8], &[u8])] = &[
            (b"Cookie", b"a=1; b=\"two\"; junk; a=3"),
            (b"cookie", b"c=4"),
        ];
        let v = build(&req, headers, true);
        assert_eq!(
            v["request"]["cookies"],
            json!({"a": "3", "b": "two", "c": "4"})
        );
        assert!(v["request"]["headers"].get("cookie").is_none());
        assert_eq!(v["request"]["user_agent"], "");
        let v = build(&req, headers, false);
        assert!(v["request"].get("cookies").is_none());
    }

    #[test]
    fn any_bytes_give_valid_json() {
        let req = view(b"/\xff\xfe?k\xff=%ZZ%&=v&\"=\\", Some(b"bot\x00\xc3"));
        let v = build(
            &req,
            &[(b"X-B\xffd", b"\x01\x02\"\\\xe9"), (b"", b"")],
            false,
        );
        assert_eq!(v["request"]["path"], "/\u{fffd}\u{fffd}");
        assert_eq!(v["request"]["user_agent"], "bot\u{0}\u{fffd}");
        assert_eq!(
            v["request"]["headers"]["x-b\u{fffd}d"],
            "\u{1}\u{2}\"\\\u{fffd}"
        );
        assert_eq!(v["request"]["query_params"]["k\u{fffd}"], "%ZZ%");
        assert_eq!(v["request"]["query_params"]["\""], "\\");
    }

    #[test]
    fn sizes_are_bounded() {
        let long = vec![b'a'; 10 * MAX_VALUE_BYTES];
        let long: &'static [u8] = Box::leak(long.into_boxed_slice());
        let many: Vec<(&'static [u8], &'static [u8])> = (0..500)
            .map(|i| {
                let name: &'static [u8] =
                    Box::leak(format!("x-h{i}").into_bytes().into_boxed_slice());
                (name, long)
            })
            .collect();
        let mut uri = b"/p?".to_vec();
        for i in 0..10_000 {
            uri.extend_from_slice(format!("q{i}=v&").as_bytes());
        }
        let uri: &'static [u8] = Box::leak(uri.into_boxed_slice());
        let req = view(uri, Some(long));
        let fields: [(&str, &[u8]); 1] = [("host", b"h")];
        let settings = PayloadSettings {
            source: "nginx",
            return_url: Some(long),
            fields: &fields,
            send_cookies: true,
        };
        let mut out = Vec::new();
        build_payload(&req, many.iter().copied(), &settings, &mut out);
        assert!(out.len() < 64 * 1024, "payload is {} bytes", out.len());
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["request"]["user_agent"].as_str().unwrap().len(),
            MAX_VALUE_BYTES
        );
        let headers = v["request"]["headers"].as_object().unwrap();
        assert!(headers.len() <= MAX_ENTRIES && !headers.is_empty());
        assert_eq!(
            v["request"]["query_params"].as_object().unwrap().len(),
            MAX_ENTRIES
        );
    }

    #[test]
    fn repeated_headers_stay_within_the_value_limit() {
        let long: &'static [u8] = Box::leak(vec![b'b'; MAX_VALUE_BYTES - 10].into_boxed_slice());
        let v = build(
            &view(b"/", None),
            &[(b"X-A", long), (b"X-A", long), (b"X-A", b"c")],
            false,
        );
        let joined = v["request"]["headers"]["x-a"].as_str().unwrap();
        assert!(joined.len() <= MAX_VALUE_BYTES);
        assert!(joined.starts_with("bbbb") && joined.contains(", b"));
    }

    #[test]
    fn fields_are_never_empty() {
        let req = view(b"/", None);
        let settings = PayloadSettings {
            source: "edge-1",
            return_url: None,
            fields: &[],
            send_cookies: false,
        };
        let mut out = Vec::new();
        build_payload(&req, std::iter::empty(), &settings, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["fields"], json!({"source": "edge-1"}));
        assert!(v.get("return_url").is_none());
    }

    #[test]
    fn verify_body_names_the_token_twice() {
        let v: Value = serde_json::from_slice(&verify_body("tok\"en")).unwrap();
        assert_eq!(v, json!({"proof": "tok\"en", "token": "tok\"en"}));
    }

    #[test]
    fn cuts_on_character_boundaries() {
        assert_eq!(cut_str("aé", 2), "a");
        assert_eq!(cut_str("aé", 3), "aé");
        assert_eq!(
            format_observed_at(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
    }
}
