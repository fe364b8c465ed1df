//! The configuration: the types that mirror the `esper_*` directives, built
//! by `directives` (the table and how each one is parsed) and completed by
//! `merge` (inheritance, checks, and what requests use: targets, pass
//! settings, zones). Values with rules of their own are checked by
//! `esper_protocol::config`; nginx's own slots parse flags, times and enums so
//! that errors read exactly like nginx's.

mod directives;
mod merge;
mod table;

pub use merge::merge_loc_conf;
pub use table::COMMANDS;

use std::any::Any;
use std::cell::RefCell;
use std::ffi::c_void;
use std::ptr::{null_mut, NonNull};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use esper_client::{Certificates, ClientProfile};
use esper_protocol::breaker::BreakerSettings;
use esper_protocol::config::ApiUrl;
use esper_protocol::entity_table::Layout;
use esper_protocol::pass::{PassCookie, PassKey, Project};
use esper_protocol::response::JsonMode;
use ngx::ffi::{
    ngx_conf_t, ngx_flag_t, ngx_http_complex_value_t, ngx_http_handler_pt, ngx_int_t, ngx_msec_t,
    ngx_shm_zone_t, ngx_uint_t, time_t,
};

use crate::log::guard;
use crate::nginx_conf::ConfExt;

const FAILURE_ALLOW: ngx_uint_t = 0;
const FAILURE_BLOCK: ngx_uint_t = 1;
const MODE_ENFORCE: ngx_uint_t = 0;
const MODE_MONITOR: ngx_uint_t = 1;
const JSON_AUTO: ngx_uint_t = 0;
const JSON_ON: ngx_uint_t = 1;
const JSON_OFF: ngx_uint_t = 2;
const HTTP2_AUTO: ngx_uint_t = 0;
const HTTP2_ON: ngx_uint_t = 1;
const HTTP2_OFF: ngx_uint_t = 2;

/// `esper_mode`
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    /// Decisions are asked for and recorded, never applied.
    Monitor,
}

/// What a location does with Esper's answers, and without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    pub on_failure: FailureAction,
}

/// `esper_failure_action`: what a request gets when no usable decision came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureAction {
    Allow,
    Block,
}

const UNSET_FLAG: ngx_flag_t = -1;
const UNSET_UINT: ngx_uint_t = ngx_uint_t::MAX;
const UNSET_INT: ngx_int_t = -1;
const UNSET_MSEC: ngx_msec_t = ngx_msec_t::MAX;
const UNSET_TIME: time_t = -1;
const DEFAULT_TIMEOUT_MS: ngx_msec_t = 300;
const DEFAULT_PASS_COOKIE: &str = "esper_challenge";
const DEFAULT_MAX_PENDING: ngx_int_t = 1024;
const DEFAULT_PASS_TTL_SECS: time_t = 15 * 60;
const DEFAULT_SOURCE: &str = "nginx";
const DEFAULT_ENFORCEMENT_TTL_SECS: u64 = 60;
/// The smallest `esper_enforcement_zone`, as nginx's own zones: eight pages
/// that hold at least eight entries.
const MIN_ZONE_PAGES: usize = 8;
const MIN_ZONE_ENTRIES: usize = 8;

/// Server-wide state gathered while the configuration is read.
#[derive(Default)]
pub struct MainConf {
    /// Distinct client settings among `esper on` locations; each worker builds
    /// one HTTP client per entry.
    pub client_profiles: Vec<ClientProfile>,
    /// Distinct Esper endpoints (decision URLs); each worker keeps one circuit
    /// breaker per entry.
    pub endpoints: Vec<url::Url>,
    /// `$request_id`, the idempotency key, compiled at postconfiguration.
    pub request_id: Option<&'static ngx_http_complex_value_t>,
    /// Signs pass cookies where no `esper_pass_secret_file` is set: random,
    /// made once per configuration (so shared by all workers, new on reload).
    random_pass_key: Option<Arc<PassKey>>,
    /// What the runtime makes of this configuration in each process (its
    /// HTTP clients and circuit breakers, `worker::ConfClients`), made on
    /// first use after the fork. Its type is the runtime's; it is kept here
    /// to live and die with this configuration.
    pub clients: RefCell<Option<Rc<dyn Any>>>,
    /// `esper_enforcement_zone`s, in order.
    pub zones: Vec<Rc<EnforcementZone>>,
    /// The content handler `esper_metrics` gives its location (the entry
    /// layer's, handed in when this configuration is created).
    pub metrics_handler: ngx_http_handler_pt,
}

/// The shared memory zone of the module's counters; no
/// `esper_enforcement_zone` may take its name.
pub const METRICS_ZONE: &str = "ngx_http_esper_module";

/// One `esper_enforcement_zone`: the shared memory zone nginx maps for it,
/// and where the table lies in it. `enforcement` reads and writes the table.
pub struct EnforcementZone {
    pub name: String,
    /// `ttl=`: the longest an entry lives.
    pub ttl: Duration,
    pub shm: NonNull<ngx_shm_zone_t>,
    pub size: usize,
    /// The largest table the zone holds.
    pub layout: Layout,
}

impl MainConf {
    /// True when some location judges requests, so workers need a runtime.
    pub fn in_use(&self) -> bool {
        !self.client_profiles.is_empty()
    }
}

/// Where and how a location asks Esper; shared by its requests.
pub struct Target {
    /// `esper_circuit_breaker`; `None` when off.
    pub breaker: Option<BreakerSettings>,
    pub decision_url: url::Url,
    pub verify_url: url::Url,
    pub api_key: hyper::header::HeaderValue,
    pub client_profile: usize,
    /// Index into `MainConf::endpoints`: the breaker this target shares.
    pub endpoint: usize,
}

