//! Passes nginx-sys's feature checks to the compiler and records which nginx
//! build the module was compiled against, so `make test` runs that very binary;
//! keeps a vendored nginx that was just configured from rebuilding everything
//! on the next cargo command.

use std::env;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
        settle_vendored_nginx(&out_dir, Path::new(&build_dir));
        std::fs::write(profile_dir.join("nginx-build-dir"), build_dir + "\n")
            .expect("cannot record the nginx build directory");
    }
}

/// nginx-sys asks cargo to run its build script again when the vendored
/// nginx's `objs/Makefile` or `objs/ngx_auto_config.h` change, but that
/// very run writes them (nginx's configure) after cargo noted its start. So
/// the next cargo command in this target directory (the build of `make run`
/// after `make test`) found them changed, ran the script again (which then
/// skips configure) and rebuilt ngx and this module: about a minute, once
/// after every configure. Dating the two files back to before the run
/// started keeps the next command fresh; nginx's make only needs them older
/// than its objects, which they still are. Only the vendored nginx, in
/// nginx-sys's OUT_DIR under this target directory, is touched: never a
/// tree named by NGINX_BUILD_DIR or NGINX_SOURCE_DIR.
fn settle_vendored_nginx(out_dir: &Path, build_dir: &Path) {
    // <target>/<profile>/build, and nginx-sys's <build>/nginx-sys-<hash>/out/objs.
    let (Some(builds), Some(run_dir)) = (out_dir.ancestors().nth(2), build_dir.ancestors().nth(2))
    else {
        return;
    };
    if run_dir.parent() != Some(builds) {
        return;
    }
    let Ok(started) =
        std::fs::metadata(run_dir.join("invoked.timestamp")).and_then(|m| m.modified())
    else {
        return;
    };
    let before = started - Duration::from_secs(1);
    for name in ["Makefile", "ngx_auto_config.h"] {
        let path = build_dir.join(name);
        let written_by_the_run = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified >= before);
        if written_by_the_run {
            if let Ok(file) = File::options().write(true).open(&path) {
                let _ = file.set_modified(before);
            }
        }
    }
}
