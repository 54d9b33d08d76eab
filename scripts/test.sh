#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole CTest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# The fuzz tests (tests/fuzz/) build with clang++ and its libFuzzer runtime;
# installed before setup.sh configures, so CMake finds them (without them the
# two tests are reported as skipped).
for p in clang libclang-rt-dev; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    echo "[test] installing clang and libclang-rt-dev for the fuzz tests"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends clang libclang-rt-dev
    break
  fi
done
scripts/setup.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
