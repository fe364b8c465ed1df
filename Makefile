# ngx_http_esper_module. `make run` starts the demo, `make test` runs every test,
# `make bench` measures the decision path against auth_request.
# Each installs what is missing and builds first.

CARGO ?= cargo
NGINX ?= /usr/sbin/nginx

.PHONY: all deps build run test unit integration external distro module docker-check bench fuzz sanitize clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --release --workspace

run: build
	scripts/run-demo.sh

test: build unit integration external distro

unit:
	$(CARGO) test --release --workspace

integration:
	prove -r t/

# The module built for a separate nginx source tree, with cargo and with
# nginx's own build system.
external:
	t/tools/check-external-build.sh

# The module built for the distribution's nginx and run in it.
distro:
	t/tools/check-distro-nginx.sh

# The Docker image, both variants, built with buildah on stand-in base images
# and run (also part of `integration`).
docker-check: build
	prove t/image.t

# The module for the nginx you run: make module NGINX=/usr/sbin/nginx
module: deps
	NGINX=$(NGINX) scripts/build-for-nginx.sh

# Property tests of everything that reads untrusted bytes, far longer than the
# default run inside `make test` (a few minutes).
fuzz: deps
	PROPTEST_CASES=$${PROPTEST_CASES:-200000} $(CARGO) test --release -p esper-protocol --test properties

# The t/ suite against an nginx built with AddressSanitizer (several minutes).
sanitize: deps
	t/tools/sanitize.sh

# Not part of `make test`: a few minutes of load on this machine.
bench: build
	scripts/install-deps.sh --bench
	python3 bench/bench.py

clean:
	$(CARGO) clean
	rm -rf t/tmp
