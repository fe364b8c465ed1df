//! The `esper_*` directives: their table, how each one is parsed, and how a
//! location inherits them. Values with rules of their own are checked by
//! `esper_protocol::config`; nginx's own slots parse flags, times and enums so
//! that errors read exactly like nginx's.

use std::cell::RefCell;
use std::ffi::{c_char, c_void};
use std::mem::{offset_of, zeroed};
use std::ptr::{addr_of, null_mut};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use esper_protocol::breaker::BreakerSettings;
use esper_protocol::config::{self as values, ApiUrl};
use esper_protocol::pass::{PassKey, MIN_KEY_BYTES};
use esper_protocol::response::JsonMode;
use ngx::core::{Pool, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_array_t, ngx_command_t, ngx_conf_enum_t, ngx_conf_full_name, ngx_conf_set_enum_slot,
    ngx_conf_set_flag_slot, ngx_conf_set_msec_slot, ngx_conf_set_num_slot, ngx_conf_set_sec_slot,
    ngx_conf_t, ngx_flag_t, ngx_http_compile_complex_value, ngx_http_compile_complex_value_t,
    ngx_http_complex_value_t, ngx_http_set_predicate_slot, ngx_int_t, ngx_msec_t, ngx_parse_time,
    ngx_pcalloc, ngx_str_t, ngx_uint_t, time_t, NGX_CONF_1MORE, NGX_CONF_FLAG, NGX_CONF_NOARGS,
    NGX_CONF_TAKE1, NGX_CONF_TAKE12, NGX_CONF_TAKE2, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET,
    NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_SRV_CONF, NGX_LOG_EMERG, NGX_OK,
};
use ngx::http::HttpModuleMainConf;
use ngx::ngx_string;

use crate::enforcement::{self, Zone};
use crate::ffi::bytes;
use crate::log::guard;
use crate::worker::ConfClients;
use crate::Module;

const FAILURE_ALLOW: ngx_uint_t = 0;
const FAILURE_BLOCK: ngx_uint_t = 1;
const MODE_ENFORCE: ngx_uint_t = 0;
const MODE_MONITOR: ngx_uint_t = 1;

/// `esper_mode`
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    /// Decisions are asked for and recorded, never applied.
    Monitor,
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
/// nginx's NGX_CONF_UNSET_PTR, which `ngx_http_set_predicate_slot` expects.
const UNSET_PTR: *mut ngx_array_t = usize::MAX as *mut ngx_array_t;
const DEFAULT_TIMEOUT_MS: ngx_msec_t = 300;
const DEFAULT_PASS_COOKIE: &str = "esper_challenge";
const DEFAULT_MAX_PENDING: ngx_int_t = 1024;
const DEFAULT_PASS_TTL_SECS: time_t = 15 * 60;
const DEFAULT_SOURCE: &str = "nginx";
const DEFAULT_ENFORCEMENT_TTL_SECS: u64 = 60;

/// Server-wide state gathered while the configuration is read.
#[derive(Default)]
pub struct MainConf {
    /// Distinct client settings among `esper on` locations; each worker builds
    /// one HTTP client per entry.
    pub client_profiles: Vec<ClientProfile>,
    /// Distinct Esper endpoints (decision URLs); each worker keeps one circuit
    /// breaker per entry.
    pub endpoints: Vec<reqwest::Url>,
    /// Index of `$request_id`, the idempotency key.
    pub request_id_index: ngx_uint_t,
    /// Signs pass cookies where no `esper_pass_secret_file` is set: random,
    /// made once per configuration (so shared by all workers, new on reload).
    random_pass_key: Option<Arc<PassKey>>,
    /// This configuration's HTTP clients and breakers in this process, made
    /// on first use after the fork (`worker::clients_of`); an error says why
    /// they could not be made.
    pub clients: RefCell<Option<Result<Rc<ConfClients>, String>>>,
    /// `esper_enforcement_zone`s, in order.
    pub zones: Vec<Rc<Zone>>,
}

impl MainConf {
    /// True when some location judges requests, so workers need a runtime.
    pub fn in_use(&self) -> bool {
        !self.client_profiles.is_empty()
    }
}

/// How a location's HTTP client talks to Esper: `esper_http2`,
/// `esper_ssl_verify` and `esper_ssl_trusted_certificate`.
#[derive(Clone)]
pub struct ClientProfile {
    pub http2: bool,
    pub verify: bool,
    pub ca_file: Option<String>,
    /// The bundle as read at configuration time, so workers never touch the file.
    pub ca_pem: Option<Arc<Vec<u8>>>,
}

/// Where and how a location asks Esper; shared by its requests.
pub struct Target {
    /// `esper_circuit_breaker`; `None` when off.
    pub breaker: Option<BreakerSettings>,
    pub decision_url: reqwest::Url,
    pub verify_url: reqwest::Url,
    pub api_key: reqwest::header::HeaderValue,
    pub client_profile: usize,
    /// Index into `MainConf::endpoints`: the breaker this target shares.
    pub endpoint: usize,
}

