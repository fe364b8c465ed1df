//! Taking the challenge proof out of a query string.
//!
//! The proof must never reach the application, and the visitor is sent back to
//! the URL they asked for: every other parameter is kept byte for byte, in its
//! order, with its original encoding.

/// Query parameter Esper appends when a visitor returns from a challenge
/// (ESPER_API.md §2, CONFIRMED).
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

fn is_proof(segment: &[u8]) -> bool {
    form_urlencoded::parse(segment)
        .next()
        .is_some_and(|(name, _)| name == PROOF_PARAM)
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
        assert_eq!(
            take("esper_challenge_proofx=1&xesper_challenge_proof=2"),
            None
        );
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
        assert_eq!(
            take("esper_challenge_proof=t4"),
            Some((Some("t4".into()), "".into()))
        );
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
        assert_eq!(
            take("esper_challenge_proof=a+b"),
            Some((Some("a b".into()), "".into()))
        );
    }

    #[test]
    fn other_bytes_kept_as_sent() {
        assert_eq!(
            take("x=%zz&&y&esper_challenge_proof=p&z=%E2%82%AC+1"),
            Some((Some("p".into()), "x=%zz&&y&z=%E2%82%AC+1".into()))
        );
        assert_eq!(
            take("&a=1&esper_challenge_proof=p"),
            Some((Some("p".into()), "&a=1".into()))
        );
        let raw = b"a=\xff&esper_challenge_proof=p";
        assert_eq!(take_proof(raw).unwrap().rest, b"a=\xff".to_vec());
    }
}
