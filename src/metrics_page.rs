//! `esper_metrics`: the content handler of a location that serves the
//! module's counters (`metrics`) in Prometheus' text format.

use esper_protocol::{challenge_metrics, metrics};
use ngx::ffi::{
    ngx_http_request_t, ngx_int_t, NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_INTERNAL_SERVER_ERROR,
    NGX_HTTP_NOT_ALLOWED,
};
use ngx::http::{HttpModuleMainConf, Request};

use crate::log::guard;
use crate::{response, Module};

pub extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: nginx calls content handlers with a live request on its thread.
        let request = unsafe { Request::from_ngx_http_request(r) };
        if request.as_ref().method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as usize == 0 {
            return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
        }
        let zones = Module::main_conf(request).map_or(&[][..], |main| &main.zones[..]);
        let (counters, challenges) = crate::metrics::snapshot(zones).unwrap_or_default();
        let mut body = metrics::render(&counters);
        body.push_str(&challenge_metrics::render(&challenges));
        response::send_body(
            request,
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            body.as_bytes(),
        )
    })
}
