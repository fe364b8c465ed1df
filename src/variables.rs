//! `$esper_action`, `$esper_result`, `$esper_decision_id`, `$esper_latency`.

use ngx::ffi::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_request_t, ngx_http_variable_value_t, ngx_int_t,
    ngx_pnalloc, ngx_str_t, NGX_ERROR, NGX_HTTP_VAR_NOCACHEABLE, NGX_OK,
};
use ngx::http::HttpModuleLocationConf;
use ngx::ngx_string;

use crate::ffi::guard;
use crate::handler::{find, RequestState};
use crate::Module;

type Getter = fn(Option<&RequestState>, enabled: bool) -> Option<String>;

const VARIABLES: [(ngx_str_t, Getter); 4] = [
    (ngx_string!("esper_action"), |s, _| {
        s?.action.map(|a| a.as_str().to_owned())
    }),
    (ngx_string!("esper_result"), |s, enabled| match s {
        Some(s) => Some(s.result.to_owned()),
        // Not judged: `esper off` here, or nothing ran yet.
        None if !enabled => Some("skipped".to_owned()),
        None => None,
    }),
    (ngx_string!("esper_decision_id"), |s, _| {
        s?.decision_id.clone()
    }),
    (ngx_string!("esper_latency"), |s, _| {
        s?.latency
            .map(|ms| format!("{}.{:03}", ms / 1000, ms % 1000))
    }),
];

/// Adds the variables (preconfiguration).
pub unsafe extern "C" fn register(cf: *mut ngx_conf_t) -> ngx_int_t {
    guard(NGX_ERROR as ngx_int_t, || {
        for (index, (name, _)) in VARIABLES.iter().enumerate() {
            let mut name = *name;
            // SAFETY: nginx passes a live configuration; the name is static.
            let var =
                unsafe { ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as _) };
            // SAFETY: a non-null result is nginx's variable slot for this name.
            let Some(var) = (unsafe { var.as_mut() }) else {
                return NGX_ERROR as ngx_int_t;
            };
            var.get_handler = Some(get);
            var.data = index;
        }
        NGX_OK as ngx_int_t
    })
}

unsafe extern "C" fn get(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    data: usize,
) -> ngx_int_t {
    guard(NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx evaluates variables with a live request and value slot.
        unsafe {
            let state = find(r).map(|s| &*s);
            let enabled = Module::location_conf(&*r).is_some_and(|c| c.target.is_some());
            let Some(value) = VARIABLES
                .get(data)
                .and_then(|(_, getter)| getter(state, enabled))
            else {
                (*v).set_not_found(1);
                return NGX_OK as ngx_int_t;
            };
            let p: *mut u8 = ngx_pnalloc((*r).pool, value.len().max(1)).cast();
            if p.is_null() {
                return NGX_ERROR as ngx_int_t;
            }
            std::ptr::copy_nonoverlapping(value.as_ptr(), p, value.len());
            (*v).data = p;
            (*v).set_len(value.len() as u32);
            (*v).set_valid(1);
            (*v).set_no_cacheable(1);
            (*v).set_not_found(0);
            NGX_OK as ngx_int_t
        }
    })
}
