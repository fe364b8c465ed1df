//! The access-phase handler, the module's entry for every request: nginx
//! runs it for each main request where the module is registered, and again
//! when a call's answer or a deadline wakes the request. It finds where the
//! request is (`Stage`) and hands it to the request steps (`steps`):
//!
//! 1. not judged here (`esper off`): continue;
//! 2. first visit: remove client copies of Esper's request headers, attach
//!    the request's state, then `steps::judge`;
//! 3. woken with the answer (or the deadline's failure): `steps::resumed`;
//!    woken at the end of a remembered block's hold: `steps::enforce`;
//! 4. after an internal redirect: never judged again, except a request
//!    bypassed by the previous location's `esper_bypass` (judged by this
//!    one's), and a block or challenge that `esper_mode monitor` let
//!    through, which an enforcing location applies.
//!
//! While a call is pending, the request waits and the worker keeps serving
//! other connections.

use esper_protocol::metrics::EsperResult;
use ngx::ffi::{
    ngx_array_push, ngx_conf_t, ngx_http_finalize_request, ngx_http_handler_pt,
    ngx_http_phases_NGX_HTTP_ACCESS_PHASE, ngx_http_request_t, ngx_int_t, NGX_DONE, NGX_ERROR,
    NGX_HTTP_CLIENT_CLOSED_REQUEST, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule, Request};
use ngx::ngx_string;

use crate::conf::Mode;
use crate::headers::{remove_headers_in, ESPER_REQUEST_HEADERS};
use crate::log::{debug, guard};
use crate::nginx_conf::ConfExt;
use crate::response::Step;
use crate::state::{attach, find, Stage};
use crate::steps::{self, DECLINED, DONE, SERVER_ERROR};
use crate::{enforcement, metrics, request, Module};

/// Registers the access-phase handler, compiles `$request_id` and adds the
/// metrics zone (postconfiguration).
pub extern "C" fn register(cf: *mut ngx_conf_t) -> ngx_int_t {
    guard(NGX_ERROR as ngx_int_t, || {
        let registered = Some(())
            .and_then(|()| {
                // SAFETY: nginx passes its live http configuration context;
                // the access phase's array holds handler pointers.
                let (cf, slot) = unsafe {
                    let cf = &mut *cf;
                    let cmcf = NgxHttpCoreModule::main_conf_mut(cf)?;
                    let phase = &mut cmcf.phases[ngx_http_phases_NGX_HTTP_ACCESS_PHASE as usize];
                    let slot = ngx_array_push(&mut phase.handlers).cast::<ngx_http_handler_pt>();
                    (&*cf, slot.as_mut()?)
                };
                *slot = Some(access_handler);
                let request_id = cf.compile(ngx_string!("$request_id")).ok()?;
                Module::main_conf_mut(cf)?.request_id = Some(request_id);
                metrics::add_zone(cf).ok()?;
                let zones = &Module::main_conf(cf)?.zones;
                enforcement::init_zones(cf, zones).map_err(|message| cf.emerg(&message)).ok()
            })
            .is_some();
        if registered {
            NGX_OK as ngx_int_t
        } else {
            NGX_ERROR as ngx_int_t
        }
    })
}

extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: nginx calls access handlers with a live main request on its
        // thread; nothing else holds a Rust reference to it meanwhile. It is
        // finalized only once `access` has returned, so no reference into
        // the request or its state is left when finalizing frees them; the
        // phase engine stops at NGX_DONE and never touches it again.
        unsafe {
            match access(Request::from_ngx_http_request(r)) {
                Step::Phase(rc) => rc,
                Step::Sent(rc) => {
                    ngx_http_finalize_request(r, rc);
                    NGX_DONE as ngx_int_t
                }
            }
        }
    })
}

fn access(request: &mut Request) -> Step {
    let Some(conf) = Module::location_conf(request) else {
        return DECLINED;
    };
    let (mut state, first_visit) = match find(request) {
        Some(state) => (state, false),
        None => {
            let (Some(_), Some(_)) = (conf.target.as_ref(), conf.pass.as_ref()) else {
                metrics::count_result(EsperResult::Skipped);
                return DECLINED;
            };
            // Only Esper and this module may set these for the application.
            if remove_headers_in(request, is_esper_header).is_none() {
                return SERVER_ERROR;
            }
            let Some(state) = attach(request) else {
                return SERVER_ERROR;
            };
            debug!(request, "esper: state attached");
            (state, true)
        }
    };
    // SAFETY: the state lives until the request pool's cleanup, outside the
    // request's memory; the nginx thread runs one handler at a time, so this
    // is the only reference to it.
    let state = unsafe { state.as_mut() };
    if first_visit {
        return steps::judge(request, conf, state);
    }
    match std::mem::replace(&mut state.stage, Stage::Idle) {
        Stage::Arrived(answer) => steps::resumed(request, conf, state, answer),
        // Woken while the call is pending: an HTTP/3 client that cancelled
        // the stream (STOP_SENDING) leaves a write error.
        Stage::Waiting { call, .. } if request::client_gone(request) => {
            state.abandon(call);
            Step::Phase(NGX_HTTP_CLIENT_CLOSED_REQUEST as ngx_int_t)
        }
        waiting @ Stage::Waiting { .. } => {
            state.stage = waiting;
            DONE
        }
        Stage::Holding(_) if request::client_gone(request) => {
            state.stop_waiting();
            Step::Phase(NGX_HTTP_CLIENT_CLOSED_REQUEST as ngx_int_t)
        }
        holding @ Stage::Holding(_) if state.deadline_pending() => {
            state.stage = holding;
            DONE
        }
        Stage::Holding(block) => steps::enforce(request, conf, state, block),
        // An internal redirect after a bypass: this location judges the
        // request by its own `esper_bypass` (what Esper decided is never
        // judged twice).
        Stage::Idle if state.shown().result == Some(EsperResult::Bypassed) => {
            steps::judge(request, conf, state)
        }
        Stage::Idle if conf.target.is_some() && conf.policy.mode == Mode::Enforce => {
            match state.unenforced.take() {
                Some(verdict) => steps::enforce_monitored(request, conf, state, verdict),
                None => DECLINED,
            }
        }
        Stage::Idle => DECLINED,
    }
}

/// An Esper-owned request header, in any spelling: `_` counts as `-`, since
/// with `underscores_in_headers on` nginx's `$http_*` and CGI-style backends
/// fold one into the other.
fn is_esper_header(name: &[u8]) -> bool {
    ESPER_REQUEST_HEADERS.iter().any(|h| {
        name.len() == h.len()
            && name
                .iter()
                .zip(h.bytes())
                .all(|(&n, h)| n.eq_ignore_ascii_case(&h) || (n == b'_' && h == b'-'))
    })
}
