//! Header-list helpers: adding a header, and taking headers out while the
//! request's other pointers into the list stay valid.

use ngx::ffi::{
    ngx_hash_strlow, ngx_list_part_t, ngx_list_push, ngx_palloc, ngx_pnalloc, ngx_str_t,
    ngx_table_elt_t,
};
use ngx::http::Request;

use crate::ffi::borrowed_str;

/// Request headers that only Esper and this module may set.
pub const HYBRID_KEY_HEADER: &str = "X-Esper-Hybrid-Key";
pub const DECISION_ID_HEADER: &str = "X-Esper-Decision-ID";
pub const ESPER_REQUEST_HEADERS: [&str; 2] = [HYBRID_KEY_HEADER, DECISION_ID_HEADER];

/// Which of a request's header lists.
#[derive(Clone, Copy)]
enum List {
    /// What the request carries on to the application.
    In,
    /// The response's.
    Out,
}

/// Adds a header to what the request carries on to the application.
pub fn add_header_in(request: &mut Request, name: &'static str, value: &[u8]) -> Option<()> {
    let value = pool_copy(request, value)?;
    push_header(request, List::In, name, value).map(|_| ())
}

/// The same for a value nginx made in the request pool (an evaluated
/// directive), which is kept without a copy.
pub fn add_pooled_header_in(
    request: &mut Request,
    name: &'static str,
    value: ngx_str_t,
) -> Option<()> {
    push_header(request, List::In, name, value).map(|_| ())
}

/// Adds a header to the response.
pub fn add_header_out(request: &mut Request, name: &'static str, value: &[u8]) -> Option<()> {
    let value = pool_copy(request, value)?;
    push_header(request, List::Out, name, value).map(|_| ())
}

/// Sets the response's `Location`.
pub fn set_location(request: &mut Request, value: &[u8]) -> Option<()> {
    let value = pool_copy(request, value)?;
    let h = push_header(request, List::Out, "Location", value)?;
    request.as_mut().headers_out.location = h;
    Some(())
}

/// `value` copied into the request pool, which frees it with the request.
pub fn pool_copy(request: &Request, value: &[u8]) -> Option<ngx_str_t> {
    // SAFETY: the live request's own pool.
    unsafe { ngx_str_t::from_bytes(request.as_ref().pool, value) }
}

/// Appends a header to one of the request's lists. The name is static text,
/// as nginx's own modules set names (nginx never writes through a header's
/// key); the value lives in the request pool. Everything that can fail
/// happens before the element joins the list, so readers of the list
/// (header filters, `$http_*`, the proxy module) never see a half-made one.
fn push_header(
    request: &mut Request,
    to: List,
    name: &'static str,
    value: ngx_str_t,
) -> Option<*mut ngx_table_elt_t> {
    let r = request.as_mut();
    let pool = r.pool;
    let list = match to {
        List::In => &mut r.headers_in.headers,
        List::Out => &mut r.headers_out.headers,
    };
    // SAFETY: the list and pool are the live request's own; the name is
    // static and the value and lower-case copy live in the pool as long as
    // the request; the new element is complete before anything reads it.
    unsafe {
        let key = borrowed_str(name.as_bytes());
        let lowcase_key: *mut u8 = ngx_pnalloc(pool, key.len.max(1)).cast();
        if lowcase_key.is_null() {
            return None;
        }
        let hash = ngx_hash_strlow(lowcase_key, key.data, key.len);
        let h = ngx_list_push(list).cast::<ngx_table_elt_t>().as_mut()?;
        h.key = key;
        h.value = value;
        h.lowcase_key = lowcase_key;
        h.hash = hash;
        #[cfg(ngx_table_elt_next)]
        {
            h.next = std::ptr::null_mut();
        }
        Some(h)
    }
}

/// Removes from the request's incoming headers every header whose name
/// `matches`.
///
/// Elements never move, because other fields of the request point at them:
/// the list is relinked as runs of the elements that stay, each run a list
/// part that points into the original storage. Two list invariants are kept:
/// no part after the first is empty (nginx's iteration idiom relies on it), and
/// `ngx_list_push` never writes past the storage of the last part (its
/// capacity, `nalloc`, is set to what that part holds, so the next push starts
/// a new part).
///
pub fn remove_headers_in(request: &mut Request, matches: impl Fn(&[u8]) -> bool) -> Option<()> {
    let r = request.as_mut();
    let pool = r.pool;
    let list = &mut r.headers_in.headers;
    // SAFETY: the list and pool are the live request's own; every part
    // pointer comes from the list, and new parts are allocated in the pool.
    unsafe {
        // Nearly every request has none of these headers: look before
        // allocating anything.
        let mut part: *const ngx_list_part_t = &list.part;
        let mut any = false;
        while let Some(p) = part.as_ref() {
            let elts = p.elts.cast::<ngx_table_elt_t>();
            any |= (0..p.nelts).any(|i| matches((*elts.add(i)).key.as_bytes()));
            part = p.next;
        }
        if !any {
            return Some(());
        }
        let mut runs: Vec<(*mut ngx_table_elt_t, usize)> = Vec::new();
        let mut part: *mut ngx_list_part_t = &mut list.part;
        while let Some(p) = part.as_mut() {
            let elts = p.elts.cast::<ngx_table_elt_t>();
            let mut start = 0;
            for i in 0..p.nelts {
                if matches((*elts.add(i)).key.as_bytes()) {
                    if i > start {
                        runs.push((elts.add(start), i - start));
                    }
                    start = i + 1;
                }
            }
            if p.nelts > start {
                runs.push((elts.add(start), p.nelts - start));
            }
            part = p.next;
        }

        let Some((&(first, count), rest)) = runs.split_first() else {
            let storage = ngx_palloc(pool, list.nalloc * list.size);
            if storage.is_null() {
                return None;
            }
            list.part.elts = storage;
            list.part.nelts = 0;
            list.part.next = std::ptr::null_mut();
            list.last = &mut list.part;
            return Some(());
        };
        list.part.elts = first.cast();
        list.part.nelts = count;
        list.part.next = std::ptr::null_mut();
        let mut last: *mut ngx_list_part_t = &mut list.part;
        for &(elts, count) in rest {
            let p: *mut ngx_list_part_t = ngx_palloc(pool, size_of::<ngx_list_part_t>()).cast();
            if p.is_null() {
                return None;
            }
            (*p).elts = elts.cast();
            (*p).nelts = count;
            (*p).next = std::ptr::null_mut();
            (*last).next = p;
            last = p;
        }
        list.last = last;
        list.nalloc = (*last).nelts;
        Some(())
    }
}
