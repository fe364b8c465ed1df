//! How each `esper_*` directive is parsed into the block's `LocConf` (or, for
//! `esper_enforcement_zone`, the `MainConf`); the table is `conf/table.rs`.

use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::Duration;

use esper_protocol::breaker::BreakerSettings;
use esper_protocol::config::{self as values, ApiUrl};
use esper_protocol::entity_table::Layout;
use esper_protocol::pass::PassKey;
use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{ngx_command_t, ngx_conf_t, ngx_parse_time, ngx_str_t};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::*;
use crate::ffi::borrowed_str;
use crate::log::guard;
use crate::nginx_conf::ConfExt;
use crate::{shm, Module};

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
/// directive's words.
macro_rules! directive_handler {
    ($name:ident, |$cf:ident, $conf:ident, $args:ident| $body:block) => {
        pub(super) extern "C" fn $name(
            cf: *mut ngx_conf_t,
            cmd: *mut ngx_command_t,
            conf: *mut c_void,
        ) -> *mut c_char {
            directive(cf, cmd, conf, |$cf, $conf, $args| $body)
        }
    };
}

/// Runs a directive body with the configuration context, this block's
/// `LocConf` and the directive's words (its name first), turning an error
/// into nginx's "message in file:line".
fn directive(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
    body: impl FnOnce(&ngx_conf_t, &mut LocConf, &[ngx_str_t]) -> SetResult,
) -> *mut c_char {
    guard(NGX_CONF_ERROR, || {
        with_handler_args(cf, cmd, conf, |cf, cmd, conf: &mut LocConf| {
            match body(cf, conf, cf.args()) {
                Ok(()) => NGX_CONF_OK,
                Err(SetError::Duplicate) => {
                    let name = String::from_utf8_lossy(cmd.name.as_bytes());
                    cf.emerg(&format!("\"{name}\" directive is duplicate"));
                    NGX_CONF_ERROR
                }
                Err(SetError::Invalid(message)) => {
                    cf.emerg(&message);
                    NGX_CONF_ERROR
                }
            }
        })
    })
}

fn text(arg: &ngx_str_t) -> Result<&str, SetError> {
    std::str::from_utf8(arg.as_bytes())
        .map_err(|_| SetError::Invalid("argument is not valid UTF-8".to_owned()))
}

fn once(is_set: bool) -> SetResult {
    if is_set {
        Err(SetError::Duplicate)
    } else {
        Ok(())
    }
}

directive_handler!(set_enable, |cf, conf, args| {
    once(conf.enable != UNSET_FLAG)?;
    // Read as nginx's flag slot reads it, with its words.
    conf.enable = match args[1].as_bytes() {
        on if on.eq_ignore_ascii_case(b"on") => 1,
        off if off.eq_ignore_ascii_case(b"off") => 0,
        other => {
            let other = String::from_utf8_lossy(other);
            let message = format!(
                "invalid value \"{other}\" in \"esper\" directive, it must be \"on\" or \"off\""
            );
            return Err(SetError::Invalid(message));
        }
    };
    conf.enabled_at = Some(cf.position());
    Ok(())
});

/// `esper_enforcement_zone zone=NAME:SIZE [ttl=TIME];`
pub(super) extern "C" fn set_enforcement_zone(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(NGX_CONF_ERROR, || {
        with_handler_args(cf, cmd, conf, |cf, _, main: &mut MainConf| match parse_enforcement_zone(
            cf, main,
        ) {
            Ok(()) => NGX_CONF_OK,
            Err(message) => {
                cf.emerg(&message);
                NGX_CONF_ERROR
            }
        })
    })
}

