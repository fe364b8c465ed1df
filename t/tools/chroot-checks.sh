#!/bin/bash
# The distribution checks, run inside a chroot of t/tools/distro-chroot.sh
# (in its copy of the repository, as root) by t/tools/check-packages.sh.
# Never run it on a host: it installs and purges packages.
#
#   chroot-checks.sh module    make module for /usr/sbin/nginx, and the t/
#                              smoke set run in that nginx
#   chroot-checks.sh package   make deb, lintian, install, nginx -t, a site
#                              with `esper on` against the mock, purge
#   chroot-checks.sh refuse DEB    apt must refuse DEB (built for another nginx)
set -euo pipefail
cd "$(dirname "$0")/../.."

[ -f /usr/sbin/policy-rc.d ] && [ -d /build/esper ] ||
    { echo "$0 runs inside the check chroots only (t/tools/distro-chroot.sh)" >&2; exit 2; }

suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
passed=0
failed=0
ok() { echo "ok - [$suite] $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - [$suite] $*"; failed=$((failed + 1)); }
check() { # description, command...
    local what=$1
    shift
    if "$@"; then ok "$what"; else not_ok "$what"; fi
}
finish() { echo "[$suite] $1: $passed passed, $failed failed"; [ "$failed" -eq 0 ]; }

name=libnginx-mod-http-esper
link=/etc/nginx/modules-enabled/50-mod-http-esper.conf
version=$(/usr/sbin/nginx -v 2>&1 | sed -n 's|^nginx version: [^/]*/\([0-9.]*\).*|\1|p')

module() {
    local start=$SECONDS
    make module NGINX=/usr/sbin/nginx >target/module.log 2>&1 || { tail -30 target/module.log; exit 1; }
    echo "[$suite] module built for nginx $version in $((SECONDS - start)) s"
    TEST_NGINX_BINARY=/usr/sbin/nginx \
    TEST_ESPER_MODULE="$PWD/target/nginx-$version/ngx_http_esper_module.so" \
        prove t/actions.t t/payload.t t/failure.t t/challenge.t
}

mock_pid=""
mock_log=$PWD/target/mock.log
stop_all() {
    [ ! -f /run/nginx.pid ] || /usr/sbin/nginx -s quit 2>/dev/null || true
    [ -z "$mock_pid" ] || kill "$mock_pid" 2>/dev/null || true
}

status_of() { curl -s -o /dev/null -w '%{http_code}' "$1"; }

