#!/usr/bin/env bash
# Launch llm-train with N MPI ranks on this machine.
#
#   examples/launch/single_node.sh NPROCS CONFIG [llm-train flags ...]
#
#   NPROCS   number of ranks (one per GPU on a GPU node; on a CPU, a few ranks
#            with several OpenMP threads each)
#   CONFIG   a model config, e.g. examples/models/toy-cpu.cfg
#   flags    anything llm-train accepts, at least --data-path (and usually
#            --tokenizer-model); they override the config file
#
# Layout and environment (all optional):
#   TP=1 PP=1          --tensor-/--pipeline-model-parallel-size; dp = NPROCS / (TP*PP)
#   MICRO_BATCH=N      --micro-batch-size (examples/layouts.md recommends one per layout)
#   OMP_NUM_THREADS    threads per rank (default: cores / NPROCS, at least 1)
#   BIND=auto|none     auto: pin each rank to OMP_NUM_THREADS cores when they fit
#                      (--map-by slot:PE=T --bind-to core), else --bind-to none
#   LLM_TRAIN          the binary (default: build/bin/llm-train of this checkout)
#   MPIRUN             the launcher (default: mpirun); MPIRUN_ARGS: extra mpirun flags
#   DRY_RUN=1          print the command and exit
#
# Example (CPU, 2 ranks, data parallel):
#   examples/launch/single_node.sh 2 examples/models/toy-cpu.cfg \
#       --data-path runs/data/fortunes --tokenizer-model runs/data/fortunes.model
# Example (2 pipeline stages):
#   PP=2 examples/launch/single_node.sh 2 examples/models/toy-cpu.cfg --data-path ... --tokenizer-model ...
# Stopping a run cleanly: send SIGUSR1 to this script's process (it execs
# mpirun, which forwards SIGUSR1 to every rank and waits for them): the ranks
# finish the iteration, agree on it, save (with --save) and exit 0. Do not use
# SIGTERM on mpirun: OpenMPI 4.1 forwards it but kills the ranks about a
# second later, before a save can finish (SIGTERM sent to the ranks
# themselves is fine).
set -euo pipefail

prog=$(basename "$0")
die() { echo "$prog: error: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

if [[ $# -ge 1 && ( $1 == -h || $1 == --help ) ]]; then usage; exit 0; fi
[[ $# -ge 2 ]] || { usage >&2; die "missing arguments: give NPROCS and CONFIG (e.g. $prog 2 examples/models/toy-cpu.cfg --data-path PREFIX)"; }

nprocs=$1 config=$2
shift 2
[[ $nprocs =~ ^[1-9][0-9]*$ ]] || die "NPROCS '$nprocs' is not a positive integer"
[[ -f $config ]] || die "CONFIG '$config' is not a file (model configs are in examples/models/)"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
train=${LLM_TRAIN:-$root/build/bin/llm-train}
mpirun=${MPIRUN:-mpirun}
[[ -x $train ]] || die "$train is not built: run scripts/test.sh or 'cmake -S . -B build && cmake --build build' (or set LLM_TRAIN)"
command -v "$mpirun" >/dev/null || die "'$mpirun' not found: install OpenMPI (apt-get install openmpi-bin) or set MPIRUN"

# --data-path must come from the command line or the config file.
data_given=0
for a in "$@"; do [[ $a == --data-path || $a == --data-path=* ]] && data_given=1; done
grep -Eq '^[[:space:]]*data-path[[:space:]]*=' "$config" && data_given=1
[[ $data_given == 1 ]] || die "no --data-path: add '--data-path PREFIX' (a token file from build/bin/llm-prepare-data)"

tp=${TP:-1} pp=${PP:-1}
[[ $tp =~ ^[1-9][0-9]*$ && $pp =~ ^[1-9][0-9]*$ ]] || die "TP='$tp' and PP='$pp' must be positive integers"
(( nprocs % (tp * pp) == 0 )) || die "NPROCS $nprocs is not divisible by TP*PP = $((tp * pp)): data parallelism needs whole replicas"
dp=$((nprocs / (tp * pp)))

# Cores: physical cores visible to this process (OpenMPI counts a slot per core).
logical=$(nproc)
physical=$(lscpu -p=Core,Socket 2>/dev/null | grep -v '^#' | sort -u | wc -l || true)
cores=$logical
[[ $physical =~ ^[0-9]+$ ]] && (( physical > 0 && physical < logical )) && cores=$physical
threads=${OMP_NUM_THREADS:-$(( cores / nprocs > 0 ? cores / nprocs : 1 ))}
[[ $threads =~ ^[1-9][0-9]*$ ]] || die "OMP_NUM_THREADS='$threads' must be a positive integer"
export OMP_NUM_THREADS=$threads

mpi_args=(-n "$nprocs" -x OMP_NUM_THREADS)
[[ $(id -u) == 0 ]] && mpi_args+=(--allow-run-as-root)          # OpenMPI refuses root otherwise
(( nprocs > cores )) && mpi_args+=(--oversubscribe)             # more ranks than cores
if [[ ${BIND:-auto} == auto ]] && (( nprocs * threads <= cores )); then
  mpi_args+=(--map-by "slot:PE=$threads" --bind-to core)        # each rank owns its threads' cores
else
  mpi_args+=(--bind-to none)                                    # let the OS place the threads
fi
# shellcheck disable=SC2206  # MPIRUN_ARGS is a whitespace-separated list on purpose
[[ -n ${MPIRUN_ARGS:-} ]] && mpi_args+=(${MPIRUN_ARGS})

train_args=(--config "$config")
[[ -n ${TP:-} ]] && train_args+=(--tensor-model-parallel-size "$tp")
[[ -n ${PP:-} ]] && train_args+=(--pipeline-model-parallel-size "$pp")
[[ -n ${MICRO_BATCH:-} ]] && train_args+=(--micro-batch-size "$MICRO_BATCH")

cmd=("$mpirun" "${mpi_args[@]}" "$train" "${train_args[@]}" "$@")
echo "$prog: $nprocs rank(s) on $(hostname) (tp $tp x pp $pp x dp $dp, $threads thread(s) each, $cores core(s))"
echo "$prog: OMP_NUM_THREADS=$OMP_NUM_THREADS $(printf '%q ' "${cmd[@]}")"
[[ ${DRY_RUN:-0} == 1 ]] && exit 0
exec "${cmd[@]}"
