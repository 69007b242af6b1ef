# syntax=docker/dockerfile:1
# The switchyard image: one binary for every component (`switchyard operator | gate | node | dev | crd`).
#
#   docker build -t registry.local/switchyard:0.1.0 .
#
# Without Docker, scripts/image.sh builds the same image from a release binary (README: "Install on a real
# cluster"). Both lay out the root filesystem with that script (`--rootfs`): the binary, exactly the shared
# libraries it links, CA certificates, /etc/passwd and /etc/group with the unprivileged uid/gid 65532, /tmp;
# no shell, no package manager. The binary needs no writable filesystem and reads its settings from flags
# and SWITCHYARD_* variables only, so pods can run it with readOnlyRootFilesystem and every capability
# dropped (see charts/switchyard).

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target/ between builds (BuildKit); the binary is copied out of
# the cached target/ so that the next stage can see it.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin switchyard \
 && install -D -m 0755 target/release/switchyard /out/switchyard \
 && SOURCE_DATE_EPOCH=0 ./scripts/image.sh --binary /out/switchyard --rootfs /rootfs

FROM scratch
COPY --from=build /rootfs/ /
LABEL org.opencontainers.image.title="switchyard" \
      org.opencontainers.image.description="Switchyard: Kubernetes-native distributed game-server cluster (operator, gate, demo node)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/switchyard"
ENV PATH=/usr/local/bin:/usr/bin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /
ENTRYPOINT ["switchyard"]
