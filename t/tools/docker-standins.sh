#!/bin/bash
# Makes local stand-ins for the base images of the project's Dockerfile, in
# buildah's vfs storage, under the names the Dockerfile uses:
#   docker.io/library/nginx:$NGINX_VERSION
#   docker.io/nginxinc/nginx-unprivileged:$NGINX_VERSION
#   docker.io/library/rust:$RUST_VERSION-slim
# No container registry can be reached here, so `make docker-check` builds the
# Dockerfile (buildah bud --storage-driver vfs --pull=never) on these instead,
# made to the official images' conventions: Debian bookworm, nginx built with
# the official configure arguments and laid out the same way, the documented
# entrypoint behaviour, and rustup's layout for the Rust toolchain.
#
# NGINX_VERSION can only be the vendored nginx's (its default); RUST_VERSION
# defaults to the host's rustc, whose toolchain is copied in. An image that
# already exists is kept unless --rebuild is given. The debootstrapped rootfs
# is cached in target/docker/ (remove it to fetch the packages again).
set -euo pipefail
cd "$(dirname "$0")/../.."

rebuild=false
case "${1:-}" in
    "") ;;
    --rebuild) rebuild=true ;;
    *) echo "usage: $0 [--rebuild]" >&2; exit 2 ;;
esac

log() { echo "== $*"; }
timed() { # label, command...
    local label=$1 start=$SECONDS
    shift
    log "$label"
    "$@"
    log "$label: done in $((SECONDS - start)) s"
}
# buildah 1.28 ignores STORAGE_DRIVER in the environment, whatever its manual
# says, so every call names the driver.
buildah_vfs() { buildah --storage-driver vfs "$@"; }

scripts/install-deps.sh

nginx_src=$(scripts/vendored-nginx-source.sh)
vendored=$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$nginx_src/src/core/nginx.h")
NGINX_VERSION=${NGINX_VERSION:-$vendored}
if [ "$NGINX_VERSION" != "$vendored" ]; then
    echo "NGINX_VERSION=$NGINX_VERSION was asked, but the stand-ins build nginx from the vendored source," \
        "which is $vendored ($nginx_src)" >&2
    exit 1
fi
RUST_VERSION=${RUST_VERSION:-$(rustc --version | awk '{print $2}')}
triple=$(rustc -vV | sed -n 's/^host: //p')

nginx_image=docker.io/library/nginx:$NGINX_VERSION
unprivileged_image=docker.io/nginxinc/nginx-unprivileged:$NGINX_VERSION
rust_image=docker.io/library/rust:$RUST_VERSION-slim
description="local stand-in made by t/tools/docker-standins.sh"

work=$PWD/target/docker
rootfs=$work/rootfs-bookworm
packages=ca-certificates,gettext-base,curl,libpcre2-8-0,libssl3,zlib1g
nginx_build=$work/nginx-$NGINX_VERSION
# As `nginx -V` shows them in the official image.
configure_args=(
    --prefix=/etc/nginx --sbin-path=/usr/sbin/nginx --modules-path=/usr/lib/nginx/modules
    --conf-path=/etc/nginx/nginx.conf --error-log-path=/var/log/nginx/error.log
    --http-log-path=/var/log/nginx/access.log --pid-path=/run/nginx.pid --lock-path=/run/nginx.lock
    --http-client-body-temp-path=/var/cache/nginx/client_temp
    --http-proxy-temp-path=/var/cache/nginx/proxy_temp
    --http-fastcgi-temp-path=/var/cache/nginx/fastcgi_temp
    --http-uwsgi-temp-path=/var/cache/nginx/uwsgi_temp
    --http-scgi-temp-path=/var/cache/nginx/scgi_temp
    --user=nginx --group=nginx --with-compat --with-file-aio --with-threads
    --with-http_addition_module --with-http_auth_request_module --with-http_dav_module
    --with-http_flv_module --with-http_gunzip_module --with-http_gzip_static_module
    --with-http_mp4_module --with-http_random_index_module --with-http_realip_module
    --with-http_secure_link_module --with-http_slice_module --with-http_ssl_module
    --with-http_stub_status_module --with-http_sub_module --with-http_v2_module
    --with-http_v3_module --with-mail --with-mail_ssl_module --with-stream
    --with-stream_realip_module --with-stream_ssl_module --with-stream_ssl_preread_module
    "--with-cc-opt=-g -O2 -fstack-protector-strong -Wformat -Werror=format-security -Wp,-D_FORTIFY_SOURCE=2 -fPIC"
    "--with-ld-opt=-Wl,-z,relro -Wl,-z,now -Wl,--as-needed -pie"
)
std_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The working container of the image being made, removed on any exit.
ctr=""
mnt=""
trap '[ -z "$ctr" ] || buildah_vfs rm "$ctr" >/dev/null || true' EXIT

