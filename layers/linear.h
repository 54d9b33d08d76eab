// A bias-free linear layer y = x·Wᵀ with W [out, in] (Hugging Face layout).
//
// A Linear may span several adjacent registered parameters (q/k/v, gate/up),
// which it multiplies as one fused weight. Under tensor parallelism a
// column-parallel Linear holds an equal block of each part's output rows
// (so the local q/k/v or gate/up blocks are again adjacent and fused), a
// row-parallel one a block of the input columns; the layer around it joins
// the parts (layers/tensor_parallel.h). The GEMMs are the same either way.
#pragma once
#include <string>
#include <vector>

#include "layers/parameters.h"
#include "layers/tensor_parallel.h"

namespace llm {

enum class LinearSplit { None, Columns /* output features split */, Rows /* input features split */ };

class Linear {
 public:
  // One weight per (name, full out_features) part, registered adjacently;
  // full in_features shared. split/tp: which features this rank holds.
  Linear(ParameterStore& store, const std::vector<std::pair<std::string, int64_t>>& parts, int64_t in_features,
         double init_std, LinearSplit split = LinearSplit::None, const TensorParallel& tp = {});
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
