//! What the nginx side needs to remember Esper's non-allow decisions per
//! entity in shared memory and replay them without a call: the entity's key,
//! how long an entry lives, and the gate that holds calls back after a 429.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::answer::contract;

/// Esper's default entity (client IP and user agent) as a fixed-size key:
/// the first 16 bytes of SHA-256 over the length-prefixed fields. No secret
/// goes in, so every worker process computes the same key; 128 bits keep
/// accidental collisions out of reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKey([u8; EntityKey::LEN]);

impl EntityKey {
    pub const LEN: usize = 16;

    pub fn new(client_ip: &[u8], user_agent: &[u8]) -> EntityKey {
        let mut hash = Sha256::new();
        // Lengths make the fields unambiguous: ("ab", "c") is not ("a", "bc").
        for field in [client_ip, user_agent] {
            hash.update((field.len() as u64).to_be_bytes());
            hash.update(field);
        }
        let mut key = [0; EntityKey::LEN];
        key.copy_from_slice(&hash.finalize()[..EntityKey::LEN]);
        EntityKey(key)
    }

    pub fn as_bytes(&self) -> &[u8; EntityKey::LEN] {
        &self.0
    }

    /// A key as stored in a table.
    pub fn from_bytes(bytes: [u8; EntityKey::LEN]) -> EntityKey {
        EntityKey(bytes)
    }
}

/// How long a remembered decision lives: Esper's lifetime when it gives one,
/// never longer than the configured `ttl`. `None`: not remembered at all, as
/// a decision whose lifetime is zero or already over holds for its own
/// request only.
pub fn entry_lifetime(decision_lifetime: Option<Duration>, ttl: Duration) -> Option<Duration> {
    let lifetime = decision_lifetime.map_or(ttl, |lifetime| lifetime.min(ttl));
    (!lifetime.is_zero()).then_some(lifetime)
}

/// Which request a remembered challenge was made for: a digest of the
/// `return_url` its decision call sent, which Esper keeps on the challenge
/// session. A challenge is replayed only to a request with the same return
/// URL, so that no visitor is ever sent back to another request's host or
/// path after solving it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReturnScope([u8; ReturnScope::LEN]);

impl ReturnScope {
    pub const LEN: usize = 8;

    pub fn of(return_url: &[u8]) -> ReturnScope {
        let mut scope = [0; ReturnScope::LEN];
        scope.copy_from_slice(&Sha256::digest(return_url)[..ReturnScope::LEN]);
        ReturnScope(scope)
    }

    pub fn as_bytes(&self) -> &[u8; ReturnScope::LEN] {
        &self.0
    }

    /// A scope as stored in a table.
    pub fn from_bytes(bytes: [u8; ReturnScope::LEN]) -> ReturnScope {
        ReturnScope(bytes)
    }
}

/// After a 429, entities with nothing remembered get the failure action
/// without a call until the gate opens again.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetryGate {
    /// Milliseconds on the caller's clock; 0 is "never closed".
    closed_until_ms: u64,
}

impl RetryGate {
    /// A 429 arrived at `now_ms` with this `Retry-After` (none:
    /// [`contract::DEFAULT_RETRY_AFTER`]; at most
    /// [`contract::MAX_RETRY_AFTER`]). The later deadline wins: answers to
    /// concurrent calls arrive in any order.
    pub fn note(&mut self, now_ms: u64, retry_after: Option<Duration>) {
        let wait =
            retry_after.unwrap_or(contract::DEFAULT_RETRY_AFTER).min(contract::MAX_RETRY_AFTER);
        let until = now_ms.saturating_add(wait.as_millis() as u64);
        self.closed_until_ms = self.closed_until_ms.max(until);
    }

    /// When calls may go to Esper again, in the caller's milliseconds.
    pub fn closed_until(&self) -> u64 {
        self.closed_until_ms
    }

