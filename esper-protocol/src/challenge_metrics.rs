//! The counters of the challenge loop, beside those of `metrics`: proof
//! verifications by outcome and pass cookies issued, in Prometheus' text
//! format.

use std::fmt::Write;

use crate::{Failure, ProofCheck};

/// `esper_proof_verifications_total{outcome=...}`: `verified` (a pass
/// follows unless the enforcement zone holds a block), `refused` (Esper read
/// the proof and did not say valid), `failed` (no usable answer: timeout,
/// transport, status, body; `esper_errors_total` says which).
pub const PROOF_OUTCOMES: [&str; 3] = ["verified", "refused", "failed"];

/// The `outcome` label of a proof verification's answer.
pub fn proof_outcome_index(check: &Result<ProofCheck, Failure>) -> usize {
    match check {
        Ok(ProofCheck::Verified { .. }) => 0,
        Ok(ProofCheck::Refused) => 1,
        Err(_) => 2,
    }
}

/// A reading of these counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChallengeSnapshot {
    pub proofs: [u64; PROOF_OUTCOMES.len()],
    pub passes_issued: u64,
}

pub fn render(s: &ChallengeSnapshot) -> String {
    let mut out = String::with_capacity(512);
    let _ = writeln!(
        out,
        "# HELP esper_proof_verifications_total Challenge proofs verified with Esper, by outcome.\n\
         # TYPE esper_proof_verifications_total counter"
    );
    for (outcome, count) in PROOF_OUTCOMES.iter().zip(s.proofs) {
        let _ = writeln!(out, "esper_proof_verifications_total{{outcome=\"{outcome}\"}} {count}");
    }
    let _ = writeln!(
        out,
        "# HELP esper_pass_cookies_issued_total Pass cookies issued after a verified proof.\n\
         # TYPE esper_pass_cookies_issued_total counter\n\
         esper_pass_cookies_issued_total {}",
        s.passes_issued
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        let verified = Ok(ProofCheck::Verified { lifetime: None });
        assert_eq!(PROOF_OUTCOMES[proof_outcome_index(&verified)], "verified");
        assert_eq!(PROOF_OUTCOMES[proof_outcome_index(&Ok(ProofCheck::Refused))], "refused");
        assert_eq!(PROOF_OUTCOMES[proof_outcome_index(&Err(Failure::Timeout))], "failed");
        assert_eq!(PROOF_OUTCOMES[proof_outcome_index(&Err(Failure::CircuitOpen))], "failed");
    }

    #[test]
    fn renders_both_families() {
        let text = render(&ChallengeSnapshot { proofs: [3, 2, 1], passes_issued: 3 });
        assert_eq!(
            text,
            "# HELP esper_proof_verifications_total Challenge proofs verified with Esper, by outcome.\n\
             # TYPE esper_proof_verifications_total counter\n\
             esper_proof_verifications_total{outcome=\"verified\"} 3\n\
             esper_proof_verifications_total{outcome=\"refused\"} 2\n\
             esper_proof_verifications_total{outcome=\"failed\"} 1\n\
             # HELP esper_pass_cookies_issued_total Pass cookies issued after a verified proof.\n\
             # TYPE esper_pass_cookies_issued_total counter\n\
             esper_pass_cookies_issued_total 3\n"
        );
    }
}
