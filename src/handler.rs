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
use std::ffi::c_void;
use std::fmt;
use std::ptr::fn_addr_eq;
use std::time::{Duration, SystemTime};

use esper_protocol::enforcement::{entry_lifetime, EntityKey};
use esper_protocol::entity_table::{Remembered, Stored};
use esper_protocol::metrics::EsperResult;
use esper_protocol::pass::set_cookie;
use esper_protocol::query::same_site_path;
use esper_protocol::throttle::LogThrottle;
use esper_protocol::{verify_body, Action, Decision, Failure, ProofCheck};
use ngx::ffi::{
    ngx_array_push, ngx_conf_t, ngx_current_msec, ngx_event_t, ngx_http_block_reading,
    ngx_http_core_run_phases, ngx_http_get_variable_index, ngx_http_handler_pt,
    ngx_http_phases_NGX_HTTP_ACCESS_PHASE, ngx_http_request_t, ngx_http_run_posted_requests,
    ngx_http_test_reading, ngx_int_t, ngx_log_t, ngx_msec_t, ngx_pool_cleanup_add, ngx_time,
    ngx_uint_t, NGX_DECLINED, NGX_DONE, NGX_ERROR, NGX_HTTP_CLIENT_CLOSED_REQUEST,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_LOG_ERR, NGX_LOG_INFO, NGX_OK,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_string;

use crate::conf::{FailureAction, LocConf, Mode};
use crate::headers::{push_header, remove_headers};
use crate::log::{debug, guard, log_error};
use crate::worker::{self, Answer, Call, CallId, CallKind};
use crate::{metrics, request, response, Module};

/// Where a request is between Esper and the access phase.
enum Stage {
    /// Not waiting for Esper: not asked yet, or what came back was applied.
    Idle,
    /// Waiting for the answer to a call, up to the deadline.
    Waiting { call: CallId, kind: CallKind },
    /// The answer, or the deadline's failure, arrived; applied when the
    /// request's phases run again.
    Arrived(Answer),
}

/// Request headers that only Esper and this module may set.
const HYBRID_KEY_HEADER: &str = "X-Esper-Hybrid-Key";
const DECISION_ID_HEADER: &str = "X-Esper-Decision-ID";
const ESPER_REQUEST_HEADERS: [&str; 2] = [HYBRID_KEY_HEADER, DECISION_ID_HEADER];

/// What the module knows about one main request; lives in the request pool
/// and is found again after internal redirects through its pool cleanup.
pub struct RequestState {
    request: *mut ngx_http_request_t,
    /// Fires at `esper_timeout` even if the background runtime stalls.
    deadline: ngx_event_t,
    stage: Stage,
    started: ngx_msec_t,
    /// `$esper_latency`, in milliseconds.
    pub latency: Option<ngx_msec_t>,
    /// `$esper_action`
    pub action: Option<Action>,
    /// `$esper_result`
    pub result: Option<EsperResult>,
    /// `$esper_decision_id`
    pub decision_id: Option<String>,
    /// The entity's key in the location's enforcement zone; `None` where no
    /// zone applies (none set, or monitor mode, which never enforces).
    entity: Option<EntityKey>,
}

impl RequestState {
    /// The decision the location's enforcement zone remembers for the entity.
    fn zone_lookup(&self, conf: &LocConf) -> Option<Remembered> {
        conf.zone.as_ref()?.lookup(self.entity.as_ref()?)
    }
}

/// Registers the access-phase handler and looks up `$request_id`
/// (postconfiguration).
pub unsafe extern "C" fn register(cf: *mut ngx_conf_t) -> ngx_int_t {
    guard(NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx passes the live http configuration context.
        unsafe {
            let Some(cmcf) = NgxHttpCoreModule::main_conf_mut(&*cf) else {
                return NGX_ERROR as ngx_int_t;
            };
            let phase = &mut cmcf.phases[ngx_http_phases_NGX_HTTP_ACCESS_PHASE as usize];
            let h: *mut ngx_http_handler_pt = ngx_array_push(&mut phase.handlers).cast();
            if h.is_null() {
                return NGX_ERROR as ngx_int_t;
            }
            *h = Some(access_handler);

            let Some(main) = Module::main_conf_mut(&*cf) else {
                return NGX_ERROR as ngx_int_t;
            };
            let mut name = ngx_string!("request_id");
            let index = ngx_http_get_variable_index(cf, &mut name);
            if index == NGX_ERROR as ngx_int_t {
                return NGX_ERROR as ngx_int_t;
            }
            main.request_id_index = index as ngx_uint_t;
            if metrics::add_zone(cf).is_err() {
                return NGX_ERROR as ngx_int_t;
            }
        }
        NGX_OK as ngx_int_t
    })
}

