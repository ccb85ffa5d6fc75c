# syntax=docker/dockerfile:1.7
# Hearth worker image for NVIDIA GPUs. Build from the repository root (no GPU needed to build):
#   docker build -f deploy/docker/worker-cuda.Dockerfile --build-arg CUDA_COMPUTE_CAP=86 -t hearth-worker:cuda .
# CUDA_COMPUTE_CAP is the GPU generation the kernels are compiled for (nvidia-smi --query-gpu=compute_cap):
# 75 Turing (RTX 20xx), 80 A100, 86 RTX 30xx, 89 RTX 40xx, 90 H100, 120 RTX 50xx. Newer GPUs than the
# compiled one run the kernels through the driver's PTX JIT. Needs an NVIDIA driver >= 570 on the host.
# Run: docker run -d --gpus all -e HEARTH_COORDINATOR=/ip4/…/tcp/4001/p2p/12D3… \
#        -v hearth-worker:/var/cache/hearth hearth-worker:cuda

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.8.1-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04

# The Rust toolchain is copied from the official image rather than installed with a script.
FROM ${RUST_IMAGE} AS rust

FROM ${CUDA_DEVEL_IMAGE} AS build
ARG CUDA_COMPUTE_CAP=80
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP}
COPY --from=rust /usr/local/rustup /usr/local/rustup
COPY --from=rust /usr/local/cargo /usr/local/cargo
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=hearth-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=hearth-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=hearth-target-cuda,target=/src/target,sharing=locked \
    cargo build --release --locked -p hearth-worker --bin hearth-worker --features cuda \
 && install -D -m 0755 target/release/hearth-worker /out/hearth-worker

FROM ${CUDA_RUNTIME_IMAGE}
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
    HEARTH_DEVICE=cuda:0 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    RUST_LOG=info,libp2p=warn
USER 10001:10001
WORKDIR /var/cache/hearth
VOLUME ["/var/cache/hearth"]
HEALTHCHECK NONE
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/hearth-worker-entrypoint"]
