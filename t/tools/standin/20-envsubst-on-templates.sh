#!/bin/sh
# Start-up hook of the local nginx stand-in images: renders each template
# under $NGINX_ENVSUBST_TEMPLATE_DIR (default /etc/nginx/templates, searched
# recursively) to the same relative path under $NGINX_ENVSUBST_OUTPUT_DIR
# (default /etc/nginx/conf.d), without the $NGINX_ENVSUBST_TEMPLATE_SUFFIX
# (default .template). Only variables set in the environment are substituted,
# and only those whose names match $NGINX_ENVSUBST_FILTER (an extended regex)
# when it is set, so that nginx's own variables ($host, $uri...) stay as they
# are.
set -e

log() {
    [ -n "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ] || echo "$0: $*"
}

template_dir=${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}
template_dir=${template_dir%/}
suffix=${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}
output_dir=${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}
output_dir=${output_dir%/}

[ -d "$template_dir" ] || exit 0
if [ ! -w "$output_dir" ]; then
    echo "$0: ERROR: $template_dir exists, but $output_dir is not writable: templates not rendered" >&2
    exit 0
fi

# envsubst replaces exactly the variables named in its argument. awk's ENVIRON
# gives the names as they are, where parsing `env` would be fooled by values
# that span lines.
names=$(awk -v filter="${NGINX_ENVSUBST_FILTER:-}" 'BEGIN {
    for (name in ENVIRON)
        if (name ~ /^[A-Za-z_][A-Za-z0-9_]*$/ && (filter == "" || name ~ filter))
            printf "${%s} ", name
}')

find -L "$template_dir" -type f -name "*$suffix" -print | while IFS= read -r template; do
    relative=${template#"$template_dir"/}
    output="$output_dir/${relative%"$suffix"}"
    mkdir -p "$(dirname "$output")"
    log "rendering $template to $output"
    envsubst "$names" <"$template" >"$output"
done
