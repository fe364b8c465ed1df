//! Header-list helpers: adding a header, and taking headers out while the
//! request's other pointers into the list stay valid.

use ngx::ffi::{
    ngx_hash_strlow, ngx_list_part_t, ngx_list_push, ngx_list_t, ngx_palloc, ngx_pnalloc,
    ngx_pool_t, ngx_str_t, ngx_table_elt_t,
};

use ngx::http::Request;

use crate::ffi::bytes;

/// Adds a header to what the request carries on to the application.
pub fn add_header_in(request: &mut Request, name: &str, value: &[u8]) -> Option<()> {
    let r = request.as_mut();
    // SAFETY: the request's own incoming header list and pool.
    unsafe { push_header(&mut r.headers_in.headers, r.pool, name, value) }.map(|_| ())
}

/// Adds a header to the response.
pub fn add_header_out(request: &mut Request, name: &str, value: &[u8]) -> Option<()> {
    let r = request.as_mut();
    // SAFETY: the request's own outgoing header list and pool.
    unsafe { push_header(&mut r.headers_out.headers, r.pool, name, value) }.map(|_| ())
}

/// Sets the response's `Location`.
pub fn set_location(request: &mut Request, value: &[u8]) -> Option<()> {
    let r = request.as_mut();
    // SAFETY: the request's own outgoing header list and pool.
    let h = unsafe { push_header(&mut r.headers_out.headers, r.pool, "Location", value) }?;
    r.headers_out.location = h;
    Some(())
}

/// Removes from the request's incoming headers every header whose name
/// `matches`.
pub fn remove_headers_in(request: &mut Request, matches: impl Fn(&[u8]) -> bool) -> Option<()> {
    let r = request.as_mut();
    // SAFETY: the request's own incoming header list and pool.
    unsafe { remove_headers(&mut r.headers_in.headers, r.pool, matches) }
}

/// Appends a header to an nginx header list, copying name and value into `pool`.
/// Everything that can fail happens before the element joins the list, so
/// readers of the list (header filters, `$http_*`, the proxy module) never see
/// a half-made one.
///
/// # Safety
/// `list` must be a header list of a live request and `pool` that request's pool.
unsafe fn push_header(
    list: *mut ngx::ffi::ngx_list_t,
    pool: *mut ngx_pool_t,
    name: &str,
    value: &[u8],
) -> Option<*mut ngx_table_elt_t> {
    // SAFETY: the caller guarantees a live list and pool; the copies live in
    // the pool as long as the request.
    unsafe {
        let key = ngx_str_t::from_bytes(pool, name.as_bytes())?;
        let value = ngx_str_t::from_bytes(pool, value)?;
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

/// Removes from a header list every header whose name `matches`.
///
/// Elements never move, because other fields of the request point at them:
/// the list is relinked as runs of the elements that stay, each run a list
/// part that points into the original storage. Two list invariants are kept:
/// no part after the first is empty (nginx's iteration idiom relies on it), and
/// `ngx_list_push` never writes past the storage of the last part (its
/// capacity, `nalloc`, is set to what that part holds, so the next push starts
/// a new part).
///
/// # Safety
/// `list` must be a header list of a live request and `pool` that request's pool.
unsafe fn remove_headers(
    list: *mut ngx_list_t,
    pool: *mut ngx_pool_t,
    matches: impl Fn(&[u8]) -> bool,
) -> Option<()> {
    // SAFETY: per the function contract; every part pointer comes from the
    // list, and new parts are allocated in the request pool.
    unsafe {
        let list = &mut *list;
        // Nearly every request has none of these headers: look before
        // allocating anything.
        let mut part: *const ngx_list_part_t = &list.part;
        let mut any = false;
        while let Some(p) = part.as_ref() {
            let elts = p.elts.cast::<ngx_table_elt_t>();
            any |= (0..p.nelts).any(|i| matches(bytes(&(*elts.add(i)).key)));
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
                if matches(bytes(&(*elts.add(i)).key)) {
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
