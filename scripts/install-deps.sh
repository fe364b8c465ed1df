#!/bin/bash
# Installs what building and testing the module needs on Debian or Ubuntu,
# only where something is missing. Safe to run again. With --bench, also what
# `make bench` needs (wrk, and matplotlib for the chart).
set -euo pipefail

bench=false
[ "${1:-}" = "--bench" ] && bench=true

packages=(
    build-essential   # cc and make for the vendored nginx
    libclang-dev      # bindgen, for the nginx bindings
    libpcre2-dev libssl-dev zlib1g-dev pkg-config
    perl              # prove and the t/ harness (core modules only)
    openssl           # test certificates in t/tls.t
    curl              # make run prints curl lines; smoke checks
    procps            # pgrep, used by the harness
)
$bench && packages+=(wrk python3-pip)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if $bench && ! python3 -c 'import matplotlib' 2>/dev/null; then
    python3 -m pip install --quiet matplotlib
fi

if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust with rustup (https://rustup.rs)" >&2
    exit 1
fi
