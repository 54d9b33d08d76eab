#!/usr/bin/env bash
# Launch llm-train over several machines with OpenMPI's mpirun and a hostfile.
#
#   examples/launch/multi_node.sh HOSTFILE CONFIG [llm-train flags ...]
#
#   HOSTFILE  one machine per line, OpenMPI style ("node01 slots=8"); '#' comments
#   CONFIG    a model config, e.g. examples/models/llama-7b.cfg
#   flags     anything llm-train accepts, at least --data-path; they override
#             the config file
#
# Every machine needs the same checkout path (or LLM_TRAIN), the binary's
# libraries, and the data, tokenizer and --save paths (a shared file system).
# The ranks are placed GPUS_PER_NODE per machine in order (ranks 0-7 on the
# first, 8-15 on the second, ...). llm-train numbers ranks tensor-parallel
# fastest, so with TP <= GPUS_PER_NODE (and dividing it) every tensor-parallel
# group stays inside one machine, on NVLink; see examples/layouts.md.
#
# Layout and environment (all optional):
#   GPUS_PER_NODE=8    ranks per machine (one per GPU)
#   NNODES             machines to use (default: all hosts in HOSTFILE)
#   TP=1 PP=1          --tensor-/--pipeline-model-parallel-size; dp = ranks / (TP*PP)
#   MICRO_BATCH=N      --micro-batch-size (examples/layouts.md recommends one per layout)
#   OMP_NUM_THREADS    threads per rank (default: this machine's cores / GPUS_PER_NODE)
#   BIND=auto|none     auto: --map-by ppr:G:node:PE=T --bind-to core when G*T cores
#                      fit, else --map-by ppr:G:node --bind-to none
#   EXPORT_VARS        extra variable names to forward to every rank ("A B C");
#                      PATH, LD_LIBRARY_PATH, OMP_NUM_THREADS and any set NCCL_*,
#                      CUDA_*, UCX_*, OPENBLAS_* variables are always forwarded
#   LLM_TRAIN          the binary (default: build/bin/llm-train of this checkout)
#   MPIRUN             the launcher (default: mpirun); MPIRUN_ARGS: extra mpirun
#                      flags, e.g. "--mca pml ucx" for InfiniBand
#   DRY_RUN=1          print the command and exit
#
# Example: LLaMA-7B on 8 machines x 8 GPUs (64 ranks) as tp 2 x dp 32:
#   TP=2 examples/launch/multi_node.sh hosts examples/models/llama-7b.cfg \
#       --data-path /shared/data/corpus --tokenizer-model /shared/data/tok.model \
#       --save /shared/ck/llama-7b --save-interval 1000
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
[[ $# -ge 2 ]] || { usage >&2; die "missing arguments: give HOSTFILE and CONFIG (e.g. $prog hosts examples/models/llama-7b.cfg --data-path PREFIX)"; }

hostfile=$1 config=$2
shift 2
[[ -f $hostfile ]] || die "HOSTFILE '$hostfile' is not a file (one 'hostname slots=N' per line)"
[[ -f $config ]] || die "CONFIG '$config' is not a file (model configs are in examples/models/)"
# Remote ranks may start in another directory: pass absolute paths.
hostfile=$(realpath "$hostfile") config=$(realpath "$config")

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
train=${LLM_TRAIN:-$root/build/bin/llm-train}
mpirun=${MPIRUN:-mpirun}
[[ -x $train ]] || die "$train is not built: run scripts/test.sh or 'cmake -S . -B build && cmake --build build' (or set LLM_TRAIN)"
command -v "$mpirun" >/dev/null || die "'$mpirun' not found: install OpenMPI (apt-get install openmpi-bin) or set MPIRUN"

data_given=0
for a in "$@"; do [[ $a == --data-path || $a == --data-path=* ]] && data_given=1; done
grep -Eq '^[[:space:]]*data-path[[:space:]]*=' "$config" && data_given=1
[[ $data_given == 1 ]] || die "no --data-path: add '--data-path PREFIX' (a token file every machine can read)"

hosts=$(grep -Ev '^[[:space:]]*(#|$)' "$hostfile" | awk '{print $1}' | sort -u | wc -l)
(( hosts > 0 )) || die "HOSTFILE '$hostfile' lists no hosts"
nnodes=${NNODES:-$hosts}
gpn=${GPUS_PER_NODE:-8}
[[ $nnodes =~ ^[1-9][0-9]*$ && $gpn =~ ^[1-9][0-9]*$ ]] || die "NNODES='$nnodes' and GPUS_PER_NODE='$gpn' must be positive integers"
(( nnodes <= hosts )) || die "NNODES $nnodes but HOSTFILE lists only $hosts host(s)"
nprocs=$((nnodes * gpn))

tp=${TP:-1} pp=${PP:-1}
[[ $tp =~ ^[1-9][0-9]*$ && $pp =~ ^[1-9][0-9]*$ ]] || die "TP='$tp' and PP='$pp' must be positive integers"
(( nprocs % (tp * pp) == 0 )) || die "$nprocs ranks ($nnodes x $gpn) are not divisible by TP*PP = $((tp * pp))"
(( tp <= gpn && gpn % tp == 0 )) || echo "$prog: warning: TP $tp does not divide GPUS_PER_NODE $gpn: tensor-parallel groups would cross machines (slow)" >&2
dp=$((nprocs / (tp * pp)))

# Threads per rank from this machine's physical cores (the machines are assumed alike).
logical=$(nproc)
physical=$(lscpu -p=Core,Socket 2>/dev/null | grep -v '^#' | sort -u | wc -l || true)
cores=$logical
[[ $physical =~ ^[0-9]+$ ]] && (( physical > 0 && physical < logical )) && cores=$physical
threads=${OMP_NUM_THREADS:-$(( cores / gpn > 0 ? cores / gpn : 1 ))}
[[ $threads =~ ^[1-9][0-9]*$ ]] || die "OMP_NUM_THREADS='$threads' must be a positive integer"
export OMP_NUM_THREADS=$threads

mpi_args=(-n "$nprocs" --hostfile "$hostfile")
[[ $(id -u) == 0 ]] && mpi_args+=(--allow-run-as-root)
(( gpn > cores )) && mpi_args+=(--oversubscribe)
if [[ ${BIND:-auto} == auto ]] && (( gpn * threads <= cores )); then
  mpi_args+=(--map-by "ppr:$gpn:node:PE=$threads" --bind-to core)
else
  mpi_args+=(--map-by "ppr:$gpn:node" --bind-to none)
fi
# Environment for the remote ranks (mpirun forwards nothing by default).
exports=(OMP_NUM_THREADS PATH LD_LIBRARY_PATH)
while IFS= read -r v; do exports+=("$v"); done < <(compgen -e | grep -E '^(NCCL_|CUDA_|UCX_|OPENBLAS_)' || true)
# shellcheck disable=SC2206
[[ -n ${EXPORT_VARS:-} ]] && exports+=(${EXPORT_VARS})
for v in "${exports[@]}"; do
  [[ -n ${!v+set} ]] && mpi_args+=(-x "$v")
done
# shellcheck disable=SC2206
[[ -n ${MPIRUN_ARGS:-} ]] && mpi_args+=(${MPIRUN_ARGS})

train_args=(--config "$config")
[[ -n ${TP:-} ]] && train_args+=(--tensor-model-parallel-size "$tp")
[[ -n ${PP:-} ]] && train_args+=(--pipeline-model-parallel-size "$pp")
[[ -n ${MICRO_BATCH:-} ]] && train_args+=(--micro-batch-size "$MICRO_BATCH")

cmd=("$mpirun" "${mpi_args[@]}" "$train" "${train_args[@]}" "$@")
echo "$prog: $nprocs ranks = $nnodes machine(s) x $gpn (tp $tp x pp $pp x dp $dp, $threads thread(s) each)"
echo "$prog: OMP_NUM_THREADS=$OMP_NUM_THREADS $(printf '%q ' "${cmd[@]}")"
[[ ${DRY_RUN:-0} == 1 ]] && exit 0
exec "${cmd[@]}"
