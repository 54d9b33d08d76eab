// Every option of llm-train, parsed from the command line and/or --config FILE
// (Boost.Program_options; Megatron-LM's flag names where Megatron has one) and
// validated up front, before anything is allocated.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "layers/model_config.h"
#include "optim/adamw.h"
#include "optim/lr_schedule.h"
#include "optim/spike_guard.h"
#include "parallel/pipeline_schedule.h"

namespace llm {

// A usage error: printed with the program's name, exit code 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct TrainConfig {
  ModelConfig model;
  // data
  std::string data_path, valid_data_path, tokenizer_model;
  double valid_fraction = 0.01;
  // batch and schedule
  int64_t micro_batch_size = 4;
  int64_t global_batch_size = 0;  // 0: micro × data-parallel size
  int64_t train_iters = 0;
  LrSchedule lr;
  AdamWConfig adam;
  double clip_grad = 1.0;
  uint64_t seed = 1234;
  // parallel layout and precision
  int64_t tensor_parallel = 1, pipeline_parallel = 1, zero_stage = 0;
  int64_t ddp_bucket_size = 4 << 20;  // elements per data-parallel gradient bucket (ZeRO 0-1)
  PipelineSchedule pipeline_schedule = PipelineSchedule::OneFOneB;
  int64_t layers_per_virtual_stage = 0;  // > 0: interleaved 1F1B with L / (pp · this) chunks per rank
  int64_t first_stage_layers = 0, last_stage_layers = 0;  // 0: balanced split
  bool sequence_parallel = false, bf16 = false, fp16 = false;
  // fp16 dynamic loss scaling: start at initial, halve (× backoff) on a step
  // with inf/nan gradients (skipped) down to min, double after `window` clean steps.
  double initial_loss_scale = 65536.0, min_loss_scale = 1.0, loss_scale_backoff = 0.5;
  int64_t loss_scale_window = 1000;
  int64_t inject_grad_overflow_at = 0;  // testing: make this iteration's gradients overflow (0: never)
  // Loss-spike guard (optim/spike_guard.h) and what a spike triggers.
  std::string spike_action = "skip";  // none | skip | rollback
  SpikeGuardConfig spike;
  int64_t snapshot_interval = 0;       // in-memory snapshots for rollback (0: roll back to the newest checkpoint)
  bool spike_skip_batches = true;      // after a rollback, skip the batches from the snapshot to the spike
  double spike_lr_factor = 1.0;        // learning rate multiplier for spike_lr_iters iterations after a rollback
  int64_t spike_lr_iters = 0;
  int64_t max_rollbacks = 3, rollback_window = 1000;  // more rollbacks than this within the window: stop
  std::vector<std::string> skip_iteration_ranges;     // "A-B": iterations whose batches are consumed untrained
  // Fault injection, for tests only.
  std::string inject_loss_spike_at;     // comma-separated iterations whose loss is multiplied
  double inject_loss_spike_factor = 100.0;
  int64_t inject_grad_nan_at = 0;       // a NaN put into one gradient element
  int64_t inject_corrupt_batch_at = 0;  // the batch's tokens replaced by one repeated id
  // Parsed by validate() from the two strings above.
  std::vector<std::pair<int64_t, int64_t>> skip_ranges;
  std::vector<int64_t> loss_spike_iterations;
  bool in_skip_range(int64_t iteration) const;
  bool loss_spike_injected_at(int64_t iteration) const;
  std::string recompute_granularity;  // "", "full", "selective"
  // logging and evaluation
  int64_t log_interval = 10, eval_interval = 0, eval_iters = 10;
  std::string metrics_file;
  double peak_tflops = 0.0;  // per process; 0: MFU not printed
  // checkpoints
  std::string save, load;
  std::string load_hf;  // initial weights from a Hugging Face LLaMA directory (continued pretraining)
  bool report_memory = false;  // per-rank memory by category against the ZeRO formula
  bool override_opt_param_scheduler = false;  // on --load, the flags' schedule/optimizer settings win
  int64_t save_interval = 0, exit_interval = 0;
  int64_t keep_last = 0;          // keep the N newest checkpoints (0: all)
  bool async_save = false;        // write checkpoints from a background thread
  std::string device = "auto";   // cpu, cuda, or auto (cuda when built with it and a GPU is visible)
  int64_t inject_save_crash_at = 0;  // testing: world rank 0 dies mid-save at this iteration
  double exit_duration_mins = 0.0;  // stop (evaluate, save) after this much training time
  // hang watchdog
  double comm_timeout = 600.0;       // seconds a communication may wait before the job is aborted (0: never)
  int64_t inject_comm_stall_at = 0;  // testing: world rank 1 stalls for good before communicating in this iteration

  int64_t data_parallel(int world) const { return world / (tensor_parallel * pipeline_parallel); }
  // Model chunks per pipeline rank (1 unless --num-layers-per-virtual-pipeline-stage).
  int virtual_stages() const {
    return layers_per_virtual_stage > 0
               ? static_cast<int>(model.resolved().num_layers / (pipeline_parallel * layers_per_virtual_stage))
               : 1;
  }
  // Micro-batches each data-parallel rank runs per optimizer step.
  int64_t accumulation_steps_per_rank(int64_t dp) const { return global_batch_size / (micro_batch_size * dp); }
  // The dtype of the model's weights, gradients and activations.
  DType model_dtype() const { return bf16 ? DType::BF16 : fp16 ? DType::F16 : DType::F32; }
};

// Parses argv (and --config FILE). Returns nullopt after printing --help.
// Throws UsageError with a message naming the flag and the fix.
std::optional<TrainConfig> parse_train_args(int argc, char** argv);
// Checks every combination of flags against each other and the world size.
void validate(TrainConfig& cfg, int world_size);

}  // namespace llm
