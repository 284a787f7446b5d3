# syntax=docker/dockerfile:1
#
# The token-rotator operator image.
#
#   docker build -t ghcr.io/token-rotator/token-rotator:<version> .
#
# A binary built outside (the `prebuilt` target; hack/image.sh builds it so, without a daemon):
#
#   docker build --target prebuilt --build-arg BINARY=target/release/token-rotator \
#     -t token-rotator:dev .
#
# The binary links glibc and libgcc_s dynamically (TLS is rustls, no OpenSSL), so the final
# stage is distroless "cc" (glibc, libgcc, CA roots in /etc/ssl/certs for the provider TLS
# verification), not "static". Builder and runtime are both Debian 12 (bookworm), so the
# glibc the binary was linked against is the one it runs with. The allocator, jemalloc, is
# built from source (the builder image has make and a C compiler) and linked statically.
# Both base images are build arguments (a mirror, a pinned digest, or the local base
# hack/image.sh makes from Debian's packages); the defaults are the public images.

ARG RUST_VERSION=1.95
ARG BUILDER_IMAGE=rust:${RUST_VERSION}-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin token-rotator \
    && install -D -m 0755 target/release/token-rotator /out/token-rotator

# What both final images share: everything but where the binary comes from.
FROM ${RUNTIME_IMAGE} AS runtime
LABEL org.opencontainers.image.title="token-rotator" \
      org.opencontainers.image.description="Kubernetes operator that keeps short-lived API tokens fresh inside Secrets" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
# /metrics, /healthz and /readyz (--metrics-addr).
EXPOSE 8080
ENTRYPOINT ["/token-rotator"]
CMD ["run"]

# A binary from the build context (built for Debian 12's glibc or older), not from the builder.
FROM runtime AS prebuilt
ARG BINARY=target/release/token-rotator
COPY --chmod=0755 ${BINARY} /token-rotator

# The default target: the binary the builder stage compiled.
FROM runtime
COPY --from=builder /out/token-rotator /token-rotator