fn parse_enforcement_zone(cf: &ngx_conf_t, main: &mut MainConf) -> Result<(), String> {
    let mut zone = None;
    let mut ttl = Duration::from_secs(DEFAULT_ENFORCEMENT_TTL_SECS);
    for arg in &cf.args()[1..] {
        let arg = String::from_utf8_lossy(arg.as_bytes());
        let invalid = || format!("invalid parameter \"{arg}\"");
        if let Some(spec) = arg.strip_prefix("zone=") {
            let (name, size) = spec.rsplit_once(':').ok_or_else(invalid)?;
            if name.is_empty() {
                return Err(format!("invalid zone name \"{arg}\""));
            }
            let size = size_bytes(size).ok_or_else(|| format!("invalid zone size \"{arg}\""))?;
            let layout = (size >= MIN_ZONE_PAGES * crate::ffi::page_size())
                .then(|| Layout::fitting(shm::usable_bytes(size), MIN_ZONE_ENTRIES))
                .flatten()
                .ok_or_else(|| format!("zone \"{name}\" is too small"))?;
            zone = Some((name.to_owned(), size, layout));
        } else if let Some(value) = arg.strip_prefix("ttl=") {
            let ms = time_ms(value).filter(|&ms| ms >= 1000).ok_or_else(invalid)?;
            ttl = Duration::from_millis(ms);
        } else {
            return Err(invalid());
        }
    }
    let (name, size, layout) = zone.ok_or("\"zone\" parameter is missing")?;
    if name == METRICS_ZONE {
        return Err(format!("the zone name \"{name}\" is the module's own"));
    }
    if main.zones.iter().any(|z| z.name == name) {
        return Err(format!("duplicate zone \"{name}\""));
    }
    let mut zone = Rc::new(EnforcementZone { name, ttl, shm: NonNull::dangling(), size, layout });
    // nginx keeps the name without a copy: it lies in the zone's settings,
    // which live as long as the configuration. `enforcement::init_zones`
    // says what fills the zone.
    let shm = shm::add(cf, &zone.name, size, None, std::ptr::null_mut())?;
    Rc::get_mut(&mut zone).expect("not shared yet").shm = shm;
    main.zones.push(zone);
    Ok(())
}

/// Runs `f` with what a directive handler gets, borrowed: nginx's live
/// configuration context, the command, and this block's configuration of
/// the module (a `T` made by create_main_conf or create_loc_conf, as the
/// command's context says).
fn with_handler_args<T, R>(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
    f: impl FnOnce(&ngx_conf_t, &ngx_command_t, &mut T) -> R,
) -> R {
    // SAFETY: nginx calls a directive handler with these three live for the
    // time it runs, and the table gives each command the context whose
    // configuration is a `T`.
    unsafe { f(&*cf, &*cmd, &mut *conf.cast::<T>()) }
}

/// An nginx size ("32k", "10m") in bytes, more than zero.
fn size_bytes(value: &str) -> Option<usize> {
    let n = parse_ngx(value, Unit::Size);
    (n > 0).then_some(n as usize)
}

/// Which of nginx's value parsers.
enum Unit {
    Size,
    Time,
}

/// `value` as nginx's size or time parser reads it (so that it accepts what
/// nginx's own directives accept).
fn parse_ngx(value: &str, unit: Unit) -> isize {
    let mut s = borrowed_str(value.as_bytes());
    // SAFETY: both parsers only read the string.
    unsafe {
        match unit {
            Unit::Size => ngx::ffi::ngx_parse_size(&mut s),
            Unit::Time => ngx_parse_time(&mut s, 0),
        }
    }
}

