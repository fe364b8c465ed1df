# Make rule for the Rust static library (see `config`). cargo decides what to
# rebuild, so the rule always runs it; --locked builds the dependency versions
# the repository was tested with.
cat << END >> $NGX_MAKEFILE

.PHONY: $ngx_esper_lib

$ngx_esper_lib:
	NGINX_SOURCE_DIR="$PWD" NGINX_BUILD_DIR="$ngx_esper_objs" \\
	$NGX_CARGO rustc --release --lib --crate-type staticlib \\
		--manifest-path "$ngx_addon_dir/Cargo.toml" \\
		-p ngx_http_esper_module --no-default-features --locked \\
		--target-dir "$ngx_esper_target"

END
