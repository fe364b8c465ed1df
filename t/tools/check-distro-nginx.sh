#!/bin/bash
# Proves `make module` against the distribution's nginx: on Debian or Ubuntu,
# installs nginx and nginx-dev (without starting the service), builds the
# module for /usr/sbin/nginx, and runs a smoke part of t/ with that very
# nginx binary. Elsewhere it says so and does nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v apt-get >/dev/null; then
    echo "not a Debian-like system: the distribution nginx check does not apply"
    exit 0
fi
missing=()
for p in nginx-core nginx-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    # Install without starting the distribution's nginx service.
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
        { $sudo rm -f /usr/sbin/policy-rc.d; exit 1; }
    $sudo rm -f /usr/sbin/policy-rc.d
fi

version=$(/usr/sbin/nginx -v 2>&1 | sed -n 's|^nginx version: [^/]*/\([0-9.]*\).*|\1|p')
NGX_ESPER_TARGET_DIR=${NGX_ESPER_TARGET_DIR:-$PWD/target/external/target} \
    NGINX=/usr/sbin/nginx scripts/build-for-nginx.sh
TEST_NGINX_BINARY=/usr/sbin/nginx \
TEST_ESPER_MODULE="$PWD/target/nginx-$version/ngx_http_esper_module.so" \
    prove t/actions.t t/payload.t t/failure.t t/challenge.t