/// The pass cookie of a location.
pub struct PassSettings {
    pub cookie: String,
    pub ttl: Duration,
    pub key: Arc<PassKey>,
}

/// One `esper_field NAME VALUE`.
pub struct Field {
    pub name: String,
    pub value: *mut ngx_http_complex_value_t,
}

/// Directives of one http, server or location block, mirrored field by field.
pub struct LocConf {
    /// `esper`
    pub enable: ngx_flag_t,
    /// File and line of the `esper on` in effect, for error messages.
    enabled_at: Option<String>,
    /// `esper_api_url`
    api_url: Option<ApiUrl>,
    /// `esper_api_key`
    api_key: Option<String>,
    /// `esper_timeout`
    pub timeout: ngx_msec_t,
    /// `esper_failure_action`, as set (an index into FAILURE_ACTIONS).
    failure_action_index: ngx_uint_t,
    /// `esper_mode`, as set (an index into MODES).
    mode_index: ngx_uint_t,
    /// `esper_mode`, resolved at merge time.
    pub mode: Mode,
    /// `esper_failure_action`, resolved at merge time.
    pub failure_action: FailureAction,
    /// `esper_block_status`
    pub block_status: ngx_uint_t,
    /// `esper_challenge_status`
    pub challenge_status: ngx_uint_t,
    /// `esper_return_url`
    pub return_url: *mut ngx_http_complex_value_t,
    /// `esper_field`, in order
    pub fields: Option<Vec<Field>>,
    /// `esper_source`
    pub source: Option<String>,
    /// `esper_send_cookies`
    pub send_cookies: ngx_flag_t,
    /// `esper_ssl_trusted_certificate`
    ssl_trusted_certificate: Option<(String, Arc<Vec<u8>>)>,
    /// `esper_ssl_verify`
    ssl_verify: ngx_flag_t,
    /// `esper_http2`
    http2: ngx_flag_t,
    /// `esper_max_pending`
    pub max_pending: ngx_int_t,
    /// `esper_circuit_breaker`: `Some(None)` is `off`.
    breaker: Option<Option<BreakerSettings>>,
    /// `esper_pass_cookie`
    pass_cookie: Option<String>,
    /// `esper_pass_ttl`, in seconds
    pass_ttl: time_t,
    /// `esper_pass_secret_file`
    pass_secret: Option<Arc<PassKey>>,
    /// `esper_hybrid_key`
    pub hybrid_key: *mut ngx_http_complex_value_t,
    /// `esper_forward_decision_id`
    pub forward_decision_id: ngx_flag_t,
    /// `esper_bypass`: compiled values, any of them neither empty nor "0"
    /// lets the request through unasked; null when unset.
    pub bypass: *mut ngx_array_t,
    /// `esper_json_response`, as set (an index into JSON_RESPONSES).
    json_response_index: ngx_uint_t,
    /// `esper_json_response`, resolved at merge time.
    pub json_response: JsonMode,
    /// `esper_enforcement`: the zone's name and where it was named; `Some(None)` is `off`.
    enforcement: Option<Option<(String, String)>>,
    /// The zone `esper_enforcement` names, resolved at merge time where `esper on`.
    pub zone: Option<Rc<Zone>>,
    /// Built at merge time where `esper on`.
    pub target: Option<Arc<Target>>,
    /// Built at merge time where `esper on`.
    pub pass: Option<PassSettings>,
}

impl LocConf {
    fn unset() -> LocConf {
        LocConf {
            enable: UNSET_FLAG,
            enabled_at: None,
            api_url: None,
            api_key: None,
            timeout: UNSET_MSEC,
            failure_action_index: UNSET_UINT,
            mode_index: UNSET_UINT,
            mode: Mode::Enforce,
            failure_action: FailureAction::Allow,
            block_status: UNSET_UINT,
            challenge_status: UNSET_UINT,
            return_url: null_mut(),
            fields: None,
            source: None,
            send_cookies: UNSET_FLAG,
            ssl_trusted_certificate: None,
            ssl_verify: UNSET_FLAG,
            http2: UNSET_FLAG,
            max_pending: UNSET_INT,
            breaker: None,
            pass_cookie: None,
            pass_ttl: UNSET_TIME,
            pass_secret: None,
            hybrid_key: null_mut(),
            forward_decision_id: UNSET_FLAG,
            bypass: UNSET_PTR,
            json_response_index: UNSET_UINT,
            json_response: JsonMode::Auto,
            enforcement: None,
            zone: None,
            target: None,
            pass: None,
        }
    }
}

const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

const fn command(
    name: ngx_str_t,
    args: u32,
    set: unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char,
    offset: usize,
    post: *mut c_void,
) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: (ANY_LEVEL | args) as ngx_uint_t,
        set: Some(set),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset,
        post,
    }
}

