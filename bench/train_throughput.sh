#!/usr/bin/env bash
# Training throughput of llm-train against PyTorch (CPU, fp32) on one fixed
# LLaMA config, measured side by side in one run (DESIGN.md section 5), plus
# the machine's measured sgemm rate for a fraction-of-peak figure.
#
# Config: hidden 256, 4 layers, 8 heads, ffn 688, vocab 4096, seq 256,
# micro batch 8 = global batch 8 (no accumulation), fp32, AdamW, clip 1.0.
#
# The two programs run alternately (llm-train, torch, llm-train, torch, ...)
# with the same thread count (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS,
# torch.set_num_threads); the first --warmup iterations of each run are
# dropped, each run gives the median tokens/s of the rest, and the best run of
# each program is reported (noise on a shared machine only slows things down).
#
# Usage: bench/train_throughput.sh [--threads N] [--iters N] [--rounds R] ...
#        bench/train_throughput.sh --help
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HERE="$ROOT/bench"

THREADS="$(nproc)"
ITERS=20
WARMUP=2
ROUNDS=2
TIME_LIMIT=35
DATA_PREFIX=""
TOKENIZER=""
BUILD_DIR="$ROOT/build"
PYTHON="${TORCH_PYTHON:-/usr/bin/python3}"
SKIP_TORCH=0
PROFILE=0
PROFILE_ITERS=4
JSON_OUT=""
KEEP_TMP=0
CORETYPE=auto
TORCH_BLAS=same

usage() {
  cat <<EOF
Usage: bench/train_throughput.sh [options]

Measures tokens/s of build/bin/llm-train and of bench/torch_llama.py (PyTorch,
CPU, fp32) on the same LLaMA config and thread count, alternately, plus an
OpenBLAS sgemm peak (n=2048), and prints tokens/s, the ratio
llm-train / PyTorch (bar >= 1.0, goal 1.3), GFLOP/s and fraction of peak.

Options:
  --threads N          threads for both programs and the sgemm (default: all
                       cores, here $(nproc))
  --iters N            iterations per run, warm-up included (default $ITERS)
  --warmup N           leading iterations of each run that are not counted
                       (default $WARMUP)
  --rounds R           alternating llm-train/PyTorch runs (default $ROUNDS)
  --time-limit S       stop a run after S seconds (start-up and warm-up
                       included) once it has >= 2 counted iterations (default
                       $TIME_LIMIT; 0: no limit) - keeps the benchmark near 3
                       minutes when the programs are slow
  --data-prefix P      reuse token files P.bin/P.idx (default: tokenize
                       /usr/share/games/fortunes into a temp dir)
  --tokenizer-model T  tokenizer of --data-prefix (default: P.model if it
                       exists, else --vocab-size 4096)
  --build-dir D        where bin/llm-train lives (default build)
  --python PY          python with torch (default /usr/bin/python3, the Debian
                       python3-torch; or set TORCH_PYTHON)
  --skip-torch         only llm-train and sgemm
  --profile            afterwards, run llm-train under 'perf record -g' for
                       --profile-iters iterations and print the hottest functions
  --profile-iters N    (default $PROFILE_ITERS)
  --openblas-coretype auto|env|C
                       OpenBLAS kernels for all three programs. 'auto'
                       (default): when OpenBLAS falls back to generic kernels on
                       this CPU (Debian's 0.3.21 does on some Xeons), set
                       OPENBLAS_CORETYPE to what the CPU supports (SkylakeX or
                       Haswell) - llm-train does the same by itself, so PyTorch
                       gets the same GEMM. 'env': leave the environment as it is
                       (the sgemm is then also measured with the better kernels,
                       so 'of peak' still uses the machine's peak). C: set
                       OPENBLAS_CORETYPE=C (e.g. SkylakeX, Haswell, Prescott).
  --torch-blas same|system
                       'same' (default): PyTorch loads the libopenblas build
                       that llm-train links (Debian ships a pthreads and an
                       OpenMP build; LD_LIBRARY_PATH picks it), so both run the
                       same GEMM; 'system': whatever the alternatives select
  --json FILE          also write the results as JSON to FILE
  --keep-tmp           keep the temp dir (data, metrics, logs)
  -h, --help           this help
EOF
}

die() { echo "train_throughput: error: $*" >&2; exit 1; }
need_arg() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

while [ $# -gt 0 ]; do
  case "$1" in
    --threads) need_arg "$@"; THREADS="$2"; shift 2 ;;
    --iters) need_arg "$@"; ITERS="$2"; shift 2 ;;
    --warmup) need_arg "$@"; WARMUP="$2"; shift 2 ;;
    --rounds) need_arg "$@"; ROUNDS="$2"; shift 2 ;;
    --time-limit) need_arg "$@"; TIME_LIMIT="$2"; shift 2 ;;
    --data-prefix) need_arg "$@"; DATA_PREFIX="$2"; shift 2 ;;
    --tokenizer-model) need_arg "$@"; TOKENIZER="$2"; shift 2 ;;
    --build-dir) need_arg "$@"; BUILD_DIR="$2"; shift 2 ;;
    --python) need_arg "$@"; PYTHON="$2"; shift 2 ;;
    --skip-torch) SKIP_TORCH=1; shift ;;
    --profile) PROFILE=1; shift ;;
    --profile-iters) need_arg "$@"; PROFILE_ITERS="$2"; shift 2 ;;
    --json) need_arg "$@"; JSON_OUT="$2"; shift 2 ;;
    --openblas-coretype) need_arg "$@"; CORETYPE="$2"; shift 2 ;;
    --torch-blas) need_arg "$@"; TORCH_BLAS="$2"; shift 2 ;;
    --keep-tmp) KEEP_TMP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done

