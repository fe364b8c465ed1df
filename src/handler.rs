//! The access-phase handler. A main request goes through these steps:
//!
//! 1. not judged here (`esper off`) or already decided: continue;
//! 2. first visit: remove client copies of Esper's request headers, then
//!    `judge`: the operator's `esper_bypass` lets it continue unasked (the
//!    proof still taken out); a visitor back from a challenge has the proof
//!    taken out and verified (3); a valid pass cookie continues (unless the
//!    enforcement zone remembers a block); a decision the zone remembers is
//!    applied without a call; else the runtime decision is asked for (4);
//! 3. proof verified: pass cookie and a redirect to the clean URL; not
//!    verified: the runtime decision (4);
//! 4. woken by the answer or by the deadline timer: apply it (continue,
//!    challenge or block, remembered in the zone), or the failure action.
//!
//! `Stage` says where the request is: idle, waiting for one call, or with an
//! answer to apply. While a call is pending, the request waits and the worker
//! keeps serving other connections. The state is kept for the variables and
//! for internal redirects, which are never judged again (but a bypassed
//! request is judged by the next location's own `esper_bypass`).

use std::cell::RefCell;
use std::fmt;
use std::time::{Duration, SystemTime};

use esper_protocol::enforcement::{entry_lifetime, EntityKey};
use esper_protocol::entity_table::{Remembered, Stored};
use esper_protocol::metrics::EsperResult;
use esper_protocol::pass::set_cookie;
use esper_protocol::query::same_site_path;
use esper_protocol::throttle::LogThrottle;
use esper_protocol::{verify_body, Decision, Failure, ProofCheck, Verdict};
use ngx::ffi::{
    ngx_array_push, ngx_conf_t, ngx_http_finalize_request, ngx_http_get_variable_index,
    ngx_http_handler_pt, ngx_http_phases_NGX_HTTP_ACCESS_PHASE, ngx_http_request_t,
    ngx_http_test_reading, ngx_int_t, ngx_log_t, ngx_time, ngx_uint_t, NGX_DECLINED, NGX_DONE,
    NGX_ERROR, NGX_HTTP_CLIENT_CLOSED_REQUEST, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_LOG_ERR,
    NGX_LOG_INFO, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule, Request};
use ngx::ngx_string;

use crate::client::{Answer, Call};
use crate::conf::{FailureAction, LocConf, Mode};
use crate::headers::{add_header_in, add_pooled_header_in, remove_headers_in};
use crate::log::{debug, guard, log_error};
use crate::request::ChallengeProof;
use crate::response::{Denial, Step};
use crate::state::{attach, find, RequestState, Stage};
use crate::worker;
use crate::{metrics, request, response, Module};

/// How long a block the enforcement zone remembers is held before it is
/// answered.
const BLOCK_HOLD_MS: ngx::ffi::ngx_msec_t = 10;

const DECLINED: Step = Step::Phase(NGX_DECLINED as ngx_int_t);
const DONE: Step = Step::Phase(NGX_DONE as ngx_int_t);
const SERVER_ERROR: Step = Step::Phase(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);

/// Request headers that only Esper and this module may set.
const HYBRID_KEY_HEADER: &str = "X-Esper-Hybrid-Key";
const DECISION_ID_HEADER: &str = "X-Esper-Decision-ID";
const ESPER_REQUEST_HEADERS: [&str; 2] = [HYBRID_KEY_HEADER, DECISION_ID_HEADER];

