//! Reads what the decision call needs out of an nginx request, on the nginx
//! thread, and serializes it at once into an owned body.

use std::time::{Duration, SystemTime};

use esper_protocol::query::{replace_target, take_proof, target_without_proof};
use esper_protocol::{build_payload, PayloadSettings, RequestView};
use ngx::ffi::{
    ngx_array_t, ngx_http_complex_value, ngx_http_complex_value_t, ngx_http_get_indexed_variable,
    ngx_http_request_t, ngx_http_test_predicates, ngx_http_variable_t, ngx_int_t, ngx_list_t,
    ngx_str_t, ngx_table_elt_t, NGX_DECLINED, NGX_OK,
};
use ngx::http::{HttpModuleMainConf, NgxHttpCoreModule};

use crate::conf::{LocConf, MainConf, PassSettings};
use crate::ffi::bytes;

/// Builds the JSON body of the decision call for `r`.
///
/// # Safety
/// `r` must be a live main request on the nginx thread, `conf` its location
/// configuration and `main` the module's main configuration.
pub unsafe fn payload(r: *mut ngx_http_request_t, conf: &LocConf, main: &MainConf) -> Vec<u8> {
    // SAFETY: per the function contract; everything borrowed here lives in the
    // request (or its pool) and is only used before this function returns.
    unsafe {
        let req = &*r;
        let (client_ip, user_agent) = entity(r);
        let request_id = indexed_variable(r, main.request_id_index);
        let view = RequestView {
            method: bytes(&req.method_name),
            unparsed_uri: bytes(&req.unparsed_uri),
            client_ip,
            user_agent: Some(user_agent).filter(|ua| !ua.is_empty()),
            request_id,
            started_at: SystemTime::UNIX_EPOCH
                + Duration::from_secs(req.start_sec.max(0) as u64)
                + Duration::from_millis(req.start_msec as u64),
        };
        let return_url = evaluate(r, conf.return_url);
        let fields: Vec<(&str, &[u8])> = conf
            .fields
            .iter()
            .flatten()
            .map(|f| (f.name.as_str(), evaluate(r, f.value).unwrap_or_default()))
            .collect();
        let settings = PayloadSettings {
            source: conf.source.as_deref().unwrap_or_default(),
            return_url,
            fields: &fields,
            send_cookies: conf.send_cookies == 1,
        };
        let mut body = Vec::with_capacity(1024);
        // HTTP/3 carries the host only as `:authority`, which nginx does not
        // turn into a Host header (it does for HTTP/2): send it as one, so
        // Esper sees the same headers whatever the protocol.
        let authority = (req.headers_in.host.is_null() && !req.host_start.is_null()).then(|| {
            let len = req.host_end.offset_from(req.host_start).max(0) as usize;
            (
                &b"host"[..],
                std::slice::from_raw_parts(req.host_start, len),
            )
        });
        build_payload(
            &view,
            headers(&req.headers_in.headers).chain(authority),
            &settings,
            &mut body,
        );
        body
    }
}

/// Esper's default entity: the client address (after the realip module) and
/// the user agent.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn entity<'a>(r: *mut ngx_http_request_t) -> (&'a [u8], &'a [u8]) {
    // SAFETY: per the function contract; both live as long as the request.
    unsafe {
        let ip = bytes(&(*(*r).connection).addr_text);
        let ua = (*r)
            .headers_in
            .user_agent
            .as_ref()
            .map_or(&[][..], |h| bytes(&h.value));
        (ip, ua)
    }
}

/// True when the request carries a pass cookie that this location issued for
/// this client and that has not expired; only the first few well-formed
/// candidates are checked, however many the request carries.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn has_valid_pass(r: *mut ngx_http_request_t, pass: &PassSettings) -> bool {
    // SAFETY: per the function contract.
    let (ip, ua) = unsafe { entity(r) };
    // SAFETY: the header list belongs to the live request.
    let cookie_headers = unsafe { headers(&(*r).headers_in.headers) }
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"cookie"))
        .map(|(_, value)| value);
    pass.key
        .verify_cookies(cookie_headers, &pass.cookie, SystemTime::now(), ip, ua)
}

/// Takes `esper_challenge_proof` out of the request, so that neither the
/// application, Esper's payload nor the access log ever sees it: out of
/// `$request_uri` (what is proxied as is, and where the visitor is sent back
/// to), `$args` and the request line (`$request`), and out of every variable
/// that cached one of them before the access phase. Returns `None` when the
/// parameter is absent, else the proof's token if any.
///
/// # Safety
/// `r` must be a live main request on the nginx thread.
pub unsafe fn take_challenge_proof(r: *mut ngx_http_request_t) -> Option<Option<String>> {
    // SAFETY: per the function contract; new strings live in the request pool.
    unsafe {
        let req = &mut *r;
        let from_uri = target_without_proof(bytes(&req.unparsed_uri));
        let from_args = take_proof(bytes(&req.args));
        if from_uri.is_none() && from_args.is_none() {
            return None;
        }
        if let Some(clean) = &from_uri {
            let line = replace_target(
                bytes(&req.request_line),
                bytes(&req.method_name),
                bytes(&req.unparsed_uri),
                &clean.target,
                bytes(&req.http_protocol),
            );
            req.request_line = pool_str(req.pool, &line)?;
            req.unparsed_uri = pool_str(req.pool, &clean.target)?;
        }
        if let Some(proof) = &from_args {
            req.args = pool_str(req.pool, &proof.rest)?;
        }
        forget_cached_uri_variables(req);
        let token = from_uri.and_then(|clean| clean.token);
        Some(token.or(from_args.and_then(|proof| proof.token)))
    }
}

