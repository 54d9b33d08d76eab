// Runs the jobs of a sweep plan: each an llm-train process (through mpirun
// when it has several ranks) in OUT/runs/<name>/, several at once within
// --max-concurrent and the cores, resumable, with retries, and results.csv
// rewritten after every run.
//
// A run's folder:
//   plan.json      the run's definition and its hash (a changed definition is refused)
//   train.cfg      its llm-train options (--config)
//   command.txt    the last command line
//   state.json     status, attempts, failures, resumes, wall seconds, last error
//   metrics.jsonl  llm-train's --metrics-file (appended to by every attempt)
//   checkpoints/   llm-train's --save (resumed with --load)
//   stdout.log, stderr.log   every attempt's output, appended, one header line per attempt
//   done.json      written once the run trained to the end and evaluated: the marker
//                  and its results; a finished run is never run again
#pragma once
#include <iosfwd>
#include <string>
#include <vector>

#include "sweep/spec.h"

namespace llm::sweep {

struct RunnerOptions {
  std::string spec_path;      // for the resume hint
  std::string spec_text;      // copied to OUT/spec.cfg
  std::string out_dir;
  std::string llm_train;      // the binary
  std::string mpirun = "mpirun";
  std::string llm_fit;        // the binary ("" or missing: say so, skip the fit)
  int max_concurrent = 1;
  int max_retries = 2;        // failed attempts beyond the first that are retried
  int cores = 0;              // 0: the CPUs this process may run on
  int stop_after = 0;         // testing: stop launching once this many runs finished (0: never)
  double progress_interval = 30.0;  // seconds between progress lines while nothing happens
};

// Exit codes of run_sweep (and llm-sweep).
constexpr int kSweepDone = 0, kSweepFailed = 1, kSweepInterrupted = 3;

// Runs the plan. Throws std::invalid_argument when OUT holds runs of the same
// names that were planned differently (nothing is started then), and
// std::runtime_error when OUT is locked by another llm-sweep.
int run_sweep(const SweepSpec& spec, const std::vector<RunPlan>& plan, const RunnerOptions& options, std::ostream& log);

// The plan as a table (llm-sweep --dry-run). `data_tokens` > 0 adds epochs.
std::string plan_table(const SweepSpec& spec, const std::vector<RunPlan>& plan, int64_t data_tokens);

// "1.5M", "3.2e13"-style short numbers for tables and messages.
std::string short_number(double v);

}  // namespace llm::sweep