    pub fn is_closed(&self, now_ms: u64) -> bool {
        now_ms < self.closed_until_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_keys_are_stable_and_unambiguous() {
        let key = EntityKey::new(b"203.0.113.7", b"Mozilla/5.0");
        assert_eq!(key, EntityKey::new(b"203.0.113.7", b"Mozilla/5.0"));
        // SHA-256 of be64(11) "203.0.113.7" be64(11) "Mozilla/5.0", first 16
        // bytes: the same in every process and every build.
        let mut input = Vec::new();
        input.extend_from_slice(&11u64.to_be_bytes());
        input.extend_from_slice(b"203.0.113.7");
        input.extend_from_slice(&11u64.to_be_bytes());
        input.extend_from_slice(b"Mozilla/5.0");
        assert_eq!(key.as_bytes()[..], Sha256::digest(&input)[..16]);
        assert_ne!(EntityKey::new(b"ab", b"c"), EntityKey::new(b"a", b"bc"));
        assert_ne!(EntityKey::new(b"", b"x"), EntityKey::new(b"x", b""));
        assert_ne!(key, EntityKey::new(b"203.0.113.8", b"Mozilla/5.0"));
        assert_ne!(key, EntityKey::new(b"203.0.113.7", b"Mozilla/5.1"));
    }

    #[test]
    fn entries_live_as_long_as_esper_says_up_to_the_ttl() {
        let ttl = Duration::from_secs(300);
        assert_eq!(entry_lifetime(None, ttl), Some(ttl));
        assert_eq!(
            entry_lifetime(Some(Duration::from_secs(30)), ttl),
            Some(Duration::from_secs(30))
        );
        assert_eq!(entry_lifetime(Some(Duration::from_secs(3600)), ttl), Some(ttl));
    }

    #[test]
    fn a_lifetime_that_is_over_is_never_remembered() {
        let ttl = Duration::from_secs(300);
        assert_eq!(entry_lifetime(Some(Duration::ZERO), ttl), None);
        assert_eq!(
            entry_lifetime(Some(Duration::from_millis(999)), ttl),
            Some(Duration::from_millis(999))
        );
    }

    #[test]
    fn return_scopes_tell_requests_apart() {
        let account = ReturnScope::of(b"https://shop.example/account");
        assert_eq!(account, ReturnScope::of(b"https://shop.example/account"));
        assert_ne!(account, ReturnScope::of(b"http://evil.example/login"));
        assert_ne!(account, ReturnScope::of(b"https://shop.example/account?x=1"));
        assert_eq!(ReturnScope::from_bytes(*account.as_bytes()), account);
    }

    #[test]
    fn the_gate_closes_for_retry_after() {
        let mut gate = RetryGate::default();
        assert!(!gate.is_closed(0));
        gate.note(10_000, Some(Duration::from_secs(5)));
        assert_eq!(gate.closed_until(), 15_000);
        assert!(gate.is_closed(14_999));
        assert!(!gate.is_closed(15_000));
    }

    #[test]
    fn the_gate_closes_briefly_without_retry_after_and_never_for_long() {
        let mut gate = RetryGate::default();
        gate.note(10_000, None);
        assert_eq!(gate.closed_until(), 11_000);
        let mut gate = RetryGate::default();
        gate.note(10_000, Some(Duration::from_secs(3600)));
        assert_eq!(gate.closed_until(), 70_000);
        let mut gate = RetryGate::default();
        gate.note(10_000, Some(Duration::ZERO));
        assert!(!gate.is_closed(10_000), "Retry-After: 0 does not close");
    }

    #[test]
    fn the_later_deadline_wins() {
        let mut gate = RetryGate::default();
        gate.note(10_000, Some(Duration::from_secs(10)));
        gate.note(11_000, Some(Duration::from_secs(1)));
        assert_eq!(gate.closed_until(), 20_000);
        gate.note(19_000, Some(Duration::from_secs(5)));
        assert_eq!(gate.closed_until(), 24_000);
    }
}
