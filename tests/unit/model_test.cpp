// Whole-model tests: gradients against finite differences (in double),
// layout-independent initialisation, overfitting one batch, the optimizer
// and schedule, and checkpoint integrity.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <cstring>
#include <random>

#include "checkpoint/checkpoint.h"
#include "core/random.h"
#include "layers/llama_model.h"
#include "optim/adamw.h"
#include "optim/lr_schedule.h"
#include "tests/support/run_tool.h"

using namespace llm;

namespace {

ModelConfig tiny_config(bool tie) {
  ModelConfig c;
  c.vocab_size = 11;
  c.hidden_size = 8;
  c.ffn_hidden_size = 12;
  c.num_layers = 2;
  c.num_attention_heads = 2;
  c.num_query_groups = 1;  // grouped-query: both heads share one k/v head
  c.seq_length = 5;
  c.init_std = 0.3;  // large enough that every path carries gradient
  c.tie_embeddings = tie;
  return c;
}

std::vector<int32_t> random_windows(int64_t batch, int64_t seq, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> w(static_cast<size_t>(batch * (seq + 1)));
  for (auto& t : w) t = static_cast<int32_t>(rng() % vocab);
  return w;
}

double mean_loss(const LlamaModel& m, const std::vector<int32_t>& windows, int64_t batch) {
  MicrobatchContext ctx;
  m.set_batch(ctx, windows.data(), batch, m.config().seq_length);
  return m.forward(ctx) / static_cast<double>(ctx.num_targets);
}

void check_model_gradients(bool tie) {
  LlamaModel model(tiny_config(tie), DType::F64);
  model.initialize(7);
  const int64_t batch = 2, seq = model.config().seq_length;
  const auto windows = random_windows(batch, seq, model.config().vocab_size, 3);
  MicrobatchContext ctx;
  model.set_batch(ctx, windows.data(), batch, seq);
  model.forward(ctx);
  model.params().zero_grads();
  model.backward(ctx, 1.0 / static_cast<double>(ctx.num_targets));

  double* p = model.params().values().data<double>();
  const double* g = model.params().grads().data<double>();
  const double h = 1e-5;
  double worst = 0.0;
  std::string worst_name;
  for (const auto& info : model.params().infos()) {
    for (int64_t i = 0; i < info.numel; ++i) {
      double& x = p[info.offset + i];
      const double saved = x;
      x = saved + h;
      const double up = mean_loss(model, windows, batch);
      x = saved - h;
      const double down = mean_loss(model, windows, batch);
      x = saved;
      const double fd = (up - down) / (2 * h);
      const double an = g[info.offset + i];
      const double err = std::abs(fd - an) / std::max(1e-3, std::abs(fd) + std::abs(an));
      if (err > worst) {
        worst = err;
        worst_name = info.name + "[" + std::to_string(i) + "] fd=" + std::to_string(fd) + " an=" + std::to_string(an);
      }
    }
  }
  EXPECT_LT(worst, 1e-6) << "worst parameter " << worst_name;
}

}  // namespace

TEST(Model, GradientsMatchFiniteDifferencesInDouble) { check_model_gradients(false); }
TEST(Model, GradientsMatchFiniteDifferencesWithTiedEmbeddings) { check_model_gradients(true); }

TEST(Model, ParameterCountMatchesTheFormula) {
  ModelConfig c = tiny_config(false);
  LlamaModel m(c, DType::F64);
  // embed + lm_head + final norm + per layer (q, k, v, o, gate, up, down, 2 norms)
  const int64_t d = 8, kv = 4, f = 12, V = 11;
  const int64_t per_layer = d * d + 2 * kv * d + d * d + 3 * d * f + 2 * d;
  EXPECT_EQ(m.params().numel(), 2 * V * d + d + 2 * per_layer);
  EXPECT_EQ(m.params().numel(), c.resolved().num_parameters());
}

TEST(Model, FfnWidthFollowsLlamasRule) {
  ModelConfig c;
  c.hidden_size = 4096;
  EXPECT_EQ(c.ffn(), 11008);  // LLaMA 7B
  c.hidden_size = 8192;
  EXPECT_EQ(c.ffn(), 22016);  // LLaMA 65B
}

