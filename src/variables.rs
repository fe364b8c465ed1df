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
use crate::state::shown;
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
pub fn register(cf: &mut ngx_conf_t) -> Result<(), ()> {
    for (index, (name, _)) in VARIABLES.iter().enumerate() {
        let mut name = *name;
        // SAFETY: a live configuration context; the name is static; a
        // non-null result is nginx's slot for the variable.
        let var =
            unsafe { ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as _).as_mut() };
        let var = var.ok_or(())?;
        var.get_handler = Some(get);
        var.data = index;
    }
    Ok(())
}

/// The value of `variable` for the request; `None` is "not found" (logged
/// as `-`). Borrowed values live as long as the request (statics, what
/// the request state shows, the request pool), so nginx can point at them
/// without a copy.
fn value(request: &Request, variable: Variable) -> Option<&[u8]> {
    // SAFETY: a getter runs inside an nginx call, and `state` is dropped
    // when it returns; nginx copies the value before the module changes it.
    let state = unsafe { shown(request) };
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
        // slot of its own, on its thread.
        let (request, v) = unsafe { (Request::from_ngx_http_request(r), &mut *v) };
        let Some(value) = VARIABLES.get(data).and_then(|&(_, var)| value(request, var)) else {
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