directive_handler!(set_enforcement, |cf, conf, args| {
    once(conf.enforcement.is_some())?;
    conf.enforcement = Some(match text(&args[1])? {
        "off" => None,
        name => Some((name.to_owned(), cf.position())),
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

/// The key is set once per level, by `esper_api_key` or by
/// `esper_api_key_file`, never by both.
fn claim_api_key(conf: &mut LocConf, directive: &'static str) -> SetResult {
    match conf.api_key_directive {
        Some(set) if set == directive => Err(SetError::Duplicate),
        Some(set) => Err(format!("\"{directive}\" and \"{set}\" cannot both be set here").into()),
        None => {
            conf.api_key_directive = Some(directive);
            Ok(())
        }
    }
}

directive_handler!(set_api_key, |_cf, conf, args| {
    claim_api_key(conf, "esper_api_key")?;
    set_string(&mut conf.api_key, &args[1], values::check_api_key)
});

// `esper_api_key_file FILE;`: the key is the file's first line, trimmed,
// read now, so that neither nginx.conf nor `nginx -T` shows it. No message
// repeats what the file holds.
directive_handler!(set_api_key_file, |cf, conf, args| {
    claim_api_key(conf, "esper_api_key_file")?;
    let path = cf.full_name(args[1])?;
    let content = std::fs::read(&path).map_err(|e| format!("cannot read \"{path}\": {e}"))?;
    let line = content.split(|&b| b == b'\n').next().unwrap_or_default();
    let key = std::str::from_utf8(line.trim_ascii())
        .map_err(|_| format!("invalid API key in \"{path}\": it is not valid UTF-8"))?;
    if key.is_empty() {
        return Err(format!("no API key in \"{path}\": its first line is empty").into());
    }
    values::check_api_key(key).map_err(|e| format!("{e} (in \"{path}\")"))?;
    conf.api_key = Some(key.to_owned());
    Ok(())
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
    once(conf.return_url.is_some())?;
    conf.return_url = Some(cf.compile(args[1])?);
    Ok(())
});

directive_handler!(set_field, |cf, conf, args| {
    let name = text(&args[1])?;
    values::check_name("field name", name)?;
    let fields = conf.fields.get_or_insert_with(Vec::new);
    if fields.iter().any(|f| f.name == name) {
        return Err(format!("duplicate field \"{name}\"").into());
    }
    fields.push(Field { name: name.to_owned(), value: cf.compile(args[2])? });
    Ok(())
});

directive_handler!(set_source, |_cf, conf, args| {
    set_string(&mut conf.source, &args[1], |v| values::check_name("source", v))
});

directive_handler!(set_trusted_certificate, |cf, conf, args| {
    once(conf.ssl_trusted_certificate.is_some())?;
    let path = cf.full_name(args[1])?;
    let pem = std::fs::read(&path).map_err(|e| format!("cannot read \"{path}\": {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot load \"{path}\": {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in \"{path}\"").into());
    }
    conf.ssl_trusted_certificate = Some((path, Arc::new(certs)));
    Ok(())
});

directive_handler!(set_pass_cookie, |_cf, conf, args| {
    once(conf.pass_cookie.is_some())?;
    let words = args[1..].iter().map(text).collect::<Result<Vec<_>, _>>()?;
    conf.pass_cookie = Some(values::parse_pass_cookie(&words)?);
    Ok(())
});

directive_handler!(set_pass_secret_file, |cf, conf, args| {
    once(conf.pass_secret.is_some())?;
    let path = cf.full_name(args[1])?;
    let mut secret = std::fs::read(&path).map_err(|e| format!("cannot read \"{path}\": {e}"))?;
    // A key written by `openssl rand -hex 32 > file` ends in a newline.
    while secret.last().is_some_and(u8::is_ascii_whitespace) {
        secret.pop();
    }
    let key = PassKey::new(secret).map_err(|e| format!("unusable secret in \"{path}\": {e}"))?;
    conf.pass_secret = Some(Arc::new(key));
    Ok(())
});

directive_handler!(set_bypass, |cf, conf, args| {
    // Like nginx's own predicates (`proxy_no_cache`): the values of every
    // `esper_bypass` of the block.
    let values = conf.bypass.get_or_insert_with(Vec::new);
    for value in &args[1..] {
        values.push(cf.compile(*value)?);
    }
    Ok(())
});

directive_handler!(set_hybrid_key, |cf, conf, args| {
    once(conf.hybrid_key.is_some())?;
    conf.hybrid_key = Some(cf.compile(args[1])?);
    Ok(())
});

directive_handler!(set_circuit_breaker, |_cf, conf, args| {
    once(conf.breaker.is_some())?;
    if args.len() == 2 && args[1].as_bytes() == b"off" {
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

directive_handler!(set_metrics, |cf, conf, _args| {
    once(conf.metrics)?;
    conf.metrics = true;
    let handler = Module::main_conf(cf).and_then(|main| main.metrics_handler);
    let clcf = NgxHttpCoreModule::location_conf_mut(cf);
    match (handler, clcf) {
        (Some(handler), Some(clcf)) => clcf.handler = Some(handler),
        _ => return Err(SetError::Invalid("cannot set the metrics handler".to_owned())),
    }
    Ok(())
});

/// An nginx time ("500ms", "10s", "1m") in milliseconds, more than zero.
fn time_ms(value: &str) -> Option<u64> {
    let ms = parse_ngx(value, Unit::Time);
    (ms > 0).then_some(ms as u64)
}
