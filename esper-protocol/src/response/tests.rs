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
    // qdtext: tab, space and visible characters, not other controls or DEL.
    assert!(accepts(&["application/json;p=\"a\tb c\u{e9}\""]));
    for control in ["\u{1}", "\n", "\u{7f}"] {
        assert!(!accepts(&[&format!("application/json;p=\"a{control}b\"")]), "{control:?}");
    }
}

#[test]
fn a_half_malformed_range_is_malformed() {
    // One side a token, the other not: the whole range is ignored.
    for value in ["appli cation/vnd+json", "application/vnd api+json", "application/\u{e9}+json"] {
        assert!(!accepts(&[value]), "{value:?}");
    }
    assert!(accepts(&["app lication/json;q=0, application/json"]), "refuses nothing");
}

#[test]
fn only_a_bare_star_before_the_json_suffix_is_a_wildcard() {
    assert!(!accepts(&["application/*+json"]));
    assert!(accepts(&["application/*x+json"]));
    assert!(accepts(&["application/x*+json"]));
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
const NAVIGATION: &Headers = &[("Sec-Fetch-Mode", "navigate"), ("Accept", "text/html,*/*;q=0.8")];

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
            wants_json(JsonMode::Auto, headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))),
            !navigation,
            "{fetch_mode:?}"
        );
    }
}

/// Without fetch metadata (a plain-http origin, curl, an old browser),
/// the Accept header alone decides: JSON preferred to HTML.
#[test]
fn without_fetch_metadata_json_must_be_preferred_to_html() {
    for (accept, json) in [
        ("application/json", true),
        ("application/vnd.api+json", true),
        ("application/json, text/plain, */*", true),
        ("application/json, text/javascript, */*; q=0.01", true),
        ("application/json, text/html;q=0.9", true),
        ("text/html;q=0.5, application/json;q=0.6", true),
        ("application/json;q=0.5, text/*;q=0.4", true),
        ("application/json;q=0.5, */*", false),
        ("application/json;q=0.5, text/*", false),
        ("application/json;q=0.5, text/*;q=0.1, */*", true),
        ("application/json, text/html", false),
        ("text/html, application/json", false),
        ("TEXT/HTML;q=0.5, application/json;q=0.5", false),
        ("application/json;q=0.9, text/html", false),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", false),
        ("*/*", false),
        ("application/json;q=0", false),
        ("application/json;q=0, application/problem+json", false),
        ("image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8", false),
    ] {
        assert_eq!(wants(JsonMode::Auto, &[("Accept", accept)]), json, "{accept:?}");
    }
    assert!(!wants(JsonMode::Auto, &[]));
    // Every Accept header counts, text/html named in either.
    assert!(!wants(JsonMode::Auto, &[("Accept", "application/json"), ("accept", "text/html")]));
    // Fetch metadata present: the rules above, not a preference.
    assert!(wants(
        JsonMode::Auto,
        &[("Sec-Fetch-Mode", "cors"), ("Accept", "text/html, application/json")]
    ));
    assert!(!wants(
        JsonMode::Auto,
        &[("Sec-Fetch-Mode", "navigate"), ("Accept", "application/json")]
    ));
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
    // An empty value is no fetch mode: the Accept preference decides.
    let both = ("Accept", "text/html, application/json");
    assert!(!wants(JsonMode::Auto, &[("Sec-Fetch-Mode", " "), both]));
    assert!(!wants(JsonMode::Auto, &[("Sec-Fetch-Mode", ""), both]));
    assert!(wants(JsonMode::Auto, &[("Sec-Fetch-Mode", ""), json]));
}

#[test]
fn requested_with() {
    // Accepted but not preferred: only XMLHttpRequest makes it JSON.
    let json = ("Accept", "text/html, application/json");
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
            wants_json(JsonMode::Auto, headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))),
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
