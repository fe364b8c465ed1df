#!/bin/bash
# Prints the directory of the vendored nginx source: the nginx-src crate's
# nginx/ tree, as cargo fetched it for this workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(cargo metadata --format-version 1 --locked |
    perl -MJSON::PP -e 'my $m = decode_json(join "", <STDIN>);
        for (@{$m->{packages}}) { if ($_->{name} eq "nginx-src") { (my $d = $_->{manifest_path}) =~ s{/Cargo\.toml$}{/nginx}; print $d; last } }')
[ -f "$dir/src/core/nginx.h" ] || { echo "nginx source of the nginx-src crate not found" >&2; exit 1; }
echo "$dir"
