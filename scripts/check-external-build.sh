#!/bin/bash
# Proves that the module builds against an nginx source tree of the user's
# (NGINX_SOURCE_DIR, no vendored feature) and that the result loads into the
# nginx built from that tree and passes a smoke part of t/. The tree used here
# is a copy of the vendored nginx source, configured as a distribution would.
set -euo pipefail
cd "$(dirname "$0")/.."

work=${EXTERNAL_WORK_DIR:-$PWD/target/external}
src=$(cargo metadata --format-version 1 --locked |
    perl -MJSON::PP -e 'my $m = decode_json(join "", <STDIN>);
        for (@{$m->{packages}}) { if ($_->{name} eq "nginx-src") { (my $d = $_->{manifest_path}) =~ s{/Cargo\.toml$}{/nginx}; print $d; last } }')
[ -d "$src" ] || { echo "nginx source of the nginx-src crate not found" >&2; exit 1; }

rm -rf "$work/nginx"
mkdir -p "$work"
cp -r "$src" "$work/nginx"
(
    cd "$work/nginx"
    ./auto/configure --with-compat --with-threads --with-http_ssl_module \
        --with-http_realip_module --with-http_v2_module >"$work/configure.log" 2>&1
    make -j"$(nproc)" >"$work/make.log" 2>&1
)

NGINX_SOURCE_DIR="$work/nginx" cargo build --release --no-default-features \
    --target-dir "$work/target" -p ngx_http_esper_module

TEST_NGINX_BINARY="$work/nginx/objs/nginx" \
TEST_ESPER_MODULE="$work/target/release/libngx_http_esper_module.so" \
    prove t/actions.t t/payload.t
