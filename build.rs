//! Passes nginx-sys's feature checks to the compiler and records which nginx
//! build the module was compiled against, so `make test` runs that very binary.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES_CHECK");
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES");
    println!("cargo::rerun-if-env-changed=DEP_NGINX_BUILD_DIR");
    println!(
        "cargo::rustc-check-cfg=cfg(ngx_feature, values({}))",
        env::var("DEP_NGINX_FEATURES_CHECK").unwrap_or_else(|_| "any()".to_owned())
    );
    if let Ok(features) = env::var("DEP_NGINX_FEATURES") {
        for feature in features.split(',').map(str::trim) {
            println!("cargo::rustc-cfg=ngx_feature=\"{feature}\"");
        }
    }

    // nginx 1.23.0 linked repeated headers through `ngx_table_elt_t.next`;
    // older nginx (Debian 12 ships 1.22.1) has no such field.
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    println!("cargo::rustc-check-cfg=cfg(ngx_table_elt_next)");
    let version: u64 =
        env::var("DEP_NGINX_VERSION_NUMBER").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    if version >= 1_023_000 {
        println!("cargo::rustc-cfg=ngx_table_elt_next");
    }

    // OUT_DIR is <target>/<profile>/build/<crate>-<hash>/out.
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    if let (Some(profile_dir), Ok(build_dir)) =
        (out_dir.ancestors().nth(3), env::var("DEP_NGINX_BUILD_DIR"))
    {
        std::fs::write(profile_dir.join("nginx-build-dir"), build_dir + "\n")
            .expect("cannot record the nginx build directory");
    }
}
