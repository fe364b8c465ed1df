#!/bin/bash
# Installs what building and testing the module needs on Debian or Ubuntu,
# only where something is missing. Safe to run again. With --build, only what
# building needs (the Docker image's builder); with --bench, also what
# `make bench` needs (wrk, h2load, and matplotlib for the chart); with --browser, also
# what `make browser` needs (Debian's Chromium, Node.js and npm, and
# t/browser's pinned playwright-core from its package-lock.json); with
# --mutants, what building needs and the pinned cargo-mutants (`make mutants`).
set -euo pipefail

mode=${1:-test}

packages=(
    build-essential   # cc and make for nginx
    libclang-dev      # bindgen, for the nginx bindings
    libpcre2-dev libssl-dev zlib1g-dev pkg-config
    perl              # scripts read cargo's metadata with JSON::PP; prove and the t/ harness
    curl              # nginx source downloads; make run prints curl lines
)
case "$mode" in
    --build | --mutants) ;;
    test | --bench | --browser)
        packages+=(
            openssl           # test certificates in t/tls.t
            procps            # pgrep, used by the harness
            gettext-base      # envsubst: t/docker.t renders the Docker template as the image does
            buildah debootstrap   # t/image.t builds the Dockerfile on stand-in base images;
                                  # make check-packages makes its Debian chroots
            python3 python3-pip   # t/http3.t's client (aioquic, installed below)
        )
        ;;
    *) echo "usage: $0 [--build | --bench | --browser | --mutants]" >&2; exit 2 ;;
esac
[ "$mode" = --bench ] && packages+=(wrk nghttp2-client)   # nghttp2-client: h2load (case R at a distance)
if [ "$mode" = --browser ]; then
    packages+=(chromium)
    # Node.js 20 or later (playwright-core's minimum); a node installed
    # otherwise is kept.
    command -v node >/dev/null || packages+=(nodejs npm)
fi

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

if [ "$mode" = --bench ] && ! python3 -c 'import matplotlib' 2>/dev/null; then
    python3 -m pip install --quiet matplotlib
fi

# aioquic, the HTTP/3 client of t/http3.t (t/tools/h3client.py), at the
# version pinned there.
if [ "$mode" != --build ] && [ "$mode" != --mutants ] && ! python3 -c 'import aioquic' 2>/dev/null; then
    python3 -m pip install --quiet -r "$(dirname "$0")/../t/tools/requirements.txt"
fi

if [ "$mode" = --browser ]; then
    if ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)'; then
        echo "make browser needs Node.js 20 or later; this is $(node --version)" >&2
        exit 1
    fi
    browser_dir="$(cd "$(dirname "$0")/../t/browser" && pwd)"
    pinned=$(node -p "require('$browser_dir/package.json').dependencies['playwright-core']")
    installed=$(node -p "require('$browser_dir/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
    if [ "$installed" != "$pinned" ]; then
        (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
fi

if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust with rustup (https://rustup.rs)" >&2
    exit 1
fi

# cargo-mutants, at the version `make mutants` was set up with (its output and
# .cargo/mutants.toml's list of equivalent mutants depend on it).
if [ "$mode" = --mutants ]; then
    mutants_version=27.1.0
    if [ "$(cargo mutants --version 2>/dev/null)" != "cargo-mutants $mutants_version" ]; then
        cargo install --locked cargo-mutants --version "$mutants_version"
    fi
fi
