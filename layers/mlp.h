// SwiGLU feed-forward: y += down(silu(gate(x)) ∘ up(x)), gate and up fused in one GEMM.
// Under tensor parallelism each rank holds ffn/tp of the hidden units (gate/up
// column-parallel, down row-parallel), and y is its partial sum.
#pragma once
#include "layers/linear.h"
#include "layers/model_config.h"

namespace llm {

class MLP {
 public:
  struct Saved {
    Tensor x;        // the (normed) input
    Tensor gate_up;  // [rows, 2F]
    Tensor act;      // silu(gate)·up [rows, F]
  };
  MLP(ParameterStore& store, const std::string& prefix, const ModelConfig& cfg, const TensorParallel& tp = {});
  void forward(const Tensor& x, Tensor& y, Saved& saved) const;  // y += mlp(x)
  void backward(const Tensor& dy, const Saved& saved, Tensor& dx) const;  // dx += ...

 private:
  int64_t ffn_;  // hidden units on this rank
  Linear gate_up_, down_;
};

}  // namespace llm
