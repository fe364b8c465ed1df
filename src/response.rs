//! The answers the module makes itself: a redirect (to Esper's challenge, or
//! back to the clean URL after a proof), a block, and their JSON forms for
//! API and script clients (`esper_json_response`).

use std::ptr::{null_mut, NonNull};

use esper_protocol::response::{
    block_body, challenge_body, wants_json, JsonMode, JSON_CHALLENGE_STATUS, JSON_CONTENT_TYPE,
    VARY_AUTO,
};
use esper_protocol::Action;
use ngx::ffi::{
    ngx_alloc_chain_link, ngx_create_temp_buf, ngx_http_discard_request_body,
    ngx_http_finalize_request, ngx_http_output_filter, ngx_http_request_t, ngx_http_send_header,
    ngx_int_t, ngx_str_t, NGX_DONE, NGX_ERROR, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_OK,
};

use crate::conf::LocConf;
use crate::headers::push_header;
use crate::request;

const ERROR: ngx_int_t = NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;

/// Stops the request with a block or a challenge, in the form the client can
/// act on: JSON for API and script clients (`esper_json_response`), else a
/// redirect to Esper's page or the block status (where `error_page` applies).
///
/// # Safety
/// `r` must be a live main request in its access phase.
pub unsafe fn deny(
    r: *mut ngx_http_request_t,
    conf: &LocConf,
    action: Action,
    redirect_url: Option<&str>,
    decision_id: Option<&str>,
) -> ngx_int_t {
    let auto = conf.json_response == JsonMode::Auto;
    // SAFETY: per the function contract.
    let json = unsafe { wants_json(conf.json_response, request::headers_of(r)) };
    let url = redirect_url.unwrap_or_default();
    // SAFETY: per the function contract.
    unsafe {
        if auto
            && push_header(
                &mut (*r).headers_out.headers,
                (*r).pool,
                "Vary",
                VARY_AUTO.as_bytes(),
            )
            .is_none()
        {
            return ERROR;
        }
        match (action, json) {
            (Action::Challenge, true) => send_json(
                r,
                JSON_CHALLENGE_STATUS.into(),
                &challenge_body(url, decision_id),
            ),
            (Action::Challenge, false) => redirect(r, conf, url.as_bytes(), None),
            (_, true) => send_json(r, conf.block_status, &block_body(decision_id)),
            (_, false) => conf.block_status as ngx_int_t,
        }
    }
}

/// Answers with `esper_challenge_status` to `location`, never cached.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn redirect(
    r: *mut ngx_http_request_t,
    conf: &LocConf,
    location: &[u8],
    cookie: Option<&[u8]>,
) -> ngx_int_t {
    // SAFETY: per the function contract.
    unsafe {
        let out = &mut (*r).headers_out;
        let pool = (*r).pool;
        let Some(h) = push_header(&mut out.headers, pool, "Location", location) else {
            return ERROR;
        };
        out.location = h;
        if push_header(&mut out.headers, pool, "Cache-Control", b"no-store").is_none() {
            return ERROR;
        }
        if let Some(cookie) = cookie {
            if push_header(&mut out.headers, pool, "Set-Cookie", cookie).is_none() {
                return ERROR;
            }
        }
    }
    conf.challenge_status as ngx_int_t
}

/// Sends `body` as `application/json` with `status`, never cached, and ends
/// the request; the access phase then stops (`NGX_DONE`).
///
/// # Safety
/// `r` must be a live main request in its access phase.
unsafe fn send_json(r: *mut ngx_http_request_t, status: usize, body: &str) -> ngx_int_t {
    // SAFETY: per the function contract; the buffer and chain link live in
    // the request pool until the response is sent, and the request is not
    // touched after it is finalized.
    unsafe {
        let rc = ngx_http_discard_request_body(r);
        if rc != NGX_OK as ngx_int_t {
            return rc;
        }
        let out = &mut (*r).headers_out;
        if push_header(&mut out.headers, (*r).pool, "Cache-Control", b"no-store").is_none() {
            return ERROR;
        }
        out.status = status;
        out.content_length_n = body.len() as i64;
        let content_type = ngx_str_t {
            len: JSON_CONTENT_TYPE.len(),
            data: JSON_CONTENT_TYPE.as_ptr().cast_mut(),
        };
        out.content_type = content_type;
        out.content_type_len = content_type.len;
        let mut rc = ngx_http_send_header(r);
        if rc != NGX_ERROR as ngx_int_t && rc <= NGX_OK as ngx_int_t && (*r).header_only() == 0 {
            let buf = ngx_create_temp_buf((*r).pool, body.len());
            let chain = ngx_alloc_chain_link((*r).pool);
            let (Some(buf), Some(chain)) = (NonNull::new(buf), NonNull::new(chain)) else {
                return ERROR;
            };
            let (buf, chain) = (buf.as_ptr(), chain.as_ptr());
            std::ptr::copy_nonoverlapping(body.as_ptr(), (*buf).last, body.len());
            (*buf).last = (*buf).last.add(body.len());
            (*buf).set_last_buf(1);
            (*buf).set_last_in_chain(1);
            (*chain).buf = buf;
            (*chain).next = null_mut();
            rc = ngx_http_output_filter(r, chain);
        }
        ngx_http_finalize_request(r, rc);
    }
    NGX_DONE as ngx_int_t
}
