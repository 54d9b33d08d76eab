// The whole model on the GPU against the same model on the CPU: loss and every
// parameter's gradient after one forward and backward (F32 within fp32 bounds,
// BF16 within bf16 bounds), 50 training steps with the distributed optimizer
// lowering the loss as the CPU run does, generation with a KV cache, and the
// trainer of llm-train end to end (gradient accumulation, evaluation, a
// checkpoint written from the GPU and resumed on the GPU and on the CPU).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/ops.h"
#include "data/token_file.h"
#include "launch/train_config.h"
#include "launch/trainer.h"
#include "layers/llama_model.h"
#include "optim/adamw.h"
#include "optim/distributed_optimizer.h"
#include "parallel/local_communicator.h"
#include "parallel/process_grid.h"
#include "tests/gpu/gpu_test_support.h"

using namespace llm;

namespace {

// Head dim 64: the size the tensor-core attention is built for.
ModelConfig small_config() {
  ModelConfig c;
  c.vocab_size = 512;
  c.hidden_size = 256;
  c.ffn_hidden_size = 512;
  c.num_layers = 2;
  c.num_attention_heads = 4;
  c.num_query_groups = 2;
  c.seq_length = 64;
  c.init_std = 0.05;
  return c;
}

std::vector<int32_t> random_windows(int64_t batch, int64_t seq, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> w(static_cast<size_t>(batch * (seq + 1)));
  for (auto& t : w) t = static_cast<int32_t>(rng() % vocab);
  return w;
}

// The F64 host copy of a tensor's values (any dtype, any device).
std::vector<double> host_values(const Tensor& t) {
  Tensor h = t.device().is_cpu() ? t : t.clone_to(Device::cpu(), MemoryCategory::Other);
  Tensor d = h.to(DType::F64, MemoryCategory::Other);
  return std::vector<double>(d.data<double>(), d.data<double>() + d.numel());
}

double relative_error(const std::vector<double>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

struct Result {
  double loss;
  std::vector<std::vector<double>> grads;  // per parameter
};

// One forward and backward of `model` (values initialised from `seed`).
Result forward_backward(LlamaModel& model, const std::vector<int32_t>& windows, int64_t batch) {
  model.initialize(7);
  MicrobatchContext ctx;
  model.set_batch(ctx, windows.data(), batch, model.config().seq_length);
  const double loss = model.forward(ctx) / static_cast<double>(ctx.num_targets);
  model.params().zero_grads();
  model.backward(ctx, 1.0 / static_cast<double>(ctx.num_targets));
  Result r{loss, {}};
  const auto all = host_values(model.params().grads());
  for (const auto& info : model.params().infos())
    r.grads.emplace_back(all.begin() + info.offset, all.begin() + info.offset + info.numel);
  return r;
}

void compare_with_cpu(DType gpu_dtype, double loss_tol, double grad_tol) {
  const int64_t batch = 2;
  const auto windows = random_windows(batch, small_config().seq_length, small_config().vocab_size, 3);
  LlamaModel cpu(small_config(), DType::F64);
  const Result ref = forward_backward(cpu, windows, batch);
  LlamaModel gpu(small_config(), gpu_dtype, Device::cuda(0));
  const Result got = forward_backward(gpu, windows, batch);
  EXPECT_NEAR(got.loss, ref.loss, loss_tol * std::abs(ref.loss));
  const auto& infos = cpu.params().infos();
  for (size_t i = 0; i < infos.size(); ++i) {
    const double err = relative_error(got.grads[i], ref.grads[i]);
    EXPECT_LT(err, grad_tol) << infos[i].name << " (" << dtype_name(gpu_dtype) << ")";
  }
}

// Trains `steps` iterations, each on fresh random windows over 64 of the 512 ids
// (no batch repeats: the model learns the distribution, ln 64 ≈ 4.16 at best,
// rather than memorising batches); returns the losses.
std::vector<double> train(Device device, DType dtype, int steps) {
  LlamaModel model(small_config(), dtype, device);
  LocalCommunicator dp("dp");
  DistributedOptimizer opt(model, dp, DistributedOptimizerConfig{0, 40'000'000, AdamWConfig{}});
  {
    Tensor initial = Tensor::zeros({model.params().padded_numel()}, DType::F32, MemoryCategory::Workspace);
    model.params().initialize_into(initial, 7);
    opt.set_values(initial);
  }
  const int64_t batch = 4, seq = model.config().seq_length;
  std::vector<double> losses;
  for (int it = 0; it < steps; ++it) {
    opt.begin_step();
    opt.set_last_microbatch(true);
    MicrobatchContext ctx;
    const auto windows = random_windows(batch, seq, 64, 100 + static_cast<uint32_t>(it));
    model.set_batch(ctx, windows.data(), batch, seq);
    const double sum = model.forward(ctx);
    losses.push_back(sum / static_cast<double>(ctx.num_targets));
    model.backward(ctx, 1.0 / static_cast<double>(ctx.num_targets));
    opt.finish_gradient_reduction();
    const double norm = norm_of_sums(opt.grad_sums_of_squares());
    opt.step(3e-3, clip_coefficient(norm, 1.0));
  }
  return losses;
}

// Logits of generating after `prompt` and then two single tokens, with a KV cache.
std::vector<std::vector<float>> decode_logits(Device device, DType dtype) {
  LlamaModel model(small_config(), dtype, device);
  model.initialize(7);
  auto state = model.new_decode_state(32);
  std::vector<std::vector<float>> out;
  out.push_back(model.decode({5, 17, 300, 42, 7}, state));
  out.push_back(model.decode({99}, state));
  out.push_back(model.decode({511}, state));
  return out;
}

// ---- the trainer (launch/trainer.cpp) as llm-train runs it, on one process ----

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() / ("llm_gpu_model_test_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// Runs llm-train's Trainer with these flags (as after `llm-train`); returns its exit code.
int run_trainer(const std::vector<std::string>& flags) {
  std::vector<std::string> args = {"llm-train"};
  args.insert(args.end(), flags.begin(), flags.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  auto cfg = parse_train_args(static_cast<int>(argv.size()), argv.data());
  if (!cfg) return -1;
  validate(*cfg, 1);
  ProcessGrid grid(make_layout(1, 1, 1), ProcessGrid::Local{});
  Trainer trainer(*cfg, grid);
  return trainer.run();
}

// The metrics file's training losses by iteration, and its validation losses.
struct Metrics {
  std::map<int64_t, double> loss, val_loss;
  int checkpoints_saved = 0;
};
Metrics read_metrics(const std::filesystem::path& file) {
  Metrics m;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("lm_loss") && j.contains("tokens_per_sec"))
      m.loss[j.at("iteration").get<int64_t>()] = j.at("lm_loss").get<double>();
    if (j.contains("val_loss")) m.val_loss[j.at("iteration").get<int64_t>()] = j.at("val_loss").get<double>();
    if (j.value("event", "") == "checkpoint_saved") ++m.checkpoints_saved;
  }
  return m;
}

}  // namespace

TEST(GpuModel, F32LossAndGradientsMatchTheCpu) {
  LLM_REQUIRE_GPU();
  compare_with_cpu(DType::F32, 1e-5, 1e-4);
}

TEST(GpuModel, Bf16LossAndGradientsMatchTheCpuWithinBf16Bounds) {
  LLM_REQUIRE_GPU();
  compare_with_cpu(DType::BF16, 1e-2, 5e-2);
}

TEST(GpuModel, FiftyBf16StepsLowerTheLossAsOnTheCpu) {
  LLM_REQUIRE_GPU();
  const auto cpu = train(Device::cpu(), DType::F32, 50);
  const auto gpu = train(Device::cuda(0), DType::BF16, 50);
  ASSERT_EQ(gpu.size(), 50u);
  for (double l : gpu) ASSERT_TRUE(std::isfinite(l));
  // The loss falls from ln 512 ≈ 6.24 towards ln 64 ≈ 4.16 ...
  auto tail_mean = [](const std::vector<double>& l) { return (l[45] + l[46] + l[47] + l[48] + l[49]) / 5; };
  EXPECT_LT(tail_mean(gpu), gpu.front() - 1.0);
  // ... and ends where the fp32 CPU run ends, within bf16 training noise.
  EXPECT_NEAR(tail_mean(gpu), tail_mean(cpu), 0.02 * tail_mean(cpu));
  EXPECT_NEAR(gpu.front(), cpu.front(), 0.01 * cpu.front());
}

TEST(GpuModel, DecodeWithKvCacheMatchesTheCpu) {
  LLM_REQUIRE_GPU();
  const auto ref = decode_logits(Device::cpu(), DType::F64);
  for (DType dt : {DType::F32, DType::BF16}) {
    const auto got = decode_logits(Device::cuda(0), dt);
    ASSERT_EQ(got.size(), ref.size());
    for (size_t k = 0; k < ref.size(); ++k) {
      ASSERT_EQ(got[k].size(), ref[k].size());
      const std::vector<double> g(got[k].begin(), got[k].end()), r(ref[k].begin(), ref[k].end());
      EXPECT_LT(relative_error(g, r), dt == DType::F32 ? 1e-5 : 3e-2) << dtype_name(dt) << " step " << k;
    }
  }
}

// llm-train's loop on the GPU (bf16, two micro-batches per step, evaluation, a
// checkpoint) against the same run on the CPU (bf16 emulated), and resumed from
// the GPU's checkpoint on the GPU and on the CPU.
TEST(GpuModel, TrainerRunsSavesAndResumesOnTheGpuLikeOnTheCpu) {
  LLM_REQUIRE_GPU();
  TempDir tmp;
  const std::string data = (tmp.path / "tokens").string();
  {
    data::TokenFileWriter w(data, 512);
    std::mt19937 rng(11);
    std::vector<int32_t> ids(60000);
    for (auto& t : ids) t = static_cast<int32_t>(rng() % 64);  // a distribution over 64 ids to learn
    w.add_document(ids);
    w.finish();
  }
  const std::vector<std::string> common = {
      "--data-path", data, "--vocab-size", "512", "--num-layers", "2", "--hidden-size", "256",
      "--num-attention-heads", "4", "--num-query-groups", "2", "--ffn-hidden-size", "512", "--seq-length", "64",
      "--micro-batch-size", "4", "--global-batch-size", "8", "--train-iters", "8", "--lr", "3e-3", "--min-lr",
      "3e-4", "--lr-warmup-iters", "2", "--log-interval", "1", "--eval-interval", "4", "--eval-iters", "2",
      "--bf16", "--spike-action", "none"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> f = common;
    f.insert(f.end(), extra.begin(), extra.end());
    return f;
  };
  auto path = [&](const char* name) { return (tmp.path / name).string(); };

  ASSERT_EQ(run_trainer(with({"--device", "cpu", "--metrics-file", path("cpu.jsonl")})), 0);
  ASSERT_EQ(run_trainer(with({"--device", "cuda", "--metrics-file", path("gpu.jsonl"), "--save", path("ck"),
                              "--save-interval", "4"})),
            0);
  const Metrics cpu = read_metrics(path("cpu.jsonl")), gpu = read_metrics(path("gpu.jsonl"));
  ASSERT_EQ(gpu.loss.size(), 8u);
  ASSERT_EQ(cpu.loss.size(), 8u);
  EXPECT_EQ(gpu.checkpoints_saved, 2);  // iterations 4 and 8
  for (const auto& [it, l] : gpu.loss) {
    ASSERT_TRUE(std::isfinite(l)) << it;
    EXPECT_NEAR(l, cpu.loss.at(it), 0.02 * cpu.loss.at(it)) << "iteration " << it;
  }
  EXPECT_LT(gpu.loss.at(8), gpu.loss.at(1) - 0.5);  // it learns
  ASSERT_EQ(gpu.val_loss.size(), 2u);                // iterations 4 and 8 (the final evaluation)
  for (const auto& [it, l] : gpu.val_loss) EXPECT_NEAR(l, cpu.val_loss.at(it), 0.02 * cpu.val_loss.at(it)) << it;

  // Resumed from the GPU's checkpoint of iteration 4: on the GPU, and on the CPU
  // (the checkpoint holds fp32 master weights and moments, whatever the device).
  const std::string at4 = path("ck") + "/iter_0000004";
  ASSERT_TRUE(std::filesystem::exists(at4));
  ASSERT_EQ(run_trainer(with({"--device", "cuda", "--load", at4, "--metrics-file", path("gpu_resumed.jsonl")})), 0);
  ASSERT_EQ(run_trainer(with({"--device", "cpu", "--load", at4, "--metrics-file", path("cpu_resumed.jsonl")})), 0);
  const Metrics gr = read_metrics(path("gpu_resumed.jsonl")), cr = read_metrics(path("cpu_resumed.jsonl"));
  for (int64_t it = 5; it <= 8; ++it) {
    // The GPU's flash backward adds dq atomically (not bitwise reproducible): close, not equal.
    EXPECT_NEAR(gr.loss.at(it), gpu.loss.at(it), 2e-3 * gpu.loss.at(it)) << "GPU resumed, iteration " << it;
    EXPECT_NEAR(cr.loss.at(it), gpu.loss.at(it), 0.02 * gpu.loss.at(it)) << "CPU resumed, iteration " << it;
  }
}