extern "C" fn access_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: nginx calls access handlers with a live main request on its thread.
        unsafe { access(r) }
    })
}

/// # Safety
/// `r` must be a live main request on the nginx thread.
unsafe fn access(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: per the function contract.
    let Some(conf) = (unsafe { Module::location_conf(&*r) }) else {
        return NGX_DECLINED as ngx_int_t;
    };

    // SAFETY: per the function contract.
    if let Some(state) = unsafe { find(r) } {
        // SAFETY: the state lives until the request pool is destroyed.
        let state = unsafe { &mut *state };
        return match std::mem::replace(&mut state.stage, Stage::Idle) {
            // SAFETY: per the function contract.
            Stage::Arrived(answer) => unsafe { resumed(r, conf, state, answer) },
            // Woken while the call is pending: an HTTP/3 client that
            // cancelled the stream (STOP_SENDING) leaves a write error.
            // SAFETY: per the function contract.
            Stage::Waiting { call, .. } if unsafe { request::client_gone(r) } => {
                state.abandon(call);
                NGX_HTTP_CLIENT_CLOSED_REQUEST as ngx_int_t
            }
            waiting @ Stage::Waiting { .. } => {
                state.stage = waiting;
                NGX_DONE as ngx_int_t
            }
            // An internal redirect after a bypass: this location judges the
            // request by its own `esper_bypass` (what Esper decided is never
            // judged twice).
            // SAFETY: per the function contract.
            Stage::Idle if state.result == Some(EsperResult::Bypassed) => unsafe {
                judge(r, conf, state)
            },
            Stage::Idle => NGX_DECLINED as ngx_int_t,
        };
    }

    let (Some(_), Some(_)) = (conf.target.as_ref(), conf.pass.as_ref()) else {
        metrics::count_result(EsperResult::Skipped);
        return NGX_DECLINED as ngx_int_t;
    };
    // SAFETY: per the function contract.
    unsafe {
        // Only Esper and this module may set these for the application.
        // `_` counts as `-`: with `underscores_in_headers on`, nginx's
        // `$http_*` and CGI-style backends fold one into the other.
        let forged = |name: &[u8]| {
            ESPER_REQUEST_HEADERS.iter().any(|h| {
                name.len() == h.len()
                    && name
                        .iter()
                        .zip(h.bytes())
                        .all(|(&n, h)| n.eq_ignore_ascii_case(&h) || (n == b'_' && h == b'-'))
            })
        };
        if remove_headers(&mut (*r).headers_in.headers, (*r).pool, forged).is_none() {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
    }
    // SAFETY: per the function contract.
    let Some(state) = (unsafe { attach(r) }) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    // SAFETY: attach returned a live state owned by the request pool.
    let state = unsafe { &mut *state };
    debug!(r, "esper: state attached");
    // SAFETY: per the function contract.
    unsafe { judge(r, conf, state) }
}

/// Judges a request where `esper on`, in this order: the operator's
/// `esper_bypass`; a proof to verify; a pass cookie; the enforcement zone;
/// else Esper's runtime decision.
///
/// # Safety
/// `r` must be the live main request that owns `state`.
unsafe fn judge(r: *mut ngx_http_request_t, conf: &LocConf, state: &mut RequestState) -> ngx_int_t {
    let Some(pass) = conf.pass.as_ref() else {
        return NGX_DECLINED as ngx_int_t;
    };
    // SAFETY: per the function contract.
    match unsafe { request::bypassed(r, conf.bypass) } {
        None => return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
        Some(true) => {
            // Never verified, but never passed on either.
            // SAFETY: per the function contract.
            let _ = unsafe { request::take_challenge_proof(r) };
            state.judged(EsperResult::Bypassed);
            debug!(r, "esper: bypassed by esper_bypass");
            // SAFETY: per the function contract.
            return unsafe { proceed(r, conf, state) };
        }
        Some(false) => {}
    }
    if conf.zone.is_some() && conf.mode == Mode::Enforce {
        // SAFETY: per the function contract.
        let (ip, ua) = unsafe { request::entity(r) };
        state.entity = Some(EntityKey::new(ip, ua));
    }

    // A visitor back from a challenge: verify the proof first. The proof is
    // taken out of the request whatever happens next.
    // SAFETY: per the function contract.
    if let Some(Some(token)) = unsafe { request::take_challenge_proof(r) } {
        debug!(
            r,
            "esper: challenge proof taken out of the request, verifying it"
        );
        // SAFETY: per the function contract.
        let (ip, ua) = unsafe { request::entity(r) };
        let body = verify_body(&token, ip, ua);
        // SAFETY: per the function contract.
        return unsafe { start(r, conf, state, Call::Verify(body)) };
    }

    // A pass skips a remembered challenge, never a remembered block.
    let remembered = state.zone_lookup(conf);
    // SAFETY: per the function contract.
    let has_pass = unsafe { request::has_valid_pass(r, pass) };
    debug!(
        r,
        "esper: pass cookie {}",
        if has_pass {
            "accepted"
        } else {
            "absent or refused"
        }
    );
    if has_pass {
        if let Some(block) = remembered.filter(|d| d.action == Action::Block) {
            // SAFETY: per the function contract.
            return unsafe { enforce(r, conf, state, block) };
        }
        state.judged(EsperResult::Pass);
        // SAFETY: per the function contract.
        return unsafe { proceed(r, conf, state) };
    }
    if let Some(decision) = remembered {
        // SAFETY: per the function contract.
        return unsafe { enforce(r, conf, state, decision) };
    }
    // SAFETY: per the function contract.
    unsafe { start_decision(r, conf, state) }
}

/// Applies a decision remembered in the enforcement zone, without a call.
///
/// # Safety
/// `r` must be the live main request that owns `state`.
unsafe fn enforce(
    r: *mut ngx_http_request_t,
    conf: &LocConf,
    state: &mut RequestState,
    decision: Remembered,
) -> ngx_int_t {
    debug!(
        r,
        "esper: {} remembered by the enforcement zone",
        decision.action.as_str()
    );
    state.judged(EsperResult::Enforced);
    state.action = Some(decision.action);
    state.decision_id = decision.decision_id;
    metrics::count_enforced(decision.action);
    // SAFETY: per the function contract.
    unsafe {
        response::deny(
            r,
            conf,
            decision.action,
            decision.redirect_url.as_deref(),
            state.decision_id.as_deref(),
        )
    }
}

/// Asks Esper for the runtime decision.
///
/// # Safety
/// `r` must be the live main request that owns `state`.
unsafe fn start_decision(
    r: *mut ngx_http_request_t,
    conf: &LocConf,
    state: &mut RequestState,
) -> ngx_int_t {
    // SAFETY: per the function contract; the main configuration exists
    // whenever a location has a target.
    let body = unsafe { request::payload(r, conf, Module::main_conf(&*r).expect("main conf")) };
    // SAFETY: per the function contract.
    unsafe { start(r, conf, state, Call::Decide(body)) }
}

/// Starts a call and makes the request wait for it, up to `esper_timeout`.
///
/// # Safety
/// `r` must be the live main request that owns `state`.
unsafe fn start(
    r: *mut ngx_http_request_t,
    conf: &LocConf,
    state: &mut RequestState,
    call: Call,
) -> ngx_int_t {
    let target = conf.target.as_ref().expect("only called where esper is on");
    let limit = conf.max_pending.max(1) as usize;
    if worker::pending() >= limit {
        let answer = call.failed(Failure::Overloaded(limit));
        // SAFETY: per the function contract.
        return unsafe { resumed(r, conf, state, answer) };
    }
    // SAFETY: per the function contract; the main configuration exists
    // whenever a location has a target.
    let main = unsafe { Module::main_conf(&*r) }.expect("main conf");
    let kind = call.kind();
    let data = (state as *mut RequestState).cast();
    match worker::call(main, target, call, on_answer, data) {
        Ok(call) => {
            debug!(r, "esper: call {call} started ({})", kind.as_str());
            state.stage = Stage::Waiting { call, kind };
        }
        // SAFETY: per the function contract.
        Err(failure) => return unsafe { resumed(r, conf, state, kind.failed(failure)) },
    }
    // SAFETY: the timer event lives in the state, which removes it from the
    // timer tree before it is freed (`cleanup`).
    unsafe {
        ngx::ffi::ngx_add_timer(&mut state.deadline, conf.timeout);
        // Notice a client that goes away while its call is pending.
        (*r).read_event_handler = Some(ngx_http_test_reading);
    }
    NGX_DONE as ngx_int_t
}

/// Acts on the outcome of the call the request waited for.
///
/// # Safety
/// `r` must be the live main request that owns `state`.
unsafe fn resumed(
    r: *mut ngx_http_request_t,
    conf: &LocConf,
    state: &mut RequestState,
    answer: Answer,
) -> ngx_int_t {
    // SAFETY: per the function contract; the connection log adds the client
    // and the request to each line.
    let log = unsafe { (*(*r).connection).log };
    match answer {
        Answer::Proof(Ok(ProofCheck::Verified { lifetime })) => {
            debug!(r, "esper: challenge proof verified");
            // The proof answers the remembered challenge; a block stays.
            if let (Some(zone), Some(key)) = (&conf.zone, &state.entity) {
                zone.forget_challenge(key);
            }
            if let Some(block) = state.zone_lookup(conf) {
                // SAFETY: per the function contract.
                return unsafe { enforce(r, conf, state, block) };
            }
            state.judged(EsperResult::Pass);
            // SAFETY: per the function contract.
            unsafe { pass_and_return(r, conf, lifetime) }
        }
        Answer::Proof(not_verified) => {
            debug!(r, "esper: challenge proof not verified");
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
            // SAFETY: per the function contract.
            unsafe { start_decision(r, conf, state) }
        }
        Answer::Decision(Ok(decision)) => {
            // SAFETY: per the function contract.
            unsafe { apply(r, conf, state, decision) }
        }
        Answer::Decision(Err(failure)) => {
            state.judged(failure.result());
            metrics::count_error(&failure);
            if let Some(ms) = state.latency {
                metrics::observe_latency(ms as u64);
            }
            let (continues, applied) = if conf.mode == Mode::Monitor {
                (true, "monitor mode, request continues")
            } else if conf.failure_action == FailureAction::Allow {
                (true, "failure action allow")
            } else {
                (false, "failure action block")
            };
            debug!(r, "esper: failure action applied");
            log_failure(
                log,
                format_args!("esper decision failed: {failure}; {applied}"),
            );
            if continues {
                // SAFETY: per the function contract.
                unsafe { proceed(r, conf, state) }
            } else {
                conf.block_status as ngx_int_t
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
        Some(left_out) => log_error(
            NGX_LOG_ERR,
            log,
            &format!("{message} ({left_out} similar lines left out)"),
        ),
        None => {}
    }
}

/// Applies a runtime decision.
///
/// # Safety
/// `r` must be the live main request that owns `state`.
unsafe fn apply(
    r: *mut ngx_http_request_t,
    conf: &LocConf,
    state: &mut RequestState,
    decision: Decision,
) -> ngx_int_t {
    let monitor = conf.mode == Mode::Monitor;
    debug!(
        r,
        "esper: decision {} applied{}",
        decision.action.as_str(),
        if monitor {
            " (monitor mode: not enforced)"
        } else {
            ""
        }
    );
    if let (Some(zone), Some(key)) = (&conf.zone, &state.entity) {
        let remembered = Remembered {
            action: decision.action,
            decision_id: decision.decision_id.clone(),
            redirect_url: decision.redirect_url.clone(),
        };
        let lifetime = entry_lifetime(decision.lifetime, zone.ttl);
        if zone.remember(key, &remembered, lifetime) == (Stored::Yes { evicted: true }) {
            EVICTION_LOG.with(|t| zone.evicted(&mut t.borrow_mut()));
        }
    }
    state.action = Some(decision.action);
    state.decision_id = decision.decision_id;
    state.judged(if monitor {
        EsperResult::Monitor
    } else {
        EsperResult::Decided
    });
    metrics::count_action(decision.action);
    if let Some(ms) = state.latency {
        metrics::observe_latency(ms as u64);
    }
    match decision.action {
        // Esper has no objection; other access checks (and `satisfy`) still
        // apply. Monitor mode never enforces.
        // SAFETY: per the function contract.
        Action::Allow => unsafe { proceed(r, conf, state) },
        // SAFETY: per the function contract.
        _ if monitor => unsafe { proceed(r, conf, state) },
        // SAFETY: per the function contract.
        action => unsafe {
            response::deny(
                r,
                conf,
                action,
                decision.redirect_url.as_deref(),
                state.decision_id.as_deref(),
            )
        },
    }
}

/// Lets the request go on to the application, carrying the Esper headers the
/// location asks for.
///
/// # Safety
/// `r` must be the live main request that owns `state`.
unsafe fn proceed(
    r: *mut ngx_http_request_t,
    conf: &LocConf,
    state: &mut RequestState,
) -> ngx_int_t {
    // SAFETY: per the function contract.
    unsafe {
        let headers = &mut (*r).headers_in.headers;
        if let Some(key) = request::evaluate(r, conf.hybrid_key).filter(|k| !k.is_empty()) {
            if push_header(headers, (*r).pool, HYBRID_KEY_HEADER, key).is_none() {
                return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
            }
        }
        if conf.forward_decision_id == 1 {
            if let Some(id) = &state.decision_id {
                if push_header(headers, (*r).pool, DECISION_ID_HEADER, id.as_bytes()).is_none() {
                    return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
                }
            }
        }
    }
    NGX_DECLINED as ngx_int_t
}

/// A verified visitor: issue the pass cookie and send them back to the URL
/// they asked for, without the proof.
///
/// # Safety
/// `r` must be a live main request whose proof was taken out.
unsafe fn pass_and_return(
    r: *mut ngx_http_request_t,
    conf: &LocConf,
    lifetime: Option<Duration>,
) -> ngx_int_t {
    let pass = conf.pass.as_ref().expect("only called where esper is on");
    let max_age = lifetime.map_or(pass.ttl, |l| l.min(pass.ttl));
    // SAFETY: per the function contract.
    let (ip, ua) = unsafe { request::entity(r) };
    let value = pass.key.issue(SystemTime::now() + max_age, ip, ua);
    // SAFETY: per the function contract.
    let cookie = set_cookie(&pass.cookie, &value, max_age, unsafe {
        request::is_https(r)
    });
    // A relative path that stays on this site, whatever `absolute_redirect`
    // makes of it: never `//host/...`.
    // SAFETY: per the function contract.
    let back = same_site_path(unsafe { request::request_uri(r) });
    // SAFETY: per the function contract.
    unsafe { response::redirect(r, conf, &back, Some(cookie.as_bytes())) }
}

impl RequestState {
    /// Records what became of the request, for `$esper_result` and the metrics.
    fn judged(&mut self, result: EsperResult) {
        self.result = Some(result);
        metrics::count_result(result);
    }

    /// The client went away while the call was pending: drop the call and
    /// its deadline.
    fn abandon(&mut self, call: CallId) {
        self.stop_deadline();
        worker::forget(call);
    }

    /// Records what arrived (the answer, or the deadline's failure) and
    /// stops the timer.
    fn arrived(&mut self, answer: Answer) {
        self.stop_deadline();
        // SAFETY: reading nginx's cached clock on its own thread.
        let now = unsafe { ngx_current_msec };
        self.latency = Some(now.wrapping_sub(self.started));
        self.stage = Stage::Arrived(answer);
    }

    fn stop_deadline(&mut self) {
        if self.deadline.timer_set() != 0 {
            // SAFETY: the timer was armed by `start` on this thread and is
            // still in the timer tree.
            unsafe { ngx::ffi::ngx_del_timer(&mut self.deadline) };
        }
    }
}

/// The worker's callback for a finished call.
///
/// # Safety
/// `data` must be a live `RequestState` whose call is still registered.
unsafe fn on_answer(data: *mut c_void, answer: Answer) {
    let request = {
        // SAFETY: per the function contract.
        let state = unsafe { &mut *data.cast::<RequestState>() };
        if let Stage::Waiting { call, .. } = state.stage {
            debug!(state.request, "esper: call {call} answered");
        }
        state.arrived(answer);
        state.request
    };
    // SAFETY: the request owns the state, so it is alive too.
    unsafe { resume(request) };
}

/// The deadline timer's handler.
extern "C" fn on_deadline(ev: *mut ngx_event_t) {
    guard((), || {
        let request = {
            // SAFETY: the timer's data is its RequestState, alive while armed.
            let state = unsafe { &mut *(*ev).data.cast::<RequestState>() };
            debug!(state.request, "esper: deadline reached");
            if let Stage::Waiting { call, kind } = state.stage {
                worker::expire(call);
                state.arrived(kind.failed(Failure::Timeout));
            }
            state.request
        };
        // SAFETY: the request owns the state, so it is alive too.
        unsafe { resume(request) };
    })
}

/// Runs the request's phases again from the access phase.
///
/// # Safety
/// `r` must be a live main request waiting in the access phase.
unsafe fn resume(r: *mut ngx_http_request_t) {
    // SAFETY: per the function contract; the connection outlives this call
    // (nginx marks it destroyed rather than freeing it).
    unsafe {
        let c = (*r).connection;
        (*r).read_event_handler = Some(ngx_http_block_reading);
        ngx_http_core_run_phases(r);
        ngx_http_run_posted_requests(c);
    }
}

/// Creates the state of `r` in its pool.
///
/// # Safety
/// `r` must be a live main request.
unsafe fn attach(r: *mut ngx_http_request_t) -> Option<*mut RequestState> {
    // SAFETY: per the function contract.
    unsafe {
        let cln = ngx_pool_cleanup_add((*r).pool, 0);
        if cln.is_null() {
            return None;
        }
        let state = Box::into_raw(Box::new(RequestState {
            request: r,
            // SAFETY: an all-zero ngx_event_t is nginx's own initial state.
            deadline: std::mem::zeroed(),
            stage: Stage::Idle,
            started: ngx_current_msec,
            latency: None,
            action: None,
            result: None,
            decision_id: None,
            entity: None,
        }));
        (*state).deadline.handler = Some(on_deadline);
        (*state).deadline.data = state.cast();
        (*state).deadline.log = (*(*r).connection).log;
        (*cln).handler = Some(cleanup);
        (*cln).data = state.cast();
        *(*r).ctx.add(Module::module().ctx_index) = state.cast();
        Some(state)
    }
}

/// The state of `r`'s main request, if it has been judged here.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn find(r: *mut ngx_http_request_t) -> Option<*mut RequestState> {
    // SAFETY: per the function contract.
    unsafe {
        let r = (*r).main;
        let slot = (*r).ctx.add(Module::module().ctx_index);
        if !(*slot).is_null() {
            return Some((*slot).cast());
        }
        // An internal redirect clears module contexts but not pool cleanups;
        // nginx's realip module finds its state the same way.
        let mut cln = (*(*r).pool).cleanup;
        while let Some(c) = cln.as_ref() {
            if c.handler
                .is_some_and(|h| fn_addr_eq(h, cleanup as unsafe extern "C" fn(*mut c_void)))
            {
                *slot = c.data;
                return Some(c.data.cast());
            }
            cln = c.next;
        }
        None
    }
}

/// Pool cleanup: the request is being freed, possibly with its call pending.
unsafe extern "C" fn cleanup(data: *mut c_void) {
    guard((), || {
        // SAFETY: `data` is the Box made by `attach`, freed only here.
        let mut state = unsafe { Box::from_raw(data.cast::<RequestState>()) };
        match state.stage {
            Stage::Waiting { call, .. } => state.abandon(call),
            Stage::Idle | Stage::Arrived(_) => state.stop_deadline(),
        }
    })
}
