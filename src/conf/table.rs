//! The `esper_*` directives' table: names, contexts, arguments, and the
//! handler (this module's, in `conf/directives.rs`, or nginx's own slots)
//! that parses each one.

use std::ffi::{c_char, c_void};
use std::mem::offset_of;
use std::ptr::{addr_of, null_mut};

use ngx::ffi::{
    ngx_command_t, ngx_conf_enum_t, ngx_conf_set_enum_slot, ngx_conf_set_flag_slot,
    ngx_conf_set_msec_slot, ngx_conf_set_num_slot, ngx_conf_set_sec_slot, ngx_conf_t, ngx_str_t,
    ngx_uint_t, NGX_CONF_1MORE, NGX_CONF_FLAG, NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_CONF_TAKE12,
    NGX_CONF_TAKE2, NGX_CONF_TAKE3, NGX_CONF_TAKE4, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET,
    NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_SRV_CONF,
};
use ngx::ngx_string;

use super::directives::*;
use super::*;

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
    ngx_conf_enum_t { name: ngx_string!("allow"), value: FAILURE_ALLOW },
    ngx_conf_enum_t { name: ngx_string!("block"), value: FAILURE_BLOCK },
    ngx_conf_enum_t { name: ngx_str_t::empty(), value: 0 },
];

static mut JSON_RESPONSES: [ngx_conf_enum_t; 4] = [
    ngx_conf_enum_t { name: ngx_string!("auto"), value: JSON_AUTO },
    ngx_conf_enum_t { name: ngx_string!("on"), value: JSON_ON },
    ngx_conf_enum_t { name: ngx_string!("off"), value: JSON_OFF },
    ngx_conf_enum_t { name: ngx_str_t::empty(), value: 0 },
];

static mut HTTP2_MODES: [ngx_conf_enum_t; 4] = [
    ngx_conf_enum_t { name: ngx_string!("auto"), value: HTTP2_AUTO },
    ngx_conf_enum_t { name: ngx_string!("on"), value: HTTP2_ON },
    ngx_conf_enum_t { name: ngx_string!("off"), value: HTTP2_OFF },
    ngx_conf_enum_t { name: ngx_str_t::empty(), value: 0 },
];

static mut MODES: [ngx_conf_enum_t; 3] = [
    ngx_conf_enum_t { name: ngx_string!("enforce"), value: MODE_ENFORCE },
    ngx_conf_enum_t { name: ngx_string!("monitor"), value: MODE_MONITOR },
    ngx_conf_enum_t { name: ngx_str_t::empty(), value: 0 },
];

pub static mut COMMANDS: [ngx_command_t; 29] = [
    command(
        ngx_string!("esper"),
        NGX_CONF_FLAG,
        set_enable,
        offset_of!(LocConf, enable),
        null_mut(),
    ),
    command(ngx_string!("esper_api_url"), NGX_CONF_TAKE1, set_api_url, 0, null_mut()),
    command(ngx_string!("esper_api_key"), NGX_CONF_TAKE1, set_api_key, 0, null_mut()),
    command(ngx_string!("esper_api_key_file"), NGX_CONF_TAKE1, set_api_key_file, 0, null_mut()),
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
    command(ngx_string!("esper_block_status"), NGX_CONF_TAKE1, set_block_status, 0, null_mut()),
    command(
        ngx_string!("esper_challenge_status"),
        NGX_CONF_TAKE1,
        set_challenge_status,
        0,
        null_mut(),
    ),
    command(ngx_string!("esper_return_url"), NGX_CONF_TAKE1, set_return_url, 0, null_mut()),
    command(ngx_string!("esper_field"), NGX_CONF_TAKE2, set_field, 0, null_mut()),
    command(ngx_string!("esper_source"), NGX_CONF_TAKE1, set_source, 0, null_mut()),
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
        NGX_CONF_TAKE1 | NGX_CONF_TAKE2 | NGX_CONF_TAKE3 | NGX_CONF_TAKE4,
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
    command(ngx_string!("esper_hybrid_key"), NGX_CONF_TAKE1, set_hybrid_key, 0, null_mut()),
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
        NGX_CONF_TAKE1,
        ngx_conf_set_enum_slot,
        offset_of!(LocConf, http2),
        addr_of!(HTTP2_MODES) as *mut c_void,
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
    command(ngx_string!("esper_bypass"), NGX_CONF_1MORE, set_bypass, 0, null_mut()),
    command(
        ngx_string!("esper_json_response"),
        NGX_CONF_TAKE1,
        ngx_conf_set_enum_slot,
        offset_of!(LocConf, json_response_index),
        addr_of!(JSON_RESPONSES) as *mut c_void,
    ),
    command(ngx_string!("esper_enforcement"), NGX_CONF_TAKE1, set_enforcement, 0, null_mut()),
    ngx_command_t::empty(),
];
