#!/bin/sh
# Entrypoint of the local nginx stand-in images, behaving as the official
# image's is documented to: when the command is nginx, the hooks in
# /docker-entrypoint.d/ run first, in sorted order. An executable *.envsh is
# sourced, so it can export variables for nginx (and a failure stops the
# start); an executable *.sh is run; anything else is skipped.
set -e

log() {
    [ -n "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ] || echo "$0: $*"
}

if [ "$1" = nginx ] || [ "$1" = nginx-debug ]; then
    # A glob rather than find | while: a sourced hook must run in this shell.
    for hook in /docker-entrypoint.d/*; do
        [ -e "$hook" ] || continue
        if [ ! -f "$hook" ] || [ ! -x "$hook" ]; then
            log "ignoring $hook: not an executable file"
            continue
        fi
        # shellcheck source=/dev/null
        case "$hook" in
            *.envsh) log "sourcing $hook"; . "$hook" ;;
            *.sh) log "running $hook"; "$hook" ;;
            *) log "ignoring $hook: neither *.sh nor *.envsh" ;;
        esac
    done
    log "configuration complete, starting nginx"
fi

exec "$@"
