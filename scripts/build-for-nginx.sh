#!/bin/bash
# `make module NGINX=/usr/sbin/nginx`: builds the module for the nginx you
# run. A dynamic module must match that nginx's version and configure
# arguments, so this reads them (`nginx -V`), configures a source tree of the
# same version with them plus --add-dynamic-module=<this repository>, and
# builds with nginx's own build system. The source tree is, in order:
# NGINX_SOURCE if set; the tarball at NGINX_SOURCE_URL if set; the
# distribution's (Debian's and Ubuntu's nginx-dev package: /usr/share/nginx/src,
# configured with its conf_flags); the vendored nginx source when its version
# matches; with NGINX_SOURCE_DOWNLOAD=yes, nginx.org's release tarball.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

nginx=${NGINX:-/usr/sbin/nginx}
[ -x "$nginx" ] || { echo "no nginx at $nginx (set NGINX=/path/to/nginx)" >&2; exit 1; }
version=$("$nginx" -v 2>&1 | sed -n 's|^nginx version: [^/]*/\([0-9.]*\).*|\1|p')
[ -n "$version" ] || { echo "cannot read the version of $nginx" >&2; exit 1; }

source_version() { sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$1/src/core/nginx.h" 2>/dev/null; }

vendored=$(scripts/vendored-nginx-source.sh)

work=$(realpath -m "${MODULE_WORK_DIR:-$root/target/nginx-$version}")
mkdir -p "$work"

download() {
    echo "downloading $1"
    rm -rf "$work/download"
    mkdir -p "$work/download"
    curl -fsSL "$1" | tar -xz -C "$work/download" --strip-components=1
    src=$work/download
}

flags=()
if [ -n "${NGINX_SOURCE:-}" ]; then
    src=$NGINX_SOURCE
elif [ -n "${NGINX_SOURCE_URL:-}" ]; then
    download "$NGINX_SOURCE_URL"
elif [ "$(source_version /usr/share/nginx/src)" = "$version" ]; then
    src=/usr/share/nginx/src
    # shellcheck disable=SC1091
    . /usr/share/nginx/src/conf_flags
    flags=("${NGX_CONF_FLAGS[@]}")
elif [ "$(source_version "$vendored")" = "$version" ]; then
    src=$vendored
elif [ "${NGINX_SOURCE_DOWNLOAD:-}" = yes ]; then
    download "https://nginx.org/download/nginx-$version.tar.gz"
else
    echo "no source of nginx $version: install your distribution's nginx-dev package," >&2
    echo "or set NGINX_SOURCE=/path/to/nginx-$version, or NGINX_SOURCE_URL to its tarball," >&2
    echo "or NGINX_SOURCE_DOWNLOAD=yes to fetch it from nginx.org" >&2
    exit 1
fi
[ "$(source_version "$src")" = "$version" ] ||
    { echo "$src holds nginx $(source_version "$src"), not $version" >&2; exit 1; }

if [ ${#flags[@]} -eq 0 ]; then
    # The target's own configure arguments, without modules whose sources
    # are not here and without its build directory.
    eval "set -- $("$nginx" -V 2>&1 | sed -n 's/^configure arguments: //p')"
    for arg in "$@"; do
        case "$arg" in
            --add-module=* | --add-dynamic-module=* | --builddir=*) ;;
            *) flags+=("$arg") ;;
        esac
    done
fi
# Extra compiler and linker options for the module (make deb passes
# Debian's hardening flags), added to the target's own.
add_opt() { # option, value
    local i
    for i in "${!flags[@]}"; do
        case "${flags[$i]}" in "$1="*) flags[$i]="${flags[$i]} $2"; return ;; esac
    done
    flags+=("$1=$2")
}
[ -z "${MODULE_CC_OPT:-}" ] || add_opt --with-cc-opt "$MODULE_CC_OPT"
[ -z "${MODULE_LD_OPT:-}" ] || add_opt --with-ld-opt "$MODULE_LD_OPT"
case " ${flags[*]} " in
    *" --with-compat "*) ;;
    *) echo "warning: $nginx was not configured --with-compat; the module must then match its build exactly" >&2 ;;
esac

cargo_target=$(realpath -m "${NGX_ESPER_TARGET_DIR:-$work/cargo}")
rm -rf "$work/src-tree"
cp -r "$src" "$work/src-tree"
(
    cd "$work/src-tree"
    configure=./configure
    [ -x "$configure" ] || configure=./auto/configure    # nginx's own repository layout
    NGX_ESPER_TARGET_DIR=$cargo_target \
        "$configure" "${flags[@]}" --add-dynamic-module="$root" >"$work/configure.log" 2>&1 ||
        { tail -20 "$work/configure.log" >&2; exit 1; }
    make -f objs/Makefile modules >"$work/make.log" 2>&1 ||
        { tail -30 "$work/make.log" >&2; exit 1; }
)
cp "$work/src-tree/objs/ngx_http_esper_module.so" "$work/ngx_http_esper_module.so"
cat <<MSG
built for nginx $version: $work/ngx_http_esper_module.so
install it into that nginx's modules directory and add to nginx.conf:
    load_module modules/ngx_http_esper_module.so;
MSG
