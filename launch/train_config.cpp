#include "launch/train_config.h"

#include <algorithm>

#include <boost/program_options.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "layers/llama_model.h"

namespace po = boost::program_options;

namespace llm {

std::optional<TrainConfig> parse_train_args(int argc, char** argv) {
  TrainConfig c;
  std::string decay_style = "cosine", config_file, schedule = "1f1b";
  int64_t vocab = 0;
  po::options_description model("Model"), data("Data"), train("Training"), layout("Parallelism and precision"),
      log("Logging and evaluation"), ckpt("Checkpoints"), general("General");
  general.add_options()("help,h", "print this help")(
      "config", po::value(&config_file), "read options from FILE (lines 'flag-name = value'; the command line wins)");
  model.add_options()
      ("num-layers", po::value(&c.model.num_layers)->default_value(c.model.num_layers), "transformer blocks")
      ("hidden-size", po::value(&c.model.hidden_size)->default_value(c.model.hidden_size), "model width")
      ("ffn-hidden-size", po::value(&c.model.ffn_hidden_size)->default_value(0), "SwiGLU width (0: LLaMA's rule ceil(8·hidden/3 / multiple)·multiple)")
      ("ffn-multiple-of", po::value(&c.model.ffn_multiple_of)->default_value(c.model.ffn_multiple_of), "rounding multiple of the default FFN width")
      ("num-attention-heads", po::value(&c.model.num_attention_heads)->default_value(c.model.num_attention_heads), "query heads")
      ("num-query-groups", po::value(&c.model.num_query_groups)->default_value(0), "key/value heads for grouped-query attention (0: = heads)")
      ("seq-length", po::value(&c.model.seq_length)->default_value(c.model.seq_length), "tokens per training sequence")
      ("vocab-size", po::value(&vocab)->default_value(0), "vocabulary size (0: from --tokenizer-model)")
      ("rotary-base", po::value(&c.model.rope_theta)->default_value(c.model.rope_theta), "RoPE theta")
      ("norm-epsilon", po::value(&c.model.norm_eps)->default_value(c.model.norm_eps, "1e-5"), "RMSNorm epsilon")
      ("init-method-std", po::value(&c.model.init_std)->default_value(c.model.init_std), "std of the normal weight init")
      ("tie-embeddings", po::bool_switch(&c.model.tie_embeddings), "share the input embedding and output projection");
  data.add_options()
      ("data-path", po::value(&c.data_path), "token file prefix written by llm-prepare-data (PREFIX.bin/.idx)")
      ("valid-data-path", po::value(&c.valid_data_path), "separate validation token file prefix (else the last --valid-fraction of --data-path is held out)")
      ("valid-fraction", po::value(&c.valid_fraction)->default_value(c.valid_fraction, "0.01"), "fraction of --data-path held out for validation")
      ("tokenizer-model", po::value(&c.tokenizer_model), "SentencePiece model (gives --vocab-size; copied into checkpoints)");
  train.add_options()
      ("micro-batch-size", po::value(&c.micro_batch_size)->default_value(c.micro_batch_size), "sequences per forward/backward")
      ("global-batch-size", po::value(&c.global_batch_size)->default_value(0), "sequences per optimizer step (0: micro × data-parallel; gradients are accumulated over the rest)")
      ("train-iters", po::value(&c.train_iters), "optimizer steps (required)")
      ("lr", po::value(&c.lr.max_lr)->default_value(3e-4, "3e-4"), "peak learning rate")
      ("min-lr", po::value(&c.lr.min_lr)->default_value(0.0), "learning rate at the end of decay")
      ("lr-warmup-iters", po::value(&c.lr.warmup_iters)->default_value(0), "linear warm-up steps")
      ("lr-decay-iters", po::value(&c.lr.decay_iters)->default_value(0), "step where decay reaches --min-lr (0: --train-iters)")
      ("lr-decay-style", po::value(&decay_style)->default_value(decay_style), "cosine, linear or constant")
      ("weight-decay", po::value(&c.adam.weight_decay)->default_value(c.adam.weight_decay, "0.1"), "decoupled weight decay (matrices only)")
      ("adam-beta1", po::value(&c.adam.beta1)->default_value(c.adam.beta1, "0.9"), "Adam beta1")
      ("adam-beta2", po::value(&c.adam.beta2)->default_value(c.adam.beta2, "0.95"), "Adam beta2")
      ("adam-eps", po::value(&c.adam.eps)->default_value(c.adam.eps, "1e-8"), "Adam epsilon")
      ("clip-grad", po::value(&c.clip_grad)->default_value(c.clip_grad), "global gradient-norm clip (0: off)")
      ("seed", po::value(&c.seed)->default_value(c.seed), "seed of initialisation and data order");
  layout.add_options()
      ("tensor-model-parallel-size", po::value(&c.tensor_parallel)->default_value(1), "tensor-parallel ranks")
      ("pipeline-model-parallel-size", po::value(&c.pipeline_parallel)->default_value(1), "pipeline stages")
      ("sequence-parallel", po::bool_switch(&c.sequence_parallel), "shard norms/residuals along the sequence (needs tensor parallelism)")
      ("pipeline-schedule", po::value(&schedule)->default_value(schedule), "1f1b or afab (all forward, all backward)")
      ("num-layers-per-virtual-pipeline-stage", po::value(&c.layers_per_virtual_stage)->default_value(0), "interleaved 1F1B: blocks per model chunk, each rank holding num-layers / (pipeline size × this) chunks (0: not interleaved)")
      ("decoder-first-pipeline-num-layers", po::value(&c.first_stage_layers)->default_value(0), "blocks on the first pipeline stage (0: balanced split)")
      ("decoder-last-pipeline-num-layers", po::value(&c.last_stage_layers)->default_value(0), "blocks on the last pipeline stage (0: balanced split)")
      ("ddp-bucket-size", po::value(&c.ddp_bucket_size)->default_value(c.ddp_bucket_size), "ZeRO 0-1: elements per data-parallel gradient bucket (whole layers; stages 2-3 use one bucket per layer)")
      ("zero-stage", po::value(&c.zero_stage)->default_value(0), "ZeRO stage: 0 all-reduce, 1 shard Adam state, 2 also gradients, 3 also parameters (over the data-parallel group; with one dp rank all are 0)")
      ("comm-timeout", po::value(&c.comm_timeout)->default_value(c.comm_timeout), "hang watchdog: seconds a collective, send/recv or barrier may wait before the waiting rank names it (operation, group, peers, iteration) and aborts the job (exit 3); also ends a job whose rank died (0: wait forever). The default 600 leaves room for waits that are legitimately long: large collectives on big clusters, and ranks at a barrier while others load or write checkpoint shards")
      ("inject-comm-stall-at", po::value(&c.inject_comm_stall_at)->default_value(0), "testing: world rank 1 stalls for good before its first communication of this iteration, so the watchdog of the others must end the job (0: never)")
      ("recompute-granularity", po::value(&c.recompute_granularity), "activation recomputation: full or selective")
      ("bf16", po::bool_switch(&c.bf16), "bf16 weights, gradients and activations; fp32 master weights, Adam state and gradient reduction")
      ("fp16", po::bool_switch(&c.fp16), "fp16 like --bf16, with dynamic loss scaling")
      ("initial-loss-scale", po::value(&c.initial_loss_scale)->default_value(c.initial_loss_scale), "--fp16: starting loss scale")
      ("min-loss-scale", po::value(&c.min_loss_scale)->default_value(c.min_loss_scale), "--fp16: the scale never backs off below this")
      ("loss-scale-window", po::value(&c.loss_scale_window)->default_value(c.loss_scale_window), "--fp16: clean steps before the scale doubles")
      ("loss-scale-backoff", po::value(&c.loss_scale_backoff)->default_value(c.loss_scale_backoff), "--fp16: factor applied to the scale after an overflow")
      ("inject-grad-overflow-at", po::value(&c.inject_grad_overflow_at)->default_value(0), "testing: make this iteration's gradients inf on data-parallel rank 0 (0: never)")
      ("spike-action", po::value(&c.spike_action)->default_value(c.spike_action), "what a loss or gradient-norm spike does: none, skip (the update), rollback (to the newest snapshot or checkpoint); non-finite values always skip the update")
      ("spike-zscore", po::value(&c.spike.zscore)->default_value(c.spike.zscore), "a spike: this many standard deviations above the running mean")
      ("spike-ema-beta", po::value(&c.spike.beta)->default_value(c.spike.beta), "decay of the running mean and variance (0.99: about the last 100 iterations)")
      ("spike-warmup", po::value(&c.spike.warmup)->default_value(c.spike.warmup), "clean iterations before spikes are judged")
      ("spike-max-consecutive", po::value(&c.spike.max_consecutive)->default_value(c.spike.max_consecutive), "this many spikes in a row are taken as a new level: the update is applied and the statistics restart from it (0: never)")
      ("snapshot-interval", po::value(&c.snapshot_interval)->default_value(0), "keep a host copy of the training state every N iterations for --spike-action rollback (0: roll back to the newest checkpoint under --save)")
      ("spike-skip-batches", po::value(&c.spike_skip_batches)->default_value(true), "after a rollback, skip the batches from the snapshot to the spike (true) or replay them (false)")
      ("spike-lr-factor", po::value(&c.spike_lr_factor)->default_value(1.0), "multiply the learning rate by this for --spike-lr-iters iterations after a rollback")
      ("spike-lr-iters", po::value(&c.spike_lr_iters)->default_value(0), "see --spike-lr-factor")
      ("max-rollbacks", po::value(&c.max_rollbacks)->default_value(c.max_rollbacks), "more rollbacks than this within --rollback-window iterations stop the run (with a checkpoint, exit code 4)")
      ("rollback-window", po::value(&c.rollback_window)->default_value(c.rollback_window), "see --max-rollbacks")
      ("skip-train-iteration-range", po::value(&c.skip_iteration_ranges)->multitoken(), "iterations A-B (inclusive; several allowed) whose batches are consumed without training, as BLOOM did")
      ("inject-loss-spike-at", po::value(&c.inject_loss_spike_at), "testing: comma-separated iterations whose loss (and gradients) are multiplied by --inject-loss-spike-factor")
      ("inject-loss-spike-factor", po::value(&c.inject_loss_spike_factor)->default_value(c.inject_loss_spike_factor), "testing: see --inject-loss-spike-at")
      ("inject-grad-nan-at", po::value(&c.inject_grad_nan_at)->default_value(0), "testing: put a NaN into one gradient element at this iteration")
      ("inject-corrupt-batch-at", po::value(&c.inject_corrupt_batch_at)->default_value(0), "testing: replace this iteration's tokens by one repeated id");
  log.add_options()
      ("log-interval", po::value(&c.log_interval)->default_value(c.log_interval), "iterations between log lines")
      ("eval-interval", po::value(&c.eval_interval)->default_value(0), "iterations between evaluations (0: only at the end)")
      ("eval-iters", po::value(&c.eval_iters)->default_value(c.eval_iters), "micro-batches per evaluation")
      ("metrics-file", po::value(&c.metrics_file), "append JSON Lines metrics here")
      ("peak-tflops", po::value(&c.peak_tflops)->default_value(0.0), "peak TFLOP/s of one process's hardware, for MFU (default on a GPU: its dense bf16 peak when known, e.g. 989 for an H100 SXM)")
      ("device", po::value(&c.device)->default_value(c.device), "where the model trains: cpu, cuda (each rank on the GPU of its node-local rank), or auto (cuda when this build has the CUDA backend and a GPU is visible, else cpu)");
  ckpt.add_options()
      ("save", po::value(&c.save), "checkpoint directory to write")
      ("load", po::value(&c.load), "checkpoint directory to resume from (its 'latest', or one iteration's directory)")
      ("load-hf", po::value(&c.load_hf), "start from the weights of a Hugging Face LLaMA directory (config.json + model.safetensors or sharded with model.safetensors.index.json), under any layout; iteration 0, fresh Adam state")
      ("report-memory", po::bool_switch(&c.report_memory), "after the first iteration and at the end, print every rank's bytes per memory category beside the ZeRO paper's prediction of its model states")
      ("override-opt_param-scheduler", po::bool_switch(&c.override_opt_param_scheduler), "on --load, use the flags' learning-rate schedule, AdamW settings, global batch and clipping instead of refusing when they differ from the checkpoint's")
      ("save-interval", po::value(&c.save_interval)->default_value(0), "iterations between checkpoints (0: only at the end)")
      ("keep-last", po::value(&c.keep_last)->default_value(0), "keep only the N newest checkpoints under --save (0: keep all)")
      ("async-save", po::bool_switch(&c.async_save), "copy the state to host memory and write it from a background thread while training goes on; the next save (and the end of training) waits for it")
      ("inject-save-crash-at", po::value(&c.inject_save_crash_at)->default_value(0), "testing: world rank 0 exits after writing its shard of this iteration's checkpoint, before the commit (0: never)")
      ("exit-interval", po::value(&c.exit_interval)->default_value(0), "stop (after saving) once the iteration is a multiple of this")
      ("exit-duration-in-mins", po::value(&c.exit_duration_mins)->default_value(0.0), "stop (after evaluating and saving) once training has run this long");
  po::options_description all("llm-train: train a LLaMA-style model\n\nUsage: llm-train [options]  (or mpirun -n N llm-train ...)");
  all.add(general).add(model).add(data).add(train).add(layout).add(log).add(ckpt);

  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, all), vm);
    if (vm.count("help")) {
      std::cout << all << "\n";
      return std::nullopt;
    }
    if (vm.count("config")) {
      const std::string file = vm["config"].as<std::string>();
      std::ifstream in(file);
      if (!in) throw UsageError("--config " + file + ": cannot open the file (check the path and permissions)");
      po::store(po::parse_config_file(in, all), vm);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(std::string(e.what()) + " (see llm-train --help)");
  }
  if (!vm.count("train-iters")) throw UsageError("--train-iters is required (number of optimizer steps)");
  try {
    c.pipeline_schedule = pipeline_schedule_from_name(schedule);
    c.lr.style = lr_decay_style_from_name(decay_style);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  c.model.vocab_size = vocab;
  return c;
}

