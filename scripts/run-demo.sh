#!/bin/bash
# `make run`: nginx with the module in front of the demo application from
# nginx-conf/demo.conf. Uses the project's mock Esper unless ESPER_API_KEY is
# set, in which case it asks the real Esper (ESPER_API_URL, default
# https://api.esperr.com). Stops with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

port=${PORT:-8080}
app_port=${APP_PORT:-8081}
run_dir=$PWD/target/demo
nginx="$(cat target/release/nginx-build-dir)/nginx"
mkdir -p "$run_dir/logs"

cleanup() {
    [ -n "${mock_pid:-}" ] && kill "$mock_pid" 2>/dev/null || true
}
trap cleanup EXIT

if [ -n "${ESPER_API_KEY:-}" ]; then
    api_url=${ESPER_API_URL:-https://api.esperr.com}
    api_key=$ESPER_API_KEY
    echo "asking the real Esper at $api_url"
else
    mock_port=${MOCK_PORT:-8090}
    target/release/esper-mock --listen "127.0.0.1:$mock_port" --api-key demo-key >"$run_dir/mock.out" &
    mock_pid=$!
    for _ in $(seq 50); do grep -q listening "$run_dir/mock.out" 2>/dev/null && break; sleep 0.1; done
    api_url=http://127.0.0.1:$mock_port
    api_key=demo-key
    echo "asking the mock Esper at $api_url (set ESPER_API_KEY to use the real one)"
fi

sed -e "s|@@MODULE@@|$PWD/target/release/libngx_http_esper_module.so|" \
    -e "s|@@RUN_DIR@@|$run_dir|" \
    -e "s|@@ESPER_API_URL@@|$api_url|" \
    -e "s|@@ESPER_API_KEY@@|$api_key|" \
    -e "s|@@PORT@@|$port|" \
    -e "s|@@APP_PORT@@|$app_port|" \
    nginx-conf/demo.conf >"$run_dir/nginx.conf"

"$nginx" -p "$run_dir/" -c "$run_dir/nginx.conf" -t -q

cat <<MSG

nginx with the Esper module listens on http://127.0.0.1:$port/ (Ctrl-C stops it)

  allow:     curl -i http://127.0.0.1:$port/
  challenge: curl -i 'http://127.0.0.1:$port/?mock_action=challenge'
  block:     curl -i 'http://127.0.0.1:$port/?mock_action=block'
  not judged: curl -i http://127.0.0.1:$port/healthz

(the mock_action parameter steers the mock Esper; the real Esper decides by its own rules)

MSG
"$nginx" -p "$run_dir/" -c "$run_dir/nginx.conf"
