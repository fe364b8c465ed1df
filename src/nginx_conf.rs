//! A safe face on nginx's configuration context (`ngx_conf_t`) for the
//! directive handlers and the merge: the directive's arguments and position,
//! file names, compiled values, errors.

use std::mem::zeroed;

use ngx::core::Pool;
use ngx::ffi::{
    ngx_conf_full_name, ngx_conf_t, ngx_http_compile_complex_value,
    ngx_http_compile_complex_value_t, ngx_http_complex_value_t, ngx_pcalloc, ngx_str_t,
    NGX_LOG_EMERG, NGX_OK,
};

pub trait ConfExt {
    /// The directive's words, its name first.
    fn args(&self) -> &[ngx_str_t];
    /// "file:line" of the directive being read.
    fn position(&self) -> String;
    /// `name` made absolute from nginx's configuration prefix.
    fn full_name(&self, name: ngx_str_t) -> Result<String, String>;
    /// `value`, which may hold variables, compiled for requests. `value`
    /// must live as long as the configuration (directive words and statics
    /// do).
    fn compile(&self, value: ngx_str_t) -> Result<&'static ngx_http_complex_value_t, String>;
    /// The configuration's pool, which frees (and drops) what it holds with
    /// the configuration.
    fn pool(&self) -> Pool;
    /// An `emerg` line, with the file and line of the directive.
    fn emerg(&self, message: &str);
}

impl ConfExt for ngx_conf_t {
    fn args(&self) -> &[ngx_str_t] {
        // SAFETY: while a directive is read, `args` is nginx's array of its
        // words, as ngx_str_t values.
        unsafe { (*self.args).as_slice::<ngx_str_t>() }
    }

    fn position(&self) -> String {
        // SAFETY: while a file is read, `conf_file` is that file.
        let file = unsafe { &*self.conf_file };
        format!("{}:{}", String::from_utf8_lossy(file.file.name.as_bytes()), file.line)
    }

    fn full_name(&self, mut name: ngx_str_t) -> Result<String, String> {
        // SAFETY: the cycle is live while its configuration is read; the
        // result is allocated in the cycle pool.
        if unsafe { ngx_conf_full_name(self.cycle, &mut name, 1) } != NGX_OK as isize {
            return Err("cannot resolve the file name".to_owned());
        }
        Ok(String::from_utf8_lossy(name.as_bytes()).into_owned())
    }

    fn compile(&self, mut value: ngx_str_t) -> Result<&'static ngx_http_complex_value_t, String> {
        // nginx's compiler changes what the context points at (the core
        // module's variables), not the context itself.
        let cf = (self as *const ngx_conf_t).cast_mut();
        // SAFETY: the compiled value is allocated in the configuration pool
        // and lives as long as the configuration, as `value` does; the
        // configuration outlives every request that reads it (as the `ngx`
        // crate's configuration accessors say with their 'static).
        unsafe {
            let cv: *mut ngx_http_complex_value_t =
                ngx_pcalloc(self.pool, size_of::<ngx_http_complex_value_t>()).cast();
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
                    String::from_utf8_lossy(value.as_bytes())
                ));
            }
            Ok(&*cv)
        }
    }

    fn pool(&self) -> Pool {
        // SAFETY: the configuration pool lives as long as the configuration.
        unsafe { Pool::from_ngx_pool(self.pool) }
    }

    fn emerg(&self, message: &str) {
        let cf = (self as *const ngx_conf_t).cast_mut();
        ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", message);
    }
}
