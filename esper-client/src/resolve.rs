//! The addresses of Esper's host name: the system's resolver (getaddrinfo,
//! so `/etc/hosts`, `nsswitch.conf` and `resolv.conf` apply exactly as for
//! nginx itself), behind a cache with a bounded lifetime.
//!
//! One lookup at a time per origin runs on tokio's blocking pool, in a task
//! of its own, and is given up after [`LOOKUP_TIMEOUT`]. Only the first
//! lookup is waited for: once addresses are known, calls use them while a
//! lookup refreshes them, so a slow or dead resolver never holds a call.
//! The addresses are looked up again once they are [`LIFETIME`] old, so a
//! changed address is followed without a reload; when that lookup fails,
//! the old addresses are used until the next one, [`RETRY_FAILED`] later.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use esper_protocol::Failure;
use tokio::sync::watch;

use crate::transport::lock;

/// How long looked-up addresses are used before they are looked up again
/// (getaddrinfo gives no TTL).
const LIFETIME: Duration = Duration::from_secs(30);
/// How soon a failed lookup is tried again.
const RETRY_FAILED: Duration = Duration::from_secs(2);
/// A lookup that has not ended by then counts as failed (getaddrinfo has
/// no deadline of its own; its thread is left to finish).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Resolver {
    name: String,
    port: u16,
    state: Mutex<State>,
    /// Bumped each time a lookup ends.
    looked_up: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    addresses: Option<Arc<[SocketAddr]>>,
    /// When the addresses (or the last failure) stop being current.
    until: Option<Instant>,
    failure: Option<String>,
    looking_up: bool,
}

impl Resolver {
    pub fn new(name: String, port: u16) -> Arc<Resolver> {
        Arc::new(Resolver { name, port, state: Mutex::default(), looked_up: watch::channel(0).0 })
    }

    /// The current addresses of the name, in the resolver's order.
    pub async fn addresses(self: &Arc<Self>) -> Result<Arc<[SocketAddr]>, Failure> {
        let mut changed = self.looked_up.subscribe();
        {
            let mut state = lock(&self.state);
            let current = state.until.is_some_and(|until| Instant::now() < until);
            if current {
                if let Some(addresses) = &state.addresses {
                    return Ok(addresses.clone());
                }
                if let Some(failure) = &state.failure {
                    return Err(resolve_failure(&self.name, failure));
                }
            }
            if !state.looking_up {
                state.looking_up = true;
                tokio::spawn(self.clone().look_up());
            }
            // Stale addresses serve while the lookup refreshes them.
            if let Some(addresses) = &state.addresses {
                return Ok(addresses.clone());
            }
        }
        // The lookup task always bumps the counter once it ends.
        let _ = changed.changed().await;
        let state = lock(&self.state);
        match (&state.addresses, &state.failure) {
            (Some(addresses), _) => Ok(addresses.clone()),
            (None, Some(failure)) => Err(resolve_failure(&self.name, failure)),
            (None, None) => Err(resolve_failure(&self.name, "no address")),
        }
    }

    async fn look_up(self: Arc<Self>) {
        let _ended = LookupEnded(self.clone());
        let lookup = tokio::net::lookup_host((self.name.as_str(), self.port));
        let found = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Ok(found) => found.map(|found| found.collect::<Vec<_>>()),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", LOOKUP_TIMEOUT.as_secs()),
            )),
        };
        {
            let mut state = lock(&self.state);
            match found {
                Ok(found) if !found.is_empty() => {
                    state.addresses = Some(found.into());
                    state.failure = None;
                    state.until = Some(Instant::now() + LIFETIME);
                }
                Ok(_) => {
                    state.failure = Some("no address".to_owned());
                    state.until = Some(Instant::now() + RETRY_FAILED);
                }
                Err(e) => {
                    state.failure = Some(e.to_string());
                    state.until = Some(Instant::now() + RETRY_FAILED);
                }
            }
        }
    }
}

/// Ends a lookup, also one whose task panicked: the next call may start
/// another, and the calls waiting for this one are woken.
struct LookupEnded(Arc<Resolver>);

impl Drop for LookupEnded {
    fn drop(&mut self) {
        lock(&self.0.state).looking_up = false;
        self.0.looked_up.send_modify(|n| *n += 1);
    }
}

fn resolve_failure(name: &str, reason: &str) -> Failure {
    Failure::Transport(format!("resolve {name}: {reason}"))
}