TEST(Model, InitialisationDependsOnNameAndIndexOnly) {
  // A weight's value must not depend on how many other parameters exist (so
  // every parallel layout starts from the same global model).
  ModelConfig a = tiny_config(false), b = tiny_config(false);
  b.vocab_size = 13;
  LlamaModel ma(a, DType::F64), mb(b, DType::F64);
  ma.initialize(42);
  mb.initialize(42);
  const auto& ia = ma.params().info("model.layers.1.mlp.down_proj.weight");
  const auto& ib = mb.params().info("model.layers.1.mlp.down_proj.weight");
  ASSERT_NE(ia.offset, ib.offset);  // the larger vocabulary shifts every layer
  for (int64_t i = 0; i < ia.numel; ++i) {
    const double va = ma.params().values().data<double>()[ia.offset + i];
    EXPECT_EQ(va, mb.params().values().data<double>()[ib.offset + i]);
  }
  // Output projections are scaled by 1/sqrt(2·layers); norms start at one.
  const double expect0 = normal_at(parameter_key(42, ia.name), 0) * 0.3 / std::sqrt(4.0);
  EXPECT_DOUBLE_EQ(ma.params().values().data<double>()[ia.offset], expect0);
  EXPECT_EQ(ma.params().values().data<double>()[ma.params().info("model.norm.weight").offset], 1.0);
}

TEST(Model, NormalInitHasTheRequestedMoments) {
  const uint64_t key = parameter_key(1, "w");
  double s = 0, s2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double x = normal_at(key, i);
    s += x;
    s2 += x * x;
  }
  EXPECT_NEAR(s / n, 0.0, 0.01);
  EXPECT_NEAR(s2 / n, 1.0, 0.01);
}

TEST(Model, OverfitsOneBatchToNearZeroLoss) {
  ModelConfig c;
  c.vocab_size = 64;
  c.hidden_size = 64;
  c.ffn_hidden_size = 128;
  c.num_layers = 2;
  c.num_attention_heads = 4;
  c.seq_length = 16;
  LlamaModel model(c);
  model.initialize(1);
  AdamW opt(model.params(), {0.9, 0.95, 1e-8, 0.0});
  const auto windows = random_windows(4, 16, 64, 9);
  double loss = 0;
  for (int step = 1; step <= 300; ++step) {
    MicrobatchContext ctx;
    model.set_batch(ctx, windows.data(), 4, 16);
    model.params().zero_grads();
    loss = model.forward(ctx) / ctx.num_targets;
    model.backward(ctx, 1.0 / ctx.num_targets);
    opt.step(3e-3, clip_coefficient(global_grad_norm(model.params()), 1.0));
  }
  EXPECT_LT(loss, 0.05) << "random tokens can only be memorised; log(64) = 4.16 at the start";
}

TEST(Optimizer, NoWeightDecayOnNormWeights) {
  LlamaModel model(tiny_config(false), DType::F64);
  model.initialize(3);
  const Tensor before = model.params().values().clone(MemoryCategory::Other);
  AdamW opt(model.params(), {0.9, 0.95, 1e-8, 0.1});
  model.params().zero_grads();
  opt.step(0.5, 1.0);  // zero gradients: only decay acts
  for (const auto& info : model.params().infos()) {
    const double b = before.data<double>()[info.offset];
    const double a = model.params().values().data<double>()[info.offset];
    if (info.name.find("norm") != std::string::npos) EXPECT_EQ(a, b) << info.name;
    else EXPECT_DOUBLE_EQ(a, b * (1 - 0.5 * 0.1)) << info.name;
  }
}

TEST(Optimizer, ClipCoefficientFollowsPyTorch) {
  EXPECT_EQ(clip_coefficient(0.5, 1.0), 1.0);
  EXPECT_DOUBLE_EQ(clip_coefficient(4.0, 1.0), 1.0 / (4.0 + 1e-6));
  EXPECT_EQ(clip_coefficient(100.0, 0.0), 1.0);  // 0 turns clipping off
}

TEST(LrSchedule, WarmupThenCosineToMinimum) {
  LrSchedule s{1.0, 0.1, 10, 110, LrDecayStyle::Cosine};
  EXPECT_DOUBLE_EQ(s.at(1), 0.1);
  EXPECT_DOUBLE_EQ(s.at(10), 1.0);
  EXPECT_NEAR(s.at(60), 0.55, 1e-12);  // half way: (max+min)/2
  EXPECT_NEAR(s.at(110), 0.1, 1e-12);
  EXPECT_DOUBLE_EQ(s.at(500), 0.1);
  s.style = LrDecayStyle::Linear;
  EXPECT_NEAR(s.at(35), 1.0 - 0.9 * 0.25, 1e-12);
  s.style = LrDecayStyle::Constant;
  EXPECT_DOUBLE_EQ(s.at(100), 1.0);
  EXPECT_THROW(lr_decay_style_from_name("exponential"), std::invalid_argument);
}

