//! Where Esper's challenge sends the visitor back to, when `esper_return_url`
//! is not set: the URL the visitor asked for, port included, or, for the
//! JSON forms of a challenge, the page that made the request.

/// The origin a request was made to, as nginx saw it.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub https: bool,
    /// The host as `$host` gives it: lower case, without port.
    pub host: &'a [u8],
    /// The port the client named (in `Host` or `:authority`), if any.
    pub port: Option<u16>,
}

impl Origin<'_> {
    fn default_port(&self) -> u16 {
        if self.https {
            443
        } else {
            80
        }
    }

    /// `scheme://host[:port]`, the port left out when it is the scheme's
    /// default.
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.https { b"https://" } else { b"http://" });
        out.extend_from_slice(self.host);
        if let Some(port) = self.port.filter(|&port| port != self.default_port()) {
            out.extend_from_slice(format!(":{port}").as_bytes());
        }
    }
}

/// The URL the visitor asked for: the origin, then the request target as
/// sent (`$request_uri`).
pub fn request_url(origin: &Origin, target: &[u8]) -> Vec<u8> {
    let mut url = Vec::with_capacity(16 + origin.host.len() + target.len());
    origin.write(&mut url);
    url.extend_from_slice(target);
    url
}

/// The port of a `Host` header or `:authority` (`host:port`,
/// `[v6]:port`): `None` when it names none or names it badly.
pub fn authority_port(authority: &[u8]) -> Option<u16> {
    let after_host = match authority.iter().rposition(|&b| b == b']') {
        Some(bracket) => &authority[bracket + 1..],
        None => authority,
    };
    let colon = after_host.iter().position(|&b| b == b':')?;
    let digits = &after_host[colon + 1..];
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok().filter(|&port| port != 0)
}

/// The `Referer` when it is a page of `origin` (same scheme, host and port)
/// that can be sent back to as it is: an absolute http(s) URL of visible
/// ASCII, without user information and without a challenge proof of its
/// own (a page where the proof was not taken, which would otherwise be
/// challenged round and round). `None` otherwise.
pub fn same_origin_page<'a>(referer: &'a [u8], origin: &Origin) -> Option<&'a [u8]> {
    if !referer.iter().all(|b| (0x21..0x7f).contains(b))
        || contains(referer, b"esper_challenge_proof")
    {
        return None;
    }
    let (https, rest) = if starts_with_ignore_case(referer, b"https://") {
        (true, &referer[8..])
    } else if starts_with_ignore_case(referer, b"http://") {
        (false, &referer[7..])
    } else {
        return None;
    };
    let end = rest.iter().position(|&b| matches!(b, b'/' | b'?' | b'#')).unwrap_or(rest.len());
    let authority = &rest[..end];
    if https != origin.https || authority.contains(&b'@') {
        return None;
    }
    let host = match authority_port(authority) {
        Some(_) => &authority[..authority.iter().rposition(|&b| b == b':')?],
        None if authority.ends_with(b"]") || !authority.contains(&b':') => authority,
        None => return None,
    };
    let port = authority_port(authority).unwrap_or(origin.default_port());
    let same = host.eq_ignore_ascii_case(origin.host)
        && port == origin.port.unwrap_or(origin.default_port());
    same.then_some(referer)
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn contains(bytes: &[u8], needle: &[u8]) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(https: bool, host: &'static str, port: Option<u16>) -> Origin<'static> {
        Origin { https, host: host.as_bytes(), port }
    }

    fn url(origin: &Origin, target: &str) -> String {
        String::from_utf8(request_url(origin, target.as_bytes())).unwrap()
    }

    #[test]
    fn request_urls_keep_a_port_that_is_not_the_default() {
        assert_eq!(
            url(&origin(false, "app.test", Some(8080)), "/a?b=1"),
            "http://app.test:8080/a?b=1"
        );
        assert_eq!(url(&origin(true, "app.test", Some(8443)), "/"), "https://app.test:8443/");
        assert_eq!(url(&origin(false, "app.test", None), "/x"), "http://app.test/x");
        assert_eq!(url(&origin(false, "app.test", Some(80)), "/x"), "http://app.test/x");
        assert_eq!(url(&origin(true, "app.test", Some(443)), "/x"), "https://app.test/x");
        assert_eq!(url(&origin(true, "app.test", Some(80)), "/x"), "https://app.test:80/x");
        assert_eq!(url(&origin(false, "[::1]", Some(8080)), "/x"), "http://[::1]:8080/x");
    }

    #[test]
    fn authority_ports() {
        for (authority, port) in [
            ("app.test:8080", Some(8080)),
            ("app.test", None),
            ("app.test:", None),
            ("app.test:80x", None),
            ("app.test:65535", Some(65535)),
            ("app.test:65536", None),
            ("app.test:0", None),
            ("app.test:000080", None),
            ("[::1]:8443", Some(8443)),
            ("[::1]", None),
            ("[::1]:", None),
            ("127.0.0.1:1", Some(1)),
            ("a:1:2", None),
        ] {
            assert_eq!(authority_port(authority.as_bytes()), port, "{authority}");
        }
    }

    #[test]
    fn same_origin_pages() {
        let http = origin(false, "app.test", Some(8080));
        let page = |referer: &'static str, origin: &Origin| {
            same_origin_page(referer.as_bytes(), origin).map(|p| std::str::from_utf8(p).unwrap())
        };
        assert_eq!(
            page("http://app.test:8080/shop?x=1", &http),
            Some("http://app.test:8080/shop?x=1")
        );
        assert_eq!(page("HTTP://App.Test:8080/", &http), Some("HTTP://App.Test:8080/"));
        assert_eq!(page("http://app.test:8080", &http), Some("http://app.test:8080"));
        for other in [
            "http://app.test/shop",
            "http://app.test:8081/shop",
            "https://app.test:8080/shop",
            "http://evil.test:8080/shop",
            "http://app.test.evil:8080/",
            "http://app.test:8080@evil.test/",
            "http://user@app.test:8080/",
            "http://app.test:8080x/",
            "//app.test:8080/shop",
            "/shop",
            "ftp://app.test:8080/",
            "http://app.test:8080/a b",
            "http://app.test:8080/\u{e9}",
            "http://app.test:8080/p?esper_challenge_proof=proof-1",
            "",
        ] {
            assert_eq!(page(other, &http), None, "{other}");
        }
        let https = origin(true, "app.test", None);
        assert_eq!(page("https://app.test/p", &https), Some("https://app.test/p"));
        assert_eq!(page("https://app.test:443/p", &https), Some("https://app.test:443/p"));
        assert_eq!(page("https://app.test:8443/p", &https), None);
        assert_eq!(page("http://app.test/p", &https), None);
        let v6 = origin(false, "[::1]", Some(8080));
        assert_eq!(page("http://[::1]:8080/p", &v6), Some("http://[::1]:8080/p"));
        assert_eq!(page("http://[::1]/p", &v6), None);
        assert_eq!(page("http://[::1]:8080/p", &http), None);
        // An authority with a malformed port is no page of the origin, even
        // when the host is spelled with it (a server_name may hold anything).
        let odd = origin(false, "app.test:x", None);
        assert_eq!(page("http://app.test:x/p", &odd), None);
        assert_eq!(page("http://app.test:/p", &origin(false, "app.test:", None)), None);
    }
}
