//! Reads what the decision call needs out of an nginx request, on the nginx
//! thread, and serializes it at once into an owned body.

use std::time::{Duration, SystemTime};

use esper_protocol::{build_payload, PayloadSettings, RequestView};
use ngx::ffi::{
    ngx_http_complex_value, ngx_http_complex_value_t, ngx_http_get_indexed_variable,
    ngx_http_request_t, ngx_list_t, ngx_str_t, ngx_table_elt_t, NGX_OK,
};

use crate::conf::{LocConf, MainConf};
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
        let user_agent = req.headers_in.user_agent.as_ref().map(|h| bytes(&h.value));
        let request_id = indexed_variable(r, main.request_id_index);
        let view = RequestView {
            method: bytes(&req.method_name),
            unparsed_uri: bytes(&req.unparsed_uri),
            client_ip: bytes(&(*req.connection).addr_text),
            user_agent,
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
        build_payload(
            &view,
            headers(&req.headers_in.headers),
            &settings,
            &mut body,
        );
        body
    }
}

/// The live entries of an nginx header list, as name and value bytes.
///
/// # Safety
/// `list` must be a header list of a request that outlives the iterator.
unsafe fn headers<'a>(list: &'a ngx_list_t) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
    let mut part = Some(&list.part);
    std::iter::from_fn(move || {
        let current = part?;
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
unsafe fn evaluate<'a>(
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
