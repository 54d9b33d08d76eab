#!/usr/bin/env bash
# Overhead of the spike guard and of in-memory snapshots on tokens/s, and the
# time from a fault to the job's exit.
#
# Throughput: one fixed small LLaMA (4 layers, hidden 256, 8 heads / 4 query
# groups, seq 128, micro batch 4, global batch 16, vocab 4096 on the Debian
# 'fortunes' corpus), one process with all cores, --iters iterations, in
# --rounds round-robin rounds of: the guard off (--spike-action none), the
# guard on (the default, skip), rollback with a snapshot every 10 iterations,
# and every iteration. tokens/s is the median of the counted iterations.
#
# Faults, on 4 ranks (tp 2 x dp 2): SIGUSR1 to mpirun (every rank finishes its
# iteration, saves, exits 0), and kill -9 of one rank with --comm-timeout 10
# (the others must notice and end the job), each timed from the signal to
# mpirun's exit.
#
# Usage: bench/fault_tolerance.sh [--iters N] [--rounds R] [--build-dir B] [--keep-tmp]
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="$ROOT/build"
ITERS=40
WARMUP=5
ROUNDS=3
KEEP_TMP=0
CMDLINE="bench/fault_tolerance.sh${*:+ $*}"
die() { echo "fault_tolerance: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --iters) [ $# -ge 2 ] || die "--iters needs a value"; ITERS="$2"; shift 2 ;;
    --rounds) [ $# -ge 2 ] || die "--rounds needs a value"; ROUNDS="$2"; shift 2 ;;
    --build-dir) [ $# -ge 2 ] || die "--build-dir needs a value"; BUILD_DIR="$2"; shift 2 ;;
    --keep-tmp) KEEP_TMP=1; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ "$ITERS" =~ ^[0-9]+$ && "$ITERS" -ge $((WARMUP + 10)) ]] || die "--iters must be an integer >= $((WARMUP + 10))"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
LLM_TRAIN="$BUILD_DIR/bin/llm-train"
[ -x "$LLM_TRAIN" ] || die "$LLM_TRAIN is missing: cmake --build $BUILD_DIR (or scripts/test.sh)"
command -v mpiexec >/dev/null || die "mpiexec not found (apt-get install openmpi-bin)"
[ -r /usr/share/games/fortunes/fortunes ] || die "the fortunes corpus is missing (apt-get install fortunes)"
TMP="$(mktemp -d)"
cleanup() { [ "$KEEP_TMP" = 1 ] && echo "kept $TMP" >&2 || rm -rf "$TMP"; }
trap cleanup EXIT
"$BUILD_DIR/bin/llm-prepare-data" --input /usr/share/games/fortunes --vocab-size 4096 \
  --tokenizer-model "$TMP/tok.model" --output-prefix "$TMP/data" >"$TMP/prep.log" 2>&1 ||
  { cat "$TMP/prep.log" >&2; die "llm-prepare-data failed"; }
CORES=$(nproc)
MODEL="--num-layers 4 --hidden-size 256 --num-attention-heads 8 --num-query-groups 4 --seq-length 128
  --micro-batch-size 4 --global-batch-size 16 --lr 3e-4 --lr-warmup-iters 2 --log-interval 1 --eval-iters 0
  --data-path $TMP/data --tokenizer-model $TMP/tok.model"
declare -A FLAGS=(
  [off]="--spike-action none"
  [guard]="--spike-action skip"
  [snap10]="--spike-action rollback --snapshot-interval 10"
  [snap1]="--spike-action rollback --snapshot-interval 1"
)
ORDER="off guard snap10 snap1"
for round in $(seq "$ROUNDS"); do
  for cfg in $ORDER; do
    echo "fault_tolerance: round $round: $cfg" >&2
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=$CORES "$LLM_TRAIN" $MODEL --train-iters "$ITERS" ${FLAGS[$cfg]} \
      --metrics-file "$TMP/$cfg.$round.jsonl" >"$TMP/$cfg.$round.log" 2>&1 ||
      { tail -20 "$TMP/$cfg.$round.log" >&2; die "$cfg failed"; }
  done
done