static mut FAILURE_ACTIONS: [ngx_conf_enum_t; 3] = [
    ngx_conf_enum_t {
        name: ngx_string!("allow"),
        value: FAILURE_ALLOW,
    },
    ngx_conf_enum_t {
        name: ngx_string!("block"),
        value: FAILURE_BLOCK,
    },
    ngx_conf_enum_t {
        name: ngx_str_t::empty(),
        value: 0,
    },
];

const JSON_AUTO: ngx_uint_t = 0;
const JSON_ON: ngx_uint_t = 1;
const JSON_OFF: ngx_uint_t = 2;

static mut JSON_RESPONSES: [ngx_conf_enum_t; 4] = [
    ngx_conf_enum_t {
        name: ngx_string!("auto"),
        value: JSON_AUTO,
    },
    ngx_conf_enum_t {
        name: ngx_string!("on"),
        value: JSON_ON,
    },
    ngx_conf_enum_t {
        name: ngx_string!("off"),
        value: JSON_OFF,
    },
    ngx_conf_enum_t {
        name: ngx_str_t::empty(),
        value: 0,
    },
];

static mut MODES: [ngx_conf_enum_t; 3] = [
    ngx_conf_enum_t {
        name: ngx_string!("enforce"),
        value: MODE_ENFORCE,
    },
    ngx_conf_enum_t {
        name: ngx_string!("monitor"),
        value: MODE_MONITOR,
    },
    ngx_conf_enum_t {
        name: ngx_str_t::empty(),
        value: 0,
    },
];

pub static mut COMMANDS: [ngx_command_t; 28] = [
    command(
        ngx_string!("esper"),
        NGX_CONF_FLAG,
        set_enable,
        offset_of!(LocConf, enable),
        null_mut(),
    ),
    command(
        ngx_string!("esper_api_url"),
        NGX_CONF_TAKE1,
        set_api_url,
        0,
        null_mut(),
    ),
    command(
        ngx_string!("esper_api_key"),
        NGX_CONF_TAKE1,
        set_api_key,
        0,
        null_mut(),
    ),
    command(
        ngx_string!("esper_timeout"),
        NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot,
        offset_of!(LocConf, timeout),
        null_mut(),
    ),
    command(
        ngx_string!("esper_failure_action"),
        NGX_CONF_TAKE1,
        ngx_conf_set_enum_slot,
        offset_of!(LocConf, failure_action_index),
        addr_of!(FAILURE_ACTIONS) as *mut c_void,
    ),
    command(
        ngx_string!("esper_mode"),
        NGX_CONF_TAKE1,
        ngx_conf_set_enum_slot,
        offset_of!(LocConf, mode_index),
        addr_of!(MODES) as *mut c_void,
    ),
    command(
        ngx_string!("esper_block_status"),
        NGX_CONF_TAKE1,
        set_block_status,
        0,
        null_mut(),
    ),
    command(
        ngx_string!("esper_challenge_status"),
        NGX_CONF_TAKE1,
        set_challenge_status,
        0,
        null_mut(),
    ),
    command(
        ngx_string!("esper_return_url"),
        NGX_CONF_TAKE1,
        set_return_url,
        0,
        null_mut(),
    ),
    command(
        ngx_string!("esper_field"),
        NGX_CONF_TAKE2,
        set_field,
        0,
        null_mut(),
    ),
    command(
        ngx_string!("esper_source"),
        NGX_CONF_TAKE1,
        set_source,
        0,
        null_mut(),
    ),
    command(
        ngx_string!("esper_send_cookies"),
        NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        offset_of!(LocConf, send_cookies),
        null_mut(),
    ),
    command(
        ngx_string!("esper_ssl_trusted_certificate"),
        NGX_CONF_TAKE1,
        set_trusted_certificate,
        0,
        null_mut(),
    ),
    command(
        ngx_string!("esper_ssl_verify"),
        NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        offset_of!(LocConf, ssl_verify),
        null_mut(),
    ),
    command(
        ngx_string!("esper_pass_cookie"),
        NGX_CONF_TAKE1,
        set_pass_cookie,
        0,
        null_mut(),
    ),
    command(
        ngx_string!("esper_pass_ttl"),
        NGX_CONF_TAKE1,
        ngx_conf_set_sec_slot,
        offset_of!(LocConf, pass_ttl),
        null_mut(),
    ),
    command(
        ngx_string!("esper_pass_secret_file"),
        NGX_CONF_TAKE1,
        set_pass_secret_file,
        0,
        null_mut(),
    ),
    command(
        ngx_string!("esper_hybrid_key"),
        NGX_CONF_TAKE1,
        set_hybrid_key,
        0,
        null_mut(),
    ),
    command(
        ngx_string!("esper_max_pending"),
        NGX_CONF_TAKE1,
        ngx_conf_set_num_slot,
        offset_of!(LocConf, max_pending),
        null_mut(),
    ),
    ngx_command_t {
        name: ngx_string!("esper_metrics"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS) as ngx_uint_t,
        set: Some(set_metrics),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: null_mut(),
    },
    command(
        ngx_string!("esper_circuit_breaker"),
        NGX_CONF_1MORE,
        set_circuit_breaker,
        0,
        null_mut(),
    ),
    command(
        ngx_string!("esper_http2"),
        NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        offset_of!(LocConf, http2),
        null_mut(),
    ),
    command(
        ngx_string!("esper_forward_decision_id"),
        NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        offset_of!(LocConf, forward_decision_id),
        null_mut(),
    ),
    ngx_command_t {
        name: ngx_string!("esper_enforcement_zone"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE12) as ngx_uint_t,
        set: Some(set_enforcement_zone),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: 0,
        post: null_mut(),
    },
    command(
        ngx_string!("esper_bypass"),
        NGX_CONF_1MORE,
        ngx_http_set_predicate_slot,
        offset_of!(LocConf, bypass),
        null_mut(),
    ),
    command(
        ngx_string!("esper_json_response"),
        NGX_CONF_TAKE1,
        ngx_conf_set_enum_slot,
        offset_of!(LocConf, json_response_index),
        addr_of!(JSON_RESPONSES) as *mut c_void,
    ),
    command(
        ngx_string!("esper_enforcement"),
        NGX_CONF_TAKE1,
        set_enforcement,
        0,
        null_mut(),
    ),
    ngx_command_t::empty(),
];

