#!/bin/bash
# `make deb NGINX=/usr/sbin/nginx`: a Debian package of the module for the
# nginx you run, made the way Debian ships its nginx modules
# (libnginx-mod-http-*):
#   /usr/lib/nginx/modules/ngx_http_esper_module.so
#   /usr/share/nginx/modules-available/mod-http-esper.conf   (its load_module line)
#   /etc/nginx/modules-enabled/50-mod-http-esper.conf        (a link made on
#       install, as Debian's modules do; gone on removal)
# and Depends: on the nginx-abi-* virtual package that this nginx's package
# provides, so that apt refuses an nginx upgrade the module was not built
# for. The module is built first (scripts/build-for-nginx.sh, as `make
# module`). Needs dpkg-dev, cargo, perl, and git for the copyright years.
# The package is written to DEB_OUT_DIR (default
# target/deb/); DEBFULLNAME and DEBEMAIL name its maintainer.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

name=libnginx-mod-http-esper
mod=mod-http-esper
so=ngx_http_esper_module.so

nginx=${NGINX:-/usr/sbin/nginx}
[ -x "$nginx" ] || { echo "no nginx at $nginx (set NGINX=/path/to/nginx)" >&2; exit 1; }
for tool in dpkg-deb dpkg-query dpkg-shlibdeps; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install dpkg-dev" >&2; exit 1; }
done
version=$("$nginx" -v 2>&1 | sed -n 's|^nginx version: [^/]*/\([0-9.]*\).*|\1|p')
[ -n "$version" ] || { echo "cannot read the version of $nginx" >&2; exit 1; }

# The package that installed this nginx, and the ABI it provides:
# Debian's nginx (nginx-core on Debian 12, nginx on Debian 13) provides
# nginx-abi-<upstream>-<abi revision>, which every module package depends on.
binary=$(readlink -f "$nginx")
owner=$(dpkg-query -S "$binary" 2>/dev/null | sed -n 's/^\([^:,]*\): .*/\1/p' | sed -n 1p) || true
[ -n "$owner" ] || owner=$(dpkg-query -S "$nginx" 2>/dev/null | sed -n 's/^\([^:,]*\): .*/\1/p' | sed -n 1p) || true
if [ -z "$owner" ]; then
    echo "$nginx belongs to no installed package: a package of the module could not depend on it." >&2
    echo "Build the module alone (make module NGINX=$nginx) and install it by hand." >&2
    exit 1
fi
abi=$(dpkg-query -W -f='${Provides}\n' "$owner" | tr ',' '\n' | sed -n 's/^ *\(nginx-abi-[^ ]*\).*/\1/p' | sed -n 1p)
owner_version=$(dpkg-query -W -f='${Version}' "$owner")
if [ -n "$abi" ]; then
    nginx_dep=$abi
else
    # Not Debian's nginx (nginx.org's package, for one): no ABI name to
    # depend on, so the exact version of the package that holds the binary.
    nginx_dep="$owner (= $owner_version)"
    echo "warning: $owner provides no nginx-abi-*; the package depends on $nginx_dep" >&2
    echo "warning: its nginx.conf must include /etc/nginx/modules-enabled/*.conf to load the module" >&2
fi

modules_path=$("$nginx" -V 2>&1 | sed -n 's/.*--modules-path=\([^ ]*\).*/\1/p')
modules_path=${modules_path:-/usr/lib/nginx/modules}

work=$(realpath -m "${MODULE_WORK_DIR:-$root/target/nginx-$version}")
# Linked with Debian's hardening flags (relro, bindnow), as Debian's modules are.
ld_opt=$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get LDFLAGS)
MODULE_LD_OPT=$ld_opt MODULE_WORK_DIR=$work NGINX=$nginx scripts/build-for-nginx.sh >/dev/null

upstream=$(sed -n 's/^version = "\(.*\)"/\1/p;T;q' Cargo.toml)
# The nginx it is built for is part of the version, so that builds for two
# nginx versions are two versions of the package.
# nginx-abi-1.22.1-7 gives 0.1.0+nginx1.22.1.abi7-1.
abi_version=${abi#nginx-abi-}
pkg_version="$upstream+nginx${abi_version%-*}.abi${abi_version##*-}-1"
[ -n "$abi" ] || pkg_version="$upstream+nginx$version-1"
arch=$(dpkg --print-architecture)
maintainer="${DEBFULLNAME:-ngx_http_esper_module developers} <${DEBEMAIL:-dev@esper.invalid}>"
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-unstable}")
# Reproducible: SOURCE_DATE_EPOCH, else the date of the commit built, else now.
# The copyright years start at the first commit's year. Under pipefail, no
# pipeline here may end before its writer does: `git log | head -1` killed
# git with SIGPIPE on a long history (make: Error 141, with no message).
first_year=""
if command -v git >/dev/null && git rev-parse --git-dir >/dev/null 2>&1; then
    [ -n "${SOURCE_DATE_EPOCH:-}" ] || SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
    # The root commits (a shallow clone: its oldest), the earliest year.
    first_year=$(git log --max-parents=0 --format=%cd --date=format:%Y HEAD | sort -n | sed -n 1p)
fi
epoch=${SOURCE_DATE_EPOCH:-$(date +%s)}
date=$(date -R -d "@$epoch")
year=$(date -d "@$epoch" +%Y)
years=${first_year:-$year}
[ "$years" = "$year" ] || years="$years-$year"

