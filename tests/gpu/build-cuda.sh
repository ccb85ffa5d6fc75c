#!/usr/bin/env bash
# Builds the CUDA worker (`cargo build -p hearth-worker --features cuda`) on a machine without a GPU
# or a CUDA toolkit, from the registry's NVIDIA wheels only:
#   - nvidia-cuda-nvcc (CUDA 13: the cu12 wheels ship ptxas but no nvcc driver), nvidia-cuda-runtime,
#     nvidia-cuda-cccl: nvcc and the headers candle-kernels compiles its kernels with;
#   - nvidia-cublas, nvidia-curand, nvidia-cuda-nvrtc: the libraries the binary links against.
# The driver library (libcuda) comes with the GPU driver, not in any wheel: the link uses a stub
# with the driver API symbols cudarc references (as the CUDA toolkit's own lib/stubs/libcuda.so
# does); at run time the real libcuda.so.1 of the machine's driver is loaded instead.
# cudarc 0.19 knows CUDA up to 13.4; CUDARC_CUDA_VERSION=13040 selects those bindings for nvcc 13.5.
# Takes about 35 min on 2 cores (a separate target directory, every dependency built with CUDA).
#   bash tests/gpu/build-cuda.sh            # VENV=… TARGET=… CUDA_COMPUTE_CAP=… to override
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${VENV:-$PWD/target/cuda-venv}"
target="${TARGET:-$PWD/target/cuda}"
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-cccl nvidia-cublas nvidia-curand nvidia-cuda-nvrtc
cuda=$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)
stubs="$venv/linkstubs"
mkdir -p "$stubs"
for l in cublas cublasLt cudart curand nvrtc; do
  ln -sf "$(ls "$cuda"/lib/lib$l.so.* | head -1)" "$stubs/lib$l.so"
done
export CUDARC_CUDA_VERSION=13040 CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}" CARGO_TARGET_DIR="$target"
export PATH="$cuda/bin:$PATH" CUDA_ROOT="$cuda" CUDA_PATH="$cuda" CUDA_TOOLKIT_ROOT_DIR="$cuda"
export LIBRARY_PATH="$stubs:$cuda/lib:${LIBRARY_PATH:-}"
# 1. Everything but the final link (the library does not link), then the stub of the driver API.
cargo build -p hearth-worker --features cuda --lib
nm -u "$(ls -t "$target"/debug/deps/libcudarc-*.rlib | head -1)" | awk '{print $2}' | grep -E '^cu[A-Z]' | sort -u \
  | awk '{print "void " $1 "(void) {}"}' > "$stubs/cuda_stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/cuda_stub.c"
# 2. The binary.
cargo build -p hearth-worker --features cuda
file "$target/debug/hearth-worker"
echo "built $target/debug/hearth-worker with CUDA" >&2