package() {
    local start=$SECONDS deb files port mock_port
    rm -rf target/deb
    make deb NGINX=/usr/sbin/nginx >target/deb.log 2>&1 || { tail -30 target/deb.log; exit 1; }
    deb=$(ls target/deb/${name}_*.deb)
    echo "[$suite] $(basename "$deb") built in $((SECONDS - start)) s"
    dpkg-deb --info "$deb" | sed -n 's/^ *\(Depends\|Version\):/[package] &/p'
    dpkg-deb --contents "$deb"
    local owner abi
    owner=$(dpkg-query -S /usr/sbin/nginx | cut -d: -f1)
    abi=$(dpkg-query -W -f='${Provides}' "$owner" | grep -o 'nginx-abi-[^ ,]*')
    echo "[$suite] /usr/sbin/nginx is $owner $(dpkg-query -W -f='${Version}' "$owner"), which provides $abi"
    check "Depends: on $abi" sh -c "dpkg-deb -f '$deb' Depends | tr ',' '\\n' | grep -qx ' *$abi'"

    # The copyright file: from the real licenses of what is linked.
    local copyright=target/copyright
    dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./usr/share/doc/$name/copyright >"$copyright"
    check "copyright: ring under Apache-2.0 AND ISC" grep -q '^License: Apache-2.0 AND ISC$' "$copyright"
    check "copyright: subtle under BSD-3-Clause" grep -A2 -q 'cargo-registry/subtle-' "$copyright"
    check "copyright: the Unicode-3.0 crates and nginx's BSD-2-Clause file" \
        sh -c "grep -q '^License: Unicode-3.0\$' '$copyright' && grep -q '^License: BSD-2-Clause\$' '$copyright'"
    check "copyright: the years come from the clone's history" \
        grep -q "^Copyright: $(git log --max-parents=0 --format=%cd --date=format:%Y HEAD | sort -n | sed -n 1p)" "$copyright"

    # lintian: every tag is either gone or overridden with its reason.
    lintian --info --display-info --pedantic "$deb" >target/lintian.log 2>&1 || true
    sed 's/^/[lintian] /' target/lintian.log
    check "lintian: no error, warning, info or pedantic tag left" \
        sh -c '! grep -q "^[EWIPX]: " target/lintian.log'

    check "apt install ./$(basename "$deb")" \
        sh -c "apt-get install -y -q --no-install-recommends './$deb' >target/install.log 2>&1 || { cat target/install.log; false; }"
    files=$(dpkg -L "$name")
    check "the module is in /usr/lib/nginx/modules" test -f /usr/lib/nginx/modules/ngx_http_esper_module.so
    check "modules-available/mod-http-esper.conf loads it" \
        grep -qx 'load_module modules/ngx_http_esper_module.so;' /usr/share/nginx/modules-available/mod-http-esper.conf
    check "enabled: $link" test "$(readlink "$link")" = /usr/share/nginx/modules-available/mod-http-esper.conf
    check "nginx -t passes with the module loaded" \
        sh -c '/usr/sbin/nginx -t 2>&1 | tee target/nginx-t.log | grep -q "test is successful"'

    # A site with `esper on` in the distribution's own configuration.
    trap stop_all EXIT
    target/release/esper-mock --listen 127.0.0.1:0 >"$mock_log" 2>&1 &
    mock_pid=$!
    for _ in $(seq 100); do grep -q 'listening on' "$mock_log" && break; sleep 0.05; done
    mock_port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$mock_log")
    port=$(perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1")->sockport')
    # The default site would listen on port 80 of the host's network.
    rm -f /etc/nginx/sites-enabled/default
    mkdir -p /var/www/esper-check
    echo application >/var/www/esper-check/index.html
    # Served from the content phase, after the access phase where Esper decides.
    cat >/etc/nginx/sites-enabled/esper-check <<SITE
server {
    listen 127.0.0.1:$port;
    root /var/www/esper-check;
    esper_api_url http://127.0.0.1:$mock_port;
    esper_api_key check-key;
    location / {
        esper on;
    }
}
SITE
    /usr/sbin/nginx
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.05; done
    curl -s -o /dev/null -X POST "http://127.0.0.1:$mock_port/__mock/reset"
    check "esper on: Esper's allow gives 200" test "$(status_of "http://127.0.0.1:$port/?mock_action=allow")" = 200
    check "esper on: Esper's block gives 403" test "$(status_of "http://127.0.0.1:$port/?mock_action=block")" = 403
    check "esper on: Esper's challenge gives 302" test "$(status_of "http://127.0.0.1:$port/?mock_action=challenge")" = 302
    check "the mock was asked 3 times" sh -c "curl -s http://127.0.0.1:$mock_port/__mock/count | grep -q '\"runtime\":3[,}]'"
    stop_all
    trap - EXIT
    for _ in $(seq 100); do [ -f /run/nginx.pid ] || break; sleep 0.05; done
    rm -rf /etc/nginx/sites-enabled/esper-check /var/www/esper-check

    check "apt purge $name" \
        sh -c "apt-get purge -y -q '$name' >target/purge.log 2>&1 || { cat target/purge.log; false; }"
    local left=() f
    while IFS= read -r f; do
        [ "$f" = /. ] && continue
        if [ -e "$f" ] || [ -L "$f" ]; then
            # Directories stay when they belong to another package too.
            [ -d "$f" ] && [ ! -L "$f" ] && dpkg-query -S "$f" >/dev/null 2>&1 && continue
            left+=("$f")
        fi
    done <<<"$files"
    [ -e "$link" ] || [ -L "$link" ] && left+=("$link")
    check "apt purge leaves no file of the package (${left[*]:-none left})" test ${#left[@]} -eq 0
    check "nginx -t passes after the purge" sh -c '/usr/sbin/nginx -t >/dev/null 2>&1'
}

refuse() {
    local deb=$1 out
    out=$(apt-get install -y -q --no-install-recommends "$deb" 2>&1) && status=0 || status=$?
    echo "$out" | sed -n '/following packages have unmet/,/^E:/p' | sed 's/^/[apt] /'
    check "apt refuses $(basename "$deb") beside nginx $version" test "$status" -ne 0
    check "because its nginx-abi is not installable here" sh -c "echo \"\$1\" | grep -q 'Depends: nginx-abi-'" sh "$out"
    check "and it is not installed" sh -c "! dpkg-query -W -f='\${Status}' $name 2>/dev/null | grep -q installed"
}

case "${1:-}" in
    module) module ;;
    package) package; finish package ;;
    refuse) [ $# -eq 2 ] || exit 2; refuse "$2"; finish refuse ;;
    *) echo "usage: $0 module | package | refuse DEB" >&2; exit 2 ;;
esac
