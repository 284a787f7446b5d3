# syntax=docker/dockerfile:1
#
# The token-rotator operator image.
#
#   docker build -t ghcr.io/token-rotator/token-rotator:<version> .
#
# The binary links glibc and libgcc_s dynamically (TLS is rustls, no OpenSSL), so the final
# stage is distroless "cc" (glibc, libgcc, CA roots in /etc/ssl/certs for the provider TLS
# verification), not "static". Builder and runtime are both Debian 12 (bookworm), so the
# glibc the binary was linked against is the one it runs with. The allocator, jemalloc, is
# built from source (the builder image has make and a C compiler) and linked statically.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin token-rotator \
    && install -D -m 0755 target/release/token-rotator /out/token-rotator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="token-rotator" \
      org.opencontainers.image.description="Kubernetes operator that keeps short-lived API tokens fresh inside Secrets" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/token-rotator /token-rotator
USER 65532:65532
# /metrics, /healthz and /readyz (--metrics-addr).
EXPOSE 8080
ENTRYPOINT ["/token-rotator"]
CMD ["run"]
