//! Small helpers shared by the files that talk to nginx directly.

use std::panic::{catch_unwind, AssertUnwindSafe};

use ngx::ffi::{
    ngx_list_part_t, ngx_list_push, ngx_list_t, ngx_log_t, ngx_palloc, ngx_pool_t, ngx_str_t,
    ngx_table_elt_t, NGX_LOG_ALERT,
};

/// Runs an `extern "C"` body so that a panic never unwinds into nginx: it is
/// logged and `fallback` is returned instead.
pub fn guard<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            // SAFETY: ngx_cycle is set for the whole life of an nginx process.
            let log = unsafe { (*ngx::ffi::ngx_cycle).log };
            log_error(
                NGX_LOG_ALERT,
                log,
                &format!("esper: internal error: {what}"),
            );
            fallback
        }
    }
}

/// Writes one line to an nginx log at `level` (an `NGX_LOG_*` value).
pub fn log_error(level: u32, log: *mut ngx_log_t, message: &str) {
    if log.is_null() {
        return;
    }
    ngx::ngx_log_error!(level, log, "{}", message);
}

/// The bytes of an nginx string; empty for a null pointer.
pub fn bytes(s: &ngx_str_t) -> &[u8] {
    if s.data.is_null() || s.len == 0 {
        return &[];
    }
    // SAFETY: a non-null ngx_str_t points at `len` readable bytes that live at
    // least as long as the structure holding it.
    unsafe { std::slice::from_raw_parts(s.data, s.len) }
}

/// Appends a header to an nginx header list, copying name and value into `pool`.
///
/// # Safety
/// `list` must be a header list of a live request and `pool` that request's pool.
pub unsafe fn push_header(
    list: *mut ngx::ffi::ngx_list_t,
    pool: *mut ngx_pool_t,
    name: &str,
    value: &[u8],
) -> Option<*mut ngx_table_elt_t> {
    // SAFETY: the caller guarantees a live list and pool.
    unsafe {
        let h: *mut ngx_table_elt_t = ngx_list_push(list).cast();
        ngx::ffi::add_to_ngx_table(h, pool, name, value)?;
        (*h).next = std::ptr::null_mut();
        Some(h)
    }
}

/// Removes from a header list every header whose name `matches`.
///
/// Elements never move, because other fields of the request point at them: a
/// removed element is cut out of its list part, splitting the part in two when
/// needed. When the last part changed, a fresh empty last part is added, so
/// `ngx_list_push` keeps writing within an allocation of its own.
///
/// # Safety
/// `list` must be a header list of a live request and `pool` that request's pool.
pub unsafe fn remove_headers(list: *mut ngx_list_t, pool: *mut ngx_pool_t, matches: impl Fn(&[u8]) -> bool) -> Option<()> {
    // SAFETY: per the function contract; every part pointer comes from the list.
    unsafe {
        let mut last_changed = false;
        let mut part: *mut ngx_list_part_t = &mut (*list).part;
        while !part.is_null() {
            let elts = (*part).elts.cast::<ngx_table_elt_t>();
            let Some(i) = (0..(*part).nelts).find(|&i| matches(bytes(&(*elts.add(i)).key))) else {
                part = (*part).next;
                continue;
            };
            last_changed |= part == (*list).last;
            let tail = (*part).nelts - i - 1;
            if i == 0 {
                (*part).elts = elts.add(1).cast();
                (*part).nelts = tail;
            } else {
                let rest: *mut ngx_list_part_t = ngx_palloc(pool, size_of::<ngx_list_part_t>()).cast();
                if rest.is_null() {
                    return None;
                }
                (*rest).elts = elts.add(i + 1).cast();
                (*rest).nelts = tail;
                (*rest).next = (*part).next;
                (*part).nelts = i;
                (*part).next = rest;
                if (*list).last == part {
                    (*list).last = rest;
                }
                part = rest;
            }
            // Look again at what remains of this part.
        }
        if last_changed {
            let fresh: *mut ngx_list_part_t = ngx_palloc(pool, size_of::<ngx_list_part_t>()).cast();
            let elts = ngx_palloc(pool, (*list).nalloc * (*list).size);
            if fresh.is_null() || elts.is_null() {
                return None;
            }
            (*fresh).elts = elts;
            (*fresh).nelts = 0;
            (*fresh).next = std::ptr::null_mut();
            (*(*list).last).next = fresh;
            (*list).last = fresh;
        }
        Some(())
    }
}
