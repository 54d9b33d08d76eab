#!/usr/bin/env bash
# Tokens/s of tensor, pipeline and data parallel layouts of llm-train against
# one process on the same cores, and world rank 0's communication bytes per
# iteration against the analytic count, on one small fixed LLaMA:
#
#   4 layers, hidden 256, 8 heads in 4 query groups, seq 128, micro batch 4,
#   global batch 16, vocab 4096 (a BPE tokenizer trained on the Debian
#   'fortunes' corpus by llm-prepare-data), fp32, AdamW, clip 1.0.
#
# Layouts: 1 process × 2 threads (the reference: all the cores), 1 × 1, dp2,
# dp2 + ZeRO-1, tp2, tp2 + sequence parallelism, pp2 (1F1B; 2+2 layers, 3+1 to
# balance the output layer on the last stage, and interleaved with two
# 1-layer chunks per rank), and, oversubscribed on a 2-core
# machine, tp2·dp2 and pp2·dp2 on 4 ranks. Each layout runs --rounds times,
# round robin (so drift of a shared machine hits every layout alike); tokens/s
# is the median over all counted iterations of all rounds. Prints Markdown
# tables. About 3 minutes on 2 cores.
#
# Usage: bench/parallel_layouts.sh [--iters N] [--warmup N] [--rounds R] [--cores C] ...
#        bench/parallel_layouts.sh --help
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="$ROOT/build"
CORES="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"
ITERS=12
WARMUP=3
ROUNDS=3
BUSY_LIMIT=0.2
RETRY_BUDGET=180
DATA_PREFIX=""
TOKENIZER=""
KEEP_TMP=0
LAYOUTS="all"
CMDLINE="bench/parallel_layouts.sh${*:+ $*}"

usage() {
  cat <<EOF
Usage: bench/parallel_layouts.sh [options]

Runs build/bin/llm-train for --iters iterations per layout on a small fixed
model (4 layers, hidden 256, 8 heads / 4 query groups, seq 128, micro batch 4,
global batch 16, vocab 4096) and prints a Markdown table: tokens/s (median of
the log lines after --warmup, pooled over --rounds runs, which go round
robin over the layouts), the ratio to one process using all C cores
(C threads), and world rank 0's communication bytes per iteration (from the
metrics file's comm_bytes_per_iter) next to the analytic count (the formula of
tests/launch/parallel_layouts_test.cpp, extended to a stage that is also the
last: the output layer's input-gradient reduction and the vocab-parallel
loss's row statistics), then a per-group/operation breakdown.

Layouts (ranks x threads; --layouts keys in brackets): 1 process x C [1xC],
1 x 1 [1x1], dp2 [dp2], dp2 + ZeRO-1 [dp2z1], tp2 [tp2], tp2 + SP [tp2sp],
pp2 (2+2 layers) [pp2], pp2 with --decoder-first-pipeline-num-layers 3 [pp2b],
interleaved pp2 with 2 chunks of 1 layer per rank [pp2v] (2 x 1 each) and
tp2·dp2 [tp2dp2], pp2·dp2 [pp2dp2] (4 x 1; oversubscribed when C < 4).

Options:
  --iters N            iterations per layout (default $ITERS)
  --warmup N           leading iterations not counted in tokens/s (default $WARMUP)
  --rounds R           runs per layout, round robin, iterations pooled (default $ROUNDS)
  --busy-limit X       a run during which other processes kept more than X cores busy on
                       average (/proc/stat less this run's own CPU time) is 'disturbed':
                       it is run again (at most twice) while the script has been running
                       for less than --retry-budget seconds, and left out of the median
                       when the layout has an undisturbed run (default $BUSY_LIMIT)
  --retry-budget S     (default $RETRY_BUDGET)
  --cores C            cores = threads of the one-process reference (default: all, here $CORES)
  --layouts LIST       comma-separated subset of: 1xC,1x1,dp2,tp2,tp2sp,pp2,pp2b,tp2dp2,pp2dp2
                       (default all; pp2b is pp2 with 3+1 layers)
  --data-prefix P      reuse token files P.bin/P.idx (tokenizer P.model or --tokenizer-model;
                       default: tokenize /usr/share/games/fortunes, vocab 4096, into a temp dir)
  --tokenizer-model T  tokenizer of --data-prefix
  --build-dir D        where bin/llm-train and bin/llm-prepare-data live (default build)
  --keep-tmp           keep the temp dir (data, logs, metrics)
  -h, --help           this help
EOF
}

die() { echo "parallel_layouts: error: $*" >&2; exit 1; }
need_arg() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

while [ $# -gt 0 ]; do
  case "$1" in
    --iters) need_arg "$@"; ITERS="$2"; shift 2 ;;
    --warmup) need_arg "$@"; WARMUP="$2"; shift 2 ;;
    --rounds) need_arg "$@"; ROUNDS="$2"; shift 2 ;;
    --busy-limit) need_arg "$@"; BUSY_LIMIT="$2"; shift 2 ;;
    --retry-budget) need_arg "$@"; RETRY_BUDGET="$2"; shift 2 ;;
    --cores) need_arg "$@"; CORES="$2"; shift 2 ;;
    --layouts) need_arg "$@"; LAYOUTS="$2"; shift 2 ;;
    --data-prefix) need_arg "$@"; DATA_PREFIX="$2"; shift 2 ;;
    --tokenizer-model) need_arg "$@"; TOKENIZER="$2"; shift 2 ;;
    --build-dir) need_arg "$@"; BUILD_DIR="$2"; shift 2 ;;
    --keep-tmp) KEEP_TMP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done
