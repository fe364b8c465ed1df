//! The Prometheus text exposition of the module's counters. The counters
//! live in nginx shared memory (summed over all workers); this is their
//! names, their labels and their rendering.

use std::fmt::Write;

use crate::{Action, Failure};

/// `esper_requests_total{result=...}`, in `$esper_result`'s words:
/// `enforced` is a decision replayed from an enforcement zone without a call,
/// `bypassed` a request the operator's allowlist lets through unasked.
pub const RESULTS: [&str; 8] =
    ["decided", "monitor", "pass", "timeout", "error", "skipped", "enforced", "bypassed"];
/// `esper_errors_total{reason=...}`.
pub const ERROR_REASONS: [&str; 11] = [
    "transport",
    "unauthorized",
    "status",
    "too_large",
    "content_type",
    "invalid_body",
    "unknown_action",
    "bad_redirect",
    "overloaded",
    "circuit_open",
    "rate_limited",
];
/// `esper_enforced_requests_total{action=...}`: only decisions that stop a
/// request are remembered and replayed.
pub const ENFORCED_ACTIONS: [Action; 2] = [Action::Block, Action::Challenge];
/// Upper bounds of the latency histogram, in milliseconds (then `+Inf`).
pub const LATENCY_BUCKETS_MS: [u64; 9] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500];

/// What became of a request: `$esper_result`, and the `result` label of
/// `esper_requests_total` (in the order of [`RESULTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EsperResult {
    Decided,
    Monitor,
    Pass,
    Timeout,
    Error,
    Skipped,
    Enforced,
    Bypassed,
}

impl EsperResult {
    pub fn as_str(self) -> &'static str {
        RESULTS[self.index()]
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

pub fn action_index(action: Action) -> usize {
    action as usize
}

/// The `reason` label of a failure; `None` for a timeout, which is a result
/// of its own.
pub fn error_index(failure: &Failure) -> Option<usize> {
    Some(match failure {
        Failure::Timeout => return None,
        Failure::Transport(_) => 0,
        Failure::Unauthorized(_) => 1,
        Failure::Status(_) => 2,
        Failure::TooLarge => 3,
        Failure::ContentType(_) => 4,
        Failure::InvalidBody(_) => 5,
        Failure::UnknownAction(_) => 6,
        Failure::BadRedirect(_) => 7,
        Failure::Overloaded(_) => 8,
        Failure::CircuitOpen => 9,
        Failure::RateLimited { .. } | Failure::RetryLater => 10,
    })
}

/// The `action` label of a locally enforced request; `None` for allow, which
/// is never enforced.
pub fn enforced_index(action: Action) -> Option<usize> {
    ENFORCED_ACTIONS.iter().position(|a| *a == action)
}

/// The bucket a latency falls in (the last one is `+Inf`).
pub fn latency_bucket(ms: u64) -> usize {
    LATENCY_BUCKETS_MS.iter().position(|&b| ms <= b).unwrap_or(LATENCY_BUCKETS_MS.len())
}

/// The reading of one enforcement zone.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ZoneSnapshot {
    /// The zone's name in the configuration.
    pub name: String,
    /// Decisions it holds now.
    pub entries: u64,
    /// Decisions dropped to make room for others, since it was created.
    pub evictions: u64,
}

/// A reading of all counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub actions: [u64; 3],
    pub results: [u64; RESULTS.len()],
    pub errors: [u64; ERROR_REASONS.len()],
    /// By [`enforced_index`].
    pub enforced: [u64; ENFORCED_ACTIONS.len()],
    /// Answers with status 429, decisions and proof verifications alike.
    pub rate_limited: u64,
    pub zones: Vec<ZoneSnapshot>,
    pub pending: u64,
    pub open_breakers: u64,
    /// Per bucket (not cumulative), `+Inf` last.
    pub latency_buckets: [u64; LATENCY_BUCKETS_MS.len() + 1],
    pub latency_sum_ms: u64,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as the exposition format wants it: `\`, `"` and newline
