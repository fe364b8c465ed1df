//! What every nginx-facing file needs: nginx strings as bytes, the page size
//! and the cached clock.

use ngx::ffi::ngx_str_t;

/// The bytes of an nginx string; empty for a null pointer.
pub fn bytes(s: &ngx_str_t) -> &[u8] {
    if s.data.is_null() || s.len == 0 {
        return &[];
    }
    // SAFETY: a non-null ngx_str_t points at `len` readable bytes that live at
    // least as long as the structure holding it.
    unsafe { std::slice::from_raw_parts(s.data, s.len) }
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
