//! `esper_json_response`: whether a challenge or a block is answered with a
//! small JSON document instead of a redirect or the block page, and that
//! document.
//!
//! In `auto`, a request gets JSON when it is not a browser navigation and it
//! accepts JSON; anything unclear falls back to today's responses, which a
//! browser can always show.

use serde::Serialize;

use crate::answer::Action;

/// Value of `esper_json_response`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JsonMode {
    #[default]
    Auto,
    On,
    Off,
}

/// Content-Type of the JSON challenge and block.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Status of the JSON challenge: a script cannot follow a redirect to a
/// challenge page, so it is told to send the user there.
pub const JSON_CHALLENGE_STATUS: u16 = 403;

/// `Vary` of every response the module makes in an `auto` location: the
/// request headers [`wants_json`] reads, so that a cache never serves the
/// JSON form to a browser or the redirect to a script.
pub const VARY_AUTO: &str = "Accept, Sec-Fetch-Mode, X-Requested-With";

/// Whether the challenge or block of this request is sent as JSON.
///
/// `headers` are all request headers as (name, value), names in any case,
/// repeated headers as separate entries. In [`JsonMode::Auto`]:
///
/// - Not a navigation: some `Sec-Fetch-Mode` value is given and none is
///   `navigate`, or some `X-Requested-With` value is `XMLHttpRequest`
///   (either is enough, as the issue defines it). Values are compared
///   without case, spaces and tabs trimmed; a value holding a
///   comma-separated list (a proxy folding duplicates) counts element by
///   element; empty values count as absent.
/// - Accepts JSON: see [`accepts_json`], over every `Accept` header.
pub fn wants_json<'a>(
    mode: JsonMode,
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> bool {
    match mode {
        JsonMode::On => return true,
        JsonMode::Off => return false,
        JsonMode::Auto => {}
    }
    let mut accept = AcceptJson::default();
    let mut fetch_mode_given = false;
    let mut navigation = false;
    let mut xhr = false;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"accept") {
            accept.add_header(value);
        } else if name.eq_ignore_ascii_case(b"sec-fetch-mode") {
            for fetch_mode in list_elements(value) {
                fetch_mode_given = true;
                navigation |= fetch_mode.eq_ignore_ascii_case(b"navigate");
            }
        } else if name.eq_ignore_ascii_case(b"x-requested-with") {
            xhr |= list_elements(value).any(|v| v.eq_ignore_ascii_case(b"XMLHttpRequest"));
        }
    }
    let not_navigation = (fetch_mode_given && !navigation) || xhr;
    not_navigation && accept.accepted()
}

/// Whether `Accept` headers (each value given separately) accept JSON:
/// some JSON range has q > 0 and no `application/json` range has q = 0.
///
/// Each value is a comma-separated list of media ranges with parameters
/// (RFC 9110 §12.5.1): type, subtype and parameter names without case,
/// spaces and tabs allowed around `,` `;` `=`, quoted parameter values may
/// hold `,` and `;`.
///
/// - JSON ranges are `application/json` and any `type/name+json`, whatever
///   their other parameters. Wildcards (`*/*`, `application/*`) never
///   count: every browser sends `*/*`, and a browser must keep getting the
///   page it can show.
/// - An `application/json` range with q = 0 (`q=0`, `q=0.0`, ...) refuses
///   JSON even when another range would accept it: the client said so
///   explicitly. A `+json` range with q = 0 only fails to accept.
/// - A malformed range (no `type/subtype`, a bad parameter, an
///   unterminated quote, a q that is not an RFC qvalue — `0` to `1` with at
///   most three decimals — or two q parameters) is ignored: it neither
///   accepts nor refuses.
pub fn accepts_json<'a>(accept_values: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let mut accept = AcceptJson::default();
    for value in accept_values {
        accept.add_header(value);
    }
    accept.accepted()
}

/// Body of the JSON challenge; fields in the order action, redirect_url,
/// decision_id, the last left out when Esper gave none.
pub fn challenge_body(redirect_url: &str, decision_id: Option<&str>) -> String {
    json_body(Action::Challenge, Some(redirect_url), decision_id)
}