/// escaped.
fn label_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    family(
        &mut out,
        "esper_decisions_total",
        "counter",
        "Runtime decisions by the action Esper returned.",
    );
    for action in [Action::Allow, Action::Challenge, Action::Block] {
        let count = s.actions[action_index(action)];
        let _ = writeln!(out, "esper_decisions_total{{action=\"{}\"}} {count}", action.as_str());
    }
    family(&mut out, "esper_requests_total", "counter", "Requests by $esper_result.");
    for (result, count) in RESULTS.iter().zip(s.results) {
        let _ = writeln!(out, "esper_requests_total{{result=\"{result}\"}} {count}");
    }
    family(
        &mut out,
        "esper_errors_total",
        "counter",
        "Failed or refused calls to Esper by reason.",
    );
    for (reason, count) in ERROR_REASONS.iter().zip(s.errors) {
        let _ = writeln!(out, "esper_errors_total{{reason=\"{reason}\"}} {count}");
    }
    family(
        &mut out,
        "esper_enforced_requests_total",
        "counter",
        "Requests given a remembered block or challenge without asking Esper, by action.",
    );
    for (action, count) in ENFORCED_ACTIONS.iter().zip(s.enforced) {
        let _ = writeln!(
            out,
            "esper_enforced_requests_total{{action=\"{}\"}} {count}",
            action.as_str()
        );
    }
    family(
        &mut out,
        "esper_rate_limited_total",
        "counter",
        "Answers from Esper with status 429 (rate limited).",
    );
    let _ = writeln!(out, "esper_rate_limited_total {}", s.rate_limited);
    family(
        &mut out,
        "esper_enforcement_entries",
        "gauge",
        "Decisions held in an enforcement zone, by zone.",
    );
    for zone in &s.zones {
        let _ = writeln!(
            out,
            "esper_enforcement_entries{{zone=\"{}\"}} {}",
            label_value(&zone.name),
            zone.entries
        );
    }
    family(
        &mut out,
        "esper_enforcement_evictions_total",
        "counter",
        "Decisions dropped from a full enforcement zone to make room, by zone.",
    );
    for zone in &s.zones {
        let _ = writeln!(
            out,
            "esper_enforcement_evictions_total{{zone=\"{}\"}} {}",
            label_value(&zone.name),
            zone.evictions
        );
    }
    family(&mut out, "esper_pending", "gauge", "Calls to Esper in flight, all workers.");
    let _ = writeln!(out, "esper_pending {}", s.pending);
    family(
        &mut out,
        "esper_circuit_breakers_open",
        "gauge",
        "Open or probing circuit breakers, all workers.",
    );
    let _ = writeln!(out, "esper_circuit_breakers_open {}", s.open_breakers);
    family(
        &mut out,
        "esper_decision_duration_seconds",
        "histogram",
        "Time to a runtime decision or its failure.",
    );
    let mut cumulative = 0;
    for (i, count) in s.latency_buckets.iter().enumerate() {
        cumulative += count;
        let le = LATENCY_BUCKETS_MS
            .get(i)
            .map_or("+Inf".to_owned(), |ms| (*ms as f64 / 1000.0).to_string());
        let _ = writeln!(out, "esper_decision_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ =
        writeln!(out, "esper_decision_duration_seconds_sum {}", s.latency_sum_ms as f64 / 1000.0);
    let _ = writeln!(out, "esper_decision_duration_seconds_count {cumulative}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_its_samples() {
        let mut s = Snapshot::default();
        s.actions[action_index(Action::Block)] = 3;
        s.results[EsperResult::Timeout.index()] = 2;
        s.errors[error_index(&Failure::Status(500)).unwrap()] = 4;
        s.pending = 7;
        s.latency_buckets[latency_bucket(3)] = 1;
        s.latency_buckets[latency_bucket(300)] = 2;
        s.latency_buckets[latency_bucket(9000)] = 1;
        s.latency_sum_ms = 9603;
        let text = render(&s);
        assert!(text.contains("esper_decisions_total{action=\"block\"} 3\n"));
        assert!(text.contains("esper_requests_total{result=\"timeout\"} 2\n"));
        assert!(text.contains("esper_errors_total{reason=\"status\"} 4\n"));
        assert!(text.contains("esper_pending 7\n"));
        assert!(text.contains("esper_decision_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("esper_decision_duration_seconds_bucket{le=\"0.5\"} 3\n"));
        assert!(text.contains("esper_decision_duration_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(text.contains("esper_decision_duration_seconds_sum 9.603\n"));
        assert!(text.contains("esper_decision_duration_seconds_count 4\n"));
        let type_line = text.find("# TYPE esper_pending gauge").unwrap();
        assert!(text[type_line..].starts_with("# TYPE esper_pending gauge\nesper_pending 7\n"));
    }

    #[test]
    fn each_action_counts_apart() {
        let mut s = Snapshot::default();
        for (action, count) in [(Action::Allow, 1), (Action::Challenge, 2), (Action::Block, 3)] {
            s.actions[action_index(action)] += count;
        }
        let text = render(&s);
        for expected in [
            "esper_decisions_total{action=\"allow\"} 1\n",
            "esper_decisions_total{action=\"challenge\"} 2\n",
            "esper_decisions_total{action=\"block\"} 3\n",
        ] {
            assert!(text.contains(expected), "{expected}\nin\n{text}");
        }
    }

    #[test]
    fn renders_enforcement_and_rate_limits() {
        let mut s = Snapshot::default();
        s.results[EsperResult::Enforced.index()] = 6;
        s.enforced[enforced_index(Action::Block).unwrap()] = 4;
        s.enforced[enforced_index(Action::Challenge).unwrap()] = 2;
        s.errors[error_index(&Failure::RateLimited { retry_after: None }).unwrap()] = 3;
        s.rate_limited = 5;
        s.zones = vec![
            ZoneSnapshot { name: "bots".into(), entries: 120, evictions: 7 },
            ZoneSnapshot { name: "odd\"na\\me".into(), entries: 0, evictions: 0 },
        ];
        let text = render(&s);
        for expected in [
            "esper_requests_total{result=\"enforced\"} 6\n",
            "esper_requests_total{result=\"bypassed\"} 0\n",
            "esper_errors_total{reason=\"rate_limited\"} 3\n",
            "# HELP esper_enforced_requests_total Requests given a remembered block or challenge without asking Esper, by action.\n\
             # TYPE esper_enforced_requests_total counter\n\
             esper_enforced_requests_total{action=\"block\"} 4\n\
             esper_enforced_requests_total{action=\"challenge\"} 2\n",
            "# TYPE esper_rate_limited_total counter\nesper_rate_limited_total 5\n",
            "# TYPE esper_enforcement_entries gauge\n\
             esper_enforcement_entries{zone=\"bots\"} 120\n\
             esper_enforcement_entries{zone=\"odd\\\"na\\\\me\"} 0\n",
            "# TYPE esper_enforcement_evictions_total counter\n\
             esper_enforcement_evictions_total{zone=\"bots\"} 7\n",
        ] {
            assert!(text.contains(expected), "{expected}\nin\n{text}");
        }
    }

    #[test]
    fn families_without_zones_have_no_samples() {
        let text = render(&Snapshot::default());
        assert!(text.contains(
            "# TYPE esper_enforcement_entries gauge\n# HELP esper_enforcement_evictions_total"
        ));
        assert!(!text.contains("zone="));
    }

    #[test]
    fn indexes() {
        assert_eq!(error_index(&Failure::Timeout), None);
        assert_eq!(error_index(&Failure::CircuitOpen), Some(9));
        assert_eq!(
            error_index(&Failure::RateLimited { retry_after: None }).map(|i| ERROR_REASONS[i]),
            Some("rate_limited")
        );
        assert_eq!(enforced_index(Action::Block), Some(0));
        assert_eq!(enforced_index(Action::Challenge), Some(1));
        assert_eq!(enforced_index(Action::Allow), None);
        assert_eq!(EsperResult::Enforced.as_str(), "enforced");
        assert_eq!(EsperResult::Bypassed.as_str(), "bypassed");
        assert_eq!(latency_bucket(5), 0);
        assert_eq!(latency_bucket(6), 1);
        assert_eq!(latency_bucket(2501), 9);
        assert_eq!(EsperResult::Skipped.as_str(), "skipped");
        assert_eq!(EsperResult::Decided.as_str(), "decided");
    }
}