/// The pass cookie of a location.
pub struct PassSettings {
    pub cookie: PassCookie,
    /// The names a pass may come under (`PassCookie::names`).
    pub names: [String; 2],
    pub ttl: Duration,
    pub key: Arc<PassKey>,
    /// The Esper project the location asks: a pass holds only under it.
    pub project: Project,
}

/// One `esper_field NAME VALUE`.
pub struct Field {
    pub name: String,
    pub value: &'static ngx_http_complex_value_t,
}

/// Directives of one http, server or location block, mirrored field by field.
pub struct LocConf {
    /// `esper`
    pub enable: ngx_flag_t,
    /// `esper_metrics` is in this very location, which is then never judged.
    metrics: bool,
    /// File and line of the `esper on` in effect, for error messages.
    enabled_at: Option<String>,
    /// `esper_api_url`
    api_url: Option<ApiUrl>,
    /// `esper_api_key`, or the key `esper_api_key_file` read
    api_key: Option<String>,
    /// Which of the two set the key at this level (they exclude each other).
    api_key_directive: Option<&'static str>,
    /// `esper_timeout`
    pub timeout: ngx_msec_t,
    /// `esper_failure_action`, as set (an index into FAILURE_ACTIONS).
    failure_action_index: ngx_uint_t,
    /// `esper_mode`, as set (an index into MODES).
    mode_index: ngx_uint_t,
    /// `esper_mode` and `esper_failure_action`, typed at merge time.
    pub policy: Policy,
    /// `esper_block_status`
    pub block_status: ngx_uint_t,
    /// `esper_challenge_status`
    pub challenge_status: ngx_uint_t,
    /// `esper_return_url`; unset, `request::return_url` decides.
    pub return_url: Option<&'static ngx_http_complex_value_t>,
    /// `esper_field`, in order
    pub fields: Option<Vec<Field>>,
    /// `esper_source`
    pub source: Option<String>,
    /// `esper_send_cookies`
    pub send_cookies: ngx_flag_t,
    /// `esper_ssl_trusted_certificate`
    ssl_trusted_certificate: Option<(String, Certificates)>,
    /// `esper_ssl_verify`
    ssl_verify: ngx_flag_t,
    /// `esper_http2`, as set (an index into HTTP2_MODES).
    http2: ngx_uint_t,
    /// `esper_max_pending`
    pub max_pending: ngx_int_t,
    /// `esper_circuit_breaker`: `Some(None)` is `off`.
    breaker: Option<Option<BreakerSettings>>,
    /// `esper_pass_cookie`
    pass_cookie: Option<PassCookie>,
    /// `esper_pass_ttl`, in seconds
    pass_ttl: time_t,
    /// `esper_pass_secret_file`
    pass_secret: Option<Arc<PassKey>>,
    /// `esper_hybrid_key`
    pub hybrid_key: Option<&'static ngx_http_complex_value_t>,
    /// `esper_forward_decision_id`
    pub forward_decision_id: ngx_flag_t,
    /// `esper_bypass`: compiled values, any of them neither empty nor "0"
    /// lets the request through unasked.
    pub bypass: Option<Vec<&'static ngx_http_complex_value_t>>,
    /// `esper_json_response`, as set (an index into JSON_RESPONSES).
    json_response_index: ngx_uint_t,
    /// `esper_json_response`, resolved at merge time.
    pub json_response: JsonMode,
    /// `esper_enforcement`: the zone's name and where it was named; `Some(None)` is `off`.
    enforcement: Option<Option<(String, String)>>,
    /// The zone `esper_enforcement` names, resolved at merge time where `esper on`.
    pub zone: Option<Rc<EnforcementZone>>,
    /// Built at merge time where `esper on`.
    pub target: Option<Arc<Target>>,
    /// Built at merge time where `esper on`.
    pub pass: Option<PassSettings>,
}

impl LocConf {
    fn unset() -> LocConf {
        LocConf {
            enable: UNSET_FLAG,
            metrics: false,
            enabled_at: None,
            api_url: None,
            api_key: None,
            api_key_directive: None,
            timeout: UNSET_MSEC,
            failure_action_index: UNSET_UINT,
            mode_index: UNSET_UINT,
            policy: Policy { mode: Mode::Enforce, on_failure: FailureAction::Allow },
            block_status: UNSET_UINT,
            challenge_status: UNSET_UINT,
            return_url: None,
            fields: None,
            source: None,
            send_cookies: UNSET_FLAG,
            ssl_trusted_certificate: None,
            ssl_verify: UNSET_FLAG,
            http2: UNSET_UINT,
            max_pending: UNSET_INT,
            breaker: None,
            pass_cookie: None,
            pass_ttl: UNSET_TIME,
            pass_secret: None,
            hybrid_key: None,
            forward_decision_id: UNSET_FLAG,
            bypass: None,
            json_response_index: UNSET_UINT,
            json_response: JsonMode::Auto,
            enforcement: None,
            zone: None,
            target: None,
            pass: None,
        }
    }
}

/// The main configuration; `esper_metrics` gives its location `metrics_handler`.
pub fn create_main_conf(cf: *mut ngx_conf_t, metrics_handler: ngx_http_handler_pt) -> *mut c_void {
    create(cf, || MainConf { metrics_handler, ..MainConf::default() })
}

pub extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    create(cf, LocConf::unset)
}

/// A configuration of this module in the configuration's pool, which frees
/// (and drops) it with the configuration.
fn create<T>(cf: *mut ngx_conf_t, make: impl FnOnce() -> T) -> *mut c_void {
    guard(null_mut(), || {
        // SAFETY: nginx passes its live configuration context.
        let cf = unsafe { &*cf };
        cf.pool().allocate(make()).cast()
    })
}
