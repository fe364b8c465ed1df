//! When a call is sent again: only when an attempt proves that Esper never
//! processed it, and then to another connection, up to [`MAX_ATTEMPTS`]
//! attempts in all (each within the call's own deadline, which bounds them
//! all). Proofs, RFC 9113 section 8.7 and hyper's own reports:
//!
//! - the request came back unwritten (hyper returns the message);
//! - HTTP/2: the stream was above the last stream id of Esper's GOAWAY, or
//!   opened after it; Esper refused it (REFUSED_STREAM); or it was still
//!   waiting for a stream under the server's limit when the connection
//!   ended (hyper's "dispatch task is gone");
//! - HTTP/1.1: a kept-alive connection that Esper closed as the request was
//!   written to it, with no answer begun (the keep-alive close race: a
//!   server closes only a connection it holds idle; the call's
//!   `idempotency_key` makes a resend safe should it have been read);
//! - the connection failed to open: nothing of the call was written.
//!
//! A connection that turned out to speak the other HTTP version (the
//! server's ALPN choice) had nothing sent either; that costs no attempt.
//! A call's earlier attempts never count against the circuit breaker: only
//! the call's end does.

use esper_protocol::Failure;
use hyper::client::conn::TrySendError;
use hyper::Request;

use crate::origin::RawResponse;
use crate::transport::{self, Body};

/// Attempts of one call, when all but the last proved it unsent.
pub const MAX_ATTEMPTS: usize = 3;
/// Times one call may follow the server's change of HTTP version.
pub const MAX_SWITCHES: usize = 2;

/// How one attempt of a call ended.
pub enum Attempt {
    /// An answer, or a failure that may have reached Esper: the call's end.
    Done(Result<RawResponse, Failure>),
    /// Esper never processed it: it may go to another connection.
    Unsent(Failure),
    /// The connection speaks the other HTTP version: nothing was sent.
    Switched(Failure),
}

/// Why a connection being opened is not there for its calls.
#[derive(Clone)]
pub struct NotOpened {
    pub failure: Failure,
    pub switched: bool,
}

impl NotOpened {
    pub fn failed(failure: Failure) -> NotOpened {
        NotOpened { failure, switched: false }
    }

    pub fn switched(reason: &str) -> NotOpened {
        NotOpened { failure: Failure::Transport(reason.to_owned()), switched: true }
    }
}

impl From<NotOpened> for Attempt {
    fn from(not: NotOpened) -> Attempt {
        if not.switched {
            Attempt::Switched(not.failure)
        } else {
            Attempt::Unsent(not.failure)
        }
    }
}

/// Which connection a request failed on.
#[derive(Clone, Copy)]
pub enum Sent {
    Http1 { reused: bool },
    Http2,
}

/// A failed send, as an attempt: unsent when one of the proofs above holds.
pub fn failed_send(mut error: TrySendError<Request<Body>>, on: Sent) -> Attempt {
    let unwritten = error.take_message().is_some();
    let error = error.into_error();
    let unsent = unwritten
        || match on {
            Sent::Http2 => left_unprocessed(&error),
            Sent::Http1 { reused } => reused && closed_unanswered(&error),
        };
    let failure = transport::failure(error);
    if unsent {
        Attempt::Unsent(failure)
    } else {
        Attempt::Done(Err(failure))
    }
}

/// Whether a failed HTTP/2 request's connection takes no more calls: Esper
/// is closing it, or it ended.
pub fn connection_ending(error: &TrySendError<Request<Body>>) -> bool {
    error.message().is_some() || went_away(error.error()) || dispatch_gone(error.error())
}

/// The HTTP/2 error under a hyper error, if any.
fn h2_error(error: &hyper::Error) -> Option<&::h2::Error> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<::h2::Error>() {
            return Some(h2);
        }
        source = cause.source();
    }
    None
}

/// Whether Esper's GOAWAY ended the stream: it was above the last stream id
/// Esper said it would process, or opened after the GOAWAY.
fn went_away(error: &hyper::Error) -> bool {
    h2_error(error).is_some_and(|h2| h2.is_go_away() && h2.is_remote())
}

/// hyper dropped the request without an answer: on HTTP/2, one still
/// waiting for a stream when its connection ended (requests already on the
/// wire get the connection's own error).
fn dispatch_gone(error: &hyper::Error) -> bool {
    error.is_user() && h2_error(error).is_none()
}

/// Whether an HTTP/2 error proves that Esper did not process the stream.
/// A stream reset for another reason, or a connection that failed, may
/// have been processed.
fn left_unprocessed(error: &hyper::Error) -> bool {
    let refused = |h2: &::h2::Error| {
        h2.is_remote() && h2.is_reset() && h2.reason() == Some(::h2::Reason::REFUSED_STREAM)
    };
    went_away(error) || dispatch_gone(error) || h2_error(error).is_some_and(refused)
}

/// Whether an HTTP/1.1 connection closed under the request before any
/// answer: the end of the stream, or a reset or broken pipe.
fn closed_unanswered(error: &hyper::Error) -> bool {
    use std::io::ErrorKind;
    if error.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof
            );
        }
        source = cause.source();
    }
    false
}