/// Body of the JSON block: action, then decision_id when Esper gave one.
pub fn block_body(decision_id: Option<&str>) -> String {
    json_body(Action::Block, None, decision_id)
}

#[derive(Serialize)]
struct JsonBody<'a> {
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision_id: Option<&'a str>,
}

fn json_body(action: Action, redirect_url: Option<&str>, decision_id: Option<&str>) -> String {
    let body = JsonBody { action: action.as_str(), redirect_url, decision_id };
    serde_json::to_string(&body).expect("serializing strings cannot fail")
}

/// What the `Accept` headers seen so far say about JSON.
#[derive(Default)]
struct AcceptJson {
    /// Some JSON range has q > 0.
    offered: bool,
    /// Some `application/json` range has q = 0.
    refused: bool,
}

impl AcceptJson {
    fn add_header(&mut self, value: &[u8]) {
        for element in split_unquoted(value, b',') {
            let Some(range) = MediaRange::parse(element) else {
                continue;
            };
            if range.is_application_json() && range.weight == 0 {
                self.refused = true;
            }
            if range.is_json() && range.weight > 0 {
                self.offered = true;
            }
        }
    }

    fn accepted(&self) -> bool {
        self.offered && !self.refused
    }
}

struct MediaRange<'a> {
    type_: &'a [u8],
    subtype: &'a [u8],
    /// q in thousandths, 1000 when not given.
    weight: u16,
}