make_rootfs() {
    # The package list is kept beside the cache, so a changed list is fetched anew.
    if [ -d "$rootfs" ] && [ "$(cat "$rootfs.packages" 2>/dev/null)" = "$packages" ]; then
        echo "reusing $rootfs"
        return
    fi
    rm -rf "$rootfs" "$rootfs.packages" "$rootfs.tmp"
    debootstrap --variant=minbase --include="$packages" bookworm "$rootfs.tmp" \
        "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1 ||
        { tail -20 "$work/debootstrap.log" >&2; return 1; }
    # Trimmed like the official Debian images: no downloaded packages, no
    # package lists, none of the host's files; apt sources as theirs.
    rm -rf "$rootfs.tmp"/var/cache/apt/archives/*.deb "$rootfs.tmp"/var/lib/apt/lists/* \
        "$rootfs.tmp/etc/apt/sources.list" "$rootfs.tmp/etc/resolv.conf" "$rootfs.tmp/etc/hostname"
    cat >"$rootfs.tmp/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    mv "$rootfs.tmp" "$rootfs"
    echo "$packages" >"$rootfs.packages"
}

build_nginx() {
    rm -rf "$nginx_build"
    cp -r "$nginx_src" "$nginx_build"
    (cd "$nginx_build" && ./auto/configure "${configure_args[@]}") >"$work/nginx-configure.log" 2>&1 ||
        { tail -20 "$work/nginx-configure.log" >&2; return 1; }
    make -C "$nginx_build" -j"$(nproc)" >"$work/nginx-make.log" 2>&1 ||
        { tail -30 "$work/nginx-make.log" >&2; return 1; }
}

start_from_rootfs() {
    ctr=$(buildah_vfs from scratch)
    mnt=$(buildah_vfs mount "$ctr")
    cp -a "$rootfs/." "$mnt/"
    # Trust the TLS-intercepting proxy this machine's HTTPS goes through, if
    # any, so that cargo and curl inside reach crates.io.
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$mnt/usr/local/share/ca-certificates/"
        chroot "$mnt" update-ca-certificates >/dev/null 2>&1 ||
            { echo "update-ca-certificates failed in the image" >&2; return 1; }
    fi
}

commit() { # image name, buildah config options...
    local image=$1 old new
    shift
    old=$(buildah_vfs inspect --type image --format '{{.FromImageID}}' "$image" 2>/dev/null || true)
    # Device nodes came with debootstrap; images have an empty /dev, the
    # runtime provides one.
    find "$mnt/dev" -mindepth 1 -delete
    buildah_vfs config --label "org.opencontainers.image.description=$description" "$@" "$ctr"
    new=$(buildah_vfs commit -q --rm "$ctr" "$image")
    ctr=""
    # The image this one replaces, unless a container or another name still uses it.
    if [ -n "$old" ] && [ "$old" != "$new" ]; then
        buildah_vfs rmi "$old" >/dev/null 2>&1 || true
    fi
}

make_nginx_image() { # image name, "nginx" or "unprivileged"
    local image=$1 variant=$2 port=80 conf=nginx.conf user_opt=()
    if [ "$variant" = unprivileged ]; then
        port=8080 conf=nginx-unprivileged.conf user_opt=(--user 101)
    fi
    start_from_rootfs
    chroot "$mnt" groupadd --system --gid 101 nginx
    chroot "$mnt" useradd --system --gid nginx --no-create-home --home /nonexistent \
        --comment "nginx user" --shell /bin/false --uid 101 nginx
    make -C "$nginx_build" install DESTDIR="$mnt" >/dev/null
    # The official packages keep only these in /etc/nginx; pages are in /usr/share.
    rm -rf "$mnt"/etc/nginx/{html,*.default,koi-utf,koi-win,win-utf,fastcgi.conf}
    install -m 644 "t/tools/standin/$conf" "$mnt/etc/nginx/nginx.conf"
    mkdir -p "$mnt"/{etc/nginx/conf.d,usr/lib/nginx/modules,usr/share/nginx/html,var/cache/nginx,docker-entrypoint.d}
    sed "s/listen       80;/listen       $port;/" t/tools/standin/default.conf >"$mnt/etc/nginx/conf.d/default.conf"
    install -m 644 t/tools/standin/{index,50x}.html "$mnt/usr/share/nginx/html/"
    install -m 755 t/tools/standin/docker-entrypoint.sh "$mnt/"
    install -m 755 t/tools/standin/20-envsubst-on-templates.sh "$mnt/docker-entrypoint.d/"
    ln -sfn /usr/lib/nginx/modules "$mnt/etc/nginx/modules"
    # Logs go to the container's output, where `docker logs` reads them.
    ln -sfn /dev/stdout "$mnt/var/log/nginx/access.log"
    ln -sfn /dev/stderr "$mnt/var/log/nginx/error.log"
    if [ "$variant" = unprivileged ]; then
        # nginx runs as 101 in group 0 and must write its configuration (the
        # templates hook), cache and pages. Inside the chroot, so that no
        # absolute symlink in the image leads to the host's files.
        chroot "$mnt" chown -R 101:0 /etc/nginx /var/cache/nginx /usr/share/nginx/html
        chroot "$mnt" chmod -R g+w /etc/nginx /var/cache/nginx /usr/share/nginx/html
    fi
    commit "$image" --entrypoint '["/docker-entrypoint.sh"]' --cmd '["nginx", "-g", "daemon off;"]' \
        --port "$port/tcp" --stop-signal SIGQUIT --env "PATH=$std_path" --env "NGINX_VERSION=$NGINX_VERSION" \
        "${user_opt[@]}"
}

host_toolchain() { # the host's toolchain directory of rustc $RUST_VERSION, symlinks resolved
    local home=${RUSTUP_HOME:-$HOME/.rustup} dir
    for dir in "$home/toolchains/$RUST_VERSION-$triple" "$home"/toolchains/*-"$triple"; do
        if [ -x "$dir/bin/rustc" ] && [ "$("$dir/bin/rustc" --version | awk '{print $2}')" = "$RUST_VERSION" ]; then
            readlink -f "$dir"
            return
        fi
    done
    echo "no toolchain of rustc $RUST_VERSION in $home/toolchains: rustup toolchain install $RUST_VERSION" >&2
    return 1
}

make_rust_image() { # the host's toolchain directory
    local toolchain=$1 name=$RUST_VERSION-$triple rustup
    rustup=$(readlink -f "${CARGO_HOME:-$HOME/.cargo}/bin/rustup")
    start_from_rootfs
    mkdir -p "$mnt/usr/local/rustup/toolchains/$name" "$mnt/usr/local/cargo/bin"
    # What compiling needs: share/ (docs) is most of a toolchain's size.
    cp -a "$toolchain/bin" "$toolchain/lib" "$mnt/usr/local/rustup/toolchains/$name/"
    printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "$name" \
        >"$mnt/usr/local/rustup/settings.toml"
    # rustup is one binary that runs, from the default toolchain, the tool it
    # is named after; rustup-init links it under each name the same way.
    install -m 755 "$rustup" "$mnt/usr/local/cargo/bin/rustup"
    for tool in cargo rustc rustdoc; do
        ln "$mnt/usr/local/cargo/bin/rustup" "$mnt/usr/local/cargo/bin/$tool"
    done
    # As in the official image: any user may build (and fill the cargo cache).
    chmod -R a+w "$mnt/usr/local/rustup" "$mnt/usr/local/cargo"
    commit "$rust_image" --cmd '["bash"]' --env RUSTUP_HOME=/usr/local/rustup \
        --env CARGO_HOME=/usr/local/cargo --env "PATH=/usr/local/cargo/bin:$std_path" \
        --env "RUST_VERSION=$RUST_VERSION"
}

todo=()
for image in "$nginx_image" "$unprivileged_image" "$rust_image"; do
    if ! $rebuild && buildah_vfs inspect --type image "$image" >/dev/null 2>&1; then
        log "$image exists, kept (--rebuild makes it again)"
    else
        todo+=("$image")
    fi
done
((${#todo[@]})) || exit 0
# Before any long step, so that a missing toolchain fails at once.
case " ${todo[*]} " in *" $rust_image "*) toolchain=$(host_toolchain) ;; esac

start=$SECONDS
mkdir -p "$work"
timed "base rootfs (debootstrap bookworm minbase)" make_rootfs
case " ${todo[*]} " in
    *" $nginx_image "* | *" $unprivileged_image "*) timed "nginx $NGINX_VERSION build" build_nginx ;;
esac
for image in "${todo[@]}"; do
    case "$image" in
        "$nginx_image") timed "$image" make_nginx_image "$image" nginx ;;
        "$unprivileged_image") timed "$image" make_nginx_image "$image" unprivileged ;;
        "$rust_image") timed "$image" make_rust_image "$toolchain" ;;
    esac
done
log "stand-in images made in $((SECONDS - start)) s"
