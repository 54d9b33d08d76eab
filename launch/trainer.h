// The training loop of llm-train: data → forward/backward over micro-batches
// (gradient accumulation) → clip → AdamW → log, evaluate, checkpoint.
#pragma once
#include <cstdio>
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "data/sampler.h"
#include "data/token_file.h"
#include "checkpoint/checkpoint.h"
#include "launch/train_config.h"
#include "layers/llama_model.h"
#include "optim/adamw.h"
#include "optim/distributed_optimizer.h"
#include "optim/spike_guard.h"
#include "parallel/communicator.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/process_grid.h"

namespace llm {

// Appends one JSON object per line; every line is flushed so a crash loses nothing.
class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& path);
  ~MetricsWriter();
  void write(const nlohmann::json& j);
  bool enabled() const { return f_ != nullptr; }

 private:
  std::FILE* f_ = nullptr;
};

struct EvalResult {
  double loss = 0.0;
  int64_t tokens = 0;
};

// Mean token loss of windows [first_window, first_window + count) in micro-batches of `micro`.
EvalResult evaluate(const LlamaModel& model, const data::EvalWindows& windows, int64_t first_window, int64_t count,
                    int64_t micro);

class Trainer {
 public:
  // Opens the data, builds the model and optimizer, resumes from --load.
  // grid: the process grid (every group of size one for a single process).
  Trainer(const TrainConfig& cfg, ProcessGrid& grid);
  // Runs to --train-iters (or --exit-interval). Returns the process exit code.
  int run();

 private:
  struct StepResult {
    double loss = 0.0, grad_norm = 0.0, lr = 0.0, loss_scale = 1.0;
    bool skipped = false;
    bool spike = false;        // a finite spike (the spike guard's verdict)
    std::string spike_reason;
  };
  StepResult train_step(int64_t iteration);
  void run_evaluation(int64_t iteration);
  void report_memory(const char* when);
  void check_replicated_parameters_agree(const Tensor& values);
  void save(int64_t iteration);
  // A checkpoint being written (by a thread with --async-save) and not yet committed.
  struct PendingSave {
    int64_t iteration = 0;
    std::chrono::steady_clock::time_point start;
    Tensor values;                 // gathered fp32 master weights (a snapshot)
    std::unique_ptr<AdamW> state;  // gathered moments
    CheckpointContents contents;   // world rank 0: the manifest's training state
    double stall_seconds = 0.0;    // the copy (−1: a synchronous save, stalled throughout)
    std::thread writer;
    std::atomic<bool> written{false};
    std::string error;
    ~PendingSave() {
      if (writer.joinable()) writer.join();
    }
  };
  std::unique_ptr<PendingSave> pending_save_;
  void finish_pending_save(bool wait);
  nlohmann::json args_json() const;

  // Sum of x over the ranks of a group (the same value on each afterwards).
  static double all_reduce_sum(Communicator& group, double x);
  // Forward and backward of the step's micro-batches through the pipeline stages.
  double run_pipelined_step(int64_t steps, double tokens_in_batch);
  // This rank's windows [first, first + count) in `batches` micro-batches (padded).
  EvalResult evaluate_share(int64_t first, int64_t count, int64_t batches);
  double global_grad_norm_over_stages(bool tied_copy);
  int64_t norm_slots_total_ = 0;      // parameters of the whole model
  std::vector<int64_t> norm_slot_of_;  // this rank's parameter i: its place in the global order
  bool tied_across_stages() const { return cfg_.model.tie_embeddings && grid_.pp_size() > 1; }
  // fp16: the loss is multiplied by this before backward; gradients divided after.
  double loss_scale_ = 1.0;
  int64_t clean_steps_ = 0;  // since the scale last changed
  void update_loss_scale(bool overflow);
  bool inject_overflow_ = false;  // this step's backward gets an infinite loss gradient
  bool corrupt_batch_ = false;    // this step's tokens are replaced (fault injection)
  double loss_multiplier_ = 1.0;  // this step's loss is multiplied (fault injection)
  // Spikes: the guard, in-memory snapshots, rollbacks.
  SpikeGuard guard_;
  struct MemorySnapshot {
    int64_t iteration = 0, consumed_samples = 0;
    double loss_scale = 1.0;
    int64_t clean_steps = 0;
    nlohmann::json guard;
    DistributedOptimizer::Snapshot optimizer;
  };
  std::unique_ptr<MemorySnapshot> snapshot_;
  std::vector<int64_t> rollbacks_;  // iterations at which rollbacks happened
  int64_t lr_reduced_until_ = 0;
  void take_snapshot();
  // Returns false when the run must stop (too many rollbacks).
  bool roll_back(int64_t spike_iteration, const StepResult& r);
  void load_checkpoint(const std::string& path, Tensor& values, bool resume);
  TrainConfig cfg_;
  ProcessGrid& grid_;
  Device device_;  // where the model, its gradients and the optimizer state live
  Communicator& dp_;
  Communicator& pp_;
  std::unique_ptr<data::TokenDataset> train_data_, valid_data_;
  std::unique_ptr<data::TrainSampler> sampler_;
  std::unique_ptr<data::EvalWindows> eval_windows_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<DistributedOptimizer> optimizer_;
  MetricsWriter metrics_;
  int64_t iteration_ = 0, consumed_samples_ = 0, skipped_ = 0;
  // Loss average since the last log line; saved in checkpoints so a resumed
  // run logs exactly what the uninterrupted run logs.
  double interval_loss_ = 0.0;
  int64_t interval_iters_ = 0, interval_skipped_ = 0;
  void check_resume_settings(const nlohmann::json& state_scheduler, const nlohmann::json& optimizer,
                             const nlohmann::json& args) const;
  std::vector<int32_t> batch_tokens_;
  nlohmann::json comm_logged_ = nlohmann::json::object();  // counters at the last log line
};

}  // namespace llm
