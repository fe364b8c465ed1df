# ngx_http_esper_module. `make run` starts the demo, `make test` runs every test,
# `make bench` measures the decision path against auth_request.
# Each installs what is missing and builds first.

CARGO ?= cargo
NGINX ?= /usr/sbin/nginx

.PHONY: all deps deps-build build run test unit integration external licenses browser layers check-packages module deb docker-check bench fuzz mutants sanitize clean

all: build

deps:
	@scripts/install-deps.sh

# What building the module (and its package) needs, without the test tools.
deps-build:
	@scripts/install-deps.sh --build

build: deps
	$(CARGO) build --release --workspace

run: build
	scripts/run-demo.sh

# Ends by checking that no process the run started is left.
test: build licenses unit integration external
	t/tools/no-leftovers.sh

# Every crate linked into the module is under a license allowed in
# scripts/licenses.pl (which also writes the package's copyright file).
licenses:
	scripts/licenses.pl check >/dev/null

unit:
	$(CARGO) test --release --workspace

integration:
	prove -r t/

# The module built for a separate nginx source tree, with cargo and with
# nginx's own build system.
external:
	t/tools/check-external-build.sh

# The challenge round trip in headless Chromium (Debian's package), driven by
# playwright-core (pinned in t/browser/package-lock.json); each file starts
# its own mock and nginx. Kept out of `make test` (a browser, about a minute).
browser: build
	scripts/install-deps.sh --browser
	cd t/browser && timeout 600 node --test --test-concurrency=1 --test-timeout=120000

# Debian 12 and 13, each in a debootstrapped chroot under target/chroots (the
# host's nginx is never touched): the module built for the distribution's
# nginx and the t/ smoke set run in it; the package built, checked by lintian,
# installed, run with a site in front of the mock, purged; and each suite's
# package refused by apt beside the other suite's nginx.
check-packages: build
	t/tools/check-packages.sh

# The Docker image, both variants, built with buildah on stand-in base images
# and run (also part of `integration`).
docker-check: build
	prove t/image.t

# The shape of src/ alone (also part of `integration`): its layers, no
# import cycle, no file over 500 lines, unsafe within budget.
layers:
	prove t/layers.t

# The module for the nginx you run: make module NGINX=/usr/sbin/nginx
module: deps-build
	NGINX=$(NGINX) scripts/build-for-nginx.sh

# A Debian package of it (libnginx-mod-http-esper), made the way Debian ships
# nginx modules: make deb NGINX=/usr/sbin/nginx
deb: deps-build
	NGINX=$(NGINX) scripts/build-deb.sh

# Property tests of everything that reads untrusted bytes, far longer than the
# default run inside `make test` (a few minutes).
fuzz: deps
	PROPTEST_CASES=$${PROPTEST_CASES:-200000} $(CARGO) test --release -p esper-protocol --test properties

# Mutation testing of esper-protocol with cargo-mutants (pinned in
# scripts/install-deps.sh): every mutant of its code must make a test fail,
# but the equivalent ones that .cargo/mutants.toml lists with their reasons.
# A timeout (the mutant made a test hang) counts as caught; a missed mutant
# fails. Not part of `make test`: one build and test per mutant, about 40
# minutes on two cores. One file: make mutants MUTANTS_ARGS='-f
# esper-protocol/src/entity_table.rs'. The report is in target/mutants.out.
MUTANTS_ARGS ?=
mutants:
	scripts/install-deps.sh --mutants
	PROPTEST_CASES=$${PROPTEST_CASES:-64} CARGO_PROFILE_DEV_OPT_LEVEL=1 CARGO_PROFILE_DEV_DEBUG=0 \
		$(CARGO) mutants --package esper-protocol --package esper-client --jobs 1 --timeout 30 --output target $(MUTANTS_ARGS); \
	status=$$?; \
	if [ $$status -eq 3 ] && [ ! -s target/mutants.out/missed.txt ]; then status=0; fi; \
	exit $$status

# The t/ suite against an nginx built with AddressSanitizer (several minutes).
sanitize: deps
	t/tools/sanitize.sh

# Not part of `make test`: a few minutes of load on this machine.
bench: build
	scripts/install-deps.sh --bench
	python3 bench/bench.py

# Never while a check chroot has the host's toolchain mounted in target/.
clean:
	@if findmnt -rn -o TARGET | grep -q '^$(CURDIR)/target/'; then \
		echo "target/ has mounts (a check-packages run?); not cleaning" >&2; exit 1; fi
	$(CARGO) clean
	rm -rf t/tmp