is_uint "$ITERS" && is_uint "$WARMUP" || die "--iters and --warmup must be non-negative integers"
[ "$ITERS" -ge $((WARMUP + 2)) ] || die "--iters ($ITERS) must be at least --warmup ($WARMUP) + 2"
is_uint "$CORES" && [ "$CORES" -ge 1 ] || die "--cores must be a positive integer (got '$CORES')"
is_uint "$ROUNDS" && [ "$ROUNDS" -ge 1 ] || die "--rounds must be a positive integer (got '$ROUNDS')"
[[ "$BUSY_LIMIT" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--busy-limit must be a non-negative number (got '$BUSY_LIMIT')"
is_uint "$RETRY_BUDGET" || die "--retry-budget must be a non-negative integer of seconds"

ALL_LAYOUTS="1xC 1x1 dp2 dp2z1 tp2 tp2sp pp2 pp2b pp2v tp2dp2 pp2dp2"
[ "$LAYOUTS" = all ] && LAYOUTS="${ALL_LAYOUTS// /,}"
for l in ${LAYOUTS//,/ }; do
  [[ " $ALL_LAYOUTS " == *" $l "* ]] || die "--layouts: unknown layout '$l' (known: $ALL_LAYOUTS)"
done
[[ ",$LAYOUTS," == *",1xC,"* ]] || die "--layouts must include 1xC (the reference the ratios use)"

# ---------------------------------------------------------------- prerequisites
LLM_TRAIN="$BUILD_DIR/bin/llm-train"
LLM_PREP="$BUILD_DIR/bin/llm-prepare-data"
[ -x "$LLM_TRAIN" ] || die "$LLM_TRAIN is missing: cmake --build $BUILD_DIR (or scripts/setup.sh)"
command -v mpiexec >/dev/null || die "mpiexec not found (apt-get install openmpi-bin)"
command -v python3 >/dev/null || die "python3 is needed (statistics and the analytic count)"
if [ -z "$DATA_PREFIX" ]; then
  [ -x "$LLM_PREP" ] || die "$LLM_PREP is missing: cmake --build $BUILD_DIR"
  [ -d /usr/share/games/fortunes ] || die "/usr/share/games/fortunes is missing: apt-get install fortunes (or pass --data-prefix)"
else
  [ -f "$DATA_PREFIX.bin" ] && [ -f "$DATA_PREFIX.idx" ] || die "--data-prefix $DATA_PREFIX: $DATA_PREFIX.bin/.idx not found"
  [ -n "$TOKENIZER" ] || TOKENIZER="$DATA_PREFIX.model"
  [ -f "$TOKENIZER" ] || die "tokenizer $TOKENIZER not found (--tokenizer-model)"
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/parallel_layouts.XXXXXX")"
cleanup() {
  if [ "$KEEP_TMP" = 1 ]; then echo "[parallel_layouts] temp files kept in $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A private copy: others may rebuild build/bin/llm-train while this runs (its RUNPATH is absolute).
cp "$LLM_TRAIN" "$TMP/llm-train"
LLM_TRAIN="$TMP/llm-train"

log() { echo "[parallel_layouts] $*" >&2; }

# Runs a command with its output in a file; prints the average number of cores that
# other processes kept busy meanwhile (all CPU time in /proc/stat less the command's own,
# children included, over the wall time); exits with the command's status.
cat >"$TMP/measure.py" <<'PY'
import os, resource, subprocess, sys, time
def busy():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] if len(f) > 7 else 0)) / os.sysconf("SC_CLK_TCK")
out = sys.argv[1]
r0, b0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), busy(), time.monotonic()
with open(out, "w") as f:
    rc = subprocess.call(sys.argv[2:], stdout=f, stderr=subprocess.STDOUT)
