//! The request steps of a judged request: `judge` decides how a request is
//! judged (the operator's bypass, a proof to verify, the enforcement zone, a
//! pass cookie, or a call to Esper) and starts the call; `apply` acts on
//! what came back or what the zone remembers (continue, challenge, block,
//! the failure action, the pass cookie after a verified proof).
//!
//! A proof that does not verify is judged as the same request without one.

mod apply;
mod judge;

use ngx::ffi::{ngx_int_t, NGX_DECLINED, NGX_DONE, NGX_HTTP_INTERNAL_SERVER_ERROR};

use crate::response::Step;

pub use apply::{enforce, enforce_monitored, resumed};
pub use judge::judge;

pub const DECLINED: Step = Step::Phase(NGX_DECLINED as ngx_int_t);
pub const DONE: Step = Step::Phase(NGX_DONE as ngx_int_t);
pub const SERVER_ERROR: Step = Step::Phase(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
