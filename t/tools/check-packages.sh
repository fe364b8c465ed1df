#!/bin/bash
# `make check-packages`: the module for Debian's own nginx, and its Debian
# package, on Debian 12 (bookworm, nginx 1.22.1) and Debian 13 (trixie,
# nginx 1.26.3), each in a chroot of t/tools/distro-chroot.sh under
# target/chroots/, so that no nginx package is ever installed on the host.
# In each chroot (t/tools/chroot-checks.sh):
#   module    make module NGINX=/usr/sbin/nginx; the t/ smoke set in that nginx
#   package   make deb NGINX=/usr/sbin/nginx; lintian; apt install; nginx -t;
#             a site with `esper on` against the mock; apt purge leaves nothing
# then each suite's package is offered to apt beside the other suite's nginx,
# which must refuse it. The packages are kept in target/packages/<suite>/.
# CHECK_SUITES limits the suites (default "bookworm trixie"); --rebuild makes
# the chroots again.
set -euo pipefail
cd "$(dirname "$0")/../.."

rebuild=""
case "${1:-}" in
    "") ;;
    --rebuild) rebuild=--rebuild ;;
    *) echo "usage: $0 [--rebuild]" >&2; exit 2 ;;
esac
suites=(${CHECK_SUITES:-bookworm trixie})

[ -x target/release/esper-mock ] || cargo build --release -p esper-mock
command -v debootstrap >/dev/null || scripts/install-deps.sh

start=$SECONDS
failed=()
for suite in "${suites[@]}"; do
    t/tools/distro-chroot.sh make "$suite" $rebuild
done
for suite in "${suites[@]}"; do
    s=$SECONDS
    t/tools/distro-chroot.sh run "$suite" t/tools/chroot-checks.sh module || failed+=("$suite module")
    echo "== [$suite] module and smoke set: $((SECONDS - s)) s"
    s=$SECONDS
    t/tools/distro-chroot.sh run "$suite" t/tools/chroot-checks.sh package || failed+=("$suite package")
    echo "== [$suite] package: $((SECONDS - s)) s"
    rm -rf "target/packages/$suite"
    mkdir -p "target/packages/$suite"
    cp target/chroots/"$suite"/build/esper/target/deb/*.deb "target/packages/$suite/" 2>/dev/null || true
done

# Each package beside the other suite's nginx.
for suite in "${suites[@]}"; do
    for other in "${suites[@]}"; do
        [ "$other" != "$suite" ] || continue
        deb=$(ls target/packages/"$other"/*.deb 2>/dev/null | head -1)
        if [ -z "$deb" ]; then
            failed+=("$suite refuse (no package of $other)")
            continue
        fi
        dest=target/chroots/$suite/build/esper/target/other
        rm -rf "$dest"
        mkdir -p "$dest"
        cp "$deb" "$dest/"
        t/tools/distro-chroot.sh run "$suite" t/tools/chroot-checks.sh refuse "./target/other/$(basename "$deb")" ||
            failed+=("$suite refuse")
    done
done

echo "== distribution checks: $((SECONDS - start)) s"
if ((${#failed[@]})); then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
echo "all distribution checks passed (${suites[*]})"