r1, b1, t1 = resource.getrusage(resource.RUSAGE_CHILDREN), busy(), time.monotonic()
own = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print("%.3f" % max(0.0, (b1 - b0 - own) / max(t1 - t0, 1e-3)))
sys.exit(rc)
PY

if [ -z "$DATA_PREFIX" ]; then
  log "tokenizing /usr/share/games/fortunes (vocab 4096) ..."
  if ! "$LLM_PREP" --input /usr/share/games/fortunes --document-separator % --vocab-size 4096 \
        --exclude '*.dat' --exclude '*.u8' --threads "$CORES" \
        --tokenizer-model "$TMP/fortunes.model" --output-prefix "$TMP/fortunes" >"$TMP/prepare.log" 2>&1; then
    cat "$TMP/prepare.log" >&2
    die "llm-prepare-data failed (log above)"
  fi
  DATA_PREFIX="$TMP/fortunes"
  TOKENIZER="$TMP/fortunes.model"
fi

L=4 D=256 H=8 G=4 S=128 MB=4 GB=16
MODEL=(--num-layers "$L" --hidden-size "$D" --num-attention-heads "$H" --num-query-groups "$G" --seq-length "$S"
       --micro-batch-size "$MB" --global-batch-size "$GB" --train-iters "$ITERS" --log-interval 1 --eval-iters 0
       --lr 3e-4 --clip-grad 1.0 --data-path "$DATA_PREFIX" --tokenizer-model "$TOKENIZER")
MPI_FLAGS=(--oversubscribe --bind-to none)
[ "$(id -u)" = 0 ] && MPI_FLAGS+=(--allow-run-as-root)

# name|ranks|threads|tp|pp|extra flags
layout_spec() {
  case "$1" in
    1xC) echo "1 process|1|$CORES|1|1|" ;;
    1x1) echo "1 process|1|1|1|1|" ;;
    dp2) echo "dp2|2|1|1|1|" ;;
    dp2z1) echo "dp2 + ZeRO-1|2|1|1|1|--zero-stage 1" ;;
    tp2) echo "tp2|2|1|2|1|" ;;
    tp2sp) echo "tp2 + SP|2|1|2|1|--sequence-parallel" ;;
    pp2) echo "pp2 (1F1B, 2+2 layers)|2|1|1|2|--pipeline-schedule 1f1b" ;;
    pp2v) echo "pp2 (interleaved, 2 chunks of 1 layer)|2|1|1|2|--pipeline-schedule 1f1b --num-layers-per-virtual-pipeline-stage 1" ;;
    pp2b) echo "pp2 (1F1B, 3+1 layers)|2|1|1|2|--pipeline-schedule 1f1b --decoder-first-pipeline-num-layers 3" ;;
    tp2dp2) echo "tp2·dp2|4|1|2|1|" ;;
    pp2dp2) echo "pp2·dp2 (1F1B)|4|1|1|2|--pipeline-schedule 1f1b" ;;
  esac
}