pub unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    guard(null_mut(), || {
        // SAFETY: nginx passes a live configuration context; the pool frees
        // (and drops) the value with the configuration cycle.
        let pool = unsafe { Pool::from_ngx_pool((*cf).pool) };
        pool.allocate(MainConf::default()).cast()
    })
}

pub unsafe extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    guard(null_mut(), || {
        // SAFETY: as in create_main_conf.
        let pool = unsafe { Pool::from_ngx_pool((*cf).pool) };
        pool.allocate(LocConf::unset()).cast()
    })
}

/// Why a directive was refused; `nginx -t` prints it with the file and line.
enum SetError {
    Duplicate,
    Invalid(String),
}

impl From<String> for SetError {
    fn from(message: String) -> Self {
        SetError::Invalid(message)
    }
}

impl From<values::ConfigError> for SetError {
    fn from(error: values::ConfigError) -> Self {
        SetError::Invalid(error.to_string())
    }
}

type SetResult = Result<(), SetError>;

/// Defines a directive handler: the `extern "C"` shell nginx calls, around a
/// body that gets the configuration context, this block's `LocConf` and the
/// directive's arguments. The body runs in an unsafe context because it may
/// call nginx's configuration functions with `cf`.
macro_rules! directive_handler {
    ($name:ident, |$cf:ident, $conf:ident, $args:ident| $body:block) => {
        unsafe extern "C" fn $name(
            cf: *mut ngx_conf_t,
            cmd: *mut ngx_command_t,
            conf: *mut c_void,
        ) -> *mut c_char {
            // SAFETY: nginx calls directive handlers with the configuration
            // being parsed, this command and this block's configuration.
            unsafe {
                directive(cf, cmd, conf, |$conf, $args| {
                    let $cf = cf;
                    $body
                })
            }
        }
    };
}

/// Runs a directive body with the configuration and its arguments, turning an
/// error into nginx's "message in file:line".
///
/// # Safety
/// `cf` and `conf` must be what nginx passes to a directive handler of a
/// location-level directive of this module.
unsafe fn directive(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
    body: impl FnOnce(&mut LocConf, &[ngx_str_t]) -> SetResult,
) -> *mut c_char {
    guard(NGX_CONF_ERROR, || {
        // SAFETY: the caller guarantees a live ngx_conf_t whose args array
        // holds ngx_str_t values, and `conf` a LocConf made by create_loc_conf.
        let (conf, args) = unsafe {
            (
                &mut *conf.cast::<LocConf>(),
                (*(*cf).args).as_slice::<ngx_str_t>(),
            )
        };
        match body(conf, args) {
            Ok(()) => NGX_CONF_OK,
            Err(SetError::Duplicate) => {
                // SAFETY: nginx passes the command being parsed.
                let name = String::from_utf8_lossy(bytes(unsafe { &(*cmd).name })).into_owned();
                ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "\"{}\" directive is duplicate", name);
                NGX_CONF_ERROR
            }
            Err(SetError::Invalid(message)) => {
                ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", message);
                NGX_CONF_ERROR
            }
        }
    })
}

fn text(arg: &ngx_str_t) -> Result<&str, SetError> {
    std::str::from_utf8(bytes(arg))
        .map_err(|_| SetError::Invalid("argument is not valid UTF-8".to_owned()))
}

fn once(is_set: bool) -> SetResult {
    if is_set {
        Err(SetError::Duplicate)
    } else {
        Ok(())
    }
}

unsafe extern "C" fn set_enable(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx's own flag slot with the arguments nginx passed us.
    let rv = unsafe { ngx_conf_set_flag_slot(cf, cmd, conf) };
    if rv != NGX_CONF_OK {
        return rv;
    }
    // SAFETY: nginx passed a live configuration; see `directive`.
    unsafe {
        let file = &(*(*cf).conf_file).file;
        let at = format!(
            "{}:{}",
            String::from_utf8_lossy(bytes(&file.name)),
            (*(*cf).conf_file).line
        );
        directive(cf, cmd, conf, |conf, _| {
            conf.enabled_at = Some(at);
            Ok(())
        })
    }
}

