# syntax=docker/dockerfile:1.7
# Hearth worker image (CPU). Build from the repository root:
#   docker build -f deploy/docker/worker.Dockerfile -t hearth-worker .
# Run (the coordinator's address as it printed it):
#   docker run -d --name hearth-worker -e HEARTH_COORDINATOR=/ip4/…/tcp/4001/p2p/12D3… \
#     -e HEARTH_THREADS=4 -v hearth-worker:/var/cache/hearth --cpus 4 hearth-worker
# No inbound port is needed: the worker dials out. The model comes from the coordinator (blake3-checked)
# and is kept in the volume with the shards, checkpoints and identity.key (your credit: keep the volume).

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=hearth-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=hearth-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=hearth-target-cpu,target=/src/target,sharing=locked \
    cargo build --release --locked -p hearth-worker --bin hearth-worker \
 && install -D -m 0755 target/release/hearth-worker /out/hearth-worker

FROM ${RUNTIME_IMAGE}
# curl: the entrypoint's peer-id lookup through the coordinator's /api/status.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 hearth \
 && useradd --system --uid 10001 --gid hearth --home-dir /var/cache/hearth --shell /usr/sbin/nologin hearth \
 && install -d -o hearth -g hearth -m 0700 /var/cache/hearth \
 && install -d -o hearth -g hearth -m 0755 /run/hearth
COPY --from=build /out/hearth-worker /usr/local/bin/hearth-worker
COPY --chmod=0755 deploy/docker/worker-entrypoint.sh /usr/local/bin/hearth-worker-entrypoint
ENV HEARTH_CACHE=/var/cache/hearth \
    HEARTH_DEVICE=cpu \
    RUST_LOG=info,libp2p=warn
USER 10001:10001
WORKDIR /var/cache/hearth
VOLUME ["/var/cache/hearth"]
# A worker serves nothing to probe; its liveness is its process.
HEALTHCHECK NONE
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/hearth-worker-entrypoint"]
