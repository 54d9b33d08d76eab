// The whole model on the GPU against the same model on the CPU: loss and every
// parameter's gradient after one forward and backward (F32 within fp32 bounds,
// BF16 within bf16 bounds), and 50 training steps with the distributed
// optimizer lowering the loss as the CPU run does.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/ops.h"
#include "layers/llama_model.h"
#include "optim/adamw.h"
#include "optim/distributed_optimizer.h"
#include "parallel/local_communicator.h"
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
