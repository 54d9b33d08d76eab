// The sweep's shape rule and FLOP counts: every target N in a wide range is
// hit within 10% by a valid shape, the layout's divisibility is respected, a
// target below the smallest shape is refused naming the key, and the
// parameter and FLOP counts equal values worked out by hand.
#include <gtest/gtest.h>

#include <cmath>

#include "sweep/flops.h"
#include "sweep/shapes.h"

using namespace llm;
using namespace llm::sweep;

namespace {

void expect_valid(const Shape& s, const ShapeRule& rule, const ShapeContext& ctx) {
  const ModelConfig m = model_config(s, ctx);
  EXPECT_NO_THROW(m.validate());
  EXPECT_EQ(s.hidden_size % s.num_attention_heads, 0);
  EXPECT_EQ(s.hidden_size / s.num_attention_heads, rule.head_dim);
  EXPECT_EQ(s.ffn_hidden_size, llama_ffn(s.hidden_size, rule.ffn_multiple_of));
  EXPECT_EQ(s.num_attention_heads % ctx.tensor_parallel, 0);
  EXPECT_EQ(s.ffn_hidden_size % ctx.tensor_parallel, 0);
  EXPECT_GE(s.num_layers, ctx.pipeline_parallel);
  EXPECT_LE(s.num_layers, rule.max_layers);
}

}  // namespace

TEST(SweepShapes, HitsEveryTotalTargetWithinTenPercent) {
  ShapeRule rule;
  rule.head_dim = 32;
  rule.ffn_multiple_of = 32;
  rule.aspect_ratio = 32;
  const ShapeContext ctx{4096, 128, false, 1, 1};
  // 0.6M (just above the smallest shape, 1 layer of hidden 32 with two 4096-row vocabulary matrices) to 200M.
  for (double target = 0.6e6; target <= 200e6; target *= 1.37) {
    SCOPED_TRACE(target);
    const Shape s = shape_for_target(target, rule, ctx, "[model] n");
    expect_valid(s, rule, ctx);
    const double n = static_cast<double>(counted_parameters(s, ctx, false));
    EXPECT_LE(std::abs(n / target - 1.0), 0.10) << s.num_layers << " layers, hidden " << s.hidden_size;
    EXPECT_LE(std::abs(n / target - 1.0), rule.tolerance + 1e-12);
    EXPECT_EQ(n, static_cast<double>(model_config(s, ctx).num_parameters()));
  }
}

TEST(SweepShapes, HitsNonEmbeddingTargetsUnderTensorAndPipelineConstraints) {
  ShapeRule rule;
  rule.head_dim = 16;
  rule.ffn_multiple_of = 16;
  rule.non_embedding = true;
  const ShapeContext ctx{512, 64, true, 2, 2};  // tp 2: even heads and ffn; pp 2: at least 2 layers
  for (double target = 50e3; target <= 50e6; target *= 1.9) {
    SCOPED_TRACE(target);
    const Shape s = shape_for_target(target, rule, ctx, "[model] n");
    expect_valid(s, rule, ctx);
    const double n = static_cast<double>(non_embedding_parameters(model_config(s, ctx)));
    EXPECT_LE(std::abs(n / target - 1.0), 0.10);
  }
}

// Among the shapes within tolerance the rule keeps hidden / layers near the
// aspect ratio it is given: a wider aspect gives fewer, wider layers.
TEST(SweepShapes, FollowsTheAspectRatio) {
  ShapeRule rule;
  rule.head_dim = 64;
  rule.ffn_multiple_of = 64;
  rule.non_embedding = true;
  const ShapeContext ctx{32000, 2048, false, 1, 1};
  for (double aspect : {32.0, 64.0, 128.0}) {
    rule.aspect_ratio = aspect;
    for (double target : {20e6, 85e6, 300e6}) {
      const Shape s = shape_for_target(target, rule, ctx, "[model] n");
      const double a = static_cast<double>(s.hidden_size) / static_cast<double>(s.num_layers);
      EXPECT_GT(a, aspect / 1.6) << target << " at aspect " << aspect << ": " << s.num_layers << "x" << s.hidden_size;
      EXPECT_LT(a, aspect * 1.6) << target << " at aspect " << aspect << ": " << s.num_layers << "x" << s.hidden_size;
    }
  }
  rule.aspect_ratio = 32;
  const Shape narrow = shape_for_target(85e6, rule, ctx, "n");
  rule.aspect_ratio = 128;
  const Shape wide = shape_for_target(85e6, rule, ctx, "n");
  EXPECT_GT(narrow.num_layers, wide.num_layers);
}

