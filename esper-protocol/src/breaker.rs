//! The circuit breaker: after repeated failures, stop asking Esper for a
//! cooldown and apply the failure action at once; then let one probe through,
//! and close again when it succeeds.
//!
//! A call's outcome may arrive after the breaker changed state: each admission
//! carries a [`Ticket`] of the period it was made in, and outcomes of earlier
//! periods are ignored, so a call made before the breaker opened cannot close
//! it, reopen it or extend its cooldown.

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
        BreakerSettings { failures: 20, window_ms: 10_000, cooldown_ms: 5_000 }
    }
}

/// Which period of the breaker a call was admitted in; hand it back to
/// [`Breaker::record`] with the call's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// Whether a call may go to Esper now.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Call(Ticket),
    /// The first call after the cooldown: its outcome opens or closes the breaker.
    Probe(Ticket),
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
    /// Advances whenever the breaker opens or lets a probe through: the
    /// probe's ticket is the only one of its period.
    period: u64,
}

impl Breaker {
    pub fn admit(&mut self, now_ms: u64) -> (Admit, Option<Transition>) {
        match self.state {
            State::Closed => (Admit::Call(Ticket(self.period)), None),
            State::Open { until_ms } if now_ms < until_ms => (Admit::Refuse, None),
            State::Open { .. } => {
                self.state = State::HalfOpen;
                self.period += 1;
                (Admit::Probe(Ticket(self.period)), Some(Transition::HalfOpened))
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

    /// Records the outcome of a call that `admit` let through with `ticket`.
    pub fn record(
        &mut self,
        ticket: Ticket,
        now_ms: u64,
        success: bool,
        settings: &BreakerSettings,
    ) -> Option<Transition> {
        if ticket.0 < self.period {
            // Made before the breaker last opened or probed.
            return None;
        }
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
                    self.open(now_ms, settings);
                    return Some(Transition::Opened);
                }
                None
            }
            State::HalfOpen if success => {
                self.state = State::Closed;
                Some(Transition::Closed)
            }
            State::HalfOpen => {
                self.open(now_ms, settings);
                Some(Transition::Reopened)
            }
            // Only an abandoned probe's ticket could still be current here.
            State::Open { .. } => None,
        }
    }

