# syntax=docker/dockerfile:1
# The switchyard image: one binary for every component (`switchyard operator | gate | node | dev | crd`).
#
#   docker build -t switchyard:0.1.0 .
#
# The runtime stage is distroless (glibc, CA certificates, no shell, no package manager) and runs as the
# unprivileged uid/gid 65532; the binary needs no writable filesystem and reads its settings from flags
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
 && install -D -m 0755 target/release/switchyard /out/switchyard

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="switchyard" \
      org.opencontainers.image.description="Switchyard: Kubernetes-native distributed game-server cluster (operator, gate, demo node)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/switchyard /usr/local/bin/switchyard
USER 65532:65532
ENTRYPOINT ["switchyard"]
