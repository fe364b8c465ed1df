//! Taking the challenge proof out of a query string.
//!
//! The proof must never reach the application, and the visitor is sent back to
//! the URL they asked for: every other parameter is kept byte for byte, in its
//! order, with its original encoding.

/// Query parameter Esper appends when a visitor returns from a challenge
/// (docs/esper-contract.md, "Managed challenge", CONFIRMED).
pub const PROOF_PARAM: &str = "esper_challenge_proof";

/// A query string with the proof parameter taken out.
#[derive(Debug, PartialEq, Eq)]
pub struct Proof {
    /// Percent-decoded value of the first non-empty occurrence.
    pub token: Option<String>,
    /// The query without any occurrence of the parameter; empty when nothing is left.
    pub rest: Vec<u8>,
}

/// Takes every `esper_challenge_proof` out of `query` (the part after `?`).
/// Returns `None` when the parameter does not occur, so the request is left
/// exactly as it is. Names are compared after percent-decoding, so an
/// encoded name cannot sneak the proof past.
pub fn take_proof(query: &[u8]) -> Option<Proof> {
    // Most requests have no proof: find that out without allocating.
    if !query.split(|&b| b == b'&').any(is_proof) {
        return None;
    }
    let mut found = false;
    let mut token = None;
    let mut kept = 0;
    let mut rest = Vec::with_capacity(query.len());
    for segment in query.split(|&b| b == b'&') {
        match form_urlencoded::parse(segment).next() {
            Some((name, value)) if name == PROOF_PARAM => {
                found = true;
                if token.is_none() && !value.is_empty() {
                    token = Some(value.into_owned());
                }
            }
            _ => {
                if kept > 0 {
                    rest.push(b'&');
                }
                kept += 1;
                rest.extend_from_slice(segment);
            }
        }
    }
    found.then_some(Proof { token, rest })
}

/// A request target with the proof taken out of its query.
#[derive(Debug, PartialEq, Eq)]
pub struct CleanTarget {
    /// As in [`Proof`].
    pub token: Option<String>,
    /// The target without any occurrence of the parameter.
    pub target: Vec<u8>,
}

/// Takes the proof out of a request target (`$request_uri`); `None` when its
/// query carries no proof.
pub fn target_without_proof(target: &[u8]) -> Option<CleanTarget> {
    let at = target.iter().position(|&b| b == b'?')?;
    let proof = take_proof(&target[at + 1..])?;
    let mut cleaned = target[..at].to_vec();
    if !proof.rest.is_empty() {
        cleaned.push(b'?');
        cleaned.extend_from_slice(&proof.rest);
    }
    Some(CleanTarget { token: proof.token, target: cleaned })
}

/// The request line (`$request`) with its target `old` replaced by `new`; for
/// a line that does not hold `old` after the method (it always does for
/// HTTP/1.x, HTTP/2 and HTTP/3), one built from its parts.
pub fn replace_target(
    line: &[u8],
    method: &[u8],
    old: &[u8],
    new: &[u8],
    protocol: &[u8],
) -> Vec<u8> {
    let search_from = method.len().min(line.len());
    let found = (!old.is_empty())
        .then(|| {
            line[search_from..].windows(old.len()).position(|w| w == old).map(|p| p + search_from)
        })
        .flatten();
    match found {
        Some(at) => [&line[..at], new, &line[at + old.len()..]].concat(),
        None if protocol.is_empty() => [method, b" ", new].concat(),
        None => [method, b" ", new, b" ", protocol].concat(),
    }
}