is_uint "$THREADS" && [ "$THREADS" -ge 1 ] || die "--threads must be a positive integer (got '$THREADS')"
is_uint "$ITERS" || die "--iters must be a positive integer (got '$ITERS')"
is_uint "$WARMUP" || die "--warmup must be a non-negative integer (got '$WARMUP')"
is_uint "$ROUNDS" && [ "$ROUNDS" -ge 1 ] || die "--rounds must be a positive integer (got '$ROUNDS')"
is_uint "$TIME_LIMIT" || die "--time-limit must be a non-negative integer of seconds (got '$TIME_LIMIT')"
is_uint "$PROFILE_ITERS" && [ "$PROFILE_ITERS" -ge 1 ] || die "--profile-iters must be a positive integer"
[ "$TORCH_BLAS" = same ] || [ "$TORCH_BLAS" = system ] || die "--torch-blas must be 'same' or 'system'"
[ "$ITERS" -ge $((WARMUP + 1)) ] || die "--iters ($ITERS) must exceed --warmup ($WARMUP)"
[ "$THREADS" -le "$(nproc)" ] || echo "train_throughput: warning: --threads $THREADS > $(nproc) cores" >&2

# ---------------------------------------------------------------- prerequisites
LLM_TRAIN="$BUILD_DIR/bin/llm-train"
LLM_PREP="$BUILD_DIR/bin/llm-prepare-data"
[ -x "$LLM_TRAIN" ] || die "$LLM_TRAIN is missing: run scripts/setup.sh first"
if [ -z "$DATA_PREFIX" ]; then
  [ -x "$LLM_PREP" ] || die "$LLM_PREP is missing: run scripts/setup.sh first"
  [ -d /usr/share/games/fortunes ] || die "/usr/share/games/fortunes is missing: apt-get install fortunes (or pass --data-prefix)"
else
  [ -f "$DATA_PREFIX.bin" ] && [ -f "$DATA_PREFIX.idx" ] || die "--data-prefix $DATA_PREFIX: $DATA_PREFIX.bin/.idx not found"
fi
command -v python3 >/dev/null || die "python3 is needed (statistics)"
STATS_PY="$(command -v python3)"
if [ "$SKIP_TORCH" = 0 ]; then
  [ -x "$PYTHON" ] || command -v "$PYTHON" >/dev/null || die "python '$PYTHON' not found (--python PY)"
  if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    die "PyTorch is not importable by $PYTHON. Install Debian's build with: apt-get install -y python3-torch
       (it is for the system python /usr/bin/python3, not a pyenv python), pass --python PY, or --skip-torch"
  fi