TEST(Checkpoint, RoundTripsAndDetectsCorruption) {
  test::TempDir dir;
  LlamaModel model(tiny_config(false));
  model.initialize(5);
  AdamW opt(model.params(), {});
  model.params().grads().data<float>()[0] = 1.0f;
  opt.step(1e-3, 1.0);
  CheckpointContents c;
  c.model = &model;
  c.optimizer = &opt;
  c.state.iteration = 3;
  c.state.consumed_samples = 24;
  save_checkpoint(dir / "ck", c);

  CheckpointOnDisk ck = open_checkpoint(dir / "ck");
  EXPECT_EQ(ck.state.iteration, 3);
  EXPECT_EQ(ck.state.consumed_samples, 24);
  LlamaModel loaded(ck.model);
  AdamW opt2(loaded.params(), {});
  load_model_weights(ck, loaded);
  load_optimizer_state(ck, opt2);
  EXPECT_EQ(opt2.steps_taken(), 1);
  EXPECT_EQ(0, std::memcmp(loaded.params().values().raw(), model.params().values().raw(), model.params().values().nbytes()));
  EXPECT_EQ(0, std::memcmp(opt2.exp_avg_sq().raw(), opt.exp_avg_sq().raw(), opt.exp_avg_sq().nbytes()));

  // Flip one bit in the shard: the checksum (checked when the shard is first
  // read) names the file.
  const std::string shard = ck.dir + "/shard_r00000.safetensors";
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-5, std::ios::end);
    char b;
    f.read(&b, 1);
    b ^= 0x10;
    f.seekp(-5, std::ios::end);
    f.write(&b, 1);
  }
  try {
    LlamaModel target(ck.model);
    load_model_weights(open_checkpoint(dir / "ck"), target);
    FAIL() << "a corrupted shard was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("shard_r00000.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();
  }
  // Truncated: the size check names the file.
  std::filesystem::resize_file(shard, 100);
  EXPECT_THROW(open_checkpoint(dir / "ck"), std::runtime_error);
  // A manifest whose slices leave part of a tensor unread is refused, and so is
  // one that points a slice at a file it does not list (never checksummed).
  {
    const std::string mpath = ck.dir + "/manifest.json";
    std::ifstream in(mpath);
    nlohmann::json m = nlohmann::json::parse(in);
    in.close();
    std::filesystem::remove_all(dir / "ck");
    save_checkpoint(dir / "ck", c);
    for (auto& t : m["tensors"])
      if (t["name"] == "model.norm.weight" && t["kind"] == "param") t["slices"] = nlohmann::json::array();
    std::ofstream(mpath) << m.dump();
    LlamaModel target(tiny_config(false));
    try {
      load_model_weights(open_checkpoint(dir / "ck"), target);
      FAIL() << "a tensor without slices was accepted";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("model.norm.weight"), std::string::npos) << e.what();
    }
    for (auto& t : m["tensors"])
      if (t["name"] == "model.norm.weight" && t["kind"] == "param")
        t["slices"] = {{{"file", "other.safetensors"}, {"key", "x"}, {"begin", 0}, {"end", 8}}};
    std::ofstream(mpath) << m.dump();
    EXPECT_THROW(load_model_weights(open_checkpoint(dir / "ck"), target), std::runtime_error);
  }
  // A different model refuses the checkpoint's weights.
  std::filesystem::remove_all(dir / "ck");
  save_checkpoint(dir / "ck", c);
  ModelConfig other = tiny_config(false);
  other.hidden_size = 16;
  LlamaModel wrong(other);
  EXPECT_THROW(load_model_weights(open_checkpoint(dir / "ck"), wrong), std::runtime_error);
}

TEST(Pipeline, StagesSplitTheBlocksAsDocumented) {
  auto layers_of = [](int64_t L, int P, int64_t first, int64_t last) {
    std::vector<int64_t> n;
    int64_t next = 0;
    for (int s = 0; s < P; ++s) {
      const PipelineStage st = PipelineStage::split(L, s, P, first, last);
      EXPECT_EQ(st.first_layer, next);  // contiguous, in order
      EXPECT_EQ(st.first, s == 0);
      EXPECT_EQ(st.last, s == P - 1);
      next += st.num_layers;
      n.push_back(st.num_layers);
    }
    EXPECT_EQ(next, L);
    return n;
  };
  EXPECT_EQ(layers_of(10, 4, 0, 0), (std::vector<int64_t>{3, 3, 2, 2}));  // balanced, extra blocks first
  EXPECT_EQ(layers_of(10, 4, 1, 3), (std::vector<int64_t>{1, 3, 3, 3}));
  EXPECT_EQ(layers_of(9, 3, 0, 1), (std::vector<int64_t>{4, 4, 1}));
  EXPECT_THROW(PipelineStage::split(10, 0, 4, 2, 0), std::invalid_argument);  // 8 left for 3 stages
  EXPECT_THROW(PipelineStage::split(4, 0, 2, 3, 2), std::invalid_argument);   // more than there are
}
