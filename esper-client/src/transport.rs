//! What the connection modules (`origin`, `h1`, `h2`, `connect`, `resolve`)
//! share: the request body type, a hyper error as a call's failure, the
//! age after which a connection takes no new call, and a lock that
//! survives poisoning. Runs on the worker's runtime thread.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use esper_protocol::Failure;
use http_body_util::Full;

/// A connection takes no new call once it is this old (its calls in flight
/// finish): connections follow a change of Esper's addresses, and a load
/// balancer in front of Esper gets to spread them anew.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);

/// The body of a call: its JSON payload, sent in one piece.
pub type Body = Full<Bytes>;

/// The data behind `mutex`, also after a panic elsewhere left it poisoned
/// (the data stays consistent: every change is one push, pop or drain).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The reason of a transport error, down to its root cause.
pub fn failure(error: hyper::Error) -> Failure {
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reason = format!("{reason}: {cause}");
        source = cause.source();
    }
    Failure::Transport(reason)
}
