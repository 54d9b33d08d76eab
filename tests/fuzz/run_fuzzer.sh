#!/usr/bin/env bash
# Runs a libFuzzer target for a bounded time on a scratch copy of its seed
# corpus (the seeds in the source tree are never modified).
#   run_fuzzer.sh BINARY SEED_DIR WORK_DIR SECONDS [DICT]
# Exit 0: no finding. Exit 1: a finding (the input is saved under
# WORK_DIR/artifacts/; rerun it with `BINARY FILE`), or the fuzzer did not run.
set -u
bin=$1 seeds=$2 work=$3 secs=$4 dict=${5:-}
rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
cp "$seeds"/* "$work/corpus/"
args=(-max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=8192
      -error_exitcode=2 -timeout_exitcode=3 -artifact_prefix="$work/artifacts/" -print_final_stats=1)
if [ -n "$dict" ]; then args+=(-dict="$dict"); fi
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
"$bin" "${args[@]}" "$work/corpus"
rc=$?
if [ "$rc" -ne 0 ]; then
  echo "FINDING: $(basename "$bin") exited with $rc; inputs kept in $work/artifacts/:"
  ls -l "$work/artifacts/"
  echo "reproduce with: $bin $work/artifacts/<file>"
  exit 1
fi
echo "no finding in ${secs} s ($(ls "$work/corpus" | wc -l) inputs in the corpus)"
