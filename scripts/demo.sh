#!/usr/bin/env bash
# The main job on the default corpus: installs what is missing, builds,
# prepares the Debian 'fortunes' corpus, trains a small LLaMA with mpirun on
# the CPU, evaluates it and prints a sample. Idempotent: prepared data is
# reused, and each run trains afresh into runs/demo/checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

RUN=runs/demo
DATA=$RUN/data
mkdir -p "$DATA"
FORTUNES=/usr/share/games/fortunes
if [ ! -f "$DATA/valid.idx" ]; then
  echo "[demo] preparing the corpus ($FORTUNES, BSD licence) with a 4096-piece BPE tokenizer;"
  echo "[demo] the 'wisdom' file is held out for validation"
  build/bin/llm-prepare-data --input "$FORTUNES" --exclude 'wisdom*' --document-separator % \
      --tokenizer-model "$DATA/fortunes.model" --vocab-size 4096 --output-prefix "$DATA/train"
  build/bin/llm-prepare-data --input "$FORTUNES/wisdom" --document-separator % \
      --tokenizer-model "$DATA/fortunes.model" --output-prefix "$DATA/valid"
fi

# --bind-to none: mpirun pins each rank to one core by default, which would
# leave the rank's OpenMP threads sharing that core.
# The run uses two kinds of parallelism: tensor parallel 2 (attention heads,
# MLP units and the vocabulary split over two ranks) × data parallel 2 (each
# pair reads half of every batch), 4 MPI ranks. On fewer than 4 cores the
# ranks share them (one thread each); the layout costs about 7% against one
# 2-thread process on 2 cores (bench/parallel_layouts.sh), and the model is
# the one a single process would train (tests/launch/parallel_layouts_test).
RANKS=4
TP=2
CORES=$(nproc)
THREADS=$(( CORES / RANKS > 0 ? CORES / RANKS : 1 ))
MPI_FLAGS=(-n "$RANKS" --bind-to none)
[ "$(id -u)" -eq 0 ] && MPI_FLAGS+=(--allow-run-as-root)
[ "$CORES" -lt "$RANKS" ] && MPI_FLAGS+=(--oversubscribe)
rm -rf "$RUN/checkpoints" "$RUN/metrics.jsonl"
echo "[demo] training with tensor parallel $TP x data parallel $(( RANKS / TP )) (mpirun ${MPI_FLAGS[*]}, $THREADS thread(s) per rank);"
echo "[demo] metrics go to $RUN/metrics.jsonl"
mpirun "${MPI_FLAGS[@]}" -x OMP_NUM_THREADS="$THREADS" -x OPENBLAS_NUM_THREADS=1 \
  build/bin/llm-train --config examples/demo.cfg --tensor-model-parallel-size "$TP" --micro-batch-size 8 \
    --data-path "$DATA/train" --valid-data-path "$DATA/valid" --tokenizer-model "$DATA/fortunes.model" \
    --save "$RUN/checkpoints" --metrics-file "$RUN/metrics.jsonl" --exit-duration-in-mins 4.5

THREADS=$CORES  # evaluation and sampling: one process loads the tensor-parallel checkpoint whole
echo "[demo] evaluating the checkpoint on the held-out fortunes (llm-eval, first 128 windows)"
OMP_NUM_THREADS="$THREADS" build/bin/llm-eval --load "$RUN/checkpoints" --data-path "$DATA/valid" --eval-samples 128

echo "[demo] sampling from the model"
for prompt in "The secret of life is" "A computer is" "Love is"; do
  OMP_NUM_THREADS="$THREADS" build/bin/llm-generate --load "$RUN/checkpoints" --prompt "$prompt" \
      --max-new-tokens 40 --temperature 0.8 --top-k 40 --seed 7
  echo
done