/// "file:line" of the directive being parsed, for errors found at merge time.
///
/// # Safety
/// `cf` must be the live configuration context.
unsafe fn directive_at(cf: *mut ngx_conf_t) -> String {
    // SAFETY: per the function contract.
    unsafe {
        let file = &(*(*cf).conf_file).file;
        format!(
            "{}:{}",
            String::from_utf8_lossy(bytes(&file.name)),
            (*(*cf).conf_file).line
        )
    }
}

/// `esper_enforcement_zone zone=NAME:SIZE [ttl=TIME];`
unsafe extern "C" fn set_enforcement_zone(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(NGX_CONF_ERROR, || {
        // SAFETY: nginx passes the http block's MainConf (made by
        // create_main_conf) and the arguments of this directive.
        let (main, args) = unsafe {
            (
                &mut *conf.cast::<MainConf>(),
                (*(*cf).args).as_slice::<ngx_str_t>(),
            )
        };
        // SAFETY: cf is live.
        match unsafe { parse_enforcement_zone(cf, main, &args[1..]) } {
            Ok(()) => NGX_CONF_OK,
            Err(message) => {
                ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", message);
                NGX_CONF_ERROR
            }
        }
    })
}

/// # Safety
/// `cf` must be the live configuration context.
unsafe fn parse_enforcement_zone(
    cf: *mut ngx_conf_t,
    main: &mut MainConf,
    args: &[ngx_str_t],
) -> Result<(), String> {
    let mut zone = None;
    let mut ttl = Duration::from_secs(DEFAULT_ENFORCEMENT_TTL_SECS);
    for arg in args {
        let arg = String::from_utf8_lossy(bytes(arg));
        let invalid = || format!("invalid parameter \"{arg}\"");
        if let Some(spec) = arg.strip_prefix("zone=") {
            let (name, size) = spec.rsplit_once(':').ok_or_else(invalid)?;
            if name.is_empty() {
                return Err(format!("invalid zone name \"{arg}\""));
            }
            let size = size_bytes(size).ok_or_else(|| format!("invalid zone size \"{arg}\""))?;
            if size < 8 * page_size() || enforcement::layout_for(size).is_none() {
                return Err(format!("zone \"{name}\" is too small"));
            }
            zone = Some((name.to_owned(), size));
        } else if let Some(value) = arg.strip_prefix("ttl=") {
            ttl = Duration::from_millis(
                time_ms(value)
                    .filter(|&ms| ms >= 1000)
                    .ok_or_else(invalid)?,
            );
        } else {
            return Err(invalid());
        }
    }
    let (name, size) = zone.ok_or("\"zone\" parameter is missing")?;
    // SAFETY: per the function contract; the zone lives in `main`, which
    // lives as long as the configuration.
    let zone = unsafe { Zone::add(cf, &name, size, ttl) }?;
    main.zones.push(zone);
    Ok(())
}

/// An nginx size ("32k", "10m") in bytes.
fn size_bytes(value: &str) -> Option<usize> {
    let mut s = ngx_str_t {
        len: value.len(),
        data: value.as_ptr().cast_mut(),
    };
    // SAFETY: ngx_parse_size only reads the string.
    let n = unsafe { ngx::ffi::ngx_parse_size(&mut s) };
    (n > 0).then_some(n as usize)
}

fn page_size() -> usize {
    // SAFETY: reading nginx's page size, set at startup.
    unsafe { ngx::ffi::ngx_pagesize }
}

directive_handler!(set_enforcement, |cf, conf, args| {
    once(conf.enforcement.is_some())?;
    conf.enforcement = Some(match text(&args[1])? {
        "off" => None,
        name => Some((name.to_owned(), directive_at(cf))),
    });
    Ok(())
});

directive_handler!(set_api_url, |_cf, conf, args| {
    once(conf.api_url.is_some())?;
    conf.api_url = Some(ApiUrl::parse(text(&args[1])?)?);
    Ok(())
});

/// A directive that takes one checked string, once.
fn set_string(
    slot: &mut Option<String>,
    arg: &ngx_str_t,
    check: impl Fn(&str) -> Result<(), values::ConfigError>,
) -> SetResult {
    once(slot.is_some())?;
    let value = text(arg)?;
    check(value)?;
    *slot = Some(value.to_owned());
    Ok(())
}

directive_handler!(set_api_key, |_cf, conf, args| {
    set_string(&mut conf.api_key, &args[1], values::check_api_key)
});

directive_handler!(set_block_status, |_cf, conf, args| {
    once(conf.block_status != UNSET_UINT)?;
    conf.block_status = values::parse_block_status(text(&args[1])?)?.into();
    Ok(())
});

