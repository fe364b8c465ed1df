//! The JSON body of `POST /api/v1/runtime/mitigation` (docs/esper-contract.md,
//! "Runtime decision request").
//!
//! Input is whatever bytes the client sent; output is always valid JSON of a
//! bounded size. Non-UTF-8 bytes become U+FFFD; over-long values are cut at a
//! character boundary; beyond the entry limits, later entries are left out.
//! Every limit below counts bytes of the serialized JSON, after U+FFFD and
//! escaping (a control byte is six bytes, `\u0001`): they are the README's
//! "payload bounds", and together they give [`MAX_PAYLOAD_BYTES`].

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::answer::contract;

/// Longest name kept (header, query parameter, cookie, field), and longest
/// method, client address, request id and source.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest value kept (path, user agent, URL, header, parameter, cookie, field).
pub const MAX_VALUE_BYTES: usize = 2048;
/// Most entries kept in each of `headers`, `query_params`, `cookies`, `fields`.
pub const MAX_ENTRIES: usize = 64;
/// Largest serialized `headers`, `query_params` or `cookies` object.
pub const MAX_MAP_BYTES: usize = 16 * 1024;
/// Largest serialized `fields` object: a few configured values, kept small so
/// that the whole body stays under 64 KiB.
pub const MAX_FIELDS_BYTES: usize = 4 * 1024;

/// The payload with every string empty and every optional part present.
const SKELETON: &str = concat!(
    r#"{"source":"","observed_at":"","idempotency_key":"","return_url":"","#,
    r#""request":{"method":"","path":"","client_ip":"","user_agent":"","#,
    r#""headers":{},"query_params":{},"cookies":{},"route_params":{}},"fields":{}}"#
);
/// `observed_at` is `YYYY-MM-DDTHH:MM:SS.mmmZ`.
const OBSERVED_AT_BYTES: usize = 24;

/// Largest body [`build_payload`] writes, whatever the request.
pub const MAX_PAYLOAD_BYTES: usize = SKELETON.len()
    + OBSERVED_AT_BYTES
    // source, idempotency_key, method, client_ip
    + 4 * MAX_NAME_BYTES
    // return_url, path, user_agent
    + 3 * MAX_VALUE_BYTES
    // headers, query_params, cookies, fields; their braces are in the skeleton
    + 3 * (MAX_MAP_BYTES - 2)
    + (MAX_FIELDS_BYTES - 2);
const _: () = assert!(MAX_PAYLOAD_BYTES < 64 * 1024);

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

/// Serializes the decision request into `out` (cleared first); at most
/// [`MAX_PAYLOAD_BYTES`] bytes.
pub fn build_payload<'a>(
    req: &RequestView<'a>,
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    settings: &PayloadSettings<'_>,
    out: &mut Vec<u8>,
) {
    let (path, query) = split_uri(req.unparsed_uri);

    let mut header_map = Pairs::within(MAX_MAP_BYTES);
    let mut cookie_map = Pairs::within(MAX_MAP_BYTES);
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

    let mut query_map = Pairs::within(MAX_MAP_BYTES);
    if let Some(query) = query {
        for (name, value) in form_urlencoded::parse(query) {
            query_map.set(cut(name, MAX_NAME_BYTES), cut(value, MAX_VALUE_BYTES));
        }
    }

    let source = text(settings.source.as_bytes(), MAX_NAME_BYTES);
    let mut fields = Pairs::within(MAX_FIELDS_BYTES);
    for (name, value) in settings.fields {
        fields.set(text(name.as_bytes(), MAX_NAME_BYTES), text(value, MAX_VALUE_BYTES));
    }
    if fields.entries.is_empty() {
        // Esper rejects an empty `fields` map.
        fields.set(Cow::Borrowed("source"), source.clone());
    }

    let payload = Payload {
        source,
        observed_at: format_observed_at(req.started_at),
        idempotency_key: text(req.request_id, MAX_NAME_BYTES),
        return_url: settings.return_url.map(|u| text(u, MAX_VALUE_BYTES)),
        request: RequestJson {
            method: text(req.method, MAX_NAME_BYTES),
            path: text(path, MAX_VALUE_BYTES),
            client_ip: client_ip_text(req.client_ip),
            user_agent: user_agent_text(req.user_agent.unwrap_or_default()),
            headers: header_map,
            query_params: query_map,
            cookies: settings.send_cookies.then_some(cookie_map),
            route_params: Pairs::within(MAX_MAP_BYTES),
        },
        fields,
    };
    out.clear();
    serde_json::to_writer(&mut *out, &payload).expect("serializing to a Vec cannot fail");
}

