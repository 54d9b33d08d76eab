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
if [ ! -f "$DATA/fortunes.idx" ]; then
  echo "[demo] preparing the corpus (/usr/share/games/fortunes, BSD licence) with a 4096-piece BPE tokenizer"
  build/bin/llm-prepare-data --input /usr/share/games/fortunes --document-separator % \
      --tokenizer-model "$DATA/fortunes.model" --vocab-size 4096 --output-prefix "$DATA/fortunes"
fi

MPI_FLAGS=(-n 1)
[ "$(id -u)" -eq 0 ] && MPI_FLAGS+=(--allow-run-as-root)
THREADS=$(nproc)
rm -rf "$RUN/checkpoints" "$RUN/metrics.jsonl"
echo "[demo] training (mpirun ${MPI_FLAGS[*]}, $THREADS threads); metrics go to $RUN/metrics.jsonl"
mpirun "${MPI_FLAGS[@]}" -x OMP_NUM_THREADS="$THREADS" \
  build/bin/llm-train --config examples/demo.cfg \
    --data-path "$DATA/fortunes" --tokenizer-model "$DATA/fortunes.model" \
    --save "$RUN/checkpoints" --metrics-file "$RUN/metrics.jsonl" --exit-duration-in-mins 4.5

echo "[demo] evaluating the checkpoint on the held-out end of the corpus"
OMP_NUM_THREADS="$THREADS" build/bin/llm-eval --load "$RUN/checkpoints" --data-path "$DATA/fortunes" --eval-samples 64

echo "[demo] sampling from the model"
for prompt in "The secret of life is" "A computer is" "Love is"; do
  OMP_NUM_THREADS="$THREADS" build/bin/llm-generate --load "$RUN/checkpoints" --prompt "$prompt" \
      --max-new-tokens 40 --temperature 0.8 --top-k 40 --seed 7
  echo
done
