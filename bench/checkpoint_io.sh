#!/usr/bin/env bash
# Checkpoint save and load throughput, and the training stall per save with
# and without --async-save, against the disk's measured write speed.
#
# Model: 8 layers, hidden 512, 8 heads, seq 128, vocab 4096 (BPE on the
# Debian 'fortunes' corpus): about 30M parameters, so a checkpoint (fp32
# weights + two fp32 Adam moments) is about 12 bytes × 30M = 0.36 GB.
# One process with all cores trains --iters iterations saving every 2; the
# same again with --async-save; then a run that only loads the last
# checkpoint. The disk speed is dd of the same number of bytes with
# conv=fdatasync into the same directory (our saves fsync too).
#
# Usage: bench/checkpoint_io.sh [--iters N] [--dir D] [--build-dir B] [--keep-tmp]
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="$ROOT/build"
ITERS=6
DIR=""
KEEP_TMP=0
CMDLINE="bench/checkpoint_io.sh${*:+ $*}"
die() { echo "checkpoint_io: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --iters) [ $# -ge 2 ] || die "--iters needs a value"; ITERS="$2"; shift 2 ;;
    --dir) [ $# -ge 2 ] || die "--dir needs a value"; DIR="$2"; shift 2 ;;
    --build-dir) [ $# -ge 2 ] || die "--build-dir needs a value"; BUILD_DIR="$2"; shift 2 ;;
    --keep-tmp) KEEP_TMP=1; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ "$ITERS" =~ ^[0-9]+$ && "$ITERS" -ge 4 && $((ITERS % 2)) -eq 0 ]] || die "--iters must be an even integer >= 4"
LLM_TRAIN="$BUILD_DIR/bin/llm-train"
[ -x "$LLM_TRAIN" ] || die "$LLM_TRAIN is missing: cmake --build $BUILD_DIR (or scripts/test.sh)"
[ -r /usr/share/games/fortunes/fortunes ] || die "the fortunes corpus is missing (apt-get install fortunes)"
TMP="${DIR:-$(mktemp -d)}"
mkdir -p "$TMP"
cleanup() { [ "$KEEP_TMP" = 1 ] || [ -n "$DIR" ] && echo "kept $TMP" >&2 || rm -rf "$TMP"; }
trap cleanup EXIT
"$BUILD_DIR/bin/llm-prepare-data" --input /usr/share/games/fortunes --vocab-size 4096 \
  --tokenizer-model "$TMP/tok.model" --output-prefix "$TMP/data" >"$TMP/prep.log" 2>&1 ||
  { cat "$TMP/prep.log" >&2; die "llm-prepare-data failed"; }
CORES=$(nproc)
MODEL="--num-layers 8 --hidden-size 512 --num-attention-heads 8 --seq-length 128 --micro-batch-size 4
  --global-batch-size 4 --lr 3e-4 --lr-warmup-iters 1 --log-interval 1 --eval-iters 0
  --data-path $TMP/data --tokenizer-model $TMP/tok.model --train-iters $ITERS --save-interval 2"
for mode in sync async; do
  extra=""; [ "$mode" = async ] && extra="--async-save"
  echo "checkpoint_io: training $ITERS iterations, saving every 2 ($mode)" >&2
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=$CORES "$LLM_TRAIN" $MODEL $extra --save "$TMP/ck_$mode" --metrics-file "$TMP/$mode.jsonl" \
    >"$TMP/$mode.log" 2>&1 || { tail -20 "$TMP/$mode.log" >&2; die "training ($mode) failed"; }
done
echo "checkpoint_io: loading the last checkpoint" >&2
# shellcheck disable=SC2086
OMP_NUM_THREADS=$CORES "$LLM_TRAIN" $MODEL --load "$TMP/ck_sync" --metrics-file "$TMP/load.jsonl" \
  >"$TMP/load.log" 2>&1 || { tail -20 "$TMP/load.log" >&2; die "loading failed"; }
LAST="$TMP/ck_sync/$(cat "$TMP/ck_sync/latest")"
BYTES=$(du -sb "$LAST" | cut -f1)
echo "checkpoint_io: disk write speed (dd, $BYTES bytes, fdatasync)" >&2
DD=$(LC_ALL=C dd if=/dev/zero of="$TMP/dd.bin" bs=1M count=$(( (BYTES + 1048575) / 1048576 )) conv=fdatasync 2>&1 | tail -1)
rm -f "$TMP/dd.bin"
python3 - "$TMP" "$BYTES" "$DD" "$CMDLINE" "$CORES" <<'EOF'
import json, re, statistics, sys
tmp, nbytes, dd, cmdline, cores = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
m = re.search(r"([0-9.]+) s, ([0-9.]+) ([kMG]?B)/s", dd)
disk = float(m.group(2)) * {"kB": 1e3, "MB": 1e6, "GB": 1e9, "B": 1}[m.group(3)] if m else float("nan")
def events(path, name): return [j for j in map(json.loads, open(path)) if j.get("event") == name]
def iter_ms(path): return statistics.median(j["ms_per_iter"] for j in map(json.loads, open(path)) if "ms_per_iter" in j)
gb = nbytes / 1e9
print(f"Measured with `{cmdline}` ({cores} cores; checkpoint {gb:.3f} GB; disk write {disk / 1e9:.2f} GB/s by dd):\n")
print("| | seconds per save (median) | GB/s | vs disk | training stall per save (median) | ms/iteration (median) |")
print("|---|---|---|---|---|---|")
for mode in ("sync", "async"):
    ev = events(f"{tmp}/{mode}.jsonl", "checkpoint_saved")
    secs = statistics.median(e["seconds"] for e in ev)
    stall = statistics.median(e["stall_seconds"] for e in ev)
    print(f"| save, {mode} | {secs:.3f} | {gb / secs:.2f} | {gb / secs / (disk / 1e9):.2f} | {stall:.3f} s | "
          f"{iter_ms(f'{tmp}/{mode}.jsonl'):.0f} |")
ld = events(f"{tmp}/load.jsonl", "checkpoint_loaded")[0]["seconds"]
print(f"| load (checksums verified) | {ld:.3f} | {gb / ld:.2f} | | | |")
EOF