    fn open(&mut self, now_ms: u64, settings: &BreakerSettings) {
        self.state = State::Open { until_ms: now_ms + settings.cooldown_ms };
        self.period += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: BreakerSettings = BreakerSettings { failures: 3, window_ms: 1000, cooldown_ms: 500 };

    fn ticket(b: &mut Breaker, now_ms: u64) -> Ticket {
        match b.admit(now_ms) {
            (Admit::Call(t) | Admit::Probe(t), _) => t,
            other => panic!("not admitted: {other:?}"),
        }
    }

    /// Admits and records a call at once.
    fn call(b: &mut Breaker, now_ms: u64, success: bool) -> Option<Transition> {
        let t = ticket(b, now_ms);
        b.record(t, now_ms, success, &S)
    }

    fn opened(b: &mut Breaker) {
        for t in 0..3 {
            call(b, t, false);
        }
        assert!(b.is_open());
    }

    #[test]
    fn opens_after_failures_within_the_window() {
        let mut b = Breaker::default();
        assert_eq!(call(&mut b, 0, false), None);
        assert_eq!(call(&mut b, 100, false), None);
        assert_eq!(call(&mut b, 1050, false), None, "the first failure left the window");
        assert_eq!(call(&mut b, 1060, false), Some(Transition::Opened));
        assert_eq!(b.admit(1400), (Admit::Refuse, None));
        // A failure exactly one window old is still in it.
        let mut b = Breaker::default();
        assert_eq!(call(&mut b, 0, false), None);
        assert_eq!(call(&mut b, 500, false), None);
        assert_eq!(call(&mut b, 1000, false), Some(Transition::Opened));
    }

    #[test]
    fn probes_after_the_cooldown() {
        let mut b = Breaker::default();
        opened(&mut b);
        assert_eq!(b.admit(501), (Admit::Refuse, None));
        let (admit, transition) = b.admit(502);
        assert!(matches!(admit, Admit::Probe(_)));
        assert_eq!(transition, Some(Transition::HalfOpened));
        assert_eq!(b.admit(503), (Admit::Refuse, None), "one probe at a time");
        let Admit::Probe(probe) = admit else { unreachable!() };
        assert_eq!(b.record(probe, 510, false, &S), Some(Transition::Reopened));
        assert_eq!(b.admit(600), (Admit::Refuse, None));
        let probe = ticket(&mut b, 1011);
        assert_eq!(b.record(probe, 1020, true, &S), Some(Transition::Closed));
        assert!(matches!(b.admit(1030), (Admit::Call(_), None)));
        assert_eq!(call(&mut b, 1040, false), None, "failures count afresh");
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let mut b = Breaker::default();
        opened(&mut b);
        let abandoned = ticket(&mut b, 600);
        b.abandon_probe();
        assert_eq!(b.record(abandoned, 600, true, &S), None, "given up: its outcome is ignored");
        let (admit, transition) = b.admit(601);
        assert_eq!(transition, Some(Transition::HalfOpened));
        let Admit::Probe(probe) = admit else { panic!("{admit:?}") };
        // The abandoned probe's late outcome is not the new probe's.
        assert_eq!(b.record(abandoned, 602, true, &S), None);
        assert_eq!(b.record(abandoned, 602, false, &S), None);
        assert!(b.is_open());
        assert_eq!(b.record(probe, 603, true, &S), Some(Transition::Closed));
    }

    #[test]
    fn successes_keep_it_closed() {
        let mut b = Breaker::default();
        for t in 0..100 {
            assert_eq!(call(&mut b, t, true), None);
        }
        assert!(!b.is_open());
    }

    #[test]
    fn a_late_success_from_before_opening_does_not_close() {
        let mut b = Breaker::default();
        let early = ticket(&mut b, 0);
        opened(&mut b);
        assert_eq!(b.record(early, 10, true, &S), None, "while open");
        let probe = ticket(&mut b, 600);
        assert_eq!(b.record(early, 610, true, &S), None, "while probing");
        assert!(b.is_open());
        assert_eq!(b.record(probe, 620, true, &S), Some(Transition::Closed));
    }

    #[test]
    fn a_late_failure_from_before_opening_does_not_reopen_or_extend() {
        let mut b = Breaker::default();
        let early: Vec<Ticket> = (0..5).map(|t| ticket(&mut b, t)).collect();
        opened(&mut b);
        for &t in &early {
            assert_eq!(b.record(t, 400, false, &S), None, "while open");
        }
        // Opened at 2 with a 500 ms cooldown: the late failures did not extend it.
        let probe = ticket(&mut b, 502);
        for &t in &early {
            assert_eq!(b.record(t, 505, false, &S), None, "while probing");
        }
        assert_eq!(b.record(probe, 510, true, &S), Some(Transition::Closed));
        for &t in &early {
            assert_eq!(b.record(t, 520, false, &S), None, "after closing");
        }
        assert_eq!(call(&mut b, 530, false), None);
        assert_eq!(call(&mut b, 531, false), None);
        assert_eq!(
            call(&mut b, 532, false),
            Some(Transition::Opened),
            "only failures admitted since closing count"
        );
    }

    #[test]
    fn calls_admitted_after_closing_count() {
        let mut b = Breaker::default();
        opened(&mut b);
        let probe = ticket(&mut b, 600);
        b.record(probe, 600, true, &S);
        let tickets: Vec<Ticket> = (0..3).map(|t| ticket(&mut b, 601 + t)).collect();
        assert_eq!(b.record(tickets[0], 700, false, &S), None);
        assert_eq!(b.record(tickets[1], 700, false, &S), None);
        assert_eq!(b.record(tickets[2], 700, false, &S), Some(Transition::Opened));
    }
}
