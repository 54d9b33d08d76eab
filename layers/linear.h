// A bias-free linear layer y = x·Wᵀ with W [out, in] (Hugging Face layout).
//
// A Linear may span several adjacent registered parameters (q/k/v, gate/up),
// which it multiplies as one fused weight. Tensor-parallel column/row
// variants split `out` or `in` across ranks with the parallelism issue.
#pragma once
#include <string>
#include <vector>

#include "layers/parameters.h"

namespace llm {

class Linear {
 public:
  // One weight per (name, out_features) part, registered adjacently; in_features shared.
  Linear(ParameterStore& store, const std::vector<std::pair<std::string, int64_t>>& parts, int64_t in_features,
         double init_std);
  // Reuses an already registered weight (tied input/output embeddings).
  Linear(ParameterStore& store, const ParamRef& shared_weight);
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  // y = x·Wᵀ (accumulate: y += x·Wᵀ, which is how residual adds are fused).
  void forward(const Tensor& x, Tensor& y, bool accumulate = false) const;
  // dx += dy·W (skipped for null dx), W.grad += dyᵀ·x
  void backward(const Tensor& dy, const Tensor& x, Tensor* dx) const;

 private:
  ParameterStore& store_;
  ParamRef first_;
  int64_t in_ = 0, out_ = 0;
};

}  // namespace llm
