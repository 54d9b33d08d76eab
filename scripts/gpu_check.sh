#!/usr/bin/env bash
# The GPU check (DESIGN.md section 6), one prepared script for a GPU machine:
#   1. the `gpu` tests (each kernel, the whole model and 50 training steps
#      against the CPU reference; NCCL on one rank),
#   2. the kernel benchmarks (GEMM TFLOP/s, fused kernels' GB/s, attention),
#   3. llm-train --device cuda --bf16 on a ~125M and a ~1B LLaMA, and the same
#      models in PyTorch on the same GPU (bf16 autocast, SDPA, fused AdamW,
#      torch.compile), printing tokens/s, MFU against the GPU's dense bf16 peak,
#      and the ratio, as a table at the end.
# Binaries: gpu-bundle/ or gpu-bundle.tar.xz (scripts/gpu_bundle.sh packs them
# where MPI, Boost and the rest are installed), else build/bin. What comes back
# goes to $OUT (default /tmp/gpu_check): gpu_check.log, summary.txt and
# details.tar.gz (every test, bench and training log and the metrics files):
# three files, since the device tool returns at most eight.
# Budget: about 6-8 minutes on an H100.
#   scripts/gpu_check.sh [--quick]     (--quick: tests and the 125M model only)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEST=${OUT:-/tmp/gpu_check}
mkdir -p "$DEST"
OUT=$(mktemp -d /tmp/gpu_check_work.XXXXXX)  # the details, packed into $DEST at exit
deliver() { cp "$OUT/gpu_check.log" "$OUT/summary.txt" "$DEST/" 2>/dev/null; tar -czf "$DEST/details.tar.gz" -C "$OUT" . 2>/dev/null; }
trap deliver EXIT
LOG=$OUT/gpu_check.log
SUMMARY=$OUT/summary.txt
QUICK=0; [ "${1:-}" = "--quick" ] && QUICK=1
: >"$SUMMARY"
say() { echo "$*" | tee -a "$LOG"; }
row() { echo "$*" | tee -a "$SUMMARY" >>"$LOG"; }
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }

# ---- binaries and the libraries they need --------------------------------
[ ! -x gpu-bundle/bin/llm-train ] && [ -f gpu-bundle.tar.xz ] && tar -xJf gpu-bundle.tar.xz
if [ -x gpu-bundle/bin/llm-train ]; then BIN=$ROOT/gpu-bundle/bin; LIB=$ROOT/gpu-bundle/lib
else BIN=$ROOT/build/bin; LIB=""; fi
libdirs=()
[ -n "$LIB" ] && libdirs+=("$LIB")
libdirs+=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib)
PY=${PYTHON:-python3}
# NCCL and the CUDA 13 runtime/cuBLAS from PyTorch's wheels when the toolkit lacks them
# (nvidia/<pkg>/lib, or nvidia/cu13/lib for the CUDA 13 wheels): the site directories,
# the user's, and wherever torch itself was installed (a venv, say).
site=$($PY - 2>/dev/null <<'PY' || true
import os, site
dirs = list(site.getsitepackages()) + [site.getusersitepackages()]
try:
    import torch
    dirs.append(os.path.dirname(os.path.dirname(torch.__file__)))
except Exception:
    pass
print(" ".join(dict.fromkeys(d for d in dirs if os.path.isdir(d))))
PY
)
for s in $site; do for d in "$s"/nvidia/*/lib; do [ -d "$d" ] && libdirs+=("$d"); done; done
export LD_LIBRARY_PATH=$(IFS=:; echo "${libdirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
say "== gpu_check $(date -u +%FT%TZ) on $(hostname)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$LOG"
# Dense bf16 peak for MFU (datasheets; llm-train picks the same from the device name).
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
case "$GPU_NAME" in
  *H100*PCIe*) PEAK_TFLOPS=756 ;;
  *H100*NVL*|*H200*NVL*) PEAK_TFLOPS=835 ;;
  *H100*|*H200*) PEAK_TFLOPS=989 ;;
  *A100*) PEAK_TFLOPS=312 ;;
  *) PEAK_TFLOPS=989; say "note: unknown GPU '$GPU_NAME': MFU against 989 TFLOP/s (an H100 SXM)" ;;
esac
(nvcc --version 2>/dev/null | tail -1; $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1) | tee -a "$LOG"
missing=$(ldd "$BIN/llm-train" | grep "not found" || true)
if [ -n "$missing" ]; then
  say "gpu_check: $BIN/llm-train cannot start, libraries not found:"; say "$missing"
  say "run scripts/gpu_bundle.sh on the build machine and carry gpu-bundle/"; exit 1
fi

# ---- 1. gpu tests -----------------------------------------------------------
fails=0
for t in $(for f in tests/gpu/*_test.cpp; do basename "$f" .cpp; done); do
  if [ ! -x "$BIN/$t" ]; then row "test   $t: MISSING"; fails=$((fails + 1)); continue; fi
  # --gtest_brief prints failures and the totals only ("[  PASSED  ] 7 tests.", "[  SKIPPED ] ...").
  if timeout 180 "$BIN/$t" --gtest_brief=1 >"$OUT/$t.log" 2>&1; then
    passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$OUT/$t.log" | tail -1)
    skipped=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$OUT/$t.log" | tail -1)
    if [ "${passed:-0}" = 0 ]; then  # every test skipped: the GPU (or NCCL) was not usable
      row "test   $t: ALL SKIPPED (${skipped:-0} skipped; see $OUT/$t.log)"; fails=$((fails + 1))
    else
      row "test   $t: passed (${passed} passed, ${skipped:-0} skipped)"
    fi
  else
    rc=$?
    row "test   $t: FAILED (rc $rc$([ $rc -eq 124 ] && echo ', timed out'))"; fails=$((fails + 1))
    grep -E "Failure|FAILED|error|Expected|Which is|actual" "$OUT/$t.log" | head -40 >>"$LOG"
  fi
done
say "tests done at $(elapsed) s"

# ---- 2. kernel benchmarks ----------------------------------------------------
for b in llm-bench-gpu-gemm llm-bench-gpu-kernels llm-bench-gpu-attention; do
  [ -x "$BIN/$b" ] || { say "bench $b missing"; continue; }
  timeout 90 "$BIN/$b" >"$OUT/$b.log" 2>&1 || say "bench $b: rc $?"
  cat "$OUT/$b.log" >>"$LOG"
done
say "benchmarks done at $(elapsed) s"

# ---- 3. training: llm-train against PyTorch ---------------------------------
DATA=/tmp/gpu_check_data/rand
mkdir -p /tmp/gpu_check_data
"$BIN/llm-prepare-data" --random-tokens 40000000 --vocab-size 32000 --output-prefix "$DATA" >>"$LOG" 2>&1

median_tps() {  # median tokens_per_sec of the logged iterations after the first two logs
  $PY - "$1" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_sec"' in l]
v = [r["tokens_per_sec"] for r in rows[2:]] or [r["tokens_per_sec"] for r in rows]
print(statistics.median(v) if v else 0)
PY
}

# name layers hidden heads groups ffn seq micro iters
train_pair() {
  local name=$1 L=$2 H=$3 NH=$4 G=$5 F=$6 S=$7 MB=$8 IT=$9
  local metrics=$OUT/metrics_$name.jsonl
  rm -f "$metrics"
  timeout 300 "$BIN/llm-train" --device cuda --bf16 --data-path "$DATA" --vocab-size 32000 \
    --num-layers "$L" --hidden-size "$H" --num-attention-heads "$NH" --num-query-groups "$G" \
    --ffn-hidden-size "$F" --seq-length "$S" --micro-batch-size "$MB" --global-batch-size "$MB" \
    --train-iters "$IT" --lr 3e-4 --min-lr 3e-5 --lr-warmup-iters 5 --log-interval 2 --eval-interval 100000 \
    --eval-iters 1 --metrics-file "$metrics" >"$OUT/train_$name.log" 2>&1
  local rc=$?
  tail -3 "$OUT/train_$name.log" >>"$LOG"
  local ours=0 ours_loss=nan
  if [ $rc -eq 0 ]; then
    ours=$(median_tps "$metrics")
    ours_loss=$($PY -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if "tokens_per_sec" in l]; print(r[-1]["lm_loss"] if r else "nan")' "$metrics")
  else
    fails=$((fails + 1))
    grep -m3 -E "error|Error|what\(\)" "$OUT/train_$name.log" | sed "s/^/train  $name: /" | tee -a "$SUMMARY" >>"$LOG"
  fi
  local torch_json
  torch_json=$(timeout 300 $PY bench/torch_llama.py --device cuda --bf16 --compile --fused-adamw --json \
    --layers "$L" --hidden "$H" --heads "$NH" --groups "$G" --ffn "$F" --vocab 32000 --seq "$S" \
    --micro-batch "$MB" --iters 15 --warmup 5 2>>"$OUT/torch_$name.log" | grep '^RESULT ' | cut -c8-)
  [ -z "$torch_json" ] && tail -5 "$OUT/torch_$name.log" | sed "s/^/torch  $name: /" | tee -a "$SUMMARY" >>"$LOG"
  $PY - "$name" "$rc" "$ours" "${torch_json:-{\}}" "$L" "$H" "$NH" "$G" "$F" "$S" "$PEAK_TFLOPS" "$ours_loss" <<'PY' | tee -a "$SUMMARY" >>"$LOG"
import json, math, sys
name, rc, ours, tj = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4] or "{}")
L, H, NH, G, F, S = map(int, sys.argv[5:11])
peak = float(sys.argv[11]) * 1e12         # dense bf16 of this GPU
ours_loss, their_loss = float(sys.argv[12]), float(tj.get("final_loss", "nan"))
V, hd = 32000, H // NH
matmul = L * (H * (NH * hd + 2 * G * hd) + NH * hd * H + 3 * H * F) + V * H
fpt = 6 * matmul + 12 * L * H * S        # PaLM's model FLOPs per token, as llm-train counts
theirs = tj.get("tokens_per_sec_median", 0.0)
mfu = lambda tps: 100.0 * tps * fpt / peak
ratio = ours / theirs if theirs else float("nan")
print(f"train  {name:5s} {matmul/1e6:7.0f}M matmul params  llm-train {ours:9.0f} tok/s MFU {mfu(ours):5.1f}%"
      f"{'' if rc == 0 else f' (rc {rc})'}  |  PyTorch {theirs:9.0f} tok/s MFU {mfu(theirs):5.1f}%  |  ratio {ratio:.2f}")
# Uniformly random tokens: no model can beat ln(V) = 10.37, and both should sit just above it.
print(f"train  {name:5s} final loss: llm-train {ours_loss:.4f}, PyTorch {their_loss:.4f} (ln {V} = {math.log(V):.4f})")
PY
  say "$name done at $(elapsed) s"
}
train_pair 125m 12 768 12 12 2048 1024 16 30
[ $QUICK -eq 0 ] && train_pair 1b 16 2048 16 8 5632 2048 4 20

echo; echo "== gpu_check summary ($(elapsed) s)"; cat "$SUMMARY"
[ $fails -eq 0 ]