/// A path that no browser can read as another host: the leading run of
/// slashes, backslashes and the characters browsers drop from URLs (tab,
/// CR, LF) becomes one `/`. `//evil.example/x` and `/\evil.example/x` would
/// otherwise be scheme-relative URLs once sent as a relative `Location`.
pub fn same_site_path(target: &[u8]) -> Vec<u8> {
    let start = target
        .iter()
        .position(|b| !matches!(b, b'/' | b'\\' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(target.len());
    [b"/", &target[start..]].concat()
}

fn is_proof(segment: &[u8]) -> bool {
    form_urlencoded::parse(segment).next().is_some_and(|(name, _)| name == PROOF_PARAM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(q: &str) -> Option<(Option<String>, String)> {
        take_proof(q.as_bytes()).map(|p| (p.token, String::from_utf8(p.rest).unwrap()))
    }

    #[test]
    fn absent_leaves_nothing_to_do() {
        assert_eq!(take(""), None);
        assert_eq!(take("a=1&b=2"), None);
        assert_eq!(take("esper_challenge_proofx=1&xesper_challenge_proof=2"), None);
    }

    #[test]
    fn first_last_alone() {
        assert_eq!(
            take("esper_challenge_proof=t1&a=1&b=%20x"),
            Some((Some("t1".into()), "a=1&b=%20x".into()))
        );
        assert_eq!(
            take("a=1&b=2&esper_challenge_proof=t2"),
            Some((Some("t2".into()), "a=1&b=2".into()))
        );
        assert_eq!(
            take("a=1&esper_challenge_proof=t3&b=2"),
            Some((Some("t3".into()), "a=1&b=2".into()))
        );
        assert_eq!(take("esper_challenge_proof=t4"), Some((Some("t4".into()), "".into())));
    }

    #[test]
    fn repeated_encoded_and_empty() {
        assert_eq!(
            take(
                "esper_challenge_proof=&esper_challenge_proof=a%2Bb%3D&c=3&esper_challenge_proof=z"
            ),
            Some((Some("a+b=".into()), "c=3".into()))
        );
        assert_eq!(
            take("esper%5Fchallenge%5Fproof=enc&k=v"),
            Some((Some("enc".into()), "k=v".into()))
        );
        assert_eq!(take("esper_challenge_proof"), Some((None, "".into())));
        assert_eq!(take("esper_challenge_proof=a+b"), Some((Some("a b".into()), "".into())));
    }

    #[test]
    fn target_keeps_path_and_other_parameters() {
        let p = target_without_proof(b"/a/b?x=1&esper_challenge_proof=t&y=2").unwrap();
        assert_eq!((p.token.as_deref(), &p.target[..]), (Some("t"), &b"/a/b?x=1&y=2"[..]));
        let p = target_without_proof(b"/a?esper_challenge_proof=t").unwrap();
        assert_eq!(p.target, b"/a");
        assert_eq!(target_without_proof(b"/a?x=1"), None);
        assert_eq!(target_without_proof(b"/esper_challenge_proof=t"), None);
    }

    #[test]
    fn request_line_loses_the_proof() {
        let line = b"GET /p?a=1&esper_challenge_proof=t HTTP/1.1";
        let new =
            replace_target(line, b"GET", b"/p?a=1&esper_challenge_proof=t", b"/p?a=1", b"HTTP/1.1");
        assert_eq!(new, b"GET /p?a=1 HTTP/1.1");
        // Absolute form: the target sits after the scheme and host.
        let line = b"GET http://h/p?esper_challenge_proof=t HTTP/1.1";
        let new = replace_target(line, b"GET", b"/p?esper_challenge_proof=t", b"/p", b"HTTP/1.1");
        assert_eq!(new, b"GET http://h/p HTTP/1.1");
        // A line that does not hold the target is built from its parts.
        assert_eq!(replace_target(b"odd", b"GET", b"/x?p", b"/x", b"HTTP/2.0"), b"GET /x HTTP/2.0");
        assert_eq!(replace_target(b"", b"GET", b"/x?p", b"/x", b""), b"GET /x");
    }

    #[test]
    fn same_site_path_never_names_another_host() {
        assert_eq!(same_site_path(b"/a/b?c"), b"/a/b?c");
        assert_eq!(same_site_path(b"//evil.example/x"), b"/evil.example/x");
        assert_eq!(same_site_path(b"/\\evil.example/x"), b"/evil.example/x");
        assert_eq!(same_site_path(b"\\/\t\r\n//evil/x"), b"/evil/x");
        assert_eq!(same_site_path(b"///"), b"/");
        assert_eq!(same_site_path(b""), b"/");
        assert_eq!(same_site_path(b"*"), b"/*");
    }

    #[test]
    fn other_bytes_kept_as_sent() {
        assert_eq!(
            take("x=%zz&&y&esper_challenge_proof=p&z=%E2%82%AC+1"),
            Some((Some("p".into()), "x=%zz&&y&z=%E2%82%AC+1".into()))
        );
        assert_eq!(take("&a=1&esper_challenge_proof=p"), Some((Some("p".into()), "&a=1".into())));
        let raw = b"a=\xff&esper_challenge_proof=p";
        assert_eq!(take_proof(raw).unwrap().rest, b"a=\xff".to_vec());
    }
}
