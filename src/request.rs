//! Reading and rewriting an nginx request, on the nginx thread, through the
//! `ngx` crate's borrowed `Request`: what is read lives as long as that
//! borrow, and what the decision call needs is serialized at once into an
//! owned body.

use std::time::{Duration, SystemTime};

use esper_protocol::pass::PassScope;
use esper_protocol::query::{replace_target, take_proof, target_without_proof, CleanTarget, Proof};
use esper_protocol::response::wants_json;
use esper_protocol::return_url::{authority_port, request_url, same_origin_page, Origin};
use esper_protocol::{build_payload, PayloadSettings, RequestView};
use ngx::ffi::{
    ngx_http_complex_value_t, ngx_http_variable_t, ngx_list_t, ngx_str_t, ngx_table_elt_t,
};
use ngx::http::{HttpModuleMainConf, HttpModuleServerConf, NgxHttpCoreModule, Request};

use crate::conf::{LocConf, MainConf, PassSettings};
use crate::ffi::borrowed_str;
use crate::headers::pool_copy;

/// Builds the JSON body of the decision call.
pub fn payload(request: &Request, conf: &LocConf, main: &MainConf) -> Vec<u8> {
    let request_id = evaluate(request, main.request_id).unwrap_or_default();
    let return_url = return_url(request, conf);
    let fields: Vec<(&str, &[u8])> = conf
        .fields
        .iter()
        .flatten()
        .map(|f| (f.name.as_str(), evaluate(request, Some(f.value)).unwrap_or_default()))
        .collect();
    let req = request.as_ref();
    let (client_ip, user_agent) = entity(request);
    let view = RequestView {
        method: req.method_name.as_bytes(),
        unparsed_uri: req.unparsed_uri.as_bytes(),
        client_ip,
        user_agent: Some(user_agent).filter(|ua| !ua.is_empty()),
        request_id,
        started_at: SystemTime::UNIX_EPOCH
            + Duration::from_secs(req.start_sec.max(0) as u64)
            + Duration::from_millis(req.start_msec as u64),
    };
    let settings = PayloadSettings {
        source: conf.source.as_deref().unwrap_or_default(),
        return_url,
        fields: &fields,
        send_cookies: conf.send_cookies == 1,
    };
    // HTTP/3 carries the host only as `:authority`, which nginx does not turn
    // into a Host header (it does for HTTP/2): send it as one, so Esper sees
    // the same headers whatever the protocol.
    let no_host_header = request.as_ref().headers_in.host.is_null();
    let authority = no_host_header.then(|| client_authority(request)).flatten();
    let authority = authority.map(|a| (&b"host"[..], a));
    let mut body = Vec::with_capacity(1024);
    build_payload(&view, headers(request).chain(authority), &settings, &mut body);
    body
}

/// Where Esper's challenge sends the visitor back to (the payload's
/// `return_url`): the one place that decides it, for the payload and for the
/// enforcement zone, which replays a challenge only to the request it was
/// made for. `esper_return_url` when set; else, when the challenge would be
/// answered in JSON (a script's call), the page that made the call (its
/// `Referer`, when of the same origin); else the URL the visitor asked for,
/// port included. `None` only when the request pool is exhausted.
pub fn return_url<'r>(request: &'r Request, conf: &LocConf) -> Option<&'r [u8]> {
    if conf.return_url.is_some() {
        return evaluate(request, conf.return_url);
    }
    let origin = origin(request);
    if wants_json(conf.json_response, headers(request)) {
        let referer = headers(request).find(|(name, _)| name.eq_ignore_ascii_case(b"referer"));
        if let Some(page) = referer.and_then(|(_, value)| same_origin_page(value, &origin)) {
            return Some(page);
        }
    }
    let url = pool_copy(request, &request_url(&origin, request.as_ref().unparsed_uri.as_bytes()))?;
    // SAFETY: made in the request pool, which lives as long as the request.
    Some(unsafe { std::slice::from_raw_parts(url.data, url.len) })
}

/// The origin the client asked for: `$host` (the server name when the
/// client named none), the scheme of the client connection and the port the
/// client named in `Host` or `:authority`.
fn origin(request: &Request) -> Origin<'_> {
    let req = request.as_ref();
    let host = match req.headers_in.server.as_bytes() {
        [] => NgxHttpCoreModule::server_conf(request).map_or(&[][..], |s| s.server_name.as_bytes()),
        server => server,
    };
    Origin {
        https: is_https(request),
        host,
        port: client_authority(request).and_then(authority_port),
    }
}

