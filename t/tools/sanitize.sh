#!/bin/bash
# `make sanitize`: the t/ suite against an nginx built with AddressSanitizer.
# The module is loaded into that nginx as it is built for production: ASan
# checks nginx's own code (which walks the lists and buffers the module
# touches, such as request headers after the module removed some) and every
# malloc/free of the process, the module's included. Leak checking is off:
# nginx does not free its pools when a process exits. The packaging tests
# (docker.t, image.t) build their own modules and do not apply, and
# header_alloc.t preloads a malloc of its own, which cannot run beside
# ASan's (ASan must own malloc from the process's start).
set -euo pipefail
cd "$(dirname "$0")/../.."

target=${SANITIZE_TARGET_DIR:-$PWD/target/sanitize}
export NGX_CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g"
export NGX_LDFLAGS="-fsanitize=address"
cargo build --release --target-dir "$target" -p ngx_http_esper_module
cargo build --release -p esper-mock

export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$target/asan"
rm -f "$target"/asan.*
TEST_SANITIZER=address \
TEST_NGINX_BINARY="$(cat "$target/release/nginx-build-dir")/nginx" \
TEST_ESPER_MODULE="$target/release/libngx_http_esper_module.so" \
    prove $(ls t/*.t | grep -v -e '^t/docker\.t$' -e '^t/image\.t$' -e '^t/header_alloc\.t$')

if ls "$target"/asan.* >/dev/null 2>&1; then
    echo "AddressSanitizer reports:" >&2
    cat "$target"/asan.* >&2
    exit 1
fi
echo "AddressSanitizer: no reports"
