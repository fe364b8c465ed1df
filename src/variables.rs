//! `$esper_action`, `$esper_result`, `$esper_decision_id`, `$esper_latency`,
//! `$esper_hybrid_key`.

use esper_protocol::metrics::EsperResult;
use ngx::ffi::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_request_t, ngx_http_variable_value_t, ngx_int_t,
    ngx_str_t, NGX_ERROR, NGX_HTTP_VAR_NOCACHEABLE, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, Request};
use ngx::ngx_string;

use crate::log::guard;
use crate::state::{shown, Shown};
use crate::{request, Module};

#[derive(Clone, Copy)]
enum Variable {
    Action,
    Result,
    DecisionId,
    Latency,
    HybridKey,
}

const VARIABLES: [(ngx_str_t, Variable); 5] = [
    (ngx_string!("esper_action"), Variable::Action),
    (ngx_string!("esper_result"), Variable::Result),
    (ngx_string!("esper_decision_id"), Variable::DecisionId),
    (ngx_string!("esper_latency"), Variable::Latency),
    (ngx_string!("esper_hybrid_key"), Variable::HybridKey),
];

/// Adds the variables (preconfiguration).
pub extern "C" fn register(cf: *mut ngx_conf_t) -> ngx_int_t {
    guard(NGX_ERROR as ngx_int_t, || {
        for (index, (name, _)) in VARIABLES.iter().enumerate() {
            let mut name = *name;
            // SAFETY: nginx passes its live configuration context; the name
            // is static; a non-null result is nginx's slot for the variable.
            let var = unsafe {
                ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as _).as_mut()
            };
            let Some(var) = var else {
                return NGX_ERROR as ngx_int_t;
            };
            var.get_handler = Some(get);
            var.data = index;
        }
        NGX_OK as ngx_int_t
    })
}

/// The value of `variable` for the request; `None` is "not found" (logged
/// as `-`). Borrowed values live as long as the request (statics, what
/// the request state shows, the request pool), so nginx can point at them
/// without a copy.
fn value<'r>(
    request: &'r Request,
    state: Option<&'r Shown>,
    variable: Variable,
) -> Option<&'r [u8]> {
    let conf = Module::location_conf(request);
    match variable {
        Variable::Action => state?.action.map(|a| a.as_str().as_bytes()),
        Variable::Result => match state {
            Some(s) => Some(s.result.map_or("", EsperResult::as_str).as_bytes()),
            // Not judged here (`esper off`).
            None if conf.is_none_or(|c| c.target.is_none()) => {
                Some(EsperResult::Skipped.as_str().as_bytes())
            }
            // Judged here, but not yet.
            None => None,
        },
        Variable::DecisionId => state?.decision_id.as_deref().map(|id| id.as_bytes()),
        Variable::Latency => state?.latency_text(),
        Variable::HybridKey => request::evaluate(request, conf?.hybrid_key),
    }
}

extern "C" fn get(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    data: usize,
) -> ngx_int_t {
    guard(NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx evaluates variables with a live request and a value
        // slot of its own, on its thread. What the request's state shows is
        // read while nginx runs this getter, in which the module writes it
        // through no reference; nginx copies the value before the module
        // runs again and may change it.
        let (request, v, shown) = unsafe {
            let request = Request::from_ngx_http_request(r);
            (&*request, &mut *v, shown(request).map(|s| &*s.as_ptr()))
        };
        let Some(value) = VARIABLES.get(data).and_then(|&(_, var)| value(request, shown, var))
        else {
            v.set_not_found(1);
            return NGX_OK as ngx_int_t;
        };
        // Every value lives as long as the request: nginx points at it.
        v.data = value.as_ptr().cast_mut();
        v.set_len(value.len() as u32);
        v.set_valid(1);
        v.set_no_cacheable(1);
        v.set_not_found(0);
        NGX_OK as ngx_int_t
    })
}
