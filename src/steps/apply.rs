//! Acting on what came back (a decision, a proof check, a failure) or on
//! what the enforcement zone remembers: the request continues, is
//! challenged or blocked, or gets the failure action; a verified visitor
//! gets the pass cookie.

use std::cell::RefCell;
use std::fmt;
use std::time::{Duration, SystemTime};

use esper_client::Answer;
use esper_protocol::enforcement::{entry_lifetime, ReturnScope};
use esper_protocol::entity_table::{Remembered, Stored};
use esper_protocol::metrics::EsperResult;
use esper_protocol::query::same_site_path;
use esper_protocol::throttle::LogThrottle;
use esper_protocol::{Decision, ProofCheck, Verdict};
use ngx::ffi::{ngx_log_t, ngx_time, NGX_LOG_ERR, NGX_LOG_INFO};
use ngx::http::Request;

use super::judge::{judge_without_proof, return_scope};
use super::{DECLINED, SERVER_ERROR};
use crate::conf::{FailureAction, LocConf, Mode};
use crate::enforcement::ZoneTable;
use crate::headers::{add_header_in, add_pooled_header_in, DECISION_ID_HEADER, HYBRID_KEY_HEADER};
use crate::log::{debug, log_error};
use crate::response::{Denial, Step};
use crate::state::RequestState;
use crate::{metrics, request, response};

/// A decision that a monitoring location let through, in an enforcing
/// location the request was redirected to: applied here, without a call.
pub fn enforce_monitored(
    request: &mut Request,
    conf: &LocConf,
    state: &mut RequestState,
    verdict: Verdict,
) -> Step {
    debug!(request, "esper: {} decided in monitor mode, enforced here", verdict.action().as_str());
    state.rejudged(EsperResult::Decided);
    match Denial::of(&verdict) {
        Some(denial) => response::deny(request, conf, denial, state.shown().decision_id.as_deref()),
        None => DECLINED,
    }
}

/// Applies a decision remembered in the enforcement zone, without a call.
pub fn enforce(
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

/// Acts on the answer the request waited for.
pub fn resumed(
    request: &mut Request,
    conf: &LocConf,
    state: &mut RequestState,
    answer: Answer,
) -> Step {
    // The connection log adds the client and the request to each line.
    let log = request.log();
    if let Answer::Proof(check) = &answer {
        metrics::count_proof(check);
    }
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
            // Judged as the same request without a proof.
            match not_verified {
                Err(failure) => {
                    metrics::count_error(&failure);
                    log_failure(
                        log,
                        format_args!("esper challenge proof verification failed: {failure}; judged as without a proof"),
                    );
                }
                Ok(_) => log_error(
                    NGX_LOG_INFO,
                    log,
                    "esper challenge proof refused; judged as without a proof",
                ),
            }
            let Some(pass) = conf.pass.as_ref() else {
                return SERVER_ERROR;
            };
            judge_without_proof(request, conf, state, pass)
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
                response::block(request, conf.block_status)
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
        // A lifetime that is zero or already over holds for this request only.
        let lifetime = entry_lifetime(decision.lifetime, zone.ttl);
        if let (Some(lifetime), Some(_)) = (lifetime, Denial::of(&decision.verdict)) {
            let scope = match decision.verdict {
                Verdict::Challenge { .. } => return_scope(request, conf),
                Verdict::Block | Verdict::Allow => ReturnScope::default(),
            };
            let remembered = Remembered {
                verdict: decision.verdict.clone(),
                decision_id: decision.decision_id.clone(),
                scope,
            };
            if zone.remember(key, &remembered, lifetime) == (Stored::Yes { evicted: true }) {
                EVICTION_LOG.with(|t| zone.evicted(&mut t.borrow_mut()));
            }
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
        Some(_) if monitor => {
            state.unenforced = Some(decision.verdict.clone());
            proceed(request, conf, state)
        }
        Some(denial) => response::deny(request, conf, denial, state.shown().decision_id.as_deref()),
    }
}

/// Lets the request go on to the application, carrying the Esper headers the
/// location asks for.
pub(super) fn proceed(request: &mut Request, conf: &LocConf, state: &mut RequestState) -> Step {
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
    let now = SystemTime::now();
    let value = pass.key.issue(now, now + max_age, &request::pass_scope(request, pass));
    metrics::count_pass_issued();
    let cookie = pass.cookie.set_cookie(&value, max_age, request::is_https(request));
    // A relative path that stays on this site, whatever `absolute_redirect`
    // makes of it: never `//host/...`.
    let back = same_site_path(request.unparsed_uri().as_bytes());
    Step::Phase(response::redirect(request, conf, &back, Some(cookie.as_bytes())))
}