: >"$TMP/runs.txt"
for ((round = 1; round <= ROUNDS; round++)); do
for key in ${LAYOUTS//,/ }; do
  IFS='|' read -r name ranks threads tp pp extra <<<"$(layout_spec "$key")"
  metrics="$TMP/$key.$round.jsonl" out="$TMP/$key.$round.log"
  # shellcheck disable=SC2206  # extra flags are meant to split
  flags=("${MODEL[@]}" --tensor-model-parallel-size "$tp" --pipeline-model-parallel-size "$pp" $extra
         --metrics-file "$metrics")
  note=""
  [ "$((ranks * threads))" -gt "$CORES" ] && note=" (oversubscribed: $((ranks * threads)) threads on $CORES cores)"
  if [ "$ranks" = 1 ]; then
    cmd=(env OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" timeout 300 "$LLM_TRAIN" "${flags[@]}")
  else
    cmd=(timeout 300 mpiexec "${MPI_FLAGS[@]}" -n "$ranks" -x OMP_NUM_THREADS="$threads" -x OPENBLAS_NUM_THREADS="$threads"
         "$LLM_TRAIN" "${flags[@]}")
  fi
  for ((try = 1; ; try++)); do
    log "round $round/$ROUNDS, $name: $ranks rank(s) x $threads thread(s), $ITERS iterations$note ..."
    start=$SECONDS
    rm -f "$metrics"
    rc=0
    other="$(python3 "$TMP/measure.py" "$out" "${cmd[@]}")" || rc=$?
    if [ "$rc" -ne 0 ]; then
      tail -n 30 "$out" >&2
      die "llm-train ($name) failed with exit $rc (log above; --keep-tmp keeps $out)"
    fi
    disturbed=$(python3 -c "print(int($other > $BUSY_LIMIT))")
    log "  done in $((SECONDS - start)) s (last iteration $(grep -o 'tokens/s: [0-9]*' "$out" | tail -n 1)); other processes kept $other cores busy"
    if [ "$disturbed" = 1 ] && [ "$try" -le 2 ] && [ "$SECONDS" -lt "$RETRY_BUDGET" ]; then
      log "  disturbed (other load $other > --busy-limit $BUSY_LIMIT): running it again"
      continue
    fi
    break
  done
  echo "$key|$name|$ranks|$threads|$tp|$pp|$extra|$metrics|$out|$other|$disturbed" >>"$TMP/runs.txt"
done
done

# ---------------------------------------------------------------- report
python3 - "$TMP/runs.txt" "$WARMUP" "$CORES" "$L" "$D" "$H" "$G" "$S" "$MB" "$GB" "$CMDLINE" "$BUSY_LIMIT" <<'EOF'
import json, re, statistics, sys
busy_limit = sys.argv[12]

runs_f, warmup, cores, L, d, H, G, S, micro, glob = sys.argv[1:11]
cmdline = sys.argv[11].strip()
warmup, cores, L, d, H, G, S, micro, glob = map(int, (warmup, cores, L, d, H, G, S, micro, glob))

def ring_all_reduce(b, p):  # bytes a rank sends in a ring all-reduce of b bytes (as the counters: 2·⌊b(p−1)/p⌋)
    return 2 * (b * (p - 1) // p) if p > 1 else 0

def ring_part(b, p):  # reduce-scatter / all-gather of a b-byte whole
    return b * (p - 1) // p if p > 1 else 0

def analytic(tp, pp, dp, sp, V, F, first_layers=0, zero=False, v=1):
    """Bytes world rank 0 (tp 0, dp 0, pipeline stage 0) sends per iteration, per group and op.
    Mirrors tests/launch/parallel_layouts_test.cpp (CommunicationEqualsTheAnalyticCount); with pp = 1 the
    stage is also the last, which adds the output layer and the vocab-parallel loss."""
    Dh = d // H
    M = glob // (micro * dp)                       # micro-batches per rank and step
    Ls = first_layers or L // pp + (1 if L % pp > 0 else 0)  # blocks on the first rank (all its chunks)
    last = pp == 1
    rows = micro * S
    act = rows * d * 4                             # one activation [micro·seq, hidden] in fp32
    per_layer = 2 * d + (H + 2 * G) * Dh // tp * d + d * H * Dh // tp + 3 * F // tp * d
    params = V // tp * d + Ls * per_layer + ((d + V // tp * d) if last else 0)
    tensors = 1 + 9 * Ls + (2 if last else 0)     # embedding, 9 per block, final norm + output layer
    total_tensors = 1 + 9 * L + 2                  # all stages (the pipeline's gradient-norm slots)
    c = {}
    def add(g, op, b):
        if b:
            c.setdefault(g, {})[op] = c.get(g, {}).get(op, 0) + b
    if tp > 1:
        # joins: embedding (vocab-parallel) + 2 per block forward + 2 per block backward (+ the output
        # layer's input gradient on the last stage); with SP each join is a reduce-scatter and as many
        # forks are all-gathers.
        joins = M * (1 + 4 * Ls + (1 if last else 0))
        if sp:
            add("tp", "reduce_scatter", joins * ring_part(act, tp))
            # ... plus backward's re-gathers of the inputs kept as row shards (each block's two
            # branches, and the output layer's on the last stage)
            add("tp", "all_gather", (joins + M * (2 * Ls + (1 if last else 0))) * ring_part(act, tp))
            add("tp", "all_reduce", ring_all_reduce((2 * Ls + (1 if last else 0)) * d * 4, tp))  # norm weights' grads
        else:
            add("tp", "all_reduce", joins * ring_all_reduce(act, tp))
        if last:  # vocab-parallel cross-entropy: row max (fp32) and [sum exp, target logit] (f64) per row
            add("tp", "all_reduce", M * (ring_all_reduce(rows * 4, tp) + ring_all_reduce(2 * rows * 8, tp)))
        add("tp", "all_reduce", ring_all_reduce(tensors * 8, tp))  # gradient-norm sums (f64), one per tensor
    if pp > 1:
        a = act // tp if sp else act
        # activations on from each of rank 0's v chunks, gradients back from its v − 1 later chunks
        add("pp", "send", (2 * v - 1) * M * a)
        add("pp", "recv", (2 * v - 1) * M * a)
        add("pp", "all_reduce", ring_all_reduce(8, pp) + ring_all_reduce(total_tensors * 8, pp))  # loss, norm slots
    if dp > 1 and zero:  # ZeRO-1: reduce-scatter and all-gather of the padded buffer; per-tensor norm sums
        padded = -(-params // dp) * dp
        add("dp", "reduce_scatter", ring_part(padded * 4, dp))
        add("dp", "all_gather", ring_part(padded * 4, dp))
        add("dp", "all_reduce", ring_all_reduce(tensors * 8, dp) + ring_all_reduce(8, dp))
    elif dp > 1:
        add("dp", "all_reduce", ring_all_reduce(params * 4, dp) + ring_all_reduce(8, dp))  # gradients, loss
    return c

def fmt_bytes(b):
    if b >= 1 << 20:
        return "%.2f MiB" % (b / (1 << 20))
    if b >= 1 << 10:
        return "%.1f KiB" % (b / (1 << 10))
    return "%d B" % b

SHORT = {"all_reduce": "AR", "reduce_scatter": "RS", "all_gather": "AG", "send": "send", "recv": "recv",
         "broadcast": "bcast"}

runs = []
V = F = None
for line in open(runs_f):
    key, name, ranks, threads, tp, pp, extra, metrics, out, other, disturbed = line.rstrip("\n").split("|")
    ranks, threads, tp, pp = int(ranks), int(threads), int(tp), int(pp)
    dp = ranks // (tp * pp)
    sp = "--sequence-parallel" in extra
    log = open(out).read()
    m = re.search(r"ffn (\d+), .*vocab (\d+)", log)
    if m:
        F, V = int(m.group(1)), int(m.group(2))
    its = [json.loads(l) for l in open(metrics) if l.strip()]
    its = [j for j in its if "tokens_per_sec" in j]
    kept = its[warmup:]
    kept_tps = [j["tokens_per_sec"] for j in kept]
    tps = statistics.median(kept_tps)
    comm = None
    if ranks > 1:
        # Per group and op, the bytes of the counted iterations: must be the same every iteration.
        comm = {}
        for g, ops in kept[0]["comm_bytes_per_iter"].items():
            for op, _ in ops.items():
                vals = {j["comm_bytes_per_iter"][g][op] for j in kept}
                if len(vals) != 1:
                    sys.stderr.write("[parallel_layouts] warning: %s %s %s varies over iterations: %s\n"
                                     % (name, g, op, sorted(vals)))
                v = max(vals)
                if v:
                    comm.setdefault(g, {})[op] = v
    fl = re.search(r"--decoder-first-pipeline-num-layers (\d+)", extra)
    vl = re.search(r"--num-layers-per-virtual-pipeline-stage (\d+)", extra)
    runs.append(dict(key=key, name=name, ranks=ranks, threads=threads, tp=tp, pp=pp, dp=dp, sp=sp, tps=tps,
                     kept=kept_tps, comm=comm, first_layers=int(fl.group(1)) if fl else 0,
                     zero="--zero-stage 1" in extra, v=(L // (pp * int(vl.group(1)))) if vl else 1,
                     other=float(other), disturbed=disturbed == "1"))

rows = []  # one per layout: the counted iterations of its undisturbed runs pooled (of all, if none is)
for r in runs:
    same = [x for x in rows if x["key"] == r["key"]]
    if not same:
        r["runs"] = [dict(r)]
        rows.append(r)
        continue
    same[0]["runs"].append(r)
    if r["comm"] != same[0]["comm"]:
        sys.stderr.write("[parallel_layouts] warning: %s: communication differs between runs\n" % r["name"])
any_disturbed = False
for r in rows:
    clean = [x for x in r["runs"] if not x["disturbed"]] or r["runs"]
    r["pooled"] = [t for x in clean for t in x["kept"]]
    r["tps"] = statistics.median(r["pooled"])
    r["per_run"] = " ".join("%.0f%s" % (x["tps"], "*" if x["disturbed"] else "") for x in r["runs"])
    any_disturbed |= any(x["disturbed"] for x in r["runs"])

ref = next(r for r in rows if r["key"] == "1xC")["tps"]
print()
print("Parallel layouts of llm-train: 4 layers, hidden 256, ffn %s, 8 heads / 4 query groups, seq 128, vocab %s,"
      % (F, V))
print("micro batch 4, global batch 16 (%d tokens per iteration), fp32, on a %d-core machine. tokens/s: median"
      % (glob * S, cores))
print("of the counted iterations of %d round-robin run(s) per layout, %d warm-up iterations dropped from each"
      % (len(rows[0]["runs"]), warmup))
print("(each run's median in the last column; * = disturbed by other processes, left out when the layout has")
print("an undisturbed run); ratio: against one process with %d threads on the same %d cores." % (cores, cores))
print("Communication: bytes world rank 0 (tp rank 0, dp rank 0, first stage) sent per iteration, all groups")
print("(ring counts: all-reduce of B over p ranks 2B(p−1)/p, reduce-scatter/all-gather B(p−1)/p, send B),")
print("measured by the communicator's counters against the analytic count.")
print()
print("| layout | ranks × threads | tokens/s | vs 1 process × %d threads | rank 0 bytes/iter, measured | analytic | equal | per run |"
      % cores)
print("|---|---|---:|---:|---:|---:|:---:|---|")
all_equal = True
for r in rows:
    over = r["ranks"] * r["threads"] > cores
    rt = "%d × %d%s" % (r["ranks"], r["threads"], " (oversubscribed)" if over else "")
    if r["comm"] is None:
        meas = ana = "–"
        eq = "–"
    else:
        a = analytic(r["tp"], r["pp"], r["dp"], r["sp"], V, F, r["first_layers"], r["zero"], r["v"])
        r["analytic"] = a
        mt = sum(v for g in r["comm"].values() for op, v in g.items() if op != "recv")
        at = sum(v for g in a.values() for op, v in g.items() if op != "recv")
        same = r["comm"] == a
        all_equal &= same
        meas, ana, eq = fmt_bytes(mt), fmt_bytes(at), "yes" if same else "**NO**"
    print("| %s | %s | %.0f | %.2f | %s | %s | %s | %s |" % (r["name"], rt, r["tps"], r["tps"] / ref, meas, ana, eq,
                                                         r["per_run"]))
if any_disturbed:
    print()
    print("* other processes kept more than %s cores busy during that run (it was retried while time allowed)."
          % busy_limit)
print()
print("Per group and operation (measured = analytic unless marked; totals above leave receives out):")
print()
print("| layout | rank 0 bytes/iter by group and operation |")
print("|---|---|")
for r in rows:
    if r["comm"] is None:
        continue
    a = r["analytic"]
    parts = []
    for g in sorted(set(r["comm"]) | set(a)):
        for op in sorted(set(r["comm"].get(g, {})) | set(a.get(g, {}))):
            mv, av = r["comm"].get(g, {}).get(op, 0), a.get(g, {}).get(op, 0)
            s = "%s %s %s" % (g, SHORT.get(op, op), fmt_bytes(mv))
            if mv != av:
                s += " (**analytic %s**, %+d B)" % (fmt_bytes(av), mv - av)
            elif mv >= 1 << 10:
                s += " (%d B)" % mv
            parts.append(s)
    print("| %s | %s |" % (r["name"], "; ".join(parts)))
print()
print("Command: %s" % cmdline)
if not all_equal:
    sys.stderr.write("[parallel_layouts] warning: some measured byte counts differ from the analytic count\n")
EOF
