// The rule that turns a target parameter count N into a model shape.
//
// For every depth L (max(1, pipeline stages) .. max-layers) and every width d
// that is a multiple of head-dim (heads = d / head-dim, multi-head attention,
// ffn by LLaMA's rule ceil(8d/3 / ffn-multiple-of) · ffn-multiple-of), the
// counted N (total, or non-embedding; see sweep/flops.h) is computed exactly
// with ModelConfig. Among the shapes whose N lies within n-tolerance of the
// target, the one whose d / L is closest to aspect-ratio (in log terms) wins;
// ties go to the smaller |N − target|. Shapes the layout cannot split (heads
// and ffn must divide by the tensor-parallel size) are never considered.
//
// Why a search over both L and d rather than d = aspect · L alone: at small
// N the depth grid is coarse (N ∝ L³ at a fixed aspect ratio, so going from 2
// to 3 layers multiplies N by 3.4), and a fixed aspect ratio cannot land
// within 10% of most targets; letting the aspect ratio bend a little keeps
// every target within tolerance while the shapes stay as close to the chosen
// aspect ratio as the grid allows.
#pragma once
#include <cstdint>
#include <string>

#include "layers/model_config.h"

namespace llm::sweep {

struct ShapeRule {
  double aspect_ratio = 32.0;   // hidden size / layers aimed at
  int64_t head_dim = 64;        // fixed head dimension (even, for rotary embeddings)
  int64_t ffn_multiple_of = 256;
  int64_t max_layers = 64;
  double tolerance = 0.10;      // |N / target − 1| accepted
  bool non_embedding = false;   // targets count N without the vocabulary matrices
};

struct Shape {
  int64_t num_layers = 0, hidden_size = 0, num_attention_heads = 0, ffn_hidden_size = 0;
  bool operator==(const Shape&) const = default;
};

// What the rule needs besides itself: vocabulary, sequence length, tying and
// the layout's divisibility constraints.
struct ShapeContext {
  int64_t vocab_size = 0;
  int64_t seq_length = 256;
  bool tie_embeddings = false;
  int64_t tensor_parallel = 1, pipeline_parallel = 1;
};

// The shape as a resolved ModelConfig (query groups = heads).
ModelConfig model_config(const Shape& s, const ShapeContext& ctx);
// LLaMA's FFN width for hidden size d: ceil(8d/3 / multiple) · multiple.
int64_t llama_ffn(int64_t hidden, int64_t multiple);
// The N the rule counts (total or non-embedding).
int64_t counted_parameters(const Shape& s, const ShapeContext& ctx, bool non_embedding);
// The shape for `target` parameters; throws std::invalid_argument naming
// `key` (e.g. "[model] n = 0.5M") when the target is below the smallest
// shape or no shape lands within the tolerance.
Shape shape_for_target(double target, const ShapeRule& rule, const ShapeContext& ctx, const std::string& key);

}  // namespace llm::sweep