/// Registers the access-phase handler, looks up `$request_id` and adds the
/// metrics zone (postconfiguration).
pub extern "C" fn register(cf: *mut ngx_conf_t) -> ngx_int_t {
    guard(NGX_ERROR as ngx_int_t, || {
        let mut name = ngx_string!("request_id");
        let registered = Some(())
            .and_then(|()| {
                // SAFETY: nginx passes its live http configuration context;
                // the access phase's array holds handler pointers; the
                // variable's name is static.
                let (cf, slot, index) = unsafe {
                    let cf = &mut *cf;
                    let cmcf = NgxHttpCoreModule::main_conf_mut(cf)?;
                    let phase = &mut cmcf.phases[ngx_http_phases_NGX_HTTP_ACCESS_PHASE as usize];
                    let slot = ngx_array_push(&mut phase.handlers).cast::<ngx_http_handler_pt>();
                    let index = ngx_http_get_variable_index(cf, &mut name);
                    (&*cf, slot.as_mut()?, index)
                };
                *slot = Some(access_handler);
                Module::main_conf_mut(cf)?.request_id_index = ngx_uint_t::try_from(index).ok()?;
                metrics::add_zone(cf).ok()
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
        // thread; nothing else holds a Rust reference to it meanwhile.
        let request = unsafe { Request::from_ngx_http_request(r) };
        match access(request) {
            Step::Phase(rc) => rc,
            Step::Sent(rc) => {
                // SAFETY: `access` has returned, so no reference into the
                // request or its state is left; finalizing may free both.
                // The phase engine stops at NGX_DONE and never touches the
                // request again.
                unsafe { ngx_http_finalize_request(r, rc) };
                NGX_DONE as ngx_int_t
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
        return judge(request, conf, state);
    }
    match std::mem::replace(&mut state.stage, Stage::Idle) {
        Stage::Arrived(answer) => resumed(request, conf, state, answer),
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
        Stage::Holding(block) => enforce(request, conf, state, block),
        // An internal redirect after a bypass: this location judges the
        // request by its own `esper_bypass` (what Esper decided is never
        // judged twice).
        Stage::Idle if state.shown().result == Some(EsperResult::Bypassed) => {
            judge(request, conf, state)
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

/// Judges a request where `esper on`, in this order: the operator's
/// `esper_bypass`; a proof to verify; a pass cookie; the enforcement zone;
/// else Esper's runtime decision.
fn judge(request: &mut Request, conf: &LocConf, state: &mut RequestState) -> Step {
    let Some(pass) = conf.pass.as_ref() else {
        return DECLINED;
    };
    match request::bypassed(request, conf.bypass) {
        None => return SERVER_ERROR,
        Some(true) => {
            // Never verified, but never passed on either.
            if request::take_challenge_proof(request).is_none() {
                return SERVER_ERROR;
            }
            state.judged(EsperResult::Bypassed);
            debug!(request, "esper: bypassed by esper_bypass");
            return proceed(request, conf, state);
        }
        Some(false) => {}
    }
    if conf.zone.is_some() && conf.policy.mode == Mode::Enforce {
        let (ip, ua) = request::entity(request);
        state.entity = Some(EntityKey::new(ip, ua));
    }

    // A visitor back from a challenge: verify the proof first. The proof is
    // taken out of the request whatever happens next.
    match request::take_challenge_proof(request) {
        None => return SERVER_ERROR,
        Some(ChallengeProof::Taken { token: Some(token) }) => {
            debug!(request, "esper: challenge proof taken out of the request, verifying it");
            let (ip, ua) = request::entity(request);
            let body = verify_body(&token, ip, ua);
            return start(request, conf, state, Call::Verify(body));
        }
        Some(ChallengeProof::Taken { token: None } | ChallengeProof::Absent) => {}
    }

    // A pass skips a remembered challenge, never a remembered block.
    let remembered = state.zone_lookup(conf);
    let has_pass = request::has_valid_pass(request, pass);
    debug!(
        request,
        "esper: pass cookie {}",
        if has_pass { "accepted" } else { "absent or refused" }
    );
    if has_pass {
        if let Some(block) = remembered.filter(|d| d.verdict == Verdict::Block) {
            return enforce(request, conf, state, block);
        }
        state.judged(EsperResult::Pass);
        return proceed(request, conf, state);
    }
    if let Some(decision) = remembered {
        if decision.verdict == Verdict::Block {
            // A bot that Esper blocked waits a little for each answer, so a
            // flood on keepalive connections cannot take the worker's time
            // from other clients.
            debug!(
                request,
                "esper: block remembered by the enforcement zone, held {BLOCK_HOLD_MS} ms"
            );
            state.hold(decision, BLOCK_HOLD_MS);
            request.as_mut().read_event_handler = Some(ngx_http_test_reading);
            return DONE;
        }
        return enforce(request, conf, state, decision);
    }
    start_decision(request, conf, state)
}

/// Applies a decision remembered in the enforcement zone, without a call.
fn enforce(
    request: &mut Request,
    conf: &LocConf,
    state: &mut RequestState,
    decision: Remembered,
) -> Step {
    let action = decision.verdict.action();
    debug!(request, "esper: {} remembered by the enforcement zone", action.as_str());
    state.judged(EsperResult::Enforced);
    state.decided(action, decision.decision_id);
    metrics::count_enforced(action);
    match Denial::of(&decision.verdict) {
        Some(denial) => response::deny(request, conf, denial, state.shown().decision_id.as_deref()),
        None => DECLINED,
    }
}

/// Asks Esper for the runtime decision.
fn start_decision(request: &mut Request, conf: &LocConf, state: &mut RequestState) -> Step {
    let Some(main) = Module::main_conf(request) else {
        return SERVER_ERROR;
    };
    let body = request::payload(request, conf, main);
    start(request, conf, state, Call::Decide(body))
}

/// Starts a call and makes the request wait for it, up to `esper_timeout`.
fn start(request: &mut Request, conf: &LocConf, state: &mut RequestState, call: Call) -> Step {
    let (Some(target), Some(main)) = (conf.target.as_ref(), Module::main_conf(request)) else {
        return SERVER_ERROR;
    };
    let limit = conf.max_pending.max(1) as usize;
    if worker::pending() >= limit {
        let answer = call.failed(Failure::Overloaded(limit));
        return resumed(request, conf, state, answer);
    }
    let kind = call.kind();
    match worker::call(main, target, call, state.waiter()) {
        Ok(call) => {
            debug!(request, "esper: call {call} started ({})", kind.as_str());
            state.wait_for(call, kind, conf.timeout);
        }
        Err(failure) => return resumed(request, conf, state, kind.failed(failure)),
    }
    // Notice a client that goes away while its call is pending.
    request.as_mut().read_event_handler = Some(ngx_http_test_reading);
    DONE
}

/// Acts on the answer the request waited for.
fn resumed(
    request: &mut Request,
    conf: &LocConf,
    state: &mut RequestState,
    answer: Answer,
) -> Step {
    // The connection log adds the client and the request to each line.
    let log = request.log();
    metrics::count_proof(&answer);
    match answer {
        Answer::Proof(Ok(ProofCheck::Verified { lifetime })) => {
            debug!(request, "esper: challenge proof verified");
            // The proof answers the remembered challenge; a block stays.
            if let (Some(zone), Some(key)) = (&conf.zone, &state.entity) {
                zone.forget_challenge(key);
            }
            if let Some(block) = state.zone_lookup(conf) {
                return enforce(request, conf, state, block);
            }
            state.judged(EsperResult::Pass);
            pass_and_return(request, conf, lifetime)
        }
        Answer::Proof(not_verified) => {
            debug!(request, "esper: challenge proof not verified");
            // Never a pass: the runtime decision runs as for any request.
            match not_verified {
                Err(failure) => {
                    metrics::count_error(&failure);
                    log_failure(
                        log,
                        format_args!("esper challenge proof verification failed: {failure}; asking for a runtime decision"),
                    );
                }
                Ok(_) => log_error(
                    NGX_LOG_INFO,
                    log,
                    "esper challenge proof refused; asking for a runtime decision",
                ),
            }
            start_decision(request, conf, state)
        }
        Answer::Decision(Ok(decision)) => apply(request, conf, state, decision),
        Answer::Decision(Err(failure)) => {
            state.judged(failure.result());
            metrics::count_error(&failure);
            if let Some(ms) = state.latency {
                metrics::observe_latency(ms);
            }
            let (continues, applied) = if conf.policy.mode == Mode::Monitor {
                (true, "monitor mode, request continues")
            } else if conf.policy.on_failure == FailureAction::Allow {
                (true, "failure action allow")
            } else {
                (false, "failure action block")
            };
            debug!(request, "esper: failure action applied");
            log_failure(log, format_args!("esper decision failed: {failure}; {applied}"));
            if continues {
                proceed(request, conf, state)
            } else {
                Step::Phase(conf.block_status as ngx_int_t)
            }
        }
    }
}

thread_local! {
    /// Budget of this worker's error-log lines about Esper failures.
    static FAILURE_LOG: RefCell<LogThrottle> = RefCell::new(LogThrottle::default());
    /// Budget of this worker's lines about full enforcement zones.
    static EVICTION_LOG: RefCell<LogThrottle> = const { RefCell::new(LogThrottle::per_second(1)) };
}

/// Writes a line about an Esper failure, unless this second's budget is
/// spent: then it is counted, and the next line written says how many were
/// left out. The line is formatted only when it is written, so a failure
/// storm costs no allocation per request.
fn log_failure(log: *mut ngx_log_t, message: fmt::Arguments) {
    let now = ngx_time().max(0) as u64;
    match FAILURE_LOG.with(|t| t.borrow_mut().admit(now)) {
        Some(0) => log_error(NGX_LOG_ERR, log, &message.to_string()),
        Some(left_out) => {
            log_error(NGX_LOG_ERR, log, &format!("{message} ({left_out} similar lines left out)"))
        }
        None => {}
    }
}

/// Applies a runtime decision.
fn apply(
    request: &mut Request,
    conf: &LocConf,
    state: &mut RequestState,
    decision: Decision,
) -> Step {
    let monitor = conf.policy.mode == Mode::Monitor;
    debug!(
        request,
        "esper: decision {} applied{}",
        decision.verdict.action().as_str(),
        if monitor { " (monitor mode: not enforced)" } else { "" }
    );
    if let (Some(zone), Some(key)) = (&conf.zone, &state.entity) {
        let remembered = Remembered {
            verdict: decision.verdict.clone(),
            decision_id: decision.decision_id.clone(),
        };
        let lifetime = entry_lifetime(decision.lifetime, zone.ttl);
        if zone.remember(key, &remembered, lifetime) == (Stored::Yes { evicted: true }) {
            EVICTION_LOG.with(|t| zone.evicted(&mut t.borrow_mut()));
        }
    }
    state.decided(decision.verdict.action(), decision.decision_id);
    state.judged(if monitor { EsperResult::Monitor } else { EsperResult::Decided });
    metrics::count_action(decision.verdict.action());
    if let Some(ms) = state.latency {
        metrics::observe_latency(ms);
    }
    match Denial::of(&decision.verdict) {
        // Esper has no objection; other access checks (and `satisfy`) still
        // apply. Monitor mode never enforces.
        None => proceed(request, conf, state),
        Some(_) if monitor => proceed(request, conf, state),
        Some(denial) => response::deny(request, conf, denial, state.shown().decision_id.as_deref()),
    }
}

/// Lets the request go on to the application, carrying the Esper headers the
/// location asks for.
fn proceed(request: &mut Request, conf: &LocConf, state: &mut RequestState) -> Step {
    // The value stays where nginx made it: no copy on the way. A key that
    // cannot be made stops the request rather than letting it go on without.
    let Ok(key) = request::evaluate_in_pool(request, conf.hybrid_key) else {
        return SERVER_ERROR;
    };
    if let Some(key) = key.filter(|k| k.len > 0) {
        if add_pooled_header_in(request, HYBRID_KEY_HEADER, key).is_none() {
            return SERVER_ERROR;
        }
    }
    if conf.forward_decision_id == 1 {
        if let Some(id) = &state.shown().decision_id {
            if add_header_in(request, DECISION_ID_HEADER, id.as_bytes()).is_none() {
                return SERVER_ERROR;
            }
        }
    }
    DECLINED
}

/// A verified visitor: issue the pass cookie and send them back to the URL
/// they asked for, without the proof.
fn pass_and_return(request: &mut Request, conf: &LocConf, lifetime: Option<Duration>) -> Step {
    let Some(pass) = conf.pass.as_ref() else {
        return SERVER_ERROR;
    };
    let max_age = lifetime.map_or(pass.ttl, |l| l.min(pass.ttl));
    let (ip, ua) = request::entity(request);
    let value = pass.key.issue(SystemTime::now() + max_age, ip, ua);
    metrics::count_pass_issued();
    let cookie = set_cookie(&pass.cookie, &value, max_age, request::is_https(request));
    // A relative path that stays on this site, whatever `absolute_redirect`
    // makes of it: never `//host/...`.
    let back = same_site_path(request.unparsed_uri().as_bytes());
    Step::Phase(response::redirect(request, conf, &back, Some(cookie.as_bytes())))
}
