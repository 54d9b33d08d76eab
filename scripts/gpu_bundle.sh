#!/usr/bin/env bash
# Packs what scripts/gpu_check.sh runs on a GPU machine that has the CUDA
# toolkit, NCCL and cuDNN (PyTorch's wheels carry them) but no MPI, Boost,
# OpenBLAS, SentencePiece or NLopt: the CUDA-built binaries from build/ and
# the shared libraries they need that such a machine lacks, into gpu-bundle/
# and gpu-bundle.tar.xz (about 10 MB; both git-ignored: carry the archive,
# scripts/gpu_check.sh unpacks it).
# Run it here after scripts/setup.sh has built build/ with the CUDA backend.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin
OUTDIR=gpu-bundle
TOOLS=(llm-train llm-prepare-data)
TESTS=($(for f in tests/gpu/*_test.cpp; do basename "$f" .cpp; done))
BENCHES=(llm-bench-gpu-gemm llm-bench-gpu-kernels llm-bench-gpu-attention)
cmake --build build --target "${TOOLS[@]}" "${TESTS[@]}" "${BENCHES[@]}" >/dev/null
rm -rf "$OUTDIR" && mkdir -p "$OUTDIR/bin" "$OUTDIR/lib"
for b in "${TOOLS[@]}" "${TESTS[@]}" "${BENCHES[@]}"; do
  [ -x "$BIN/$b" ] || { echo "gpu_bundle: $BIN/$b was not built" >&2; exit 1; }
  strip -o "$OUTDIR/bin/$b" "$BIN/$b"
done
# The GPU machine brings glibc, libstdc++, libgomp, the driver and the CUDA
# libraries (toolkit or PyTorch's wheels); everything else comes along.
SKIP='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|librt\.|libpthread\.|libstdc\+\+|libgcc_s|libcuda\.|libcudart|libcublas|libnccl|libcudnn|libnvrtc|libnvJitLink)'
for b in "$OUTDIR"/bin/*; do
  ldd "$b" | awk '/=> \//{print $1, $3}'
done | sort -u | while read -r name path; do
  [[ "$name" =~ $SKIP ]] && continue
  cp -L "$path" "$OUTDIR/lib/$name"
done
tar -cJf "$OUTDIR.tar.xz" "$OUTDIR"
echo "gpu_bundle: $(du -sh "$OUTDIR" | cut -f1) in $OUTDIR/, $(du -sh "$OUTDIR.tar.xz" | cut -f1) as $OUTDIR.tar.xz"
ls "$OUTDIR/lib" | tr '\n' ' '; echo