/// Variables whose value is the request URI, its query or the request line.
const URI_VARIABLES: [&[u8]; 5] = [
    b"request_uri",
    b"args",
    b"query_string",
    b"is_args",
    b"request",
];

/// Marks every indexed variable derived from the URI or query as not yet
/// evaluated, so the next read computes it from the request as it is now.
fn forget_cached_uri_variables(r: &mut ngx_http_request_t) {
    let Some(cmcf) = NgxHttpCoreModule::main_conf(r) else {
        return;
    };
    // SAFETY: the core module's indexed variables are an array of
    // ngx_http_variable_t, and the request's value slots have one entry for
    // each of them (nginx allocates them together).
    unsafe {
        let variables = cmcf.variables.as_slice::<ngx_http_variable_t>();
        for variable in variables {
            let name = bytes(&variable.name);
            if URI_VARIABLES.contains(&name) || name.starts_with(b"arg_") {
                let value = &mut *r.variables.add(variable.index);
                value.set_valid(0);
                value.set_not_found(0);
            }
        }
    }
}

/// The `$request_uri` of the request, as it is now.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn request_uri<'a>(r: *mut ngx_http_request_t) -> &'a [u8] {
    // SAFETY: per the function contract.
    unsafe { bytes(&(*r).unparsed_uri) }
}

/// True when the client can no longer receive the answer (an HTTP/3 stream
/// the client stopped).
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn client_gone(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: per the function contract; a live request has a connection
    // with its write event.
    unsafe { (*(*(*r).connection).write).error() != 0 }
}

/// Whether `esper_bypass` lets the request through unasked: some value is
/// neither empty nor "0". `None` when a value cannot be evaluated.
///
/// # Safety
/// `r` must be a live request and `predicates` null or the location's
/// compiled `esper_bypass` values.
pub unsafe fn bypassed(r: *mut ngx_http_request_t, predicates: *mut ngx_array_t) -> Option<bool> {
    if predicates.is_null() {
        return Some(false);
    }
    // SAFETY: per the function contract.
    match unsafe { ngx_http_test_predicates(r, predicates) } {
        rc if rc == NGX_DECLINED as ngx_int_t => Some(true),
        rc if rc == NGX_OK as ngx_int_t => Some(false),
        _ => None,
    }
}

/// True when the client connection is TLS.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn is_https(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: per the function contract.
    unsafe {
        (*r).http_connection
            .as_ref()
            .is_some_and(|hc| hc.ssl() != 0)
    }
}

/// A copy of `data` in `pool`.
///
/// # Safety
/// `pool` must be a live pool.
unsafe fn pool_str(pool: *mut ngx::ffi::ngx_pool_t, data: &[u8]) -> Option<ngx_str_t> {
    // SAFETY: per the function contract.
    unsafe { ngx_str_t::from_bytes(pool, data) }
}

/// The request's headers, as name and value bytes.
///
/// # Safety
/// `r` must be a live request that outlives the iterator.
pub unsafe fn headers_of<'a>(
    r: *mut ngx_http_request_t,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
    // SAFETY: per the function contract.
    unsafe { headers(&(*r).headers_in.headers) }
}

/// The live entries of an nginx header list, as name and value bytes.
///
/// # Safety
/// `list` must be a header list of a request that outlives the iterator.
unsafe fn headers<'a>(list: &'a ngx_list_t) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
    let mut part = Some(&list.part);
    std::iter::from_fn(move || {
        let current = part?;
        // SAFETY: list parts link to parts of the same live list, or to null.
        part = unsafe { current.next.as_ref() };
        // SAFETY: a list part holds `nelts` initialized header elements.
        Some(unsafe {
            std::slice::from_raw_parts(current.elts.cast::<ngx_table_elt_t>(), current.nelts)
        })
    })
    .flatten()
    .filter(|h| h.hash != 0)
    .map(|h| (bytes(&h.key), bytes(&h.value)))
}

/// Value of a compiled directive argument for `r`; `None` when unset.
///
/// # Safety
/// `r` must be a live request and `cv` null or compiled for this configuration.
pub unsafe fn evaluate<'a>(
    r: *mut ngx_http_request_t,
    cv: *mut ngx_http_complex_value_t,
) -> Option<&'a [u8]> {
    if cv.is_null() {
        return None;
    }
    let mut value = ngx_str_t::empty();
    // SAFETY: per the function contract; the value is allocated in the request
    // pool and outlives this borrow.
    if unsafe { ngx_http_complex_value(r, cv, &mut value) } != NGX_OK as isize {
        return None;
    }
    if value.len == 0 {
        return Some(&[]);
    }
    // SAFETY: nginx filled `value` with `len` bytes from the request pool.
    Some(unsafe { std::slice::from_raw_parts(value.data, value.len) })
}

/// Value of an indexed nginx variable, empty when not found.
///
/// # Safety
/// `r` must be a live request and `index` a variable index of this configuration.
unsafe fn indexed_variable<'a>(
    r: *mut ngx_http_request_t,
    index: ngx::ffi::ngx_uint_t,
) -> &'a [u8] {
    // SAFETY: per the function contract.
    let v = unsafe { ngx_http_get_indexed_variable(r, index) };
    // SAFETY: a non-null variable value is valid for the request's lifetime.
    match unsafe { v.as_ref() } {
        Some(v) if v.not_found() == 0 && !v.data.is_null() => unsafe {
            std::slice::from_raw_parts(v.data, v.len() as usize)
        },
        _ => &[],
    }
}
