# ngx_http_esper_module. `make run` starts the demo, `make test` runs every test.
# Both install missing system packages and build first.

CARGO ?= cargo
NGINX_BUILD_DIR_FILE := target/release/nginx-build-dir

.PHONY: all deps build run test unit integration clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --release --workspace

run: build
	scripts/run-demo.sh

test: build unit integration

unit:
	$(CARGO) test --release --workspace

integration:
	prove -r t/

clean:
	$(CARGO) clean
	rm -rf t/tmp
