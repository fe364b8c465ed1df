//! What every nginx-facing file needs: nginx strings over Rust bytes, the
//! page size and the cached clock.

use ngx::ffi::ngx_str_t;

/// An nginx string that points at `value` without a copy, for nginx calls
/// that only read it or for values that live as long as it is used (static
/// text, pool memory, a configuration's own strings).
pub fn borrowed_str(value: &[u8]) -> ngx_str_t {
    ngx_str_t { len: value.len(), data: value.as_ptr().cast_mut() }
}

/// nginx's memory page size, set at startup.
pub fn page_size() -> usize {
    // SAFETY: a plain read of a value nginx sets once, before any module code runs.
    unsafe { ngx::ffi::ngx_pagesize }
}

/// nginx's cached monotonic clock in milliseconds: the same clock in every
/// process of the machine, updated once per event-loop turn.
pub fn now_ms() -> u64 {
    // SAFETY: a plain read of nginx's clock, on the nginx thread that updates it.
    unsafe { ngx::ffi::ngx_current_msec as u64 }
}
