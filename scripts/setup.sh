#!/usr/bin/env bash
# Installs what is missing (Debian/Ubuntu packages only) and builds into build/.
# Idempotent: a second run installs nothing and rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(build-essential cmake ninja-build pkg-config
          libopenmpi-dev openmpi-bin libboost-program-options-dev libopenblas-openmp-dev
          libsentencepiece-dev sentencepiece nlohmann-json3-dev libxxhash-dev libgtest-dev
          libnlopt-cxx-dev gnuplot-nox
          fortunes)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# CUDA: compiled when the toolkit is installed (no GPU needed to build).
CUDA_FLAG=()
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
if [ -n "${LLM_WITH_CUDA:-}" ]; then CUDA_FLAG=(-DLLM_WITH_CUDA="$LLM_WITH_CUDA"); fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" "${CUDA_FLAG[@]}" >/dev/null
cmake --build build -j"$(nproc)"
echo "[setup] built: $(ls build/bin | grep '^llm-' | tr '\n' ' ')"