directive_handler!(set_challenge_status, |_cf, conf, args| {
    once(conf.challenge_status != UNSET_UINT)?;
    conf.challenge_status = values::parse_challenge_status(text(&args[1])?)?.into();
    Ok(())
});

directive_handler!(set_return_url, |cf, conf, args| {
    once(!conf.return_url.is_null())?;
    conf.return_url = compile(cf, args[1])?;
    Ok(())
});

directive_handler!(set_field, |cf, conf, args| {
    let name = text(&args[1])?;
    values::check_name("field name", name)?;
    let fields = conf.fields.get_or_insert_with(Vec::new);
    if fields.iter().any(|f| f.name == name) {
        return Err(format!("duplicate field \"{name}\"").into());
    }
    fields.push(Field {
        name: name.to_owned(),
        value: compile(cf, args[2])?,
    });
    Ok(())
});

directive_handler!(set_source, |_cf, conf, args| {
    set_string(&mut conf.source, &args[1], |v| {
        values::check_name("source", v)
    })
});

directive_handler!(set_trusted_certificate, |cf, conf, args| {
    once(conf.ssl_trusted_certificate.is_some())?;
    let path = full_name(cf, args[1])?;
    let pem = std::fs::read(&path).map_err(|e| format!("cannot read \"{path}\": {e}"))?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => {}
        Ok(_) => return Err(format!("no certificate found in \"{path}\"").into()),
        Err(e) => return Err(format!("cannot load \"{path}\": {e}").into()),
    }
    conf.ssl_trusted_certificate = Some((path, Arc::new(pem)));
    Ok(())
});

directive_handler!(set_pass_cookie, |_cf, conf, args| {
    set_string(&mut conf.pass_cookie, &args[1], values::check_cookie_name)
});

directive_handler!(set_pass_secret_file, |cf, conf, args| {
    once(conf.pass_secret.is_some())?;
    let path = full_name(cf, args[1])?;
    let mut secret = std::fs::read(&path).map_err(|e| format!("cannot read \"{path}\": {e}"))?;
    // A key written by `openssl rand -hex 32 > file` ends in a newline.
    while secret.last().is_some_and(u8::is_ascii_whitespace) {
        secret.pop();
    }
    let key = PassKey::new(secret).map_err(|e| format!("unusable secret in \"{path}\": {e}"))?;
    conf.pass_secret = Some(Arc::new(key));
    Ok(())
});

directive_handler!(set_hybrid_key, |cf, conf, args| {
    once(!conf.hybrid_key.is_null())?;
    conf.hybrid_key = compile(cf, args[1])?;
    Ok(())
});

directive_handler!(set_circuit_breaker, |_cf, conf, args| {
    once(conf.breaker.is_some())?;
    if args.len() == 2 && bytes(&args[1]) == b"off" {
        conf.breaker = Some(None);
        return Ok(());
    }
    let mut settings = BreakerSettings::default();
    for arg in &args[1..] {
        let arg = text(arg)?;
        let invalid = || SetError::Invalid(format!("invalid parameter \"{arg}\""));
        let (name, value) = arg.split_once('=').ok_or_else(invalid)?;
        match name {
            "failures" => {
                settings.failures = value.parse().ok().filter(|&n| n > 0).ok_or_else(invalid)?
            }
            "window" => settings.window_ms = time_ms(value).ok_or_else(invalid)?,
            "cooldown" => settings.cooldown_ms = time_ms(value).ok_or_else(invalid)?,
            _ => return Err(invalid()),
        }
    }
    conf.breaker = Some(Some(settings));
    Ok(())
});

directive_handler!(set_metrics, |cf, _conf, _args| {
    crate::metrics::set_handler(cf)
        .map_err(|()| SetError::Invalid("cannot set the metrics handler".to_owned()))
});

/// An nginx time ("500ms", "10s", "1m") in milliseconds, more than zero.
fn time_ms(value: &str) -> Option<u64> {
    let mut s = ngx_str_t {
        len: value.len(),
        data: value.as_ptr().cast_mut(),
    };
    // SAFETY: ngx_parse_time only reads the string.
    let ms = unsafe { ngx_parse_time(&mut s, 0) };
    (ms > 0).then_some(ms as u64)
}

/// A file name relative to nginx's configuration prefix, made absolute.
///
/// # Safety
/// `cf` must be the live configuration context.
unsafe fn full_name(cf: *mut ngx_conf_t, mut name: ngx_str_t) -> Result<String, SetError> {
    // SAFETY: per the function contract; the result lives in the cycle pool.
    if unsafe { ngx_conf_full_name((*cf).cycle, &mut name, 1) } != NGX_OK as isize {
        return Err("cannot resolve the file name".to_owned().into());
    }
    Ok(String::from_utf8_lossy(bytes(&name)).into_owned())
}

