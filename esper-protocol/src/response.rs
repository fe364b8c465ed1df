//! `esper_json_response`: whether a challenge or a block is answered with a
//! small JSON document instead of a redirect or the block page, and that
//! document.
//!
//! In `auto`, a request gets JSON when it is not a browser navigation and it
//! accepts JSON, or when it carries no fetch metadata and prefers JSON to
//! HTML; anything unclear falls back to the redirect and the block page,
//! which a browser can always show.

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
/// - Without any `Sec-Fetch-Mode` (browsers send fetch metadata only to
///   secure origins, so a `fetch()` on a plain-http site has none) and
///   without `X-Requested-With`: JSON when `Accept` prefers JSON to HTML
///   (and accepts it): a JSON range's q is above that of a range naming
///   `text/html`, or, when none names it, not below that of the wildcard
///   (`text/*`, else `*/*`) that covers it. No browser navigates with such
///   an `Accept`: browsers never name JSON in it.
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
    if fetch_mode_given || xhr {
        not_navigation && accept.accepted()
    } else {
        accept.prefers_json()
    }
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

/// What the `Accept` headers seen so far say about JSON, and about HTML
/// beside it.
#[derive(Default)]
struct AcceptJson {
    /// The highest q of a JSON range, in thousandths (0: none above 0).
    json: u16,
    /// Some `application/json` range has q = 0.
    refused: bool,
    /// The highest q of a `text/html` range.
    html: Option<u16>,
    /// The highest q of a `text/*` range, then of a `*/*` range: what
    /// `text/html` gets when no range names it (RFC 9110 §12.5.1, the most
    /// specific range wins).
    text_any: Option<u16>,
    any: Option<u16>,
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
            if range.is_json() {
                self.json = self.json.max(range.weight);
            }
            let slot = match (range.type_, range.subtype) {
                (t, s) if t.eq_ignore_ascii_case(b"text") && s.eq_ignore_ascii_case(b"html") => {
                    &mut self.html
                }
                (t, b"*") if t.eq_ignore_ascii_case(b"text") => &mut self.text_any,
                (b"*", b"*") => &mut self.any,
                _ => continue,
            };
            *slot = Some(slot.map_or(range.weight, |q| q.max(range.weight)));
        }
    }

    fn accepted(&self) -> bool {
        self.json > 0 && !self.refused
    }

    /// Accepted, and JSON is preferred to HTML: the JSON range's q is above
    /// the q of a range naming `text/html`; when none names it, above or
    /// equal to the wildcard's that would cover it (`text/*`, else `*/*`),
    /// since a client that names JSON and reaches HTML only through a
    /// wildcard (`application/json, text/plain, */*`) asks for JSON.
    fn prefers_json(&self) -> bool {
        let html_wins = match self.html {
            Some(html) => html >= self.json,
            None => self.text_any.or(self.any).is_some_and(|wildcard| wildcard > self.json),
        };
        self.accepted() && !html_wins
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
mod tests;
