//! ngx_http_esper_module: asks Esper's runtime decision API about each request
//! at nginx's access phase and applies the answer (allow, challenge, block).
//!
//! This file only registers the module. The other files form layers, each
//! importing only from its own and lower ones (CONTRIBUTING.md draws them,
//! t/layers.t checks them): entry points (`handler`, `variables`,
//! `metrics_page`), request steps (`steps`, `state`, `request`,
//! `response`), the runtime (`worker` and the Esper client below it,
//! `enforcement`, `metrics`), the configuration (`conf`) and nginx glue
//! (`nginx_conf`, `shm`, `headers`, `log`, `ffi`).

mod breakers;
mod conf;
mod enforcement;
mod ffi;
mod handler;
mod headers;
mod log;
mod metrics;
mod metrics_page;
mod nginx_conf;
mod request;
mod response;
mod runtime;
mod shm;
mod state;
mod steps;
mod variables;
mod worker;

use std::ffi::c_void;
use std::ptr::addr_of;

use ngx::ffi::{
    ngx_conf_t, ngx_cycle_t, ngx_http_module_t, ngx_int_t, ngx_module_t, ngx_uint_t,
    NGX_HTTP_MODULE,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf};

pub(crate) struct Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module descriptor is a static that nginx only writes while
        // loading the module, before any request or configuration code runs.
        unsafe { &*addr_of!(ngx_http_esper_module) }
    }
}

// SAFETY: the main and location configurations are created by `conf` as these types.
unsafe impl HttpModuleMainConf for Module {
    type MainConf = conf::MainConf;
}
// SAFETY: the location configuration is created by `conf` as this type.
unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = conf::LocConf;
}

static MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(variables::register),
    postconfiguration: Some(handler::register),
    create_main_conf: Some(create_main_conf),
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(conf::create_loc_conf),
    merge_loc_conf: Some(conf::merge_loc_conf),
};

/// The main configuration, given the handlers the configuration hands out:
/// `esper_metrics`' content handler.
extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    conf::create_main_conf(cf, Some(metrics_page::handler))
}

// The module list a dynamic module exports. nginx's own build system
// (`config`) generates its own, so it builds without this feature.
#[cfg(feature = "export-modules")]
ngx::ngx_modules!(ngx_http_esper_module);

#[used]
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_esper_module: ngx_module_t = ngx_module_t {
    ctx: addr_of!(MODULE_CTX) as *mut c_void,
    commands: addr_of!(conf::COMMANDS) as *mut _,
    type_: NGX_HTTP_MODULE as ngx_uint_t,
    init_process: Some(init_process),
    exit_process: Some(exit_process),
    ..ngx_module_t::default()
};

/// Never fails: nginx does not respawn a worker whose `init_process` fails,
/// so a runtime that cannot start is logged and leaves the failure action.
extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    with_cycle(cycle, worker::start);
    ngx::ffi::NGX_OK as ngx_int_t
}

extern "C" fn exit_process(cycle: *mut ngx_cycle_t) {
    with_cycle(cycle, worker::stop);
}

fn with_cycle(cycle: *mut ngx_cycle_t, f: impl FnOnce(&ngx_cycle_t)) {
    log::guard((), || {
        // SAFETY: nginx passes the live cycle of this process.
        f(unsafe { &*cycle })
    });
}