/// Compiles a value that may hold variables.
///
/// # Safety
/// `cf` must be the live configuration context; `value` must live as long as
/// the configuration (directive arguments and statics do).
unsafe fn compile(
    cf: *mut ngx_conf_t,
    mut value: ngx_str_t,
) -> Result<*mut ngx_http_complex_value_t, String> {
    // SAFETY: per the function contract; the compiled value is allocated in the
    // configuration pool and lives as long as the configuration.
    unsafe {
        let cv: *mut ngx_http_complex_value_t =
            ngx_pcalloc((*cf).pool, size_of::<ngx_http_complex_value_t>()).cast();
        if cv.is_null() {
            return Err("out of memory".to_owned());
        }
        let mut ccv: ngx_http_compile_complex_value_t = zeroed();
        ccv.cf = cf;
        ccv.value = &mut value;
        ccv.complex_value = cv;
        if ngx_http_compile_complex_value(&mut ccv) != NGX_OK as isize {
            return Err(format!(
                "invalid value \"{}\"",
                String::from_utf8_lossy(bytes(&value))
            ));
        }
        Ok(cv)
    }
}

pub unsafe extern "C" fn merge_loc_conf(
    cf: *mut ngx_conf_t,
    parent: *mut c_void,
    child: *mut c_void,
) -> *mut c_char {
    guard(NGX_CONF_ERROR, || {
        // SAFETY: nginx passes two LocConf values made by create_loc_conf and a
        // live configuration context.
        let (prev, conf) = unsafe { (&*parent.cast::<LocConf>(), &mut *child.cast::<LocConf>()) };
        // SAFETY: as above.
        match unsafe { merge(cf, prev, conf) } {
            Ok(()) => NGX_CONF_OK,
            Err(message) => {
                // SAFETY: cf is live; the message names its own file and line.
                unsafe { crate::log::log_error(NGX_LOG_EMERG, (*cf).log, &message) };
                NGX_CONF_ERROR
            }
        }
    })
}

fn inherit<T: Copy + PartialEq>(value: &mut T, prev: T, unset: T, default: T) {
    if *value == unset {
        *value = if prev == unset { default } else { prev };
    }
}

fn inherit_clone<T: Clone>(value: &mut Option<T>, prev: &Option<T>) {
    if value.is_none() {
        value.clone_from(prev);
    }
}

static mut DEFAULT_RETURN_URL: ngx_str_t = ngx_string!("$scheme://$host$request_uri");
static mut DEFAULT_FIELD_VALUE: ngx_str_t = ngx_string!("$host");

