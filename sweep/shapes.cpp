#include "sweep/shapes.h"

#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "sweep/flops.h"

namespace llm::sweep {

ModelConfig model_config(const Shape& s, const ShapeContext& ctx) {
  ModelConfig m;
  m.vocab_size = ctx.vocab_size;
  m.num_layers = s.num_layers;
  m.hidden_size = s.hidden_size;
  m.num_attention_heads = s.num_attention_heads;
  m.num_query_groups = s.num_attention_heads;
  m.ffn_hidden_size = s.ffn_hidden_size;
  m.seq_length = ctx.seq_length;
  m.tie_embeddings = ctx.tie_embeddings;
  return m.resolved();
}

int64_t llama_ffn(int64_t hidden, int64_t multiple) {
  const int64_t m = multiple > 0 ? multiple : 1;
  const int64_t raw = 8 * hidden / 3;
  return (raw + m - 1) / m * m;
}

int64_t counted_parameters(const Shape& s, const ShapeContext& ctx, bool non_embedding) {
  const ModelConfig m = model_config(s, ctx);
  return non_embedding ? non_embedding_parameters(m) : total_parameters(m);
}

static std::string count_str(double n) {
  char buf[32];
  if (n >= 1e9) std::snprintf(buf, sizeof buf, "%.3gG", n / 1e9);
  else if (n >= 1e6) std::snprintf(buf, sizeof buf, "%.3gM", n / 1e6);
  else if (n >= 1e3) std::snprintf(buf, sizeof buf, "%.3gk", n / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", n);
  return buf;
}

static std::string describe(const Shape& s) {
  return std::to_string(s.num_layers) + " layers, hidden " + std::to_string(s.hidden_size) + ", " +
         std::to_string(s.num_attention_heads) + " heads, ffn " + std::to_string(s.ffn_hidden_size);
}

Shape shape_for_target(double target, const ShapeRule& rule, const ShapeContext& ctx, const std::string& key) {
  if (!(target > 0)) throw std::invalid_argument(key + ": the target parameter count must be positive");
  const std::string what = rule.non_embedding ? "non-embedding parameters" : "parameters";
  const int64_t tp = ctx.tensor_parallel, first_layer = std::max<int64_t>(1, ctx.pipeline_parallel);
  auto make = [&](int64_t layers, int64_t heads) {
    const int64_t d = heads * rule.head_dim;
    return Shape{layers, d, heads, llama_ffn(d, rule.ffn_multiple_of)};
  };
  auto splittable = [&](const Shape& s) { return s.num_attention_heads % tp == 0 && s.ffn_hidden_size % tp == 0; };
  // The smallest shape the rule can make: the fewest layers, the fewest heads the layout can split.
  Shape smallest = make(first_layer, tp);
  const double n_min = static_cast<double>(counted_parameters(smallest, ctx, rule.non_embedding));
  if (target < n_min * (1.0 - rule.tolerance))
    throw std::invalid_argument(
        key + ": " + count_str(target) + " " + what + " is below the smallest shape the rule can make (" +
        describe(smallest) + ": " + count_str(n_min) + " " + what +
        (rule.non_embedding ? "" : ", most of them the vocabulary matrices") +
        "); raise the target, lower [model] head-dim, or list the shapes explicitly with [model] shapes");
  bool found = false, any = false;
  Shape best, closest;
  double best_aspect = 0, best_err = 0, closest_err = 0;
  for (int64_t layers = first_layer; layers <= rule.max_layers; ++layers) {
    bool below = false;
    for (int64_t heads = tp;; heads += tp) {
      const Shape s = make(layers, heads);
      const double n = static_cast<double>(counted_parameters(s, ctx, rule.non_embedding));
      const double err = std::abs(n / target - 1.0);
      if (splittable(s)) {
        if (!any || err < closest_err) closest = s, closest_err = err, any = true;
        if (err <= rule.tolerance) {
          const double aspect = std::abs(std::log(static_cast<double>(s.hidden_size) /
                                                  static_cast<double>(s.num_layers) / rule.aspect_ratio));
          if (!found || aspect < best_aspect - 1e-12 || (std::abs(aspect - best_aspect) <= 1e-12 && err < best_err))
            best = s, best_aspect = aspect, best_err = err, found = true;
        }
      }
      if (heads == tp) below = n <= target * (1.0 + rule.tolerance);
      if (n > target * (1.0 + rule.tolerance)) break;  // N grows with the width
    }
    if (!below) break;  // even the narrowest shape of this depth is too big: deeper ones are bigger still
  }
  if (!found) {
    char err[32];
    std::snprintf(err, sizeof err, "%+.1f%%", 100.0 * (static_cast<double>(counted_parameters(closest, ctx, rule.non_embedding)) / target - 1.0));
    throw std::invalid_argument(key + ": no shape with at most " + std::to_string(rule.max_layers) +
                                " layers has " + count_str(target) + " " + what + " within n-tolerance " +
                                std::to_string(rule.tolerance) + " (closest: " + describe(closest) + ", " + err +
                                "); raise [model] n-tolerance or max-layers, lower head-dim, or list the shapes "
                                "explicitly with [model] shapes");
  }
  return best;
}

}  // namespace llm::sweep