static void need(bool ok, const std::string& msg) {
  if (!ok) throw UsageError(msg);
}

void validate(TrainConfig& c, int world) {
  need(c.device == "cpu" || c.device == "cuda" || c.device == "auto",
       "--device " + c.device + " is not one of cpu, cuda, auto");
  need(c.train_iters > 0, "--train-iters must be positive");
  need(c.micro_batch_size > 0, "--micro-batch-size must be positive");
  need(c.tensor_parallel >= 1 && c.pipeline_parallel >= 1,
       "--tensor-model-parallel-size and --pipeline-model-parallel-size must be at least 1");
  need(world % (c.tensor_parallel * c.pipeline_parallel) == 0,
       "world size " + std::to_string(world) + " (mpirun -n) is not divisible by --tensor-model-parallel-size " +
           std::to_string(c.tensor_parallel) + " × --pipeline-model-parallel-size " +
           std::to_string(c.pipeline_parallel) + " = " + std::to_string(c.tensor_parallel * c.pipeline_parallel) +
           ": change -n or the parallel sizes");
  const int64_t dp = c.data_parallel(world);
  if (c.global_batch_size == 0) c.global_batch_size = c.micro_batch_size * dp;
  need(c.global_batch_size > 0, "--global-batch-size must be positive");
  need(c.global_batch_size % (c.micro_batch_size * dp) == 0,
       "--global-batch-size " + std::to_string(c.global_batch_size) + " is not divisible by --micro-batch-size " +
           std::to_string(c.micro_batch_size) + " × data-parallel size " + std::to_string(dp) +
           ": make it a multiple of " + std::to_string(c.micro_batch_size * dp));
  need(c.lr.max_lr > 0, "--lr must be positive");
  need(c.lr.min_lr >= 0 && c.lr.min_lr <= c.lr.max_lr, "--min-lr must be between 0 and --lr");
  need(c.lr.warmup_iters >= 0, "--lr-warmup-iters must be non-negative");
  if (c.lr.decay_iters == 0) c.lr.decay_iters = c.train_iters;
  need(c.lr.decay_iters > c.lr.warmup_iters || c.lr.style == LrDecayStyle::Constant,
       "--lr-decay-iters (default --train-iters) must exceed --lr-warmup-iters");
  need(c.adam.beta1 >= 0 && c.adam.beta1 < 1, "--adam-beta1 must be in [0, 1)");
  need(c.adam.beta2 >= 0 && c.adam.beta2 < 1, "--adam-beta2 must be in [0, 1)");
  need(c.adam.eps > 0, "--adam-eps must be positive");
  need(c.adam.weight_decay >= 0, "--weight-decay must be non-negative");
  need(c.clip_grad >= 0, "--clip-grad must be non-negative (0 turns clipping off)");
  need(c.log_interval > 0, "--log-interval must be positive");
  need(c.eval_interval >= 0 && c.eval_iters >= 0, "--eval-interval and --eval-iters must be non-negative");
  need(c.save_interval >= 0 && c.exit_interval >= 0, "--save-interval and --exit-interval must be non-negative");
  need(c.load.empty() || c.load_hf.empty(),
       "--load and --load-hf exclude each other: --load resumes a run (weights, optimizer, data position), "
       "--load-hf starts a new one from Hugging Face weights");
  need(c.keep_last >= 0, "--keep-last must be non-negative (0 keeps every checkpoint)");
  need(c.exit_duration_mins >= 0, "--exit-duration-in-mins must be non-negative");
  need(c.comm_timeout >= 0 && c.comm_timeout <= 1e9, "--comm-timeout must be between 0 (no watchdog) and 1e9 seconds");
  need(c.inject_comm_stall_at >= 0 && (c.inject_comm_stall_at == 0 || world >= 2),
       "--inject-comm-stall-at needs a non-negative iteration and at least 2 ranks (world rank 1 stalls)");
  need(c.valid_fraction >= 0 && c.valid_fraction < 1, "--valid-fraction must be in [0, 1)");
  need(!c.data_path.empty(), "--data-path is required (a token file prefix from llm-prepare-data)");
  // Cheap existence checks here; contents are verified when the files are opened.
  for (const auto& [flag, prefix] : {std::pair{"--data-path", c.data_path}, std::pair{"--valid-data-path", c.valid_data_path}})
    need(prefix.empty() || std::filesystem::exists(prefix + ".bin"),
         std::string(flag) + " " + prefix + ": " + prefix + ".bin does not exist (write it with llm-prepare-data --output-prefix " +
             prefix + ")");
  need(c.load.empty() || std::filesystem::exists(c.load), "--load " + c.load + ": no such checkpoint directory");
  need(c.tokenizer_model.empty() == false || c.model.vocab_size > 0,
       "give --tokenizer-model (preferred) or --vocab-size so the embedding size is known");
  try {
    c.model.resolved().validate();
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  // The model must split evenly over the layout.
  const ModelConfig m = c.model.resolved();
  const int64_t tp = c.tensor_parallel;
  auto split = [&](int64_t n, const std::string& what) {
    need(n % tp == 0, what + " " + std::to_string(n) + " is not divisible by --tensor-model-parallel-size " +
                          std::to_string(tp) + ": each tensor-parallel rank needs an equal share");
  };
  split(m.num_attention_heads, "--num-attention-heads");
  split(m.groups(), "--num-query-groups");
  split(m.ffn(), "--ffn-hidden-size");
  split(m.vocab_size, "the vocabulary size (--vocab-size / --tokenizer-model)");
  need(m.num_layers >= c.pipeline_parallel, "--num-layers " + std::to_string(m.num_layers) +
                                                " is less than --pipeline-model-parallel-size " +
                                                std::to_string(c.pipeline_parallel) + ": every stage needs a layer");
  try {
    for (int s = 0; s < c.pipeline_parallel; ++s)
      PipelineStage::split(m.num_layers, s, static_cast<int>(c.pipeline_parallel), c.first_stage_layers,
                           c.last_stage_layers);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  need(c.ddp_bucket_size > 0, "--ddp-bucket-size must be positive");
  if (c.layers_per_virtual_stage != 0) {
    const int64_t n = c.layers_per_virtual_stage, p = c.pipeline_parallel;
    const std::string flag = "--num-layers-per-virtual-pipeline-stage " + std::to_string(n);
    need(n > 0, flag + ": must be positive");
    need(p > 1, flag + " needs --pipeline-model-parallel-size > 1");
    need(m.num_layers % (p * n) == 0 && m.num_layers / (p * n) >= 2,
         flag + ": --num-layers " + std::to_string(m.num_layers) + " must be a multiple of --pipeline-model-parallel-size " +
             std::to_string(p) + " × " + std::to_string(n) + " with at least two chunks per rank");
    need(c.first_stage_layers == 0 && c.last_stage_layers == 0,
         flag + " splits the layers evenly: drop --decoder-first/last-pipeline-num-layers");
    need(c.pipeline_schedule == PipelineSchedule::OneFOneB, flag + " runs the interleaved 1F1B schedule: use --pipeline-schedule 1f1b");
    const int64_t micro_batches = c.global_batch_size / (c.micro_batch_size * dp);
    need(micro_batches % p == 0, flag + ": the interleaved schedule needs the micro-batches per step (--global-batch-size / "
                                        "(--micro-batch-size × data-parallel size) = " + std::to_string(micro_batches) +
                                        ") to be a multiple of --pipeline-model-parallel-size " + std::to_string(p));
    need(micro_batches * m.num_layers / n < 16000, flag + ": too many micro-batch × chunk messages per step for MPI tags");
  }
  need(!c.sequence_parallel || c.tensor_parallel > 1, "--sequence-parallel needs --tensor-model-parallel-size > 1");
  need(!c.sequence_parallel || (c.micro_batch_size * m.seq_length) % tp == 0,
       "--sequence-parallel splits the " + std::to_string(c.micro_batch_size * m.seq_length) +
           " tokens of a micro-batch (--micro-batch-size × --seq-length) over --tensor-model-parallel-size " +
           std::to_string(tp) + ": they must divide evenly");
  // ZeRO and mixed precision arrive with their own issue; until then say so plainly.
  need(c.zero_stage >= 0 && c.zero_stage <= 3, "--zero-stage must be 0, 1, 2 or 3");
  need(!(c.bf16 && c.fp16), "--bf16 and --fp16 are mutually exclusive: choose one");
  need(c.initial_loss_scale > 0 && c.min_loss_scale > 0 && c.min_loss_scale <= c.initial_loss_scale,
       "--initial-loss-scale and --min-loss-scale must be positive with min <= initial");
  need(c.loss_scale_window > 0, "--loss-scale-window must be positive");
  need(c.loss_scale_backoff > 0 && c.loss_scale_backoff < 1, "--loss-scale-backoff must lie in (0, 1)");
  need(c.recompute_granularity.empty() || c.recompute_granularity == "full" || c.recompute_granularity == "selective",
       "--recompute-granularity '" + c.recompute_granularity + "': expected full or selective");
  need(c.spike_action == "none" || c.spike_action == "skip" || c.spike_action == "rollback",
       "--spike-action '" + c.spike_action + "': expected none, skip or rollback");
  need(c.spike_action != "rollback" || c.snapshot_interval > 0 || !c.save.empty(),
       "--spike-action rollback needs somewhere to roll back to: --snapshot-interval N (in memory) or --save DIR "
       "(the newest checkpoint)");
  need(c.spike.max_consecutive >= 0, "--spike-max-consecutive must be non-negative (0: never)");
  need(c.spike.zscore > 0 && c.spike.beta > 0 && c.spike.beta < 1 && c.spike.warmup >= 0,
       "--spike-zscore must be positive, --spike-ema-beta in (0, 1), --spike-warmup non-negative");
  need(c.snapshot_interval >= 0 && c.spike_lr_iters >= 0 && c.spike_lr_factor > 0,
       "--snapshot-interval and --spike-lr-iters must be non-negative, --spike-lr-factor positive");
  need(c.max_rollbacks >= 0 && c.rollback_window > 0, "--max-rollbacks must be non-negative, --rollback-window positive");
  c.skip_ranges.clear();
  for (const auto& r : c.skip_iteration_ranges) {
    const auto dash = r.find('-');
    bool ok = dash != std::string::npos && dash > 0 && dash + 1 < r.size() &&
              r.find_first_not_of("0123456789-") == std::string::npos && r.find('-', dash + 1) == std::string::npos;
    if (ok) c.skip_ranges.emplace_back(std::stoll(r.substr(0, dash)), std::stoll(r.substr(dash + 1)));
    ok = ok && c.skip_ranges.back().first >= 1 && c.skip_ranges.back().first <= c.skip_ranges.back().second;
    need(ok, "--skip-train-iteration-range '" + r + "': expected A-B with 1 <= A <= B (e.g. 1200-1400)");
  }
  c.loss_spike_iterations.clear();
  for (size_t at = 0; at < c.inject_loss_spike_at.size();) {
    const size_t end = std::min(c.inject_loss_spike_at.find(',', at), c.inject_loss_spike_at.size());
    const std::string item = c.inject_loss_spike_at.substr(at, end - at);
    need(!item.empty() && item.find_first_not_of("0123456789") == std::string::npos,
         "--inject-loss-spike-at '" + c.inject_loss_spike_at + "': expected comma-separated iteration numbers");
    c.loss_spike_iterations.push_back(std::stoll(item));
    at = end + 1;
  }
}

bool TrainConfig::in_skip_range(int64_t it) const {
  for (const auto& [a, b] : skip_ranges)
    if (it >= a && it <= b) return true;
  return false;
}

bool TrainConfig::loss_spike_injected_at(int64_t it) const {
  return std::find(loss_spike_iterations.begin(), loss_spike_iterations.end(), it) != loss_spike_iterations.end();
}

}  // namespace llm