/// Body of the proof verification call: the token, and the client redeeming
/// it exactly as the decision payload names it (see [`contract`]). An absent
/// user agent is empty, as in the payload.
pub fn verify_body(token: &str, client_ip: &[u8], user_agent: &[u8]) -> Vec<u8> {
    let token = text(token.as_bytes(), MAX_VALUE_BYTES);
    let mut body = serde_json::Map::new();
    for name in contract::VERIFY_TOKEN_FIELDS {
        body.insert(name.to_owned(), token.as_ref().into());
    }
    body.insert(contract::VERIFY_CLIENT_IP_FIELD.to_owned(), client_ip_text(client_ip).into());
    body.insert(contract::VERIFY_USER_AGENT_FIELD.to_owned(), user_agent_text(user_agent).into());
    serde_json::to_vec(&body).expect("serializing to a Vec cannot fail")
}

/// RFC 3339 UTC with milliseconds, as Esper's recipes send `observed_at`.
pub fn format_observed_at(at: SystemTime) -> String {
    let since_epoch = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let millis = Duration::from_millis(since_epoch.as_millis() as u64);
    humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + millis).to_string()
}

/// The entity as the payload and the verify body send it: the same bytes
/// must give the same text in both.
fn client_ip_text(client_ip: &[u8]) -> Cow<'_, str> {
    text(client_ip, MAX_NAME_BYTES)
}

fn user_agent_text(user_agent: &[u8]) -> Cow<'_, str> {
    text(user_agent, MAX_VALUE_BYTES)
}

#[derive(Serialize)]
struct Payload<'a> {
    source: Cow<'a, str>,
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
/// [`MAX_ENTRIES`] and its serialized size limit.
struct Pairs<'a> {
    entries: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Serialized size if every entry were followed by a comma: one more
    /// than the real size once there is an entry.
    bytes: usize,
    max_bytes: usize,
}

/// `"name":"value",` around the escaped name and value.
const ENTRY_OVERHEAD: usize = 6;

impl<'a> Pairs<'a> {
    fn within(max_bytes: usize) -> Self {
        Pairs { entries: Vec::new(), bytes: "{}".len(), max_bytes }
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|(n, _)| n == name)
    }

    fn fits(&self, extra: usize) -> bool {
        self.bytes + extra <= self.max_bytes
    }

    /// Last value wins.
    fn set(&mut self, name: Cow<'a, str>, value: Cow<'a, str>) {
        match self.position(&name) {
            Some(i) => {
                let old = escaped_len(&self.entries[i].1);
                let new = escaped_len(&value);
                if self.fits(new.saturating_sub(old)) {
                    self.bytes = self.bytes + new - old;
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
                let room = MAX_VALUE_BYTES.saturating_sub(escaped_len(current) + 2);
                let added = cut(value, room);
                let extra = escaped_len(&added) + 2;
                if added.is_empty() || !self.fits(extra) {
                    return;
                }
                let joined = format!("{current}, {added}");
                self.bytes += extra;
                self.entries[i].1 = Cow::Owned(joined);
            }
            None => self.push(name, value),
        }
    }

    fn push(&mut self, name: Cow<'a, str>, value: Cow<'a, str>) {
        let size = escaped_len(&name) + escaped_len(&value) + ENTRY_OVERHEAD;
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
    for (name, value) in cookie_pairs(header) {
        if name.is_empty() {
            continue;
        }
        let value = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
        map.set(text(name, MAX_NAME_BYTES), text(value, MAX_VALUE_BYTES));
    }
}

/// The `name=value` pairs of a `Cookie` header, each side trimmed; a piece
/// without `=` is skipped.
pub(crate) fn cookie_pairs(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    header.split(|&b| b == b';').filter_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()))
    })
}

