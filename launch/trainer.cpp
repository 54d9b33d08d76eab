#include "launch/trainer.h"

#include <chrono>
#include <csignal>
#include <cmath>
#include <ctime>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <xxhash.h>

#include "checkpoint/checkpoint.h"
#include "checkpoint/hf_format.h"
#include "core/ops.h"
#ifdef LLM_WITH_CUDA
#include "core/cuda/runtime.h"
#endif

namespace llm {

MetricsWriter::MetricsWriter(const std::string& path) {
  if (path.empty()) return;
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  f_ = std::fopen(path.c_str(), "a");
  if (!f_) throw std::runtime_error("--metrics-file " + path + ": cannot open it for appending");
}

MetricsWriter::~MetricsWriter() {
  if (f_) std::fclose(f_);
}

void MetricsWriter::write(const nlohmann::json& j) {
  if (!f_) return;
  // nlohmann writes doubles as the shortest string that round-trips: full precision.
  const std::string line = j.dump() + "\n";
  std::fwrite(line.data(), 1, line.size(), f_);
  std::fflush(f_);
}

EvalResult evaluate(const LlamaModel& model, const data::EvalWindows& windows, int64_t first_window, int64_t count,
                    int64_t micro) {
  const int64_t S = windows.seq_length();
  EvalResult r;
  std::vector<int32_t> buf;
  double sum = 0.0;
  for (int64_t done = 0; done < count; done += micro) {
    const int64_t n = std::min(micro, count - done);
    buf.resize(static_cast<size_t>(n * (S + 1)));
    windows.fill(first_window + done, n, buf.data());
    MicrobatchContext ctx;
    model.set_batch(ctx, buf.data(), n, S);
    sum += model.forward(ctx);
    r.tokens += ctx.num_targets;
  }
  r.loss = r.tokens ? sum / static_cast<double>(r.tokens) : 0.0;
  return r;
}

// a − b per group and operation of two comm_report_json() snapshots (b may lack entries).
static nlohmann::json comm_difference(const nlohmann::json& a, const nlohmann::json& b) {
  nlohmann::json d = a;
  for (auto& [group, ops] : d.items())
    for (auto& [op, bytes] : ops.items())
      bytes = bytes.get<uint64_t>() - b.value(group, nlohmann::json::object()).value(op, uint64_t{0});
  return d;
}

static std::string now_str() {
  char buf[32];
  std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::localtime(&t));
  return buf;
}

static std::string hms(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  return buf;
}

// --device: cpu, cuda (this rank's GPU from its node-local rank), or auto.
static Device resolve_device(const std::string& want) {
#ifdef LLM_WITH_CUDA
  if (want == "cuda" || (want == "auto" && cuda::available())) return Device::cuda(cuda::select_device_for_local_rank());
#else
  if (want == "cuda")
    throw std::invalid_argument("--device cuda: this build has no CUDA backend; rebuild where the CUDA toolkit is "
                                "installed (-DLLM_WITH_CUDA=ON) or use --device cpu");
#endif
  return Device::cpu();
}

// The device, and on GPUs the grid's NCCL groups (before anyone holds a reference to a group).
static Device prepare_device(const std::string& want, ProcessGrid& grid) {
  const Device d = resolve_device(want);
  if (!d.is_cpu() && grid.pp_size() > 1)
    throw std::invalid_argument("--pipeline-model-parallel-size " + std::to_string(grid.pp_size()) +
                                " with --device cuda: the pipeline's point-to-point transfers over NCCL are not "
                                "paired yet (two stages sending at once would deadlock); use tensor and data "
                                "parallelism on GPUs for now, or --device cpu");
  if (!d.is_cpu()) grid.enable_gpu(d.index);
  return d;
}

// Dense bf16 tensor-core peaks (NVIDIA datasheets) of the GPUs we know by name, for MFU.
static double known_peak_tflops(const std::string& gpu) {
  const bool hopper = gpu.find("H100") != std::string::npos || gpu.find("H200") != std::string::npos;
  if (hopper && gpu.find("PCIe") != std::string::npos) return 756.0;  // H100 PCIe
  if (hopper && gpu.find("NVL") != std::string::npos) return 835.0;   // H100 NVL, H200 NVL
  if (hopper) return 989.0;                                            // SXM (and GH200)
  if (gpu.find("A100") != std::string::npos) return 312.0;
  return 0.0;
}

