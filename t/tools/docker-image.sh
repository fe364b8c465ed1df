#!/bin/bash
# Builds the project's Dockerfile with buildah, both variants, on the stand-in
# base images (t/tools/docker-standins.sh): no Docker engine runs here and no
# registry can be reached. t/image.t runs the results.
#
#   docker-image.sh build   localhost/nginx-esper:check and :check-unprivileged
#   docker-image.sh clean   removes them and every layer their builds cached
set -euo pipefail
cd "$(dirname "$0")/../.."

# buildah 1.28 ignores STORAGE_DRIVER in the environment.
buildah_vfs() { buildah --storage-driver vfs "$@"; }
image=localhost/nginx-esper

case "${1:-}" in
    build)
        t/tools/docker-standins.sh
        mkdir -p target/docker
        start=$SECONDS
        # --layers: the unprivileged build reuses the builder stage.
        buildah_vfs bud --isolation chroot --pull=never --layers -t "$image:check" . \
            >target/docker/build.log 2>&1 ||
            { tail -40 target/docker/build.log >&2; exit 1; }
        buildah_vfs bud --isolation chroot --pull=never --layers -t "$image:check-unprivileged" \
            --build-arg NGINX_IMAGE=nginxinc/nginx-unprivileged . \
            >target/docker/build-unprivileged.log 2>&1 ||
            { tail -40 target/docker/build-unprivileged.log >&2; exit 1; }
        echo "built $image:check and $image:check-unprivileged in $((SECONDS - start)) s"
        ;;
    clean)
        buildah_vfs rmi "$image:check" "$image:check-unprivileged" >/dev/null 2>&1 || true
        # The cached intermediate layers (the builder alone is gigabytes in vfs).
        buildah_vfs rmi --prune >/dev/null 2>&1 || true
        ;;
    *) echo "usage: $0 build | clean" >&2; exit 2 ;;
esac
