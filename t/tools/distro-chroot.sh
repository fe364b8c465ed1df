#!/bin/bash
# Debian chroots for the distribution checks, so that no nginx package is ever
# installed on the host: target/chroots/<suite>, made with debootstrap
# (minbase) and then given the distribution's nginx and nginx-dev and what
# building and checking the module needs. Services never start inside (a
# policy-rc.d of the chroot's own).
#
#   distro-chroot.sh make SUITE [--rebuild]   make it, or keep the one there
#   distro-chroot.sh run SUITE COMMAND...     run COMMAND inside, as root, in
#                                             /build/esper (a git clone of this
#                                             repository, with the working
#                                             tree's files)
#
# `run` mounts /proc and /dev, and binds the host's Rust toolchain (rustup's
# and cargo's directories, the toolchain read-only) so that cargo builds
# inside; every mount is undone on exit. The copy of the repository keeps its
# target/ between runs, so builds inside are incremental; the host's
# target/release/esper-mock is copied in for the t/ harness.
# SUITE: bookworm (Debian 12) or trixie (Debian 13).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

usage() { echo "usage: $0 make SUITE [--rebuild] | run SUITE COMMAND..." >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1 suite=$2
shift 2
case "$suite" in
    bookworm) nginx_pkg=nginx-core ;;
    trixie) nginx_pkg=nginx ;;
    *) echo "unknown suite $suite (bookworm or trixie)" >&2; exit 2 ;;
esac

chroots=$repo/target/chroots
root=$chroots/$suite
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=(
    "$nginx_pkg" nginx-dev
    build-essential libclang-dev libpcre2-dev libssl-dev zlib1g-dev pkg-config
    perl curl procps openssl ca-certificates
    dpkg-dev lintian git
)
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_home=${CARGO_HOME:-$HOME/.cargo}

log() { echo "== [$suite] $*"; }

# Anything mounted at or below a directory (deepest first).
mounts_below() { findmnt -rn -o TARGET | awk -v d="$1" '$0 == d || index($0, d "/") == 1' | sort -r; }

mounted=()
unmount_all() {
    local m
    for m in $(mounts_below "$root"); do umount -l "$m" || true; done
    mounted=()
}

mount_all() {
    trap unmount_all EXIT
    mount -t proc proc "$root/proc"
    mount --bind /dev "$root/dev"
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts" 2>/dev/null || true
    mkdir -p "$root/root/.rustup" "$root/root/.cargo"
    mount --bind "$rustup_home" "$root/root/.rustup"
    mount -o remount,bind,ro "$root/root/.rustup"
    # cargo's registry cache: the crates this repository locks are already
    # there (fetched on the host), so builds inside need no network.
    mount --bind "$cargo_home" "$root/root/.cargo"
}

in_chroot() {
    chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
        PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive "$@"
}

sources() {
    local security=$suite-security
    cat <<SRC
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
Suites: $security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
}

make_chroot() {
    local rebuild=${1:-}
    if [ -n "$(mounts_below "$root")" ]; then
        echo "$root has mounts (another run, or one that died): $(mounts_below "$root" | tr '\n' ' ')" >&2
        exit 1
    fi
    if [ -f "$root.ready" ] && [ "$(cat "$root.ready")" = "${packages[*]}" ] && [ "$rebuild" != --rebuild ]; then
        log "reusing $root (--rebuild makes it again)"
        return
    fi
    rm -rf "$root" "$root.ready" "$root.tmp"
    mkdir -p "$chroots"
    local start=$SECONDS
    log "debootstrap $suite (minbase)"
    debootstrap --variant=minbase "$suite" "$root.tmp" "$mirror" >"$root.debootstrap.log" 2>&1 ||
        { tail -20 "$root.debootstrap.log" >&2; exit 1; }
    mv "$root.tmp" "$root"
    rm -f "$root/etc/apt/sources.list"
    sources >"$root/etc/apt/sources.list.d/debian.sources"
    # No service starts inside: the chroot's own policy-rc.d.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    # Trust the TLS-intercepting proxy this machine's HTTPS goes through, if any.
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        mkdir -p "$root/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    fi
    mount_all
    log "apt-get install ${packages[*]}"
    {
        in_chroot apt-get update -q &&
            in_chroot apt-get install -y -q --no-install-recommends "${packages[@]}" &&
            in_chroot apt-get clean
    } >"$root.apt.log" 2>&1 || { tail -30 "$root.apt.log" >&2; exit 1; }
    unmount_all
    trap - EXIT
    echo "${packages[*]}" >"$root.ready"
    log "made in $((SECONDS - start)) s: $(in_chroot_version)"
}

in_chroot_version() { chroot "$root" /usr/sbin/nginx -v 2>&1; }

# A real clone of the repository in /build/esper, with its whole history,
# as a user's `git clone` has it (`make deb` reads it), then the working
# tree's tracked (and new, unignored) files over it, modification times kept
# so that cargo rebuilds only what changed.
copy_repository() {
    local dest=$root/build/esper
    mkdir -p "$dest"
    find "$dest" -mindepth 1 -maxdepth 1 ! -name target -exec rm -rf {} +
    git clone -q --no-checkout "$repo" "$root/build/esper.clone"
    mv "$root/build/esper.clone/.git" "$dest/.git"
    rm -rf "$root/build/esper.clone"
    git -C "$dest" reset -q
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        tar --null -T - -cf - | tar -xf - -C "$dest"
    if [ -x target/release/esper-mock ]; then
        mkdir -p "$dest/target/release"
        cp target/release/esper-mock "$dest/target/release/"
    fi
}

case "$action" in
    make)
        [ $# -le 1 ] || usage
        exec 9>"$chroots.$suite.lock" 2>/dev/null || { mkdir -p "$chroots"; exec 9>"$chroots.$suite.lock"; }
        flock 9
        make_chroot "${1:-}"
        ;;
    run)
        [ $# -ge 1 ] || usage
        mkdir -p "$chroots"
        exec 9>"$chroots.$suite.lock"
        flock 9
        make_chroot
        # Everything cargo needs, fetched on the host where the network is set up.
        cargo fetch --locked >/dev/null
        copy_repository
        mount_all
        in_chroot /bin/sh -c 'cd /build/esper && exec "$@"' sh "$@"
        ;;
    *) usage ;;
esac