Trainer::Trainer(const TrainConfig& cfg, ProcessGrid& grid)
    : cfg_(cfg),
      grid_(grid),
      device_(prepare_device(cfg.device, grid)),
      dp_(grid.dp()),
      pp_(grid.pp()),
      metrics_(grid.world_rank() == 0 ? cfg.metrics_file : std::string()) {
  guard_ = SpikeGuard(cfg_.spike);
  train_data_ = std::make_unique<data::TokenDataset>(cfg_.data_path);
  train_data_->check_vocab(cfg_.model.vocab_size);
  const bool separate_valid = !cfg_.valid_data_path.empty();
  data::SplitSpec spec;
  spec.valid_fraction = cfg_.valid_fraction;
  const data::DataSplit split = data::split_dataset(*train_data_, cfg_.model.seq_length, spec, separate_valid);
  sampler_ = std::make_unique<data::TrainSampler>(*train_data_, cfg_.model.seq_length, cfg_.seed, split.train);
  if (separate_valid) {
    valid_data_ = std::make_unique<data::TokenDataset>(cfg_.valid_data_path);
    valid_data_->check_vocab(cfg_.model.vocab_size);
    eval_windows_ = std::make_unique<data::EvalWindows>(*valid_data_, cfg_.model.seq_length);
  } else if (!split.valid.empty()) {
    eval_windows_ = std::make_unique<data::EvalWindows>(*train_data_, cfg_.model.seq_length, split.valid);
  }

  // The layers this rank holds: one stage, or with virtual stages one chunk
  // per model stage c·pp + pp_rank of pp·v equal stages.
  std::vector<PipelineStage> chunks;
  const int64_t layers = cfg_.model.resolved().num_layers;
  const int v = cfg_.virtual_stages();
  if (v == 1)
    chunks.push_back(PipelineStage::split(layers, grid.pp_rank(), grid.pp_size(), cfg_.first_stage_layers,
                                          cfg_.last_stage_layers));
  else
    for (int c = 0; c < v; ++c)
      chunks.push_back(PipelineStage::balanced(layers, c * grid.pp_size() + grid.pp_rank(), grid.pp_size() * v));
  model_ = std::make_unique<LlamaModel>(
      cfg_.model, cfg_.model_dtype(), device_, chunks,
      TensorParallel{grid.tp_size() > 1 ? &grid.tp() : nullptr, cfg_.sequence_parallel});
  model_->set_recompute_full(cfg_.recompute_granularity == "full");
  model_->set_recompute_selective(cfg_.recompute_granularity == "selective");
  // The optimizer lays the parameters out in buckets sharded over dp (ZeRO)
  // before they get their values.
  optimizer_ = std::make_unique<DistributedOptimizer>(
      *model_, dp_, DistributedOptimizerConfig{static_cast<int>(cfg_.zero_stage), cfg_.ddp_bucket_size, cfg_.adam});
  if (cfg_.fp16) loss_scale_ = cfg_.initial_loss_scale;
  ParameterStore& ps = model_->params();
  // The initial values in fp32: straight into the model's own buffer when it
  // holds them whole in fp32, else a temporary the optimizer shards and rounds.
  const bool in_place = ps.dtype() == DType::F32 && optimizer_->stage() < 3 && device_.is_cpu();
  Tensor initial = in_place ? ps.values() : Tensor::zeros({ps.padded_numel()}, DType::F32, MemoryCategory::Workspace);
  if (!cfg_.load.empty()) {
    load_checkpoint(cfg_.load, initial, true);
  } else if (!cfg_.load_hf.empty()) {  // continued pretraining: the weights only, iteration 0
    const auto load_start = std::chrono::steady_clock::now();
    std::vector<std::string> warnings;
    load_hf_parameters(cfg_.load_hf, model_->config(), ps, initial, &warnings);
    if (grid.world_rank() == 0)
      for (const auto& w : warnings) std::fprintf(stderr, "warning: --load-hf %s: %s\n", cfg_.load_hf.c_str(), w.c_str());
    std::printf("initialised from the Hugging Face model in %s (%.2f s)\n", cfg_.load_hf.c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count());
    metrics_.write({{"event", "hf_weights_loaded"}, {"path", cfg_.load_hf}});
  } else {
    ps.initialize_into(initial, cfg_.seed);
  }
  optimizer_->set_values(initial);
  initial = Tensor();
  const ModelConfig& m = model_->config();
  std::printf("model: %lld layers, hidden %lld, ffn %lld, heads %lld (query groups %lld), vocab %lld, seq %lld: "
              "%.2fM parameters (%.2fM in matrix products)\n",
              static_cast<long long>(m.num_layers), static_cast<long long>(m.hidden_size),
              static_cast<long long>(m.ffn()), static_cast<long long>(m.num_attention_heads),
              static_cast<long long>(m.groups()), static_cast<long long>(m.vocab_size),
              static_cast<long long>(m.seq_length), m.num_parameters() / 1e6, m.num_matmul_parameters() / 1e6);
  std::printf("data: %lld training windows per epoch, %lld validation windows; global batch %lld = micro %lld x %lld "
              "accumulation steps per rank\n",
              static_cast<long long>(sampler_->num_windows()),
              static_cast<long long>(eval_windows_ ? eval_windows_->count() : 0),
              static_cast<long long>(cfg_.global_batch_size), static_cast<long long>(cfg_.micro_batch_size),
              static_cast<long long>(cfg_.accumulation_steps_per_rank(dp_.size())));
  if (v > 1)
    std::printf("interleaved pipeline: %d model chunks of %lld layers per rank (%d virtual stages)\n", v,
                static_cast<long long>(cfg_.layers_per_virtual_stage), v * grid_.pp_size());
  if (grid_.tp_size() > 1)
    std::printf("tensor parallel: %d ranks (heads, query groups, ffn and vocabulary split)%s\n", grid_.tp_size(),
                cfg_.sequence_parallel ? ", sequence parallel (norms and residuals split along the tokens)" : "");
  if (dp_.size() > 1) {
    static const char* what[] = {"gradients all-reduced", "Adam state sharded, gradients reduce-scattered, parameters "
                                 "all-gathered after the update", "Adam state and gradients sharded (each layer's "
                                 "gradients reduce-scattered and freed in every micro-batch's backward), parameters "
                                 "all-gathered after the update", "Adam state, gradients and parameters sharded (each "
                                 "layer's parameters gathered for its forward and backward, the next one prefetched)"};
    std::printf("data parallel: %d ranks, ZeRO stage %d: %s; %d bucket(s) (%lld elements with padding), overlapped "
                "with backward; Adam state for %lld of %lld parameters here\n", dp_.size(), optimizer_->stage(),
                what[optimizer_->stage()], optimizer_->num_buckets(),
                static_cast<long long>(model_->params().padded_numel()),
                static_cast<long long>(optimizer_->owned_elements()), static_cast<long long>(model_->params().numel()));
  } else if (cfg_.zero_stage > 0) {
    std::printf("note: --zero-stage %lld with one data-parallel rank: nothing to shard, runs as stage 0\n",
                static_cast<long long>(cfg_.zero_stage));
  }
  if (cfg_.bf16 || cfg_.fp16)
    std::printf("mixed precision: %s weights, gradients and activations (%s), fp32 master weights, Adam state and "
                "gradient reduction%s\n", cfg_.bf16 ? "bf16" : "fp16",
                device_.is_cpu() ? "emulated on the CPU: fp32 arithmetic, rounded on store"
                                 : "tensor-core GEMMs and attention with fp32 accumulation",
                cfg_.fp16 ? ", dynamic loss scaling" : "");
#ifdef LLM_WITH_CUDA
  if (!device_.is_cpu()) {
    const cuda::DeviceInfo info = cuda::device_info(device_.index);
    if (cfg_.peak_tflops <= 0) cfg_.peak_tflops = known_peak_tflops(info.name);
    std::printf("device: %s = %s (%d SMs, %.1f GiB)%s\n", device_.str().c_str(), info.name.c_str(), info.sm_count,
                info.total_memory / 1073741824.0,
                cfg_.peak_tflops > 0 ? (", MFU against " + std::to_string(static_cast<int>(cfg_.peak_tflops)) +
                                        " TFLOP/s dense bf16").c_str() : "");
  }
#endif
  std::fflush(stdout);
}