/// # Safety
/// `cf` must be the live configuration context.
unsafe fn merge(cf: *mut ngx_conf_t, prev: &LocConf, conf: &mut LocConf) -> Result<(), String> {
    inherit(&mut conf.enable, prev.enable, UNSET_FLAG, 0);
    inherit_clone(&mut conf.enabled_at, &prev.enabled_at);
    inherit_clone(&mut conf.api_url, &prev.api_url);
    inherit_clone(&mut conf.api_key, &prev.api_key);
    inherit(
        &mut conf.timeout,
        prev.timeout,
        UNSET_MSEC,
        DEFAULT_TIMEOUT_MS,
    );
    inherit(
        &mut conf.failure_action_index,
        prev.failure_action_index,
        UNSET_UINT,
        FAILURE_ALLOW,
    );
    conf.failure_action = match conf.failure_action_index {
        FAILURE_BLOCK => FailureAction::Block,
        _ => FailureAction::Allow,
    };
    inherit(
        &mut conf.mode_index,
        prev.mode_index,
        UNSET_UINT,
        MODE_ENFORCE,
    );
    conf.mode = match conf.mode_index {
        MODE_MONITOR => Mode::Monitor,
        _ => Mode::Enforce,
    };
    inherit(&mut conf.block_status, prev.block_status, UNSET_UINT, 403);
    inherit(
        &mut conf.challenge_status,
        prev.challenge_status,
        UNSET_UINT,
        302,
    );
    inherit(
        &mut conf.return_url,
        prev.return_url,
        null_mut(),
        null_mut(),
    );
    if conf.fields.is_none() {
        conf.fields = prev.fields.as_ref().map(|fields| {
            fields
                .iter()
                .map(|f| Field {
                    name: f.name.clone(),
                    value: f.value,
                })
                .collect()
        });
    }
    inherit_clone(&mut conf.source, &prev.source);
    inherit(&mut conf.send_cookies, prev.send_cookies, UNSET_FLAG, 0);
    inherit_clone(
        &mut conf.ssl_trusted_certificate,
        &prev.ssl_trusted_certificate,
    );
    inherit(&mut conf.ssl_verify, prev.ssl_verify, UNSET_FLAG, 1);
    inherit(&mut conf.http2, prev.http2, UNSET_FLAG, 0);
    inherit(
        &mut conf.max_pending,
        prev.max_pending,
        UNSET_INT,
        DEFAULT_MAX_PENDING,
    );
    inherit_clone(&mut conf.breaker, &prev.breaker);
    inherit_clone(&mut conf.pass_cookie, &prev.pass_cookie);
    inherit(
        &mut conf.pass_ttl,
        prev.pass_ttl,
        UNSET_TIME,
        DEFAULT_PASS_TTL_SECS,
    );
    inherit_clone(&mut conf.pass_secret, &prev.pass_secret);
    inherit(
        &mut conf.hybrid_key,
        prev.hybrid_key,
        null_mut(),
        null_mut(),
    );
    inherit(
        &mut conf.forward_decision_id,
        prev.forward_decision_id,
        UNSET_FLAG,
        0,
    );
    inherit_clone(&mut conf.enforcement, &prev.enforcement);
    inherit(&mut conf.bypass, prev.bypass, UNSET_PTR, null_mut());
    inherit(
        &mut conf.json_response_index,
        prev.json_response_index,
        UNSET_UINT,
        JSON_AUTO,
    );
    conf.json_response = match conf.json_response_index {
        JSON_ON => JsonMode::On,
        JSON_OFF => JsonMode::Off,
        _ => JsonMode::Auto,
    };

    if conf.enable != 1 {
        return Ok(());
    }
    let at = conf.enabled_at.clone().unwrap_or_default();
    let Some(key) = conf.api_key.as_deref() else {
        return Err(format!("\"esper on\" needs \"esper_api_key\" in {at}"));
    };
    if conf.timeout == 0 {
        return Err(format!(
            "\"esper_timeout\" must be more than 0 for \"esper on\" in {at}"
        ));
    }
    if conf.max_pending == 0 {
        return Err(format!(
            "\"esper_max_pending\" must be more than 0 for \"esper on\" in {at}"
        ));
    }
    if conf.pass_ttl == 0 {
        return Err(format!(
            "\"esper_pass_ttl\" must be more than 0 for \"esper on\" in {at}"
        ));
    }
    // SAFETY: the defaults are statics, so they outlive the configuration.
    unsafe {
        if conf.return_url.is_null() {
            conf.return_url = compile(cf, *addr_of!(DEFAULT_RETURN_URL))?;
        }
        if conf.fields.is_none() {
            let host = compile(cf, *addr_of!(DEFAULT_FIELD_VALUE))?;
            conf.fields = Some(vec![Field {
                name: "host".to_owned(),
                value: host,
            }]);
        }
    }
    conf.source.get_or_insert_with(|| DEFAULT_SOURCE.to_owned());

    let api_url = conf.api_url.clone().unwrap_or_default();
    let decision_url = reqwest::Url::parse(&api_url.decision_url()).map_err(|e| e.to_string())?;
    let verify_url = reqwest::Url::parse(&api_url.verify_url()).map_err(|e| e.to_string())?;
    let mut api_key = reqwest::header::HeaderValue::from_str(key).map_err(|e| e.to_string())?;
    api_key.set_sensitive(true);

    let profile = ClientProfile {
        http2: conf.http2 == 1,
        verify: conf.ssl_verify == 1,
        ca_file: conf
            .ssl_trusted_certificate
            .as_ref()
            .map(|(path, _)| path.clone()),
        ca_pem: conf
            .ssl_trusted_certificate
            .as_ref()
            .map(|(_, pem)| pem.clone()),
    };
    // SAFETY: cf is live and belongs to the http block, whose main
    // configuration of this module exists.
    let main = unsafe { Module::main_conf_mut(&*cf) }.ok_or("no main configuration")?;
    let client_profile = match main.client_profiles.iter().position(|p| {
        p.http2 == profile.http2 && p.verify == profile.verify && p.ca_file == profile.ca_file
    }) {
        Some(index) => index,
        None => {
            main.client_profiles.push(profile);
            main.client_profiles.len() - 1
        }
    };

    let endpoint = match main.endpoints.iter().position(|url| *url == decision_url) {
        Some(index) => index,
        None => {
            main.endpoints.push(decision_url.clone());
            main.endpoints.len() - 1
        }
    };

    let key = match &conf.pass_secret {
        Some(key) => key.clone(),
        None => match &main.random_pass_key {
            Some(key) => key.clone(),
            None => {
                let mut random = vec![0u8; MIN_KEY_BYTES];
                getrandom::fill(&mut random)
                    .map_err(|e| format!("cannot make a pass cookie key: {e}"))?;
                let key = Arc::new(PassKey::new(random)?);
                main.random_pass_key = Some(key.clone());
                key
            }
        },
    };
    conf.pass = Some(PassSettings {
        cookie: conf
            .pass_cookie
            .clone()
            .unwrap_or_else(|| DEFAULT_PASS_COOKIE.to_owned()),
        ttl: Duration::from_secs(conf.pass_ttl.max(0) as u64),
        key,
    });

    if let Some(Some((name, at))) = &conf.enforcement {
        let zone = main.zones.iter().find(|z| z.name == *name);
        conf.zone = Some(
            zone.ok_or_else(|| format!("unknown esper_enforcement_zone \"{name}\" in {at}"))?
                .clone(),
        );
    }

    conf.target = Some(Arc::new(Target {
        breaker: conf.breaker.unwrap_or(Some(BreakerSettings::default())),
        decision_url,
        verify_url,
        api_key,
        client_profile,
        endpoint,
    }));
    Ok(())
}
