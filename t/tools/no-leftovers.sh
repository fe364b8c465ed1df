#!/bin/bash
# The end of `make test`: no process the run started may be left. Lists every
# process (but this one) run from this tree's target/ (nginx, the mock, the
# modules' hosts) or working in t/tmp/, and fails when there is one.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
nginx_dir=$(cat target/release/nginx-build-dir 2>/dev/null || true)

left=()
for proc in /proc/[0-9]*; do
    pid=${proc#/proc/}
    [ "$pid" != $$ ] && [ "$pid" != "$PPID" ] || continue
    exe=$(readlink "$proc/exe" 2>/dev/null) || continue
    cmd=$(tr '\0' ' ' <"$proc/cmdline" 2>/dev/null) || continue
    case "$exe $cmd" in
        "$root/target/"* | *" $root/t/tmp/"* | *"$root/t/tmp/"*) ;;
        *) [ -n "$nginx_dir" ] && [ "$exe" = "$nginx_dir/nginx" ] || continue ;;
    esac
    left+=("$pid $cmd")
done
if ((${#left[@]})); then
    echo "processes left behind by the test run:" >&2
    printf '  %s\n' "${left[@]}" >&2
    exit 1
fi
echo "no process left behind"
