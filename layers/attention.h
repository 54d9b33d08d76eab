// Causal self-attention with rotary embeddings and grouped-query heads.
//
//   qkv = x·[Wq;Wk;Wv]ᵀ   (one fused GEMM over adjacent q/k/v weights)
//   q, k ← RoPE(q, k)
//   a = softmax(q·kᵀ/√d + causal) · v     (flash style: only out and lse kept)
//   y += a·Woᵀ                             (added into the residual stream)
//
// Under tensor parallelism each rank holds H/tp query heads and G/tp key/value
// groups (q/k/v column-parallel, o_proj row-parallel): y is then this rank's
// partial sum, which the block reduces over the ranks.
#pragma once
#include "core/ops.h"
#include "layers/linear.h"
#include "layers/model_config.h"

namespace llm {

class Attention {
 public:
  struct Saved {
    Tensor x;     // the (normed) input
    Tensor qkv;   // q and k after RoPE, and v
    Tensor attn;  // attention output before o_proj [rows, H·D] (selective recomputation: dropped)
    Tensor lse;   // per (batch, head, query) log-sum-exp (likewise)
  };
  // Keys and values of past positions for generation (batch 1).
  struct KVCache {
    Tensor k, v;  // [max_len, G·D]
    int64_t length = 0;
  };

  Attention(ParameterStore& store, const std::string& prefix, const ModelConfig& cfg, const TensorParallel& tp = {});
  // Selective recomputation: forward drops the attention core's output and
  // lse after o_proj; backward reruns the core from the kept q/k/v
  // (Megatron's --recompute-granularity selective). Same values, less memory.
  void set_recompute_core(bool on) { recompute_core_ = on; }
  // y += attention(x); x [batch·seq, hidden]
  void forward(const Tensor& x, int64_t batch, int64_t seq, Tensor& y, Saved& saved) const;
  // dx += ∂/∂x given dy (gradient of y), weights' grads accumulated.
  void backward(const Tensor& dy, const Saved& saved, int64_t batch, int64_t seq, Tensor& dx) const;
  // Generation: x [tq, hidden] are the next tq positions after cache.length; y += output.
  void decode(const Tensor& x, KVCache& cache, Tensor& y) const;

 private:
  ops::QkvLayout layout(int64_t batch, int64_t seq) const { return {batch, seq, heads_, groups_, head_dim_}; }
  int64_t heads_, groups_, head_dim_;  // heads and groups on this rank
  double rope_theta_;
  bool recompute_core_ = false;
  Linear qkv_, o_proj_;
};

}  // namespace llm