fi
if [ "$PROFILE" = 1 ]; then
  command -v perf >/dev/null || die "--profile needs perf: apt-get install -y linux-perf"
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/train_throughput.XXXXXX")"
cleanup() {
  local pid
  for pid in $(jobs -p); do kill "$pid" 2>/dev/null || true; done
  if [ "$KEEP_TMP" = 1 ]; then echo "train_throughput: temp files kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A private copy: other developers may rebuild build/bin/llm-train while this runs (its RUNPATH is absolute).
cp "$LLM_TRAIN" "$TMP/llm-train"
LLM_TRAIN="$TMP/llm-train"

export OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
case "$CORETYPE" in
  auto|env) ;;
  *) export OPENBLAS_CORETYPE="$CORETYPE" ;;
esac

log() { echo "[train_throughput] $*" >&2; }

# ---------------------------------------------------------------- model FLOPs
L=4 D=256 H=8 F=688 V=4096 S=256 MB=8
N_MATMUL=$((L * (D * 3 * D + D * D + 3 * D * F) + V * D))   # q,k,v + o + gate,up,down; lm_head
FLOPS_PER_TOKEN=$((6 * N_MATMUL + 12 * L * D * S))

# ---------------------------------------------------------------- sgemm peak
SGEMM_BIN="$TMP/sgemm_peak"
SGEMM_KIND=""
# Link the very libopenblas that llm-train loads (Debian has pthreads and OpenMP builds of it).
BLAS_SO="$(ldd "$LLM_TRAIN" 2>/dev/null | awk '/libopenblas/ {print $3; exit}')"
BLAS_LINK=()
if [ -n "$BLAS_SO" ] && [ -f "$BLAS_SO" ]; then
  BLAS_LINK=("-L$(dirname "$BLAS_SO")" "-Wl,-rpath,$(dirname "$BLAS_SO")" "-l:$(basename "$BLAS_SO")")
elif pkg-config --exists openblas 2>/dev/null; then
  read -r -a BLAS_LINK <<<"$(pkg-config --libs openblas)"