// Reads a checkpoint's state: the fp32 values into `values` (laid out like
// the store; the caller hands them to the optimizer), the moments into the
// optimizer, and the trainer's counters. resume: also check the settings
// against the flags (a rollback reloads this run's own checkpoint).
void Trainer::load_checkpoint(const std::string& path, Tensor& values, bool resume) {
  const auto load_start = std::chrono::steady_clock::now();
  ParameterStore& ps = model_->params();
  CheckpointOnDisk ck = open_checkpoint(path);
  if (nlohmann::json(ck.model) != nlohmann::json(model_->config()))
    throw std::runtime_error("--load " + path + ": the checkpoint's model " + nlohmann::json(ck.model).dump() +
                             " differs from the one configured " + nlohmann::json(model_->config()).dump() +
                             "; use the same model flags as the saved run");
  load_parameters(ck, ps, values);
  {  // the whole state, of which the optimizer keeps its own slices
    AdamW full(ps, cfg_.adam, Device::cpu());  // read into host memory; the optimizer copies its slices over
    load_optimizer_state(ck, full);
    optimizer_->load_state(full);
  }
  iteration_ = ck.state.iteration;
  consumed_samples_ = ck.state.consumed_samples;
  skipped_ = ck.state.skipped_iterations;
  interval_loss_ = ck.state.extra.value("interval_loss_sum", 0.0);
  interval_iters_ = ck.state.extra.value("interval_iters", int64_t{0});
  interval_skipped_ = ck.state.extra.value("interval_skipped", int64_t{0});
  if (cfg_.fp16) {
    loss_scale_ = ck.state.extra.value("loss_scale", loss_scale_);
    clean_steps_ = ck.state.extra.value("loss_scale_clean_steps", int64_t{0});
  }
  guard_.set_state(ck.state.extra.value("spike_guard", nlohmann::json()));
  if (resume) {
    check_resume_settings(ck.state.scheduler, ck.manifest.at("optimizer"), ck.manifest.value("args", nlohmann::json()));
    if (!ck.state.sampler.is_null()) sampler_->check_resume(ck.state.sampler.get<data::SamplerState>());
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  std::printf("loaded checkpoint %s at iteration %lld (%lld samples consumed) in %.2f s\n", ck.dir.c_str(),
              static_cast<long long>(iteration_), static_cast<long long>(consumed_samples_), secs);
  metrics_.write({{"event", "checkpoint_loaded"}, {"iteration", iteration_}, {"path", ck.dir}, {"seconds", secs}});
}

// A resumed run must continue the same optimisation: the schedule, AdamW's
// settings, the global batch and clipping come from the checkpoint unless
// --override-opt-param-scheduler says the flags win (Megatron's rule).
void Trainer::check_resume_settings(const nlohmann::json& sched, const nlohmann::json& opt,
                                    const nlohmann::json& args) const {
  std::vector<std::string> diffs;
  auto cmp = [&](const char* flag, const nlohmann::json& saved, const nlohmann::json& now) {
    if (!saved.is_null() && saved != now) diffs.push_back(std::string(flag) + " " + now.dump() + " (checkpoint: " + saved.dump() + ")");
  };
  cmp("--lr", sched.value("max_lr", nlohmann::json()), cfg_.lr.max_lr);
  cmp("--min-lr", sched.value("min_lr", nlohmann::json()), cfg_.lr.min_lr);
  cmp("--lr-warmup-iters", sched.value("warmup_iters", nlohmann::json()), cfg_.lr.warmup_iters);
  cmp("--lr-decay-iters", sched.value("decay_iters", nlohmann::json()), cfg_.lr.decay_iters);
  cmp("--lr-decay-style", sched.value("style", nlohmann::json()), lr_decay_style_name(cfg_.lr.style));
  cmp("--adam-beta1", opt.value("beta1", nlohmann::json()), cfg_.adam.beta1);
  cmp("--adam-beta2", opt.value("beta2", nlohmann::json()), cfg_.adam.beta2);
  cmp("--adam-eps", opt.value("eps", nlohmann::json()), cfg_.adam.eps);
  cmp("--weight-decay", opt.value("weight_decay", nlohmann::json()), cfg_.adam.weight_decay);
  cmp("--global-batch-size", args.value("global_batch_size", nlohmann::json()), cfg_.global_batch_size);
  cmp("--clip-grad", args.value("clip_grad", nlohmann::json()), cfg_.clip_grad);
  if (diffs.empty()) return;
  std::string list;
  for (const auto& d : diffs) list += "\n  " + d;
  if (!cfg_.override_opt_param_scheduler)
    throw std::runtime_error("--load " + cfg_.load + ": these settings differ from the checkpoint's:" + list +
                             "\nuse the saved values, or pass --override-opt_param-scheduler to train on with the new ones");
  std::printf("note: --override-opt_param-scheduler: continuing with settings that differ from the checkpoint's:%s\n",
              list.c_str());
}

double Trainer::all_reduce_sum(Communicator& group, double x) {
  if (group.size() == 1) return x;
  Tensor t = Tensor::empty({1}, DType::F64, MemoryCategory::Communication);
  t.data<double>()[0] = x;
  group.all_reduce(t, ReduceOp::Sum);
  return t.data<double>()[0];
}

double Trainer::run_pipelined_step(int64_t steps, double tokens_in_batch) {
  const int64_t micro = cfg_.micro_batch_size, S = cfg_.model.seq_length, dp = dp_.size();
  const int chunks = model_->num_chunks();
  std::vector<MicrobatchContext> ctxs(static_cast<size_t>(steps * chunks));
  double loss_sum = 0.0;
  PipelineStep step;
  step.chunks = chunks;
  step.activation_shape = {model_->activation_rows(micro * S), cfg_.model.hidden_size};
  step.dtype = cfg_.model_dtype();  // activations travel in the model's dtype
  step.forward = [&](int64_t m, int chunk, const Tensor& input) {
    // Micro-batch m of every rank together reads samples [m·micro·dp, (m+1)·micro·dp)
    // of the global batch, rank r the r-th micro-batch of them: the union over
    // ranks and micro-batches is exactly the global batch one process would read.
    sampler_->fill(consumed_samples_ + (m * dp + dp_.rank()) * micro, micro, batch_tokens_.data());
    if (corrupt_batch_)  // --inject-corrupt-batch-at: one repeated token, a batch unlike any text
      std::fill(batch_tokens_.begin(), batch_tokens_.end(), static_cast<int32_t>(cfg_.model.vocab_size - 1));
    MicrobatchContext& ctx = ctxs[static_cast<size_t>(m * chunks + chunk)];
    model_->set_batch(ctx, batch_tokens_.data(), micro, S);
    ctx.chunk = chunk;
    ctx.input_hidden = input;
    loss_sum += model_->forward(ctx) * loss_multiplier_;
    return ctx.output_hidden;
  };
  step.backward = [&](int64_t m, int chunk, const Tensor& grad_output) {
    MicrobatchContext& ctx = ctxs[static_cast<size_t>(m * chunks + chunk)];
    // d(mean loss over the global batch)/d(token loss) = 1 / tokens in the batch
    // (times the fp16 loss scale); summing the ranks' gradients then gives the
    // gradient of the global mean. The optimizer reduces each layer's
    // gradients as its backward finishes (stages 0-1: in the last micro-batch).
    double dloss = loss_scale_ * loss_multiplier_ / tokens_in_batch;
    if (inject_overflow_ && m == 0 && dp_.rank() == 0) dloss = INFINITY;  // --inject-grad-overflow-at
    optimizer_->set_last_microbatch(m + 1 == steps);
    model_->backward(ctx, dloss, grad_output.defined() ? &grad_output : nullptr);
    Tensor grad_input = ctx.input_grad;
    ctx = MicrobatchContext{};  // this micro-batch is done: free its activations
    return grad_input;
  };
  run_pipeline(cfg_.pipeline_schedule, steps, pp_, step);
  return loss_sum;
}

// Per-parameter sums of squares, placed at their global position (stages hold
// consecutive runs of the parameters, in stage order) and summed in that order:
// the norm is the same bit for bit under any pipeline split.
double Trainer::global_grad_norm_over_stages(bool tied_copy) {
  const auto& infos = model_->params().infos();
  // Per-parameter sums of the summed gradients, complete over dp.
  std::vector<double> local = optimizer_->grad_sums_of_squares();
  if (tied_copy && grid_.is_last_stage()) {  // the shared embedding is counted once, on the first stage
    for (size_t i = 0; i < infos.size(); ++i)
      if (infos[i].name == "model.embed_tokens.weight") local[i] = 0.0;
  }
  if (grid_.tp_size() > 1) {
    // Split parameters: their parts' sums add up. Replicated ones (norm
    // weights) hold the same gradient on every tp rank: counted once.
    Tensor sums = Tensor::empty({static_cast<int64_t>(local.size())}, DType::F64, MemoryCategory::Communication);
    for (size_t i = 0; i < local.size(); ++i)
      sums.data<double>()[i] = infos[i].replicated && grid_.tp_rank() != 0 ? 0.0 : local[i];
    grid_.tp().all_reduce(sums, ReduceOp::Sum);
    local.assign(sums.data<double>(), sums.data<double>() + sums.numel());
  }
  if (pp_.size() == 1) return norm_of_sums(local);
  if (norm_slots_total_ == 0) {  // where this rank's parameters sit in the global order: asked once
    // Model stage c·pp + r is chunk c of pipeline rank r; its parameters follow
    // those of all lower stages. Gather every (rank, chunk)'s count.
    const int chunks = model_->num_chunks(), p = pp_.size();
    Tensor mine = Tensor::empty({chunks}, DType::I32, MemoryCategory::Communication);
    for (int c = 0; c < chunks; ++c)
      mine.data<int32_t>()[c] = static_cast<int32_t>(model_->chunk_param_begin(c + 1) - model_->chunk_param_begin(c));
    Tensor counts = Tensor::empty({p * chunks}, DType::I32, MemoryCategory::Communication);
    pp_.all_gather(mine, counts);
    auto count_of_stage = [&](int stage) { return counts.data<int32_t>()[(stage % p) * chunks + stage / p]; };
    std::vector<int64_t> stage_offset(static_cast<size_t>(p * chunks) + 1, 0);
    for (int st = 0; st < p * chunks; ++st) stage_offset[st + 1] = stage_offset[st] + count_of_stage(st);
    norm_slots_total_ = stage_offset.back();
    norm_slot_of_.assign(local.size(), 0);
    for (int c = 0; c < chunks; ++c)
      for (size_t i = model_->chunk_param_begin(c); i < model_->chunk_param_begin(c + 1); ++i)
        norm_slot_of_[i] = stage_offset[c * p + pp_.rank()] + static_cast<int64_t>(i - model_->chunk_param_begin(c));
  }
  Tensor all = Tensor::zeros({norm_slots_total_}, DType::F64, MemoryCategory::Communication);
  for (size_t i = 0; i < local.size(); ++i) all.data<double>()[norm_slot_of_[i]] = local[i];
  pp_.all_reduce(all, ReduceOp::Sum);  // one non-zero term per slot: exact
  return norm_of_sums(std::vector<double>(all.data<double>(), all.data<double>() + norm_slots_total_));
}

Trainer::StepResult Trainer::train_step(int64_t iteration) {
  set_comm_context_iteration(iteration);  // for the hang watchdog's report
  const int64_t micro = cfg_.micro_batch_size, S = cfg_.model.seq_length, dp = dp_.size();
  const int64_t steps = cfg_.accumulation_steps_per_rank(dp);
  const double tokens_in_batch = static_cast<double>(cfg_.global_batch_size * S);
  optimizer_->begin_step();
  StepResult r;
  batch_tokens_.resize(static_cast<size_t>(micro * (S + 1)));
  inject_overflow_ = cfg_.inject_grad_overflow_at == iteration;
  corrupt_batch_ = cfg_.inject_corrupt_batch_at == iteration;
  loss_multiplier_ = cfg_.loss_spike_injected_at(iteration) ? cfg_.inject_loss_spike_factor : 1.0;
  // With one stage the schedule is simply forward then backward per micro-batch.
  const double loss_sum = run_pipelined_step(steps, tokens_in_batch);
  inject_overflow_ = corrupt_batch_ = false;
  loss_multiplier_ = 1.0;
  optimizer_->finish_gradient_reduction();
  if (cfg_.inject_grad_nan_at == iteration && dp_.rank() == 0 && grid_.is_last_stage())
    optimizer_->poison_gradient();  // --inject-grad-nan-at
  // With sequence parallelism each tp rank applies the norms to its own rows
  // only, so their weights' gradients are partial sums: add them up.
  if (cfg_.sequence_parallel)
    optimizer_->all_reduce_grads([](const ParameterInfo& p) { return p.replicated; }, grid_.tp());
  // A tied embedding lives on the first and the last stage: sum the two halves
  // of its gradient (input lookup and output projection) so both copies agree.
  const bool tied_copy = tied_across_stages();
  if (tied_copy)
    optimizer_->all_reduce_grads([](const ParameterInfo& p) { return p.name == "model.embed_tokens.weight"; },
                                 grid_.embedding());
  // The loss lives on the last stage; each parameter on exactly one stage.
  r.loss = all_reduce_sum(dp_, all_reduce_sum(pp_, loss_sum)) / tokens_in_batch;
  r.grad_norm = global_grad_norm_over_stages(tied_copy) / loss_scale_;
  r.lr = cfg_.lr.at(iteration) * (iteration <= lr_reduced_until_ ? cfg_.spike_lr_factor : 1.0);
  r.loss_scale = loss_scale_;
  const bool overflow = !std::isfinite(r.grad_norm);
  // Every rank holds the same loss and norm (all-reduced): the same verdict everywhere.
  const SpikeGuard::Verdict v = cfg_.spike_action == "none" ? SpikeGuard::Verdict{} : guard_.observe(r.loss, r.grad_norm);
  r.spike = v.spike && !v.non_finite;
  r.spike_reason = v.reason;
  if (v.level_shift) {
    std::printf("iteration %lld: spike guard: %s\n", static_cast<long long>(iteration), v.reason.c_str());
    metrics_.write({{"event", "spike_guard_reset"}, {"iteration", iteration}, {"reason", v.reason}});
  }
  if (!std::isfinite(r.loss) || overflow || r.spike) {
    r.skipped = true;  // never apply a non-finite update (the same decision on every rank)
  } else {
    optimizer_->step(r.lr, clip_coefficient(r.grad_norm, cfg_.clip_grad) / loss_scale_);
  }
  if (cfg_.fp16) update_loss_scale(overflow);
  consumed_samples_ += cfg_.global_batch_size;
  return r;
}

// fp16's dynamic loss scaling (as Megatron's and PyTorch's GradScaler):
// back off at once on an overflow, grow after a window of clean steps.
void Trainer::update_loss_scale(bool overflow) {
  if (overflow) {
    loss_scale_ = std::max(cfg_.min_loss_scale, loss_scale_ * cfg_.loss_scale_backoff);
    clean_steps_ = 0;
  } else if (++clean_steps_ >= cfg_.loss_scale_window) {
    loss_scale_ *= 2.0;
    clean_steps_ = 0;
  }
}

EvalResult Trainer::evaluate_share(int64_t first, int64_t count, int64_t batches) {
  if (pp_.size() == 1 && !cfg_.sequence_parallel && optimizer_->stage() < 3)
    return evaluate(*model_, *eval_windows_, first, count, cfg_.micro_batch_size);
  // Forward-only through the stages; the loss is summed on the last one.
  // (Also with sequence parallelism: its row split needs full micro-batches;
  // and with ZeRO-3, whose parameter gathers need every dp rank to run the
  // same `batches` forwards, empty ones where its share is shorter.)
  const int64_t micro = cfg_.micro_batch_size, S = cfg_.model.seq_length;
  EvalResult r;
  double sum = 0.0;
  std::vector<int32_t> buf(static_cast<size_t>(micro * (S + 1)));
  // Every micro-batch has the full size so activations have one shape; a
  // short last batch repeats windows whose losses are then not counted.
  // The interleaved schedule needs whole groups of pp micro-batches: pad with empty ones.
  const int chunks = model_->num_chunks();
  const int64_t scheduled = chunks > 1 ? (batches + pp_.size() - 1) / pp_.size() * pp_.size() : batches;
  std::vector<MicrobatchContext> ctxs(static_cast<size_t>(scheduled * chunks));
  PipelineStep step;
  step.chunks = chunks;
  step.activation_shape = {model_->activation_rows(micro * S), cfg_.model.hidden_size};
  step.dtype = cfg_.model_dtype();  // activations travel in the model's dtype
  step.forward = [&](int64_t m, int chunk, const Tensor& input) {
    const int64_t n = std::max<int64_t>(0, std::min(micro, count - m * micro));  // windows that count
    for (int64_t i = 0; i < micro; ++i)  // padding rows repeat a counted window (ignored below)
      eval_windows_->fill(n > 0 ? first + m * micro + std::min(i, n - 1) : 0, 1, buf.data() + i * (S + 1));
    MicrobatchContext& ctx = ctxs[static_cast<size_t>(m * chunks + chunk)];
    model_->set_batch(ctx, buf.data(), micro, S, n);  // padding rows: ignored
    ctx.chunk = chunk;
    ctx.input_hidden = input;
    sum += model_->forward(ctx);
    r.tokens += ctx.num_targets;
    Tensor out = ctx.output_hidden;
    ctx = MicrobatchContext{};
    return out;
  };
  run_pipeline(PipelineSchedule::ForwardOnly, scheduled, pp_, step);
  r.loss = r.tokens ? sum / static_cast<double>(r.tokens) : 0.0;
  return r;
}

// Norm weights are replicated on every tp rank and updated independently,
// staying equal because each rank computes the same update from the same
// all-reduced numbers. Only tp rank 0's copy is saved, so check that before
// saving: a hash per rank, compared on every rank (all throw together).
void Trainer::check_replicated_parameters_agree(const Tensor& values) {
  const ParameterStore& ps = model_->params();
  XXH64_state_t* h = XXH64_createState();
  XXH64_reset(h, 0);
  for (const auto& p : ps.infos())
    if (p.replicated)
      XXH64_update(h, static_cast<const char*>(values.raw()) + p.offset * dtype_size(values.dtype()),
                   static_cast<size_t>(p.numel) * dtype_size(values.dtype()));
  const uint64_t mine = XXH64_digest(h);
  XXH64_freeState(h);
  Tensor t = Tensor::empty({2}, DType::I32, MemoryCategory::Communication);
  std::memcpy(t.raw(), &mine, sizeof mine);
  Tensor all = Tensor::empty({2 * grid_.tp_size()}, DType::I32, MemoryCategory::Communication);
  grid_.tp().all_gather(t, all);
  for (int r = 1; r < grid_.tp_size(); ++r)
    if (std::memcmp(all.data<int32_t>(), all.data<int32_t>() + 2 * r, sizeof mine) != 0)
      throw std::runtime_error("tensor-parallel ranks 0 and " + std::to_string(r) +
                               " hold different copies of the replicated parameters (norm weights); the run has "
                               "diverged across the tensor-parallel group and is not saved (report this with the "
                               "MPI library and layout)");
}

// --report-memory: every rank's live bytes per category (and peaks), printed
// by rank 0, beside the ZeRO paper's model-state prediction for this rank:
// parameters KΨ + gradients KΨ + optimizer state (fp32 moments 8Ψ, plus fp32
// master weights 4Ψ with 16-bit training), K = bytes per model element, Ψ =
// this rank's parameters; stage 1 divides the optimizer state by dp, stage 2
// also the gradients, stage 3 everything.
void Trainer::report_memory(const char* when) {
  const MemoryTracker& mt = memory_tracker(device_);  // the model states' device
  constexpr MemoryCategory cats[] = {MemoryCategory::Parameters, MemoryCategory::Gradients,
                                     MemoryCategory::MasterWeights, MemoryCategory::OptimizerState,
                                     MemoryCategory::Activations, MemoryCategory::Communication};
  constexpr int kFields = 6 + 2;
  const double psi = static_cast<double>(model_->params().numel());
  const int stage = optimizer_->stage();
  const double n = dp_.size(), k = static_cast<double>(dtype_size(cfg_.model_dtype()));
  const double opt_bytes = optimizer_->has_master_weights() ? 12.0 : 8.0;
  const double predicted = k * psi / (stage >= 3 ? n : 1) + k * psi / (stage >= 2 ? n : 1) +
                           opt_bytes * psi / (stage >= 1 ? n : 1);
  char formula[96];
  std::snprintf(formula, sizeof formula, "%gΨ%s + %gΨ%s + %gΨ%s", k, stage >= 3 ? "/dp" : "", k,
                stage >= 2 ? "/dp" : "", opt_bytes, stage >= 1 ? "/dp" : "");
  Tensor mine = Tensor::empty({kFields}, DType::F64, MemoryCategory::Communication);
  double* f = mine.data<double>();
  f[0] = static_cast<double>(mt.current(cats[0]));
  f[1] = static_cast<double>(mt.current(cats[1]));
  f[2] = static_cast<double>(mt.current(cats[2]));
  f[3] = static_cast<double>(mt.current(cats[3]));
  f[4] = static_cast<double>(mt.peak(cats[4]));
  f[5] = static_cast<double>(mt.peak(cats[5]));
  f[6] = static_cast<double>(mt.peak_total());
  f[7] = predicted;
  Tensor all = Tensor::empty({kFields * grid_.world_size()}, DType::F64, MemoryCategory::Communication);
  grid_.world().all_gather(mine, all);
  if (grid_.world_rank() != 0) return;
  auto b = [](double x) { return format_bytes(static_cast<size_t>(x)); };
  std::printf("memory per rank %s (ZeRO stage %d, %s; model states = parameters + gradients + master weights + "
              "optimizer state, predicted %s):\n", when, stage, dtype_name(cfg_.model_dtype()), formula);
  for (int r = 0; r < grid_.world_size(); ++r) {
    const double* v = all.data<double>() + r * kFields;
    const GridCoord g = grid_coord(grid_.layout(), r);
    const double states = v[0] + v[1] + v[2] + v[3];
    std::printf("  rank %d (tp %d, dp %d, pp %d): parameters %s, gradients %s, master weights %s, optimizer state %s | "
                "model states %s, predicted %s, ratio %.3f | peaks: activations %s, communication %s, total %s\n",
                r, g.tp, g.dp, g.pp, b(v[0]).c_str(), b(v[1]).c_str(), b(v[2]).c_str(), b(v[3]).c_str(),
                b(states).c_str(), b(v[7]).c_str(), states / v[7], b(v[4]).c_str(), b(v[5]).c_str(), b(v[6]).c_str());
  }
  std::fflush(stdout);
}

void Trainer::run_evaluation(int64_t iteration) {
  if (!eval_windows_ || cfg_.eval_iters == 0) return;
  const int64_t count = std::min(eval_windows_->count(), cfg_.eval_iters * cfg_.micro_batch_size);
  const auto t0 = std::chrono::steady_clock::now();
  // Each data-parallel rank evaluates a contiguous share of the windows.
  const int64_t per_rank = (count + dp_.size() - 1) / dp_.size();
  const int64_t first = std::min(count, per_rank * dp_.rank()), n = std::min(count, first + per_rank) - first;
  EvalResult e = evaluate_share(first, n, (per_rank + cfg_.micro_batch_size - 1) / cfg_.micro_batch_size);
  const double loss_sum = all_reduce_sum(dp_, all_reduce_sum(pp_, e.loss * static_cast<double>(e.tokens)));
  e.tokens = static_cast<int64_t>(all_reduce_sum(dp_, all_reduce_sum(pp_, static_cast<double>(e.tokens))));
  e.loss = e.tokens ? loss_sum / static_cast<double>(e.tokens) : 0.0;
  release_host_cache();  // evaluation's block sizes do not recur in training
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double ppl = std::exp(e.loss);
  std::printf("-----------------------------------------------------------------------------\n"
              " validation loss at iteration %lld | lm loss value: %.6E | lm loss PPL: %.6E | %lld tokens in %.1f s\n"
              "-----------------------------------------------------------------------------\n",
              static_cast<long long>(iteration), e.loss, ppl, static_cast<long long>(e.tokens), secs);
  std::fflush(stdout);
  metrics_.write({{"iteration", iteration}, {"val_loss", e.loss}, {"val_ppl", ppl}, {"val_tokens", e.tokens}});
}

nlohmann::json Trainer::args_json() const {
  return {{"data_path", cfg_.data_path},
          {"micro_batch_size", cfg_.micro_batch_size},
          {"global_batch_size", cfg_.global_batch_size},
          {"train_iters", cfg_.train_iters},
          {"lr", cfg_.lr.max_lr},
          {"min_lr", cfg_.lr.min_lr},
          {"lr_warmup_iters", cfg_.lr.warmup_iters},
          {"lr_decay_iters", cfg_.lr.decay_iters},
          {"lr_decay_style", lr_decay_style_name(cfg_.lr.style)},
          {"clip_grad", cfg_.clip_grad},
          {"seed", cfg_.seed}};
}

void Trainer::save(int64_t iteration) {
  // Without ZeRO the data-parallel replicas hold the same state: rank 0 of
  // each dp group (one per pipeline stage) writes its stage's shard, and
  // world rank 0 prepares the directory and commits the merged manifest.
  finish_pending_save(true);  // one save at a time
  Communicator& world = grid_.world();
  auto ps = std::make_unique<PendingSave>();
  PendingSave& p = *ps;
  p.iteration = iteration;
  p.start = std::chrono::steady_clock::now();
  if (grid_.world_rank() == 0) prepare_checkpoint_dir(cfg_.save, iteration);
  world.barrier();
  // The whole state of this stage on every dp rank (collectives over dp when
  // it is sharded): the fp32 master weights and Adam's moments; dp rank 0 writes.
  p.values = optimizer_->gather_master_values();
  p.state = optimizer_->gather_state();
  // The writer reads host memory: copy back what lives on a GPU.
  auto to_host = [](Tensor& t) {
    if (!t.device().is_cpu()) t = t.clone_to(Device::cpu(), MemoryCategory::Communication);
  };
  to_host(p.values);
  to_host(p.state->exp_avg());
  to_host(p.state->exp_avg_sq());
  if (grid_.tp_size() > 1) check_replicated_parameters_agree(p.values);
  const bool writer = dp_.rank() == 0;
  std::vector<std::string> skip;
  if (tied_across_stages() && grid_.is_last_stage()) skip.push_back("model.embed_tokens.weight");  // the first stage's
  if (grid_.tp_rank() != 0)  // parameters every tp rank holds whole are written by tp rank 0
    for (const auto& info : model_->params().infos())
      if (info.replicated) skip.push_back(info.name);
  if (grid_.world_rank() == 0) {  // what the manifest records, as of now
    CheckpointContents& c = p.contents;
    c.model = model_.get();
    c.optimizer = p.state.get();
    c.state.iteration = iteration;
    c.state.consumed_samples = consumed_samples_;
    c.state.skipped_iterations = skipped_;
    c.state.sampler = sampler_->state(consumed_samples_);
    c.state.scheduler = {{"max_lr", cfg_.lr.max_lr}, {"min_lr", cfg_.lr.min_lr}, {"warmup_iters", cfg_.lr.warmup_iters},
                         {"decay_iters", cfg_.lr.decay_iters}, {"style", lr_decay_style_name(cfg_.lr.style)}};
    c.state.extra = {{"interval_loss_sum", interval_loss_}, {"interval_iters", interval_iters_},
                     {"interval_skipped", interval_skipped_}};
    if (cfg_.fp16) {
      c.state.extra["loss_scale"] = loss_scale_;
      c.state.extra["loss_scale_clean_steps"] = clean_steps_;
    }
    c.state.extra["spike_guard"] = guard_.state();
    c.layout = {{"tensor_parallel", grid_.tp_size()}, {"pipeline_parallel", grid_.pp_size()},
                {"data_parallel", grid_.dp_size()}, {"zero_stage", cfg_.zero_stage}, {"dtype", "F32"},
                {"compute_dtype", dtype_name(cfg_.model_dtype())}};
    c.args = args_json();
    c.tokenizer_model = cfg_.tokenizer_model;
  }
  auto write = [this, &p, skip, writer] {
    if (writer)
      write_checkpoint_shard(cfg_.save, p.iteration, grid_.world_rank(), model_->params(), p.state.get(), skip,
                             &p.values);
  };
  if (!cfg_.async_save) {
    write();
    if (cfg_.inject_save_crash_at == iteration && grid_.world_rank() == 0) {
      std::printf("--inject-save-crash-at %lld: exiting after writing this rank's shard, before the commit\n",
                  static_cast<long long>(iteration));
      std::fflush(stdout);
      std::_Exit(86);
    }
    p.stall_seconds = -1.0;  // all of it
    pending_save_ = std::move(ps);
    finish_pending_save(true);
    return;
  }
  // Asynchronous: snapshot what training will change (the gathered state is
  // already a copy unless it is the model's own fp32 values), then write it
  // from a thread; the commit happens once every rank has written.
  if (writer && p.values.raw() == model_->params().values().raw())
    p.values = p.values.clone(MemoryCategory::Communication);
  p.stall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - p.start).count();
  p.writer = std::thread([&p, write] {
    try {
      write();
    } catch (const std::exception& e) {
      p.error = e.what();
    }
    p.written = true;
  });
  pending_save_ = std::move(ps);
  std::printf("checkpoint at iteration %lld: state copied in %.2f s, being written in the background\n",
              static_cast<long long>(iteration), pending_save_->stall_seconds);
  std::fflush(stdout);
}

