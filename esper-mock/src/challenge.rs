//! The managed-challenge side of the mock: a visitor "solves" a challenge at
//! `/challenge/solve`, comes back with `esper_challenge_proof=<token>`, and the
//! module verifies the token at `/api/v1/challenge/proof/verify`.
//!
//! Tokens issued by `solve` are valid for the client the challenge was shown
//! to; tests also script the verify answer by the token's prefix (see
//! [`verdict`]).

use std::{
    collections::{HashMap, VecDeque},
    sync::atomic::Ordering,
    time::{Duration, SystemTime},
};

use hyper::{header::HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use crate::{json_response, respond, Body, Mock};

/// Challenge sessions remembered; beyond, the oldest are forgotten, so that a
/// benchmark challenging every request runs in bounded memory.
const MAX_SESSIONS: usize = 100_000;

/// Who a challenge was shown to, or who redeems a proof: `client_ip` and
/// `user_agent`, as the runtime payload's `request` and the verify body name
/// them. A field that is absent (or not a string) is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Client {
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Client {
    /// The fields of a JSON object: the payload's `request`, or a verify body.
    pub fn of(object: &Value) -> Client {
        let field = |name: &str| object.get(name)?.as_str().map(str::to_owned);
        Client { client_ip: field("client_ip"), user_agent: field("user_agent") }
    }

    /// Whether `redeemer` may redeem a proof issued to this client: every
    /// field that both name is equal. One that either leaves out is not
    /// compared, so hand-written verify bodies without them keep working.
    pub fn may_redeem(&self, redeemer: &Client) -> bool {
        fn same(issued: &Option<String>, redeemer: &Option<String>) -> bool {
            match (issued, redeemer) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
        }
        same(&self.client_ip, &redeemer.client_ip) && same(&self.user_agent, &redeemer.user_agent)
    }
}

/// The challenge sessions runtime answers opened: who each challenge was
/// shown to, by session id.
#[derive(Debug, Default)]
pub struct Sessions {
    clients: HashMap<u64, Client>,
    /// Ids, oldest first.
    order: VecDeque<u64>,
}

impl Sessions {
    pub fn open(&mut self, id: u64, client: Client) {
        if self.order.len() >= MAX_SESSIONS {
            if let Some(oldest) = self.order.pop_front() {
                self.clients.remove(&oldest);
            }
        }
        self.order.push_back(id);
        self.clients.insert(id, client);
    }

    pub fn client(&self, id: u64) -> Option<&Client> {
        self.clients.get(&id)
    }
}

/// A token issued by `/challenge/solve`.
#[derive(Debug, Clone, PartialEq)]
pub struct Issued {
    /// `ttl_seconds` to report, when solve was asked for one.
    pub ttl: Option<u64>,
    /// Who the challenge was shown to, when solve came from a known session.
    pub client: Option<Client>,
}

/// What the verify endpoint does with one token.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// 200 with this JSON body.
    Answer(Value),
    /// This status with a JSON error body.
    Status(StatusCode),
    /// 500.
    Fail,
    /// 200 with a body that is not JSON.
    Junk,
    /// Never answer.
    Hang,
}

/// Token prefixes: `valid-` valid; `ttl<N>-` valid for N seconds
/// (`ttl_seconds`); `exp<N>-` valid until now + N seconds (`expires_at`);
/// `status<CODE>-` answers that status; `slow-` hangs; `fail-` answers 500;
/// `junk-` answers a body that is not JSON. `issued` tokens are valid, with
/// the lifetime given at solve time, unless `redeemer` is not the client the
/// challenge was shown to. Anything else is `{"valid": false}`.
pub fn verdict(token: &str, issued: Option<&Issued>, redeemer: &Client) -> Verdict {
    if let Some(issued) = issued {
        let bound_elsewhere =
            issued.client.as_ref().is_some_and(|client| !client.may_redeem(redeemer));
        return Verdict::Answer(match issued.ttl {
            _ if bound_elsewhere => json!({"valid": false}),
            Some(ttl) => json!({"valid": true, "ttl_seconds": ttl}),
            None => json!({"valid": true}),
        });
    }
    let number = |prefix: &str| -> Option<u64> {
        token.strip_prefix(prefix)?.split('-').next()?.parse().ok()
    };
    if token.starts_with("valid-") {
        Verdict::Answer(json!({"valid": true}))
    } else if let Some(ttl) = number("ttl") {
        Verdict::Answer(json!({"valid": true, "ttl_seconds": ttl}))
    } else if let Some(secs) = number("exp") {
        let at = SystemTime::now() + Duration::from_secs(secs);
        Verdict::Answer(json!({"valid": true, "expires_at": rfc3339(at)}))
    } else if let Some(status) = number("status").and_then(|code| {
        let code = u16::try_from(code).ok()?;
        StatusCode::from_u16(code).ok()
    }) {
        Verdict::Status(status)
    } else if token.starts_with("slow-") {
        Verdict::Hang
    } else if token.starts_with("fail-") {
        Verdict::Fail
    } else if token.starts_with("junk-") {
        Verdict::Junk
    } else {
        Verdict::Answer(json!({"valid": false}))
    }
}