ROOT_FLAG=""; [ "$(id -u)" = 0 ] && ROOT_FLAG="--allow-run-as-root"
now() { date +%s.%N; }
# $1: tag, $2: extra flags, $3: the kill command (gets $job); prints seconds from the kill to the exit and the code.
fault() {
  local m="$TMP/$1.jsonl"
  # shellcheck disable=SC2086
  mpiexec --oversubscribe $ROOT_FLAG -n 4 -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 "$LLM_TRAIN" $MODEL \
    --train-iters 100000 --tensor-model-parallel-size 2 $2 --metrics-file "$m" >"$TMP/$1.log" 2>&1 &
  local job=$!
  for _ in $(seq 1200); do grep -q '"iteration":5,' "$m" 2>/dev/null && break; sleep 0.05; done
  local t0; t0=$(now)
  eval "$3"
  local code=0
  wait "$job" || code=$?
  echo "$(echo "$(now) - $t0" | bc) $code"
}
echo "fault_tolerance: SIGUSR1 to mpirun" >&2
USR1=$(fault usr1 "--save $TMP/ck" 'kill -USR1 $job')
echo "fault_tolerance: kill -9 of one rank" >&2
HELP="$("$LLM_TRAIN" --help 2>&1 || true)"
if [[ "$HELP" == *--comm-timeout* ]]; then
  KILL9=$(fault kill9 "--comm-timeout 10" 'kill -9 $(pgrep -f -- "$TMP/kill9.jsonl" | grep -vx "$job" | tail -1)')
else
  KILL9="nan (no --comm-timeout in this build)"
fi

python3 - "$TMP" "$WARMUP" "$ROUNDS" "$CMDLINE" "$CORES" "$USR1" "$KILL9" <<'EOF'
import json, statistics, sys
tmp, warmup, rounds, cmdline, cores, usr1, kill9 = sys.argv[1:8]
warmup, rounds = int(warmup), int(rounds)
def tps(cfg):
    vals = []
    for r in range(1, rounds + 1):
        its = [json.loads(l) for l in open(f"{tmp}/{cfg}.{r}.jsonl") if '"tokens_per_sec"' in l]
        vals += [j["tokens_per_sec"] for j in its[warmup:]]
    return statistics.median(vals)
base = tps("off")
print(f"Measured with `{cmdline}` ({cores} cores, {rounds} round(s)):\n")
def snapshot_cost(cfg, interval):
    # Seconds per snapshot (from the metrics) over the iterations it covers, as a fraction of an iteration.
    secs, iters = [], []
    for r in range(1, rounds + 1):
        lines = [json.loads(l) for l in open(f"{tmp}/{cfg}.{r}.jsonl")]
        secs += [j["seconds"] for j in lines if j.get("event") == "snapshot"]
        iters += [j["ms_per_iter"] / 1000 for j in lines if "ms_per_iter" in j][warmup:]
    return statistics.median(secs) / interval / statistics.median(iters), statistics.median(secs)
print("| configuration | tokens/s | vs guard off | snapshot time per iteration |")
print("|---|---|---|---|")
names = {"off": "--spike-action none", "guard": "spike guard (default: skip)",
         "snap10": "rollback, --snapshot-interval 10", "snap1": "rollback, --snapshot-interval 1"}
for cfg in ("off", "guard", "snap10", "snap1"):
    t = tps(cfg)
    extra = ""
    if cfg.startswith("snap"):
        frac, secs = snapshot_cost(cfg, int(cfg[4:]))
        extra = f"{100 * frac:.2f}% ({1000 * secs:.1f} ms per snapshot)"
    print(f"| {names[cfg]} | {t:.0f} | {t / base:.3f} | {extra} |")
u = usr1.split(); k = kill9.split()
print()
print("| fault (4 ranks, tp2 x dp2) | seconds to exit | exit code |")
print("|---|---|---|")
print(f"| SIGUSR1 to mpirun (finish iteration, save, exit) | {float(u[0]):.2f} | {u[1]} |")
print(f"| kill -9 of one rank, --comm-timeout 10 | {k[0] if k[0] == 'nan' else f'{float(k[0]):.2f}'} | {' '.join(k[1:])} |")
EOF
