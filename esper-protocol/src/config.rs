//! Values of the `esper_*` directives that need more than nginx's own slots.
//! Each error message is what `nginx -t` prints before the file and line.

use std::fmt;

use crate::pass::{PassCookie, SameSite};

/// Path of the runtime decision endpoint below `esper_api_url`.
pub const DECISION_PATH: &str = "/api/v1/runtime/mitigation";

/// Path of the challenge proof verification endpoint (docs/esper-contract.md,
/// "Managed challenge").
pub const VERIFY_PATH: &str = "/api/v1/challenge/proof/verify";

/// `esper_api_url` when none is set.
pub const DEFAULT_API_URL: &str = "https://api.esperr.com";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated Esper API base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiUrl {
    base: url::Url,
}

/// `value` as an error may show it: without a query, a fragment or a
/// `user:password@`, where a key put in the wrong place would be.
fn without_secrets(value: &str) -> String {
    let value = &value[..value.find(['?', '#']).unwrap_or(value.len())];
    let Some(scheme_end) = value.find("://") else {
        return value.to_owned();
    };
    let rest = &value[scheme_end + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => format!("{}://***@{}", &value[..scheme_end], &rest[at + 1..]),
        None => value.to_owned(),
    }
}

impl ApiUrl {
    /// Accepts an absolute http or https URL with a host, no query and no
    /// fragment; a path prefix is kept (for a gateway in front of Esper).
    pub fn parse(value: &str) -> Result<ApiUrl, ConfigError> {
        let invalid = |why: &str| {
            ConfigError(format!("invalid Esper API URL \"{}\": {why}", without_secrets(value)))
        };
        let base = url::Url::parse(value).map_err(|e| invalid(&e.to_string()))?;
        if base.scheme() != "http" && base.scheme() != "https" {
            return Err(invalid("scheme must be http or https"));
        }
        if !base.has_host() {
            return Err(invalid("no host"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("query and fragment are not allowed"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(invalid("credentials belong in esper_api_key"));
        }
        Ok(ApiUrl { base })
    }

    /// `{base}/api/v1/runtime/mitigation`, whether or not the base ends in `/`.
    pub fn decision_url(&self) -> String {
        self.endpoint(DECISION_PATH)
    }

    /// `{base}/api/v1/challenge/proof/verify`.
    pub fn verify_url(&self) -> String {
        self.endpoint(VERIFY_PATH)
    }

    fn endpoint(&self, path: &str) -> String {
        let base = self.base.as_str();
        format!("{}{}", base.trim_end_matches('/'), path)
    }

    pub fn is_https(&self) -> bool {
        self.base.scheme() == "https"
    }
}

impl Default for ApiUrl {
    fn default() -> Self {
        ApiUrl::parse(DEFAULT_API_URL).expect("the default API URL is valid")
    }
}

/// `esper_block_status`: any 4xx or 5xx code nginx can send, 444 included.
pub fn parse_block_status(value: &str) -> Result<u16, ConfigError> {
    match value.parse::<u16>() {
        Ok(code @ 400..=599) => Ok(code),
        _ => Err(ConfigError(format!(
            "invalid block status \"{value}\": use a code from 400 to 599"
        ))),
    }
}

/// `esper_challenge_status`: one of the redirect codes.
pub fn parse_challenge_status(value: &str) -> Result<u16, ConfigError> {
    match value.parse::<u16>() {
        Ok(code @ (301 | 302 | 303 | 307 | 308)) => Ok(code),
        _ => Err(ConfigError(format!(
            "invalid challenge status \"{value}\": use 301, 302, 303, 307 or 308"
        ))),
    }
}

/// `esper_field` names and `esper_source` are JSON keys and values Esper
/// evaluates; keep them to visible ASCII so a typo cannot hide.
pub fn check_name(what: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError(format!(
            "invalid {what} \"{value}\": use 1 to 128 visible ASCII characters"
        )));
    }
    Ok(())
}

/// `esper_pass_cookie`: an RFC 6265 cookie name (an HTTP token).
pub fn check_cookie_name(value: &str) -> Result<(), ConfigError> {
    if value.len() > 128 || !crate::response::is_token(value.as_bytes()) {
        return Err(ConfigError(format!("invalid cookie name \"{value}\"")));
    }
    let prefixed = |prefix: &str| {
        value.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    if prefixed(crate::pass::SECURE_PREFIX) || prefixed("__Host-") {
        return Err(ConfigError(format!(
            "invalid cookie name \"{value}\": no \"__Secure-\" or \"__Host-\" prefix, the module adds \"{}\" itself whenever the cookie is Secure",
            crate::pass::SECURE_PREFIX
        )));
    }
    Ok(())
}

/// `esper_pass_cookie NAME [secure] [samesite=lax|strict|none] [partitioned]`,
/// its arguments after the directive's name.
pub fn parse_pass_cookie(args: &[&str]) -> Result<PassCookie, ConfigError> {
    let (name, flags) = args.split_first().ok_or_else(|| ConfigError("no cookie name".into()))?;
    check_cookie_name(name)?;
    let mut cookie = PassCookie::new((*name).to_owned());
    let mut seen = Vec::new();
    for flag in flags {
        let word = flag.split('=').next().unwrap_or_default();
        if seen.contains(&word) {
            return Err(ConfigError(format!("duplicate parameter \"{flag}\"")));
        }
        seen.push(word);
        match *flag {
            "secure" => cookie.force_secure = true,
            "partitioned" => cookie.partitioned = true,
            "samesite=lax" => cookie.same_site = SameSite::Lax,
            "samesite=strict" => cookie.same_site = SameSite::Strict,
            "samesite=none" => cookie.same_site = SameSite::None,
            other => {
                return Err(ConfigError(format!(
                    "invalid parameter \"{other}\", it must be \"secure\", \"samesite=lax\", \"samesite=strict\", \"samesite=none\" or \"partitioned\""
                )))
            }
        }
    }
    Ok(cookie)
}

/// The API key goes into a header as it is.
pub fn check_api_key(value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError("invalid API key: it must be non-empty visible ASCII".to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_cookie_parameters() {
        let plain = parse_pass_cookie(&["pass"]).unwrap();
        assert_eq!(plain, PassCookie::new("pass".to_owned()));
        let all = parse_pass_cookie(&["pass", "secure", "samesite=none", "partitioned"]).unwrap();
        assert!(all.force_secure && all.partitioned);
        assert_eq!(all.same_site, SameSite::None);
        assert_eq!(
            parse_pass_cookie(&["p", "samesite=strict"]).unwrap().same_site,
            SameSite::Strict
        );
        assert_eq!(parse_pass_cookie(&["p", "samesite=lax"]).unwrap().same_site, SameSite::Lax);
        for bad in [
            &["p", "Secure"][..],
            &["p", "samesite=None"],
            &["p", "samesite"],
            &["p", "httponly"],
            &["p", "secure", "secure"],
            &["p", "samesite=lax", "samesite=none"],
            &["a=b"],
            &["__Secure-p"],
        ] {
            assert!(parse_pass_cookie(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_never_repeat_a_key_put_in_the_url() {
        for (url, shown) in [
            ("https://user:sekret@api.example/", "\"https://***@api.example/\""),
            ("https://sekret@api.example:99/x", "\"https://***@api.example:99/x\""),
            ("https://api.example/?key=sekret", "\"https://api.example/\""),
            ("https://api.example/#sekret", "\"https://api.example/\""),
            ("ht tp://u:sekret@x/", "\"ht tp://***@x/\""),
        ] {
            let error = ApiUrl::parse(url).unwrap_err().to_string();
            assert!(!error.contains("sekret"), "{error}");
            assert!(error.contains(shown), "{error}");
        }
    }

    #[test]
    fn api_url_forms() {
        assert_eq!(
            ApiUrl::default().decision_url(),
            "https://api.esperr.com/api/v1/runtime/mitigation"
        );
        assert_eq!(
            ApiUrl::parse("http://127.0.0.1:8081/").unwrap().decision_url(),
            "http://127.0.0.1:8081/api/v1/runtime/mitigation"
        );
        assert_eq!(
            ApiUrl::parse("https://gw.example/esper").unwrap().decision_url(),
            "https://gw.example/esper/api/v1/runtime/mitigation"
        );
        assert!(ApiUrl::parse("https://gw.example").unwrap().is_https());
        assert!(!ApiUrl::parse("http://127.0.0.1:8081/").unwrap().is_https());
        assert_eq!(
            ApiUrl::parse("https://gw.example/esper/").unwrap().verify_url(),
            "https://gw.example/esper/api/v1/challenge/proof/verify"
        );
        for bad in [
            "api.esperr.com",
            "ftp://x/",
            "http://",
            "http://x/?a=1",
            "http://x/#f",
            "http://u:p@x/",
            "",
        ] {
            assert!(ApiUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(ApiUrl::parse("ftp://x/")
            .unwrap_err()
            .to_string()
            .starts_with("invalid Esper API URL \"ftp://x/\""));
    }

    #[test]
    fn statuses() {
        assert_eq!(parse_block_status("403"), Ok(403));
        assert_eq!(parse_block_status("444"), Ok(444));
        assert_eq!(parse_block_status("503"), Ok(503));
        for bad in ["200", "302", "600", "abc", "", "-403"] {
            assert!(parse_block_status(bad).is_err(), "{bad}");
        }
        for good in ["301", "302", "303", "307", "308"] {
            assert!(parse_challenge_status(good).is_ok());
        }
        for bad in ["300", "304", "200", "x"] {
            assert!(parse_challenge_status(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_keys() {
        assert!(check_name("field name", "host").is_ok());
        assert!(check_name("field name", "").is_err());
        assert!(check_name("field name", "a b").is_err());
        assert!(check_cookie_name("esper_challenge").is_ok());
        assert!(check_cookie_name("a=b").is_err());
        assert!(check_cookie_name("a;b").is_err());
        assert!(check_cookie_name("").is_err());
        for prefixed in ["__Secure-x", "__secure-x", "__Host-x", "__HOST-x"] {
            assert!(check_cookie_name(prefixed).is_err(), "{prefixed}");
        }
        assert!(check_cookie_name("__Securex").is_ok());
        assert!(check_cookie_name(&"c".repeat(128)).is_ok(), "128 bytes");
        assert!(check_cookie_name(&"c".repeat(129)).is_err(), "129 bytes");
        assert!(check_name("source", &"s".repeat(128)).is_ok(), "128 bytes");
        assert!(check_name("source", &"s".repeat(129)).is_err(), "129 bytes");
        assert!(check_api_key("sk_live_123").is_ok());
        assert!(check_api_key("a\nb").is_err());
        assert!(!check_api_key("bad key").unwrap_err().to_string().contains("bad key"));
    }
}
