//! nginx's shared memory zones, as this module uses them: a zone named at
//! configuration time with the handler that fills it once nginx maps it, and
//! what its slab pool leaves for the one allocation made in it.

use std::ffi::c_void;
use std::ptr::NonNull;

use ngx::ffi::{
    ngx_conf_t, ngx_shared_memory_add, ngx_shm_zone_init_pt, ngx_shm_zone_t, ngx_slab_pool_t,
};
use ngx::http::HttpModule;

use crate::ffi::{borrowed_str, page_size};
use crate::Module;

/// Adds this module's shared memory zone `name` to the configuration, or
/// finds it again (same name and size), for nginx to map once the
/// configuration is read and then hand to `init` with `data`; a zone named
/// while a directive is read may get its `init` later (at postconfiguration),
/// before nginx maps it. nginx keeps `name` without a copy: it must live as
/// long as the configuration. Fails (with nginx's own error at the
/// directive's line) when another module's zone has the name.
pub fn add(
    cf: &ngx_conf_t,
    name: &str,
    size: usize,
    init: ngx_shm_zone_init_pt,
    data: *mut c_void,
) -> Result<NonNull<ngx_shm_zone_t>, String> {
    let mut zone_name = borrowed_str(name.as_bytes());
    let cf = (cf as *const ngx_conf_t).cast_mut();
    let tag = (Module::module() as *const ngx::ffi::ngx_module_t).cast_mut().cast();
    // SAFETY: a live configuration context and a name that outlives it.
    // nginx returns the zone it keeps with the cycle, not yet mapped: it
    // reads `init` and `data` only when it maps the zones, after the
    // configuration is read, and nothing else refers to the zone meanwhile.
    unsafe {
        let mut zone = NonNull::new(ngx_shared_memory_add(cf, &mut zone_name, size, tag))
            .ok_or_else(|| format!("cannot add the shared memory zone \"{name}\""))?;
        if init.is_some() {
            zone.as_mut().init = init;
            zone.as_mut().data = data;
        }
        Ok(zone)
    }
}

/// What one allocation can surely take from a zone of `size` bytes: nginx's
/// slab pool keeps its header, its size classes and a descriptor per page at
/// the start of the zone, and hands out whole pages.
pub fn usable_bytes(size: usize) -> usize {
    let page = page_size().max(1);
    let overhead = std::mem::size_of::<ngx_slab_pool_t>() + 64 * 8 + size / page * 24 + 2 * page;
    (size.saturating_sub(overhead) / page) * page
}
