#!/bin/sh
# CPU emulation of the attention kernels in core/cuda/flash_attention.cu, for machines
# without a GPU: the kernels' own source (device part, extracted by extract.py) compiled
# by g++ with the PTX it uses (ldmatrix, mma.m16n8k16, cp.async, ex2) and the warp/block
# collectives emulated by emu.h and ptx_emu.inc: one std::thread per CUDA thread,
# std::barrier for __syncthreads and warp collectives, mma/ldmatrix computed from all 32
# lanes' operands per the PTX ISA fragment layouts. It checks the flash and generic
# kernels (forward, backward, dvec, dq finalisation) against a double reference on small
# shapes with tails. It catches indexing, masking, tiling and synchronisation-order bugs;
# it cannot catch hardware timing races (cp.async is synchronous here), performance
# problems, or a misreading of the PTX layouts shared by kernel and emulator.
#   tests/gpu/emulation/run.sh [flash|generic|all]      (about a minute on 2 cores)
set -e
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 "$here/extract.py" "$root/core/cuda/flash_attention.cu" "$work/device.inc"
cuda_inc=${CUDA_HOME:-/usr/local/cuda}/include
g++ -std=c++20 -O2 -w -I"$work" -I"$here" -I"$cuda_inc" -I"$root" "$here/emu_main.cpp" -o "$work/emu" -lpthread
"$work/emu" "${1:-all}"
