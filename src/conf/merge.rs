//! How a block inherits the `esper_*` directives, and where `esper on`, what
//! its requests use: checked values, the target (URLs, key, client profile,
//! endpoint), the pass settings and the enforcement zone.

use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::Duration;

use esper_client::Http2;
use esper_protocol::breaker::BreakerSettings;
use esper_protocol::pass::{PassCookie, PassKey, Project, MIN_KEY_BYTES};
use esper_protocol::response::JsonMode;
use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{ngx_conf_t, ngx_str_t, NGX_LOG_EMERG};
use ngx::http::HttpModuleMainConf;
use ngx::ngx_string;

use super::*;
use crate::log::{guard, log_error};
use crate::nginx_conf::ConfExt;
use crate::Module;

const DEFAULT_FIELD_VALUE: ngx_str_t = ngx_string!("$host");

pub extern "C" fn merge_loc_conf(
    cf: *mut ngx_conf_t,
    parent: *mut c_void,
    child: *mut c_void,
) -> *mut c_char {
    guard(NGX_CONF_ERROR, || {
        // SAFETY: nginx passes its live configuration context and two
        // distinct LocConf values made by create_loc_conf.
        let (cf, prev, conf) =
            unsafe { (&*cf, &*parent.cast::<LocConf>(), &mut *child.cast::<LocConf>()) };
        inherit_settings(prev, conf);
        inherit_values(prev, conf);
        if conf.metrics {
            // A scrape is never sent to Esper, whatever the location inherits
            // or says: monitoring must not depend on Esper, nor cost calls.
            conf.enable = 0;
        }
        match resolve(cf, conf) {
            Ok(()) => NGX_CONF_OK,
            Err(message) => {
                // The message names the file and line of `esper on`.
                log_error(NGX_LOG_EMERG, cf.log, &message);
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

/// Switches, numbers and the typed settings built from them.
fn inherit_settings(prev: &LocConf, conf: &mut LocConf) {
    inherit(&mut conf.enable, prev.enable, UNSET_FLAG, 0);
    inherit_clone(&mut conf.enabled_at, &prev.enabled_at);
    inherit(&mut conf.timeout, prev.timeout, UNSET_MSEC, DEFAULT_TIMEOUT_MS);
    inherit(&mut conf.failure_action_index, prev.failure_action_index, UNSET_UINT, FAILURE_ALLOW);
    conf.policy.on_failure = match conf.failure_action_index {
        FAILURE_BLOCK => FailureAction::Block,
        _ => FailureAction::Allow,
    };
    inherit(&mut conf.mode_index, prev.mode_index, UNSET_UINT, MODE_ENFORCE);
    conf.policy.mode = match conf.mode_index {
        MODE_MONITOR => Mode::Monitor,
        _ => Mode::Enforce,
    };
    inherit(&mut conf.json_response_index, prev.json_response_index, UNSET_UINT, JSON_AUTO);
    conf.json_response = match conf.json_response_index {
        JSON_ON => JsonMode::On,
        JSON_OFF => JsonMode::Off,
        _ => JsonMode::Auto,
    };
    inherit(&mut conf.block_status, prev.block_status, UNSET_UINT, 403);
    inherit(&mut conf.challenge_status, prev.challenge_status, UNSET_UINT, 302);
    inherit(&mut conf.send_cookies, prev.send_cookies, UNSET_FLAG, 0);
    inherit(&mut conf.ssl_verify, prev.ssl_verify, UNSET_FLAG, 1);
    inherit(&mut conf.http2, prev.http2, UNSET_UINT, HTTP2_AUTO);
    inherit(&mut conf.max_pending, prev.max_pending, UNSET_INT, DEFAULT_MAX_PENDING);
    inherit(&mut conf.pass_ttl, prev.pass_ttl, UNSET_TIME, DEFAULT_PASS_TTL_SECS);
    inherit(&mut conf.forward_decision_id, prev.forward_decision_id, UNSET_FLAG, 0);
}

/// Strings, files, compiled values and lists: a block that sets one
/// replaces the inherited one.
fn inherit_values(prev: &LocConf, conf: &mut LocConf) {
    inherit_clone(&mut conf.api_url, &prev.api_url);
    inherit_clone(&mut conf.api_key, &prev.api_key);
    inherit_clone(&mut conf.return_url, &prev.return_url);
    if conf.fields.is_none() {
        conf.fields = prev.fields.as_ref().map(|fields| {
            let copy = |f: &Field| Field { name: f.name.clone(), value: f.value };
            fields.iter().map(copy).collect()
        });
    }
    inherit_clone(&mut conf.source, &prev.source);
    inherit_clone(&mut conf.ssl_trusted_certificate, &prev.ssl_trusted_certificate);
    inherit_clone(&mut conf.breaker, &prev.breaker);
    inherit_clone(&mut conf.pass_cookie, &prev.pass_cookie);
    inherit_clone(&mut conf.pass_secret, &prev.pass_secret);
    inherit_clone(&mut conf.hybrid_key, &prev.hybrid_key);
    inherit_clone(&mut conf.enforcement, &prev.enforcement);
    inherit_clone(&mut conf.bypass, &prev.bypass);
}

/// Where `esper on`: checks what must be set and builds what requests use.
fn resolve(cf: &ngx_conf_t, conf: &mut LocConf) -> Result<(), String> {
    if conf.enable != 1 {
        return Ok(());
    }
    let at = conf.enabled_at.clone().unwrap_or_default();
    let Some(key) = conf.api_key.clone() else {
        return Err(format!(
            "\"esper on\" needs \"esper_api_key\" or \"esper_api_key_file\" in {at}"
        ));
    };
    for (zero, name) in [
        (conf.timeout == 0, "esper_timeout"),
        (conf.max_pending == 0, "esper_max_pending"),
        (conf.pass_ttl == 0, "esper_pass_ttl"),
    ] {
        if zero {
            return Err(format!("\"{name}\" must be more than 0 for \"esper on\" in {at}"));
        }
    }
    if conf.fields.is_none() {
        let host = Field { name: "host".to_owned(), value: cf.compile(DEFAULT_FIELD_VALUE)? };
        conf.fields = Some(vec![host]);
    }
    conf.source.get_or_insert_with(|| DEFAULT_SOURCE.to_owned());
    let main = Module::main_conf_mut(cf).ok_or("no main configuration")?;
    let target = target(conf, main, &key)?;
    let project = Project::new(target.decision_url.as_str(), key.as_bytes());
    conf.target = Some(Arc::new(target));
    conf.pass = Some(pass_settings(conf, main, project)?);
    if let Some(Some((name, at))) = &conf.enforcement {
        let zone = main.zones.iter().find(|z| z.name == *name);
        let zone =
            zone.ok_or_else(|| format!("unknown esper_enforcement_zone \"{name}\" in {at}"))?;
        conf.zone = Some(zone.clone());
    }
    Ok(())
}

/// Where and how the location asks Esper; its client profile and endpoint
/// are shared with the locations that have the same ones.
fn target(conf: &LocConf, main: &mut MainConf, key: &str) -> Result<Target, String> {
    let api_url = conf.api_url.clone().unwrap_or_default();
    let decision_url = url::Url::parse(&api_url.decision_url()).map_err(|e| e.to_string())?;
    let verify_url = url::Url::parse(&api_url.verify_url()).map_err(|e| e.to_string())?;
    let mut api_key = hyper::header::HeaderValue::from_str(key).map_err(|e| e.to_string())?;
    api_key.set_sensitive(true);
    let profile = ClientProfile {
        http2: match conf.http2 {
            HTTP2_ON => Http2::On,
            HTTP2_OFF => Http2::Off,
            _ => Http2::Auto,
        },
        verify: conf.ssl_verify == 1,
        ca_file: conf.ssl_trusted_certificate.as_ref().map(|(path, _)| path.clone()),
        ca_certs: conf.ssl_trusted_certificate.as_ref().map(|(_, certs)| certs.clone()),
    };
    let same_profile = |p: &ClientProfile| {
        p.http2 == profile.http2 && p.verify == profile.verify && p.ca_file == profile.ca_file
    };
    let client_profile = index_of(&mut main.client_profiles, same_profile, || profile.clone());
    let endpoint =
        index_of(&mut main.endpoints, |url| *url == decision_url, || decision_url.clone());
    Ok(Target {
        breaker: conf.breaker.unwrap_or(Some(BreakerSettings::default())),
        decision_url,
        verify_url,
        api_key,
        client_profile,
        endpoint,
    })
}

/// The index of the first item that `matches`, added by `make` if none does.
fn index_of<T>(
    items: &mut Vec<T>,
    matches: impl Fn(&T) -> bool,
    make: impl FnOnce() -> T,
) -> usize {
    items.iter().position(matches).unwrap_or_else(|| {
        items.push(make());
        items.len() - 1
    })
}

/// The pass cookie: its name, lifetime and signing key (the secret file's,
/// or one random key per configuration).
fn pass_settings(
    conf: &LocConf,
    main: &mut MainConf,
    project: Project,
) -> Result<PassSettings, String> {
    let key = match (&conf.pass_secret, &main.random_pass_key) {
        (Some(key), _) | (None, Some(key)) => key.clone(),
        (None, None) => {
            let mut random = vec![0u8; MIN_KEY_BYTES];
            getrandom::fill(&mut random)
                .map_err(|e| format!("cannot make a pass cookie key: {e}"))?;
            let key = Arc::new(PassKey::new(random)?);
            main.random_pass_key = Some(key.clone());
            key
        }
    };
    let cookie =
        conf.pass_cookie.clone().unwrap_or_else(|| PassCookie::new(DEFAULT_PASS_COOKIE.to_owned()));
    Ok(PassSettings {
        names: cookie.names(),
        cookie,
        ttl: Duration::from_secs(conf.pass_ttl.max(0) as u64),
        key,
        project,
    })
}