out=$(realpath -m "${DEB_OUT_DIR:-$root/target/deb}")
stage=$out/$name
rm -rf "$stage"
umask 022
install -d "$stage/DEBIAN" "$stage$modules_path" "$stage/usr/share/nginx/modules-available" \
    "$stage/usr/share/doc/$name"

# Stripped as Debian's dh_strip strips shared objects.
install -m 644 "$work/$so" "$stage$modules_path/$so"
strip --remove-section=.comment --remove-section=.note --strip-unneeded "$stage$modules_path/$so"
echo "load_module modules/$so;" >"$stage/usr/share/nginx/modules-available/$mod.conf"

# From the licenses of what is really linked: every crate of Cargo.lock the
# module's code depends on, and nginx's generated module file.
scripts/licenses.pl copyright "$years" >"$stage/usr/share/doc/$name/copyright"

cat <<CHANGELOG | gzip -9n >"$stage/usr/share/doc/$name/changelog.Debian.gz"
$name ($pkg_version) $codename; urgency=medium

  * ngx_http_esper_module $upstream built for nginx $version ($nginx_dep).

 -- $maintainer  $date
CHANGELOG
touch -d "@$epoch" "$stage/usr/share/doc/$name/changelog.Debian.gz"

# The maintainer scripts behave as those of Debian's module packages
# (dh_nginx): a fresh install links the module into modules-enabled; removal
# moves the link aside to <link>.removed, which nginx's "*.conf" include does
# not match, so nginx never loads a module that is gone; installing again
# puts back a link that removal moved aside, but not one the administrator
# deleted; purge deletes both. Each change asks nginx to reload through
# the nginx-reload trigger of Debian's nginx package (ignored where no
# package is interested).
cat >"$stage/DEBIAN/postinst" <<POSTINST
#!/bin/sh
set -e

enabled=/etc/nginx/modules-enabled/50-$mod.conf

if [ "\$1" = configure ]; then
    restore=false
    if [ -L "\$enabled.removed" ]; then
        rm -f "\$enabled.removed"
        restore=true
    fi
    if [ -z "\$2" ] || [ "\$restore" = true ]; then
        mkdir -p /etc/nginx/modules-enabled
        ln -sf /usr/share/nginx/modules-available/$mod.conf "\$enabled"
    fi
    if command -v dpkg-trigger >/dev/null 2>&1; then
        dpkg-trigger --no-await nginx-reload
    fi
fi

exit 0
POSTINST

cat >"$stage/DEBIAN/prerm" <<PRERM
#!/bin/sh
set -e

enabled=/etc/nginx/modules-enabled/50-$mod.conf

case "\$1" in
    remove|deconfigure)
        if [ -L "\$enabled" ]; then
            mv "\$enabled" "\$enabled.removed"
        fi
        ;;
esac

exit 0
PRERM

cat >"$stage/DEBIAN/postrm" <<POSTRM
#!/bin/sh
set -e

enabled=/etc/nginx/modules-enabled/50-$mod.conf

case "\$1" in
    remove)
        if [ -L "\$enabled" ]; then
            mv "\$enabled" "\$enabled.removed"
        fi
        if command -v dpkg-trigger >/dev/null 2>&1; then
            dpkg-trigger --no-await nginx-reload
        fi
        ;;
    purge)
        rm -f "\$enabled" "\$enabled.removed"
        ;;
esac

exit 0
POSTRM
chmod 755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"

# What lintian says and why it stays (see the README's packaging section).
install -d "$stage/usr/share/lintian/overrides"
cat >"$stage/usr/share/lintian/overrides/$name" <<OVERRIDES
# The module is Rust code linked into one shared object with a small C
# file of nginx's. glibc's _FORTIFY_SOURCE replaces unchecked C calls at
# compile time; Rust code makes no such calls (its bounds are checked by the
# language), so there is nothing for the fortified functions to replace.
$name: hardening-no-fortify-functions [${modules_path#/}/$so]
# Built by its user for the nginx on their machine, not uploaded to Debian:
# there is no ITP bug for the first changelog entry to close.
$name: initial-upload-closes-no-bugs [usr/share/doc/$name/changelog.Debian.gz:1]
OVERRIDES

# The libraries the module links, as dpkg-shlibdeps finds them.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$name" "$name" >"$tmp/debian/control"
shlibs=$(cd "$tmp" && dpkg-shlibdeps -O "$stage$modules_path/$so" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
depends=$nginx_dep${shlibs:+, $shlibs}
recommends=""
[ -z "$abi" ] || recommends="Recommends: nginx
"

(cd "$stage" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)

cat >"$stage/DEBIAN/control" <<CONTROL
Package: $name
Version: $pkg_version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $depends
${recommends}Section: httpd
Priority: optional
Multi-Arch: foreign
Homepage: https://docs.esperr.com
Description: Esper bot and abuse mitigation module for Nginx
 An Nginx dynamic module that asks Esper's runtime decision API which
 action to take for each request in the locations where "esper on;" is
 set, and applies it: the request continues (allow), is redirected to
 Esper's challenge page (challenge), or is refused (block). The call does
 not block the Nginx worker. Challenged visitors that solve the challenge
 get a signed pass cookie checked by the module itself.
 .
 Built for nginx $version ($nginx_dep).
CONTROL

find "$stage" -exec touch -h -d "@$epoch" {} +
mkdir -p "$out"
deb=$out/${name}_${pkg_version}_$arch.deb
SOURCE_DATE_EPOCH=$epoch dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
echo "install: apt install $deb"
