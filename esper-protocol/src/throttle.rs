//! Rate limiting for error-log lines: a dead Esper at 10,000 requests/s must
//! not write 10,000 lines/s. Each kind of line gets a budget per second; what
//! is left out is counted and reported with the next line that gets through.

/// Lines of one kind let through per second.
pub const LINES_PER_SECOND: u32 = 10;

/// The budget of one kind of log line.
#[derive(Debug)]
pub struct LogThrottle {
    budget: u32,
    second: u64,
    written: u32,
    suppressed: u64,
}

impl Default for LogThrottle {
    fn default() -> Self {
        LogThrottle::per_second(LINES_PER_SECOND)
    }
}

impl LogThrottle {
    /// A budget of `lines` a second.
    pub const fn per_second(lines: u32) -> Self {
        LogThrottle { budget: lines, second: 0, written: 0, suppressed: 0 }
    }

    /// Whether a line may be written at `now` (seconds). `Some(n)`: write it,
    /// and say that `n` similar lines were left out since the last one.
    pub fn admit(&mut self, now: u64) -> Option<u64> {
        if now != self.second {
            self.second = now;
            self.written = 0;
        }
        if self.written >= self.budget {
            self.suppressed += 1;
            return None;
        }
        self.written += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_of_one() {
        let mut t = LogThrottle::per_second(1);
        assert_eq!(t.admit(5), Some(0));
        assert_eq!(t.admit(5), None);
        assert_eq!(t.admit(5), None);
        assert_eq!(t.admit(6), Some(2));
    }

    #[test]
    fn budget_per_second_and_count_of_what_was_left_out() {
        let mut t = LogThrottle::default();
        for _ in 0..LINES_PER_SECOND {
            assert_eq!(t.admit(100), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(t.admit(100), None);
        }
        assert_eq!(t.admit(101), Some(1000));
        assert_eq!(t.admit(101), Some(0));
    }
}
