//! The circuit breaker: after repeated failures, stop asking Esper for a
//! cooldown and apply the failure action at once; then let one probe through,
//! and close again when it succeeds.

use std::collections::VecDeque;

/// `esper_circuit_breaker failures=N window=TIME cooldown=TIME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    pub failures: u32,
    pub window_ms: u64,
    pub cooldown_ms: u64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: 20,
            window_ms: 10_000,
            cooldown_ms: 5_000,
        }
    }
}

/// Whether a call may go to Esper now.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Call,
    /// The first call after the cooldown: its outcome opens or closes the breaker.
    Probe,
    /// Open: do not call.
    Refuse,
}

/// A change of state, logged once by the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Transition {
    Opened,
    HalfOpened,
    Closed,
    Reopened,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Closed,
    Open {
        until_ms: u64,
    },
    HalfOpen,
}

#[derive(Debug, Default)]
pub struct Breaker {
    state: State,
    /// Times of recent failures while closed, oldest first.
    failures: VecDeque<u64>,
}

impl Breaker {
    pub fn admit(&mut self, now_ms: u64) -> (Admit, Option<Transition>) {
        match self.state {
            State::Closed => (Admit::Call, None),
            State::Open { until_ms } if now_ms < until_ms => (Admit::Refuse, None),
            State::Open { .. } => {
                self.state = State::HalfOpen;
                (Admit::Probe, Some(Transition::HalfOpened))
            }
            State::HalfOpen => (Admit::Refuse, None),
        }
    }

    /// Open or probing: not every call goes to Esper.
    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed)
    }

    /// The probe was given up (its request ended first): the next call probes.
    pub fn abandon_probe(&mut self) {
        if let State::HalfOpen = self.state {
            self.state = State::Open { until_ms: 0 };
        }
    }

    /// Records the outcome of a call that `admit` let through.
    pub fn record(
        &mut self,
        now_ms: u64,
        success: bool,
        settings: &BreakerSettings,
    ) -> Option<Transition> {
        match self.state {
            State::Closed if success => None,
            State::Closed => {
                self.failures.push_back(now_ms);
                while self
                    .failures
                    .front()
                    .is_some_and(|&t| now_ms.saturating_sub(t) > settings.window_ms)
                {
                    self.failures.pop_front();
                }
                if self.failures.len() as u32 >= settings.failures {
                    self.failures.clear();
                    self.state = State::Open {
                        until_ms: now_ms + settings.cooldown_ms,
                    };
                    return Some(Transition::Opened);
                }
                None
            }
            State::HalfOpen if success => {
                self.state = State::Closed;
                Some(Transition::Closed)
            }
            State::HalfOpen => {
                self.state = State::Open {
                    until_ms: now_ms + settings.cooldown_ms,
                };
                Some(Transition::Reopened)
            }
            // Late outcomes of calls made before it opened.
            State::Open { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: BreakerSettings = BreakerSettings {
        failures: 3,
        window_ms: 1000,
        cooldown_ms: 500,
    };

    #[test]
    fn opens_after_failures_within_the_window() {
        let mut b = Breaker::default();
        assert_eq!(b.record(0, false, &S), None);
        assert_eq!(b.record(100, false, &S), None);
        assert_eq!(
            b.record(1050, false, &S),
            None,
            "the first failure left the window"
        );
        assert_eq!(b.record(1060, false, &S), Some(Transition::Opened));
        assert_eq!(b.admit(1400), (Admit::Refuse, None));
    }

    #[test]
    fn probes_after_the_cooldown() {
        let mut b = Breaker::default();
        for t in 0..3 {
            b.record(t, false, &S);
        }
        assert_eq!(b.admit(501), (Admit::Refuse, None));
        assert_eq!(b.admit(502), (Admit::Probe, Some(Transition::HalfOpened)));
        assert_eq!(b.admit(503), (Admit::Refuse, None), "one probe at a time");
        assert_eq!(b.record(510, false, &S), Some(Transition::Reopened));
        assert_eq!(b.admit(600), (Admit::Refuse, None));
        assert_eq!(b.admit(1011), (Admit::Probe, Some(Transition::HalfOpened)));
        assert_eq!(b.record(1020, true, &S), Some(Transition::Closed));
        assert_eq!(b.admit(1030), (Admit::Call, None));
        assert_eq!(b.record(1040, false, &S), None, "failures count afresh");
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let mut b = Breaker::default();
        for t in 0..3 {
            b.record(t, false, &S);
        }
        assert_eq!(b.admit(600), (Admit::Probe, Some(Transition::HalfOpened)));
        b.abandon_probe();
        assert_eq!(b.admit(601), (Admit::Probe, Some(Transition::HalfOpened)));
    }

    #[test]
    fn successes_keep_it_closed() {
        let mut b = Breaker::default();
        for t in 0..100 {
            assert_eq!(b.record(t, true, &S), None);
            assert_eq!(b.admit(t), (Admit::Call, None));
        }
    }
}
