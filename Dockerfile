# syntax=docker/dockerfile:1
#
# leaderd's container image. Built and published by the release pipeline
# (no Docker engine runs on the development machines; CI lints this file
# with hadolint). Build locally with:
#   docker build -t leaderd:dev .
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" -t leaderd:0.1.0 .
#
# Stage 1 compiles with a pinned Rust toolchain (the one CI uses), the same
# way scripts/release builds the tarball's binary: `cargo build --release
# --locked`, stripped by the release profile (Cargo.toml). The
# dependencies are built first, from Cargo.toml and Cargo.lock alone, so
# that the layer is reused until they change. Stage 2 is Debian slim (glibc,
# a shell and cp for the Helm chart's init container), running as a
# numeric non-root user.

ARG RUST_IMAGE=rust:1.95.0-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
WORKDIR /src

# Dependency layer: a stub crate with the real manifest and lock file.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src \
      target/release/leaderd* \
      target/release/deps/leaderd-* \
      target/release/deps/libleaderd-* \
      target/release/.fingerprint/leaderd-*

# The real sources: only leaderd itself is compiled from here on.
COPY src ./src
RUN cargo build --release --locked \
 && install -D -m 0755 target/release/leaderd /out/leaderd

FROM ${RUNTIME_IMAGE}
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="leaderd" \
      org.opencontainers.image.description="Leader-election daemon: a safe, fast leadership lease in Redis or a Kubernetes Lease, with HTTP status, Prometheus metrics and graceful handover" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# CA certificates for rediss:// and https:// API servers, taken from the
# builder so that the runtime stage installs no packages.
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/leaderd /usr/local/bin/leaderd
COPY config/leaderd.yaml /etc/leaderd/leaderd.yaml

# 65532: the conventional "nonroot" UID/GID of distroless images; numeric so
# that Kubernetes can verify runAsNonRoot without a passwd entry.
USER 65532:65532
ENV LEADERD_CONFIG=/etc/leaderd/leaderd.yaml \
    LEADERD_LOG_FORMAT=json
EXPOSE 9090
# SIGTERM is leaderd's graceful handover: give it time (docker stop -t,
# Kubernetes terminationGracePeriodSeconds) longer than the leader process's
# grace_period + hooks.timeout + 5s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/leaderd", "run"]