fi
TORCH_ENV=()
if [ "$TORCH_BLAS" = same ] && [ -n "$BLAS_SO" ] && [ -f "$(dirname "$BLAS_SO")/libblas.so.3" ]; then
  TORCH_ENV=(env "LD_LIBRARY_PATH=$(dirname "$BLAS_SO")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
fi
# shellcheck disable=SC2046  # pkg-config's flags are meant to be split
if command -v g++ >/dev/null && pkg-config --exists openblas 2>/dev/null && ((${#BLAS_LINK[@]})) &&
   g++ -O3 -march=native -std=c++17 "$HERE/sgemm_peak.cpp" $(pkg-config --cflags openblas) "${BLAS_LINK[@]}" \
       -o "$SGEMM_BIN" 2>"$TMP/sgemm_build.log"; then
  SGEMM_KIND="OpenBLAS cblas_sgemm"
elif python3 -c "import numpy" 2>/dev/null; then
  SGEMM_KIND="numpy float32 matmul"
  log "could not build bench/sgemm_peak.cpp (g++ and pkg-config openblas needed); using numpy"
else
  SGEMM_KIND=""
  log "warning: no sgemm peak (no g++/OpenBLAS and no numpy); fraction of peak is left out"
fi
sgemm_once() {  # $1: OPENBLAS_CORETYPE for this run or empty; prints "GFLOP/s kernel-set"
  if [ "$SGEMM_KIND" = "OpenBLAS cblas_sgemm" ]; then
    if [ -n "${1:-}" ]; then OPENBLAS_CORETYPE="$1" "$SGEMM_BIN" 2048 5; else "$SGEMM_BIN" 2048 5; fi |
      sed -n 's/.*parallel=\([^ ]*\) core=\([^ ]*\) best_gflops=\([0-9.]*\).*/\3 \2 \1/p'
  elif [ -n "$SGEMM_KIND" ]; then
    python3 - <<'EOF'
import time, numpy as np
n = 2048
a = np.random.rand(n, n).astype(np.float32); b = np.random.rand(n, n).astype(np.float32)
a @ b
best = float("inf")
for _ in range(5):
    t0 = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - t0)
print("%.2f numpy" % (2 * n ** 3 / best / 1e9))
EOF
  fi
}
# OpenBLAS (DYNAMIC_ARCH) falls back to old generic kernels on CPUs it does not know (seen: a
# Sapphire Rapids VM reported as "Prescott", SSE3 kernels, 4-6x slower sgemm). Same rule as
# core/cpu/blas_runtime.cpp, which makes llm-train re-execute itself with OPENBLAS_CORETYPE set.
FALLBACK_CORES=" Prescott Core2 Nehalem Sandybridge Penryn Dunnington Atom Banias Katmai Generic "
has_flags() { local f; for f in "$@"; do grep -qw "$f" /proc/cpuinfo 2>/dev/null || return 1; done; }
suggest_coretype() {  # $1: kernel set picked; prints a better OPENBLAS_CORETYPE or nothing
  [ -z "${OPENBLAS_CORETYPE:-}" ] || return 0  # a user's choice stands
  [[ "$FALLBACK_CORES" == *" $1 "* ]] || return 0
  if has_flags avx512f avx512bw avx512vl; then echo SkylakeX
  elif has_flags avx2 fma; then echo Haswell
  fi
}

# ---------------------------------------------------------------- data
if [ -z "$DATA_PREFIX" ]; then
  log "tokenizing /usr/share/games/fortunes (vocab 4096) into $TMP ..."
  if ! "$LLM_PREP" --input /usr/share/games/fortunes --document-separator % --vocab-size 4096 \
        --exclude '*.dat' --exclude '*.u8' --threads "$THREADS" \
        --tokenizer-model "$TMP/fortunes.model" --output-prefix "$TMP/fortunes" >"$TMP/prepare.log" 2>&1; then
    cat "$TMP/prepare.log" >&2
    die "llm-prepare-data failed (log above)"
  fi
  DATA_PREFIX="$TMP/fortunes"
  TOKENIZER="$TMP/fortunes.model"
elif [ -z "$TOKENIZER" ] && [ -f "$DATA_PREFIX.model" ]; then
  TOKENIZER="$DATA_PREFIX.model"
fi
if [ -n "$TOKENIZER" ]; then VOCAB_ARGS=(--tokenizer-model "$TOKENIZER"); else VOCAB_ARGS=(--vocab-size "$V"); fi

# ---------------------------------------------------------------- runners
# Each run appends one line "median mean count" (tokens/s over counted iterations) to $2.
run_llm() {  # $1 = run tag, $2 = result file
  local metrics="$TMP/llm_$1.jsonl" out="$TMP/llm_$1.log" start now pid lines rc=0 killed=0
  rm -f "$metrics"
  "$LLM_TRAIN" --num-layers $L --hidden-size $D --num-attention-heads $H --ffn-hidden-size $F \
    --seq-length $S --micro-batch-size $MB --global-batch-size $MB --train-iters "$ITERS" --log-interval 1 \
    --lr 3e-4 --clip-grad 1.0 --eval-iters 0 --metrics-file "$metrics" --data-path "$DATA_PREFIX" \
    "${VOCAB_ARGS[@]}" >"$out" 2>&1 &
  pid=$!
  start=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.5
    now=$((SECONDS - start))
    if [ "$TIME_LIMIT" -gt 0 ] && [ "$now" -ge "$TIME_LIMIT" ]; then
      lines=$(grep -c tokens_per_sec "$metrics" 2>/dev/null || true)
      # enough counted iterations, or hopelessly slow (4x over): stop it
      if [ "${lines:-0}" -ge $((WARMUP + 2)) ] || [ "$now" -ge $((4 * TIME_LIMIT)) ]; then
        kill "$pid" 2>/dev/null || true; killed=1; break
      fi
    fi
  done
  wait "$pid" || rc=$?
  if [ "$killed" = 0 ] && [ "$rc" -ne 0 ]; then
    tail -n 20 "$out" >&2
    die "llm-train failed (exit $rc); log above, full log in $out (use --keep-tmp)"
  fi
  "$STATS_PY" - "$metrics" "$WARMUP" "$killed" >>"$2" <<'EOF' || die "llm-train wrote no usable metrics (see $out)"
import json, statistics, sys
path, warmup, killed = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
tps = []
try:
    for line in open(path):
        j = json.loads(line)
        if "tokens_per_sec" in j:
            tps.append(j["tokens_per_sec"])
except FileNotFoundError:
    pass
if not tps:
    sys.exit(1)
kept = tps[warmup:]
if not kept:  # a run stopped early keeps at least its last iteration
    kept = tps[-1:]
    sys.stderr.write("[train_throughput] warning: llm-train was stopped after %d iteration(s); its number "
                     "includes warm-up (raise --time-limit)\n" % len(tps))
print("%.3f %.3f %d" % (statistics.median(kept), len(kept) / sum(1.0 / t for t in kept), len(kept)))
EOF
}

run_torch() {  # $1 = run tag, $2 = result file
  local out="$TMP/torch_$1.log" rc=0
  "${TORCH_ENV[@]}" "$PYTHON" "$HERE/torch_llama.py" --threads "$THREADS" --iters $((ITERS - WARMUP)) --warmup "$WARMUP" \
    --max-seconds "$TIME_LIMIT" --layers $L --hidden $D --heads $H --ffn $F --vocab $V --seq $S \
    --micro-batch $MB --json >"$out" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    tail -n 20 "$out" >&2
    die "bench/torch_llama.py failed (exit $rc); log above"
  fi
  "$STATS_PY" - "$out" >>"$2" <<'EOF' || die "torch_llama.py printed no RESULT line (see $out)"
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("RESULT "):
        r = json.loads(line[7:])
        print("%.3f %.3f %d %s %s %s" % (r["tokens_per_sec_median"], r["tokens_per_sec_mean"], r["iters"],
                                       r["torch_version"], r["attention"], r.get("blas", "unknown")))
        sys.exit(0)
sys.exit(1)
EOF
}

# ---------------------------------------------------------------- measure
log "threads $THREADS, $ROUNDS round(s) of up to $ITERS iterations (first $WARMUP dropped), time limit ${TIME_LIMIT}s per run"
SGEMM_RESULTS="$TMP/sgemm.txt"; : >"$SGEMM_RESULTS"
SGEMM_ALT_RESULTS="$TMP/sgemm_alt.txt"; : >"$SGEMM_ALT_RESULTS"
ALT_CORE=""
LLM_RESULTS="$TMP/llm.txt"; : >"$LLM_RESULTS"
TORCH_RESULTS="$TMP/torch.txt"; : >"$TORCH_RESULTS"
if [ -n "$SGEMM_KIND" ]; then
  log "sgemm ($SGEMM_KIND, n=2048) ..."
  sgemm_once "" >>"$SGEMM_RESULTS"
  core="$(awk 'NR == 1 {print $2}' "$SGEMM_RESULTS")"
  ALT_CORE="$(suggest_coretype "$core")"
  if [ -n "$ALT_CORE" ]; then
    if [ "$CORETYPE" = auto ]; then
      log "OpenBLAS picked '$core' kernels for this CPU; --openblas-coretype auto: using OPENBLAS_CORETYPE=$ALT_CORE"
      export OPENBLAS_CORETYPE="$ALT_CORE"
      : >"$SGEMM_RESULTS"; sgemm_once "" >>"$SGEMM_RESULTS"
      ALT_CORE=""
    else
      log "warning: OpenBLAS picked generic '$core' kernels on this CPU; measuring sgemm with OPENBLAS_CORETYPE=$ALT_CORE too"
      sgemm_once "$ALT_CORE" >>"$SGEMM_ALT_RESULTS"
    fi
  fi
fi
for ((r = 1; r <= ROUNDS; r++)); do
  # alternate which program goes first, so neither always follows the other
  if ((r % 2 == 1)) || [ "$SKIP_TORCH" = 1 ]; then order="llm torch"; else order="torch llm"; fi
  for prog in $order; do
    if [ "$prog" = llm ]; then
      log "round $r/$ROUNDS: llm-train ..."
      run_llm "$r" "$LLM_RESULTS"
      log "  llm-train: $(tail -n 1 "$LLM_RESULTS" | awk '{printf "%.0f tokens/s (median of %d)", $1, $3}')"
    elif [ "$SKIP_TORCH" = 0 ]; then
      log "round $r/$ROUNDS: PyTorch ..."
      run_torch "$r" "$TORCH_RESULTS"
      log "  PyTorch:   $(tail -n 1 "$TORCH_RESULTS" | awk '{printf "%.0f tokens/s (median of %d)", $1, $3}')"
    fi
  done
done
if [ -n "$SGEMM_KIND" ]; then
  log "sgemm again ..."
  sgemm_once "" >>"$SGEMM_RESULTS"
  if [ -n "$ALT_CORE" ]; then sgemm_once "$ALT_CORE" >>"$SGEMM_ALT_RESULTS"; fi
fi

# ---------------------------------------------------------------- report
"$STATS_PY" - "$LLM_RESULTS" "$TORCH_RESULTS" "$SGEMM_RESULTS" "$SGEMM_ALT_RESULTS" "$FLOPS_PER_TOKEN" "$N_MATMUL" \
  "$THREADS" "$ROUNDS" "$ITERS" "$WARMUP" "$SGEMM_KIND" "$ALT_CORE" "${OPENBLAS_CORETYPE:-}" "$JSON_OUT" \
  "$(basename "$(dirname "${BLAS_SO:-/?/?}")")" <<'EOF'
import json, sys
(llm_f, torch_f, sgemm_f, alt_f, fpt, nmm, threads, rounds, iters, warmup, sgemm_kind, alt_core, env_core,
 json_out, blas_lib) = sys.argv[1:]
fpt, nmm = int(fpt), int(nmm)

def rows(path):
    try:
        return [l.split() for l in open(path) if l.strip()]
    except FileNotFoundError:
        return []

llm = rows(llm_f)
tor = rows(torch_f)
peaks = [float(l[0]) for l in rows(sgemm_f) if l]
core = rows(sgemm_f)[0][1] if peaks else ""
par = rows(sgemm_f)[0][2] if peaks and len(rows(sgemm_f)[0]) > 2 else ""
alt_peaks = [float(l[0]) for l in rows(alt_f) if l]
peak = max(peaks + alt_peaks) if peaks else None  # the machine's peak: the better kernels if measured
best_llm = max(float(r[0]) for r in llm)
best_tor = max(float(r[0]) for r in tor) if tor else None

def gf(tps):
    return tps * fpt / 1e9

print()
print("train_throughput: hidden 256, 4 layers, 8 heads, ffn 688, vocab 4096, seq 256, micro batch 8, fp32,")
print("  AdamW + clip 1.0; %s thread(s) each; %s round(s) alternating; per run the median tokens/s of" % (threads, rounds))
print("  up to %d iterations after %s warm-up; best run of each program shown (per-run medians in brackets)." %
      (int(iters) - int(warmup), warmup))
print("  model FLOPs/token = 6*N_matmul + 12*L*d*T = 6*%d + %d = %.2f M" % (nmm, fpt - 6 * nmm, fpt / 1e6))
print()
fmt = "  %-26s %10s %10s %10s   %s"
print(fmt % ("", "tokens/s", "GFLOP/s", "of peak", "runs"))
def line(name, best, runs):
    frac = "%9.1f%%" % (100 * gf(best) / peak) if peak else "%10s" % "n/a"
    print(fmt % (name, "%.0f" % best, "%.2f" % gf(best), frac, " ".join("%.0f" % float(r[0]) for r in runs)))
line("llm-train", best_llm, llm)
if tor:
    line("PyTorch %s" % tor[0][3], best_tor, tor)
    ratio = best_llm / best_tor
    verdict = "meets goal 1.3" if ratio >= 1.3 else ("meets bar 1.0, below goal 1.3" if ratio >= 1.0 else "BELOW bar 1.0")
    print(fmt % ("ratio llm/PyTorch", "%.2f" % ratio, "", "", verdict))
if peaks:
    name = "sgemm (%s)" % core if core != "numpy" else "sgemm (numpy)"
    print(fmt % (name, "", "%.2f" % max(peaks), "%9.1f%%" % (100 * max(peaks) / peak),
                 "%s%s n=2048%s [%s]" % (sgemm_kind, " (%s)" % par if par else "",
                                       ", OPENBLAS_CORETYPE=" + env_core if env_core else "",
                                       " ".join("%.1f" % p for p in peaks))))
if alt_peaks:
    print(fmt % ("sgemm (%s)" % alt_core, "", "%.2f" % max(alt_peaks), "%9.1f%%" % (100 * max(alt_peaks) / peak),
                 "same, OPENBLAS_CORETYPE=%s [%s]" % (alt_core, " ".join("%.1f" % p for p in alt_peaks))))
    print()
    print("  NOTE: OpenBLAS does not recognise this CPU and picks generic '%s' kernels, so PyTorch ran with" % core)
    print("  them (llm-train re-executes itself with OPENBLAS_CORETYPE=%s); that sgemm is %.1fx faster." %
          (alt_core, max(alt_peaks) / max(peaks)))
    print("  The default --openblas-coretype auto gives both programs the fast kernels; 'of peak' uses them.")
if tor:
    print("  PyTorch: %s attention, BLAS %s; llm-train and the sgemm: %s." % (tor[0][4], tor[0][5], blas_lib or "?"))
res = {"threads": int(threads), "rounds": int(rounds), "iters": int(iters), "warmup": int(warmup),
       "flops_per_token": fpt, "matmul_params": nmm,
       "llm_train": {"tokens_per_sec": best_llm, "gflops": gf(best_llm), "runs": [float(r[0]) for r in llm]},
       "sgemm_peak_gflops": peak, "sgemm_default_gflops": max(peaks) if peaks else None,
       "openblas_core": core, "openblas_parallel": par or None, "openblas_coretype_env": env_core or None,
       "sgemm_alt": {"coretype": alt_core, "gflops": max(alt_peaks)} if alt_peaks else None}
if tor:
    res["pytorch"] = {"tokens_per_sec": best_tor, "gflops": gf(best_tor), "runs": [float(r[0]) for r in tor],
                      "version": tor[0][3], "attention": tor[0][4], "blas": tor[0][5]}
    res["ratio"] = best_llm / best_tor
if peak:
    res["llm_train"]["fraction_of_peak"] = gf(best_llm) / peak
    if tor:
        res["pytorch"]["fraction_of_peak"] = gf(best_tor) / peak
if json_out:
    with open(json_out, "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
EOF

# ---------------------------------------------------------------- profile
if [ "$PROFILE" = 1 ]; then
  log "profiling llm-train ($PROFILE_ITERS iterations, start-up included) with perf ..."
  perf record -F 999 -o "$TMP/perf.data" -- "$LLM_TRAIN" --num-layers $L --hidden-size $D \
    --num-attention-heads $H --ffn-hidden-size $F --seq-length $S --micro-batch-size $MB --global-batch-size $MB \
    --train-iters "$PROFILE_ITERS" --log-interval "$PROFILE_ITERS" --lr 3e-4 --eval-iters 0 \
    --data-path "$DATA_PREFIX" "${VOCAB_ARGS[@]}" >"$TMP/perf_run.log" 2>&1 ||
    die "llm-train under perf failed (see $TMP/perf_run.log)"
  perf report -i "$TMP/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null |
    grep -E '^ +[0-9.]+%' >"$TMP/perf.txt" || true
  echo
  echo "llm-train profile, self time by function (top 20):"
  head -n 20 "$TMP/perf.txt" | cut -c1-120
  echo
  echo "by kind:"
  "$STATS_PY" - "$TMP/perf.txt" <<'EOF'
import collections, re, sys
cats = [("GEMM (OpenBLAS kernels + packing)", r"sgemm|gemm|blas"),
        ("attention", r"attn|attention"), ("cross-entropy", r"cross_entropy"), ("AdamW", r"adamw"),
        ("RMSNorm", r"rmsnorm"), ("SwiGLU", r"swiglu"), ("RoPE", r"rope"), ("embedding", r"embedding"),
        ("memset/memcpy/fill", r"memset|memmove|memcpy|fill|zero"),
        ("OpenMP runtime (barrier/idle spin)", r"libgomp|libomp|sched_yield"),
        ("kernel (page faults, scheduling)", r"\[k\]"),
        ("start-up (init RNG: log/cos/sin)", r"__ieee754_log|__cos|__sin|normal|mt19937")]
tot = collections.OrderedDict((c, 0.0) for c, _ in cats)
tot["other"] = 0.0
for line in open(sys.argv[1]):
    m = re.match(r"\s+([0-9.]+)%\s+(.*)", line)
    if not m:
        continue
    pct, rest = float(m.group(1)), m.group(2)
    tot[next((c for c, rx in cats if re.search(rx, rest, re.I)), "other")] += pct
for c, v in sorted(tot.items(), key=lambda kv: -kv[1]):
    if v >= 0.1:
        print("  %6.1f%%  %s" % (v, c))
EOF
fi
