# syntax=docker/dockerfile:1
# The leadscore engine as a container image (README "Run in production"):
#   docker build -t leadscore .
#   docker run -d -p 8080:8080 --stop-timeout 45 -v leadscore-data:/var/lib/leadscore leadscore

# Build: Rust's Debian image; bundled SQLite, mimalloc and ring need only
# its C compiler (TLS is rustls, no OpenSSL).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep downloaded crates and compiled dependencies between
# builds; the binary is copied out of the mounted target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -D -m 0755 target/release/leadscore /out/leadscore

# Runtime: the builder's Debian, so the same glibc. It has bash, which the
# health check uses instead of curl. CA certificates for a PostgreSQL
# server certificate checked against the system roots.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 leadscore \
 && useradd --system --uid 10001 --gid leadscore --no-create-home \
      --home-dir /var/lib/leadscore --shell /usr/sbin/nologin leadscore \
 && install -d -o leadscore -g leadscore -m 0750 /var/lib/leadscore \
 && install -d -m 0755 /etc/leadscore/rules
COPY --from=build /out/leadscore /usr/local/bin/leadscore
COPY --chmod=0755 packaging/docker/healthcheck /usr/local/bin/leadscore-healthcheck
# The example rules (not their tests, which read files from tests/), until
# a volume or bind mount brings yours. Owned by root: the engine reads its
# rules, it does not rewrite them.
COPY rules/*.rhai rules/tiers.toml /etc/leadscore/rules/

ENV LEADSCORE_LISTEN=0.0.0.0:8080 \
    LEADSCORE_RULES=/etc/leadscore/rules \
    LEADSCORE_STORE=sqlite:///var/lib/leadscore/leadscore.db \
    NO_COLOR=1
VOLUME ["/var/lib/leadscore", "/etc/leadscore/rules"]
WORKDIR /var/lib/leadscore
USER leadscore:leadscore
EXPOSE 8080
# 200 once the rules are loaded and the store takes a write.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/leadscore-healthcheck"]
# SIGTERM (docker stop) drains requests for up to 30 s: run with
# --stop-timeout 45 so Docker waits for it.
ENTRYPOINT ["/usr/local/bin/leadscore"]
CMD ["serve"]
