// One pre-norm LLaMA block:
//   h   = x + o_proj(attn(rmsnorm1(x)))
//   out = h + down(silu(gate(rmsnorm2(h))) · up(rmsnorm2(h)))
// Under tensor parallelism x, h and out are in the residual layout
// (layers/tensor_parallel.h): each branch reads gather(norm(·)) and its
// partial output is reduce()d before the residual add.
#pragma once
#include "layers/attention.h"
#include "layers/mlp.h"
#include "layers/rmsnorm.h"

namespace llm {

class TransformerBlock {
 public:
  struct Saved {
    RMSNorm::Saved norm1, norm2;
    Attention::Saved attn;
    MLP::Saved mlp;
  };
  TransformerBlock(ParameterStore& store, int64_t index, const ModelConfig& cfg, const TensorParallel& tp = {});
  void set_recompute_attention_core(bool on) { attn_.set_recompute_core(on); }
  // out [rows, hidden] (a new tensor); activations for backward go to `saved`.
  Tensor forward(const Tensor& x, int64_t batch, int64_t seq, Saved& saved) const;
  // Returns ∂L/∂x given ∂L/∂out; parameter gradients are accumulated.
  Tensor backward(const Tensor& dout, const Saved& saved, int64_t batch, int64_t seq) const;
  Tensor decode(const Tensor& x, Attention::KVCache& cache) const;

 private:
  TensorParallel tp_;
  RMSNorm norm1_;
  Attention attn_;
  RMSNorm norm2_;
  MLP mlp_;
};

}  // namespace llm
