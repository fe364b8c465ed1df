# ngx_http_esper_module. `make run` starts the demo, `make test` runs every test.
# Both install missing system packages and build first.

CARGO ?= cargo
NGINX_BUILD_DIR_FILE := target/release/nginx-build-dir

.PHONY: all deps build run test unit integration external clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --release --workspace

run: build
	scripts/run-demo.sh

test: build unit integration external

unit:
	$(CARGO) test --release --workspace

integration:
	prove -r t/

# The module built against a separate nginx source tree (NGINX_SOURCE_DIR).
external:
	scripts/check-external-build.sh

clean:
	$(CARGO) clean
	rm -rf t/tmp