TEST(SweepShapes, RefusesTargetsBelowTheSmallestShape) {
  ShapeRule rule;
  rule.head_dim = 32;
  rule.ffn_multiple_of = 32;
  const ShapeContext ctx{4096, 128, false, 1, 1};
  try {
    shape_for_target(100e3, rule, ctx, "tiny.cfg: [model] n = 100k");
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("[model] n = 100k"), std::string::npos) << msg;
    EXPECT_NE(msg.find("smallest shape"), std::string::npos) << msg;
    EXPECT_NE(msg.find("1 layers, hidden 32"), std::string::npos) << msg;
  }
  EXPECT_THROW(shape_for_target(0, rule, ctx, "n"), std::invalid_argument);
  // No shape within a tight tolerance and few layers: refused, naming the closest.
  rule.tolerance = 0.001;
  rule.max_layers = 2;
  rule.non_embedding = true;
  try {
    shape_for_target(1.234e6, rule, ctx, "[model] n = 1.234M");
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("closest"), std::string::npos) << e.what();
  }
}

// vocabulary 100, hidden 8, 2 layers, 2 heads, ffn 16, sequence 4:
//   per layer: q,k,v,o 4·8·8 = 256, gate/up/down 3·8·16 = 384, two norms 16 → 656
//   total: embedding 800 + 2·656 + final norm 8 + output 800 = 2920; tied: 2120
//   non-embedding: 2920 − 800 − 800 = 1320 (tied: 2120 − 800 = 1320)
//   N_matmul = 2·(256 + 384) + 800 = 2080
//   flops per token = 6·2080 + 12·2·8·4 = 12480 + 768 = 13248
TEST(SweepFlops, CountsEqualHandComputedValues) {
  const ShapeContext ctx{100, 4, false, 1, 1};
  const Shape s{2, 8, 2, 16};
  const ModelConfig m = model_config(s, ctx);
  EXPECT_EQ(total_parameters(m), 2920);
  EXPECT_EQ(non_embedding_parameters(m), 1320);
  EXPECT_EQ(m.num_matmul_parameters(), 2080);
  EXPECT_DOUBLE_EQ(m.flops_per_token(), 13248.0);
  EXPECT_DOUBLE_EQ(flops_exact(m, 1000), 13248000.0);
  EXPECT_DOUBLE_EQ(flops_6nd(2920, 1000), 17520000.0);
  ShapeContext tied = ctx;
  tied.tie_embeddings = true;
  const ModelConfig t = model_config(s, tied);
  EXPECT_EQ(total_parameters(t), 2120);
  EXPECT_EQ(non_embedding_parameters(t), 1320);
  EXPECT_DOUBLE_EQ(flops_exact(t, 1000), 13248000.0);  // the tied output projection is still a matmul
  EXPECT_EQ(counted_parameters(s, ctx, false), 2920);
  EXPECT_EQ(counted_parameters(s, ctx, true), 1320);
  // LLaMA's FFN rule: ceil(8d/3 / multiple) · multiple.
  EXPECT_EQ(llama_ffn(64, 32), 192);    // 170 → 192
  EXPECT_EQ(llama_ffn(256, 256), 768);  // 682 → 768
  EXPECT_EQ(llama_ffn(4096, 256), 11008);
}