fn split_uri(uri: &[u8]) -> (&[u8], Option<&[u8]>) {
    match uri.iter().position(|&b| b == b'?') {
        Some(q) => (&uri[..q], Some(&uri[q + 1..])),
        None => (uri, None),
    }
}

/// Bytes a UTF-8 character or an invalid sequence (which becomes one U+FFFD)
/// may take beyond its first.
const UTF8_TAIL_BYTES: usize = 3;

/// Untrusted bytes as a string whose JSON-escaped form has at most `max`
/// bytes.
fn text(bytes: &[u8], max: usize) -> Cow<'_, str> {
    // Neither decoding nor escaping ever shortens anything, so whatever starts
    // past `max` input bytes cannot fit; whatever starts before ends within
    // `max + 3`, and decodes there exactly as in the whole input.
    let head = &bytes[..bytes.len().min(max + UTF8_TAIL_BYTES)];
    cut(String::from_utf8_lossy(head), max)
}

fn lower_text(bytes: &[u8]) -> Cow<'_, str> {
    let name = text(bytes, MAX_NAME_BYTES);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        name
    }
}

/// The longest start of `value`, at a character boundary, whose JSON-escaped
/// form has at most `max` bytes.
fn cut(value: Cow<'_, str>, max: usize) -> Cow<'_, str> {
    let end = fitting_len(&value, max);
    match value {
        Cow::Borrowed(s) => Cow::Borrowed(&s[..end]),
        Cow::Owned(mut s) => {
            s.truncate(end);
            Cow::Owned(s)
        }
    }
}

fn fitting_len(s: &str, max: usize) -> usize {
    let mut escaped = 0;
    for (i, b) in s.bytes().enumerate() {
        escaped += escaped_byte_len(b);
        if escaped > max {
            // Bytes of a multi-byte character are never escaped, so backing
            // off to its start keeps the rest within `max`.
            let mut end = i;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            return end;
        }
    }
    s.len()
}

/// Size of `s` inside a JSON string, as serde_json writes it.
fn escaped_len(s: &str) -> usize {
    s.bytes().map(escaped_byte_len).sum()
}

/// serde_json escapes `"`, `\` and the C0 controls: `\b \t \n \f \r` in two
/// bytes, the others as `\u00XX`; everything else is written as it is.
fn escaped_byte_len(b: u8) -> usize {
    match b {
        b'"' | b'\\' | b'\x08' | b'\t' | b'\n' | b'\x0c' | b'\r' => 2,
        0x00..=0x1f => 6,
        _ => 1,
    }
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
        let headers: &[(&[u8], &[u8])] =
            &[(b"Cookie", b"a=1; b=\"two\"; junk; a=3"), (b"cookie", b"c=4")];
        let v = build(&req, headers, true);
        assert_eq!(v["request"]["cookies"], json!({"a": "3", "b": "two", "c": "4"}));
        assert!(v["request"]["headers"].get("cookie").is_none());
        assert_eq!(v["request"]["user_agent"], "");
        let v = build(&req, headers, false);
        assert!(v["request"].get("cookies").is_none());
    }

    #[test]
    fn any_bytes_give_valid_json() {
        let req = view(b"/\xff\xfe?k\xff=%ZZ%&=v&\"=\\", Some(b"bot\x00\xc3"));
        let v = build(&req, &[(b"X-B\xffd", b"\x01\x02\"\\\xe9"), (b"", b"")], false);
        assert_eq!(v["request"]["path"], "/\u{fffd}\u{fffd}");
        assert_eq!(v["request"]["user_agent"], "bot\u{0}\u{fffd}");
        assert_eq!(v["request"]["headers"]["x-b\u{fffd}d"], "\u{1}\u{2}\"\\\u{fffd}");
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
        assert!(out.len() <= MAX_PAYLOAD_BYTES, "payload is {} bytes", out.len());
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["request"]["user_agent"].as_str().unwrap().len(), MAX_VALUE_BYTES);
        let headers = v["request"]["headers"].as_object().unwrap();
        assert!(headers.len() <= MAX_ENTRIES && !headers.is_empty());
        assert_eq!(v["request"]["query_params"].as_object().unwrap().len(), MAX_ENTRIES);
    }

    #[test]
    fn repeated_headers_stay_within_the_value_limit() {
        let long: &'static [u8] = Box::leak(vec![b'b'; MAX_VALUE_BYTES - 10].into_boxed_slice());
        let v = build(&view(b"/", None), &[(b"X-A", long), (b"X-A", long), (b"X-A", b"c")], false);
        let joined = v["request"]["headers"]["x-a"].as_str().unwrap();
        assert!(joined.len() <= MAX_VALUE_BYTES);
        assert!(joined.starts_with("bbbb") && joined.contains(", b"));
    }

    #[test]
    fn only_the_cookie_header_gives_cookies() {
        let req = view(b"/", None);
        let v = build(&req, &[(b"X-A", b"b=c"), (b"Cookie", b"a=1")], true);
        assert_eq!(v["request"]["cookies"], json!({"a": "1"}));
        assert_eq!(v["request"]["headers"]["x-a"], "b=c");
    }

    #[test]
    fn joined_and_replaced_values_are_counted_at_their_size() {
        // Two halves of the value limit join whole.
        let half: &'static [u8] = Box::leak(vec![b'h'; MAX_VALUE_BYTES / 2 - 1].into_boxed_slice());
        let v = build(&view(b"/", None), &[(b"X-A", half), (b"X-A", half)], false);
        assert_eq!(v["request"]["headers"]["x-a"].as_str().unwrap().len(), MAX_VALUE_BYTES);
        // A header repeated many times, then another: the map is far from
        // full, so the other is kept.
        let mut headers: Vec<(&'static [u8], &'static [u8])> = vec![(b"X-R", b"v"); 30];
        headers.push((b"X-Last", b"kept"));
        let v = build(&view(b"/", None), &headers, false);
        assert_eq!(v["request"]["headers"]["x-last"], "kept");
        assert_eq!(v["request"]["headers"]["x-r"], vec!["v"; 30].join(", "));
        // A joined header takes the room it needs, no more: after it, the map
        // fills up to its bound.
        let (x, y): (&'static [u8], &'static [u8]) = (&[b'x'; 1000], &[b'y'; 1000]);
        let filler: &'static [u8] = &[b'z'; 400];
        let mut headers: Vec<(&'static [u8], &'static [u8])> = vec![(b"X-A", x), (b"X-A", y)];
        for i in 10..70 {
            headers.push((Box::leak(format!("x-f{i}").into_bytes().into_boxed_slice()), filler));
        }
        let v = build(&view(b"/", None), &headers, false);
        let map = &v["request"]["headers"];
        assert_eq!(map["x-a"].as_str().unwrap().len(), 2002);
        let size = serde_json::to_string(map).unwrap().len();
        // Each filler entry is `"x-fNN":"z…",`: 411 bytes.
        assert!(map.as_object().unwrap().len() < MAX_ENTRIES);
        assert!(size <= MAX_MAP_BYTES && size + 1 + 411 > MAX_MAP_BYTES, "{size}");
        // A query parameter given many times keeps only its last value, and
        // the replaced ones take no room from the next parameter.
        let value = "x".repeat(MAX_VALUE_BYTES);
        let mut uri = "/?".to_owned();
        for _ in 0..20 {
            uri.push_str(&format!("a={value}&"));
        }
        uri.push_str("b=1");
        let uri: &'static [u8] = Box::leak(uri.into_bytes().into_boxed_slice());
        let v = build(&view(uri, None), &[], false);
        assert_eq!(v["request"]["query_params"]["b"], "1");
        assert_eq!(v["request"]["query_params"]["a"], value.as_str());
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
    fn verify_body_names_the_token_twice_and_the_client() {
        let v: Value =
            serde_json::from_slice(&verify_body("tok\"en", b"203.0.113.7", b"Mozilla/5.0"))
                .unwrap();
        assert_eq!(
            v,
            json!({"proof": "tok\"en", "token": "tok\"en",
                   "client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0"})
        );
    }

    #[test]
    fn verify_body_names_the_client_as_the_payload_does() {
        let ua: &'static [u8] =
            Box::leak([&b"bot\x01\xff"[..], &[b'u'; 3000]].concat().into_boxed_slice());
        let payload = build(&view(b"/", Some(ua)), &[], false);
        let verify: Value = serde_json::from_slice(&verify_body("t", b"203.0.113.7", ua)).unwrap();
        for name in [contract::VERIFY_CLIENT_IP_FIELD, contract::VERIFY_USER_AGENT_FIELD] {
            assert!(verify[name].is_string(), "{name}");
            assert_eq!(verify[name], payload["request"][name], "{name}");
        }
        let v: Value = serde_json::from_slice(&verify_body("t", b"", b"")).unwrap();
        assert_eq!(v["user_agent"], "");
    }

    #[test]
    fn cuts_by_escaped_size_on_character_boundaries() {
        assert_eq!(text("aé".as_bytes(), 2), "a");
        assert_eq!(text("aé".as_bytes(), 3), "aé");
        assert_eq!(text(b"a\x01b", 6), "a", "\\u0001 takes six bytes");
        assert_eq!(text(b"a\x01b", 7), "a\x01");
        assert_eq!(text(b"\"\"\"", 5), "\"\"");
        assert_eq!(text(b"\n\t", 4), "\n\t");
        assert_eq!(text(b"a\xffb", 3), "a", "U+FFFD takes three bytes");
        assert_eq!(text(b"a\xffb", 4), "a\u{fffd}");
        // A character split by the byte limit is dropped, not replaced.
        assert_eq!(text("abcé".as_bytes(), 4), "abc");
        assert_eq!(text("abcé".as_bytes(), 5), "abcé");
        assert_eq!(text(b"\x7f", 1), "\x7f", "DEL is not escaped");
        assert_eq!(format_observed_at(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    /// The JSON size of a string, quotes left out.
    fn json_len(v: &Value) -> usize {
        serde_json::to_string(v).unwrap().len() - 2
    }

    #[test]
    fn escaping_and_replacement_stay_within_the_limits() {
        let controls: &'static [u8] = Box::leak(vec![1u8; 3 * MAX_VALUE_BYTES].into_boxed_slice());
        let invalid: &'static [u8] =
            Box::leak(vec![0xffu8; 3 * MAX_VALUE_BYTES].into_boxed_slice());
        let name: &'static [u8] = Box::leak(vec![b'"'; 1000].into_boxed_slice());
        let v = build(
            &view(b"/\x01\x01\xff", Some(controls)),
            &[(b"X-C", controls), (b"X-I", invalid), (name, b"v"), (b"X-C", controls)],
            false,
        );
        for value in [
            &v["request"]["user_agent"],
            &v["request"]["headers"]["x-c"],
            &v["request"]["headers"]["x-i"],
        ] {
            let len = json_len(value);
            assert!(len <= MAX_VALUE_BYTES && len > MAX_VALUE_BYTES - 6, "{len}");
        }
        assert_eq!(v["request"]["user_agent"].as_str().unwrap().len(), MAX_VALUE_BYTES / 6);
        assert_eq!(
            v["request"]["headers"]["x-i"].as_str().unwrap().chars().count(),
            MAX_VALUE_BYTES / 3
        );
        let (quoted, _) = v["request"]["headers"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(n, _)| n.starts_with('"'))
            .unwrap();
        assert_eq!(quoted.len(), MAX_NAME_BYTES / 2);
    }

    #[test]
    fn maps_are_bounded_as_serialized() {
        let controls: &'static [u8] = Box::leak(vec![1u8; MAX_VALUE_BYTES].into_boxed_slice());
        let many: Vec<(&'static [u8], &'static [u8])> = (0..200)
            .map(|i| {
                let name: &'static [u8] =
                    Box::leak(format!("x-\x01{i}").into_bytes().into_boxed_slice());
                (name, controls)
            })
            .collect();
        let mut out = Vec::new();
        let fields: Vec<(&str, &[u8])> =
            (0..40).map(|i| (&*Box::leak(format!("f{i}").into_boxed_str()), controls)).collect();
        let settings = PayloadSettings {
            source: "nginx",
            return_url: None,
            fields: &fields,
            send_cookies: false,
        };
        build_payload(&view(b"/", None), many.iter().copied(), &settings, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        let headers = serde_json::to_string(&v["request"]["headers"]).unwrap();
        assert!(headers.len() <= MAX_MAP_BYTES, "{}", headers.len());
        assert!(headers.len() > MAX_MAP_BYTES - MAX_VALUE_BYTES - MAX_NAME_BYTES);
        let fields = serde_json::to_string(&v["fields"]).unwrap();
        assert!(fields.len() <= MAX_FIELDS_BYTES, "{}", fields.len());
        assert!(!v["fields"].as_object().unwrap().is_empty());
    }

    /// Every string emptied and every map of strings emptied.
    fn emptied(v: &Value) -> Value {
        match v {
            Value::String(_) => json!(""),
            Value::Object(m) if m.values().all(Value::is_string) => json!({}),
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), emptied(v))).collect())
            }
            other => other.clone(),
        }
    }

    #[test]
    fn the_skeleton_is_the_payload_emptied() {
        let v = build(&view(b"/p?a=1", Some(b"ua")), &[(b"X-A", b"1")], true);
        let skeleton: Value = serde_json::from_str(SKELETON).unwrap();
        assert_eq!(emptied(&v), skeleton);
        assert_eq!(format_observed_at(SystemTime::now()).len(), OBSERVED_AT_BYTES);
    }

    #[test]
    fn the_worst_request_stays_within_the_largest_payload() {
        // Control bytes everywhere, separate names, cookies on.
        let controls: &'static [u8] = Box::leak(vec![1u8; 3 * MAX_VALUE_BYTES].into_boxed_slice());
        let name = |prefix: &str, i: usize| -> &'static [u8] {
            let mut n = format!("{prefix}{i}-").into_bytes();
            n.resize(3 * MAX_NAME_BYTES, 1);
            Box::leak(n.into_boxed_slice())
        };
        let mut headers: Vec<(&'static [u8], &'static [u8])> =
            (0..100).map(|i| (name("x-", i), controls)).collect();
        for i in 0..100 {
            let mut cookie = format!("c{i}=").into_bytes();
            cookie.extend_from_slice(controls);
            headers.push((b"Cookie", Box::leak(cookie.into_boxed_slice())));
        }
        let mut uri = b"/".to_vec();
        uri.extend(std::iter::repeat_n(b'\x01', 3 * MAX_VALUE_BYTES));
        uri.push(b'?');
        for i in 0..100 {
            uri.extend_from_slice(format!("{i}{}=", "%01".repeat(MAX_NAME_BYTES)).as_bytes());
            uri.extend(
                std::iter::repeat_n(b'%', 1).chain(*b"01").cycle().take(9 * MAX_VALUE_BYTES),
            );
            uri.push(b'&');
        }
        let uri: &'static [u8] = Box::leak(uri.into_boxed_slice());
        // Shorter values fill the smaller `fields` map more closely.
        let fields: Vec<(&str, &[u8])> = (0..64)
            .map(|i| (&*Box::leak(format!("f{i}").into_boxed_str()), &controls[..100]))
            .collect();
        let req = RequestView {
            method: controls,
            unparsed_uri: uri,
            client_ip: controls,
            user_agent: Some(controls),
            request_id: controls,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_774_526_400_123),
        };
        let source = "\u{1}".repeat(MAX_NAME_BYTES);
        let settings = PayloadSettings {
            source: &source,
            return_url: Some(controls),
            fields: &fields,
            send_cookies: true,
        };
        let mut out = Vec::new();
        build_payload(&req, headers.iter().copied(), &settings, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(out.len() <= MAX_PAYLOAD_BYTES, "{} > {MAX_PAYLOAD_BYTES}", out.len());
        // Every part is close to its limit, so the constant is not loose.
        assert!(out.len() > MAX_PAYLOAD_BYTES - 6 * 1024, "{}", out.len());
        for map in ["headers", "query_params", "cookies"] {
            let len = serde_json::to_string(&v["request"][map]).unwrap().len();
            assert!(len <= MAX_MAP_BYTES && len > MAX_MAP_BYTES - 3 * 1024, "{map}: {len}");
        }
        let len = serde_json::to_string(&v["fields"]).unwrap().len();
        assert!(len <= MAX_FIELDS_BYTES && len > MAX_FIELDS_BYTES - 1024, "fields: {len}");
    }
}