// Commits the pending checkpoint once every rank has written its shard.
// wait = false only looks (a one-integer all-reduce): training goes on if
// some rank is still writing.
void Trainer::finish_pending_save(bool wait) {
  if (!pending_save_) return;
  PendingSave& p = *pending_save_;
  Communicator& world = grid_.world();
  if (!wait && p.writer.joinable()) {
    Tensor done = Tensor::empty({1}, DType::I32, MemoryCategory::Communication);
    done.data<int32_t>()[0] = p.written ? 1 : 0;
    world.all_reduce(done, ReduceOp::Min);
    if (done.data<int32_t>()[0] == 0) return;
  }
  const auto wait_start = std::chrono::steady_clock::now();
  if (p.writer.joinable()) p.writer.join();
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - wait_start).count();
  if (!p.error.empty()) throw std::runtime_error("--save " + cfg_.save + ": writing the checkpoint of iteration " +
                                                 std::to_string(p.iteration) + " failed: " + p.error);
  world.barrier();
  if (grid_.world_rank() == 0) {
    const std::string dir = commit_checkpoint(cfg_.save, p.contents);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - p.start).count();
    // The training loop stood still for the snapshot and for any wait here.
    const double stall = p.stall_seconds < 0 ? secs : p.stall_seconds + waited;
    std::printf("saved checkpoint at iteration %lld to %s (%.2f s, training stalled %.2f s)\n",
                static_cast<long long>(p.iteration), dir.c_str(), secs, stall);
    nlohmann::json ev = {{"event", "checkpoint_saved"}, {"iteration", p.iteration}, {"path", dir},
                         {"seconds", secs},         {"stall_seconds", stall},     {"async", cfg_.async_save}};
    if (cfg_.keep_last > 0) {
      const auto removed = remove_old_checkpoints(cfg_.save, cfg_.keep_last);
      for (const auto& r : removed) std::printf("removed old checkpoint %s (--keep-last %lld)\n", r.c_str(),
                                                static_cast<long long>(cfg_.keep_last));
      ev["removed"] = removed;
    }
    std::fflush(stdout);
    metrics_.write(ev);
  }
  world.barrier();
  pending_save_.reset();
}

