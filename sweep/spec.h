// A scaling-law sweep: its spec file, parsed and checked, and the plan of
// runs it describes (one llm-train job per model size N × token budget D).
//
// The spec is an INI file in the syntax llm-train's --config reads
// (`key = value` lines, `#` comments, `[section]` headers); every key belongs
// to a section, unknown sections and keys are errors, and every error names
// the file, line, section and key, says what is wrong and how to fix it. The
// sections and keys (defaults in parentheses) are documented in
// sweep/README-section.md and examples/sweeps/tiny.cfg:
//
//   [sweep]   name, min-runs-to-fit (4), fit (true), fit-budgets
//   [model]   n | shapes, n-count (total), aspect-ratio (32), head-dim (64),
//             ffn-multiple-of (256), max-layers (64), n-tolerance (0.1),
//             tie-embeddings (false), vocab-size (from tokenizer-model)
//   [budget]  tokens | flops
//   [train]   seq-length (256), global-batch-size, micro-batch-size, lr,
//             lr-exponent (0), lr-reference-n, min-lr-ratio (0.1),
//             warmup-fraction (0.05) | warmup-iters, log-interval (auto),
//             eval-interval (0: only the final evaluation), eval-iters (10),
//             save-interval (auto), keep-last (2), seed (1234),
//             spike-action (none), extra-flags
//   [data]    data-path, valid-data-path, tokenizer-model
//   [layout]  ranks (1), tensor-model-parallel-size (1),
//             pipeline-model-parallel-size (1), zero-stage (0),
//             threads-per-rank (1), mpirun-flags
//   [test]    fail-runs, fail-attempts (0: every attempt) — testing only
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "layers/model_config.h"
#include "sweep/shapes.h"

namespace llm::sweep {

// A number as written in the spec ("0.5M", "3e13") and its value.
struct Quantity {
  double value = 0;
  std::string label;  // the text, for run names
};

struct ExplicitShape {
  Shape shape;  // ffn_hidden_size 0: LLaMA's rule with ffn-multiple-of
  std::string label;
};

struct SweepSpec {
  std::string source;  // file name (for messages)
  // [sweep]
  std::string name;
  int64_t min_runs_to_fit = 4;
  bool fit = true;
  std::vector<double> fit_budgets;
  // [model]: the N axis
  std::vector<Quantity> n_targets;
  std::vector<ExplicitShape> shapes;
  ShapeRule rule;
  bool tie_embeddings = false;
  int64_t vocab_size = 0;  // 0: from the tokenizer model
  // [budget]: the D axis
  bool flops_axis = false;  // true: IsoFLOP budgets C, D = C / (6 N); false: token budgets D
  std::vector<Quantity> budgets;
  // [train]
  int64_t seq_length = 256, global_batch_size = 0, micro_batch_size = 0;
  double lr = 0, lr_exponent = 0, lr_reference_n = 0, min_lr_ratio = 0.1;
  double warmup_fraction = 0.05;
  int64_t warmup_iters = -1;  // >= 0: fixed warm-up iterations instead of the fraction
  int64_t log_interval = 0, eval_interval = 0, eval_iters = 10, save_interval = 0, keep_last = 2;
  uint64_t seed = 1234;
  // llm-train's loss-spike guard. Off by default in sweeps: with tiny models
  // the gradient norm can grow legitimately after warm-up, and the guard's
  // default `skip` then skipped every later update of a run (seen in the tiny
  // sweep), which is worse for a scaling law than an occasional spike.
  std::string spike_action = "none";
  std::vector<std::string> extra_flags;
  // [data]
  std::string data_path, valid_data_path, tokenizer_model;
  // [layout]
  int64_t ranks = 1, tensor_parallel = 1, pipeline_parallel = 1, zero_stage = 0, threads_per_rank = 1;
  std::vector<std::string> mpirun_flags;
  // [test]
  std::vector<std::string> fail_runs;
  int64_t fail_attempts = 0;

  int64_t data_parallel() const { return ranks / (tensor_parallel * pipeline_parallel); }
  int64_t micro_batch() const { return micro_batch_size > 0 ? micro_batch_size : global_batch_size / data_parallel(); }
  int64_t tokens_per_iteration() const { return global_batch_size * seq_length; }
  int64_t cores_per_run() const { return ranks * threads_per_rank; }
};

// Parses and checks a spec; throws std::invalid_argument naming the key.
SweepSpec parse_spec(const std::string& text, const std::string& source = "spec");
SweepSpec load_spec(const std::string& path);

// A number with an optional k/M/G(B)/T suffix ("0.5M", "3e13", "2k");
// throws std::invalid_argument mentioning `key` when it is not one.
double parse_quantity(const std::string& text, const std::string& key);

// One planned llm-train job.
struct RunPlan {
  std::string name;       // e.g. n0.5M_c1e13
  std::string n_label;    // the N axis entry as written ("0.5M", or the explicit shape)
  std::string d_label;    // the D axis entry as written
  double n_target = 0;    // the target N (0 for an explicit shape)
  Shape shape;
  ModelConfig model;      // resolved
  int64_t n_params = 0, n_non_embedding = 0;
  double n_counted = 0;   // the N the spec counts (n-count), used by the IsoFLOP and lr rules
  double flops_budget = 0;  // C of the IsoFLOP axis (0 on the tokens axis)
  double token_budget = 0;  // D asked for (C / 6N on the IsoFLOP axis)
  int64_t train_iters = 0, tokens = 0;  // what is trained: iterations × global batch × sequence
  double flops_6nd = 0, flops_exact = 0;
  int64_t global_batch_size = 0, micro_batch_size = 0, seq_length = 0;
  double lr = 0, min_lr = 0;
  int64_t warmup_iters = 0, log_interval = 0, eval_interval = 0, eval_iters = 0, save_interval = 0, keep_last = 0;
  bool inject_failure = false;  // [test] fail-runs

  // Everything that decides what the run computes (model, data, schedule,
  // layout, extra flags), not how it is run (threads, checkpoint interval,
  // mpirun flags, test keys): a run whose definition changed is refused.
  nlohmann::json definition(const SweepSpec& spec) const;
  // llm-train's options for the run's config file, as "flag = value" lines
  // (everything but the paths under the run's folder and --load).
  std::string train_config(const SweepSpec& spec) const;
};

// The runs of a sweep, N axis outer, D axis inner, in the spec's order.
// `vocab_size`: the tokenizer's (or the spec's vocab-size). Throws
// std::invalid_argument naming the key (N too small for any shape, a budget
// below one iteration, warm-up longer than a run, ...).
std::vector<RunPlan> plan_runs(const SweepSpec& spec, int64_t vocab_size);

// The flags llm-sweep sets itself (extra-flags may not repeat them).
const std::vector<std::string>& reserved_train_flags();

}  // namespace llm::sweep