/// The authority the client named: its `Host` header, else its
/// `:authority` (or the host of an absolute-form request line).
fn client_authority(request: &Request) -> Option<&[u8]> {
    let req = request.as_ref();
    // SAFETY: a non-null header entry of a live request lives as long as it;
    // nginx sets host_start and host_end together, around the host in the
    // request's own buffer, which lives as long as the request.
    unsafe {
        if let Some(host) = req.headers_in.host.as_ref() {
            return Some(host.value.as_bytes());
        }
        if req.host_start.is_null() {
            return None;
        }
        let len = req.host_end.offset_from(req.host_start).max(0) as usize;
        Some(std::slice::from_raw_parts(req.host_start, len))
    }
}

/// Esper's default entity: the client address (after the realip module) and
/// the user agent.
pub fn entity(request: &Request) -> (&[u8], &[u8]) {
    let ip = connection(request).addr_text.as_bytes();
    let ua = request.user_agent().map_or(&[][..], |ua| ua.as_bytes());
    (ip, ua)
}

/// True when the request carries a pass cookie issued for this client, this
/// site and this location's Esper project, which has neither expired nor
/// outlived this location's `esper_pass_ttl`; only the first few
/// well-formed candidates are checked, however many the request carries.
pub fn has_valid_pass(request: &Request, pass: &PassSettings) -> bool {
    let cookie_headers = headers(request)
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"cookie"))
        .map(|(_, value)| value);
    let names = pass.names.each_ref().map(String::as_str);
    let scope = pass_scope(request, pass);
    pass.key.verify_cookies(cookie_headers, &names, SystemTime::now(), pass.ttl, &scope)
}

/// Whom and where a pass is for: this client, the `server` block's name and
/// the request's host (as `$host`), the location's Esper project.
pub fn pass_scope<'r>(request: &'r Request, pass: &'r PassSettings) -> PassScope<'r> {
    let (client_ip, user_agent) = entity(request);
    let server =
        NgxHttpCoreModule::server_conf(request).map_or(&[][..], |s| s.server_name.as_bytes());
    PassScope {
        client_ip,
        user_agent,
        server,
        host: request.as_ref().headers_in.server.as_bytes(),
        project: &pass.project,
    }
}

/// Takes `esper_challenge_proof` out of the request, so that neither the
/// application, Esper's payload nor the access log ever sees it: out of
/// `$request_uri` (what is proxied as is, and where the visitor is sent back
/// to), `$args` and the request line (`$request`), and out of every variable
/// that cached one of them before the access phase. `None` when the request
/// pool cannot hold the cleaned request: the whole query is then cut off
/// (the proof with it, without allocating), and the request must not go on.
pub fn take_challenge_proof(request: &mut Request) -> Option<ChallengeProof> {
    let req = request.as_ref();
    let from_uri = target_without_proof(req.unparsed_uri.as_bytes());
    let from_args = take_proof(req.args.as_bytes());
    if from_uri.is_none() && from_args.is_none() {
        return Some(ChallengeProof::Absent);
    }
    let replaced = replace_without_proof(request, from_uri.as_ref(), from_args.as_ref());
    if replaced.is_none() {
        cut_query(request);
    }
    forget_cached_uri_variables(request);
    replaced?;
    let token = from_uri.and_then(|clean| clean.token);
    Some(ChallengeProof::Taken { token: token.or(from_args.and_then(|proof| proof.token)) })
}

/// Puts the request target, request line and `$args` without the proof in
/// their place; `None` when the pool cannot hold them.
fn replace_without_proof(
    request: &mut Request,
    from_uri: Option<&CleanTarget>,
    from_args: Option<&Proof>,
) -> Option<()> {
    let req = request.as_ref();
    if let Some(clean) = from_uri {
        let line = replace_target(
            req.request_line.as_bytes(),
            req.method_name.as_bytes(),
            req.unparsed_uri.as_bytes(),
            &clean.target,
            req.http_protocol.as_bytes(),
        );
        let line = pool_copy(request, &line)?;
        let target = pool_copy(request, &clean.target)?;
        let req = request.as_mut();
        req.request_line = line;
        req.unparsed_uri = target;
    }
    if let Some(proof) = from_args {
        request.as_mut().args = pool_copy(request, &proof.rest)?;
    }
    Some(())
}

