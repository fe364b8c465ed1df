//! A panic kept to the call that caused it. The module's runtime thread
//! runs every call to Esper under [`catching`] (`src/runtime.rs`,
//! `src/worker.rs`): a call that panics ends with a failure that names the
//! panic, which its request logs, and the thread and its other calls go on.
//! It lives here, with no nginx in sight, so that it is unit-tested.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::task::Poll;

/// Runs `future`; a panic while it is polled ends it with the panic's
/// message instead of unwinding through the runtime.
pub async fn catching<F: Future>(future: F) -> Result<F::Output, String> {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
        Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(panic) => Poll::Ready(Err(panic_reason(&*panic))),
    })
    .await
}

/// What a panic said, as `panic!` was given it; "panic" for any other payload.
pub fn panic_reason(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Waker};

    /// Polls `future` until it is ready (every future here is ready within
    /// a few polls and needs no waker).
    fn run<F: Future>(future: F) -> F::Output {
        let mut future = pin!(future);
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..10 {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
        }
        panic!("not ready after 10 polls");
    }

    /// Pending once, then ready: like a call waiting for its answer.
    async fn yield_once() {
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await
    }

    #[test]
    fn a_future_that_ends_gives_its_output() {
        assert_eq!(run(catching(async { 7 })), Ok(7));
        assert_eq!(
            run(catching(async {
                yield_once().await;
                "answered"
            })),
            Ok("answered")
        );
    }

    #[test]
    fn a_panic_is_the_failure_and_names_its_reason() {
        // A formatted message (a String), after the future was pending once.
        let failed = run(catching(async {
            yield_once().await;
            let n = 3;
            if n == 3 {
                panic!("stream {n} went away");
            }
        }));
        assert_eq!(failed, Err("stream 3 went away".to_owned()));
        // A literal message (a &str).
        assert_eq!(run(catching(async { panic!("plain") })), Err::<(), _>("plain".to_owned()));
        // A payload that is not a message still ends the call, as "panic".
        let other = run(catching(async { std::panic::panic_any(42_u8) }));
        assert_eq!(other, Err::<(), _>("panic".to_owned()));
    }
}
