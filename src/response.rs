//! The answers the module makes itself: a redirect (to Esper's challenge, or
//! back to the clean URL after a proof), a block, their JSON forms for API
//! and script clients (`esper_json_response`), and a body of its own (the
//! metrics).

use std::ptr::{null_mut, NonNull};

use esper_protocol::response::{
    block_body, challenge_body, wants_json, JsonMode, JSON_CHALLENGE_STATUS, JSON_CONTENT_TYPE,
    VARY_AUTO,
};
use esper_protocol::Verdict;
use ngx::ffi::{
    ngx_alloc_chain_link, ngx_create_temp_buf, ngx_int_t, ngx_uint_t, NGX_ERROR, NGX_HTTP_CLOSE,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_OK,
};
use ngx::http::Request;

use crate::conf::LocConf;
use crate::ffi::borrowed_str;
use crate::headers::{add_header_out, set_location};
use crate::request;

const ERROR: ngx_int_t = NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;

/// What the access phase does after a step of the module.
#[derive(Clone, Copy)]
pub enum Step {
    /// Return this to the phase engine: `NGX_DECLINED` goes on, `NGX_DONE`
    /// waits, a status answers with it (through `error_page`).
    Phase(ngx_int_t),
    /// The module has sent a response of its own: the access handler's
    /// entry finalizes the request with this code, once no reference into
    /// the request is left.
    Sent(ngx_int_t),
}

/// How a request is stopped; a challenge carries Esper's page.
pub enum Denial<'a> {
    Challenge(&'a str),
    Block,
}

impl<'a> Denial<'a> {
    /// The denial a verdict asks for; `None` for allow.
    pub fn of(verdict: &'a Verdict) -> Option<Denial<'a>> {
        match verdict {
            Verdict::Allow => None,
            Verdict::Challenge { redirect_url } => Some(Denial::Challenge(redirect_url)),
            Verdict::Block => Some(Denial::Block),
        }
    }
}

/// Stops the request with a block or a challenge, in the form the client can
/// act on: JSON for API and script clients (`esper_json_response`), else a
/// redirect to Esper's page or the block status (where `error_page` applies).
pub fn deny(
    request: &mut Request,
    conf: &LocConf,
    denial: Denial,
    decision_id: Option<&str>,
) -> Step {
    // 444 closes the connection without an answer, in every form.
    if matches!(denial, Denial::Block) && conf.block_status == NGX_HTTP_CLOSE as ngx_uint_t {
        return block(request, conf.block_status);
    }
    let auto = conf.json_response == JsonMode::Auto;
    let json = wants_json(conf.json_response, request::headers(request));
    if auto && add_header_out(request, "Vary", VARY_AUTO.as_bytes()).is_none() {
        return Step::Phase(ERROR);
    }
    match (denial, json) {
        (Denial::Challenge(url), true) => {
            send_json(request, JSON_CHALLENGE_STATUS.into(), &challenge_body(url, decision_id))
        }
        (Denial::Challenge(url), false) => {
            Step::Phase(redirect(request, conf, url.as_bytes(), None))
        }
        (Denial::Block, true) => send_json(request, conf.block_status, &block_body(decision_id)),
        (Denial::Block, false) => block(request, conf.block_status),
    }
}

/// Answers with a block status (through `error_page`), never cached by a
/// shared cache; 444 closes the connection without an answer, as nginx's
/// own `return 444`.
pub fn block(request: &mut Request, status: ngx_uint_t) -> Step {
    let closes = status == NGX_HTTP_CLOSE as ngx_uint_t;
    if !closes && add_header_out(request, "Cache-Control", b"no-store").is_none() {
        return Step::Phase(ERROR);
    }
    Step::Phase(status as ngx_int_t)
}

/// Answers with `esper_challenge_status` to `location`, never cached.
pub fn redirect(
    request: &mut Request,
    conf: &LocConf,
    location: &[u8],
    cookie: Option<&[u8]>,
) -> ngx_int_t {
    let headers = set_location(request, location)
        .and_then(|()| add_header_out(request, "Cache-Control", b"no-store"))
        .and_then(|()| match cookie {
            Some(cookie) => add_header_out(request, "Set-Cookie", cookie),
            None => Some(()),
        });
    match headers {
        Some(()) => conf.challenge_status as ngx_int_t,
        None => ERROR,
    }
}

/// Sends `body` as `application/json` with `status`, never cached; the
/// request is then finalized with the output's code.
fn send_json(request: &mut Request, status: usize, body: &str) -> Step {
    if add_header_out(request, "Cache-Control", b"no-store").is_none() {
        return Step::Phase(ERROR);
    }
    Step::Sent(send_body(request, status, JSON_CONTENT_TYPE, body.as_bytes()))
}

/// Sends a whole response with `body`; returns what nginx's output filter
/// says, as a content handler would.
pub fn send_body(
    request: &mut Request,
    status: usize,
    content_type: &'static str,
    body: &[u8],
) -> ngx_int_t {
    let rc = request.discard_request_body();
    if rc != ngx::core::Status::NGX_OK {
        return rc.0;
    }
    let out = &mut request.as_mut().headers_out;
    out.status = status;
    out.content_length_n = body.len() as i64;
    out.content_type = borrowed_str(content_type.as_bytes());
    out.content_type_len = content_type.len();
    let rc = request.send_header().0;
    if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || request.header_only() {
        return rc;
    }
    let pool = request.as_ref().pool;
    // SAFETY: the buffer and chain link are allocated in the request pool
    // and live until the response is sent; the buffer has room for `body`.
    unsafe {
        let buf = ngx_create_temp_buf(pool, body.len());
        let chain = ngx_alloc_chain_link(pool);
        let (Some(buf), Some(chain)) = (NonNull::new(buf), NonNull::new(chain)) else {
            return ERROR;
        };
        let (buf, chain) = (buf.as_ptr(), chain.as_ptr());
        std::ptr::copy_nonoverlapping(body.as_ptr(), (*buf).last, body.len());
        (*buf).last = (*buf).last.add(body.len());
        (*buf).set_last_buf(if request.is_main() { 1 } else { 0 });
        (*buf).set_last_in_chain(1);
        (*chain).buf = buf;
        (*chain).next = null_mut();
        request.output_filter(&mut *chain).0
    }
}
