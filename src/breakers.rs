//! What the circuit breakers' changes of state tell the operator: one
//! warning each, and the shared gauge of open breakers.

use esper_protocol::breaker::Transition;
use ngx::ffi::NGX_LOG_WARN;

use crate::conf::Target;
use crate::log::{cycle_log, log_error};
use crate::metrics;

/// One warning per change of a breaker's state, and the shared gauge.
pub fn log_transition(target: &Target, transition: Option<Transition>) {
    let Some(transition) = transition else { return };
    match transition {
        Transition::Opened => metrics::breakers_changed(1, 0),
        Transition::Closed => metrics::breakers_changed(0, 1),
        Transition::HalfOpened | Transition::Reopened => {}
    }
    let url = &target.decision_url;
    let message = match (transition, &target.breaker) {
        (Transition::Opened, Some(s)) => format!(
            "esper circuit breaker open for {url}: {} failures within {} ms; failure action without asking Esper for {} ms",
            s.failures, s.window_ms, s.cooldown_ms
        ),
        (Transition::HalfOpened, _) => format!("esper circuit breaker half-open for {url}: one request probes Esper"),
        (Transition::Closed, _) => format!("esper circuit breaker closed for {url}: Esper answered the probe"),
        (Transition::Reopened, _) | (Transition::Opened, None) => {
            format!("esper circuit breaker open again for {url}: the probe failed")
        }
    };
    log_error(NGX_LOG_WARN, cycle_log(), &message);
}
