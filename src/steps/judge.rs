//! How a request is judged, in this order: the operator's `esper_bypass`; a
//! proof to verify (unless the enforcement zone refuses it); a block the
//! zone remembers (held, then answered); a pass cookie; a challenge the zone
//! remembers for this request's return URL; else Esper's runtime decision.

use esper_client::Call;
use esper_protocol::enforcement::{EntityKey, ReturnScope};
use esper_protocol::metrics::EsperResult;
use esper_protocol::{verify_body, Failure, Verdict};
use ngx::ffi::{ngx_http_test_reading, NGX_LOG_INFO};
use ngx::http::{HttpModuleMainConf, Request};

use super::apply::{enforce, proceed, resumed};
use super::{DECLINED, DONE, SERVER_ERROR};
use crate::conf::{LocConf, Mode, PassSettings};
use crate::log::{debug, log_error};
use crate::request::ChallengeProof;
use crate::response::Step;
use crate::state::RequestState;
use crate::{request, worker, Module};

/// How long a block the enforcement zone remembers is held before it is
/// answered.
const BLOCK_HOLD_MS: ngx::ffi::ngx_msec_t = 10;

/// Judges a request where `esper on` (see the file's comment for the order).
pub fn judge(request: &mut Request, conf: &LocConf, state: &mut RequestState) -> Step {
    let Some(pass) = conf.pass.as_ref() else {
        return DECLINED;
    };
    match request::bypassed(request, conf.bypass.as_deref().unwrap_or_default()) {
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

    // A visitor back from a challenge: verify the proof first, unless the
    // zone refuses it. The proof is taken out of the request whatever
    // happens next.
    let token = match request::take_challenge_proof(request) {
        None => return SERVER_ERROR,
        Some(ChallengeProof::Taken { token }) => token,
        Some(ChallengeProof::Absent) => None,
    };
    if let Some(token) = token {
        if state.admit_proof(conf) {
            debug!(request, "esper: challenge proof taken out of the request, verifying it");
            let (ip, ua) = request::entity(request);
            let body = verify_body(&token, ip, ua);
            return start(request, conf, state, Call::Verify(body));
        }
        log_error(
            NGX_LOG_INFO,
            request.log(),
            "esper challenge proof not verified: the enforcement zone remembers a block, or this entity's proofs are spent",
        );
    }
    judge_without_proof(request, conf, state, pass)
}

/// Judges a request as if it carried no proof: a block the zone remembers
/// (which nothing lifts), a pass cookie, a challenge the zone remembers for
/// this request's return URL, else Esper's runtime decision.
pub(super) fn judge_without_proof(
    request: &mut Request,
    conf: &LocConf,
    state: &mut RequestState,
    pass: &PassSettings,
) -> Step {
    let remembered = state.zone_lookup(conf);
    if let Some(block) = remembered.as_ref().filter(|d| d.verdict == Verdict::Block) {
        // A bot that Esper blocked waits a little for each answer, so a
        // flood on keepalive connections cannot take the worker's time
        // from other clients.
        debug!(request, "esper: block remembered by the enforcement zone, held {BLOCK_HOLD_MS} ms");
        state.hold(block.clone(), BLOCK_HOLD_MS);
        request.as_mut().read_event_handler = Some(ngx_http_test_reading);
        return DONE;
    }
    let has_pass = request::has_valid_pass(request, pass);
    debug!(
        request,
        "esper: pass cookie {}",
        if has_pass { "accepted" } else { "absent or refused" }
    );
    if has_pass {
        state.judged(EsperResult::Pass);
        return proceed(request, conf, state);
    }
    // A challenge sends the visitor back to the return URL Esper keeps on
    // its challenge session: replayed only to a request with that URL.
    if let Some(challenge) = remembered.filter(|c| c.scope == return_scope(request, conf)) {
        return enforce(request, conf, state, challenge);
    }
    start_decision(request, conf, state)
}

/// Which request a challenge made now would be for.
pub(super) fn return_scope(request: &Request, conf: &LocConf) -> ReturnScope {
    ReturnScope::of(request::return_url(request, conf).unwrap_or_default())
}

/// Asks Esper for the runtime decision.
pub(super) fn start_decision(
    request: &mut Request,
    conf: &LocConf,
    state: &mut RequestState,
) -> Step {
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