/// Ends the request line and target before their query and empties `$args`,
/// by shortening them where they are.
fn cut_query(request: &mut Request) {
    let req = request.as_mut();
    for text in [&mut req.request_line, &mut req.unparsed_uri] {
        if let Some(at) = text.as_bytes().iter().position(|&b| b == b'?') {
            text.len = at;
        }
    }
    req.args.len = 0;
}

/// What [`take_challenge_proof`] found.
pub enum ChallengeProof {
    Absent,
    /// Taken out; its token, when it had one.
    Taken {
        token: Option<String>,
    },
}

/// Variables whose value is the request URI, its query or the request line.
const URI_VARIABLES: [&[u8]; 5] =
    [b"request_uri", b"args", b"query_string", b"is_args", b"request"];

/// Marks every indexed variable derived from the URI or query as not yet
/// evaluated, so the next read computes it from the request as it is now.
fn forget_cached_uri_variables(request: &mut Request) {
    let Some(cmcf) = NgxHttpCoreModule::main_conf(request) else {
        return;
    };
    let slots = request.as_mut().variables;
    // SAFETY: the core module's indexed variables are an array of
    // ngx_http_variable_t, and the request's value slots have one entry for
    // each of them (nginx allocates them together).
    unsafe {
        for variable in cmcf.variables.as_slice::<ngx_http_variable_t>() {
            let name = variable.name.as_bytes();
            if URI_VARIABLES.contains(&name) || name.starts_with(b"arg_") {
                let value = &mut *slots.add(variable.index);
                value.set_valid(0);
                value.set_not_found(0);
            }
        }
    }
}

/// True when the client can no longer receive the answer (an HTTP/3 stream
/// the client stopped).
pub fn client_gone(request: &Request) -> bool {
    // SAFETY: a live connection has its write event.
    unsafe { (*connection(request).write).error() != 0 }
}

/// The request's client connection (for HTTP/2 and HTTP/3, its stream's).
fn connection(request: &Request) -> &ngx::ffi::ngx_connection_t {
    // SAFETY: a live request has its connection, which outlives it.
    unsafe { &*request.connection() }
}

/// Whether `esper_bypass` lets the request through unasked: some value is
/// neither empty nor "0". `None` when a value cannot be evaluated.
pub fn bypassed(request: &Request, values: &[&ngx_http_complex_value_t]) -> Option<bool> {
    for value in values {
        let value = request.get_complex_value(value)?.as_bytes();
        if !value.is_empty() && value != b"0" {
            return Some(true);
        }
    }
    Some(false)
}

/// True when the client connection is TLS.
pub fn is_https(request: &Request) -> bool {
    // As nginx's `$https`: HTTP/2 and HTTP/3 streams share their connection's.
    !connection(request).ssl.is_null()
}

/// The request's headers, as name and value bytes.
pub fn headers(request: &Request) -> impl Iterator<Item = (&[u8], &[u8])> {
    list_entries(&request.as_ref().headers_in.headers)
}

/// The live entries of a header list of a live request.
fn list_entries(list: &ngx_list_t) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut part = Some(&list.part);
    std::iter::from_fn(move || {
        let current = part?;
        // SAFETY: list parts link to parts of the same live list, or to
        // null, and each holds `nelts` initialized elements.
        unsafe {
            part = current.next.as_ref();
            Some(std::slice::from_raw_parts(current.elts.cast::<ngx_table_elt_t>(), current.nelts))
        }
    })
    .flatten()
    .filter(|h| h.hash != 0)
    .map(|h| (h.key.as_bytes(), h.value.as_bytes()))
}

/// Value of a compiled directive argument; `None` when unset.
pub fn evaluate<'r>(
    request: &'r Request,
    cv: Option<&ngx_http_complex_value_t>,
) -> Option<&'r [u8]> {
    request.get_complex_value(cv?).map(|v| v.as_bytes())
}

/// Value of a compiled directive argument as nginx's string, made in the
/// request pool (or the configuration's, for text without variables), so
/// that it can be given back to the same request without a copy. `Ok(None)`
/// when unset; `Err` when nginx cannot make it (no memory).
pub fn evaluate_in_pool(
    request: &Request,
    cv: Option<&ngx_http_complex_value_t>,
) -> Result<Option<ngx_str_t>, ()> {
    let Some(cv) = cv else {
        return Ok(None);
    };
    let value = request.get_complex_value(cv).ok_or(())?;
    Ok(Some(borrowed_str(value.as_bytes())))
}
