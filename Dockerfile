# nginx with ngx_http_esper_module, on the official nginx image:
#
#   docker build -t nginx-esper .
#   docker run -v /path/to/esper_api_key:/run/secrets/esper_api_key:ro \
#       -e ESPER_API_KEY_FILE=/run/secrets/esper_api_key \
#       -e ESPER_UPSTREAM=http://app:3000 -p 8080:80 nginx-esper
#
# The unprivileged variant (runs as uid 101, listens on 8080):
#   docker build --build-arg NGINX_IMAGE=nginxinc/nginx-unprivileged -t nginx-esper:unprivileged .
#
# The site comes from nginx-conf/docker/templates/default.conf.template, filled
# in at start from ESPER_* environment variables (docs/docker.md); no key or
# other secret is in any layer, and nginx reads the key and the pass secret
# from files.

ARG NGINX_VERSION=1.28.3
ARG NGINX_IMAGE=nginx
ARG RUST_VERSION=1.95.0

# The Rust toolchain. The step puts its version in the build log, and keeps
# buildah from leaving this stage's working container behind.
FROM rust:${RUST_VERSION}-slim AS rust
RUN cargo --version

# The builder is the official image itself, so the module is built for
# exactly the nginx it loads into: the version and configure arguments come
# from that image's `nginx -V`. Both variants carry the same nginx binary, so
# this stage is shared by them.
FROM nginx:${NGINX_VERSION} AS builder
COPY --from=rust /usr/local/cargo /usr/local/cargo
COPY --from=rust /usr/local/rustup /usr/local/rustup
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
WORKDIR /src
COPY . .
RUN NGINX=/usr/sbin/nginx scripts/docker-build-steps.sh module /out

# The base's own nginx.conf, with the module loaded.
FROM ${NGINX_IMAGE}:${NGINX_VERSION} AS conf
USER root
COPY scripts/docker-build-steps.sh /esper/scripts/
RUN /esper/scripts/docker-build-steps.sh conf /etc/nginx/nginx.conf /esper/nginx.conf

FROM ${NGINX_IMAGE}:${NGINX_VERSION}
LABEL org.opencontainers.image.title="nginx-esper" \
      org.opencontainers.image.description="nginx with ngx_http_esper_module (Esper bot and abuse mitigation)"
COPY --from=builder /out/ngx_http_esper_module.so /usr/lib/nginx/modules/
COPY --from=conf /esper/nginx.conf /etc/nginx/nginx.conf
COPY nginx-conf/docker/templates/ /etc/nginx/templates/
COPY nginx-conf/docker/docker-entrypoint.d/10-esper-environment.envsh /docker-entrypoint.d/
