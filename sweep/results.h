// What a sweep run produced: its final losses and speed read from its
// metrics file, and the sweep's results.csv (one row per run).
//
// results.csv columns, in this order:
//   run,status,attempts,n_params,n_non_embedding,num_layers,hidden_size,
//   num_attention_heads,ffn_hidden_size,tokens,flops_budget,flops_6nd,
//   flops_exact,train_iters,global_batch_size,seq_length,lr,final_train_loss,
//   final_val_loss,tokens_per_sec,wall_seconds
// status: done | failed | pending | running. flops_budget is empty on a
// tokens axis; losses, tokens_per_sec and wall_seconds are empty until known.
// tokens = train_iters · global_batch_size · seq_length (what was trained);
// flops_6nd = 6 · n_params · tokens; flops_exact = flops per token (attention
// term included) · tokens (sweep/flops.h). Doubles carry 9 significant digits.
#pragma once
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sweep/spec.h"

namespace llm::sweep {

// final_train_loss averages the last this-many training log lines.
constexpr int kTrainLossLines = 5;

struct RunMetrics {
  int64_t last_iteration = 0;  // largest iteration with a training log line
  // Mean lm_loss over the iterations covered by the last kTrainLossLines log
  // lines, each line weighted by the iterations it covers (its lm_loss is the
  // mean since the previous line): with log-interval k, the mean over the last
  // 5·k iterations. NaN when nothing was logged.
  double final_train_loss = std::numeric_limits<double>::quiet_NaN();
  double final_val_loss = std::numeric_limits<double>::quiet_NaN();  // at the largest evaluated iteration
  int64_t val_iteration = 0;
  double tokens_per_sec = std::numeric_limits<double>::quiet_NaN();  // median over the log lines
  int64_t skipped_updates = 0;  // iterations whose update was skipped (non-finite values, spikes)
  // Trained to the end and evaluated after the last iteration.
  bool complete(int64_t train_iters) const;
};

// Reads an llm-train metrics file. Lines repeated by a resume (the
// iterations after the checkpoint are logged again) count once, the later
// line winning; a torn last line (a run killed mid-write) is ignored.
RunMetrics read_metrics(const std::string& path);

// The plan's columns of results.csv, stored in each run's plan.json so that
// rows of runs no longer in the spec can still be written.
nlohmann::json plan_summary(const RunPlan& plan);

struct ResultRow {
  nlohmann::json summary;  // plan_summary()
  std::string status;      // done | failed | pending | running
  int64_t attempts = 0;
  double final_train_loss = std::numeric_limits<double>::quiet_NaN();
  double final_val_loss = std::numeric_limits<double>::quiet_NaN();
  double tokens_per_sec = std::numeric_limits<double>::quiet_NaN();
  double wall_seconds = std::numeric_limits<double>::quiet_NaN();
};

const std::vector<std::string>& results_columns();
std::string results_csv(const std::vector<ResultRow>& rows);
// Writes PATH.tmp, flushes it to disk and renames it over PATH.
void write_file_atomically(const std::string& path, const std::string& content);
// results.csv as rows of column → text (for tests and tools).
std::vector<std::map<std::string, std::string>> read_results_csv(const std::string& path);

}  // namespace llm::sweep
