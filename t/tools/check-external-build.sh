#!/bin/bash
# Proves the two ways to build the module for an nginx source tree of the
# user's, each loaded into the nginx built from that tree and run through a
# smoke part of t/: cargo with NGINX_SOURCE_DIR (no vendored nginx), and
# nginx's own build system (./configure --add-dynamic-module=<this repository>
# && make). The tree used here is a copy of the vendored nginx source.
set -euo pipefail
cd "$(dirname "$0")/../.."

work=${EXTERNAL_WORK_DIR:-$PWD/target/external}
src=$(scripts/vendored-nginx-source.sh)

rm -rf "$work/nginx"
mkdir -p "$work"
cp -r "$src" "$work/nginx"
(
    cd "$work/nginx"
    ./auto/configure --with-compat --with-threads --with-http_ssl_module \
        --with-http_realip_module --with-http_v2_module >"$work/configure.log" 2>&1
    make -j"$(nproc)" >"$work/make.log" 2>&1
)

NGINX_SOURCE_DIR="$work/nginx" cargo build --release --no-default-features --features export-modules \
    --target-dir "$work/target" -p ngx_http_esper_module

TEST_NGINX_BINARY="$work/nginx/objs/nginx" \
TEST_ESPER_MODULE="$work/target/release/libngx_http_esper_module.so" \
    prove t/actions.t t/payload.t

root=$PWD
(
    cd "$work/nginx"
    NGX_ESPER_TARGET_DIR="$work/target" ./auto/configure --with-compat --with-threads \
        --with-http_ssl_module --with-http_realip_module --with-http_v2_module \
        --add-dynamic-module="$root" >"$work/configure-addon.log" 2>&1
    make -j"$(nproc)" >"$work/make-addon.log" 2>&1 ||
        { tail -30 "$work/make-addon.log" >&2; exit 1; }
)
TEST_NGINX_BINARY="$work/nginx/objs/nginx" \
TEST_ESPER_MODULE="$work/nginx/objs/ngx_http_esper_module.so" \
    prove t/actions.t t/payload.t