static volatile std::sig_atomic_t g_stop_signal = 0;
static void on_stop_signal(int sig) { g_stop_signal = sig; }

// A host copy of everything an iteration changes, sharded like the model:
// what the optimizer updates (and its moments) on each rank, plus the
// counters, loss scale and spike statistics.
void Trainer::take_snapshot() {
  const auto t0 = std::chrono::steady_clock::now();
  if (!snapshot_) snapshot_ = std::make_unique<MemorySnapshot>();
  snapshot_->iteration = iteration_;
  snapshot_->consumed_samples = consumed_samples_;
  snapshot_->loss_scale = loss_scale_;
  snapshot_->clean_steps = clean_steps_;
  snapshot_->guard = guard_.state();
  snapshot_->optimizer = optimizer_->snapshot();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  metrics_.write({{"event", "snapshot"}, {"iteration", iteration_}, {"seconds", secs},
                  {"bytes", snapshot_->optimizer.bytes()}});
}

bool Trainer::roll_back(int64_t it, const StepResult& r) {
  rollbacks_.push_back(it);
  std::erase_if(rollbacks_, [&](int64_t x) { return x <= it - cfg_.rollback_window; });
  if (static_cast<int64_t>(rollbacks_.size()) > cfg_.max_rollbacks) {
    std::printf("stopping at iteration %lld: %zu spikes needing a rollback within %lld iterations (--max-rollbacks "
                "%lld, --rollback-window %lld); the run is unstable: lower the learning rate, check the data around "
                "these iterations or skip it with --skip-train-iteration-range\n",
                static_cast<long long>(it), rollbacks_.size(), static_cast<long long>(cfg_.rollback_window),
                static_cast<long long>(cfg_.max_rollbacks), static_cast<long long>(cfg_.rollback_window));
    metrics_.write({{"event", "too_many_rollbacks"}, {"iteration", it}, {"rollbacks", rollbacks_}});
    return false;
  }
  const int64_t consumed_after_spike = consumed_samples_;
  std::string source;
  if (snapshot_) {
    optimizer_->restore(snapshot_->optimizer);
    iteration_ = snapshot_->iteration;
    consumed_samples_ = snapshot_->consumed_samples;
    loss_scale_ = snapshot_->loss_scale;
    clean_steps_ = snapshot_->clean_steps;
    guard_.set_state(snapshot_->guard);
    source = "the in-memory snapshot";
  } else {  // the newest checkpoint of this run
    finish_pending_save(true);
    ParameterStore& ps = model_->params();
    Tensor values = Tensor::zeros({ps.padded_numel()}, DType::F32, MemoryCategory::Workspace);
    load_checkpoint(cfg_.save, values, false);
    optimizer_->set_values(values);
    source = "the newest checkpoint";
  }
  const int64_t to = iteration_;
  if (cfg_.spike_skip_batches) {  // the batches from there to the spike are not seen again
    consumed_samples_ = consumed_after_spike;
    iteration_ = it;
  }
  if (cfg_.spike_lr_iters > 0) lr_reduced_until_ = iteration_ + cfg_.spike_lr_iters;
  std::printf("iteration %lld: rolled back to %s (after iteration %lld)%s\n", static_cast<long long>(it),
              source.c_str(), static_cast<long long>(to),
              cfg_.spike_skip_batches ? (", the batches of iterations " + std::to_string(to + 1) + "-" +
                                         std::to_string(it) + " skipped").c_str() : ", replaying the same batches");
  std::fflush(stdout);
  nlohmann::json ev = {{"event", "rollback"}, {"iteration", it}, {"to", to}, {"source", source},
                       {"lm_loss", r.loss}, {"grad_norm", r.grad_norm}, {"reason", r.spike_reason}};
  if (cfg_.spike_skip_batches) ev["skipped_iterations"] = {to + 1, it};
  metrics_.write(ev);
  return true;
}