impl Mock {
    /// `/challenge/solve?return_url=U[&session=S][&ttl=N]`: the visitor
    /// passed; send them back with a fresh proof token, bound to the client
    /// the session's challenge was shown to.
    pub(crate) fn solve(&self, query: &str) -> Response<Body> {
        let mut return_url = None;
        let mut ttl = None;
        let mut session = None;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "return_url" => return_url = Some(value.into_owned()),
                "ttl" => ttl = value.parse().ok(),
                "session" => session = value.parse().ok(),
                _ => {}
            }
        }
        let Some(return_url) = return_url else {
            return json_response(StatusCode::BAD_REQUEST, r#"{"error":"return_url needed"}"#);
        };
        // An unknown or forgotten session issues a proof any client may redeem.
        let client = session.and_then(|id| self.sessions.lock().unwrap().client(id).cloned());
        let token = format!("proof-{}", self.issued.fetch_add(1, Ordering::Relaxed) + 1);
        self.tokens.lock().unwrap().insert(token.clone(), Issued { ttl, client });
        let location = return_location(&return_url, &token);
        let mut response = respond(StatusCode::FOUND, HeaderValue::from_static("text/html"), "");
        match HeaderValue::from_str(&location) {
            Ok(location) => {
                response.headers_mut().insert(hyper::header::LOCATION, location);
                response
            }
            Err(_) => json_response(StatusCode::BAD_REQUEST, r#"{"error":"bad return_url"}"#),
        }
    }
}

/// The challenge page for `/challenge?QUERY`: a form whose "Solve" button
/// (id `solve`) sends the same query to `/challenge/solve`, as a person
/// passing Esper's challenge would.
pub fn page(query: &str) -> String {
    let fields: String = form_urlencoded::parse(query.as_bytes())
        .map(|(name, value)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
                html_escape(&name),
                html_escape(&value)
            )
        })
        .collect();
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <title>Esper challenge (mock)</title></head>\n<body>\n<h1>Esper challenge (mock)</h1>\n\
         <form method=\"get\" action=\"/challenge/solve\">\n{fields}\
         <button type=\"submit\" id=\"solve\">Solve</button>\n</form>\n</body>\n</html>\n"
    )
}

fn html_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The token a verify request carries (`proof`, or `token`).
pub fn token_of(body: &Value) -> Option<&str> {
    body.get("proof").or_else(|| body.get("token"))?.as_str()
}

/// Where `/challenge/solve` sends the visitor: the return URL with the proof
/// appended.
pub fn return_location(return_url: &str, token: &str) -> String {
    let separator = if return_url.contains('?') { '&' } else { '?' };
    let token: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
    format!("{return_url}{separator}esper_challenge_proof={token}")
}

pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ip: &str, ua: &str) -> Client {
        Client { client_ip: Some(ip.into()), user_agent: Some(ua.into()) }
    }

    fn anyone() -> Client {
        Client::default()
    }

    #[test]
    fn scripted_tokens() {
        let scripted = |token| verdict(token, None, &anyone());
        assert_eq!(scripted("valid-1"), Verdict::Answer(json!({"valid": true})));
        assert_eq!(scripted("ttl5-x"), Verdict::Answer(json!({"valid": true, "ttl_seconds": 5})));
        assert!(matches!(scripted("exp60-x"), Verdict::Answer(v) if v["expires_at"].is_string()));
        assert_eq!(scripted("slow-1"), Verdict::Hang);
        assert_eq!(scripted("fail-1"), Verdict::Fail);
        assert_eq!(scripted("junk-1"), Verdict::Junk);
        assert_eq!(scripted("status422-x"), Verdict::Status(StatusCode::UNPROCESSABLE_ENTITY));
        assert_eq!(scripted("status429-x"), Verdict::Status(StatusCode::TOO_MANY_REQUESTS));
        for not_a_status in ["status-422", "status1000-x", "status70000-x", "statusx-1"] {
            assert_eq!(
                scripted(not_a_status),
                Verdict::Answer(json!({"valid": false})),
                "{not_a_status}"
            );
        }
        assert_eq!(scripted("anything"), Verdict::Answer(json!({"valid": false})));
        let unbound = |ttl| Issued { ttl, client: None };
        assert_eq!(
            verdict("proof-1", Some(&unbound(Some(9))), &anyone()),
            Verdict::Answer(json!({"valid": true, "ttl_seconds": 9}))
        );
        assert_eq!(
            verdict("proof-1", Some(&unbound(None)), &client("1.2.3.4", "ua")),
            Verdict::Answer(json!({"valid": true}))
        );
    }

    #[test]
    fn issued_proofs_are_bound_to_the_challenged_client() {
        let issued = Issued { ttl: Some(60), client: Some(client("203.0.113.7", "Mozilla/5.0")) };
        let valid = Verdict::Answer(json!({"valid": true, "ttl_seconds": 60}));
        let refused = Verdict::Answer(json!({"valid": false}));
        let check = |redeemer: &Client| verdict("proof-1", Some(&issued), redeemer);
        assert_eq!(check(&client("203.0.113.7", "Mozilla/5.0")), valid);
        assert_eq!(check(&client("203.0.113.8", "Mozilla/5.0")), refused);
        assert_eq!(check(&client("203.0.113.7", "curl/8")), refused);
        assert_eq!(check(&anyone()), valid, "a body without the fields");
        let ip_only = Client { client_ip: Some("203.0.113.7".into()), user_agent: None };
        assert_eq!(check(&ip_only), valid);
        let other_ip_only = Client { client_ip: Some("198.51.100.1".into()), user_agent: None };
        assert_eq!(check(&other_ip_only), refused);
    }

    #[test]
    fn clients_are_read_from_json_objects() {
        assert_eq!(
            Client::of(&json!({"client_ip": "1.2.3.4", "user_agent": "", "proof": "p"})),
            client("1.2.3.4", "")
        );
        assert_eq!(Client::of(&json!({"client_ip": 5})), anyone());
        assert_eq!(Client::of(&json!("not an object")), anyone());
    }

    #[test]
    fn sessions_remember_the_newest() {
        let mut sessions = Sessions::default();
        sessions.open(1, client("1.1.1.1", "a"));
        sessions.open(2, client("2.2.2.2", "b"));
        assert_eq!(sessions.client(1), Some(&client("1.1.1.1", "a")));
        assert_eq!(sessions.client(3), None);
        for id in 3..MAX_SESSIONS as u64 + 2 {
            sessions.open(id, anyone());
        }
        assert_eq!(sessions.client(1), None, "the oldest is forgotten");
        assert_eq!(sessions.client(2), Some(&client("2.2.2.2", "b")));
        assert_eq!(sessions.clients.len(), MAX_SESSIONS);
    }

    #[test]
    fn the_page_sends_its_query_to_solve() {
        let page = page("return_url=https%3A%2F%2Fa.test%2Fp%3Fx%3D1%26y%3D%22%3C&session=7");
        assert!(page.contains(r#"<form method="get" action="/challenge/solve">"#));
        assert!(page.contains(
            r#"<input type="hidden" name="return_url" value="https://a.test/p?x=1&amp;y=&quot;&lt;">"#
        ));
        assert!(page.contains(r#"<input type="hidden" name="session" value="7">"#));
        assert!(page.contains(r#"<button type="submit" id="solve">Solve</button>"#));
        assert_eq!(html_escape(r#"<a href='x'>&"#), "&lt;a href=&#39;x&#39;&gt;&amp;");
    }

    #[test]
    fn return_locations() {
        assert_eq!(return_location("http://a/p", "t 1"), "http://a/p?esper_challenge_proof=t+1");
        assert_eq!(
            return_location("http://a/p?x=1", "t"),
            "http://a/p?x=1&esper_challenge_proof=t"
        );
        assert_eq!(token_of(&json!({"proof": "a", "token": "b"})), Some("a"));
        assert_eq!(token_of(&json!({"token": "b"})), Some("b"));
        assert_eq!(token_of(&json!({})), None);
    }
}