impl<'a> MediaRange<'a> {
    /// One list element of `Accept`; `None` when malformed.
    fn parse(element: &'a [u8]) -> Option<MediaRange<'a>> {
        let mut parts = split_unquoted(element, b';');
        let range = trim_ows(parts.next()?);
        let slash = range.iter().position(|&b| b == b'/')?;
        let (type_, subtype) = (&range[..slash], &range[slash + 1..]);
        if !is_token(type_) || !is_token(subtype) {
            return None;
        }
        let mut weight = None;
        for parameter in parts.map(trim_ows) {
            // RFC 9110 §5.6.6 allows empty parameters (`a/b;;c=d`).
            if parameter.is_empty() {
                continue;
            }
            let eq = parameter.iter().position(|&b| b == b'=')?;
            let name = trim_ows(&parameter[..eq]);
            let value = trim_ows(&parameter[eq + 1..]);
            if !is_token(name) || !(is_token(value) || is_quoted_string(value)) {
                return None;
            }
            if name.eq_ignore_ascii_case(b"q") {
                if weight.is_some() {
                    return None;
                }
                weight = Some(parse_qvalue(value)?);
            }
        }
        Some(MediaRange { type_, subtype, weight: weight.unwrap_or(1000) })
    }

    fn is_application_json(&self) -> bool {
        self.type_.eq_ignore_ascii_case(b"application")
            && self.subtype.eq_ignore_ascii_case(b"json")
    }

    /// `application/json` or a `+json` structured syntax suffix (RFC 6839)
    /// on a named type and subtype; no wildcard.
    fn is_json(&self) -> bool {
        const SUFFIX: &[u8] = b"+json";
        let subtype = self.subtype;
        let suffixed = subtype.len() > SUFFIX.len()
            && subtype[subtype.len() - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX)
            && &subtype[..subtype.len() - SUFFIX.len()] != b"*";
        self.is_application_json() || (suffixed && self.type_ != b"*")
    }
}

/// RFC 9110 §12.4.2 qvalue in thousandths: `0` or `1`, then optionally `.`
/// and up to three digits, only zeros after `1`.
fn parse_qvalue(value: &[u8]) -> Option<u16> {
    let (integer, fraction) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (&value[..dot], &value[dot + 1..]),
        None => (value, &b""[..]),
    };
    if fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let thousandths =
        fraction.iter().chain(b"000").take(3).fold(0, |n, digit| n * 10 + u16::from(digit - b'0'));
    match integer {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Pieces of `value` between the `separator`s that are outside
/// quoted-strings. An unterminated quote runs to the end, so that piece is
/// malformed rather than split.
fn split_unquoted(value: &[u8], separator: u8) -> impl Iterator<Item = &[u8]> {
    let mut quoted = false;
    let mut escaped = false;
    value.split(move |&b| {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else {
            return !quoted && b == separator;
        }
        false
    })
}

/// Non-empty elements of a comma-separated header value, trimmed.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|element| !element.is_empty())
}

/// Without the optional whitespace (spaces and tabs) around it.
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// An RFC 9110 token: one or more tchar.
pub(crate) fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An RFC 9110 quoted-string, quotes included.
fn is_quoted_string(bytes: &[u8]) -> bool {
    let Some(inner) = bytes.strip_prefix(b"\"").and_then(|rest| rest.strip_suffix(b"\"")) else {
        return false;
    };
    let mut escaped = false;
    for &b in inner {
        // qdtext and quoted-pair: HTAB, SP, visible ASCII and obs-text.
        if !(b == b'\t' || (b >= b' ' && b != 0x7f)) {
            return false;
        }
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            return false;
        }
    }
    !escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn accepts(values: &[&str]) -> bool {
        accepts_json(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn plain_json_types_are_accepted() {
        assert!(accepts(&["application/json"]));
        assert!(accepts(&["text/html, application/json"]));
        assert!(accepts(&["application/problem+json"]));
        assert!(accepts(&["application/vnd.api+json"]));
        assert!(accepts(&["text/vnd.x+json"]), "any type with +json");
    }

    #[test]
    fn q_zero_in_every_spelling_refuses() {
        for q in ["0", "0.", "0.0", "0.00", "0.000"] {
            assert!(!accepts(&[&format!("application/json;q={q}")]), "{q}");
            assert!(!accepts(&[&format!("application/vnd.api+json;q={q}")]), "{q}");
        }
    }

    #[test]
    fn q_above_zero_accepts() {
        for q in ["1", "1.", "1.0", "1.000", "0.001", "0.5", "0.999"] {
            assert!(accepts(&[&format!("application/json;q={q}")]), "{q}");
        }
    }

    #[test]
    fn an_explicit_refusal_of_application_json_wins() {
        assert!(!accepts(&["application/json;q=0, application/problem+json"]));
        assert!(!accepts(&["application/problem+json", "application/json;q=0"]));
        assert!(!accepts(&["application/json", "application/json;q=0"]));
        assert!(!accepts(&["application/json;v=2;q=0, application/json"]));
        // Refusing a +json type refuses nothing else.
        assert!(accepts(&["application/problem+json;q=0, application/json"]));
    }

    #[test]
    fn wildcards_do_not_count() {
        assert!(!accepts(&["*/*"]));
        assert!(!accepts(&["application/*"]));
        assert!(!accepts(&["application/*+json"]));
        assert!(!accepts(&["*/*+json"]));
        assert!(!accepts(&["*/json"]));
        assert!(!accepts(&["text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"]));
        // Nor do they refuse.
        assert!(accepts(&["application/json, */*;q=0"]));
        assert!(accepts(&["application/*;q=0, application/json"]));
    }

    #[test]
    fn parameters_are_read() {
        assert!(accepts(&["application/json; charset=utf-8"]));
        assert!(accepts(&["application/json;v=2;q=0.5"]));
        assert!(accepts(&["application/json;q=0.5;v=2"]));
        assert!(accepts(&["application/json;;charset=utf-8;"]));
        assert!(!accepts(&["application/json;charset=utf-8;q=0"]));
    }

    #[test]
    fn quoted_values_may_hold_separators() {
        assert!(accepts(&[r#"application/json;p="a,b;q=0", text/html"#]));
        assert!(!accepts(&[r#"text/html;p="x, application/json""#]));
        assert!(!accepts(&[r#"foo/bar;a="application/json""#]));
        assert!(accepts(&[r#"application/json;p="say \"hi\", \\", text/html"#]));
        assert!(!accepts(&[r#"application/json;p="unterminated, application/json"#]));
        assert!(!accepts(&[r#"application/json;p="a"b""#]));
    }

    #[test]
    fn case_does_not_matter() {
        assert!(accepts(&["APPLICATION/JSON"]));
        assert!(accepts(&["Application/Problem+JSON"]));
        assert!(!accepts(&["APPLICATION/JSON;Q=0"]));
        assert!(accepts(&["application/json;Q=0.5"]));
    }

    #[test]
    fn spaces_and_tabs_around_separators() {
        assert!(accepts(&["  application/json  "]));
        assert!(accepts(&["text/html ,\tapplication/json ; charset = utf-8 ; q = 0.5 "]));
        assert!(!accepts(&[" application/json ; q = 0 , application/problem+json "]));
        assert!(accepts(&[" , ,application/json,, "]));
        // Not inside a type.
        assert!(!accepts(&["application / json"]));
    }

    #[test]
    fn every_accept_header_counts() {
        assert!(accepts(&["text/html", "application/json"]));
        assert!(accepts(&["application/json", "text/html"]));
        assert!(!accepts(&["text/html", "text/plain"]));
        assert!(!accepts(&[]));
    }

    #[test]
    fn lookalikes_are_not_json() {
        for value in [
            "application/jsonx",
            "application/json-seq",
            "application/x-json",
            "text/json",
            "text/json-seq",
            "application/+json",
            "application/json+xml",
            "xapplication/json",
            "application/xjson",
        ] {
            assert!(!accepts(&[value]), "{value}");
        }
    }

    #[test]
    fn malformed_ranges_are_ignored() {
        for value in [
            "",
            " ",
            ",",
            "application",
            "application/",
            "/json",
            "application/json/x",
            "application/json;q",
            "application/json;=1",
            "application/json;q=",
            "application/json;q=2",
            "application/json;q=1.001",
            "application/json;q=0.0001",
            "application/json;q=.5",
            "application/json;q=-0",
            "application/json;q=abc",
            "application/json;q=\"0.5\"",
            "application/json;q=0.5;q=0.5",
            "application/json;a=b c",
            "appli\u{e9}cation/json",
            "\u{0}\u{ff}garbage;;;==\"",
        ] {
            assert!(!accepts(&[value]), "{value:?}");
        }
        // A malformed refusal refuses nothing.
        assert!(accepts(&["application/json;q=zero, application/json"]));
        assert!(accepts(&["application/json;q=0;q=0, application/json"]));
        assert!(!accepts_json([&b"application/json\xff"[..]]));
        assert!(accepts_json([&b"\xff\xfe, application/json"[..]]));
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue(b"0"), Some(0));
        assert_eq!(parse_qvalue(b"0.001"), Some(1));
        assert_eq!(parse_qvalue(b"0.5"), Some(500));
        assert_eq!(parse_qvalue(b"0.25"), Some(250));
        assert_eq!(parse_qvalue(b"1.00"), Some(1000));
        for bad in [&b""[..], b".", b"1.5", b"2", b"00", b"01", b"0.1234", b"0.a", b"0,5"] {
            assert_eq!(parse_qvalue(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    type Headers = [(&'static str, &'static str)];

    fn wants(mode: JsonMode, headers: &Headers) -> bool {
        wants_json(mode, headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    const FETCH_JSON: &Headers = &[("Sec-Fetch-Mode", "cors"), ("Accept", "application/json")];
    const NAVIGATION: &Headers =
        &[("Sec-Fetch-Mode", "navigate"), ("Accept", "text/html,*/*;q=0.8")];

    #[test]
    fn modes() {
        for headers in [FETCH_JSON, NAVIGATION, &[]] {
            assert!(wants(JsonMode::On, headers));
            assert!(!wants(JsonMode::Off, headers));
        }
        assert!(wants(JsonMode::Auto, FETCH_JSON));
        assert!(!wants(JsonMode::Auto, NAVIGATION));
        assert!(!wants(JsonMode::Auto, &[]));
        assert_eq!(JsonMode::default(), JsonMode::Auto);
    }

    #[test]
    fn auto_needs_both_a_non_navigation_and_json() {
        let json = ("Accept", "application/json");
        let html = ("Accept", "text/html");
        let cors = ("Sec-Fetch-Mode", "cors");
        let xhr = ("X-Requested-With", "XMLHttpRequest");
        assert!(wants(JsonMode::Auto, &[cors, json]));
        assert!(wants(JsonMode::Auto, &[xhr, json]));
        assert!(!wants(JsonMode::Auto, &[cors, html]));
        assert!(!wants(JsonMode::Auto, &[xhr, html]));
        assert!(!wants(JsonMode::Auto, &[cors]));
        // curl and other tools send no fetch metadata: not told apart from
        // an old browser navigating.
        assert!(!wants(JsonMode::Auto, &[json]));
        // Either sign is enough, as the issue defines it.
        assert!(wants(JsonMode::Auto, &[("Sec-Fetch-Mode", "navigate"), xhr, json]));
    }

    #[test]
    fn fetch_modes() {
        for (fetch_mode, navigation) in [
            ("navigate", true),
            ("NAVIGATE", true),
            (" Navigate\t", true),
            ("cors", false),
            ("no-cors", false),
            ("same-origin", false),
            ("websocket", false),
            ("CORS", false),
            ("cors, navigate", true),
        ] {
            let headers = [("Sec-Fetch-Mode", fetch_mode), ("Accept", "application/json")];
            assert_eq!(
                wants_json(
                    JsonMode::Auto,
                    headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
                ),
                !navigation,
                "{fetch_mode:?}"
            );
        }
    }

    #[test]
    fn any_navigate_among_repeated_fetch_modes_is_a_navigation() {
        let json = ("Accept", "application/json");
        assert!(!wants(
            JsonMode::Auto,
            &[("Sec-Fetch-Mode", "cors"), ("sec-fetch-mode", "navigate"), json]
        ));
        assert!(wants(
            JsonMode::Auto,
            &[("Sec-Fetch-Mode", "cors"), ("SEC-FETCH-MODE", "no-cors"), json]
        ));
        // An empty value is no fetch mode.
        assert!(!wants(JsonMode::Auto, &[("Sec-Fetch-Mode", " "), json]));
        assert!(!wants(JsonMode::Auto, &[("Sec-Fetch-Mode", ""), json]));
    }

    #[test]
    fn requested_with() {
        let json = ("Accept", "application/json");
        for (value, xhr) in [
            ("XMLHttpRequest", true),
            ("xmlhttprequest", true),
            (" XMLHTTPREQUEST ", true),
            ("com.example.app", false),
            ("XMLHttpRequest2", false),
            ("", false),
        ] {
            let headers = [("x-requested-with", value), json];
            assert_eq!(
                wants_json(
                    JsonMode::Auto,
                    headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
                ),
                xhr,
                "{value:?}"
            );
        }
    }

    #[test]
    fn auto_reads_every_accept_header_in_any_case() {
        let cors = ("Sec-Fetch-Mode", "cors");
        assert!(wants(
            JsonMode::Auto,
            &[cors, ("Accept", "text/html"), ("accept", "application/json")]
        ));
        assert!(!wants(
            JsonMode::Auto,
            &[cors, ("ACCEPT", "application/json"), ("Accept", "application/json;q=0")]
        ));
        assert!(!wants(JsonMode::Auto, &[cors, ("Accept-Language", "application/json")]));
    }

    fn parsed(body: &str) -> Value {
        serde_json::from_str(body).expect("valid JSON")
    }

    #[test]
    fn bodies_in_field_order() {
        assert_eq!(
            challenge_body("https://c.esperr.com/c?t=1&u=2", Some("d-1")),
            r#"{"action":"challenge","redirect_url":"https://c.esperr.com/c?t=1&u=2","decision_id":"d-1"}"#
        );
        assert_eq!(
            challenge_body("https://c.esperr.com/", None),
            r#"{"action":"challenge","redirect_url":"https://c.esperr.com/"}"#
        );
        assert_eq!(block_body(Some("d-2")), r#"{"action":"block","decision_id":"d-2"}"#);
        assert_eq!(block_body(None), r#"{"action":"block"}"#);
    }

    #[test]
    fn bodies_are_valid_json_whatever_they_carry() {
        let url = "https://c.esperr.com/\"q\"\\\u{0}\u{1f}\n\u{7f}é\u{2028}😀</script>";
        let id = "\"}\\,\"action\":\"allow\u{0}\u{e9}";
        assert_eq!(
            parsed(&challenge_body(url, Some(id))),
            json!({"action": "challenge", "redirect_url": url, "decision_id": id})
        );
        assert_eq!(parsed(&block_body(Some(id))), json!({"action": "block", "decision_id": id}));
        assert!(!challenge_body(url, Some(id)).contains('\u{0}'));
    }
}