int Trainer::run() {
  const ModelConfig& m = model_->config();
  const double flops_per_iter = m.flops_per_token() * static_cast<double>(cfg_.global_batch_size * m.seq_length);
  const auto start = std::chrono::steady_clock::now();
  auto last = start;
  double last_grad_norm = 0.0;
  const int64_t first_iter = iteration_ + 1;
  if (iteration_ >= cfg_.train_iters) {
    std::printf("nothing to do: the checkpoint is at iteration %lld and --train-iters is %lld\n",
                static_cast<long long>(iteration_), static_cast<long long>(cfg_.train_iters));
    return 0;
  }
  bool saved_last = false;
  int64_t timed_iters = 0;  // iterations since the last log line in this process (for ms/iteration)
  // SIGTERM / SIGUSR1: finish the iteration, save, exit 0 (the ranks agree on when).
  g_stop_signal = 0;
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGUSR1, on_stop_signal);
  while (iteration_ < cfg_.train_iters) {
    const int64_t it = iteration_ + 1;
    if (cfg_.in_skip_range(it)) {  // --skip-train-iteration-range: the batch is consumed, nothing trained
      consumed_samples_ += cfg_.global_batch_size;
      iteration_ = it;
      std::printf("iteration %lld: batch skipped (--skip-train-iteration-range)\n", static_cast<long long>(it));
      metrics_.write({{"event", "data_skipped"}, {"iteration", it}, {"consumed_samples", consumed_samples_}});
      continue;
    }
    if (cfg_.snapshot_interval > 0 && (it - 1) % cfg_.snapshot_interval == 0 &&
        (!snapshot_ || snapshot_->iteration != it - 1))
      take_snapshot();
    const StepResult r = train_step(it);
    iteration_ = it;
    ++timed_iters;
    saved_last = false;
    if (r.skipped) {
      ++skipped_;
      ++interval_skipped_;
    }
    if (r.spike) {
      std::printf("iteration %lld: loss spike: %s; update skipped\n", static_cast<long long>(it), r.spike_reason.c_str());
      metrics_.write({{"event", "spike"}, {"iteration", it}, {"lm_loss", r.loss}, {"grad_norm", r.grad_norm},
                      {"reason", r.spike_reason}, {"action", cfg_.spike_action}});
      if (cfg_.spike_action == "rollback") {
        if (!roll_back(it, r)) {
          if (!cfg_.save.empty()) {
            save(iteration_);
            finish_pending_save(true);
          } else {
            std::printf("no checkpoint written: --save is not set\n");
          }
          std::fflush(stdout);
          return 4;  // (3 is the hang watchdog's)
        }
        continue;  // training goes on from the restored state
      }
    }
    if (r.skipped && !r.spike) {
      std::printf("iteration %lld skipped: non-finite loss %g or grad norm %g%s\n", static_cast<long long>(it), r.loss,
                  r.grad_norm, cfg_.fp16 ? (" (fp16 loss scale " + std::to_string(r.loss_scale) + " → " +
                                             std::to_string(loss_scale_) + ")").c_str() : "");
      nlohmann::json ev = {{"event", "skipped_step"}, {"iteration", it}, {"lm_loss", r.loss}, {"grad_norm", r.grad_norm}};
      if (cfg_.fp16) ev["loss_scale"] = loss_scale_;
      metrics_.write(ev);
    } else if (!r.skipped) {
      interval_loss_ += r.loss;
      ++interval_iters_;
    }
    last_grad_norm = r.grad_norm;
    if (cfg_.report_memory && it == first_iter) report_memory("after the first iteration");
    if (it % cfg_.log_interval == 0 || it == cfg_.train_iters) {
      const auto now = std::chrono::steady_clock::now();
      const double secs = std::chrono::duration<double>(now - last).count();
      const double ms_per_iter = 1000.0 * secs / static_cast<double>(std::max<int64_t>(1, timed_iters));
      const double tokens_per_sec = static_cast<double>(cfg_.global_batch_size * m.seq_length) * 1000.0 / ms_per_iter;
      const double tflops = flops_per_iter / (ms_per_iter / 1000.0) / 1e12;
      const double loss = interval_iters_ ? interval_loss_ / static_cast<double>(interval_iters_) : NAN;
      const double elapsed = std::chrono::duration<double>(now - start).count();
      const double eta = elapsed / static_cast<double>(it - first_iter + 1) * static_cast<double>(cfg_.train_iters - it);
      char mfu[48] = "";
      if (cfg_.peak_tflops > 0) std::snprintf(mfu, sizeof mfu, " MFU: %.1f%% |", 100.0 * tflops / cfg_.peak_tflops);
      std::printf(" [%s] iteration %8lld/%8lld | consumed samples: %10lld | elapsed time per iteration (ms): %.1f | "
                  "learning rate: %.6E | global batch size: %5lld | lm loss: %.6E | grad norm: %.3f | "
                  "tokens/s: %.0f | TFLOP/s: %.4f |%s number of skipped iterations: %3lld | %3.0f%% ETA %s\n",
                  now_str().c_str(), static_cast<long long>(it), static_cast<long long>(cfg_.train_iters),
                  static_cast<long long>(consumed_samples_), ms_per_iter, r.lr,
                  static_cast<long long>(cfg_.global_batch_size), loss, last_grad_norm, tokens_per_sec, tflops, mfu,
                  static_cast<long long>(interval_skipped_), 100.0 * static_cast<double>(it) / cfg_.train_iters,
                  hms(eta).c_str());
      std::fflush(stdout);
      nlohmann::json j = {{"iteration", it},
                          {"lm_loss", loss},
                          {"lr", r.lr},
                          {"grad_norm", last_grad_norm},
                          {"tokens_per_sec", tokens_per_sec},
                          {"skipped", interval_skipped_},
                          {"consumed_samples", consumed_samples_},
                          {"ms_per_iter", ms_per_iter},
                          {"tflops", tflops}};
      if (cfg_.peak_tflops > 0) j["mfu"] = tflops / cfg_.peak_tflops;
      if (cfg_.fp16) j["loss_scale"] = loss_scale_;
      if (grid_.world_size() > 1) {
        // Bytes this rank (world rank 0: tp, dp rank 0 of the first stage)
        // sent per group and operation since the last log line, per iteration.
        const nlohmann::json now_bytes = comm_report_json(grid_);
        nlohmann::json per_iter = comm_difference(now_bytes, comm_logged_);
        for (auto& [group, ops] : per_iter.items())
          for (auto& [op, bytes] : ops.items())
            bytes = bytes.get<uint64_t>() / static_cast<uint64_t>(std::max<int64_t>(1, timed_iters));
        j["comm_bytes_per_iter"] = per_iter;
        comm_logged_ = now_bytes;
      }
      metrics_.write(j);
      interval_loss_ = 0.0;
      interval_iters_ = interval_skipped_ = timed_iters = 0;
      last = now;
    }
    // Evaluation's and saving's traffic is not training's: keep it out of comm_bytes_per_iter.
    const nlohmann::json before_extras = grid_.world_size() > 1 ? comm_report_json(grid_) : nlohmann::json();
    if (cfg_.eval_interval > 0 && it % cfg_.eval_interval == 0 && it != cfg_.train_iters) run_evaluation(it);
    const bool exiting = cfg_.exit_interval > 0 && it % cfg_.exit_interval == 0 && it != cfg_.train_iters;
    finish_pending_save(false);  // commit a background save once every rank has written it
    if (!cfg_.save.empty() && ((cfg_.save_interval > 0 && it % cfg_.save_interval == 0) || exiting)) {
      save(it);
      saved_last = true;
    }
    if (exiting) finish_pending_save(true);
    if (grid_.world_size() > 1)  // move the baseline past them: logged = now − (before − logged)
      comm_logged_ = comm_difference(comm_report_json(grid_), comm_difference(before_extras, comm_logged_));
    if (exiting) {
      std::printf("exiting at iteration %lld (--exit-interval %lld)\n", static_cast<long long>(it),
                  static_cast<long long>(cfg_.exit_interval));
      return 0;
    }
    // The ranks' clocks differ a little, and a signal may reach them at
    // different iterations: they stop when the slowest says so, together.
    double minutes = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 60.0;
    double signal_seen = g_stop_signal;
    if (grid_.world_size() > 1) {
      Tensor t = Tensor::empty({2}, DType::F64, MemoryCategory::Communication);
      t.data<double>()[0] = minutes;
      t.data<double>()[1] = signal_seen;
      grid_.world().all_reduce(t, ReduceOp::Max);
      minutes = t.data<double>()[0];
      signal_seen = t.data<double>()[1];
    }
    if (signal_seen != 0 && it != cfg_.train_iters) {
      std::printf("signal %d received: stopping after iteration %lld%s\n", static_cast<int>(signal_seen),
                  static_cast<long long>(it), cfg_.save.empty() ? " (no --save: nothing is saved)" : ", saving");
      std::fflush(stdout);
      metrics_.write({{"event", "preempted"}, {"iteration", it}, {"signal", static_cast<int>(signal_seen)}});
      if (!cfg_.save.empty() && !saved_last) save(it);
      finish_pending_save(true);
      return 0;
    }
    if (cfg_.exit_duration_mins > 0 && minutes >= cfg_.exit_duration_mins && it != cfg_.train_iters) {
      std::printf("stopping at iteration %lld of %lld: --exit-duration-in-mins %g reached\n", static_cast<long long>(it),
                  static_cast<long long>(cfg_.train_iters), cfg_.exit_duration_mins);
      metrics_.write({{"event", "time_limit"}, {"iteration", it}, {"minutes", minutes}});
      break;
    }
  }
  run_evaluation(iteration_);
  if (!cfg_.save.empty() && !saved_last) save(iteration_);
  finish_pending_save(true);
  if (cfg_.report_memory) report_memory("at the end");
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("training done: %lld iterations in %s (%lld skipped)\n", static_cast<long long>(iteration_ - first_iter + 1),
              hms(total).c_str(), static_cast<long long>(skipped_));
  if (!device_.is_cpu())
    std::printf("%s memory by category (current and peak bytes of live tensors):\n%s", device_.str().c_str(),
                memory_tracker(device_).report().c_str());
  std::printf("%smemory by category (current and peak bytes of live tensors):\n%s"
              "host blocks cached for reuse: %s\n", device_.is_cpu() ? "" : "host ",
              memory_tracker(Device::cpu()).report().c_str(), format_bytes(host_cached_bytes()).c_str());
  return 0;
}

}  // namespace llm
