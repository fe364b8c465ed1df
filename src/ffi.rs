//! The one conversion every nginx-facing file needs.

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
