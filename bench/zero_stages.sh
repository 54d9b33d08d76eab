#!/usr/bin/env bash
# Per-rank memory and tokens/s of ZeRO stages 0-3 at dp = 2 and 4 (fp32 and
# bf16) for one small fixed LLaMA, beside the ZeRO paper's formula:
#
#   4 layers, hidden 256, 8 heads in 4 query groups, seq 128, micro batch 4,
#   global batch 16, vocab 4096 (BPE tokenizer trained on the Debian
#   'fortunes' corpus by llm-prepare-data), AdamW, clip 1.0.
#
# For every configuration llm-train runs --iters iterations with
# --report-memory; the table shows data-parallel rank 0's measured bytes per
# category after the first iteration (from the allocator's counters), the
# model states against the formula (K bytes per weight and per gradient,
# optimizer state 8Ψ fp32 moments, + 4Ψ fp32 master weights in bf16; stage 1
# divides the optimizer state by dp, 2 also the gradients, 3 everything), the
# peak of all memory, tokens/s (median after --warmup) and the data-parallel
# bytes sent per iteration. dp 4 is oversubscribed on fewer than 4 cores, so
# compare tokens/s within one dp only. About 2 minutes on 2 cores.
#
# Usage: bench/zero_stages.sh [--iters N] [--warmup N] [--build-dir D] [--keep-tmp]
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="$ROOT/build"
ITERS=10
WARMUP=3
KEEP_TMP=0
CMDLINE="bench/zero_stages.sh${*:+ $*}"

die() { echo "zero_stages: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --iters) [ $# -ge 2 ] || die "--iters needs a value"; ITERS="$2"; shift 2 ;;
    --warmup) [ $# -ge 2 ] || die "--warmup needs a value"; WARMUP="$2"; shift 2 ;;
    --build-dir) [ $# -ge 2 ] || die "--build-dir needs a value"; BUILD_DIR="$2"; shift 2 ;;
    --keep-tmp) KEEP_TMP=1; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ "$ITERS" =~ ^[0-9]+$ && "$WARMUP" =~ ^[0-9]+$ && "$ITERS" -ge $((WARMUP + 2)) ]] ||
  die "--iters must be an integer at least --warmup + 2"
LLM_TRAIN="$BUILD_DIR/bin/llm-train"
LLM_PREP="$BUILD_DIR/bin/llm-prepare-data"
[ -x "$LLM_TRAIN" ] || die "$LLM_TRAIN is missing: cmake --build $BUILD_DIR (or scripts/test.sh)"
command -v mpiexec >/dev/null || die "mpiexec not found (apt-get install openmpi-bin)"
[ -r /usr/share/games/fortunes/fortunes ] || die "the fortunes corpus is missing (apt-get install fortunes)"

TMP="$(mktemp -d)"
cleanup() { [ "$KEEP_TMP" = 1 ] && echo "kept $TMP" >&2 || rm -rf "$TMP"; }
trap cleanup EXIT
"$LLM_PREP" --input /usr/share/games/fortunes --vocab-size 4096 --tokenizer-model "$TMP/tok.model" \
  --output-prefix "$TMP/data" >"$TMP/prep.log" 2>&1 || { cat "$TMP/prep.log" >&2; die "llm-prepare-data failed"; }

ROOT_FLAG=""; [ "$(id -u)" = 0 ] && ROOT_FLAG="--allow-run-as-root"
MODEL="--num-layers 4 --hidden-size 256 --num-attention-heads 8 --num-query-groups 4 --seq-length 128
  --micro-batch-size 4 --global-batch-size 16 --lr 3e-4 --lr-warmup-iters 2 --clip-grad 1.0 --log-interval 1
  --eval-iters 0 --data-path $TMP/data --tokenizer-model $TMP/tok.model --train-iters $ITERS --report-memory"

echo "zero_stages: $(nproc) cores; runs of $ITERS iterations" >&2
for precision in fp32 bf16; do
  for dp in 2 4; do
    for stage in 0 1 2 3; do
      tag="${precision}_dp${dp}_z${stage}"
      extra=""; [ "$precision" = bf16 ] && extra="--bf16"
      echo "  $tag" >&2
      # shellcheck disable=SC2086
      timeout 600 mpiexec --oversubscribe $ROOT_FLAG -n "$dp" -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 \
        "$LLM_TRAIN" $MODEL --zero-stage "$stage" $extra --metrics-file "$TMP/$tag.jsonl" >"$TMP/$tag.log" 2>&1 ||
        { tail -20 "$TMP/$tag.log" >&2; die "$tag failed (log above)"; }
    done
  done
done

python3 - "$TMP" "$WARMUP" "$CMDLINE" <<'EOF'
import json, re, statistics, sys
tmp, warmup, cmdline = sys.argv[1], int(sys.argv[2]), sys.argv[3]
units = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
def size(text, label):
    m = re.search(re.escape(label) + r" ([0-9.]+) (B|KiB|MiB|GiB)", text)
    return float(m.group(1)) * units[m.group(2)] if m else float("nan")
def mib(x): return f"{x / 2**20:.2f}"
print(f"Measured with `{cmdline}` (rank 0 after iteration 1; MiB):\n")
print("| precision | dp | stage | parameters | gradients | master weights | optimizer state | model states | formula | predicted | ratio | peak total | tokens/s | dp bytes/iter |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for precision in ("fp32", "bf16"):
    for dp in (2, 4):
        for stage in range(4):
            tag = f"{precision}_dp{dp}_z{stage}"
            log = open(f"{tmp}/{tag}.log", errors="replace").read()
            row = log[log.index("rank 0 (tp 0"):].split("\n")[0]
            k = 4 if precision == "fp32" else 2
            o = 8 if precision == "fp32" else 12
            formula = " + ".join(f"{c}Ψ{'/dp' if stage >= s else ''}" for c, s in ((k, 3), (k, 2), (o, 1)))
            its = [json.loads(l) for l in open(f"{tmp}/{tag}.jsonl") if '"tokens_per_sec"' in l]
            tps = statistics.median(j["tokens_per_sec"] for j in its[warmup:])
            comm = sum(its[-1]["comm_bytes_per_iter"]["dp"].values())
            states, predicted = size(row, "model states"), size(row, "predicted")
            print(f"| {precision} | {dp} | {stage} | {mib(size(row, 'parameters'))} | {mib(size(row, 'gradients'))} | "
                  f"{mib(size(row, 'master weights'))} | {mib(size(row, 'optimizer state'))} | {mib(states)} | "
                  f"{formula} | {mib(predicted)} | {states / predicted:.3f} | {mib(size(row, 'total'))} | "
                  f"{tps:.0f} | {comm / 2**20:.2f} MiB |")
EOF
