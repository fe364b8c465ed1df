//! Logging from the module, and the guard that keeps a panic from unwinding
//! into nginx.

use std::panic::{catch_unwind, AssertUnwindSafe};

use esper_protocol::unwind::panic_reason;
use ngx::ffi::{ngx_log_t, NGX_LOG_ALERT};

/// A `NGX_LOG_DEBUG_HTTP` line on the connection log of request `$r` (an
/// `ngx::http::Request`), formatted only when the log wants it and compiled
/// in only for an nginx built `--with-debug`.
macro_rules! debug {
    ($r:expr, $($arg:tt)+) => {
        let log = ngx::http::Request::log($r);
        ngx::ngx_log_debug_mask!(DebugMask::Http, log, $($arg)+);
    };
}
pub(crate) use debug;

/// A `NGX_LOG_DEBUG_HTTP` line on `$log` (a `*mut ngx_log_t`), as `debug!`.
macro_rules! debug_log {
    ($log:expr, $($arg:tt)+) => {
        let log = $log;
        ngx::ngx_log_debug_mask!(DebugMask::Http, log, $($arg)+);
    };
}
pub(crate) use debug_log;

/// Runs an `extern "C"` body so that a panic never unwinds into nginx: it is
/// logged and `fallback` is returned instead.
pub fn guard<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(panic) => {
            let what = panic_reason(&*panic);
            log_error(NGX_LOG_ALERT, cycle_log(), &format!("esper: internal error: {what}"));
            fallback
        }
    }
}

/// The log of the cycle this process runs (its `error_log`).
pub fn cycle_log() -> *mut ngx_log_t {
    ngx::log::ngx_cycle_log().as_ptr()
}

/// Writes one line to an nginx log at `level` (an `NGX_LOG_*` value).
pub fn log_error(level: u32, log: *mut ngx_log_t, message: &str) {
    if log.is_null() {
        return;
    }
    ngx::ngx_log_error!(level, log, "{}", message);
}
