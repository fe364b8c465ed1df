#!/bin/bash
# The Docker image's build steps, kept here so CI runs them directly even
# where no image can be built (t/docker.t); the Dockerfile runs them too.
#
#   docker-build-steps.sh module OUT_DIR
#       Builds ngx_http_esper_module.so into OUT_DIR for the nginx at $NGINX
#       (default /usr/sbin/nginx), installing the build packages if missing,
#       without its debug information.
#       A version that is not vendored is downloaded from nginx.org.
#   docker-build-steps.sh conf NGINX_CONF OUT_FILE
#       Writes NGINX_CONF to OUT_FILE with the module loaded.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: $0 module OUT_DIR | conf NGINX_CONF OUT_FILE" >&2
    exit 2
}

case "${1:-}" in
    module)
        [ $# -eq 2 ] || usage
        out=$2
        scripts/install-deps.sh --build
        work=${MODULE_WORK_DIR:-$PWD/target/docker-module}
        MODULE_WORK_DIR=$work NGINX_SOURCE_DOWNLOAD=yes scripts/build-for-nginx.sh
        mkdir -p "$out"
        cp "$work/ngx_http_esper_module.so" "$out/"
        # Debug information is 40% of the file; the symbols stay for backtraces.
        strip --strip-debug "$out/ngx_http_esper_module.so"
        ;;
    conf)
        [ $# -eq 3 ] || usage
        load='load_module modules/ngx_http_esper_module.so;'
        if grep -q 'ngx_http_esper_module\.so' "$2"; then
            cp "$2" "$3"
        else
            { echo "$load"; echo; cat "$2"; } >"$3.tmp"
            mv "$3.tmp" "$3"
        fi
        ;;
    *) usage ;;
esac
